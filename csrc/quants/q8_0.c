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

void lp_q8_0_to_s8(const void *restrict vx, int8_t *restrict q, float *restrict scale, int16_t *restrict sub,
                   float *restrict min, int64_t n) {
    const block_q8_0 *restrict x = vx;
    (void)min, (void)sub;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        memcpy(q + QK8_0 * i, x[i].qs, QK8_0);
        scale[i] = lp_half_to_float(x[i].d);
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
        lp_prefetch_ahead(&x[i]);
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
// Four activation rows per weight row (prompt processing): each row gets exactly
// vec_dot's result (one accumulator, the same sums and products).
//
// AVX2: blocks go in chunks of LP_CHUNK. Pass one converts a chunk's fp16 scales
// for the four rows at once (eight per conversion, one multiply by the weight
// scales) into dm[]; pass two is the integer dot products: |qx| is shared, qy takes
// qx's sign per row, and each row's scale is broadcast from dm[].

#if LP_X86
LP_AVX2_BEGIN
#define LP_CHUNK 64  // blocks; even, so pairs of blocks never straddle two chunks

static inline __m128i load32(const void *p) { int v; memcpy(&v, p, 4); return _mm_cvtsi32_si128(v); }
// The fp16 at p and at p + step of the four rows (stride by): 8 floats, row j in lanes 2j, 2j + 1
static inline __m128i pair16(const uint8_t *p, size_t step) { return _mm_unpacklo_epi16(load32(p), load32(p + step)); }
static inline __m256 rows_h42(const uint8_t *p, size_t step, size_t by) {
    const __m128i r01 = _mm_unpacklo_epi32(pair16(p, step), pair16(p + by, step));
    const __m128i r23 = _mm_unpacklo_epi32(pair16(p + 2 * by, step), pair16(p + 3 * by, step));
    return _mm256_cvtph_ps(_mm_unpacklo_epi64(r01, r23));
}
// fp16 a, b in lanes 0, 1 of every pair of lanes
static inline __m256 rep_h2(lp_half a, lp_half b) { return _mm256_cvtph_ps(_mm_set1_epi32((int)(a | (uint32_t)b << 16))); }

// A += D * (qx . qy) for one row's block YB, as lp_dot_i8x32 computes it: |qx| (ax,
// shared by the rows) times qy with qx's sign
#define LP_ROW(A, YB, D) {                                                                   \
    const __m256i qy = _mm256_loadu_si256((const __m256i *)(YB).qs);                         \
    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(qy, qx)), _mm256_set1_epi16(1)); \
    A = _mm256_fmadd_ps(_mm256_set1_ps(D), _mm256_cvtepi32_ps(p), A); }
// Block b of the four rows; row j's scale at d[k + 2j]
#define LP_BLOCK(b, k) {                                                                     \
    const __m256i qx = _mm256_loadu_si256((const __m256i *)x[b].qs);                         \
    const __m256i ax = _mm256_sign_epi8(qx, qx);                                             \
    LP_ROW(a0, y0[b], d[k]) LP_ROW(a1, y1[b], d[k + 2]) LP_ROW(a2, y2[b], d[k + 4]) LP_ROW(a3, y3[b], d[k + 6]) }

void lp_vec_dot_4acts_q8_0_avx2(int n, float *restrict s, size_t bs, const void *restrict vx,
                                const void *restrict vy, size_t by) {
    const block_q8_0 *restrict x = vx;
    const int nb = n / QK8_0;
    const block_q8_0 *restrict y0 = vy, *restrict y1 = (const block_q8_0 *)((const uint8_t *)vy + by);
    const block_q8_0 *restrict y2 = (const block_q8_0 *)((const uint8_t *)vy + 2 * by);
    const block_q8_0 *restrict y3 = (const block_q8_0 *)((const uint8_t *)vy + 3 * by);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    float dm[LP_CHUNK * 4];  // dm[4 b + 2j + k]: dx*dy of block c + b + k for row j (b even)
    for (int c = 0; c < nb; c += LP_CHUNK) {
        const int ce = c + LP_CHUNK < nb ? c + LP_CHUNK : nb;
        int i = c;
        for (; i + 1 < ce; i += 2)
            _mm256_storeu_ps(dm + (i - c) * 4, _mm256_mul_ps(rep_h2(x[i].d, x[i + 1].d),
                                                             rows_h42((const uint8_t *)&y0[i].d, sizeof(block_q8_0), by)));
        if (i < ce)
            _mm256_storeu_ps(dm + (i - c) * 4, _mm256_mul_ps(rep_h2(x[i].d, 0), rows_h42((const uint8_t *)&y0[i].d, 0, by)));
        const float *d = dm;
        for (i = c; i + 1 < ce; i += 2, d += 8) {
            LP_BLOCK(i, 0)
            LP_BLOCK(i + 1, 1)
        }
        if (i < ce) LP_BLOCK(i, 0)
    }
    s[0] = lp_hsum_f32x8(a0);
    s[bs] = lp_hsum_f32x8(a1);
    s[2 * bs] = lp_hsum_f32x8(a2);
    s[3 * bs] = lp_hsum_f32x8(a3);
}
#undef LP_ROW
#undef LP_BLOCK
#undef LP_CHUNK
LP_AVX2_END
#endif

// NEON: the weight bytes loaded once; per row, vec_dot's two dot products and
// multiply-add. The four rows' scales come from one conversion of four fp16.
#if LP_ARM
void lp_vec_dot_4acts_q8_0_neon(int n, float *restrict s, size_t bs, const void *restrict vx,
                                const void *restrict vy, size_t by) {
    const block_q8_0 *restrict x = vx;
    const block_q8_0 *restrict y[4];
    float32x4_t acc[4];
    for (int j = 0; j < 4; j++) {
        y[j] = (const block_q8_0 *)((const uint8_t *)vy + j * by);
        acc[j] = vdupq_n_f32(0.0f);
    }
    for (int i = 0; i < n / QK8_0; i++) {
        const lp_half h[4] = {y[0][i].d, y[1][i].d, y[2][i].d, y[3][i].d};
        const float32x4_t d = vmulq_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(x[i].d))),
                                        vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h))));
        const int8x16_t x0 = vld1q_s8(x[i].qs), x1 = vld1q_s8(x[i].qs + 16);
#define LP_ROW(j)                                                                            \
        acc[j] = vmlaq_laneq_f32(acc[j], vcvtq_f32_s32(lp_dot_i8x16(lp_dot_i8x16(vdupq_n_s32(0), x0, \
            vld1q_s8(y[j][i].qs)), x1, vld1q_s8(y[j][i].qs + 16))), d, j);
        LP_ROW(0) LP_ROW(1) LP_ROW(2) LP_ROW(3)
#undef LP_ROW
    }
    for (int j = 0; j < 4; j++) s[j * bs] = vaddvq_f32(acc[j]);
}
#endif
