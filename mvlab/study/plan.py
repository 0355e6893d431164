"""A validated study's plan in words (``mvlab sweep FILE --check``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from mvlab import records
from mvlab.safety import mask_url
from mvlab.study.locations import storage_url_for, tracking_uri_for
from mvlab.study.schema import describe_dimension
from mvlab.study.space import collapse_points, grid_points, planned_points
from mvlab.study.types import StudyConfig

if TYPE_CHECKING:
    from mvlab.training.config import TrainConfig


def describe_plan(config: StudyConfig, storage: str | None = None) -> str:
    """Name, kind, size, space, fidelity and where the records go."""
    # A population is not sampled here: drawing and measuring n models under a band takes
    # seconds per hundred, and the sweep samples it (the same points) when it prepares.
    if config.kind == "population":
        size = f"{config.n * len(config.seeds)} (n={config.n} sampled when the sweep prepares)"
    else:
        points = planned_points(config)
        size = config.n_trials if points is None else len(points)
    lines = [
        f"study {config.name}: {config.kind} ({config.sampler}), {size} trials, "
        f"seeds {list(config.seeds)}",
        *sequential_lines(config),
        f"base model: {config.model_text} = {config.model}",
        f"train: epochs={config.train.epochs} batch_size={config.train.batch_size} "
        f"lr={config.train.lr} device={config.train.device}{early_init_words(config.train)}",
        f"data: {config.data.dataset} res={config.data.resolution} classes={config.data.classes} "
        f"per_class={config.data.per_class}{task_knobs(config.data)}",
        "objectives: " + ", ".join(f"{m} ({d})" for m, d in config.objectives),
        f"constraints: {config.constraints or 'none'}; early stop: "
        f"{config.early_stop or 'off'}",
        "space:",
        *(f"  {describe_dimension(d)}" for d in config.space),
        f"storage: {mask_url(storage_url_for(config, storage))}",
        f"mlflow:  {mask_url(tracking_uri_for(config))}",
    ]
    return "\n".join(lines + collapsed_lines(config))


def task_knobs(data) -> str:
    """`` contour_length=2 distractors=0 clearance=2.0`` for a generated task: what sets its
    difficulty and its pixels, then each curriculum stage's changes; empty for a photo set."""
    from mvlab.data.procedural import TASKS

    task = TASKS.get(data.dataset)
    if not task:
        return ""
    text = "".join(f" {knob}={getattr(data, knob)}" for knob in task.knobs)
    first = 1
    for epochs, stage in data.stages():  # data.curriculum: what the first epochs train on
        changed = " ".join(f"{knob}={getattr(stage, knob)}" for knob in task.knobs
                           if getattr(stage, knob) != getattr(data, knob))
        last = first + epochs - 1
        span = f"epoch {first}" if last == first else f"epochs {first}-{last}"
        text += f" ({span}: {changed or 'the same knobs'})"
        first = last + 1
    return text


def collapsed_lines(config: StudyConfig) -> list[str]:
    """The points trained once for another point of the same configuration, and why."""
    if config.kind != "grid":  # a population is sampled (and collapsed) when the sweep prepares
        return []
    dropped = collapse_points(config, grid_points(config))[1]
    if not dropped:
        return []
    words = records.point_label
    return [f"collapsed: {len(dropped)} point(s) train the same configuration as another and "
            "are run and reported once:",
            *(f"  {words(c.point)} == {words(c.same_as)} ({c.reason})" for c in dropped)]


def sequential_lines(config: StudyConfig) -> list[str]:
    """What ``study.sequential`` adds after the planned trials, at most."""
    sequential = config.sequential
    if sequential is None:
        return []
    points = planned_points(config) or []
    configurations = len(points) // max(1, len(config.seeds))
    most = configurations * (sequential.max_seeds - len(config.seeds))
    analysis = config.analysis
    return [f"sequential: then {sequential.step} seed(s) at a time for each configuration still "
            f"undetermined against the reference, up to {sequential.max_seeds} seeds (at most "
            f"{most} more trials); verdicts at alpha {analysis.alpha:g} / {analysis.looks} "
            f"looks = {analysis.alpha / analysis.looks:.3g}, each judged by "
            + ("its own per-seed differences" if analysis.noise == "paired" else
               "one pooled noise level (analysis.noise: pooled)")]


def early_stop_warnings(config: StudyConfig) -> list[str]:
    """The early stop compares held-out top-1 mid-run, where stale BatchNorm running statistics
    can read chance for a network that has learned (docs/training.md, ``precise_bn``)."""
    if config.early_stop is None or config.train.precise_bn:
        return []
    return [f"early_stop compares held-out top-1 after epoch {config.early_stop.after_epoch}, "
            f"when the learning rate is still high and BatchNorm running statistics lag the "
            f"weights (a learned network can read chance); set train.precise_bn: 1024 so the "
            f"comparison measures the networks"]


def early_init_words(train: TrainConfig) -> str:
    """`` early_init=seed 0 (stem + stages 1-2)`` when train.early_init_seed fixes the early
    part's initialisation for every trial, else nothing: a study's results then hold for that
    one start, and its summary says so."""
    if train.early_init_seed is None:
        return ""
    stages = int(train.early_init_stages)
    part = "stem" + (f" + stages 1-{stages}" if stages > 1 else " + stage 1" if stages else "")
    return f" early_init=seed {train.early_init_seed} ({part})"
