"""The chunk kernels: the recurrence as an associative scan over a chunk of tokens.

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

Imported only where triton is (``launch.py``).
"""
import triton
import triton.language as tl

from mvlab.ops.scan.triton.common import LOG2E, MODE_CONSTANT, MODE_SHARED, softplus


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
        eff = softplus(raw)
    return tl.where(mask, eff, 0.0), raw

@triton.jit
def _load_bc(ptr, b, offs_d, offs_n, t, dim, N, L, sb, sn, st, mask_d, mask_n, mask_t,
             MODE: tl.constexpr, DT: tl.constexpr):
    """B or C as a tile broadcastable to (BLOCK_D, BLOCK_N, CHUNK)."""
    if MODE == MODE_CONSTANT:  # constant (dim, N)
        m = mask_d[:, None] & mask_n[None, :]
        v = tl.load(ptr + offs_d[:, None] * N + offs_n[None, :], mask=m, other=0.0)
        return v.to(DT)[:, :, None]
    elif MODE == MODE_SHARED:  # shared (batch, N, L)
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
def forward_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr,
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
        A = A * LOG2E
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
def backward_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, ckpt_ptr,
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
        A = A_raw * LOG2E
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
        if B_MODE == MODE_CONSTANT:
            dB_acc += tl.sum(gx, axis=2)
        elif B_MODE == MODE_SHARED:
            o = ((pid_d * tl.num_programs(0) + b) * N + offs_n[:, None]) * L + t[None, :]
            tl.store(dB_ptr + o, tl.sum(gx, axis=0), mask=mask_n[:, None] & mask_t[None, :])
        else:
            o = b * dim * N * L + offs_d[:, None, None] * (N * L) + offs_n[None, :, None] * L + t[None, None, :]
            m3 = mask_d[:, None, None] & mask_n[None, :, None] & mask_t[None, None, :]
            tl.store(dB_ptr + o, gx, mask=m3)
        if C_MODE == MODE_CONSTANT:
            dC_acc += tl.sum(hy, axis=2)
        elif C_MODE == MODE_SHARED:
            o = ((pid_d * tl.num_programs(0) + b) * N + offs_n[:, None]) * L + t[None, :]
            tl.store(dC_ptr + o, tl.sum(hy, axis=0), mask=mask_n[:, None] & mask_t[None, :])
        else:
            o = b * dim * N * L + offs_d[:, None, None] * (N * L) + offs_n[None, :, None] * L + t[None, None, :]
            m3 = mask_d[:, None, None] & mask_n[None, :, None] & mask_t[None, None, :]
            tl.store(dC_ptr + o, hy, mask=m3)

    tl.store(dA_ptr + dn_off, dA_acc, mask=mask_dn)
    if B_MODE == MODE_CONSTANT:
        tl.store(dB_ptr + dn_off, dB_acc, mask=mask_dn)
    if C_MODE == MODE_CONSTANT:
        tl.store(dC_ptr + dn_off, dC_acc, mask=mask_dn)
    if HAS_D:
        tl.store(dD_ptr + b * dim + offs_d, dD_acc, mask=mask_d)
    if HAS_BIAS:
        tl.store(dbias_ptr + b * dim + offs_d, dbias_acc, mask=mask_d)
