// gemm_amx.c — the batched product of prompt processing on AMX tiles (Intel Xeon 4th gen on:
// Sapphire Rapids, Emerald Rapids, Granite Rapids), for gemm.c's AVX-512 product where the CPU
// has AMX-INT8 and the kernel grants the tile state (lp_gemm_amx).
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
#include "gemm_avx512.h"

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
int lp_gemm_amx_digits(const quant_bounds *b, int *base, int *usgn) {
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
    int nr16, steps;
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

#define AMX_SLAB 4  // activation panels a pass over the chunk's weights (the sub-scaled types' float sums: 32 KiB)

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

// The tile sums of one (unit, pair, panels) waiting for their float steps (amx_slab): they are taken
// after the next one's tile products, from the other of the two sums buffers.
typedef struct {
    int pend, buf, r0, j0, nj, ns;  // buf: the buffer the next sums go to; the pending ones are in the other
    int64_t u;
    float *acc;  // the pair's float sums (rows from its first)
} amx_pending;

static inline __attribute__((always_inline)) void amx_flush(const gemm_ctx *c, const amx_weights *w,
                                                            const act_block *a0, int32_t cs[2][4 * 256],
                                                            amx_pending *p, const int dn) {
    if (!p->pend) return;
    const int32_t *s = cs[p->buf ^ 1];
#define AMX_FLUSH(NS, NJ) amx_steps(c, w, a0, s, p->u, p->r0, p->j0, NJ, NS, dn, p->acc)
    if (dn == 3) AMX_FLUSH(3, 1);  // (three digits: one panel at a time)
    else if (dn == 2 && p->nj == 2) AMX_FLUSH(2, 2);
    else if (dn == 2) AMX_FLUSH(2, 1);
    else if (p->ns == 2 && p->nj == 2) AMX_FLUSH(2, 2);
    else if (p->ns == 2) AMX_FLUSH(2, 1);
    else if (p->nj == 2) AMX_FLUSH(1, 2);
    else AMX_FLUSH(1, 1);
#undef AMX_FLUSH
    p->pend = 0;
}

// The sub-scaled K-quants, one unit (super-block u) of one pair (weights pi, rows [r0, r0 + 16 ns) or
// the digits of [r0, r0 + 16)) against the slab's ng panels, two at a time: the tile products of each
// two, their sums out to the next buffer, then the float steps of the sums before them (so the tile
// unit and the vector units overlap).
static inline __attribute__((always_inline)) void amx_unit(const gemm_ctx *c, const amx_weights *w, int pi, int r0,
                                                           int64_t u, int64_t g0, int ng, const int k, const int ns,
                                                           const int dn, const int usgn, int32_t cs[2][4 * 256],
                                                           amx_pending *p, float *acc) {
    const int64_t nblk = c->nblk;
    const int slots = AMX_SLOTS(dn), per_unit = QK_K / k, step = ns == 3 ? 1 : 2, tb = 16 * k;
    const act_block *a0 = c->act + g0 * nblk;
    const uint8_t *q0 = c->act_q + g0 * nblk * 512;
    const int8_t *wa = w->qa + (int64_t)pi * w->steps * slots * tb;
    for (int j0 = 0; j0 < ng; j0 += step) {
        const int nj = ng - j0 >= 2 && step == 2 ? 2 : 1;
        const uint8_t *b0 = q0 + j0 * nblk * 512, *b1 = q0 + (j0 + nj - 1) * nblk * 512;
        amx_zero(ns, nj);
        for (int64_t sp = u * per_unit; sp < (u + 1) * per_unit; sp++) {
            if (nj == 2) amx_products(wa + sp * slots * tb, b0 + sp * tb, b1 + sp * tb, k, ns, 2, usgn);
            else amx_products(wa + sp * slots * tb, b0 + sp * tb, b1 + sp * tb, k, ns, 1, usgn);
        }
        if (nj == 2) amx_store(cs[p->buf], ns, 2);
        else amx_store(cs[p->buf], ns, 1);
        amx_flush(c, w, a0, cs, p, dn);
        *p = (amx_pending){ .pend = 1, .buf = p->buf ^ 1, .r0 = r0, .j0 = j0, .nj = nj, .ns = ns, .u = u, .acc = acc };
    }
}

// The sub-scaled K-quants: all the chunk's weight rows (nr16, in pairs: two weight tiles, or one
// with its digits) x the slab's panels g0 .. g0 + ng (ng <= AMX_SLAB), all columns, into y. A
// super-block at a time for every pair: the unit's activation tiles (AMX_SLAB panels, 16 KiB) stay
// in L1 across the pairs, and a pair's unit of weight tiles (8 KiB) across the panels, so each
// comes from L2 once a unit (pairs outside units read the panels from L2 once per pair: the tiles
// then waited on L2). The float sums of every row from its min terms (gemm.h: they come first).
static inline __attribute__((always_inline)) void amx_slab(const gemm_ctx *c, const wpanel *wp, const amx_weights *w,
                                                           int nr, int64_t g0, int ng, const int k, const int dn,
                                                           const int usgn, const int has_min, const int min_unit) {
    float acc[LP_G_RT_AMX * AMX_SLAB * LP_G_LANES] __attribute__((aligned(64)));
    int32_t cs[2][4 * 256] __attribute__((aligned(64)));
    const int nr16 = w->nr16, rows_pair = dn == 1 ? 32 : 16, pairs = (nr16 + rows_pair - 1) / rows_pair;
    const act_block *a0 = c->act + g0 * c->nblk;
    for (int j0 = 0; j0 < ng; j0 += LP_G_NJ) {  // the min terms first (or zeros)
        const int nj = ng - j0 < LP_G_NJ ? ng - j0 : LP_G_NJ;
        const act_block *a[LP_G_NJ];
        for (int j = 0; j < nj; j++) a[j] = a0 + (j0 + j) * c->nblk;
        float *aj = acc + j0 * LP_G_LANES;
        if (nj == 3) sub_min_terms(c, wp, a, 0, nr16, 3, has_min, min_unit, aj, AMX_SLAB);
        else if (nj == 2) sub_min_terms(c, wp, a, 0, nr16, 2, has_min, min_unit, aj, AMX_SLAB);
        else sub_min_terms(c, wp, a, 0, nr16, 1, has_min, min_unit, aj, AMX_SLAB);
    }
    amx_pending p = { 0 };
    for (int64_t u = 0; u < c->units; u++)
        for (int pi = 0; pi < pairs; pi++) {
            const int r0 = pi * rows_pair;
            float *ap = acc + (int64_t)r0 * AMX_SLAB * LP_G_LANES;
            if (dn > 1) amx_unit(c, w, pi, r0, u, g0, ng, k, dn, dn, usgn, cs, &p, ap);
            else if (nr16 - r0 >= 32) amx_unit(c, w, pi, r0, u, g0, ng, k, 2, 1, usgn, cs, &p, ap);
            else amx_unit(c, w, pi, r0, u, g0, ng, k, 1, 1, usgn, cs, &p, ap);
        }
    amx_flush(c, w, a0, cs, &p, dn);
    store_transposed(c, acc, 0, nr, g0, ng, AMX_SLAB);
}

// amx_slab for each layout, compiled with constants.
static void amx_slab_any(const gemm_ctx *c, const wpanel *wp, const amx_weights *w, int nr, int64_t g, int ng, int dn,
                         int usgn, int has_min, int min_unit) {
#define AMX_CASE(DN, MIN, MU, US)                                                          \
    if (dn == DN && has_min == MIN && (!MIN || min_unit == MU) && usgn == US) \
        return amx_slab(c, wp, w, nr, g, ng, 64, DN, US, MIN, MU);
    // Q3_K (folded); Q2_K (folded); Q4_K, Q5_K (2 digits, unsigned); Q6_K (3 balanced digits)
    AMX_CASE(1, 0, 32, 0) AMX_CASE(1, 1, 16, 0) AMX_CASE(2, 1, 32, 1) AMX_CASE(3, 0, 32, 0)
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
    const int slots = AMX_SLOTS(1), tb = 16 * 32;  // amx_repack's layout: tiles of 16 rows x 32 columns
    const int8_t *wa = w->qa + ((int64_t)(t / 2) * w->steps * slots + t % 2) * tb;  // block b: + slots tb b
    const uint8_t *bq = c->act_q + g * nblk * 512;
    const act_block *ab = c->act + g * nblk;
    const float *st = w->st + 16 * t, *mt = has_min ? w->mt + 16 * t : NULL;  // block b: + b nr16
    int32_t cs[2][256] __attribute__((aligned(64)));
    __m512 acc[16];
    for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
#define AMX_LEG_TILE(C, A, B, b)                                               \
    do {                                                                       \
        _tile_zero(C);                                                         \
        _tile_loadd(A, wa + (b) * slots * tb, 32);                             \
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
void lp_gemm_amx_chunk(const gemm_ctx *c, const wpanel *wp, const int16_t *sub, int nr, uint8_t *scratch) {
    const int nr16 = (nr + 15) / 16 * 16, dn = c->dig_n, k = c->subs ? 64 : 32;
    const int64_t units = c->units;
    int8_t *qa = (int8_t *)scratch;
    float *st = (float *)(scratch + align_up(3 * (int64_t)c->rt * c->cols));
    float *mt = (float *)((uint8_t *)st + align_up((int64_t)c->rt * units * 4));
    int16_t *dg = (int16_t *)((uint8_t *)mt + align_up((int64_t)c->rt * units * 4));
    amx_repack(c, wp, sub, nr16, qa, st, c->subs ? NULL : mt, dg, k);
    const amx_weights w = { qa, st, mt, nr16, (int)(c->cols / k) };
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
    for (int64_t g = 0; g < c->groups; g += AMX_SLAB) {  // a slab of panels from L2 for all the chunk's rows
        const int ng = c->groups - g < AMX_SLAB ? (int)(c->groups - g) : AMX_SLAB;
        if (!sub_t) {  // the legacy types
            for (int t = 0; t < nr16 / 16; t++)
                for (int j = 0; j < ng; j++) amx_legacy_any(c, &w, t, g + j, nr, has_min);
            continue;
        }
        amx_slab_any(c, wp, &w, nr, g, ng, dn, usgn, has_min, min_unit);
    }
    _tile_release();
}
LP_AMX_END
#else
int lp_gemm_amx(void) { return 0; }
#endif
