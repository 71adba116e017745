// gemm.c — the batched matrix product of prompt processing, on AVX-512 VNNI and AVX2
// (gemm_avx2.c has the AVX2 tiles; gemm_i8mm.c aarch64's product, on these panels).
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
#include "gemm.h"

#define LP_G_R 4       // weight rows per register tile
#define LP_G_NJ 3      // AVX-512: activation panels (of 16 rows) per register tile, at most

// Whether the AVX-512 product takes the AMX tiles.
static int amx_on(int isa) {
#if LP_X86
    return isa == LP_ISA_AVX512 && lp_gemm_amx();
#else
    (void)isa;
    return 0;
#endif
}

// Scratch of one thread: LP_G_RT_X86 decoded weight rows (quants, scales, corrections, mins,
// sub-scales as decoded and as the tile takes them).
static int64_t wpanel_bytes(const lp_type_traits *t, int64_t cols) {
    const int64_t units = cols / t->s8_unit, subs = t->s8_sub ? cols / t->s8_sub : 0;
    const int64_t rt = amx_on(LP_ISA_AVX512) ? LP_G_RT_AMX : LP_G_RT_X86;
    const int64_t x86 = align_up(rt * cols) + align_up(rt * units * 4) + align_up(rt * (subs > units ? subs : units) * 4) +
                        align_up(rt * cols / t->s8_min_unit * 4) + align_up(rt * subs * 2) + align_up(rt * subs * 4) +
                        (amx_on(LP_ISA_AVX512) ? 3 * rt * cols + 2 * align_up(rt * units * 4) + align_up(3 * subs * 2)
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
    const int64_t amx_q = amx_on(LP_ISA_AVX512) ? groups * (cols / 32) * 512 : 0;  // AMX: its panel quants
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
    return isa == LP_ISA_AVX512 && t == lp_traits(LP_Q6_K) && !amx_on(isa) ? 32 : 0;
}

// And AVX2 Q8_0 without AVX-VNNI: its quants reach -128..127, so its tile always takes |w| x
// the activation with w's sign (gemm_avx2.c, S8_SIGN), which wants the activations signed.
// And AMX: every type (its tile product takes signed activations, gemm.c's AMX part).
static int panel_signed(const lp_type_traits *t, int isa) {
    const int avx2_q8 = isa == LP_ISA_AVX2 && t == lp_traits(LP_Q8_0) && !lp_gemm_avx2_vnni();
    return ((isa == LP_ISA_AVX512 || isa == LP_ISA_AVX2) && t->s8_min) || panel_offset(t, isa) || avx2_q8 ||
           amx_on(isa);
}

// Which panels a product reads: products on the same quantized rows whose kinds are equal
// can share them (lp_gemm's panels_ready: q, k, v of one input; gate and up).
int lp_gemm_panel_kind(const lp_type_traits *t, int isa) {
    return t->vec_dot_type | isa << 8 | panel_signed(t, isa) << 12 | panel_offset(t, isa) << 13 | amx_on(isa) << 19 |
           t->s8_min_unit << 20;
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
                memcpy(&v, qs + 4 * k, 4);
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
typedef struct { int type, lo, hi, slo, shi; } quant_bounds;
static const quant_bounds *type_bounds(const lp_type_traits *t) {
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
    const quant_bounds *b = type_bounds(t);
    *part = t->s8_sub, *neg = 0;
    const int vnni = isa == LP_ISA_AVX2 && lp_gemm_avx2_vnni();
    if ((isa != LP_ISA_AVX512 && !vnni) || !t->s8_sub || !b) return SUB_NONE;
    const int c[4] = { b->lo * b->slo, b->lo * b->shi, b->hi * b->slo, b->hi * b->shi };
    int pmin = c[0], pmax = c[0];
    for (int i = 1; i < 4; i++) pmin = c[i] < pmin ? c[i] : pmin, pmax = c[i] > pmax ? c[i] : pmax;
    const int sgn = panel_signed(t, isa) && !amx_on(isa);  // (AMX: the weights are signed bytes)
    if (sgn ? pmin >= 0 && pmax <= 255 : pmin >= -128 && pmax <= 127) return *part = 32, SUB_FOLD;
    if (!sgn && -pmax >= -128 && -pmin <= 127) return *part = 32, *neg = 1, SUB_FOLD;
    return amx_on(isa) ? SUB_DIGITS : SUB_MULLD;
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
// AMX (Intel Xeon 4th gen on: Sapphire Rapids, Emerald Rapids, Granite Rapids)
//
// A TDPBSSD multiplies a tile of 16 weight rows x K columns (int8; K = 32 for the legacy types,
// 64 for the sub-scaled K-quants) by a tile of the same K columns of 16 activation rows and adds
// the 16 x 16 int32 dot products into a third tile, in about the time of 16 VPDPBUSD. The
// activation tile is the panel's layout (for each 4 columns, the 16 rows' 4 bytes), kept signed
// (panel_signed), so no +128 correction, with a group's blocks contiguous (act_q: K = 64 is one
// load); the weights are repacked a chunk at a time into tiles of 16 rows x K columns
// (amx_repack). The int32 sums come out of the tile through memory and take the float steps of
// gemm.h, as every ISA does: the same bits.
// The K-quants' sub-scales: Q2_K and Q3_K are folded into the quants as on AVX-512 (SUB_FOLD);
// Q4_K, Q5_K and Q6_K cannot be (their products do not fit a byte), so each sub-scale is split
// into dig_n digits in base dig_base (balanced where the sub-scales are signed) small enough
// that a quant times a digit fits the byte, and the weights are repacked once per digit:
// sum(q * s * a) = sum over k of base^k * sum(q * digit_k(s) * a), an identity of integers, so
// the super-block's int32 sum is the other ISAs' exactly, with one tile product per digit and
// no work per sub-block. Unsigned (dig_usgn: the quants and sub-scales are never negative, the
// products up to 255), the weight is the unsigned operand: TDPBUSD.
#if LP_X86
#include <cpuid.h>
#include <stdatomic.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

int lp_gemm_amx(void) {
    static _Atomic int has = -1;
    int h = atomic_load_explicit(&has, memory_order_relaxed);
    if (h < 0) {
        h = 0;
#if defined(__linux__) && defined(SYS_arch_prctl)
        const char *env = getenv("LLAMAPACK_AMX");
        unsigned a, b, cx, d;
        __builtin_cpu_init();
        if (!(env && env[0] == '0') && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
            __get_cpuid_count(7, 0, &a, &b, &cx, &d) && (d >> 24 & 1) && (d >> 25 & 1)) {
            // the kernel hands out the tile data state on request (ARCH_REQ_XCOMP_PERM, XTILEDATA)
            h = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
        }
#endif
        atomic_store_explicit(&has, h, memory_order_relaxed);
    }
    return h;
}

// The digits of a type's sub-scales (SUB_DIGITS): from its bounds, the largest digit whose
// product with any quant fits the weight's byte (unsigned where neither can be negative), and as
// many digits as cover the sub-scales' range; at most 3 (the tiles: amx_chunk).
static int amx_digits(const quant_bounds *b, int *base, int *usgn) {
    const int qmax = -b->lo > b->hi ? -b->lo : b->hi, smax = -b->slo > b->shi ? -b->slo : b->shi;
    *usgn = b->lo >= 0 && b->slo >= 0;
    int reach;  // the largest |sub-scale| n digits cover
    if (*usgn) *base = 255 / qmax + 1;
    else if (b->slo >= 0) *base = 127 / qmax + 1;
    else *base = 2 * (127 / qmax) + 1;  // balanced: digits -h .. h, -qmax * -h fits
    int n = 1;
    for (reach = b->slo >= 0 ? *base - 1 : *base / 2; reach < smax && n < 4; n++)
        reach = b->slo >= 0 ? reach * *base + *base - 1 : reach * *base + *base / 2;
    return reach >= smax && n <= 3 ? n : 0;
}

LP_AMX_BEGIN
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

#define AMX_SLOTS(dn) ((dn) > 1 ? (dn) : 2)  // weight tiles a pair holds: two weight tiles, or the digits of one

// A chunk's weights as the tiles take them. A tile product takes K columns: 64 for the
// sub-scaled types (their int32 sums run over the super-block), 32 for the legacy types (a
// float step every 32 columns). Pair p, step s (columns K s ..), slot l: the tile of 16 rows x
// K bytes at qa + ((p * steps + s) * slots + l) * 16 K. The scales (and the legacy types' mins)
// transposed, unit u of row r at st[u * nr16 + r], so a tile's 16 rows share a cache line.
typedef struct {
    const int8_t *qa;
    const float *st, *mt;
    int nr16, k, steps;
} amx_weights;

// The chunk's decoded rows (nr16 of them, zero past nr) into w's tiles. One digit (dig_n 1):
// the pairs are the chunk's tiles two by two, the slots their two tiles, and SUB_FOLD's
// sub-scales are multiplied in here (negated, and the scales with them, where sub_neg says);
// else a pair is one tile and its slots its quants times each digit of the sub-scales.
static void amx_repack(const gemm_ctx *c, const wpanel *wp, const int16_t *sub, int nr16, int8_t *qa, float *st,
                       float *mt, int16_t *dg, const int k) {
    const int64_t cols = c->cols, subs = c->subs, units = c->units, min_units = c->min_units;
    const int dn = c->dig_n, slots = AMX_SLOTS(dn), steps = (int)(cols / k), tb = 16 * k;
    const int fold = c->sub_way == SUB_FOLD, sub_shift = subs && cols / subs == 16 ? 4 : 5;
    int16_t digits[3][256];  // the digits of every sub-scale, by its low byte (they are int8 or 0..255)
    for (int v = 0; v < 256 && dn > 1; v++) {
        int x = c->dig_usgn ? v : (int8_t)v;
        for (int d = 0; d < dn; d++) {
            int dd = x % c->dig_base;
            if (!c->dig_usgn && dd > c->dig_base / 2) dd -= c->dig_base;
            if (!c->dig_usgn && dd < -(c->dig_base / 2)) dd += c->dig_base;
            digits[d][v] = (int16_t)dd;
            x = (x - dd) / c->dig_base;
        }
    }
    for (int r = 0; r < nr16; r++) {
        const int t = r / 16, i = r % 16;
        const int8_t *qr = wp->q + (int64_t)r * cols;
        const int16_t *sr = sub + (int64_t)r * subs;
        if (dn > 1)  // the row's digits: digit d of sub-scale x at dg[d * subs + x]
            for (int64_t x = 0; x < subs; x++)
                for (int d = 0; d < dn; d++) dg[d * subs + x] = digits[d][(uint8_t)sr[x]];
        for (int64_t u = 0; u < units; u++) {
            st[u * nr16 + r] = c->sub_neg ? -wp->scale[r * units + u] : wp->scale[r * units + u];
            if (mt && c->t->s8_min) mt[u * nr16 + r] = wp->min[r * min_units + u];
        }
        for (int sp = 0; sp < steps; sp++) {
            for (int h = 0; h < k; h += 32) {  // 32 columns at a time
                const int64_t col = (int64_t)sp * k + h;
                const __m256i q32 = _mm256_loadu_si256((const __m256i *)(qr + col));
                if (dn == 1) {
                    int8_t *dst = qa + (((int64_t)(t / 2) * steps + sp) * slots + t % 2) * tb + k * i + h;
                    if (!fold) {
                        _mm256_store_si256((__m256i *)dst, q32);
                        continue;
                    }
                    const int s0 = sr[col >> sub_shift], s1 = sr[(col + 16) >> sub_shift];
                    const __m512i m = _mm512_inserti64x4(_mm512_set1_epi16((int16_t)(c->sub_neg ? -s0 : s0)),
                                                         _mm256_set1_epi16((int16_t)(c->sub_neg ? -s1 : s1)), 1);
                    // the products fit the byte (sub_way): the truncation keeps them
                    _mm256_store_si256((__m256i *)dst,
                                       _mm512_cvtepi16_epi8(_mm512_mullo_epi16(_mm512_cvtepi8_epi16(q32), m)));
                    continue;
                }
                const __m512i v = _mm512_cvtepi8_epi16(q32);
                for (int d = 0; d < dn; d++) {
                    const __m512i m = _mm512_inserti64x4(_mm512_set1_epi16(dg[d * subs + (col >> sub_shift)]),
                                                         _mm256_set1_epi16(dg[d * subs + ((col + 16) >> sub_shift)]), 1);
                    // each product fits the byte (amx_digits): the truncation keeps it
                    _mm256_store_si256((__m256i *)(qa + (((int64_t)t * steps + sp) * slots + d) * tb + k * i + h),
                                       _mm512_cvtepi16_epi8(_mm512_mullo_epi16(v, m)));
                }
            }
        }
    }
    __asm__ __volatile__("" ::: "memory");  // the tile loads below read these stores
}

// C tile (slot l, panel j) += A (slot l) x B (panel j): tiles 0-3 the sums (2 l + j), 4-5 the
// slots' weights, 6-7 the panels; or (3 digits, one panel) 0-2 the sums, 4-6 the digits, 7 the panel.
// wa: the step's first slot; b0, b1: the step's panel bytes.
static inline __attribute__((always_inline)) void amx_products(const int8_t *wa, const uint8_t *b0, const uint8_t *b1,
                                                               const int k, const int ns, const int nj,
                                                               const int usgn) {
#define AMX_DP(C, A, B)            \
    do {                           \
        if (usgn)                  \
            _tile_dpbusd(C, A, B); \
        else                       \
            _tile_dpbssd(C, A, B); \
    } while (0)
    if (ns == 3) {
        _tile_loadd(4, wa, k);
        _tile_loadd(5, wa + 16 * k, k);
        _tile_loadd(6, wa + 32 * k, k);
        _tile_loadd(7, b0, 64);
        AMX_DP(0, 4, 7);
        AMX_DP(1, 5, 7);
        AMX_DP(2, 6, 7);
        return;
    }
    _tile_loadd(4, wa, k);
    _tile_loadd(6, b0, 64);
    if (nj == 2) _tile_loadd(7, b1, 64);
    AMX_DP(0, 4, 6);
    if (nj == 2) AMX_DP(1, 4, 7);
    if (ns == 2) {
        _tile_loadd(5, wa + 16 * k, k);
        AMX_DP(2, 5, 6);
        if (nj == 2) AMX_DP(3, 5, 7);
    }
#undef AMX_DP
}

static inline __attribute__((always_inline)) void amx_zero(const int ns, const int nj) {
    _tile_zero(0);
    if (ns == 3) {
        _tile_zero(1);
        _tile_zero(2);
        return;
    }
    if (nj == 2) _tile_zero(1);
    if (ns == 2) {
        _tile_zero(2);
        if (nj == 2) _tile_zero(3);
    }
}

// The sums out to cs (tile t at cs + 256 t) where the vector code reads them.
static inline __attribute__((always_inline)) void amx_store(int32_t *cs, const int ns, const int nj) {
    _tile_stored(0, cs, 64);
    if (ns == 3) {
        _tile_stored(1, cs + 256, 64);
        _tile_stored(2, cs + 512, 64);
    } else {
        if (nj == 2) _tile_stored(1, cs + 256, 64);
        if (ns == 2) {
            _tile_stored(2, cs + 512, 64);
            if (nj == 2) _tile_stored(3, cs + 768, 64);
        }
    }
    __asm__ __volatile__("" ::: "memory");  // the loads below read what the tile stores wrote
}

#define AMX_SLAB 4  // activation panels a pass over a pair's weights (their float sums: 8 KiB)

// The float steps of super-block u's tile sums (cs, as amx_store left them) of panels j0 .. j0 + nj
// into acc (row r, panel j at acc + (r * AMX_SLAB + j) * 16; rows from the pair's first, r0).
static inline __attribute__((always_inline)) void amx_steps(const gemm_ctx *c, const amx_weights *w,
                                                            const act_block *a0, const int32_t *cs, int64_t u, int r0,
                                                            int j0, const int nj, const int ns, const int dn,
                                                            float *acc) {
    const int64_t nblk = c->nblk;
    const int per_unit = QK_K / 32, base = c->dig_base;
    const int tiles = dn > 1 ? 1 : ns;  // weight tiles (16 rows each) in the sums
    for (int j = 0; j < nj; j++) {
        const act_block *ab = a0 + (j0 + j) * nblk + u * per_unit;
        const __m512 dv = _mm512_load_ps(ab->d);  // the super-block's activation scale
        for (int t = 0; t < tiles; t++) {
            const int32_t *ct = cs + 256 * (2 * t + j);
            const float *sc = w->st + u * w->nr16 + r0 + 16 * t;
            float *ap = acc + ((16 * t) * AMX_SLAB + j0 + j) * LP_G_LANES;
            for (int i = 0; i < 16; i++, ap += AMX_SLAB * LP_G_LANES) {
                __m512i is;
                if (dn == 1) {
                    is = _mm512_load_si512(ct + 16 * i);
                } else {  // the digits' sums: sum of base^k times digit k's (digit k's tile: k * stride)
                    const int stride = ns == 3 ? 256 : 512;
                    is = _mm512_load_si512(cs + stride * (dn - 1) + 256 * j + 16 * i);
                    for (int d = dn - 2; d >= 0; d--)
                        is = _mm512_add_epi32(_mm512_mullo_epi32(is, _mm512_set1_epi32(base)),
                                              _mm512_load_si512(cs + stride * d + 256 * j + 16 * i));
                }
                const __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(is), dv);
                _mm512_store_ps(ap, _mm512_fmadd_ps(p, _mm512_set1_ps(sc[i]), _mm512_load_ps(ap)));
            }
        }
    }
}

// The sub-scaled K-quants: one pair's weight rows [r0, r0 + ws) x panels g0 .. g0 + ng (ng <=
// AMX_SLAB), all columns, into y: a super-block at a time, all the slab's panels two by two (the pair's weight tiles of the
// unit stay in L1 across them). The float steps of a unit's sums follow the next unit's tile
// products (two sums buffers), so the tile unit and the vector units overlap.
// ns: the slots used (weight tiles of the pair, or digits); dn: the digits (1: none); k: columns a product.
static inline __attribute__((always_inline)) void amx_pair(const gemm_ctx *c, const wpanel *wp, const amx_weights *w,
                                                           int pi, int r0, int ws, int nr, int64_t g0, int ng,
                                                           const int k, const int ns, const int dn, const int usgn,
                                                           const int has_min, const int min_unit) {
    const int64_t units = c->units, nblk = c->nblk;
    const int slots = AMX_SLOTS(dn), per_unit = QK_K / k, step = ns == 3 ? 1 : 2, tb = 16 * k;
    float acc[32 * AMX_SLAB * LP_G_LANES] __attribute__((aligned(64)));
    int32_t cs[2][4 * 256] __attribute__((aligned(64)));
    const act_block *a0 = c->act + g0 * nblk;
    const uint8_t *q0 = c->act_q + g0 * nblk * 512;
    const int8_t *wa = w->qa + (int64_t)pi * w->steps * slots * tb;
    wpanel wr = *wp;  // (sub_min_terms counts rows from the pair's first)
    wr.min += (int64_t)r0 * c->min_units;
    for (int j0 = 0; j0 < ng; j0 += LP_G_NJ) {  // the min terms first (or zeros)
        const int nj = ng - j0 < LP_G_NJ ? ng - j0 : LP_G_NJ;
        const act_block *a[LP_G_NJ];
        for (int j = 0; j < nj; j++) a[j] = a0 + (j0 + j) * nblk;
        float *aj = acc + j0 * LP_G_LANES;
        if (nj == 3) sub_min_terms(c, &wr, a, 0, ws, 3, has_min, min_unit, aj, AMX_SLAB);
        else if (nj == 2) sub_min_terms(c, &wr, a, 0, ws, 2, has_min, min_unit, aj, AMX_SLAB);
        else sub_min_terms(c, &wr, a, 0, ws, 1, has_min, min_unit, aj, AMX_SLAB);
    }
    int pend = 0, pj = 0, pnj = 0, buf = 0;
    int64_t pu = 0;
    for (int64_t u = 0; u < units; u++)
        for (int j0 = 0; j0 < ng; j0 += step) {
            const int nj = ng - j0 >= 2 && step == 2 ? 2 : 1;
            const uint8_t *b0 = q0 + j0 * nblk * 512, *b1 = q0 + (j0 + nj - 1) * nblk * 512;
            amx_zero(ns, nj);
            for (int64_t sp = u * per_unit; sp < (u + 1) * per_unit; sp++) {
                if (nj == 2) amx_products(wa + sp * slots * tb, b0 + sp * tb, b1 + sp * tb, k, ns, 2, usgn);
                else amx_products(wa + sp * slots * tb, b0 + sp * tb, b1 + sp * tb, k, ns, 1, usgn);
            }
            if (nj == 2) amx_store(cs[buf], ns, 2);
            else amx_store(cs[buf], ns, 1);
            if (pend) {
                if (pnj == 2) amx_steps(c, w, a0, cs[buf ^ 1], pu, r0, pj, 2, ns, dn, acc);
                else amx_steps(c, w, a0, cs[buf ^ 1], pu, r0, pj, 1, ns, dn, acc);
            }
            pend = 1, pu = u, pj = j0, pnj = nj, buf ^= 1;
        }
    if (pnj == 2) amx_steps(c, w, a0, cs[buf ^ 1], pu, r0, pj, 2, ns, dn, acc);
    else amx_steps(c, w, a0, cs[buf ^ 1], pu, r0, pj, 1, ns, dn, acc);
    gemm_ctx cy = *c;  // y from the pair's first row
    cy.y += r0;
    store_transposed(&cy, acc, 0, r0 + ws < nr ? ws : nr - r0, g0, ng, AMX_SLAB);
}

// amx_pair for each layout, compiled with constants.
static void amx_any(const gemm_ctx *c, const wpanel *wp, const amx_weights *w, int pi, int r0, int ws, int nr,
                    int64_t g, int ng, int ns, int dn, int usgn, int has_min, int min_unit) {
#define AMX_CASE(NS, DN, MIN, MU, US)                                                     \
    if (ns == NS && dn == DN && has_min == MIN && (!MIN || min_unit == MU) && usgn == US) \
        return amx_pair(c, wp, w, pi, r0, ws, nr, g, ng, 64, NS, DN, US, MIN, MU);
#define AMX_NS(DN, MIN, MU, US) AMX_CASE(2, DN, MIN, MU, US) AMX_CASE(1, DN, MIN, MU, US)
    // Q3_K (folded); Q2_K (folded)
    AMX_NS(1, 0, 32, 0) AMX_NS(1, 1, 16, 0)
    // Q4_K, Q5_K (2 digits, unsigned); Q6_K (3 balanced digits, a panel at a time)
    AMX_CASE(2, 2, 1, 32, 1) AMX_CASE(3, 3, 0, 32, 0)
#undef AMX_NS
#undef AMX_CASE
}

// The legacy types (a float step every block of 32 columns): one weight tile (t) x one panel (g)
// at a time, its 16 rows' float sums in registers across the row. The blocks' int32 sums go
// through two sets of tiles in turn (C0, A4, B6 and C1, A5, B7) and two buffers, so the tile
// unit works on the next block while the vector units take this one's float steps.
static inline __attribute__((always_inline)) void amx_legacy_steps(const __m512 dv, const __m512 mv,
                                                                   const int32_t *cs, const float *sc,
                                                                   const float *mn, const int has_min,
                                                                   __m512 acc[16]) {
    for (int i = 0; i < 16; i++) {
        const __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cs + 16 * i)), dv);
        acc[i] = _mm512_fmadd_ps(p, _mm512_set1_ps(sc[i]), acc[i]);
        if (has_min) acc[i] = _mm512_fmadd_ps(mv, _mm512_set1_ps(mn[i]), acc[i]);
    }
}

static inline __attribute__((always_inline)) void amx_legacy(const gemm_ctx *c, const amx_weights *w, int t,
                                                             int64_t g, int nr, const int has_min) {
    const int64_t nblk = c->nblk, nr16 = w->nr16;
    const int8_t *wa = w->qa + ((int64_t)(t / 2) * w->steps * 2 + t % 2) * 512;  // 16 x 32 tiles; block b: + 2 b
    const uint8_t *bq = c->act_q + g * nblk * 512;
    const act_block *ab = c->act + g * nblk;
    const float *st = w->st + 16 * t, *mt = has_min ? w->mt + 16 * t : NULL;  // block b: + b nr16
    int32_t cs[2][256] __attribute__((aligned(64)));
    __m512 acc[16];
    for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
#define AMX_LEG_TILE(C, A, B, b)                                               \
    do {                                                                       \
        _tile_zero(C);                                                         \
        _tile_loadd(A, wa + (b) * 2 * 512, 32);                     \
        _tile_loadd(B, bq + (b) * 512, 64);                                    \
        _tile_dpbssd(C, A, B);                                                 \
        _tile_stored(C, cs[C], 64);                                            \
        __asm__ __volatile__("" ::: "memory"); /* the loads below read them */ \
    } while (0)
#define AMX_LEG_STEPS(b)                                                                                \
    amx_legacy_steps(_mm512_load_ps(ab[b].d), has_min ? _mm512_load_ps(ab[b].m[0]) : _mm512_setzero_ps(), \
                     cs[(b) & 1], st + (b) * nr16, has_min ? mt + (b) * nr16 : NULL, has_min, acc)
    AMX_LEG_TILE(0, 4, 6, 0);
    int64_t b = 1;
    for (; b + 1 < nblk; b += 2) {  // block b (odd) into C1, then b + 1 into C0
        AMX_LEG_TILE(1, 5, 7, b);
        AMX_LEG_STEPS(b - 1);
        AMX_LEG_TILE(0, 4, 6, b + 1);
        AMX_LEG_STEPS(b);
    }
    if (b < nblk) {
        AMX_LEG_TILE(1, 5, 7, b);
        AMX_LEG_STEPS(b - 1);
    }
    AMX_LEG_STEPS(nblk - 1);
#undef AMX_LEG_TILE
#undef AMX_LEG_STEPS
    transpose16(acc);  // acc[l]: activation row l's 16 weight rows
    const int rows = nr - 16 * t < 16 ? nr - 16 * t : 16;
    for (int l = 0; l < LP_G_LANES; l++) {
        const int64_t arow = g * LP_G_LANES + l;
        if (arow >= c->n) break;
        _mm512_mask_storeu_ps(c->y + arow * c->rows + 16 * t, (__mmask16)((1u << rows) - 1), acc[l]);
    }
}

static void amx_legacy_any(const gemm_ctx *c, const amx_weights *w, int t, int64_t g, int nr, int has_min) {
    if (has_min) amx_legacy(c, w, t, g, nr, 1);
    else amx_legacy(c, w, t, g, nr, 0);
}

// One chunk of nr decoded rows (gemm_chunk's wp; sub: the raw sub-scales) against every
// activation row; scratch: the chunk's AMX weights (amx_weights).
static void amx_chunk(const gemm_ctx *c, const wpanel *wp, const int16_t *sub, int nr, uint8_t *scratch) {
    const int nr16 = (nr + 15) / 16 * 16, dn = c->dig_n, k = c->subs ? 64 : 32;
    const int64_t units = c->units;
    int8_t *qa = (int8_t *)scratch;
    float *st = (float *)(scratch + align_up(3 * (int64_t)c->rt * c->cols));
    float *mt = (float *)((uint8_t *)st + align_up((int64_t)c->rt * units * 4));
    int16_t *dg = (int16_t *)((uint8_t *)mt + align_up((int64_t)c->rt * units * 4));
    amx_repack(c, wp, sub, nr16, qa, st, c->subs ? NULL : mt, dg, k);
    const amx_weights w = { qa, st, mt, nr16, k, (int)(c->cols / k) };
    amx_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        const int weights = t >= 4 && (t < 6 || (dn == 3 && t == 6)), panel = t >= 6 && !weights;
        cfg.rows[t] = panel ? k / 4 : 16;  // a panel: k / 4 rows of 4 columns x 16 activation rows
        cfg.colsb[t] = weights ? k : 64;   // weights: k columns; sums: 16 int32
    }
    _tile_loadconfig(&cfg);
    const int sub_t = c->subs != 0, has_min = c->t->s8_min, min_unit = c->t->s8_min_unit, usgn = c->dig_usgn;
    const int pairs = dn == 1 ? (nr16 / 16 + 1) / 2 : nr16 / 16, rows_pair = dn == 1 ? 32 : 16;
    for (int64_t g = 0; g < c->groups; g += AMX_SLAB) {  // a slab of panels from L2 for all the chunk's rows
        const int ng = c->groups - g < AMX_SLAB ? (int)(c->groups - g) : AMX_SLAB;
        if (!sub_t) {  // the legacy types
            for (int t = 0; t < nr16 / 16; t++)
                for (int j = 0; j < ng; j++) amx_legacy_any(c, &w, t, g + j, nr, has_min);
            continue;
        }
        for (int pi = 0; pi < pairs; pi++) {
            const int r0 = pi * rows_pair, ws = nr16 - r0 < rows_pair ? nr16 - r0 : rows_pair;
            const int ns = dn > 1 ? dn : ws / 16;
            amx_any(c, wp, &w, pi, r0, ws, nr, g, ng, ns, dn, usgn, has_min, min_unit);
        }
    }
    _tile_release();
}
LP_AMX_END
#else
int lp_gemm_amx(void) { return 0; }
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
// of int16 for VPMADDWD; for VPMULLD (AVX-512, AVX2 with AVX-VNNI) as int32. And the row's corrections (unsigned panel: corr holds -128 * each sub-block's
// quant sum) folded into one a unit: the sum of sub-scale times correction.
static void prepare_subs(const gemm_ctx *c, const int16_t *sub, int32_t *subv, int32_t *corr, int sgn) {
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
    }
    const quant_bounds *tb = type_bounds(c->t);
    if (tb) lo = tb->lo, hi = tb->hi;  // where the format fixes the range, the type's (the tiles are compiled for it)
    const wpanel wp = { q, scale, corr, min, subv };
    gemm_ctx cc = *c;  // y offset to this chunk's rows
    cc.y = c->y + first;
    if (c->isa == LP_ISA_AVX2) return lp_gemm_avx2_chunk(&cc, &wp, nr, lo, hi, sgn);
    if (c->amx) return amx_chunk(&cc, &wp, sub, nr, amx);
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
    int rt = amx_on(isa) ? LP_G_RT_AMX : LP_G_RT_X86;
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
    c.dig_n = 1;
#if LP_X86  // (every sub-scaled type's digits fit the tiles: 2 for Q4_K and Q5_K, 3 for Q6_K)
    if (c.sub_way == SUB_DIGITS) c.dig_n = amx_digits(type_bounds(t), &c.dig_base, &c.dig_usgn);
#endif
    c.amx = amx_on(isa);
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
