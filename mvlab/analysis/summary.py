"""Tables a report prints: the Pareto front and per-design-choice results with seed spread."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from mvlab import records
from mvlab.analysis.errors import AnalysisError
from mvlab.analysis.noise import DEFAULT_CONFIG, config_columns, pooled_std, seed_spread
from mvlab.analysis.pareto import _oriented, pareto_front, pareto_mask, pareto_ranks
from mvlab.records import LABEL

CI_LEVEL = 0.95


def _t_half_width(std: pd.Series, runs: pd.Series, level: float = CI_LEVEL) -> pd.Series:
    """Half-width of the t interval of a mean (NaN with fewer than two runs)."""
    import numpy as np
    from scipy import stats

    runs = pd.to_numeric(runs, errors="coerce")
    quantile = stats.t.ppf(0.5 + level / 2, np.maximum(runs - 1, 1))
    return pd.Series(np.where(runs >= 2, quantile * std / np.sqrt(runs), np.nan),
                     index=std.index)

_DEFAULT_COLUMNS = (records.TRIAL, records.SPEC, records.SEED, records.FIDELITY, records.PARAMS, records.MACS)


def primary_knob(df: pd.DataFrame) -> str | None:
    """The design choice to colour plots by: a varied ``*pattern`` knob, else the first varied
    knob other than the seed and the training budget, else None."""
    from mvlab.analysis.load import architecture_choices

    knobs = architecture_choices(df)
    return next((k for k in knobs if k.endswith("pattern")), knobs[0] if knobs else None)


def knob_label(df: pd.DataFrame, knobs: Sequence[str] | None = None) -> pd.Series:
    """A short name per row from its design choices: ``pattern=last_half branch=on``.

    ``knobs`` default to the varied ``params.*`` columns other than the seed and the training
    budget (``params.train.*``, ``params.data.*``), so the name is the architecture's."""
    from mvlab.analysis.load import architecture_choices

    if knobs is None:
        knobs = architecture_choices(df)
    if not knobs:
        return df.get(records.SPEC, pd.Series("", index=df.index)).astype(str).rename(LABEL)
    words = [k.removeprefix(records.PARAM_PREFIX) + "=" + df[k].astype(str) for k in knobs]
    label = words[0]
    for word in words[1:]:
        label = label + " " + word
    return label.rename(LABEL)


def with_error(df: pd.DataFrame, accuracy: str, scale: float = records.ACCURACY_SCALE,
               ) -> pd.DataFrame:
    """``df`` plus ``<accuracy>_error`` = scale - accuracy (top-1 error in percent by default)."""
    if accuracy not in df.columns:
        raise AnalysisError(f"accuracy column {accuracy!r} is not in the table")
    result = df.assign(**{f"{accuracy}_error": scale - pd.to_numeric(df[accuracy],
                                                                      errors="coerce")})
    result.attrs = dict(df.attrs)
    return result


def seed_means(df: pd.DataFrame, metrics: Sequence[str],
               config: str | Sequence[str] = DEFAULT_CONFIG, pooled: bool = False,
               ) -> pd.DataFrame:
    """One row per configuration: the seed mean of every metric with ``<metric>_ci_low`` /
    ``<metric>_ci_high`` (95 % t interval over its seeds), ``runs``, and the first value of
    every other column (knobs, params, macs), so a front is drawn over configurations rather
    than over lucky seeds.

    ``pooled``: the interval uses the seed sd pooled over all configurations (one noise level;
    its degrees of freedom summed), so a configuration with one seed or two equal runs still
    gets an honest width; otherwise its own sd (NaN for one seed). A metric that is never
    negative (throughput) gets its interval cut at 0."""
    keys = config_columns(df, config)
    missing = [m for m in metrics if m not in df.columns]
    if missing:
        raise AnalysisError(f"metric columns {missing} are not in the table")
    numeric = df.assign(**{m: pd.to_numeric(df[m], errors="coerce") for m in metrics})
    grouped = numeric.groupby(keys, sort=False, dropna=False)
    means = grouped[list(metrics)].mean()
    stds = grouped[list(metrics)].std(ddof=1)
    counts = grouped[list(metrics)].count()
    for metric in metrics:
        if pooled:
            import numpy as np
            from scipy import stats

            dof = (counts[metric] - 1).clip(lower=0)
            total = int(dof.sum())
            sd = float(np.sqrt((dof * stds[metric].fillna(0) ** 2).sum() / total)) if total \
                else float("nan")
            quantile = stats.t.ppf(0.5 + CI_LEVEL / 2, max(total, 1))
            half = pd.Series(quantile * sd / np.sqrt(counts[metric].clip(lower=1)), index=means.index)
            if not total:
                half[:] = float("nan")
        else:
            half = _t_half_width(stds[metric], counts[metric])
        low = means[metric] - half
        if (numeric[metric].dropna() >= 0).all():
            low = low.clip(lower=0)
        means[f"{metric}_ci_low"] = low
        means[f"{metric}_ci_high"] = means[metric] + half
    others = [c for c in df.columns if c not in (*keys, *metrics)]
    result = grouped[others].first().join(means).assign(runs=grouped.size()).reset_index()
    result.attrs = dict(df.attrs)
    return result


def front_within_ci(means: pd.DataFrame, objectives: Mapping[str, str], uncertain: str,
                    ) -> pd.Series:
    """For configuration means (``seed_means``): True for a point on the Pareto front whose
    lead is inside the noise of ``uncertain`` (an accuracy column with ``_ci_low``/``_ci_high``):
    some other configuration at least as good in every other objective is behind it in
    ``uncertain`` by less than the t interval of the difference of the two means (both
    intervals' half-widths added in quadrature; one seed: always marked)."""
    import numpy as np

    if uncertain not in objectives:
        raise AnalysisError(f"{uncertain!r} is not one of the objectives {list(objectives)}")
    on_front = pareto_mask(means, objectives)
    points = _oriented(means, objectives)
    column = list(objectives).index(uncertain)
    half = ((means[f"{uncertain}_ci_high"] - means[f"{uncertain}_ci_low"]) / 2).to_numpy()
    half = np.where(np.isfinite(half), half, np.inf)
    marked = np.zeros(len(means), dtype=bool)
    others = [c for c in range(points.shape[1]) if c != column]
    for i in np.flatnonzero(on_front.to_numpy()):
        as_good = np.all(points[:, others] >= points[i, others], axis=1)
        as_good[i] = False
        lead = points[i, column] - points[:, column]
        noise = np.sqrt(half[i] ** 2 + half ** 2)
        marked[i] = bool(np.any(as_good & np.isfinite(lead) & (lead < noise)))
    return pd.Series(marked, index=means.index, name="front_within_ci")


def pareto_table(df: pd.DataFrame, objectives: Mapping[str, str],
                 columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The front's rows, best first in the first objective: identifying columns then objectives.

    ``columns`` defaults to trial, spec, seed, fidelity, params, macs and every ``params.*`` knob
    that the front varies, where present."""
    front = pareto_front(df, objectives)
    if columns is None:
        knobs = [c for c in front.columns
                 if str(c).startswith(records.PARAM_PREFIX) and front[c].nunique(dropna=True) > 1]
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
                   config: str | Sequence[str] = DEFAULT_CONFIG, seed: str = records.SEED,
                   ) -> pd.DataFrame:
    """Per value of design choice ``choice``: trials, configurations, and for every metric
    ({column: direction}) the mean over its configurations' seed means, a 95 % t interval over
    seeds of that value's per-seed average (seeds as blocks; NaN with one seed), the best
    configuration mean and the pooled seed std within the value. Best mean first.

    Descriptive only: whether one value beats another is for ``verdicts.compare_to_reference``."""
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
            values = group.assign(_m=pd.to_numeric(group[metric], errors="coerce"))
            per_config = values.groupby(keys, dropna=False)["_m"].mean()
            best = per_config.max() if direction.startswith("max") else per_config.min()
            row[f"{metric}_mean"] = per_config.mean()
            if seed in values.columns:
                per_seed = values.groupby(seed)["_m"].mean().dropna()
                half = _t_half_width(pd.Series([per_seed.std(ddof=1)]),
                                     pd.Series([len(per_seed)])).iloc[0]
                centre = per_seed.mean()
                low = centre - half
                if (values["_m"].dropna() >= 0).all():
                    low = max(low, 0.0)  # a never-negative metric (throughput)
                row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = low, centre + half
            row.update({f"{metric}_best": best,
                        f"{metric}_seed_std": pooled_std(seed_spread(group, metric, keys))})
        rows[value] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = choice
    first, direction = next(iter(metrics.items()))
    return table.sort_values(f"{first}_mean", ascending=not direction.startswith("max"),
                             kind="stable")
