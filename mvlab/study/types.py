"""The study package's types: what a validated study file is, what one trial runs, and what the
sweep's processes hand each other.

Every other module of ``mvlab.study`` imports these and none of them imports back, so the
package's imports run one way (tests/test_study_structure.py checks it). Plain dataclasses,
no torch, Optuna or MLflow: ``mvlab sweep --check`` needs them."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mvlab import records

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

StudyKind = Literal["grid", "population", "optimize"]
Point = dict[str, Any]  # a knob's value per key, e.g. {"pattern": "last_half", "seed": 1}
# The most trials one study may plan (grid points x seeds, population n x seeds, n_trials):
# the schema refuses more, and the space refuses a grid that multiplies out to more.
MAX_TRIALS = 100_000


@dataclass(frozen=True)
class Dimension:
    """One search-space axis. ``key`` is a grammar option (``s3.pattern``) or ``train.lr``."""

    key: str
    kind: Literal["categorical", "int", "float"]
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    where: str = ""

    @property
    def target(self) -> Literal["model", "train", "data"]:
        head = self.key.split(".", 1)[0]
        return head if head in ("train", "data") else "model"  # type: ignore[return-value]

    @property
    def field_name(self) -> str:
        return self.key.split(".", 1)[1] if self.target != "model" else self.key


@dataclass(frozen=True)
class BenchSettings:
    """How the throughput objective is measured (before training, so it is cheap)."""

    mode: Literal["infer", "train"] = "infer"
    batch_size: int = 16
    img_size: int | None = None  # None: the data resolution
    device: str = "cpu"
    precision: str = "auto"  # fp32 on a CPU, bf16/fp16 autocast on a GPU
    channels_last: bool | None = None  # None: on (CUDA and CPU alike)
    compile: bool = False
    warmup: int = 2
    steps: int = 5
    repeats: int = 1
    threads: int | None = None  # CPU threads; None: train.threads, else 1
    # auto: thread CPU time on a CPU with 1 thread (process CPU time with more), wall on a GPU
    # (mvlab.training.bench.resolve_clock)
    clock: Literal["auto", "thread_cpu", "process_cpu", "wall"] = "auto"


@dataclass(frozen=True)
class EarlyStop:
    """Prune a trial after ``after_epoch`` epochs when a finished trial is at least as fast and
    more than ``margin`` top-1 points more accurate at the same epoch (docs/studies.md)."""

    after_epoch: int = 1
    margin: float = 5.0  # top-1 percentage points


@dataclass(frozen=True)
class Sequential:
    """Seeds added in stages (docs/studies.md, "Sequential seeds"): once the study's own seeds
    have run, every configuration whose verdict against ``analysis.reference`` is undetermined
    gets ``step`` more seeds (and the reference with it), until each comparison has a verdict
    or ``max_seeds`` seeds."""

    step: int = 2
    max_seeds: int = 12

    def looks(self, first: int) -> int:
        """How often the verdicts may be decided on, with ``first`` seeds in the first stage."""
        return 1 + -(-max(0, self.max_seeds - first) // self.step)


GATE_EXPECTATIONS = ("differ", "better", "resolved", "not_worse")


@dataclass(frozen=True)
class Control:
    """A positive control of a calibration gate: configuration ``a`` (knob values) against ``b``,
    paired over seeds. ``expect``: ``differ`` (a verdict of better or worse), ``better`` (a better
    than b), ``resolved`` (any verdict but undetermined: a difference or an equivalence shown) or
    ``not_worse`` (a shown at most the equivalence margin below b, a one-sided test)."""

    a: dict[str, Any]
    b: dict[str, Any]
    expect: str = "differ"
    name: str = ""


@dataclass(frozen=True)
class GateSettings:
    """What a proxy must show before any ranking on it is believed (docs/studies.md,
    "Calibration gate"): every control's expected verdict, every configuration's mean accuracy
    inside ``band`` (top-1 %, neither chance nor saturation), every seed off the plateau (checked
    whenever the trials record it, band or not), and split-half reliability at least the study's
    ``reliability_threshold``. ``band_exempt``: configurations (knob values; every configuration
    they match) the band lists but does not judge, each a side of a control: a ceiling hides
    differences among the configurations at it, not a control's difference from a network
    below it."""

    controls: tuple[Control, ...] = ()
    band: tuple[float, float] | None = None
    reliability: bool = True  # False: a study of two configurations, whose ranking is moot
    band_exempt: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class AnalysisSettings:
    """How ``mvlab report`` judges the study (docs/studies.md, "Statistics"): every configuration
    against ``reference`` (knob values, e.g. {pattern: last_half, branch: on}) with TOST at
    ``equivalence_margin`` points; rankings below ``reliability_threshold`` split-half
    reliability are marked unreliable; ``trend`` is an ordered hypothesis, one knob's values
    worst-predicted first, the other knobs at the reference's values (Page's L); ``gate``: the
    calibration gate's criteria (``GateSettings``). A study that adds seeds while comparisons are
    undetermined (``Sequential``) decides up to ``looks`` times, so each look is tested at
    ``alpha / looks``. ``noise``: ``paired`` judges each comparison by the spread of its own
    per-seed differences; ``pooled`` by one noise level for the study, which assumes every
    configuration is equally noisy across seeds (``schema.NOISE_MODELS``)."""

    reference: dict[str, Any] = field(default_factory=dict)
    equivalence_margin: float = 0.5
    reliability_threshold: float = 0.8
    trend: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    gate: GateSettings | None = None
    alpha: float = 0.05  # family-wise error of the verdicts (Holm across comparisons)
    looks: int = 1  # set from study.sequential: verdicts at alpha / looks (Bonferroni)
    noise: str = "paired"  # each comparison's own seed noise, or "pooled": one level for all


@dataclass(frozen=True)
class StudyConfig:
    """A validated study. ``data`` and ``train`` are the resolved DataConfig / TrainConfig."""

    name: str
    source: str
    model: str  # canonical spec string of the base model
    model_text: str  # as written (a preset name or spec)
    data: Any
    train: Any
    kind: StudyKind
    sampler: str
    space: tuple[Dimension, ...]
    seeds: tuple[int, ...] = (0,)
    n: int | None = None
    n_trials: int | None = None
    band: dict[str, tuple[float, float]] = field(default_factory=dict)
    sampler_seed: int = 0
    population_size: int | None = None
    stale_after_s: float = 600.0  # trials beat every minute (storage.heartbeat)
    objectives: tuple[tuple[str, str], ...] = records.DEFAULT_OBJECTIVES
    constraints: dict[str, float] = field(default_factory=dict)
    bench: BenchSettings = BenchSettings()
    early_stop: EarlyStop | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    workdir: Path = Path("studies")
    description: str = ""
    analysis: AnalysisSettings = AnalysisSettings()
    sequential: Sequential | None = None

    @property
    def directions(self) -> list[str]:
        return [d for _, d in self.objectives]

    @property
    def objective_names(self) -> list[str]:
        return [m for m, _ in self.objectives]

    def fidelity(self) -> dict[str, Any]:
        """Settings that must not change while a study is resumed (they change what a trial
        measures). The search space may narrow, and int/float ranges may grow; a categorical
        knob's choices are fixed at the study's first trial (Optuna), which ``mvlab sweep``
        checks when it prepares."""
        return {
            "model": self.model,
            "data": jsonable(dataclasses.asdict(self.data)),
            "train": jsonable(dataclasses.asdict(self.train)),
            "kind": self.kind,
            "objectives": [list(o) for o in self.objectives],
            "bench": dataclasses.asdict(self.bench),
        }

    def fidelity_hash(self) -> str:
        text = json.dumps(self.fidelity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def jsonable(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples as lists, paths and the like as strings)."""
    return json.loads(json.dumps(value, default=str))


@dataclass(frozen=True)
class TrialPlan:
    """Everything one trial trains and measures."""

    params: Point
    spec: str  # canonical grammar string
    data: Any  # DataConfig
    train: Any  # TrainConfig
    seed: int

    @property
    def label(self) -> str:
        """Short human label: the varied values, e.g. ``pattern=last_half branch=off seed=1``."""
        return records.point_label(self.params)


@dataclass(frozen=True)
class Collapsed:
    """A point dropped because an earlier point trains the same thing."""

    point: Point
    same_as: Point
    reason: str


@dataclass(frozen=True)
class TrainOrder:
    """What torchrun's rank 0 sends the other ranks for each trial: train this, data-parallel
    with me. (None instead of an order: the sweep is over, stop following.)"""

    spec: str
    data: Any  # DataConfig
    train: Any  # TrainConfig


# ------------------------------------------------------------------------------ the sweep
@dataclass
class Progress:
    """Callbacks a trial makes for the display; all optional."""

    on_trial_start: Callable[[int, TrialPlan], None] = lambda number, plan: None
    on_epoch: Callable[[int, int, dict], None] = lambda epoch, epochs, metrics: None
    on_trial_end: Callable[[FrozenTrial], None] = lambda trial: None


@dataclass(frozen=True)
class TrackingTarget:
    """Where runs go: picklable, handed to worker processes."""

    uri: str
    experiment_id: str
    parent_run_id: str | None = None


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
    target: TrackingTarget
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
