"""``mvlab sweep``: prepare the study once, run trials in one or N worker processes, summarise.

Separate, rerunnable steps (as pycls does it): ``prepare`` creates or resumes the Optuna study,
fails stale RUNNING trials, queues the grid/population points that have no live trial yet,
creates the MLflow database and opens the parent run; ``work`` claims and runs trials until
the study (or ``--n-trials``) is done; ``finalize`` writes the Pareto table, plot and trials
table to the parent run. Rerunning the same command resumes: finished trials are never redone."""
from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from mvlab.errors import StudyError, UserError
from mvlab.safety import mask_url
from mvlab.study import storage as st
from mvlab.study import tracking
from mvlab.study.interrupts import deferred_interrupts
from mvlab.study.measure import warm_up
from mvlab.study.schema import StudyConfig
from mvlab.study.space import planned_points, point_key
from mvlab.study.trial import DataCache, Progress, run_trial
from mvlab.training import ddp

# Study user attributes (names mvlab.analysis reads: mvlab/analysis/names.py).
STUDY_KIND = "kind"                      # "population" (grid/random/QMC) or "optimisation"
STUDY_TRACKING_URI = "mlflow_tracking_uri"
STUDY_EXPERIMENT = "mlflow_experiment"
STUDY_PARENT_RUN_ID = "mlflow_parent_run_id"
STUDY_ANALYSIS = "analysis"  # the study file's analysis: settings (reference, margin, ...)
STUDY_CONFIG, STUDY_FIDELITY_HASH = "study_config", "fidelity_hash"

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class SweepOptions:
    """Command-line knobs of one invocation."""

    workers: int = 1
    storage: str | None = None
    n_trials: int | None = None  # at most this many trials in this invocation (all workers)
    retry_failed: bool = False   # re-queue FAIL trials of a grid/population too
    progress: bool = True


@dataclass(frozen=True)
class Prepared:
    """What workers need: all picklable."""

    config: StudyConfig
    storage_url: str
    target: tracking.TrackingTarget
    planned: int | None  # grid/population: total points; optimize: n_trials
    queued: int


@dataclass
class SweepSummary:
    study: str
    storage_url: str
    tracking_uri: str
    parent_run_id: str
    counts: dict[str, int]
    pareto: list[dict[str, Any]]
    artifacts: list[Path]
    experiment_id: str = ""


def storage_url_for(config: StudyConfig, override: str | None = None) -> str:
    return override or config.storage or st.default_storage_url(config.workdir)


def tracking_uri_for(config: StudyConfig) -> str:
    return config.tracking_uri or tracking.default_tracking_uri(config.workdir)


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


# ---------------------------------------------------------------------------------- prepare
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
            resume=study.user_attrs.get(STUDY_PARENT_RUN_ID),
            tags={"study": config.name, "kind": config.kind, "host": socket.gethostname(),
                  "pid": str(os.getpid()), "pid_start": str(st.process_start_time(os.getpid())),
                  "command": " ".join(argv or sys.argv),  # passwords masked by tracking
                  "storage": st.describe_storage(url), "workers": options.workers,
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "stale_trials_failed": stale, "queued_now": queued},
            params={"study": config.name, "kind": config.kind, "sampler": config.sampler,
                    "model": config.model, "storage": st.describe_storage(url),
                    "seeds": list(config.seeds),
                    "space": {d.key: list(d.choices) if d.kind == "categorical"
                              else [d.kind, d.low, d.high, d.log] for d in config.space},
                    "objectives": dict(config.objectives), "constraints": config.constraints})
        study.set_user_attr(STUDY_PARENT_RUN_ID, parent)
    planned = config.n_trials if config.kind == "optimize" else len(planned_points(config) or [])
    study.set_user_attr(STUDY_KIND, "optimisation" if config.kind == "optimize" else "population")
    study.set_user_attr("study_kind", config.kind)
    # Without its password: the storage is shared, and libpq/MLflow read it from the
    # environment (PGPASSWORD, ~/.pgpass, MLFLOW_TRACKING_PASSWORD; docs/security.md).
    study.set_user_attr(STUDY_TRACKING_URI, mask_url(uri, placeholder=None))
    study.set_user_attr(STUDY_EXPERIMENT, experiment)
    # How `mvlab report STUDY` judges it when given the study's name rather than its file.
    import dataclasses

    study.set_user_attr(STUDY_ANALYSIS, json.loads(json.dumps(
        dataclasses.asdict(config.analysis), default=str)))
    target = tracking.TrackingTarget(uri, experiment_id, parent)
    return Prepared(config, url, target, planned, queued), study


def run_status(trial: optuna.trial.FrozenTrial) -> tuple[str, str | None]:
    """The MLflow status (and reason) a finished trial's run should end with."""
    reason = trial.user_attrs.get(st.REASON_ATTR)
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
        if tags.get("study") != config.name:
            continue
        if "mlflow.parentRunId" in tags:
            number = tags.get("trial_number", "")
            trial = trials.get(int(number)) if number.isdigit() else None
            if trial is None or not trial.state.is_finished():
                continue  # still running in a live worker
            status, reason = run_status(trial)
        else:
            owner = {st.HOST_ATTR: tags.get("host"), st.PID_ATTR: tags.get("pid"),
                     st.START_ATTR: tags.get("pid_start")}
            if owner[st.PID_ATTR] is None or st.owner_alive(owner) is not False:
                continue
            status, reason = "KILLED", "the sweep process was killed"
        tracking.close_run(uri, run.info.run_id, status, reason)
        closed.append(run.info.run_id)
    return closed


def recover_stale_trials(study: optuna.Study, prepared: Prepared) -> list[int]:
    """Fail the trials of dead workers and close their MLflow runs (FAILED, with the reason)."""
    failed = st.fail_stale_trials(study, prepared.config.stale_after_s)
    for number in failed:
        trial = study.get_trials(deepcopy=False)[number]
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            status, reason = run_status(trial)
            with contextlib.suppress(Exception):  # the rerun's close_orphaned_runs retries
                tracking.close_run(prepared.target.uri, run_id, status, reason)
    return failed


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
    stored = study.user_attrs.get(STUDY_FIDELITY_HASH)
    if stored is None:
        study.set_user_attr(STUDY_FIDELITY_HASH, config.fidelity_hash())
        study.set_user_attr(STUDY_CONFIG, json.dumps(config.fidelity(), default=str))
        return
    if stored == config.fidelity_hash():
        return
    before = json.loads(study.user_attrs.get(STUDY_CONFIG, "{}"))
    changed = _diff(before, config.fidelity())
    raise StudyError(
        f"{config.source}: study {config.name!r} in {st.describe_storage(url)} was started with "
        f"other settings ({'; '.join(changed[:4]) or 'settings differ'}); its trials would not "
        f"be comparable. Rename the study (--set name={config.name}_v2) or use another "
        f"--storage to start a new one")


def _diff(before: Any, after: Any, prefix: str = "") -> list[str]:
    after = json.loads(json.dumps(after, default=str))
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after)):
            out += _diff(before.get(key), after.get(key), f"{prefix}{key}.")
        return out
    return [] if before == after else [f"{prefix.rstrip('.')}: {before!r} -> {after!r}"]


def _queue_points(study: optuna.Study, config: StudyConfig, retry_failed: bool) -> int:
    """Enqueue every planned point that has no live trial: new points, points whose trial went
    stale or was interrupted, and (with ``retry_failed``) points whose trial failed."""
    points = planned_points(config)
    if points is None:
        return 0
    covered = set()
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.FAIL and (trial.user_attrs.get(st.REQUEUE_ATTR)
                                               or retry_failed):
            continue
        # A queued trial's point is its fixed params; its suggested params appear one at a time
        # while a worker starts it, so a sweep preparing at that moment would see a partial
        # point and queue the same point again.
        params = trial.system_attrs.get("fixed_params") or trial.params
        covered.add(point_key(params))
    queued = 0
    for point in points:
        key = point_key(point)
        if key in covered:
            continue
        study.enqueue_trial(point, skip_if_exists=False)
        covered.add(key)
        queued += 1
    return queued


def counts(study: optuna.Study) -> dict[str, int]:
    out = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        out[trial.state.name] += 1
    return out


# ------------------------------------------------------------------------------------- work
def _optimize_done(study: optuna.Study, config: StudyConfig) -> bool:
    """Trials that count toward n_trials: finished ones except stale/interrupted failures,
    plus running ones (so N workers do not overshoot)."""
    done = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.FAIL and trial.user_attrs.get(st.REQUEUE_ATTR):
            continue
        if trial.state != TrialState.WAITING:
            done += 1
    return done >= (config.n_trials or 0)


def work(prepared: Prepared, budget: Any = None, progress: Progress | None = None,
         threads: int | None = None) -> int:
    """Claim and run trials until the study is done or ``budget`` (a shared counter of trials
    this invocation may still start) runs out. Returns the number of trials run."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    config = prepared.config
    study = open_study(config, prepared.storage_url, create=False)
    data = DataCache()
    interval = st.heartbeat_interval(config.stale_after_s)
    ran = 0
    while _take_budget(budget):
        recover_stale_trials(study, prepared)  # a killed worker's trial fails while we run
        if ran == 0:
            warm_up(config)  # before claiming: a Ctrl-C here leaves no trial behind
        trial = _claim(study, config)  # and own it: from the claim on, a kill is detectable
        if trial is None:
            _give_back(budget)
            break
        with st.heartbeat(study, trial, interval):
            run_trial(study, trial, config, prepared.target, data, progress)
        ran += 1
    ranks = ddp.current()
    if ranks is not None:
        ddp.broadcast_object(None, ranks)  # the other torchrun ranks stop following
    return ran


def _claim(study: optuna.Study, config: StudyConfig) -> optuna.Trial | None:
    """The next trial (a queued point, or a sampler's for optimize studies) with this process's
    owner attributes, or None when the study is done. A Ctrl-C waits until both are written: a
    claimed trial without an owner would look alive until its heartbeat ran out."""
    with deferred_interrupts():
        if config.kind == "optimize":
            if _optimize_done(study, config):
                return None
            trial = study.ask()
        else:
            trial = st.claim_waiting_trial(study)
            if trial is None:
                return None
        for key, value in st.owner_attrs().items():
            trial.set_user_attr(key, value)
        return trial


def follow_trials(ranks: ddp.DistContext) -> int:
    """A torchrun rank other than 0: train every plan rank 0 sends, until it sends None.
    Results stay here; rank 0 records its own (identical) result."""
    from mvlab.train import train

    data = DataCache()
    trained = 0
    while True:
        message = ddp.broadcast_object(None, ranks)
        if message is None:
            return trained
        _, spec, data_cfg, train_cfg = message
        train(spec, data.get(data_cfg, train_cfg), train_cfg)
        trained += 1


def _take_budget(budget: Any) -> bool:
    if budget is None:
        return True
    with budget.get_lock():
        if budget.value <= 0:
            return False
        budget.value -= 1
        return True


def _give_back(budget: Any) -> None:
    if budget is not None:
        with budget.get_lock():
            budget.value += 1


def _worker_main(prepared: Prepared, budget: Any, threads: int) -> None:
    # A terminal's Ctrl-C reaches every process of the group; the main process relays it once
    # as SIGTERM instead, so a second signal cannot cut the recording of the interrupted trial.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt_once)
    try:
        work(prepared, budget, threads=threads)
    except KeyboardInterrupt:
        pass


def _interrupt_once(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


# ---------------------------------------------------------------------------------- the sweep
def run_sweep(config: StudyConfig, options: SweepOptions = SweepOptions(),
              argv: list[str] | None = None) -> SweepSummary | None:
    """Prepare, run (in-process for one worker, N processes otherwise) and finalize.

    Under ``torchrun --nproc_per_node K`` every trial trains data-parallel on K processes: rank
    0 is the sweep's one worker (storage, MLflow, benchmark) and sends each trial's plan to the
    other ranks, which only train; they return None."""
    if options.workers < 1:
        raise StudyError(f"--workers {options.workers}: needs at least 1")
    most = 4 * (os.cpu_count() or 1)  # each worker is a process with its own torch
    if options.workers > max(8, most):
        raise StudyError(f"--workers {options.workers}: at most {max(8, most)} on this host "
                         f"(4 per core); start sweeps on more hosts instead")
    if options.n_trials is not None and options.n_trials < 1:
        raise StudyError(f"--n-trials {options.n_trials}: needs at least 1 (or leave it out to "
                         f"run the whole study)")
    if ddp.launched_world_size() > 1:
        if options.workers != 1:
            raise StudyError(f"--workers {options.workers} under torchrun: each trial already "
                             f"uses every torchrun process; drop --workers (start more "
                             f"torchrun sweeps to run trials side by side)")
        from mvlab.training.runtime import resolve_device

        ranks, _ = ddp.setup(resolve_device(config.train.device))
        if ranks is not None and not ranks.is_main:
            follow_trials(ranks)
            return None
    prepared, study = prepare(config, options, argv)
    display = _Display(config, study, prepared, options.progress)
    status = "FAILED"
    try:
        if options.workers == 1:
            budget = _counter(options.n_trials)
            work(prepared, budget, display.progress())
        else:
            _run_processes(prepared, options, display)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        display.close()
        summary = finalize(prepared, study, status)
    return summary


def _counter(n: int | None) -> Any:
    if n is None:
        return None
    value = mp.get_context("spawn").Value("i", n)
    return value


def _run_processes(prepared: Prepared, options: SweepOptions, display: _Display) -> None:
    context = mp.get_context("spawn")  # no fork: torch and sqlite handles do not survive it
    budget = context.Value("i", options.n_trials if options.n_trials is not None else 1 << 30)
    threads = max(1, (os.cpu_count() or 1) // options.workers)
    procs = [context.Process(target=_worker_main, args=(prepared, budget, threads),
                             name=f"mvlab-sweep-worker-{i}", daemon=False)
             for i in range(options.workers)]
    for proc in procs:
        proc.start()
    try:
        while any(p.is_alive() for p in procs):
            display.poll()
            time.sleep(1.0)
    except KeyboardInterrupt:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(timeout=60)
        raise
    finally:
        for proc in procs:
            proc.join()
    for proc in procs:
        if proc.exitcode not in (0, None):
            how = (f"killed by signal {-proc.exitcode}" if proc.exitcode < 0
                   else f"exit status {proc.exitcode}")
            display.bar.write(f"mvlab sweep: warning: {proc.name} died ({how}); its trial is "
                              f"marked failed and queued again on the next run", file=sys.stderr)
    display.poll()


# -------------------------------------------------------------------------------- finalize
def finalize(prepared: Prepared, study: optuna.Study, status: str) -> SweepSummary:
    """Pareto table (CSV), Pareto plot (PNG) and the full trials table -> the parent run."""
    from mvlab.study import report

    config = prepared.config
    uri, parent = prepared.target.uri, prepared.target.parent_run_id or ""
    totals = counts(study)
    written: list[Path] = []
    if status == "KILLED":  # interrupted: close the run and get out; `mvlab report` rebuilds
        tracking.end_run(uri, parent, status)
        return SweepSummary(config.name, prepared.storage_url, uri, parent, totals, [], [],
                            prepared.target.experiment_id)
    try:
        written = report.write_sweep_artifacts(study, prepared.storage_url,
                                               config.workdir / "sweep")
        tracking.log_artifacts(uri, parent, written)
        tracking.log_parent_metrics(uri, parent,
                                    {f"trials_{k.lower()}": v for k, v in totals.items()})
    except Exception as exc:  # noqa: BLE001 - the trials are safe in storage; say so, go on
        print(f"mvlab sweep: warning: could not write the sweep summary ({type(exc).__name__}: "
              f"{exc}); rebuild it with `mvlab report {config.source}`", file=sys.stderr)
        status = "FAILED" if status == "FINISHED" else status
    tracking.end_run(uri, parent, status)
    pareto = report.pareto_records(study, config)
    return SweepSummary(config.name, prepared.storage_url, prepared.target.uri,
                        prepared.target.parent_run_id or "", totals, pareto, written,
                        prepared.target.experiment_id)


# --------------------------------------------------------------------------------- display
class _Display:
    """tqdm progress: trial n/N, the current point, epoch, best so far."""

    def __init__(self, config: StudyConfig, study: optuna.Study, prepared: Prepared,
                 enabled: bool):
        from tqdm.auto import tqdm

        self.config, self.study, self.enabled = config, study, enabled
        done = self._finished()
        total = prepared.planned
        if config.kind != "optimize" and total is not None:
            total = done + len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        self.bar = tqdm(total=total, initial=done, desc=f"sweep {config.name}", unit="trial",
                        disable=not enabled, dynamic_ncols=True, file=sys.stderr)
        self.current = ""
        self.epoch = ""
        self.best = self._best()

    def _finished(self) -> int:
        return sum(1 for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()
                   and not t.user_attrs.get(st.REQUEUE_ATTR))

    def _best(self) -> str:
        names = self.config.objective_names
        try:
            front = self.study.best_trials
        except (ValueError, RuntimeError):
            return ""
        if not front:
            return ""
        first = max(front, key=lambda t: t.values[0]) if self.config.directions[0] == "maximize" \
            else min(front, key=lambda t: t.values[0])
        shown = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, first.values, strict=True))
        return f"front {len(front)}; best {shown}"

    def _refresh(self) -> None:
        parts = [p for p in (self.current, self.epoch, self.best) if p]
        self.bar.set_postfix_str(" | ".join(parts), refresh=True)

    def progress(self) -> Progress:
        def start(number: int, plan: Any) -> None:
            self.current = f"trial #{number}: {plan.label}"
            self.epoch = "measuring"
            self._refresh()

        def epoch(epoch: int, epochs: int, metrics: dict) -> None:
            acc = metrics.get("heldout_top1")
            self.epoch = f"epoch {epoch}/{epochs}" + (f" top1 {acc:.1f}" if acc is not None
                                                      else "")
            self._refresh()

        def end(trial: optuna.trial.FrozenTrial) -> None:
            self.bar.update(1)
            self.best = self._best()
            self.epoch = ""
            if trial.state != TrialState.COMPLETE:
                self.bar.write(f"trial #{trial.number} {trial.state.name}: "
                               f"{trial.user_attrs.get('reason', '')}")
            self._refresh()

        return Progress(start, epoch, end)

    def poll(self) -> None:
        done = self._finished()
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
            self.best = self._best()
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        self.current = f"running #{', #'.join(str(t.number) for t in running)}" if running else ""
        self._refresh()

    def close(self) -> None:
        self.bar.close()

