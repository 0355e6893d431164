"""Tables a report prints: the Pareto front and per-design-choice results with seed spread."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from mvlab.analysis import names
from mvlab.analysis.errors import AnalysisError
from mvlab.analysis.noise import (
    DEFAULT_CONFIG,
    config_columns,
    pooled_std,
    seed_spread,
    tied_with_best,
)
from mvlab.analysis.pareto import pareto_front, pareto_mask, pareto_ranks

_DEFAULT_COLUMNS = (names.TRIAL, names.SPEC, names.SEED, names.FIDELITY, names.PARAMS, names.MACS)


def primary_knob(df: pd.DataFrame) -> str | None:
    """The design choice to colour plots by: a varied ``*pattern`` knob, else the first varied
    knob other than the seed and the training budget, else None."""
    from mvlab.analysis.load import design_choices

    knobs = [k for k in design_choices(df)
             if not k.startswith((names.PARAM_PREFIX + "train.", names.PARAM_PREFIX + "data."))]
    return next((k for k in knobs if k.endswith("pattern")), knobs[0] if knobs else None)


def knob_label(df: pd.DataFrame, knobs: Sequence[str] | None = None) -> pd.Series:
    """A short name per row from its design choices: ``pattern=last_half branch=on``.

    ``knobs`` default to the varied ``params.*`` columns other than the seed and the training
    budget (``params.train.*``, ``params.data.*``), so the name is the architecture's."""
    from mvlab.analysis.load import design_choices

    if knobs is None:
        knobs = [k for k in design_choices(df)
                 if not k.startswith((names.PARAM_PREFIX + "train.", names.PARAM_PREFIX + "data."))]
    if not knobs:
        return df.get(names.SPEC, pd.Series("", index=df.index)).astype(str).rename("label")
    words = [k.removeprefix(names.PARAM_PREFIX) + "=" + df[k].astype(str) for k in knobs]
    label = words[0]
    for word in words[1:]:
        label = label + " " + word
    return label.rename("label")


def with_error(df: pd.DataFrame, accuracy: str, scale: float = names.ACCURACY_SCALE,
               ) -> pd.DataFrame:
    """``df`` plus ``<accuracy>_error`` = scale - accuracy (top-1 error in percent by default)."""
    if accuracy not in df.columns:
        raise AnalysisError(f"accuracy column {accuracy!r} is not in the table")
    result = df.assign(**{f"{accuracy}_error": scale - pd.to_numeric(df[accuracy],
                                                                      errors="coerce")})
    result.attrs = dict(df.attrs)
    return result


def seed_means(df: pd.DataFrame, metrics: Sequence[str],
               config: str | Sequence[str] = DEFAULT_CONFIG) -> pd.DataFrame:
    """One row per configuration: the seed mean of every metric, ``runs``, and the first value
    of every other column (knobs, params, macs), so a front is drawn over configurations rather
    than over lucky seeds."""
    keys = config_columns(df, config)
    missing = [m for m in metrics if m not in df.columns]
    if missing:
        raise AnalysisError(f"metric columns {missing} are not in the table")
    grouped = df.groupby(keys, sort=False, dropna=False)
    means = grouped[list(metrics)].mean()
    others = [c for c in df.columns if c not in (*keys, *metrics)]
    result = grouped[others].first().join(means).assign(runs=grouped.size()).reset_index()
    result.attrs = dict(df.attrs)
    return result


def pareto_table(df: pd.DataFrame, objectives: Mapping[str, str],
                 columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The front's rows, best first in the first objective: identifying columns then objectives.

    ``columns`` defaults to trial, spec, seed, fidelity, params, macs and every ``params.*`` knob
    that the front varies, where present."""
    front = pareto_front(df, objectives)
    if columns is None:
        knobs = [c for c in front.columns
                 if str(c).startswith(names.PARAM_PREFIX) and front[c].nunique(dropna=True) > 1]
        columns = [c for c in (*_DEFAULT_COLUMNS, *knobs) if c in front.columns]
    missing = [c for c in columns if c not in front.columns]
    if missing:
        raise AnalysisError(f"columns {missing} are not in the table")
    ordered = list(dict.fromkeys([*columns, *objectives]))
    return front[ordered].reset_index(drop=True)


def with_pareto(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.DataFrame:
    """``df`` plus ``pareto`` (on the front) and ``pareto_rank`` (non-dominated sorting level)."""
    result = df.assign(pareto=pareto_mask(df, objectives), pareto_rank=pareto_ranks(df, objectives))
    result.attrs = dict(df.attrs)
    return result


def choice_summary(df: pd.DataFrame, choice: str, metrics: Mapping[str, str],
                   config: str | Sequence[str] = DEFAULT_CONFIG,
                   tie_factor: float = 2.0) -> pd.DataFrame:
    """Per value of design choice ``choice``: trials, configurations, and for every metric
    ({column: direction}) its mean, median, best and pooled seed std within that value.

    ``tied_with_best`` marks values whose mean in the first metric is within ``tie_factor`` times
    the study-wide seed noise of the best value's mean (only the best when nothing was repeated)."""
    if choice not in df.columns:
        raise AnalysisError(f"design-choice column {choice!r} is not in the table")
    if not metrics:
        raise AnalysisError("choice_summary needs at least one metric")
    keys = config_columns(df, config)
    rows = {}
    for value, group in df.groupby(choice, sort=True, dropna=False):
        row: dict[str, float] = {"trials": len(group),
                                 "configs": len(group.drop_duplicates(keys))}
        for metric, direction in metrics.items():
            values = pd.to_numeric(group[metric], errors="coerce")
            best = values.max() if direction.startswith("max") else values.min()
            row.update({f"{metric}_mean": values.mean(), f"{metric}_median": values.median(),
                        f"{metric}_best": best,
                        f"{metric}_seed_std": pooled_std(seed_spread(group, metric, keys))})
        rows[value] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = choice
    first, direction = next(iter(metrics.items()))
    threshold = tie_factor * pooled_std(seed_spread(df, first, keys))
    maximise = direction.startswith("max")
    table["tied_with_best"] = tied_with_best(table[f"{first}_mean"], threshold, maximise)
    return table.sort_values(f"{first}_mean", ascending=not maximise, kind="stable")
