// matmul.c — y = x @ W^T for a weight matrix in any supported type.
// (Large batches on AVX-512 VNNI and AVX2 go to the batched product of gemm.c.)
//
// Steps: (1) quantize each activation row once to the weight type's dot-product
// format (Q8_0 / Q8_1 / Q8_K; float types use x as it is); (2) hand the weight
// rows to the threads in tiles of LP_TILE_ROWS; a tile's rows are dotted with every
// activation row, so its weights are read from memory once and reused from cache
// for all n activation rows.
#include "simd.h"
#include "quants/rows_pre.h"

#define LP_TILE_ROWS 16

static int check_n(const lp_type_traits *t, int64_t n) { return n >= 0 && n % t->blck_size == 0; }

int lp_dequantize(int type, const void *src, float *dst, int64_t n) {
    const lp_type_traits *t = lp_traits(type);
    if (!t) return LP_EUNKNOWN_TYPE;
    if (!check_n(t, n)) return LP_EBAD_SIZE;
    t->to_float(src, dst, n);
    return LP_OK;
}

// Prepared activation rows are laid out in groups of four (rows_pre.h), from a 64-byte line.
static int64_t pre_rows(int64_t n) { return (n + 3) / 4 * 4; }
#define LP_PRE_ALIGN 64
// Work bytes of the prepared rows of n activation rows (their line's start included)
static int64_t pre_bytes(int type, int64_t cols, int64_t n) {
    const int64_t row = lp_rows_pre_bytes(type, cols);
    return row > 0 ? row * pre_rows(n) + LP_PRE_ALIGN - 1 : 0;
}

static int64_t act_row_bytes(const lp_type_traits *t, int64_t cols) {
    const lp_type_traits *a = lp_traits(t->vec_dot_type);
    return cols / a->blck_size * a->type_size;
}

// The quantized activation rows, then (large n) the batched product's panels or, after
// them, the prepared activation rows of the row dots (rows_pre.h; whatever the ISA, which
// may change after a caller sized its buffers).
int64_t lp_matmul_work_size(int type, int64_t cols, int64_t n, int n_threads) {
    const lp_type_traits *t = lp_traits(type);
    if (!t) return LP_EUNKNOWN_TYPE;
    if (!check_n(t, cols) || n < 0) return LP_EBAD_SIZE;
    if (t->vec_dot_type == LP_F32) return 0;
    const int64_t gemm = lp_gemm_work_size(t, cols, n, n_threads), pre = pre_bytes(type, cols, n);
    return act_row_bytes(t, cols) * n + (gemm > pre ? gemm : pre);
}

int lp_quantize_act(int act_type, int isa, const float *x, void *y, int64_t n) {
    const lp_type_traits *a = lp_traits(act_type);
    if (!a) return LP_EUNKNOWN_TYPE;
    if (!lp_isa_available(isa)) return LP_EBAD_ISA;
    if (!a->from_float[isa]) return LP_ENO_KERNEL;
    if (!check_n(a, n)) return LP_EBAD_SIZE;
    a->from_float[isa](x, y, n);
    return LP_OK;
}

int lp_vec_dot(int type, int isa, int64_t n, const void *w, const void *act, float *out) {
    const lp_type_traits *t = lp_traits(type);
    if (!t) return LP_EUNKNOWN_TYPE;
    if (!lp_isa_available(isa)) return LP_EBAD_ISA;
    if (!t->vec_dot[isa]) return LP_ENO_KERNEL;
    if (!check_n(t, n) || n > INT32_MAX) return LP_EBAD_SIZE;
    t->vec_dot[isa]((int)n, out, w, act);
    return LP_OK;
}

// ---------------------------------------------------------------------------

typedef struct {
    lp_vec_dot_fn dot;
    lp_vec_dot_rows_fn dot_rows;          // NULL: dot_4acts, then dot per activation row
    lp_vec_dot_4acts_fn dot_4acts;        // NULL: dot per activation row
    lp_vec_dot_4weights_fn dot_4weights;  // NULL: dot per weight row
    lp_from_float_fn quantize;
    lp_rows_pre pre;       // .prep NULL: no prepared rows
    const uint8_t *w;      // (rows, w_row_bytes)
    const float *x;        // (n, cols)
    uint8_t *xq;           // (n, xq_row_bytes): x in the dot-product format
    uint8_t *xp;           // (n, xp_row_bytes): xq prepared for pre.dot (n >= pre.min_rows), or NULL
    float *y;              // (n, rows)
    int64_t rows, cols, n;
    int64_t w_row_bytes, xq_row_bytes, xp_row_bytes;
} matmul_ctx;

// Rows [start, end) of `total` for part ith of nth, in whole multiples of `align`.
static void split(int64_t total, int64_t align, int ith, int nth, int64_t *start, int64_t *end) {
    const int64_t units = (total + align - 1) / align;
    *start = units * ith / nth * align;
    *end = units * (ith + 1) / nth * align;
    if (*start > total) *start = total;
    if (*end > total) *end = total;
}

static void quantize_chunk(void *vctx, int r, int ith) {
    const matmul_ctx *c = vctx;
    (void)ith;
    c->quantize(c->x + r * c->cols, c->xq + r * c->xq_row_bytes, c->cols);
}

// Below this many input values, the caller quantizes the activation rows alone: a few
// decoding rows take about a microsecond, less than handing them to the threads and
// waiting for them (a decoding step of several sequences runs four such jobs a layer).
#define LP_QUANTIZE_ALONE 16384

static void quantize_rows(matmul_ctx *c, int n_threads) {
    if (c->n * c->cols <= LP_QUANTIZE_ALONE) n_threads = 1;
    lp_parallel_chunks(quantize_chunk, c, (int)c->n, n_threads);
}

// The row dots' prepared activation rows at xp (from its next 64-byte line: their kernels'
// loads of 64 bytes then stay in one line), from pre.min_rows rows on; a copy of a few
// kilobytes per row, done by the caller.
static void prepare_rows(matmul_ctx *c, uint8_t *xp) {
    if (!c->pre.prep || c->n < c->pre.min_rows) return;
    c->xp = (uint8_t *)(((uintptr_t)xp + LP_PRE_ALIGN - 1) / LP_PRE_ALIGN * LP_PRE_ALIGN);
    c->pre.prep(c->xq, (size_t)c->xq_row_bytes, (int)c->n, c->xp, (int)c->cols);
}

// One tile: weight rows [LP_TILE_ROWS * tile, ...) against every activation row.
static void dot_chunk(void *vctx, int tile, int ith) {
    const matmul_ctx *c = vctx;
    (void)ith;
    const uint8_t *act = c->xq ? c->xq : (const uint8_t *)c->x;
    const int64_t act_bytes = c->xq ? c->xq_row_bytes : c->cols * (int64_t)sizeof(float);
    const int64_t r0 = (int64_t)tile * LP_TILE_ROWS;
    const int64_t r1 = r0 + LP_TILE_ROWS < c->rows ? r0 + LP_TILE_ROWS : c->rows;
    for (int64_t j = 0; j < c->n;) {
        const int64_t left = c->n - j;
        float *yj = c->y + j * c->rows;
        const uint8_t *aj = act + j * act_bytes;
        if (c->xp && left >= c->pre.min_rows) {  // the same from prepared activation rows
            const int nr = left < LP_ROWS_MAX ? (int)left : LP_ROWS_MAX;
            const uint8_t *pj = c->xp + j * c->xp_row_bytes;
            int64_t r = r0;
            if (c->pre.dot4)  // weight rows four at a time (each activation block loaded once for all)
                for (; r + 4 <= r1; r += 4)
                    c->pre.dot4((int)c->cols, &yj[r], (size_t)c->rows, c->w + r * c->w_row_bytes,
                                (size_t)c->w_row_bytes, pj, (size_t)c->xp_row_bytes, nr);
            for (; r < r1; r++)
                c->pre.dot((int)c->cols, &yj[r], (size_t)c->rows, c->w + r * c->w_row_bytes, pj, (size_t)c->xp_row_bytes, nr);
            j += nr;
        } else if (c->dot_rows && left >= 2) {  // up to LP_ROWS_MAX activation rows per decoded weight row
            const int nr = left < LP_ROWS_MAX ? (int)left : LP_ROWS_MAX;
            for (int64_t r = r0; r < r1; r++)
                c->dot_rows((int)c->cols, &yj[r], (size_t)c->rows, c->w + r * c->w_row_bytes, aj, (size_t)act_bytes, nr);
            j += nr;
        } else if (c->dot_4acts && left >= 4) {  // four activation rows: each weight block decoded once for four
            for (int64_t r = r0; r < r1; r++)
                c->dot_4acts((int)c->cols, &yj[r], (size_t)c->rows, c->w + r * c->w_row_bytes, aj, (size_t)act_bytes);
            j += 4;
        } else {
            int64_t r = r0;
            if (c->dot_4weights)  // weight rows four at a time: each activation block read once for four
                for (; r + 4 <= r1; r += 4)
                    c->dot_4weights((int)c->cols, &yj[r], c->w + r * c->w_row_bytes, (size_t)c->w_row_bytes, aj);
            for (; r < r1; r++) c->dot((int)c->cols, &yj[r], c->w + r * c->w_row_bytes, aj);
            j += 1;
        }
    }
}

// Fills c for y = x @ W^T; returns LP_OK or the reason it cannot run.
static int matmul_setup(matmul_ctx *c, int type, const void *w, int64_t rows, int64_t cols, const float *x,
                        int64_t n, float *y, int isa) {
    const lp_type_traits *t = lp_traits(type);
    if (!t) return LP_EUNKNOWN_TYPE;
    if (!t->vec_dot[LP_ISA_REF]) return LP_ENO_KERNEL;
    if (!check_n(t, cols) || cols > INT32_MAX || rows < 0 || n < 0) return LP_EBAD_SIZE;
    if ((rows + LP_TILE_ROWS - 1) / LP_TILE_ROWS > INT32_MAX) return LP_EBAD_SIZE;
    *c = (matmul_ctx){
        .dot = t->vec_dot[isa] ? t->vec_dot[isa] : t->vec_dot[LP_ISA_REF],
        .dot_rows = t->vec_dot[isa] ? t->vec_dot_rows[isa] : NULL,

        .dot_4acts = t->vec_dot[isa] ? t->vec_dot_4acts[isa] : NULL,
        .dot_4weights = t->vec_dot[isa] && cols / t->blck_size * t->type_size <= t->max_row_bytes_4weights
                            ? t->vec_dot_4weights[isa] : NULL,
        .w = w, .x = x, .y = y, .rows = rows, .cols = cols, .n = n,
        .w_row_bytes = cols / t->blck_size * t->type_size,
    };
    if (t->vec_dot_type != LP_F32) {
        const lp_type_traits *a = lp_traits(t->vec_dot_type);
        c->quantize = a->from_float[isa] ? a->from_float[isa] : a->from_float[LP_ISA_REF];
        c->xq_row_bytes = act_row_bytes(t, cols);
        if (t->vec_dot[isa]) c->pre = lp_rows_pre_of(type, isa, cols);
        c->xp_row_bytes = lp_rows_pre_bytes(type, cols);
    }
    return LP_OK;
}

// What the work buffer holds from an earlier product of the same input (lp_matmul_multi_rows):
// act_type >= 0, the input quantized to that format; panel >= 0, the batched product's panels
// of that kind built from them (lp_gemm_panel_kind).
typedef struct { int act_type, panel; } act_kept;

static int matmul_rows(int type, const void *w, int64_t rows, int64_t cols, const float *x, int64_t n,
                       int64_t n_single, float *y, void *work, int n_threads, act_kept *kept) {
    const int isa = lp_get_isa();
    matmul_ctx c;
    const int rc = matmul_setup(&c, type, w, rows, cols, x, n, y, isa);
    if (rc) return rc;
    if (n_single < 0 || n_single > n) return LP_EBAD_SIZE;
    if (n_threads < 1) n_threads = 1;
    if (c.quantize) {
        const lp_type_traits *t = lp_traits(type);
        c.xq = work;
        if (kept->act_type != t->vec_dot_type) {
            quantize_rows(&c, n_threads);
            *kept = (act_kept){ t->vec_dot_type, -1 };
        }
        if (n_single < n && lp_gemm_available(t, isa, cols)) {  // rows n_single..n-1: the batched product
            const int kind = lp_gemm_panel_kind(t, isa);
            lp_gemm(t, isa, w, rows, cols, c.xq + n_single * c.xq_row_bytes, c.xq_row_bytes, n - n_single,
                    y + n_single * rows, c.xq + n * c.xq_row_bytes, n_threads, kind == kept->panel);
            kept->panel = kind;
            c.n = n_single;
        }
        prepare_rows(&c, c.xq + n * c.xq_row_bytes);  // after the batched product: its panels' space
        if (c.xp) kept->panel = -1;
    }
    if (c.n > 0) lp_parallel_chunks(dot_chunk, &c, (int)((rows + LP_TILE_ROWS - 1) / LP_TILE_ROWS), n_threads);
    return LP_OK;
}

int lp_matmul_rows(int type, const void *w, int64_t rows, int64_t cols, const float *x, int64_t n, int64_t n_single,
                   float *y, void *work, int n_threads) {
    act_kept none = { -1, -1 };
    return matmul_rows(type, w, rows, cols, x, n, n_single, y, work, n_threads, &none);
}

int lp_matmul(int type, const void *w, int64_t rows, int64_t cols, const float *x, int64_t n, float *y,
              void *work, int n_threads) {
    const lp_type_traits *t = lp_traits(type);
    const int64_t n_single = t && lp_gemm_use(t, lp_get_isa(), cols, n) ? 0 : n;
    return lp_matmul_rows(type, w, rows, cols, x, n, n_single, y, work, n_threads);
}

// ---------------------------------------------------------------------------
// Several matrices on the same input (q, k, v; gate, up): the input quantized once
// per activation format, and one job for all their tiles, so a decoding step waits
// for the threads once instead of once per matrix.

typedef struct {
    matmul_ctx mm[LP_MM_MAX];
    int count;
    int first_tile[LP_MM_MAX + 1];
} multi_ctx;

static void multi_dot_chunk(void *vctx, int tile, int ith) {
    const multi_ctx *c = vctx;
    int i = 0;
    while (tile >= c->first_tile[i + 1]) i++;
    dot_chunk((void *)&c->mm[i], tile - c->first_tile[i], ith);
}

// Bytes of the quantized input rows for each distinct activation format, and of prepared rows
// for every type that prepares them (types of one format may prepare them differently: Q4_K
// and Q6_K; where they prepare them alike, lp_matmul_multi_rows shares one copy).
static int64_t multi_act_bytes(const int *types, int count, int64_t cols, int64_t n) {
    int64_t total = 0;
    for (int i = 0; i < count; i++) {
        const lp_type_traits *t = lp_traits(types[i]);
        if (!t || t->vec_dot_type == LP_F32) continue;
        int seen = 0;
        for (int j = 0; j < i; j++) seen |= lp_traits(types[j])->vec_dot_type == t->vec_dot_type;
        if (!seen) total += act_row_bytes(t, cols) * n;
        total += pre_bytes(types[i], cols, n);
    }
    return total;
}

int64_t lp_matmul_multi_work_size(const int *types, int count, int64_t cols, int64_t n, int n_threads) {
    if (count < 1 || count > LP_MM_MAX) return LP_EBAD_SIZE;
    int64_t need = 0;
    for (int i = 0; i < count; i++) {
        const int64_t one = lp_matmul_work_size(types[i], cols, n, n_threads);
        if (one < 0) return one;
        need = one > need ? one : need;
    }
    const int64_t act = multi_act_bytes(types, count, cols, n);
    return act > need ? act : need;
}

int lp_matmul_multi(const lp_mm *mm, int count, int64_t cols, const float *x, int64_t n, void *work,
                    int n_threads) {
    if (count < 1 || count > LP_MM_MAX) return LP_EBAD_SIZE;
    int batched = 0;
    for (int i = 0; i < count; i++) {
        const lp_type_traits *t = lp_traits(mm[i].type);
        batched |= t && lp_gemm_use(t, lp_get_isa(), cols, n);
    }
    return lp_matmul_multi_rows(mm, count, cols, x, n, batched ? 0 : n, work, n_threads);
}

int lp_matmul_multi_rows(const lp_mm *mm, int count, int64_t cols, const float *x, int64_t n, int64_t n_single,
                         void *work, int n_threads) {
    if (count < 1 || count > LP_MM_MAX) return LP_EBAD_SIZE;
    const int isa = lp_get_isa();
    int batched = 0;  // compute-bound (a batched product among them): one at a time
    for (int i = 0; i < count; i++) {
        const lp_type_traits *t = lp_traits(mm[i].type);
        batched |= t && n_single < n && lp_gemm_available(t, isa, cols);
    }
    if (count == 1 || batched) {  // the input quantized, and its panels built, once for all that take them alike
        act_kept kept = { -1, -1 };
        for (int i = 0; i < count; i++) {
            const int rc = matmul_rows(mm[i].type, mm[i].w, mm[i].rows, cols, x, n, n_single, mm[i].y, work,
                                       n_threads, &kept);
            if (rc) return rc;
        }
        return LP_OK;
    }
    if (n_threads < 1) n_threads = 1;
    multi_ctx c = { .count = count };
    uint8_t *next = work;
    for (int i = 0; i < count; i++) {
        matmul_ctx *m = &c.mm[i];
        const int rc = matmul_setup(m, mm[i].type, mm[i].w, mm[i].rows, cols, x, n, mm[i].y, isa);
        if (rc) return rc;
        if (!m->quantize) continue;
        for (int j = 0; j < i; j++)  // an earlier matrix with the same format: its rows
            if (lp_traits(mm[j].type)->vec_dot_type == lp_traits(mm[i].type)->vec_dot_type) {
                if (!m->xq) m->xq = c.mm[j].xq;
                if (!m->xp && m->pre.prep && m->pre.prep == c.mm[j].pre.prep) m->xp = c.mm[j].xp;  // prepared alike
            }
        if (!m->xq) {
            m->xq = next;
            next += m->xq_row_bytes * n;
            quantize_rows(m, n_threads);
        }
        if (!m->xp) {
            prepare_rows(m, next);
            if (m->xp) next = m->xp + m->xp_row_bytes * pre_rows(n);
        }
    }
    c.first_tile[0] = 0;
    for (int i = 0; i < count; i++) {
        const int64_t end = c.first_tile[i] + (c.mm[i].rows + LP_TILE_ROWS - 1) / LP_TILE_ROWS;
        if (end > INT32_MAX) return LP_EBAD_SIZE;
        c.first_tile[i + 1] = (int)end;
    }
    lp_parallel_chunks(multi_dot_chunk, &c, c.first_tile[count], n_threads);
    return LP_OK;
}

// ---------------------------------------------------------------------------
// Read-bandwidth yardstick: sum 64-bit words, 4 independent chains.

typedef struct { const uint64_t *p; int64_t words; int reps; double sums[256]; } read_ctx;

static void read_task(void *vctx, int ith, int nth) {
    read_ctx *c = vctx;
    int64_t w0, w1;
    split(c->words, 64, ith, nth, &w0, &w1);
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int r = 0; r < c->reps; r++) {
        int64_t i = w0;
        for (; i + 4 <= w1; i += 4) {
            s0 += c->p[i];
            s1 += c->p[i + 1];
            s2 += c->p[i + 2];
            s3 += c->p[i + 3];
        }
        for (; i < w1; i++) s0 += c->p[i];
    }
    c->sums[ith] = (double)(s0 ^ s1 ^ s2 ^ s3);
}

double lp_read_sum(const void *buf, int64_t nbytes, int reps, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 256) n_threads = 256;
    read_ctx c = { .p = buf, .words = nbytes / 8, .reps = reps };
    lp_parallel(read_task, &c, n_threads);
    double s = 0;
    for (int i = 0; i < n_threads; i++) s += c.sums[i];
    return s;
}
