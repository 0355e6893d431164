/* The selective scan as plain C loops: mvlab's compiled CPU backend (`cpu_c`).
 *
 * Built on first use by mvlab/ops/scan/cpu_c.py with the system C compiler and loaded with
 * ctypes; the kernels themselves live in cpu_c_kernels.h, instantiated here for float and double.
 *
 * One "row" is one (batch, channel) pair: its state h[d_state] is walked over the tokens in
 * registers. Rows are independent in the forward; the backward recomputes a row's decays and
 * states (in L1-sized segments, from checkpoints when the row is long) and runs the adjoint
 * recurrence in reverse. Gradients shared between rows (A, B, C, D, delta_bias) are summed into
 * one private buffer per thread and added in thread order: the result depends on the thread
 * count only through rounding, and is deterministic for a given count.
 *
 * Numerics follow the token loop exactly: only decay factors exp(delta*A) and their running
 * products are formed (no division by cumulative decays, no log space), arithmetic is in the
 * inputs' type (float or double).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define MVLAB_SCAN_ABI 1

/* Where the (d_state) values of B or C for one row and token live: channel d of batch element b
 * reads token t at  b*batch_stride + (d / channels_per_group)*group_stride + t*token_stride + n.
 * shared (batch, L, N): (L*N, 0, N, dim); grouped (batch, G, L, N): (G*L*N, L*N, N, dim/G);
 * constant (dim, N): (0, N, 0, 1). The token axis is innermost-but-one: the N values of a token
 * are contiguous. */
typedef struct {
    int64_t batch_stride, group_stride, token_stride, channels_per_group;
} bc_layout;

/* One problem, forward and backward. Pointers are to contiguous arrays of the compute type;
 * optional inputs and unwanted outputs are NULL. Mirrored by cpu_c.py's _Problem. */
typedef struct {
    int64_t batch, dim, length, d_state, threads, softplus;
    int64_t segment_tokens; /* tokens per recomputed segment in the backward; 0: by cache size */
    const void *u, *delta, *z, *A, *D, *delta_bias; /* (batch, dim, L) x3, (dim, N), (dim,) x2 */
    const void *B, *C;
    bc_layout B_layout, C_layout;
    void *y;          /* (batch, dim, L): the output */
    void *y_pregate;  /* (batch, dim, L): y before the SiLU(z) gate, kept for dz (NULL: not kept) */
    void *last_state; /* (batch, dim, N) */
    /* u and the step sizes softplus?(delta + bias) in the kernels' lane layout, written by the
     * forward and read by the backward ((batch * dim / LANES rounded up) x L x LANES each);
     * NULL: the forward keeps nothing, the backward recomputes them. */
    void *u_lanes, *x_lanes;
    const void *dy, *dlast; /* backward inputs: d loss / d y, d loss / d last_state */
    void *du, *ddelta, *dz, *dA, *dB, *dC, *dD, *ddelta_bias; /* backward outputs, B/C layouts */
} scan_problem;

int mvlab_scan_abi(void) { return MVLAB_SCAN_ABI; }
int64_t mvlab_scan_problem_size(void) { return (int64_t)sizeof(scan_problem); }

/* exp for float, branch-free so that the loops calling it vectorise: exp(x) = 2^k exp(r) with
 * k = round(x / ln2) and |r| <= ln2 / 2 (Cody-Waite split of ln2), exp(r) by a degree-7 Taylor
 * polynomial (relative error < 1e-7). x is clamped to [-87.5, 89.5]: above ~88.72 the result
 * overflows to inf as it should; results below ~1.8e-38 (x < -86.99) are flushed to 0 instead of
 * denormals (an absolute difference under 2e-38, and no slow denormal arithmetic in the scan).
 * NaN stays NaN. */
static inline float mvlab_expf(float x) {
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float xc = x < -87.5f ? -87.5f : x;
    xc = xc > 89.5f ? 89.5f : xc;
    float shifted = xc * 1.44269504088896341f + round_magic;
    float kf = shifted - round_magic;
    float r = xc - kf * 0.693359375f;
    r = r + kf * 2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t shifted_bits, magic_bits;
    memcpy(&shifted_bits, &shifted, 4);
    memcpy(&magic_bits, &round_magic, 4);
    /* k - 1 from the mantissa of `shifted`, in [-127, 128]: 2^(k-1) is 0 at the bottom (flush)
     * and inf at the top (overflow), and never needs a denormal or an out-of-range exponent. */
    uint32_t scale_bits = (shifted_bits - magic_bits + 126u) << 23;
    float scale;
    memcpy(&scale, &scale_bits, 4);
    return (p + p) * scale;
}

/* log1p(e) for e in [0, 1]: 2 atanh(s) with s = e / (2 + e) in [0, 1/3], an odd series in s
 * (relative error < 2e-8); formed from e directly, so it stays accurate for tiny e. */
static inline float mvlab_log1p_unit_f(float e) {
    float s = e / (2.0f + e), s2 = s * s;
    float q = 1.0f / 13.0f;
    q = q * s2 + 1.0f / 11.0f;
    q = q * s2 + 1.0f / 9.0f;
    q = q * s2 + 1.0f / 7.0f;
    q = q * s2 + 1.0f / 5.0f;
    q = q * s2 + 1.0f / 3.0f;
    q = q * s2 + 1.0f;
    return 2.0f * s * q;
}

/* softplus as torch computes it (threshold 20): x > 20 ? x : log1p(exp(x)). */
static inline float mvlab_softplusf(float x) {
    float pos = x > 0.0f ? x : 0.0f;
    float sp = pos + mvlab_log1p_unit_f(mvlab_expf(-fabsf(x)));
    return x > 20.0f ? x : sp;
}

static inline double mvlab_softplus(double x) { return x > 20.0 ? x : log1p(exp(x)); }

#define REAL float
#define SFX(name) name##_f32
#define EXP mvlab_expf
#define SOFTPLUS mvlab_softplusf
#define SPECIALISED 1
#include "cpu_c_kernels.h"
#undef SPECIALISED
#undef REAL
#undef SFX
#undef EXP
#undef SOFTPLUS

/* double is for checks (gradcheck, float64 equivalence): libm's exp, exact to rounding. */
#define REAL double
#define SFX(name) name##_f64
#define EXP exp
#define SOFTPLUS mvlab_softplus
#define SPECIALISED 0
#include "cpu_c_kernels.h"
#undef SPECIALISED
#undef REAL
#undef SFX
#undef EXP
#undef SOFTPLUS
