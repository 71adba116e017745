// gemm.c — the batched matrix product of prompt processing, on AVX-512 VNNI.
//
// y (n, rows) = x (n, cols) @ W^T when n is large: every weight is used n times,
// so the product is compute-bound and worth re-laying out both sides once:
//
// - Activations: the rows quantized by lp_matmul (Q8_0 / Q8_1 / Q8_K) are copied
//   into a panel of 16 rows at a time, one 32-bit lane per row: for each block of 32
//   columns, 8 vectors holding columns 4k..4k+3 of the 16 rows (quants + 128, as
//   unsigned bytes), the 16 rows' scales, and their min-term factors.
// - Weights: a thread decodes LP_G_RT rows at a time with the type's to_s8 into
//   int8 quants and a float scale (and min) per unit of 16 or 32 columns.
//
// One VPDPBUSD then multiplies 4 columns of one weight row (broadcast) with the
// same 4 columns of 16 activation rows and adds into 16 int32 lanes. Per unit, a
// weight row's lane sums become floats: acc += scale * (d_act * isum) + min * m_act.
// The +128 that makes the activations unsigned adds 128 * sum(q) to each sum;
// starting the sum at -128 * sum(q) takes it back out exactly.
//
// The integer products are vec_dot's own (same quantized activations, same int8
// weights); only the order of the float additions differs.
#include "simd.h"

#define LP_G_LANES 16  // activation rows per vector
#define LP_G_RT 16     // weight rows a thread decodes at once (a chunk of the job)
#define LP_G_R 4       // weight rows per register tile
#define LP_ALIGN 64

typedef struct {
    uint8_t q[8][LP_G_LANES][4];  // q[k][j]: columns 4k..4k+3 of row j, + 128
    float d[LP_G_LANES];          // each row's scale for this block
    float m[2][LP_G_LANES];       // min-term factors: d * sum(quants), of the block (unit 32: m[0])
                                  // or of each half (unit 16)
} act_block;
_Static_assert(sizeof(act_block) == 704, "act_block size");

static int64_t align_up(int64_t v) { return (v + LP_ALIGN - 1) / LP_ALIGN * LP_ALIGN; }

// Scratch of one thread: LP_G_RT decoded weight rows.
static int64_t wpanel_bytes(const lp_type_traits *t, int64_t cols) {
    const int64_t units = cols / t->s8_unit;
    return align_up(LP_G_RT * cols) + 3 * align_up(LP_G_RT * units * 4);
}

int64_t lp_gemm_work_size(const lp_type_traits *t, int64_t cols, int64_t n, int n_threads) {
    if (!t->to_s8 || n < LP_GEMM_MIN || cols % 32) return 0;
    if (n_threads < 1) n_threads = 1;
    const int64_t groups = (n + LP_G_LANES - 1) / LP_G_LANES;
    return LP_ALIGN + groups * (cols / 32) * (int64_t)sizeof(act_block) + n_threads * wpanel_bytes(t, cols);
}

typedef struct {
    const lp_type_traits *t;
    const uint8_t *w;
    int64_t rows, cols, n, w_row_bytes, units, nblk, groups;
    const uint8_t *xq;
    int64_t xq_row_bytes;
    act_block *act;        // (groups, nblk)
    uint8_t *wpanels;      // per thread
    int64_t wpanel_bytes;
    float *y;
} gemm_ctx;

// ---------------------------------------------------------------------------
// The activation panel

static void build_act_group(void *vctx, int g, int ith) {
    const gemm_ctx *c = vctx;
    (void)ith;
    const int act_type = c->t->vec_dot_type, unit = c->t->s8_unit;
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
                if (unit == 32) {
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
            for (int k = 0; k < 8; k++) {
                uint32_t v;
                memcpy(&v, qs + 4 * k, 4);
                v ^= 0x80808080u;  // + 128 in each byte
                memcpy(ab->q[k][j], &v, 4);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The register tile: LP_G_R weight rows x nj * 16 activation rows, all columns.

typedef struct {
    const int8_t *q;      // (LP_G_RT, cols)
    const float *scale;   // (LP_G_RT, units)
    const float *min;     // (LP_G_RT, units)
    const int32_t *corr;  // (LP_G_RT, units): 128 * sum of the unit's quants
} wpanel;

#if LP_X86
LP_AVX512_BEGIN
static inline __attribute__((always_inline)) void tile_avx512(const gemm_ctx *c, const wpanel *wp, int r0,
                                                              int64_t g0, const int nj, const int unit,
                                                              const int has_min) {
    const int64_t cols = c->cols, units = c->units;
    const int per_blk = 32 / unit, k_per_unit = unit / 4;
    const act_block *a[2] = { c->act + g0 * c->nblk, c->act + (g0 + 1) * c->nblk };
    __m512 acc[LP_G_R][2];
    for (int r = 0; r < LP_G_R; r++)
        for (int j = 0; j < nj; j++) acc[r][j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < c->nblk; b++) {
        for (int h = 0; h < per_blk; h++) {
            const int64_t u = b * per_blk + h;
            __m512i is[LP_G_R][2];
            for (int r = 0; r < LP_G_R; r++) {
                const __m512i start = _mm512_set1_epi32(-wp->corr[(r0 + r) * units + u]);
                for (int j = 0; j < nj; j++) is[r][j] = start;
            }
            for (int k = h * k_per_unit; k < (h + 1) * k_per_unit; k++) {
                __m512i av[2];
                for (int j = 0; j < nj; j++) av[j] = _mm512_load_si512((const void *)a[j][b].q[k]);
                for (int r = 0; r < LP_G_R; r++) {
                    int32_t w4;
                    memcpy(&w4, wp->q + (r0 + r) * cols + 32 * b + 4 * k, 4);
                    const __m512i wv = _mm512_set1_epi32(w4);
                    for (int j = 0; j < nj; j++) is[r][j] = _mm512_dpbusd_epi32(is[r][j], av[j], wv);
                }
            }
            __m512 dv[2], mv[2];
            for (int j = 0; j < nj; j++) {
                dv[j] = _mm512_load_ps(a[j][b].d);
                if (has_min) mv[j] = _mm512_load_ps(a[j][b].m[h]);
            }
            for (int r = 0; r < LP_G_R; r++) {
                const __m512 sv = _mm512_set1_ps(wp->scale[(r0 + r) * units + u]);
                for (int j = 0; j < nj; j++) {
                    const __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(is[r][j]), dv[j]);
                    acc[r][j] = _mm512_fmadd_ps(p, sv, acc[r][j]);
                }
                if (has_min) {
                    const __m512 mw = _mm512_set1_ps(wp->min[(r0 + r) * units + u]);
                    for (int j = 0; j < nj; j++) acc[r][j] = _mm512_fmadd_ps(mv[j], mw, acc[r][j]);
                }
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

// The tile for every (nj, unit, min) combination, each compiled with constants.
static void tile_any(const gemm_ctx *c, const wpanel *wp, int r0, int64_t g0, int nj) {
    const int unit = c->t->s8_unit, has_min = c->t->s8_min;
#define LP_TILE_CASE(NJ, U, M) \
    if (nj == NJ && unit == U && has_min == M) return tile_avx512(c, wp, r0, g0, NJ, U, M);
    LP_TILE_CASE(2, 32, 0) LP_TILE_CASE(2, 32, 1) LP_TILE_CASE(2, 16, 0) LP_TILE_CASE(2, 16, 1)
    LP_TILE_CASE(1, 32, 0) LP_TILE_CASE(1, 32, 1) LP_TILE_CASE(1, 16, 0) LP_TILE_CASE(1, 16, 1)
#undef LP_TILE_CASE
}
LP_AVX512_END
#endif

// ---------------------------------------------------------------------------

#if LP_X86
// One chunk: weight rows [LP_G_RT * chunk, ...) against every activation row.
static void gemm_chunk(void *vctx, int chunk, int ith) {
    const gemm_ctx *c = vctx;
    const int64_t cols = c->cols, units = c->units;
    const int64_t first = (int64_t)chunk * LP_G_RT;
    const int nr = (int)(c->rows - first < LP_G_RT ? c->rows - first : LP_G_RT);
    uint8_t *base = c->wpanels + (int64_t)ith * c->wpanel_bytes;
    int8_t *q = (int8_t *)base;
    float *scale = (float *)(base + align_up(LP_G_RT * cols));
    float *min = (float *)((uint8_t *)scale + align_up(LP_G_RT * units * 4));
    int32_t *corr = (int32_t *)((uint8_t *)min + align_up(LP_G_RT * units * 4));
    const int unit = c->t->s8_unit;
    for (int r = 0; r < LP_G_RT; r++) {
        int8_t *qr = q + r * cols;
        float *sr = scale + r * units, *mr = min + r * units;
        if (r < nr) {
            c->t->to_s8(c->w + (first + r) * c->w_row_bytes, qr, sr, mr, cols);
            if (!c->t->s8_min) memset(mr, 0, sizeof(float) * (size_t)units);
        } else {  // rows past the matrix: zero weights
            memset(qr, 0, (size_t)cols);
            memset(sr, 0, sizeof(float) * (size_t)units);
            memset(mr, 0, sizeof(float) * (size_t)units);
        }
        for (int64_t u = 0; u < units; u++) {
            int sum = 0;
            for (int k = 0; k < unit; k++) sum += qr[u * unit + k];
            corr[r * units + u] = 128 * sum;
        }
    }
    const wpanel wp = { q, scale, min, corr };
    gemm_ctx cc = *c;  // y offset to this chunk's rows
    cc.y = c->y + first;
    for (int64_t g = 0; g < c->groups; g += 2) {
        const int nj = c->groups - g >= 2 ? 2 : 1;
        for (int r0 = 0; r0 < nr; r0 += LP_G_R) {
            if (nr - r0 >= LP_G_R) {
                tile_any(&cc, &wp, r0, g, nj);
            } else {  // the matrix's last rows: into a spare y, then copy
                float tmp[2 * LP_G_LANES * LP_G_R];
                gemm_ctx tc = cc;
                tc.y = tmp - r0;
                tc.rows = LP_G_R;
                tc.n = cc.n - g * LP_G_LANES < 2 * LP_G_LANES ? cc.n - g * LP_G_LANES : 2 * LP_G_LANES;
                tc.act = cc.act + g * c->nblk;
                tile_any(&tc, &wp, r0, 0, nj);
                for (int64_t l = 0; l < tc.n; l++)
                    for (int r = r0; r < nr; r++) cc.y[(g * LP_G_LANES + l) * cc.rows + r] = tmp[l * LP_G_R + r - r0];
            }
        }
    }
}
#endif

void lp_gemm(const lp_type_traits *t, const uint8_t *w, int64_t rows, int64_t cols, const uint8_t *xq,
             int64_t xq_row_bytes, int64_t n, float *y, uint8_t *work, int n_threads) {
    gemm_ctx c = {
        .t = t, .w = w, .rows = rows, .cols = cols, .n = n,
        .w_row_bytes = cols / t->blck_size * t->type_size,
        .units = cols / t->s8_unit, .nblk = cols / 32,
        .groups = (n + LP_G_LANES - 1) / LP_G_LANES,
        .xq = xq, .xq_row_bytes = xq_row_bytes, .y = y,
        .wpanel_bytes = wpanel_bytes(t, cols),
    };
    uint8_t *p = (uint8_t *)(((uintptr_t)work + LP_ALIGN - 1) / LP_ALIGN * LP_ALIGN);
    c.act = (act_block *)p;
    c.wpanels = p + c.groups * c.nblk * (int64_t)sizeof(act_block);
    lp_parallel_chunks(build_act_group, &c, (int)c.groups, n_threads);
#if LP_X86
    lp_parallel_chunks(gemm_chunk, &c, (int)((rows + LP_G_RT - 1) / LP_G_RT), n_threads);
#endif
}
