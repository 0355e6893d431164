"""The proxy trainer: train one architecture spec on one data proxy and measure it.

    from mvlab.train import TrainConfig, train
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
"""
from __future__ import annotations

import dataclasses
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

from mvlab.errors import DataError, TrainingFailed, UserError
from mvlab.training import ddp
from mvlab.training.checkpoint import load_checkpoint, save_checkpoint, write_json
from mvlab.training.complexity import model_complexity
from mvlab.training.evaluate import evaluate
from mvlab.training.models import make_model
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

# Settings that do not change what a run computes; a checkpoint may be resumed under other values.
# Upper bounds on counts a user types (docs/training.md): past them a run would only allocate or
# loop for hours before failing.
MAX_COUNTS = {"epochs": 100_000, "batch_size": 65_536, "sync_every": 1_000_000, "threads": 1024}
_RESUME_NEUTRAL = ("device", "threads", "checkpoint_dir", "resume", "progress", "sync_every")


class TrainConfigError(UserError, ValueError):
    """A training setting that cannot work; the message names the ``train.<key>``."""


@dataclass
class TrainConfig:
    """Everything about how a proxy model is trained (what it is trained on is ``DataConfig``).

    ``amp``: ``auto`` (bf16 on GPUs that have it, else fp16; fp32 on the CPU), ``fp32``, ``fp16``
    or ``bf16``. ``channels_last``: ``None`` = on (CUDA and CPU). ``compile``: ``False`` or a
    ``torch.compile`` mode (``True`` = ``default``). ``warmup_epochs`` may be fractional.
    ``ema``: keep an EMA of the weights (timm ModelEmaV3, decay warming up to ``ema_decay``); the
    EMA weights are then the ones reported. ``checkpoint_dir``: write ``last.pt`` each epoch and
    ``result.json`` at the end; with ``resume`` the run continues from ``last.pt`` when present.
    ``threads``: CPU threads for this run (``None``: torch's default, one per core); on a
    machine shared with other jobs ``1`` is often fastest. ``sync_every``: how many steps' losses are checked for NaN/inf at once on accelerators (each
    check waits for the device); on the CPU every step is checked.
    """

    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int | None = None
    optimizer: str = "adamw"
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    warmup_epochs: float = 1.0
    sched: str = "cosine"
    weight_decay: float = 0.05
    momentum: float = 0.9
    opt_eps: float | None = None
    opt_betas: tuple[float, float] | None = None
    label_smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    clip_grad: float | None = 5.0
    ema: bool = False
    ema_decay: float = 0.9998
    amp: str = "auto"
    channels_last: bool | None = None
    compile: bool | str = False
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    scan_backend: str = "auto"
    checkpoint_dir: str | None = None
    resume: bool = False
    progress: bool = False
    sync_every: int = 20

    def __post_init__(self) -> None:
        if isinstance(self.opt_betas, list):
            self.opt_betas = tuple(self.opt_betas)
        self.validate()

    def validate(self) -> None:
        """Raise ``TrainConfigError`` for settings that cannot work, naming the key and the fix."""
        def bad(key: str, why: str) -> TrainConfigError:
            return TrainConfigError(f"train.{key}={getattr(self, key)!r}: {why}")

        if self.threads is not None and not 1 <= int(self.threads) <= MAX_COUNTS["threads"]:
            raise bad("threads", f"must be an integer in 1..{MAX_COUNTS['threads']}, or null for "
                                 f"torch's default")
        for key in ("epochs", "batch_size", "sync_every"):
            if not 1 <= int(getattr(self, key)) <= MAX_COUNTS[key]:
                raise bad(key, f"must be an integer in 1..{MAX_COUNTS[key]}")
        if self.eval_batch_size is not None and not (
                1 <= int(self.eval_batch_size) <= MAX_COUNTS["batch_size"]):
            raise bad("eval_batch_size", f"must be an integer in 1..{MAX_COUNTS['batch_size']} "
                                         f"or null")
        for key in ("lr", "min_lr", "warmup_lr", "weight_decay", "warmup_epochs", "mixup", "cutmix"):
            if not math.isfinite(float(getattr(self, key))):
                raise bad(key, "must be a finite number")
            if float(getattr(self, key)) < 0:
                raise bad(key, "must be >= 0")
        if not float(self.lr) > 0:
            raise bad("lr", "must be > 0")
        if float(self.warmup_epochs) >= float(self.epochs) and float(self.warmup_epochs) > 0:
            raise bad("warmup_epochs", f"must be below train.epochs={self.epochs} (the warm-up "
                                       f"is a prefix of the run; e.g. warmup_epochs=0.2 for "
                                       f"a short run)")
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise bad("label_smoothing", "must be in [0, 1)")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise bad("ema_decay", "must be in [0, 1)")
        if self.clip_grad is not None and float(self.clip_grad) <= 0:
            raise bad("clip_grad", "must be > 0, or null to disable clipping")
        if str(self.amp).lower() not in ("auto", "none", "fp32", "fp16", "bf16", "amp", "float16",
                                         "bfloat16", "float32", "false", "true"):
            raise bad("amp", "use auto, fp32, fp16 or bf16")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict (a study's ``train:`` block); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainConfigError(f"unknown train option(s) {', '.join(unknown)}; "
                                   f"known: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What a run produced. ``status`` is ``"ok"`` or ``"failed"`` (then ``reason`` says why and
    where, and ``failure_kind`` is ``nan``, ``oom`` or ``error``). Accuracies are percentages of
    the model that is reported (the EMA weights when ``ema`` is on); heldout_* are from the last
    completed epoch. ``history`` holds one dict per epoch (see docs/training.md)."""

    status: str = "ok"
    reason: str | None = None
    failure_kind: str | None = None
    failure_epoch: int | None = None
    failure_step: int | None = None
    spec: str | None = None
    history: list[dict] = field(default_factory=list)
    epochs_completed: int = 0
    stopped_early: bool = False
    resumed_from_epoch: int | None = None
    heldout_top1: float | None = None
    heldout_top5: float | None = None
    val_top1: float | None = None
    val_top5: float | None = None
    val_loss: float | None = None
    reported_weights: str = "model"
    params: int | None = None
    macs: int | None = None
    macs_with_scan: int | None = None
    macs_method: str | None = None
    scan_backend: str | None = None
    device: str | None = None
    precision: str | None = None
    channels_last: bool | None = None
    compile: str | None = None
    images_per_s: float | None = None
    train_time_s: float = 0.0
    wall_time_s: float = 0.0
    checkpoint: str | None = None
    data_manifest: dict | None = None
    config: dict = field(default_factory=dict)
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line for humans: status, accuracy, speed, size."""
        if not self.ok:
            return f"failed ({self.failure_kind}): {self.reason}"
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.2f}%"
        parts = [f"{self.epochs_completed} epoch(s)" + (" (stopped early)" if self.stopped_early else ""),
                 f"held-out top-1 {pct(self.heldout_top1)}", f"val top-1 {pct(self.val_top1)}",
                 f"top-5 {pct(self.val_top5)}"]
        if self.images_per_s:
            parts.append(f"{self.images_per_s:.1f} img/s train")
        if self.params is not None:
            parts.append(f"{self.params / 1e6:.2f}M params")
        if self.macs is not None:
            parts.append(f"{self.macs / 1e6:.1f}M MACs")
        return ", ".join(parts)


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
                         precision=resolve_precision(cfg.amp, device),
                         channels_last=resolve_channels_last(cfg.channels_last, device),
                         compile=compile_mode(cfg.compile) or "none")
    trainer: _Trainer | None = None
    try:
        with cpu_threads(cfg.threads):
            trainer = _Trainer(spec, data, cfg, device, result, dist_ctx)
            trainer.fit(on_epoch)
    except _CallbackRaised as wrapped:
        raise wrapped.exc  # noqa: B904 - the callback's own exception, with its own traceback
    except LossNotFinite as exc:
        _fail(result, exc.reason, exc.kind, exc.epoch, exc.step)
    except TrainingFailed as exc:
        _fail(result, exc.reason, exc.kind, *_position(trainer))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a run must end with a result, never a traceback
        where = trainer.where() if trainer is not None else "setup"
        if is_out_of_memory(exc):
            _fail(result, f"out of memory on {device} during {where} with "
                          f"batch_size={cfg.batch_size}: lower train.batch_size or "
                          f"data.resolution", "oom", *_position(trainer))
        else:
            log.debug("training failed", exc_info=True)  # the traceback is in the result
            _fail(result, f"{type(exc).__name__} during {where}: {exc}", "error",
                  *_position(trainer))
            result.traceback = traceback.format_exc()
    if result.failure_kind == "oom":
        trainer = None  # drop the model and optimiser before returning the cached blocks
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


def _position(trainer: _Trainer | None) -> tuple[int | None, int | None]:
    return (trainer.epoch, trainer.step) if trainer is not None else (None, None)


class _Trainer:
    """One run's state; ``fit`` fills ``result``."""

    def __init__(self, spec: str | nn.Module, data: Any, cfg: TrainConfig, device: torch.device,
                 result: TrainResult, dist_ctx: ddp.DistContext | None = None):
        self.cfg, self.device, self.result = cfg, device, result
        self.dist = dist_ctx
        self.precision = result.precision
        self.channels_last = bool(result.channels_last)
        self.epoch: int | None = None
        self.step: int | None = None
        self.phase = "setup"
        self.global_step = 0
        self.start_epoch = 0

        self.bundle = _data_bundle(data, cfg, device)
        if self.dist is not None:
            ddp.check_batch(cfg.batch_size, self.dist)
            self.bundle = ddp.shard_bundle(self.bundle, self.dist)
        self.steps_per_epoch = _length(self.bundle.train)
        result.data_manifest = getattr(self.bundle, "manifest", None)

        # Seeded here, after the data is built, so that a DataConfig and a prebuilt DataBundle
        # give the same initial weights.
        seed_everything(cfg.seed)
        self.model, result.spec = _build_model(spec, self.bundle, cfg.scan_backend)
        if self.dist is not None:
            self.model = ddp.convert_batchnorm(self.model, device)
        self.model.to(device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        result.scan_backend = scan_backend_of(self.model, device)
        resolution = _resolution(self.bundle, data)
        cost = model_complexity(self.model, resolution, self.bundle.num_classes,
                                _in_chans(self.bundle))
        result.params, result.macs = cost["params"], cost["macs"]
        result.macs_with_scan, result.macs_method = cost["macs_with_scan"], cost["macs_method"]

        opt_kwargs: dict[str, Any] = {}
        if cfg.opt_eps is not None:
            opt_kwargs["eps"] = cfg.opt_eps
        if cfg.opt_betas is not None:
            opt_kwargs["betas"] = tuple(cfg.opt_betas)
        if cfg.optimizer.lower() in ("sgd", "momentum", "nesterov", "rmsprop", "rmsproptf"):
            opt_kwargs["momentum"] = cfg.momentum
        self.optimizer = build_optimizer(self.model, cfg.optimizer, cfg.lr, cfg.weight_decay,
                                         **opt_kwargs)
        self.scheduler = build_scheduler(self.optimizer, cfg.epochs, self.steps_per_epoch,
                                         cfg.warmup_epochs, cfg.warmup_lr, cfg.min_lr, cfg.sched)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.ema = None
        if cfg.ema:
            from timm.utils import ModelEmaV3
            self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=True)
            result.reported_weights = "ema"
        self.mixup = None
        if cfg.mixup > 0 or cfg.cutmix > 0:
            from timm.data import Mixup
            self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                               switch_prob=cfg.mixup_switch_prob,
                               label_smoothing=cfg.label_smoothing,
                               num_classes=self.bundle.num_classes)
            from timm.loss import SoftTargetCrossEntropy
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        else:
            self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

        self.history: list[dict] = []
        if cfg.resume and cfg.checkpoint_dir:
            state = load_checkpoint(cfg.checkpoint_dir)
            if state is not None:
                self._restore(state)
        mode = compile_mode(cfg.compile)
        parallel = ddp.wrap(self.model, self.dist, device) if self.dist else self.model
        self.run_model = torch.compile(parallel, mode=mode) if mode else parallel

    def where(self) -> str:
        """Where the run is, for failure messages: ``epoch 2, step 17`` or a phase name."""
        if self.phase == "train":
            return f"epoch {self.epoch}, step {self.step}"
        if self.phase == "heldout evaluation":
            return f"the held-out evaluation after epoch {self.epoch}"
        return self.phase

    # -- the loop ---------------------------------------------------------------------------

    def fit(self, on_epoch: OnEpoch | None) -> None:
        cfg, result = self.cfg, self.result
        for epoch in range(self.start_epoch, cfg.epochs):
            self.epoch = epoch
            epoch_start = time.perf_counter()
            self.phase = "train"
            metrics = self._train_epoch(epoch)
            self.step, self.phase = None, "heldout evaluation"
            metrics.update(self._evaluate_heldout())
            metrics["epoch_time_s"] = time.perf_counter() - epoch_start
            self.history.append(metrics)
            self._record_progress()
            if cfg.checkpoint_dir and (self.dist is None or self.dist.is_main):
                self.phase = f"saving the checkpoint after epoch {epoch}"
                result.checkpoint = str(save_checkpoint(cfg.checkpoint_dir, self._state()))
            log.info("epoch %d/%d: %s", epoch + 1, cfg.epochs, _fmt(metrics))
            stop = None
            if on_epoch is not None and (self.dist is None or self.dist.is_main):
                try:
                    stop = on_epoch(epoch, dict(metrics))
                except BaseException as exc:  # noqa: BLE001 - re-raised unchanged by train()
                    raise _CallbackRaised(exc) from exc
            if ddp.from_main(bool(stop), self.dist):
                result.stopped_early = epoch + 1 < cfg.epochs
                break
        self.epoch, self.phase = None, "the final val evaluation"
        self._record_progress()
        val = getattr(self.bundle, "val", None)
        if val is not None:
            metrics = evaluate(self._report_model(), val, self.device, self.precision,
                               self.channels_last)
            result.val_top1, result.val_top5, result.val_loss = (metrics["top1"], metrics["top5"],
                                                                 metrics["loss"])

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, device = self.cfg, self.device
        set_epoch = getattr(self.bundle.train, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        self.model.train()
        check_every = 1 if device.type == "cpu" else cfg.sync_every
        pending: list[torch.Tensor] = []
        loss_sum, images, steps = 0.0, 0, 0
        bar = _progress(cfg.progress, self.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}")
        synchronize(device)
        start = time.perf_counter()
        for step, (x, y) in enumerate(self.bundle.train):
            self.step = step
            loss = self._train_step(x, y)
            pending.append(loss.detach())
            images += x.shape[0] * (self.dist.world_size if self.dist else 1)
            steps += 1
            if len(pending) >= check_every:
                loss_sum += self._check_losses(pending, epoch, step)
                pending = []
                bar.set_postfix(loss=f"{loss_sum / steps:.4f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}", refresh=False)
            bar.update()
        if steps == 0:
            raise DataError("the training split yielded no batches: check data.per_class, "
                            "data.classes and train.batch_size")
        if pending:
            loss_sum += self._check_losses(pending, epoch, steps - 1)
        synchronize(device)
        train_time = time.perf_counter() - start
        bar.close()
        return {"epoch": epoch, "train_loss": loss_sum / steps,
                "lr": float(self.optimizer.param_groups[0]["lr"]), "steps": steps,
                "train_images": images, "train_time_s": train_time,
                "images_per_s": images / train_time if train_time > 0 else float("nan")}

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        target: torch.Tensor = y
        if self.mixup is not None:
            x, target = self._mix(x, y)
        with autocast(self.device, self.precision):
            loss = self.criterion(self.run_model(x), target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.cfg.clip_grad))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.global_step += 1
        self.scheduler.step_update(num_updates=self.global_step)
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)
        return loss

    def _mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] % 2 == 0:
            return self.mixup(x, y)
        # timm's Mixup pairs images by flipping the batch, so it needs an even batch; a ragged
        # last batch is trained unmixed with the same (smoothed) soft targets.
        from timm.data.mixup import mixup_target
        return x, mixup_target(y, self.bundle.num_classes, lam=1.0,
                               smoothing=self.cfg.label_smoothing)

    def _check_losses(self, pending: list[torch.Tensor], epoch: int, last_step: int) -> float:
        """Sum of the pending losses; raise ``LossNotFinite`` naming the first bad step."""
        values = ddp.average(torch.stack(pending).float(), self.dist).cpu()
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0])
            step = last_step - len(pending) + 1 + i
            global_step = self.global_step - len(pending) + i
            raise LossNotFinite(
                f"loss became {values[i].item()} at epoch {epoch}, step {step} (global step "
                f"{global_step}); try a lower train.lr, train.clip_grad, or amp=bf16 instead of fp16",
                epoch, step)
        return float(values.double().sum())

    def _evaluate_heldout(self) -> dict[str, float]:
        out: dict[str, float] = {}
        heldout = getattr(self.bundle, "heldout", None)
        if heldout is None or _length(heldout, default=1) == 0:
            return out
        m = evaluate(self.run_model, heldout, self.device, self.precision, self.channels_last)
        if not math.isfinite(m["loss"]):
            # The last update can leave non-finite weights behind a finite training loss; an
            # accuracy measured with them is not a measurement.
            raise LossNotFinite(
                f"held-out loss became {m['loss']} after epoch {self.epoch}: the weights "
                f"diverged; try a lower train.lr or train.clip_grad", self.epoch, None)
        out.update(heldout_top1=m["top1"], heldout_top5=m["top5"], heldout_loss=m["loss"])
        if self.ema is not None:
            m = evaluate(self.ema.module, heldout, self.device, self.precision, self.channels_last)
            out.update(ema_heldout_top1=m["top1"], ema_heldout_top5=m["top5"],
                       ema_heldout_loss=m["loss"])
        return out

    def _report_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.run_model

    def _record_progress(self) -> None:
        result = self.result
        result.history = list(self.history)
        result.epochs_completed = len(self.history)
        if not self.history:
            return
        last = self.history[-1]
        prefix = "ema_" if self.ema is not None else ""
        result.heldout_top1 = last.get(prefix + "heldout_top1")
        result.heldout_top5 = last.get(prefix + "heldout_top5")
        result.train_time_s = sum(h["train_time_s"] for h in self.history)
        images = sum(h["train_images"] for h in self.history)
        result.images_per_s = images / result.train_time_s if result.train_time_s > 0 else None

    # -- checkpoints ------------------------------------------------------------------------

    def _fingerprint(self) -> dict[str, Any]:
        settings = {k: v for k, v in self.cfg.to_dict().items() if k not in _RESUME_NEUTRAL}
        return {"spec": self.result.spec, "train": settings, "data": self.result.data_manifest}

    def _state(self) -> dict[str, Any]:
        state = {
            "fingerprint": self._fingerprint(),
            "epoch": len(self.history),
            "global_step": self.global_step,
            "history": self.history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": capture_rng_state(),
        }
        generator = _loader_generator(self.bundle.train)
        if generator is not None:
            state["loader_rng"] = generator.get_state()
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        saved, current = state["fingerprint"], self._fingerprint()
        if saved != current:
            diffs = _diff(saved, current)
            raise UserError(f"cannot resume from {self.cfg.checkpoint_dir}: the checkpoint was "
                            f"made with different settings ({diffs}); use the same settings or a "
                            f"new train.checkpoint_dir")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        restore_rng_state(state["rng"])
        generator = _loader_generator(self.bundle.train)
        if generator is not None and "loader_rng" in state:
            generator.set_state(state["loader_rng"])
        self.history = list(state["history"])
        self.global_step = int(state["global_step"])
        self.start_epoch = int(state["epoch"])
        self.result.resumed_from_epoch = self.start_epoch
        self._record_progress()
        log.info("resumed from %s after epoch %d", self.cfg.checkpoint_dir, self.start_epoch)


# -- helpers --------------------------------------------------------------------------------

def _data_bundle(data: Any, cfg: TrainConfig, device: torch.device) -> Any:
    if hasattr(data, "train") and hasattr(data, "num_classes"):
        return data
    from mvlab.data import build_data
    return build_data(data, cfg.batch_size, eval_batch_size=cfg.eval_batch_size, device=str(device))


def _build_model(spec: str | nn.Module, bundle: Any, scan_backend: str) -> tuple[nn.Module, str]:
    if isinstance(spec, nn.Module):
        return spec, str(getattr(spec, "spec", None) or type(spec).__name__)
    model = make_model(spec, bundle.num_classes, _in_chans(bundle), scan_backend)
    return model, str(getattr(model, "spec", None) or spec)


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


def _loader_generator(loader: Any) -> torch.Generator | None:
    # A DataLoader with its own generator draws each epoch's order from it, not from the global
    # RNG; it has to be checkpointed too for a resumed run to see the same batches.
    generator = getattr(loader, "generator", None)
    return generator if isinstance(generator, torch.Generator) else None


def _progress(enabled: bool, total: int, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def _diff(saved: dict, current: dict, prefix: str = "") -> str:
    keys = sorted(set(saved) | set(current))
    out = []
    for key in keys:
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _diff(a, b, f"{prefix}{key}.")
            if inner:
                out.append(inner)
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return "; ".join(out)


def _fmt(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in metrics.items())
