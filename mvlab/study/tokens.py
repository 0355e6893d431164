"""Stages that see too few tokens for a study to ask anything about them.

A stage with mixer or attention blocks mixes information across its token map. Below
``MIN_TOKEN_SIDE`` x ``MIN_TOKEN_SIDE`` tokens (2x2 at 48 px in the T layout's stage 4) there is
next to nothing to mix: which blocks sit there, and in which order, can hardly change what the
network computes, and a study comparing them measures noise. ``mvlab sweep`` (also with
``--check``) prints one warning per such stage before anything trains."""
from __future__ import annotations

from typing import NamedTuple

from mvlab.grammar import STEM_CONV_STRIDES, ModelSpec, parse_spec
from mvlab.study.space import SEED_PARAM, grid_points, probe_values, resolve_point
from mvlab.study.types import Point, StudyConfig

MIN_TOKEN_SIDE = 4


def few_token_warnings(config: StudyConfig) -> list[str]:
    """One line per (stage, resolution, stem stride) where a planned model's mixer/attention
    stage sees a map (or window) smaller than ``MIN_TOKEN_SIDE`` on a side."""
    warnings: dict[tuple, str] = {}
    for params in _points_to_check(config):
        plan = resolve_point(config, params)
        spec = parse_spec(plan.spec)
        resolution = plan.data.resolution
        for stage in _token_maps(spec, resolution):
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


class _StageMap(NamedTuple):
    index: int
    letters: tuple[str, ...]
    window: int | None
    map_size: tuple[int, int]


def _token_maps(spec: ModelSpec, resolution: int) -> list[_StageMap]:
    """Each stage's token map at a square ``resolution``: the stem's two 3x3 convs (strides
    from ``STEM_CONV_STRIDES``), then one stride-2 3x3 downsample between stages. The same
    arithmetic as ``mvlab.models.complexity`` (a test holds them equal), computed here because
    importing that module imports the model package, torch and timm, which ``--check`` must not
    pay."""
    def down(n: int, stride: int = 2) -> int:
        return (n - 1) // stride + 1

    first, second = STEM_CONV_STRIDES[spec.stem_stride]
    side = down(down(resolution, first), second)
    maps = []
    for index, stage in enumerate(spec.stages):
        maps.append(_StageMap(index, stage.blocks, stage.window, (side, side)))
        side = down(side)
    return maps
