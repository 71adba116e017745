// quantize_k.c — weight quantizers of the K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K):
// the bytes llama.cpp's reference quantizers write for a model file (no importance
// matrix), bit for bit. Every float operation below happens in the order that decides
// those bytes (no fused multiply-add: the library is built with -ffp-contract=off).
//
// Each 256-element super-block is quantized in sub-blocks (16 or 32 elements), each
// with a scale (and, for the types with mins, a min) found by a small search, then
// the sub-block scales are themselves quantized (4, 6 or 8 bits) against a fp16
// super-block scale, and the quants are recomputed against the scales as stored:
// - searches with a min (Q2_K: 16 elements, 2 bits, |x| weights, absolute error;
//   Q4_K / Q5_K: 32 elements, 4 / 5 bits, weights sqrt(mean x^2) + |x|, squared
//   error): best_scale_min below, a least-squares fit of scale and min at each of a
//   few candidate inverse scales around nmax / (max - min);
// - Q3_K: symmetric 3-bit quants refined element by element (best_scale_q3);
// - Q6_K: symmetric 6-bit quants, x^2 weights, 18 candidate scales (best_scale_q6).
// A sub-block whose largest magnitude is below 1e-15 is all zero.
#include "quantize.h"

#define GROUP_MAX_EPS 1e-15f

// The first value of largest magnitude, with its sign.
static float signed_amax(const float *x, int n, float *amax_out) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    *amax_out = amax;
    return max;
}

// 1 for a sub-block whose largest magnitude is below GROUP_MAX_EPS (its quants set to 0);
// else 0, *max its first value of largest magnitude.
static int all_zero(int n, const float *x, int8_t *L, float *max) {
    float amax;
    *max = signed_amax(x, n, &amax);
    if (amax >= GROUP_MAX_EPS) return 0;
    memset(L, 0, (size_t)n);
    return 1;
}

// Symmetric quants L in [0, 2 nmax) of n values at inverse scale iscale, with the
// x^2-weighted sums that score the scale; returns suml2 (sumlx in *sumlx).
static float q6_sums(int n, int nmax, const float *x, float iscale, int8_t *L, float *sumlx) {
    float slx = 0.0f, sl2 = 0.0f;
    for (int i = 0; i < n; i++) {
        const int l = lp_imax(-nmax, lp_imin(nmax - 1, lp_nearest_int(iscale * x[i])));
        if (L) L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        slx += w * x[i] * (float)l;
        sl2 += w * (float)l * (float)l;
    }
    *sumlx = slx;
    return sl2;
}

// Q6_K's sub-block search: the scale -nmax / max and 18 neighbours -(nmax + 0.1 k) / max,
// k = -9..9, the one with the best x^2-weighted fit kept.
static float best_scale_q6(int n, int nmax, const float *x, int8_t *L) {
    float max;
    if (all_zero(n, x, L, &max)) return 0.0f;
    float sumlx;
    float suml2 = q6_sums(n, nmax, x, -nmax / max, L, &sumlx);
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        const float iscale = -(nmax + 0.1f * is) / max;
        suml2 = q6_sums(n, nmax, x, iscale, NULL, &sumlx);
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            q6_sums(n, nmax, x, iscale, L, &sumlx);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// Q3_K's sub-block search: quants at -nmax / max, then up to five passes that move
// single quants where that improves the x^2-weighted fit. L ends in [0, 2 nmax).
static float best_scale_q3(int n, int nmax, const float *x, int8_t *L) {
    float max;
    if (all_zero(n, x, L, &max)) return 0.0f;
    const float iscale = -nmax / max;
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        const int l = lp_imax(-nmax, lp_imin(nmax - 1, lp_nearest_int(iscale * x[i])));
        L[i] = (int8_t)l;
        const float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            if (!(slx > 0)) continue;
            float sl2 = suml2 - w * (float)L[i] * (float)L[i];
            const int new_l = lp_imax(-nmax, lp_imin(nmax - 1, lp_nearest_int(x[i] * sl2 / slx)));
            if (new_l == L[i]) continue;
            slx += w * x[i] * (float)new_l;
            sl2 += w * (float)new_l * (float)new_l;
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (int8_t)new_l;
                sumlx = slx;
                suml2 = sl2;
                changed++;
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Weighted error of x against scale * L + min: sum of w |diff| (mad) or w diff^2.
static float fit_error(int n, const float *x, const float *w, const uint8_t *L, float scale, float min, int mad) {
    float err = 0.0f;
    for (int i = 0; i < n; i++) {
        float diff = scale * (float)L[i] + min - x[i];
        diff = mad ? fabsf(diff) : diff * diff;
        err += w[i] * diff;
    }
    return err;
}

// Sub-block search with a min (Q2_K, Q4_K, Q5_K): quants L in [0, nmax] of x ~ scale * L
// - *neg_min. Start from nmax / (max - min) (min clamped to <= 0), then for each of
// nstep + 1 inverse scales (rmin + rdelta k + nmax) / (max - min) fit scale and min by
// weighted least squares and keep the fit of least weighted error.
static float best_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L, float *neg_min,
                            uint8_t *Laux, float rmin, float rdelta, int nstep, int mad) {
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)lp_imax(0, lp_imin(nmax, lp_nearest_int(iscale * (x[i] - min))));
    float best_error = fit_error(n, x, w, L, scale, min, mad);
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
        for (int i = 0; i < n; i++) {
            const int l = lp_imax(0, lp_imin(nmax, lp_nearest_int(iscale * (x[i] - min))));
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        const float err = fit_error(n, x, w, Laux, this_scale, this_min, mad);
        if (err < best_error) {
            memcpy(L, Laux, (size_t)n);
            best_error = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *neg_min = -min;
    return scale;
}

// best_scale_min on 8 sub-blocks of n values (xs + n j, weights ws + n j): side by side on
// AVX2 (quantize_k_avx2.c, the same bytes) when the kernels run AVX2 or AVX-512, else one by one.
static void best_scale_min8(int n, int nmax, const float *xs, const float *ws, uint8_t *Ls, float *scales,
                            float *neg_mins, float rmin, float rdelta, int nstep, int mad) {
#if LP_X86
    if (lp_quantize_use_avx2()) {
        lp_best_scale_min8_avx2(n, nmax, xs, ws, Ls, scales, neg_mins, rmin, rdelta, nstep, mad);
        return;
    }
#endif
    uint8_t Laux[32];
    for (int j = 0; j < 8; j++)
        scales[j] = best_scale_min(n, nmax, xs + n * j, ws + n * j, Ls + n * j, &neg_mins[j], Laux, rmin, rdelta,
                                   nstep, mad);
}

// best_scale_q6 on 8 sub-blocks of 16 (the AVX2 version side by side, as best_scale_min8).
static void best_scale_q6_8(const float *xs, int8_t *Ls, float *scales) {
#if LP_X86
    if (lp_quantize_use_avx2()) {
        lp_best_scale_q6_8_avx2(16, 32, xs, Ls, scales);
        return;
    }
#endif
    for (int j = 0; j < 8; j++) scales[j] = best_scale_q6(16, 32, xs + 16 * j, Ls + 16 * j);
}

// best_scale_q3 on 8 sub-blocks of 16 (likewise).
static void best_scale_q3_8(const float *xs, int8_t *Ls, float *scales) {
#if LP_X86
    if (lp_quantize_use_avx2()) {
        lp_best_scale_q3_8_avx2(16, 4, xs, Ls, scales);
        return;
    }
#endif
    for (int j = 0; j < 8; j++) scales[j] = best_scale_q3(16, 4, xs + 16 * j, Ls + 16 * j);
}

// Quants of the 2-bit layout (Q2_K's and Q3_K's low bits): element j + l + 32 k of each
// 128 in bits 2k of byte j / 4 + l.
static void pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | L[j + l + 32] << 2 | L[j + l + 64] << 4 | L[j + l + 96] << 6);
}

// ---------------------------------------------------------------------------
// Q2_K: 16 sub-blocks of 16, 4-bit scales and mins.

void lp_quantize_weights_q2_K(const float *restrict x, void *restrict vy, int64_t n) {
    block_q2_K *restrict y = vy;
    uint8_t L[QK_K];
    float w[QK_K], mins[QK_K / 16], scales[QK_K / 16];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float max_scale = 0.0f, max_min = 0.0f;
        for (int l = 0; l < QK_K; l++) w[l] = fabsf(x[l]);
        for (int h = 0; h < 2; h++)  // sub-blocks 0-7, then 8-15
            best_scale_min8(16, 3, x + 128 * h, w + 128 * h, L + 128 * h, scales + 8 * h, mins + 8 * h, -0.5f, 0.1f,
                            15, 1);
        for (int j = 0; j < QK_K / 16; j++) {
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        memset(y[i].scales, 0, sizeof(y[i].scales));
        y[i].d = lp_float_to_half(0.0f);
        y[i].dmin = lp_float_to_half(0.0f);
        if (max_scale > 0) {
            const float iscale = 15.0f / max_scale;
            for (int j = 0; j < QK_K / 16; j++) y[i].scales[j] = (uint8_t)lp_nearest_int(iscale * scales[j]);
            y[i].d = lp_float_to_half(max_scale / 15.0f);
        }
        if (max_min > 0) {
            const float iscale = 15.0f / max_min;
            for (int j = 0; j < QK_K / 16; j++) y[i].scales[j] |= (uint8_t)((unsigned)lp_nearest_int(iscale * mins[j]) << 4);
            y[i].dmin = lp_float_to_half(max_min / 15.0f);
        }
        for (int j = 0; j < QK_K / 16; j++) {  // the quants again, against the stored scales
            const float d = lp_half_to_float(y[i].d) * (float)(y[i].scales[j] & 0xf);
            if (!d) continue;
            const float dm = lp_half_to_float(y[i].dmin) * (float)(y[i].scales[j] >> 4);
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (uint8_t)lp_imax(0, lp_imin(3, lp_nearest_int((x[16 * j + l] + dm) / d)));
        }
        pack_2bit(L, y[i].qs);
    }
}

// ---------------------------------------------------------------------------
// Q3_K: 16 sub-blocks of 16, signed 6-bit scales; quants' high bits in hmask.

// Sub-block j's 6-bit scale l (0..63) into the packed 12 bytes.
static void put_q3_scale(uint8_t *s, int j, int l) {
    if (j < 8) s[j] = (uint8_t)(l & 0xf);
    else s[j - 8] |= (uint8_t)((l & 0xf) << 4);
    s[j % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
}

static int get_q3_scale(const uint8_t *s, int j) {
    const int lo = j < 8 ? s[j] & 0xf : s[j - 8] >> 4;
    return (lo | ((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) - 32;
}

void lp_quantize_weights_q3_K(const float *restrict x, void *restrict vy, int64_t n) {
    block_q3_K *restrict y = vy;
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float amax;
        best_scale_q3_8(x, L, scales);
        best_scale_q3_8(x + 128, L + 128, scales + 8);
        const float max_scale = signed_amax(scales, QK_K / 16, &amax);
        memset(y[i].scales, 0, sizeof(y[i].scales));
        y[i].d = lp_float_to_half(0.0f);
        if (max_scale) {
            const float iscale = -32.0f / max_scale;
            for (int j = 0; j < QK_K / 16; j++) {
                const int8_t l = (int8_t)lp_nearest_int(iscale * scales[j]);  // kept to 8 bits, then clamped
                put_q3_scale(y[i].scales, j, lp_imax(-32, lp_imin(31, l)) + 32);
            }
            y[i].d = lp_float_to_half(1 / iscale);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = lp_half_to_float(y[i].d) * (float)get_q3_scale(y[i].scales, j);
            if (!d) continue;
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (int8_t)(lp_imax(-4, lp_imin(3, lp_nearest_int(x[16 * j + l] / d))) + 4);
        }
        // high bits: element j's in bit j / 32 of hmask[j % 32]
        memset(y[i].hmask, 0, sizeof(y[i].hmask));
        for (int j = 0; j < QK_K; j++) {
            if (L[j] > 3) {
                y[i].hmask[j % 32] |= (uint8_t)(1 << (j / 32));
                L[j] -= 4;
            }
        }
        pack_2bit((const uint8_t *)L, y[i].qs);
    }
}

// ---------------------------------------------------------------------------
// Q4_K and Q5_K: 8 sub-blocks of 32, 6-bit scales and mins packed in 12 bytes.

static void put_k4_scale_min(uint8_t *s, int j, int ls, int lm) {
    if (j < 4) {
        s[j] = (uint8_t)ls;
        s[j + 4] = (uint8_t)lm;
    } else {
        s[j + 4] = (uint8_t)((ls & 0xf) | (lm & 0xf) << 4);
        s[j - 4] |= (uint8_t)((ls >> 4) << 6);
        s[j] |= (uint8_t)((lm >> 4) << 6);
    }
}

static void get_k4_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | (s[j - 4] >> 6) << 4;
        *m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

// One super-block of Q4_K (nmax 15) or Q5_K (nmax 31): d, dmin and the packed scales
// into the block's first 16 bytes (the two types share that layout), quants into L.
static void k4_super_block(const float *x, int nmax, float rmin, int nstep, lp_half *dm2, uint8_t *packed,
                           uint8_t *L) {
    float w[QK_K], mins[QK_K / 32], scales[QK_K / 32];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < QK_K / 32; j++) {
        const float *xj = x + 32 * j;
        float sum_x2 = 0.0f;
        for (int l = 0; l < 32; l++) sum_x2 += xj[l] * xj[l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) w[32 * j + l] = av_x + fabsf(xj[l]);
    }
    best_scale_min8(32, nmax, x, w, L, scales, mins, rmin, 0.1f, nstep, 0);
    for (int j = 0; j < QK_K / 32; j++) {
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    memset(packed, 0, K_SCALE_SIZE);
    for (int j = 0; j < QK_K / 32; j++) {
        const uint8_t ls = (uint8_t)lp_nearest_int(inv_scale * scales[j]);  // kept to 8 bits, then capped
        const uint8_t lm = (uint8_t)lp_nearest_int(inv_min * mins[j]);
        put_k4_scale_min(packed, j, ls < 63 ? ls : 63, lm < 63 ? lm : 63);
    }
    dm2[0] = lp_float_to_half(max_scale / 63.0f);
    dm2[1] = lp_float_to_half(max_min / 63.0f);
    for (int j = 0; j < QK_K / 32; j++) {
        int sc, m;
        get_k4_scale_min(packed, j, &sc, &m);
        const float d = lp_half_to_float(dm2[0]) * (float)sc;
        if (!d) continue;
        const float dm = lp_half_to_float(dm2[1]) * (float)m;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)lp_imax(0, lp_imin(nmax, lp_nearest_int((x[32 * j + l] + dm) / d)));
    }
}

void lp_quantize_weights_q4_K(const float *restrict x, void *restrict vy, int64_t n) {
    block_q4_K *restrict y = vy;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        lp_half dm2[2];
        k4_super_block(x, 15, -1.0f, 20, dm2, y[i].scales, L);
        y[i].d = dm2[0];
        y[i].dmin = dm2[1];
        for (int j = 0; j < QK_K; j += 64)
            for (int l = 0; l < 32; l++) y[i].qs[j / 2 + l] = (uint8_t)(L[j + l] | L[j + l + 32] << 4);
    }
}

void lp_quantize_weights_q5_K(const float *restrict x, void *restrict vy, int64_t n) {
    block_q5_K *restrict y = vy;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        lp_half dm2[2];
        k4_super_block(x, 31, -0.5f, 15, dm2, y[i].scales, L);
        y[i].d = dm2[0];
        y[i].dmin = dm2[1];
        // low nibbles as Q4_K's; fifth bits: element n + j (n = 64 k) in bit 2k of qh[j],
        // element n + 32 + j in bit 2k + 1
        memset(y[i].qh, 0, sizeof(y[i].qh));
        for (int k = 0; k < QK_K / 64; k++) {
            for (int j = 0; j < 32; j++) {
                int l1 = L[64 * k + j], l2 = L[64 * k + j + 32];
                if (l1 > 15) { l1 -= 16; y[i].qh[j] |= (uint8_t)(1 << (2 * k)); }
                if (l2 > 15) { l2 -= 16; y[i].qh[j] |= (uint8_t)(2 << (2 * k)); }
                y[i].qs[32 * k + j] = (uint8_t)(l1 | l2 << 4);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Q6_K: 16 sub-blocks of 16, signed 8-bit scales.

void lp_quantize_weights_q6_K(const float *restrict x, void *restrict vy, int64_t n) {
    block_q6_K *restrict y = vy;
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float max_abs_scale;
        best_scale_q6_8(x, L, scales);
        best_scale_q6_8(x + 128, L + 128, scales + 8);
        const float max_scale = signed_amax(scales, QK_K / 16, &max_abs_scale);
        if (max_abs_scale < GROUP_MAX_EPS) {  // all zero
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        const float iscale = -128.0f / max_scale;
        y[i].d = lp_float_to_half(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ib++) y[i].scales[ib] = (int8_t)lp_imin(127, lp_nearest_int(iscale * scales[ib]));
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = lp_half_to_float(y[i].d) * (float)y[i].scales[j];
            if (!d) continue;
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (int8_t)(lp_imax(-32, lp_imin(31, lp_nearest_int(x[16 * j + l] / d))) + 32);
        }
        // low 4 bits: elements j + l and j + l + 64 share ql[j / 2 + l], j + l + 32 and j + l + 96
        // share ql[j / 2 + l + 32]; high 2 bits of the four in qh[j / 4 + l]
        for (int j = 0; j < QK_K; j += 128) {
            uint8_t *ql = y[i].ql + j / 2, *qh = y[i].qh + j / 4;
            for (int l = 0; l < 32; l++) {
                const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
                ql[l] = (uint8_t)((q1 & 0xf) | (q3 & 0xf) << 4);
                ql[l + 32] = (uint8_t)((q2 & 0xf) | (q4 & 0xf) << 4);
                qh[l] = (uint8_t)((q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6);
            }
        }
    }
}
