"""Empirical bootstrap of "the good range" of a knob (pycls, "Designing Network Design Spaces").

Draw a quarter of the (value, error) pairs with replacement, keep the value of the pair with the
lowest error, repeat; the 2.5/50/97.5 percentiles of the kept values are the range where the best
models live. A categorical knob (pattern, conv kind) gets the share of draws each value wins."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mvlab.analysis.errors import AnalysisError


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _pairs(values, errors) -> tuple[np.ndarray, np.ndarray]:
    vals = pd.Series(values).reset_index(drop=True)
    errs = pd.to_numeric(pd.Series(errors).reset_index(drop=True), errors="coerce")
    if len(vals) != len(errs):
        raise AnalysisError(f"{len(vals)} knob values but {len(errs)} errors")
    keep = errs.notna() & vals.notna()
    if not keep.any():
        raise AnalysisError("no (value, error) pair with both present to bootstrap")
    return vals[keep].to_numpy(), errs[keep].to_numpy(dtype=float)


def best_value_draws(values, errors, n_boot: int = 2500, frac: float = 0.25,
                     seed=0) -> np.ndarray:
    """The knob value of the lowest-error pair in each of ``n_boot`` resamples.

    Each resample draws ``ceil(frac * n)`` pairs with replacement; equal errors go to the pair
    drawn first."""
    vals, errs = _pairs(values, errors)
    if not 0 < frac <= 1:
        raise AnalysisError(f"frac must be in (0, 1], got {frac}")
    if n_boot < 1:
        raise AnalysisError(f"n_boot must be at least 1, got {n_boot}")
    size = max(1, math.ceil(frac * len(vals)))
    draws = _rng(seed).integers(0, len(vals), size=(n_boot, size))
    best = draws[np.arange(n_boot), np.argmin(errs[draws], axis=1)]
    return vals[best]


def bootstrap_range(values, errors, n_boot: int = 2500, frac: float = 0.25,
                    percentiles=(2.5, 50.0, 97.5), seed=0) -> pd.Series:
    """Percentiles of the best value of a numeric knob over bootstrap resamples.

    Returns a Series indexed "p2.5", "p50", "p97.5" (by default) plus "n" pairs used."""
    draws = best_value_draws(values, errors, n_boot=n_boot, frac=frac, seed=seed)
    try:
        draws = draws.astype(float)
    except (TypeError, ValueError) as exc:
        raise AnalysisError("bootstrap_range needs a numeric knob; use bootstrap_win_share "
                            "for a categorical one (pattern, conv kind)") from exc
    result = {f"p{p:g}": float(np.percentile(draws, p)) for p in percentiles}
    result["n"] = int(np.isfinite(pd.to_numeric(pd.Series(errors), errors="coerce")).sum())
    return pd.Series(result)


def bootstrap_win_share(values, errors, n_boot: int = 2500, frac: float = 0.25,
                        seed=0) -> pd.Series:
    """Share of bootstrap resamples whose best pair has each knob value (sums to one)."""
    draws = best_value_draws(values, errors, n_boot=n_boot, frac=frac, seed=seed)
    share = pd.Series(draws).value_counts(normalize=True)
    universe = pd.unique(pd.Series(values).dropna())
    return share.reindex(universe, fill_value=0.0).sort_values(ascending=False, kind="stable")


def bootstrap_table(df: pd.DataFrame, knobs, error: str, n_boot: int = 2500,
                    frac: float = 0.25, seed=0) -> pd.DataFrame:
    """One row per numeric knob column: its bootstrap percentiles of the best value."""
    rows = []
    for knob in knobs:
        if knob not in df.columns:
            raise AnalysisError(f"knob column {knob!r} is not in the table")
        row = bootstrap_range(df[knob], df[error], n_boot=n_boot, frac=frac, seed=seed)
        rows.append(row.rename(knob))
    return pd.DataFrame(rows)
