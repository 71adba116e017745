// quantize_k_avx2.c — the K-quants' sub-block searches (quantize_k.c's best_scale_min,
// best_scale_q6 and best_scale_q3) for eight sub-blocks at once, one per AVX2 lane: what takes the K-quant
// quantizers their time.
//
// Bit-identical to the scalar search by construction: lane j does, on sub-block j, exactly
// the float operations the scalar code does, in the same order (additions, multiplications,
// divisions and comparisons are lane-wise IEEE operations, no fused multiply-add; sums
// run over the elements in order within each lane). The scalar code's branches become
// lane masks: where a lane would skip or keep, its values are blended back unchanged. (For
// finite inputs, that is: a row holding NaN or inf is refused before its bytes are used.)
#include "quantize.h"
#include "simd.h"

#if LP_X86
LP_AVX2_BEGIN

// nearest_int on 8 lanes (quantize.h)
static inline __m256i nearest8(__m256 f) {
    const __m256i bits = _mm256_castps_si256(_mm256_add_ps(f, _mm256_set1_ps(12582912.0f)));
    return _mm256_sub_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x00400000));
}

// clamp(nearest(iscale * (x - min)), 0, nmax), as a float
static inline __m256 quant8(__m256 x, __m256 min, __m256 iscale, __m256i nmax) {
    const __m256i l = nearest8(_mm256_mul_ps(iscale, _mm256_sub_ps(x, min)));
    return _mm256_cvtepi32_ps(_mm256_max_epi32(_mm256_setzero_si256(), _mm256_min_epi32(nmax, l)));
}

// sum over i of w (|diff| or diff^2), diff = scale * L + min - x
static inline __m256 fit_error8(int n, const __m256 *x, const __m256 *w, const __m256 *L, __m256 scale, __m256 min,
                                int mad) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 err = _mm256_setzero_ps();
    for (int i = 0; i < n; i++) {
        __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, L[i]), min), x[i]);
        diff = mad ? _mm256_andnot_ps(sign, diff) : _mm256_mul_ps(diff, diff);
        err = _mm256_add_ps(err, _mm256_mul_ps(w[i], diff));
    }
    return err;
}

void lp_best_scale_min8_avx2(int n, int nmax, const float *xs, const float *ws, uint8_t *Ls, float *scales,
                             float *neg_mins, float rmin, float rdelta, int nstep, int mad) {
    __m256 x[32], w[32], L[32], Laux[32];  // element i of the 8 sub-blocks
    if (n < 1 || n > 32) return;           // (16 or 32: the callers')
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(n));
    for (int i = 0; i < n; i++) {
        x[i] = _mm256_i32gather_ps(xs + i, idx, 4);
        w[i] = _mm256_i32gather_ps(ws + i, idx, 4);
    }
    const __m256 zero = _mm256_setzero_ps();
    const __m256i vnmax = _mm256_set1_epi32(nmax);
    __m256 min = x[0], max = x[0], sum_w = w[0];
    __m256 sum_x = _mm256_mul_ps(sum_w, x[0]);
    for (int i = 1; i < n; i++) {
        min = _mm256_blendv_ps(min, x[i], _mm256_cmp_ps(x[i], min, _CMP_LT_OQ));
        max = _mm256_blendv_ps(max, x[i], _mm256_cmp_ps(x[i], max, _CMP_GT_OQ));
        sum_w = _mm256_add_ps(sum_w, w[i]);
        sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(w[i], x[i]));
    }
    min = _mm256_blendv_ps(min, zero, _mm256_cmp_ps(min, zero, _CMP_GT_OQ));
    const __m256 min0 = min;
    const __m256 flat = _mm256_cmp_ps(max, min, _CMP_EQ_OQ);
    __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)nmax), _mm256_sub_ps(max, min));
    __m256 scale = _mm256_div_ps(_mm256_set1_ps(1.0f), iscale);
    for (int i = 0; i < n; i++) L[i] = quant8(x[i], min, iscale, vnmax);
    __m256 best_error = fit_error8(n, x, w, L, scale, min, mad);
    for (int is = 0; is <= nstep; is++) {
        // min moves with each better fit, and the candidates' range with it (as in the scalar search)
        iscale = _mm256_div_ps(_mm256_set1_ps(rmin + rdelta * is + nmax), _mm256_sub_ps(max, min));
        __m256 sum_l = zero, sum_l2 = zero, sum_xl = zero;
        for (int i = 0; i < n; i++) {
            Laux[i] = quant8(x[i], min, iscale, vnmax);
            const __m256 wl = _mm256_mul_ps(w[i], Laux[i]);
            sum_l = _mm256_add_ps(sum_l, wl);
            sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, Laux[i]));
            sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, x[i]));
        }
        const __m256 D = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
        const __m256 fit = _mm256_cmp_ps(D, zero, _CMP_GT_OQ);
        if (_mm256_movemask_ps(fit) == 0) continue;
        __m256 this_scale = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)), D);
        __m256 this_min = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)), D);
        const __m256 pos = _mm256_cmp_ps(this_min, zero, _CMP_GT_OQ);
        this_min = _mm256_blendv_ps(this_min, zero, pos);
        this_scale = _mm256_blendv_ps(this_scale, _mm256_div_ps(sum_xl, sum_l2), pos);
        const __m256 err = fit_error8(n, x, w, Laux, this_scale, this_min, mad);
        const __m256 better = _mm256_and_ps(fit, _mm256_cmp_ps(err, best_error, _CMP_LT_OQ));
        if (_mm256_movemask_ps(better) == 0) continue;
        for (int i = 0; i < n; i++) L[i] = _mm256_blendv_ps(L[i], Laux[i], better);
        best_error = _mm256_blendv_ps(best_error, err, better);
        scale = _mm256_blendv_ps(scale, this_scale, better);
        min = _mm256_blendv_ps(min, this_min, better);
    }
    // a flat sub-block (max == min): zero quants and scale, its min as found
    _mm256_storeu_ps(scales, _mm256_blendv_ps(scale, zero, flat));
    _mm256_storeu_ps(neg_mins, _mm256_xor_ps(_mm256_blendv_ps(min, min0, flat), _mm256_set1_ps(-0.0f)));
    for (int i = 0; i < n; i++) {
        float l[8];
        _mm256_storeu_ps(l, _mm256_blendv_ps(L[i], zero, flat));
        for (int j = 0; j < 8; j++) Ls[n * j + i] = (uint8_t)l[j];
    }
}

// Element i of the 8 sub-blocks of n at xs + n j into x[i]; returns each sub-block's first
// value of largest magnitude, *zeros marking the sub-blocks whose magnitudes are all below 1e-15.
static inline __m256 gather_signed_amax8(int n, const float *xs, __m256 *x, __m256 *zeros) {
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(n));
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 amax = _mm256_setzero_ps(), max = _mm256_setzero_ps();
    for (int i = 0; i < n; i++) {
        x[i] = _mm256_i32gather_ps(xs + i, idx, 4);
        const __m256 ax = _mm256_andnot_ps(sign, x[i]);
        const __m256 gt = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
        amax = _mm256_blendv_ps(amax, ax, gt);
        max = _mm256_blendv_ps(max, x[i], gt);
    }
    *zeros = _mm256_cmp_ps(amax, _mm256_set1_ps(1e-15f), _CMP_LT_OQ);
    return max;
}

// Q6_K's sub-block search (quantize_k.c's best_scale_q6) on 8 sub-blocks of n (<= 32) at xs + n j,
// lane by lane as above: quants into Ls + n j, scales into scales[j].
static inline __m256 q6_sums8(int n, int nmax, const __m256 *x, __m256 iscale, __m256 *L, __m256 *sumlx) {
    const __m256i lo = _mm256_set1_epi32(-nmax), hi = _mm256_set1_epi32(nmax - 1);
    __m256 slx = _mm256_setzero_ps(), sl2 = _mm256_setzero_ps();
    for (int i = 0; i < n; i++) {
        const __m256 l = _mm256_cvtepi32_ps(_mm256_max_epi32(lo, _mm256_min_epi32(hi, nearest8(_mm256_mul_ps(iscale, x[i])))));
        if (L) L[i] = l;
        const __m256 w = _mm256_mul_ps(x[i], x[i]);
        slx = _mm256_add_ps(slx, _mm256_mul_ps(_mm256_mul_ps(w, x[i]), l));
        sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(w, l), l));
    }
    *sumlx = slx;
    return sl2;
}

void lp_best_scale_q6_8_avx2(int n, int nmax, const float *xs, int8_t *Ls, float *scales) {
    __m256 x[32], L[32], Laux[32];
    if (n < 1 || n > 32) return;
    const __m256 zero = _mm256_setzero_ps();
    __m256 zeros;  // all-zero sub-blocks
    const __m256 max = gather_signed_amax8(n, xs, x, &zeros);
    __m256 sumlx;
    __m256 suml2 = q6_sums8(n, nmax, x, _mm256_div_ps(_mm256_set1_ps((float)-nmax), max), L, &sumlx);
    __m256 scale = _mm256_and_ps(_mm256_cmp_ps(suml2, zero, _CMP_NEQ_UQ), _mm256_div_ps(sumlx, suml2));
    __m256 best = _mm256_mul_ps(scale, sumlx);
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        const __m256 iscale = _mm256_div_ps(_mm256_set1_ps(-(nmax + 0.1f * is)), max);
        suml2 = q6_sums8(n, nmax, x, iscale, Laux, &sumlx);
        const __m256 better = _mm256_and_ps(_mm256_cmp_ps(suml2, zero, _CMP_GT_OQ),
                                            _mm256_cmp_ps(_mm256_mul_ps(sumlx, sumlx), _mm256_mul_ps(best, suml2),
                                                          _CMP_GT_OQ));
        if (_mm256_movemask_ps(better) == 0) continue;
        for (int i = 0; i < n; i++) L[i] = _mm256_blendv_ps(L[i], Laux[i], better);
        const __m256 s = _mm256_div_ps(sumlx, suml2);
        scale = _mm256_blendv_ps(scale, s, better);
        best = _mm256_blendv_ps(best, _mm256_mul_ps(s, sumlx), better);
    }
    _mm256_storeu_ps(scales, _mm256_blendv_ps(scale, zero, zeros));
    for (int i = 0; i < n; i++) {
        float l[8];
        _mm256_storeu_ps(l, _mm256_blendv_ps(L[i], _mm256_set1_ps((float)-nmax), zeros));  // L 0 after + nmax
        for (int j = 0; j < 8; j++) Ls[n * j + i] = (int8_t)((int)l[j] + nmax);
    }
}

// Q3_K's sub-block search (quantize_k.c's best_scale_q3) on 8 sub-blocks of n (<= 32): quants
// (0..2 nmax - 1) into Ls + n j, scales into scales[j]. A pass that changes nothing in a lane
// leaves its state as it was, so running further passes there (while other lanes still
// change) changes nothing either: the scalar search's early stop needs no mask.
void lp_best_scale_q3_8_avx2(int n, int nmax, const float *xs, int8_t *Ls, float *scales) {
    __m256 x[32], L[32];
    if (n < 1 || n > 32) return;
    const __m256i lo = _mm256_set1_epi32(-nmax), hi = _mm256_set1_epi32(nmax - 1);
    const __m256 zero = _mm256_setzero_ps();
    __m256 zeros;  // all-zero sub-blocks
    const __m256 max = gather_signed_amax8(n, xs, x, &zeros);
    const __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)-nmax), max);
    __m256 sumlx = zero, suml2 = zero;
    for (int i = 0; i < n; i++) {
        L[i] = _mm256_cvtepi32_ps(_mm256_max_epi32(lo, _mm256_min_epi32(hi, nearest8(_mm256_mul_ps(iscale, x[i])))));
        const __m256 w = _mm256_mul_ps(x[i], x[i]);
        sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(w, x[i]), L[i]));
        suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w, L[i]), L[i]));
    }
    for (int itry = 0; itry < 5; itry++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            const __m256 w = _mm256_mul_ps(x[i], x[i]), wx = _mm256_mul_ps(w, x[i]);
            __m256 slx = _mm256_sub_ps(sumlx, _mm256_mul_ps(wx, L[i]));
            __m256 sl2 = _mm256_sub_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w, L[i]), L[i]));
            const __m256 new_l = _mm256_cvtepi32_ps(_mm256_max_epi32(
                lo, _mm256_min_epi32(hi, nearest8(_mm256_div_ps(_mm256_mul_ps(x[i], sl2), slx)))));
            __m256 take = _mm256_and_ps(_mm256_cmp_ps(slx, zero, _CMP_GT_OQ), _mm256_cmp_ps(new_l, L[i], _CMP_NEQ_OQ));
            slx = _mm256_add_ps(slx, _mm256_mul_ps(wx, new_l));
            sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(w, new_l), new_l));
            const __m256 gain = _mm256_cmp_ps(_mm256_mul_ps(_mm256_mul_ps(slx, slx), suml2),
                                              _mm256_mul_ps(_mm256_mul_ps(sumlx, sumlx), sl2), _CMP_GT_OQ);
            take = _mm256_and_ps(take, _mm256_and_ps(_mm256_cmp_ps(sl2, zero, _CMP_GT_OQ), gain));
            if (_mm256_movemask_ps(take) == 0) continue;
            changed = 1;
            L[i] = _mm256_blendv_ps(L[i], new_l, take);
            sumlx = _mm256_blendv_ps(sumlx, slx, take);
            suml2 = _mm256_blendv_ps(suml2, sl2, take);
        }
        if (!changed) break;
    }
    const __m256 scale = _mm256_and_ps(_mm256_cmp_ps(suml2, zero, _CMP_GT_OQ), _mm256_div_ps(sumlx, suml2));
    _mm256_storeu_ps(scales, _mm256_blendv_ps(scale, zero, zeros));
    for (int i = 0; i < n; i++) {
        float l[8];
        _mm256_storeu_ps(l, _mm256_blendv_ps(_mm256_add_ps(L[i], _mm256_set1_ps((float)nmax)), zero, zeros));
        for (int j = 0; j < 8; j++) Ls[n * j + i] = (int8_t)l[j];
    }
}

LP_AVX2_END
#endif
