// act_quant.c — activation quantizers: a row of floats to 8-bit blocks (Q8_0, Q8_1,
// Q8_K), the right-hand side of every integer dot product. Reference versions
// follow GGML's rounding; the SIMD versions round ties to even and compute the
// inverse scale as 127/amax, so a quant may differ from the reference by one step
// at a tie (the tests allow exactly that).
//
// Every quantizer is total over NaN and inf (a damaged model produces them): the
// largest magnitude is found as the largest magnitude BIT PATTERN (non-negative
// floats order as their bits do, NaN above inf above every finite value), so a
// block holding NaN or inf is always seen as one. Such a block gets a NaN scale and
// zero quants: every dot product with it is NaN, which the engine reports, and no
// NaN or inf ever reaches a float-to-integer conversion. Inverse scales are capped
// at FLT_MAX (a block of tiny values would make them inf), so every value converted
// to an integer lies within [-127, 127] up to rounding.
#include <float.h>
#include <math.h>

#include "simd.h"

static inline float lp_nearest(float x) { return nearbyintf(x); }  // ties to even

#define LP_MAG_MASK 0x7fffffffu  // all bits but the sign

// Largest |x[j]| of n floats; NaN if any x[j] is NaN, else inf if any is inf.
static inline float lp_amax_ref(const float *x, int n) {
    uint32_t m = 0;
    for (int j = 0; j < n; j++) {
        const uint32_t a = lp_float_to_bits(x[j]) & LP_MAG_MASK;
        m = a > m ? a : m;
    }
    return lp_bits_to_float(m);
}

static inline int lp_is_finite(float v) { return fabsf(v) <= FLT_MAX; }  // false for NaN
static inline int lp_amax_finite(float amax) { return amax <= FLT_MAX; }  // amax >= 0 or NaN
static inline float lp_cap(float v) { return v < FLT_MAX ? v : FLT_MAX; }  // v >= 0, not NaN

// The multiplier taking a block of largest magnitude amax (finite, > 0) onto [-127, 127].
static inline float lp_inv_scale(float amax) { return lp_cap(127.0f / amax); }

// Q8_K's scale: -127 / max, max the block's (first) value of largest magnitude (finite, != 0).
static inline float lp_q8_K_iscale(float max) {
    const float s = -127.0f / max;
    return lp_is_finite(s) ? s : copysignf(FLT_MAX, s);
}

// Blocks holding NaN or inf: NaN scale, zero quants (see the top of the file).
static const lp_half lp_half_nan = 0x7e00;
static void lp_nonfinite_q8_0(block_q8_0 *y) { memset(y->qs, 0, sizeof(y->qs)); y->d = lp_half_nan; }
static void lp_nonfinite_q8_1(block_q8_1 *y) { memset(y->qs, 0, sizeof(y->qs)); y->d = y->s = lp_half_nan; }
static void lp_nonfinite_q8_K(block_q8_K *y) { memset(y, 0, sizeof(*y)); y->d = NAN; }

// ---------------------------------------------------------------------------
// Reference

void lp_quantize_q8_0_ref(const float *restrict x, void *restrict vy, int64_t n) {
    block_q8_0 *restrict y = vy;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        const float amax = lp_amax_ref(x, QK8_0);
        if (!lp_amax_finite(amax)) {
            lp_nonfinite_q8_0(&y[i]);
            continue;
        }
        const float d = amax / 127.0f;
        const float id = d ? lp_cap(1.0f / d) : 0.0f;
        y[i].d = lp_float_to_half(d);
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

void lp_quantize_q8_1_ref(const float *restrict x, void *restrict vy, int64_t n) {
    block_q8_1 *restrict y = vy;
    for (int64_t i = 0; i < n / QK8_1; i++, x += QK8_1) {
        const float amax = lp_amax_ref(x, QK8_1);
        if (!lp_amax_finite(amax)) {
            lp_nonfinite_q8_1(&y[i]);
            continue;
        }
        const float d = amax / 127.0f;
        const float id = d ? lp_cap(1.0f / d) : 0.0f;
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
        const float amax = lp_amax_ref(x, QK_K);
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        if (!lp_amax_finite(amax)) {
            lp_nonfinite_q8_K(&y[i]);
            continue;
        }
        int jmax = 0;  // first element of largest magnitude: its sign sets the scale's sign
        while (jmax < QK_K - 1 && fabsf(x[jmax]) != amax) jmax++;
        const float iscale = lp_q8_K_iscale(x[jmax]);
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

// Largest |x[j]| of n floats (n a multiple of 8), as lp_amax_ref: integer maxima of
// the magnitudes' bits (as fast as float maxima, which would let a NaN slip through).
static inline float lp_amax_avx2(const float *x, int n) {
    const __m256i mag = _mm256_set1_epi32((int)LP_MAG_MASK);
    __m256i m = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)x), mag);
    for (int j = 8; j < n; j += 8)
        m = _mm256_max_epi32(m, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + j)), mag));
    __m128i r = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    r = _mm_max_epi32(r, _mm_unpackhi_epi64(r, r));
    r = _mm_max_epi32(r, _mm_shuffle_epi32(r, 1));
    return lp_bits_to_float((uint32_t)_mm_cvtsi128_si32(r));
}

// Index of the first x[j] with |x[j]| == v among n (a multiple of 8); v is one of them.
static inline int lp_find_abs_avx2(const float *x, int n, float v) {
    const __m256 sign = _mm256_set1_ps(-0.0f), t = _mm256_set1_ps(v);
    for (int j = 0; j < n; j += 8) {
        const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j));
        const int hit = _mm256_movemask_ps(_mm256_cmp_ps(a, t, _CMP_EQ_OQ));
        if (hit) return j + __builtin_ctz((unsigned)hit);
    }
    return 0;
}

void lp_quantize_q8_0_avx2(const float *restrict x, void *restrict vy, int64_t n) {
    block_q8_0 *restrict y = vy;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        const float amax = lp_amax_avx2(x, QK8_0);
        if (!lp_amax_finite(amax)) {
            lp_nonfinite_q8_0(&y[i]);
            continue;
        }
        y[i].d = lp_float_to_half(amax / 127.0f);
        const __m256 mul = _mm256_set1_ps(amax != 0.0f ? lp_inv_scale(amax) : 0.0f);
        _mm256_storeu_si256((__m256i *)y[i].qs, lp_round_pack32(x, mul));
    }
}

void lp_quantize_q8_1_avx2(const float *restrict x, void *restrict vy, int64_t n) {
    block_q8_1 *restrict y = vy;
    for (int64_t i = 0; i < n / QK8_1; i++, x += QK8_1) {
        const float amax = lp_amax_avx2(x, QK8_1);
        if (!lp_amax_finite(amax)) {
            lp_nonfinite_q8_1(&y[i]);
            continue;
        }
        const float d = amax / 127.0f;
        const __m256 mul = _mm256_set1_ps(amax != 0.0f ? lp_inv_scale(amax) : 0.0f);
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
        const float amax = lp_amax_avx2(x, QK_K);
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        if (!lp_amax_finite(amax)) {
            lp_nonfinite_q8_K(&y[i]);
            continue;
        }
        // the first element of largest magnitude: its sign sets the scale's sign
        const float iscale = lp_q8_K_iscale(x[lp_find_abs_avx2(x, QK_K, amax)]);
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
// Largest |x[j]| of n floats (n a multiple of 4), as lp_amax_ref: integer maxima of the magnitudes' bits.
static inline float lp_block_amax_neon(const float *x, int n) {
    const uint32x4_t mag = vdupq_n_u32(LP_MAG_MASK);
    uint32x4_t m = vandq_u32(vld1q_u32((const uint32_t *)x), mag);
    for (int j = 4; j < n; j += 4) m = vmaxq_u32(m, vandq_u32(vld1q_u32((const uint32_t *)(x + j)), mag));
    return lp_bits_to_float(vmaxvq_u32(m));
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
        if (!lp_amax_finite(amax)) {
            lp_nonfinite_q8_0(&y[i]);
            continue;
        }
        const float mul = amax != 0.0f ? lp_inv_scale(amax) : 0.0f;
        y[i].d = lp_float_to_half(amax / 127.0f);
        vst1q_s8(y[i].qs, lp_round_pack16_neon(x, mul));
        vst1q_s8(y[i].qs + 16, lp_round_pack16_neon(x + 16, mul));
    }
}

void lp_quantize_q8_1_neon(const float *restrict x, void *restrict vy, int64_t n) {
    block_q8_1 *restrict y = vy;
    for (int64_t i = 0; i < n / QK8_1; i++, x += QK8_1) {
        const float amax = lp_block_amax_neon(x, QK8_1);
        if (!lp_amax_finite(amax)) {
            lp_nonfinite_q8_1(&y[i]);
            continue;
        }
        const float d = amax / 127.0f;
        const float mul = amax != 0.0f ? lp_inv_scale(amax) : 0.0f;
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
        if (!lp_amax_finite(amax)) {
            lp_nonfinite_q8_K(&y[i]);
            continue;
        }
        int jmax = 0;  // the first element of largest magnitude: its sign sets the scale's sign
        while (jmax < QK_K - 1 && fabsf(x[jmax]) != amax) jmax++;
        const float iscale = lp_q8_K_iscale(x[jmax]);
        for (int j = 0; j < QK_K; j += 16) {
            const int8x16_t q = lp_round_pack16_neon(x + j, iscale);
            vst1q_s8(y[i].qs + j, q);
            y[i].bsums[j / 16] = (int16_t)vaddlvq_s8(q);
        }
        y[i].d = 1.0f / iscale;
    }
}
#endif
