"""The kernels as ``torch.library`` custom ops: what torch.compile and torch.export trace, one
graph node per scan (the autograd Function would be a graph break per mixer).

A custom op's schema takes plain values only, so the ``Launch`` travels as its fields; the
forward's are saved for the backward op, as in the eager Function.
"""
from __future__ import annotations

import torch

from mvlab.ops.scan.args import compute_dtype, grads_of_present, or_empty
from mvlab.ops.scan.triton import launch as host
from mvlab.ops.scan.triton.settings import Launch

_LAUNCH_FIELDS = 6  # loop, block_d, block_n, chunk, num_warps, stages


def launch_args(launch: Launch) -> tuple[bool, int, int, int, int, int]:
    return (launch.loop, launch.block_d, launch.block_n, launch.chunk, launch.num_warps,
            launch.stages)


@torch.library.custom_op("mvlab::scan_triton", mutates_args=())
def scan_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
            C: torch.Tensor, D: torch.Tensor | None, delta_bias: torch.Tensor | None,
            softplus: bool, gated: bool, loop: bool, block_d: int, block_n: int, chunk: int,
            num_warps: int, stages: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    launch = Launch(loop, block_d, block_n, chunk, num_warps, stages)
    return host.forward(u, delta, A, B, C, D, delta_bias, softplus, launch, gated)


@scan_op.register_fake
def _scan_op_fake(u, delta, A, B, C, D, delta_bias, softplus, gated, loop, block_d, block_n,
                  chunk, num_warps, stages):
    batch, dim, L = u.shape
    N = A.shape[1]
    dtype = compute_dtype(u)
    chunks = host.n_chunks(L, Launch(loop, block_d, block_n, chunk, num_warps, stages))
    return (host.new_output(u, gated), u.new_empty(batch, dim, N, dtype=dtype),
            u.new_empty(batch, dim, chunks, N, dtype=dtype))


@torch.library.custom_op("mvlab::scan_triton_backward", mutates_args=())
def scan_backward_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                     C: torch.Tensor, D: torch.Tensor | None, delta_bias: torch.Tensor | None,
                     ckpt: torch.Tensor, dy: torch.Tensor, dlast: torch.Tensor, softplus: bool,
                     loop: bool, block_d: int, block_n: int, chunk: int, num_warps: int,
                     stages: int) -> list[torch.Tensor]:
    launch = Launch(loop, block_d, block_n, chunk, num_warps, stages)
    grads = host.backward(u, delta, A, B, C, D, delta_bias, ckpt, dy, dlast, softplus, launch)
    return [or_empty(g, u) for g in grads]


@scan_backward_op.register_fake
def _scan_backward_op_fake(u, delta, A, B, C, D, delta_bias, ckpt, dy, dlast, softplus, *launch):
    return [or_empty(t, u) if t is None else t.new_empty(t.shape)  # all contiguous
            for t in (u, delta, A, B, C, D, delta_bias)]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, delta_bias, softplus, _gated, *launch = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, output[2])
    ctx.softplus, ctx.launch = softplus, tuple(launch)


def _backward(ctx, dy, dlast, _dckpt):
    u, delta, A, B, C, D, delta_bias, ckpt = ctx.saved_tensors
    grads = scan_backward_op(u, delta, A, B, C, D, delta_bias, ckpt, dy, dlast, ctx.softplus,
                             *ctx.launch)
    # no gradient for softplus, gated and the launch fields
    return grads_of_present(grads, (u, delta, A, B, C, D, delta_bias)) + (None,) * (
        2 + _LAUNCH_FIELDS)


scan_op.register_autograd(_backward, setup_context=_setup_context)
