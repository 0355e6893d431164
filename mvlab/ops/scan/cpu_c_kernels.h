/* The selective-scan kernels, written once for a compute type REAL and instantiated by cpu_c.c
 * (float and double). Expects REAL, SFX(name) (name with a type suffix), EXP(x), SOFTPLUS(x) and
 * SPECIALISED (whether to compile the common d_state values as constants).
 *
 * Per row (batch element b, channel d), with x_t = softplus?(delta_t + bias) and a_tn = exp(x_t A_n):
 *   h_tn = a_tn h_{t-1,n} + x_t u_t B_tn ;  ys_t = sum_n h_tn C_tn ;  y_t = (ys_t + D u_t) silu(z_t)
 * Backward, with g the adjoint of h (g_{L-1} starts from d loss / d last_state):
 *   g_tn = dys_t C_tn + a_{t+1,n} g_{t+1,n}
 *   dB_tn += g_tn x_t u_t ; dC_tn += dys_t h_tn ; dA_n += g_tn a_tn h_{t-1,n} x_t
 *   dx_t = sum_n g_tn (u_t B_tn + A_n a_tn h_{t-1,n}) ; du_t = x_t sum_n g_tn B_tn + D dys_t
 *
 * Rows are processed LANES at a time, one row per vector lane: a block's inputs are transposed
 * into token-major scratch (token t of all lanes contiguous), so every step is lane-parallel
 * arithmetic with no reduction across lanes, whatever d_state is. B and C values of a token are
 * broadcast from memory when all lanes read the same B and C rows (the usual case), else spread
 * over the lanes first;
 * gradients of B and C are summed per lane and reduced across lanes only when the block's rows
 * move to another B/C row (once per batch element for shared B/C).
 */

#ifndef MVLAB_KERNEL_HELPERS
#define MVLAB_KERNEL_HELPERS
#define MVLAB_LANES 8
/* Values of the decays and states of one segment of a block in the backward (2 T N LANES);
 * longer rows are recomputed segment by segment from checkpoints. */
#define MVLAB_SEGMENT_VALUES 32768
#define MVLAB_ALWAYS_INLINE inline __attribute__((always_inline))
/* Sums over the state are kept in this many partial sums (breaks the dependency chain). */
#define MVLAB_SPLIT 4
#define MVLAB_SUM_SPLIT(acc, j) (((acc)[0][j] + (acc)[1][j]) + ((acc)[2][j] + (acc)[3][j]))

static int64_t mvlab_bc_numel(const bc_layout *l, int64_t batch, int64_t dim, int64_t length,
                              int64_t d_state) {
    int64_t groups = dim / l->channels_per_group;
    return (batch - 1) * l->batch_stride + (groups - 1) * l->group_stride
           + (length - 1) * l->token_stride + d_state;
}

static int64_t mvlab_bc_offset(const bc_layout *l, int64_t row, int64_t dim) {
    return (row / dim) * l->batch_stride + ((row % dim) / l->channels_per_group) * l->group_stride;
}

/* Offsets of B (or C) for the lanes of the block starting at row r0 with `active` rows (padding
 * lanes read lane 0's); returns whether all lanes read the same row. */
static int mvlab_lane_offsets(const bc_layout *l, int64_t r0, int active, int64_t dim,
                              int64_t *off) {
    int uniform = 1;
    for (int j = 0; j < MVLAB_LANES; ++j) {
        off[j] = mvlab_bc_offset(l, j < active ? r0 + j : r0, dim);
        uniform &= off[j] == off[0];
    }
    return uniform;
}

/* Blocks [*lo, *hi) of thread `tid` in a team of `team`: contiguous, equal shares. */
static void mvlab_blocks_of(int64_t blocks, int tid, int team, int64_t *lo, int64_t *hi) {
    *lo = blocks * tid / team;
    *hi = blocks * (tid + 1) / team;
}

static int mvlab_team_size(int64_t requested, int64_t blocks) {
    int64_t t = requested < 1 ? 1 : requested;
    return (int)(t > blocks ? (blocks > 0 ? blocks : 1) : t);
}

#ifdef _OPENMP
#define MVLAB_THREAD_ID() omp_get_thread_num()
#define MVLAB_TEAM_SIZE() omp_get_num_threads()
#else
#define MVLAB_THREAD_ID() 0
#define MVLAB_TEAM_SIZE() 1
#endif
#endif /* MVLAB_KERNEL_HELPERS */

#define LANES MVLAB_LANES

static inline REAL SFX(sigmoid)(REAL x) { return (REAL)1 / ((REAL)1 + EXP(-x)); }

/* Rows <-> token-major lane scratch (token t of all lanes contiguous). Full blocks go through
 * 8 x 8 tiles, which the compiler turns into vector loads and shuffles. */
static void SFX(to_lanes)(const REAL *src, int64_t r0, int active, int64_t L, REAL *restrict dst) {
    const REAL *rows = src + r0 * L;
    int64_t t = 0;
    if (active == LANES) {
        for (; t + 8 <= L; t += 8) {
            REAL tile[LANES][8];
            for (int j = 0; j < LANES; ++j)
                for (int k = 0; k < 8; ++k) tile[j][k] = rows[j * L + t + k];
            for (int k = 0; k < 8; ++k)
                for (int j = 0; j < LANES; ++j) dst[(t + k) * LANES + j] = tile[j][k];
        }
    }
    for (; t < L; ++t)
        for (int j = 0; j < LANES; ++j) dst[t * LANES + j] = j < active ? rows[j * L + t] : 0;
}

static void SFX(from_lanes)(const REAL *restrict src, int active, int64_t L, REAL *restrict rows) {
    int64_t t = 0;
    if (active == LANES) {
        for (; t + 8 <= L; t += 8) {
            REAL tile[8][LANES];
            for (int k = 0; k < 8; ++k)
                for (int j = 0; j < LANES; ++j) tile[k][j] = src[(t + k) * LANES + j];
            for (int j = 0; j < LANES; ++j)
                for (int k = 0; k < 8; ++k) rows[j * L + t + k] = tile[k][j];
        }
    }
    for (; t < L; ++t)
        for (int j = 0; j < active; ++j) rows[j * L + t] = src[t * LANES + j];
}

/* The lanes' A (N x LANES; padding lanes 0). */
static void SFX(load_A)(const scan_problem *p, int64_t r0, int active, REAL *restrict At) {
    const int64_t N = p->d_state;
    for (int j = 0; j < LANES; ++j) {
        const int64_t d = (r0 + (j < active ? j : 0)) % p->dim;
        for (int64_t n = 0; n < N; ++n) At[n * LANES + j] = j < active ? ((const REAL *)p->A)[d * N + n] : 0;
    }
}

/* u and x = softplus?(delta + bias) of a block, token-major (L x LANES). */
static void SFX(load_lanes)(const scan_problem *p, int64_t r0, int active, REAL *restrict U,
                            REAL *restrict X) {
    const int64_t L = p->length;
    SFX(to_lanes)((const REAL *)p->u, r0, active, L, U);
    SFX(to_lanes)((const REAL *)p->delta, r0, active, L, X);
    REAL bias[LANES];
    for (int j = 0; j < LANES; ++j) {
        const int64_t d = (r0 + (j < active ? j : 0)) % p->dim;
        bias[j] = p->delta_bias ? ((const REAL *)p->delta_bias)[d] : (REAL)0;
    }
    if (p->softplus) {
        for (int64_t t = 0; t < L; ++t) {
#pragma omp simd
            for (int j = 0; j < LANES; ++j) X[t * LANES + j] = SOFTPLUS(X[t * LANES + j] + bias[j]);
        }
    } else {
        for (int64_t t = 0; t < L; ++t) {
#pragma omp simd
            for (int j = 0; j < LANES; ++j) X[t * LANES + j] += bias[j];
        }
    }
}

/* B or C values of token t for every lane into V (N x LANES). */
static MVLAB_ALWAYS_INLINE void SFX(spread)(const REAL *restrict base, const int64_t *off, int uniform,
                                            int64_t t, int64_t stride, const int64_t N,
                                            REAL *restrict V) {
    if (uniform) {
        const REAL *restrict src = base + off[0] + t * stride;
        for (int64_t n = 0; n < N; ++n) {
            const REAL v = src[n];
#pragma omp simd
            for (int j = 0; j < LANES; ++j) V[n * LANES + j] = v;
        }
    } else {
        for (int j = 0; j < LANES; ++j) {
            const REAL *restrict src = base + off[j] + t * stride;
            for (int64_t n = 0; n < N; ++n) V[n * LANES + j] = src[n];
        }
    }
}

/* Decays and states of tokens [s, e) of a block into a, h ((e - s) x N x LANES), from the state
 * h_in entering token s. */
static MVLAB_ALWAYS_INLINE void SFX(recompute)(const scan_problem *p, const REAL *restrict X,
                                               const REAL *restrict U, const REAL *restrict At,
                                               const int64_t *offB, int uniformB,
                                               const REAL *restrict h_in, int64_t s, int64_t e,
                                               const int64_t N, const int bcast, REAL *restrict Bv,
                                               REAL *restrict a, REAL *restrict h) {
    const int64_t bst = p->B_layout.token_stride;
    if (!bcast && bst == 0) SFX(spread)((const REAL *)p->B, offB, uniformB, 0, 0, N, Bv);
    for (int64_t t = s; t < e; ++t) {
        if (!bcast && bst) SFX(spread)((const REAL *)p->B, offB, uniformB, t, bst, N, Bv);
        const REAL *restrict Bs = (const REAL *)p->B + offB[0] + t * bst; /* bcast: all lanes */
        const REAL *restrict xt = X + t * LANES, *restrict ut = U + t * LANES;
        const REAL *restrict hp = t == s ? h_in : h + (t - s - 1) * N * LANES;
        REAL *restrict at = a + (t - s) * N * LANES, *restrict ht = h + (t - s) * N * LANES;
        REAL xu[LANES];
#pragma omp simd
        for (int j = 0; j < LANES; ++j) xu[j] = xt[j] * ut[j];
        _Pragma("GCC unroll 16") for (int64_t n = 0; n < N; ++n) {
#pragma omp simd
            for (int j = 0; j < LANES; ++j) {
                const int64_t i = n * LANES + j;
                at[i] = EXP(xt[j] * At[i]);
                ht[i] = at[i] * hp[i] + xu[j] * (bcast ? Bs[n] : Bv[i]);
            }
        }
    }
}

/* The forward of one block of rows [r0, r0 + active). */
static MVLAB_ALWAYS_INLINE void SFX(forward_block)(const scan_problem *p, int64_t r0, int active,
                                                   const int64_t N, const int bcast,
                                                   REAL *restrict ws) {
    const int64_t L = p->length, dim = p->dim;
    const int64_t bst = p->B_layout.token_stride, cst = p->C_layout.token_stride;
    REAL *restrict U = ws, *restrict X = U + L * LANES, *restrict Y = X + L * LANES;
    REAL *restrict H = Y + L * LANES, *restrict At = H + N * LANES;
    if (p->x_lanes) { /* kept for the backward */
        U = (REAL *)p->u_lanes + (r0 / LANES) * L * LANES;
        X = (REAL *)p->x_lanes + (r0 / LANES) * L * LANES;
    }
    REAL *restrict Bv = At + N * LANES, *restrict Cv = Bv + N * LANES;
    int64_t offB[LANES], offC[LANES];
    const int uniformB = mvlab_lane_offsets(&p->B_layout, r0, active, dim, offB);
    const int uniformC = mvlab_lane_offsets(&p->C_layout, r0, active, dim, offC);
    const REAL *Bbase = (const REAL *)p->B, *Cbase = (const REAL *)p->C;

    SFX(load_lanes)(p, r0, active, U, X);
    SFX(load_A)(p, r0, active, At);
    for (int64_t i = 0; i < N * LANES; ++i) H[i] = 0;
    if (!bcast && bst == 0) SFX(spread)(Bbase, offB, uniformB, 0, 0, N, Bv);
    if (!bcast && cst == 0) SFX(spread)(Cbase, offC, uniformC, 0, 0, N, Cv);
    for (int64_t t = 0; t < L; ++t) {
        if (!bcast && bst) SFX(spread)(Bbase, offB, uniformB, t, bst, N, Bv);
        if (!bcast && cst) SFX(spread)(Cbase, offC, uniformC, t, cst, N, Cv);
        const REAL *restrict Bs = Bbase + offB[0] + t * bst, *restrict Cs = Cbase + offC[0] + t * cst;
        const REAL *restrict xt = X + t * LANES, *restrict ut = U + t * LANES;
        /* ys = sum_n h_n C_n in MVLAB_SPLIT partial sums: one chain of N dependent additions
         * per token would be the critical path of the whole loop */
        REAL acc[MVLAB_SPLIT][LANES], xu[LANES];
        for (int k = 0; k < MVLAB_SPLIT; ++k) {
#pragma omp simd
            for (int j = 0; j < LANES; ++j) acc[k][j] = 0;
        }
#pragma omp simd
        for (int j = 0; j < LANES; ++j) xu[j] = xt[j] * ut[j];
        _Pragma("GCC unroll 16") for (int64_t n = 0; n < N; ++n) {
#pragma omp simd
            for (int j = 0; j < LANES; ++j) {
                const int64_t i = n * LANES + j;
                H[i] = EXP(xt[j] * At[i]) * H[i] + xu[j] * (bcast ? Bs[n] : Bv[i]);
                acc[n % MVLAB_SPLIT][j] += H[i] * (bcast ? Cs[n] : Cv[i]);
            }
        }
#pragma omp simd
        for (int j = 0; j < LANES; ++j) Y[t * LANES + j] = MVLAB_SUM_SPLIT(acc, j);
    }

    SFX(from_lanes)(Y, active, L, (REAL *)p->y + r0 * L);
    for (int j = 0; j < active; ++j) {
        const int64_t row = r0 + j, d = row % dim;
        const REAL *restrict u = (const REAL *)p->u + row * L;
        REAL *restrict y = (REAL *)p->y + row * L;
        if (p->last_state) {
            REAL *restrict last = (REAL *)p->last_state + row * N;
            for (int64_t n = 0; n < N; ++n) last[n] = H[n * LANES + j];
        }
        if (p->D) {
            const REAL Dd = ((const REAL *)p->D)[d];
#pragma omp simd
            for (int64_t t = 0; t < L; ++t) y[t] += Dd * u[t];
        }
        if (p->z) {
            const REAL *restrict z = (const REAL *)p->z + row * L;
            if (p->y_pregate) {
                REAL *restrict pre = (REAL *)p->y_pregate + row * L;
                for (int64_t t = 0; t < L; ++t) pre[t] = y[t];
            }
#pragma omp simd
            for (int64_t t = 0; t < L; ++t) y[t] *= z[t] * SFX(sigmoid)(z[t]);
        }
    }
}

/* d loss / d ys (the scan's own output) of one row, through the gate; returns its dot with u
 * (d loss / d D). Writes dz when wanted. */
static REAL SFX(output_grad_row)(const scan_problem *p, int64_t row, REAL *restrict dys) {
    const int64_t L = p->length;
    const REAL *restrict u = (const REAL *)p->u + row * L;
    if (!p->dy) {
        for (int64_t t = 0; t < L; ++t) dys[t] = 0;
        return 0;
    }
    const REAL *restrict dy = (const REAL *)p->dy + row * L;
    if (p->z && p->dz) { /* dz needs y before the gate, kept by the forward */
        const REAL *restrict z = (const REAL *)p->z + row * L;
        const REAL *restrict pre = (const REAL *)p->y_pregate + row * L;
        REAL *restrict dz = (REAL *)p->dz + row * L;
#pragma omp simd
        for (int64_t t = 0; t < L; ++t) {
            const REAL s = SFX(sigmoid)(z[t]);
            dys[t] = dy[t] * z[t] * s;
            dz[t] = dy[t] * pre[t] * s * ((REAL)1 + z[t] * ((REAL)1 - s));
        }
    } else if (p->z) {
        const REAL *restrict z = (const REAL *)p->z + row * L;
#pragma omp simd
        for (int64_t t = 0; t < L; ++t) dys[t] = dy[t] * z[t] * SFX(sigmoid)(z[t]);
    } else {
        for (int64_t t = 0; t < L; ++t) dys[t] = dy[t];
    }
    REAL dD = 0;
#pragma omp simd reduction(+ : dD)
    for (int64_t t = 0; t < L; ++t) dD += dys[t] * u[t];
    return dD;
}

/* Per-thread sums of the gradients shared between rows, and the per-lane sums of dB and dC not
 * yet added to them. */
typedef struct {
    REAL *dA, *dB, *dC, *dD, *dbias;
    REAL *lanes_dB, *lanes_dC; /* (L or 1) x N x LANES */
    int64_t pending_dB, pending_dC; /* offset of the uniform row the lane sums belong to; -1: none */
} SFX(partials);

/* Add per-lane sums of dB (or dC) into the thread's partial sums and clear them. Uniform: all
 * lanes belong to the row at offset off[0], reduce across lanes; else scatter each lane. */
static void SFX(flush_lanes)(REAL *restrict lanes, REAL *restrict partial, const int64_t *off,
                             int uniform, int active, int64_t tokens, int64_t stride, int64_t N) {
    if (uniform) {
        for (int64_t t = 0; t < tokens; ++t) {
            for (int64_t n = 0; n < N; ++n) {
                REAL *restrict v = lanes + (t * N + n) * LANES;
                REAL sum = 0;
                for (int j = 0; j < LANES; ++j) sum += v[j];
                partial[off[0] + t * stride + n] += sum;
            }
        }
    } else {
        for (int j = 0; j < active; ++j) {
            for (int64_t t = 0; t < tokens; ++t) {
                for (int64_t n = 0; n < N; ++n)
                    partial[off[j] + t * stride + n] += lanes[(t * N + n) * LANES + j];
            }
        }
    }
    for (int64_t i = 0; i < tokens * N * LANES; ++i) lanes[i] = 0;
}

/* The backward of one block of rows [r0, r0 + active). T: tokens per segment. */
static MVLAB_ALWAYS_INLINE void SFX(backward_block)(const scan_problem *p, int64_t r0, int active,
                                                    const int64_t N, const int bcast, int64_t T,
                                                    REAL *restrict ws, SFX(partials) *part) {
    const int64_t L = p->length, dim = p->dim, segments = (L + T - 1) / T;
    const int64_t bst = p->B_layout.token_stride, cst = p->C_layout.token_stride;
    const int64_t NL = N * LANES;
    REAL *restrict U = ws, *restrict X = U + L * LANES, *restrict DYS = X + L * LANES;
    REAL *restrict DX = DYS + L * LANES, *restrict DU = DX + L * LANES;
    REAL *restrict row_buf = DU + L * LANES, *restrict At = row_buf + L;
    REAL *restrict G = At + NL, *restrict dAl = G + NL, *restrict Bv = dAl + NL;
    REAL *restrict Cv = Bv + NL, *restrict a = Cv + NL;
    REAL *restrict h = a + T * NL, *restrict checkpoints = h + T * NL;
    int64_t offB[LANES], offC[LANES];
    const int uniformB = mvlab_lane_offsets(&p->B_layout, r0, active, dim, offB);
    const int uniformC = mvlab_lane_offsets(&p->C_layout, r0, active, dim, offC);
    const int64_t tokensB = bst ? L : 1, tokensC = cst ? L : 1;

    /* Lane sums of another B/C row are complete: add them before this block adds its own. */
    if (part->pending_dB >= 0 && !(uniformB && offB[0] == part->pending_dB)) {
        const int64_t pend[LANES] = {part->pending_dB};
        SFX(flush_lanes)(part->lanes_dB, part->dB, pend, 1, LANES, tokensB, bst, N);
        part->pending_dB = -1;
    }
    if (part->pending_dC >= 0 && !(uniformC && offC[0] == part->pending_dC)) {
        const int64_t pend[LANES] = {part->pending_dC};
        SFX(flush_lanes)(part->lanes_dC, part->dC, pend, 1, LANES, tokensC, cst, N);
        part->pending_dC = -1;
    }

    if (p->x_lanes) { /* written by the forward */
        U = (REAL *)p->u_lanes + (r0 / LANES) * L * LANES;
        X = (REAL *)p->x_lanes + (r0 / LANES) * L * LANES;
    } else {
        SFX(load_lanes)(p, r0, active, U, X);
    }
    SFX(load_A)(p, r0, active, At);
    REAL Dl[LANES];
    for (int j = 0; j < LANES; ++j) Dl[j] = 0;
    for (int j = 0; j < active; ++j) {
        const int64_t row = r0 + j, d = row % dim;
        const REAL dD = SFX(output_grad_row)(p, row, row_buf);
        if (p->D) {
            part->dD[d] += dD;
            Dl[j] = ((const REAL *)p->D)[d];
        }
        for (int64_t t = 0; t < L; ++t) DYS[t * LANES + j] = row_buf[t];
    }
    for (int j = active; j < LANES; ++j) {
        for (int64_t t = 0; t < L; ++t) DYS[t * LANES + j] = 0;
    }

    /* The state entering every segment (segment 0: zero). */
    for (int64_t i = 0; i < NL; ++i) checkpoints[i] = 0;
    for (int64_t k = 1; k < segments; ++k) {
        const int64_t s = (k - 1) * T;
        SFX(recompute)(p, X, U, At, offB, uniformB, checkpoints + (k - 1) * NL, s, s + T, N, bcast,
                       Bv, a, h);
        for (int64_t i = 0; i < NL; ++i) checkpoints[k * NL + i] = h[(T - 1) * NL + i];
    }

    for (int64_t i = 0; i < NL; ++i) G[i] = dAl[i] = 0;
    if (p->dlast) {
        for (int j = 0; j < active; ++j) {
            const REAL *restrict dlast = (const REAL *)p->dlast + (r0 + j) * N;
            for (int64_t n = 0; n < N; ++n) G[n * LANES + j] = dlast[n];
        }
    }
    REAL *restrict lanes_dB = part->lanes_dB, *restrict lanes_dC = part->lanes_dC;
    const REAL *Bbase = (const REAL *)p->B, *Cbase = (const REAL *)p->C;
    if (!bcast && cst == 0) SFX(spread)(Cbase, offC, uniformC, 0, 0, N, Cv);
    for (int64_t k = segments - 1; k >= 0; --k) {
        const int64_t s = k * T, e = s + T < L ? s + T : L;
        const REAL *restrict h_in = checkpoints + k * NL;
        SFX(recompute)(p, X, U, At, offB, uniformB, h_in, s, e, N, bcast, Bv, a, h);
        if (!bcast && bst == 0) SFX(spread)(Bbase, offB, uniformB, 0, 0, N, Bv);
        for (int64_t t = e - 1; t >= s; --t) {
            if (!bcast && bst) SFX(spread)(Bbase, offB, uniformB, t, bst, N, Bv);
            if (!bcast && cst) SFX(spread)(Cbase, offC, uniformC, t, cst, N, Cv);
            const REAL *restrict Bs = Bbase + offB[0] + t * bst, *restrict Cs = Cbase + offC[0] + t * cst;
            const REAL *restrict xt = X + t * LANES, *restrict ut = U + t * LANES;
            const REAL *restrict dyst = DYS + t * LANES;
            const REAL *restrict at = a + (t - s) * NL, *restrict ht = h + (t - s) * NL;
            const REAL *restrict hp = t == s ? h_in : ht - NL;
            REAL *restrict dBt = lanes_dB + (bst ? t : 0) * NL, *restrict dCt = lanes_dC + (cst ? t : 0) * NL;
            REAL dx_decay[MVLAB_SPLIT][LANES], gB[MVLAB_SPLIT][LANES], xu[LANES];
            for (int k = 0; k < MVLAB_SPLIT; ++k) {
#pragma omp simd
                for (int j = 0; j < LANES; ++j) dx_decay[k][j] = gB[k][j] = 0;
            }
#pragma omp simd
            for (int j = 0; j < LANES; ++j) xu[j] = xt[j] * ut[j];
            _Pragma("GCC unroll 16") for (int64_t n = 0; n < N; ++n) {
#pragma omp simd
                for (int j = 0; j < LANES; ++j) {
                    const int64_t i = n * LANES + j;
                    const REAL gn = G[i] + dyst[j] * (bcast ? Cs[n] : Cv[i]);
                    const REAL ddecay = gn * at[i] * hp[i]; /* d loss / d (x_t A_n) */
                    dCt[i] += dyst[j] * ht[i];
                    dBt[i] += gn * xu[j];
                    dAl[i] += ddecay * xt[j];
                    dx_decay[n % MVLAB_SPLIT][j] += ddecay * At[i];
                    gB[n % MVLAB_SPLIT][j] += gn * (bcast ? Bs[n] : Bv[i]);
                    G[i] = at[i] * gn;
                }
            }
#pragma omp simd
            for (int j = 0; j < LANES; ++j) {
                const REAL gBj = MVLAB_SUM_SPLIT(gB, j);
                DX[t * LANES + j] = MVLAB_SUM_SPLIT(dx_decay, j) + gBj * ut[j];
                DU[t * LANES + j] = xt[j] * gBj + Dl[j] * dyst[j];
            }
        }
    }

    if (p->du) SFX(from_lanes)(DU, active, L, (REAL *)p->du + r0 * L);
    if (p->ddelta) SFX(from_lanes)(DX, active, L, (REAL *)p->ddelta + r0 * L);
    for (int j = 0; j < active; ++j) {
        const int64_t row = r0 + j, d = row % dim;
        for (int64_t n = 0; n < N; ++n) part->dA[d * N + n] += dAl[n * LANES + j];
        /* Through softplus and the bias: d loss / d delta. */
        REAL *restrict ddelta = p->ddelta ? (REAL *)p->ddelta + row * L : row_buf;
        if (!p->ddelta) {
            for (int64_t t = 0; t < L; ++t) ddelta[t] = DX[t * LANES + j];
        }
        if (p->softplus) {
            const REAL *restrict delta = (const REAL *)p->delta + row * L;
            const REAL bias = p->delta_bias ? ((const REAL *)p->delta_bias)[d] : (REAL)0;
#pragma omp simd
            for (int64_t t = 0; t < L; ++t) ddelta[t] *= SFX(sigmoid)(delta[t] + bias);
        }
        if (p->delta_bias) {
            REAL dbias = 0;
#pragma omp simd reduction(+ : dbias)
            for (int64_t t = 0; t < L; ++t) dbias += ddelta[t];
            part->dbias[d] += dbias;
        }
    }

    if (uniformB) {
        part->pending_dB = offB[0];
    } else {
        SFX(flush_lanes)(lanes_dB, part->dB, offB, 0, active, tokensB, bst, N);
    }
    if (uniformC) {
        part->pending_dC = offC[0];
    } else {
        SFX(flush_lanes)(lanes_dC, part->dC, offC, 0, active, tokensC, cst, N);
    }
}

/* Whether all lanes of the block at r0 read the same B row and the same C row: then B and C
 * values are broadcast straight from memory instead of spread over the lanes first. */
static int SFX(broadcast_block)(const scan_problem *p, int64_t r0, int active) {
    int64_t off[LANES];
    return mvlab_lane_offsets(&p->B_layout, r0, active, p->dim, off)
           && mvlab_lane_offsets(&p->C_layout, r0, active, p->dim, off);
}

/* The block loops. With SPECIALISED (float; double is for checks), MambaVision's d_state 8 is
 * compiled as a constant, with and without the broadcast of B and C; other sizes take the
 * generic loops. Every specialisation costs seconds of compile time. */
static void SFX(forward_blocks)(const scan_problem *p, int64_t lo, int64_t hi, REAL *ws) {
    const int64_t rows = p->batch * p->dim;
    for (int64_t blk = lo; blk < hi; ++blk) {
        const int64_t r0 = blk * LANES;
        const int active = (int)(rows - r0 < LANES ? rows - r0 : LANES);
        const int bc = SFX(broadcast_block)(p, r0, active);
        switch (SPECIALISED ? p->d_state * 2 + bc : 0) {
        case 16: SFX(forward_block)(p, r0, active, 8, 0, ws); break;
        case 17: SFX(forward_block)(p, r0, active, 8, 1, ws); break;
        default: SFX(forward_block)(p, r0, active, p->d_state, 0, ws);
        }
    }
}

static void SFX(backward_blocks)(const scan_problem *p, int64_t lo, int64_t hi, int64_t T, REAL *ws,
                                 SFX(partials) *part) {
    const int64_t rows = p->batch * p->dim;
    for (int64_t blk = lo; blk < hi; ++blk) {
        const int64_t r0 = blk * LANES;
        const int active = (int)(rows - r0 < LANES ? rows - r0 : LANES);
        const int bc = SFX(broadcast_block)(p, r0, active);
        switch (SPECIALISED ? p->d_state * 2 + bc : 0) {
        case 16: SFX(backward_block)(p, r0, active, 8, 0, T, ws, part); break;
        case 17: SFX(backward_block)(p, r0, active, 8, 1, T, ws, part); break;
        default: SFX(backward_block)(p, r0, active, p->d_state, 0, T, ws, part);
        }
    }
    const int64_t N = p->d_state, bst = p->B_layout.token_stride, cst = p->C_layout.token_stride;
    if (part->pending_dB >= 0) {
        const int64_t pend[LANES] = {part->pending_dB};
        SFX(flush_lanes)(part->lanes_dB, part->dB, pend, 1, LANES, bst ? p->length : 1, bst, N);
    }
    if (part->pending_dC >= 0) {
        const int64_t pend[LANES] = {part->pending_dC};
        SFX(flush_lanes)(part->lanes_dC, part->dC, pend, 1, LANES, cst ? p->length : 1, cst, N);
    }
}

/* Forward over all rows. Returns 0, or 1 when memory ran out. */
int SFX(mvlab_scan_forward)(const scan_problem *p) {
    const int64_t blocks = (p->batch * p->dim + LANES - 1) / LANES;
    const int threads = mvlab_team_size(p->threads, blocks);
    const int64_t ws_size = (3 * p->length + 4 * p->d_state) * LANES;
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        REAL *ws = (REAL *)malloc((size_t)ws_size * sizeof(REAL));
        if (!ws) {
#pragma omp atomic write
            failed = 1;
        } else {
            int64_t lo, hi;
            mvlab_blocks_of(blocks, MVLAB_THREAD_ID(), MVLAB_TEAM_SIZE(), &lo, &hi);
            SFX(forward_blocks)(p, lo, hi, ws);
        }
        free(ws);
    }
    return failed;
}

/* Backward over all rows; gradients shared between rows are summed per thread, then in thread
 * order. Returns 0, or 1 when memory ran out. */
int SFX(mvlab_scan_backward)(const scan_problem *p) {
    const int64_t L = p->length, N = p->d_state, dim = p->dim, NL = N * LANES;
    const int64_t blocks = (p->batch * dim + LANES - 1) / LANES;
    const int threads = mvlab_team_size(p->threads, blocks);
    int64_t T = p->segment_tokens > 0 ? p->segment_tokens : MVLAB_SEGMENT_VALUES / (2 * NL);
    T = T < 1 ? 1 : (T > L ? L : T);
    const int64_t segments = (L + T - 1) / T;
    const int64_t nB = mvlab_bc_numel(&p->B_layout, p->batch, dim, L, N);
    const int64_t nC = mvlab_bc_numel(&p->C_layout, p->batch, dim, L, N);
    const int64_t lanesB = (p->B_layout.token_stride ? L : 1) * NL;
    const int64_t lanesC = (p->C_layout.token_stride ? L : 1) * NL;
    const int64_t per_thread = dim * N + nB + nC + 2 * dim + lanesB + lanesC;
    const int64_t ws_size = 5 * L * LANES + L + 5 * NL + 2 * T * NL + segments * NL;
    REAL *partials = (REAL *)calloc((size_t)(threads * per_thread), sizeof(REAL));
    if (!partials) return 1;
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        const int tid = MVLAB_THREAD_ID();
        REAL *base = partials + tid * per_thread;
        SFX(partials) part = {base, base + dim * N, base + dim * N + nB, base + dim * N + nB + nC,
                              base + dim * N + nB + nC + dim, base + dim * N + nB + nC + 2 * dim,
                              base + dim * N + nB + nC + 2 * dim + lanesB, -1, -1};
        REAL *ws = (REAL *)malloc((size_t)ws_size * sizeof(REAL));
        if (!ws) {
#pragma omp atomic write
            failed = 1;
        } else {
            int64_t lo, hi;
            mvlab_blocks_of(blocks, tid, MVLAB_TEAM_SIZE(), &lo, &hi);
            SFX(backward_blocks)(p, lo, hi, T, ws, &part);
        }
        free(ws);
    }
    if (!failed) {
        void *outs[5] = {p->dA, p->dB, p->dC, p->dD, p->ddelta_bias};
        const int64_t offsets[5] = {0, dim * N, dim * N + nB, dim * N + nB + nC, dim * N + nB + nC + dim};
        const int64_t sizes[5] = {dim * N, nB, nC, dim, dim};
        for (int k = 0; k < 5; ++k) {
            if (!outs[k]) continue;
            REAL *out = (REAL *)outs[k];
            memcpy(out, partials + offsets[k], (size_t)sizes[k] * sizeof(REAL));
            for (int t = 1; t < threads; ++t) {
                const REAL *src = partials + t * per_thread + offsets[k];
                for (int64_t i = 0; i < sizes[k]; ++i) out[i] += src[i];
            }
        }
    }
    free(partials);
    return failed;
}

#undef LANES
