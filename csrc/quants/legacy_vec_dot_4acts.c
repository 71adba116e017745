// legacy_vec_dot_4acts.c — vec_dot_4acts for the legacy formats (legacy.c): one weight row,
// four activation rows (prompt processing). The weight blocks are decoded once
// for the four rows; each row gets exactly its vec_dot result: the same integer
// sums per block (any exact integer method gives the same int32 lanes), the same
// accumulators (even blocks, odd blocks), the same float operations in the same order.
#include "simd.h"

// AVX2: blocks go in chunks of LP_CHUNK. Pass one converts the chunk's fp16 scales
// of the four rows, eight per conversion, times the weight scales in one multiply,
// into dm[]; pass two is the integer dot products (the weight quants decoded once),
// each row's scale broadcast from dm[]. Two passes keep the 8 accumulators and the
// decoded quants in registers; one pass with the scales in registers measured
// slower (Zen 4, SmolLM2 and 4096-wide rows).

#if LP_X86
LP_AVX2_BEGIN
#define LP_CHUNK 64  // blocks; even, so pairs of blocks never straddle two chunks

// (as in legacy.c) 32 quants of 4 bits: low nibbles of the 16 bytes at qs, then the high nibbles
static inline __m256i nibbles32(const uint8_t *qs) {
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    return _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f));
}

// Bit j of the 32 bits at p as 0x10 in byte j: the fifth bit of a Q5 quant
static inline __m256i fifth_bits32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    const __m256i which = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                            0x0101010101010101, 0x0000000000000000);
    const __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201ull);
    const __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)v), which);  // byte j = byte j/8 of v
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit), _mm256_set1_epi8(0x10));
}

static inline uint32_t word32(const void *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline __m128i load32(const void *p) { return _mm_cvtsi32_si128((int)word32(p)); }
// The 32-bit words (two fp16) at p of the four rows (stride by): 8 floats, row j in
// lanes 2j, 2j + 1
static inline __m256 rows_w4(const uint8_t *p, size_t by) {
    __m128i v = load32(p);
    v = _mm_insert_epi32(v, (int)word32(p + by), 1);
    v = _mm_insert_epi32(v, (int)word32(p + 2 * by), 2);
    return _mm256_cvtph_ps(_mm_insert_epi32(v, (int)word32(p + 3 * by), 3));
}
// The fp16 at p and at p + step of the four rows: 8 floats, row j in lanes 2j, 2j + 1
// (32-bit loads and unpacks: measured cheaper than 16-bit inserts or general registers)
static inline __m128i pair16(const uint8_t *p, size_t step) { return _mm_unpacklo_epi16(load32(p), load32(p + step)); }
static inline __m256 rows_h42(const uint8_t *p, size_t step, size_t by) {
    const __m128i r01 = _mm_unpacklo_epi32(pair16(p, step), pair16(p + by, step));
    const __m128i r23 = _mm_unpacklo_epi32(pair16(p + 2 * by, step), pair16(p + 3 * by, step));
    return _mm256_cvtph_ps(_mm_unpacklo_epi64(r01, r23));
}
// a 32-bit word (two fp16) in every pair of lanes
static inline __m256 rep_w(uint32_t w) { return _mm256_cvtph_ps(_mm_set1_epi32((int)w)); }

// Q4_0 / Q5_0: dm[4b + 2j + k] = dx*dy of block c + b + k for row j (b even, k = 0, 1).
// The quants go signed (q - offset), shared by the rows; per row, |qy| times
// (q - offset) with qy's sign is exactly vec_dot's q . qy - offset . qy in every int32
// lane, for any qy (-128 included; all fits in int16).
#define LP_DOT_4ACTS_Q8_0_BODY(QUANTS, OFFSET)                                                    \
    const int nb = n / 32;                                                                   \
    const block_q8_0 *restrict y0 = vy, *restrict y1 = (const block_q8_0 *)((const uint8_t *)vy + by); \
    const block_q8_0 *restrict y2 = (const block_q8_0 *)((const uint8_t *)vy + 2 * by);      \
    const block_q8_0 *restrict y3 = (const block_q8_0 *)((const uint8_t *)vy + 3 * by);      \
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0; \
    const __m256i off = _mm256_set1_epi8(OFFSET);                                            \
    float dm[LP_CHUNK * 4];                                                                  \
    for (int c = 0; c < nb; c += LP_CHUNK) {                                                 \
        const int ce = c + LP_CHUNK < nb ? c + LP_CHUNK : nb;                                \
        int i = c;                                                                           \
        for (; i + 1 < ce; i += 2)                                                           \
            _mm256_storeu_ps(dm + (i - c) * 4, _mm256_mul_ps(rep_w(x[i].d | (uint32_t)x[i + 1].d << 16), \
                rows_h42((const uint8_t *)&y0[i].d, sizeof(block_q8_0), by)));               \
        if (i < ce)                                                                          \
            _mm256_storeu_ps(dm + (i - c) * 4, _mm256_mul_ps(rep_w(x[i].d), rows_h42((const uint8_t *)&y0[i].d, 0, by))); \
        const float *d = dm;                                                                 \
        for (i = c; i + 1 < ce; i += 2, d += 8) {                                            \
            const __m256i q0 = _mm256_sub_epi8(QUANTS(i), off), q1 = _mm256_sub_epi8(QUANTS(i + 1), off); \
            LP_ROW(a0, q0, y0[i], d[0]) LP_ROW(b0, q1, y0[i + 1], d[1])                      \
            LP_ROW(a1, q0, y1[i], d[2]) LP_ROW(b1, q1, y1[i + 1], d[3])                      \
            LP_ROW(a2, q0, y2[i], d[4]) LP_ROW(b2, q1, y2[i + 1], d[5])                      \
            LP_ROW(a3, q0, y3[i], d[6]) LP_ROW(b3, q1, y3[i + 1], d[7])                      \
        }                                                                                    \
        if (i < ce) {                                                                        \
            const __m256i q0 = _mm256_sub_epi8(QUANTS(i), off);                              \
            LP_ROW(a0, q0, y0[i], d[0]) LP_ROW(a1, q0, y1[i], d[2])                          \
            LP_ROW(a2, q0, y2[i], d[4]) LP_ROW(a3, q0, y3[i], d[6])                          \
        }                                                                                    \
    }                                                                                        \
    s[0] = lp_hsum_f32x8(_mm256_add_ps(a0, b0));                                             \
    s[bs] = lp_hsum_f32x8(_mm256_add_ps(a1, b1));                                            \
    s[2 * bs] = lp_hsum_f32x8(_mm256_add_ps(a2, b2));                                        \
    s[3 * bs] = lp_hsum_f32x8(_mm256_add_ps(a3, b3));

// Q4_1 / Q5_1: dm[8b + 2j], dm[8b + 2j + 1] = [dx*dy, m*s] of block c + b for row j;
// the odd lanes of `mins` sum the four rows' min terms, two blocks at a time as in vec_dot.
#define LP_DM8(i) _mm256_mul_ps(rep_w(word32(&x[i].d)), rows_w4((const uint8_t *)&y0[i].d, by))
#define LP_DOT_4ACTS_Q8_1_BODY(QUANTS)                                                            \
    const int nb = n / 32;                                                                   \
    const block_q8_1 *restrict y0 = vy, *restrict y1 = (const block_q8_1 *)((const uint8_t *)vy + by); \
    const block_q8_1 *restrict y2 = (const block_q8_1 *)((const uint8_t *)vy + 2 * by);      \
    const block_q8_1 *restrict y3 = (const block_q8_1 *)((const uint8_t *)vy + 3 * by);      \
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0; \
    __m256 mins = a0;                                                                        \
    float dm[LP_CHUNK * 8];                                                                  \
    for (int c = 0; c < nb; c += LP_CHUNK) {                                                 \
        const int ce = c + LP_CHUNK < nb ? c + LP_CHUNK : nb;                                \
        int i = c;                                                                           \
        for (; i + 1 < ce; i += 2) {                                                         \
            const __m256 f0 = LP_DM8(i), f1 = LP_DM8(i + 1);                                 \
            _mm256_storeu_ps(dm + (i - c) * 8, f0);                                          \
            _mm256_storeu_ps(dm + (i - c) * 8 + 8, f1);                                      \
            mins = _mm256_add_ps(mins, _mm256_add_ps(f0, f1));                               \
        }                                                                                    \
        if (i < ce) {                                                                        \
            const __m256 f0 = LP_DM8(i);                                                     \
            _mm256_storeu_ps(dm + (i - c) * 8, f0);                                          \
            mins = _mm256_add_ps(mins, f0);                                                  \
        }                                                                                    \
        const float *d = dm;                                                                 \
        for (i = c; i + 1 < ce; i += 2, d += 16) {                                           \
            const __m256i q0 = QUANTS(i), q1 = QUANTS(i + 1);                                \
            LP_ROW(a0, q0, y0[i], d[0]) LP_ROW(b0, q1, y0[i + 1], d[8])                      \
            LP_ROW(a1, q0, y1[i], d[2]) LP_ROW(b1, q1, y1[i + 1], d[10])                     \
            LP_ROW(a2, q0, y2[i], d[4]) LP_ROW(b2, q1, y2[i + 1], d[12])                     \
            LP_ROW(a3, q0, y3[i], d[6]) LP_ROW(b3, q1, y3[i + 1], d[14])                     \
        }                                                                                    \
        if (i < ce) {                                                                        \
            const __m256i q0 = QUANTS(i);                                                    \
            LP_ROW(a0, q0, y0[i], d[0]) LP_ROW(a1, q0, y1[i], d[2])                          \
            LP_ROW(a2, q0, y2[i], d[4]) LP_ROW(a3, q0, y3[i], d[6])                          \
        }                                                                                    \
    }                                                                                        \
    float m[8];                                                                              \
    _mm256_storeu_ps(m, mins);                                                               \
    s[0] = lp_hsum_f32x8(_mm256_add_ps(a0, b0)) + m[1];                                      \
    s[bs] = lp_hsum_f32x8(_mm256_add_ps(a1, b1)) + m[3];                                     \
    s[2 * bs] = lp_hsum_f32x8(_mm256_add_ps(a2, b2)) + m[5];                                 \
    s[3 * bs] = lp_hsum_f32x8(_mm256_add_ps(a3, b3)) + m[7];

#define Q4_QUANTS(b) nibbles32(x[b].qs)
#define Q5_QUANTS(b) _mm256_or_si256(nibbles32(x[b].qs), fifth_bits32(x[b].qh))
#define LP_DOT_4ACTS_FN(t)                                                                        \
    void lp_vec_dot_4acts_##t##_avx2(int n, float *restrict s, size_t bs, const void *restrict vx, \
                                     const void *restrict vy, size_t by)

// A += D * (block's integer sum): signed quants Q against |qy| with qy's sign
#define LP_ROW(A, Q, YB, D) {                                                                \
    const __m256i yv = _mm256_loadu_si256((const __m256i *)(YB).qs);                         \
    const __m256i p = lp_dot_u8i8x32(_mm256_sign_epi8(yv, yv), _mm256_sign_epi8(Q, yv));     \
    A = _mm256_fmadd_ps(_mm256_set1_ps(D), _mm256_cvtepi32_ps(p), A); }
LP_DOT_4ACTS_FN(q5_0) {
    const block_q5_0 *restrict x = vx;
    LP_DOT_4ACTS_Q8_0_BODY(Q5_QUANTS, 16)
}
#undef LP_ROW
// A += D * (block's integer sum): unsigned quants Q against qy
#define LP_ROW(A, Q, YB, D) \
    A = _mm256_fmadd_ps(_mm256_set1_ps(D), _mm256_cvtepi32_ps(lp_dot_u8i8x32(Q, _mm256_loadu_si256((const __m256i *)(YB).qs))), A);

LP_DOT_4ACTS_FN(q5_1) {
    const block_q5_1 *restrict x = vx;
    LP_DOT_4ACTS_Q8_1_BODY(Q5_QUANTS)
}
#undef LP_ROW
#undef LP_DM8
#undef Q4_QUANTS
#undef Q5_QUANTS
#undef LP_DOT_4ACTS_FN
#undef LP_DOT_4ACTS_Q8_0_BODY
#undef LP_DOT_4ACTS_Q8_1_BODY
#undef LP_CHUNK
LP_AVX2_END
#endif

// NEON: the quants of a block decoded once; per row, vec_dot's two dot products,
// conversion, multiply by the scale and add. Each fp16 scale is converted once, two
// rows' per conversion.

#if LP_ARM
// (as in legacy.c) Nibbles of a block: elements 0..15 in *lo, 16..31 in *hi.
static inline void nibbles_neon(const uint8_t *qs, uint8x16_t *lo, uint8x16_t *hi) {
    const uint8x16_t v = vld1q_u8(qs);
    *lo = vandq_u8(v, vdupq_n_u8(0x0f));
    *hi = vshrq_n_u8(v, 4);
}

// Q5 quants: the nibbles with bit j of qh as 0x10 in element j.
static inline void q5_neon(const uint8_t *qs, const uint8_t *qh, uint8x16_t *lo, uint8x16_t *hi) {
    static const uint8_t idx_lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    static const uint8_t idx_hi[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint32_t v;
    memcpy(&v, qh, 4);
    const uint8x16_t bytes = vreinterpretq_u8_u32(vdupq_n_u32(v));
    const uint8x16_t b = vld1q_u8(bit), h = vdupq_n_u8(0x10);
    nibbles_neon(qs, lo, hi);
    // element j takes qh byte j/8 and tests bit j%8
    *lo = vorrq_u8(*lo, vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, vld1q_u8(idx_lo)), b), h));
    *hi = vorrq_u8(*hi, vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, vld1q_u8(idx_hi)), b), h));
}

// The 32-bit words (two fp16) at p and q as 4 floats
static inline float32x4_t words2r(const lp_half *p, const lp_half *q) {
    uint32_t w[2];
    memcpy(&w[0], p, 4);
    memcpy(&w[1], q, 4);
    return vcvt_f32_f16(vreinterpret_f16_u32(vld1_u32(w)));
}
// The fp16 at p and q as floats in lanes 0 and 2
static inline float32x4_t halves2r(const lp_half *p, const lp_half *q) {
    const lp_half h[4] = {*p, 0, *q, 0};
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
}
// (q - offset) . qy for one block as 4 int32, converted: vec_dot's integer part
static inline float32x4_t dot_block_f(int8x16_t a, int8x16_t b, const int8_t *qy) {
    return vcvtq_f32_s32(lp_dot_i8x16(lp_dot_i8x16(vdupq_n_s32(0), a, vld1q_s8(qy)), b, vld1q_s8(qy + 16)));
}
// Block i of the four rows into accumulators A0..A3: quants a, b; row j's scale in
// lane 2j (F01: rows 0, 1; F23: rows 2, 3)
#define LP_NEON4_BLOCK(A0, A1, A2, A3, F01, F23)                                             \
    A0 = vaddq_f32(A0, vmulq_laneq_f32(dot_block_f(a, b, y0[i].qs), F01, 0));                \
    A1 = vaddq_f32(A1, vmulq_laneq_f32(dot_block_f(a, b, y1[i].qs), F01, 2));                \
    A2 = vaddq_f32(A2, vmulq_laneq_f32(dot_block_f(a, b, y2[i].qs), F23, 0));                \
    A3 = vaddq_f32(A3, vmulq_laneq_f32(dot_block_f(a, b, y3[i].qs), F23, 2));
#define LP_NEON4_ROWS(T)                                                                     \
    const int nb = n / 32;                                                                   \
    const T *restrict y0 = vy, *restrict y1 = (const T *)((const uint8_t *)vy + by);         \
    const T *restrict y2 = (const T *)((const uint8_t *)vy + 2 * by);                        \
    const T *restrict y3 = (const T *)((const uint8_t *)vy + 3 * by);                        \
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0; \
    uint8x16_t lo, hi;

// Q4_0 / Q5_0: f01 = dx*dy of rows 0, 1 in lanes 0, 2
#define LP_NEON4_Q8_0_STEP(QUANTS, OFFSET, A0, A1, A2, A3) {                                 \
    const float32x4_t dx = vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(x[i].d)));           \
    const float32x4_t f01 = vmulq_f32(dx, halves2r(&y0[i].d, &y1[i].d));                     \
    const float32x4_t f23 = vmulq_f32(dx, halves2r(&y2[i].d, &y3[i].d));                     \
    QUANTS(i, &lo, &hi);                                                                     \
    const int8x16_t a = vsubq_s8(vreinterpretq_s8_u8(lo), vdupq_n_s8(OFFSET));               \
    const int8x16_t b = vsubq_s8(vreinterpretq_s8_u8(hi), vdupq_n_s8(OFFSET));               \
    LP_NEON4_BLOCK(A0, A1, A2, A3, f01, f23) }
#define LP_NEON4_Q8_0_BODY(QUANTS, OFFSET)                                                   \
    LP_NEON4_ROWS(block_q8_0)                                                                \
    int i = 0;                                                                               \
    for (; i + 1 < nb; i++) {                                                                \
        LP_NEON4_Q8_0_STEP(QUANTS, OFFSET, a0, a1, a2, a3)                                   \
        i++;                                                                                 \
        LP_NEON4_Q8_0_STEP(QUANTS, OFFSET, b0, b1, b2, b3)                                   \
    }                                                                                        \
    if (i < nb) LP_NEON4_Q8_0_STEP(QUANTS, OFFSET, a0, a1, a2, a3)                           \
    s[0] = vaddvq_f32(vaddq_f32(a0, b0));                                                    \
    s[bs] = vaddvq_f32(vaddq_f32(a1, b1));                                                   \
    s[2 * bs] = vaddvq_f32(vaddq_f32(a2, b2));                                               \
    s[3 * bs] = vaddvq_f32(vaddq_f32(a3, b3));

// Q4_1 / Q5_1: F01 = [dx*dy, m*s] of rows 0, 1 in lanes 0-1, 2-3; the odd lanes of
// mins01 / mins23 sum the min terms, two blocks at a time as in vec_dot.
#define LP_NEON4_Q8_1_STEP(QUANTS, A0, A1, A2, A3, F01, F23) {                               \
    uint32_t w;                                                                              \
    memcpy(&w, &x[i].d, 4);                                                                  \
    const float32x4_t dm = vcvt_f32_f16(vreinterpret_f16_u32(vdup_n_u32(w)));                \
    F01 = vmulq_f32(dm, words2r(&y0[i].d, &y1[i].d));                                        \
    F23 = vmulq_f32(dm, words2r(&y2[i].d, &y3[i].d));                                        \
    QUANTS(i, &lo, &hi);                                                                     \
    const int8x16_t a = vreinterpretq_s8_u8(lo), b = vreinterpretq_s8_u8(hi);                \
    LP_NEON4_BLOCK(A0, A1, A2, A3, F01, F23) }
#define LP_NEON4_Q8_1_BODY(QUANTS)                                                           \
    LP_NEON4_ROWS(block_q8_1)                                                                \
    float32x4_t mins01 = vdupq_n_f32(0.0f), mins23 = mins01, e01, e23, o01, o23;             \
    int i = 0;                                                                               \
    for (; i + 1 < nb; i++) {                                                                \
        LP_NEON4_Q8_1_STEP(QUANTS, a0, a1, a2, a3, e01, e23)                                 \
        i++;                                                                                 \
        LP_NEON4_Q8_1_STEP(QUANTS, b0, b1, b2, b3, o01, o23)                                 \
        mins01 = vaddq_f32(mins01, vaddq_f32(e01, o01));                                     \
        mins23 = vaddq_f32(mins23, vaddq_f32(e23, o23));                                     \
    }                                                                                        \
    if (i < nb) {                                                                            \
        LP_NEON4_Q8_1_STEP(QUANTS, a0, a1, a2, a3, e01, e23)                                 \
        mins01 = vaddq_f32(mins01, e01);                                                     \
        mins23 = vaddq_f32(mins23, e23);                                                     \
    }                                                                                        \
    s[0] = vaddvq_f32(vaddq_f32(a0, b0)) + vgetq_lane_f32(mins01, 1);                        \
    s[bs] = vaddvq_f32(vaddq_f32(a1, b1)) + vgetq_lane_f32(mins01, 3);                       \
    s[2 * bs] = vaddvq_f32(vaddq_f32(a2, b2)) + vgetq_lane_f32(mins23, 1);                   \
    s[3 * bs] = vaddvq_f32(vaddq_f32(a3, b3)) + vgetq_lane_f32(mins23, 3);

#define Q4_NEON(b, lo, hi) nibbles_neon(x[b].qs, lo, hi)
#define Q5_NEON(b, lo, hi) q5_neon(x[b].qs, x[b].qh, lo, hi)
#define LP_DOT_4ACTS_FN(t)                                                                        \
    void lp_vec_dot_4acts_##t##_neon(int n, float *restrict s, size_t bs, const void *restrict vx, \
                                     const void *restrict vy, size_t by)

LP_DOT_4ACTS_FN(q4_0) {
    const block_q4_0 *restrict x = vx;
    LP_NEON4_Q8_0_BODY(Q4_NEON, 8)
}

LP_DOT_4ACTS_FN(q5_0) {
    const block_q5_0 *restrict x = vx;
    LP_NEON4_Q8_0_BODY(Q5_NEON, 16)
}

LP_DOT_4ACTS_FN(q4_1) {
    const block_q4_1 *restrict x = vx;
    LP_NEON4_Q8_1_BODY(Q4_NEON)
}

LP_DOT_4ACTS_FN(q5_1) {
    const block_q5_1 *restrict x = vx;
    LP_NEON4_Q8_1_BODY(Q5_NEON)
}
#undef Q4_NEON
#undef Q5_NEON
#undef LP_DOT_4ACTS_FN
#undef LP_NEON4_BLOCK
#undef LP_NEON4_ROWS
#undef LP_NEON4_Q8_0_STEP
#undef LP_NEON4_Q8_1_STEP
#undef LP_NEON4_Q8_0_BODY
#undef LP_NEON4_Q8_1_BODY
#endif
