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
// Four activation rows per weight row (prompt processing).

#if LP_X86
LP_DOT4_FROM_DOT(f32, avx2)
LP_DOT4_FROM_DOT(f16, avx2)
LP_DOT4_FROM_DOT(bf16, avx2)
#endif
#if LP_ARM
LP_DOT4_FROM_DOT(f32, neon)
LP_DOT4_FROM_DOT(f16, neon)
LP_DOT4_FROM_DOT(bf16, neon)
#endif
