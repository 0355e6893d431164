"""A study's statistics, tables and plots, rebuilt from its record without training anything.

``analyse`` is the one code path: ``mvlab report`` writes what it returns and the notebooks
display it. Per fidelity (a 1-epoch and a 4-epoch run are never averaged together):

* configurations: duplicate points of one network (``grammar.network_spec``) are one
  configuration; each gets its seed mean with a t interval (its own seed sd, or with
  ``analysis.noise: pooled`` the sd pooled over the fidelity's configurations) and the count
  of its seeds that never left the plateau (``mvlab.analysis.plateau``);
* verdicts: every configuration against the study's reference (``analysis.reference``), paired
  over seeds, Holm-adjusted, TOST at ``analysis.equivalence_margin``, one verdict each
  (``mvlab.analysis.verdicts``), with a test of whether one noise level fits every configuration
  (``noise_homogeneity``); the ordered hypothesis ``analysis.trend`` by Page's L;
* reliability: split-half over seeds; below ``analysis.reliability_threshold`` the ranking is
  printed marked unreliable with the seeds it would take;
* the calibration gate (``analysis.gate``, ``mvlab.study.gate``): positive controls, accuracy
  band, every seed off the plateau and reliability, passed only when every criterion holds;
* the Pareto front over configuration means, a point whose lead is inside its CI marked;
* per-choice summaries and error EDFs over configurations;
* across fidelities: rank agreement of the cheapest with the longest, seeds resampled.

Files (``write_report``): ``configurations.csv``, ``verdicts.csv``, ``reliability.csv``, ``gate.csv``,
``pareto.csv``/``.png``, ``choices_<knob>.csv``, ``choices.png``, ``edf.png``,
``fidelity.csv``, ``failed.csv`` and a ``README.md`` that says what each shows; with several
fidelities the per-fidelity files carry the fidelity in their name."""
from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from mvlab import records
from mvlab.records import (
    FIDELITY,
    LABEL,
    MACS,
    MLFLOW_RUN_ID,
    NETWORK,
    PARAM_PREFIX,
    PARAMS,
    REASON,
    SEED,
    SPEC,
    STATE,
    THROUGHPUT,
    TRIAL,
)

PARAM = PARAM_PREFIX  # column prefix of trial params in mvlab.analysis tables
MAX_CHOICES = 12  # knobs with more distinct values get no per-choice table
CONFIG = "config"  # the configuration column the report adds (network spec + fidelity)
CONFIG_LABEL = "configuration"  # its readable name: the knob words of its points


def trials_table(study: optuna.Study, storage: Any, tracking_uri: str | None = None,
                 mlflow: bool = False) -> pd.DataFrame:
    """One row per trial (mvlab.analysis.load_study) with a ``label`` of its varied knobs."""
    from mvlab.analysis import load_study

    table = load_study(study.study_name, storage, tracking_uri=tracking_uri, mlflow=mlflow)
    table[LABEL] = labels(table)
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
    from mvlab.analysis.load import design_choices

    return design_choices(table, include_seed=include_seed)


def architecture_knobs(table: pd.DataFrame) -> list[str]:
    """Varied knobs other than the training budget (``params.train.*``, ``params.data.*``)."""
    from mvlab.analysis.load import architecture_choices

    return architecture_choices(table)


def objectives(study: optuna.Study) -> dict[str, str]:
    """The study's objectives, named as the loaded table's columns are."""
    from mvlab.analysis.load import study_objectives

    return study_objectives(study)


def accuracy_of(goals: Mapping[str, str]) -> str:
    """The accuracy objective (a ``*top1*``/``*top5*`` one), else the first."""
    return next((m for m in goals if "top1" in m or "top5" in m), next(iter(goals)))


def _complete(table: pd.DataFrame) -> pd.DataFrame:
    from mvlab.analysis import completed

    return completed(table) if len(table) else table


# ------------------------------------------------------------------------ configurations
def with_configurations(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` plus ``network`` (when the record lacks it), ``label``, ``config`` (network
    spec and fidelity: what was trained) and ``configuration`` (its points' knob words, joined
    with " = " where several points are one network)."""
    from mvlab.grammar import network_spec

    result = table.copy()
    result.attrs = dict(table.attrs)
    if LABEL not in result.columns:
        result[LABEL] = labels(result)
    if SPEC not in result.columns:
        result[NETWORK] = result[LABEL]
    else:
        cache: dict[str, str] = {}

        def network(spec: Any) -> Any:
            if not isinstance(spec, str):
                return spec
            if spec not in cache:
                cache[spec] = network_spec(spec)
            return cache[spec]

        known = result[NETWORK] if NETWORK in result.columns else pd.Series(
            float("nan"), index=result.index)
        result[NETWORK] = known.where(known.notna(), result[SPEC].map(network))
    fidelity = result[FIDELITY].astype(str) if FIDELITY in result.columns else ""
    result[CONFIG] = result[NETWORK].astype(str) + " @ " + fidelity
    words = architecture_knobs(result)
    # Row by row, str() on each: pandas' string dtype keeps a missing knob (a trial that has no
    # params yet) missing through astype(str), and " ".join refuses the float NaN.
    short = (pd.Series([" ".join(map(str, row)) for row in
                        result[words].itertuples(index=False, name=None)], index=result.index,
                       dtype=object)
             if words else result[LABEL].astype(str))
    names = short.groupby(result[CONFIG]).agg(lambda s: " = ".join(dict.fromkeys(s)))
    # A study of one configuration varies no knob: name it by what it is.
    names = names.where(names.str.strip() != "", "the study's model")
    result[CONFIG_LABEL] = result[CONFIG].map(names)
    return result


def one_per_seed(done: pd.DataFrame) -> pd.DataFrame:
    """One row per (configuration, seed): a network's duplicate points count once."""
    return done.drop_duplicates([CONFIG, SEED]) if SEED in done.columns else done


def join_throughput(done: pd.DataFrame, path: str | Path, column: str = THROUGHPUT,
                    ) -> pd.DataFrame:
    """Replace each trial's throughput by the one a separate measurement (a CSV with ``spec``
    and ``column``, e.g. ``mvlab bench study``) gives its network: the sweep's own, taken while
    training shared the machine, is noise on a loaded CPU."""
    from mvlab.errors import StudyError
    from mvlab.grammar import network_spec

    try:
        measured = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise StudyError(f"--throughput {path}: cannot read it as CSV ({exc})") from None
    missing = [c for c in (SPEC, column) if c not in measured.columns]
    if missing:
        raise StudyError(f"--throughput {path}: no column(s) {missing}; it has "
                         f"{list(measured.columns)} (pick one with --throughput-column)")
    measured = measured.assign(**{NETWORK: measured[SPEC].map(network_spec)})
    per_network = measured.groupby(NETWORK)[column].median()
    result = done.assign(**{THROUGHPUT: done[NETWORK].map(per_network)})
    result.attrs = dict(done.attrs)
    unmatched = int(result[THROUGHPUT].isna().sum())
    if unmatched:
        raise StudyError(f"--throughput {path}: {unmatched} trial(s) have no measured network "
                         "in it; measure every configuration of the study")
    return result


# ------------------------------------------------------------------------------- analysis
@dataclass
class FidelityAnalysis:
    """Everything the report says about one fidelity of a study (tables are DataFrames)."""

    fidelity: str
    configurations: pd.DataFrame  # one row per configuration: means, CIs, front flags
    verdicts: pd.DataFrame | None = None
    reference: str | None = None
    trend: pd.Series | None = None
    trend_order: list[str] = field(default_factory=list)
    reliability: pd.Series | None = None
    noise: pd.Series | None = None  # noise_homogeneity: is every configuration equally noisy?
    gate: pd.DataFrame | None = None  # one row per calibration-gate criterion
    choices: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class StudyAnalysis:
    name: str
    goals: dict[str, str]
    accuracy: str
    settings: dict[str, Any]
    table: pd.DataFrame  # every trial, with configuration columns
    fidelities: dict[str, FidelityAnalysis]
    fidelity_agreement: pd.DataFrame | None = None
    fidelity_pair: tuple[str, str] | None = None
    throughput_source: str = "the sweep's own measurement"


def _matching(done: pd.DataFrame, point: Mapping[str, Any]) -> pd.Series:
    keep = pd.Series(True, index=done.index)
    for key, value in point.items():
        column = PARAM + key
        if column not in done.columns:
            from mvlab.errors import StudyError

            raise StudyError(f"analysis: knob {key!r} is not in the study's record (its knobs: "
                             f"{[c[len(PARAM):] for c in varied_knobs(done)]})")
        keep &= done[column].map(lambda recorded, value=value: _same(recorded, value))
    return keep


def _same(recorded: Any, value: Any) -> bool:
    """A recorded knob value equals a study file's: 24.0 (a float column, NaN for trials still
    running) is 24."""
    if str(recorded) == str(value):
        return True
    try:
        return float(recorded) == float(value)
    except (TypeError, ValueError):
        return False


def _config_of(done: pd.DataFrame, point: Mapping[str, Any]) -> str | None:
    found = _configs_of(done, point)
    return found[0] if len(found) == 1 else None


def _configs_of(done: pd.DataFrame, point: Mapping[str, Any]) -> list[str]:
    """Every configuration whose knobs match ``point`` (the knobs it names)."""
    return [str(c) for c in done.loc[_matching(done, point), CONFIG].unique()]


def analyse(table: pd.DataFrame, goals: Mapping[str, str], settings: Mapping[str, Any] | None
            = None, throughput: str | Path | None = None, throughput_column: str = THROUGHPUT,
            n_boot: int = 2000, seed: int = 0) -> StudyAnalysis:
    """The study's statistics per fidelity (module doc). ``table``: one row per trial as
    ``mvlab.analysis.load_study`` returns it; ``settings``: the study's ``analysis:`` section
    (reference, equivalence_margin, reliability_threshold, trend)."""
    from mvlab.analysis import (
        AnalysisError,
        choice_summary,
        compare_to_reference,
        fidelity_levels,
        fidelity_table,
        front_within_ci,
        noise_homogeneity,
        page_trend,
        pareto_mask,
        seed_matrix,
        seed_means,
        split_half,
    )

    settings = dict(settings or {})
    margin = float(settings.get("equivalence_margin") or 0.5)
    threshold = float(settings.get("reliability_threshold") or 0.8)
    # A study that adds seeds while comparisons are undetermined decides up to `looks` times.
    alpha = float(settings.get("alpha") or 0.05) / int(settings.get("looks") or 1)
    pooled = settings.get("noise") == "pooled"
    goals = dict(goals)
    accuracy = accuracy_of(goals)
    table = with_configurations(table)
    done = one_per_seed(_complete(table))
    source = "the sweep's own measurement"
    if throughput is not None and len(done):
        done = join_throughput(done, throughput, throughput_column)
        source = f"{throughput} ({throughput_column}, median per network)"
    levels = fidelity_levels(done) if len(done) and FIDELITY in done.columns else ["all"]
    maximise = goals.get(accuracy, "maximize").startswith("max")
    result = StudyAnalysis(str(table.attrs.get("study", "")), goals, accuracy, settings, table,
                           {}, throughput_source=source)
    for level in levels:
        rows = done[done[FIDELITY].astype(str) == level] if level != "all" else done
        if rows.empty:
            continue
        metrics = [m for m in goals if m in rows.columns]
        means = seed_means(rows, metrics, config=CONFIG, pooled=pooled)
        means = means.sort_values(accuracy, ascending=not maximise, kind="stable")
        means = means.reset_index(drop=True)
        every = _complete(table)
        means["trials"] = means[CONFIG].map(
            every[every[CONFIG].isin(means[CONFIG])].groupby(CONFIG)[TRIAL].agg(
                lambda s: ",".join(map(str, sorted(s)))))
        analysis = FidelityAnalysis(level, means)
        _mark_plateau(rows, means, analysis.notes)
        if len(goals) >= 2:
            means["pareto"] = pareto_mask(means, goals)
            means["front_within_ci"] = front_within_ci(means, goals, accuracy)
        reference_point = settings.get("reference") or {}
        if reference_point:
            analysis.reference = _config_of(rows, reference_point)
            if analysis.reference is None:
                analysis.notes.append(f"reference {reference_point} matches no single "
                                      "configuration here; no verdicts")
        if analysis.reference is not None and len(means) > 1:
            try:
                verdicts = compare_to_reference(rows, accuracy, analysis.reference,
                                                config=CONFIG, margin=margin, alpha=alpha,
                                                higher_is_better=maximise, pooled=pooled)
                names = dict(zip(means[CONFIG], means[CONFIG_LABEL], strict=True))
                verdicts.insert(0, CONFIG_LABEL, verdicts[CONFIG].map(names))
                analysis.verdicts = verdicts
                means["verdict"] = means[CONFIG].map(
                    dict(zip(verdicts[CONFIG], verdicts["verdict"], strict=True))).fillna(
                    "reference")
            except AnalysisError as exc:
                analysis.notes.append(f"verdicts: {exc}")
        for knob, values in (settings.get("trend") or {}).items():
            base = {k: v for k, v in reference_point.items() if k != knob}
            order = [_config_of(rows, {**base, knob: v}) for v in values]
            if any(o is None for o in order):
                analysis.notes.append(f"trend: not every value of {knob} {list(values)} is one "
                                      "configuration here")
                continue
            try:
                oriented = rows if maximise else rows.assign(**{accuracy: -rows[accuracy]})
                analysis.trend = page_trend(oriented, accuracy, order, config=CONFIG)
                analysis.trend_order = [f"{knob}={v}" for v in values]
            except AnalysisError as exc:
                analysis.notes.append(f"trend: {exc}")
        try:  # no seeds or no finite accuracy: no noise section and no reliability
            matrix = seed_matrix(rows, accuracy, CONFIG)
            analysis.noise = noise_homogeneity(matrix)
            analysis.reliability = split_half(matrix, n_boot=n_boot, threshold=threshold,
                                              seed=seed)
        except AnalysisError as exc:
            analysis.notes.append(f"reliability: {exc}")
        if settings.get("gate"):
            from mvlab.study.gate import evaluate_gate

            analysis.gate = evaluate_gate(
                settings["gate"], rows, means, analysis.reliability,
                lambda point, rows=rows: _configs_of(rows, point), accuracy=accuracy,
                config=CONFIG, label=CONFIG_LABEL, margin=margin, alpha=alpha,
                threshold=threshold, maximise=maximise, pooled=pooled)
        for knob in architecture_knobs(rows):
            if rows[knob].nunique(dropna=True) > MAX_CHOICES:
                continue  # a continuous knob (a float range): see configurations.csv instead
            analysis.choices[knob] = choice_summary(rows, knob, {m: goals[m] for m in metrics},
                                                    config=CONFIG)
        result.fidelities[level] = analysis
    if len(result.fidelities) >= 2:
        low, high = list(result.fidelities)[0], list(result.fidelities)[-1]
        try:
            result.fidelity_agreement = fidelity_table(done, accuracy, low, high,
                                                       config=NETWORK, n_boot=n_boot,
                                                       seed=seed)
            result.fidelity_pair = (low, high)
        except AnalysisError as exc:
            result.fidelities[high].notes.append(f"fidelity agreement: {exc}")
    return result


def _mark_plateau(rows: pd.DataFrame, means: pd.DataFrame, notes: list[str]) -> None:
    """``means["on_plateau"]``: seeds of each configuration that never left the plateau
    (``mvlab.analysis.plateau``), <NA> where none was recorded; a note when some were not."""
    from mvlab.analysis.plateau import describe_exits, exit_epochs, plateau_counts

    counts = plateau_counts(rows, CONFIG)
    recorded = means[CONFIG].map(counts["recorded"]).fillna(0)
    means["on_plateau"] = means[CONFIG].map(counts["on_plateau"]).astype("Int64").where(
        recorded > 0, pd.NA)
    means["plateau_judged"] = recorded.astype(int)
    trials = rows.reset_index(drop=True)  # grouped by position below, whatever rows' index
    epochs = exit_epochs(trials)
    seeds = trials[SEED] if SEED in trials else pd.Series(range(len(trials)))
    exits = {config: describe_exits(epochs[group.index], seeds[group.index])
             for config, group in trials.groupby(CONFIG, sort=False)}
    means["plateau_exits"] = means[CONFIG].map(exits).fillna("")
    # seed_means carried one seed's records along; per configuration they mislead
    for column in (records.TRAIN_LOSSES, records.STAGE_EPOCHS):
        if column in means:
            del means[column]
    unrecorded = int((counts["trials"] - counts["recorded"]).sum())
    if unrecorded:
        notes.append(f"plateau check: {unrecorded} trial(s) lack the training loss or the "
                     "class count (recorded since 2026-12-05) and are not judged")


def _stuck(means: pd.DataFrame) -> pd.DataFrame:
    """The configurations (rows of ``means``) with a judged seed on the plateau."""
    if "on_plateau" not in means:
        return means.iloc[:0]
    return means[means["on_plateau"].fillna(0) > 0]


def plateau_lines(part: FidelityAnalysis) -> list[str]:
    """Which configurations have seeds that never left the plateau, and what that does to them."""
    from mvlab.analysis.plateau import describe_threshold

    means = part.configurations
    stuck = _stuck(means)
    lines: list[str] = []
    if not stuck.empty:
        listed = "; ".join(f"{row[CONFIG_LABEL]}: {int(row['on_plateau'])} of "
                           f"{int(row['plateau_judged'])} judged seeds"
                           for _, row in stuck.iterrows())
        lines += ["### Seeds that never left the plateau", "",
                  f"{listed}. {describe_threshold()}. Such a seed had learned next to nothing of "
                  "its training set by the end of its budget, whatever its architecture: its "
                  "score says when it would start to learn, not how well it mixes tokens. Where "
                  "a configuration has seeds on and off the plateau its seed spread has two "
                  "humps, which more seeds average but do not narrow, and its interval is a rough "
                  "guide only; a longer budget or another learning rate can move seeds off it "
                  "(docs/studies.md, \"Plateau\").", ""]
    exits = means[means.get("plateau_exits", pd.Series("", index=means.index)).astype(bool)]
    if not exits.empty:
        lines += ["### When each seed left the plateau", "",
                  "The epoch from which the seed's mean training loss stayed below the plateau "
                  "threshold to the end (epochs counted from 1, data.curriculum stages included "
                  "but never judged; \"never\": still on the plateau at the end). Where "
                  "seeds leave at different epochs, a score at a fixed budget says mostly which "
                  "of them started early.", ""]
        lines += [f"- {row[CONFIG_LABEL]}: {row['plateau_exits']}" for _, row in exits.iterrows()]
        lines.append("")
    return lines


def plateau_line(path: Path) -> str | None:
    """One line for the terminal from a written ``configurations*.csv``, when some judged seed
    never left the plateau."""
    means = pd.read_csv(path)
    stuck = _stuck(means)
    if stuck.empty:
        return None
    where = f" ({path.stem[len('configurations_'):]})" if path.stem != "configurations" else ""
    return (f"plateau{where}: {int(stuck['on_plateau'].sum())} of "
            f"{int(means['plateau_judged'].sum())} judged seeds never left it ("
            + ", ".join(f"{row[CONFIG_LABEL]}: {int(row['on_plateau'])}"
                        for _, row in stuck.iterrows())
            + "): they learned next to nothing in this budget; see the report's README.md")


def ranking_lines(analysis: FidelityAnalysis, accuracy: str) -> list[str]:
    """The ranking by seed mean, headed by whether the study can rank at all."""
    means = analysis.configurations
    rel = analysis.reliability
    if rel is None:
        head = "Ranking by seed mean (reliability not computable: see notes)"
    elif rel["reliable"]:
        head = (f"Ranking by seed mean (split-half reliability {rel['r_full']:.2f} >= "
                f"{rel['threshold']:g})")
    else:
        needed = rel["seeds_needed"]
        seeds = ("the seeds it would take cannot be projected: the halves do not agree "
                 "(r <= 0)" if not math.isfinite(needed)
                 else f"reaching it would take about {int(needed)} seeds")
        head = (f"Ranking by seed mean: UNRELIABLE (split-half reliability {rel['r_full']:.2f}, "
                f"95 % CI {rel['r_full_low']:.2f} to {rel['r_full_high']:.2f}, below "
                f"{rel['threshold']:g}; {seeds})")
    lines = [head, ""]
    for rank, row in enumerate(means.itertuples(index=False), start=1):
        row = row._asdict()
        low, high = row.get(f"{accuracy}_ci_low"), row.get(f"{accuracy}_ci_high")
        ci = (f" (95 % CI {low:.2f} to {high:.2f})" if isinstance(low, float)
              and math.isfinite(low) else " (one seed: no CI)")
        stuck = row.get("on_plateau")
        plateau = (f", {int(stuck)} on the plateau" if stuck is not None
                   and not pd.isna(stuck) and stuck > 0 else "")
        lines.append(f"{rank}. {row[CONFIG_LABEL]}: {row[accuracy]:.2f}{ci}, "
                     f"{int(row['runs'])} seed(s){plateau}")
    return lines


# ------------------------------------------------------------------------------- writing
def _suffix(level: str, several: bool) -> str:
    return "_" + re.sub(r"[^A-Za-z0-9]+", "_", level).strip("_") if several else ""


def write_pareto(table: pd.DataFrame, goals: Mapping[str, str], out_dir: Path) -> list[Path]:
    """``trials.csv`` and, over configuration means per fidelity, ``pareto.csv`` and
    ``pareto.png`` into ``out_dir`` (the sweep's parent-run artifacts)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trials_csv = out_dir / "trials.csv"
    table.to_csv(trials_csv, index=False)
    written = [trials_csv]
    if not len(_complete(table)) or not goals:
        pd.DataFrame(columns=[TRIAL, *goals]).to_csv(out_dir / "pareto.csv", index=False)
        return [*written, out_dir / "pareto.csv"]
    analysis = analyse(table, goals, n_boot=200)
    return written + _write_fronts(analysis, out_dir)


def _write_fronts(analysis: StudyAnalysis, out_dir: Path) -> list[Path]:
    written = []
    several = len(analysis.fidelities) > 1
    for level, part in analysis.fidelities.items():
        suffix = _suffix(level, several)
        means = part.configurations
        front = means[means["pareto"]] if "pareto" in means else means.iloc[:0]
        front = front.assign(**{TRIAL: front["trials"].str.split(",").str[0].astype(int)})
        columns = [c for c in (TRIAL, "trials", CONFIG_LABEL, *analysis.goals,
                               f"{analysis.accuracy}_ci_low", f"{analysis.accuracy}_ci_high",
                               "runs", "front_within_ci", PARAMS, MACS, SPEC, FIDELITY)
                   if c in front.columns]
        path = out_dir / f"pareto{suffix}.csv"
        front[columns].to_csv(path, index=False)
        written.append(path)
        if len(analysis.goals) >= 2:
            written.append(_pareto_png(part, analysis, out_dir / f"pareto{suffix}.png"))
    return written


def _pareto_png(part: FidelityAnalysis, analysis: StudyAnalysis, path: Path) -> Path:
    from mvlab.analysis.plots import plot_pareto_means

    goals = analysis.goals
    y = analysis.accuracy
    x = next(n for n in goals if n != y)
    figure = plot_pareto_means(part.configurations, x=x, y=y, objectives={x: goals[x],
                                                                          y: goals[y]},
                               label=CONFIG_LABEL,
                               title=f"{part.fidelity}: {len(part.configurations)} "
                                     "configurations (seed means, bars: 95 % CI)")
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
    return [{TRIAL: t.number, **dict(zip(names, t.values, strict=True)), **t.params,
             SPEC: t.user_attrs.get(SPEC)} for t in sorted(front, key=lambda t: t.number)]


# ------------------------------------------------------------------------------ mvlab report
def study_settings(storage: Any, study_name: str) -> dict[str, Any]:
    """The ``analysis:`` settings a sweep recorded on the study (empty if none)."""
    from mvlab.analysis.load import open_storage

    record = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    return dict(record.user_attrs.get(records.STUDY_ANALYSIS) or {})


def with_recorded_looks(settings: Mapping[str, Any], recorded: Mapping[str, Any],
                        study_name: str) -> tuple[dict[str, Any], str | None]:
    """``settings`` (a study file's ``analysis:``) with the number of looks the study ran
    with, from ``recorded`` (the ``analysis:`` its sweep stored), and a note when the file now
    says otherwise. The looks are a fact of how the study was run (its sequential stages
    decided at ``alpha / looks``), not an analysis choice: a study file edited since
    (``study.sequential`` added or changed) must not change the level of verdicts already
    reached. Alpha, the margin and the noise model stay the file's (or ``--set``'s)."""
    if not recorded:  # not recorded by a sweep
        return dict(settings), None
    looks = recorded.get("looks", 1)  # recorded before sequential seeds existed: one look
    if int(looks) == int(settings.get("looks") or 1):
        return dict(settings), None
    note = (f"report: study {study_name!r} ran with {int(looks)} planned look(s) (its record); "
            f"the study file now gives {int(settings.get('looks') or 1)}: verdicts are tested "
            f"at alpha / {int(looks)}, as the study decided")
    return {**settings, "looks": int(looks)}, note


def build_report(study_name: str, storage: Any, out_dir: Path,
                 tracking_uri: str | None = None, settings: Mapping[str, Any] | None = None,
                 throughput: str | Path | None = None,
                 throughput_column: str = THROUGHPUT) -> list[Path]:
    """Rebuild every table and plot of a study from its storage into ``out_dir``: judged by
    ``settings`` (a study file's ``analysis:``; default the one its sweep recorded) at the
    number of looks the study recorded (``with_recorded_looks``, its note on stderr)."""
    from mvlab.analysis import load_study

    table = load_study(study_name, storage, tracking_uri=tracking_uri, mlflow=False)
    recorded = dict((table.attrs.get("study_attrs") or {}).get(records.STUDY_ANALYSIS) or {})
    if settings is None:
        settings = recorded
    else:
        settings, note = with_recorded_looks(settings, recorded, study_name)
        if note:
            print(note, file=sys.stderr)
    goals = dict(table.attrs.get("objectives") or {})
    analysis = analyse(table, goals, settings, throughput, throughput_column)
    out_dir.mkdir(parents=True, exist_ok=True)
    trials_csv = out_dir / "trials.csv"
    analysis.table.to_csv(trials_csv, index=False)
    return [trials_csv, *write_report(analysis, out_dir, "the study's storage")]


def write_report(analysis: StudyAnalysis, out_dir: Path, source: str) -> list[Path]:
    """Every file of the report (module doc) into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    several = len(analysis.fidelities) > 1
    written = _write_fronts(analysis, out_dir) if analysis.fidelities else []
    for level, part in analysis.fidelities.items():
        suffix = _suffix(level, several)
        path = out_dir / f"configurations{suffix}.csv"
        part.configurations.to_csv(path, index=False)
        written.append(path)
        if part.verdicts is not None:
            path = out_dir / f"verdicts{suffix}.csv"
            part.verdicts.to_csv(path, index=False)
            written.append(path)
            written.append(_verdicts_png(part, analysis, out_dir / f"verdicts{suffix}.png"))
        if part.reliability is not None:
            path = out_dir / f"reliability{suffix}.csv"
            part.reliability.rename("value").to_csv(path, index_label="statistic")
            written.append(path)
        if part.gate is not None:
            path = out_dir / f"gate{suffix}.csv"
            part.gate.to_csv(path, index=False)
            written.append(path)
        for knob, summary in part.choices.items():
            path = out_dir / f"choices_{knob[len(PARAM):].replace('.', '_')}{suffix}.csv"
            summary.to_csv(path)
            written.append(path)
        if part.choices:
            written.append(_choices_png(part, analysis, out_dir / f"choices{suffix}.png"))
            written.append(_edf_png(part, analysis, out_dir / f"edf{suffix}.png"))
    if analysis.fidelity_agreement is not None:
        path = out_dir / "fidelity.csv"
        analysis.fidelity_agreement.to_csv(path, index_label="ranker")
        written.append(path)
    table = analysis.table
    failed = table[table[STATE].isin(["FAIL", "PRUNED"])] if STATE in table else table[:0]
    cols = [c for c in (TRIAL, STATE, LABEL, REASON, SPEC, MLFLOW_RUN_ID)
            if c in failed.columns]
    path = out_dir / "failed.csv"
    failed[cols].to_csv(path, index=False)
    written.append(path)
    written.append(_readme(analysis, failed[cols], out_dir, source))
    return written


def _verdicts_png(part: FidelityAnalysis, analysis: StudyAnalysis, path: Path) -> Path:
    from mvlab.analysis.plots import plot_verdicts

    figure = plot_verdicts(part.verdicts, label=CONFIG_LABEL,
                           margin=float(analysis.settings.get("equivalence_margin") or 0.5),
                           title=f"{part.fidelity}\neach configuration minus the reference "
                                 f"({_name_of(part, part.reference)})")
    figure.savefig(path, dpi=120)
    return path


def noise_lines(part: FidelityAnalysis, pooled: bool) -> list[str]:
    """What the verdicts assume about seed noise, and whether the data bear it out."""
    noise = part.noise
    if noise is None or not noise["pairs"]:
        return []
    text = (f"From seed to seed, the difference between two configurations varies with an sd "
            f"from {noise['pair_sd_min']:.2f} to {noise['pair_sd_max']:.2f} points over the "
            f"{noise['pairs']} pairs with 2 or more shared seeds")
    if math.isfinite(noise["pooled_pair_sd"]):
        text += f"; one pooled level would give every pair {noise['pooled_pair_sd']:.2f}"
    text += (f". A configuration's own seed sd goes from {noise['sd_min']:.2f} "
             f"({_name_of(part, noise['config_min'])}) to {noise['sd_max']:.2f} "
             f"({_name_of(part, noise['config_max'])})")
    unequal = math.isfinite(noise["p"]) and noise["p"] < 0.05
    if math.isfinite(noise["p"]):
        text += (f"; a Brown-Forsythe screen of equal spread over the {noise['configs']} "
                 f"configurations with 4 or more seeds gives p = {noise['p']:.3g}"
                 + (" (unequal)" if unequal else " (unequal spread not shown; the screen "
                    "rejects rarely at few seeds)"))
    if not pooled:
        few = part.verdicts is not None and bool((part.verdicts["seeds"] < 4).any())
        text += (". Each comparison is judged by the spread of its own per-seed differences "
                 "(`analysis.noise: paired`), so a noisy configuration needs more seeds and "
                 "does not blur the others"
                 + ("; with 2 or 3 seeds that spread rests on 1 or 2 degrees of freedom, so "
                    "`mde` and `seeds_for_margin` are rough." if few else "."))
    elif unequal:
        text += (". **The verdicts use one pooled noise level (`analysis.noise: pooled`), which "
                 "assumes equal noise: here it makes the steadiest comparisons too cautious and "
                 "the noisiest too bold. Set `analysis.noise: paired`.**")
    else:
        text += (". The verdicts use one pooled noise level (`analysis.noise: pooled`), which "
                 "assumes every pair of configurations is equally noisy.")
    return ["### Seed noise", "", text, ""]


def _name_of(part: FidelityAnalysis, config: str | None) -> str:
    means = part.configurations
    names = dict(zip(means[CONFIG], means[CONFIG_LABEL], strict=True))
    return names.get(config, str(config))


def _edf_png(part: FidelityAnalysis, analysis: StudyAnalysis, path: Path) -> Path:
    """Error EDFs of the configuration means per value of each knob (pycls's view of a design
    space): plain, and normalised by params where the knob changes the model's size."""
    from mvlab.analysis import plots, with_error

    frame = with_error(part.configurations, analysis.accuracy)
    error = f"{analysis.accuracy}_error"
    figures = [plots.plot_edf_pair(frame, error, by=knob, title=knob[len(PARAM):])
               for knob in part.choices]
    return _stack(figures, path)


def _stack(figures: list, path: Path) -> Path:
    if len(figures) == 1:
        figures[0].savefig(path, dpi=120)
        return path
    # Stack the per-knob figures into one PNG: one file per report keeps a folder browsable.
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


def _choices_png(part: FidelityAnalysis, analysis: StudyAnalysis, path: Path) -> Path:
    from mvlab.analysis.plots import plot_choice_means

    metrics = [m for m in analysis.goals if f"{m}_mean" in next(iter(part.choices.values()))]
    figure = plot_choice_means(part.choices, metrics[:2], prefix=PARAM)
    figure.savefig(path, dpi=120)
    return path


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def early_init_lines(table: pd.DataFrame) -> list[str]:
    """What every result is conditional on when the trials' early part started from a fixed
    seed (``train.early_init_seed``, recorded per trial as ``early_init_seed``)."""
    if records.EARLY_INIT_SEED not in table:
        return []
    fixed = sorted({int(v) for v in table[records.EARLY_INIT_SEED].dropna()})
    if not fixed:
        return []
    if len(fixed) > 1:
        return [f"**Several early-part initialisations.** The trials' stems and first stages "
                f"started from the weights of seeds {', '.join(map(str, fixed))} "
                f"(`train.early_init_seed`), not from each trial's own seed.", ""]
    return [f"**One early-part initialisation.** Every trial's stem and first stages started "
            f"from the weights of seed {fixed[0]} (`train.early_init_seed`): a trial's seed "
            f"varied the rest of the network, drop-path and, unless the study pinned "
            f"`data.order_seed`, the data order. Every result below holds for that one start of "
            f"the shared early part, not over its initialisations.", ""]


def _readme(analysis: StudyAnalysis, failed: pd.DataFrame, out_dir: Path, source: str) -> Path:
    table = analysis.table
    states = table[STATE].value_counts().to_dict() if STATE in table and len(table) else {}
    settings = analysis.settings
    margin = float(settings.get("equivalence_margin") or 0.5)
    looks = int(settings.get("looks") or 1)
    several = len(analysis.fidelities) > 1
    acc = analysis.accuracy
    lines = [f"# Study `{analysis.name}`", "",
             f"Trials: {len(table)} ({', '.join(f'{k} {v}' for k, v in sorted(states.items()))})."
             f" Objectives: {', '.join(f'{k} ({v})' for k, v in analysis.goals.items())}. "
             f"Throughput: {analysis.throughput_source}.", "",
             f"Rebuilt from {source} by `mvlab report`; no model was retrained. Points that "
             "train the same network are one configuration (`configuration` names all its "
             "points); every number below is over configurations, per fidelity, with seeds as "
             "blocks. Statistics: docs/studies.md (\"Statistics\").", "",
             *early_init_lines(table)]
    for level, part in analysis.fidelities.items():
        suffix = _suffix(level, several)
        means = part.configurations
        lines += [f"## Fidelity `{level}`" if several else f"## `{level}`", ""]
        lines += noise_lines(part, settings.get("noise") == "pooled")
        if part.gate is not None:
            from mvlab.study.gate import gate_lines

            lines += gate_lines(part.gate, _markdown, f"gate{suffix}.csv")
        if part.verdicts is not None:
            verdicts = part.verdicts
            counts = verdicts["verdict"].value_counts().to_dict()
            lines += [f"### Against the reference: {_name_of(part, part.reference)}", "",
                      f"Paired difference over seeds (configuration minus reference, {acc} "
                      f"points), CI at {verdicts.attrs['ci_level'] * 100:.1f} % (Bonferroni over "
                      f"{verdicts.attrs['comparisons']} comparisons), p Holm-adjusted, TOST at "
                      f"±{margin:g} points, family-wise level {verdicts.attrs['alpha']:.3g}"
                      + (f" ({float(settings.get('alpha') or 0.05):g} over {looks} looks: seeds added while comparisons were "
                         "undetermined)" if looks > 1 else "") + ". Verdicts: "
                      + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ".", ""]
            show = verdicts[[CONFIG_LABEL, "verdict", "seeds", "diff", "ci_low", "ci_high",
                             "p_diff_holm", "p_equiv_holm", "mde", "seeds_for_margin"]]
            lines += [_markdown(show), "", f"![verdicts](verdicts{suffix}.png)", "",
                      "`mde`: the smallest difference these seeds detect with 80 % power; "
                      f"`seeds_for_margin`: seeds at which a ±{margin:g}-point difference "
                      "becomes detectable (and equivalence within it demonstrable).", ""]
        if part.trend is not None:
            trend = part.trend
            lines += ["### Ordered hypothesis", "",
                      f"Predicted order (worst first): {' < '.join(part.trend_order)}. Page's L "
                      f"= {trend['L']:.0f} over {int(trend['seeds'])} seeds, one-sided p = "
                      f"{trend['p']:.3g} ({trend['method']}): "
                      + ("the data support the predicted trend." if trend["p"] < 0.05 else
                         "no evidence for the predicted trend at these seeds (not evidence "
                         "against it)."), ""]
        lines += ["### Configurations", "", *ranking_lines(part, acc), ""]
        lines += plateau_lines(part)
        if part.reliability is not None:
            rel = part.reliability
            lines += [f"Split-half reliability over seeds: Spearman of configuration means "
                      f"between seed halves {_fmt(rel['r_half'])} (95 % CI "
                      f"{_fmt(rel['r_half_low'])} to {_fmt(rel['r_half_high'])}), "
                      f"{_fmt(rel['r_full'])} for the mean of all {int(rel['seeds'])} seeds "
                      f"(Spearman-Brown); {int(rel['configs'])} configurations. "
                      f"(`reliability{suffix}.csv`)", ""]
        if "pareto" in means:
            front = means[means["pareto"]]
            show = [c for c in (CONFIG_LABEL, *analysis.goals, f"{acc}_ci_low", f"{acc}_ci_high",
                                "runs", "front_within_ci", PARAMS, MACS)
                    if c in front.columns]
            lines += ["### Pareto front over configuration means", "",
                      "`front_within_ci`: the point leads a configuration that is at least as "
                      "good in the other objectives by less than the CI of the difference: its "
                      "place on the front is not established.", "",
                      _markdown(front[show]), "", f"![Pareto front](pareto{suffix}.png)", ""]
        for knob, summary in part.choices.items():
            keep = [c for c in summary.columns if c.endswith(("_mean", "_ci_low", "_ci_high"))
                    or c in ("trials", "configs")]
            lines += [f"### {knob[len(PARAM):]} (descriptive)", "",
                      _markdown(summary[keep].reset_index()), ""]
        if part.choices:
            lines += [f"![Per design choice](choices{suffix}.png)", "",
                      "Error EDFs of configuration means per design choice (left plain, right "
                      "normalised by params):", "", f"![Error EDFs](edf{suffix}.png)", ""]
        if part.notes:
            lines += ["Notes: " + "; ".join(part.notes) + ".", ""]
    if analysis.fidelity_agreement is not None:
        low, high = analysis.fidelity_pair
        show = analysis.fidelity_agreement.reset_index(names="ranker")
        lines += [f"## Does `{low}` rank like `{high}`?", "",
                  "Rank agreement of configuration seed means with the longer run; 95 % "
                  "intervals resample configurations and seeds within them. Baselines (params, "
                  "MACs) in their better direction (`direction`).", "", _markdown(show), ""]
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


def table_from_csv(path: str | Path, goals: Mapping[str, str]) -> pd.DataFrame:
    """A trials table exported by an earlier report (``trials.csv``), for a study whose storage
    is gone: the same columns ``load_study`` gives, with ``goals`` as its objectives."""
    from mvlab.errors import StudyError

    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise StudyError(f"--trials {path}: cannot read it as CSV ({exc})") from None
    missing = [c for c in (TRIAL, STATE, *goals) if c not in table.columns]
    if missing:
        raise StudyError(f"--trials {path}: no column(s) {missing}; pass a trials.csv that "
                         "`mvlab report` wrote")
    table = table.drop(columns=[c for c in ("pareto", "pareto_rank", LABEL) if c in table])
    table.attrs.update(objectives=dict(goals), study=Path(path).parent.name)
    return table


__all__ = ["analyse", "build_report", "write_report", "table_from_csv", "with_configurations",
           "ranking_lines", "StudyAnalysis", "FidelityAnalysis"]
