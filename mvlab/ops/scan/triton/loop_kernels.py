"""The loop kernels: one token per step, the (BLOCK_D, d_state) state in registers.

Same inputs, outputs, per-chunk state checkpoints and per-program partial sums as the chunk
kernels (``chunk_kernels.py``). The token walk is latency-bound rather than compute-bound;
which family is faster depends on the GPU and the shape (``scripts/gpu_check.py`` times both).

Imported only where triton is (``launch.py``).
"""
import triton
import triton.language as tl

from mvlab.ops.scan.triton.common import LOG2E, MODE_CONSTANT, MODE_SHARED, softplus


@triton.jit
def _load_bc_step(ptr, b, offs_d, offs_n, t, dim, N, L, sb, sn, st, mask_d, mask_n, valid,
                  MODE: tl.constexpr, DT: tl.constexpr):
    """B or C at token t as a tile broadcastable to (BLOCK_D, BLOCK_N)."""
    if MODE == MODE_CONSTANT:
        v = tl.load(ptr + offs_d[:, None] * N + offs_n[None, :],
                    mask=mask_d[:, None] & mask_n[None, :], other=0.0)
        return v.to(DT)
    elif MODE == MODE_SHARED:
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
        eff = softplus(raw)
    return tl.where(mask, eff, 0.0), raw

@triton.jit
def forward_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr,
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
        A = A * LOG2E
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
def backward_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, ckpt_ptr,
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
        A = A_raw * LOG2E
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
            if B_MODE == MODE_CONSTANT:
                dB_acc += gx
            elif B_MODE == MODE_SHARED:
                o = ((pid_d * tl.num_programs(0) + b) * N + offs_n) * L + t
                tl.store(dB_ptr + o, tl.sum(gx, axis=0), mask=mask_n & valid)
            else:
                o = b * dim * N * L + offs_d[:, None] * (N * L) + offs_n[None, :] * L + t
                tl.store(dB_ptr + o, gx, mask=mask_dn & valid)
            if C_MODE == MODE_CONSTANT:
                dC_acc += hy
            elif C_MODE == MODE_SHARED:
                o = ((pid_d * tl.num_programs(0) + b) * N + offs_n) * L + t
                tl.store(dC_ptr + o, tl.sum(hy, axis=0), mask=mask_n & valid)
            else:
                o = b * dim * N * L + offs_d[:, None] * (N * L) + offs_n[None, :] * L + t
                tl.store(dC_ptr + o, hy, mask=mask_dn & valid)
        tl.debug_barrier()
    tl.store(dA_ptr + dn_off, dA_acc, mask=mask_dn)
    if B_MODE == MODE_CONSTANT:
        tl.store(dB_ptr + dn_off, dB_acc, mask=mask_dn)
    if C_MODE == MODE_CONSTANT:
        tl.store(dC_ptr + dn_off, dC_acc, mask=mask_dn)
    if HAS_D:
        tl.store(dD_ptr + b * dim + offs_d, dD_acc, mask=mask_d)
    if HAS_BIAS:
        tl.store(dbias_ptr + b * dim + offs_d, dbias_acc, mask=mask_d)
