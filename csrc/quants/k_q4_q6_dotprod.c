// k_q4_q6_dotprod.c — the DOTPROD dots (dotprod.h) of Q4_K, Q5_K and Q6_K (k_q4_q6.c),
// against Q8_K activations.
#include "dotprod.h"

#if LP_ARM
// -- Q4_K and Q5_K (Q8_K activations) ----------------------------------------------------------

// The packed 6-bit scales and mins of a Q4_K (or Q5_K) block: sm[0..7] scales, sm[8..15] mins (the
// block layout is described in k_q4_q6.c).
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
K_ROWS_DOTS(q4_K, dotprod)
K_ROWS_DOTS(q5_K, dotprod)
K_ROWS_DOTS(q6_K, dotprod)

LP_DOTPROD_END
#endif
