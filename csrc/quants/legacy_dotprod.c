// legacy_dotprod.c — the DOTPROD dots (dotprod.h) of the 32-weight block formats: Q4_0,
// Q4_1, Q5_0, Q5_1 (legacy.c) and Q8_0 (q8_0.c), against Q8_0 / Q8_1 activations.
#include "dotprod.h"

#if LP_ARM
// -- Q8_0 and Q4_0 (Q8_0 activations): per block, one int32 dot and one float multiply-add --------

K_INLINE void q8_0_rows_dotprod(int n, float *restrict s, size_t bs, const void *restrict vx,
                                const void *restrict vy, size_t by, const int nr) {
    const block_q8_0 *restrict x = vx;
    float32x4_t acc[4];
    K_FOR_ROWS(r) acc[r] = vdupq_n_f32(0.0f);
    for (int i = 0; i < n / QK8_0; i++) {
        const int8x16_t q0 = vld1q_s8(x[i].qs), q1 = vld1q_s8(x[i].qs + 16);
        const float dx = dp_half(x[i].d);
        K_FOR_ROWS(r) {
            const block_q8_0 *yr = (const block_q8_0 *)((const uint8_t *)vy + (size_t)r * by) + i;
            const int32x4_t p = dp_dot32(vdupq_n_s32(0), q0, q1, yr->qs);
            acc[r] = vmlaq_n_f32(acc[r], vcvtq_f32_s32(p), dx * dp_half(yr->d));
        }
    }
    K_FOR_ROWS(r) s[r * bs] = vaddvq_f32(acc[r]);
}

// Q4_0: element j of a block is its nibble j (low nibbles first, then high) minus 8.
K_INLINE void q4_0_rows_dotprod(int n, float *restrict s, size_t bs, const void *restrict vx,
                                const void *restrict vy, size_t by, const int nr) {
    const block_q4_0 *restrict x = vx;
    const uint8x16_t m4 = vdupq_n_u8(0x0f);
    const int8x16_t eight = vdupq_n_s8(8);
    float32x4_t acc[4];
    K_FOR_ROWS(r) acc[r] = vdupq_n_f32(0.0f);
    for (int i = 0; i < n / QK4_0; i++) {
        const uint8x16_t v = vld1q_u8(x[i].qs);
        const int8x16_t q0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, m4)), eight);
        const int8x16_t q1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight);
        const float dx = dp_half(x[i].d);
        K_FOR_ROWS(r) {
            const block_q8_0 *yr = (const block_q8_0 *)((const uint8_t *)vy + (size_t)r * by) + i;
            const int32x4_t p = dp_dot32(vdupq_n_s32(0), q0, q1, yr->qs);
            acc[r] = vmlaq_n_f32(acc[r], vcvtq_f32_s32(p), dx * dp_half(yr->d));
        }
    }
    K_FOR_ROWS(r) s[r * bs] = vaddvq_f32(acc[r]);
}

// Q4_1 (Q8_1 activations): nibbles 0..15 times d, plus the block's min m; the activations
// carry s = dy * sum(qy), so the min's share is m * s.
K_INLINE void q4_1_rows_dotprod(int n, float *restrict s, size_t bs, const void *restrict vx,
                                const void *restrict vy, size_t by, const int nr) {
    const block_q4_1 *restrict x = vx;
    const uint8x16_t m4 = vdupq_n_u8(0x0f);
    float32x4_t acc[4];
    float mins[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    K_FOR_ROWS(r) acc[r] = vdupq_n_f32(0.0f);
    for (int i = 0; i < n / QK4_1; i++) {
        const uint8x16_t v = vld1q_u8(x[i].qs);
        const int8x16_t q0 = vreinterpretq_s8_u8(vandq_u8(v, m4)), q1 = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
        const float dx = dp_half(x[i].d), mx = dp_half(x[i].m);
        K_FOR_ROWS(r) {
            const block_q8_1 *yr = (const block_q8_1 *)((const uint8_t *)vy + (size_t)r * by) + i;
            const int32x4_t p = dp_dot32(vdupq_n_s32(0), q0, q1, yr->qs);
            acc[r] = vmlaq_n_f32(acc[r], vcvtq_f32_s32(p), dx * dp_half(yr->d));
            mins[r] += mx * dp_half(yr->s);
        }
    }
    K_FOR_ROWS(r) s[r * bs] = vaddvq_f32(acc[r]) + mins[r];
}

// Q5_0 / Q5_1 quants (0..31): the nibbles with bit j of qh as 16 in element j.
static inline void q5_quants(const uint8_t *qs, const uint8_t *qh, int8x16_t *lo, int8x16_t *hi) {
    static const uint8_t byte_lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    static const uint8_t byte_hi[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint32_t h;
    memcpy(&h, qh, 4);
    const uint8x16_t bytes = vreinterpretq_u8_u32(vdupq_n_u32(h)), b = vld1q_u8(bit), v = vld1q_u8(qs);
    const uint8x16_t h_lo = vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, vld1q_u8(byte_lo)), b), vdupq_n_u8(16));
    const uint8x16_t h_hi = vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, vld1q_u8(byte_hi)), b), vdupq_n_u8(16));
    *lo = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(v, vdupq_n_u8(0x0f)), h_lo));
    *hi = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(v, 4), h_hi));
}

// Q5_0: quants minus 16, Q8_0 activations.
K_INLINE void q5_0_rows_dotprod(int n, float *restrict s, size_t bs, const void *restrict vx,
                                const void *restrict vy, size_t by, const int nr) {
    const block_q5_0 *restrict x = vx;
    const int8x16_t sixteen = vdupq_n_s8(16);
    float32x4_t acc[4];
    K_FOR_ROWS(r) acc[r] = vdupq_n_f32(0.0f);
    for (int i = 0; i < n / QK5_0; i++) {
        int8x16_t q0, q1;
        q5_quants(x[i].qs, x[i].qh, &q0, &q1);
        q0 = vsubq_s8(q0, sixteen);
        q1 = vsubq_s8(q1, sixteen);
        const float dx = dp_half(x[i].d);
        K_FOR_ROWS(r) {
            const block_q8_0 *yr = (const block_q8_0 *)((const uint8_t *)vy + (size_t)r * by) + i;
            const int32x4_t p = dp_dot32(vdupq_n_s32(0), q0, q1, yr->qs);
            acc[r] = vmlaq_n_f32(acc[r], vcvtq_f32_s32(p), dx * dp_half(yr->d));
        }
    }
    K_FOR_ROWS(r) s[r * bs] = vaddvq_f32(acc[r]);
}

// Q5_1: quants times d plus the min m, Q8_1 activations (as Q4_1).
K_INLINE void q5_1_rows_dotprod(int n, float *restrict s, size_t bs, const void *restrict vx,
                                const void *restrict vy, size_t by, const int nr) {
    const block_q5_1 *restrict x = vx;
    float32x4_t acc[4];
    float mins[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    K_FOR_ROWS(r) acc[r] = vdupq_n_f32(0.0f);
    for (int i = 0; i < n / QK5_1; i++) {
        int8x16_t q0, q1;
        q5_quants(x[i].qs, x[i].qh, &q0, &q1);
        const float dx = dp_half(x[i].d), mx = dp_half(x[i].m);
        K_FOR_ROWS(r) {
            const block_q8_1 *yr = (const block_q8_1 *)((const uint8_t *)vy + (size_t)r * by) + i;
            const int32x4_t p = dp_dot32(vdupq_n_s32(0), q0, q1, yr->qs);
            acc[r] = vmlaq_n_f32(acc[r], vcvtq_f32_s32(p), dx * dp_half(yr->d));
            mins[r] += mx * dp_half(yr->s);
        }
    }
    K_FOR_ROWS(r) s[r * bs] = vaddvq_f32(acc[r]) + mins[r];
}
K_ROWS_DOTS(q8_0, dotprod)
K_ROWS_DOTS(q4_0, dotprod)
K_ROWS_DOTS(q4_1, dotprod)
K_ROWS_DOTS(q5_0, dotprod)
K_ROWS_DOTS(q5_1, dotprod)

LP_DOTPROD_END
#endif
