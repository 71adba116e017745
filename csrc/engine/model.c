// model.c — the forward pass of the llama architecture (Llama, Mistral, Mixtral,
// SmolLM2), read top to bottom: embed, then per layer attention and feed-forward
// (dense SwiGLU or a mixture of experts), then final norm and output projection.
// A call runs a batch of tokens (prompt processing) or one (decoding); buffers are
// the caller's (see lp_model in api.h).
//
// engine/ is what runs a model on the kernels of quants/: this forward pass, attention
// (attn.c), the other float operations (ops.c), the matmul driver (matmul.c), the
// batched product of prompt processing (gemm.c) and the thread pool (pool.c).
#include <math.h>

#include "lp.h"

static int64_t row_bytes(const lp_tensor *t) {
    const lp_type_traits *tr = lp_traits(t->type);
    return t->cols / tr->blck_size * tr->type_size;
}

// y (n, rows) = x (n, cols) @ W^T for matrix `mat` of a (possibly stacked) tensor.
static int matmul(const lp_model *m, const lp_tensor *w, int64_t mat, const float *x, int64_t n, float *y) {
    const int64_t need = lp_matmul_work_size(w->type, w->cols, n, m->n_threads);
    if (need < 0) return (int)need;  // a type or row length the kernels do not take
    if (need > m->work_size) return LP_EWORK;
    const uint8_t *data = (const uint8_t *)w->data + mat * w->rows * row_bytes(w);
    return lp_matmul(w->type, data, w->rows, w->cols, x, n, y, m->work, m->n_threads);
}

// y[i] (n, rows_i) = x (n, cols) @ W_i^T for matrix `mat` of each tensor: projections
// of the same input (q, k, v; gate, up) in one job.
static int matmul_multi(const lp_model *m, int count, const lp_tensor *const *w, int64_t mat, const float *x,
                        int64_t n, float *const *y) {
    lp_mm mm[LP_MM_MAX];
    int types[LP_MM_MAX];
    for (int i = 0; i < count; i++) types[i] = w[i]->type;
    const int64_t need = lp_matmul_multi_work_size(types, count, w[0]->cols, n, m->n_threads);
    if (need < 0) return (int)need;  // a type or row length the kernels do not take
    if (need > m->work_size) return LP_EWORK;
    for (int i = 0; i < count; i++)
        mm[i] = (lp_mm){ w[i]->type, (const uint8_t *)w[i]->data + mat * w[i]->rows * row_bytes(w[i]), w[i]->rows, y[i] };
    return lp_matmul_multi(mm, count, w[0]->cols, x, n, m->work, m->n_threads);
}

// ---------------------------------------------------------------------------
// Mixture of experts: route each token to its top experts, then run every chosen
// expert once over the tokens routed to it (only those experts' weights are read).

static int moe_ffn(const lp_model *m, const lp_layer *L, int n) {
    const int E = m->n_expert, K = m->n_expert_used, D = m->n_embd;
    // router probabilities: softmax over all experts, per token
    int rc = matmul(m, &L->ffn_gate_inp, 0, m->xb, n, m->router);
    if (rc) return rc;
    for (int t = 0; t < n; t++) {
        float *p = m->router + (int64_t)t * E;
        lp_softmax(p, E);
        // top K by probability (first index wins ties), weights renormalised over the chosen
        int32_t *sel = m->moe_sel + (int64_t)t * K;
        float *w = m->moe_sel_w + (int64_t)t * K;
        float sum = 0.0f;
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int j = 0; j < k; j++) taken |= sel[j] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            sel[k] = best;
            w[k] = p[best];
            sum += p[best];
        }
        for (int k = 0; k < K; k++) w[k] /= sum;
    }
    memset(m->xb2, 0, sizeof(float) * (size_t)n * D);
    for (int e = 0; e < E; e++) {
        // gather the tokens routed to expert e
        int ne = 0;
        for (int t = 0; t < n; t++)
            for (int k = 0; k < K; k++)
                if (m->moe_sel[(int64_t)t * K + k] == e) {
                    m->moe_rows[ne] = t;
                    m->moe_w[ne] = m->moe_sel_w[(int64_t)t * K + k];
                    memcpy(m->moe_x + (int64_t)ne * D, m->xb + (int64_t)t * D, sizeof(float) * D);
                    ne++;
                }
        if (ne == 0) continue;
        // expert FFN: down(silu(gate x) * up x)
        const lp_tensor *gu[2] = { &L->ffn_gate_exps, &L->ffn_up_exps };
        float *gu_out[2] = { m->hb, m->hb2 };
        if ((rc = matmul_multi(m, 2, gu, e, m->moe_x, ne, gu_out))) return rc;
        lp_swiglu(m->hb, m->hb2, (int64_t)ne * m->n_ff);
        if ((rc = matmul(m, &L->ffn_down_exps, e, m->hb, ne, m->moe_y))) return rc;
        // weighted scatter-add back to the tokens
        for (int i = 0; i < ne; i++) {
            float *dst = m->xb2 + (int64_t)m->moe_rows[i] * D;
            const float *src = m->moe_y + (int64_t)i * D;
            for (int d = 0; d < D; d++) dst[d] += m->moe_w[i] * src[d];
        }
    }
    return LP_OK;
}

// ---------------------------------------------------------------------------

// Head and expert counts the forward pass divides by or indexes with, and the
// embedding table it reads rows of (the loader checks all of these first).
static int shapes_ok(const lp_model *m) {
    if (m->head_dim < 1 || m->n_head_kv < 1 || m->n_head < 1 || m->n_head % m->n_head_kv) return 0;
    const lp_type_traits *et = lp_traits(m->tok_embd.type);  // the embedding lookup's rows
    if (!et || m->tok_embd.cols != m->n_embd || m->n_embd % et->blck_size || m->tok_embd.rows < m->n_vocab) return 0;
    return m->n_expert == 0 || (m->n_expert_used >= 1 && m->n_expert_used <= m->n_expert);
}

int lp_forward(lp_model *m, const int32_t *tokens, int n, int pos, float *out, int output) {
    if (!shapes_ok(m)) return LP_ESHAPE;
    if (n < 1 || n > m->max_batch) return LP_EBATCH;
    if (pos < 0 || (int64_t)pos + n > m->n_ctx) return LP_ECONTEXT;
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= m->n_vocab) return LP_ETOKEN;
    const int D = m->n_embd, hd = m->head_dim;
    const int kv_dim = m->n_head_kv * hd;
    int rc;

    // token embeddings: x (n, D)
    const lp_type_traits *et = lp_traits(m->tok_embd.type);
    for (int t = 0; t < n; t++)
        et->to_float((const uint8_t *)m->tok_embd.data + (int64_t)tokens[t] * row_bytes(&m->tok_embd),
                     m->x + (int64_t)t * D, D);

    for (int l = 0; l < m->n_layer; l++) {
        const lp_layer *L = &m->layers[l];
        const int64_t k_len = ((int64_t)m->n_ctx + LP_KV_BLOCK - 1) / LP_KV_BLOCK * LP_KV_BLOCK;
        // per kv head: blocks of (head_dim, LP_KV_BLOCK) positions
        uint16_t *kc = m->k_cache + (int64_t)l * k_len * kv_dim;
        uint16_t *vc = m->v_cache + (int64_t)l * k_len * kv_dim;

        // attention: xb = rmsnorm(x); q, k, v = xb Wq, xb Wk, xb Wv; rotate q and k
        lp_rmsnorm(m->xb, m->x, L->attn_norm.data, n, D, m->rms_eps);
        const lp_tensor *qkv[3] = { &L->wq, &L->wk, &L->wv };
        float *qkv_out[3] = { m->q, m->k, m->v };
        if ((rc = matmul_multi(m, 3, qkv, 0, m->xb, n, qkv_out))) return rc;
        lp_rope(m->q, n, m->n_head, hd, m->n_rot, pos, m->rope_base, m->rope_freq_scale);
        lp_rope(m->k, n, m->n_head_kv, hd, m->n_rot, pos, m->rope_base, m->rope_freq_scale);
        // append k, v to the cache (fp16)
        for (int i = 0; i < kv_dim; i++) {
            const int64_t at = (int64_t)(i / hd) * k_len * hd + i % hd * LP_KV_BLOCK;  // head i / hd, dimension i % hd
            for (int t = 0; t < n; t++) {
                const int64_t p = pos + t, slot = at + p / LP_KV_BLOCK * hd * LP_KV_BLOCK + p % LP_KV_BLOCK;
                kc[slot] = lp_float_to_half(m->k[(int64_t)t * kv_dim + i]);
                vc[slot] = lp_float_to_half(m->v[(int64_t)t * kv_dim + i]);
            }
        }
        // xb2 (n, q_dim) = softmax(q k^T / sqrt(hd)) v, per head, causal
        lp_attention(m, kc, vc, n, pos);
        // x += xb2 Wo
        if ((rc = matmul(m, &L->wo, 0, m->xb2, n, m->xb))) return rc;
        for (int64_t i = 0; i < (int64_t)n * D; i++) m->x[i] += m->xb[i];

        // feed-forward: xb = rmsnorm(x); x += ffn(xb)
        lp_rmsnorm(m->xb, m->x, L->ffn_norm.data, n, D, m->rms_eps);
        if (m->n_expert > 0) {
            if ((rc = moe_ffn(m, L, n))) return rc;
        } else {
            const lp_tensor *gu[2] = { &L->ffn_gate, &L->ffn_up };
            float *gu_out[2] = { m->hb, m->hb2 };
            if ((rc = matmul_multi(m, 2, gu, 0, m->xb, n, gu_out))) return rc;
            lp_swiglu(m->hb, m->hb2, (int64_t)n * m->n_ff);
            if ((rc = matmul(m, &L->ffn_down, 0, m->hb, n, m->xb2))) return rc;
        }
        for (int64_t i = 0; i < (int64_t)n * D; i++) m->x[i] += m->xb2[i];
    }

    // final norm, then the output projection: all rows, or only the last
    if (output == LP_OUT_HIDDEN) {
        lp_rmsnorm(out, m->x, m->output_norm.data, n, D, m->rms_eps);
        return LP_OK;
    }
    const int first = output == LP_OUT_ALL_LOGITS ? 0 : n - 1, rows = n - first;
    lp_rmsnorm(m->xb, m->x + (int64_t)first * D, m->output_norm.data, rows, D, m->rms_eps);
    return matmul(m, &m->output, 0, m->xb, rows, out);
}
