"""The selective scan in chunks of tokens, with a hand-written backward (the CPU default).

The recurrence h_t = a_t * h_{t-1} + x_t, with a_t = exp(delta_t * A) in (0, 1] and
x_t = delta_t B_t u_t, is computed by multiplying decay factors and their products only: nothing is
divided by a cumulative decay (exp(-cumsum) forms overflow at large delta*|A|) and nothing runs in
log space, so the result stays finite and matches the token loop to rounding. The backward runs the
adjoint recurrence g_t = C_t dy_t + a_{t+1} g_{t+1} in reverse; every input gradient is then a
product or a reduction. Two methods:

``blocked`` (the CPU default, ``_BlockedScan``): large tensors are time-major,
(L, 1, batch, N, dim), so one token's state is one contiguous slice; the sequence is walked in
blocks small enough that a block's decays, states and adjoints stay in cache; every elementwise
pass and reduction runs once per block over all its tokens, and inside a block the recurrence is one
fused multiply-add per token over (batch, N, dim).

``two_level`` (the default on GPUs, ``_ChunkedScan``): K chunks of T ~ sqrt(L) tokens, layout
(T, K, batch, N, dim): (1) a local scan inside every chunk, all chunks at once, T steps; (2) a carry
over the K chunk boundaries; (3) one correction h += P * h_in with P the within-chunk running
product of a. About 2 sqrt(L) launches instead of L.

Both reduce over N with matmuls when B/C are shared by all channels (or short addcmul loops), take
their large buffers from ``mvlab.ops.scan.pool`` and keep only the inputs and the states for the
backward; a second backward through a retained graph notices recycled states and recomputes them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mvlab.ops.scan.args import (
    ScanArgumentError,
    compute_dtype,
    epilogue,
    expand_groups,
    prepare_delta,
)
from mvlab.ops.scan.pool import POOL, release_workspace  # noqa: F401 - re-exported

LOG2_E = 1.0 / math.log(2.0)
# One loop step on fewer state elements than this is dispatch-bound: chunking would only add the
# carry and correction passes, so such problems run as one chunk (a sequential loop).
_SEQUENTIAL_BELOW = 1 << 16


def chunk_length(length: int, step_elements: int) -> int:
    """Tokens per chunk T for ``length`` tokens with batch*N*dim state elements per token.

    T = L (one chunk) when a step is cheap anyway; otherwise T ~ sqrt(L), which minimises the
    T + K loop steps of the two-level scan."""
    if length <= 1 or step_elements < _SEQUENTIAL_BELOW:
        return max(length, 1)
    return math.isqrt(length - 1) + 1


# ---- layout ---------------------------------------------------------------------------------------

def _to_time_major(x: torch.Tensor, T: int) -> torch.Tensor:
    """(batch, C, K*T) -> (T, K, batch, C): step t of every chunk is one contiguous slice."""
    batch, channels, Lp = x.shape
    return x.reshape(batch, channels, Lp // T, T).permute(3, 2, 0, 1).contiguous()


def _from_time_major(x: torch.Tensor) -> torch.Tensor:
    """(T, K, batch, C) -> (batch, C, K*T), the inverse of ``_to_time_major``."""
    T, K, batch, channels = x.shape
    return x.permute(2, 3, 1, 0).reshape(batch, channels, K * T)


def _bc_time_major(BC: torch.Tensor, dim: int, Lp: int, T: int) -> torch.Tensor:
    """B or C as a tensor broadcastable to (T, K, batch, N, dim)."""
    if BC.dim() == 2:  # constant (dim, N)
        return BC.t().contiguous()  # (N, dim)
    pad = Lp - BC.shape[-1]
    if BC.dim() == 3:  # (batch, N, L), shared by every channel
        return _to_time_major(F.pad(BC, (0, pad)), T)[..., None]  # (T, K, batch, N, 1)
    full = F.pad(expand_groups(BC, dim), (0, pad))  # (batch, dim, N, Lp)
    batch, _, N, _ = full.shape
    tm = _to_time_major(full.reshape(batch, dim * N, Lp), T)  # (T, K, batch, dim*N)
    return tm.reshape(*tm.shape[:3], dim, N).transpose(-1, -2).contiguous()


def _bc_grad(grad: torch.Tensor, BC_shape: torch.Size, L: int) -> torch.Tensor:
    """The inverse of ``_bc_time_major`` for a gradient already reduced to B/C's broadcast shape."""
    if len(BC_shape) == 2:
        return grad.t()
    if len(BC_shape) == 3:
        return _from_time_major(grad[..., 0])[..., :L]
    batch, groups, N, _ = BC_shape
    T, K, _, _, dim = grad.shape
    full = _from_time_major(grad.transpose(-1, -2).reshape(T, K, batch, dim * N))[..., :L]
    return full.reshape(batch, groups, dim // groups, N, L).sum(2)


# ---- contractions ---------------------------------------------------------------------------------

def _sum_over_state(X: torch.Tensor, W: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """sum_n X * W for X (T, K, batch, N, dim) and W broadcastable to it: (T, K, batch, 1, dim)."""
    if W.dim() == 5 and W.shape[-1] == 1:  # shared over channels: one batched matmul
        return torch.matmul(W.transpose(-1, -2), X, out=out)
    N = X.shape[3]
    Wn = W.unsqueeze(-2) if W.dim() == 2 else W  # (N, 1, dim) or (T, K, batch, N, dim)
    out = torch.mul(X[..., 0:1, :], Wn[..., 0:1, :] if W.dim() == 5 else Wn[0], out=out)
    for n in range(1, N):
        out.addcmul_(X[..., n:n + 1, :], Wn[..., n:n + 1, :] if W.dim() == 5 else Wn[n])
    return out


def _grad_bc(X: torch.Tensor, Y: torch.Tensor, BC_tm: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """dL/dB (or dL/dC) in B's time-major broadcast shape: X (T, K, batch, N, dim) against
    Y (T, K, batch, 1, dim), reduced over whatever B is broadcast along."""
    torch.mul(X, Y, out=scratch)
    if BC_tm.dim() == 2:  # constant (N, dim): reduce over tokens and batch
        return scratch.sum((0, 1, 2))
    if BC_tm.shape[-1] == 1:  # shared: reduce over channels
        return scratch.sum(-1, keepdim=True)
    return scratch.clone()


# ---- the two-level scan ---------------------------------------------------------------------------

def _scan_forward_(a: torch.Tensor, h: torch.Tensor, decay: torch.Tensor) -> None:
    """In place on h (T, K, ...): h_t <- a_t h_{t-1} + h_t in token order from h_{-1} = 0.
    ``decay`` is scratch of h's shape (unused when K == 1)."""
    T, K = h.shape[:2]
    hs, as_ = h.unbind(0), a.unbind(0)
    for t in range(1, T):
        torch.addcmul(hs[t], as_[t], hs[t - 1], out=hs[t])
    if K == 1:
        return
    ds = decay.unbind(0)
    ds[0].copy_(as_[0])  # running products of a inside each chunk: stay in (0, 1]
    for t in range(1, T):
        torch.mul(ds[t - 1], as_[t], out=ds[t])
    h_in = torch.zeros_like(h[0])  # (K, ...): the state entering each chunk
    for k in range(1, K):
        torch.addcmul(h[T - 1, k - 1], decay[T - 1, k - 1], h_in[k - 1], out=h_in[k])
    h[:, 1:].addcmul_(decay[:, 1:], h_in[1:])


def _scan_backward_(a: torch.Tensor, g: torch.Tensor, decay: torch.Tensor) -> None:
    """In place on g (T, K, ...): g_t <- g_t + a_{t+1} g_{t+1} in token order, the adjoint scan."""
    T, K = g.shape[:2]
    gs, as_ = g.unbind(0), a.unbind(0)
    for t in range(T - 2, -1, -1):
        torch.addcmul(gs[t], as_[t + 1], gs[t + 1], out=gs[t])
    if K == 1:
        return
    ds = decay.unbind(0)
    ds[T - 1].fill_(1)  # decay[t] = prod_{s=t+1}^{T-1} a_s inside the chunk
    for t in range(T - 2, -1, -1):
        torch.mul(ds[t + 1], as_[t + 1], out=ds[t])
    g_in = torch.zeros_like(g[0])  # the adjoint reaching each chunk's last token from the right
    for k in range(K - 2, -1, -1):
        first = torch.addcmul(g[0, k + 1], decay[0, k + 1], g_in[k + 1])
        torch.mul(a[0, k + 1], first, out=g_in[k])
    g[:, :-1].addcmul_(decay[:, :-1], g_in[:-1])


def _decays(delta_tm: torch.Tensor, A_tm: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """a = exp(delta * A) into ``out``; fp32 uses exp2 with log2(e) folded into A (2x faster)."""
    if out.dtype == torch.float32:
        return torch.mul(delta_tm, A_tm * LOG2_E, out=out).exp2_()
    return torch.mul(delta_tm, A_tm, out=out).exp_()


def _states(delta_tm, du_tm, A_tm, B_tm, a, h) -> None:
    """Fill a = exp(delta A) and h = the scan states, both (T, K, batch, N, dim)."""
    _decays(delta_tm, A_tm, a)
    torch.mul(du_tm, B_tm, out=h)
    scratch, _ = POOL.take(h.shape, h) if h.shape[1] > 1 else (h, 0)
    _scan_forward_(a, h, scratch)
    if scratch is not h:
        POOL.give(scratch)


class _ChunkedScan(torch.autograd.Function):
    """y_t = <h_t, C_t> for h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t; returns (y, h_{L-1}).

    Inputs are in the compute dtype; B and C keep the caller's layout (constant, shared or
    grouped) and their gradients are reduced back to it."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk):
        batch, dim, L = u.shape
        N = A.shape[1]
        T = max(1, min(chunk or chunk_length(L, batch * N * dim), L))
        K = -(-L // T)
        pad = K * T - L
        # Padding with delta = 0 gives a = 1 and x = 0: padded tokens leave the state alone.
        delta_tm = _to_time_major(F.pad(delta, (0, pad)), T)[..., None, :]  # (T, K, batch, 1, dim)
        u_tm = _to_time_major(F.pad(u, (0, pad)), T)[..., None, :]
        du_tm = delta_tm * u_tm
        A_tm = A.t().contiguous()  # (N, dim)
        B_tm, C_tm = _bc_time_major(B, dim, K * T, T), _bc_time_major(C, dim, K * T, T)

        shape = (T, K, batch, N, dim)
        (a, gen_a), (h, gen_h) = POOL.take(shape, u), POOL.take(shape, u)
        _states(delta_tm, du_tm, A_tm, B_tm, a, h)
        y = _from_time_major(_sum_over_state(h, C_tm)[..., 0, :])[..., :L]
        last = h[(L - 1) % T, (L - 1) // T].transpose(-1, -2).contiguous()  # (batch, dim, N)

        ctx.set_materialize_grads(False)
        ctx.save_for_backward(u_tm, delta_tm, A_tm, B_tm, C_tm)
        ctx.states = (a, gen_a, h, gen_h)
        ctx.layout = (L, B.shape, C.shape)
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        if dy is None and dlast is None:
            return None, None, None, None, None, None
        u_tm, delta_tm, A_tm, B_tm, C_tm = ctx.saved_tensors
        L, B_shape, C_shape = ctx.layout
        a, gen_a, h, gen_h = ctx.states
        T, K, batch, _, dim = u_tm.shape
        du_tm = delta_tm * u_tm
        if not (POOL.reclaim(a, gen_a) & POOL.reclaim(h, gen_h)):
            # The buffers were recycled since the forward (a retained graph run twice): recompute.
            (a, gen_a), (h, gen_h) = POOL.take(a.shape, a), POOL.take(h.shape, h)
            _states(delta_tm, du_tm, A_tm, B_tm, a, h)
        (g, _), (scratch, _) = POOL.take(h.shape, h), POOL.take(h.shape, h)

        dC = None
        if dy is not None:
            dy_tm = _to_time_major(F.pad(dy.to(h.dtype), (0, K * T - L)), T)[..., None, :]
            torch.mul(dy_tm, C_tm, out=g)
            dC = _bc_grad(_grad_bc(h, dy_tm, C_tm, scratch), C_shape, L)
        else:
            g.zero_()
        if dlast is not None:
            g[(L - 1) % T, (L - 1) // T] += dlast.to(g.dtype).transpose(-1, -2)
        _scan_backward_(a, g, scratch)

        gB = _sum_over_state(g, B_tm)  # (T, K, batch, 1, dim): dL/d(delta * u)
        dB = _bc_grad(_grad_bc(g, du_tm, B_tm, scratch), B_shape, L)
        # dL/d(delta A)_t = g_t * a_t * h_{t-1} with h_{-1} = 0, built in the scratch buffer.
        da = torch.mul(g, a, out=scratch)
        da[1:].mul_(h[:-1])
        da[0, 1:].mul_(h[T - 1, :-1])
        da[0, 0].zero_()
        ddelta_tm = _sum_over_state(da, A_tm).addcmul_(gB, u_tm)
        dA = torch.mul(da, delta_tm, out=g).sum((0, 1, 2)).t()  # g is free again by now
        POOL.give(g, scratch, a, h)

        ddelta = _from_time_major(ddelta_tm[..., 0, :])[..., :L]
        du = _from_time_major((gB * delta_tm)[..., 0, :])[..., :L]
        return du, ddelta, dA, dB, dC, None


def block_length(batch: int, d_state: int, dim: int) -> int:
    """Tokens per cache block: about 2^18 state values (1 MiB in fp32) per block buffer, so the
    few buffers one block works on stay in the CPU's L2/L3 cache between its passes."""
    return max(1, (1 << 18) // max(1, batch * d_state * dim))


class _BlockedScan(torch.autograd.Function):
    """The same function as ``_ChunkedScan``, for the CPU: the sequence is walked in blocks of
    tokens small enough that a block's decays, states and adjoints stay in cache; every
    elementwise pass and reduction runs once per block over all its tokens, and the recurrence
    inside a block is a loop of one fused multiply-add per token over (batch, N, dim)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, block):
        batch, dim, L = u.shape
        N = A.shape[1]
        T = max(1, min(block or block_length(batch, N, dim), L))
        delta_tm = _to_time_major(delta, L)[..., None, :]  # (L, 1, batch, 1, dim)
        u_tm = _to_time_major(u, L)[..., None, :]
        du_tm = delta_tm * u_tm
        A_tm = A.t().contiguous()  # (N, dim)
        B_tm, C_tm = _bc_time_major(B, dim, L, L), _bc_time_major(C, dim, L, L)

        shape = (L, 1, batch, N, dim)
        (a, gen_a), (h, gen_h) = POOL.take(shape, u), POOL.take(shape, u)
        y_tm = torch.empty(L, 1, batch, 1, dim, dtype=u.dtype)
        for s in range(0, L, T):
            e = min(s + T, L)
            ab, hb = a[s:e], h[s:e]
            _decays(delta_tm[s:e], A_tm, ab)
            torch.mul(du_tm[s:e], _block(B_tm, s, e), out=hb)
            hs, as_ = _steps(hb), _steps(ab)
            if s:
                torch.addcmul(hs[0], as_[0], h[s - 1].view(-1), out=hs[0])
            for t in range(1, e - s):  # out= is ~30% cheaper per call than addcmul_
                torch.addcmul(hs[t], as_[t], hs[t - 1], out=hs[t])
            _sum_over_state(hb, _block(C_tm, s, e), out=y_tm[s:e])
        y = _from_time_major(y_tm[..., 0, :])
        last = h[L - 1, 0].transpose(-1, -2).contiguous()  # (batch, dim, N)

        ctx.set_materialize_grads(False)
        ctx.save_for_backward(u_tm, delta_tm, A_tm, B_tm, C_tm)
        ctx.states = (a, gen_a, h, gen_h)
        ctx.layout = (L, T, B.shape, C.shape)
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        if dy is None and dlast is None:
            return None, None, None, None, None, None
        u_tm, delta_tm, A_tm, B_tm, C_tm = ctx.saved_tensors
        L, T, B_shape, C_shape = ctx.layout
        a, gen_a, h, gen_h = ctx.states
        du_tm = delta_tm * u_tm
        if not (POOL.reclaim(a, gen_a) & POOL.reclaim(h, gen_h)):
            # The buffers were recycled since the forward (a retained graph run twice): recompute.
            (a, gen_a), (h, gen_h) = POOL.take(a.shape, a), POOL.take(h.shape, h)
            _states(delta_tm, du_tm, A_tm, B_tm, a, h)
        block_shape = (T, *h.shape[1:])
        (g_buf, _), (s_buf, _) = POOL.take(block_shape, h), POOL.take(block_shape, h)
        dy_tm = _to_time_major(dy.to(h.dtype), L)[..., None, :] if dy is not None else None

        ddelta_tm, gBu_tm = torch.empty_like(delta_tm), torch.empty_like(delta_tm)
        dA = torch.zeros_like(A_tm)
        dB, dC = _BCGrad(B_tm, h), _BCGrad(C_tm, h)
        carry = None  # a_{e} g_{e}: what the block to the right passes to its left neighbour
        for s in reversed(range(0, L, T)):
            e = min(s + T, L)
            ab, hb = a[s:e], h[s:e]
            gb, sb = g_buf[:e - s], s_buf[:e - s]
            Cb, Bb = _block(C_tm, s, e), _block(B_tm, s, e)
            if dy_tm is not None:
                torch.mul(dy_tm[s:e], Cb, out=gb)
                dC.add(s, e, hb, dy_tm[s:e], sb)
            else:
                gb.zero_()
            if dlast is not None and e == L:
                gb[-1, 0] += dlast.to(gb.dtype).transpose(-1, -2)
            gs, as_ = _steps(gb), _steps(ab)
            if carry is not None:
                gs[-1].add_(carry.view(-1))
            for t in range(e - s - 2, -1, -1):
                torch.addcmul(gs[t], as_[t + 1], gs[t + 1], out=gs[t])
            carry = ab[0] * gb[0]

            gB = _sum_over_state(gb, Bb, out=gBu_tm[s:e])  # dL/d(delta * u)
            dB.add(s, e, gb, du_tm[s:e], sb)
            # dL/d(delta A)_t = g_t * a_t * h_{t-1}, with h_{-1} = 0.
            da = torch.mul(gb, ab, out=sb)
            da[1:].mul_(hb[:-1])
            if s:
                da[0].mul_(h[s - 1])
            else:
                da[0].zero_()
            _sum_over_state(da, A_tm, out=ddelta_tm[s:e]).addcmul_(gB, u_tm[s:e])
            dA += torch.mul(da, delta_tm[s:e], out=gb).sum((0, 1, 2))
        POOL.give(g_buf, s_buf, a, h)

        ddelta = _from_time_major(ddelta_tm[..., 0, :])
        du = _from_time_major((gBu_tm * delta_tm)[..., 0, :])
        return (du, ddelta, dA.t(), _bc_grad(dB.result(), B_shape, L),
                _bc_grad(dC.result(), C_shape, L) if dy_tm is not None else None, None)


def _steps(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One flat contiguous view per token of a time-major block (fewest dims = least overhead)."""
    return x.view(x.shape[0], -1).unbind(0)


def _block(BC_tm: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """Tokens s:e of a time-major B or C (a constant one has no token axis)."""
    return BC_tm if BC_tm.dim() == 2 else BC_tm[s:e]


class _BCGrad:
    """dL/dB (or dL/dC) gathered block by block in B's time-major broadcast shape."""

    def __init__(self, BC_tm: torch.Tensor, like: torch.Tensor) -> None:
        self.BC_tm = BC_tm
        if BC_tm.dim() == 2:
            self.full = torch.zeros_like(BC_tm)
        else:
            self.full = torch.empty(BC_tm.shape, dtype=like.dtype)

    def add(self, s: int, e: int, X: torch.Tensor, Y: torch.Tensor, scratch: torch.Tensor) -> None:
        """Add the contribution sum(X * Y) of tokens s:e, reduced over what B is shared by."""
        torch.mul(X, Y, out=scratch)
        if self.BC_tm.dim() == 2:
            self.full += scratch.sum((0, 1, 2))
        elif self.BC_tm.shape[-1] == 1:
            torch.sum(scratch, -1, keepdim=True, out=self.full[s:e])
        else:
            self.full[s:e] = scratch

    def result(self) -> torch.Tensor:
        return self.full


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                           delta_softplus=False, return_last_state=False, chunk: int | None = None,
                           method: str | None = None):
    """The selective scan in chunks of tokens (see ``selective_scan`` for the arguments).

    ``method``: "blocked" (the CPU default: cache-sized blocks, a fused multiply-add per token
    inside a block) or "two_level" (the default elsewhere: every chunk at once, then the carry).
    ``chunk`` forces the tokens per chunk or block (tests use it to exercise the carry); by
    default ``block_length`` / ``chunk_length`` pick it."""
    dtype = compute_dtype(u)
    x = u.to(dtype)
    delta_eff = prepare_delta(delta, delta_bias, delta_softplus, dtype)
    if method is None:
        method = "blocked" if u.device.type == "cpu" else "two_level"
    if method == "blocked":
        if u.device.type != "cpu":
            raise ScanArgumentError("selective_scan: the 'blocked' chunked method runs on the CPU only")
        scan = _BlockedScan
    elif method == "two_level":
        scan = _ChunkedScan
    else:
        raise ScanArgumentError(f"selective_scan: chunked method {method!r}: use 'blocked' or 'two_level'")
    y, last = scan.apply(x, delta_eff, A.to(dtype), B.to(dtype), C.to(dtype), chunk)
    out = epilogue(y, x, D, z, u.dtype)
    return (out, last) if return_last_state else out
