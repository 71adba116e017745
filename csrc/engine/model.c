// model.c — the forward pass of the llama architecture (Llama, Mistral, Mixtral,
// SmolLM2), read top to bottom: embed, then per layer attention and feed-forward
// (dense SwiGLU or a mixture of experts), then final norm and output projection.
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
        lp_swiglu(s->hb, s->hb2, (int64_t)ne * w->n_ff);
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

// ---------------------------------------------------------------------------
// The batch: checked against the cache, its rows grouped by sequence.

// Head and expert counts the forward pass divides by or indexes with, the embedding
// table it reads rows of (the loader checks all of these first), and a cache and
// scratch laid out for these weights.
static int shapes_ok(const lp_weights *w, const lp_kv *kv, const lp_scratch *s) {
    if (w->head_dim < 1 || w->n_head_kv < 1 || w->n_head < 1 || w->n_head % w->n_head_kv) return 0;
    const lp_type_traits *et = lp_traits(w->tok_embd.type);  // the embedding lookup's rows
    if (!et || w->tok_embd.cols != w->n_embd || w->n_embd % et->blck_size || w->tok_embd.rows < w->n_vocab) return 0;
    if (kv->n_layer != w->n_layer || kv->n_head_kv != w->n_head_kv || kv->head_dim != w->head_dim) return 0;
    if (kv->n_ctx > s->n_ctx || kv->n_seq > s->n_seq) return 0;  // what the scratch was laid out for
    return w->n_expert == 0 || (w->n_expert_used >= 1 && w->n_expert_used <= w->n_expert);
}

// Checks every row (token, sequence, position: its sequence's next; kinds) and lays the
// rows out as the pass runs them: grouped by sequence, the generated tokens' rows first
// (g; the scratch's order, row_pos, row_seq; `next` then maps each batch row to its place).
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
        if (i == ng) {  // the sequence's first row in this batch
            seen[3 * i] = seq;
            seen[3 * i + 2] = 0;
            next[i] = kv->len[seq];
            ng++;
        }
        if (b->pos[t] != next[i]) return LP_EPOS;
        if (b->pos[t] >= kv->n_ctx) return LP_ECONTEXT;
        next[i]++;
        seen[3 * i + 2]++;
    }
    // each sequence's kind: generated (its one row) or prompt (seen[3i + 1]: 1)
    for (int i = 0; i < ng; i++) seen[3 * i + 1] = b->prompt ? -1 : seen[3 * i + 2] > 1;
    if (b->prompt)
        for (int t = 0; t < b->n; t++) {
            int i = 0;
            while (seen[3 * i] != b->seq[t]) i++;
            const int kind = b->prompt[t] != 0;
            if (seen[3 * i + 1] >= 0 && seen[3 * i + 1] != kind) return LP_EBATCH;  // kinds mixed
            seen[3 * i + 1] = kind;
        }
    for (int i = 0; i < ng; i++)
        if (!seen[3 * i + 1] && seen[3 * i + 2] != 1) return LP_EBATCH;  // generated rows: one per sequence
    // groups: the generated tokens' rows, then the prompts', each in order of first appearance
    int32_t *groups = s->groups;
    int k = 0, first = 0, n_single = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < ng; i++)
            if ((seen[3 * i + 1] == 0) == (pass == 0)) {
                groups[3 * k] = seen[3 * i];
                groups[3 * k + 1] = first;
                groups[3 * k + 2] = seen[3 * i + 2];
                first += seen[3 * i + 2];
                n_single += pass == 0;
                k++;
            }
    // each row to its group's next place
    for (int i = 0; i < ng; i++) next[i] = groups[3 * i + 1];
    for (int t = 0; t < b->n; t++) {
        int i = 0;
        while (groups[3 * i] != b->seq[t]) i++;
        const int at = next[i]++;
        s->order[at] = t;
        s->row_pos[at] = b->pos[t];
        s->row_seq[at] = b->seq[t];
    }
    for (int at = 0; at < b->n; at++) next[s->order[at]] = at;
    *g = (lp_seq_groups){ ng, n_single, groups };
    return LP_OK;
}

// ---------------------------------------------------------------------------

int lp_decode(const lp_weights *w, lp_kv *kv, lp_scratch *s, const lp_batch *b, float *out, int output) {
    if (!shapes_ok(w, kv, s)) return LP_ESHAPE;
    lp_seq_groups g;
    int rc = group_rows(w, kv, s, b, &g);
    if (rc) return rc;
    // row i of every buffer below is batch row order[i]: grouped by sequence, the
    // g.n_single generated tokens' rows first
    const int n = b->n, ns = g.n_single, D = w->n_embd, hd = w->head_dim, kv_dim = w->n_head_kv * hd;

    // token embeddings: x (n, D)
    const lp_type_traits *et = lp_traits(w->tok_embd.type);
    for (int i = 0; i < n; i++)
        et->to_float((const uint8_t *)w->tok_embd.data + (int64_t)b->token[s->order[i]] * row_bytes(&w->tok_embd),
                     s->x + (int64_t)i * D, D);

    for (int l = 0; l < w->n_layer; l++) {
        const lp_layer *L = &w->layers[l];

        // attention: xb = rmsnorm(x); q, k, v = xb Wq, xb Wk, xb Wv; rotate q and k
        lp_rmsnorm(s->xb, s->x, L->attn_norm.data, n, D, w->rms_eps);
        const lp_tensor *qkv[3] = { &L->wq, &L->wk, &L->wv };
        float *qkv_out[3] = { s->q, s->k, s->v };
        if ((rc = matmul_multi(s, 3, qkv, 0, s->xb, n, ns, qkv_out))) return rc;
        lp_rope(s->q, n, s->row_pos, w->n_head, hd, w->n_rot, w->rope_base, w->rope_freq_scale);
        lp_rope(s->k, n, s->row_pos, w->n_head_kv, hd, w->n_rot, w->rope_base, w->rope_freq_scale);
        // k, v of each row to its sequence's cache at its position (fp16)
        for (int i = 0; i < n; i++)
            for (int h = 0; h < w->n_head_kv; h++) {
                uint16_t *kc = lp_kv_head(kv, kv->k, s->row_seq[i], l, h);
                uint16_t *vc = lp_kv_head(kv, kv->v, s->row_seq[i], l, h);
                const float *kr = s->k + (int64_t)i * kv_dim + h * hd, *vr = s->v + (int64_t)i * kv_dim + h * hd;
                for (int d = 0; d < hd; d++) {
                    const int64_t at = lp_kv_index(hd, d, s->row_pos[i]);
                    kc[at] = lp_float_to_half(kr[d]);
                    vc[at] = lp_float_to_half(vr[d]);
                }
            }
        // xb2 (n, q_dim) = softmax(q k^T / sqrt(hd)) v, per head, causal within each sequence
        lp_attention(w, kv, l, &g, s->row_pos, s->q, s->xb2, s);
        // x += xb2 Wo
        if ((rc = matmul(s, &L->wo, 0, s->xb2, n, ns, s->xb))) return rc;
        for (int64_t i = 0; i < (int64_t)n * D; i++) s->x[i] += s->xb[i];

        // feed-forward: xb = rmsnorm(x); x += ffn(xb)
        lp_rmsnorm(s->xb, s->x, L->ffn_norm.data, n, D, w->rms_eps);
        if (w->n_expert > 0) {
            if ((rc = moe_ffn(w, L, s, n, ns))) return rc;
        } else {
            const lp_tensor *gu[2] = { &L->ffn_gate, &L->ffn_up };
            float *gu_out[2] = { s->hb, s->hb2 };
            if ((rc = matmul_multi(s, 2, gu, 0, s->xb, n, ns, gu_out))) return rc;
            lp_swiglu(s->hb, s->hb2, (int64_t)n * w->n_ff);
            if ((rc = matmul(s, &L->ffn_down, 0, s->hb, n, ns, s->xb2))) return rc;
        }
        for (int64_t i = 0; i < (int64_t)n * D; i++) s->x[i] += s->xb2[i];
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
    if (output != LP_OUT_HIDDEN && rows > 0 && (rc = matmul(s, &w->output, 0, s->xb, rows, rows, out))) return rc;
    // the rows are in their sequences' caches now
    for (int i = 0; i < g.n; i++) kv->len[g.groups[3 * i]] += g.groups[3 * i + 2];
    return LP_OK;
}
