"""Seeds added in stages: a study's comparisons with its reference run until each has a verdict.

After the planned points (``study.seeds``) have run, ``queue_next_seeds`` judges every
configuration against ``analysis.reference`` exactly as ``mvlab report`` does (same code path,
``report.analyse``, at ``alpha / looks``) and queues ``step`` more seeds for each configuration
still *undetermined* and below ``max_seeds``, and the same seeds for the reference, so every new
seed is a paired block. The sweep runs the new trials and asks again, until nothing is
undetermined, the cap is reached, or the study has made all the looks it planned.

Every stage is a look at the data (the Holm order, and with ``analysis.noise: pooled`` the noise
level, change even for a configuration whose own trials did not), so the verdicts of such a study are tested at
``alpha / looks`` (Bonferroni over the planned looks, ``Sequential.looks``), in the sweep and in
the report alike, and the study counts its stages (``records.STUDY_STAGES``) and stops adding
at ``looks - 1`` of them, whatever happens in between: a failed trial (its seed is not offered
again: the next free seed is), or a verdict that turns undetermined again as other comparisons
gain seeds (it may then get seeds again, within the looks). Only the study's last fidelity is
judged and extended.

Deciding is idempotent and happens only when no trial of the study is running or waiting (the
worker that finishes last decides; a sweep on another host that finds trials still running
leaves it to that one), under the lock every sweep prepares under. A resumed sweep continues
where the record stands.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import NamedTuple

import optuna
from optuna.trial import TrialState

from mvlab import records
from mvlab.study import storage as st
from mvlab.study.preparation import covered_points, trial_point
from mvlab.study.space import SEED_PARAM, point_key, seed_choices
from mvlab.study.types import Point, Prepared


class Stage(NamedTuple):
    """What one decision did: trials queued, and why none were, if none."""

    queued: int
    why: str


def next_points(study: optuna.Study, prepared: Prepared) -> tuple[list[Point], str]:
    """The points of the next stage (module doc) and, when there are none, why."""
    from mvlab.study import report

    config = prepared.config
    sequential = config.sequential
    if sequential is None:
        return [], "not a sequential study"
    if int(study.user_attrs.get(records.STUDY_STAGES, 0)) >= config.analysis.looks - 1:
        return [], f"all {config.analysis.looks} planned looks made"
    settings = dataclasses.asdict(config.analysis)
    settings["gate"] = None  # the gate is a report's question, not the sweep's
    analysis = report.analyse(report.trials_table(study, prepared.storage_url, mlflow=False),
                              dict(config.objectives), settings, n_boot=20)
    table = analysis.table  # every trial, with the configuration column analyse added
    parts = [p for p in analysis.fidelities.values() if p.verdicts is not None]
    if not parts:
        return [], "no verdicts against the reference yet"
    verdicts, reference = parts[-1].verdicts, str(parts[-1].reference)
    open_configs = verdicts.loc[(verdicts["verdict"] == "undetermined")
                                & (verdicts["seeds"] < sequential.max_seeds),
                                report.CONFIG].tolist()
    if not open_configs:
        return [], "every comparison has a verdict or its seeds are at the cap"
    trials = study.get_trials(deepcopy=False)
    templates: dict[str, Point] = {}
    done: dict[str, set[int]] = {}   # seeds with a finished result
    tried: dict[str, set[int]] = {}  # seeds with any trial, failed ones included
    for row in table[table[report.CONFIG].isin([*open_configs, reference])].to_dict("records"):
        config_id = row[report.CONFIG]
        params = trial_point(trials[int(row[records.TRIAL])])
        seed = int(params.pop(SEED_PARAM))
        tried.setdefault(config_id, set()).add(seed)
        if row[records.STATE] == TrialState.COMPLETE.name:
            done.setdefault(config_id, set()).add(seed)
            templates.setdefault(config_id, params)
    points: list[Point] = []
    reference_seeds: set[int] = set()
    for config_id in open_configs:
        room = sequential.max_seeds - len(done.get(config_id, ()))
        new = _fresh_seeds(seed_choices(config), tried.get(config_id, set()),
                           min(sequential.step, room))
        reference_seeds.update(new)
        points += [{**templates[config_id], SEED_PARAM: s} for s in new]
    points += [{**templates[reference], SEED_PARAM: s}
               for s in sorted(reference_seeds - done.get(reference, set()))]
    return points, "" if points else "no seeds left to add"


def _fresh_seeds(choices: Iterable[int], used: Iterable[int], count: int) -> list[int]:
    """The first ``count`` of the study's seed choices this configuration has not tried."""
    used = set(used)
    return [s for s in choices if s not in used][:count]


def queue_next_seeds(study: optuna.Study, prepared: Prepared) -> Stage:
    """Queue the next stage if this is the moment to decide (module doc)."""
    if prepared.config.sequential is None:
        return Stage(0, "not a sequential study")
    with st.prepare_lock(prepared.storage_url, prepared.config.name):
        busy = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        if busy:
            return Stage(0, f"{len(busy)} trial(s) still running or queued (another worker "
                            "decides when they finish, or the next `mvlab sweep`)")
        points, why = next_points(study, prepared)
        covered = covered_points(study)
        queued = 0
        for point in points:
            if point_key(point) in covered:
                continue
            study.enqueue_trial(point, skip_if_exists=False)
            covered.add(point_key(point))
            queued += 1
        if queued:
            study.set_user_attr(records.STUDY_STAGES,
                                int(study.user_attrs.get(records.STUDY_STAGES, 0)) + 1)
        return Stage(queued, why or ("" if queued else "their points have trials already"))
