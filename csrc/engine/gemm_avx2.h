// gemm_avx2.h — what the AVX2 tiles (gemm_avx2.c) and the AVX-VNNI tiles (gemm_vnni.c) of the
// batched product share: the register tile's height and the pieces of a tile's frame.
#pragma once
#include "gemm.h"

#define LP_G2_R 4  // AVX2: weight rows per register tile (divides LP_G_RT)
#define LP_MIN_R 6  // the sub-scaled K-quants' tiles where both panel halves have rows (gemm_avx2.c's
                    // lp_gemm_avx2_chunk): 12 chains of sums (and of min terms) wait less on each
                    // other, and each activation load serves 6 rows

// AVX-VNNI's tile for the chunk's rows r0 .. r0 + nr - 1 (at most LP_G2_R; LP_MIN_R for the
// sub-scaled K-quants with both halves, nv 2) x activation group g (its first nv halves), for
// every type the batched product takes (gemm_vnni.c).
void lp_gemm_vnni_tile(const gemm_ctx *c, const wpanel *wp, int r0, int nr, int64_t g, int sgn, int nv);

#if LP_X86
LP_AVX2_BEGIN
// y[act row][weight row] of a tile whose sums are in memory (acc: row r's 16 at 16 * r).
static inline void store_tile(const gemm_ctx *c, int r0, int nr, int64_t g, const float *acc) {
    for (int l = 0; l < LP_G_LANES; l++) {
        const int64_t arow = g * LP_G_LANES + l;
        if (arow >= c->n) break;
        float *yr = c->y + arow * c->rows + r0;
        for (int r = 0; r < nr; r++) yr[r] = acc[16 * r + l];
    }
}

// The quants of activation block b + LP_PANEL_AHEAD of a panel of nblk blocks, asked into L1 ahead
// of the tile that reads it. A tile streams its panel (704 bytes a block) once per weight row
// group; at 14336 columns (a feed-forward's down product) the panel is 315 KB a group, past L1
// and beside a chunk's decoded rows in L2, and the hardware prefetcher let the tile wait on it:
// one thread, 128 or 512 rows, 4096 x 14336: Q3_K 8-13% faster with this, Q4_K 4-6%, Q6_K 0-6%;
// 14336 x 4096 (a panel of 90 KB): Q2_K 0-6%, Q4_K 0-15% (runs that far apart). Any distance from
// 2 to 16 blocks did as well. The sub-scaled K-quants' tiles take it; the legacy types' showed no
// gain (Q4_0, Q4_1, Q8_0).
#define LP_PANEL_AHEAD 4
static inline __attribute__((always_inline)) void panel_prefetch(const act_block *a, int64_t b, int64_t nblk) {
    if (b + LP_PANEL_AHEAD >= nblk) return;
    const char *p = (const char *)a[b + LP_PANEL_AHEAD].q;
    for (int l = 0; l < (int)sizeof(a->q); l += 64) _mm_prefetch(p + l, _MM_HINT_T0);
}

// acc (LP_G2_R x 16, in memory) = the tile's min terms (gemm.h: the first float steps), from
// zero in the order of the min units (a block's one or two: per_blk). The rows' mins are read
// through pointers that step along them: with the min unit's block and half worked out
// from its index in every step, the loop was ~30 instructions for 8 FMAs, about a fifth of
// a Q2_K tile (mins per 16 columns; plain AVX2 and AVX-VNNI alike).
static inline __attribute__((always_inline)) void min_terms_body(const act_block *a, int64_t nblk, const float *wm,
                                                                 int64_t min_units, const int per_blk, const int nv,
                                                                 const int R, float *acc) {
    const float *w[LP_MIN_R];  // R <= LP_MIN_R rows
    for (int r = 0; r < R; r++) w[r] = wm + r * min_units;
    __m256 s[LP_MIN_R][2];
    for (int r = 0; r < R; r++) s[r][0] = s[r][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++, a++) {
        for (int h = 0; h < per_blk; h++) {
            const float *am = a->m[h];
            const __m256 mv[2] = { _mm256_load_ps(am), nv == 2 ? _mm256_load_ps(am + 8) : _mm256_setzero_ps() };
            for (int r = 0; r < R; r++) {
                const __m256 mw = _mm256_set1_ps(*w[r]++);
                for (int v = 0; v < nv; v++) s[r][v] = _mm256_fmadd_ps(mv[v], mw, s[r][v]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < nv; v++) _mm256_store_ps(acc + 16 * r + 8 * v, s[r][v]);
}

// min_terms_body compiled for each (min unit, halves) and rows (LP_G2_R, or LP_MIN_R: AVX-VNNI's
// 6-row tile, whose 12 chains of FMAs, in registers, also wait less on each other), outside the
// tiles (its pointers stay in registers there).
static __attribute__((noinline)) void min_terms_avx2(const gemm_ctx *c, const wpanel *wp, int r0, int64_t g,
                                                     int min_unit, int nv, int rows, float *acc) {
    const act_block *a = c->act + g * c->nblk;
    const float *wm = wp->min + (int64_t)r0 * c->min_units;
    const int64_t nb = c->nblk, mus = c->min_units;
#define LP_MIN_TERMS(PB, NV) \
    return rows == LP_MIN_R ? min_terms_body(a, nb, wm, mus, PB, NV, LP_MIN_R, acc)                               \
                            : min_terms_body(a, nb, wm, mus, PB, NV, LP_G2_R, acc)
    if (min_unit == 16) {
        if (nv == 2) LP_MIN_TERMS(2, 2);
        LP_MIN_TERMS(2, 1);
    }
    if (nv == 2) LP_MIN_TERMS(1, 2);
    LP_MIN_TERMS(1, 1);
#undef LP_MIN_TERMS
}

// Rows r0.. of a chunk's decoded weights (wpanel), each at its row's offset.
typedef struct { const int8_t *q; const float *scale; const int32_t *corr, *sub; } sub_rows;
static inline sub_rows sub_rows_of(const gemm_ctx *c, const wpanel *wp, int r0) {
    return (sub_rows){ wp->q + (int64_t)r0 * c->cols, wp->scale + (int64_t)r0 * c->units,
                       wp->corr + (int64_t)r0 * corr_stride(c), wp->sub + (int64_t)r0 * c->subs };
}

// A tile's float sums (in memory: row r's 16 at acc + 16 * r) start at its min terms, or zero.
static inline __attribute__((always_inline)) void sums_start(const gemm_ctx *c, const wpanel *wp, int r0, int64_t g,
                                                             const int has_min, const int min_unit, const int nv,
                                                             const int R, float *acc) {
    memset(acc, 0, sizeof(float) * R * LP_G_LANES);  // (a half tile's other lanes too)
    if (has_min) min_terms_avx2(c, wp, r0, g, min_unit, nv, R, acc);
}

// A unit's int32 sums, in memory (row r's 16 at isp + 16 * r, R rows), start at the +128's
// correction (corr) or at zero.
static inline __attribute__((always_inline)) void unit_sums_start(int32_t *isp, const int32_t *wc, int64_t cs,
                                                                  int64_t u, const int corr, const int R) {
    for (int r = 0; r < R; r++) {
        const __m256i start = _mm256_set1_epi32(corr ? wc[r * cs + u] : 0);
        _mm256_store_si256((__m256i *)(isp + 16 * r), start);
        _mm256_store_si256((__m256i *)(isp + 16 * r + 8), start);
    }
}

// A legacy type's unit u (32 columns, block ab) from its int32 sums in registers into acc:
// the scale step, then the min step where the type has mins (gemm.h); ws and wm are the
// rows' scales and mins (row r at r * units; R rows).
static inline __attribute__((always_inline)) void unit_steps(const act_block *ab, const float *ws, const float *wm,
                                                             int64_t units, int64_t u, __m256i is[][2], float *acc,
                                                             const int has_min, const int nv, const int R) {
    const __m256 dv[2] = { _mm256_load_ps(ab->d), _mm256_load_ps(ab->d + 8) };
    for (int r = 0; r < R; r++) {
        const __m256 sc = _mm256_set1_ps(ws[r * units + u]);
        for (int v = 0; v < nv; v++) {
            float *ap = acc + 16 * r + 8 * v;
            __m256 t = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(is[r][v]), dv[v]), sc, _mm256_load_ps(ap));
            if (has_min) t = _mm256_fmadd_ps(_mm256_load_ps(ab->m[0] + 8 * v), _mm256_set1_ps(wm[r * units + u]), t);
            _mm256_store_ps(ap, t);
        }
    }
}

// The float step of unit u (gemm.h) from its int32 sums in memory into acc: au is the unit's
// first block (Q8_K: one activation scale a super-block), ws the rows' scales. unit_steps'
// scale step, the sums loaded first.
static inline __attribute__((always_inline)) void unit_float_step(const act_block *au, const float *ws, int64_t units,
                                                                  int64_t u, const int32_t *isp, float *acc,
                                                                  const int nv, const int R) {
    __m256i is[LP_MIN_R][2];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < nv; v++) is[r][v] = _mm256_load_si256((const __m256i *)(isp + 16 * r + 8 * v));
    unit_steps(au, ws, NULL, units, u, is, acc, 0, nv, R);
}
// The frame of the legacy types' tiles of 32-column units (plain AVX2's S8_SIGN tile,
// gemm_avx2.c's sign_step; AVX-VNNI's, gemm_vnni.c's vnni_step): LP_G2_R weight rows x one
// panel's first nv halves; the float sums in memory from zero; each unit's int32 sums in
// registers, from the +128's correction where corr says, else zero, then its 8 steps of 4
// columns (the step: an always-inline function of the includer, compiled for its own
// target, adding into them) and unit_steps.
typedef void (*unit_step_fn)(const act_block *ab, int k, const int8_t *w, int64_t cols, int sgn, int nv, int R,
                             __m256i is[][2]);

static inline __attribute__((always_inline)) void tile_unit_frame(const gemm_ctx *c, const wpanel *wp, int r0, int nr,
                                                                  int64_t g, const int has_min, const int sgn,
                                                                  const int corr, const int nv, const unit_step_fn step) {
    const int64_t cols = c->cols, units = c->units, cs = corr_stride(c);
    const act_block *a = c->act + g * c->nblk;
    const sub_rows w0 = sub_rows_of(c, wp, r0);
    const float *wm = wp->min + (int64_t)r0 * c->min_units;
    float accbuf[LP_G2_R * LP_G_LANES] __attribute__((aligned(32)));
    float *acc = accbuf;
    __asm__("" : "+r"(acc));  // memory, not registers
    memset(acc, 0, sizeof(accbuf));
    for (int64_t u = 0; u < units; u++) {
        const act_block *ab = &a[u];
        __m256i is[LP_G2_R][2];
        for (int r = 0; r < LP_G2_R; r++) is[r][0] = is[r][1] = _mm256_set1_epi32(corr ? w0.corr[r * cs + u] : 0);
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {  // columns 32u + 4k ..
            step(ab, k, w0.q + 32 * u + 4 * k, cols, sgn, nv, LP_G2_R, is);
        }
        unit_steps(ab, w0.scale, wm, units, u, is, acc, has_min, nv, LP_G2_R);
    }
    store_tile(c, r0, nr, g, acc);
}

// The frame of the sub-scaled tiles without folded sub-scales (plain AVX2's Q4_K and Q5_K, gemm_avx2.c's
// avx2_sub_body; AVX-VNNI's SUB_MULLD, gemm_vnni.c's vnni_mulld_body): R weight rows (LP_G2_R, or
// LP_MIN_R) x one panel's first nv halves; the float sums from the min terms (or zero), and for each unit (super-
// block) its int32 sums (in memory, from the +128's correction where corr says, else zero),
// one body call a sub-block adding into them, then the unit's float step. The body (an
// always-inline function of the includer, compiled for its own target: GCC fuses VPMADDWD +
// VPADDD into VPDPWSSD under the AVX-VNNI target, so the plain body stays in its own file)
// gets the sub-block's first activation block and step in it, its weights (row r at
// w + r * cols), its index in the row, and the rows' sub-scales (row r's at wsub[r * subs]).
typedef struct {
    const act_block *ab;
    int k0;
    const int8_t *w;
    int64_t cols, subs, gi;
    const int32_t *wsub;
    int32_t *isp;  // the unit's int32 sums: row r's 16 at isp + 16 * r
} sub_block;
typedef void (*sub_body_fn)(const sub_block *sb, int steps, int mode, int m, int nv, int R);

static inline __attribute__((always_inline)) void tile_sub_frame(const gemm_ctx *c, const wpanel *wp, int r0, int nr,
                                                                 int64_t g, const int sub, const int has_min,
                                                                 const int min_unit, const int corr, const int nv,
                                                                 const int R, const sub_body_fn body, const int mode,
                                                                 const int m) {
    const int64_t cols = c->cols, units = c->units, cs = corr_stride(c);
    const int steps = sub / 4, per_blk = 32 / sub, per_unit = QK_K / sub;
    const act_block *a = c->act + g * c->nblk;
    const sub_rows w0 = sub_rows_of(c, wp, r0);
    float accbuf[R * LP_G_LANES] __attribute__((aligned(32)));  // (R a constant once inlined)
    int32_t isbuf[R * LP_G_LANES] __attribute__((aligned(32)));
    float *acc = accbuf;
    int32_t *isp = isbuf;
    __asm__("" : "+r"(acc), "+r"(isp));  // memory, not registers (the compiler cannot follow them)
    sums_start(c, wp, r0, g, has_min, min_unit, nv, R, acc);
    sub_block sb = { .cols = cols, .subs = c->subs, .wsub = w0.sub, .isp = isp };
    for (int64_t u = 0; u < units; u++) {
        unit_sums_start(isp, w0.corr, cs, u, corr, R);
        for (int s = 0; s < per_unit; s++) {
            sb.gi = u * per_unit + s;  // the sub-block in the row
            sb.ab = &a[sb.gi / per_blk];
            sb.k0 = (int)(sb.gi % per_blk) * steps;  // its first step in its block
            sb.w = w0.q + sub * sb.gi;
            if (sb.k0 == 0) panel_prefetch(a, sb.gi / per_blk, c->nblk);  // (a block's first sub-block)
            body(&sb, steps, mode, m, nv, R);
        }
        unit_float_step(&a[u * (QK_K / 32)], w0.scale, units, u, isp, acc, nv, R);
    }
    store_tile(c, r0, nr, g, acc);
}
LP_AVX2_END
#endif
