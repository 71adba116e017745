// state.c — the layout of what a forward call reads and writes besides the weights:
// the KV cache of several sequences and the scratch buffers of one batch. The caller
// owns the memory; these functions say how much it needs and carve it up, so the
// sizes live next to the code that uses them (model.c, attn.c, matmul.c).
#include "lp.h"

// Bump allocation in a caller's block, 64-byte aligned pieces.
typedef struct {
    uint8_t *base;  // NULL: only count
    int64_t used;
} carve;

static void *take(carve *c, int64_t bytes) {
    c->used = (c->used + 63) / 64 * 64;
    void *p = c->base ? c->base + c->used : NULL;
    c->used += bytes > 0 ? bytes : 0;
    return p;
}

static int64_t round_blocks(int n_ctx) { return ((int64_t)n_ctx + LP_KV_BLOCK - 1) / LP_KV_BLOCK * LP_KV_BLOCK; }

static int dims_ok(const lp_weights *w) {
    return w->n_layer >= 1 && w->n_head >= 1 && w->n_head_kv >= 1 && w->head_dim >= 1 && w->n_embd >= 1 &&
           w->n_ff >= 0 && w->n_vocab >= 1 && w->n_expert >= 0 && w->n_expert_used >= 0;
}

// ---------------------------------------------------------------------------
// KV cache

static void layout_kv(lp_kv *kv, const lp_weights *w, carve *c, int n_seq, int n_ctx) {
    *kv = (lp_kv){ .n_seq = n_seq, .n_ctx = n_ctx, .n_layer = w->n_layer, .n_head_kv = w->n_head_kv,
                   .head_dim = w->head_dim, .ctx_blocks = round_blocks(n_ctx) };
    const int64_t per_seq = (int64_t)w->n_layer * w->n_head_kv * kv->ctx_blocks * w->head_dim;
    kv->k = take(c, (int64_t)n_seq * per_seq * (int64_t)sizeof(uint16_t));
    kv->v = take(c, (int64_t)n_seq * per_seq * (int64_t)sizeof(uint16_t));
    kv->len = take(c, (int64_t)n_seq * (int64_t)sizeof(int32_t));
}

void lp_kv_put(uint16_t *head, int head_dim, int64_t p, const float *row) {
    enum { CHUNK = 256 };  // converted together (lp_floats_to_halves), then put in the layout
    lp_half h[CHUNK];
    for (int d0 = 0; d0 < head_dim; d0 += CHUNK) {
        const int len = head_dim - d0 < CHUNK ? head_dim - d0 : CHUNK;
        lp_floats_to_halves(h, row + d0, len);
        for (int d = 0; d < len; d++) head[lp_kv_index(head_dim, d0 + d, p)] = h[d];
    }
}

int64_t lp_kv_size(const lp_weights *w, int n_seq, int n_ctx) {
    if (!dims_ok(w) || n_seq < 1 || n_ctx < 1) return LP_EBAD_SIZE;
    lp_kv kv;
    carve c = { NULL, 0 };
    layout_kv(&kv, w, &c, n_seq, n_ctx);
    return c.used;
}

int lp_kv_init(lp_kv *kv, const lp_weights *w, void *mem, int64_t size, int n_seq, int n_ctx) {
    const int64_t need = lp_kv_size(w, n_seq, n_ctx);
    if (need < 0) return (int)need;
    if (!mem || size < need || (uintptr_t)mem % 64) return LP_EBAD_SIZE;
    carve c = { mem, 0 };
    layout_kv(kv, w, &c, n_seq, n_ctx);
    memset(kv->len, 0, sizeof(int32_t) * (size_t)n_seq);
    return LP_OK;
}

int lp_kv_copy(lp_kv *kv, int src, int dst, int n) {
    if (src < 0 || src >= kv->n_seq || dst < 0 || dst >= kv->n_seq) return LP_ESEQ;
    if (n < 0 || n > kv->len[src]) return LP_EPOS;
    if (src == dst) {
        kv->len[dst] = n;
        return LP_OK;
    }
    const int hd = kv->head_dim;
    const int64_t whole = lp_kv_index(hd, 0, n / LP_KV_BLOCK * LP_KV_BLOCK);  // values in the full blocks
    for (int l = 0; l < kv->n_layer; l++)
        for (int h = 0; h < kv->n_head_kv; h++)
            for (int kind = 0; kind < 2; kind++) {
                uint16_t *cache = kind ? kv->v : kv->k;
                const uint16_t *from = lp_kv_head(kv, cache, src, l, h);
                uint16_t *to = lp_kv_head(kv, cache, dst, l, h);
                memcpy(to, from, sizeof(uint16_t) * (size_t)whole);
                // the partly filled last block: only its first n % LP_KV_BLOCK positions
                for (int d = 0; d < hd; d++)
                    for (int p = n / LP_KV_BLOCK * LP_KV_BLOCK; p < n; p++)
                        to[lp_kv_index(hd, d, p)] = from[lp_kv_index(hd, d, p)];
            }
    kv->len[dst] = n;
    return LP_OK;
}

int lp_kv_truncate(lp_kv *kv, int seq, int n) {
    if (seq < 0 || seq >= kv->n_seq) return LP_ESEQ;
    if (n < 0) return LP_EPOS;
    if (n < kv->len[seq]) kv->len[seq] = n;
    return LP_OK;
}

int lp_kv_warm(lp_kv *kv, int seq, int layer) {
    if (seq < 0 || seq >= kv->n_seq) return LP_ESEQ;
    if (layer < 0 || layer >= kv->n_layer) return LP_EBAD_SIZE;
    const int64_t n = (int64_t)kv->n_head_kv * kv->ctx_blocks * kv->head_dim;  // the layer's heads, contiguous
    const int64_t step = 4096 / sizeof(uint16_t);
    for (int kind = 0; kind < 2; kind++) {
        volatile uint16_t *cells = lp_kv_head(kv, kind ? kv->v : kv->k, seq, layer, 0);
        for (int64_t i = 0; i < n; i += step) cells[i] = cells[i];
    }
    return LP_OK;
}

// ---------------------------------------------------------------------------
// Scratch

// Bytes of activation scratch the largest matrix product of the forward pass needs at
// n rows: each group of projections of one input as matmul_multi runs it (model.c).
static int64_t work_size(const lp_weights *w, int64_t n, int n_threads) {
    int64_t most = 0;
#define LP_GROUP(...)                                                                       \
    do {                                                                                    \
        const lp_tensor *ts[] = { __VA_ARGS__ };                                            \
        int types[LP_MM_MAX];                                                               \
        const int count = (int)(sizeof(ts) / sizeof(ts[0]));                                \
        for (int i = 0; i < count; i++) types[i] = ts[i]->type;                             \
        const int64_t one = lp_matmul_multi_work_size(types, count, ts[0]->cols, n, n_threads); \
        if (one < 0) return one;                                                            \
        most = one > most ? one : most;                                                     \
    } while (0)
    LP_GROUP(&w->output);
    for (int l = 0; l < w->n_layer; l++) {
        const lp_layer *L = &w->layers[l];
        if (L->wqkv.data) LP_GROUP(&L->wqkv);  // fused: its parts take what the whole does
        else LP_GROUP(&L->wq, &L->wk, &L->wv);
        LP_GROUP(&L->wo);
        if (w->n_expert > 0) {
            LP_GROUP(&L->ffn_gate_inp);
            LP_GROUP(&L->ffn_gate_exps, &L->ffn_up_exps);
            LP_GROUP(&L->ffn_down_exps);
        } else {
            if (L->ffn_gate.data) LP_GROUP(&L->ffn_gate, &L->ffn_up);
            else LP_GROUP(&L->ffn_up);  // gate and up fused
            LP_GROUP(&L->ffn_down);
        }
    }
#undef LP_GROUP
    return most;
}

static void layout_scratch(lp_scratch *s, const lp_weights *w, carve *c, int B, int n_ctx, int n_seq, int n_threads,
                           int64_t work) {
    const int64_t q_dim = (int64_t)w->n_head * w->head_dim, kv_dim = (int64_t)w->n_head_kv * w->head_dim;
    const int64_t wide = q_dim > w->n_embd ? q_dim : w->n_embd, f = sizeof(float), i32 = sizeof(int32_t);
    const int64_t E = w->n_expert > 1 ? w->n_expert : 1, K = w->n_expert_used > 1 ? w->n_expert_used : 1;
    const int64_t gen = (int64_t)n_seq * LP_GEN_ROWS, decoding = B < gen ? B : gen;  // generated rows
    *s = (lp_scratch){ .max_batch = B, .n_ctx = n_ctx, .n_seq = n_seq, .n_threads = n_threads, .work_size = work };
    s->x = take(c, B * w->n_embd * f);
    s->xb = take(c, B * wide * f);
    s->xb2 = take(c, B * wide * f);
    s->q = take(c, B * q_dim * f);
    s->k = take(c, B * kv_dim * f);
    s->v = take(c, B * kv_dim * f);
    s->hb = take(c, B * (int64_t)w->n_ff * f);
    s->hb2 = take(c, B * (int64_t)w->n_ff * f);
    s->att = take(c, (int64_t)n_threads * LP_ATT_ROWS * round_blocks(n_ctx) * f);
    s->att_part = take(c, decoding * w->n_head * LP_ATT_SEGS * (w->head_dim + 2) * f);
    s->order = take(c, B * i32);
    s->row_pos = take(c, B * i32);
    s->row_seq = take(c, B * i32);
    s->groups = take(c, 6 * B * i32);
    s->next = take(c, B * i32);
    s->att_first = take(c, (B + 1) * i32);
    s->rope = take(c, B * (int64_t)w->head_dim * f);
    s->router = take(c, B * E * f);
    s->moe_x = take(c, B * w->n_embd * f);
    s->moe_y = take(c, B * w->n_embd * f);
    s->moe_rows = take(c, B * i32);
    s->moe_w = take(c, B * f);
    s->moe_sel = take(c, B * K * i32);
    s->moe_sel_w = take(c, B * K * f);
    s->work = take(c, work);
}

int64_t lp_scratch_size(const lp_weights *w, int max_batch, int n_ctx, int n_seq, int n_threads) {
    if (!dims_ok(w) || max_batch < 1 || n_ctx < 1 || n_seq < 1 || n_threads < 1) return LP_EBAD_SIZE;
    const int64_t work = work_size(w, max_batch, n_threads);
    if (work < 0) return work;
    lp_scratch s;
    carve c = { NULL, 0 };
    layout_scratch(&s, w, &c, max_batch, n_ctx, n_seq, n_threads, work);
    return c.used;
}

int lp_scratch_init(lp_scratch *s, const lp_weights *w, void *mem, int64_t size, int max_batch, int n_ctx,
                    int n_seq, int n_threads) {
    const int64_t need = lp_scratch_size(w, max_batch, n_ctx, n_seq, n_threads);
    if (need < 0) return (int)need;
    if (!mem || size < need || (uintptr_t)mem % 64) return LP_EBAD_SIZE;
    carve c = { mem, 0 };
    layout_scratch(s, w, &c, max_batch, n_ctx, n_seq, n_threads, work_size(w, max_batch, n_threads));
    return LP_OK;
}
