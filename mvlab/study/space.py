"""The search space: from a study's dimensions to concrete trials.

A *point* is a dict of human-readable parameter values (``{"pattern": "last_half", "branch":
"off", "seed": 1}``): what Optuna stores as trial params and what analysis groups by. A point
resolves to a ``TrialPlan``: the canonical spec string plus the DataConfig and TrainConfig it
trains with. Grids enumerate points; populations sample them (Sobol QMC or uniform random)
under an optional params/MACs band; optimize studies let an Optuna sampler suggest them."""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from mvlab import records
from mvlab.config_fields import coerce, field_types
from mvlab.errors import StudyError, UserError
from mvlab.study.sections import construct_config
from mvlab.study.types import MAX_TRIALS, Collapsed, Dimension, Point, StudyConfig, TrialPlan

if TYPE_CHECKING:  # Optuna is imported where a sweep needs it: --check does not
    import optuna
    from optuna.distributions import BaseDistribution

SEED_PARAM = records.SEED_PARAM
MAX_GRID = MAX_TRIALS
MAX_DRAWS = 100_000  # samples a population may draw to fill n under its band (~1 ms each)


# -------------------------------------------------------------------------------- resolution
def resolve_point(config: StudyConfig, params: Point) -> TrialPlan:
    """The spec and configs a point trains with. Raises UserError for an impossible point."""
    from mvlab.grammar import format_spec, set_option

    spec = _base_spec(config.model)
    train_changes: dict[str, Any] = {}
    data_changes: dict[str, Any] = {}
    seed = int(params.get(SEED_PARAM, config.seeds[0]))
    for dim in config.space:
        if dim.key not in params:
            continue
        value = params[dim.key]
        if dim.target == "model":
            spec = set_option(spec, dim.key, value)
        elif dim.target == "train":
            train_changes[dim.field_name] = value
        else:
            data_changes[dim.field_name] = value
    # The trial's seed is a replicate: it sets the initialisation (train.seed) and the training
    # order and augmentation (data.order_seed), while data.seed (subset, held-out split) stays
    # the study's. A study that sets data.order_seed itself keeps that order for every seed.
    if getattr(config.data, "order_seed", None) is None:
        data_changes.setdefault("order_seed", seed)
    train = _replace(config.train, "train", {**train_changes, "seed": seed})
    data = _replace(config.data, "data", data_changes)
    return TrialPlan(params=dict(params), spec=format_spec(spec), data=data, train=train,
                     seed=seed)


# A population draws thousands of points, each resolved like this: the base spec and the config
# field types are the same every time (parsing them was most of the cost).
@functools.lru_cache(maxsize=16)
def _base_spec(text: str) -> Any:
    from mvlab.grammar import parse_spec

    return parse_spec(text)


_field_types = functools.lru_cache(maxsize=16)(field_types)


def _replace(base: Any, section: str, changes: dict[str, Any]) -> Any:
    if not changes:
        return base
    types_ = _field_types(type(base))
    kwargs = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
    for key, value in changes.items():
        try:
            kwargs[key] = coerce(value, types_[key])
        except ValueError as exc:
            raise StudyError(f"{section}.{key}={value!r}: {exc}") from None

    def fail(key: str | None, msg: str) -> StudyError:
        return StudyError(f"{section}.{key}: {msg}" if key else f"{section}: {msg}")

    return construct_config(type(base), kwargs, fail, section)


# -------------------------------------------------------------------------------- validation
def validate_space(config: StudyConfig, fail: Callable[[tuple, str], StudyError]) -> None:
    """Push every choice through the grammar / config classes before anything trains.

    Grids: every model point (the product of model choices) must build. Other kinds: every
    categorical choice and both ends of every range must build on the base model."""
    from mvlab.grammar import parse_spec, set_option

    base = parse_spec(config.model)
    if config.kind == "optimize" and len(config.seeds) > 1:
        raise fail(("study", "seeds"), "an optimize study trains each configuration once; give "
                                       "one seed, and re-run its Pareto front as a grid with "
                                       "more seeds")
    for dim in config.space:
        if dim.target == "model":
            continue
        base_cfg = config.train if dim.target == "train" else config.data
        for value in probe_values(dim):
            try:
                _replace(base_cfg, dim.target, {dim.field_name: value})
            except UserError as exc:
                raise fail(("space", dim.key), f"choice {value!r} is not valid: "
                                               f"{exc}") from None
    model_dims = [d for d in config.space if d.target == "model"]
    if config.kind == "grid":
        total = math.prod(len(d.choices) for d in config.space) * len(config.seeds)
        if total > MAX_GRID:
            raise fail(("space",), f"the grid has {total} trials; narrow it below {MAX_GRID} or "
                                   f"use a population study")
        for combo in itertools.product(*(d.choices for d in model_dims)):
            spec = base
            for dim, value in zip(model_dims, combo, strict=True):
                try:
                    spec = set_option(spec, dim.key, value)
                except UserError as exc:
                    point = ", ".join(f"{d.key}={v}" for d, v in zip(model_dims, combo, strict=True))
                    raise fail(("space", dim.key),
                               f"choice {value!r} is impossible in grid point ({point}): "
                               f"{exc}") from None
        return
    for dim in model_dims:
        for value in probe_values(dim):
            try:
                set_option(base, dim.key, value)
            except UserError as exc:
                raise fail(("space", dim.key), f"choice {value!r} is impossible on the base "
                                               f"model: {exc}") from None
    size = space_size(config)
    if config.kind == "population" and size is not None and size < (config.n or 0):
        raise fail(("study", "n"), f"n={config.n} distinct samples are asked of a space that "
                                   f"holds {size} points; lower n to at most {size}, or widen "
                                   f"the space (use a grid to train every point)")


def probe_values(dim: Dimension) -> tuple[Any, ...]:
    if dim.kind == "categorical":
        return dim.choices
    return (dim.low, dim.high)


def space_size(config: StudyConfig) -> int | None:
    """How many distinct points the space holds, or None when a float range makes it unbounded."""
    size = 1
    for dim in config.space:
        if dim.kind == "categorical":
            size *= len(dim.choices)
        elif dim.kind == "int" and not dim.log:
            size *= (int(dim.high) - int(dim.low)) // int(dim.step or 1) + 1
        elif dim.kind == "int":
            size *= int(dim.high) - int(dim.low) + 1
        elif dim.step:
            size *= int(round((float(dim.high) - float(dim.low)) / float(dim.step))) + 1
        else:
            return None
    return size


# ------------------------------------------------------------------------------- distributions
def distributions(config: StudyConfig) -> dict[str, BaseDistribution]:
    """Optuna distributions of every trial param, in the space's order (seed last)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, BaseDistribution] = {}
    for dim in config.space:
        if dim.kind == "categorical":
            out[dim.key] = CategoricalDistribution(list(dim.choices))
        elif dim.kind == "int":
            out[dim.key] = IntDistribution(int(dim.low), int(dim.high), log=dim.log,
                                           step=int(dim.step or 1))
        else:
            out[dim.key] = FloatDistribution(float(dim.low), float(dim.high), log=dim.log,
                                             step=dim.step)
    if config.kind != "optimize":
        out[SEED_PARAM] = CategoricalDistribution(list(seed_choices(config)))
    return out


def seed_choices(config: StudyConfig) -> tuple[int, ...]:
    """Every seed a trial of the study may have: ``study.seeds``, then with ``study.sequential``
    the seeds its later stages may add (the next integers after the largest, up to
    ``max_seeds`` in all). Fixed when the study starts: Optuna keeps a categorical param's
    choices from its first trial on."""
    seeds = tuple(config.seeds)
    if config.sequential is None:
        return seeds
    extra = config.sequential.max_seeds - len(seeds)
    return seeds + tuple(range(max(seeds) + 1, max(seeds) + 1 + extra))


def established_distributions(study: optuna.Study) -> dict[str, BaseDistribution]:
    """Each param's distribution as the study's first trial with it recorded it: Optuna checks
    every later trial's against that one."""
    found: dict[str, BaseDistribution] = {}
    for trial in study.get_trials(deepcopy=False):
        for name, dist in trial.distributions.items():
            found.setdefault(name, dist)
    return found


def grown_choices(study: optuna.Study, config: StudyConfig) -> dict[str, list[Any]]:
    """Categorical knobs whose choices in ``config`` include values the stored study cannot
    record (it started with other choices): {knob: the new values}."""
    from optuna.distributions import CategoricalDistribution

    stored = established_distributions(study)
    grown = {}
    for name, dist in distributions(config).items():
        before = stored.get(name)
        if isinstance(dist, CategoricalDistribution) and isinstance(before,
                                                                    CategoricalDistribution):
            new = [c for c in dist.choices if c not in before.choices]
            if new:
                grown[name] = new
    return grown


def suggest_point(trial: optuna.Trial, config: StudyConfig) -> Point:
    """Ask the trial for every param (a queued trial answers with its fixed values). In a grid
    or population study, a categorical knob whose choices were reordered or narrowed since the
    study started is asked with the stored choices, which Optuna requires."""
    from optuna.distributions import CategoricalDistribution

    # Only for queued points (grid, population): an optimize study's sampler would draw from
    # the stored choices, values the file no longer offers.
    stored = established_distributions(trial.study) if config.kind != "optimize" else {}
    point = {}
    for name, dist in distributions(config).items():
        before = stored.get(name)
        if (isinstance(dist, CategoricalDistribution)
                and isinstance(before, CategoricalDistribution)
                and set(dist.choices) <= set(before.choices)):
            dist = before
        point[name] = _suggest(trial, name, dist)
    return point


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


# ----------------------------------------------------------------------------------- points
def grid_points(config: StudyConfig) -> list[Point]:
    """Every combination of the space's choices, times every seed (seed varies slowest, so a
    half-finished grid already covers every design once)."""
    keys = [d.key for d in config.space]
    points = []
    for seed in config.seeds:
        for combo in itertools.product(*(d.choices for d in config.space)):
            points.append({**dict(zip(keys, combo, strict=True)), SEED_PARAM: seed})
    return points


def population_points(config: StudyConfig,
                      measure: Callable[[str], dict[str, float]] | None = None) -> list[Point]:
    """``config.n`` sampled points (times seeds) that build and fall inside ``config.band``.

    Samples come from one Sobol sequence (or uniform draws) seeded by ``study.sampler_seed``, so
    a rerun yields the same population. Points outside the band or impossible for the grammar
    are skipped; ``measure(spec) -> {"params": .., "macs": ..}`` gives the band's metrics."""
    from scipy.stats import qmc

    if config.band and measure is None:
        from mvlab.study.cost import complexity_of, num_classes_of

        classes = num_classes_of(config.data)

        def measure(spec: str) -> dict[str, float]:
            return complexity_of(spec, config.data.resolution, classes)

    dims = list(config.space)
    rng = np.random.default_rng(config.sampler_seed)
    sobol = qmc.Sobol(d=len(dims), scramble=True, seed=config.sampler_seed)
    wanted = config.n or 0
    accepted: list[Point] = []
    seen: set[str] = set()
    tried = rejected_band = rejected_grammar = repeated = 0
    budget = max(64, min(200 * wanted, MAX_DRAWS))  # a band too narrow fails, not runs for hours
    while len(accepted) < wanted and tried < budget:
        batch = 64
        unit = sobol.random(batch) if config.sampler == "sobol" else rng.random((batch, len(dims)))
        for row in unit:
            tried += 1
            point = {d.key: _from_unit(d, u) for d, u in zip(dims, row, strict=True)}
            key = repr(sorted(point.items()))
            if key in seen:
                repeated += 1
                continue
            seen.add(key)
            try:
                plan = resolve_point(config, point)
            except UserError:
                rejected_grammar += 1
                continue
            if config.band:
                metrics = measure(plan.spec)
                if any(not lo <= metrics[m] <= hi for m, (lo, hi) in config.band.items()):
                    rejected_band += 1
                    continue
            accepted.append(point)
            if len(accepted) == wanted:
                break
    if len(accepted) < wanted:
        raise StudyError(
            f"{config.source}: study.band: only {len(accepted)} of n={wanted} samples fit after "
            f"{tried} draws ({rejected_band} outside the band, {rejected_grammar} impossible "
            f"specs, {repeated} repeats of a point already drawn); widen study.band or the "
            f"space, or lower n")
    return [{**p, SEED_PARAM: s} for s in config.seeds for p in accepted]


def _from_unit(dim: Dimension, u: float) -> Any:
    u = min(max(float(u), 0.0), 1.0 - 1e-12)
    if dim.kind == "categorical":
        return dim.choices[int(u * len(dim.choices))]
    low, high = float(dim.low), float(dim.high)
    if dim.kind == "int":
        step = int(dim.step or 1)
        if dim.log:
            value = math.exp(math.log(low) + u * (math.log(high + 1) - math.log(low)))
            return int(min(max(math.floor(value), low), high))
        count = (int(high) - int(low)) // step + 1
        return int(low) + step * int(u * count)
    if dim.log:
        return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
    value = low + u * (high - low)
    if dim.step:
        value = low + round((value - low) / dim.step) * dim.step
    return float(min(value, high))


def planned_points(config: StudyConfig) -> list[Point] | None:
    """The points a grid or population study must run, one per configuration and seed (see
    ``collapse_points``); None for optimize studies."""
    if config.kind == "grid":
        return collapse_points(config, grid_points(config))[0]
    if config.kind == "population":
        return collapse_points(config, population_points(config))[0]
    return None


def configuration_key(plan: TrialPlan) -> str:
    """What a trial trains: the network (``grammar.network_spec``) and every data and training
    setting, the seeds included. Two points with one key are one configuration."""
    from mvlab.grammar import network_spec

    return repr((network_spec(plan.spec), plan.data, plan.train))


def collapse_points(config: StudyConfig, points: list[Point]
                    ) -> tuple[list[Point], list[Collapsed]]:
    """Keep the first point of every configuration (``configuration_key``); the others are
    returned with the point they duplicate and why (the knobs that differ build nothing)."""
    kept: list[Point] = []
    dropped: list[Collapsed] = []
    first: dict[str, Point] = {}
    for point in points:
        try:
            key = configuration_key(resolve_point(config, point))
        except UserError:
            kept.append(point)  # an impossible point fails as its own trial
            continue
        if key in first:
            other = first[key]
            differ = ", ".join(f"{k}={point[k]} vs {other.get(k)}" for k in point
                               if point[k] != other.get(k))
            dropped.append(Collapsed(point, other, f"{differ or 'a repeated point'} builds "
                                                   "nothing here: same network and settings"))
            continue
        first[key] = point
        kept.append(point)
    return kept, dropped


def point_key(params: Point) -> str:
    """A stable identity for a point, to match queued/finished trials on resume."""
    return repr(sorted((k, _canonical_value(v)) for k, v in params.items()))


def _canonical_value(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
