"""Preparing a sweep, once per invocation and under the study's lock: create or resume the Optuna
study, refuse a resume with other settings, fail the trials of dead workers, queue the grid or
population points that have no live trial yet, create the MLflow experiment and (re)open the
study's parent run. Rerunning it is harmless: a finished trial is never queued again."""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from mvlab import records
from mvlab.config_fields import changed_settings
from mvlab.data.config import with_added_keys
from mvlab.errors import StudyError, UserError
from mvlab.safety import mask_url
from mvlab.study import storage as st
from mvlab.study import tracking
from mvlab.study.locations import storage_url_for, tracking_uri_for
from mvlab.study.space import grown_choices, planned_points, point_key
from mvlab.study.types import Prepared, StudyConfig, SweepOptions, TrackingTarget, jsonable
from mvlab.training.config import with_current_names

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    """Grid/population trials are queued points, the sampler never picks them; optimize
    studies use NSGA-II (default) or TPE, seeded for reproducibility."""
    if config.kind != "optimize":
        return optuna.samplers.RandomSampler(seed=config.sampler_seed)
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=config.sampler_seed, multivariate=True,
                                          n_startup_trials=max(4, (config.n_trials or 10) // 5))
    return optuna.samplers.NSGAIISampler(seed=config.sampler_seed,
                                         population_size=config.population_size or 16)


def open_study(config: StudyConfig, storage_url: str, workers: int = 1,
               create: bool = True) -> optuna.Study:
    storage = st.open_storage(storage_url, workers, config.stale_after_s)
    if create:
        study = optuna.create_study(study_name=config.name, storage=storage,
                                    directions=config.directions, sampler=make_sampler(config),
                                    load_if_exists=True)
    else:
        study = optuna.load_study(study_name=config.name, storage=storage,
                                  sampler=make_sampler(config))
    return study


def prepare(config: StudyConfig, options: SweepOptions, argv: list[str] | None = None
            ) -> tuple[Prepared, optuna.Study]:
    """Create/resume the study, recover stale trials, queue points, open the MLflow parent."""
    check_runnable(config)
    try:
        config.workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudyError(f"{config.source}: workdir: cannot create {config.workdir} "
                         f"({exc.strerror or exc}); choose a writable folder") from None
    url = storage_url_for(config, options.storage)
    uri = tracking_uri_for(config)
    experiment = config.experiment or config.name
    # Seconds, not minutes, and before the lock every other worker waits on.
    st.check_storage_folder(url)
    tracking.check_reachable(uri)
    # Sweeps started together (N hosts, or N shells) prepare one at a time: each point is
    # queued once, and the MLflow database and experiment are created once.
    with st.prepare_lock(url, config.name):
        study = open_study(config, url, options.workers)
        _check_same_study(study, config, url)
        _check_space_fits(study, config, url)
        if list(study.directions) != [optuna.study.StudyDirection[d.upper()]
                                      for d in config.directions]:
            raise StudyError(f"{config.source}: objectives: the stored study {config.name!r} "
                             f"has other objectives; rename the study (--set name=...) to "
                             f"start anew")
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2; the analysis needs it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(config.objective_names)

        stale = st.fail_stale_trials(study, config.stale_after_s)
        queued = _queue_points(study, config, options.retry_failed)
        experiment_id = tracking.prepare_tracking(uri, experiment, _artifact_root(config, uri),
                                                  config.description)
        tracking.set_trials_view(uri, experiment_id, list(config.objectives),
                                 [d.key for d in config.space])
        close_orphaned_runs(study, config, uri, experiment_id)
        # Under the lock: sweeps started together reopen one parent run rather than each
        # opening its own. Per-sweep facts are tags (the latest sweep's), study facts params.
        parent = tracking.start_parent_run(
            uri, experiment_id, name=f"sweep {config.name}",
            resume=study.user_attrs.get(records.STUDY_PARENT_RUN_ID),
            tags={records.TAG_STUDY: config.name, records.TAG_KIND: config.kind,
                  records.HOST: socket.gethostname(), records.PID: str(os.getpid()),
                  records.PID_START: str(st.process_start_time(os.getpid())),
                  "command": " ".join(argv or sys.argv),  # passwords masked by tracking
                  "storage": st.describe_storage(url), "workers": options.workers,
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "stale_trials_failed": stale, "queued_now": queued},
            params={records.TAG_STUDY: config.name, records.TAG_KIND: config.kind,
                    "sampler": config.sampler,
                    "model": config.model, "storage": st.describe_storage(url),
                    "seeds": list(config.seeds),
                    "space": {d.key: list(d.choices) if d.kind == "categorical"
                              else [d.kind, d.low, d.high, d.log] for d in config.space},
                    "objectives": dict(config.objectives), "constraints": config.constraints})
        study.set_user_attr(records.STUDY_PARENT_RUN_ID, parent)
    planned = config.n_trials if config.kind == "optimize" else len(planned_points(config) or [])
    study.set_user_attr(records.STUDY_KIND, records.analysis_kind(config.kind))
    study.set_user_attr(records.STUDY_KIND_EXACT, config.kind)
    # Without its password: the storage is shared, and libpq/MLflow read it from the
    # environment (PGPASSWORD, ~/.pgpass, MLFLOW_TRACKING_PASSWORD; docs/security.md).
    study.set_user_attr(records.STUDY_TRACKING_URI, mask_url(uri, placeholder=None))
    study.set_user_attr(records.STUDY_EXPERIMENT, experiment)
    # How `mvlab report STUDY` judges it when given the study's name rather than its file.
    study.set_user_attr(records.STUDY_ANALYSIS, jsonable(dataclasses.asdict(config.analysis)))
    target = TrackingTarget(uri, experiment_id, parent)
    return Prepared(config, url, target, planned, queued), study


def run_status(trial: optuna.trial.FrozenTrial) -> tuple[str, str | None]:
    """The MLflow status (and reason) a finished trial's run should end with."""
    reason = trial.user_attrs.get(records.REASON)
    if trial.state == TrialState.COMPLETE:
        return "FINISHED", None
    if trial.state == TrialState.PRUNED or "interrupted" in str(reason or ""):
        return "KILLED", reason
    return "FAILED", reason or f"trial {trial.state.name}"


def close_orphaned_runs(study: optuna.Study, config: StudyConfig, uri: str,
                        experiment_id: str) -> list[str]:
    """End the MLflow runs killed processes left RUNNING: a trial's run once its trial is
    finished (stale trials are FAIL by now), a sweep's parent run once its process on this
    host is gone. Returns the ids of the runs closed."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    closed = []
    for run in tracking.running_runs(uri, experiment_id):
        tags = run.data.tags
        if tags.get(records.TAG_STUDY) != config.name:
            continue
        if records.TAG_PARENT_RUN_ID in tags:
            number = tags.get(records.TAG_TRIAL_NUMBER, "")
            trial = trials.get(int(number)) if number.isdigit() else None
            if trial is None or not trial.state.is_finished():
                continue  # still running in a live worker
            status, reason = run_status(trial)
        else:
            owner = {k: tags.get(k) for k in (records.HOST, records.PID, records.PID_START)}
            if owner[records.PID] is None or st.owner_alive(owner) is not False:
                continue
            status, reason = "KILLED", "the sweep process was killed"
        tracking.close_run(uri, run.info.run_id, status, reason)
        closed.append(run.info.run_id)
    return closed

def check_runnable(config: StudyConfig) -> None:
    """Fail once, before the sweep, on what would fail every trial: missing data, a device
    this machine lacks."""
    from mvlab.data import select_subset
    from mvlab.training.runtime import resolve_device

    try:
        select_subset(config.data)
    except UserError as exc:
        raise StudyError(f"{config.source}: data: {exc}") from None
    for section, device in (("train.device", config.train.device),
                            ("bench.device", config.bench.device)):
        try:
            resolve_device(device)
        except UserError as exc:
            raise StudyError(f"{config.source}: {section}: {exc}") from None


def _artifact_root(config: StudyConfig, uri: str) -> Path | None:
    # Only for the default local store: a remote server manages its own artifact root.
    return config.workdir / "mlartifacts" if uri.startswith("sqlite") else None


def _check_same_study(study: optuna.Study, config: StudyConfig, url: str) -> None:
    """Resuming with different training/data/objective settings would mix fidelities."""
    stored = study.user_attrs.get(records.STUDY_FIDELITY_HASH)
    if stored is None:
        study.set_user_attr(records.STUDY_FIDELITY_HASH, config.fidelity_hash())
        study.set_user_attr(records.STUDY_CONFIG, json.dumps(config.fidelity(), default=str))
        return
    if stored == config.fidelity_hash():
        return
    before = with_current_names(json.loads(study.user_attrs.get(records.STUDY_CONFIG, "{}")))
    if isinstance(before.get("data"), dict):
        before["data"] = with_added_keys(before["data"], config.data)
    changed = changed_settings(before, config.fidelity())
    if not changed:
        # Only a key an older mvlab spelled differently (train.amp): the same settings.
        study.set_user_attr(records.STUDY_FIDELITY_HASH, config.fidelity_hash())
        study.set_user_attr(records.STUDY_CONFIG, json.dumps(config.fidelity(), default=str))
        return
    raise StudyError(
        f"{config.source}: study {config.name!r} in {st.describe_storage(url)} was started with "
        f"other settings ({'; '.join(changed[:4]) or 'settings differ'}); its trials would not "
        f"be comparable. Rename the study (--set name={config.name}_v2) or use another "
        f"--storage to start a new one")


def _check_space_fits(study: optuna.Study, config: StudyConfig, url: str) -> None:
    """A categorical knob cannot gain values once its study has started (Optuna fixes the
    choices at the first trial); every new point would fail. Say so once, before queueing."""
    grown = grown_choices(study, config)
    if not grown:
        return
    what = "; ".join(f"{'study.seeds/sequential' if k == records.SEED_PARAM else 'space.' + k}"
                     f" adds {v}" for k, v in grown.items())
    raise StudyError(
        f"{config.source}: study {config.name!r} in {st.describe_storage(url)} started with "
        f"other choices ({what}); Optuna keeps a study's categorical choices from its first "
        f"trial, so new values need a new study (--set name={config.name}_v2 or another "
        f"--storage)")


def _queue_points(study: optuna.Study, config: StudyConfig, retry_failed: bool) -> int:
    """Enqueue every planned point that has no live trial: new points, points whose trial went
    stale or was interrupted, and (with ``retry_failed``) points whose trial failed."""
    points = planned_points(config)
    if points is None:
        return 0
    covered = covered_points(study, retry_failed)
    queued = 0
    for point in points:
        key = point_key(point)
        if key in covered:
            continue
        study.enqueue_trial(point, skip_if_exists=False)
        covered.add(key)
        queued += 1
    return queued


def trial_point(trial: optuna.trial.FrozenTrial) -> dict:
    """A trial's point. A queued trial's point is its fixed params; its suggested params appear
    one at a time while a worker starts it, so a sweep preparing at that moment would see a
    partial point and queue the same point again."""
    return dict(trial.system_attrs.get("fixed_params") or trial.params)


def covered_points(study: optuna.Study, retry_failed: bool = False) -> set[str]:
    """Keys of the points that have a live or finished trial: not those of killed workers'
    trials (run again), nor, with ``retry_failed``, those of failed ones."""
    covered = set()
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.FAIL and (trial.user_attrs.get(records.REQUEUE)
                                               or retry_failed):
            continue
        covered.add(point_key(trial_point(trial)))
    return covered


def counts(study: optuna.Study) -> dict[str, int]:
    out = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        out[trial.state.name] += 1
    return out

