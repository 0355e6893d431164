/* The selective-scan kernels, written once for a compute type REAL and instantiated by cpu_c.c
 * (float and double). Expects REAL, SFX(name) (name with a type suffix), EXP(x), SOFTPLUS(x).
 *
 * Per row (batch element b, channel d), with x_t = softplus?(delta_t + bias) and a_tn = exp(x_t A_n):
 *   h_tn = a_tn h_{t-1,n} + x_t u_t B_tn ;  ys_t = sum_n h_tn C_tn ;  y_t = (ys_t + D u_t) silu(z_t)
 * Backward, with g the adjoint of h (g_{L-1} starts from d loss / d last_state):
 *   g_tn = dys_t C_tn + a_{t+1,n} g_{t+1,n}
 *   dB_tn += g_tn x_t u_t ; dC_tn += dys_t h_tn ; dA_n += g_tn a_tn h_{t-1,n} x_t
 *   dx_t = sum_n g_tn (u_t B_tn + A_n a_tn h_{t-1,n}) ; du_t = x_t sum_n g_tn B_tn + D dys_t
 */

/* Tokens per recomputed segment in the backward: a segment's decays and states (2 * T * N values)
 * stay in the L1/L2 cache; longer rows are recomputed segment by segment from checkpoints. */
#ifndef MVLAB_SEGMENT_VALUES
#define MVLAB_SEGMENT_VALUES 8192
#define MVLAB_ALWAYS_INLINE inline __attribute__((always_inline))

static int64_t mvlab_bc_numel(const bc_layout *l, int64_t batch, int64_t dim, int64_t length,
                              int64_t d_state) {
    int64_t groups = dim / l->channels_per_group;
    return (batch - 1) * l->batch_stride + (groups - 1) * l->group_stride
           + (length - 1) * l->token_stride + d_state;
}

static int64_t mvlab_bc_offset(const bc_layout *l, int64_t b, int64_t d) {
    return b * l->batch_stride + (d / l->channels_per_group) * l->group_stride;
}

/* The rows [*lo, *hi) of thread `tid` in a team of `team`: contiguous, equal shares. */
static void mvlab_rows_of(int64_t rows, int tid, int team, int64_t *lo, int64_t *hi) {
    *lo = rows * tid / team;
    *hi = rows * (tid + 1) / team;
}

static int mvlab_team_size(int64_t requested, int64_t rows) {
    int64_t t = requested < 1 ? 1 : requested;
    return (int)(t > rows ? (rows > 0 ? rows : 1) : t);
}

#ifdef _OPENMP
#define MVLAB_THREAD_ID() omp_get_thread_num()
#define MVLAB_TEAM_SIZE() omp_get_num_threads()
#else
#define MVLAB_THREAD_ID() 0
#define MVLAB_TEAM_SIZE() 1
#endif
#endif /* MVLAB_SEGMENT_VALUES */

static inline REAL SFX(sigmoid)(REAL x) { return (REAL)1 / ((REAL)1 + EXP(-x)); }

/* x_t = softplus?(delta_t + bias) for one row. */
static MVLAB_ALWAYS_INLINE void SFX(step_sizes)(const scan_problem *p, int64_t row, int64_t d,
                                                REAL *restrict x) {
    const int64_t L = p->length;
    const REAL *restrict delta = (const REAL *)p->delta + row * L;
    const REAL bias = p->delta_bias ? ((const REAL *)p->delta_bias)[d] : (REAL)0;
    if (p->softplus) {
#pragma omp simd
        for (int64_t t = 0; t < L; ++t) x[t] = SOFTPLUS(delta[t] + bias);
    } else {
#pragma omp simd
        for (int64_t t = 0; t < L; ++t) x[t] = delta[t] + bias;
    }
}

/* One row forward: y (and y before the gate, when kept) and the last state. */
static MVLAB_ALWAYS_INLINE void SFX(forward_row)(const scan_problem *p, int64_t row, const int64_t N,
                                                 REAL *restrict ws) {
    const int64_t L = p->length, d = row % p->dim, b = row / p->dim;
    const REAL *restrict u = (const REAL *)p->u + row * L;
    const REAL *restrict A = (const REAL *)p->A + d * N;
    const REAL *restrict Bp = (const REAL *)p->B + mvlab_bc_offset(&p->B_layout, b, d);
    const REAL *restrict Cp = (const REAL *)p->C + mvlab_bc_offset(&p->C_layout, b, d);
    const int64_t bst = p->B_layout.token_stride, cst = p->C_layout.token_stride;
    REAL *restrict y = (REAL *)p->y + row * L;
    REAL *restrict x = ws, *restrict h = ws + L;

    SFX(step_sizes)(p, row, d, x);
    for (int64_t n = 0; n < N; ++n) h[n] = 0;
    for (int64_t t = 0; t < L; ++t) {
        const REAL xt = x[t], xu = xt * u[t];
        const REAL *restrict Bt = Bp + t * bst, *restrict Ct = Cp + t * cst;
        REAL acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; ++n) {
            h[n] = EXP(xt * A[n]) * h[n] + xu * Bt[n];
            acc += h[n] * Ct[n];
        }
        y[t] = acc;
    }
    if (p->last_state) {
        REAL *restrict last = (REAL *)p->last_state + row * N;
        for (int64_t n = 0; n < N; ++n) last[n] = h[n];
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

/* Decays and states of tokens [s, e) of a row into a, h ((e - s) x N), from the state h_in
 * entering token s. */
static MVLAB_ALWAYS_INLINE void SFX(recompute)(const REAL *restrict x, const REAL *restrict u,
                                               const REAL *restrict A, const REAL *restrict Bp,
                                               int64_t bst, const REAL *restrict h_in, int64_t s,
                                               int64_t e, const int64_t N, REAL *restrict a,
                                               REAL *restrict h) {
    for (int64_t t = s; t < e; ++t) {
        const REAL xt = x[t], xu = xt * u[t];
        const REAL *restrict Bt = Bp + t * bst;
        const REAL *restrict hp = t == s ? h_in : h + (t - s - 1) * N;
        REAL *restrict at = a + (t - s) * N, *restrict ht = h + (t - s) * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) {
            at[n] = EXP(xt * A[n]);
            ht[n] = at[n] * hp[n] + xu * Bt[n];
        }
    }
}

/* Per-thread sums of the gradients shared between rows. */
typedef struct {
    REAL *dA, *dB, *dC, *dD, *dbias;
} SFX(partials);

/* One row backward. T: tokens per segment; ws: 3 L + 2 T N + (segments + 3) N values. */
static MVLAB_ALWAYS_INLINE void SFX(backward_row)(const scan_problem *p, int64_t row, const int64_t N,
                                                  int64_t T, REAL *restrict ws,
                                                  const SFX(partials) *part) {
    const int64_t L = p->length, d = row % p->dim, b = row / p->dim;
    const int64_t segments = (L + T - 1) / T;
    const REAL *restrict u = (const REAL *)p->u + row * L;
    const REAL *restrict A = (const REAL *)p->A + d * N;
    const int64_t boff = mvlab_bc_offset(&p->B_layout, b, d), coff = mvlab_bc_offset(&p->C_layout, b, d);
    const REAL *restrict Bp = (const REAL *)p->B + boff, *restrict Cp = (const REAL *)p->C + coff;
    REAL *restrict dBp = part->dB + boff, *restrict dCp = part->dC + coff;
    const int64_t bst = p->B_layout.token_stride, cst = p->C_layout.token_stride;
    const REAL Dd = p->D ? ((const REAL *)p->D)[d] : (REAL)0;
    REAL *restrict du = p->du ? (REAL *)p->du + row * L : NULL;
    REAL *restrict x = ws, *restrict dys = ws + L, *restrict dx = ws + 2 * L;
    REAL *restrict a = ws + 3 * L, *restrict h = a + T * N, *restrict checkpoints = h + T * N;
    REAL *restrict g = checkpoints + segments * N, *restrict dA_row = g + N, *restrict hz = dA_row + N;

    SFX(step_sizes)(p, row, d, x);

    /* d loss / d ys, the scan's own output, through the gate and the D term. */
    REAL dD_row = 0;
    if (!p->dy) {
        for (int64_t t = 0; t < L; ++t) dys[t] = 0;
    } else if (p->z && p->dz) { /* dz needs y before the gate, kept by the forward */
        const REAL *restrict dy = (const REAL *)p->dy + row * L;
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
        const REAL *restrict dy = (const REAL *)p->dy + row * L;
        const REAL *restrict z = (const REAL *)p->z + row * L;
#pragma omp simd
        for (int64_t t = 0; t < L; ++t) dys[t] = dy[t] * z[t] * SFX(sigmoid)(z[t]);
    } else {
        const REAL *restrict dy = (const REAL *)p->dy + row * L;
        for (int64_t t = 0; t < L; ++t) dys[t] = dy[t];
    }
    if (p->D) {
#pragma omp simd reduction(+ : dD_row)
        for (int64_t t = 0; t < L; ++t) dD_row += dys[t] * u[t];
    }

    /* The state entering every segment (segment 0: zero). */
    for (int64_t n = 0; n < N; ++n) hz[n] = checkpoints[n] = 0;
    for (int64_t k = 1; k < segments; ++k) {
        const int64_t s = (k - 1) * T;
        SFX(recompute)(x, u, A, Bp, bst, checkpoints + (k - 1) * N, s, s + T, N, a, h);
        for (int64_t n = 0; n < N; ++n) checkpoints[k * N + n] = h[(T - 1) * N + n];
    }

    const REAL *restrict dlast = p->dlast ? (const REAL *)p->dlast + row * N : hz;
    for (int64_t n = 0; n < N; ++n) {
        g[n] = dlast[n];
        dA_row[n] = 0;
    }
    for (int64_t k = segments - 1; k >= 0; --k) {
        const int64_t s = k * T, e = s + T < L ? s + T : L;
        const REAL *restrict h_in = checkpoints + k * N;
        SFX(recompute)(x, u, A, Bp, bst, h_in, s, e, N, a, h);
        for (int64_t t = e - 1; t >= s; --t) {
            const REAL xt = x[t], ut = u[t], xu = xt * ut, dyst = dys[t];
            const REAL *restrict Bt = Bp + t * bst, *restrict Ct = Cp + t * cst;
            REAL *restrict dBt = dBp + t * bst, *restrict dCt = dCp + t * cst;
            const REAL *restrict at = a + (t - s) * N, *restrict ht = h + (t - s) * N;
            const REAL *restrict hp = t == s ? h_in : ht - N;
            REAL dx_decay = 0, gB = 0;
#pragma omp simd reduction(+ : dx_decay, gB)
            for (int64_t n = 0; n < N; ++n) {
                const REAL gn = g[n] + dyst * Ct[n];
                const REAL ddecay = gn * at[n] * hp[n]; /* d loss / d (x_t A_n) */
                dCt[n] += dyst * ht[n];
                dBt[n] += gn * xu;
                dA_row[n] += ddecay * xt;
                dx_decay += ddecay * A[n];
                gB += gn * Bt[n];
                g[n] = at[n] * gn;
            }
            dx[t] = dx_decay + gB * ut;
            if (du) du[t] = xt * gB + Dd * dyst;
        }
    }

    REAL *restrict pdA = part->dA + d * N;
    for (int64_t n = 0; n < N; ++n) pdA[n] += dA_row[n];
    if (p->D) part->dD[d] += dD_row;

    /* Through softplus and the bias: d loss / d delta. */
    const REAL bias = p->delta_bias ? ((const REAL *)p->delta_bias)[d] : (REAL)0;
    REAL *restrict ddelta = p->ddelta ? (REAL *)p->ddelta + row * L : dx;
    if (p->softplus) {
        const REAL *restrict delta = (const REAL *)p->delta + row * L;
#pragma omp simd
        for (int64_t t = 0; t < L; ++t) ddelta[t] = dx[t] * SFX(sigmoid)(delta[t] + bias);
    } else if (ddelta != dx) {
        for (int64_t t = 0; t < L; ++t) ddelta[t] = dx[t];
    }
    if (p->delta_bias) {
        REAL dbias_row = 0;
#pragma omp simd reduction(+ : dbias_row)
        for (int64_t t = 0; t < L; ++t) dbias_row += ddelta[t];
        part->dbias[d] += dbias_row;
    }
}

/* The row loops, with d_state a compile-time constant for the common sizes (the inner loop over
 * the state then becomes straight-line vector code). */
static void SFX(forward_rows)(const scan_problem *p, int64_t lo, int64_t hi, REAL *ws) {
    switch (p->d_state) {
    case 4: for (int64_t r = lo; r < hi; ++r) SFX(forward_row)(p, r, 4, ws); break;
    case 8: for (int64_t r = lo; r < hi; ++r) SFX(forward_row)(p, r, 8, ws); break;
    case 16: for (int64_t r = lo; r < hi; ++r) SFX(forward_row)(p, r, 16, ws); break;
    default: for (int64_t r = lo; r < hi; ++r) SFX(forward_row)(p, r, p->d_state, ws);
    }
}

static void SFX(backward_rows)(const scan_problem *p, int64_t lo, int64_t hi, int64_t T, REAL *ws,
                               const SFX(partials) *part) {
    switch (p->d_state) {
    case 4: for (int64_t r = lo; r < hi; ++r) SFX(backward_row)(p, r, 4, T, ws, part); break;
    case 8: for (int64_t r = lo; r < hi; ++r) SFX(backward_row)(p, r, 8, T, ws, part); break;
    case 16: for (int64_t r = lo; r < hi; ++r) SFX(backward_row)(p, r, 16, T, ws, part); break;
    default: for (int64_t r = lo; r < hi; ++r) SFX(backward_row)(p, r, p->d_state, T, ws, part);
    }
}

/* Forward over all rows. Returns 0, or 1 when memory ran out. */
int SFX(mvlab_scan_forward)(const scan_problem *p) {
    const int64_t rows = p->batch * p->dim;
    const int threads = mvlab_team_size(p->threads, rows);
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        REAL *ws = (REAL *)malloc((size_t)(p->length + p->d_state) * sizeof(REAL));
        if (!ws) {
#pragma omp atomic write
            failed = 1;
        } else {
            int64_t lo, hi;
            mvlab_rows_of(rows, MVLAB_THREAD_ID(), MVLAB_TEAM_SIZE(), &lo, &hi);
            SFX(forward_rows)(p, lo, hi, ws);
        }
        free(ws);
    }
    return failed;
}

/* Backward over all rows; gradients shared between rows are summed per thread, then in thread
 * order. Returns 0, or 1 when memory ran out. */
int SFX(mvlab_scan_backward)(const scan_problem *p) {
    const int64_t rows = p->batch * p->dim, L = p->length, N = p->d_state, dim = p->dim;
    const int threads = mvlab_team_size(p->threads, rows);
    int64_t T = p->segment_tokens > 0 ? p->segment_tokens : MVLAB_SEGMENT_VALUES / N;
    T = T < 1 ? 1 : (T > L ? L : T);
    const int64_t segments = (L + T - 1) / T;
    const int64_t nB = mvlab_bc_numel(&p->B_layout, p->batch, dim, L, N);
    const int64_t nC = mvlab_bc_numel(&p->C_layout, p->batch, dim, L, N);
    const int64_t per_thread = dim * N + nB + nC + 2 * dim;
    const int64_t ws_size = 3 * L + 2 * T * N + (segments + 3) * N;
    REAL *partials = (REAL *)calloc((size_t)(threads * per_thread), sizeof(REAL));
    if (!partials) return 1;
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        const int tid = MVLAB_THREAD_ID();
        REAL *base = partials + tid * per_thread;
        SFX(partials) part = {base, base + dim * N, base + dim * N + nB, base + dim * N + nB + nC,
                              base + dim * N + nB + nC + dim};
        REAL *ws = (REAL *)malloc((size_t)ws_size * sizeof(REAL));
        if (!ws) {
#pragma omp atomic write
            failed = 1;
        } else {
            int64_t lo, hi;
            mvlab_rows_of(rows, tid, MVLAB_TEAM_SIZE(), &lo, &hi);
            SFX(backward_rows)(p, lo, hi, T, ws, &part);
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
