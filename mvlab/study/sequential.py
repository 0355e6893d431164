"""Seeds added in stages: a study's comparisons with its reference run until each has a verdict.

After the planned points (``study.seeds``) have run, ``queue_next_seeds`` judges every
configuration against ``analysis.reference`` exactly as ``mvlab report`` does (same code path,
``report.analyse``, at ``alpha / looks``) and queues ``step`` more seeds for each configuration
still *undetermined* and below ``max_seeds``, and the same seeds for the reference, so every new
seed is a paired block. A configuration with a verdict gets no more seeds. The sweep runs the
new trials and asks again, until nothing is undetermined or the cap is reached.

Deciding is idempotent and happens only when no trial of the study is running or waiting (the
worker that finishes last decides; a sweep on another host that finds trials still running
leaves it to that one), under the lock every sweep prepares under. A resumed sweep continues
where the record stands. Looking at the data several times inflates the chance of a false
verdict, so the verdicts of such a study are tested at ``alpha / looks`` (Bonferroni over the
planned looks; ``Sequential.looks``), in the sweep and in the report alike.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import optuna
import pandas as pd
from optuna.trial import TrialState

from mvlab import records
from mvlab.study import storage as st
from mvlab.study.space import SEED_PARAM, point_key, seed_choices
from mvlab.study.types import Point, Prepared


def undetermined(study: optuna.Study, prepared: Prepared) -> tuple[pd.DataFrame, str] | None:
    """The verdicts table of the study's last fidelity and its reference, or None when there
    is nothing to judge yet (no reference configuration with results)."""
    from mvlab.study import report

    config = prepared.config
    table = report.trials_table(study, prepared.storage_url, mlflow=False)
    settings = dataclasses.asdict(config.analysis)
    settings["gate"] = None  # the gate is a report's question, not the sweep's
    analysis = report.analyse(table, dict(config.objectives), settings, n_boot=50)
    parts = [p for p in analysis.fidelities.values() if p.verdicts is not None]
    if not parts:
        return None
    return parts[-1].verdicts, str(parts[-1].reference)


def next_points(study: optuna.Study, prepared: Prepared) -> list[Point]:
    """The points of the next stage (module doc); empty when the study is decided or capped."""
    from mvlab.study import report

    sequential = prepared.config.sequential
    if sequential is None:
        return []
    judged = undetermined(study, prepared)
    if judged is None:
        return []
    verdicts, reference = judged
    open_configs = verdicts.loc[(verdicts["verdict"] == "undetermined")
                                & (verdicts["seeds"] < sequential.max_seeds),
                                report.CONFIG].tolist()
    if not open_configs:
        return []
    table = report.with_configurations(report.trials_table(study, prepared.storage_url,
                                                           mlflow=False))
    trials = study.get_trials(deepcopy=False)
    templates: dict[str, Point] = {}
    seeds_run: dict[str, set[int]] = {}
    for row in table[table[records.STATE] == TrialState.COMPLETE.name].to_dict("records"):
        config_id = row[report.CONFIG]
        if config_id not in (*open_configs, reference):
            continue
        params = _point_of(trials[int(row[records.TRIAL])])
        seeds_run.setdefault(config_id, set()).add(int(params.pop(SEED_PARAM)))
        templates.setdefault(config_id, params)
    points: list[Point] = []
    reference_seeds: set[int] = set()
    for config_id in open_configs:
        room = sequential.max_seeds - len(seeds_run.get(config_id, ()))
        new = _fresh_seeds(seed_choices(prepared.config), seeds_run.get(config_id, set()),
                           min(sequential.step, room))
        reference_seeds.update(new)
        points += [{**templates[config_id], SEED_PARAM: s} for s in new]
    points += [{**templates[reference], SEED_PARAM: s}
               for s in sorted(reference_seeds - seeds_run.get(reference, set()))]
    return points


def _point_of(trial: optuna.trial.FrozenTrial) -> Point:
    return dict(trial.system_attrs.get("fixed_params") or trial.params)


def _fresh_seeds(choices: Iterable[int], used: Iterable[int], count: int) -> list[int]:
    """The first ``count`` of the study's seed choices this configuration has not run."""
    used = set(used)
    return [s for s in choices if s not in used][:count]


def queue_next_seeds(study: optuna.Study, prepared: Prepared) -> int:
    """Queue the next stage if this is the moment to decide (module doc); the number queued."""
    if prepared.config.sequential is None:
        return 0
    with st.prepare_lock(prepared.storage_url, prepared.config.name):
        busy = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        if busy:
            return 0
        # As when a sweep prepares: a trial of a killed worker is run again, a failed one not.
        covered = {point_key(_point_of(t)) for t in study.get_trials(deepcopy=False)
                   if not (t.state == TrialState.FAIL and t.user_attrs.get(records.REQUEUE))}
        queued = 0
        for point in next_points(study, prepared):
            if point_key(point) in covered:
                continue
            study.enqueue_trial(point, skip_if_exists=False)
            covered.add(point_key(point))
            queued += 1
        return queued
