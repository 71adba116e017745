// gemm.c — the batched matrix product of prompt processing, on AVX-512 VNNI and AVX2
// (gemm_avx2.c has the AVX2 tiles, gemm_amx.c the AMX tiles; gemm_i8mm.c aarch64's product,
// on these panels).
//
// y (n, rows) = x (n, cols) @ W^T when n is large: every weight is used n times,
// so the product is compute-bound and worth re-laying out both sides once:
//
// - Activations: the rows quantized by lp_matmul (Q8_0 / Q8_1 / Q8_K) are copied
//   into a panel of 16 rows at a time, one 32-bit lane per row: for each block of 32
//   columns, 8 vectors holding columns 4k..4k+3 of the 16 rows (quants + 128, as
//   unsigned bytes; or as they are, signed, for the types whose decoded quants are
//   never negative, and AVX-512 Q6_K, whose quants are offset: panel_signed), the 16 rows'
//   scales, and their min-term factors (or, with an offset, the bias of each 16 columns).
// - Weights: a thread decodes a chunk of rows at a time (chunk_rows) with the type's to_s8 into
//   int8 quants, a float scale per unit (32 columns for the legacy types, the
//   super-block of 256 for the K-quants), the K-quants' group scales as integer
//   sub-scales per 16 or 32 columns, and a float min per 16 or 32 columns.
//   A K-quant's groups are scaled in integers and summed over the super-block, as
//   vec_dot does, so the float steps come once a super-block, not once a group.
//
// AVX-512: one VPDPBUSD multiplies 4 columns of one weight row (broadcast) with the
// same 4 columns of 16 activation rows (one panel vector) and adds into 16 int32
// lanes; a register tile is 4 weight rows x up to 3 panels. The +128 that makes the
// activations unsigned adds 128 * sum(q) to each sum; starting the sum at
// -128 * sum(q) takes it back out exactly. On a signed panel the weight (>= 0) is the
// unsigned operand instead, and there is nothing to take out.
// AVX2: the same panels, each 16-row vector as two halves of 8; VPMADDUBSW and
// VPMADDWD in place of VPDPBUSD, fed one of three ways chosen from the decoded
// weights' range so that no int16 step saturates (see gemm_avx2.c).
// The sub-scales: AVX-512 multiplies a sub-block's int32 sums by them (VPMULLD) or, where
// the products fit a byte (Q2_K, Q3_K), multiplies them into the quants first; AVX2 takes
// them in VPMADDWD in place of ones. The float steps are the same on every ISA (gemm.h).
//
// The integer products are vec_dot's own (same quantized activations, same int8
// weights, same integer group scales); only the order of the float additions differs.
// The two ISAs (and aarch64's I8MM) give the same bits.
#include "gemm_avx512.h"

// Scratch of one thread: LP_G_RT_X86 decoded weight rows (quants, scales, corrections, mins,
// sub-scales as decoded and as the tile takes them).
static int64_t wpanel_bytes(const lp_type_traits *t, int64_t cols) {
    const int64_t units = cols / t->s8_unit, subs = t->s8_sub ? cols / t->s8_sub : 0;
    const int64_t rt = lp_gemm_amx_on(LP_ISA_AVX512) ? LP_G_RT_AMX : LP_G_RT_X86;
    const int64_t x86 = align_up(rt * cols) + align_up(rt * units * 4) + align_up(rt * (subs > units ? subs : units) * 4) +
                        align_up(rt * cols / t->s8_min_unit * 4) + align_up(rt * subs * 2) + align_up(rt * subs * 4) +
                        (lp_gemm_amx_on(LP_ISA_AVX512) ? 3 * rt * cols + 2 * align_up(rt * units * 4) + align_up(3 * subs * 2)
                                               : 0);  // AMX: amx_chunk
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
    const int64_t amx_q = lp_gemm_amx_on(LP_ISA_AVX512) ? groups * (cols / 32) * 512 : 0;  // AMX: its panel quants
    return 2 * LP_ALIGN + groups * (cols / 32) * (int64_t)sizeof(act_block) + amx_q + n_threads * wpanel_bytes(t, cols);
}

// ---------------------------------------------------------------------------
// The activation panel

// Whether the x86 panel holds the activations as they are (signed) rather than + 128: for
// the types whose decoded quants are never negative (unsigned quants and a min: Q4_1, Q5_1,
// Q2_K, Q4_K, Q5_K), the weight can be the unsigned operand of VPDPBUSD / VPMADDUBSW,
// which needs no +128 correction (AVX-512) and no flip back to signed (AVX2).
// And AVX-512 Q6_K: its quants + 32 (0..63) are the unsigned operand against the signed
// activations, and each 16 columns' sum starts at -32 * the activations' sum (the panel's
// bias, from Q8_K's block sums): the same integer as the quants times the activations, without
// the +128 correction pass over the decoded rows. panel_offset: that 32 (0: no offset).
static int panel_offset(const lp_type_traits *t, int isa) {
    return isa == LP_ISA_AVX512 && t == lp_traits(LP_Q6_K) && !lp_gemm_amx_on(isa) ? 32 : 0;
}

// And AVX2 Q8_0 without AVX-VNNI: its quants reach -128..127, so its tile always takes |w| x
// the activation with w's sign (gemm_avx2.c, S8_SIGN), which wants the activations signed.
// And AMX: every type (its tile product takes signed activations, gemm.c's AMX part).
static int panel_signed(const lp_type_traits *t, int isa) {
    const int avx2_q8 = isa == LP_ISA_AVX2 && t == lp_traits(LP_Q8_0) && !lp_gemm_avx2_vnni();
    return ((isa == LP_ISA_AVX512 || isa == LP_ISA_AVX2) && t->s8_min) || panel_offset(t, isa) || avx2_q8 ||
           lp_gemm_amx_on(isa);
}

// Plain AVX2 (no AVX-VNNI), the K-quants with sub-blocks of 16 and quants within +-8 (Q2_K, Q3_K:
// 8 steps of int16 sums stay exact, gemm_avx2.c's avx2_mode): both panels pair the two
// sub-blocks of each 32 columns. Step k of a block holds columns
// 2k, 2k + 1 of the first sub-block and 2k, 2k + 1 of the second (not columns 4k .. 4k + 3), so a
// VPMADDUBSW's even int16 lanes are the first sub-block's pair sums and its odd lanes the
// second's, and one VPMADDWD against the two sub-scales (an int16 pair) widens and scales
// both: 8 steps of int16 sums a VPMADDWD, not 4, and the tiles of Q4_K (gemm_avx2.c,
// tile_sub_frame). The same integers, so the same bits. One thread, 512 rows: Q2_K 4096 columns
// 65-71 -> 88-90 GMAC/s, Q3_K 14336 columns 64-68 -> 82-90.
int lp_gemm_avx2_pairs(const lp_type_traits *t, int isa) {
    const quant_bounds *b = lp_gemm_type_bounds(t);
    return isa == LP_ISA_AVX2 && t->s8_sub == 16 && b && b->lo >= -8 && b->hi <= 8 && !lp_gemm_avx2_vnni();
}

// Which panels a product reads: products on the same quantized rows whose kinds are equal
// can share them (lp_gemm's panels_ready: q, k, v of one input; gate and up).
int lp_gemm_panel_kind(const lp_type_traits *t, int isa) {
    return t->vec_dot_type | isa << 8 | panel_signed(t, isa) << 12 | panel_offset(t, isa) << 13 | lp_gemm_amx_on(isa) << 19 |
           t->s8_min_unit << 20 | lp_gemm_avx2_pairs(t, isa) << 27;
}

static void build_act_group(void *vctx, int g, int ith) {
    const gemm_ctx *c = vctx;
    (void)ith;
    const int act_type = c->t->vec_dot_type, min_unit = c->t->s8_min_unit, off = panel_offset(c->t, c->isa);
    const uint32_t flip = panel_signed(c->t, c->isa) ? 0 : 0x80808080u;
    act_block *out = c->act + (int64_t)g * c->nblk;
    memset(out, 0, sizeof(act_block) * (size_t)c->nblk);  // rows past n: zero
    if (c->amx) memset(c->act_q + g * c->nblk * 512, 0, (size_t)c->nblk * 512);
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
                if (off) {
                    ab->bias[0][j] = -off * k->bsums[2 * h];
                    ab->bias[1][j] = -off * k->bsums[2 * h + 1];
                } else if (min_unit == 32) {
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
            uint8_t *q = c->amx ? c->act_q + (g * c->nblk + b) * 512 : &ab->q[0][0][0];  // (AMX: its own panel)
            for (int k = 0; k < 8; k++) {
                uint32_t v;
                if (c->pairs) {  // columns 2k, 2k + 1 of each sub-block (lp_gemm_avx2_pairs)
                    memcpy(&v, qs + 2 * k, 2);
                    memcpy((uint8_t *)&v + 2, qs + 16 + 2 * k, 2);
                } else {
                    memcpy(&v, qs + 4 * k, 4);
                }
                v ^= flip;  // + 128 in each byte (an unsigned panel)
                memcpy(q + 64 * k + 4 * j, &v, 4);
            }
        }
    }
}

// The range of a type's decoded quants [lo, hi] where the format fixes it, and of its
// sub-scales [slo, shi]: the types with a signed panel (never negative: Q2_K 2-bit, Q4_1
// and Q4_K 4-bit, Q5_1 and Q5_K 5-bit), which skip the per-row range and correction sums,
// and the sub-scaled Q3_K and Q6_K, whose tiles are compiled for their bounds; and Q8_0,
// whose range AVX2 without AVX-VNNI takes whole on its signed panel (panel_signed). NULL for
// the other types (their range is measured).
const quant_bounds *lp_gemm_type_bounds(const lp_type_traits *t) {
    static const quant_bounds bounds[] = {
        { LP_Q2_K, 0, 3, 0, 15 }, { LP_Q4_1, 0, 15, 1, 1 }, { LP_Q4_K, 0, 15, 0, 63 }, { LP_Q5_1, 0, 31, 1, 1 },
        { LP_Q5_K, 0, 31, 0, 63 }, { LP_Q3_K, -4, 3, -32, 31 }, { LP_Q6_K, -32, 31, -128, 127 },
        { LP_Q8_0, -128, 127, 1, 1 },
    };
    for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++)
        if (t == lp_traits(bounds[i].type)) return &bounds[i];
    return NULL;
}

// How AVX-512 applies a type's sub-scales (tile_avx512_sub; SUB_NONE on other ISAs and for
// the types without them), the columns of its partial sums, and (SUB_FOLD) whether the
// folded quants are negated. From the bounds: folded when every quant times sub-scale fits
// the weight's byte (unsigned on a signed panel, else int8, negated if that is what fits),
// else VPMULLD. AVX2 on a CPU with AVX-VNNI takes both ways alike (gemm_avx2.c).
static int sub_way(const lp_type_traits *t, int isa, int *part, int *neg) {
    const quant_bounds *b = lp_gemm_type_bounds(t);
    *part = t->s8_sub, *neg = 0;
    const int vnni = isa == LP_ISA_AVX2 && lp_gemm_avx2_vnni();
    if ((isa != LP_ISA_AVX512 && !vnni) || !t->s8_sub || !b) return SUB_NONE;
    const int c[4] = { b->lo * b->slo, b->lo * b->shi, b->hi * b->slo, b->hi * b->shi };
    int pmin = c[0], pmax = c[0];
    for (int i = 1; i < 4; i++) pmin = c[i] < pmin ? c[i] : pmin, pmax = c[i] > pmax ? c[i] : pmax;
    const int sgn = panel_signed(t, isa) && !lp_gemm_amx_on(isa);  // (AMX: the weights are signed bytes)
    if (sgn ? pmin >= 0 && pmax <= 255 : pmin >= -128 && pmax <= 127) return *part = 32, SUB_FOLD;
    if (!sgn && -pmax >= -128 && -pmin <= 127) return *part = 32, *neg = 1, SUB_FOLD;
    return lp_gemm_amx_on(isa) ? SUB_DIGITS : SUB_MULLD;
}

// ---------------------------------------------------------------------------
// The register tile: LP_G_R weight rows x nj * 16 activation rows, all columns.

#if LP_X86
LP_AVX512_BEGIN
// One step of 4 columns (4k.. of block b) of weight rows r0.. x nj panels into is: on a
// signed panel the weight (>= 0) is the unsigned operand.
static inline __attribute__((always_inline)) void dp_step(const act_block *const *a, int64_t b, int k,
                                                          const int8_t *wq, int64_t cols, const int nj, const int sgn,
                                                          __m512i is[LP_G_R][LP_G_NJ]) {
    __m512i av[LP_G_NJ];
    for (int j = 0; j < nj; j++) av[j] = _mm512_load_si512((const void *)a[j][b].q[k]);
    for (int r = 0; r < LP_G_R; r++) {
        int32_t w4;
        memcpy(&w4, wq + r * cols + 32 * b + 4 * k, 4);
        const __m512i wv = _mm512_set1_epi32(w4);
        for (int j = 0; j < nj; j++)
            is[r][j] = sgn ? _mm512_dpbusd_epi32(is[r][j], wv, av[j]) : _mm512_dpbusd_epi32(is[r][j], av[j], wv);
    }
}

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
            const __m512i start = sgn ? _mm512_setzero_si512() : _mm512_set1_epi32(wp->corr[(r0 + r) * corr_stride(c) + u]);
            for (int j = 0; j < nj; j++) is[r][j] = start;
        }
        for (int64_t b = ub; b < ub + blocks_per_unit; b++)
            for (int k = h * k_per_blk; k < (h + 1) * k_per_blk; k++)  // columns 32b + 4k ..
                dp_step(a, b, k, wp->q + r0 * cols, cols, nj, sgn, is);
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

// The tile of the sub-scaled K-quants (s8_sub), two ways of applying the sub-scales
// (sub_way), both exact, so both give the same integer sums:
//   SUB_FOLD:  gemm_chunk multiplied them into the quants (Q2_K: 0..45; Q3_K: the
//              product negated, -128..124, with the scale negated); VPDPBUSD sums the
//              whole super-block, as for the types without sub-scales.
//   SUB_MULLD: a sub-block's VPDPBUSD sums start at zero, are multiplied by the
//              sub-scale (VPMULLD) and added. (VPDPWSSD with the sub-scale in the low
//              half of the lane would do both where a sub-block's sums fit int16; for
//              Q4_K they do over half sub-blocks, but two of them measured slower.)
// One float step a super-block; the float sums live in memory (touched once a
// super-block), the two sets of int32 sums and the panel vectors fill the registers.
// All the chunk's weight rows (nr, in fours; rows past nr are zero), a super-block at a time
// for each 4 of them: the super-block's activation panels (8 blocks of up to 3 panels, 17
// KiB) are read from L1 by all but the first 4 rows (whole rows at a time, they came
// from L2 every time).
static inline __attribute__((always_inline)) void tile_avx512_sub(const gemm_ctx *c, const wpanel *wp, int nr,
                                                                  int64_t g0, const int nj, const int sub,
                                                                  const int has_min, const int min_unit,
                                                                  const int sgn, const int way, const int part,
                                                                  const int bias) {
    const int64_t cols = c->cols, units = c->units, subs = c->subs, cs = corr_stride(c);
    const int steps = part / 4, per_blk = 32 / part, per_unit = QK_K / part;
    const int parts_per_sub = sub > part ? sub / part : 1;  // (SUB_FOLD: none, whole blocks a part)
    const act_block *a[LP_G_NJ];
    for (int j = 0; j < nj; j++) a[j] = c->act + (g0 + j) * c->nblk;
    float accbuf[LP_G_RT_X86][LP_G_NJ][LP_G_LANES] __attribute__((aligned(64)));
    float *acc0 = &accbuf[0][0][0];
    __asm__("" : "+r"(acc0));  // memory, not registers (the compiler cannot follow it)
    const int rows = (nr + LP_G_R - 1) / LP_G_R * LP_G_R;
    sub_min_terms(c, wp, a, 0, rows, nj, has_min, min_unit, acc0, LP_G_NJ);
    for (int64_t u = 0; u < units; u++)
    for (int r0 = 0; r0 < rows; r0 += LP_G_R) {
        float *acc = acc0 + r0 * LP_G_NJ * LP_G_LANES;
        __m512i is[LP_G_R][LP_G_NJ];
        for (int r = 0; r < LP_G_R; r++) {
            const __m512i start = sgn ? _mm512_setzero_si512() : _mm512_set1_epi32(wp->corr[(r0 + r) * cs + u]);
            for (int j = 0; j < nj; j++) is[r][j] = start;
        }
        for (int s = 0; s < per_unit; s++) {
            const int64_t pi = u * per_unit + s, b = pi / per_blk;  // the part in the row, its block
            const int k0 = (int)(pi % per_blk) * steps;
            __m512i t[LP_G_R][LP_G_NJ], t0[LP_G_NJ];  // the part's sums start at 0 or the panel's bias
            for (int j = 0; j < nj; j++)
                t0[j] = bias ? _mm512_load_si512((const void *)a[j][b].bias[pi % per_blk]) : _mm512_setzero_si512();
            for (int r = 0; r < LP_G_R; r++)
                for (int j = 0; j < nj; j++) t[r][j] = t0[j];
            for (int k = k0; k < k0 + steps; k++)  // columns 32b + 4k ..
                dp_step(a, b, k, wp->q + r0 * cols, cols, nj, sgn, way == SUB_FOLD ? is : t);
            if (way == SUB_FOLD) continue;
            for (int r = 0; r < LP_G_R; r++) {
                const __m512i sv = _mm512_set1_epi32(wp->sub[(r0 + r) * subs + pi / parts_per_sub]);
                for (int j = 0; j < nj; j++)
                    is[r][j] = _mm512_add_epi32(is[r][j], _mm512_mullo_epi32(t[r][j], sv));
            }
        }
        __m512 dv[LP_G_NJ];  // Q8_K: one activation scale a super-block
        for (int j = 0; j < nj; j++) dv[j] = _mm512_load_ps(a[j][u * (QK_K / 32)].d);
        for (int r = 0; r < LP_G_R; r++) {
            const __m512 sc = _mm512_set1_ps(wp->scale[(r0 + r) * units + u]);
            for (int j = 0; j < nj; j++) {
                float *ap = acc + (r * LP_G_NJ + j) * LP_G_LANES;
                const __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(is[r][j]), dv[j]);
                _mm512_store_ps(ap, _mm512_fmadd_ps(p, sc, _mm512_load_ps(ap)));
            }
        }
    }
    store_transposed(c, acc0, 0, nr, g0, nj, LP_G_NJ);
}

// The sub-scaled tile for each K-quant's layout and sub_way, each compiled with constants.
static void tile_any_sub(const gemm_ctx *c, const wpanel *wp, int nr, int64_t g0, int nj) {
    const int has_min = c->t->s8_min, min_unit = c->t->s8_min_unit, sub = c->t->s8_sub;
    const int sgn = panel_signed(c->t, c->isa), way = c->sub_way, part = c->sub_part;
    const int bias = panel_offset(c->t, c->isa) != 0;
#define LP_TILE_CASE(NJ, SUB, M, MU, SGN, WAY, PART, BIAS)                                            \
    if (nj == NJ && sub == SUB && has_min == M && (!M || min_unit == MU) && sgn == SGN && way == WAY && \
        part == PART && bias == BIAS)                                                                  \
        return tile_avx512_sub(c, wp, nr, g0, NJ, SUB, M, MU, SGN, WAY, PART, BIAS);
#define LP_TILE_NJ(NJ) LP_TILE_CASE(NJ, 16, 1, 16, 1, SUB_FOLD, 32, 0) /* Q2_K */               \
    LP_TILE_CASE(NJ, 16, 0, 0, 0, SUB_FOLD, 32, 0) /* Q3_K */                                   \
    LP_TILE_CASE(NJ, 32, 1, 32, 1, SUB_MULLD, 32, 0) /* Q4_K, Q5_K */                           \
    LP_TILE_CASE(NJ, 16, 0, 0, 1, SUB_MULLD, 16, 1) /* Q6_K */
    LP_TILE_NJ(3) LP_TILE_NJ(2) LP_TILE_NJ(1)
#undef LP_TILE_NJ
#undef LP_TILE_CASE
}

// The tile for every (nj, unit, min unit) combination of the types without sub-scales,
// each compiled with constants.
static void tile_any(const gemm_ctx *c, const wpanel *wp, int r0, int64_t g0, int nj) {
    if (panel_signed(c->t, c->isa)) {  // Q4_1, Q5_1
        if (nj == 3) return tile_avx512(c, wp, r0, g0, 3, 32, 1, 32, 1);
        if (nj == 2) return tile_avx512(c, wp, r0, g0, 2, 32, 1, 32, 1);
        return tile_avx512(c, wp, r0, g0, 1, 32, 1, 32, 1);
    }
    // Q4_0, Q5_0, Q8_0
    if (nj == 3) return tile_avx512(c, wp, r0, g0, 3, 32, 0, 32, 0);
    if (nj == 2) return tile_avx512(c, wp, r0, g0, 2, 32, 0, 32, 0);
    tile_avx512(c, wp, r0, g0, 1, 32, 0, 32, 0);
}
LP_AVX512_END
#endif


// ---------------------------------------------------------------------------

#if LP_X86
// SUB_FOLD (AVX-512; AVX2 with AVX-VNNI): the sub-scales multiplied into row q's quants (negated, and the
// scales with them, where sub_way says so), before the corrections are summed.
static void fold_subs(const gemm_ctx *c, int8_t *q, const int16_t *sub, float *scale) {
    lp_gemm_fold_avx2(q, sub, c->subs, c->sub_neg);  // (the folded types' sub-blocks are 16 quants)
    if (c->sub_neg)
        for (int64_t u = 0; u < c->units; u++) scale[u] = -scale[u];
}

// Row r's decoded sub-scales as the ISA's tile takes them (subs of them): AVX2 as a pair
// of int16 for VPMADDWD (paired sub-blocks: subs / 2 pairs of the two, the first's low); for
// VPMULLD (AVX-512, AVX2 with AVX-VNNI) as int32. And the row's corrections (unsigned panel:
// corr holds -128 * each sub-block's quant sum) folded into one a unit: the sum of sub-scale
// times correction.
static void prepare_subs(const gemm_ctx *c, const int16_t *sub, int32_t *subv, int32_t *corr, int sgn) {
    if (c->pairs)
        for (int64_t i = 0; i < c->subs / 2; i++)
            subv[i] = (int32_t)((uint32_t)(uint16_t)sub[2 * i] | (uint32_t)(uint16_t)sub[2 * i + 1] << 16);
    else
        for (int64_t i = 0; i < c->subs; i++) {
            const uint32_t h = (uint16_t)sub[i];
            subv[i] = c->isa == LP_ISA_AVX2 && c->sub_way != SUB_MULLD ? (int32_t)(h | h << 16) : sub[i];
        }
    if (sgn) return;
    const int64_t per_unit = c->subs / c->units;
    for (int64_t u = 0; u < c->units; u++) {  // corr[u] is written after corr[u .. per_unit * u] were read
        int32_t sum = 0;
        for (int64_t i = u * per_unit; i < (u + 1) * per_unit; i++) sum += sub[i] * corr[i];
        corr[u] = sum;
    }
}

// One chunk: weight rows [rt * chunk, ...) against every activation row.
static void gemm_chunk(void *vctx, int chunk, int ith) {
    const gemm_ctx *c = vctx;
    const int64_t cols = c->cols, units = c->units, min_units = c->min_units, subs = c->subs, cs = corr_stride(c);
    const int rt = c->rt;
    const int64_t first = (int64_t)chunk * rt;
    const int nr = (int)(c->rows - first < rt ? c->rows - first : rt);
    uint8_t *base = c->wpanels + (int64_t)ith * c->wpanel_bytes;
    int8_t *q = (int8_t *)base;
    float *scale = (float *)(base + align_up(rt * cols));
    int32_t *corr = (int32_t *)((uint8_t *)scale + align_up(rt * units * 4));
    float *min = (float *)((uint8_t *)corr + align_up(rt * cs * 4));
    int16_t *sub = (int16_t *)((uint8_t *)min + align_up(rt * min_units * 4));
    int32_t *subv = (int32_t *)((uint8_t *)sub + align_up(rt * subs * 2));
    uint8_t *amx = (uint8_t *)subv + align_up(rt * subs * 4);  // AMX: its weights (amx_chunk)
    const int fold = c->sub_way == SUB_FOLD;
    const int sum_unit = subs && !fold ? c->t->s8_sub : c->t->s8_unit;  // the unit of the corrections as summed
    const lp_to_s8_fn to_s8 = c->t->to_s8[c->isa] ? c->t->to_s8[c->isa] : c->t->to_s8[LP_ISA_REF];
    int lo = 0, hi = 0;  // range of the decoded quants: how the AVX2 tile multiplies
    const int sgn = panel_signed(c->t, c->isa), off = panel_offset(c->t, c->isa);
    const int pad = c->amx ? 16 : LP_G_R;  // rows in fours (the tiles'; AMX: sixteens)
    for (int r = 0; r < (nr + pad - 1) / pad * pad; r++) {
        int8_t *qr = q + r * cols;
        float *sr = scale + r * units, *mr = min + r * min_units;
        int16_t *br = sub + r * subs;
        if (r < nr) {
            if (first + r + 2 < c->rows) {  // the row after next into L1 (decoding waited on memory)
                const uint8_t *ahead = c->w + (first + r + 2) * c->w_row_bytes;
                for (int64_t o = 0; o < c->w_row_bytes; o += 64) _mm_prefetch((const char *)ahead + o, _MM_HINT_T0);
            }
            if (off) {  // (AVX-512 Q6_K: its tile reads no mins)
                lp_q6_K_to_u6_avx512(c->w + (first + r) * c->w_row_bytes, qr, sr, br, cols);
            } else {
                to_s8(c->w + (first + r) * c->w_row_bytes, qr, sr, br, mr, cols);
                if (!c->t->s8_min) memset(mr, 0, sizeof(float) * (size_t)min_units);
            }
        } else {  // rows past the matrix: zero weights
            memset(qr, 0, (size_t)cols);
            memset(sr, 0, sizeof(float) * (size_t)units);
            memset(mr, 0, sizeof(float) * (size_t)min_units);
            memset(br, 0, sizeof(int16_t) * (size_t)subs);
        }
        if (fold && !c->amx) fold_subs(c, qr, br, sr);  // (AMX: amx_repack folds)
        if (!sgn) lp_gemm_unit_sums_avx2(qr, cols, sum_unit, corr + r * cs, &lo, &hi);
        if (subs && !fold && !c->amx) prepare_subs(c, br, subv + r * subs, corr + r * cs, sgn);
        if (c->pairs) lp_gemm_pairs_avx2(qr, cols);  // (after the sums of each sub-block)
    }
    const quant_bounds *tb = lp_gemm_type_bounds(c->t);
    if (tb) lo = tb->lo, hi = tb->hi;  // where the format fixes the range, the type's (the tiles are compiled for it)
    const wpanel wp = { q, scale, corr, min, subv };
    gemm_ctx cc = *c;  // y offset to this chunk's rows
    cc.y = c->y + first;
    if (c->isa == LP_ISA_AVX2) return lp_gemm_avx2_chunk(&cc, &wp, nr, lo, hi, sgn);
    if (c->amx) return lp_gemm_amx_chunk(&cc, &wp, sub, nr, amx);
    for (int64_t g = 0; g < c->groups; g += LP_G_NJ) {
        const int nj = c->groups - g >= LP_G_NJ ? LP_G_NJ : (int)(c->groups - g);
        if (subs) {  // all the chunk's rows at once
            tile_any_sub(&cc, &wp, nr, g, nj);
            continue;
        }
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

// Weight rows a chunk: on x86 the most (LP_G_RT_X86) that still leaves every thread 8
// chunks, for balance. Each chunk reads all the activation panels (2.8 MiB at 512 rows of
// 4096 columns): at 16 rows a chunk that stream, from L2 at every super-block's first 4
// weight rows, cost a tenth of the product (single-thread, AVX-512 Q4_K 4096 x 4096:
// 16 rows 650 GFLOP/s, 32 rows 675, 64 rows 696, 128 rows 713).
static int chunk_rows(int isa, int64_t rows, int n_threads) {
    if (isa == LP_ISA_I8MM) return LP_G_RT;
    int rt = lp_gemm_amx_on(isa) ? LP_G_RT_AMX : LP_G_RT_X86;
    while (rt > LP_G_RT && (rows + rt - 1) / rt < 8 * (int64_t)n_threads) rt /= 2;
    return rt;
}

int lp_gemm_available(const lp_type_traits *t, int isa, int64_t cols) {
    if (lp_gemm_work_size(t, cols, LP_GEMM_MIN, 1) <= 0) return 0;
    return isa == LP_ISA_AVX512 || isa == LP_ISA_I8MM || isa == LP_ISA_AVX2;
}

int lp_gemm_use(const lp_type_traits *t, int isa, int64_t cols, int64_t n) {
    return n >= LP_GEMM_MIN && lp_gemm_available(t, isa, cols);
}

void lp_gemm(const lp_type_traits *t, int isa, const uint8_t *w, int64_t rows, int64_t cols, const uint8_t *xq,
             int64_t xq_row_bytes, int64_t n, float *y, uint8_t *work, int n_threads, int panels_ready) {
    gemm_ctx c = {
        .t = t, .w = w, .rows = rows, .cols = cols, .n = n,
        .w_row_bytes = cols / t->blck_size * t->type_size,
        .units = cols / t->s8_unit, .min_units = cols / t->s8_min_unit, .nblk = cols / 32,
        .subs = t->s8_sub ? cols / t->s8_sub : 0,
        .groups = (n + LP_G_LANES - 1) / LP_G_LANES,
        .xq = xq, .xq_row_bytes = xq_row_bytes, .y = y,
        .wpanel_bytes = wpanel_bytes(t, cols), .isa = isa,
    };
    c.sub_way = sub_way(t, isa, &c.sub_part, &c.sub_neg);
    c.pairs = lp_gemm_avx2_pairs(t, isa);
    c.dig_n = 1;
#if LP_X86  // (every sub-scaled type's digits fit the tiles: 2 for Q4_K and Q5_K, 3 for Q6_K)
    if (c.sub_way == SUB_DIGITS) c.dig_n = lp_gemm_amx_digits(lp_gemm_type_bounds(t), &c.dig_base, &c.dig_usgn);
#endif
    c.amx = lp_gemm_amx_on(isa);
    uint8_t *p = (uint8_t *)(((uintptr_t)work + LP_ALIGN - 1) / LP_ALIGN * LP_ALIGN);
    c.act = (act_block *)p;
    c.wpanels = p + c.groups * c.nblk * (int64_t)sizeof(act_block);
    if (c.amx) {  // (aligned: act_block's size is a multiple of 64)
        c.act_q = c.wpanels;
        c.wpanels += c.groups * c.nblk * 512;
    }
    if (!panels_ready) lp_parallel_chunks(build_act_group, &c, (int)c.groups, n_threads);
    c.rt = chunk_rows(isa, rows, n_threads);
    const int chunks = (int)((rows + c.rt - 1) / c.rt);
#if LP_X86
    lp_parallel_chunks(gemm_chunk, &c, chunks, n_threads);
#elif LP_ARM
    if (isa == LP_ISA_I8MM) lp_parallel_chunks(lp_gemm_i8mm_chunk, &c, chunks, n_threads);
#endif
}
