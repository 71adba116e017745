// gemm.c — the batched matrix product of prompt processing, on AVX-512 VNNI and AVX2
// (and the activation panels of aarch64's, gemm_i8mm.c).
//
// y (n, rows) = x (n, cols) @ W^T when n is large: every weight is used n times,
// so the product is compute-bound and worth re-laying out both sides once:
//
// - Activations: the rows quantized by lp_matmul (Q8_0 / Q8_1 / Q8_K) are copied
//   into a panel of 16 rows at a time, one 32-bit lane per row: for each block of 32
//   columns, 8 vectors holding columns 4k..4k+3 of the 16 rows (quants + 128, as
//   unsigned bytes; or as they are, signed, for the types whose decoded quants are
//   never negative: panel_signed), the 16 rows' scales, and their min-term factors.
// - Weights: a thread decodes LP_G_RT rows at a time with the type's to_s8 into
//   int8 quants, a float scale per unit of 16, 32 or 256 columns (Q2_K and Q3_K
//   multiply their small group scales into the quants, so a whole super-block is
//   summed in integers) and a float min per unit of 16 or 32.
//
// AVX-512: one VPDPBUSD multiplies 4 columns of one weight row (broadcast) with the
// same 4 columns of 16 activation rows (one panel vector) and adds into 16 int32
// lanes; a register tile is 4 weight rows x up to 3 panels. The +128 that makes the
// activations unsigned adds 128 * sum(q) to each sum; starting the sum at
// -128 * sum(q) takes it back out exactly. On a signed panel the weight (>= 0) is the
// unsigned operand instead, and there is nothing to take out.
// AVX2: the same panels, each 16-row vector as two halves of 8; VPMADDUBSW and
// VPMADDWD in place of VPDPBUSD, fed one of three ways chosen from the decoded
// weights' range so that no int16 step saturates (see the AVX2 tile); a signed panel
// has a tile of its own (tile_avx2_unit, as do the units of 16 and 32 without mins).
// Per unit, a weight row's lane sums become floats, the same steps on both:
// acc += scale * (d_act * isum), then per min unit within it acc += min * m_act.
//
// The integer products are vec_dot's own (same quantized activations, same int8
// weights); only the order of the float additions differs. The two ISAs give the
// same bits.
#include "gemm.h"

#define LP_G_R 4       // weight rows per register tile
#define LP_G_NJ 3      // AVX-512: activation panels (of 16 rows) per register tile, at most

// Scratch of one thread: LP_G_RT decoded weight rows (quants, scales, mins, corrections).
static int64_t wpanel_bytes(const lp_type_traits *t, int64_t cols) {
    const int64_t x86 = align_up(LP_G_RT * cols) + 2 * align_up(LP_G_RT * cols / t->s8_unit * 4) +
                        align_up(LP_G_RT * cols / t->s8_min_unit * 4);
#if LP_ARM
    const int64_t arm = lp_gemm_i8mm_scratch(t, cols);
    return arm > x86 ? arm : x86;
#else
    return x86;
#endif
}

int64_t lp_gemm_work_size(const lp_type_traits *t, int64_t cols, int64_t n, int n_threads) {
    if (!t->to_s8[LP_ISA_REF] || n < 1 || cols % 32 || cols % t->s8_unit) return 0;
    if (n_threads < 1) n_threads = 1;
    const int64_t groups = (n + LP_G_LANES - 1) / LP_G_LANES;
    return LP_ALIGN + groups * (cols / 32) * (int64_t)sizeof(act_block) + n_threads * wpanel_bytes(t, cols);
}

// ---------------------------------------------------------------------------
// The activation panel

// Whether the x86 panel holds the activations as they are (signed) rather than + 128: for
// the types whose decoded quants are never negative (unsigned quants and a min: Q4_1, Q5_1,
// Q4_K, Q5_K, all with units of 32), the weight can be the unsigned operand of VPDPBUSD /
// VPMADDUBSW, which needs no +128 correction (AVX-512) and no flip back to signed (AVX2).
static int panel_signed(const lp_type_traits *t, int isa) {
    return (isa == LP_ISA_AVX512 || isa == LP_ISA_AVX2) && t->s8_min && t->s8_unit == 32 && t->s8_min_unit == 32;
}

static void build_act_group(void *vctx, int g, int ith) {
    const gemm_ctx *c = vctx;
    (void)ith;
    const int act_type = c->t->vec_dot_type, min_unit = c->t->s8_min_unit;
    const uint32_t flip = panel_signed(c->t, c->isa) ? 0 : 0x80808080u;
    act_block *out = c->act + (int64_t)g * c->nblk;
    memset(out, 0, sizeof(act_block) * (size_t)c->nblk);  // rows past n: zero
    for (int j = 0; j < LP_G_LANES; j++) {
        const int64_t row = (int64_t)g * LP_G_LANES + j;
        if (row >= c->n) break;
        const uint8_t *xr = c->xq + row * c->xq_row_bytes;
        for (int64_t b = 0; b < c->nblk; b++) {
            act_block *ab = &out[b];
            const int8_t *qs;
            if (act_type == LP_Q8_K) {
                const block_q8_K *k = (const block_q8_K *)xr + b / 8;
                const int h = (int)(b % 8);
                qs = k->qs + 32 * h;
                ab->d[j] = k->d;
                if (min_unit == 32) {
                    ab->m[0][j] = k->d * (float)(k->bsums[2 * h] + k->bsums[2 * h + 1]);
                } else {
                    ab->m[0][j] = k->d * (float)k->bsums[2 * h];
                    ab->m[1][j] = k->d * (float)k->bsums[2 * h + 1];
                }
            } else if (act_type == LP_Q8_1) {
                const block_q8_1 *k = (const block_q8_1 *)xr + b;
                qs = k->qs;
                ab->d[j] = lp_half_to_float(k->d);
                ab->m[0][j] = lp_half_to_float(k->s);
            } else {  // Q8_0: the weight types using it have no mins
                const block_q8_0 *k = (const block_q8_0 *)xr + b;
                qs = k->qs;
                ab->d[j] = lp_half_to_float(k->d);
            }
            if (c->isa == LP_ISA_I8MM) {  // signed, in row pairs (act_block)
                uint8_t *pair = &ab->q[0][0][0] + 64 * (j / 2) + 8 * (j % 2);
                for (int s = 0; s < 4; s++) memcpy(pair + 16 * s, qs + 8 * s, 8);
                continue;
            }
            for (int k = 0; k < 8; k++) {
                uint32_t v;
                memcpy(&v, qs + 4 * k, 4);
                v ^= flip;  // + 128 in each byte (an unsigned panel)
                memcpy(ab->q[k][j], &v, 4);
            }
        }
    }
}

// The largest decoded quant of a type with a signed panel: 4-bit quants (Q4_1, Q4_K) or
// 5-bit (Q5_1, Q5_K); never negative. Known by construction, so those types skip the
// per-row range and correction sums, which neither tile needs for them.
static int quant_bound(const lp_type_traits *t) {
    return t == lp_traits(LP_Q4_K) || t == lp_traits(LP_Q4_1) ? 15 : 31;
}

// ---------------------------------------------------------------------------
// The register tile: LP_G_R weight rows x nj * 16 activation rows, all columns.

typedef struct {
    const int8_t *q;      // (LP_G_RT, cols)
    const float *scale;   // (LP_G_RT, units)
    const int32_t *corr;  // (LP_G_RT, units): -128 * sum of the unit's quants
    const float *min;     // (LP_G_RT, min_units)
} wpanel;

#if LP_X86
LP_AVX512_BEGIN
static inline __attribute__((always_inline)) void tile_avx512(const gemm_ctx *c, const wpanel *wp, int r0,
                                                              int64_t g0, const int nj, const int unit,
                                                              const int has_min, const int min_unit, const int sgn) {
    const int64_t cols = c->cols, units = c->units, min_units = c->min_units;
    const int mins_per_unit = unit / min_unit;
    // a unit is blocks_per_unit blocks of 32 columns (unit >= 32) or a part of one block
    const int blocks_per_unit = unit > 32 ? unit / 32 : 1, units_per_blk = unit < 32 ? 32 / unit : 1;
    const int k_per_blk = unit < 32 ? unit / 4 : 8;  // steps of 4 columns of a unit in each of its blocks
    const act_block *a[LP_G_NJ];
    for (int j = 0; j < nj; j++) a[j] = c->act + (g0 + j) * c->nblk;
    __m512 acc[LP_G_R][LP_G_NJ];
    for (int r = 0; r < LP_G_R; r++)
        for (int j = 0; j < nj; j++) acc[r][j] = _mm512_setzero_ps();
    for (int64_t ub = 0; ub < c->nblk; ub += blocks_per_unit)
    for (int h = 0; h < units_per_blk; h++) {
        const int64_t u = ub / blocks_per_unit * units_per_blk + h;
        __m512i is[LP_G_R][LP_G_NJ];
        for (int r = 0; r < LP_G_R; r++) {
            const __m512i start = sgn ? _mm512_setzero_si512() : _mm512_set1_epi32(wp->corr[(r0 + r) * units + u]);
            for (int j = 0; j < nj; j++) is[r][j] = start;
        }
        for (int64_t b = ub; b < ub + blocks_per_unit; b++)
            for (int k = h * k_per_blk; k < (h + 1) * k_per_blk; k++) {  // columns 32b + 4k ..
                __m512i av[LP_G_NJ];
                for (int j = 0; j < nj; j++) av[j] = _mm512_load_si512((const void *)a[j][b].q[k]);
                for (int r = 0; r < LP_G_R; r++) {
                    int32_t w4;
                    memcpy(&w4, wp->q + (r0 + r) * cols + 32 * b + 4 * k, 4);
                    const __m512i wv = _mm512_set1_epi32(w4);
                    for (int j = 0; j < nj; j++)  // a signed panel: the weight (>= 0) is the unsigned operand
                        is[r][j] = sgn ? _mm512_dpbusd_epi32(is[r][j], wv, av[j]) : _mm512_dpbusd_epi32(is[r][j], av[j], wv);
                }
            }
        __m512 dv[LP_G_NJ];  // the activation scale of the unit's (first) block (Q8_K: one per 256)
        for (int j = 0; j < nj; j++) dv[j] = _mm512_load_ps(a[j][ub].d);
        for (int r = 0; r < LP_G_R; r++) {
            const __m512 sv = _mm512_set1_ps(wp->scale[(r0 + r) * units + u]);
            for (int j = 0; j < nj; j++) {
                const __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(is[r][j]), dv[j]);
                acc[r][j] = _mm512_fmadd_ps(p, sv, acc[r][j]);
            }
        }
        if (has_min)
            for (int64_t mu = u * mins_per_unit; mu < (u + 1) * mins_per_unit; mu++) {
                const int64_t b = mu * min_unit / 32, h = mu * min_unit % 32 / 16;
                __m512 mv[LP_G_NJ];
                for (int j = 0; j < nj; j++) mv[j] = _mm512_load_ps(a[j][b].m[h]);
                for (int r = 0; r < LP_G_R; r++) {
                    const __m512 mw = _mm512_set1_ps(wp->min[(r0 + r) * min_units + mu]);
                    for (int j = 0; j < nj; j++) acc[r][j] = _mm512_fmadd_ps(mv[j], mw, acc[r][j]);
                }
            }
    }
    // y[act row][weight row]: lanes are activation rows
    for (int j = 0; j < nj; j++) {
        float lanes[LP_G_R][LP_G_LANES];
        for (int r = 0; r < LP_G_R; r++) _mm512_storeu_ps(lanes[r], acc[r][j]);
        for (int l = 0; l < LP_G_LANES; l++) {
            const int64_t arow = (g0 + j) * LP_G_LANES + l;
            if (arow >= c->n) break;
            float *yr = c->y + arow * c->rows + r0;
            for (int r = 0; r < LP_G_R; r++) yr[r] = lanes[r][l];
        }
    }
}

// The tile for every (nj, unit, min unit) combination of the types, each compiled with constants.
static void tile_any(const gemm_ctx *c, const wpanel *wp, int r0, int64_t g0, int nj) {
    const int unit = c->t->s8_unit, has_min = c->t->s8_min, min_unit = c->t->s8_min_unit;
    if (panel_signed(c->t, c->isa)) {
        if (nj == 3) return tile_avx512(c, wp, r0, g0, 3, 32, 1, 32, 1);
        if (nj == 2) return tile_avx512(c, wp, r0, g0, 2, 32, 1, 32, 1);
        return tile_avx512(c, wp, r0, g0, 1, 32, 1, 32, 1);
    }
#define LP_TILE_CASE(NJ, U, M, MU) \
    if (nj == NJ && unit == U && has_min == M && (!M || min_unit == MU)) return tile_avx512(c, wp, r0, g0, NJ, U, M, MU, 0);
#define LP_TILE_NJ(NJ) LP_TILE_CASE(NJ, 32, 0, 32) LP_TILE_CASE(NJ, 16, 0, 16) \
    LP_TILE_CASE(NJ, 256, 0, 256) LP_TILE_CASE(NJ, 256, 1, 16)
    LP_TILE_NJ(3) LP_TILE_NJ(2) LP_TILE_NJ(1)
#undef LP_TILE_NJ
#undef LP_TILE_CASE
}
LP_AVX512_END
#endif

// ---------------------------------------------------------------------------
// The AVX2 tile: LP_G2_R weight rows x one panel (16 activation rows, two vectors
// of 8). AVX2 has no VPDPBUSD: VPMADDUBSW multiplies unsigned by signed bytes into
// int16 pair sums, which SATURATE, then VPMADDWD with ones widens them to int32.
// Each way of feeding it is exact only for some weight ranges, so a chunk picks
// one from the range of its decoded quants (avx2_mode):
//   S8_ACT_U8: activation + 128 (the panel as it is) x signed weight, the sum
//              started at corr as on AVX-512; a pair is within 2 * 255 * |w|, so
//              |w| <= 64.
//   S8_W_U8:   weight (>= 0) x activation (a - 128 back to signed, or as it is on
//              a signed panel); a pair is within 2 * 128 * w.
//   S8_SIGN:   |w| x activation with w's sign: any int8 weight (w = -128 is 128
//              as an unsigned byte), for activations in [-127, 127], which is what
//              the quantizers make (the AVX2 row dots of Q8_0 rely on it too).
// The pair sums of m steps (4 columns each) are added as int16 before VPMADDWD
// when m times the pair bound stays within int16: |w| * m <= 64 (S8_ACT_U8) or
// w * m <= 128 (S8_W_U8), m <= 8 (Q4_K: 8); S8_SIGN has m = 1.

#define LP_G2_R 4  // AVX2: weight rows per register tile (divides LP_G_RT)
enum { S8_ACT_U8, S8_W_U8, S8_SIGN };

#if LP_X86
LP_AVX2_BEGIN
static inline __attribute__((always_inline)) void tile_avx2(const gemm_ctx *c, const wpanel *wp, int r0, int nr,
                                                            int64_t g, const int mode, const int m,
                                                            const int unit, const int has_min, const int min_unit,
                                                            const int sgn) {
    const int64_t cols = c->cols, units = c->units, min_units = c->min_units;
    const int mins_per_unit = unit / min_unit;
    // a unit is blocks_per_unit blocks of 32 columns (unit >= 32) or a part of one block
    const int blocks_per_unit = unit > 32 ? unit / 32 : 1, units_per_blk = unit < 32 ? 32 / unit : 1;
    const int k_per_blk = unit < 32 ? unit / 4 : 8;  // steps of 4 columns of a unit in each of its blocks
    const act_block *a = c->act + g * c->nblk;
    const int8_t *wq = wp->q + (int64_t)r0 * cols;  // row r at wq + r * cols
    const float *ws = wp->scale + (int64_t)r0 * units, *wm = wp->min + (int64_t)r0 * min_units;
    const int32_t *wc = wp->corr + (int64_t)r0 * units;
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8((char)0x80);
    __m256 acc[LP_G2_R][2];
    for (int r = 0; r < LP_G2_R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t ub = 0; ub < c->nblk; ub += blocks_per_unit)
    for (int h = 0; h < units_per_blk; h++) {
        const int64_t u = ub / blocks_per_unit * units_per_blk + h;
        __m256i is[LP_G2_R][2];
        for (int r = 0; r < LP_G2_R; r++)
            is[r][0] = is[r][1] = mode == S8_ACT_U8 ? _mm256_set1_epi32(wc[r * units + u]) : _mm256_setzero_si256();
        for (int64_t b = ub; b < ub + blocks_per_unit; b++)
        for (int k0 = h * k_per_blk; k0 < (h + 1) * k_per_blk; k0 += m) {  // columns 32b + 4k ..
            __m256i s16[LP_G2_R][2];
            for (int k = k0; k < k0 + m; k++) {
                __m256i av[2];
                for (int v = 0; v < 2; v++) {
                    av[v] = _mm256_load_si256((const __m256i *)a[b].q[k][8 * v]);
                    if (mode != S8_ACT_U8 && !sgn) av[v] = _mm256_xor_si256(av[v], flip);  // back to signed
                }
                for (int r = 0; r < LP_G2_R; r++) {
                    int32_t w4;
                    memcpy(&w4, wq + r * cols + 32 * b + 4 * k, 4);
                    const __m256i wv = _mm256_set1_epi32(w4);
                    for (int v = 0; v < 2; v++) {
                        const __m256i p = mode == S8_ACT_U8 ? _mm256_maddubs_epi16(av[v], wv)
                                          : mode == S8_W_U8 ? _mm256_maddubs_epi16(wv, av[v])
                                          : _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(av[v], wv));
                        s16[r][v] = k == k0 ? p : _mm256_add_epi16(s16[r][v], p);
                        __asm__("" : "+x"(s16[r][v]));  // a chain: re-associated, the sums spill
                    }
                }
            }
            for (int r = 0; r < LP_G2_R; r++)
                for (int v = 0; v < 2; v++) is[r][v] = _mm256_add_epi32(is[r][v], _mm256_madd_epi16(s16[r][v], ones));
        }
        const act_block *a0 = &a[ub];  // the activation scale of the unit's (first) block (Q8_K: one per 256)
        const __m256 dv[2] = { _mm256_load_ps(a0->d), _mm256_load_ps(a0->d + 8) };
        for (int r = 0; r < LP_G2_R; r++) {
            const __m256 sv = _mm256_set1_ps(ws[r * units + u]);
            for (int v = 0; v < 2; v++)
                acc[r][v] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(is[r][v]), dv[v]), sv, acc[r][v]);
        }
        if (has_min)
            for (int64_t mu = u * mins_per_unit; mu < (u + 1) * mins_per_unit; mu++) {
                const float *am = a[mu * min_unit / 32].m[mu * min_unit % 32 / 16];
                const __m256 mv[2] = { _mm256_load_ps(am), _mm256_load_ps(am + 8) };
                for (int r = 0; r < LP_G2_R; r++) {
                    const __m256 mw = _mm256_set1_ps(wm[r * min_units + mu]);
                    for (int v = 0; v < 2; v++) acc[r][v] = _mm256_fmadd_ps(mv[v], mw, acc[r][v]);
                }
            }
    }
    // y[act row][weight row], rows r0 .. r0 + nr - 1 of the chunk
    float lanes[LP_G2_R][LP_G_LANES];
    for (int r = 0; r < LP_G2_R; r++) {
        _mm256_storeu_ps(lanes[r], acc[r][0]);
        _mm256_storeu_ps(lanes[r] + 8, acc[r][1]);
    }
    for (int l = 0; l < LP_G_LANES; l++) {
        const int64_t arow = g * LP_G_LANES + l;
        if (arow >= c->n) break;
        float *yr = c->y + arow * c->rows + r0;
        for (int r = 0; r < nr; r++) yr[r] = lanes[r][l];
    }
}

// The AVX2 tile, written apart for the registers, for S8_W_U8 on a signed panel
// (panel_signed) and S8_ACT_U8 on an unsigned one, units of 16 or 32 columns (mins, if
// any, per unit): the same integers and float steps as tile_avx2. A unit's int16 sums
// stay in registers over its steps (fully unrolled); the float sums (touched once a
// unit) and, when m steps are fewer than a unit's, the int32 sums of its earlier steps
// live in memory. tile_avx2's general loops kept the float sums in registers and
// spilled the int16 ones.
static inline __attribute__((always_inline)) void tile_avx2_unit(const gemm_ctx *c, const wpanel *wp, int r0, int nr,
                                                                 int64_t g, const int mode, const int m,
                                                                 const int unit, const int has_min) {
    const int64_t cols = c->cols, units = c->units;
    const int steps = unit / 4, per_blk = 32 / unit;  // steps of 4 columns a unit; units a block
    const act_block *a = c->act + g * c->nblk;
    const int8_t *wq = wp->q + (int64_t)r0 * cols;  // row r at wq + r * cols
    const float *ws = wp->scale + (int64_t)r0 * units, *wm = wp->min + (int64_t)r0 * units;
    const int32_t *wc = wp->corr + (int64_t)r0 * units;
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
            const __m256i a0 = _mm256_load_si256((const __m256i *)ab->q[k0 + k][0]);
            const __m256i a1 = _mm256_load_si256((const __m256i *)ab->q[k0 + k][8]);
            for (int r = 0; r < LP_G2_R; r++) {
                int32_t w4;
                memcpy(&w4, w + r * cols + 4 * k, 4);
                const __m256i wv = _mm256_set1_epi32(w4);
                const __m256i p0 = mode == S8_W_U8 ? _mm256_maddubs_epi16(wv, a0) : _mm256_maddubs_epi16(a0, wv);
                const __m256i p1 = mode == S8_W_U8 ? _mm256_maddubs_epi16(wv, a1) : _mm256_maddubs_epi16(a1, wv);
                s16[r][0] = k % m ? _mm256_add_epi16(s16[r][0], p0) : p0;
                s16[r][1] = k % m ? _mm256_add_epi16(s16[r][1], p1) : p1;
                __asm__("" : "+x"(s16[r][0]), "+x"(s16[r][1]));  // in this order: no spills
            }
            if (k < steps - 1 && k % m == m - 1)  // a group of m steps ends before the unit does
                for (int r = 0; r < LP_G2_R; r++)
                    for (int v = 0; v < 2; v++) {
                        __m256i *ip = (__m256i *)(isp + 16 * r + 8 * v);
                        const __m256i t = _mm256_madd_epi16(s16[r][v], ones);
                        _mm256_store_si256(ip, k < m ? t : _mm256_add_epi32(_mm256_load_si256(ip), t));
                    }
        }
        const __m256 dv[2] = { _mm256_load_ps(ab->d), _mm256_load_ps(ab->d + 8) };
        for (int r = 0; r < LP_G2_R; r++) {
            const __m256 sv = _mm256_set1_ps(ws[r * units + u]);
            const __m256i cv = _mm256_set1_epi32(mode == S8_ACT_U8 ? wc[r * units + u] : 0);
            for (int v = 0; v < 2; v++) {
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
                for (int v = 0; v < 2; v++) {
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

// The tile for every (mode, m, unit, min unit) combination of the types that avx2_mode
// can pick, each compiled with constants.
static void tile_any_avx2(const gemm_ctx *c, const wpanel *wp, int r0, int nr, int64_t g, int mode, int m) {
    const int unit = c->t->s8_unit, has_min = c->t->s8_min, min_unit = c->t->s8_min_unit;
    if (panel_signed(c->t, c->isa)) {  // unit 32 with mins, W_U8 or S8_SIGN (avx2_mode)
        if (mode == S8_SIGN) return tile_avx2(c, wp, r0, nr, g, S8_SIGN, 1, 32, 1, 32, 1);
        if (m == 8) return tile_avx2_unit(c, wp, r0, nr, g, S8_W_U8, 8, 32, 1);
        if (m == 4) return tile_avx2_unit(c, wp, r0, nr, g, S8_W_U8, 4, 32, 1);
        return tile_avx2_unit(c, wp, r0, nr, g, S8_W_U8, 2, 32, 1);
    }
    if (mode == S8_ACT_U8 && !has_min && unit == 16) {  // Q6_K
        if (m == 4) return tile_avx2_unit(c, wp, r0, nr, g, S8_ACT_U8, 4, 16, 0);
        if (m == 2) return tile_avx2_unit(c, wp, r0, nr, g, S8_ACT_U8, 2, 16, 0);
    }
    if (mode == S8_ACT_U8 && !has_min && unit == 32) {  // Q4_0, Q5_0
        if (m == 8) return tile_avx2_unit(c, wp, r0, nr, g, S8_ACT_U8, 8, 32, 0);
        if (m == 4) return tile_avx2_unit(c, wp, r0, nr, g, S8_ACT_U8, 4, 32, 0);
        if (m == 2) return tile_avx2_unit(c, wp, r0, nr, g, S8_ACT_U8, 2, 32, 0);
    }
#define LP_TILE_CASE(MODE, M, U, MIN, MU)                                                   \
    if (mode == MODE && m == M && unit == U && has_min == MIN && (!MIN || min_unit == MU)) \
        return tile_avx2(c, wp, r0, nr, g, MODE, M, U, MIN, MU, 0);
#define LP_TILE_U8(MODE, M) LP_TILE_CASE(MODE, M, 32, 0, 32) LP_TILE_CASE(MODE, M, 32, 1, 32) \
    LP_TILE_CASE(MODE, M, 256, 0, 256) LP_TILE_CASE(MODE, M, 256, 1, 16)
#define LP_TILE_U(MODE, M) LP_TILE_U8(MODE, M) LP_TILE_CASE(MODE, M, 16, 0, 16)
    LP_TILE_U(S8_ACT_U8, 2) LP_TILE_U(S8_ACT_U8, 4) LP_TILE_U8(S8_ACT_U8, 8) LP_TILE_U(S8_W_U8, 2)
    LP_TILE_U(S8_W_U8, 4) LP_TILE_U8(S8_W_U8, 8) LP_TILE_U(S8_SIGN, 1)
#undef LP_TILE_U
#undef LP_TILE_U8
#undef LP_TILE_CASE
}
LP_AVX2_END
#endif

// How the AVX2 tile multiplies a chunk whose quants lie in [lo, hi], and how many
// steps of int16 sums it adds (see the tile); unit / 4 steps make a unit.
// A signed panel (panel_signed) has no S8_ACT_U8.
static void avx2_mode(int lo, int hi, int unit, int sgn, int *mode, int *m) {
    const int mag = -lo > hi ? -lo : hi;
    const int limit = lo >= 0 ? (hi ? 128 / hi : 8) : sgn ? 0 : 64 / mag;  // largest m the int16 sums allow
    *mode = lo >= 0 ? S8_W_U8 : S8_ACT_U8;
    *m = unit / 4 < 8 ? unit / 4 : 8;
    while (*m > limit) *m /= 2;
    if (*m < 2) *mode = S8_SIGN, *m = 1;
}

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

// corr (cols / unit) = -128 * the sum of each unit's quants in row q (cols), and the row's
// range folded into [*lo, *hi]; 32 quants a step.
static void unit_sums_avx2(const int8_t *q, int64_t cols, int unit, int32_t *corr, int *lo, int *hi) {
    __m256i vlo = _mm256_set1_epi8((char)*lo), vhi = _mm256_set1_epi8((char)*hi);
    int64_t s[4];
    if (unit == 16) {  // two units a step
        for (int64_t b = 0; b < cols; b += 32, corr += 2) {
            sums_of_32(q + b, &vlo, &vhi, s);
            corr[0] = -128 * (int32_t)(s[0] + s[1] - 2048);
            corr[1] = -128 * (int32_t)(s[2] + s[3] - 2048);
        }
    } else {  // unit / 32 steps a unit
        for (int64_t b = 0; b < cols; corr++) {
            int64_t sum = 0;
            for (int k = 0; k < unit; k += 32, b += 32) {
                sums_of_32(q + b, &vlo, &vhi, s);
                sum += s[0] + s[1] + s[2] + s[3] - 4096;
            }
            *corr = -128 * (int32_t)sum;
        }
    }
    int8_t l[32], h[32];
    _mm256_storeu_si256((__m256i *)l, vlo);
    _mm256_storeu_si256((__m256i *)h, vhi);
    for (int i = 0; i < 32; i++) {
        *lo = l[i] < *lo ? l[i] : *lo;
        *hi = h[i] > *hi ? h[i] : *hi;
    }
}
LP_AVX2_END
#endif

// ---------------------------------------------------------------------------

#if LP_X86
// One chunk: weight rows [LP_G_RT * chunk, ...) against every activation row.
static void gemm_chunk(void *vctx, int chunk, int ith) {
    const gemm_ctx *c = vctx;
    const int64_t cols = c->cols, units = c->units, min_units = c->min_units;
    const int64_t first = (int64_t)chunk * LP_G_RT;
    const int nr = (int)(c->rows - first < LP_G_RT ? c->rows - first : LP_G_RT);
    uint8_t *base = c->wpanels + (int64_t)ith * c->wpanel_bytes;
    int8_t *q = (int8_t *)base;
    float *scale = (float *)(base + align_up(LP_G_RT * cols));
    int32_t *corr = (int32_t *)((uint8_t *)scale + align_up(LP_G_RT * units * 4));
    float *min = (float *)((uint8_t *)corr + align_up(LP_G_RT * units * 4));
    const int unit = c->t->s8_unit;
    const lp_to_s8_fn to_s8 = c->t->to_s8[c->isa] ? c->t->to_s8[c->isa] : c->t->to_s8[LP_ISA_REF];
    int lo = 0, hi = 0;  // range of the decoded quants: how the AVX2 tile multiplies
    const int sgn = panel_signed(c->t, c->isa);
    for (int r = 0; r < LP_G_RT; r++) {
        int8_t *qr = q + r * cols;
        float *sr = scale + r * units, *mr = min + r * min_units;
        if (r < nr) {
            if (first + r + 2 < c->rows) {  // the row after next into L1 (decoding waited on memory)
                const uint8_t *ahead = c->w + (first + r + 2) * c->w_row_bytes;
                for (int64_t o = 0; o < c->w_row_bytes; o += 64) _mm_prefetch((const char *)ahead + o, _MM_HINT_T0);
            }
            to_s8(c->w + (first + r) * c->w_row_bytes, qr, sr, mr, cols);
            if (!c->t->s8_min) memset(mr, 0, sizeof(float) * (size_t)min_units);
        } else {  // rows past the matrix: zero weights
            memset(qr, 0, (size_t)cols);
            memset(sr, 0, sizeof(float) * (size_t)units);
            memset(mr, 0, sizeof(float) * (size_t)min_units);
        }
        if (!sgn) unit_sums_avx2(qr, cols, unit, corr + r * units, &lo, &hi);
    }
    if (sgn) hi = quant_bound(c->t);  // no corrections; the range is the type's
    const wpanel wp = { q, scale, corr, min };
    gemm_ctx cc = *c;  // y offset to this chunk's rows
    cc.y = c->y + first;
    if (c->isa == LP_ISA_AVX2) {
        int mode, m;
        avx2_mode(lo, hi, unit, sgn, &mode, &m);
        for (int64_t g = 0; g < c->groups; g++)
            for (int r0 = 0; r0 < nr; r0 += LP_G2_R)
                tile_any_avx2(&cc, &wp, r0, nr - r0 < LP_G2_R ? nr - r0 : LP_G2_R, g, mode, m);
        return;
    }
    for (int64_t g = 0; g < c->groups; g += LP_G_NJ) {
        const int nj = c->groups - g >= LP_G_NJ ? LP_G_NJ : (int)(c->groups - g);
        for (int r0 = 0; r0 < nr; r0 += LP_G_R) {
            if (nr - r0 >= LP_G_R) {
                tile_any(&cc, &wp, r0, g, nj);
            } else {  // the matrix's last rows: into a spare y, then copy
                float tmp[LP_G_NJ * LP_G_LANES * LP_G_R];
                gemm_ctx tc = cc;
                tc.y = tmp - r0;
                tc.rows = LP_G_R;
                tc.n = cc.n - g * LP_G_LANES < LP_G_NJ * LP_G_LANES ? cc.n - g * LP_G_LANES : LP_G_NJ * LP_G_LANES;
                tc.act = cc.act + g * c->nblk;
                tile_any(&tc, &wp, r0, 0, nj);
                for (int64_t l = 0; l < tc.n; l++)
                    for (int r = r0; r < nr; r++) cc.y[(g * LP_G_LANES + l) * cc.rows + r] = tmp[l * LP_G_R + r - r0];
            }
        }
    }
}
#endif

int lp_gemm_available(const lp_type_traits *t, int isa, int64_t cols) {
    if (lp_gemm_work_size(t, cols, LP_GEMM_MIN, 1) <= 0) return 0;
    if (isa == LP_ISA_AVX512 || isa == LP_ISA_I8MM) return 1;
    // AVX2: Q3_K keeps its row dots, which are as fast: its int8 weights reach -128,
    // which takes the tile's slowest way of multiplying (S8_SIGN).
    return isa == LP_ISA_AVX2 && t != lp_traits(LP_Q3_K);
}

int lp_gemm_use(const lp_type_traits *t, int isa, int64_t cols, int64_t n) {
    return n >= LP_GEMM_MIN && lp_gemm_available(t, isa, cols);
}

void lp_gemm(const lp_type_traits *t, int isa, const uint8_t *w, int64_t rows, int64_t cols, const uint8_t *xq,
             int64_t xq_row_bytes, int64_t n, float *y, uint8_t *work, int n_threads) {
    gemm_ctx c = {
        .t = t, .w = w, .rows = rows, .cols = cols, .n = n,
        .w_row_bytes = cols / t->blck_size * t->type_size,
        .units = cols / t->s8_unit, .min_units = cols / t->s8_min_unit, .nblk = cols / 32,
        .groups = (n + LP_G_LANES - 1) / LP_G_LANES,
        .xq = xq, .xq_row_bytes = xq_row_bytes, .y = y,
        .wpanel_bytes = wpanel_bytes(t, cols), .isa = isa,
    };
    uint8_t *p = (uint8_t *)(((uintptr_t)work + LP_ALIGN - 1) / LP_ALIGN * LP_ALIGN);
    c.act = (act_block *)p;
    c.wpanels = p + c.groups * c.nblk * (int64_t)sizeof(act_block);
    lp_parallel_chunks(build_act_group, &c, (int)c.groups, n_threads);
    const int chunks = (int)((rows + LP_G_RT - 1) / LP_G_RT);
#if LP_X86
    lp_parallel_chunks(gemm_chunk, &c, chunks, n_threads);
#elif LP_ARM
    if (isa == LP_ISA_I8MM) lp_parallel_chunks(lp_gemm_i8mm_chunk, &c, chunks, n_threads);
#endif
}
