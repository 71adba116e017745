// q8_0.c — Q8_0 weights: 32 int8 quants and one fp16 scale per block.
// x = d * q. Dot product against Q8_0 activations.
#include "simd.h"

void lp_q8_0_to_float(const void *restrict vx, float *restrict y, int64_t n) {
    const block_q8_0 *restrict x = vx;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float d = lp_half_to_float(x[i].d);
        for (int j = 0; j < QK8_0; j++) y[i * QK8_0 + j] = (float)x[i].qs[j] * d;
    }
}

void lp_vec_dot_q8_0_ref(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q8_0 *restrict x = vx;
    const block_q8_0 *restrict y = vy;
    float sumf = 0.0f;
    for (int i = 0; i < n / QK8_0; i++) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; j++) sumi += x[i].qs[j] * y[i].qs[j];
        sumf += (float)sumi * (lp_half_to_float(x[i].d) * lp_half_to_float(y[i].d));
    }
    *s = sumf;
}

#if LP_X86
LP_AVX2_BEGIN
void lp_vec_dot_q8_0_avx2(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q8_0 *restrict x = vx;
    const block_q8_0 *restrict y = vy;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / QK8_0; i++) {
        const __m256 d = _mm256_set1_ps(lp_half_to_float_f16c(x[i].d) * lp_half_to_float_f16c(y[i].d));
        const __m256i qx = _mm256_loadu_si256((const __m256i *)x[i].qs);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lp_dot_i8x32(qx, qy)), acc);
    }
    *s = lp_hsum_f32x8(acc);
}
LP_AVX2_END
#endif

#if LP_ARM
void lp_vec_dot_q8_0_neon(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q8_0 *restrict x = vx;
    const block_q8_0 *restrict y = vy;
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int i = 0; i < n / QK8_0; i++) {
        int32x4_t p = lp_dot_i8x16(vdupq_n_s32(0), vld1q_s8(x[i].qs), vld1q_s8(y[i].qs));
        p = lp_dot_i8x16(p, vld1q_s8(x[i].qs + 16), vld1q_s8(y[i].qs + 16));
        const float d = lp_half_to_float(x[i].d) * lp_half_to_float(y[i].d);
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(p), d);
    }
    *s = vaddvq_f32(acc);
}
#endif

// ---------------------------------------------------------------------------
// Four activation rows per weight row (prompt processing).

#if LP_X86
LP_DOT4_FROM_DOT(q8_0, avx2)
#endif
#if LP_ARM
LP_DOT4_FROM_DOT(q8_0, neon)
#endif
