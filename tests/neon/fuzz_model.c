// fuzz_model.c — the fuzz harness's forward pass (model.c and what it calls) on tiny models
// with damaged weights, the KV cache's operations, and the thread pool; the kernels' part
// and main are in fuzz.c.
#include <string.h>

#include "fuzz.h"

#define RNG_SEED 0x9e3779b97f4a7c15ull
#include "rng.h"

// ---------------------------------------------------------------------------
// The forward pass (model.c: embedding, norms, rope, attention with and without
// position segments, dense and expert feed-forward, every architecture flag) on tiny models with damaged
// weights: a NaN in a norm (every logit must come out NaN), huge norms (activations
// past the fp16 range), random bytes everywhere (NaN and inf scales).

enum { D_NONE, D_NAN_NORM, D_HUGE_NORM, D_RANDOM, D_COUNT };

static lp_tensor new_tensor(int type, int64_t n_mat, int64_t rows, int64_t cols, int damage) {
    const lp_type_traits *tr = lp_traits(type);
    const int64_t n = n_mat * rows * cols;
    uint8_t *data = malloc((size_t)(n / tr->blck_size * tr->type_size));
    // small enough that a sound model's activations stay within fp16 (Q8_1's sums are fp16)
    fill_weights(type, data, n, damage == D_RANDOM ? P_MIXED : P_PLAIN, 0.002f);
    return (lp_tensor){ data, type, rows, cols };
}

static lp_tensor new_norm(int64_t dim, int damage) {
    float *w = malloc(sizeof(float) * (size_t)dim);
    for (int64_t i = 0; i < dim; i++) w[i] = damage == D_HUGE_NORM ? 1e30f : 1.0f + 0.1f * rnd_unit();
    if (damage == D_NAN_NORM) w[5] = NAN;
    if (damage == D_RANDOM) fill(w, dim, P_MIXED);
    return (lp_tensor){ w, LP_F32, 1, dim };
}

static float *zeros(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }

// A model as lp_decode takes it: weights, a cache of FZ_SEQ sequences, scratch.
enum { FZ_SEQ = 2, FZ_CTX = 600, FZ_BATCH = 32 };
typedef struct {
    lp_weights w;
    lp_kv kv;
    lp_scratch s;
    void *kv_mem, *s_mem;
} fz_model;

static void *aligned_zeros(int64_t bytes) {
    void *p = aligned_alloc(64, (size_t)((bytes + 63) / 64 * 64));
    memset(p, 0, (size_t)bytes);
    return p;
}

// Every architecture flag of lp_weights at once (runtime/arch.py): NEOX rope with YaRN and
// frequency factors, a magnitude factor, a sliding window on every other layer with its own
// base, GeGLU, embedding and attention scales, a final soft-cap, q/k norms, post norms, and
// q, k, v and gate, up fused into one tensor each, with one bias on the fused q, k, v.
static void every_flag(lp_weights *w, const int *types, int damage) {
    const int D = w->n_embd, F = w->n_ff, QKV = (w->n_head + 2 * w->n_head_kv) * w->head_dim;
    w->rope_neox = w->act_gelu = w->rope_yarn = 1;
    w->rope_base = 1e6f, w->rope_freq_scale = 0.25f, w->rope_orig_ctx = 64, w->rope_attn_factor = 1.2f;
    w->n_swa = 8, w->swa_pattern = 2, w->rope_base_swa = 10000.0f;
    w->embd_scale = 16.0f, w->attn_scale = 0.1f, w->final_softcap = 30.0f;
    w->rope_freqs = new_norm(w->n_rot / 2, D_NONE);
    for (int l = 0; l < w->n_layer; l++) {
        lp_layer *y = &w->layers[l];
        lp_tensor *gone[] = { &y->wq, &y->wk, &y->wv, &y->ffn_gate, &y->ffn_up };
        for (int i = 0; i < 5; i++) {
            free((void *)gone[i]->data);
            *gone[i] = (lp_tensor){ 0 };
        }
        y->wqkv = new_tensor(types[2], 1, QKV, D, damage);
        y->bqkv = new_norm(QKV, D_NONE);
        y->ffn_up = new_tensor(types[8], 1, 2 * F, D, damage);
        y->attn_q_norm = new_norm(w->head_dim, D_NONE);
        y->attn_k_norm = new_norm(w->head_dim, D_NONE);
        y->attn_post_norm = new_norm(D, damage == D_NAN_NORM ? D_NONE : damage);
        y->ffn_post_norm = new_norm(D, damage == D_NAN_NORM ? D_NONE : damage);
    }
}

// types: tok_embd, output, wq, wk, wv, wo, ffn gate (or router), gate, up, down
static fz_model *new_model(const int *types, int n_expert, int damage, int flags) {
    fz_model *m = calloc(1, sizeof(fz_model));
    const int D = 256, F = 256, V = 40, L = 2, H = 4, HKV = 2, HD = 64, E = n_expert;
    lp_weights *w = &m->w;
    *w = (lp_weights){ .n_vocab = V, .n_embd = D, .n_layer = L, .n_head = H, .n_head_kv = HKV, .head_dim = HD,
                       .n_rot = HD, .n_ff = F, .n_expert = E, .n_expert_used = E ? 2 : 0, .rms_eps = 1e-5f,
                       .rope_base = 10000.0f, .rope_freq_scale = 1.0f };
    w->tok_embd = new_tensor(types[0], 1, V, D, damage);
    w->output = new_tensor(types[1], 1, V, D, damage);
    w->output_norm = new_norm(D, damage == D_NAN_NORM ? D_NONE : damage);
    w->layers = calloc(L, sizeof(lp_layer));
    for (int l = 0; l < L; l++) {
        lp_layer *y = &w->layers[l];
        y->attn_norm = new_norm(D, l == 0 ? damage : D_NONE);
        y->ffn_norm = new_norm(D, damage == D_NAN_NORM ? D_NONE : damage);
        y->wq = new_tensor(types[2], 1, H * HD, D, damage);
        y->wk = new_tensor(types[3], 1, HKV * HD, D, damage);
        y->wv = new_tensor(types[4], 1, HKV * HD, D, damage);
        y->wo = new_tensor(types[5], 1, D, H * HD, damage);
        if (E) {
            y->ffn_gate_inp = new_tensor(types[6], 1, E, D, damage);
            y->ffn_gate_exps = new_tensor(types[7], E, F, D, damage);
            y->ffn_up_exps = new_tensor(types[8], E, F, D, damage);
            y->ffn_down_exps = new_tensor(types[9], E, D, F, damage);
        } else {
            y->ffn_gate = new_tensor(types[7], 1, F, D, damage);
            y->ffn_up = new_tensor(types[8], 1, F, D, damage);
            y->ffn_down = new_tensor(types[9], 1, D, F, damage);
        }
    }
    if (flags) every_flag(w, types, damage);
    const int64_t kv_bytes = lp_kv_size(w, FZ_SEQ, FZ_CTX), s_bytes = lp_scratch_size(w, FZ_BATCH, FZ_CTX, FZ_SEQ, 2);
    m->kv_mem = aligned_zeros(kv_bytes);
    m->s_mem = aligned_zeros(s_bytes);
    if (lp_kv_init(&m->kv, w, m->kv_mem, kv_bytes, FZ_SEQ, FZ_CTX) || 
        lp_scratch_init(&m->s, w, m->s_mem, s_bytes, FZ_BATCH, FZ_CTX, FZ_SEQ, 2)) {
        fprintf(stderr, "cannot lay out the fuzz model's cache and scratch\n");
        exit(2);
    }
    return m;
}

static void free_tensor(lp_tensor *t) { free((void *)t->data); }

static void free_model(fz_model *m) {
    lp_weights *w = &m->w;
    free_tensor(&w->tok_embd); free_tensor(&w->output); free_tensor(&w->output_norm); free_tensor(&w->rope_freqs);
    for (int l = 0; l < w->n_layer; l++) {
        lp_tensor *ts = &w->layers[l].attn_norm;  // every lp_tensor of the layer, in order
        for (int i = 0; i < (int)(sizeof(lp_layer) / sizeof(lp_tensor)); i++) free_tensor(&ts[i]);
    }
    free(w->layers); free(m->kv_mem); free(m->s_mem);
    free(m);
}

enum { OUT_LAST, OUT_ALL, OUT_HIDDEN };

// Runs n tokens at positions pos.. of sequence seq (its cache jumps to pos: what lies
// before holds zeros or earlier runs' values), and, when seq2 >= 0, n2 more rows of
// sequence seq2 from its length on, in the same batch. 1 when it succeeded and the
// outputs are as the damage says (finite for a sound model, all NaN after a NaN norm;
// anything otherwise).
static int run2(fz_model *m, int seq, int n, int pos, int seq2, int n2, int damage, int output) {
    int32_t tokens[FZ_BATCH], positions[FZ_BATCH], seqs[FZ_BATCH];
    int8_t marks[FZ_BATCH];
    const int total = n + (seq2 >= 0 ? n2 : 0);
    m->kv.len[seq] = pos;
    for (int t = 0; t < total; t++) {
        tokens[t] = (int32_t)(rnd() % (uint32_t)m->w.n_vocab);
        seqs[t] = t < n ? seq : seq2;
        positions[t] = t < n ? pos + t : m->kv.len[seq2] + t - n;
        marks[t] = output != OUT_LAST || t == n - 1 || t == total - 1;
    }
    int rows = 0;
    for (int t = 0; t < total; t++) rows += marks[t];
    const int width = output == OUT_HIDDEN ? m->w.n_embd : m->w.n_vocab;
    float *out = zeros((int64_t)rows * width);
    int8_t kinds[FZ_BATCH];
    for (int t = 0; t < total; t++) kinds[t] = t < n ? n > 1 || pos % 2 : seqs[t] != seq && n2 > 1;
    const lp_batch b = { total, tokens, positions, seqs, marks, kinds };
    int ok = lp_decode(&m->w, &m->kv, &m->s, &b, out, output == OUT_HIDDEN ? LP_OUT_HIDDEN : LP_OUT_LOGITS) == LP_OK;
    for (int i = 0; i < rows * width; i++)
        ok &= damage == D_NONE ? isfinite(out[i]) : damage == D_NAN_NORM ? isnan(out[i]) : 1;
    free(out);
    return ok;
}

static int run(fz_model *m, int n, int pos, int damage, int output) { return run2(m, 0, n, pos, -1, 0, damage, output); }

// 1 when one decode row of sequence 0 is refused with code `want`.
static int refused_with(fz_model *m, int want) {
    int32_t tok = 0, pos = 0, seq = 0;
    int8_t mark = 1;
    float out[40];
    m->kv.len[0] = 0;
    const lp_batch b = { 1, &tok, &pos, &seq, &mark };
    return lp_decode(&m->w, &m->kv, &m->s, &b, out, LP_OUT_LOGITS) == want;
}

void check_models(int isa) {
    const int dense[10] = { LP_Q8_0, LP_Q4_1, LP_Q4_K, LP_Q8_0, LP_Q6_K, LP_Q4_0, 0, LP_Q2_K, LP_Q3_K, LP_Q5_K };
    const int moe[10] = { LP_F32, LP_Q6_K, LP_F16, LP_BF16, LP_F32, LP_Q5_0, LP_F32, LP_Q4_K, LP_Q8_0, LP_Q5_1 };
    lp_set_isa(isa);
    for (int damage = 0; damage < D_COUNT; damage++)
        for (int e = 0; e < 3; e++) {  // dense, MoE, dense with every architecture flag
            fz_model *m = new_model(e == 1 ? moe : dense, e == 1 ? 4 : 0, damage, e == 2);
            int ok = run(m, 20, 0, damage, OUT_LAST);  // prompt: the batched product
            ok &= run(m, 1, 20, damage, OUT_LAST);    // decoding
            ok &= run(m, 3, 21, damage, OUT_ALL);
            ok &= run(m, 2, 24, damage, OUT_HIDDEN);
            // two sequences in one batch: a prompt chunk of one, decoding rows of the other
            ok &= run2(m, 1, 12, 0, 0, 1, damage, OUT_ALL);
            ok &= run2(m, 0, 1, 27, 1, 1, damage, OUT_LAST);
            // long contexts (the cache in between holds zeros): a batch, then decoding past 512
            // positions, where attention splits each head's positions into segments
            ok &= run(m, 32, 520, damage, OUT_LAST);
            ok &= run(m, 1, 590, damage, OUT_LAST);
            ok &= run2(m, 0, 1, 591, 1, 1, damage, OUT_ALL);
            // a context shift (every rope flag with e == 2) of damaged keys, then decoding on
            ok &= lp_kv_shift(&m->w, &m->kv, 0, 4, 300) == LP_OK && m->kv.len[0] == 592 - 300;
            ok &= run(m, 1, 292, damage, OUT_LAST);
            const char *what[D_COUNT] = { "forward, sound weights: finite logits", "forward, a NaN norm weight: NaN logits",
                                          "forward, huge norms", "forward, random bytes" };
            const char *kind[3] = { "dense", "moe", "every flag" };
            check(ok, what[damage], isa_name(isa), kind[e], damage);
            if (damage == D_NONE && e < 2) {  // shapes, types and rows that would index outside the buffers are refused
                lp_weights *w = &m->w;
                int refused = 1;
                if (e) {
                    w->n_expert_used = 5;
                    refused &= refused_with(m, LP_ESHAPE);
                    w->n_expert_used = 2;
                }
                w->tok_embd.rows = w->n_vocab - 1;
                refused &= refused_with(m, LP_ESHAPE);
                w->tok_embd.rows = w->n_vocab;
                const int wq_type = w->layers[1].wq.type;
                w->layers[1].wq.type = 16;  // a type the kernels do not know
                refused &= refused_with(m, LP_EUNKNOWN_TYPE);
                w->layers[1].wq.type = wq_type;
                // rows: a position that is not the sequence's next, a sequence that does not exist,
                // a position past the context, a token outside the vocabulary
                int32_t tok[2] = { 1, 2 }, pos[2] = { 0, 2 }, seq[2] = { 0, 0 };
                int8_t mark[2] = { 1, 1 };
                float out[80];
                lp_batch b = { 2, tok, pos, seq, mark };
                m->kv.len[0] = 0;
                refused &= lp_decode(w, &m->kv, &m->s, &b, out, LP_OUT_LOGITS) == LP_EPOS;  // a gap
                pos[1] = 0;
                refused &= lp_decode(w, &m->kv, &m->s, &b, out, LP_OUT_LOGITS) == LP_EPOS;  // the same position twice
                pos[1] = 1;
                seq[1] = FZ_SEQ;
                refused &= lp_decode(w, &m->kv, &m->s, &b, out, LP_OUT_LOGITS) == LP_ESEQ;
                seq[1] = -1;
                refused &= lp_decode(w, &m->kv, &m->s, &b, out, LP_OUT_LOGITS) == LP_ESEQ;
                seq[1] = 0;
                tok[1] = w->n_vocab;
                refused &= lp_decode(w, &m->kv, &m->s, &b, out, LP_OUT_LOGITS) == LP_ETOKEN;
                tok[1] = 2;
                m->kv.len[0] = FZ_CTX - 1;
                pos[0] = FZ_CTX - 1, pos[1] = FZ_CTX;
                refused &= lp_decode(w, &m->kv, &m->s, &b, out, LP_OUT_LOGITS) == LP_ECONTEXT;
                refused &= m->kv.len[0] == FZ_CTX - 1;  // a refused batch appends nothing
                m->kv.len[0] = 0;
                pos[0] = 0, pos[1] = 1;
                int8_t kinds[2] = { 1, 0 };  // a prompt row and a generated token's row of one sequence
                b.prompt = kinds;
                refused &= lp_decode(w, &m->kv, &m->s, &b, out, LP_OUT_LOGITS) == LP_EBATCH;
                // more generated rows of one sequence than LP_GEN_ROWS (a token and its drafts)
                int32_t many_tok[LP_GEN_ROWS + 1], many_pos[LP_GEN_ROWS + 1], many_seq[LP_GEN_ROWS + 1];
                int8_t many_kind[LP_GEN_ROWS + 1];
                for (int i = 0; i <= LP_GEN_ROWS; i++) many_tok[i] = 1, many_pos[i] = i, many_seq[i] = 0, many_kind[i] = 0;
                lp_batch many = { LP_GEN_ROWS + 1, many_tok, many_pos, many_seq, NULL, many_kind };
                refused &= lp_decode(w, &m->kv, &m->s, &many, out, LP_OUT_LOGITS) == LP_EBATCH;
                // LP_GEN_ROWS of them run, each as a lone generated row (attention segments at the
                // end of the context)
                m->kv.len[0] = FZ_CTX - LP_GEN_ROWS;
                for (int i = 0; i < LP_GEN_ROWS; i++) many_pos[i] = FZ_CTX - LP_GEN_ROWS + i;
                many.n = LP_GEN_ROWS;
                refused &= lp_decode(w, &m->kv, &m->s, &many, out, LP_OUT_LOGITS) == LP_OK && m->kv.len[0] == FZ_CTX;
                m->kv.len[0] = 0;
                kinds[0] = kinds[1] = 1;
                refused &= lp_decode(w, &m->kv, &m->s, &b, out, LP_OUT_LOGITS) == LP_OK && m->kv.len[0] == 2;
                b.prompt = NULL;
                b.n = FZ_BATCH + 1;
                refused &= lp_decode(w, &m->kv, &m->s, &b, out, LP_OUT_LOGITS) == LP_EBATCH;
                refused &= lp_kv_copy(&m->kv, 0, 1, FZ_CTX) == LP_EPOS && lp_kv_copy(&m->kv, 0, FZ_SEQ, 1) == LP_ESEQ;
                refused &= lp_kv_truncate(&m->kv, -1, 0) == LP_ESEQ && lp_kv_truncate(&m->kv, 0, -1) == LP_EPOS;
                for (int q = 0; q < FZ_SEQ; q++)  // every page of the cache, within its bounds
                    for (int l = 0; l < w->n_layer; l++) refused &= lp_kv_warm(&m->kv, q, l) == LP_OK;
                refused &= lp_kv_warm(&m->kv, FZ_SEQ, 0) == LP_ESEQ && lp_kv_warm(&m->kv, -1, 0) == LP_ESEQ &&
                           lp_kv_warm(&m->kv, 0, w->n_layer) == LP_EBAD_SIZE && lp_kv_warm(&m->kv, 0, -1) == LP_EBAD_SIZE;
                refused &= lp_kv_shift(w, &m->kv, FZ_SEQ, 0, 1) == LP_ESEQ && lp_kv_shift(w, &m->kv, 0, 1, 2) == LP_EPOS &&
                           lp_kv_shift(w, &m->kv, 0, -1, 1) == LP_EPOS && lp_kv_shift(w, &m->kv, 0, 0, -1) == LP_EPOS;
                check(refused, "forward refuses bad expert counts, embedding rows, types, rows", isa_name(isa),
                      e ? "moe" : "dense", damage);
            }
            free_model(m);
        }
}

// The thread pool under a stream of jobs of changing sizes, each context on the stack of a
// call that returns right after its job: every chunk of every job must run exactly once, with
// its own job's context (a worker that woke late and paired one job's function or chunk count
// with another's, or with a returned call's context, shows here or to ASan).
typedef struct { int n, job; int ran[40]; int bad; } pool_ctx;
static void pool_chunk(void *vctx, int chunk, int ith) {
    pool_ctx *c = vctx;
    (void)ith;
    if (chunk < 0 || chunk >= c->n) c->bad = 1;
    else __atomic_fetch_add(&c->ran[chunk], 1, __ATOMIC_RELAXED);
}
static __attribute__((noinline)) int pool_job(int job) {
    pool_ctx c = { .n = 1 + (job * 7) % 37, .job = job };
    lp_parallel_chunks(pool_chunk, &c, c.n, 2 + job % 2);
    int ok = !c.bad;
    for (int i = 0; i < c.n; i++) ok &= c.ran[i] == 1;
    return ok;
}
#if defined(__x86_64__)
enum { POOL_JOBS = 40000 };
#else
enum { POOL_JOBS = 4000 };  // under qemu: slower by far
#endif
void check_pool(void) {
    int ok = 1;
    for (int job = 0; job < POOL_JOBS; job++) ok &= pool_job(job);
    check(ok, "thread pool: every chunk of every job once, with its own context", "-", "-", 0);
}
