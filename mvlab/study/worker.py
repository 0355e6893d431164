"""The worker loop: claim a trial, run it with a heartbeat, repeat until the study (or this
invocation's budget) is done. One loop per worker process; under torchrun, rank 0 runs it and
the other ranks follow (``follow_trials``)."""
from __future__ import annotations

import contextlib
import signal
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from mvlab import records
from mvlab.study import storage as st
from mvlab.study import tracking
from mvlab.study.interrupts import (
    deferred_interrupts,
    draining,
    install_drain_handler,
    interrupt_once,
)
from mvlab.study.measure import warm_up
from mvlab.study.preparation import open_study, run_status
from mvlab.study.trial import DataCache, run_trial
from mvlab.study.types import Prepared, Progress, StudyConfig, TrainOrder

if TYPE_CHECKING:
    from mvlab.training import ddp


def recover_stale_trials(study: optuna.Study, prepared: Prepared) -> list[int]:
    """Fail the trials of dead workers and close their MLflow runs (FAILED, with the reason)."""
    failed = st.fail_stale_trials(study, prepared.config.stale_after_s)
    for number in failed:
        trial = study.get_trials(deepcopy=False)[number]
        run_id = trial.user_attrs.get(records.MLFLOW_RUN_ID)
        if run_id:
            status, reason = run_status(trial)
            with contextlib.suppress(Exception):  # the rerun's close_orphaned_runs retries
                tracking.close_run(prepared.target.uri, run_id, status, reason)
    return failed

def _optimize_done(study: optuna.Study, config: StudyConfig) -> bool:
    """Trials that count toward n_trials: finished ones except stale/interrupted failures,
    plus running ones (so N workers do not overshoot)."""
    done = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.FAIL and trial.user_attrs.get(records.REQUEUE):
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
    while not draining() and _take_budget(budget):
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
    return ran


def stop_followers() -> None:
    """Rank 0, when the sweep is over (every stage, not each ``work`` call): the other torchrun
    ranks stop following."""
    from mvlab.training import ddp

    ranks = ddp.current()
    if ranks is not None:
        ddp.broadcast_object(None, ranks)


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
    from mvlab.training import ddp
    from mvlab.training.trainer import train

    data = DataCache()
    trained = 0
    while True:
        order = ddp.broadcast_object(None, ranks)
        if order is None:
            return trained
        if not isinstance(order, TrainOrder):  # ranks of two mvlab versions: fail loudly
            raise TypeError(f"rank 0 sent {type(order).__name__}, expected a TrainOrder")
        train(order.spec, data.get(order.data, order.train), order.train)
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
    signal.signal(signal.SIGTERM, interrupt_once)
    install_drain_handler()
    try:
        work(prepared, budget, threads=threads)
    except KeyboardInterrupt:
        pass


