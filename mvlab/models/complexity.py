"""Analytic parameters and multiply-accumulates of any spec at any resolution (no torch).

Two MAC counts, because the paper's number leaves the scan out:

* ``macs`` (paper style, as ptflops counted it): every conv, linear and depthwise conv1d, plus
  attention's two matmuls (q k^T and attn v); norms, activations, pooling and the selective scan
  are not counted. MambaVision-T at 224 px gives 4.57 G (the paper: 4.4 G from ptflops, which
  does not see the fused attention matmuls, 0.10 G here).
* ``macs_with_scan``: ``macs`` plus the scan, counted as 3 MACs per token, channel and state
  (the state update exp(dA)*h + dB*u, the input product dt*B*u, the read-out C*h) and one per
  token and channel for the D skip.

Windowed stages are counted on the zero-padded map the network really computes on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from mvlab.grammar import STEM_CONV_STRIDES, ModelSpec, StageSpec, parse_spec
from mvlab.models.dims import MixerDims


@dataclass(frozen=True)
class StageCost:
    """What one stage computes at a given input resolution."""

    index: int
    letters: tuple[str, ...]
    width: int
    heads: int | None
    window: int | None
    map_size: tuple[int, int]  # (H, W) of the stage's feature map
    padded_size: tuple[int, int]  # after padding to a window multiple (token blocks only)
    num_windows: int  # sequences per image (1 when global or conv-only)
    tokens_per_window: int  # sequence length the mixer/attention sees (0 for conv-only)
    params: int
    macs: int
    scan_macs: int


@dataclass(frozen=True)
class Complexity:
    """Parameters and MACs of a spec at ``img_size`` (see the module doc for conventions)."""

    spec: str
    img_size: tuple[int, int]
    num_classes: int
    params: int
    macs: int
    macs_with_scan: int
    stages: tuple[StageCost, ...] = field(default=())

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gmacs_with_scan(self) -> float:
        return self.macs_with_scan / 1e9


def _down(n: int, stride: int = 2) -> int:
    """Output size of a 3x3, padding-1 conv of ``stride`` (1 or 2)."""
    return (n - 1) // stride + 1


def _stage_cost(index: int, stage: StageSpec, spec: ModelSpec, h: int, w: int) -> StageCost:
    c, letters = stage.width, stage.blocks
    hidden = int(c * spec.mlp_ratio)
    params = macs = scan = 0
    if stage.has_tokens and stage.window is not None:
        ws = stage.window
        hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
        num_windows, seq = (hp // ws) * (wp // ws), ws * ws
    elif stage.has_tokens:
        hp, wp, num_windows, seq = h, w, 1, h * w
    else:
        hp, wp, num_windows, seq = h, w, 1, 0
    tokens = hp * wp
    for j, letter in enumerate(letters):
        if letter == "C":
            params += 2 * (9 * c * c + c) + 4 * c
            macs += 2 * 9 * c * c * h * w
            continue
        params += 4 * c + (2 * c if spec.layer_scale is not None else 0)
        params += 2 * c * hidden + hidden + c
        macs += tokens * 2 * c * hidden
        if letter == "A":
            params += 4 * c * c + 4 * c
            macs += tokens * 4 * c * c + num_windows * 2 * seq * seq * c
        else:
            dims = MixerDims.of(c, stage.mixer_for(j))
            params += dims.params
            macs += tokens * dims.weights_per_token
            scan += tokens * dims.scan_macs_per_token
    return StageCost(index, letters, c, stage.heads, stage.window, (h, w), (hp, wp),
                     num_windows, seq, params, macs, scan)


def complexity(spec: ModelSpec | str, img_size: int | tuple[int, int] = 224,
               num_classes: int = 1000, in_chans: int = 3) -> Complexity:
    """Parameters and MACs of ``spec`` for one ``img_size`` image (int or (H, W)).

    ``params`` equals ``sum(p.numel() for p in build_model(spec).parameters())`` exactly.
    """
    spec = parse_spec(spec)
    height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    widths = spec.widths
    first, second = STEM_CONV_STRIDES[spec.stem_stride]
    h1, w1 = _down(height, first), _down(width, first)
    h, w = _down(h1, second), _down(w1, second)
    params = 9 * in_chans * spec.stem + 2 * spec.stem + 9 * spec.stem * widths[0] + 2 * widths[0]
    macs = 9 * in_chans * spec.stem * h1 * w1 + 9 * spec.stem * widths[0] * h * w
    scan = 0
    stages = []
    for i, stage in enumerate(spec.stages):
        cost = _stage_cost(i, stage, spec, h, w)
        stages.append(cost)
        params, macs, scan = params + cost.params, macs + cost.macs, scan + cost.scan_macs
        if i + 1 < len(spec.stages):
            h, w = _down(h), _down(w)
            params += 9 * stage.width * widths[i + 1]
            macs += 9 * stage.width * widths[i + 1] * h * w
    features = widths[-1]
    params += 2 * features + (features * num_classes + num_classes if num_classes else 0)
    macs += features * num_classes
    from mvlab.grammar import format_spec

    return Complexity(format_spec(spec), (height, width), num_classes, params, macs, macs + scan,
                      tuple(stages))
