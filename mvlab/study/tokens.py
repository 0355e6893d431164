"""Stages that see too few tokens for a study to ask anything about them.

A stage with mixer or attention blocks mixes information across its token map. Below
``MIN_TOKEN_SIDE`` x ``MIN_TOKEN_SIDE`` tokens (2x2 at 48 px in the T layout's stage 4) there is
next to nothing to mix: which blocks sit there, and in which order, can hardly change what the
network computes, and a study comparing them measures noise. ``mvlab sweep`` (also with
``--check``) prints one warning per such stage before anything trains."""
from __future__ import annotations

from mvlab.study.schema import StudyConfig
from mvlab.study.space import SEED_PARAM, Point, grid_points, probe_values, resolve_point

MIN_TOKEN_SIDE = 4


def few_token_warnings(config: StudyConfig) -> list[str]:
    """One line per (stage, resolution, stem stride) where a planned model's mixer/attention
    stage sees a map (or window) smaller than ``MIN_TOKEN_SIDE`` on a side."""
    from mvlab.grammar import parse_spec
    from mvlab.models.complexity import complexity
    warnings: dict[tuple, str] = {}
    for params in _points_to_check(config):
        plan = resolve_point(config, params)
        spec = parse_spec(plan.spec)
        resolution = plan.data.resolution
        for stage in complexity(spec, resolution).stages:
            if not any(letter != "C" for letter in stage.letters):
                continue
            side = min(stage.map_size)
            if stage.window is not None:
                side = min(side, stage.window)
            key = (stage.index, resolution, spec.stem_stride, stage.window)
            if side >= MIN_TOKEN_SIDE or key in warnings:
                continue
            need = MIN_TOKEN_SIDE * spec.stem_stride * 2 ** stage.index
            h, w = stage.map_size
            where = f"{h}x{w} tokens" + (f" in windows of {stage.window}" if stage.window else "")
            if stage.window is not None and stage.window < MIN_TOKEN_SIDE:
                fix = f"use window >= {MIN_TOKEN_SIDE} or none"
            else:
                fix = f"use data.resolution >= {need}"
                if spec.stem_stride > 1:  # a smaller stem stride doubles the tokens per side
                    fix += f", or stem_stride={spec.stem_stride // 2} in the model"
            warnings[key] = (f"stage {stage.index + 1} has mixer/attention blocks but sees {where} "
                             f"at data.resolution={resolution} (stem_stride={spec.stem_stride}): "
                             f"fewer than {MIN_TOKEN_SIDE}x{MIN_TOKEN_SIDE}, so what its blocks "
                             f"are cannot matter much; {fix} (docs/grammar.md, token maps)")
    return list(warnings.values())


def _points_to_check(config: StudyConfig) -> list[Point]:
    """A grid's own points; for populations and optimize studies the base point and each
    dimension's choices (or range ends) one at a time, so ``--check`` stays fast for any ``n``
    (sampling a population means building and measuring every candidate)."""
    if config.kind == "grid":  # the seed changes no token map: one seed's points
        return [p for p in grid_points(config) if p[SEED_PARAM] == config.seeds[0]]
    return [{}] + [{dim.key: value} for dim in config.space for value in probe_values(dim)]
