"""Seed noise from configurations that were trained more than once.

The pooled within-configuration standard deviation describes a study's noise floor. It is not a
decision rule: whether two configurations differ, or are equivalent, is decided by the paired
comparisons over seeds in ``mvlab.analysis.verdicts``, whose intervals shrink as seeds are added.
Whether one noise level fits every configuration at all is ``noise_homogeneity``'s question."""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mvlab.analysis.errors import AnalysisError
from mvlab.records import FIDELITY, SPEC

DEFAULT_CONFIG = (SPEC, FIDELITY)


def config_columns(df: pd.DataFrame, config: str | Sequence[str] = DEFAULT_CONFIG) -> list[str]:
    """The columns (of those asked for) that identify a configuration in ``df``."""
    wanted = [config] if isinstance(config, str) else list(config)
    present = [c for c in wanted if c in df.columns and df[c].notna().any()]
    if not present:
        raise AnalysisError(f"none of the configuration columns {wanted} is in the table; pass "
                            "config= with the columns that identify a configuration")
    return present


def seed_spread(df: pd.DataFrame, metric: str, config: str | Sequence[str] = DEFAULT_CONFIG,
                ) -> pd.DataFrame:
    """Per configuration: runs, mean, std (ddof=1; NaN for one run), min and max of ``metric``."""
    if metric not in df.columns:
        raise AnalysisError(f"metric column {metric!r} is not in the table")
    keys = config_columns(df, config)
    values = df.assign(_m=pd.to_numeric(df[metric], errors="coerce")).dropna(subset=["_m"])
    grouped = values.groupby(keys, sort=False, dropna=False)["_m"]
    spread = grouped.agg(runs="count", mean="mean", std="std", min="min", max="max")
    return spread.sort_values("mean", ascending=False, kind="stable").reset_index()


def pooled_std(spread: pd.DataFrame) -> float:
    """sqrt(sum((n_i - 1) s_i^2) / sum(n_i - 1)) over configurations with two or more runs."""
    repeated = spread[spread["runs"] >= 2]
    dof = (repeated["runs"] - 1).sum()
    if dof == 0:
        return float("nan")
    return float(np.sqrt(((repeated["runs"] - 1) * repeated["std"] ** 2).sum() / dof))


def seed_noise(df: pd.DataFrame, metric: str, config: str | Sequence[str] = DEFAULT_CONFIG,
               ) -> pd.Series:
    """Noise summary of ``metric``: pooled std, repeated configs, runs in them, largest range."""
    spread = seed_spread(df, metric, config)
    repeated = spread[spread["runs"] >= 2]
    noise = pooled_std(spread)
    return pd.Series({"pooled_std": noise, "repeated_configs": int(len(repeated)),
                      "repeated_runs": int(repeated["runs"].sum()),
                      "max_range": float((repeated["max"] - repeated["min"]).max())
                      if len(repeated) else float("nan")}, name=metric)


def noise_homogeneity(matrix: pd.DataFrame) -> pd.Series:
    """Is every configuration equally noisy across seeds? ``matrix``: configurations x seeds
    (``verdicts.seed_matrix``); only the seeds every configuration ran count.

    Returns the seed sd of the steadiest and the noisiest configuration (``sd_min`` /
    ``config_min``, ``sd_max`` / ``config_max``), ``configs``, ``seeds``, and ``p`` of the
    Brown-Forsythe test (Levene's about the median) of equal spread: a small p says that one
    pooled noise level misdescribes the study. NaN p with fewer than 2 configurations or 3
    seeds, or when every configuration repeats one value."""
    from scipy import stats

    block = matrix.dropna(axis=1, how="any")
    sds = block.std(axis=1, ddof=1) if block.shape[1] >= 2 else pd.Series(dtype=float)
    p = math.nan
    if block.shape[0] >= 2 and block.shape[1] >= 3:
        with warnings.catch_warnings():  # F is 0/0 when no configuration varies: p stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.levene(*block.to_numpy(dtype=float), center="median").pvalue)
    steady = sds.idxmin() if len(sds) else None
    noisy = sds.idxmax() if len(sds) else None
    return pd.Series({"sd_min": float(sds.min()) if len(sds) else math.nan,
                      "config_min": steady, "sd_max": float(sds.max()) if len(sds) else math.nan,
                      "config_max": noisy, "configs": int(block.shape[0]),
                      "seeds": int(block.shape[1]), "p": p})
