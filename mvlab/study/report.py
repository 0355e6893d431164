"""Tables and plots of a study, rebuilt from its storage without training anything.

The heavy lifting is ``mvlab.analysis`` (Pareto fronts, per-choice summaries with seed spread);
this module picks what a sweep's report shows and where the files go:

* ``write_sweep_artifacts``: at the end of ``mvlab sweep``, for the MLflow parent run:
  ``pareto.csv``, ``pareto.png`` (all trials, the front highlighted and labelled by pattern) and
  ``trials.csv``;
* ``build_report``: ``mvlab report STUDY`` -> ``results/<study>/``: the above plus
  ``choices_<knob>.csv`` (accuracy and throughput per design choice, with seed spread),
  ``choices.png``, ``edf.png`` (error EDFs per design choice), ``seed_spread.csv``,
  ``failed.csv`` and a ``README.md`` that ties them up."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

PARAM = "params."  # column prefix of trial params in mvlab.analysis tables
SEED_COLUMN = f"{PARAM}seed"
MAX_CHOICES = 12  # knobs with more distinct values get no per-choice table


def trials_table(study: optuna.Study, storage: Any, tracking_uri: str | None = None,
                 mlflow: bool = False) -> pd.DataFrame:
    """One row per trial (mvlab.analysis.load_study) with a ``label`` of its varied knobs."""
    from mvlab.analysis import load_study

    table = load_study(study.study_name, storage, tracking_uri=tracking_uri, mlflow=mlflow)
    table["label"] = labels(table)
    return table


def labels(table: pd.DataFrame) -> pd.Series:
    """Each trial's varied knob values in words (``last_half off``); empty for unsampled ones."""
    knobs = varied_knobs(table)
    if not knobs:
        return pd.Series("", index=table.index, dtype=object)
    return table[knobs].apply(
        lambda row: " ".join(str(v) for v in row if not (isinstance(v, float) and pd.isna(v))),
        axis=1).astype(object)


def varied_knobs(table: pd.DataFrame, include_seed: bool = False) -> list[str]:
    """``params.*`` columns that take more than one value (the seed only when asked)."""
    return [c for c in table.columns if str(c).startswith(PARAM)
            and (include_seed or c != SEED_COLUMN) and table[c].nunique(dropna=True) > 1]


def pattern_column(table: pd.DataFrame) -> str | None:
    """The knob to colour a Pareto plot by: a pattern knob if varied, else the first knob."""
    knobs = varied_knobs(table)
    for knob in knobs:
        if knob.endswith("pattern"):
            return knob
    return knobs[0] if knobs else None


def objectives(study: optuna.Study) -> dict[str, str]:
    names = study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]
    return {n: d.name.lower() for n, d in zip(names, study.directions, strict=True)}


def _complete(table: pd.DataFrame) -> pd.DataFrame:
    from mvlab.analysis import completed

    return completed(table) if len(table) else table


def write_pareto(table: pd.DataFrame, goals: Mapping[str, str], out_dir: Path) -> list[Path]:
    """``pareto.csv``, ``pareto.png`` and ``trials.csv`` into ``out_dir``."""
    from mvlab.analysis import pareto_table, with_pareto

    out_dir.mkdir(parents=True, exist_ok=True)
    done = _complete(table)
    written = []
    trials_csv = out_dir / "trials.csv"
    full = with_pareto(table, goals) if len(done) else table
    full.to_csv(trials_csv, index=False)
    written.append(trials_csv)
    pareto_csv = out_dir / "pareto.csv"
    if len(done):
        columns = [c for c in ("trial", "label", "spec", "seed", "fidelity", "params", "macs",
                               "mlflow_run_id") if c in done.columns]
        front = pareto_table(done, goals, columns=columns)
    else:
        front = pd.DataFrame(columns=["trial", *goals])
    front.to_csv(pareto_csv, index=False)
    written.append(pareto_csv)
    if len(done) and len(goals) >= 2:
        written.append(_pareto_png(done, goals, out_dir / "pareto.png"))
    return written


def _pareto_png(done: pd.DataFrame, goals: Mapping[str, str], path: Path) -> Path:
    from mvlab.analysis.plots import plot_pareto

    names = list(goals)
    # Accuracy up the y axis, the cost objective along x (the paper's plot).
    y = next((n for n in names if "top1" in n or "top5" in n), names[0])
    x = next(n for n in names if n != y)
    figure = plot_pareto(done, x=x, y=y, objectives={x: goals[x], y: goals[y]},
                         label=pattern_column(done), annotate="label",
                         title=f"{len(done)} trials; front labelled by its knobs")
    figure.savefig(path, dpi=130)
    return path


def write_sweep_artifacts(study: optuna.Study, storage_url: str, out_dir: Path) -> list[Path]:
    """The parent run's artifacts at the end of a sweep."""
    table = trials_table(study, storage_url, mlflow=False)
    return write_pareto(table, objectives(study), out_dir)


def pareto_records(study: optuna.Study, config: Any) -> list[dict[str, Any]]:
    """The front as plain dicts (trial number, values, params, spec)."""
    try:
        front = study.best_trials
    except (ValueError, RuntimeError):
        return []
    names = config.objective_names
    return [{"trial": t.number, **dict(zip(names, t.values, strict=True)), **t.params,
             "spec": t.user_attrs.get("spec")} for t in sorted(front, key=lambda t: t.number)]


# ------------------------------------------------------------------------------ mvlab report
def build_report(study_name: str, storage: Any, out_dir: Path,
                 tracking_uri: str | None = None) -> list[Path]:
    """Rebuild every table and plot of a study into ``out_dir`` (no training)."""
    from mvlab.analysis import choice_summary, load_study, seed_spread

    table = load_study(study_name, storage, tracking_uri=tracking_uri, mlflow=False)
    knobs = varied_knobs(table)
    table["label"] = labels(table)
    goals = dict(table.attrs.get("objectives") or {})
    written = write_pareto(table, goals, out_dir)
    done = _complete(table)
    metrics = {m: d for m, d in goals.items()}
    summaries: dict[str, pd.DataFrame] = {}
    if len(done):
        for knob in knobs:
            if done[knob].nunique(dropna=True) > MAX_CHOICES:
                continue  # a continuous knob (a float range): see the trials table instead
            summary = choice_summary(done, knob, metrics, config=("spec", "fidelity"))
            path = out_dir / f"choices_{knob[len(PARAM):].replace('.', '_')}.csv"
            summary.to_csv(path)
            summaries[knob] = summary
            written.append(path)
        accuracy = next((m for m in goals if "top1" in m), next(iter(goals)))
        spread = seed_spread(done, accuracy, config=("spec", "fidelity"))
        spread = spread.merge(done.drop_duplicates("spec")[["spec", "label"]], on="spec",
                              how="left")
        path = out_dir / "seed_spread.csv"
        spread.to_csv(path, index=False)
        written.append(path)
        if summaries:
            written.append(_choices_png(summaries, goals, out_dir / "choices.png"))
            written.append(_edf_png(done, accuracy, list(summaries), out_dir / "edf.png"))
    failed = table[table["state"].isin(["FAIL", "PRUNED"])]
    cols = [c for c in ("trial", "state", "label", "reason", "spec", "mlflow_run_id")
            if c in failed.columns]
    path = out_dir / "failed.csv"
    failed[cols].to_csv(path, index=False)
    written.append(path)
    written.append(_readme(study_name, table, goals, summaries, failed[cols], out_dir))
    return written


def _edf_png(done: pd.DataFrame, accuracy: str, knobs: list[str], path: Path) -> Path:
    """Error EDFs of ``accuracy`` per value of each knob (pycls's view of a design space):
    plain, and normalised by params where the knob changes the model's size."""
    from mvlab.analysis import plots, with_error

    frame = with_error(done, accuracy)
    error = f"{accuracy}_error"
    figures = [plots.plot_edf_pair(frame, error, by=knob, title=knob[len(PARAM):])
               for knob in knobs]
    if len(figures) == 1:
        figures[0].savefig(path, dpi=120)
        return path
    # Stack the per-knob figures into one PNG: one file per report keeps results/ browsable.
    import io

    import matplotlib.image as mpimg
    from matplotlib.figure import Figure

    images = []
    for figure in figures:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=120)
        buffer.seek(0)
        images.append(mpimg.imread(buffer))
    height = sum(im.shape[0] for im in images) / 120
    width = max(im.shape[1] for im in images) / 120
    combined = Figure(figsize=(width, height))
    axes = combined.subplots(len(images), 1, squeeze=False)[:, 0]
    for ax, image in zip(axes, images, strict=True):
        ax.imshow(image)
        ax.set_axis_off()
    combined.subplots_adjust(0, 0, 1, 1, 0, 0)
    combined.savefig(path, dpi=120)
    return path


def _choices_png(summaries: Mapping[str, pd.DataFrame], goals: Mapping[str, str],
                 path: Path) -> Path:
    from matplotlib.figure import Figure

    metrics = list(goals)[:2]
    figure = Figure(figsize=(4.2 * len(metrics), 0.4 + 1.6 * len(summaries)),
                    layout="constrained")
    axes = figure.subplots(len(summaries), len(metrics), squeeze=False)
    for row, (knob, summary) in enumerate(summaries.items()):
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            values = summary[f"{metric}_mean"]
            spread = summary[f"{metric}_seed_std"].fillna(0.0)
            labels = [str(v) for v in summary.index]
            ax.barh(range(len(values)), values, xerr=spread, color="tab:blue", alpha=0.8)
            ax.set_yticks(range(len(values)), labels, fontsize=7)
            ax.invert_yaxis()
            low = float((values - spread).min())
            high = float((values + spread).max())
            pad = 0.1 * (high - low) or 1.0
            ax.set_xlim(low - pad, high + pad)
            ax.set_title(f"{knob[len(PARAM):]}: {metric} (mean, bar: seed std)", fontsize=8)
            ax.grid(alpha=0.3, axis="x")
    figure.savefig(path, dpi=120)
    return path


def _readme(name: str, table: pd.DataFrame, goals: Mapping[str, str],
            summaries: Mapping[str, pd.DataFrame], failed: pd.DataFrame, out_dir: Path) -> Path:
    states = table["state"].value_counts().to_dict() if len(table) else {}
    lines = [f"# Study `{name}`", "",
             f"Trials: {len(table)} ({', '.join(f'{k} {v}' for k, v in sorted(states.items()))}). "
             f"Objectives: {', '.join(f'{k} ({v})' for k, v in goals.items())}.", "",
             "Rebuilt from the study's storage by `mvlab report`; no model was retrained.", "",
             "## Pareto front", ""]
    front = pd.read_csv(out_dir / "pareto.csv")
    show = [c for c in ("trial", "label", *goals, "params", "macs") if c in front.columns]
    lines += [_markdown(front[show]), "", "![Pareto front](pareto.png)", ""]
    for knob, summary in summaries.items():
        keep = [c for c in summary.columns if c.endswith(("_mean", "_seed_std")) or
                c in ("trials", "tied_with_best")]
        lines += [f"## {knob[len(PARAM):]}", "", _markdown(summary[keep].reset_index()), ""]
    if summaries:
        lines += ["![Per design choice](choices.png)", "",
                  "Error EDFs per design choice (left plain, right normalised by params):", "",
                  "![Error EDFs](edf.png)", ""]
    lines += ["## Failed and pruned trials", "",
              _markdown(failed) if len(failed) else "None.", ""]
    path = out_dir / "README.md"
    path.write_text("\n".join(lines))
    return path


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub table without the optional ``tabulate`` dependency."""
    if frame.empty:
        return "(empty)"

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])
