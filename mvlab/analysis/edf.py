"""Error empirical distribution functions (EDFs), plain and complexity-normalised.

The EDF of a population of models is F(e) = (1/n) * #{models with error <= e} ("On Network Design
Spaces", Radosavovic et al. 2019). Populations whose complexity distributions differ are compared
with the normalised EDF: each model is weighted by 1 / (models in its complexity bin * bins), so
every occupied complexity bin carries the same total weight and the weights sum to one. Compare
several populations on the *same* bin edges (``complexity_bins`` over the union)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from mvlab.analysis.errors import AnalysisError


def _finite(values, name: str) -> np.ndarray:
    array = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    if array.ndim != 1:
        raise AnalysisError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def edf(errors, at=None, weights=None) -> np.ndarray:
    """F(e) = weighted share of models with error at most e, for every e in ``at``.

    F reaches 1 at the largest error, so every group's curve ends at 1.

    ``at`` defaults to the sorted distinct errors. ``weights`` default to 1/n; they are
    renormalised over the models with a finite error (missing errors are dropped)."""
    err = _finite(errors, "errors")
    w = np.ones_like(err) if weights is None else _finite(weights, "weights")
    if w.shape != err.shape:
        raise AnalysisError(f"weights has {w.size} entries but errors has {err.size}")
    keep = np.isfinite(err) & np.isfinite(w)
    err, w = err[keep], w[keep]
    if err.size == 0:
        raise AnalysisError("no finite errors to build an EDF from (did every trial fail?)")
    if np.any(w < 0) or w.sum() <= 0:
        raise AnalysisError("EDF weights must be non-negative and not all zero")
    grid = np.unique(err) if at is None else np.atleast_1d(np.asarray(at, dtype=float))
    order = np.argsort(err, kind="stable")
    sorted_err, cumulative = err[order], np.concatenate([[0.0], np.cumsum(w[order])])
    at_most = np.searchsorted(sorted_err, grid, side="right")  # count of errors <= e
    return cumulative[at_most] / cumulative[-1]


def complexity_bins(complexity, n_bins: int = 10, log: bool = True) -> np.ndarray:
    """``n_bins + 1`` edges spanning ``complexity`` (log-spaced by default, as params/FLOPs are)."""
    values = _finite(complexity, "complexity")
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise AnalysisError("no finite complexity values to bin")
    if n_bins < 1:
        raise AnalysisError(f"n_bins must be at least 1, got {n_bins}")
    low, high = values.min(), values.max()
    if log:
        if low <= 0:
            raise AnalysisError("log-spaced complexity bins need positive values; pass log=False")
        return np.geomspace(low, high, n_bins + 1) if high > low else np.array([low, high])
    return np.linspace(low, high, n_bins + 1) if high > low else np.array([low, high])


def complexity_weights(complexity, bins) -> np.ndarray:
    """pycls normalisation weights: 1 / (count in the model's bin * number of occupied bins).

    ``bins`` are edges (from ``complexity_bins``); values outside them go to the nearest end bin.
    Models with a missing complexity get weight 0."""
    values = _finite(complexity, "complexity")
    edges = np.asarray(bins, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) < 0):
        raise AnalysisError("bins must be at least two increasing edges")
    weights = np.zeros_like(values)
    known = np.isfinite(values)
    # The right-most edge belongs to the last bin, as in numpy.histogram.
    index = np.clip(np.searchsorted(edges, values[known], side="right") - 1, 0, edges.size - 2)
    occupied, counts = np.unique(index, return_counts=True)
    per_bin = dict(zip(occupied.tolist(), counts.tolist(), strict=True))
    weights[known] = [1.0 / (per_bin[i] * occupied.size) for i in index.tolist()]
    return weights


def edf_table(df: pd.DataFrame, error: str, by: str | None = None, complexity: str | None = None,
              n_bins: int = 10, log_bins: bool = True, at=None) -> pd.DataFrame:
    """Long table (group, error, edf, n) of the EDF of ``error`` for every value of ``by``.

    With ``complexity`` (e.g. "params" or "macs") the EDF is normalised with bins shared by all
    groups. ``at`` defaults to every distinct error in the table, so curves share one grid."""
    if error not in df.columns:
        raise AnalysisError(f"error column {error!r} is not in the table")
    table = df[np.isfinite(_finite(df[error], error))]
    if table.empty:
        raise AnalysisError(f"column {error!r} has no finite values")
    grid = np.unique(table[error].astype(float)) if at is None else np.asarray(at, dtype=float)
    edges = None
    if complexity is not None:
        if complexity not in table.columns:
            raise AnalysisError(f"complexity column {complexity!r} is not in the table")
        edges = complexity_bins(table[complexity], n_bins=n_bins, log=log_bins)
    groups = [("all", table)] if by is None else list(table.groupby(by, sort=True, dropna=False))
    frames = []
    for key, group in groups:
        weights = None if edges is None else complexity_weights(group[complexity], edges)
        frames.append(pd.DataFrame({"group": [key] * grid.size, "error": grid,
                                    "edf": edf(group[error], at=grid, weights=weights),
                                    "n": len(group)}))
    return pd.concat(frames, ignore_index=True)
