// gemm_avx2.c — the AVX2 tiles of the batched product (gemm.c builds the panels and
// decodes the weights; see there).
#include "gemm_avx2.h"

// ---------------------------------------------------------------------------
// The AVX2 tile: LP_G2_R weight rows x one panel (16 activation rows, two vectors
// of 8). AVX2 has no VPDPBUSD: VPMADDUBSW multiplies unsigned by signed bytes into
// int16 pair sums, which SATURATE, then VPMADDWD with ones widens them to int32.
// Each way of feeding it is exact only for some weight ranges, so a chunk picks
// one from the range of its decoded quants (avx2_mode):
//   S8_ACT_U8: activation + 128 (the panel as it is) x signed weight, the sum
//              started at corr as on AVX-512; a pair is within 2 * 255 * |w|, so
//              |w| <= 64.
//   S8_W_U8:   weight (>= 0) x activation, on a signed panel (gemm.c, panel_signed);
//              a pair is within 2 * 128 * w.
//   S8_SIGN:   |w| x activation with w's sign: any int8 weight (w = -128 is 128
//              as an unsigned byte), for activations in [-127, 127], which is what
//              the quantizers make (the AVX2 row dots of Q8_0 rely on it too).
//              Q8_0 always (its panel is signed for it), units of 32 (tile_avx2_sign).
// The pair sums of m steps (4 columns each) are added as int16 before VPMADDWD
// when m times the pair bound stays within int16: |w| * m <= 64 (S8_ACT_U8) or
// w * m <= 128 (S8_W_U8), m <= 8 (Q4_K: 8); S8_SIGN has m = 1.
// The K-quants' sub-scales (s8_sub) cost nothing here: VPMADDWD takes the weight
// row's sub-scale in place of the ones, widening and scaling at once (tile_avx2_sub); on
// paired panels (gemm.c, lp_gemm_avx2_pairs: Q2_K, Q3_K) two sub-blocks of 16 at once.

enum { S8_ACT_U8, S8_W_U8, S8_SIGN };

#if LP_X86
LP_AVX2_BEGIN
// The AVX2 tile of S8_W_U8 (signed panel) and S8_ACT_U8 (unsigned), units of 16 or 32
// columns (mins, if any, per unit). A unit's int16 sums stay in registers over its steps
// (fully unrolled); the float sums (touched once a unit) and, when m steps are fewer than
// a unit's, the int32 sums of its earlier steps live in memory: with the float sums in
// registers too, the int16 ones spilled.
// One step of 4 columns (step kk of block ab, weights at w) of LP_G2_R weight rows x the
// panel's first nv halves into the int16 sums s16 (first: they start here). A tile of one
// half (nv 1) is an activation group's last rows when they are 8 or fewer: a mixture of
// experts' products have ragged row counts (~128 a product at 512 tokens, 2 of 8 experts),
// and rows up to the next 16 were a tenth of their work.
static inline __attribute__((always_inline)) void s16_step(const act_block *ab, int kk, const int8_t *w, int64_t cols,
                                                           const int mode, const int first, const int nv, const int R,
                                                           __m256i s16[][2]) {
    const __m256i a0 = _mm256_load_si256((const __m256i *)ab->q[kk][0]);
    const __m256i a1 = nv == 2 ? _mm256_load_si256((const __m256i *)ab->q[kk][8]) : a0;
    for (int r = 0; r < R; r++) {
        int32_t w4;
        memcpy(&w4, w + r * cols, 4);
        const __m256i wv = _mm256_set1_epi32(w4);
        const __m256i p0 = mode == S8_W_U8 ? _mm256_maddubs_epi16(wv, a0) : _mm256_maddubs_epi16(a0, wv);
        s16[r][0] = first ? p0 : _mm256_add_epi16(s16[r][0], p0);
        if (nv == 1) {
            __asm__("" : "+x"(s16[r][0]));
            continue;
        }
        const __m256i p1 = mode == S8_W_U8 ? _mm256_maddubs_epi16(wv, a1) : _mm256_maddubs_epi16(a1, wv);
        s16[r][1] = first ? p1 : _mm256_add_epi16(s16[r][1], p1);
        __asm__("" : "+x"(s16[r][0]), "+x"(s16[r][1]));  // in this order: no spills
    }
}

static inline __attribute__((always_inline)) void tile_avx2_unit(const gemm_ctx *c, const wpanel *wp, int r0, int nr,
                                                                 int64_t g, const int mode, const int m,
                                                                 const int unit, const int has_min, const int nv) {
    const int64_t cols = c->cols, units = c->units;
    const int steps = unit / 4, per_blk = 32 / unit;  // steps of 4 columns a unit; units a block
    const act_block *a = c->act + g * c->nblk;
    const int8_t *wq = wp->q + (int64_t)r0 * cols;  // row r at wq + r * cols
    const float *ws = wp->scale + (int64_t)r0 * units, *wm = wp->min + (int64_t)r0 * units;
    const int64_t cs = corr_stride(c);
    const int32_t *wc = wp->corr + (int64_t)r0 * cs;
    const __m256i ones = _mm256_set1_epi16(1);
    float accbuf[LP_G2_R][LP_G_LANES] __attribute__((aligned(32))) = { { 0 } };
    int32_t isbuf[LP_G2_R][LP_G_LANES] __attribute__((aligned(32)));
    float *acc = &accbuf[0][0];
    int32_t *isp = &isbuf[0][0];
    __asm__("" : "+r"(acc), "+r"(isp));  // memory, not registers (the compiler cannot follow them)
    for (int64_t u = 0; u < c->nblk * per_blk; u++) {
        const act_block *ab = &a[u / per_blk];
        const int k0 = (int)(u % per_blk) * steps;  // the unit's first step in its block
        const int8_t *w = wq + unit * u;
        __m256i s16[LP_G2_R][2];
#pragma GCC unroll 8
        for (int k = 0; k < steps; k++) {  // columns unit * u + 4k ..
            s16_step(ab, k0 + k, w + 4 * k, cols, mode, k % m == 0, nv, LP_G2_R, s16);
            if (k < steps - 1 && k % m == m - 1)  // a group of m steps ends before the unit does
                for (int r = 0; r < LP_G2_R; r++)
                    for (int v = 0; v < nv; v++) {
                        __m256i *ip = (__m256i *)(isp + 16 * r + 8 * v);
                        const __m256i t = _mm256_madd_epi16(s16[r][v], ones);
                        _mm256_store_si256(ip, k < m ? t : _mm256_add_epi32(_mm256_load_si256(ip), t));
                    }
        }
        const __m256 dv[2] = { _mm256_load_ps(ab->d), _mm256_load_ps(ab->d + 8) };
        for (int r = 0; r < LP_G2_R; r++) {
            const __m256 sv = _mm256_set1_ps(ws[r * units + u]);
            const __m256i cv = _mm256_set1_epi32(mode == S8_ACT_U8 ? wc[r * cs + u] : 0);
            for (int v = 0; v < nv; v++) {
                __m256i is = _mm256_madd_epi16(s16[r][v], ones);
                if (m < steps) is = _mm256_add_epi32(is, _mm256_load_si256((const __m256i *)(isp + 16 * r + 8 * v)));
                if (mode == S8_ACT_U8) is = _mm256_add_epi32(is, cv);  // the +128's correction
                float *ap = acc + 16 * r + 8 * v;
                _mm256_store_ps(ap, _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(is), dv[v]), sv, _mm256_load_ps(ap)));
            }
        }
        if (has_min) {
            const float *am = ab->m[(u % per_blk) * unit / 16];
            const __m256 mv[2] = { _mm256_load_ps(am), _mm256_load_ps(am + 8) };
            for (int r = 0; r < LP_G2_R; r++) {
                const __m256 mw = _mm256_set1_ps(wm[r * units + u]);
                for (int v = 0; v < nv; v++) {
                    float *ap = acc + 16 * r + 8 * v;
                    _mm256_store_ps(ap, _mm256_fmadd_ps(mv[v], mw, _mm256_load_ps(ap)));
                }
            }
        }
    }
    for (int l = 0; l < LP_G_LANES; l++) {  // y[act row][weight row], rows r0 .. r0 + nr - 1 of the chunk
        const int64_t arow = g * LP_G_LANES + l;
        if (arow >= c->n) break;
        float *yr = c->y + arow * c->rows + r0;
        for (int r = 0; r < nr; r++) yr[r] = acc[16 * r + l];
    }
}

// The AVX2 tile of S8_SIGN (Q8_0, whose quants reach -128..127; and any chunk whose
// range leaves the int16 sums no room), units of 32 columns (tile_unit_frame): |w| x the
// activation with w's sign, every step's pair sums widened at once (m = 1); an unsigned
// panel's activations are flipped back to signed once a step for all the rows.
static inline __attribute__((always_inline)) void sign_step(const act_block *ab, int k, const int8_t *w, int64_t cols,
                                                            const int sgn, const int nv, const int R, __m256i is[][2]) {
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8((char)0x80);
    __m256i av[2];
    for (int v = 0; v < nv; v++) {
        av[v] = _mm256_load_si256((const __m256i *)ab->q[k][8 * v]);
        if (!sgn) av[v] = _mm256_xor_si256(av[v], flip);  // back to signed
    }
    for (int r = 0; r < R; r++) {
        int32_t w4;
        memcpy(&w4, w + r * cols, 4);
        const __m256i wv = _mm256_set1_epi32(w4), wa = _mm256_abs_epi8(wv);
        for (int v = 0; v < nv; v++) {
            const __m256i p = _mm256_maddubs_epi16(wa, _mm256_sign_epi8(av[v], wv));
            is[r][v] = _mm256_add_epi32(is[r][v], _mm256_madd_epi16(p, ones));
            __asm__("" : "+x"(is[r][v]));  // a chain: re-associated, the products spill
        }
    }
}

static inline __attribute__((always_inline)) void tile_avx2_sign(const gemm_ctx *c, const wpanel *wp, int r0, int nr,
                                                                 int64_t g, const int has_min, const int sgn,
                                                                 const int nv) {
    tile_unit_frame(c, wp, r0, nr, g, has_min, sgn, 0, nv, sign_step);
}

LP_AVX2_END
#endif

#if LP_X86
LP_AVX2_BEGIN
// Quants q[0..31]: their range folded into [vlo, vhi]; + 128 makes them unsigned, and VPSADBW
// against zero sums each 8 of them: s[i] = the sum of quants 8i..8i+7, + 1024.
static inline void sums_of_32(const int8_t *q, __m256i *vlo, __m256i *vhi, int64_t s[4]) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)q);
    *vlo = _mm256_min_epi8(*vlo, v);
    *vhi = _mm256_max_epi8(*vhi, v);
    const __m256i u = _mm256_xor_si256(v, _mm256_set1_epi8((char)0x80));
    _mm256_storeu_si256((__m256i *)s, _mm256_sad_epu8(u, _mm256_setzero_si256()));
}

// Quants q[0..127]: their range folded into [vlo, vhi], and the sum of each 16 of them, in
// order, in the 8 int32 lanes. VPMADDUBSW by ones and VPMADDWD by ones sum each 4 (exact), two
// rounds of VPHADDD each 16 (lane 0 of the result has the sums 0, 2, 4, 6, lane 1 the odd ones).
// sums_of_32's way cost 8 cycles a 32 quants (its sums reread from memory one by one): a tenth
// of a Q3_K product of 128 activation rows.
static inline __m256i sums16_of_128(const int8_t *q, __m256i *vlo, __m256i *vhi) {
    const __m256i one8 = _mm256_set1_epi8(1), one16 = _mm256_set1_epi16(1);
    __m256i m[4];
    for (int i = 0; i < 4; i++) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(q + 32 * i));
        *vlo = _mm256_min_epi8(*vlo, v);
        *vhi = _mm256_max_epi8(*vhi, v);
        m[i] = _mm256_madd_epi16(_mm256_maddubs_epi16(one8, v), one16);  // lane j: quants 32i + 4j ..
    }
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(m[0], m[1]), _mm256_hadd_epi32(m[2], m[3]));
    return _mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// A decoded row in the paired order (gemm.c, lp_gemm_avx2_pairs): in each 32 quants the int16
// words (two quants) of the first 16 and of the last 16 alternate.
void lp_gemm_pairs_avx2(int8_t *q, int64_t cols) {
    for (int64_t b = 0; b < cols; b += 32) {
        const __m128i lo = _mm_loadu_si128((const __m128i *)(q + b)), hi = _mm_loadu_si128((const __m128i *)(q + b + 16));
        _mm_storeu_si128((__m128i *)(q + b), _mm_unpacklo_epi16(lo, hi));
        _mm_storeu_si128((__m128i *)(q + b + 16), _mm_unpackhi_epi16(lo, hi));
    }
}

// -128 * each int32 lane (the +128's correction of a sum of quants; |sum| < 2^24)
static inline __m256i corr_of(__m256i sum) { return _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum, 7)); }

// corr (cols / unit) = -128 * the sum of each unit's quants in row q (cols), and the row's
// range folded into [*lo, *hi]: 128 quants a step where the unit is 16, 32 or a multiple of 128
// (the rest, and the row's last columns, 32 at a time).
void lp_gemm_unit_sums_avx2(const int8_t *q, int64_t cols, int unit, int32_t *corr, int *lo, int *hi) {
    __m256i vlo = _mm256_set1_epi8((char)*lo), vhi = _mm256_set1_epi8((char)*hi);
    int64_t s[4], b = 0;
    if (unit == 16 || unit == 32) {
        for (; b + 128 <= cols; b += 128) {
            const __m256i s16 = sums16_of_128(q + b, &vlo, &vhi);
            if (unit == 16) {
                _mm256_storeu_si256((__m256i *)corr, corr_of(s16));
                corr += 8;
            } else {  // pairs of 16: lanes 0, 1 and 4, 5 of the pairwise sums
                const __m256i s32 = _mm256_permute4x64_epi64(_mm256_hadd_epi32(s16, s16), 0x08);
                _mm_storeu_si128((__m128i *)corr, _mm256_castsi256_si128(corr_of(s32)));
                corr += 4;
            }
        }
    } else if (unit % 128 == 0) {
        for (; b + unit <= cols; b += unit, corr++) {
            __m256i sum = _mm256_setzero_si256();
            for (int k = 0; k < unit; k += 128) sum = _mm256_add_epi32(sum, sums16_of_128(q + b + k, &vlo, &vhi));
            *corr = -128 * lp_hsum_i32x8(sum);
        }
    }
    if (unit == 16) {  // two units a step
        for (; b < cols; b += 32, corr += 2) {
            sums_of_32(q + b, &vlo, &vhi, s);
            corr[0] = -128 * (int32_t)(s[0] + s[1] - 2048);
            corr[1] = -128 * (int32_t)(s[2] + s[3] - 2048);
        }
    } else {  // unit / 32 steps a unit
        while (b < cols) {
            int64_t sum = 0;
            for (int k = 0; k < unit; k += 32, b += 32) {
                sums_of_32(q + b, &vlo, &vhi, s);
                sum += s[0] + s[1] + s[2] + s[3] - 4096;
            }
            *corr++ = -128 * (int32_t)sum;
        }
    }
    // (the byte lanes started at *lo and *hi) folded in registers: a loop over the stored lanes
    // kept *lo and *hi in memory, as many cycles as the sums of a 4096-column row
    __m128i l = _mm_min_epi8(_mm256_castsi256_si128(vlo), _mm256_extracti128_si256(vlo, 1));
    __m128i h = _mm_max_epi8(_mm256_castsi256_si128(vhi), _mm256_extracti128_si256(vhi, 1));
    l = _mm_min_epi8(l, _mm_srli_si128(l, 8)), h = _mm_max_epi8(h, _mm_srli_si128(h, 8));
    l = _mm_min_epi8(l, _mm_srli_si128(l, 4)), h = _mm_max_epi8(h, _mm_srli_si128(h, 4));
    l = _mm_min_epi8(l, _mm_srli_si128(l, 2)), h = _mm_max_epi8(h, _mm_srli_si128(h, 2));
    l = _mm_min_epi8(l, _mm_srli_si128(l, 1)), h = _mm_max_epi8(h, _mm_srli_si128(h, 1));
    *lo = (int8_t)_mm_cvtsi128_si32(l);
    *hi = (int8_t)_mm_cvtsi128_si32(h);
}
LP_AVX2_END
#endif


#if LP_X86
LP_AVX2_BEGIN
// The tile of the sub-scaled K-quants: LP_G2_R weight rows x one panel (tile_sub_frame). Each
// sub-block (steps of 4 columns) sums its pair products in int16, m steps at a time, and
// VPMADDWD against the row's sub-scale (as int16 pairs) widens them into the unit's
// (super-block's) int32 sums; one float step a super-block. As in tile_avx2_unit, the
// int16 sums stay in registers, the int32 and float sums live in memory.
static inline __attribute__((always_inline)) void avx2_sub_body(const sub_block *sb, const int steps, const int mode,
                                                                const int m, const int nv, const int R) {
    __m256i s16[LP_MIN_R][2];
#pragma GCC unroll 8
    for (int k = 0; k < steps; k++) {  // the sub-block's columns 4k ..
        s16_step(sb->ab, sb->k0 + k, sb->w + 4 * k, sb->cols, mode, k % m == 0, nv, R, s16);
        if (k % m == m - 1)  // a group of m steps ends: widened and scaled into the unit's sums
            for (int r = 0; r < R; r++) {
                const __m256i sv = _mm256_set1_epi32(sb->wsub[r * sb->subs + sb->gi]);
                for (int v = 0; v < nv; v++) {
                    __m256i *ip = (__m256i *)(sb->isp + 16 * r + 8 * v);
                    _mm256_store_si256(ip, _mm256_add_epi32(_mm256_load_si256(ip), _mm256_madd_epi16(s16[r][v], sv)));
                }
            }
    }
}

// The plain-AVX2 tile of Q6_K (sub-blocks of 16; Q2_K and Q3_K pair theirs into sub-blocks of
// 32, gemm.c's lp_gemm_avx2_pairs, and take tile_sub_frame as Q4_K does), the panel's first nv
// halves (8 activation rows each) in one pass: a sub-block's activation steps of those halves
// are loaded once for all R rows, each weight broadcast serves every half, and each m steps'
// int16 sums (Q6_K's m is 2) go by one VPMADDWD against the sub-scale into the super-block's
// int32 sums, in memory. Against one half a pass with the sums in registers (LP_G2_R rows),
// one thread, 512 rows: Q6_K 4096 columns 68-75 -> 75-79 GMAC/s, 14336 columns 59-65 -> 75-76;
// Mistral-width Q6_K prompts 143-154 -> 156-169 tok/s (2 threads). The float steps are
// tile_sub_frame's, in the same order for each output.
static inline __attribute__((always_inline)) void sub16_pass(const gemm_ctx *c, const sub_rows *w0,
                                                             const act_block *a, const int sub, const int mode,
                                                             const int m, const int nv, const int R, float *acc) {
    const int64_t cs = corr_stride(c), units = c->units;
    const int steps = sub / 4, per_blk = 32 / sub;
    const int8_t *wr[LP_MIN_R];
    const int32_t *sr[LP_MIN_R];
    int32_t isbuf[LP_MIN_R * LP_G_LANES] __attribute__((aligned(32)));
    int32_t *isp = isbuf;
    __asm__("" : "+r"(isp));  // memory, not registers
    for (int r = 0; r < R; r++) wr[r] = w0->q + r * c->cols, sr[r] = w0->sub + r * c->subs;
    for (int64_t u = 0; u < units; u++) {
        unit_sums_start(isp, w0->corr, cs, u, mode == S8_ACT_U8, R);
        const act_block *au = a + u * (QK_K / 32);
        for (const act_block *ab = au; ab < au + QK_K / 32; ab++) {
            const uint8_t *aq = ab->q[0][0];
            panel_prefetch(a, ab - a, c->nblk);
#pragma GCC unroll 2
            for (int s = 0; s < per_blk; s++) {  // the block's sub-blocks
                __m256i av[2][4];
                for (int k = 0; k < steps; k++)
                    for (int v = 0; v < nv; v++)
                        av[v][k] = _mm256_load_si256((const __m256i *)(aq + 64 * (steps * s + k) + 32 * v));
                for (int r = 0; r < R; r++) {
                    const __m256i sv = _mm256_set1_epi32(sr[r][s]);
                    for (int k = 0; k < steps; k += m) {
                        __m256i s16[2];
                        for (int j = 0; j < m; j++) {
                            int32_t w4;
                            memcpy(&w4, wr[r] + sub * s + 4 * (k + j), 4);
                            const __m256i wv = _mm256_set1_epi32(w4);
                            for (int v = 0; v < nv; v++) {
                                const __m256i p = mode == S8_W_U8 ? _mm256_maddubs_epi16(wv, av[v][k + j])
                                                                  : _mm256_maddubs_epi16(av[v][k + j], wv);
                                s16[v] = j ? _mm256_add_epi16(s16[v], p) : p;
                            }
                        }
                        for (int v = 0; v < nv; v++) {
                            __m256i *ip = (__m256i *)(isp + 16 * r + 8 * v);
                            _mm256_store_si256(ip, _mm256_add_epi32(_mm256_load_si256(ip), _mm256_madd_epi16(s16[v], sv)));
                        }
                    }
                }
            }
            for (int r = 0; r < R; r++) wr[r] += 32, sr[r] += per_blk;
        }
        for (int v = 0; v < nv; v++) {  // tile_sub_frame's float step, a half at a time (fewer live registers)
            const __m256 dv = _mm256_load_ps(au->d + 8 * v);
            for (int r = 0; r < R; r++) {
                float *ap = acc + 16 * r + 8 * v;
                const __m256 sc = _mm256_set1_ps(w0->scale[r * units + u]);
                const __m256i is = _mm256_load_si256((const __m256i *)(isp + 16 * r + 8 * v));
                _mm256_store_ps(ap, _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(is), dv), sc, _mm256_load_ps(ap)));
            }
        }
    }
}

static inline __attribute__((always_inline)) void tile_avx2_halves(const gemm_ctx *c, const wpanel *wp, int r0, int nr,
                                                                   int64_t g, const int sub, const int has_min,
                                                                   const int min_unit, const int mode, const int m,
                                                                   const int nv, const int R) {
    float accbuf[R * LP_G_LANES] __attribute__((aligned(32)));
    float *acc = accbuf;
    __asm__("" : "+r"(acc));  // memory, not registers
    sums_start(c, wp, r0, g, has_min, min_unit, nv, R, acc);
    const sub_rows w0 = sub_rows_of(c, wp, r0);
    const act_block *a = c->act + g * c->nblk;
    sub16_pass(c, &w0, a, sub, mode, m, nv, R, acc);
    store_tile(c, r0, nr, g, acc);
}

// The plain-AVX2 frame for a type's sub-block size: tile_avx2_halves for 16 columns, tile_sub_frame
// (with avx2_sub_body) for 32 (see sub16_pass).
static inline __attribute__((always_inline)) void tile_avx2_sub(const gemm_ctx *c, const wpanel *wp, int r0, int nr,
                                                                int64_t g, const int sub, const int has_min,
                                                                const int min_unit, const int mode, const int m,
                                                                const int nv, const int R) {
    if (sub == 16) tile_avx2_halves(c, wp, r0, nr, g, sub, has_min, min_unit, mode, m, nv, R);
    else tile_sub_frame(c, wp, r0, nr, g, sub, has_min, min_unit, mode == S8_ACT_U8, nv, R, avx2_sub_body, mode, m);
}

// The sub-scaled tile for each K-quant's (sub, mins) and the (mode, m) avx2_mode picks for it.
static void tile_any_avx2_sub(const gemm_ctx *c, const wpanel *wp, int r0, int nr, int64_t g, int mode, int m,
                              int nv) {
    // (paired sub-blocks of 16: a pair is a sub-block of 32 whose sub-scale is two int16)
    const int sub = c->pairs ? 32 : c->t->s8_sub, has_min = c->t->s8_min, min_unit = c->t->s8_min_unit;
#define LP_TILE_CASE(MODE, M, SUB, MIN, MU)                                                         \
    if (mode == MODE && m == M && sub == SUB && has_min == MIN && (!MIN || min_unit == MU)) \
        return nr > LP_G2_R ? tile_avx2_sub(c, wp, r0, nr, g, SUB, MIN, MU, MODE, M, 2, LP_MIN_R) \
               : nv == 2    ? tile_avx2_sub(c, wp, r0, nr, g, SUB, MIN, MU, MODE, M, 2, LP_G2_R)  \
                            : tile_avx2_sub(c, wp, r0, nr, g, SUB, MIN, MU, MODE, M, 1, LP_G2_R);
    LP_TILE_CASE(S8_ACT_U8, 2, 16, 0, 0)   // Q6_K
    LP_TILE_CASE(S8_W_U8, 8, 32, 1, 32)    // Q4_K
    LP_TILE_CASE(S8_W_U8, 4, 32, 1, 32)    // Q5_K
    LP_TILE_CASE(S8_W_U8, 8, 32, 1, 16)    // Q2_K, paired sub-blocks
    LP_TILE_CASE(S8_ACT_U8, 8, 32, 0, 0)   // Q3_K, paired sub-blocks
#undef LP_TILE_CASE
    const float zero[LP_G2_R * LP_G_LANES] = { 0 };  // not reached: the K-quants' bounds give the cases above
    store_tile(c, r0, nr, g, zero);
}

// The tile for every (mode, m, unit, min unit) combination of the types without
// sub-scales that avx2_mode can pick, each compiled with constants; nv: the panel's halves
// with rows (the sub-scaled and the unit tiles; tile_avx2 does both, the rows past n unused).
static void tile_any_avx2(const gemm_ctx *c, const wpanel *wp, int r0, int nr, int64_t g, int mode, int m, int sgn,
                          int nv) {
    const int has_min = c->t->s8_min;
    if (c->subs) return tile_any_avx2_sub(c, wp, r0, nr, g, mode, m, nv);
#define LP_SIGN(MIN, SGN) \
    return nv == 2 ? tile_avx2_sign(c, wp, r0, nr, g, MIN, SGN, 2) : tile_avx2_sign(c, wp, r0, nr, g, MIN, SGN, 1)
    if (mode == S8_SIGN) {  // Q8_0 (a signed panel); a Q4_0 or Q5_0 chunk whose range needs it; Q4_1, Q5_1 never
        if (has_min) LP_SIGN(1, 1);
        if (sgn) LP_SIGN(0, 1);
        LP_SIGN(0, 0);
    }
#undef LP_SIGN
#define LP_UNIT(MODE, M, MIN) \
    return nv == 2 ? tile_avx2_unit(c, wp, r0, nr, g, MODE, M, 32, MIN, 2) : tile_avx2_unit(c, wp, r0, nr, g, MODE, M, 32, MIN, 1)
    if (sgn) {  // Q4_1, Q5_1: unit 32 with mins (avx2_mode: W_U8 on a signed panel)
        if (m == 8) LP_UNIT(S8_W_U8, 8, 1);
        if (m == 4) LP_UNIT(S8_W_U8, 4, 1);
        LP_UNIT(S8_W_U8, 2, 1);
    }
    // Q4_0, Q5_0: S8_ACT_U8 on an unsigned panel
    if (m == 8) LP_UNIT(S8_ACT_U8, 8, 0);
    if (m == 4) LP_UNIT(S8_ACT_U8, 4, 0);
    LP_UNIT(S8_ACT_U8, 2, 0);
#undef LP_UNIT
}
LP_AVX2_END
#endif


// How the AVX2 tile multiplies a chunk whose quants lie in [lo, hi], and how many
// steps of int16 sums it adds (see the tile): at most a unit's (or sub-block's) steps,
// `steps`. A signed panel (sgn) has no S8_ACT_U8.
static void avx2_mode(int lo, int hi, int steps, int sgn, int *mode, int *m) {
    const int mag = -lo > hi ? -lo : hi;
    // largest m the int16 sums allow: a signed panel's weights are never negative but Q8_0's
    const int limit = sgn ? (lo < 0 ? 0 : hi ? 128 / hi : 8) : mag ? 64 / mag : 8;
    *mode = sgn ? S8_W_U8 : S8_ACT_U8;
    *m = steps < 8 ? steps : 8;
    while (*m > limit) *m /= 2;
    if (*m < 2) *mode = S8_SIGN, *m = 1;
}

#if LP_X86
void lp_gemm_avx2_chunk(const gemm_ctx *c, const wpanel *wp, int nr, int lo, int hi, int sgn) {
    int mode, m;
    avx2_mode(lo, hi, (c->pairs ? 32 : c->subs ? c->t->s8_sub : c->t->s8_unit) / 4, sgn, &mode, &m);
    // AVX-VNNI: the K-quants sub_way gives a way, and the legacy types (units of 32)
    const int vnni = c->sub_way != SUB_NONE || (!c->subs && c->t->s8_unit == 32 && lp_gemm_avx2_vnni());
    for (int64_t g = 0; g < c->groups; g++) {
        const int nv = c->n - g * LP_G_LANES > LP_G_LANES / 2 ? 2 : 1;
        // the sub-scaled K-quants: LP_MIN_R rows a tile where both halves have rows
        const int six = c->subs && nv == 2;
        for (int r0 = 0; r0 < nr;) {
            const int step = six && nr - r0 >= LP_MIN_R ? LP_MIN_R : LP_G2_R, rows = nr - r0 < step ? nr - r0 : step;
            if (vnni) lp_gemm_vnni_tile(c, wp, r0, rows, g, sgn, nv);
            else tile_any_avx2(c, wp, r0, rows, g, mode, m, sgn, nv);
            r0 += step;
        }
    }
}
#endif
