// model.c — the forward pass of every architecture runtime/arch.py lists, read top
// to bottom: embed, then per layer attention and feed-forward (dense SwiGLU / GeGLU
// or a mixture of experts), then final norm and output projection. The llama layer
// (Llama, Mistral, Mixtral, SmolLM2) is the path with every flag off; each flag of
// lp_weights (Qwen's q/k/v biases and NEOX rope, Gemma's embedding scale, q/k norms,
// post norms, GeGLU, sliding window, soft-cap; Phi-3's fused tensors and LongRoPE,
// Llama 3.1's rope factors, YaRN) is one branch where it applies.
// A call runs a batch of rows, each a token at a position of a sequence: a prompt
// chunk, one decoding token per sequence, or both. The weights, the KV cache and
// the scratch buffers are the caller's (api.h; state.c lays them out).
//
// engine/ is what runs a model on the kernels of quants/: this forward pass, the
// cache and scratch layout (state.c), attention (attn.c), the other float operations
// (ops.c), the matmul driver (matmul.c), the batched product of prompt processing
// (gemm.c) and the thread pool (pool.c).
#include <math.h>

#include "lp.h"

static int64_t row_bytes(const lp_tensor *t) {
    const lp_type_traits *tr = lp_traits(t->type);
    return t->cols / tr->blck_size * tr->type_size;
}

// y (n, rows) = x (n, cols) @ W^T for matrix `mat` of a (possibly stacked) tensor; the first
// n_single rows are decoding rows (row dot products), the rest prompt rows (lp_matmul_rows).
static int matmul(const lp_scratch *s, const lp_tensor *w, int64_t mat, const float *x, int64_t n, int64_t n_single,
                  float *y) {
    const int64_t need = lp_matmul_work_size(w->type, w->cols, n, s->n_threads);
    if (need < 0) return (int)need;  // a type or row length the kernels do not take
    if (need > s->work_size) return LP_EWORK;
    const uint8_t *data = (const uint8_t *)w->data + mat * w->rows * row_bytes(w);
    return lp_matmul_rows(w->type, data, w->rows, w->cols, x, n, n_single, y, s->work, s->n_threads);
}

// y[i] (n, rows_i) = x (n, cols) @ W_i^T for matrix `mat` of each tensor: projections
// of the same input (q, k, v; gate, up) in one job.
static int matmul_multi(const lp_scratch *s, int count, const lp_tensor *const *w, int64_t mat, const float *x,
                        int64_t n, int64_t n_single, float *const *y) {
    lp_mm mm[LP_MM_MAX];
    int types[LP_MM_MAX];
    for (int i = 0; i < count; i++) types[i] = w[i]->type;
    const int64_t need = lp_matmul_multi_work_size(types, count, w[0]->cols, n, s->n_threads);
    if (need < 0) return (int)need;  // a type or row length the kernels do not take
    if (need > s->work_size) return LP_EWORK;
    for (int i = 0; i < count; i++)
        mm[i] = (lp_mm){ w[i]->type, (const uint8_t *)w[i]->data + mat * w[i]->rows * row_bytes(w[i]), w[i]->rows, y[i] };
    return lp_matmul_multi_rows(mm, count, w[0]->cols, x, n, n_single, s->work, s->n_threads);
}

// ---------------------------------------------------------------------------
// Mixture of experts: route each token to its top experts, then run every chosen
// expert once over the tokens routed to it (only those experts' weights are read).
// xb2 (n, D) = sum over each token's chosen experts of weight * expert(xb).

// Row-wise float operations of many rows (a prompt's norms, activation and residual adds),
// split over the threads: one thread did them while the others waited, ~3% of a 512-token
// prompt at Mistral width. The rows are independent, so any split gives the same bits; a
// few rows (decoding) stay on the calling thread.
enum { OP_NORM, OP_ACT, OP_ADD };
#define LP_OP_ROWS 8              // rows a chunk
#define LP_OP_PARALLEL (1 << 16)  // values from which the threads share the work
typedef struct {
    int op, gelu;
    float *out;          // OP_NORM: the normed rows; OP_ACT: gate (in place); OP_ADD: x (+= y)
    const float *x, *w;  // OP_NORM: input rows and weights; OP_ACT: up; OP_ADD: y
    int64_t n, dim;
    float eps;
} rows_op;

static void rows_op_chunk(void *vctx, int chunk, int ith) {
    const rows_op *o = vctx;
    (void)ith;
    const int64_t r0 = (int64_t)chunk * LP_OP_ROWS, r1 = o->n - r0 < LP_OP_ROWS ? o->n : r0 + LP_OP_ROWS;
    float *out = o->out + r0 * o->dim;
    const float *x = o->x + r0 * o->dim;
    if (o->op == OP_NORM) lp_rmsnorm(out, x, o->w, r1 - r0, o->dim, o->eps);
    else if (o->op == OP_ACT) (o->gelu ? lp_geglu : lp_swiglu)(out, x, (r1 - r0) * o->dim);
    else
        for (int64_t i = 0; i < (r1 - r0) * o->dim; i++) out[i] += x[i];
}

static void run_rows(const lp_scratch *s, const rows_op *o) {
    const int chunks = (int)((o->n + LP_OP_ROWS - 1) / LP_OP_ROWS);
    if (o->n * o->dim < LP_OP_PARALLEL || s->n_threads < 2) {
        for (int c = 0; c < chunks; c++) rows_op_chunk((void *)o, c, 0);
        return;
    }
    lp_parallel_chunks(rows_op_chunk, (void *)o, chunks, s->n_threads);
}

static void norm_rows(const lp_scratch *s, float *out, const float *x, const float *w, int64_t n, int64_t dim,
                      float eps) {
    const rows_op o = { .op = OP_NORM, .out = out, .x = x, .w = w, .n = n, .dim = dim, .eps = eps };
    run_rows(s, &o);
}

// gate (n, n_ff) = act(gate) * up: SwiGLU, or GeGLU (Gemma).
static void act_rows(const lp_weights *w, const lp_scratch *s, float *gate, const float *up, int64_t n) {
    const rows_op o = { .op = OP_ACT, .gelu = w->act_gelu, .out = gate, .x = up, .n = n, .dim = w->n_ff };
    run_rows(s, &o);
}

static int moe_ffn(const lp_weights *w, const lp_layer *L, lp_scratch *s, int n, int n_single) {
    const int E = w->n_expert, K = w->n_expert_used, D = w->n_embd;
    // router probabilities: softmax over all experts, per token
    int rc = matmul(s, &L->ffn_gate_inp, 0, s->xb, n, n_single, s->router);
    if (rc) return rc;
    for (int t = 0; t < n; t++) {
        float *p = s->router + (int64_t)t * E;
        lp_softmax(p, E);
        // top K by probability (first index wins ties), weights renormalised over the chosen
        int32_t *sel = s->moe_sel + (int64_t)t * K;
        float *wt = s->moe_sel_w + (int64_t)t * K;
        float sum = 0.0f;
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int j = 0; j < k; j++) taken |= sel[j] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            sel[k] = best;
            wt[k] = p[best];
            sum += p[best];
        }
        for (int k = 0; k < K; k++) wt[k] /= sum;
    }
    memset(s->xb2, 0, sizeof(float) * (size_t)n * D);
    for (int e = 0; e < E; e++) {
        // gather the tokens routed to expert e (in row order: the decoding rows first)
        int ne = 0, ne_single = 0;
        for (int t = 0; t < n; t++)
            for (int k = 0; k < K; k++)
                if (s->moe_sel[(int64_t)t * K + k] == e) {
                    s->moe_rows[ne] = t;
                    s->moe_w[ne] = s->moe_sel_w[(int64_t)t * K + k];
                    memcpy(s->moe_x + (int64_t)ne * D, s->xb + (int64_t)t * D, sizeof(float) * D);
                    ne++;
                    ne_single += t < n_single;
                }
        if (ne == 0) continue;
        // expert FFN: down(silu(gate x) * up x)
        const lp_tensor *gu[2] = { &L->ffn_gate_exps, &L->ffn_up_exps };
        float *gu_out[2] = { s->hb, s->hb2 };
        if ((rc = matmul_multi(s, 2, gu, e, s->moe_x, ne, ne_single, gu_out))) return rc;
        act_rows(w, s, s->hb, s->hb2, ne);
        if ((rc = matmul(s, &L->ffn_down_exps, e, s->hb, ne, ne_single, s->moe_y))) return rc;
        // weighted scatter-add back to the tokens
        for (int i = 0; i < ne; i++) {
            float *dst = s->xb2 + (int64_t)s->moe_rows[i] * D;
            const float *src = s->moe_y + (int64_t)i * D;
            for (int d = 0; d < D; d++) dst[d] += s->moe_w[i] * src[d];
        }
    }
    return LP_OK;
}

// x (n, len) += bias (len) on every row.
static void add_bias(float *x, const float *bias, int n, int len) {
    for (int64_t t = 0; t < n; t++)
        for (int i = 0; i < len; i++) x[t * len + i] += bias[i];
}

// Rows [first, first + rows) of matrix t, as a matrix of its own (the parts of a fused tensor).
static lp_tensor rows_of(const lp_tensor *t, int64_t first, int64_t rows) {
    lp_tensor out = *t;
    out.data = (const uint8_t *)t->data + first * row_bytes(t);
    out.rows = rows;
    return out;
}

// Layer l's rope: its base and scale (sliding-window layers: their own base, unscaled),
// the frequency factors, YaRN's ramp, the magnitude factor.
lp_rope_cfg lp_rope_of(const lp_weights *w, const lp_kv *kv, int l) {
    const int swa = lp_layer_swa(w, l);
    lp_rope_cfg c = { .base = swa ? w->rope_base_swa : w->rope_base, .freq_scale = swa ? 1.0f : w->rope_freq_scale,
                      .attn_factor = w->rope_attn_factor > 0.0f ? w->rope_attn_factor : 1.0f, .neox = w->rope_neox };
    if (w->rope_freqs.data) c.factors = w->rope_freqs.data;
    else if (w->rope_long.data) c.factors = kv->n_ctx > w->rope_orig_ctx ? w->rope_long.data : w->rope_short.data;
    if (w->rope_yarn && !swa) {  // GGML's correction dimensions, beta_fast 32 and beta_slow 1
        const float two_pi = 6.283185307179586f, n = (float)w->n_rot, lb = 2.0f * logf(c.base);
        c.ext_factor = 1.0f;
        c.corr_low = fmaxf(0.0f, floorf(n * logf((float)w->rope_orig_ctx / (32.0f * two_pi)) / lb));
        c.corr_high = fminf(n - 1.0f, ceilf(n * logf((float)w->rope_orig_ctx / two_pi) / lb));
    }
    return c;
}

// The rope of the rows' positions: its cos and sin (s->rope) are computed by the first layer
// and kept for the next layers while their rope is the same (a model's layers share one, but
// for the sliding-window layers' own base). have: whether s->rope holds cfg's.
typedef struct { lp_rope_cfg cfg; int have; } rope_kept;

// Rows [r0, r1) of q and k turned by the rope (the table in s->rope), then these rows' k
// and v put in their sequences' caches at their positions (fp16), head by head: a head's
// block of positions (4 KiB at head_dim 128) stays in L1 across the rows, where row by row
// every row's halves, scattered over 2 x n_head_kv x head_dim lines, missed it.
typedef struct {
    const lp_weights *w;
    lp_kv *kv;
    const lp_scratch *s;
    const lp_rope_cfg *rope;
    int layer, n;
} rope_store_ctx;

#define LP_STORE_ROWS LP_KV_BLOCK  // rows a chunk (a prompt's: about one block of the cache)

static void rope_store_chunk(void *vctx, int chunk, int ith) {
    const rope_store_ctx *c = vctx;
    const lp_weights *w = c->w;
    const lp_scratch *s = c->s;
    const int hd = w->head_dim, q_dim = w->n_head * hd, kv_dim = w->n_head_kv * hd;
    const int r0 = chunk * LP_STORE_ROWS, r1 = c->n - r0 < LP_STORE_ROWS ? c->n : r0 + LP_STORE_ROWS;
    (void)ith;
    const float *table = s->rope + (int64_t)r0 * hd;
    lp_rope_rows(s->q + (int64_t)r0 * q_dim, r1 - r0, w->n_head, hd, w->n_rot, c->rope, table);
    lp_rope_rows(s->k + (int64_t)r0 * kv_dim, r1 - r0, w->n_head_kv, hd, w->n_rot, c->rope, table);
    for (int h = 0; h < w->n_head_kv; h++)
        for (int kind = 0; kind < 2; kind++)
            for (int i = r0; i < r1; i++) {
                uint16_t *head = lp_kv_head(c->kv, kind ? c->kv->v : c->kv->k, s->row_seq[i], c->layer, h);
                lp_kv_put(head, hd, s->row_pos[i], (kind ? s->v : s->k) + (int64_t)i * kv_dim + h * hd);
            }
}

// Every row's rope and cache store: split over the threads (rows are independent, and no two
// rows share a cache position), a few rows (decoding) on the calling thread.
static void rope_store(const lp_weights *w, lp_kv *kv, int l, const lp_scratch *s, int n, const lp_rope_cfg *rope) {
    rope_store_ctx c = { w, kv, s, rope, l, n };
    const int chunks = (n + LP_STORE_ROWS - 1) / LP_STORE_ROWS;
    const int nth = (int64_t)n * w->n_head * w->head_dim < LP_OP_PARALLEL ? 1 : s->n_threads;
    lp_parallel_chunks(rope_store_chunk, &c, chunks, nth);
}

// The attention's q, k and v (n rows, the first ns generated tokens'): projections, biases,
// per-head norms, rope at each row's position; k and v into the cache.
static int qkv_rows(const lp_weights *w, const lp_layer *L, lp_kv *kv, int l, lp_scratch *s, int n, int ns,
                    rope_kept *kept) {
    const int hd = w->head_dim, q_dim = w->n_head * hd, kv_dim = w->n_head_kv * hd;
    lp_tensor fused[3];
    const lp_tensor *qkv[3] = { &L->wq, &L->wk, &L->wv };
    if (L->wqkv.data) {  // Phi-3: q, k, v are the rows of one tensor
        fused[0] = rows_of(&L->wqkv, 0, q_dim);
        fused[1] = rows_of(&L->wqkv, q_dim, kv_dim);
        fused[2] = rows_of(&L->wqkv, q_dim + kv_dim, kv_dim);
        for (int i = 0; i < 3; i++) qkv[i] = &fused[i];
    }
    float *qkv_out[3] = { s->q, s->k, s->v };
    int rc = matmul_multi(s, 3, qkv, 0, s->xb, n, ns, qkv_out);
    if (rc) return rc;
    if (L->bq.data) {  // Qwen 2: biases on q, k and v
        add_bias(s->q, L->bq.data, n, q_dim);
        add_bias(s->k, L->bk.data, n, kv_dim);
        add_bias(s->v, L->bv.data, n, kv_dim);
    } else if (L->bqkv.data) {  // one bias of the fused tensor's rows
        const float *bias = L->bqkv.data;
        add_bias(s->q, bias, n, q_dim);
        add_bias(s->k, bias + q_dim, n, kv_dim);
        add_bias(s->v, bias + q_dim + kv_dim, n, kv_dim);
    }
    if (L->attn_q_norm.data) {  // Qwen 3, Gemma 3: an RMS norm over each head of q and of k
        norm_rows(s, s->q, s->q, L->attn_q_norm.data, (int64_t)n * w->n_head, hd, w->rms_eps);
        norm_rows(s, s->k, s->k, L->attn_k_norm.data, (int64_t)n * w->n_head_kv, hd, w->rms_eps);
    }
    const lp_rope_cfg rope = lp_rope_of(w, kv, l);
    if (!kept->have || !lp_rope_same(&rope, &kept->cfg)) {
        lp_rope_table(s->rope, n, s->row_pos, hd, w->n_rot, &rope);
        *kept = (rope_kept){ rope, 1 };
    }
    rope_store(w, kv, l, s, n, &rope);
    return LP_OK;
}

// The dense feed-forward: xb2 (n, D) = down(act(gate xb) * up xb).
static int dense_ffn(const lp_weights *w, const lp_layer *L, lp_scratch *s, int n, int ns) {
    lp_tensor fused[2];
    const lp_tensor *gu[2] = { &L->ffn_gate, &L->ffn_up };
    if (!L->ffn_gate.data) {  // Phi-3: gate and up are the rows of ffn_up
        fused[0] = rows_of(&L->ffn_up, 0, w->n_ff);
        fused[1] = rows_of(&L->ffn_up, w->n_ff, w->n_ff);
        gu[0] = &fused[0];
        gu[1] = &fused[1];
    }
    float *gu_out[2] = { s->hb, s->hb2 };
    int rc = matmul_multi(s, 2, gu, 0, s->xb, n, ns, gu_out);
    if (rc) return rc;
    act_rows(w, s, s->hb, s->hb2, n);
    return matmul(s, &L->ffn_down, 0, s->hb, n, ns, s->xb2);
}

// x (n, D) += rmsnorm(y) with the layer's post norm (Gemma 3), or y itself.
static void residual_add(const lp_weights *w, const lp_scratch *s, float *x, float *y, const lp_tensor *post_norm,
                         int n) {
    const int64_t D = w->n_embd;
    if (post_norm->data) norm_rows(s, y, y, post_norm->data, n, D, w->rms_eps);
    const rows_op o = { .op = OP_ADD, .out = x, .x = y, .n = n, .dim = D };
    run_rows(s, &o);
}

// ---------------------------------------------------------------------------
// The batch: checked against the cache, its rows grouped by sequence.

// Head and expert counts the forward pass divides by or indexes with, the embedding
// table it reads rows of (the loader checks all of these first), and a cache and
// scratch laid out for these weights.
static int shapes_ok(const lp_weights *w, const lp_kv *kv, const lp_scratch *s) {
    if (w->head_dim < 1 || w->n_head_kv < 1 || w->n_head < 1 || w->n_head % w->n_head_kv) return 0;
    if (w->n_swa < 0 || w->swa_pattern < 0) return 0;
    const lp_type_traits *et = lp_traits(w->tok_embd.type);  // the embedding lookup's rows
    if (!et || w->tok_embd.cols != w->n_embd || w->n_embd % et->blck_size || w->tok_embd.rows < w->n_vocab) return 0;
    if (kv->n_layer != w->n_layer || kv->n_head_kv != w->n_head_kv || kv->head_dim != w->head_dim) return 0;
    if (kv->n_ctx > s->n_ctx || kv->n_seq > s->n_seq) return 0;  // what the scratch was laid out for
    return w->n_expert == 0 || (w->n_expert_used >= 1 && w->n_expert_used <= w->n_expert);
}

// Checks every row (token, sequence, position: its sequence's next; kinds) and lays the
// rows out as the pass runs them: grouped by sequence, the rows computed by row dot
// products first (g; the scratch's order, row_pos, row_seq; `next` then maps each batch
// row to its place).
static int group_rows(const lp_weights *w, const lp_kv *kv, const lp_scratch *s, const lp_batch *b,
                      lp_seq_groups *g) {
    if (b->n < 1 || b->n > s->max_batch) return LP_EBATCH;
    int32_t *seen = s->groups + 3 * (int64_t)s->max_batch, *next = s->next;  // seen: (seq, kind, rows) per sequence
    int ng = 0;
    for (int t = 0; t < b->n; t++) {
        if (b->token[t] < 0 || b->token[t] >= w->n_vocab) return LP_ETOKEN;
        const int seq = b->seq[t];
        if (seq < 0 || seq >= kv->n_seq) return LP_ESEQ;
        int i = 0;
        while (i < ng && seen[3 * i] != seq) i++;
        if (i == ng) {  // the sequence's first row in this batch; its kind (1: prompt) from that row
            seen[3 * i] = seq;
            seen[3 * i + 1] = b->prompt ? b->prompt[t] != 0 : -1;
            seen[3 * i + 2] = 0;
            next[i] = kv->len[seq];
            ng++;
        }
        if (b->prompt && seen[3 * i + 1] != (b->prompt[t] != 0)) return LP_EBATCH;  // kinds mixed
        if (b->pos[t] != next[i]) return LP_EPOS;
        if (b->pos[t] >= kv->n_ctx) return LP_ECONTEXT;
        next[i]++;
        seen[3 * i + 2]++;
    }
    // without kinds: a sequence's only row is a generated token's, several are a prompt
    for (int i = 0; i < ng; i++) {
        if (seen[3 * i + 1] < 0) seen[3 * i + 1] = seen[3 * i + 2] > 1;
        if (!seen[3 * i + 1] && seen[3 * i + 2] > LP_GEN_ROWS) return LP_EBATCH;  // a token and its drafts
    }
    // groups: the generated tokens' rows, one group each (a draft row is computed as a lone
    // generated row), then the prompts of fewer than LP_GEMM_MIN rows (both by row dot
    // products), then the longer prompts' (the batched product), each in order of first appearance
    int32_t *groups = s->groups;
    int k = 0, first = 0, n_single = 0, n_dot_rows = 0;
    for (int pass = 0; pass < 3; pass++)
        for (int i = 0; i < ng; i++) {
            const int rows = seen[3 * i + 2], kind = !seen[3 * i + 1] ? 0 : rows < LP_GEMM_MIN ? 1 : 2;
            if (kind != pass) continue;
            for (int r = 0; r < (pass == 0 ? rows : 1); r++) {
                const int size = pass == 0 ? 1 : rows;
                groups[3 * k] = seen[3 * i];
                groups[3 * k + 1] = first;
                groups[3 * k + 2] = size;
                first += size;
                n_single += pass == 0;
                n_dot_rows += pass < 2 ? size : 0;
                k++;
            }
        }
    // each row to its sequence's next place (a sequence's groups are consecutive)
    for (int i = 0; i < k; i++) next[i] = groups[3 * i + 1];
    for (int t = 0; t < b->n; t++) {
        int i = 0;
        while (groups[3 * i] != b->seq[t]) i++;
        const int at = next[i]++;
        s->order[at] = t;
        s->row_pos[at] = b->pos[t];
        s->row_seq[at] = b->seq[t];
    }
    for (int at = 0; at < b->n; at++) next[s->order[at]] = at;
    *g = (lp_seq_groups){ k, n_single, n_dot_rows, groups };
    return LP_OK;
}

// ---------------------------------------------------------------------------

int lp_decode(const lp_weights *w, lp_kv *kv, lp_scratch *s, const lp_batch *b, float *out, int output) {
    if (!shapes_ok(w, kv, s)) return LP_ESHAPE;
    lp_seq_groups g;
    int rc = group_rows(w, kv, s, b, &g);
    if (rc) return rc;
    // row i of every buffer below is batch row order[i]: grouped by sequence, the
    // g.n_dot_rows computed by row dot products first (generated tokens, short prompts)
    const int n = b->n, ns = g.n_dot_rows, D = w->n_embd;

    // token embeddings: x (n, D), times sqrt(D) for Gemma
    const lp_type_traits *et = lp_traits(w->tok_embd.type);
    for (int i = 0; i < n; i++)
        et->to_float((const uint8_t *)w->tok_embd.data + (int64_t)b->token[s->order[i]] * row_bytes(&w->tok_embd),
                     s->x + (int64_t)i * D, D);
    if (w->embd_scale != 0.0f && w->embd_scale != 1.0f)
        for (int64_t i = 0; i < (int64_t)n * D; i++) s->x[i] *= w->embd_scale;

    rope_kept kept = { .have = 0 };
    for (int l = 0; l < w->n_layer; l++) {
        const lp_layer *L = &w->layers[l];

        // attention: xb = rmsnorm(x); q, k, v = xb Wq, xb Wk, xb Wv (+ biases, norms); rotate q and k;
        // k, v into the cache
        norm_rows(s, s->xb, s->x, L->attn_norm.data, n, D, w->rms_eps);
        if ((rc = qkv_rows(w, L, kv, l, s, n, ns, &kept))) return rc;
        // xb2 (n, q_dim) = softmax(q k^T / sqrt(hd)) v, per head, causal within each sequence
        // (and within the sliding window on its layers)
        lp_attention(w, kv, l, &g, s->row_pos, s->q, s->xb2, s);
        // x += xb2 Wo (post-normed for Gemma)
        if ((rc = matmul(s, &L->wo, 0, s->xb2, n, ns, s->xb))) return rc;
        residual_add(w, s, s->x, s->xb, &L->attn_post_norm, n);

        // feed-forward: xb = rmsnorm(x); x += ffn(xb)
        norm_rows(s, s->xb, s->x, L->ffn_norm.data, n, D, w->rms_eps);
        if (w->n_expert > 0) {
            if ((rc = moe_ffn(w, L, s, n, ns))) return rc;
        } else if ((rc = dense_ffn(w, L, s, n, ns))) {
            return rc;
        }
        residual_add(w, s, s->x, s->xb2, &L->ffn_post_norm, n);
    }

    // the rows asked for, in batch order: final norm, then (logits) the output projection,
    // by row dot products for every row (few rows, and one way for all)
    int rows = 0;
    float *normed = output == LP_OUT_HIDDEN ? out : s->xb;  // (rows, D)
    for (int t = 0; t < n; t++)
        if (b->out ? b->out[t] : t == n - 1) {
            lp_rmsnorm(normed + (int64_t)rows * D, s->x + (int64_t)s->next[t] * D, w->output_norm.data, 1, D,
                       w->rms_eps);
            rows++;
        }
    if (output != LP_OUT_HIDDEN && rows > 0) {
        if ((rc = matmul(s, &w->output, 0, s->xb, rows, rows, out))) return rc;
        const float cap = w->final_softcap;
        if (cap > 0.0f)  // Gemma: logits c * tanh(logits / c)
            for (int64_t i = 0; i < (int64_t)rows * w->n_vocab; i++) out[i] = cap * tanhf(out[i] / cap);
    }
    // the rows are in their sequences' caches now
    for (int i = 0; i < g.n; i++) kv->len[g.groups[3 * i]] += g.groups[3 * i + 2];
    return LP_OK;
}
