// dotprod.c — dot products of the hot quant types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) for aarch64 CPUs with the Armv8.2-A
// dot-product instructions (SDOT: four int8 products summed into each int32 lane).
//
// The library is built for baseline armv8-a; only this file's functions are compiled for
// +dotprod, and types.c uses them only after lp_cpu_has_dotprod() said yes (once, at start-up).
// Each body serves vec_dot (1 activation row) and vec_dot4 (4 rows, each row's arithmetic the
// same as vec_dot's, so the results are equal bit for bit): see k_rows.h.
#include "dotprod.h"

#if defined(__linux__) && defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
int lp_cpu_has_dotprod(void) { return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0; }
#else
int lp_cpu_has_dotprod(void) { return 0; }  // other systems: NEON (a check of their own would go here)
#endif

#if LP_ARM
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("dotprod"))), apply_to = function)
#else
#pragma GCC target("arch=armv8.2-a+dotprod")  // what arm_neon.h asks of SDOT's callers
#endif
#include "k_rows.h"

// 32 int8 products of a (two vectors) and b, summed into 4 int32 lanes added to acc.
static inline int32x4_t dp_dot32(int32x4_t acc, int8x16_t a0, int8x16_t a1, const int8_t *b) {
    return vdotq_s32(vdotq_s32(acc, a0, vld1q_s8(b)), a1, vld1q_s8(b + 16));
}
static inline float dp_half(lp_half h) { return k_half_to_float_neon(h); }

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

// -- Q4_K and Q5_K (Q8_K activations) ----------------------------------------------------------

// The packed 6-bit scales and mins of a Q4_K (or Q5_K) block: sm[0..7] scales, sm[8..15] mins (the
// block layout is described in k_high.c).
static inline void q4_K_scales(const uint8_t *restrict p, uint8_t *restrict sm) {
    uint32_t w[3], out[4];
    memcpy(w, p, 12);
    out[0] = w[0] & 0x3f3f3f3fu;
    out[1] = (w[2] & 0x0f0f0f0fu) | (((w[0] >> 6) & 0x03030303u) << 4);
    out[2] = w[1] & 0x3f3f3f3fu;
    out[3] = ((w[2] >> 4) & 0x0f0f0f0fu) | (((w[1] >> 6) & 0x03030303u) << 4);
    memcpy(sm, out, 16);
}

// Sum over the 8 sub-blocks of min * (sum of its 32 activations), from the 16 group sums.
static inline int q4_K_min_dot(const uint8_t *mins, const int16_t *bsums) {
    const int16x8_t pairs = vpaddq_s16(vld1q_s16(bsums), vld1q_s16(bsums + 8));
    const int16x8_t m = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mins)));
    return vaddvq_s32(vmlal_high_s16(vmull_s16(vget_low_s16(pairs), vget_low_s16(m)), pairs, m));
}

// Q4_K (q5 = 0) and Q5_K (q5 = 1), which share d, dmin and the packed scales. Sub-block 2k: the
// low nibbles of qs[32k .. 32k+31]; sub-block 2k+1: their high nibbles. Q5_K adds bit 2k (2k+1)
// of qh[l] as 16 to quant l of sub-block 2k (2k+1). Quants 0..31 go straight into the signed
// dot; the scales multiply its int32 sums.
K_INLINE void k4_rows_dotprod(int n, float *restrict s, size_t bs, const void *restrict vx,
                              const void *restrict vy, size_t by, const int nr, const int q5) {
    const uint8_t *x = vx;
    const size_t size = q5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const size_t qs_off = q5 ? offsetof(block_q5_K, qs) : offsetof(block_q4_K, qs);
    const uint8x16_t m4 = vdupq_n_u8(0x0f), bit4 = vdupq_n_u8(0x10);
    float sumf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < n / QK_K; i++, x += size) {
        const block_q4_K *b = (const block_q4_K *)x;  // d, dmin, scales: the same in both
        uint8_t sm[16];
        q4_K_scales(b->scales, sm);
        uint8x16_t qh0 = m4, qh1 = m4;  // Q5_K: the high bits, shifted down 2 per pair of sub-blocks
        if (q5) qh0 = vld1q_u8(x + offsetof(block_q5_K, qh)), qh1 = vld1q_u8(x + offsetof(block_q5_K, qh) + 16);
        int32x4_t sumi[4];
        K_FOR_ROWS(r) sumi[r] = vdupq_n_s32(0);
        for (int k = 0; k < 4; k++) {
            const uint8x16_t b0 = vld1q_u8(x + qs_off + 32 * k), b1 = vld1q_u8(x + qs_off + 32 * k + 16);
            uint8x16_t l0 = vandq_u8(b0, m4), l1 = vandq_u8(b1, m4), h0 = vshrq_n_u8(b0, 4), h1 = vshrq_n_u8(b1, 4);
            if (q5) {
                l0 = vorrq_u8(l0, vandq_u8(vshlq_n_u8(qh0, 4), bit4));
                l1 = vorrq_u8(l1, vandq_u8(vshlq_n_u8(qh1, 4), bit4));
                h0 = vorrq_u8(h0, vandq_u8(vshlq_n_u8(qh0, 3), bit4));
                h1 = vorrq_u8(h1, vandq_u8(vshlq_n_u8(qh1, 3), bit4));
                qh0 = vshrq_n_u8(qh0, 2);
                qh1 = vshrq_n_u8(qh1, 2);
            }
            const int8x16_t sl0 = vreinterpretq_s8_u8(l0), sl1 = vreinterpretq_s8_u8(l1);
            const int8x16_t sh0 = vreinterpretq_s8_u8(h0), sh1 = vreinterpretq_s8_u8(h1);
            K_FOR_ROWS(r) {
                const int8_t *a = K_ROW(vy, r, by, i)->qs + 64 * k;
                sumi[r] = vmlaq_n_s32(sumi[r], dp_dot32(vdupq_n_s32(0), sl0, sl1, a), sm[2 * k]);
                sumi[r] = vmlaq_n_s32(sumi[r], dp_dot32(vdupq_n_s32(0), sh0, sh1, a + 32), sm[2 * k + 1]);
            }
        }
        const float xd = dp_half(b->d), xdmin = dp_half(b->dmin);
        K_FOR_ROWS(r) {
            const block_q8_K *yr = K_ROW(vy, r, by, i);
            sumf[r] += xd * yr->d * (float)vaddvq_s32(sumi[r]) - xdmin * yr->d * (float)q4_K_min_dot(sm + 8, yr->bsums);
        }
    }
    K_FOR_ROWS(r) s[r * bs] = sumf[r];
}
K_INLINE void q4_K_rows_dotprod(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,
                                size_t by, const int nr) { k4_rows_dotprod(n, s, bs, x, y, by, nr, 0); }
K_INLINE void q5_K_rows_dotprod(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,
                                size_t by, const int nr) { k4_rows_dotprod(n, s, bs, x, y, by, nr, 1); }

// -- Q6_K (Q8_K activations) -------------------------------------------------------------------

// Each half of 128 quants owns 64 bytes of ql and 32 of qh; quarter k of a half (quants
// 32k .. 32k+31) takes nibble k/2 of ql[32 * (k % 2) + l] and bits 2k, 2k+1 of qh[l].
// A quant is those 6 bits minus 32; each group of 16 has its own int8 scale.
K_INLINE void q6_K_rows_dotprod(int n, float *restrict s, size_t bs, const void *restrict vx,
                                const void *restrict vy, size_t by, const int nr) {
    const block_q6_K *restrict x = vx;
    const uint8x16_t m4 = vdupq_n_u8(0x0f), m2 = vdupq_n_u8(0x30);
    const int8x16_t off = vdupq_n_s8(32);
    float sumf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < n / QK_K; i++) {
        int32x4_t sumi[4];
        K_FOR_ROWS(r) sumi[r] = vdupq_n_s32(0);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[i].ql + 64 * h, *qh = x[i].qh + 32 * h;
            const int8_t *sc = x[i].scales + 8 * h;
            for (int c = 0; c < 2; c++) {  // quants l = 16c .. 16c+15 of each quarter
                const uint8x16_t l0 = vld1q_u8(ql + 16 * c), l1 = vld1q_u8(ql + 32 + 16 * c);
                const uint8x16_t hh = vld1q_u8(qh + 16 * c);
                int8x16_t q[4];
                q[0] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(l0, m4), vandq_u8(vshlq_n_u8(hh, 4), m2)));
                q[1] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(l1, m4), vandq_u8(vshlq_n_u8(hh, 2), m2)));
                q[2] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(l0, 4), vandq_u8(hh, m2)));
                q[3] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(l1, 4), vandq_u8(vshrq_n_u8(hh, 2), m2)));
                for (int k = 0; k < 4; k++) q[k] = vsubq_s8(q[k], off);
                K_FOR_ROWS(r) {
                    const int8_t *a = K_ROW(vy, r, by, i)->qs + 128 * h + 16 * c;
                    for (int k = 0; k < 4; k++)
                        sumi[r] = vmlaq_n_s32(sumi[r], vdotq_s32(vdupq_n_s32(0), q[k], vld1q_s8(a + 32 * k)),
                                              sc[2 * k + c]);
                }
            }
        }
        const float xd = dp_half(x[i].d);
        K_FOR_ROWS(r) sumf[r] += xd * K_ROW(vy, r, by, i)->d * (float)vaddvq_s32(sumi[r]);
    }
    K_FOR_ROWS(r) s[r * bs] = sumf[r];
}

K_ROWS_DOTS(q8_0, dotprod)
K_ROWS_DOTS(q4_0, dotprod)
K_ROWS_DOTS(q4_1, dotprod)
K_ROWS_DOTS(q5_0, dotprod)
K_ROWS_DOTS(q5_1, dotprod)
K_ROWS_DOTS(q4_K, dotprod)
K_ROWS_DOTS(q5_K, dotprod)
K_ROWS_DOTS(q6_K, dotprod)

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
