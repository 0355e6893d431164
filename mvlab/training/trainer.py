"""The proxy trainer: train one architecture spec on one data proxy and measure it.

    from mvlab.training.config import TrainConfig
    from mvlab.training.trainer import train
    result = train("proxy", DataConfig(resolution=64), TrainConfig(epochs=10))
    result.status, result.val_top1, result.history[-1]["images_per_s"]

What a researcher can rely on:

- timm's optimiser (AdamW, LAMB, ...) and cosine schedule with a warm-up prefix, stepped every
  update; no weight decay on 1-d parameters, biases and the model's ``no_weight_decay()`` names
  (``A_log``, ``D``). Label smoothing, optional Mixup/CutMix, gradient clipping, optional EMA.
- bf16/fp16 autocast on GPUs (loss scaling for fp16), channels-last, optional ``torch.compile``.
- Seeded: the same seed on the CPU gives the same weights and metrics, and a run resumed from its
  per-epoch checkpoint ends exactly where the uninterrupted run does.
- Selection happens on the held-out split (evaluated every epoch); the reporting split (``val``)
  is evaluated once, at the end.
- A non-finite loss or an out-of-memory error ends the run with ``status="failed"`` and a reason
  naming the epoch and step; ``train`` returns instead of raising. Input errors (a bad spec, a
  missing data root, a bad setting) are ``UserError`` and are raised, and so is anything raised
  by the ``on_epoch`` callback (the sweep prunes trials that way) and ``KeyboardInterrupt``.

The run reads top-down as small functions over one ``Run`` record: ``setup_run`` (data, model,
optimisation, resume), ``train_model`` (the epoch loop), ``train_epoch``, ``train_step``,
``check_losses``, ``evaluate_heldout``, and ``resume_state`` / ``restore`` for checkpoints.
"""
from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvlab.config_fields import changed_settings
from mvlab.errors import DataError, TrainingFailed, UserError
from mvlab.training import ddp
from mvlab.training.checkpoint import load_checkpoint, save_checkpoint, write_json
from mvlab.training.complexity import model_complexity
from mvlab.training.config import (
    RESUME_NEUTRAL,
    TrainConfig,
    TrainConfigError,
    TrainResult,
    with_current_names,
)
from mvlab.training.evaluate import evaluate
from mvlab.training.models import make_model, start_early_part_from
from mvlab.training.optim import build_optimizer, build_scheduler
from mvlab.training.runtime import (
    autocast,
    capture_rng_state,
    compile_mode,
    cpu_threads,
    free_memory,
    is_out_of_memory,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
    restore_rng_state,
    scan_backend_of,
    seed_everything,
    synchronize,
)

log = logging.getLogger(__name__)

OnEpoch = Callable[[int, dict], "bool | None"]

# Optimisers whose timm constructors take a momentum; the others reject the keyword.
_MOMENTUM_OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "rmsproptf")


class LossNotFinite(TrainingFailed):
    """A NaN/inf loss; ``step`` is None when it showed up in the held-out evaluation."""

    def __init__(self, reason: str, epoch: int | None, step: int | None):
        super().__init__(reason, kind="nan")
        self.epoch = epoch
        self.step = step


class _CallbackRaised(Exception):
    """Carries an exception raised by ``on_epoch`` past the trainer's failure handling."""

    def __init__(self, exc: BaseException):
        super().__init__(repr(exc))
        self.exc = exc


@dataclass
class Position:
    """Where the run is, kept up to date so a failure anywhere can name it."""

    phase: str = "setup"
    epoch: int | None = None
    step: int | None = None

    def describe(self) -> str:
        """``epoch 2, step 17``, the held-out evaluation after an epoch, or a phase name."""
        if self.phase == "train":
            return f"epoch {self.epoch}, step {self.step}"
        if self.phase == "heldout evaluation":
            return f"the held-out evaluation after epoch {self.epoch}"
        return self.phase


@dataclass
class Run:
    """One run's parts and its mutable state; every function below reads and updates it."""

    cfg: TrainConfig
    device: torch.device
    dist: ddp.DistContext | None
    result: TrainResult
    position: Position
    bundle: Any
    steps_per_epoch: int
    model: nn.Module
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    ema: Any = None
    mixup: Any = None
    criterion: nn.Module | None = None
    run_model: nn.Module | None = None  # the model as called: DDP-wrapped and/or compiled
    history: list[dict] = field(default_factory=list)
    global_step: int = 0
    start_epoch: int = 0

    @property
    def precision(self) -> str:
        return str(self.result.precision)

    @property
    def channels_last(self) -> bool:
        return bool(self.result.channels_last)

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.is_main

    @property
    def world_size(self) -> int:
        return self.dist.world_size if self.dist else 1


# -- the public entry -----------------------------------------------------------------------

def train(spec: str | nn.Module, data: Any, cfg: TrainConfig | None = None,
          on_epoch: OnEpoch | None = None) -> TrainResult:
    """Train ``spec`` (an mvlab preset or spec string, a timm model name, or a built ``nn.Module``)
    on ``data`` (a ``DataConfig`` or a built ``DataBundle``) and evaluate it.

    ``on_epoch(epoch, metrics)`` is called after each epoch (0-based) has been evaluated and
    checkpointed; returning True stops the run early (status stays ``ok``). Never raises for a
    diverged or out-of-memory run: the failure is in the returned result.
    """
    cfg = cfg or TrainConfig()
    cfg.validate()
    started = time.perf_counter()
    # Under torchrun with several processes: data-parallel (mvlab/training/ddp.py).
    dist_ctx, device = ddp.setup(resolve_device(cfg.device))
    result = TrainResult(config=cfg.to_dict(), device=str(device),
                         precision=resolve_precision(cfg.precision, device),
                         channels_last=resolve_channels_last(cfg.channels_last, device),
                         compile=compile_mode(cfg.compile) or "none")
    position = Position()
    run: Run | None = None
    try:
        with cpu_threads(cfg.threads):
            run = setup_run(spec, data, cfg, device, result, dist_ctx, position)
            train_model(run, on_epoch)
    except _CallbackRaised as wrapped:
        raise wrapped.exc  # noqa: B904 - the callback's own exception, with its own traceback
    except LossNotFinite as exc:
        _fail(result, exc.reason, exc.kind, exc.epoch, exc.step)
    except TrainingFailed as exc:
        _fail(result, exc.reason, exc.kind, position.epoch, position.step)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a run must end with a result, never a traceback
        if is_out_of_memory(exc):
            _fail(result, f"out of memory on {device} during {position.describe()} with "
                          f"batch_size={cfg.batch_size}: lower train.batch_size or "
                          f"data.resolution", "oom", position.epoch, position.step)
        else:
            log.debug("training failed", exc_info=True)  # the traceback is in the result
            _fail(result, f"{type(exc).__name__} during {position.describe()}: {exc}", "error",
                  position.epoch, position.step)
            result.traceback = traceback.format_exc()
    if result.failure_kind == "oom":
        run = None  # drop the model and optimiser before returning the cached blocks
        free_memory(device)
    result.wall_time_s = time.perf_counter() - started
    if cfg.checkpoint_dir and (dist_ctx is None or dist_ctx.is_main):
        write_json(Path(cfg.checkpoint_dir) / "result.json", result.to_dict())
    return result


def _fail(result: TrainResult, reason: str, kind: str, epoch: int | None, step: int | None) -> None:
    result.status, result.reason, result.failure_kind = "failed", reason, kind
    result.failure_epoch, result.failure_step = epoch, step
    # info, not warning: Python's last-resort handler would print warnings to a CLI user's
    # terminal next to the one line the command prints itself.
    log.info("training failed (%s): %s", kind, reason)


# -- set-up ---------------------------------------------------------------------------------

def setup_run(spec: str | nn.Module, data: Any, cfg: TrainConfig, device: torch.device,
              result: TrainResult, dist: ddp.DistContext | None, position: Position) -> Run:
    """Data, model, optimisation and loss, then the checkpoint's state when resuming."""
    # Checked before the data is built too: a stage's pool can take minutes to generate.
    _check_curriculum(getattr(data, "curriculum_epochs", 0), cfg)
    bundle = setup_data(data, cfg, device, dist)
    _check_curriculum(getattr(bundle.train, "stage_epochs", 0), cfg)
    steps_per_epoch = _length(bundle.train)
    result.data_manifest = getattr(bundle, "manifest", None)
    # Seeded here, after the data is built, so that a DataConfig and a prebuilt DataBundle
    # give the same initial weights.
    seed_everything(cfg.seed)
    model = setup_model(spec, data, bundle, cfg, device, result, dist)
    run = Run(cfg=cfg, device=device, dist=dist, result=result, position=position,
              bundle=bundle, steps_per_epoch=steps_per_epoch, model=model)
    setup_optimization(run)
    setup_loss(run)
    if cfg.resume and cfg.checkpoint_dir:
        state = load_checkpoint(cfg.checkpoint_dir)
        if state is not None:
            restore(run, state)
    # Wrapped last: the checkpoint holds the bare model's state dict.
    mode = compile_mode(cfg.compile)
    parallel = ddp.wrap(model, dist, device) if dist else model
    run.run_model = torch.compile(parallel, mode=mode) if mode else parallel
    return run


def _check_curriculum(stage_epochs: int, cfg: TrainConfig) -> None:
    from mvlab.data.config import curriculum_error

    error = curriculum_error(stage_epochs, cfg.epochs)
    if error:
        raise DataError(error)


def setup_data(data: Any, cfg: TrainConfig, device: torch.device,
               dist: ddp.DistContext | None) -> Any:
    """The data bundle (built from a DataConfig unless one was given), sharded under DDP."""
    if hasattr(data, "train") and hasattr(data, "num_classes"):
        bundle = data
    else:
        from mvlab.data import build_data
        bundle = build_data(data, cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
                            device=str(device))
    if dist is not None:
        ddp.check_batch(cfg.batch_size, dist)
        bundle = ddp.shard_bundle(bundle, dist)
    return bundle


def setup_model(spec: str | nn.Module, data: Any, bundle: Any, cfg: TrainConfig,
                device: torch.device, result: TrainResult,
                dist: ddp.DistContext | None) -> nn.Module:
    """The model on the device in the run's layout; its spec, scan backend and cost recorded."""
    if isinstance(spec, nn.Module):
        if cfg.early_init_seed is not None:
            raise TrainConfigError("train.early_init_seed rebuilds the network from its spec; "
                                   "pass a spec string instead of a built model, or unset it")
        model = spec
        result.spec = str(getattr(spec, "spec", None) or type(spec).__name__)
    else:
        def build() -> nn.Module:
            return make_model(spec, bundle.num_classes, _in_chans(bundle), cfg.scan_backend)

        model = build()
        result.spec = str(getattr(model, "spec", None) or spec)
        if cfg.early_init_seed is not None:
            start_early_part_from(model, build, int(cfg.early_init_seed),
                                  int(cfg.early_init_stages))
    if dist is not None:
        model = ddp.convert_batchnorm(model, device)
    model.to(device)
    if result.channels_last:
        model.to(memory_format=torch.channels_last)
    result.scan_backend = scan_backend_of(model, device)
    cost = model_complexity(model, _resolution(bundle, data), bundle.num_classes,
                            _in_chans(bundle))
    result.params, result.macs = cost["params"], cost["macs"]
    result.macs_with_scan, result.macs_method = cost["macs_with_scan"], cost["macs_method"]
    return model


def setup_optimization(run: Run) -> None:
    """Optimiser, per-step schedule, loss scaler (fp16 only) and the optional weight EMA."""
    cfg = run.cfg
    opt_kwargs: dict[str, Any] = {}
    if cfg.opt_eps is not None:
        opt_kwargs["eps"] = cfg.opt_eps
    if cfg.opt_betas is not None:
        opt_kwargs["betas"] = tuple(cfg.opt_betas)
    if cfg.optimizer.lower() in _MOMENTUM_OPTIMIZERS:
        opt_kwargs["momentum"] = cfg.momentum
    run.optimizer = build_optimizer(run.model, cfg.optimizer, cfg.lr, cfg.weight_decay,
                                    **opt_kwargs)
    run.scheduler = build_scheduler(run.optimizer, cfg.epochs, run.steps_per_epoch,
                                    cfg.warmup_epochs, cfg.warmup_lr, cfg.min_lr, cfg.sched)
    run.scaler = torch.amp.GradScaler(run.device.type, enabled=run.precision == "fp16")
    if cfg.ema:
        from timm.utils import ModelEmaV3
        run.ema = ModelEmaV3(run.model, decay=cfg.ema_decay, use_warmup=True)
        run.result.reported_weights = "ema"


def setup_loss(run: Run) -> None:
    """Cross-entropy with label smoothing, or soft targets when Mixup/CutMix mixes the labels."""
    cfg = run.cfg
    if cfg.mixup > 0 or cfg.cutmix > 0:
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy
        run.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                          switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.label_smoothing,
                          num_classes=run.bundle.num_classes)
        run.criterion = SoftTargetCrossEntropy()
    else:
        run.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)


# -- the loop -------------------------------------------------------------------------------

def train_model(run: Run, on_epoch: OnEpoch | None) -> None:
    """Epochs from the first not yet done, each trained, evaluated on held-out, checkpointed and
    shown to ``on_epoch``; then the reporting split once."""
    cfg, result, position = run.cfg, run.result, run.position
    for epoch in range(run.start_epoch, cfg.epochs):
        position.epoch = epoch
        epoch_start = time.perf_counter()
        position.phase = "train"
        metrics = train_epoch(run, epoch)
        position.step, position.phase = None, "precise BatchNorm statistics"
        precise_bn(run, epoch)
        position.phase = "heldout evaluation"
        metrics.update(evaluate_heldout(run))
        metrics["epoch_time_s"] = time.perf_counter() - epoch_start
        run.history.append(metrics)
        record_progress(run)
        if cfg.checkpoint_dir and run.is_main:
            position.phase = f"saving the checkpoint after epoch {epoch}"
            result.checkpoint = str(save_checkpoint(cfg.checkpoint_dir, resume_state(run)))
        log.info("epoch %d/%d: %s", epoch + 1, cfg.epochs, _fmt(metrics))
        if _should_stop(run, on_epoch, epoch, metrics):
            result.stopped_early = epoch + 1 < cfg.epochs
            break
    position.epoch, position.phase = None, "the final val evaluation"
    record_progress(run)
    evaluate_val(run)


def _should_stop(run: Run, on_epoch: OnEpoch | None, epoch: int, metrics: dict) -> bool:
    """Rank 0's ``on_epoch`` verdict, on every rank."""
    stop = None
    if on_epoch is not None and run.is_main:
        try:
            stop = on_epoch(epoch, dict(metrics))
        except BaseException as exc:  # noqa: BLE001 - re-raised unchanged by train()
            raise _CallbackRaised(exc) from exc
    return ddp.from_main(bool(stop), run.dist)


def train_epoch(run: Run, epoch: int) -> dict[str, Any]:
    """One pass over the training split; its mean loss, last lr, images and speed."""
    cfg, device = run.cfg, run.device
    set_epoch = getattr(run.bundle.train, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)
    run.model.train()
    # Reading a loss waits for the device; on the CPU there is nothing to wait for.
    check_every = 1 if device.type == "cpu" else cfg.sync_every
    pending: list[torch.Tensor] = []
    loss_sum, images, steps = 0.0, 0, 0
    bar = _progress(cfg.progress, run.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}")
    synchronize(device)
    start = time.perf_counter()
    for step, (x, y) in enumerate(run.bundle.train):
        run.position.step = step
        pending.append(train_step(run, x, y).detach())
        images += x.shape[0] * run.world_size
        steps += 1
        if len(pending) >= check_every:
            loss_sum += check_losses(run, pending, epoch, step)
            pending = []
            bar.set_postfix(loss=f"{loss_sum / steps:.4f}",
                            lr=f"{run.optimizer.param_groups[0]['lr']:.2e}", refresh=False)
        bar.update()
    if steps == 0:
        raise DataError("the training split yielded no batches: check data.per_class, "
                        "data.classes and train.batch_size")
    if pending:
        loss_sum += check_losses(run, pending, epoch, steps - 1)
    synchronize(device)
    train_time = time.perf_counter() - start
    bar.close()
    return {"epoch": epoch, "train_loss": loss_sum / steps,
            "lr": float(run.optimizer.param_groups[0]["lr"]), "steps": steps,
            "train_images": images, "train_time_s": train_time,
            "images_per_s": images / train_time if train_time > 0 else float("nan")}


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Forward, backward (scaled for fp16, clipped), optimiser, schedule and EMA; the loss."""
    x = x.to(run.device, non_blocking=True)
    y = y.to(run.device, non_blocking=True)
    if run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    target: torch.Tensor = y
    if run.mixup is not None:
        x, target = _mix(run, x, y)
    with autocast(run.device, run.precision):
        loss = run.criterion(run.run_model(x), target)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.cfg.clip_grad:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), float(run.cfg.clip_grad))
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.global_step += 1
    run.scheduler.step_update(num_updates=run.global_step)
    if run.ema is not None:
        run.ema.update(run.model, step=run.global_step)
    return loss


def _mix(run: Run, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape[0] % 2 == 0:
        return run.mixup(x, y)
    # timm's Mixup pairs images by flipping the batch, so it needs an even batch; a ragged
    # last batch is trained unmixed with the same (smoothed) soft targets.
    from timm.data.mixup import mixup_target
    return x, mixup_target(y, run.bundle.num_classes, lam=1.0, smoothing=run.cfg.label_smoothing)


def check_losses(run: Run, pending: list[torch.Tensor], epoch: int, last_step: int) -> float:
    """Sum of the pending losses (averaged over ranks); ``LossNotFinite`` naming the first bad
    step among them."""
    values = ddp.average(torch.stack(pending).float(), run.dist).cpu()
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        i = int((~finite).nonzero()[0])
        step = last_step - len(pending) + 1 + i
        global_step = run.global_step - len(pending) + i
        raise LossNotFinite(
            f"loss became {values[i].item()} at epoch {epoch}, step {step} (global step "
            f"{global_step}); try a lower train.lr, train.clip_grad, or precision=bf16 instead "
            f"of fp16", epoch, step)
    return float(values.double().sum())


def precise_bn(run: Run, epoch: int) -> None:
    """``train.precise_bn`` images' worth of the epoch's last training batches (regenerated:
    a loader's batches are a function of its seed and the epoch, so the training order is
    untouched) set every BatchNorm layer's running statistics to their plain average at the
    current weights, in the model and in its EMA copy. Only the BatchNorm layers run in training
    mode (drop-path and dropout stay off, no random number is drawn), so training itself is the
    same with this on or off."""
    images = int(run.cfg.precise_bn)
    loader = run.bundle.train
    regenerate = getattr(loader, "batches", None)
    if not images or not callable(regenerate):
        return
    count = min(len(loader), max(1, math.ceil(images / run.cfg.batch_size)))
    batches = regenerate(epoch, start=len(loader) - count)
    if run.dist is not None:  # regenerated whole: each rank takes its shard, as in training
        rank, world = run.dist.rank, run.dist.world_size
        batches = ((x.chunk(world)[rank],) for x, *_ in batches)
    models = [run.model] + ([run.ema.module] if run.ema is not None else [])
    recompute_bn_stats(models, batches, run.device, run.precision, run.channels_last)


def recompute_bn_stats(models: list[nn.Module], batches: Iterable, device: torch.device,
                       precision: str = "fp32", channels_last: bool = False) -> None:
    """Every BatchNorm layer of ``models``: running statistics reset, then the cumulative
    average over ``batches`` (inputs first in each), with everything else in eval mode."""
    layers = [b for m in models for b in m.modules()
              if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return
    modes = [m.training for m in models]
    momenta = [b.momentum for b in layers]
    for model in models:
        model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average, not an exponential one
        layer.train()
    with torch.no_grad():
        for x, *_ in batches:
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                for model in models:
                    model(x)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    for model, mode in zip(models, modes, strict=True):
        model.train(mode)


def evaluate_heldout(run: Run) -> dict[str, float]:
    """Held-out metrics of the model (and of the EMA weights); empty without a held-out split."""
    out: dict[str, float] = {}
    heldout = getattr(run.bundle, "heldout", None)
    if heldout is None or _length(heldout, default=1) == 0:
        return out
    m = evaluate(run.run_model, heldout, run.device, run.precision, run.channels_last)
    if not math.isfinite(m["loss"]):
        # The last update can leave non-finite weights behind a finite training loss; an
        # accuracy measured with them is not a measurement.
        epoch = run.position.epoch
        raise LossNotFinite(f"held-out loss became {m['loss']} after epoch {epoch}: the weights "
                            f"diverged; try a lower train.lr or train.clip_grad", epoch, None)
    out.update(heldout_top1=m["top1"], heldout_top5=m["top5"], heldout_loss=m["loss"])
    if run.ema is not None:
        m = evaluate(run.ema.module, heldout, run.device, run.precision, run.channels_last)
        out.update(ema_heldout_top1=m["top1"], ema_heldout_top5=m["top5"],
                   ema_heldout_loss=m["loss"])
    return out


def evaluate_val(run: Run) -> None:
    """The reporting split, once, with the reported weights (EMA when on)."""
    val = getattr(run.bundle, "val", None)
    if val is None:
        return
    model = run.ema.module if run.ema is not None else run.run_model
    m = evaluate(model, val, run.device, run.precision, run.channels_last)
    run.result.val_top1, run.result.val_top5, run.result.val_loss = m["top1"], m["top5"], m["loss"]


def record_progress(run: Run) -> None:
    """The result's history and running totals, from the epochs done so far."""
    result, history = run.result, run.history
    result.history = list(history)
    result.epochs_completed = len(history)
    if not history:
        return
    prefix = "ema_" if run.ema is not None else ""
    result.heldout_top1 = history[-1].get(prefix + "heldout_top1")
    result.heldout_top5 = history[-1].get(prefix + "heldout_top5")
    result.train_time_s = sum(h["train_time_s"] for h in history)
    images = sum(h["train_images"] for h in history)
    result.images_per_s = images / result.train_time_s if result.train_time_s > 0 else None


# -- resume state ---------------------------------------------------------------------------

def fingerprint(run: Run) -> dict[str, Any]:
    """What a checkpoint must have been made with to be resumed by this run."""
    settings = {k: v for k, v in run.cfg.to_dict().items() if k not in RESUME_NEUTRAL}
    return {"spec": run.result.spec, "train": settings, "data": run.result.data_manifest}


def resume_state(run: Run) -> dict[str, Any]:
    """Everything a resumed run needs to continue bit for bit (on the CPU)."""
    state = {
        "fingerprint": fingerprint(run),
        "epoch": len(run.history),
        "global_step": run.global_step,
        "history": run.history,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "rng": capture_rng_state(),
    }
    generator = _loader_generator(run.bundle.train)
    if generator is not None:
        state["loader_rng"] = generator.get_state()
    return state


def restore(run: Run, state: dict[str, Any]) -> None:
    """Load ``resume_state``'s output into ``run``; a checkpoint of other settings is refused."""
    saved, current = with_current_names(state["fingerprint"]), fingerprint(run)
    if saved != current:
        diffs = "; ".join(changed_settings(saved, current)) or "settings differ"
        raise UserError(f"cannot resume from {run.cfg.checkpoint_dir}: the checkpoint was "
                        f"made with different settings ({diffs}); use the same settings or a "
                        f"new train.checkpoint_dir")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    if run.ema is not None and state["ema"] is not None:
        run.ema.load_state_dict(state["ema"])
    restore_rng_state(state["rng"])
    generator = _loader_generator(run.bundle.train)
    if generator is not None and "loader_rng" in state:
        generator.set_state(state["loader_rng"])
    run.history = list(state["history"])
    run.global_step = int(state["global_step"])
    run.start_epoch = int(state["epoch"])
    run.result.resumed_from_epoch = run.start_epoch
    record_progress(run)
    log.info("resumed from %s after epoch %d", run.cfg.checkpoint_dir, run.start_epoch)


def _loader_generator(loader: Any) -> torch.Generator | None:
    # A DataLoader with its own generator draws each epoch's order from it, not from the global
    # RNG; it has to be checkpointed too for a resumed run to see the same batches.
    generator = getattr(loader, "generator", None)
    return generator if isinstance(generator, torch.Generator) else None


# -- helpers --------------------------------------------------------------------------------

def _in_chans(bundle: Any) -> int:
    return int(getattr(bundle, "in_chans", 3))


def _resolution(bundle: Any, data: Any) -> int:
    manifest = getattr(bundle, "manifest", None) or {}
    if manifest.get("resolution"):
        return int(manifest["resolution"])
    for source in (bundle, data):
        value = getattr(source, "resolution", None)
        if value:
            return int(value)
    images, _ = next(iter(bundle.train))
    return int(images.shape[-1])


def _length(loader: Iterable, default: int | None = None) -> int:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        if default is not None:
            return default
        raise DataError("the training loader has no length; the schedule needs steps per epoch") from None


def _progress(enabled: bool, total: int, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def _fmt(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in metrics.items())
