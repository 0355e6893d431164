"""Matplotlib figures for the notebooks and ``mvlab report``. Each function draws on ``ax`` (or a
new Figure, without touching pyplot's global state) and returns the Figure."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mvlab.analysis.errors import AnalysisError
from mvlab.analysis.pareto import pareto_mask
from mvlab.records import PARAM_PREFIX, PARAMS


def _axes(ax: Axes | None, size=(6.4, 4.4)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    figure = Figure(figsize=size, layout="constrained")
    return figure, figure.subplots()


def _arrow(direction: str) -> str:
    return "higher is better" if direction.startswith("max") else "lower is better"


def _colours(labels: pd.Series) -> dict:
    from matplotlib import colormaps

    palette = colormaps["tab10" if labels.nunique() <= 10 else "tab20"]
    return {label: palette(i % palette.N) for i, label in enumerate(sorted(labels.unique(),
                                                                           key=str))}


def plot_pareto(df: pd.DataFrame, x: str, y: str, objectives: Mapping[str, str],
                label: str | None = None, annotate: str | None = None,
                ax: Axes | None = None, title: str | None = None) -> Figure:
    """``y`` against ``x`` for every trial; front points solid and joined, dominated ones faded.

    ``objectives`` are the directions used for dominance (normally {x: ..., y: ...}); ``label``
    colours points by a column (e.g. the pattern); ``annotate`` writes a column next to front
    points."""
    figure, ax = _axes(ax)
    table = df.dropna(subset=[x, y])
    if table.empty:
        raise AnalysisError(f"no trial has both {x!r} and {y!r}; nothing to plot")
    on_front = pareto_mask(table, objectives)
    labels = table[label].astype(str) if label else pd.Series("trials", index=table.index)
    colours = _colours(labels)
    for name, colour in colours.items():
        mine = labels == name
        ax.scatter(table.loc[mine & ~on_front, x], table.loc[mine & ~on_front, y], s=18,
                   color=colour, alpha=0.35, linewidths=0)
        ax.scatter(table.loc[mine & on_front, x], table.loc[mine & on_front, y], s=46,
                   color=colour, edgecolors="black", linewidths=0.8)
    front = table[on_front].sort_values(x, kind="stable")
    ax.plot(front[x], front[y], color="black", linewidth=0.8, alpha=0.6, zorder=0,
            drawstyle="steps-post" if len(front) > 1 else "default")
    if annotate:
        for _, row in front.iterrows():
            ax.annotate(str(row[annotate]), (row[x], row[y]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"{x} ({_arrow(objectives.get(x, 'max'))})")
    ax.set_ylabel(f"{y} ({_arrow(objectives.get(y, 'max'))})")
    ax.set_title(title or f"Pareto front: {int(on_front.sum())} of {len(table)} points "
                          "non-dominated (faded: dominated)", fontsize=9)
    if label:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker="o", linestyle="", color=colour, label=name)
                   for name, colour in colours.items()]
        ax.legend(handles=handles, title=f"{label} (outlined: on the front)", fontsize=7,
                  title_fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return figure


def plot_edf(edf_long: pd.DataFrame, ax: Axes | None = None, title: str | None = None,
             xlabel: str = "error") -> Figure:
    """Step curves of an ``edf_table`` (group, error, edf, n): one per group."""
    figure, ax = _axes(ax)
    for group, curve in edf_long.groupby("group", sort=True):
        curve = curve.sort_values("error")
        ax.step(curve["error"], curve["edf"], where="post",
                label=f"{group} (n={int(curve['n'].iloc[0])})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of models with error at most x")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "error EDF", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return figure


def plot_edf_pair(df: pd.DataFrame, error: str, by: str, complexity: str | None = PARAMS,
                  n_bins: int | None = None, title: str | None = None) -> Figure:
    """Plain EDFs of ``error`` per value of ``by`` and, beside them, the same normalised by
    ``complexity`` (when that column exists and varies). ``n_bins`` defaults to n/5 in [2, 10]."""
    from mvlab.analysis.edf import edf_table

    normalise = complexity is not None and complexity in df and df[complexity].nunique() > 1
    figure = Figure(figsize=(11 if normalise else 6.4, 3.8), layout="constrained")
    axes = figure.subplots(1, 2 if normalise else 1, squeeze=False)[0]
    label = title or str(by)
    plot_edf(edf_table(df, error, by=by), ax=axes[0], xlabel=error,
             title=f"{label}: error EDF")
    if normalise:
        bins = n_bins or max(2, min(10, len(df) // 5))
        plot_edf(edf_table(df, error, by=by, complexity=complexity, n_bins=bins), ax=axes[1],
                 xlabel=error, title=f"{label}: EDF normalised by {complexity} ({bins} bins)")
    return figure


def plot_bootstrap_ranges(ranges: pd.DataFrame, ax: Axes | None = None,
                          title: str | None = None) -> Figure:
    """A ``bootstrap_table``: one row per knob, the p2.5-p97.5 bar with the p50 marked."""
    figure, ax = _axes(ax, size=(6.4, 0.5 + 0.5 * max(len(ranges), 1)))
    rows = np.arange(len(ranges))
    ax.hlines(rows, ranges["p2.5"], ranges["p97.5"], color="tab:blue", linewidth=3)
    ax.plot(ranges["p50"], rows, "o", color="black", label="median of best")
    ax.set_yticks(rows, [str(i) for i in ranges.index])
    ax.set_xlabel("knob value of the best model in a 25% resample (2.5-97.5 percentile)")
    ax.set_title(title or "bootstrap range of good values", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return figure


def plot_win_share(share: pd.Series, ax: Axes | None = None, title: str | None = None) -> Figure:
    """A ``bootstrap_win_share``: how often each value of a categorical knob holds the best model."""
    figure, ax = _axes(ax, size=(6.4, 0.5 + 0.4 * max(len(share), 1)))
    rows = np.arange(len(share))
    ax.barh(rows, share.to_numpy(), color="tab:blue")
    ax.set_yticks(rows, [str(i) for i in share.index])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of bootstrap resamples won")
    ax.set_title(title or f"best value of {share.index.name or 'knob'}", fontsize=9)
    return figure


def plot_seed_spread(spread: pd.DataFrame, label: str | Sequence[str],
                     ax: Axes | None = None, title: str | None = None) -> Figure:
    """A ``seed_spread`` table: mean per repeated configuration with its min-max bar, named by
    the ``label`` column (or several columns, joined)."""
    repeated = spread[spread["runs"] >= 2].reset_index(drop=True)
    figure, ax = _axes(ax, size=(6.4, 0.6 + 0.35 * max(len(repeated), 1)))
    rows = np.arange(len(repeated))
    ax.hlines(rows, repeated["min"], repeated["max"], color="tab:gray", linewidth=2)
    ax.plot(repeated["mean"], rows, "o", color="black")
    columns = [label] if isinstance(label, str) else list(label)
    missing = [c for c in columns if c not in repeated.columns]
    if missing:
        raise AnalysisError(f"label columns {missing} are not in the seed-spread table")
    names = repeated[columns].astype(str).agg(" | ".join, axis=1).str.slice(0, 60)
    ax.set_yticks(rows, list(names), fontsize=7)
    ax.set_xlabel("metric across seeds (dot: mean, bar: min-max)")
    ax.set_title(title or f"seed spread of {len(repeated)} repeated configurations", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return figure


def plot_fidelity_scatter(paired: pd.DataFrame, low: str, high: str, ax: Axes | None = None,
                          title: str | None = None) -> Figure:
    """Each configuration's score at the low fidelity against the high one."""
    figure, ax = _axes(ax, size=(4.8, 4.4))
    ax.scatter(paired[low], paired[high], s=24, color="tab:blue")
    ax.set_xlabel(f"{low} (proxy)")
    ax.set_ylabel(f"{high} (reference)")
    ax.set_title(title or f"{len(paired)} configurations at two fidelities", fontsize=9)
    ax.grid(alpha=0.3)
    return figure


def plot_rank_agreement(table: pd.DataFrame, statistic: str = "kendall_tau",
                        ax: Axes | None = None, title: str | None = None) -> Figure:
    """A ``fidelity_table``: each ranker's statistic with its bootstrap CI."""
    figure, ax = _axes(ax, size=(6.4, 0.8 + 0.5 * max(len(table), 1)))
    rows = np.arange(len(table))
    ax.hlines(rows, table[f"{statistic}_low"], table[f"{statistic}_high"], color="tab:blue",
              linewidth=3)
    ax.plot(table[statistic], rows, "o", color="black")
    ax.axvline(0, color="gray", linewidth=0.8)
    ax.set_yticks(rows, [str(i) for i in table.index])
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel(f"{statistic} with the reference ranking (bar: bootstrap CI)")
    ax.set_title(title or "which ranker predicts the reference?", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return figure


def plot_pareto_means(means: pd.DataFrame, x: str, y: str, objectives: Mapping[str, str],
                      label: str | None = None, ax: Axes | None = None,
                      title: str | None = None) -> Figure:
    """Configuration means (``seed_means``) of ``y`` against ``x`` with ``y``'s 95 % CI as
    vertical bars; front points outlined and joined, a front point whose lead is inside its CI
    (``front_within_ci``) drawn hollow, dominated ones faded."""
    figure, ax = _axes(ax, size=(7.2, 4.8))
    table = means.dropna(subset=[x, y])
    if table.empty:
        raise AnalysisError(f"no configuration has both {x!r} and {y!r}; nothing to plot")
    on_front = pareto_mask(table, objectives)
    uncertain = table.get("front_within_ci", pd.Series(False, index=table.index)).astype(bool)
    low, high = table.get(f"{y}_ci_low"), table.get(f"{y}_ci_high")
    if low is not None and high is not None:
        known = low.notna() & high.notna()
        ax.errorbar(table.loc[known, x], table.loc[known, y],
                    yerr=[table.loc[known, y] - low[known], high[known] - table.loc[known, y]],
                    fmt="none", ecolor="gray", alpha=0.5, linewidth=1, zorder=1)
    ax.scatter(table.loc[~on_front, x], table.loc[~on_front, y], s=20, color="tab:blue",
               alpha=0.35, linewidths=0, label="dominated")
    solid = on_front & ~uncertain
    ax.scatter(table.loc[solid, x], table.loc[solid, y], s=50, color="tab:blue",
               edgecolors="black", linewidths=0.8, label="on the front")
    ax.scatter(table.loc[on_front & uncertain, x], table.loc[on_front & uncertain, y], s=50,
               facecolors="none", edgecolors="black", linewidths=0.8,
               label="on the front, lead inside its CI")
    front = table[on_front].sort_values(x, kind="stable")
    ax.plot(front[x], front[y], color="black", linewidth=0.8, alpha=0.6, zorder=0,
            drawstyle="steps-post" if len(front) > 1 else "default")
    if label:
        for _, row in front.iterrows():
            ax.annotate(str(row[label])[:40], (row[x], row[y]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"{x} ({_arrow(objectives.get(x, 'max'))})")
    ax.set_ylabel(f"{y}, seed mean ({_arrow(objectives.get(y, 'max'))})")
    ax.set_title(title or f"Pareto front over {len(table)} configuration means", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return figure


def plot_verdicts(verdicts: pd.DataFrame, label: str = "config", margin: float = 0.5,
                  ax: Axes | None = None, title: str | None = None) -> Figure:
    """A ``compare_to_reference`` table: each difference with its CI, the ±margin band shaded,
    coloured by verdict. An unbounded CI (one seed) is drawn to the axis edge."""
    colours = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue",
               "undetermined": "tab:gray"}
    figure, ax = _axes(ax, size=(7.2, 0.8 + 0.35 * max(len(verdicts), 1)))
    rows = np.arange(len(verdicts))
    finite = np.concatenate([verdicts["ci_low"].to_numpy(float), verdicts["ci_high"].to_numpy(
        float), verdicts["diff"].to_numpy(float), [-2 * margin, 2 * margin]])
    finite = finite[np.isfinite(finite)]
    span = max(abs(finite.min()), abs(finite.max())) * 1.1
    low = verdicts["ci_low"].clip(lower=-span).fillna(-span)
    high = verdicts["ci_high"].clip(upper=span).fillna(span)
    ax.axvspan(-margin, margin, color="tab:blue", alpha=0.08, label=f"±{margin:g} (margin)")
    ax.axvline(0, color="black", linewidth=0.8)
    for i, row in enumerate(verdicts.itertuples(index=False)):
        colour = colours.get(row.verdict, "black")
        ax.hlines(i, low.iloc[i], high.iloc[i], color=colour, linewidth=3)
        ax.plot(row.diff, i, "o", color="black", markersize=4)
    ax.set_yticks(rows, [f"{str(v)[:40]} ({w})" for v, w in zip(verdicts[label],
                                                                verdicts["verdict"],
                                                                strict=True)], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(-span, span)
    ax.set_xlabel("difference to the reference, points (bar: CI over seeds)")
    ax.set_title(title or "each configuration against the reference", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    return figure


def plot_choice_means(summaries: Mapping[str, pd.DataFrame], metrics: Sequence[str],
                      prefix: str = PARAM_PREFIX) -> Figure:
    """``choice_summary`` tables: per knob and metric, each value's mean of configuration means
    with its 95 % CI over seeds (no bar where one seed gives no interval)."""
    figure = Figure(figsize=(4.2 * len(metrics), 0.4 + 1.6 * len(summaries)),
                    layout="constrained")
    axes = figure.subplots(len(summaries), len(metrics), squeeze=False)
    for row, (knob, summary) in enumerate(summaries.items()):
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            values = summary[f"{metric}_mean"]
            positions = np.arange(len(values))
            ax.plot(values, positions, "o", color="tab:blue")
            low, high = summary.get(f"{metric}_ci_low"), summary.get(f"{metric}_ci_high")
            if low is not None and high is not None:
                ax.hlines(positions, low, high, color="tab:blue", linewidth=2, alpha=0.7)
            ax.set_yticks(positions, [str(v) for v in summary.index], fontsize=7)
            ax.invert_yaxis()
            ax.set_title(f"{str(knob).removeprefix(prefix)}: {metric} (mean, bar: 95 % CI "
                         "over seeds)", fontsize=8)
            ax.grid(alpha=0.3, axis="x")
    return figure
