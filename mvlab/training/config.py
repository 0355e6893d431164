"""What a proxy run is asked to do (``TrainConfig``) and what it reports (``TrainResult``).

Torch-free: a study file, ``--check`` and the analysis read and validate these without loading
the training stack. ``PRECISIONS`` is the one table of precision names: ``TrainConfig``
validation, ``runtime.resolve_precision`` (the trainer and the benchmark) both read it, so a
value one accepts the other cannot reject.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from mvlab.config_fields import from_mapping
from mvlab.errors import UserError
from mvlab.grammar import NUM_STAGES

# Upper bounds on counts a user types (docs/training.md): past them a run would only allocate or
# loop for hours before failing.
MAX_COUNTS = {"epochs": 100_000, "batch_size": 65_536, "sync_every": 1_000_000, "threads": 1024}

# Bounds on a throughput measurement's settings, the one table for a study's bench: section,
# `mvlab bench` and `mvlab show`: past them a benchmark only allocates or loops for hours.
BENCH_LIMITS = {"batch_size": (1, 65_536), "warmup": (0, 100_000), "steps": (1, 100_000),
                "repeats": (1, 1_000), "threads": (1, 4_096)}
MIN_IMG_SIZE = 8  # below one stem patch a network has no feature map left to measure
MAX_NUM_CLASSES = 1_000_000  # the classifier alone would be a billion weights at width 1024

# The optimiser names train.optimizer accepts: timm 1.0's registry (timm.optim.list_optimizers),
# written out so that a study's --check rejects a typo without importing torch. A test compares
# it with the installed timm, so a timm upgrade that adds or drops a name fails there first.
OPTIMIZERS = frozenset("""
    adabelief adadelta adafactor adafactorbv adafactorbvc adagrad adahessian adam adamax adamc
    adamp adamuon adamw adamwlegacy adan adanw adopt adoptc adoptw bnbadam bnbadam8bit bnbadamw
    bnbadamw8bit bnbademamix bnbademamix8bit bnblion bnblion8bit bnbsgd bnbsgd8bit cadafactor
    cadafactorbv cadafactorbvc cadamc cadamp cadamw cadan cadanw cadopt cadoptc cadoptw clamb
    clambw claprop clion clionc cmars cnadamc cnadamw crmsproptf csgdc csgdp csgdw fusedadam
    fusedadamw fusedlamb fusednovograd fusedsgd kron kronc kronw lamb lambc lambcd lambcw lambw
    laprop lapropc larc lars lion lionc madgrad madgradw mars momentum muon nadam nadamc
    nadamlegacy nadamuon nadamw nesterov nesterovw nlarc nlars nmuon novograd novogradc novogradw
    radabelief radam radamlegacy radamw rmsprop rmsproptf rmsproptfc rmsproptfw sgd sgdc sgdp
    sgdw""".split())


def optimizer_error(name: object) -> str | None:
    """Why ``name`` is not an optimiser mvlab can build (one line naming the valid ones), or
    None when it is one."""
    if isinstance(name, str) and name.lower() in OPTIMIZERS:
        return None
    text = str(name).lower()
    close = sorted(k for k in OPTIMIZERS if text[:3] and text[:3] in k)[:8]
    return (f"train.optimizer={name!r} is not a timm optimizer; try adamw or lamb"
            + (f" (similar: {', '.join(close)})" if close else "")
            + f"; all {len(OPTIMIZERS)}: {' '.join(sorted(OPTIMIZERS))}")


def bench_limit_error(key: str, value: int) -> str | None:
    """Why a benchmark setting (``BENCH_LIMITS``' keys, ``img_size``, ``num_classes``) is out of
    bounds, as the end of one line (``must be in ...``), or None when it is within them."""
    from mvlab.data.config import MAX_RESOLUTION

    if key == "img_size":
        if not MIN_IMG_SIZE <= value <= MAX_RESOLUTION:
            return f"must be in {MIN_IMG_SIZE}..{MAX_RESOLUTION} pixels"
        return None
    if key == "num_classes":
        if not 0 <= value <= MAX_NUM_CLASSES:
            return (f"must be in 0..{MAX_NUM_CLASSES:,} (0: no classifier head, timm's "
                    f"convention)")
        return None
    low, high = BENCH_LIMITS[key]
    return None if low <= value <= high else f"must be in {low}..{high:,}"


# Settings that do not change what a run computes; a checkpoint may be resumed under other values.
RESUME_NEUTRAL = ("device", "threads", "checkpoint_dir", "resume", "progress", "sync_every")

# Every precision name mvlab accepts -> what it means. ``auto`` is decided per device at run
# time (runtime.resolve_precision); the rest are fixed. timm writes ``amp`` for fp16 autocast.
PRECISIONS = {
    "auto": "auto",
    "fp32": "fp32", "float32": "fp32", "none": "fp32",
    "fp16": "fp16", "float16": "fp16", "half": "fp16", "amp": "fp16",
    "bf16": "bf16", "bfloat16": "bf16", "amp_bfloat16": "bf16",
}

# Keys an older mvlab wrote, each with the key that replaced it: a one-line pointer beats
# "unknown option" for a file that worked last month.
RENAMED = {"amp": "precision"}
# Keys added since, with the value that means what an older mvlab did: a study or checkpoint
# recorded before the key existed resumes as if it had been written with that value.
ADDED = {"precise_bn": 0, "early_init_seed": None, "early_init_stages": 2}
MAX_PRECISE_BN = 1_000_000  # images; pycls's default is 8,192
MAX_EARLY_INIT_STAGES = NUM_STAGES - 1  # the run's own seed must still start some stage


def with_current_names(settings: dict[str, Any]) -> dict[str, Any]:
    """Stored settings (a checkpoint's fingerprint, a study's record: ``{"train": {...}, ...}``)
    with the train keys an older mvlab wrote under their new names (a value the new name means
    alike) and the keys added since at the value that means the old behaviour (``ADDED``), so
    the run or study they describe may resume."""
    if "train" not in settings:
        return settings
    train = dict(settings["train"] or {})
    for old, new in RENAMED.items():
        if old in train and new not in train:
            train[new] = train.pop(old)
    for key, value in ADDED.items():
        train.setdefault(key, value)
    return {**settings, "train": train}


def precision_name(value: str | None) -> str:
    """``auto``, ``fp32``, ``fp16`` or ``bf16`` for any name in ``PRECISIONS`` (None: ``auto``);
    ValueError naming the accepted values otherwise."""
    if value is None or value == "":
        return "auto"
    if isinstance(value, str) and value.lower() in PRECISIONS:
        return PRECISIONS[value.lower()]
    aliases = ", ".join(k for k, v in PRECISIONS.items() if k != v)
    raise ValueError(f"precision={value!r}: use auto, fp32, fp16 or bf16 (also accepted: "
                     f"{aliases})")


class TrainConfigError(UserError, ValueError):
    """A training setting that cannot work; the message names the ``train.<key>``."""


@dataclass
class TrainConfig:
    """Everything about how a proxy model is trained (what it is trained on is ``DataConfig``).

    ``precision``: ``auto`` (bf16 on GPUs that have it, else fp16; fp32 on the CPU), ``fp32``,
    ``fp16`` or ``bf16`` (aliases in ``PRECISIONS``). ``channels_last``: ``None`` = on (CUDA and
    CPU). ``compile``: ``False`` or a ``torch.compile`` mode (``True`` = ``default``).
    ``warmup_epochs`` may be fractional. ``ema``: keep an EMA of the weights (timm ModelEmaV3,
    decay warming up to ``ema_decay``); the EMA weights are then the ones reported.
    ``checkpoint_dir``: write ``last.pt`` each epoch and ``result.json`` at the end; with
    ``resume`` the run continues from ``last.pt`` when present. ``threads``: CPU threads for this
    run (``None``: torch's default, one per core); on a machine shared with other jobs ``1`` is
    often fastest. ``sync_every``: how many steps' losses are checked for NaN/inf at once on
    accelerators (each check waits for the device); on the CPU every step is checked.
    ``precise_bn``: before each held-out evaluation (and so the final val one), recompute the
    BatchNorm running statistics over this many training images at the current weights
    (pycls's precise BN; 0: off). While the learning rate is high the running averages lag the
    weights, and a mid-run score can read chance for a network that has learned
    (results/calibration/bn_eval/); at the end of a decayed schedule they agree.
    ``early_init_seed``: when set, the stem and the first ``early_init_stages`` stages (with
    their downsamples) start from the weights this seed gives them, in every run, while the rest
    of the network, dropout, drop-path and mixup still follow ``seed``. At one seed every
    pattern already shares those weights (they are conv stages, built first); a study that fixes
    them makes its seeds vary only what its networks differ in, and its results hold for that
    one early-part initialisation (docs/training.md, results/calibration/transplant/).
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
    precision: str = "auto"
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
    precise_bn: int = 0
    early_init_seed: int | None = None
    early_init_stages: int = 2

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
        if not 0 <= int(self.precise_bn) <= MAX_PRECISE_BN:
            raise bad("precise_bn", f"training images, must be an integer in "
                                    f"0..{MAX_PRECISE_BN:,} (0: off; e.g. 1024)")
        if not 0 <= int(self.early_init_stages) <= MAX_EARLY_INIT_STAGES:
            raise bad("early_init_stages", f"stages after the stem that start from "
                                           f"train.early_init_seed, must be an integer in "
                                           f"0..{MAX_EARLY_INIT_STAGES} (0: the stem only)")
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
        why = optimizer_error(self.optimizer)
        if why is not None:
            raise TrainConfigError(why)
        try:
            precision_name(self.precision)
        except ValueError as exc:
            raise TrainConfigError(f"train.{exc}") from None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict (a study's ``train:`` block, ``--set`` pairs); values are
        coerced to each field's type, unknown keys are an error."""
        for old, new in RENAMED.items():
            if old in values:
                raise TrainConfigError(f"train.{old} is now train.{new} (same values); rename "
                                       f"the key")
        return from_mapping(cls, values, TrainConfigError, "train")

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
