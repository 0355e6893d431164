"""Can a study rank its configurations at all? Split-half reliability over seeds.

The seeds are split into two halves; each configuration gets its mean in each half, and the
Spearman correlation of those two columns says how far a ranking by one half predicts a ranking
by the other (test-retest reliability with seeds as the retest). The full study's means average
twice as many seeds as a half, so the reliability of the ranking the report prints is projected
with the Spearman-Brown formula ``r_full = 2 r_half / (1 + r_half)``: seeds are exchangeable
replicates (the same configurations, a fresh initialisation, data order and augmentation), which
is the parallel-measurement assumption that formula needs; for ranks it is an approximation.

With more than two seeds the point estimate averages the correlations of all (or, past 64, of
64 random) balanced splits. The interval is a bootstrap that resamples both things a rerun would
change: configurations with replacement, a random split of the seeds, and seeds with replacement
within each half of each configuration. ``seeds_for`` projects (Spearman-Brown again) how many
seeds a ranking needs to reach the threshold."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from mvlab.analysis.errors import AnalysisError
from mvlab.analysis.fidelity import spearman_rho_rows

DEFAULT_THRESHOLD = 0.8
MAX_SPLITS = 64


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def spearman_brown(r: float, factor: float) -> float:
    """Reliability of a mean over ``factor`` times as many replicates as the one measured.

    Defined for r > 0 only (a non-positive correlation does not grow with more replicates of
    the same nothing): r <= 0 is returned as it is."""
    if not math.isfinite(r):
        return math.nan
    if r <= 0:
        return r
    denominator = 1 + (factor - 1) * r
    return math.nan if denominator == 0 else factor * r / denominator


def seeds_for(r_half: float, seeds_per_half: float, threshold: float) -> float:
    """Seeds whose mean reaches ``threshold`` reliability, from a half of ``seeds_per_half``
    seeds with reliability ``r_half``: inf when the halves do not agree positively."""
    if not math.isfinite(r_half):
        return math.nan
    if r_half <= 0:
        return math.inf
    if r_half >= 1:
        return 1.0
    single = spearman_brown(r_half, 1 / seeds_per_half)
    return float(math.ceil(threshold * (1 - single) / (single * (1 - threshold)) - 1e-9))


def _splits(seeds: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Balanced splits of ``seeds`` columns: the first half's column indices (one per pair)."""
    half = seeds // 2
    if math.comb(seeds, half) // (2 if seeds == 2 * half else 1) <= MAX_SPLITS:
        splits = [np.array(c) for c in itertools.combinations(range(seeds), half)]
        if seeds == 2 * half:  # {A, B} and {B, A} are one split
            splits = [s for s in splits if 0 in s]
        return splits
    return [np.sort(rng.permutation(seeds)[:half]) for _ in range(MAX_SPLITS)]


def split_half(matrix: pd.DataFrame, n_boot: int = 2000, ci: float = 95.0,
               threshold: float = DEFAULT_THRESHOLD, seed=0) -> pd.Series:
    """Split-half reliability of the configuration means of a configurations x seeds table
    (``verdicts.seed_matrix``). It needs a complete table: either the seeds every configuration
    ran or the configurations that ran every seed, whichever keeps more runs.

    Returns r_half (Spearman between half means) with r_half_low / r_half_high, r_full
    (Spearman-Brown to all seeds) with r_full_low / r_full_high, configs, seeds, threshold,
    reliable (r_full >= threshold) and seeds_needed (for the threshold)."""
    by_seeds = matrix.dropna(axis=1, how="any")
    by_configs = matrix.dropna(axis=0, how="any")
    complete = max((by_seeds, by_configs), key=lambda m: (m.shape[1] >= 2 and m.shape[0] >= 3,
                                                          m.size))
    values = complete.to_numpy(dtype=float)
    k, n = values.shape
    if n < 2:
        raise AnalysisError(f"split-half reliability needs at least 2 seeds that every "
                            f"configuration ran, got {n}")
    if k < 3:
        raise AnalysisError(f"split-half reliability needs at least 3 configurations, got {k}")
    rng = _rng(seed)
    splits = _splits(n, rng)
    estimates = []
    for first in splits:
        second = np.setdiff1d(np.arange(n), first)
        estimates.append(spearman_rho_rows(values[:, first].mean(1)[None],
                                           values[:, second].mean(1)[None])[0])
    r_half = float(np.nanmean(estimates)) if np.isfinite(estimates).any() else math.nan
    boot = np.empty(n_boot)
    half = n // 2
    for b in range(n_boot):
        rows = rng.integers(0, k, size=k)
        order = rng.permutation(n)
        first, second = order[:half], order[half:]
        a = values[rows[:, None], first[rng.integers(0, first.size, size=(k, first.size))]]
        c = values[rows[:, None], second[rng.integers(0, second.size, size=(k, second.size))]]
        boot[b] = spearman_rho_rows(a.mean(1)[None], c.mean(1)[None])[0]
    tail = (100.0 - ci) / 2
    finite = boot[np.isfinite(boot)]
    low, high = ((float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail)))
                 if finite.size else (math.nan, math.nan))
    factor = n / half
    r_full = spearman_brown(r_half, factor)
    return pd.Series({
        "r_half": r_half, "r_half_low": low, "r_half_high": high,
        "r_full": r_full, "r_full_low": spearman_brown(low, factor),
        "r_full_high": spearman_brown(high, factor),
        "configs": k, "seeds": n, "threshold": threshold,
        "reliable": bool(math.isfinite(r_full) and r_full >= threshold),
        "seeds_needed": seeds_for(r_half, half, threshold),
    })
