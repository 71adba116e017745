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

// AVX2 and AVX-VNNI: legacy_groups.c (vec_dot and the prepared-row dots)

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
