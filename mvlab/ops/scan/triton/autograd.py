"""The eager path: the kernels as an autograd Function (cheaper per call than a custom op)."""
from __future__ import annotations

import torch

from mvlab.ops.scan.triton import launch as host


class TritonScan(torch.autograd.Function):
    """y = scan(u, delta, A, B, C) + D u, delta_bias/softplus fused; returns (y, last_state).

    The ``Launch`` is an argument, saved at the forward for the backward: the state checkpoints
    are only readable with the forward's chunking."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, softplus, launch, gated):
        y, last, ckpt = host.forward(u, delta, A, B, C, D, delta_bias, softplus, launch, gated)
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, ckpt)
        ctx.softplus, ctx.launch = softplus, launch
        ctx.set_materialize_grads(False)
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        grads = host.backward(*ctx.saved_tensors, dy, dlast, ctx.softplus, ctx.launch)
        return (*grads, None, None, None)
