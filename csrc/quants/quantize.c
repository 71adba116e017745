// quantize.c — a tensor's rows to a weight type on every thread (lp_quantize_rows, api.h):
// each row is read as floats (converted from F16, BF16 or a quantized type first, into the
// caller's per-thread scratch), checked, and quantized by its type's quantizer
// (the traits table's `quantize` slot: quantize_legacy.c, quantize_k.c).
//
// What a model file may not hold, as llama.cpp's quantizer refuses it too: a row holding
// NaN or inf (LP_ENONFINITE; the row is left unwritten), and an output whose fp16 scales
// (or F16 / BF16 values) overflow to inf (LP_EOVERFLOW; e.g. weights near 1e6 in Q8_0).
// Either way *bad_row is the first such row and the caller refuses the tensor. Rows are
// independent: the result does not depend on the thread count.
#include <stdatomic.h>

#include "quantize.h"

typedef struct {
    const lp_type_traits *src, *dst;
    const uint8_t *in;
    uint8_t *out;
    int64_t nrows, n_per_row, rows_per_chunk, in_row, out_row;
    float *work;                  // (n_threads, n_per_row)
    _Atomic int64_t bad_row;      // first refused row * 2 + 1 if it overflowed (refuse); 2 * nrows if none
    int f16c;                     // F16 rows read with F16C (quantize_legacy_avx2.c)
} quantize_job;

static int row_finite(const float *x, int64_t n) {
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad |= (lp_float_to_bits(x[i]) & 0x7f800000u) == 0x7f800000u;
    return !bad;
}

static int half_is_finite(lp_half h) { return (h & 0x7c00) != 0x7c00; }

// 1 when every fp16 scale (F16: value; BF16: value) of the output row is finite.
static int output_finite(const lp_type_traits *t, const uint8_t *y, int64_t n) {
    const int64_t nb = n / t->blck_size;
    for (int64_t b = 0; b < nb; b++, y += t->type_size) {
        uint16_t h[2];
        if (t == lp_traits(LP_F16)) {
            memcpy(h, y, 2);
            if (!half_is_finite(h[0])) return 0;
        } else if (t == lp_traits(LP_BF16)) {
            memcpy(h, y, 2);
            if ((h[0] & 0x7f80) == 0x7f80) return 0;
        } else {
            for (int k = 0; k < t->n_half; k++) {
                memcpy(h, y + t->half_off[k], 2);
                if (!half_is_finite(h[0])) return 0;
            }
        }
    }
    return 1;
}

// The first refused row wins, with its own reason: the threads meet rows in any order, so
// the row and its reason go together in one atomic minimum (row * 2 + 1 for an overflow;
// a row is refused for one reason only).
static void refuse(quantize_job *job, int64_t row, int err) {
    const int64_t key = row * 2 + (err == LP_EOVERFLOW);
    int64_t cur = atomic_load(&job->bad_row);
    while (key < cur && !atomic_compare_exchange_weak(&job->bad_row, &cur, key)) {}
}

static void quantize_chunk(void *ctx, int chunk, int ith) {
    quantize_job *job = ctx;
    const int64_t n = job->n_per_row;
    const int64_t r0 = chunk * job->rows_per_chunk;
    const int64_t r1 = r0 + job->rows_per_chunk < job->nrows ? r0 + job->rows_per_chunk : job->nrows;
    float *work = job->work + ith * n;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *in = job->in + r * job->in_row;
        const float *x = (const float *)in;
#if LP_X86
        if (job->src == lp_traits(LP_F16) && job->f16c) {
            lp_f16_to_float_f16c(in, work, n);
            x = work;
        } else
#endif
        if (job->src != lp_traits(LP_F32)) {
            job->src->to_float(in, work, n);
            x = work;
        } else if (((uintptr_t)in & 3) != 0) {
            memcpy(work, in, (size_t)n * 4);
            x = work;
        }
        if (!row_finite(x, n)) {
            refuse(job, r, LP_ENONFINITE);
            continue;
        }
        uint8_t *out = job->out + r * job->out_row;
        job->dst->quantize(x, out, n);
        if (!output_finite(job->dst, out, n)) refuse(job, r, LP_EOVERFLOW);
    }
}

int lp_quantize_rows(int dst_type, int src_type, const void *src, void *dst, int64_t nrows, int64_t n_per_row,
                     float *work, int n_threads, int64_t *bad_row) {
    const lp_type_traits *d = lp_traits(dst_type), *s = lp_traits(src_type);
    *bad_row = -1;
    if (!d || !s || !d->quantize || !s->to_float) return LP_EUNKNOWN_TYPE;
    if (nrows < 0 || n_per_row <= 0 || n_per_row % d->blck_size || n_per_row % s->blck_size) return LP_EBAD_SIZE;
    if (n_threads < 1) n_threads = 1;
    quantize_job job = { .src = s, .dst = d, .in = src, .out = dst, .nrows = nrows, .n_per_row = n_per_row,
                         .in_row = n_per_row / s->blck_size * s->type_size,
                         .out_row = n_per_row / d->blck_size * d->type_size, .work = work,
                         .f16c = lp_quantize_use_avx2() };
    atomic_init(&job.bad_row, 2 * nrows);  // row * 2 + reason (refuse); 2 * nrows: none
    // chunks of about 16K elements (a thread's claim costs an atomic), smaller where that would
    // leave a thread fewer than 4
    int64_t rows = (16384 + n_per_row - 1) / n_per_row;
    const int64_t per_thread = (nrows + 4 * n_threads - 1) / (4 * n_threads);
    if (rows > per_thread) rows = per_thread > 0 ? per_thread : 1;
    job.rows_per_chunk = rows;
    const int64_t n_chunks = (nrows + rows - 1) / rows;
    if (n_chunks > INT32_MAX) return LP_EBAD_SIZE;
    lp_parallel_chunks(quantize_chunk, &job, (int)n_chunks, n_threads);
    const int64_t key = atomic_load(&job.bad_row);
    if (key >= 2 * nrows) return LP_OK;
    *bad_row = key / 2;
    return key % 2 ? LP_EOVERFLOW : LP_ENONFINITE;
}
