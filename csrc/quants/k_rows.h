// k_rows.h — one kernel body for vec_dot and vec_dot_4acts of the K-quants (k_q4_q6.c, k_q2_q3.c).
//
// A body `<t>_rows_<isa>(n, s, bs, x, y, by, nr)` dots one weight row x with nr
// activation rows (nr = 1: vec_dot, nr = 4: vec_dot_4acts, nr = 1..4: vec_dot_rows, which
// takes more rows four at a time): row r's Q8_K blocks start at
// y + r * by and its result goes to s[r * bs]. The weight decode (quants, high bits,
// scales) is done once per block for all rows; each row's own arithmetic is the same
// whatever nr is, so vec_dot_4acts gives vec_dot's results bit for bit.
#pragma once
#include "simd.h"

#define K_INLINE static inline __attribute__((always_inline))
// loops over the rows are unrolled, so the per-row accumulators stay in registers
#define K_FOR_ROWS(r) _Pragma("GCC unroll 4") for (int r = 0; r < nr; r++)
// block i of activation row r
#define K_ROW(y, r, by, i) ((const block_q8_K *)((const uint8_t *)(y) + (size_t)(r) * (by)) + (i))
// block i of activation row r, prepared (rows_pre.h: k_pre_q8_K)
#define K4_PRE(vy, r, by, i) ((const k_pre_q8_K *)((const uint8_t *)(vy) + (size_t)(r) * (by)) + (i))
// body(n, s, bs, x, y, by, nr) for any nr: four rows at a time, then the rest (nr a constant 1..4)
#define K_BY_FOURS(body)                                                                                    \
    for (; nr > 4; nr -= 4, s += 4 * bs, y = (const uint8_t *)y + 4 * by) body(n, s, bs, x, y, by, 4);     \
    switch (nr) {                                                                                           \
    case 1: body(n, s, bs, x, y, by, 1); break;                                                             \
    case 2: body(n, s, bs, x, y, by, 2); break;                                                             \
    case 3: body(n, s, bs, x, y, by, 3); break;                                                             \
    default: body(n, s, bs, x, y, by, 4); break;                                                            \
    }
// lp_vec_dot_<t>_<isa> and lp_vec_dot_4acts_<t>_<isa> from the body <t>_rows_<isa>
#define K_ROWS_DOTS(t, isa)                                                                                 \
    void lp_vec_dot_##t##_##isa(int n, float *restrict s, const void *restrict x, const void *restrict y) { \
        t##_rows_##isa(n, s, 0, x, y, 0, 1);                                                                \
    }                                                                                                       \
    void lp_vec_dot_4acts_##t##_##isa(int n, float *restrict s, size_t bs, const void *restrict x,          \
                                      const void *restrict y, size_t by) {                                  \
        t##_rows_##isa(n, s, bs, x, y, by, 4);                                                              \
    }                                                                                                       \
    void lp_vec_dot_rows_##t##_##isa(int n, float *restrict s, size_t bs, const void *restrict x,           \
                                     const void *restrict y, size_t by, int nr) {                           \
        K_BY_FOURS(t##_rows_##isa)                                                                          \
    }

// lp_rows_pre_<t>_<isa> (rows_pre.h) from the bodies <t>_pre_rows8_<isa> (nr = 5..8) and
// <t>_pre_rows_<isa> (nr = 1..4): any nr, eight at a time, a rest of 1..4 rows by the second
#define K_PRE_ROWS(t, isa)                                                                                 \
    void lp_rows_pre_##t##_##isa(int n, float *restrict s, size_t bs, const void *restrict x,               \
                                 const void *restrict y, size_t by, int nr) {                               \
        for (; nr > 4; s += 8 * bs, y = (const uint8_t *)y + 8 * by, nr -= 8)                               \
            t##_pre_rows8_##isa(n, s, bs, x, y, by, nr < 8 ? nr : 8);                                       \
        if (nr > 0) { K_BY_FOURS(t##_pre_rows_##isa) }                                                      \
    }

#if LP_X86
// An empty asm that makes the vector v a register value at this point. A row's
// integer sums are single-use chains; without it GCC moves their additions down to
// the block's end and keeps every product of the block alive (register spills).
#define K_KEEP(v) __asm__("" : "+x"(v))
// The same for AVX-512 code, where the value may live in any of the 32 vector registers.
#define K_KEEP_V(v) __asm__("" : "+v"(v))
// Asks for the weight bytes ahead of the block at p (`bytes` long) now (lp_prefetch_ahead).
// A core decodes these types about as fast as memory delivers them, and the hardware prefetch
// alone left the weight loads waiting, worst with several activation rows of a long row (a
// 4096x14336 Q4_K product, one thread: 1.2 ms for one row, 2.8 ms for two; with this 0.95
// and 1.3 ms). Rows lie one after another, so the bytes ahead are the next row's at a
// row's end (past the matrix's end: a prefetch never faults).
#define K_PREFETCH_AHEAD(p, bytes) lp_prefetch_ahead_bytes(p, bytes)
#endif

#if LP_ARM
// A half float as a float by the hardware conversion (exact, like lp_half_to_float).
static inline float k_half_to_float_neon(lp_half h) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

// Dot products of K-quant quants q with activations a in 4 int32 lanes. Without the
// dot-product instructions, products are first summed in int16: every K-quant has
// |q| <= 32 and |a| <= 128, so a sum of four products stays within 4 * 4096.
// 16 quants:
static inline int32x4_t k_dot16_neon(int8x16_t q, const int8_t *a) {
    const int8x16_t av = vld1q_s8(a);
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(vdupq_n_s32(0), q, av);
#else
    return vpaddlq_s16(vmlal_high_s8(vmull_s8(vget_low_s8(q), vget_low_s8(av)), q, av));
#endif
}
// 32 quants, q0 then q1:
static inline int32x4_t k_dot32_neon(int8x16_t q0, int8x16_t q1, const int8_t *a) {
    const int8x16_t a0 = vld1q_s8(a), a1 = vld1q_s8(a + 16);
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), q0, a0), q1, a1);
#else
    int16x8_t p = vmull_s8(vget_low_s8(q0), vget_low_s8(a0));
    p = vmlal_high_s8(p, q0, a0);
    p = vmlal_s8(p, vget_low_s8(q1), vget_low_s8(a1));
    return vpaddlq_s16(vmlal_high_s8(p, q1, a1));
#endif
}
#endif
