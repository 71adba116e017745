// quantize_legacy_avx2.c — AVX2 bodies for the quantizer's hot simple paths: Q8_0 (the one
// 32-block type whose scalar form is slow: roundf per element) and the F16 -> F32 reading of
// an F16 model's rows (F16C). Both give exactly the scalar results:
// - Q8_0: amax as a max over |x| (the same value in any order for rows without NaN, and rows
//   with NaN are refused), d and 1 / d in scalar code as quantize_legacy.c, roundf as truncation
//   plus one away from zero when the dropped fraction is >= 0.5 (exact: the fraction of a float
//   below 2^23 is exact), and the conversion to int8 as cvttps2dq + low byte: what quantize.h's
//   lp_cvt_i8 does (INT32_MIN for NaN and out-of-range values, then the low 8 bits);
// - F16 -> F32: vcvtph2ps converts every half exactly, denormals included.
#include "quantize.h"
#include "simd.h"

#if LP_X86
LP_AVX2_BEGIN

static inline __m256 round_away(__m256 p) {
    const __m256 t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 half = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(p, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(sign, p));  // copysign(1, p)
    return _mm256_add_ps(t, _mm256_and_ps(half, one));
}

// the low byte of each int32 of a, b, c, d (in that order) as 32 bytes
static inline __m256i low_bytes(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i m = _mm256_set1_epi32(0xff);
    const __m256i ab = _mm256_packus_epi32(_mm256_and_si256(a, m), _mm256_and_si256(b, m));
    const __m256i cd = _mm256_packus_epi32(_mm256_and_si256(c, m), _mm256_and_si256(d, m));
    return _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

void lp_quantize_weights_q8_0_avx2(const float *restrict x, void *restrict vy, int64_t n) {
    block_q8_0 *restrict y = vy;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        __m256 v[4];
        for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = lp_float_to_half(d);
        const __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) q[k] = _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v[k], vid)));
        _mm256_storeu_si256((__m256i *)y[i].qs, low_bytes(q[0], q[1], q[2], q[3]));
    }
}

void lp_f16_to_float_f16c(const void *restrict vx, float *restrict y, int64_t n) {
    const lp_half *restrict x = vx;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    for (; i < n; i++) y[i] = lp_half_to_float(x[i]);
}

// lp_float_to_half of each value, 8 at a time by F16C (round to nearest even, as it; an 8
// holding a NaN goes one by one: F16C keeps a NaN's payload, lp_float_to_half does not).
void lp_floats_to_halves_f16c(lp_half *restrict y, const float *restrict x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))) {
            for (int j = 0; j < 8; j++) y[i + j] = lp_float_to_half(x[i + j]);
            continue;
        }
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    for (; i < n; i++) y[i] = lp_float_to_half(x[i]);
}

LP_AVX2_END
#endif
