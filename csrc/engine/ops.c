// ops.c — the float operations of the forward pass besides matrix products:
// RMS norm, rotary embedding (normal and NEOX), softmax, SwiGLU, GeGLU; rows are independent. Softmax and
// SwiGLU, an exponential per value, have AVX2 versions with a vector exp, and AVX-512 ones that make
// the same bits (16 lanes, each doing what an AVX2 lane does; sums added in AVX2's order).
#include <math.h>

#include "simd.h"

static int use_avx2(void) {
    const int isa = lp_get_isa();
    return isa == LP_ISA_AVX2 || isa == LP_ISA_AVX512;
}

#if LP_X86
static int64_t exps16_avx512(float *x, int64_t n, float max, __m256 *sv);
static int64_t swiglu16_avx512(float *gate, const float *up, int64_t n);

LP_AVX2_BEGIN
// e^x for 8 floats, within 2 ulp: x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two
// parts, so n ln2 is exact enough), e^r by its degree-6 Taylor polynomial
// (error below r^7 / 7! < 2^-22), times 2^n as two powers of two that are
// normal floats, so underflow (below -87.3) and overflow (above 88.7) round as
// one multiplication by 2^n would. NaN stays NaN: max and min return their second
// operand when either is NaN (and the integer steps below are defined for any bits).
// One body for both widths (lp_exp8, lp_exp16), so AVX2 and AVX-512 make the same bits: V the
// float vector, I the integer one, P the intrinsics' prefix, B their width, ROUND the rounding.
#define LP_EXP_BODY(V, I, P, B, ROUND)                                                              \
    x = P##_min_ps(P##_set1_ps(89.0f), P##_max_ps(P##_set1_ps(-104.0f), x));                        \
    const V n = ROUND(P##_mul_ps(x, P##_set1_ps(1.44269504088896341f)),                             \
                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);                               \
    V r = P##_fnmadd_ps(n, P##_set1_ps(0.693145751953125f), x);     /* ln2, high bits */            \
    r = P##_fnmadd_ps(n, P##_set1_ps(1.428606765330187e-06f), r);    /* ln2, the rest */             \
    V p = P##_set1_ps(1.0f / 720);                                                                  \
    p = P##_fmadd_ps(p, r, P##_set1_ps(1.0f / 120));                                                \
    p = P##_fmadd_ps(p, r, P##_set1_ps(1.0f / 24));                                                 \
    p = P##_fmadd_ps(p, r, P##_set1_ps(1.0f / 6));                                                  \
    p = P##_fmadd_ps(p, r, P##_set1_ps(0.5f));                                                      \
    p = P##_fmadd_ps(p, r, P##_set1_ps(1.0f));                                                      \
    p = P##_fmadd_ps(p, r, P##_set1_ps(1.0f));                                                      \
    const I ni = P##_cvtps_epi32(n); /* -150 .. 129 */                                              \
    const I n1 = P##_srai_epi32(ni, 1), n2 = P##_sub_epi32(ni, n1);  /* each -75 .. 65 */           \
    const I bias = P##_set1_epi32(127);                                                             \
    const V s1 = P##_castsi##B##_ps(P##_slli_epi32(P##_add_epi32(n1, bias), 23));                   \
    const V s2 = P##_castsi##B##_ps(P##_slli_epi32(P##_add_epi32(n2, bias), 23));                   \
    return P##_mul_ps(P##_mul_ps(p, s1), s2);

static inline __m256 lp_exp8(__m256 x) {
    LP_EXP_BODY(__m256, __m256i, _mm256, 256, _mm256_round_ps)
}

// The values' exps from i on, added into the 8 lanes of sv in order (exps_avx2's main loop).
static __m256 exps_from_avx2(float *x, int64_t n, int64_t i, __m256 maxv, __m256 sv) {
    for (; i + 8 <= n; i += 8) {
        const __m256 e = lp_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), maxv));
        _mm256_storeu_ps(x + i, e);
        sv = _mm256_add_ps(sv, e);
    }
    return sv;
}

// x = exp(x - max(x)); returns the sum of the new x (in double), *max_out = max(x). avx512: the
// exps of whole 16-value steps in 512-bit registers (exps16_avx512).
static double exps_avx2(float *x, int64_t n, float *max_out, int avx512) {
    __m256 mv = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float max = _mm_cvtss_f32(m4);
    for (; i < n; i++) max = x[i] > max ? x[i] : max;
    const __m256 maxv = _mm256_set1_ps(max);
    __m256 sv = _mm256_setzero_ps();
    i = avx512 ? exps16_avx512(x, n, max, &sv) : 0;
    sv = exps_from_avx2(x, n, i, maxv, sv);
    i = n / 8 * 8;
    double sum = lp_hsum_f32x8(sv);
    for (; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    *max_out = max;
    return sum;
}

// From value i on (AVX-512 did the values before).
static void swiglu_avx2(float *gate, const float *up, int64_t n, int64_t i) {
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = lp_exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(gate + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}
LP_AVX2_END

LP_AVX512_BEGIN
// lp_exp8 on 16 floats: the same operations lane by lane, so the same bits.
static inline __m512 lp_exp16(__m512 x) {
    LP_EXP_BODY(__m512, __m512i, _mm512, 512, _mm512_roundscale_ps)
}
#undef LP_EXP_BODY

// exps_avx2's main loop over whole steps of 16 values: each half's exps added into *sv in turn,
// as AVX2 adds them 8 at a time. Returns the values done.
static int64_t exps16_avx512(float *x, int64_t n, float max, __m256 *sv) {
    const __m512 maxv = _mm512_set1_ps(max);
    __m256 s = *sv;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 e = lp_exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), maxv));
        _mm512_storeu_ps(x + i, e);
        s = _mm256_add_ps(_mm256_add_ps(s, _mm512_castps512_ps256(e)), _mm512_extractf32x8_ps(e, 1));
    }
    *sv = s;
    return i;
}

// swiglu_avx2's steps, 16 values at a time (the division and the rest lane by lane). Returns the values done.
static int64_t swiglu16_avx512(float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 g = _mm512_loadu_ps(gate + i);
        const __m512 e = lp_exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
        const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_storeu_ps(gate + i, _mm512_mul_ps(silu, _mm512_loadu_ps(up + i)));
    }
    return i;
}
LP_AVX512_END
#endif

// The sum of x[i]^2 in double (each square exact): eight partial sums, as the AVX2 version
// adds them, so both give the same bits.
static double sum_squares_ref(const float *x, int64_t dim) {
    double part[8] = { 0 };
    int64_t i = 0;
    for (; i + 8 <= dim; i += 8)
        for (int k = 0; k < 8; k++) part[k] += (double)x[i + k] * x[i + k];
    double ss = ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
    for (; i < dim; i++) ss += (double)x[i] * x[i];
    return ss;
}

#if LP_X86
LP_AVX2_BEGIN
static double sum_squares_avx2(const float *x, int64_t dim) {
    __m256d a = _mm256_setzero_pd(), b = _mm256_setzero_pd();  // parts 0-3 and 4-7
    int64_t i = 0;
    for (; i + 8 <= dim; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        a = _mm256_add_pd(a, _mm256_mul_pd(lo, lo));  // (a square is exact in double: no fma needed)
        b = _mm256_add_pd(b, _mm256_mul_pd(hi, hi));
    }
    const __m256d ab = _mm256_add_pd(a, b);  // parts k + (k + 4)
    const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(ab), _mm256_extractf128_pd(ab, 1));  // (0+4)+(2+6), (1+5)+(3+7)
    double ss = _mm_cvtsd_f64(h) + _mm_cvtsd_f64(_mm_unpackhi_pd(h, h));
    for (; i < dim; i++) ss += (double)x[i] * x[i];
    return ss;
}
LP_AVX2_END
#endif

// out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i], for each of n rows of dim values.
void lp_rmsnorm(float *out, const float *x, const float *w, int64_t n, int64_t dim, float eps) {
#if LP_X86
    const int avx2 = use_avx2();
#endif
    for (int64_t r = 0; r < n; r++, x += dim, out += dim) {
#if LP_X86
        const double ss = avx2 ? sum_squares_avx2(x, dim) : sum_squares_ref(x, dim);
#else
        const double ss = sum_squares_ref(x, dim);
#endif
        const float scale = 1.0f / sqrtf((float)(ss / dim) + eps);
        for (int64_t i = 0; i < dim; i++) out[i] = (x[i] * scale) * w[i];
    }
}

// The rope of one head layout and config (lp_rope_apply, lp_rope_table, lp_rope_rows).
typedef struct {
    float theta_scale, mscale, span;
    int pairs, stride, other;  // pair i: values i * stride and i * stride + other of a head
} rope_dims;

static rope_dims rope_dims_of(int head_dim, int n_rot, const lp_rope_cfg *cfg) {
    const int rot = n_rot < head_dim ? n_rot : head_dim;
    rope_dims d = { .theta_scale = powf(cfg->base, -2.0f / (float)n_rot), .mscale = cfg->attn_factor,
                    .pairs = rot / 2, .stride = cfg->neox ? 1 : 2, .other = cfg->neox ? rot / 2 : 1 };
    if (cfg->ext_factor != 0.0f) d.mscale *= 1.0f + 0.1f * logf(1.0f / cfg->freq_scale);
    d.span = cfg->corr_high - cfg->corr_low > 0.001f ? cfg->corr_high - cfg->corr_low : 0.001f;
    return d;
}

// cos and sin of pairs i0..i1-1 of a row (cs[i - i0], sn[i - i0]); *theta is pair i0's
// unscaled angle, left at pair i1's.
static void rope_angles(const lp_rope_cfg *cfg, const rope_dims *d, float *theta, int i0, int i1, float *cs,
                        float *sn) {
    for (int i = i0; i < i1; i++) {
        const float extrap = cfg->factors ? *theta / cfg->factors[i] : *theta;
        float a = cfg->freq_scale * extrap;
        if (cfg->ext_factor != 0.0f) {  // YaRN: 1 below corr_low, 0 above corr_high
            const float y = ((float)i - cfg->corr_low) / d->span;
            const float mix = (1.0f - fminf(1.0f, fmaxf(0.0f, y))) * cfg->ext_factor;
            a = a * (1.0f - mix) + extrap * mix;
        }
        cs[i - i0] = cosf(a) * d->mscale;
        sn[i - i0] = sinf(a) * d->mscale;
        *theta *= d->theta_scale;
    }
}

// Pairs i0..i1-1 of each of a row's n_head heads (xr), turned by cs, sn (indexed from i0).
static void rope_turn(float *restrict xr, int n_head, int head_dim, const rope_dims *d, int i0, int i1,
                      const float *restrict cs, const float *restrict sn) {
    for (int h = 0; h < n_head; h++) {
        float *v = xr + (int64_t)h * head_dim;
        for (int i = i0; i < i1; i++) {
            const float c = cs[i - i0], s = sn[i - i0];
            float *p0 = v + i * d->stride, *p1 = p0 + d->other;
            const float x0 = *p0, x1 = *p1;
            *p0 = x0 * c - x1 * s;
            *p1 = x0 * s + x1 * c;
        }
    }
}

// Rotary embedding as GGML computes it, for n rows of n_head heads of head_dim
// values; row r sits at position pos[r]. The first n_rot values of each head rotate
// in pairs: adjacent (i, i + 1) in the normal mode, (i, i + n_rot/2) in NEOX mode.
// Pair i turns by theta_i = pos * base^(-2i/n_rot) / factors[i] (the per-pair factor
// built by repeated multiplication as GGML does; factors: Llama 3.1's rope_freqs,
// Phi-3's LongRoPE, or none), scaled by freq_scale; with YaRN (ext_factor != 0) the
// angle mixes the scaled and unscaled one by a ramp over the pairs between
// corr_dims, and cos/sin grow by 1 + 0.1 ln(1 / freq_scale); attn_factor multiplies
// cos and sin. Any float parameters are safe (NaN or inf angles give NaN values);
// only whole pairs within the head rotate, whatever n_rot says.
void lp_rope_apply(float *x, int64_t n, const int32_t *pos, int n_head, int head_dim, int n_rot,
                   const lp_rope_cfg *cfg) {
    enum { PAIRS = 64 };  // a row's cos and sin, PAIRS pairs at a time, serve every head
    const rope_dims d = rope_dims_of(head_dim, n_rot, cfg);
    for (int64_t r = 0; r < n; r++) {
        float theta = (float)pos[r];
        for (int i0 = 0; i0 < d.pairs; i0 += PAIRS) {
            const int i1 = d.pairs - i0 < PAIRS ? d.pairs : i0 + PAIRS;
            float cs[PAIRS], sn[PAIRS];
            rope_angles(cfg, &d, &theta, i0, i1, cs, sn);
            rope_turn(x + r * n_head * head_dim, n_head, head_dim, &d, i0, i1, cs, sn);
        }
    }
}

// The same in two parts, for a forward pass whose layers share a rope (every layer's q and
// k turn by the same angles): the cos and sin of every row's pairs once (table: (n, head_dim),
// a row's pairs' cos then their sin), then each matrix turned (rows of it: their table rows).
void lp_rope_table(float *table, int64_t n, const int32_t *pos, int head_dim, int n_rot, const lp_rope_cfg *cfg) {
    const rope_dims d = rope_dims_of(head_dim, n_rot, cfg);
    for (int64_t r = 0; r < n; r++) {
        float theta = (float)pos[r];
        rope_angles(cfg, &d, &theta, 0, d.pairs, table + r * head_dim, table + r * head_dim + d.pairs);
    }
}

void lp_rope_rows(float *x, int64_t n, int n_head, int head_dim, int n_rot, const lp_rope_cfg *cfg,
                  const float *table) {
    const rope_dims d = rope_dims_of(head_dim, n_rot, cfg);
    for (int64_t r = 0; r < n; r++) {
        const float *cs = table + r * head_dim;
        rope_turn(x + r * n_head * head_dim, n_head, head_dim, &d, 0, d.pairs, cs, cs + d.pairs);
    }
}

// 1 when a and b turn by the same angles (lp_rope_table's for one serves the other).
int lp_rope_same(const lp_rope_cfg *a, const lp_rope_cfg *b) {
    return a->base == b->base && a->freq_scale == b->freq_scale && a->attn_factor == b->attn_factor &&
           a->ext_factor == b->ext_factor && a->corr_low == b->corr_low && a->corr_high == b->corr_high &&
           a->factors == b->factors && a->neox == b->neox;
}

// The plain rotations (api.h): no factors, no YaRN.
void lp_rope(float *x, int64_t n, const int32_t *pos, int n_head, int head_dim, int n_rot, float freq_base,
             float freq_scale) {
    const lp_rope_cfg cfg = { .base = freq_base, .freq_scale = freq_scale, .attn_factor = 1.0f };
    lp_rope_apply(x, n, pos, n_head, head_dim, n_rot, &cfg);
}

void lp_rope_neox(float *x, int64_t n, const int32_t *pos, int n_head, int head_dim, int n_rot, float freq_base,
                  float freq_scale) {
    const lp_rope_cfg cfg = { .base = freq_base, .freq_scale = freq_scale, .attn_factor = 1.0f, .neox = 1 };
    lp_rope_apply(x, n, pos, n_head, head_dim, n_rot, &cfg);
}

// In place: x = exp(x - max(x)), the unnormalised softmax; returns the sum of the
// new x (summed in double by the plain C version), *max_out = max(x) (-inf for n = 0).
double lp_softmax_exps(float *x, int64_t n, float *max_out) {
#if LP_X86
    if (use_avx2()) return exps_avx2(x, n, max_out, lp_get_isa() == LP_ISA_AVX512);
#endif
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    *max_out = max;
    return sum;
}

// In place: x = softmax(x) over n values.
void lp_softmax(float *x, int64_t n) {
    float max;
    const float inv = (float)(1.0 / lp_softmax_exps(x, n, &max));
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

// gate[i] = gelu(gate[i]) * up[i] (GeGLU), GELU's tanh approximation, n values.
// Large |g| is exact either way (tanhf saturates to +-1), NaN stays NaN.
void lp_geglu(float *gate, const float *up, int64_t n) {
    const float c = 0.7978845608028654f;  // sqrt(2 / pi)
    for (int64_t i = 0; i < n; i++) {
        const float g = gate[i];
        gate[i] = 0.5f * g * (1.0f + tanhf(c * g * (1.0f + 0.044715f * g * g))) * up[i];
    }
}

// gate[i] = silu(gate[i]) * up[i]  (SwiGLU), n values.
void lp_swiglu(float *gate, const float *up, int64_t n) {
#if LP_X86
    if (use_avx2()) {
        swiglu_avx2(gate, up, n, lp_get_isa() == LP_ISA_AVX512 ? swiglu16_avx512(gate, up, n) : 0);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
