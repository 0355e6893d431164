"""The study file: a typed, validated description of one sweep (documented in docs/studies.md).

``load_study(path, overrides)`` reads the YAML, applies ``--set key=value`` overrides, checks
every key and type, resolves the data and training configs, parses the base model and pushes
every search-space choice through the grammar, all before anything trains. Every error names the
file, line and key (or the ``--set`` that caused it) and says how to fix it."""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from mvlab import records
from mvlab.config_fields import closest, coerce, describe, field_types, parse_amount
from mvlab.errors import StudyError, UserError
from mvlab.study.sections import config_class, construct_config
from mvlab.study.types import (
    GATE_EXPECTATIONS,
    MAX_TRIALS,
    AnalysisSettings,
    BenchSettings,
    Control,
    Dimension,
    EarlyStop,
    GateSettings,
    Sequential,
    StudyConfig,
    StudyKind,
)
from mvlab.study.yamlsource import (
    KeyPath,
    Located,
    load_located,
    load_located_file,
    load_value,
)
from mvlab.training.config import BENCH_LIMITS, bench_limit_error
from mvlab.training.config import RENAMED as TRAIN_RENAMED

KINDS = ("grid", "population", "optimize")
SAMPLERS = {"grid": ("grid",), "population": ("sobol", "random"), "optimize": ("nsga2", "tpe")}

# What a trial can report; objectives and constraints pick from these.
METRICS = records.METRICS
CONSTRAINTS = ("max_params", "max_macs", "max_latency_ms", "min_throughput")
BAND_METRICS = (records.PARAMS, records.MACS)

TOP_KEYS = ("name", "description", "model", "data", "train", "study", "space", "objectives",
            "constraints", "bench", "early_stop", "storage", "tracking", "workdir", "analysis")
ANALYSIS_KEYS = ("reference", "equivalence_margin", "reliability_threshold", "trend", "gate",
                 "alpha", "noise")
NOISE_MODELS = ("paired", "pooled")  # analysis.noise: docs/studies.md, "Statistics"
GATE_KEYS = ("controls", "band", "band_exempt", "reliability")
CONTROL_KEYS = ("a", "b", "expect", "name")
STUDY_KEYS = ("kind", "seeds", "sampler", "sampler_seed", "n", "n_trials", "band",
              "population_size", "stale_after_s", "sequential")
SEQUENTIAL_KEYS = ("step", "max_seeds")
MAX_SEEDS = 100
TRACKING_KEYS = ("uri", "experiment")

RESERVED_PARAMS = (records.SEED_PARAM,)
# Size limits of a study (docs/studies.md, Limits); the grammar bounds the model, DataConfig
# the images, training.config the bench: section (BENCH_LIMITS, shared with `mvlab bench`).
MAX_POPULATION = 10_000  # population n: each is sampled and checked by `--check`
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ------------------------------------------------------------------------------------ loading
def load_study(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Read, override and validate a study file. Raises StudyError with file:line: key."""
    located = load_located_file(path)
    return _validate(apply_overrides(located, overrides))


def load_study_text(text: str, source: str = "<study>",
                    overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """``load_study`` for text already in memory (tests, notebooks)."""
    return _validate(apply_overrides(load_located(text, source), overrides))


def apply_overrides(located: Located, overrides: list[str] | tuple[str, ...]) -> Located:
    """Apply ``key=value`` overrides (``train.epochs=30``, ``space.s3.pattern=[a, b]``).

    The value is read as YAML, so lists and numbers work. Everything after ``space.`` is one
    search-space key, since those contain dots themselves."""
    if not isinstance(located.value, dict):
        raise StudyError(f"{located.where(())}: a study file is a mapping of keys "
                         f"({', '.join(TOP_KEYS)})")
    for item in overrides:
        if "=" not in item:
            raise StudyError(f"--set {item}: expected KEY=VALUE, e.g. --set train.epochs=30")
        dotted, text = item.split("=", 1)
        dotted = dotted.strip()
        value = load_value(text, f"--set {dotted}") if text.strip() else None
        head, _, rest = dotted.partition(".")
        if head not in TOP_KEYS:
            raise StudyError(f"--set {dotted}: unknown key {head!r}{closest(head, TOP_KEYS)}; "
                             f"top-level keys are {', '.join(TOP_KEYS)}")
        path: KeyPath = (head, rest) if rest else (head,)
        target = located.value
        for part in path[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[path[-1]] = value
        for inside in [k for k in located.where_by_path if k[:len(path)] == path]:
            del located.where_by_path[inside]  # the file's lines no longer hold these values
        located.where_by_path[path] = f"--set {dotted}"
    return located


# --------------------------------------------------------------------------------- validation
# Keys an older mvlab wrote, by section: a study file that still uses one gets the new name.
_RENAMED: dict[tuple, dict[str, str]] = {("train",): TRAIN_RENAMED}


class _Checker:
    def __init__(self, located: Located):
        self.located = located

    def fail(self, path: KeyPath, message: str) -> StudyError:
        dotted = ".".join(str(p) for p in path) if path else "(top)"
        if not dotted.isprintable():  # a key holding '\r' or '\n' would split the one line
            dotted = repr(dotted)
        where = self.located.where(path)
        # Name the key once: most messages start with it ("data.hflip=2: ..."), and so does
        # "--set data.hflip", which then needs no second copy of it.
        given = where == f"--set {dotted}"
        if re.match(rf"{re.escape(dotted)}(?![\w.])", message):
            return StudyError(f"--set {message}" if given else f"{where}: {message}")
        return StudyError(f"{where}: {message}" if given else f"{where}: {dotted}: {message}")

    def mapping(self, value: Any, path: KeyPath, known: tuple[str, ...] | None) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping of keys, got {value!r}")
        if known is not None:
            for key in value:
                if key in _RENAMED.get(path, {}):
                    raise self.fail((*path, key), f"renamed to {_RENAMED[path][key]!r} "
                                                  f"(same values): rename the key")
                if key not in known:
                    raise self.fail((*path, key), f"unknown key{closest(key, known)}; "
                                                  f"known keys: {', '.join(known)}")
        return value

    def typed(self, value: Any, tp: Any, path: KeyPath) -> Any:
        try:
            result = coerce(value, tp)
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None
        if not _finite(result):
            raise self.fail(path, f"expected finite numbers, got {value!r}")
        if isinstance(result, str) and "\x00" in result:  # no name, path or URL holds one
            raise self.fail(path, f"{result!r} holds a NUL character; remove it")
        return result

    def seed(self, value: Any, path: KeyPath) -> int:
        from mvlab.data.config import MAX_SEED

        seed = self.typed(value, int, path)
        if not 0 <= seed <= MAX_SEED:
            raise self.fail(path, f"a seed must be in 0..{MAX_SEED}, got {seed}")
        return seed


def _finite(value: Any) -> bool:
    """False when ``value`` is, or holds, a NaN or an infinity (nothing in a study means one)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


def _validate(located: Located) -> StudyConfig:
    check = _Checker(located)
    raw = check.mapping(located.value, (), TOP_KEYS)

    if "name" not in raw:
        raise check.fail(("name",), "missing: every study needs a name (its folder and MLflow "
                                    "experiment), e.g. name: hybrid_patterns")
    name = check.typed(raw["name"], str, ("name",))
    if not _NAME.match(name):
        raise check.fail(("name",), f"{name!r}: use letters, digits, '_', '-' or '.'")

    model_text = check.typed(raw.get("model", "proxy"), str, ("model",))
    base = _parse_model(check, model_text)

    data = _build_config(check, "data", raw.get("data"))
    train = _build_config(check, "train", raw.get("train"))

    study_raw = check.mapping(raw.get("study"), ("study",), STUDY_KEYS)
    kind = check.typed(study_raw.get("kind", "grid"), StudyKind, ("study", "kind"))
    sampler = check.typed(study_raw.get("sampler", SAMPLERS[kind][0]), str, ("study", "sampler"))
    if sampler not in SAMPLERS[kind]:
        raise check.fail(("study", "sampler"), f"{sampler!r} does not fit kind {kind!r}; use "
                                               f"{' or '.join(SAMPLERS[kind])}")
    seeds = study_raw.get("seeds", [0])
    seeds = tuple(check.typed(seeds if isinstance(seeds, list) else [seeds], list[int],
                              ("study", "seeds")))
    for index, seed in enumerate(seeds):
        check.seed(seed, ("study", "seeds", index))
    if not seeds or len(set(seeds)) != len(seeds):
        raise check.fail(("study", "seeds"), "needs at least one seed and no repeats, e.g. [0, 1]")
    n = study_raw.get("n")
    n_trials = study_raw.get("n_trials")
    if kind == "population":
        if n is None:
            raise check.fail(("study", "n"), "a population study needs n: the number of sampled "
                                             "models, e.g. n: 32")
        n = check.typed(n, int, ("study", "n"))
    elif n is not None:
        raise check.fail(("study", "n"), f"only population studies take n; for {kind} "
                                         f"{'use n_trials' if kind == 'optimize' else 'remove it'}")
    if kind == "optimize":
        if n_trials is None:
            raise check.fail(("study", "n_trials"), "an optimize study needs n_trials, e.g. 40")
        n_trials = check.typed(n_trials, int, ("study", "n_trials"))
    elif n_trials is not None:
        raise check.fail(("study", "n_trials"), f"only optimize studies take n_trials; a {kind} "
                         f"study's size comes from its {'space' if kind == 'grid' else 'n'}")
    for key, value in (("n", n), ("n_trials", n_trials)):
        if value is not None and value < 1:
            raise check.fail(("study", key), "must be at least 1")
    if n is not None and (n > MAX_POPULATION or n * len(seeds) > MAX_TRIALS):
        raise check.fail(("study", "n"), f"n={n} with {len(seeds)} seed(s) is above the limit "
                                         f"of {MAX_POPULATION:,} models and {MAX_TRIALS:,} trials")
    if n_trials is not None and n_trials > MAX_TRIALS:
        raise check.fail(("study", "n_trials"), f"n_trials={n_trials} is above the limit of "
                                                f"{MAX_TRIALS:,}")
    population_size = check.typed(study_raw.get("population_size"), int | None,
                                  ("study", "population_size"))
    if population_size is not None and (kind, sampler) != ("optimize", "nsga2"):
        raise check.fail(("study", "population_size"), "only the nsga2 sampler of an optimize "
                                                       "study takes a population_size; remove it")
    if population_size is not None and not 2 <= population_size <= MAX_TRIALS:
        raise check.fail(("study", "population_size"), f"NSGA-II needs 2..{MAX_TRIALS:,} "
                                                       f"models per generation, got "
                                                       f"{population_size}")
    band = _band(check, study_raw.get("band"), kind)

    space = _space(check, raw.get("space"), kind)
    objectives = _objectives(check, raw.get("objectives"))
    constraints = _constraints(check, raw.get("constraints"))
    bench = _bench(check, raw.get("bench"))
    early_stop = _early_stop(check, raw.get("early_stop", "auto"), kind, train)
    _check_heldout_split(check, data, objectives, early_stop)
    _check_curriculum(check, data, train, space, early_stop)
    analysis = _analysis(check, raw.get("analysis"), space)
    sequential = _sequential(check, study_raw.get("sequential"), kind, seeds, analysis)
    if sequential is not None:
        analysis = dataclasses.replace(analysis, looks=sequential.looks(len(seeds)))
    tracking = check.mapping(raw.get("tracking"), ("tracking",), TRACKING_KEYS)
    workdir_text = check.typed(raw.get("workdir", records.WORKDIR.format(study=name)), str, ("workdir",))

    config = StudyConfig(
        name=name,
        source=located.source,
        model=_format(base),
        model_text=model_text,
        data=data,
        train=train,
        kind=kind,
        sampler=sampler,
        space=space,
        seeds=seeds,
        n=n,
        n_trials=n_trials,
        band=band,
        sampler_seed=check.seed(study_raw.get("sampler_seed", 0), ("study", "sampler_seed")),
        population_size=population_size,
        stale_after_s=_stale_after(check, study_raw.get("stale_after_s", 600.0)),
        objectives=objectives,
        constraints=constraints,
        bench=bench,
        early_stop=early_stop,
        storage=check.typed(raw.get("storage"), str | None, ("storage",)),
        tracking_uri=check.typed(tracking.get("uri"), str | None, ("tracking", "uri")),
        experiment=check.typed(tracking.get("experiment"), str | None, ("tracking", "experiment")),
        workdir=Path(workdir_text.replace("{name}", name)),
        description=check.typed(raw.get("description", ""), str, ("description",)),
        analysis=analysis,
        sequential=sequential,
    )
    # Imported here: space.py needs the grammar and this module's types.
    from mvlab.study.space import validate_space
    validate_space(config, fail=check.fail)
    return config


def _parse_model(check: _Checker, text: str) -> Any:
    from mvlab.grammar import parse_spec

    try:
        return parse_spec(text)
    except UserError as exc:
        raise check.fail(("model",), f"not a preset or spec: {exc}") from None


# Another host's trial is failed after this long without a heartbeat (one every
# min(60 s, stale_after_s / 4)): with less, a busy host's late beat or a little clock skew
# fails trials that are alive.
MIN_STALE_AFTER_S = 60.0


def _stale_after(check: _Checker, value: Any) -> float:
    seconds = check.typed(value, float, ("study", "stale_after_s"))
    if not math.isfinite(seconds) or seconds < MIN_STALE_AFTER_S:
        raise check.fail(("study", "stale_after_s"),
                         f"must be a finite number of seconds, at least {MIN_STALE_AFTER_S:g} "
                         f"(a shorter limit fails live trials of busy or clock-skewed hosts), "
                         f"got {value!r}; the default is 600")
    return seconds


def _format(spec: Any) -> str:
    from mvlab.grammar import format_spec

    return format_spec(spec)


def _build_config(check: _Checker, section: str, value: Any) -> Any:
    cls = config_class(section)
    types_ = field_types(cls)
    raw = check.mapping(value, (section,), tuple(types_))
    kwargs = {key: check.typed(v, types_[key], (section, key)) for key, v in raw.items()}
    return construct_config(cls, kwargs, lambda key, msg: check.fail(
        (section, key) if key else (section,), msg), section)


def _band(check: _Checker, value: Any, kind: str) -> dict[str, tuple[float, float]]:
    raw = check.mapping(value, ("study", "band"), BAND_METRICS)
    if raw and kind != "population":
        raise check.fail(("study", "band"), "only population studies sample under a band; "
                                            "use constraints: for grid/optimize studies")
    band = {}
    for metric, bounds in raw.items():
        path = ("study", "band", metric)
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise check.fail(path, f"expected [low, high], e.g. [0.1G, 0.3G], got {bounds!r}")
        try:
            low, high = (parse_amount(b) for b in bounds)
        except ValueError as exc:
            raise check.fail(path, str(exc)) from None
        if not 0 <= low < high:
            raise check.fail(path, f"needs 0 <= low < high, got {bounds}")
        band[metric] = (low, high)
    return band


def _space(check: _Checker, value: Any, kind: str) -> tuple[Dimension, ...]:
    from mvlab.grammar import is_option_key, option_keys

    raw = check.mapping(value, ("space",), None)
    dims = []
    for key, spec in raw.items():
        path = ("space", key)
        where = check.located.where(path)
        key = str(key)
        if key in RESERVED_PARAMS:
            raise check.fail(path, "seeds are set with study.seeds, not in the space")
        head = key.split(".", 1)[0]
        if head in ("train", "data"):
            types_ = field_types(config_class(head))
            name = key.split(".", 1)[1] if "." in key else ""
            if name not in types_:
                raise check.fail(path, f"unknown {head} option {name!r}"
                                       f"{closest(name, types_)}")
        elif not is_option_key(key):  # the grammar's own list: what set_option takes
            known = option_keys()
            unprefixed = [k for k in known if "." not in k]
            raise check.fail(path, f"unknown search-space key{closest(key, known)}; use a "
                                   f"grammar option ({', '.join(unprefixed)}, "
                                   f"s<1-4>.<stage key>, s<1-4>.b<block>.<mixer key>) or "
                                   f"train.<option> / data.<option>")
        if isinstance(spec, list):
            if not spec:
                raise check.fail(path, "an empty list of choices; give at least one")
            choices = tuple(_choice(check, (*path, i), key, c) for i, c in enumerate(spec))
            if len(set(map(repr, choices))) != len(choices):
                raise check.fail(path, f"repeated choice in {list(choices)}")
            dims.append(Dimension(key, "categorical", choices=choices, where=where))
            continue
        if not isinstance(spec, dict):
            raise check.fail(path, "expected a list of choices, or {int: [lo, hi]} / "
                                   "{float: [lo, hi], log: true}")
        range_kind = [k for k in ("int", "float") if k in spec]
        if len(range_kind) != 1:
            raise check.fail(path, "a range needs exactly one of int: [lo, hi] or float: [lo, hi]")
        rk = range_kind[0]
        check.mapping(spec, path, (rk, "log", "step"))
        bounds = spec[rk]
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise check.fail((*path, rk), f"expected [low, high], got {bounds!r}")
        low, high = (check.typed(b, int if rk == "int" else float, (*path, rk)) for b in bounds)
        log = check.typed(spec.get("log", False), bool, (*path, "log"))
        step = check.typed(spec.get("step"), (int if rk == "int" else float) | None,
                           (*path, "step"))
        if not low < high:
            raise check.fail((*path, rk), f"needs low < high, got [{low}, {high}]")
        if log and low <= 0:
            raise check.fail((*path, "log"), "a log range needs low > 0")
        if log and step not in (None, 1):
            raise check.fail((*path, "step"), "log ranges take no step")
        if kind == "grid":
            raise check.fail(path, "a grid needs a list of choices for every key; ranges are "
                                   "for population and optimize studies")
        dims.append(Dimension(key, rk, low=low, high=high, log=log, step=step, where=where))
    if not dims and kind != "grid":
        raise check.fail(("space",), f"a {kind} study needs a search space")
    return tuple(dims)


def _choice(check: _Checker, path: KeyPath, key: str, value: Any) -> Any:
    """A categorical choice in the form Optuna stores and people read: scalars stay scalars,
    lists (``depths``) become "1,3,8,4", YAML's on/off booleans become "on"/"off"."""
    if isinstance(value, list):
        if any(isinstance(v, (list, dict)) for v in value):
            raise check.fail(path, f"nested lists are not a choice: {value!r}")
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        raise check.fail(path, f"a choice must be a value, got a mapping {value!r}")
    if isinstance(value, bool) and key.split(".")[-1] in ("branch",):
        return "on" if value else "off"
    if not _finite(value):
        raise check.fail(path, f"expected a finite number, got {value!r}")
    return value


def _objectives(check: _Checker, value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return records.DEFAULT_OBJECTIVES
    raw = check.mapping(value, ("objectives",), METRICS)
    if not raw:
        raise check.fail(("objectives",), "needs at least one metric, e.g. heldout_top1: maximize")
    out = []
    for metric, direction in raw.items():
        direction = check.typed(direction, Literal["maximize", "minimize"],
                                ("objectives", metric))
        out.append((metric, direction))
    return tuple(out)


def _constraints(check: _Checker, value: Any) -> dict[str, float]:
    if isinstance(value, dict):
        for key in value:
            if "flop" in str(key).lower():
                raise check.fail(("constraints", key), "use max_macs: the paper's FLOPs column "
                                                       "counts multiply-accumulates (MACs)")
    raw = check.mapping(value, ("constraints",), CONSTRAINTS)
    out = {}
    for key, amount in raw.items():
        try:
            out[key] = parse_amount(amount)
        except ValueError as exc:
            raise check.fail(("constraints", key), str(exc)) from None
        if not (math.isfinite(out[key]) and out[key] > 0):
            raise check.fail(("constraints", key), f"needs a finite number > 0, got {amount!r}")
    return out


def _bench(check: _Checker, value: Any) -> BenchSettings:
    types_ = field_types(BenchSettings)
    raw = check.mapping(value, ("bench",), tuple(types_))
    kwargs = {k: check.typed(v, types_[k], ("bench", k)) for k, v in raw.items()}
    for key, (low, high) in BENCH_LIMITS.items():
        if kwargs.get(key) is not None and not low <= kwargs[key] <= high:
            raise check.fail(("bench", key), f"must be in {low}..{high:,}, got {kwargs[key]}")
    why = kwargs.get("img_size") is not None and bench_limit_error("img_size", kwargs["img_size"])
    if why:
        raise check.fail(("bench", "img_size"), f"{why} (or null: the data resolution), got "
                                                f"{kwargs['img_size']}")
    return BenchSettings(**kwargs)


def _check_heldout_split(check: _Checker, data: Any, objectives: tuple[tuple[str, str], ...],
                         early_stop: EarlyStop | None) -> None:
    """With ``data.heldout_fraction: 0`` there is no held-out split: a held-out objective would
    be None in every trial (each one FAILs after training) and early stopping would have
    nothing to compare."""
    if getattr(data, "heldout_fraction", None) != 0:
        return
    needs = [m for m, _ in objectives if m in (records.HELDOUT_TOP1, records.HELDOUT_TOP5)]
    if early_stop is not None:
        needs.append("early_stop (it compares held-out top-1)")
    if needs:
        raise check.fail(("data", "heldout_fraction"),
                         f"0 leaves no held-out split, but {', '.join(needs)} needs one; set "
                         f"data.heldout_fraction (e.g. 0.1), or use val_top1 objectives and "
                         f"early_stop: false")


def _check_curriculum(check: _Checker, data: Any, train: Any, space: tuple[Dimension, ...],
                      early_stop: EarlyStop | None) -> None:
    """Stages that fill every epoch would leave the task's own images untrained, in any trial;
    and early stopping judged during the stages would compare scores nothing has trained for."""
    from mvlab.data.config import curriculum_error
    from mvlab.study.space import probe_values

    stage_epochs = getattr(data, "curriculum_epochs", 0)
    if not stage_epochs:
        return
    where, fewest = ("data", "curriculum"), train.epochs
    for dim in space:
        if dim.key == "train.epochs":
            low = min(int(v) for v in probe_values(dim))
            if low < fewest:
                where, fewest = ("space", dim.key), low
    error = curriculum_error(stage_epochs, fewest)
    if error:
        raise check.fail(where, error)
    if early_stop is not None and early_stop.after_epoch <= stage_epochs:
        raise check.fail(("early_stop", "after_epoch"),
                         f"{early_stop.after_epoch} falls inside data.curriculum's "
                         f"{stage_epochs} epoch(s), where held-out scores say nothing yet; "
                         f"set early_stop.after_epoch above {stage_epochs}, or early_stop: false")


def _early_stop(check: _Checker, value: Any, kind: str, train: Any) -> EarlyStop | None:
    # Default: on for optimize studies only. Ablation grids and EDF populations need every
    # cell trained to the end, or their tables and EDFs are biased.
    if value == "auto":
        value = {} if kind == "optimize" else None
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    types_ = field_types(EarlyStop)
    raw = check.mapping(value, ("early_stop",), tuple(types_))
    stop = EarlyStop(**{k: check.typed(v, types_[k], ("early_stop", k)) for k, v in raw.items()})
    epochs = getattr(train, "epochs", None)
    if stop.margin < 0:
        raise check.fail(("early_stop", "margin"), f"top-1 points, must be >= 0, got "
                                                   f"{stop.margin}")
    if stop.after_epoch < 1 or (epochs is not None and stop.after_epoch >= epochs):
        raise check.fail(("early_stop", "after_epoch"),
                         f"must be between 1 and train.epochs - 1 ({epochs}); "
                         f"or set early_stop: false")
    return stop


def _analysis(check: _Checker, value: Any, space: tuple[Dimension, ...]) -> AnalysisSettings:
    raw = check.mapping(value, ("analysis",), ANALYSIS_KEYS)
    knobs = {d.key: d for d in space}

    def knob_value(path: KeyPath, key: str, given: Any) -> Any:
        dim = knobs.get(key)
        if dim is None:
            raise check.fail(path, f"{key!r} is not a knob of this study's space; use one of "
                                   f"{', '.join(knobs) or '(none)'}")
        if dim.kind == "categorical":
            for choice in dim.choices:
                if choice == given or str(choice) == str(given):
                    return choice
            raise check.fail(path, f"{given!r} is not one of the choices of {key}: "
                                   f"{', '.join(map(str, dim.choices))}")
        return given

    reference = {k: knob_value(("analysis", "reference", k), k, v) for k, v in
                 check.mapping(raw.get("reference"), ("analysis", "reference"), None).items()}
    margin = check.typed(raw.get("equivalence_margin", 0.5), float,
                         ("analysis", "equivalence_margin"))
    if not margin > 0:
        raise check.fail(("analysis", "equivalence_margin"), "must be > 0 (top-1 points)")
    threshold = check.typed(raw.get("reliability_threshold", 0.8), float,
                            ("analysis", "reliability_threshold"))
    if not 0 < threshold < 1:
        raise check.fail(("analysis", "reliability_threshold"), "must be between 0 and 1")
    trend_raw = check.mapping(raw.get("trend"), ("analysis", "trend"), None)
    if len(trend_raw) > 1:
        raise check.fail(("analysis", "trend"), "one knob only, e.g. trend: {pattern: [first_half, "
                                                "last_quarter, last_half]} (worst first)")
    trend = {}
    for key, values in trend_raw.items():
        path = ("analysis", "trend", key)
        if not isinstance(values, list) or len(values) < 3:
            raise check.fail(path, "needs a list of at least 3 values, worst-predicted first")
        trend[key] = tuple(knob_value(path, key, v) for v in values)
    gate = _gate(check, raw.get("gate"), knob_value)
    alpha = check.typed(raw.get("alpha", 0.05), float, ("analysis", "alpha"))
    if not 0 < alpha < 0.5:
        raise check.fail(("analysis", "alpha"), "must be between 0 and 0.5 (e.g. 0.05)")
    noise = check.typed(raw.get("noise", "paired"), str, ("analysis", "noise"))
    if noise not in NOISE_MODELS:
        raise check.fail(("analysis", "noise"), f"expected one of {', '.join(NOISE_MODELS)} "
                                                f"(paired: each comparison's own seed noise), "
                                                f"got {noise!r}")
    return AnalysisSettings(reference, margin, threshold, trend, gate, alpha, noise=noise)


def _sequential(check: _Checker, value: Any, kind: str, seeds: tuple[int, ...],
                analysis: AnalysisSettings) -> Sequential | None:
    if value is None:
        return None
    path = ("study", "sequential")
    raw = check.mapping(value, path, SEQUENTIAL_KEYS)
    if kind == "optimize":
        raise check.fail(path, "only grid and population studies add seeds; remove it")
    if not analysis.reference:
        raise check.fail(path, "adds seeds to comparisons with analysis.reference that are "
                               "undetermined: set analysis: reference: {knob: value, ...}")
    step = check.typed(raw.get("step", 2), int, (*path, "step"))
    most = check.typed(raw.get("max_seeds", 12), int, (*path, "max_seeds"))
    if step < 1:
        raise check.fail((*path, "step"), "must be at least 1")
    if not len(seeds) < most <= MAX_SEEDS:
        raise check.fail((*path, "max_seeds"), f"must be above the study's {len(seeds)} seed(s) "
                                               f"and at most {MAX_SEEDS}")
    return Sequential(step, most)


def _gate(check: _Checker, value: Any, knob_value: Callable[[KeyPath, str, Any], Any]
          ) -> GateSettings | None:
    if value is None:
        return None
    raw = check.mapping(value, ("analysis", "gate"), GATE_KEYS)
    band = None
    if raw.get("band") is not None:
        path = ("analysis", "gate", "band")
        band = check.typed(raw["band"], tuple[float, float], path)
        if not 0 <= band[0] < band[1] <= 100:
            raise check.fail(path, f"expected [low, high] top-1 % with 0 <= low < high <= 100, "
                                   f"got {raw['band']!r}")
    items = raw.get("controls") or []
    if not isinstance(items, list):
        raise check.fail(("analysis", "gate", "controls"),
                         "expected a list of {a: {knob: value}, b: {...}, expect: differ}")
    controls = []
    for index, item in enumerate(items):
        path = ("analysis", "gate", "controls", index)
        entry = check.mapping(item, path, CONTROL_KEYS)
        sides = {side: _point(check, entry.get(side), (*path, side), knob_value)
                 for side in ("a", "b")}
        expect = check.typed(entry.get("expect", "differ"), str, (*path, "expect"))
        if expect not in GATE_EXPECTATIONS:
            raise check.fail((*path, "expect"), f"{expect!r}: use one of "
                                                f"{', '.join(GATE_EXPECTATIONS)}")
        name = check.typed(entry.get("name", ""), str, (*path, "name"))
        controls.append(Control(sides["a"], sides["b"], expect, name))
    if not controls and band is None:
        raise check.fail(("analysis", "gate"), "needs controls, a band, or both")
    exempt = _band_exempt(check, raw.get("band_exempt"), band, knob_value)
    sides = [side for control in controls for side in (control.a, control.b)]
    for index, point in enumerate(exempt):
        if point not in sides:  # only a positive control's job is to differ from the rest
            raise check.fail(("analysis", "gate", "band_exempt", index),
                             f"{point} is not a side (a or b) of any control: only a control "
                             "may be exempt from the band; copy its knob values exactly")
    reliability = check.typed(raw.get("reliability", True), bool, ("analysis", "gate",
                                                                   "reliability"))
    return GateSettings(tuple(controls), band, reliability=reliability, band_exempt=exempt)


def _band_exempt(check: _Checker, value: Any, band: tuple[float, float] | None,
                 knob_value: Callable[[KeyPath, str, Any], Any]) -> tuple[dict[str, Any], ...]:
    path = ("analysis", "gate", "band_exempt")
    if value is None:
        return ()
    if band is None:
        raise check.fail(path, "exempts configurations from a band: set analysis.gate.band too")
    if not isinstance(value, list):
        raise check.fail(path, "expected a list of configurations, e.g. [{pattern: conv}]")
    if not value:
        raise check.fail(path, "is empty: drop the key, or name a control's configuration")
    return tuple(_point(check, item, (*path, index), knob_value)
                 for index, item in enumerate(value))


def _point(check: _Checker, value: Any, path: KeyPath,
           knob_value: Callable[[KeyPath, str, Any], Any]) -> dict[str, Any]:
    """A configuration named by its knob values ({pattern: conv}), each checked against the space."""
    knobs = check.mapping(value, path, None)
    if not knobs:
        raise check.fail(path, "needs the knob values of a configuration, e.g. {pattern: conv}")
    return {k: knob_value((*path, k), k, v) for k, v in knobs.items()}


def describe_dimension(dim: Dimension) -> str:
    """One line for --help-like listings: ``s3.pattern: 7 choices``."""
    if dim.kind == "categorical":
        return f"{dim.key}: {len(dim.choices)} choices"
    return f"{dim.key}: {dim.kind} [{dim.low}, {dim.high}]{' log' if dim.log else ''}"


__all__ = ["StudyConfig", "AnalysisSettings", "Dimension", "BenchSettings", "EarlyStop", "load_study",
           "load_study_text", "apply_overrides", "METRICS", "CONSTRAINTS", "KINDS", "describe"]
