// quantize_legacy.c — weight quantizers of the 32-element block types (Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0) and the float outputs (F16, BF16): the bytes llama.cpp's
// reference quantizers write for a model file (llama_model_quantize without an
// importance matrix), bit for bit.
//
// The facts that decide the bytes (llama.cpp's, as of llama-cpp-python 0.3.36):
// - Q4_0 / Q5_0: the scale is max / -8 (-16), max the block's first value of largest
//   magnitude, so that value lands on quant 0; quants are (int8)(x / d + 8.5) (16.5),
//   truncated, capped at 15 (31).
// - Q4_1 / Q5_1: d = (max - min) / 15 (31), m = min; quants (x - min) / d + 0.5,
//   truncated (Q4_1 capped at 15, Q5_1 not capped).
// - Q8_0: d = amax / 127, quants roundf(x / d) (ties away from zero).
// - Every inverse scale is 1 / d, 0 when d is 0; scales are stored as fp16, rounded to
//   nearest even.
// - F16 rounds to nearest even; BF16 too, and a NaN keeps its top bits, made quiet.
// Float-to-integer conversions follow quantize.h (x86-64's, total over NaN and inf).
#include <float.h>

#include "quantize.h"

// The first value of largest magnitude, with its sign (0 for an all-zero block).
static float signed_amax(const float *x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void min_max(const float *x, int n, float *min, float *max) {
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *min = lo;
    *max = hi;
}

static inline float inverse(float d) { return d ? 1.0f / d : 0.0f; }

// Q4_1's and Q5_1's scale and min: d = (max - min) / levels, m = min (fp16); returns 1 / d.
static float min_scale(const float *x, int n, int levels, float *min, lp_half *d, lp_half *m) {
    float max;
    min_max(x, n, min, &max);
    const float dv = (max - *min) / levels;
    *d = lp_float_to_half(dv);
    *m = lp_float_to_half(*min);
    return inverse(dv);
}

void lp_quantize_weights_q4_0(const float *restrict x, void *restrict vy, int64_t n) {
    block_q4_0 *restrict y = vy;
    for (int64_t i = 0; i < n / QK4_0; i++, x += QK4_0) {
        const float d = signed_amax(x, QK4_0) / -8;
        const float id = inverse(d);
        y[i].d = lp_float_to_half(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            const uint8_t lo = (uint8_t)lp_imin(15, lp_cvt_i8(x[j] * id + 8.5f));
            const uint8_t hi = (uint8_t)lp_imin(15, lp_cvt_i8(x[j + QK4_0 / 2] * id + 8.5f));
            y[i].qs[j] = (uint8_t)(lo | hi << 4);
        }
    }
}

void lp_quantize_weights_q4_1(const float *restrict x, void *restrict vy, int64_t n) {
    block_q4_1 *restrict y = vy;
    for (int64_t i = 0; i < n / QK4_1; i++, x += QK4_1) {
        float min;
        const float id = min_scale(x, QK4_1, 15, &min, &y[i].d, &y[i].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            const uint8_t lo = (uint8_t)lp_imin(15, lp_cvt_i8((x[j] - min) * id + 0.5f));
            const uint8_t hi = (uint8_t)lp_imin(15, lp_cvt_i8((x[j + QK4_1 / 2] - min) * id + 0.5f));
            y[i].qs[j] = (uint8_t)(lo | hi << 4);
        }
    }
}

// Q5's low nibbles into qs, the fifth bits into qh (bit j: element j).
static void pack_q5(const uint8_t *q, uint8_t *qs, uint8_t *qh_bytes) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 0x0f) | (q[j + 16] & 0x0f) << 4);
        qh |= (uint32_t)((q[j] & 0x10) >> 4) << j;
        qh |= (uint32_t)((q[j + 16] & 0x10) >> 4) << (j + 16);
    }
    memcpy(qh_bytes, &qh, 4);
}

void lp_quantize_weights_q5_0(const float *restrict x, void *restrict vy, int64_t n) {
    block_q5_0 *restrict y = vy;
    for (int64_t i = 0; i < n / QK5_0; i++, x += QK5_0) {
        const float d = signed_amax(x, QK5_0) / -16;
        const float id = inverse(d);
        y[i].d = lp_float_to_half(d);
        uint8_t q[QK5_0];
        for (int j = 0; j < QK5_0; j++) q[j] = (uint8_t)lp_imin(31, lp_cvt_i8(x[j] * id + 16.5f));
        pack_q5(q, y[i].qs, y[i].qh);
    }
}

void lp_quantize_weights_q5_1(const float *restrict x, void *restrict vy, int64_t n) {
    block_q5_1 *restrict y = vy;
    for (int64_t i = 0; i < n / QK5_1; i++, x += QK5_1) {
        float min;
        const float id = min_scale(x, QK5_1, 31, &min, &y[i].d, &y[i].m);
        uint8_t q[QK5_1];
        for (int j = 0; j < QK5_1; j++) q[j] = lp_cvt_u8((x[j] - min) * id + 0.5f);
        pack_q5(q, y[i].qs, y[i].qh);
    }
}

void lp_quantize_weights_q8_0(const float *restrict x, void *restrict vy, int64_t n) {
#if LP_X86
    if (lp_quantize_use_avx2()) {
        lp_quantize_weights_q8_0_avx2(x, vy, n);
        return;
    }
#endif
    block_q8_0 *restrict y = vy;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
        const float d = amax / 127;
        const float id = inverse(d);
        y[i].d = lp_float_to_half(d);
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = lp_cvt_i8(roundf(x[j] * id));
    }
}

void lp_floats_to_halves(lp_half *restrict y, const float *restrict x, int64_t n) {
#if LP_X86
    if (lp_quantize_use_avx2()) {
        lp_floats_to_halves_f16c(y, x, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = lp_float_to_half(x[i]);
}

void lp_quantize_weights_f16(const float *restrict x, void *restrict vy, int64_t n) {
    lp_floats_to_halves(vy, x, n);
}

void lp_quantize_weights_bf16(const float *restrict x, void *restrict vy, int64_t n) {
    uint16_t *restrict y = vy;
    for (int64_t i = 0; i < n; i++) {
        const uint32_t u = lp_float_to_bits(x[i]);
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            y[i] = (uint16_t)((u >> 16) | 64);  // NaN: quiet, sign and top payload kept
        } else {
            y[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
        }
    }
}
