"""The mixer's shape arithmetic, once: the module builds its layers from it and the analytic
complexity counts them from it, so the two cannot drift apart (no torch here).

The table of variants is in ``MambaVisionMixer``'s docstring: the scan always runs on half of
``d_inner``; ``branch`` adds the z half's depthwise conv; z exists unless the branch is off and
the output is concatenated, and out_proj reads both halves only for branch on + concat.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from mvlab.grammar import MixerOptions

# Mamba's rule for the rank of the dt projection: one per 16 model channels, rounded up.
DT_RANK_DIVISOR = 16


@dataclass(frozen=True)
class MixerDims:
    """Channel counts of one MambaVision mixer of block width ``width``."""

    width: int
    d_state: int
    d_conv: int
    d_inner: int  # expand * width: the x and z halves together
    d_half: int  # channels of the scan, of x and of z
    dt_rank: int
    has_z: bool  # in_proj also produces z (a branch or a gate needs it)
    branch: bool  # z gets its own depthwise conv (conv1d_z)
    in_proj_out: int
    out_proj_in: int

    @classmethod
    def of(cls, width: int, opts: MixerOptions | None = None) -> MixerDims:
        opts = opts or MixerOptions()
        d_inner = opts.expand * width
        if d_inner % 2:
            raise ValueError(f"a mixer's width*expand must be even (x and z are its halves), "
                             f"got {width}*{opts.expand}")
        d_half = d_inner // 2
        has_z = opts.branch or opts.out == "gate"
        concat = opts.branch and opts.out == "concat"
        return cls(width=width, d_state=opts.d_state, d_conv=opts.d_conv, d_inner=d_inner,
                   d_half=d_half, dt_rank=math.ceil(width / DT_RANK_DIVISOR), has_z=has_z,
                   branch=opts.branch, in_proj_out=d_inner if has_z else d_half,
                   out_proj_in=d_inner if concat else d_half)

    @property
    def x_proj_out(self) -> int:
        """dt, B and C of every token, from one projection."""
        return self.dt_rank + 2 * self.d_state

    @property
    def conv_weights(self) -> int:
        """Weights of the depthwise convs (x's, and z's with the branch): bias-free."""
        return self.d_half * self.d_conv * (2 if self.branch else 1)

    @property
    def weights_per_token(self) -> int:
        """Weights every token is multiplied with once: in/x/dt/out projections and the convs
        (the paper-style MACs per token)."""
        return (self.width * self.in_proj_out + self.conv_weights
                + self.d_half * self.x_proj_out + self.dt_rank * self.d_half
                + self.out_proj_in * self.width)

    @property
    def params(self) -> int:
        """Parameters of the module: the per-token weights plus dt_proj's bias, A_log and D."""
        return self.weights_per_token + self.d_half + self.d_half * self.d_state + self.d_half

    @property
    def scan_macs_per_token(self) -> int:
        """3 per channel and state (decay * h, dt*B*u, C*h) and one per channel for the D skip."""
        return self.d_half * (3 * self.d_state + 1)
