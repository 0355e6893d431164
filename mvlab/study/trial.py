"""One trial, start to finish: the objective of a sweep.

Order (cheapest first, so infeasible or hopeless configurations cost little):
  1. resolve the point to a spec (an impossible spec fails the trial with the grammar's reason);
  2. analytic params/MACs; constraints on them prune the trial before anything is built;
  3. throughput on a small batch (``bench:``); latency/throughput constraints prune;
  4. training, with per-epoch metrics to MLflow and the early stop below;
  5. objectives -> Optuna, final metrics -> MLflow.

Early stop for multi-objective studies (Optuna cannot prune them through report/should_prune,
so the trial raises its own verdict): after ``early_stop.after_epoch`` epochs a trial is pruned
when some COMPLETE trial is at least as good in every objective known before training
(throughput, latency, params, MACs) and was more than ``early_stop.margin`` top-1 points more
accurate on held-out data at that same epoch. It is dominated already and its accuracy is too far
behind for the remaining epochs to matter, by the rule's own margin."""
from __future__ import annotations

import contextlib
import logging
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from mvlab import records
from mvlab.errors import UserError
from mvlab.study import storage as st
from mvlab.study.interrupts import deferred_interrupts
from mvlab.study.measure import complexity_of, throughput_of
from mvlab.study.space import resolve_point, suggest_point
from mvlab.study.tracking import TrialRun, flatten
from mvlab.study.types import Progress, StudyConfig, TrackingTarget, TrainOrder, TrialPlan

log = logging.getLogger(__name__)

# The record's names (mvlab/records.py), by their short local names.
SPEC, SEED, FIDELITY, RUN_ID = records.SPEC, records.SEED, records.FIDELITY, records.MLFLOW_RUN_ID
STATUS, REASON, PARAMS, MACS = records.STATUS, records.REASON, records.PARAMS, records.MACS
THROUGHPUT, LATENCY, EARLY_TOP1 = records.THROUGHPUT, records.LATENCY_MS, records.EARLY_HELDOUT_TOP1


class _Pruned(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class DataCache:
    """Built data bundles by (data config, batch size): trials of one worker share them."""

    bundles: dict[str, Any] = field(default_factory=dict)

    def get(self, data_cfg: Any, train_cfg: Any) -> Any:
        from mvlab.data import build_data

        batch = int(train_cfg.batch_size)
        eval_batch = getattr(train_cfg, "eval_batch_size", None)
        key = repr((data_cfg, batch, eval_batch))
        if key not in self.bundles:
            self.bundles[key] = build_data(data_cfg, batch_size=batch, eval_batch_size=eval_batch,
                                           progress=False)
        return self.bundles[key]


def fidelity_label(plan: TrialPlan) -> str:
    """The training budget in words, e.g. ``epochs=3 res=32 per_class=200``."""
    return records.fidelity_label(plan.train.epochs, plan.data.resolution, plan.data.per_class)


def run_trial(study: optuna.Study, trial: optuna.Trial, config: StudyConfig,
              target: TrackingTarget, data: DataCache, progress: Progress | None = None) -> None:
    """Run ``trial`` to a final state (COMPLETE, PRUNED or FAIL); never raises for a failure of
    the trial itself, only for KeyboardInterrupt (after recording it). ``trial`` already carries
    its owner attributes (``worker._claim`` writes them with the claim)."""
    progress = progress or Progress()
    run: TrialRun | None = None
    try:
        with deferred_interrupts():  # bookkeeping writes: a Ctrl-C waits, then fails the trial
            params = suggest_point(trial, config)
            run = TrialRun(target, trial.number, run_name=_run_name(trial.number, params),
                           tags={records.TAG_STUDY: config.name, records.TAG_KIND: config.kind})
            trial.set_user_attr(RUN_ID, run.run_id)
            run.log_params({**params, records.TAG_TRIAL_NUMBER: trial.number})
            plan = resolve_point(config, params)
            progress.on_trial_start(trial.number, plan)
            _record_plan(trial, run, plan, config)
        values = _measure_and_train(study, trial, run, plan, config, data, progress)
    except optuna.exceptions.UpdateFinishedTrialError:  # see _taken_over
        _taken_over(study, trial, run)
    except _Pruned as verdict:
        _finish(study, trial, run, TrialState.PRUNED, verdict.reason, "KILLED")
    except _TrialFailed as exc:
        _finish(study, trial, run, TrialState.FAIL, str(exc), "FAILED")
    except UserError as exc:  # an impossible point (optimize studies) or bad data
        _finish(study, trial, run, TrialState.FAIL, f"invalid configuration: {exc}", "FAILED")
    except KeyboardInterrupt:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # _finish says so
            trial.set_user_attr(st.REQUEUE_ATTR, True)
        _finish(study, trial, run, TrialState.FAIL, "interrupted by the user", "KILLED")
        raise
    except Exception as exc:  # a bug or a crash: record it and let the other trials run
        reason = f"{type(exc).__name__}: {exc}"
        if run is not None:
            _quiet(lambda: run.log_text(traceback.format_exc(), "traceback.txt"))
        _finish(study, trial, run, TrialState.FAIL, reason, "FAILED")
    else:
        with deferred_interrupts():  # a Ctrl-C now stops the sweep after recording the result
            try:
                trial_status(trial, records.STATUS_OK)
                study.tell(trial, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                _taken_over(study, trial, run)
            else:
                if run is not None:
                    run.finish("FINISHED")
    progress.on_trial_end(study._storage.get_trial(trial._trial_id))


def seed_roles(plan: TrialPlan) -> dict[str, int]:
    """Which seed did what: initialisation (train.seed), training order and augmentation
    (data.order_seed), subset and held-out split (data.seed, fixed per study); and when
    train.early_init_seed is set, the stem's and first stages' initialisation (fixed per
    study)."""
    order = getattr(plan.data, "order_seed", None)
    roles = {records.INIT_SEED: int(plan.train.seed),
             records.ORDER_SEED: int(plan.data.seed if order is None else order),
             records.SPLIT_SEED: int(plan.data.seed)}
    if plan.train.early_init_seed is not None:
        roles[records.EARLY_INIT_SEED] = int(plan.train.early_init_seed)
    return roles


def trial_status(trial: optuna.Trial, status: str) -> None:
    trial.set_user_attr(STATUS, status)


def _run_name(number: int, params: dict[str, Any]) -> str:
    words = records.point_label(params)
    return f"trial {number}: {words}"[:250]


def _record_plan(trial: optuna.Trial, run: TrialRun, plan: TrialPlan, config: StudyConfig
                 ) -> None:
    import dataclasses

    from mvlab.grammar import network_spec

    trial.set_user_attr(SPEC, plan.spec)
    trial.set_user_attr(records.NETWORK, network_spec(plan.spec))
    trial.set_user_attr(SEED, plan.seed)
    trial.set_user_attr(FIDELITY, fidelity_label(plan))
    roles = seed_roles(plan)
    for name, value in roles.items():
        trial.set_user_attr(name, value)
    run.set_tags({SPEC: plan.spec, FIDELITY: fidelity_label(plan)})
    run.log_params({SPEC: plan.spec, SEED: plan.seed, FIDELITY: fidelity_label(plan),
                    records.PARAM_STUDY_KIND: config.kind, **roles,
                    **flatten("train", dataclasses.asdict(plan.train)),
                    **flatten("data", dataclasses.asdict(plan.data)),
                    **flatten("bench", dataclasses.asdict(config.bench))})


def _measure_and_train(study: optuna.Study, trial: optuna.Trial, run: TrialRun, plan: TrialPlan,
                       config: StudyConfig, data: DataCache, progress: Progress
                       ) -> list[float] | None:
    from mvlab.training import ddp
    from mvlab.training.trainer import train

    bundle = data.get(plan.data, plan.train)
    run.log_json(bundle.manifest, "data_manifest.json")
    num_classes = int(bundle.num_classes)

    cost = complexity_of(plan.spec, plan.data.resolution, num_classes)
    with deferred_interrupts():
        trial.set_user_attr(PARAMS, int(cost[PARAMS]))
        trial.set_user_attr(MACS, int(cost[MACS]))
        trial.set_user_attr(records.NUM_CLASSES, num_classes)  # the report's plateau check
    run.log_metrics(cost)
    _check_constraints(config, cost, ("max_params", PARAMS), ("max_macs", MACS))

    img_size = config.bench.img_size or plan.data.resolution
    bench_row = throughput_of(plan.spec, config.bench, img_size, num_classes,
                              train_threads=plan.train.threads)
    if bench_row.get("status") != "ok":
        raise _Pruned(f"infeasible: throughput could not be measured ({bench_row.get('status')}: "
                      f"no batch size fitted on {config.bench.device})")
    measured = {THROUGHPUT: float(bench_row[THROUGHPUT]), LATENCY: float(bench_row[LATENCY])}
    with deferred_interrupts():
        trial.set_user_attr(THROUGHPUT, measured[THROUGHPUT])
        trial.set_user_attr(LATENCY, measured[LATENCY])
    run.log_metrics(measured)
    run.log_json(bench_row, "throughput.json")
    run.log_params({**{f"bench.{k}": bench_row.get(k) for k in _BENCH_ENVIRONMENT},
                    "bench.batch_size_used": bench_row.get("batch_size"),
                    "bench.threads_used": bench_row.get("threads"),
                    "bench.clock_used": bench_row.get("clock"),
                    "bench.device_used": bench_row.get("device")})
    _check_constraints(config, measured, ("max_latency_ms", LATENCY))
    if "min_throughput" in config.constraints and \
            measured[THROUGHPUT] < config.constraints["min_throughput"]:
        raise _Pruned(f"infeasible: throughput {measured[THROUGHPUT]:.1f} img/s < "
                      f"min_throughput {config.constraints['min_throughput']:g}")
    known = {**cost, **measured}

    stop_reason: list[str] = []
    epochs = int(plan.train.epochs)

    def on_epoch(epoch: int, metrics: dict) -> bool:
        # Between epochs: MLflow and Optuna writes, which a Ctrl-C must not cut in half.
        with deferred_interrupts():
            return _after_epoch(epoch + 1, metrics)

    def _after_epoch(done: int, metrics: dict) -> bool:
        # ``done``: epochs done (the trainer counts from 0; MLflow steps and the rule count done)
        run.log_metrics(metrics, step=done)
        trial.set_user_attr(st.HEARTBEAT_ATTR, time.time())
        progress.on_epoch(done, epochs, metrics)
        if config.early_stop and done == config.early_stop.after_epoch:
            accuracy = _accuracy_of(metrics)
            if accuracy is not None:
                trial.set_user_attr(EARLY_TOP1, accuracy)
                reason = hopeless(study, config, known, accuracy)
                if reason:
                    stop_reason.append(reason)
                    return True
        return False

    ranks = ddp.current()
    if ranks is not None:  # under torchrun: the other ranks train this plan with us
        run.log_params({"ddp.world_size": ranks.world_size, "ddp.backend": ranks.backend})
        ddp.broadcast_object(TrainOrder(plan.spec, plan.data, plan.train), ranks)
    result = train(plan.spec, bundle, plan.train, on_epoch=on_epoch)
    final = _final_metrics(result)
    history = getattr(result, "history", None) or []
    losses = [epoch.get(records.TRAIN_LOSS) for epoch in history]
    finite = [isinstance(v, (int, float)) and math.isfinite(v) for v in losses]
    if losses and finite[-1]:
        with deferred_interrupts():  # with num_classes: the report's plateau check
            trial.set_user_attr(records.TRAIN_LOSS, float(losses[-1]))
            if all(finite):  # and when the plateau was left
                trial.set_user_attr(records.TRAIN_LOSSES, [round(float(v), 6) for v in losses])
                trial.set_user_attr(records.STAGE_EPOCHS, plan.data.curriculum_epochs)
    run.log_metrics(final, step=int(getattr(result, "epochs_completed", 0) or 0))
    if history:
        run.log_json(history, "history.json")
    if stop_reason:
        raise _Pruned(stop_reason[0])
    if getattr(result, "status", records.STATUS_OK) != records.STATUS_OK:
        raise _TrialFailed(getattr(result, "reason", None) or "training failed")
    outcome = {**known, **final}
    values = []
    for metric, _direction in config.objectives:
        value = outcome.get(metric)
        if value is None or not math.isfinite(float(value)):
            raise _TrialFailed(f"objective {metric} is {value!r} (not a finite number)")
        values.append(float(value))
    return values


class _TrialFailed(Exception):
    """The trainer reported a failure (NaN loss, out of memory): recorded, not a bug."""


# What the benchmark row says about where it ran (params next to the study's bench settings).
# (``threads``, ``clock`` and ``device`` are settings too: what they resolved to is logged as
# bench.threads_used, bench.clock_used and bench.device_used; MLflow
# refuses to log one param twice with different values.)
_BENCH_ENVIRONMENT = ("device_name", "torch", "cuda", "scan_backend")


def _check_constraints(config: StudyConfig, measured: dict[str, float],
                       *pairs: tuple[str, str]) -> None:
    for constraint, metric in pairs:
        limit = config.constraints.get(constraint)
        if limit is not None and measured[metric] > limit:
            raise _Pruned(f"infeasible: {metric} {measured[metric]:.4g} > {constraint} "
                          f"{limit:.4g}")


def _accuracy_of(metrics: dict) -> float | None:
    for key in (records.EMA_HELDOUT_TOP1, records.HELDOUT_TOP1):
        if metrics.get(key) is not None:
            return float(metrics[key])
    return None


# Final TrainResult fields -> MLflow metric names. Totals get their own names so they do not
# collide with the per-epoch series of the same field (train_time_s of one epoch vs all).
_FINAL_METRICS = {**{m: m for m in records.ACCURACY_METRICS}, "val_loss": "val_loss",
                  "train_time_s": "train_time_total_s", "wall_time_s": "wall_time_s",
                  "epochs_completed": "epochs_completed", "images_per_s": "train_images_per_s"}


def _final_metrics(result: Any) -> dict[str, float]:
    out = {}
    for field_name, metric in _FINAL_METRICS.items():
        value = getattr(result, field_name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[metric] = float(value)
    return out


def hopeless(study: optuna.Study, config: StudyConfig, known: dict[str, float],
             accuracy: float) -> str | None:
    """The early-stop rule (module doc): the reason to prune, or None."""
    assert config.early_stop is not None
    margin = config.early_stop.margin
    directions = {m: d for m, d in config.objectives if m in records.PRE_TRAINING_METRICS}
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        early = other.user_attrs.get(EARLY_TOP1)
        if early is None or float(early) < accuracy + margin:
            continue
        at_least_as_good = True
        for metric, direction in directions.items():
            theirs = other.user_attrs.get(metric)
            if theirs is None:
                at_least_as_good = False
                break
            better_or_equal = theirs >= known[metric] if direction == records.MAXIMIZE \
                else theirs <= known[metric]
            at_least_as_good &= better_or_equal
        if at_least_as_good:
            return (f"pruned after epoch {config.early_stop.after_epoch}: trial {other.number} "
                    f"is as good in {', '.join(directions) or 'cost'} and was "
                    f"{float(early) - accuracy:.1f} top-1 points ahead (margin {margin:g})")
    return None


def _finish(study: optuna.Study, trial: optuna.Trial, run: TrialRun | None, state: TrialState,
            reason: str, mlflow_status: str) -> None:
    with deferred_interrupts():  # a second Ctrl-C cannot cut the recording of the first
        try:
            trial.set_user_attr(REASON, reason)
            trial_status(trial, records.STATUS_FAILED if state == TrialState.FAIL
                         else records.STATUS_PRUNED)
            study.tell(trial, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            _taken_over(study, trial, run, f"it ended here too: {reason}")
            return
        if run is not None:
            _quiet(lambda: run.finish(mlflow_status, reason))


def _taken_over(study: optuna.Study, trial: optuna.Trial, run: TrialRun | None,
                ours: str = "") -> None:
    """Another worker finished this trial while it ran here (a stale verdict: a heartbeat too
    late, a clock skew): Optuna refuses every further write to it. Stop the trial, keep what its
    MLflow run holds and close it with the other worker's verdict; the sweep goes on."""
    frozen = study._storage.get_trial(trial._trial_id)
    verdict = frozen.user_attrs.get(REASON) or f"marked {frozen.state.name}"
    reason = (f"trial {trial.number} was ended by another worker while it ran here ({verdict}); "
              f"stopped it and kept what its MLflow run recorded" + (f"; {ours}" if ours else ""))
    log.warning("%s", reason)
    if run is not None:
        _quiet(lambda: run.finish("KILLED", reason))


def _quiet(action: Callable[[], Any]) -> None:
    """Bookkeeping after a failure must not mask the failure itself."""
    try:
        action()
    except Exception:  # noqa: BLE001
        pass
