"""Non-dominated sets over any mix of maximised and minimised objectives.

A point dominates another when it is at least as good in every objective and strictly better in
one. Equal points and exact duplicates therefore never dominate each other: two identical points on the
front are both kept, which is what a reader of a results table expects."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mvlab.analysis.errors import AnalysisError

Directions = Mapping[str, str]

_SIGNS = {"maximize": 1.0, "max": 1.0, "minimize": -1.0, "min": -1.0}


def _oriented(df: pd.DataFrame, objectives: Directions) -> np.ndarray:
    """Objective matrix flipped so that larger is better in every column."""
    if not objectives:
        raise AnalysisError("no objectives given; pass e.g. {'heldout_top1': 'maximize', "
                            "'throughput': 'maximize'}")
    columns = []
    for name, direction in objectives.items():
        if name not in df.columns:
            raise AnalysisError(f"objective column {name!r} is not in the table; columns are "
                                f"{sorted(map(str, df.columns))}")
        sign = _SIGNS.get(str(direction).lower())
        if sign is None:
            raise AnalysisError(f"direction {direction!r} for {name!r} is not one of "
                                "'maximize' or 'minimize'")
        columns.append(sign * pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float))
    return np.column_stack(columns) if columns else np.empty((len(df), 0))


def _dominated(points: np.ndarray, margin: np.ndarray | None = None) -> np.ndarray:
    """For larger-is-better rows, True where some other row dominates it (O(n^2), n is small).

    With ``margin`` (one value per objective), a row must be ahead by at least the margin in
    every objective to dominate: dominance beyond noise."""
    shifted = points if margin is None else points - margin
    dominated = np.zeros(len(points), dtype=bool)
    for i in range(len(points)):
        at_least = np.all(shifted >= points[i], axis=1)
        strictly = np.any(shifted > points[i], axis=1)
        dominated[i] = bool(np.any(at_least & strictly))
    return dominated


def _margin(objectives: Directions, tolerance: Mapping[str, float] | None) -> np.ndarray | None:
    if not tolerance:
        return None
    unknown = sorted(set(tolerance) - set(objectives))
    if unknown:
        raise AnalysisError(f"tolerance given for {unknown}, which are not objectives")
    margin = np.array([float(tolerance.get(name, 0.0)) for name in objectives])
    if np.any(~np.isfinite(margin)) or np.any(margin < 0):
        raise AnalysisError(f"tolerances must be finite and non-negative, got {dict(tolerance)}")
    return margin


def pareto_mask(df: pd.DataFrame, objectives: Directions,
                tolerance: Mapping[str, float] | None = None) -> pd.Series:
    """True for rows on the Pareto front of ``objectives`` ({column: 'maximize'|'minimize'}).

    Rows with a missing objective (failed or pruned trials) are never on the front and do not
    dominate anything. ``tolerance`` ({column: margin}) keeps every row that no other row beats
    by more than the margins (``summary.front_within_ci`` marks front points by their CI)."""
    points = _oriented(df, objectives)
    complete = ~np.isnan(points).any(axis=1)
    mask = np.zeros(len(df), dtype=bool)
    mask[complete] = ~_dominated(points[complete], _margin(objectives, tolerance))
    return pd.Series(mask, index=df.index, name="pareto")


def pareto_front(df: pd.DataFrame, objectives: Directions) -> pd.DataFrame:
    """The non-dominated rows, sorted by the first objective from best to worst."""
    front = df[pareto_mask(df, objectives)]
    first, direction = next(iter(objectives.items()))
    return front.sort_values(first, ascending=_SIGNS[str(direction).lower()] < 0, kind="stable")


def pareto_ranks(df: pd.DataFrame, objectives: Directions) -> pd.Series:
    """Non-dominated sorting: 0 for the front, 1 for the front once it is removed, and so on.

    Rows with a missing objective get rank -1."""
    points = _oriented(df, objectives)
    ranks = np.full(len(df), -1, dtype=int)
    remaining = np.flatnonzero(~np.isnan(points).any(axis=1))
    level = 0
    while remaining.size:
        dominated = _dominated(points[remaining])
        ranks[remaining[~dominated]] = level
        remaining = remaining[dominated]
        level += 1
    return pd.Series(ranks, index=df.index, name="pareto_rank")
