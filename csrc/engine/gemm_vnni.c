// gemm_vnni.c — the AVX-VNNI tiles of the AVX2 batched product (gemm_avx2.c picks them where the
// CPU has AVX-VNNI), and the fold of the sub-scales into the quants (SUB_FOLD, x86).
#include <stdatomic.h>
#include <stdlib.h>

#include "gemm_avx2.h"

// ---------------------------------------------------------------------------
// AVX-VNNI (Intel Core 12th gen on, Core Ultra; AMD Zen 5): VPDPBUSD on 256-bit registers
// multiplies 4 unsigned by 4 signed bytes and adds them into an int32 lane in one
// instruction, where VPMADDUBSW + VPADDW / VPMADDWD + VPADDD take two to three, and it
// needs no int16 step, so no weight range needs another way of feeding it. The K-quants'
// sub-scales go as on AVX-512 (gemm.c, sub_way): folded into the quants (SUB_FOLD: Q2_K
// 0..45 on a signed panel, Q3_K negated -128..124 on an unsigned one: a super-block's
// products sum into one int32 a lane), or a sub-block's sums times its sub-scale (SUB_MULLD:
// Q4_K, Q5_K, Q6_K). The same integer sums and float steps as the other tiles: the same bits.
#if LP_X86

int lp_gemm_avx2_vnni(void) {
    static _Atomic int has = -1;  // the CPU does not change; the environment is read once
    int h = atomic_load_explicit(&has, memory_order_relaxed);
    if (h < 0) {
        const char *env = getenv("LLAMAPACK_AVXVNNI");
        __builtin_cpu_init();
        h = __builtin_cpu_supports("avxvnni") && !(env && env[0] == '0');
        atomic_store_explicit(&has, h, memory_order_relaxed);
    }
    return h;
}

LP_AVX2_BEGIN
// q (subs sub-blocks of 16 quants) *= each one's sub-scale (negated: neg), in place; the
// products fit the byte (sub_way's bound), so the saturating pack keeps them exact.
void lp_gemm_fold_avx2(int8_t *q, const int16_t *sub, int64_t subs, int neg) {
    int64_t i = 0;
    for (; i + 2 <= subs; i += 2, q += 32) {
        const __m256i s0 = _mm256_set1_epi16((int16_t)(neg ? -sub[i] : sub[i]));
        const __m256i s1 = _mm256_set1_epi16((int16_t)(neg ? -sub[i + 1] : sub[i + 1]));
        const __m256i lo = _mm256_mullo_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)q)), s0);
        const __m256i hi = _mm256_mullo_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + 16))), s1);
        _mm256_storeu_si256((__m256i *)q, _mm256_permute4x64_epi64(_mm256_packs_epi16(lo, hi), 0xD8));
    }
    for (; i < subs; i++, q += 16) {
        const int s = neg ? -sub[i] : sub[i];
        for (int l = 0; l < 16; l++) q[l] = (int8_t)(q[l] * s);
    }
}
LP_AVX2_END

LP_AVXVNNI_BEGIN
// One step of 4 columns (step kk of block ab, weights at w, row r at w + r * cols) of R weight
// rows x the panel's first nv halves into the int32 sums is: on a signed panel the weight
// (>= 0) is the unsigned operand.
static inline __attribute__((always_inline)) void vnni_step(const act_block *ab, int kk, const int8_t *w, int64_t cols,
                                                            const int sgn, const int nv, const int R, __m256i is[][2]) {
    const __m256i a0 = _mm256_load_si256((const __m256i *)ab->q[kk][0]);
    const __m256i a1 = nv == 2 ? _mm256_load_si256((const __m256i *)ab->q[kk][8]) : a0;
    for (int r = 0; r < R; r++) {
        int32_t w4;
        memcpy(&w4, w + r * cols, 4);
        const __m256i wv = _mm256_set1_epi32(w4);
        is[r][0] = sgn ? _mm256_dpbusd_avx_epi32(is[r][0], wv, a0) : _mm256_dpbusd_avx_epi32(is[r][0], a0, wv);
        if (nv == 2) is[r][1] = sgn ? _mm256_dpbusd_avx_epi32(is[r][1], wv, a1) : _mm256_dpbusd_avx_epi32(is[r][1], a1, wv);
    }
}

// The folded K-quants' tile: R weight rows (LP_G2_R, or LP_MIN_R with both halves) x the
// panel's first nv halves, a super-block per int32 sum (started at the +128's correction on
// an unsigned panel); the float sums live in memory. Each VPDPBUSD adds into the sum its
// previous step made: with 12 sums (6 rows x 2 halves) in place of 8, fewer wait on their last
// step (one thread, 128 x 14336x4096: Q3_K 9%, Q2_K 5% faster; its min terms likewise in 12 chains).
static inline __attribute__((always_inline)) void tile_vnni_fold(const gemm_ctx *c, const wpanel *wp, int r0, int nr,
                                                                 int64_t g, const int has_min, const int min_unit,
                                                                 const int sgn, const int nv, const int R) {
    const int64_t cols = c->cols, units = c->units, cs = corr_stride(c);
    const act_block *a = c->act + g * c->nblk;
    const int8_t *wq = wp->q + (int64_t)r0 * cols;  // row r at wq + r * cols
    const float *ws = wp->scale + (int64_t)r0 * units;
    const int32_t *wc = wp->corr + (int64_t)r0 * cs;
    float accbuf[LP_MIN_R * LP_G_LANES] __attribute__((aligned(32)));
    float *acc = accbuf;
    __asm__("" : "+r"(acc));  // memory, not registers
    memset(acc, 0, sizeof(accbuf));
    if (has_min) min_terms_avx2(c, wp, r0, g, min_unit, nv, R, acc);  // the min terms (gemm.h)
    for (int64_t u = 0; u < units; u++) {
        __m256i is[LP_MIN_R][2];
        for (int r = 0; r < R; r++) is[r][0] = is[r][1] = _mm256_set1_epi32(sgn ? 0 : wc[r * cs + u]);
        for (int64_t b = u * (QK_K / 32); b < (u + 1) * (QK_K / 32); b++) {
            const act_block *ab = &a[b];
            const int8_t *w = wq + 32 * b;
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {  // columns 32b + 4k ..
                vnni_step(ab, k, w + 4 * k, cols, sgn, nv, R, is);
            }
        }
        const act_block *au = &a[u * (QK_K / 32)];  // Q8_K: one activation scale a super-block
        const __m256 dv[2] = { _mm256_load_ps(au->d), _mm256_load_ps(au->d + 8) };
        for (int r = 0; r < R; r++) {
            const __m256 sc = _mm256_set1_ps(ws[r * units + u]);
            for (int v = 0; v < nv; v++) {
                float *ap = acc + 16 * r + 8 * v;
                const __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(is[r][v]), dv[v]);
                _mm256_store_ps(ap, _mm256_fmadd_ps(p, sc, _mm256_load_ps(ap)));
            }
        }
    }
    store_tile(c, r0, nr, g, acc);
}

// The sub-scaled K-quants that do not fold (SUB_MULLD: Q4_K, Q5_K, Q6_K), in tile_sub_frame:
// a sub-block's VPDPBUSD sums start at zero and are multiplied by its sub-scale (VPMULLD)
// into the super-block's int32 sums (started at the +128's correction on an unsigned
// panel), as AVX-512 does; one float step a super-block. mode: the panel is signed.
static inline __attribute__((always_inline)) void vnni_mulld_body(const sub_block *sb, const int steps, const int sgn,
                                                                  const int m, const int nv, const int R) {
    (void)m;
    __m256i t[LP_MIN_R][2];
    for (int r = 0; r < R; r++) t[r][0] = t[r][1] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int k = 0; k < steps; k++) vnni_step(sb->ab, sb->k0 + k, sb->w + 4 * k, sb->cols, sgn, nv, R, t);
    for (int r = 0; r < R; r++) {
        const __m256i sv = _mm256_set1_epi32(sb->wsub[r * sb->subs + sb->gi]);
        for (int v = 0; v < nv; v++) {
            __m256i *ip = (__m256i *)(sb->isp + 16 * r + 8 * v);
            _mm256_store_si256(ip, _mm256_add_epi32(_mm256_load_si256(ip), _mm256_mullo_epi32(t[r][v], sv)));
        }
    }
}

// The legacy types (units of 32 columns, no sub-scales): a unit's VPDPBUSD sums (from the
// +128's correction on an unsigned panel: Q4_0, Q5_0, Q8_0, whatever the weights' range),
// its float step and then its min step (Q4_1, Q5_1: signed panel), as tile_avx2_unit does.
static inline __attribute__((always_inline)) void tile_vnni_unit(const gemm_ctx *c, const wpanel *wp, int r0, int nr,
                                                                 int64_t g, const int has_min, const int sgn,
                                                                 const int nv) {
    tile_unit_frame(c, wp, r0, nr, g, has_min, sgn, !sgn, nv, vnni_step);
}

// The VNNI tile for each K-quant and sub_way (SUB_FOLD: Q2_K, mins per 16, signed panel;
// Q3_K, no mins. SUB_MULLD: Q4_K and Q5_K, sub-blocks and mins per 32, signed; Q6_K, sub-blocks
// per 16, no mins).
void lp_gemm_vnni_tile(const gemm_ctx *c, const wpanel *wp, int r0, int nr, int64_t g, int sgn, int nv) {
    const int has_min = c->t->s8_min, min_unit = c->t->s8_min_unit, sub = c->t->s8_sub;
    if (!sub) {  // the legacy types: Q4_1, Q5_1 (mins, signed panel); Q4_0, Q5_0, Q8_0
        if (has_min && sgn) return nv == 2 ? tile_vnni_unit(c, wp, r0, nr, g, 1, 1, 2) : tile_vnni_unit(c, wp, r0, nr, g, 1, 1, 1);
        if (!has_min && !sgn) return nv == 2 ? tile_vnni_unit(c, wp, r0, nr, g, 0, 0, 2) : tile_vnni_unit(c, wp, r0, nr, g, 0, 0, 1);
    }
#define LP_TILE_CASE(MIN, MU, SGN)                                                                        \
    if (c->sub_way == SUB_FOLD && has_min == MIN && (!MIN || min_unit == MU) && sgn == SGN)               \
        return nr > LP_G2_R ? tile_vnni_fold(c, wp, r0, nr, g, MIN, MU, SGN, 2, LP_MIN_R)                  \
               : nv == 2    ? tile_vnni_fold(c, wp, r0, nr, g, MIN, MU, SGN, 2, LP_G2_R)                     \
                            : tile_vnni_fold(c, wp, r0, nr, g, MIN, MU, SGN, 1, LP_G2_R);
    LP_TILE_CASE(1, 16, 1)  // Q2_K
    LP_TILE_CASE(0, 0, 0)   // Q3_K
#undef LP_TILE_CASE
#define LP_TILE_CASE(SUB, MIN, MU, SGN)                                                                   \
    if (c->sub_way == SUB_MULLD && sub == SUB && has_min == MIN && (!MIN || min_unit == MU) && sgn == SGN) \
        return nr > LP_G2_R ? tile_sub_frame(c, wp, r0, nr, g, SUB, MIN, MU, !SGN, 2, LP_MIN_R, vnni_mulld_body, SGN, 1) \
               : nv == 2    ? tile_sub_frame(c, wp, r0, nr, g, SUB, MIN, MU, !SGN, 2, LP_G2_R, vnni_mulld_body, SGN, 1)  \
                            : tile_sub_frame(c, wp, r0, nr, g, SUB, MIN, MU, !SGN, 1, LP_G2_R, vnni_mulld_body, SGN, 1);
    LP_TILE_CASE(32, 1, 32, 1)  // Q4_K, Q5_K
    LP_TILE_CASE(16, 0, 0, 0)   // Q6_K
#undef LP_TILE_CASE
    const float zero[LP_G2_R * LP_G_LANES] = { 0 };  // not reached: sub_way gives only these
    store_tile(c, r0, nr, g, zero);
}
LP_AVXVNNI_END
#else
int lp_gemm_avx2_vnni(void) { return 0; }  // (gemm.c's sub_way asks on every ISA)
void lp_gemm_vnni_tile(const gemm_ctx *c, const wpanel *wp, int r0, int nr, int64_t g, int sgn, int nv) {}
#endif
