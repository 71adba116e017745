// gemm_avx512.h — what the AVX-512 tiles (gemm.c) and the AMX tiles (gemm_amx.c) of the batched
// product share: the register tile's shape, the min terms that start a sub-scaled type's float
// sums, and the transposed store of float sums (lanes are activation rows) into y.
#pragma once
#include "gemm.h"

#define LP_G_R 4   // weight rows per register tile
#define LP_G_NJ 3  // AVX-512: activation panels (of 16 rows) per register tile, at most

#if LP_X86
LP_AVX512_BEGIN
// v[i][k] -> v[k][i]: 16 rows of 16 floats transposed in registers (unpacks within 128-bit
// lanes, then whole lanes moved).
_Static_assert(LP_G_RT_X86 % 16 == 0 && LP_G_LANES == 16, "transpose16: 16 weight rows x 16 activation lanes");
static inline __attribute__((always_inline)) void transpose16(__m512 v[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {  // t[i], t[i + 1]: rows i, i + 1 interleaved, columns 0-1 / 2-3 of each lane
        t[i] = _mm512_unpacklo_ps(v[i], v[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(v[i], v[i + 1]);
    }
    for (int i = 0; i < 16; i += 4)  // v[i + k], lane q: column 4 q + k of rows i .. i + 3
        for (int h = 0; h < 2; h++) {
            const __m512d a = _mm512_castps_pd(t[i + h]), b = _mm512_castps_pd(t[i + h + 2]);
            v[i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            v[i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    for (int k = 0; k < 4; k++) {  // lane q of v[k], v[4 + k], v[8 + k], v[12 + k]: column 4 q + k
        const __m512 x0 = _mm512_shuffle_f32x4(v[k], v[4 + k], 0x88), x1 = _mm512_shuffle_f32x4(v[k], v[4 + k], 0xDD);
        const __m512 x2 = _mm512_shuffle_f32x4(v[8 + k], v[12 + k], 0x88);
        const __m512 x3 = _mm512_shuffle_f32x4(v[8 + k], v[12 + k], 0xDD);
        t[k] = _mm512_shuffle_f32x4(x0, x2, 0x88);
        t[8 + k] = _mm512_shuffle_f32x4(x0, x2, 0xDD);
        t[4 + k] = _mm512_shuffle_f32x4(x1, x3, 0x88);
        t[12 + k] = _mm512_shuffle_f32x4(x1, x3, 0xDD);
    }
    for (int i = 0; i < 16; i++) v[i] = t[i];
}

// The min terms of weight rows [r_lo, r_hi) (in fours) x nj panels, from zero (gemm.h: they come
// first), into acc0's float sums (row r, panel j at acc0 + (r * stride + j) * LP_G_LANES);
// zeros where the type has no mins.
static inline __attribute__((always_inline)) void sub_min_terms(const gemm_ctx *c, const wpanel *wp,
                                                                const act_block *const *a, int r_lo, int r_hi,
                                                                const int nj, const int has_min, const int min_unit,
                                                                float *acc0, const int stride) {
    const int64_t min_units = c->min_units;
    for (int r0 = r_lo; r0 < r_hi; r0 += LP_G_R) {  // in registers
        float *acc = acc0 + r0 * stride * LP_G_LANES;
        __m512 ms[LP_G_R][LP_G_NJ];
        for (int r = 0; r < LP_G_R; r++)
            for (int j = 0; j < nj; j++) ms[r][j] = _mm512_setzero_ps();
        for (int64_t mu = 0; has_min && mu < min_units; mu++) {
            __m512 mv[LP_G_NJ];
            for (int j = 0; j < nj; j++) mv[j] = _mm512_load_ps(a[j][mu * min_unit / 32].m[mu * min_unit % 32 / 16]);
            for (int r = 0; r < LP_G_R; r++) {
                const __m512 mw = _mm512_set1_ps(wp->min[(r0 + r) * min_units + mu]);
                for (int j = 0; j < nj; j++) ms[r][j] = _mm512_fmadd_ps(mv[j], mw, ms[r][j]);
            }
        }
        for (int r = 0; r < LP_G_R; r++)
            for (int j = 0; j < nj; j++) _mm512_store_ps(acc + (r * stride + j) * LP_G_LANES, ms[r][j]);
    }
}

// acc0's float sums (as sub_min_terms lays them) of weight rows [r_lo, nr) x panels g0 .. g0 + nj into y[act row][weight row]:
// lanes are activation rows, so transposed, 16 weight rows at a time.
static inline __attribute__((always_inline)) void store_transposed(const gemm_ctx *c, const float *acc0, int r_lo,
                                                                   int nr, int64_t g0, const int nj, const int stride) {
    for (int j = 0; j < nj; j++)
        for (int r0 = r_lo; r0 < nr; r0 += 16) {
            __m512 v[16];
            for (int r = 0; r < 16; r++) v[r] = _mm512_load_ps(acc0 + ((r0 + r) * stride + j) * LP_G_LANES);
            transpose16(v);
            for (int l = 0; l < LP_G_LANES; l++) {
                const int64_t arow = (g0 + j) * LP_G_LANES + l;
                if (arow >= c->n) break;
                float *yr = c->y + arow * c->rows + r0;
                if (nr - r0 >= 16) {
                    _mm512_storeu_ps(yr, v[l]);
                } else {
                    float lane[16];
                    _mm512_storeu_ps(lane, v[l]);
                    for (int r = 0; r < nr - r0; r++) yr[r] = lane[r];
                }
            }
        }
}
LP_AVX512_END
#endif
