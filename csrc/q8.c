// q8.c — activation quantizers: a row of floats to 8-bit blocks (Q8_0, Q8_1,
// Q8_K), the right-hand side of every integer dot product. Reference versions
// follow GGML's rounding; the SIMD versions round ties to even and compute the
// inverse scale as 127/amax, so a quant may differ from the reference by one step
// at a tie (the tests allow exactly that).
#include <math.h>

#include "simd.h"

static inline float lp_nearest(float x) { return nearbyintf(x); }  // ties to even

// ---------------------------------------------------------------------------
// Reference

void lp_quantize_q8_0_ref(const float *restrict x, void *restrict vy, int64_t n) {
    block_q8_0 *restrict y = vy;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = lp_float_to_half(d);
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

void lp_quantize_q8_1_ref(const float *restrict x, void *restrict vy, int64_t n) {
    block_q8_1 *restrict y = vy;
    for (int64_t i = 0; i < n / QK8_1; i++, x += QK8_1) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_1; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
            sum += y[i].qs[j];
        }
        y[i].d = lp_float_to_half(d);
        y[i].s = lp_float_to_half((float)sum * d);
    }
}

void lp_quantize_q8_K_ref(const float *restrict x, void *restrict vy, int64_t n) {
    block_q8_K *restrict y = vy;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float amax = 0.0f, max = 0.0f;  // largest magnitude, and that value with its sign
        for (int j = 0; j < QK_K; j++) {
            const float ax = fabsf(x[j]);
            if (ax > amax) { amax = ax; max = x[j]; }
        }
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            const float v = lp_nearest(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v > 127.0f ? 127.0f : v);
        }
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += y[i].qs[16 * g + j];
            y[i].bsums[g] = (int16_t)sum;
        }
        y[i].d = 1.0f / iscale;
    }
}

// Back to floats (tests use these to check the quantizers).
void lp_q8_1_to_float(const void *restrict vx, float *restrict y, int64_t n) {
    const block_q8_1 *restrict x = vx;
    for (int64_t i = 0; i < n / QK8_1; i++) {
        const float d = lp_half_to_float(x[i].d);
        for (int j = 0; j < QK8_1; j++) y[i * QK8_1 + j] = x[i].qs[j] * d;
    }
}

void lp_q8_K_to_float(const void *restrict vx, float *restrict y, int64_t n) {
    const block_q8_K *restrict x = vx;
    for (int64_t i = 0; i < n / QK_K; i++)
        for (int j = 0; j < QK_K; j++) y[i * QK_K + j] = x[i].qs[j] * x[i].d;
}

// ---------------------------------------------------------------------------
// AVX2

#if LP_X86
LP_AVX2_BEGIN
// |x| max over 8 lanes
static inline float lp_max_abs_f32x8(__m256 m) {
    __m128 r = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    r = _mm_max_ps(r, _mm_movehl_ps(r, r));
    r = _mm_max_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

// the rounding mode must be a literal where the intrinsic is used
#define LP_ROUND_EVEN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

// 32 floats times scale, rounded to nearest even, packed into 32 int8 in order.
static inline __m256i lp_round_pack32(const float *x, __m256 mul) {
    __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 0), mul), LP_ROUND_EVEN));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8), mul), LP_ROUND_EVEN));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 16), mul), LP_ROUND_EVEN));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 24), mul), LP_ROUND_EVEN));
    // packs work per 128-bit lane; the permute puts the 32 bytes back in order
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static inline float lp_block_amax32(const float *x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_andnot_ps(sign, _mm256_loadu_ps(x));
    for (int j = 8; j < 32; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
    return lp_max_abs_f32x8(m);
}

void lp_quantize_q8_0_avx2(const float *restrict x, void *restrict vy, int64_t n) {
    block_q8_0 *restrict y = vy;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        const float amax = lp_block_amax32(x);
        y[i].d = lp_float_to_half(amax / 127.0f);
        const __m256 mul = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        _mm256_storeu_si256((__m256i *)y[i].qs, lp_round_pack32(x, mul));
    }
}

void lp_quantize_q8_1_avx2(const float *restrict x, void *restrict vy, int64_t n) {
    block_q8_1 *restrict y = vy;
    for (int64_t i = 0; i < n / QK8_1; i++, x += QK8_1) {
        const float amax = lp_block_amax32(x);
        const float d = amax / 127.0f;
        const __m256 mul = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        const __m256i q = lp_round_pack32(x, mul);
        _mm256_storeu_si256((__m256i *)y[i].qs, q);
        const int sum = lp_hsum_i32x8(_mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q),
                                                        _mm256_set1_epi16(1)));
        y[i].d = lp_float_to_half(d);
        y[i].s = lp_float_to_half((float)sum * d);
    }
}

void lp_quantize_q8_K_avx2(const float *restrict x, void *restrict vy, int64_t n) {
    block_q8_K *restrict y = vy;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        const __m256 sign = _mm256_set1_ps(-0.0f);
        __m256 m = _mm256_andnot_ps(sign, _mm256_loadu_ps(x));
        for (int j = 8; j < QK_K; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
        const float amax = lp_max_abs_f32x8(m);
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        int jmax = 0;  // first element of largest magnitude: its sign sets the scale's sign
        while (fabsf(x[jmax]) != amax) jmax++;
        const float iscale = -127.0f / x[jmax];
        const __m256 mul = _mm256_set1_ps(iscale);
        const __m256i ones = _mm256_set1_epi8(1);
        for (int j = 0; j < QK_K; j += 32) {
            // iscale * x lies in [-127, 127] up to rounding: packs saturates at 127
            const __m256i q = lp_round_pack32(x + j, mul);
            _mm256_storeu_si256((__m256i *)(y[i].qs + j), q);
            // group sums of 16: maddubs pairs, then two hadd steps within each 128-bit lane
            __m256i s = _mm256_maddubs_epi16(ones, q);  // 16 sums of 2
            s = _mm256_hadd_epi16(s, s);               // sums of 4
            s = _mm256_hadd_epi16(s, s);               // sums of 8
            s = _mm256_hadd_epi16(s, s);               // sums of 16: lane 0 word 0, lane 1 word 0
            y[i].bsums[j / 16 + 0] = (int16_t)_mm256_extract_epi16(s, 0);
            y[i].bsums[j / 16 + 1] = (int16_t)_mm256_extract_epi16(s, 8);
        }
        y[i].d = 1.0f / iscale;
    }
}
LP_AVX2_END
#endif

// ---------------------------------------------------------------------------
// NEON

#if LP_ARM
static inline float lp_block_amax_neon(const float *x, int n) {
    float32x4_t m = vabsq_f32(vld1q_f32(x));
    for (int j = 4; j < n; j += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x + j)));
    return vmaxvq_f32(m);
}

// 16 floats times scale, rounded to nearest even, saturated to int8.
static inline int8x16_t lp_round_pack16_neon(const float *x, float mul) {
    const int32x4_t i0 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + 0), mul));
    const int32x4_t i1 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + 4), mul));
    const int32x4_t i2 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + 8), mul));
    const int32x4_t i3 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + 12), mul));
    const int16x8_t h0 = vcombine_s16(vqmovn_s32(i0), vqmovn_s32(i1));
    const int16x8_t h1 = vcombine_s16(vqmovn_s32(i2), vqmovn_s32(i3));
    return vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1));
}

void lp_quantize_q8_0_neon(const float *restrict x, void *restrict vy, int64_t n) {
    block_q8_0 *restrict y = vy;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        const float amax = lp_block_amax_neon(x, QK8_0);
        const float mul = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[i].d = lp_float_to_half(amax / 127.0f);
        vst1q_s8(y[i].qs, lp_round_pack16_neon(x, mul));
        vst1q_s8(y[i].qs + 16, lp_round_pack16_neon(x + 16, mul));
    }
}

void lp_quantize_q8_1_neon(const float *restrict x, void *restrict vy, int64_t n) {
    block_q8_1 *restrict y = vy;
    for (int64_t i = 0; i < n / QK8_1; i++, x += QK8_1) {
        const float amax = lp_block_amax_neon(x, QK8_1);
        const float d = amax / 127.0f;
        const float mul = amax != 0.0f ? 127.0f / amax : 0.0f;
        const int8x16_t q0 = lp_round_pack16_neon(x, mul), q1 = lp_round_pack16_neon(x + 16, mul);
        vst1q_s8(y[i].qs, q0);
        vst1q_s8(y[i].qs + 16, q1);
        const int sum = vaddlvq_s8(q0) + vaddlvq_s8(q1);
        y[i].d = lp_float_to_half(d);
        y[i].s = lp_float_to_half((float)sum * d);
    }
}

void lp_quantize_q8_K_neon(const float *restrict x, void *restrict vy, int64_t n) {
    block_q8_K *restrict y = vy;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        const float amax = lp_block_amax_neon(x, QK_K);
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        int jmax = 0;
        while (fabsf(x[jmax]) != amax) jmax++;
        const float iscale = -127.0f / x[jmax];
        for (int j = 0; j < QK_K; j += 16) {
            const int8x16_t q = lp_round_pack16_neon(x + j, iscale);
            vst1q_s8(y[i].qs + j, q);
            y[i].bsums[j / 16] = (int16_t)vaddlvq_s8(q);
        }
        y[i].d = 1.0f / iscale;
    }
}
#endif
