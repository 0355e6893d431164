"""The selective scan as fused Triton kernels, forward and backward (the GPU default).

One program owns one batch element and a block of channels. It walks the sequence in chunks of
CHUNK tokens; inside a chunk the (channels, d_state, tokens) tile lives in registers and the
recurrence is a ``tl.associative_scan`` over the token axis with the combine
(a1, x1), (a2, x2) -> (a1 a2, a2 x1 + x2): a product of decays in (0, 1] and a multiply-add, so no
division and no log space. The state carried between chunks is a (channels, d_state) register
tile. u, delta, B and C are read once; delta_bias, softplus and the D skip term are fused.

The forward stores the state entering every chunk (batch, dim, n_chunks, d_state), fp32. The
backward walks the chunks in reverse: it recomputes the chunk's states from that checkpoint, runs
the adjoint recurrence g_t = C_t dy_t + a_{t+1} g_{t+1} as a reverse associative scan, and writes
every gradient without atomics: reductions that cross programs (over channels for shared B/C,
over the batch for A, D, delta_bias and constant B/C) are written as per-program partial sums and
added up by PyTorch, which keeps the result deterministic.

Runs on CUDA tensors, and on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set
before triton is imported), which is how CI checks its numerics without a GPU. The SiLU(z) gate is
applied by the caller in PyTorch.
"""
from __future__ import annotations

import os

import torch

from mvlab.ops.scan.args import (
    ScanBackendUnavailable,
    compute_dtype,
    expand_groups,
    grads_of_present,
    or_empty,
)

try:  # triton is optional: the CPU install may not have it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None

# How B and C are laid out, passed to the kernels as a constexpr.
CONSTANT, SHARED, PER_CHANNEL = 0, 1, 2


def interpreter_enabled() -> bool:
    """Whether Triton runs kernels in its CPU interpreter in this process."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def is_available(device: torch.device | str) -> bool:
    """Triton can run the scan on ``device``: CUDA with triton, or CPU under the interpreter."""
    if triton is None:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and interpreter_enabled()


if triton is not None:

    @triton.jit
    def _combine(a1, x1, a2, x2):
        return a1 * a2, a2 * x1 + x2

    @triton.jit
    def _load_delta(delta_ptr, bias, offs, mask, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                    DT: tl.constexpr):
        """Effective delta for a (BLOCK_D, CHUNK) tile; 0 where masked (then a = 1 and x = 0)."""
        raw = tl.load(delta_ptr + offs, mask=mask, other=0.0).to(DT)
        if HAS_BIAS:
            raw = raw + bias[:, None]
        eff = raw
        if SOFTPLUS:
            small = tl.exp(tl.minimum(raw, 20.0))
            eff = tl.where(raw > 20.0, raw, tl.where(raw < -15.0, small, tl.log(1.0 + small)))
        return tl.where(mask, eff, 0.0), raw

    @triton.jit
    def _load_bc(ptr, b, offs_d, offs_n, t, dim, N, L, sb, sn, st, mask_d, mask_n, mask_t,
                 MODE: tl.constexpr, DT: tl.constexpr):
        """B or C as a tile broadcastable to (BLOCK_D, BLOCK_N, CHUNK)."""
        if MODE == 0:  # constant (dim, N)
            m = mask_d[:, None] & mask_n[None, :]
            v = tl.load(ptr + offs_d[:, None] * N + offs_n[None, :], mask=m, other=0.0)
            return v.to(DT)[:, :, None]
        elif MODE == 1:  # shared (batch, N, L)
            m = mask_n[:, None] & mask_t[None, :]
            v = tl.load(ptr + b * sb + offs_n[:, None] * sn + t[None, :] * st, mask=m, other=0.0)
            return v.to(DT)[None, :, :]
        else:  # per channel (batch, dim, N, L)
            m = mask_d[:, None, None] & mask_n[None, :, None] & mask_t[None, None, :]
            o = b * dim * N * L + offs_d[:, None, None] * (N * L) + offs_n[None, :, None] * L + t[None, None, :]
            return tl.load(ptr + o, mask=m, other=0.0).to(DT)

    @triton.jit
    def _decay(delta, A, USE_EXP2: tl.constexpr):
        """exp(delta * A) for delta (BLOCK_D, CHUNK) and A (BLOCK_D, BLOCK_N); A pre-scaled by
        log2(e) when USE_EXP2."""
        if USE_EXP2:
            return tl.exp2(delta[:, None, :] * A[:, :, None])
        else:
            return tl.exp(delta[:, None, :] * A[:, :, None])

    @triton.jit
    def _scan_fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr,
                         y_ptr, last_ptr, ckpt_ptr,
                         dim, N, L, n_chunks,
                         su_b, su_d, su_t, sd_b, sd_d, sd_t, sy_b, sy_d, sy_t, sB_b, sB_n, sB_t, sC_b, sC_n, sC_t,
                         B_MODE: tl.constexpr, C_MODE: tl.constexpr, HAS_D: tl.constexpr,
                         HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, USE_EXP2: tl.constexpr,
                         DT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                         CHUNK: tl.constexpr):
        b = tl.program_id(0)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, BLOCK_N)
        mask_d, mask_n = offs_d < dim, offs_n < N
        mask_dn = mask_d[:, None] & mask_n[None, :]
        A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0).to(DT)
        if USE_EXP2:
            A = A * 1.4426950408889634
        bias = tl.zeros([BLOCK_D], dtype=DT)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(DT)
        Dv = tl.zeros([BLOCK_D], dtype=DT)
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(DT)
        state = tl.zeros([BLOCK_D, BLOCK_N], dtype=DT)
        u_row = b * su_b + offs_d[:, None] * su_d
        d_row = b * sd_b + offs_d[:, None] * sd_d
        y_row = b * sy_b + offs_d[:, None] * sy_d
        for c in range(n_chunks):
            t = c * CHUNK + tl.arange(0, CHUNK)
            mask_t = t < L
            mask = mask_d[:, None] & mask_t[None, :]
            ck = ((b * dim + offs_d[:, None]) * n_chunks + c) * N + offs_n[None, :]
            tl.store(ckpt_ptr + ck, state, mask=mask_dn)
            delta, _ = _load_delta(delta_ptr, bias, d_row + t[None, :] * sd_t, mask, HAS_BIAS, SOFTPLUS, DT)
            u = tl.load(u_ptr + u_row + t[None, :] * su_t, mask=mask, other=0.0).to(DT)
            Bt = _load_bc(B_ptr, b, offs_d, offs_n, t, dim, N, L, sB_b, sB_n, sB_t, mask_d, mask_n, mask_t, B_MODE, DT)
            a = _decay(delta, A, USE_EXP2)
            x = (delta * u)[:, None, :] * Bt
            a_cum, h = tl.associative_scan((a, x), 2, _combine)
            h = h + a_cum * state[:, :, None]
            Ct = _load_bc(C_ptr, b, offs_d, offs_n, t, dim, N, L, sC_b, sC_n, sC_t, mask_d, mask_n, mask_t, C_MODE, DT)
            y = tl.sum(h * Ct, axis=1)
            if HAS_D:
                y = y + Dv[:, None] * u
            tl.store(y_ptr + y_row + t[None, :] * sy_t, y, mask=mask)
            # Past L, a = 1 and x = 0, so the last column holds the state after the last token.
            is_last = (tl.arange(0, CHUNK) == CHUNK - 1)[None, None, :]
            state = tl.sum(tl.where(is_last, h, 0.0), axis=2)
        tl.store(last_ptr + (b * dim + offs_d[:, None]) * N + offs_n[None, :], state, mask=mask_dn)

    @triton.jit
    def _scan_bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, ckpt_ptr,
                         dy_ptr, dlast_ptr,
                         du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
                         dim, N, L, n_chunks, n_dblocks,
                         su_b, su_d, su_t, sd_b, sd_d, sd_t, sy_b, sy_d, sy_t, sB_b, sB_n, sB_t, sC_b, sC_n, sC_t,
                         B_MODE: tl.constexpr, C_MODE: tl.constexpr, HAS_D: tl.constexpr,
                         HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, USE_EXP2: tl.constexpr,
                         HAS_DLAST: tl.constexpr, DT: tl.constexpr, BLOCK_D: tl.constexpr,
                         BLOCK_N: tl.constexpr, CHUNK: tl.constexpr):
        b = tl.program_id(0)
        pid_d = tl.program_id(1)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, BLOCK_N)
        mask_d, mask_n = offs_d < dim, offs_n < N
        mask_dn = mask_d[:, None] & mask_n[None, :]
        A_raw = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0).to(DT)
        A = A_raw
        if USE_EXP2:
            A = A_raw * 1.4426950408889634
        bias = tl.zeros([BLOCK_D], dtype=DT)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(DT)
        Dv = tl.zeros([BLOCK_D], dtype=DT)
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(DT)
        u_row = b * su_b + offs_d[:, None] * su_d
        d_row = b * sd_b + offs_d[:, None] * sd_d
        dy_row = b * sy_b + offs_d[:, None] * sy_d
        row = b * dim * L + offs_d[:, None] * L  # du, ddelta: contiguous
        dn_off = (b * dim + offs_d[:, None]) * N + offs_n[None, :]  # (batch, dim, N) partials
        dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=DT)
        dB_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=DT)
        dC_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=DT)
        dD_acc = tl.zeros([BLOCK_D], dtype=DT)
        dbias_acc = tl.zeros([BLOCK_D], dtype=DT)
        g_carry = tl.zeros([BLOCK_D, BLOCK_N], dtype=DT)  # adjoint at the next chunk's first token
        local = tl.arange(0, CHUNK)
        for i in range(n_chunks):
            c = n_chunks - 1 - i
            t = c * CHUNK + local
            mask_t = t < L
            mask = mask_d[:, None] & mask_t[None, :]
            ck = ((b * dim + offs_d[:, None]) * n_chunks + c) * N + offs_n[None, :]
            h_start = tl.load(ckpt_ptr + ck, mask=mask_dn, other=0.0).to(DT)

            delta, raw = _load_delta(delta_ptr, bias, d_row + t[None, :] * sd_t, mask, HAS_BIAS, SOFTPLUS, DT)
            u = tl.load(u_ptr + u_row + t[None, :] * su_t, mask=mask, other=0.0).to(DT)
            Bt = _load_bc(B_ptr, b, offs_d, offs_n, t, dim, N, L, sB_b, sB_n, sB_t, mask_d, mask_n, mask_t, B_MODE, DT)
            Ct = _load_bc(C_ptr, b, offs_d, offs_n, t, dim, N, L, sC_b, sC_n, sC_t, mask_d, mask_n, mask_t, C_MODE, DT)
            a = _decay(delta, A, USE_EXP2)
            # States before each token: a forward scan over the inputs shifted by one token.
            tp = t - 1
            mask_p = mask_d[:, None] & ((local > 0) & mask_t)[None, :]
            delta_p, _ = _load_delta(delta_ptr, bias, d_row + tp[None, :] * sd_t, mask_p, HAS_BIAS, SOFTPLUS, DT)
            u_p = tl.load(u_ptr + u_row + tp[None, :] * su_t, mask=mask_p, other=0.0).to(DT)
            B_p = _load_bc(B_ptr, b, offs_d, offs_n, tp, dim, N, L, sB_b, sB_n, sB_t, mask_d, mask_n,
                           (local > 0) & mask_t, B_MODE, DT)
            a_p = _decay(delta_p, A, USE_EXP2)
            ap_cum, h_prev = tl.associative_scan((a_p, (delta_p * u_p)[:, None, :] * B_p), 2, _combine)
            h_prev = h_prev + ap_cum * h_start[:, :, None]
            h = a * h_prev + (delta * u)[:, None, :] * Bt

            # The adjoint: g_t = C_t dy_t + a_{t+1} g_{t+1}, a reverse scan plus the carry.
            dy = tl.load(dy_ptr + dy_row + t[None, :] * sy_t, mask=mask, other=0.0).to(DT)
            beta = dy[:, None, :] * Ct
            if HAS_DLAST:
                dlast = tl.load(dlast_ptr + dn_off, mask=mask_dn, other=0.0).to(DT)
                beta = beta + tl.where((t == L - 1)[None, None, :], dlast[:, :, None], 0.0)
            tn = t + 1
            mask_nx = mask_d[:, None] & (tn < L)[None, :]
            delta_n, _ = _load_delta(delta_ptr, bias, d_row + tn[None, :] * sd_t, mask_nx, HAS_BIAS, SOFTPLUS, DT)
            alpha = tl.where((tn < L)[None, None, :], _decay(delta_n, A, USE_EXP2), 0.0)
            alpha_cum, g = tl.associative_scan((alpha, beta), 2, _combine, reverse=True)
            g = g + alpha_cum * g_carry[:, :, None]
            g_carry = tl.sum(tl.where((local == 0)[None, None, :], g, 0.0), axis=2)

            da = g * a * h_prev  # dL/d(delta * A)
            gB = tl.sum(g * Bt, axis=1)  # dL/d(delta * u), (BLOCK_D, CHUNK)
            ddelta = tl.sum(da * A_raw[:, :, None], axis=1) + gB * u
            if SOFTPLUS:
                ddelta = ddelta * tl.sigmoid(raw)
            ddelta = tl.where(mask, ddelta, 0.0)
            du = gB * delta
            if HAS_D:
                du = du + Dv[:, None] * dy
                dD_acc += tl.sum(dy * u, axis=1)
            tl.store(du_ptr + row + t[None, :], du, mask=mask)
            tl.store(ddelta_ptr + row + t[None, :], ddelta, mask=mask)
            dbias_acc += tl.sum(ddelta, axis=1)
            dA_acc += tl.sum(da * delta[:, None, :], axis=2)

            gx = g * (delta * u)[:, None, :]  # dL/dB before reducing over what B is shared by
            hy = h * dy[:, None, :]  # dL/dC likewise
            if B_MODE == 0:
                dB_acc += tl.sum(gx, axis=2)
            elif B_MODE == 1:
                o = ((pid_d * tl.num_programs(0) + b) * N + offs_n[:, None]) * L + t[None, :]
                tl.store(dB_ptr + o, tl.sum(gx, axis=0), mask=mask_n[:, None] & mask_t[None, :])
            else:
                o = b * dim * N * L + offs_d[:, None, None] * (N * L) + offs_n[None, :, None] * L + t[None, None, :]
                m3 = mask_d[:, None, None] & mask_n[None, :, None] & mask_t[None, None, :]
                tl.store(dB_ptr + o, gx, mask=m3)
            if C_MODE == 0:
                dC_acc += tl.sum(hy, axis=2)
            elif C_MODE == 1:
                o = ((pid_d * tl.num_programs(0) + b) * N + offs_n[:, None]) * L + t[None, :]
                tl.store(dC_ptr + o, tl.sum(hy, axis=0), mask=mask_n[:, None] & mask_t[None, :])
            else:
                o = b * dim * N * L + offs_d[:, None, None] * (N * L) + offs_n[None, :, None] * L + t[None, None, :]
                m3 = mask_d[:, None, None] & mask_n[None, :, None] & mask_t[None, None, :]
                tl.store(dC_ptr + o, hy, mask=m3)

        tl.store(dA_ptr + dn_off, dA_acc, mask=mask_dn)
        if B_MODE == 0:
            tl.store(dB_ptr + dn_off, dB_acc, mask=mask_dn)
        if C_MODE == 0:
            tl.store(dC_ptr + dn_off, dC_acc, mask=mask_dn)
        if HAS_D:
            tl.store(dD_ptr + b * dim + offs_d, dD_acc, mask=mask_d)
        if HAS_BIAS:
            tl.store(dbias_ptr + b * dim + offs_d, dbias_acc, mask=mask_d)


    @triton.jit
    def _load_bc_step(ptr, b, offs_d, offs_n, t, dim, N, L, sb, sn, st, mask_d, mask_n, valid,
                      MODE: tl.constexpr, DT: tl.constexpr):
        """B or C at token t as a tile broadcastable to (BLOCK_D, BLOCK_N)."""
        if MODE == 0:
            v = tl.load(ptr + offs_d[:, None] * N + offs_n[None, :],
                        mask=mask_d[:, None] & mask_n[None, :], other=0.0)
            return v.to(DT)
        elif MODE == 1:
            v = tl.load(ptr + b * sb + offs_n * sn + t * st, mask=mask_n & valid, other=0.0)
            return v.to(DT)[None, :]
        else:
            o = b * dim * N * L + offs_d[:, None] * (N * L) + offs_n[None, :] * L + t
            v = tl.load(ptr + o, mask=mask_d[:, None] & mask_n[None, :] & valid, other=0.0)
            return v.to(DT)

    @triton.jit
    def _delta_step(delta_ptr, bias, offs, mask, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                    DT: tl.constexpr):
        raw = tl.load(delta_ptr + offs, mask=mask, other=0.0).to(DT)
        if HAS_BIAS:
            raw = raw + bias
        eff = raw
        if SOFTPLUS:
            small = tl.exp(tl.minimum(raw, 20.0))
            eff = tl.where(raw > 20.0, raw, tl.where(raw < -15.0, small, tl.log(1.0 + small)))
        return tl.where(mask, eff, 0.0), raw

    @triton.jit
    def _scan_fwd_loop_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr,
                              y_ptr, last_ptr, ckpt_ptr,
                              dim, N, L, n_chunks,
                              su_b, su_d, su_t, sd_b, sd_d, sd_t, sy_b, sy_d, sy_t, sB_b, sB_n, sB_t, sC_b, sC_n, sC_t,
                              B_MODE: tl.constexpr, C_MODE: tl.constexpr, HAS_D: tl.constexpr,
                              HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, USE_EXP2: tl.constexpr,
                              DT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                              CHUNK: tl.constexpr, STAGES: tl.constexpr):
        """One token per step: the (BLOCK_D, BLOCK_N) state stays in registers across the loop.
        STAGES > 1 lets Triton software-pipeline the token loop: the next tokens' loads are in
        flight while the current one is computed (the walk is latency-bound, not compute-bound)."""
        b = tl.program_id(0)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, BLOCK_N)
        mask_d, mask_n = offs_d < dim, offs_n < N
        mask_dn = mask_d[:, None] & mask_n[None, :]
        A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0).to(DT)
        if USE_EXP2:
            A = A * 1.4426950408889634
        bias = tl.zeros([BLOCK_D], dtype=DT)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(DT)
        Dv = tl.zeros([BLOCK_D], dtype=DT)
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(DT)
        state = tl.zeros([BLOCK_D, BLOCK_N], dtype=DT)
        u_row = b * su_b + offs_d * su_d
        d_row = b * sd_b + offs_d * sd_d
        y_row = b * sy_b + offs_d * sy_d
        for c in range(n_chunks):
            ck = ((b * dim + offs_d[:, None]) * n_chunks + c) * N + offs_n[None, :]
            tl.store(ckpt_ptr + ck, state, mask=mask_dn)
            for j in tl.range(0, CHUNK, num_stages=STAGES):
                t = c * CHUNK + j
                valid = t < L
                mask = mask_d & valid
                dl, _ = _delta_step(delta_ptr, bias, d_row + t * sd_t, mask, HAS_BIAS, SOFTPLUS, DT)
                u = tl.load(u_ptr + u_row + t * su_t, mask=mask, other=0.0).to(DT)
                Bt = _load_bc_step(B_ptr, b, offs_d, offs_n, t, dim, N, L, sB_b, sB_n, sB_t, mask_d, mask_n, valid, B_MODE, DT)
                Ct = _load_bc_step(C_ptr, b, offs_d, offs_n, t, dim, N, L, sC_b, sC_n, sC_t, mask_d, mask_n, valid, C_MODE, DT)
                if USE_EXP2:
                    a = tl.exp2(dl[:, None] * A)
                else:
                    a = tl.exp(dl[:, None] * A)
                state = a * state + (dl * u)[:, None] * Bt
                y = tl.sum(state * Ct, axis=1)
                if HAS_D:
                    y = y + Dv * u
                tl.store(y_ptr + y_row + t * sy_t, y, mask=mask)
        tl.store(last_ptr + (b * dim + offs_d[:, None]) * N + offs_n[None, :], state, mask=mask_dn)

    @triton.jit
    def _scan_bwd_loop_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, ckpt_ptr,
                              dy_ptr, dlast_ptr, scratch_ptr,
                              du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
                              dim, N, L, n_chunks, n_dblocks,
                              su_b, su_d, su_t, sd_b, sd_d, sd_t, sy_b, sy_d, sy_t, sB_b, sB_n, sB_t, sC_b, sC_n, sC_t,
                              B_MODE: tl.constexpr, C_MODE: tl.constexpr, HAS_D: tl.constexpr,
                              HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, USE_EXP2: tl.constexpr,
                              HAS_DLAST: tl.constexpr, DT: tl.constexpr, BLOCK_D: tl.constexpr,
                              BLOCK_N: tl.constexpr, CHUNK: tl.constexpr):
        """Chunks in reverse: recompute the chunk's states from its checkpoint into a per-program
        scratch (L2-resident), then walk its tokens backwards with the adjoint in registers."""
        b = tl.program_id(0)
        pid_d = tl.program_id(1)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, BLOCK_N)
        mask_d, mask_n = offs_d < dim, offs_n < N
        mask_dn = mask_d[:, None] & mask_n[None, :]
        A_raw = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0).to(DT)
        A = A_raw
        if USE_EXP2:
            A = A_raw * 1.4426950408889634
        bias = tl.zeros([BLOCK_D], dtype=DT)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(DT)
        Dv = tl.zeros([BLOCK_D], dtype=DT)
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(DT)
        u_row = b * su_b + offs_d * su_d
        d_row = b * sd_b + offs_d * sd_d
        dy_row = b * sy_b + offs_d * sy_d
        row = b * dim * L + offs_d * L  # du, ddelta: contiguous
        dn_off = (b * dim + offs_d[:, None]) * N + offs_n[None, :]
        tile = tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + offs_n[None, :]
        scratch = scratch_ptr + (b * n_dblocks + pid_d) * (CHUNK + 1) * BLOCK_D * BLOCK_N + tile
        dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=DT)
        dB_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=DT)
        dC_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=DT)
        dD_acc = tl.zeros([BLOCK_D], dtype=DT)
        dbias_acc = tl.zeros([BLOCK_D], dtype=DT)
        gn = tl.zeros([BLOCK_D, BLOCK_N], dtype=DT)  # a_{t+1} g_{t+1}
        if HAS_DLAST:
            dlast = tl.load(dlast_ptr + dn_off, mask=mask_dn, other=0.0).to(DT)
        for i in range(n_chunks):
            c = n_chunks - 1 - i
            ck = ((b * dim + offs_d[:, None]) * n_chunks + c) * N + offs_n[None, :]
            h = tl.load(ckpt_ptr + ck, mask=mask_dn, other=0.0).to(DT)
            tl.store(scratch, h)
            for j in range(CHUNK):
                t = c * CHUNK + j
                valid = t < L
                mask = mask_d & valid
                dl, _ = _delta_step(delta_ptr, bias, d_row + t * sd_t, mask, HAS_BIAS, SOFTPLUS, DT)
                u = tl.load(u_ptr + u_row + t * su_t, mask=mask, other=0.0).to(DT)
                Bt = _load_bc_step(B_ptr, b, offs_d, offs_n, t, dim, N, L, sB_b, sB_n, sB_t, mask_d, mask_n, valid, B_MODE, DT)
                if USE_EXP2:
                    a = tl.exp2(dl[:, None] * A)
                else:
                    a = tl.exp(dl[:, None] * A)
                h = a * h + (dl * u)[:, None] * Bt
                tl.store(scratch + (j + 1) * BLOCK_D * BLOCK_N, h)
            tl.debug_barrier()
            for jj in range(CHUNK):
                j = CHUNK - 1 - jj
                t = c * CHUNK + j
                valid = t < L
                mask = mask_d & valid
                dl, raw = _delta_step(delta_ptr, bias, d_row + t * sd_t, mask, HAS_BIAS, SOFTPLUS, DT)
                u = tl.load(u_ptr + u_row + t * su_t, mask=mask, other=0.0).to(DT)
                dy = tl.load(dy_ptr + dy_row + t * sy_t, mask=mask, other=0.0).to(DT)
                Bt = _load_bc_step(B_ptr, b, offs_d, offs_n, t, dim, N, L, sB_b, sB_n, sB_t, mask_d, mask_n, valid, B_MODE, DT)
                Ct = _load_bc_step(C_ptr, b, offs_d, offs_n, t, dim, N, L, sC_b, sC_n, sC_t, mask_d, mask_n, valid, C_MODE, DT)
                h = tl.load(scratch + (j + 1) * BLOCK_D * BLOCK_N)
                h_prev = tl.load(scratch + j * BLOCK_D * BLOCK_N)
                if USE_EXP2:
                    a = tl.exp2(dl[:, None] * A)
                else:
                    a = tl.exp(dl[:, None] * A)
                g = dy[:, None] * Ct + gn
                if HAS_DLAST:
                    g = g + tl.where(t == L - 1, dlast, 0.0)
                g = tl.where(mask[:, None], g, 0.0)
                gn = a * g
                da = g * a * h_prev
                gB = tl.sum(g * Bt, axis=1)
                ddelta = tl.sum(da * A_raw, axis=1) + gB * u
                if SOFTPLUS:
                    ddelta = ddelta * tl.sigmoid(raw)
                ddelta = tl.where(mask, ddelta, 0.0)
                du = gB * dl
                if HAS_D:
                    du = du + Dv * dy
                    dD_acc += dy * u
                tl.store(du_ptr + row + t, du, mask=mask)
                tl.store(ddelta_ptr + row + t, ddelta, mask=mask)
                dbias_acc += ddelta
                dA_acc += da * dl[:, None]
                gx = g * (dl * u)[:, None]
                hy = h * dy[:, None]
                if B_MODE == 0:
                    dB_acc += gx
                elif B_MODE == 1:
                    o = ((pid_d * tl.num_programs(0) + b) * N + offs_n) * L + t
                    tl.store(dB_ptr + o, tl.sum(gx, axis=0), mask=mask_n & valid)
                else:
                    o = b * dim * N * L + offs_d[:, None] * (N * L) + offs_n[None, :] * L + t
                    tl.store(dB_ptr + o, gx, mask=mask_dn & valid)
                if C_MODE == 0:
                    dC_acc += hy
                elif C_MODE == 1:
                    o = ((pid_d * tl.num_programs(0) + b) * N + offs_n) * L + t
                    tl.store(dC_ptr + o, tl.sum(hy, axis=0), mask=mask_n & valid)
                else:
                    o = b * dim * N * L + offs_d[:, None] * (N * L) + offs_n[None, :] * L + t
                    tl.store(dC_ptr + o, hy, mask=mask_dn & valid)
            tl.debug_barrier()
        tl.store(dA_ptr + dn_off, dA_acc, mask=mask_dn)
        if B_MODE == 0:
            tl.store(dB_ptr + dn_off, dB_acc, mask=mask_dn)
        if C_MODE == 0:
            tl.store(dC_ptr + dn_off, dC_acc, mask=mask_dn)
        if HAS_D:
            tl.store(dD_ptr + b * dim + offs_d, dD_acc, mask=mask_d)
        if HAS_BIAS:
            tl.store(dbias_ptr + b * dim + offs_d, dbias_acc, mask=mask_d)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


# Tile budget: values per live (BLOCK_D, BLOCK_N, CHUNK) tensor, tokens per chunk, warps.
# ``scripts/gpu_check.py`` sweeps these on a real GPU; set TILE to what it finds best.
# H200, T stage 3, batch 128 (results/scan/gpu-h200/triton_tile_sweep.csv): 2048/32/4 was the
# fastest forward+backward of the settings tried.
TILE = {"elements": 2048, "chunk": 32, "num_warps": 4, "kernel": "chunk"}
# The "loop" kernels walk the tokens one at a time with a (LOOP_BLOCK_D, d_state) state in
# registers; they are chosen with TILE["kernel"] = "loop".
LOOP = {"block_d": 32, "chunk": 64, "num_warps": 1, "stages": 1}


def launch_config(dim: int, d_state: int, length: int,
                  kernel: str | None = None) -> tuple[int, int, int, int]:
    """(BLOCK_D, BLOCK_N, CHUNK, num_warps) of ``kernel`` ("chunk" or "loop"; default
    TILE["kernel"]): a (BLOCK_D, BLOCK_N, CHUNK) tile of about TILE["elements"] values per live
    tensor keeps the chunk in registers without spilling."""
    block_n = _next_pow2(max(d_state, 1))
    if (kernel or TILE.get("kernel")) == "loop":
        block_d = max(1, min(_next_pow2(dim), LOOP["block_d"]))
        return block_d, block_n, min(LOOP["chunk"], _next_pow2(max(length, 1))), LOOP["num_warps"]
    chunk = min(TILE["chunk"], _next_pow2(max(length, 1)))
    block_d = max(1, min(_next_pow2(dim), TILE["elements"] // (block_n * chunk)))
    return block_d, block_n, chunk, TILE["num_warps"]


def _mode(BC: torch.Tensor) -> int:
    return {2: CONSTANT, 3: SHARED}.get(BC.dim(), PER_CHANNEL)


def _plan(dim: int, d_state: int, length: int, chunk: int | None) -> tuple[int, bool]:
    """(tokens per chunk, loop kernel?) for a forward: fixed then and handed to the backward,
    whose state checkpoints must be read with the forward's chunking whatever TILE says later.
    ``chunk`` forces the tokens per chunk (tests use short ones to exercise the carry)."""
    loop = TILE.get("kernel") == "loop"
    return (_next_pow2(chunk) if chunk else launch_config(dim, d_state, length)[2]), loop


def _meta(u: torch.Tensor, A: torch.Tensor, B, C, D, delta_bias, softplus: bool,
          chunk: int, loop: bool) -> tuple[dict, int, int]:
    """Kernel constexprs, number of chunks and of channel blocks for these inputs."""
    _, dim, L = u.shape
    dtype = compute_dtype(u)
    BLOCK_D, BLOCK_N, _, num_warps = launch_config(dim, A.shape[1], L, "loop" if loop else "chunk")
    meta = dict(B_MODE=_mode(B), C_MODE=_mode(C), HAS_D=D is not None,
                HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(softplus),
                USE_EXP2=dtype == torch.float32,
                DT=(tl.float64 if dtype == torch.float64 else tl.float32) if triton else None,
                BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N, CHUNK=chunk, num_warps=num_warps)
    return meta, max(1, -(-L // chunk)), -(-dim // BLOCK_D)


def _strides(BC: torch.Tensor) -> tuple[int, int, int]:
    """(batch, state, token) strides of a shared (batch, N, L) B or C; the other forms are read
    as contiguous tensors."""
    return tuple(BC.stride()) if BC.dim() == 3 else (0, 0, 0)


def _new_output(u: torch.Tensor, gated: bool) -> torch.Tensor:
    """y's buffer: token-major when u is (the mixer's out_proj then reads it without a copy)."""
    batch, dim, L = u.shape
    dtype = compute_dtype(u) if gated else u.dtype
    if u.stride(1) == 1 and L > 1:
        return u.new_empty(batch, L, dim, dtype=dtype).transpose(1, 2)
    return u.new_empty(batch, dim, L, dtype=dtype)


def _forward(u, delta, A, B, C, D, delta_bias, softplus: bool, chunk: int, loop: bool,
             gated: bool):
    """(y, last_state, per-chunk state checkpoints). u, delta and a shared B/C may have any
    strides (the mixer's transposed views are read in place); A, D, delta_bias and constant or
    per-channel B/C are contiguous. y is in u's dtype, token-major when u is, or in the compute
    dtype when ``gated`` (the caller still multiplies by SiLU(z) in fp32)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    dtype = compute_dtype(u)
    meta, n_chunks, n_dblocks = _meta(u, A, B, C, D, delta_bias, softplus, chunk, loop)
    y = _new_output(u, gated)
    last = torch.empty(batch, dim, N, dtype=dtype, device=u.device)
    ckpt = torch.empty(batch, dim, n_chunks, N, dtype=dtype, device=u.device)
    dummy = A  # stands in for absent optional pointers; never read
    kernel = _scan_fwd_loop_kernel if loop else _scan_fwd_kernel
    if loop:
        meta = {**meta, "STAGES": LOOP.get("stages", 1)}
    kernel[(batch, n_dblocks)](
        u, delta, A, B, C, D if D is not None else dummy,
        delta_bias if delta_bias is not None else dummy, y, last, ckpt,
        dim, N, L, n_chunks, *u.stride(), *delta.stride(), *y.stride(), *_strides(B),
        *_strides(C), **meta)
    return y, last, ckpt


def _backward(u, delta, A, B, C, D, delta_bias, ckpt, dy, dlast, softplus: bool, chunk: int,
              loop: bool):
    """Gradients of (u, delta, A, B, C, D, delta_bias) in the inputs' dtypes (None for an absent
    D or delta_bias). ``dy`` or ``dlast`` may be None (no gradient reaches that output)."""
    meta, n_chunks, n_dblocks = _meta(u, A, B, C, D, delta_bias, softplus, chunk, loop)
    assert ckpt.shape[2] == n_chunks, (ckpt.shape, n_chunks)
    batch, dim, L = u.shape
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
    grads = (du, ddelta, dA, dB, dC, dD, dbias, dim, N, L, n_chunks, n_dblocks,
             *u.stride(), *delta.stride(), *dy.stride(), *_strides(B), *_strides(C))
    if loop:
        scratch = torch.empty(batch * n_dblocks * (meta["CHUNK"] + 1) * meta["BLOCK_D"] * meta["BLOCK_N"],
                              dtype=dtype, device=dev)
        _scan_bwd_loop_kernel[(batch, n_dblocks)](*common, scratch, *grads,
                                                  HAS_DLAST=dlast is not None, **meta)
    else:
        _scan_bwd_kernel[(batch, n_dblocks)](*common, *grads, HAS_DLAST=dlast is not None, **meta)

    def reduce(grad: torch.Tensor, mode: int) -> torch.Tensor:
        return grad.sum(0) if mode in (CONSTANT, SHARED) else grad

    return (du, ddelta, dA.sum(0).to(A.dtype),
            reduce(dB, meta["B_MODE"]).to(B.dtype), reduce(dC, meta["C_MODE"]).to(C.dtype),
            dD.sum(0).to(D.dtype) if D is not None else None,
            dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None)


class _TritonScan(torch.autograd.Function):
    """Eager autograd: y = scan(u, delta, A, B, C) + D u, delta_bias/softplus fused; (y, last)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, softplus, chunk, loop, gated):
        y, last, ckpt = _forward(u, delta, A, B, C, D, delta_bias, softplus, chunk, loop, gated)
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, ckpt)
        ctx.config = (softplus, chunk, loop)
        ctx.set_materialize_grads(False)
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        return (*_backward(*ctx.saved_tensors, dy, dlast, *ctx.config), None, None, None, None)


# The same kernels as torch.library custom ops, which torch.compile traces as single graph nodes
# (``_TritonScan`` above would be a graph break per mixer). Eager calls keep the Function: a
# custom op's Python dispatch costs more per call than the kernel does at small shapes.
@torch.library.custom_op("mvlab::scan_triton", mutates_args=())
def _scan_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
             C: torch.Tensor, D: torch.Tensor | None, delta_bias: torch.Tensor | None,
             softplus: bool, chunk: int, loop: bool, gated: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _forward(u, delta, A, B, C, D, delta_bias, softplus, chunk, loop, gated)


@_scan_op.register_fake
def _scan_op_fake(u, delta, A, B, C, D, delta_bias, softplus, chunk, loop, gated):
    batch, dim, L = u.shape
    N = A.shape[1]
    dtype = compute_dtype(u)
    _, n_chunks, _ = _meta(u, A, B, C, D, delta_bias, softplus, chunk, loop)
    return (_new_output(u, gated), u.new_empty(batch, dim, N, dtype=dtype),
            u.new_empty(batch, dim, n_chunks, N, dtype=dtype))


@torch.library.custom_op("mvlab::scan_triton_backward", mutates_args=())
def _scan_backward_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                      C: torch.Tensor, D: torch.Tensor | None, delta_bias: torch.Tensor | None,
                      ckpt: torch.Tensor, dy: torch.Tensor, dlast: torch.Tensor,
                      softplus: bool, chunk: int, loop: bool) -> list[torch.Tensor]:
    grads = _backward(u, delta, A, B, C, D, delta_bias, ckpt, dy, dlast, softplus, chunk, loop)
    return [or_empty(g, u) for g in grads]


@_scan_backward_op.register_fake
def _scan_backward_op_fake(u, delta, A, B, C, D, delta_bias, ckpt, dy, dlast, softplus, chunk,
                           loop):
    return [or_empty(t, u) if t is None else t.new_empty(t.shape)  # all contiguous
            for t in (u, delta, A, B, C, D, delta_bias)]


def _scan_op_setup(ctx, inputs, output):
    u, delta, A, B, C, D, delta_bias, softplus, chunk, loop, _gated = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, output[2])
    ctx.config = (softplus, chunk, loop)


def _scan_op_backward(ctx, dy, dlast, _dckpt):
    u, delta, A, B, C, D, delta_bias, ckpt = ctx.saved_tensors
    grads = _scan_backward_op(u, delta, A, B, C, D, delta_bias, ckpt, dy, dlast, *ctx.config)
    return grads_of_present(grads, (u, delta, A, B, C, D, delta_bias)) + (None,) * 4


_scan_op.register_autograd(_scan_op_backward, setup_context=_scan_op_setup)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, return_last_state=False, chunk: int | None = None):
    """The selective scan as fused Triton kernels (see ``selective_scan`` for the arguments).

    ``chunk`` forces the tokens per chunk (rounded up to a power of two); tests use it."""
    if not torch.compiler.is_compiling() and not is_available(u.device):
        raise ScanBackendUnavailable(
            f"selective_scan: the 'triton' backend cannot run on {u.device}: it needs triton and a "
            "CUDA device, or TRITON_INTERPRET=1 set before triton is imported (CPU, slow). "
            "Use backend='auto' or 'chunked'.")
    dim = u.shape[1]
    dtype = compute_dtype(u)
    if B.dim() == 4:  # groups are expanded by PyTorch, which also sums their gradients back
        B = expand_groups(B, dim)
    if C.dim() == 4:
        C = expand_groups(C, dim)
    # u, delta and shared B/C are read in place whatever their strides (no layout copies)
    args = (u, delta, A.contiguous(), B if B.dim() == 3 else B.contiguous(),
            C if C.dim() == 3 else C.contiguous(), D.contiguous() if D is not None else None,
            delta_bias.contiguous() if delta_bias is not None else None, bool(delta_softplus),
            *_plan(dim, A.shape[1], u.shape[2], chunk), z is not None)
    if torch.compiler.is_compiling():
        y, last, _ = _scan_op(*args)
    else:
        y, last = _TritonScan.apply(*args)
    if z is not None:
        y = (y * torch.nn.functional.silu(z.to(dtype))).to(u.dtype)
    return (y, last) if return_last_state else y


__all__ = ["selective_scan_triton", "is_available", "interpreter_enabled", "launch_config"]
