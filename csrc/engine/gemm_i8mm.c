// gemm_i8mm.c — the batched product of prompt processing on aarch64 CPUs with the int8
// matrix multiply (I8MM: Armv8.6-A, optional from Armv8.2-A; Linux reports HWCAP2_I8MM).
//
// SMMLA multiplies a 2x8 int8 matrix by the transpose of another and adds the 2x2 int32
// result into one vector: two activation rows in the first operand, two weight rows in
// the second, and one instruction makes four 8-column dot products. gemm.c builds the
// activation panels (act_block: signed quants in row pairs) and calls lp_gemm_i8mm_chunk
// for every LP_G_RT weight rows. A chunk decodes its rows with the type's to_s8 (int8
// quants, a float scale per unit, a float min per min unit: see lp.h) and lays them out in
// pairs as well, in the thread's scratch:
//   q      for each step s of 8 columns, each pair p: row 2p's columns 8s..8s+7, then row 2p+1's
//   scale  for each unit u, each pair p: (scale 2p, scale 2p+1, scale 2p, scale 2p+1)
//   min    the same per min unit
//   sub    the same per sub-block (the K-quants' integer sub-scales, as int32)
// so that the four lanes of a product (activation row i, weight row j at lane 2i + j) meet
// their factors lane by lane. A register tile is 8 weight rows (4 pairs) x 4 activation rows
// (2 pairs): 8 int32 and 8 float accumulators.
//
// The int32 sum of a unit is the integer dot product vec_dot and the x86 tiles compute (the
// same quantized activations, the same int8 weights, a K-quant's sub-block sums times its
// sub-scales, VMLA; no +128 offset is needed, SMMLA is signed by signed). The float steps
// are the x86 tiles' with the same operands in the same order (gemm.h): the min terms,
// acc = fma(m_act, min, acc) for each min unit, then per unit acc = fma(float(isum) *
// d_act, scale, acc). So this product gives the x86 batched products' bits, and differs
// from the row dots by float rounding only.
//
// Only this file is compiled for +i8mm (gemm.c and types.c stay baseline armv8-a), and
// gemm.c calls its tiles only under LP_ISA_I8MM, which types.c offers only when the CPU
// says it has the instructions.
#include "gemm.h"

#if LP_ARM
#define LP_I8_PAIRS (LP_G_RT / 2)  // weight row pairs of a chunk

// The chunk's decoded rows, paired (see the top of the file).
typedef struct {
    int8_t *q;     // (cols / 8, LP_I8_PAIRS, 16)
    float *scale;  // (units, LP_I8_PAIRS, 4)
    float *min;    // (min_units, LP_I8_PAIRS, 4)
    int32_t *sub;  // (subs, LP_I8_PAIRS, 4)
    int8_t *row;   // one row as to_s8 writes it, then its scales, mins and sub-scales
    float *row_scale, *row_min;
    int16_t *row_sub;
} wpanel_i8;

static wpanel_i8 carve(uint8_t *base, int64_t cols, int64_t units, int64_t min_units, int64_t subs) {
    wpanel_i8 wp;
    wp.q = (int8_t *)base;
    wp.scale = (float *)(base + align_up(LP_G_RT * cols));
    wp.min = (float *)((uint8_t *)wp.scale + align_up(units * LP_I8_PAIRS * 16));
    wp.sub = (int32_t *)((uint8_t *)wp.min + align_up(min_units * LP_I8_PAIRS * 16));
    wp.row = (int8_t *)((uint8_t *)wp.sub + align_up(subs * LP_I8_PAIRS * 16));
    wp.row_scale = (float *)((uint8_t *)wp.row + align_up(cols));
    wp.row_min = (float *)((uint8_t *)wp.row_scale + align_up(units * 4));
    wp.row_sub = (int16_t *)((uint8_t *)wp.row_min + align_up(min_units * 4));
    return wp;
}

int64_t lp_gemm_i8mm_scratch(const lp_type_traits *t, int64_t cols) {
    const int64_t units = cols / t->s8_unit, min_units = cols / t->s8_min_unit, subs = t->s8_sub ? cols / t->s8_sub : 0;
    return align_up(LP_G_RT * cols) + align_up(units * LP_I8_PAIRS * 16) + align_up(min_units * LP_I8_PAIRS * 16) +
           align_up(subs * LP_I8_PAIRS * 16) + align_up(cols) + align_up(units * 4) + align_up(min_units * 4) +
           align_up(subs * 2);
}

// Rows [first, first + nr) of the matrix into the paired panel; the rest of the LP_G_RT rows zero.
static void decode_chunk(const gemm_ctx *c, int64_t first, int nr, const wpanel_i8 *wp) {
    const lp_type_traits *t = c->t;
    const lp_to_s8_fn to_s8 = t->to_s8[c->isa] ? t->to_s8[c->isa] : t->to_s8[LP_ISA_REF];
    for (int r = 0; r < LP_G_RT; r++) {
        const int p = r / 2, i = r % 2;
        if (r < nr) {
            to_s8(c->w + (first + r) * c->w_row_bytes, wp->row, wp->row_scale, wp->row_sub, wp->row_min, c->cols);
            if (!t->s8_min) memset(wp->row_min, 0, sizeof(float) * (size_t)c->min_units);
        } else {  // rows past the matrix: zero weights
            memset(wp->row, 0, (size_t)c->cols);
            memset(wp->row_scale, 0, sizeof(float) * (size_t)c->units);
            memset(wp->row_min, 0, sizeof(float) * (size_t)c->min_units);
            memset(wp->row_sub, 0, sizeof(int16_t) * (size_t)c->subs);
        }
        for (int64_t s = 0; s < c->cols / 8; s++) memcpy(wp->q + (s * LP_I8_PAIRS + p) * 16 + 8 * i, wp->row + 8 * s, 8);
        for (int64_t u = 0; u < c->units; u++) {
            float *f = wp->scale + (u * LP_I8_PAIRS + p) * 4;
            f[i] = f[2 + i] = wp->row_scale[u];
        }
        for (int64_t u = 0; u < c->min_units; u++) {
            float *f = wp->min + (u * LP_I8_PAIRS + p) * 4;
            f[i] = f[2 + i] = wp->row_min[u];
        }
        for (int64_t u = 0; u < c->subs; u++) {
            int32_t *f = wp->sub + (u * LP_I8_PAIRS + p) * 4;
            f[i] = f[2 + i] = wp->row_sub[u];
        }
    }
}

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("i8mm"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+i8mm")  // what arm_neon.h asks of SMMLA's callers
#endif

// acc += the min term of min unit mu: activation rows j0..j0+3 x weight pairs p0..p0+3.
static inline __attribute__((always_inline)) void min_step(const act_block *a, const wpanel_i8 *wp, int64_t mu,
                                                           const int min_unit, int p0, int j0, float32x4_t acc[4][2]) {
    const float32x4_t m4 = vld1q_f32(a[mu * min_unit / 32].m[mu * min_unit % 32 / 16] + j0);
    const float32x4_t mv[2] = { vzip1q_f32(m4, m4), vzip2q_f32(m4, m4) };
    const float *mp = wp->min + (mu * LP_I8_PAIRS + p0) * 4;
    for (int p = 0; p < 4; p++) {
        const float32x4_t mw = vld1q_f32(mp + 4 * p);
        for (int q = 0; q < 2; q++) acc[p][q] = vfmaq_f32(acc[p][q], mv[q], mw);
    }
}

// out[act row][weight row] from the lanes (activation row 2q + i, weight row 2p + j at lane 2i + j).
static inline void store_out(float32x4_t acc[4][2], float out[4][8]) {
    for (int q = 0; q < 2; q++)
        for (int p = 0; p < 4; p++) {
            vst1_f32(&out[2 * q][2 * p], vget_low_f32(acc[p][q]));
            vst1_f32(&out[2 * q + 1][2 * p], vget_high_f32(acc[p][q]));
        }
}

// Weight pairs p0..p0+3 x activation rows j0..j0+3 of group g, all columns: out[act row][weight row].
static inline __attribute__((always_inline)) void tile_i8mm(const gemm_ctx *c, const wpanel_i8 *wp, int p0, int64_t g,
                                                            int j0, float out[4][8], const int unit,
                                                            const int has_min, const int min_unit) {
    const act_block *a = c->act + g * c->nblk;
    const int mins_per_unit = unit / min_unit;
    // a unit is blocks_per_unit blocks of 32 columns (unit >= 32) or a part of one block
    const int blocks_per_unit = unit > 32 ? unit / 32 : 1, units_per_blk = unit < 32 ? 32 / unit : 1;
    const int steps_per_blk = unit < 32 ? unit / 8 : 4;  // steps of 8 columns of a unit in each of its blocks
    float32x4_t acc[4][2];
    for (int p = 0; p < 4; p++) acc[p][0] = acc[p][1] = vdupq_n_f32(0.0f);
    for (int64_t ub = 0; ub < c->nblk; ub += blocks_per_unit)
    for (int h = 0; h < units_per_blk; h++) {
        const int64_t u = ub / blocks_per_unit * units_per_blk + h;
        int32x4_t is[4][2];
        for (int p = 0; p < 4; p++) is[p][0] = is[p][1] = vdupq_n_s32(0);
        // step s (columns 8s .. 8s + 7) of the weights at ws + s * LP_I8_PAIRS * 16
        const int8_t *ws = wp->q + ((4 * ub + h * steps_per_blk) * LP_I8_PAIRS + p0) * 16;
        for (int64_t b = ub; b < ub + blocks_per_unit; b++) {
            const int8_t *as = (const int8_t *)a[b].q + 32 * j0 + 16 * h * steps_per_blk;  // pair j0 / 2
            for (int k = 0; k < steps_per_blk; k++, as += 16, ws += LP_I8_PAIRS * 16) {
                const int8x16_t av0 = vld1q_s8(as), av1 = vld1q_s8(as + 64);
                for (int p = 0; p < 4; p++) {
                    const int8x16_t wv = vld1q_s8(ws + 16 * p);
                    is[p][0] = vmmlaq_s32(is[p][0], av0, wv);
                    is[p][1] = vmmlaq_s32(is[p][1], av1, wv);
                }
            }
        }
        // the activation scale of the unit's (first) block, per lane: (d 2q, d 2q, d 2q+1, d 2q+1)
        const float32x4_t d4 = vld1q_f32(a[u * unit / 32].d + j0);
        const float32x4_t dv[2] = { vzip1q_f32(d4, d4), vzip2q_f32(d4, d4) };
        const float *sp = wp->scale + (u * LP_I8_PAIRS + p0) * 4;
        for (int p = 0; p < 4; p++) {
            const float32x4_t sv = vld1q_f32(sp + 4 * p);
            for (int q = 0; q < 2; q++) acc[p][q] = vfmaq_f32(acc[p][q], vmulq_f32(vcvtq_f32_s32(is[p][q]), dv[q]), sv);
        }
        if (has_min)
            for (int64_t mu = u * mins_per_unit; mu < (u + 1) * mins_per_unit; mu++) min_step(a, wp, mu, min_unit, p0, j0, acc);
    }
    store_out(acc, out);
}

// The tile of the sub-scaled K-quants: each sub-block's SMMLA sums times the weight rows'
// sub-scales (VMLA) into the super-block's int32 sums; one float step a super-block, after
// the min terms (gemm.h).
static inline __attribute__((always_inline)) void tile_i8mm_sub(const gemm_ctx *c, const wpanel_i8 *wp, int p0,
                                                                int64_t g, int j0, float out[4][8], const int sub,
                                                                const int has_min, const int min_unit) {
    const act_block *a = c->act + g * c->nblk;
    const int steps = sub / 8, per_blk = 32 / sub, per_unit = QK_K / sub;
    float32x4_t acc[4][2];
    for (int p = 0; p < 4; p++) acc[p][0] = acc[p][1] = vdupq_n_f32(0.0f);
    for (int64_t mu = 0; has_min && mu < c->min_units; mu++) min_step(a, wp, mu, min_unit, p0, j0, acc);
    for (int64_t u = 0; u < c->units; u++) {
        int32x4_t is[4][2];
        for (int p = 0; p < 4; p++) is[p][0] = is[p][1] = vdupq_n_s32(0);
        for (int s = 0; s < per_unit; s++) {
            const int64_t gi = u * per_unit + s, b = gi / per_blk;  // the sub-block in the row, its block
            const int k0 = (int)(gi % per_blk) * steps;             // its first step of 8 columns in the block
            const int8_t *ws = wp->q + ((4 * b + k0) * LP_I8_PAIRS + p0) * 16;
            const int8_t *as = (const int8_t *)a[b].q + 32 * j0 + 16 * k0;  // pair j0 / 2
            int32x4_t t[4][2];
            for (int p = 0; p < 4; p++) t[p][0] = t[p][1] = vdupq_n_s32(0);
            for (int k = 0; k < steps; k++, as += 16, ws += LP_I8_PAIRS * 16) {
                const int8x16_t av0 = vld1q_s8(as), av1 = vld1q_s8(as + 64);
                for (int p = 0; p < 4; p++) {
                    const int8x16_t wv = vld1q_s8(ws + 16 * p);
                    t[p][0] = vmmlaq_s32(t[p][0], av0, wv);
                    t[p][1] = vmmlaq_s32(t[p][1], av1, wv);
                }
            }
            const int32_t *sp = wp->sub + (gi * LP_I8_PAIRS + p0) * 4;
            for (int p = 0; p < 4; p++) {
                const int32x4_t sv = vld1q_s32(sp + 4 * p);
                for (int q = 0; q < 2; q++) is[p][q] = vmlaq_s32(is[p][q], t[p][q], sv);
            }
        }
        const float32x4_t d4 = vld1q_f32(a[u * (QK_K / 32)].d + j0);  // Q8_K: one scale a super-block
        const float32x4_t dv[2] = { vzip1q_f32(d4, d4), vzip2q_f32(d4, d4) };
        const float *sp = wp->scale + (u * LP_I8_PAIRS + p0) * 4;
        for (int p = 0; p < 4; p++) {
            const float32x4_t sv = vld1q_f32(sp + 4 * p);
            for (int q = 0; q < 2; q++) acc[p][q] = vfmaq_f32(acc[p][q], vmulq_f32(vcvtq_f32_s32(is[p][q]), dv[q]), sv);
        }
    }
    store_out(acc, out);
}

// The tile for every (unit, min unit) combination of the types, each compiled with constants.
static void tile_any(const gemm_ctx *c, const wpanel_i8 *wp, int p0, int64_t g, int j0, float out[4][8]) {
    const int unit = c->t->s8_unit, has_min = c->t->s8_min, min_unit = c->t->s8_min_unit, sub = c->t->s8_sub;
    if (sub == 16 && !has_min) return tile_i8mm_sub(c, wp, p0, g, j0, out, 16, 0, 0);      // Q3_K, Q6_K
    if (sub == 16 && min_unit == 16) return tile_i8mm_sub(c, wp, p0, g, j0, out, 16, 1, 16);  // Q2_K
    if (sub == 32 && min_unit == 32) return tile_i8mm_sub(c, wp, p0, g, j0, out, 32, 1, 32);  // Q4_K, Q5_K
    if (!sub && unit == 32) return has_min ? tile_i8mm(c, wp, p0, g, j0, out, 32, 1, 32)
                                           : tile_i8mm(c, wp, p0, g, j0, out, 32, 0, 32);
    memset(out, 0, sizeof(float) * 4 * 8);  // a layout no type has (types.c would have to add one)
}

void lp_gemm_i8mm_chunk(void *vctx, int chunk, int ith) {
    const gemm_ctx *c = vctx;
    const int64_t first = (int64_t)chunk * LP_G_RT;
    const int nr = (int)(c->rows - first < LP_G_RT ? c->rows - first : LP_G_RT);
    const wpanel_i8 wp = carve(c->wpanels + (int64_t)ith * c->wpanel_bytes, c->cols, c->units, c->min_units, c->subs);
    decode_chunk(c, first, nr, &wp);
    for (int64_t g = 0; g < c->groups; g++)
        for (int j0 = 0; j0 < LP_G_LANES && g * LP_G_LANES + j0 < c->n; j0 += 4)  // 4 activation rows
            for (int p0 = 0; 2 * p0 < nr; p0 += 4) {                              // x 8 weight rows
                float out[4][8];
                tile_any(c, &wp, p0, g, j0, out);
                for (int i = 0; i < 4 && g * LP_G_LANES + j0 + i < c->n; i++) {
                    float *yr = c->y + (g * LP_G_LANES + j0 + i) * c->rows + first + 2 * p0;
                    for (int r = 0; r < 8 && 2 * p0 + r < nr; r++) yr[r] = out[i][r];
                }
            }
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
