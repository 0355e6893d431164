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


MIN_SEEDS_FOR_SPREAD_TEST = 4  # with 3, median-centring leaves one deviation of zero a group


def noise_homogeneity(matrix: pd.DataFrame) -> pd.Series:
    """Is every configuration equally noisy across seeds? ``matrix``: configurations x seeds
    (``verdicts.seed_matrix``), NaN where a configuration did not run a seed.

    What one pooled noise level assumes is that every pair of configurations differs from seed
    to seed by the same spread, so this returns that spread directly: ``pair_sd_min`` /
    ``pair_sd_max``, the sd of the per-seed differences of the steadiest and the noisiest pair
    (over the seeds each pair shares, at least 2), ``pairs``, and ``pooled_pair_sd``, the one
    level the two-way residual would give every pair (``verdicts.block_noise``). Then the seed sd
    of the steadiest and the noisiest configuration (``sd_min`` / ``config_min``, ``sd_max`` /
    ``config_max``), and ``p``, a screen: the Brown-Forsythe test (Levene's about the median)
    of equal spread over the configurations with at least ``MIN_SEEDS_FOR_SPREAD_TEST`` seeds
    (``configs`` of them). Seeds are shared blocks, not independent samples, and at 4-6 seeds the
    test rejects rarely, so a small p says the spreads differ and a large one shows nothing.
    NaN where there is too little to compute."""
    from scipy import stats

    from mvlab.analysis.verdicts import block_noise

    values = matrix.to_numpy(dtype=float)
    seeds = np.isfinite(values).sum(axis=1)
    sds = matrix.std(axis=1, ddof=1)[seeds >= 2]
    pair_sds = []
    for i in range(len(values)):
        diffs = values[i + 1:] - values[i]
        shared = np.isfinite(diffs).sum(axis=1)
        with warnings.catch_warnings():  # a pair with fewer than 2 shared seeds: NaN, dropped
            warnings.simplefilter("ignore", RuntimeWarning)
            pair_sds.extend(np.nanstd(diffs, axis=1, ddof=1)[shared >= 2])
    tested = values[seeds >= MIN_SEEDS_FOR_SPREAD_TEST]
    p = math.nan
    if len(tested) >= 2:
        with warnings.catch_warnings():  # F is 0/0 when no configuration varies: p stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.levene(*(row[np.isfinite(row)] for row in tested),
                                   center="median").pvalue)
    return pd.Series({
        "pair_sd_min": float(min(pair_sds)) if pair_sds else math.nan,
        "pair_sd_max": float(max(pair_sds)) if pair_sds else math.nan,
        "pairs": len(pair_sds), "pooled_pair_sd": block_noise(matrix)[0],
        "sd_min": float(sds.min()) if len(sds) else math.nan,
        "config_min": sds.idxmin() if len(sds) else None,
        "sd_max": float(sds.max()) if len(sds) else math.nan,
        "config_max": sds.idxmax() if len(sds) else None,
        "configs": int(len(tested)), "p": p})
