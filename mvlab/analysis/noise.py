"""Seed noise from configurations that were trained more than once.

The pooled within-configuration standard deviation describes a study's noise floor. It is not a
decision rule: whether two configurations differ, or are equivalent, is decided by the paired
comparisons over seeds in ``mvlab.analysis.verdicts``, whose intervals shrink as seeds are added."""
from __future__ import annotations

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
