// float.c — unquantized weights: F32, F16 (IEEE half) and BF16 (the top 16 bits
// of a float32). Dot products take plain float32 activations. The reference sums
// in double; the SIMD versions convert 8 (AVX2) or 4 (NEON) weights to float32 at
// a time and accumulate with FMA in float32, four independent accumulators.
#include "simd.h"

// ---------------------------------------------------------------------------
// To float32: exact for all three (NaN payloads kept, as numpy's view/astype do).

void lp_f32_to_float(const void *restrict x, float *restrict y, int64_t n) {
    memcpy(y, x, (size_t)n * sizeof(float));
}

void lp_f16_to_float(const void *restrict vx, float *restrict y, int64_t n) {
    const lp_half *restrict x = vx;
    for (int64_t i = 0; i < n; i++) y[i] = lp_half_to_float(x[i]);
}

void lp_bf16_to_float(const void *restrict vx, float *restrict y, int64_t n) {
    const uint16_t *restrict x = vx;
    for (int64_t i = 0; i < n; i++) y[i] = lp_bf16_to_fp32(x[i]);  // a bit move: NaNs kept as they are
}

// ---------------------------------------------------------------------------
// Reference dot products

void lp_vec_dot_f32_ref(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const float *restrict x = vx;
    const float *restrict y = vy;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)x[i] * y[i];
    *s = (float)sum;
}

void lp_vec_dot_f16_ref(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const lp_half *restrict x = vx;
    const float *restrict y = vy;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)lp_half_to_float(x[i]) * y[i];
    *s = (float)sum;
}

void lp_vec_dot_bf16_ref(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const uint16_t *restrict x = vx;
    const float *restrict y = vy;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)lp_bf16_to_fp32(x[i]) * y[i];
    *s = (float)sum;
}

// ---------------------------------------------------------------------------
// AVX2: LOAD8(p) gives 8 weights as floats; 32 per step in four accumulators,
// then 8 at a time, then the last n % 8 one by one.

#if LP_X86
LP_AVX2_BEGIN
#define LP_DOT_F32X8_BODY(W, LOAD8, TO_FLOAT)                                  \
    const W *restrict x = vx;                                                  \
    const float *restrict y = vy;                                              \
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                \
    __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();                 \
    int i = 0;                                                                 \
    for (; i + 32 <= n; i += 32) {                                             \
        lp_prefetch_ahead_bytes(x + i, 32 * sizeof(W));                        \
        a0 = _mm256_fmadd_ps(LOAD8(x + i), _mm256_loadu_ps(y + i), a0);        \
        a1 = _mm256_fmadd_ps(LOAD8(x + i + 8), _mm256_loadu_ps(y + i + 8), a1);   \
        a2 = _mm256_fmadd_ps(LOAD8(x + i + 16), _mm256_loadu_ps(y + i + 16), a2); \
        a3 = _mm256_fmadd_ps(LOAD8(x + i + 24), _mm256_loadu_ps(y + i + 24), a3); \
    }                                                                          \
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(LOAD8(x + i), _mm256_loadu_ps(y + i), a0); \
    float sum = lp_hsum_f32x8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));   \
    for (; i < n; i++) sum += TO_FLOAT(x[i]) * y[i];                           \
    *s = sum;

static inline __m256 load8_f32(const float *p) { return _mm256_loadu_ps(p); }
static inline __m256 load8_f16(const lp_half *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline __m256 load8_bf16(const uint16_t *p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
static inline float f32_value(float v) { return v; }

void lp_vec_dot_f32_avx2(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    LP_DOT_F32X8_BODY(float, load8_f32, f32_value)
}

void lp_vec_dot_f16_avx2(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    LP_DOT_F32X8_BODY(lp_half, load8_f16, lp_half_to_float_f16c)
}

void lp_vec_dot_bf16_avx2(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    LP_DOT_F32X8_BODY(uint16_t, load8_bf16, lp_bf16_to_fp32)
}
#undef LP_DOT_F32X8_BODY
LP_AVX2_END
#endif

// ---------------------------------------------------------------------------
// NEON: the same shape, 4 weights per load, 16 per step.

#if LP_ARM
#define LP_DOT_F32X4_BODY(W, LOAD4, TO_FLOAT)                                  \
    const W *restrict x = vx;                                                  \
    const float *restrict y = vy;                                              \
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;             \
    int i = 0;                                                                 \
    for (; i + 16 <= n; i += 16) {                                             \
        a0 = vfmaq_f32(a0, LOAD4(x + i), vld1q_f32(y + i));                    \
        a1 = vfmaq_f32(a1, LOAD4(x + i + 4), vld1q_f32(y + i + 4));            \
        a2 = vfmaq_f32(a2, LOAD4(x + i + 8), vld1q_f32(y + i + 8));            \
        a3 = vfmaq_f32(a3, LOAD4(x + i + 12), vld1q_f32(y + i + 12));          \
    }                                                                          \
    for (; i + 4 <= n; i += 4) a0 = vfmaq_f32(a0, LOAD4(x + i), vld1q_f32(y + i)); \
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));   \
    for (; i < n; i++) sum += TO_FLOAT(x[i]) * y[i];                           \
    *s = sum;

static inline float32x4_t load4_f32(const float *p) { return vld1q_f32(p); }
static inline float32x4_t load4_f16(const lp_half *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
static inline float32x4_t load4_bf16(const uint16_t *p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
static inline float f32_value(float v) { return v; }

void lp_vec_dot_f32_neon(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    LP_DOT_F32X4_BODY(float, load4_f32, f32_value)
}

void lp_vec_dot_f16_neon(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    LP_DOT_F32X4_BODY(lp_half, load4_f16, lp_half_to_float)
}

void lp_vec_dot_bf16_neon(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    LP_DOT_F32X4_BODY(uint16_t, load4_bf16, lp_bf16_to_fp32)
}
#undef LP_DOT_F32X4_BODY
#endif

// ---------------------------------------------------------------------------
// Four activation rows per weight row (prompt processing): each row gets exactly
// vec_dot's result (same accumulators, same order of operations).
//
// AVX2: four rows would need 16 accumulators, all the registers there are, so the
// rows go two at a time: each 8 weights loaded (and converted) once for two rows.
// (Measured: better than all four rows with the accumulators split in two passes.)

#if LP_X86
LP_AVX2_BEGIN
#define LP_DOT2_F32X8_BODY(W, LOAD8, TO_FLOAT)                                 \
    const W *restrict x = vx;                                                  \
    for (int r = 0; r < 4; r += 2) {                                           \
        const float *restrict ya = (const float *)((const uint8_t *)vy + r * by); \
        const float *restrict yb = (const float *)((const uint8_t *)vy + (r + 1) * by); \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;            \
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;                             \
        int i = 0;                                                             \
        for (; i + 32 <= n; i += 32) {                                         \
            const __m256 x0 = LOAD8(x + i), x1 = LOAD8(x + i + 8);             \
            const __m256 x2 = LOAD8(x + i + 16), x3 = LOAD8(x + i + 24);       \
            a0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(ya + i), a0);             \
            b0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(yb + i), b0);             \
            a1 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(ya + i + 8), a1);         \
            b1 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(yb + i + 8), b1);         \
            a2 = _mm256_fmadd_ps(x2, _mm256_loadu_ps(ya + i + 16), a2);        \
            b2 = _mm256_fmadd_ps(x2, _mm256_loadu_ps(yb + i + 16), b2);        \
            a3 = _mm256_fmadd_ps(x3, _mm256_loadu_ps(ya + i + 24), a3);        \
            b3 = _mm256_fmadd_ps(x3, _mm256_loadu_ps(yb + i + 24), b3);        \
        }                                                                      \
        for (; i + 8 <= n; i += 8) {                                           \
            const __m256 x0 = LOAD8(x + i);                                    \
            a0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(ya + i), a0);             \
            b0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(yb + i), b0);             \
        }                                                                      \
        float suma = lp_hsum_f32x8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))); \
        float sumb = lp_hsum_f32x8(_mm256_add_ps(_mm256_add_ps(b0, b1), _mm256_add_ps(b2, b3))); \
        for (; i < n; i++) {                                                   \
            const float xi = TO_FLOAT(x[i]);                                   \
            suma += xi * ya[i];                                                \
            sumb += xi * yb[i];                                                \
        }                                                                      \
        s[r * bs] = suma;                                                      \
        s[(r + 1) * bs] = sumb;                                                \
    }

#define LP_DOT_4ACTS_FN(t)                                                                        \
    void lp_vec_dot_4acts_##t##_avx2(int n, float *restrict s, size_t bs, const void *restrict vx, \
                                     const void *restrict vy, size_t by)
LP_DOT_4ACTS_FN(f32) { LP_DOT2_F32X8_BODY(float, load8_f32, f32_value) }
LP_DOT_4ACTS_FN(f16) { LP_DOT2_F32X8_BODY(lp_half, load8_f16, lp_half_to_float_f16c) }
LP_DOT_4ACTS_FN(bf16) { LP_DOT2_F32X8_BODY(uint16_t, load8_bf16, lp_bf16_to_fp32) }
#undef LP_DOT_4ACTS_FN
#undef LP_DOT2_F32X8_BODY
LP_AVX2_END
#endif

// NEON: 16 accumulators for the four rows fit (32 registers); each 4 weights
// loaded (and converted) once for four rows.
#if LP_ARM
#define LP_ACC4(j) float32x4_t a##j##0 = vdupq_n_f32(0.0f), a##j##1 = a##j##0, a##j##2 = a##j##0, a##j##3 = a##j##0;
#define LP_FMA4(j)                                                             \
    a##j##0 = vfmaq_f32(a##j##0, x0, vld1q_f32(y##j + i));                     \
    a##j##1 = vfmaq_f32(a##j##1, x1, vld1q_f32(y##j + i + 4));                 \
    a##j##2 = vfmaq_f32(a##j##2, x2, vld1q_f32(y##j + i + 8));                 \
    a##j##3 = vfmaq_f32(a##j##3, x3, vld1q_f32(y##j + i + 12));
#define LP_SUM4(j) vaddvq_f32(vaddq_f32(vaddq_f32(a##j##0, a##j##1), vaddq_f32(a##j##2, a##j##3)))
#define LP_DOT_4ACTS_F32X4_BODY(W, LOAD4, TO_FLOAT)                                 \
    const W *restrict x = vx;                                                  \
    const float *restrict y0 = vy, *restrict y1 = (const float *)((const uint8_t *)vy + by); \
    const float *restrict y2 = (const float *)((const uint8_t *)vy + 2 * by);  \
    const float *restrict y3 = (const float *)((const uint8_t *)vy + 3 * by);  \
    LP_ACC4(0) LP_ACC4(1) LP_ACC4(2) LP_ACC4(3)                                \
    int i = 0;                                                                 \
    for (; i + 16 <= n; i += 16) {                                             \
        const float32x4_t x0 = LOAD4(x + i), x1 = LOAD4(x + i + 4);            \
        const float32x4_t x2 = LOAD4(x + i + 8), x3 = LOAD4(x + i + 12);       \
        LP_FMA4(0) LP_FMA4(1) LP_FMA4(2) LP_FMA4(3)                            \
    }                                                                          \
    for (; i + 4 <= n; i += 4) {                                               \
        const float32x4_t x0 = LOAD4(x + i);                                   \
        a00 = vfmaq_f32(a00, x0, vld1q_f32(y0 + i));                           \
        a10 = vfmaq_f32(a10, x0, vld1q_f32(y1 + i));                           \
        a20 = vfmaq_f32(a20, x0, vld1q_f32(y2 + i));                           \
        a30 = vfmaq_f32(a30, x0, vld1q_f32(y3 + i));                           \
    }                                                                          \
    float s0 = LP_SUM4(0), s1 = LP_SUM4(1), s2 = LP_SUM4(2), s3 = LP_SUM4(3);  \
    for (; i < n; i++) {                                                       \
        const float xi = TO_FLOAT(x[i]);                                       \
        s0 += xi * y0[i];                                                      \
        s1 += xi * y1[i];                                                      \
        s2 += xi * y2[i];                                                      \
        s3 += xi * y3[i];                                                      \
    }                                                                          \
    s[0] = s0;                                                                 \
    s[bs] = s1;                                                                \
    s[2 * bs] = s2;                                                            \
    s[3 * bs] = s3;

#define LP_DOT_4ACTS_FN(t)                                                                        \
    void lp_vec_dot_4acts_##t##_neon(int n, float *restrict s, size_t bs, const void *restrict vx, \
                                     const void *restrict vy, size_t by)
LP_DOT_4ACTS_FN(f32) { LP_DOT_4ACTS_F32X4_BODY(float, load4_f32, f32_value) }
LP_DOT_4ACTS_FN(f16) { LP_DOT_4ACTS_F32X4_BODY(lp_half, load4_f16, lp_half_to_float) }
LP_DOT_4ACTS_FN(bf16) { LP_DOT_4ACTS_F32X4_BODY(uint16_t, load4_bf16, lp_bf16_to_fp32) }
#undef LP_DOT_4ACTS_FN
#undef LP_DOT_4ACTS_F32X4_BODY
#undef LP_ACC4
#undef LP_FMA4
#undef LP_SUM4
#endif
