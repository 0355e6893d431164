"""Host side of the kernels: buffers, strides, constexprs and the launches, for one ``Launch``.

u, delta and a shared B/C may have any strides (the mixer's transposed views are read in
place); A, D, delta_bias and constant or per-channel B/C are contiguous (the caller sees to it).
"""
from __future__ import annotations

import torch

from mvlab.ops.scan.args import compute_dtype
from mvlab.ops.scan.triton.common import (
    CONSTANT,
    PER_CHANNEL,
    SHARED,
    compute_dtype_constexpr,
    triton,
)
from mvlab.ops.scan.triton.settings import Launch

if triton is not None:
    from mvlab.ops.scan.triton import chunk_kernels, loop_kernels


def bc_mode(BC: torch.Tensor) -> int:
    return {2: CONSTANT, 3: SHARED}.get(BC.dim(), PER_CHANNEL)


def n_chunks(length: int, launch: Launch) -> int:
    return max(1, -(-length // launch.chunk))


def _constexprs(u: torch.Tensor, B, C, D, delta_bias, softplus: bool, launch: Launch) -> dict:
    dtype = compute_dtype(u)
    return dict(B_MODE=bc_mode(B), C_MODE=bc_mode(C), HAS_D=D is not None,
                HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(softplus),
                USE_EXP2=dtype == torch.float32, DT=compute_dtype_constexpr(dtype),
                BLOCK_D=launch.block_d, BLOCK_N=launch.block_n, CHUNK=launch.chunk,
                num_warps=launch.num_warps)


def _strides(BC: torch.Tensor) -> tuple[int, int, int]:
    """(batch, state, token) strides of a shared (batch, N, L) B or C; the other forms are read
    as contiguous tensors."""
    return tuple(BC.stride()) if BC.dim() == 3 else (0, 0, 0)


def new_output(u: torch.Tensor, gated: bool) -> torch.Tensor:
    """y's buffer: token-major when u is (the mixer's out_proj then reads it without a copy)."""
    batch, dim, L = u.shape
    dtype = compute_dtype(u) if gated else u.dtype
    if u.stride(1) == 1 and L > 1:
        return u.new_empty(batch, L, dim, dtype=dtype).transpose(1, 2)
    return u.new_empty(batch, dim, L, dtype=dtype)


def forward(u, delta, A, B, C, D, delta_bias, softplus: bool, launch: Launch, gated: bool):
    """(y, last_state, per-chunk state checkpoints). y is in u's dtype, token-major when u is,
    or in the compute dtype when ``gated`` (the caller still multiplies by SiLU(z) in fp32)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    dtype = compute_dtype(u)
    meta = _constexprs(u, B, C, D, delta_bias, softplus, launch)
    chunks = n_chunks(L, launch)
    y = new_output(u, gated)
    last = torch.empty(batch, dim, N, dtype=dtype, device=u.device)
    ckpt = torch.empty(batch, dim, chunks, N, dtype=dtype, device=u.device)
    dummy = A  # stands in for absent optional pointers; never read
    if launch.loop:
        kernel, meta = loop_kernels.forward_kernel, {**meta, "STAGES": launch.stages}
    else:
        kernel = chunk_kernels.forward_kernel
    kernel[(batch, -(-dim // launch.block_d))](
        u, delta, A, B, C, D if D is not None else dummy,
        delta_bias if delta_bias is not None else dummy, y, last, ckpt,
        dim, N, L, chunks, *u.stride(), *delta.stride(), *y.stride(), *_strides(B),
        *_strides(C), **meta)
    return y, last, ckpt


def backward(u, delta, A, B, C, D, delta_bias, ckpt, dy, dlast, softplus: bool, launch: Launch):
    """Gradients of (u, delta, A, B, C, D, delta_bias) in the inputs' dtypes (None for an absent
    D or delta_bias). ``dy`` or ``dlast`` may be None (no gradient reaches that output).
    ``launch`` must be the forward's: ``ckpt`` holds one state per chunk of it."""
    meta = _constexprs(u, B, C, D, delta_bias, softplus, launch)
    batch, dim, L = u.shape
    chunks, n_dblocks = n_chunks(L, launch), -(-dim // launch.block_d)
    if ckpt.shape[2] != chunks:
        raise ValueError(f"Triton scan backward: {ckpt.shape[2]} state checkpoints for "
                         f"{chunks} chunks: the launch differs from the forward's")
    N = A.shape[1]
    dtype = ckpt.dtype
    dev = u.device
    if dy is None:
        dy = torch.zeros(batch, dim, L, dtype=dtype, device=dev)
    # the kernel reads dy with its strides and dtype, and stores du/ddelta in the inputs' dtypes
    du = torch.empty(batch, dim, L, dtype=u.dtype, device=dev)
    ddelta = torch.empty(batch, dim, L, dtype=delta.dtype, device=dev)
    dA = torch.empty(batch, dim, N, dtype=dtype, device=dev)

    def grad_buffer(mode: int) -> torch.Tensor:
        if mode == CONSTANT:
            return torch.empty(batch, dim, N, dtype=dtype, device=dev)
        if mode == SHARED:
            return torch.zeros(n_dblocks, batch, N, L, dtype=dtype, device=dev)
        return torch.empty(batch, dim, N, L, dtype=dtype, device=dev)

    dB, dC = grad_buffer(meta["B_MODE"]), grad_buffer(meta["C_MODE"])
    dD = torch.empty(batch, dim, dtype=dtype, device=dev) if D is not None else dA
    dbias = torch.empty(batch, dim, dtype=dtype, device=dev) if delta_bias is not None else dA
    dummy = A
    common = (u, delta, A, B, C, D if D is not None else dummy,
              delta_bias if delta_bias is not None else dummy, ckpt, dy,
              dlast.to(dtype).contiguous() if dlast is not None else dummy)
    grads = (du, ddelta, dA, dB, dC, dD, dbias, dim, N, L, chunks, n_dblocks,
             *u.stride(), *delta.stride(), *dy.stride(), *_strides(B), *_strides(C))
    if launch.loop:
        # per program: the chunk's states, recomputed from its checkpoint, for the reverse walk
        scratch = torch.empty(batch * n_dblocks * (launch.chunk + 1) * launch.block_d
                              * launch.block_n, dtype=dtype, device=dev)
        loop_kernels.backward_kernel[(batch, n_dblocks)](
            *common, scratch, *grads, HAS_DLAST=dlast is not None, **meta)
    else:
        chunk_kernels.backward_kernel[(batch, n_dblocks)](
            *common, *grads, HAS_DLAST=dlast is not None, **meta)

    def reduce(grad: torch.Tensor, mode: int) -> torch.Tensor:
        return grad.sum(0) if mode in (CONSTANT, SHARED) else grad

    return (du, ddelta, dA.sum(0).to(A.dtype),
            reduce(dB, meta["B_MODE"]).to(B.dtype), reduce(dC, meta["C_MODE"]).to(C.dtype),
            dD.sum(0).to(D.dtype) if D is not None else None,
            dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None)
