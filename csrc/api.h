// api.h — what Python sees of the kernel library (through cffi; build.py feeds
// this file to cffi's cdef with the preprocessor lines removed, so keep it plain C).
#pragma once
#include <stdint.h>

// GGML type ids, as stored in GGUF tensor infos (the types the library takes: type_list.h).
enum lp_type {
    LP_F32 = 0, LP_F16 = 1, LP_Q4_0 = 2, LP_Q4_1 = 3, LP_Q5_0 = 6, LP_Q5_1 = 7,
    LP_Q8_0 = 8, LP_Q8_1 = 9, LP_Q2_K = 10, LP_Q3_K = 11, LP_Q4_K = 12, LP_Q5_K = 13,
    LP_Q6_K = 14, LP_Q8_K = 15, LP_BF16 = 30, LP_TYPE_COUNT = 31
};

// Instruction sets a kernel may be built for.
// LP_ISA_AVX512: AVX2 kernels plus the AVX-512 VNNI batched product of prompt processing.
// LP_ISA_DOTPROD: NEON plus the aarch64 dot-product instructions (SDOT) for the hot types.
// LP_ISA_I8MM: DOTPROD kernels plus the aarch64 int8 matrix-multiply (SMMLA) batched product.
enum lp_isa { LP_ISA_REF = 0, LP_ISA_AVX2 = 1, LP_ISA_NEON = 2, LP_ISA_AVX512 = 3, LP_ISA_DOTPROD = 4,
              LP_ISA_I8MM = 5, LP_ISA_COUNT = 6 };

// Error codes (negative returns).
enum lp_err { LP_OK = 0, LP_EUNKNOWN_TYPE = -1, LP_EBAD_SIZE = -2, LP_EBAD_ISA = -3, LP_ENO_KERNEL = -4 };

// Best ISA this CPU runs and this build has (checked once).
int lp_best_isa(void);
// 1 when this build has kernels for isa and the CPU can run them.
int lp_isa_available(int isa);
// The ISA matmul uses; set to compare implementations. Returns LP_EBAD_ISA if unavailable.
int lp_set_isa(int isa);
int lp_get_isa(void);
// 1 when the AVX-512 batched product takes AMX tiles: the CPU has AMX-INT8, the kernel granted
// this process the tile state, and LLAMAPACK_AMX is not 0 (checked once).
int lp_gemm_amx(void);

// Block size, bytes per block and dot-product activation type of a type id.
int lp_type_info(int type, int *blck_size, int *type_size, int *vec_dot_type);
// Byte offsets of the fp16 scale fields inside one block (up to 2); returns how many.
int lp_type_half_fields(int type, int *offsets);

// dst[0..n) = the n values stored in src (n a multiple of the block size).
int lp_dequantize(int type, const void *src, float *dst, int64_t n);

// Bytes of scratch matmul needs for n activation rows of cols values on n_threads threads.
int64_t lp_matmul_work_size(int type, int64_t cols, int64_t n, int n_threads);
// y (n, rows) = x (n, cols) @ W^T, W (rows, cols) of the given type. work holds
// lp_matmul_work_size bytes. Uses n_threads threads (the caller is one of them).
int lp_matmul(int type, const void *w, int64_t rows, int64_t cols, const float *x, int64_t n,
              float *y, void *work, int n_threads);

// Several matrices of cols columns on the same x (n, cols), y_i = x @ W_i^T, in one
// job (the input quantized once per activation format). At most LP_MM_MAX.
enum { LP_MM_MAX = 4 };
typedef struct { int type; const void *w; int64_t rows; float *y; } lp_mm;
int64_t lp_matmul_multi_work_size(const int *types, int count, int64_t cols, int64_t n, int n_threads);
int lp_matmul_multi(const lp_mm *mm, int count, int64_t cols, const float *x, int64_t n, void *work,
                    int n_threads);
// The same with the first n_single rows computed by row dot products and the others by the
// batched product wherever the type has one, whatever their count: each row's result then
// depends only on which of the two it is (lp_matmul picks by n: the batched product from
// LP_BATCHED_MIN rows on).
int lp_matmul_rows(int type, const void *w, int64_t rows, int64_t cols, const float *x, int64_t n, int64_t n_single,
                   float *y, void *work, int n_threads);
int lp_matmul_multi_rows(const lp_mm *mm, int count, int64_t cols, const float *x, int64_t n, int64_t n_single,
                         void *work, int n_threads);

// Single kernels, for tests: quantize n floats to an activation type; dot one
// weight row with one quantized activation row.
int lp_quantize_act(int act_type, int isa, const float *x, void *y, int64_t n);
int lp_vec_dot(int type, int isa, int64_t n, const void *w, const void *act, float *out);

// Reads nbytes of buf reps times on n_threads threads; returns a checksum (the
// caller times it: this is the read-bandwidth yardstick of the benchmarks).
double lp_read_sum(const void *buf, int64_t nbytes, int reps, int n_threads);

// ---------------------------------------------------------------------------
// Forward-pass operations (ops.c), row-wise over n rows.
void lp_rmsnorm(float *out, const float *x, const float *w, int64_t n, int64_t dim, float eps);
// Rotates the n_rot first dimensions of every head of row r by position pos[r].
void lp_rope(float *x, int64_t n, const int32_t *pos, int n_head, int head_dim, int n_rot, float freq_base,
             float freq_scale);
// The same rotation in GGML's NEOX mode: value i pairs with value i + n_rot/2 (Qwen, Gemma, Phi-3).
void lp_rope_neox(float *x, int64_t n, const int32_t *pos, int n_head, int head_dim, int n_rot, float freq_base,
                  float freq_scale);
void lp_softmax(float *x, int64_t n);
double lp_softmax_exps(float *x, int64_t n, float *max_out);
void lp_swiglu(float *gate, const float *up, int64_t n);
// gate[i] = gelu(gate[i]) * up[i], GELU's tanh approximation (GeGLU: Gemma).
void lp_geglu(float *gate, const float *up, int64_t n);

// ---------------------------------------------------------------------------
// The llama-architecture model (model.c), in three parts, each in memory the caller
// owns and C sizes and lays out (the forward pass allocates nothing):
//   lp_weights  hyperparameters and tensors, read-only, shared by every sequence;
//   lp_kv       the KV cache of n_seq sequences of up to n_ctx positions each;
//   lp_scratch  the buffers of one forward call of up to max_batch rows.
// A forward call (lp_decode) runs a batch of rows, each (token, position, sequence),
// as llama.cpp's llama_batch: prompt chunks of several sequences and single decode rows
// share one call, and every weight matrix is read once per call.

typedef struct {
    const void *data;   // the tensor's bytes, NULL when the model has no such tensor
    int type;           // GGML type id
    int64_t rows, cols; // of one matrix (a vector: rows = 1; stacked experts: each expert's)
} lp_tensor;

typedef struct {
    lp_tensor attn_norm, wq, wk, wv, wo, ffn_norm;
    lp_tensor ffn_gate, ffn_up, ffn_down;                               // dense feed-forward
    lp_tensor ffn_gate_inp, ffn_gate_exps, ffn_up_exps, ffn_down_exps;  // mixture of experts
    // optional (data NULL when the architecture or the file has none; runtime/arch.py):
    lp_tensor bq, bk, bv;                      // (q_dim), (kv_dim), (kv_dim) biases of q, k, v
    lp_tensor attn_q_norm, attn_k_norm;        // (head_dim) RMS norm weights per head of q and k
    lp_tensor attn_post_norm, ffn_post_norm;   // (n_embd) norms of the attention and FFN outputs
    lp_tensor wqkv;                            // (q_dim + 2 kv_dim, n_embd) q, k, v in one (Phi-3): wq, wk, wv empty
    lp_tensor bqkv;                            // (q_dim + 2 kv_dim) its bias, when one (instead of bq, bk, bv)
    // a dense layer without ffn_gate has gate and up in ffn_up (2 n_ff, n_embd), gate rows first (Phi-3)
} lp_layer;

typedef struct {
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_rot, n_ff;
    int n_expert, n_expert_used;   // 0, 0 for a dense model
    float rms_eps, rope_base, rope_freq_scale;
    lp_tensor tok_embd, output_norm, output;
    lp_layer *layers;              // (n_layer)
    // architecture flags (runtime/arch.py; all 0 is the plain llama layer):
    int rope_neox;                 // rotate value i with i + n_rot/2 (NEOX) instead of adjacent pairs
    int act_gelu;                  // GeGLU (GELU, tanh approximation) instead of SwiGLU
    float embd_scale;              // token embeddings times this (0: 1)
    float attn_scale;              // q.k scale (0: 1 / sqrt(head_dim))
    int n_swa, swa_pattern;        // sliding window of n_swa positions (0: none) on every layer
                                   // but each swa_pattern-th (0: on every layer)
    float rope_base_swa;           // rope base of the sliding-window layers (their scale is 1)
    float final_softcap;           // logits c * tanh(logits / c) (0: none)
    // rope scaling beyond linear (runtime/model_check.py's rope_* fields):
    lp_tensor rope_freqs;          // (n_rot/2) divisors of the angles (Llama 3.1+), or empty
    lp_tensor rope_long, rope_short;  // (n_rot/2) LongRoPE's (Phi-3): long when n_ctx > rope_orig_ctx
    int rope_yarn;                 // YaRN (with rope_freq_scale as 1 / its factor)
    int rope_orig_ctx;             // the context the model was trained for (YaRN, LongRoPE)
    float rope_attn_factor;        // cos and sin times this (0: 1)
} lp_weights;

// Positions per block of the KV cache.
enum { LP_KV_BLOCK = 16 };

// Prompt rows of one sequence from which a call uses the batched product (see lp_batch).
enum { LP_BATCHED_MIN = 16 };

// Generated rows one sequence may have in a call: a token and the draft tokens that
// follow it (speculative decoding verifies them in one pass; see lp_batch).
enum { LP_GEN_ROWS = 16 };

// The KV cache in fp16, K and V alike: per sequence, layer and kv head, blocks of
// LP_KV_BLOCK positions, each (head_dim, LP_KV_BLOCK); lp_kv_head and lp_kv_index
// (lp.h) are the one place that addresses it. Sequence s holds positions
// 0..len[s]-1; a forward call appends to it.
typedef struct {
    int n_seq, n_ctx;           // sequences; positions each
    int n_layer, n_head_kv, head_dim;
    int64_t ctx_blocks;         // n_ctx rounded up to whole blocks
    uint16_t *k, *v;            // (n_seq, n_layer, n_head_kv, ctx_blocks * head_dim)
    int32_t *len;               // (n_seq) positions each sequence holds
} lp_kv;

// Bytes of the cache of n_seq sequences of n_ctx positions (negative: an error code).
int64_t lp_kv_size(const lp_weights *w, int n_seq, int n_ctx);
// Lays the cache out in mem (lp_kv_size bytes, 64-byte aligned), every sequence empty.
int lp_kv_init(lp_kv *kv, const lp_weights *w, void *mem, int64_t size, int n_seq, int n_ctx);
// Sequence dst becomes a copy of the first n positions of sequence src (n <= len[src]).
int lp_kv_copy(lp_kv *kv, int src, int dst, int n);
// Sequence seq keeps its first n positions (n >= its length: unchanged); n = 0 clears it.
int lp_kv_truncate(lp_kv *kv, int seq, int n);
// Makes the memory of sequence seq's cells in one layer resident, their values unchanged
// (each page read and written back): the first write to a page of a fresh cache faults it
// in, and with transparent huge pages one such write zeroes 2 MiB. A server warms its idle
// sequences this way rather than stalling every stream on a slot's first use. Not while
// another thread runs a forward pass on this cache.
int lp_kv_warm(lp_kv *kv, int seq, int layer);
// Context shift (kv_shift.c): sequence seq drops positions keep .. keep+discard-1; the later
// ones move down by discard, their k rotated to the new positions. len[seq] -= discard.
int lp_kv_shift(const lp_weights *w, lp_kv *kv, int seq, int keep, int discard);

// Query rows an attention chunk takes (each thread's scores hold LP_ATT_ROWS rows).
enum { LP_ATT_ROWS = 16 };
// At most this many position segments per kv head (decoding with fewer kv heads than
// twice the threads splits each head's positions), each at least LP_ATT_SEG_MIN long.
enum { LP_ATT_SEGS = 8, LP_ATT_SEG_MIN = 256 };

typedef struct {
    int max_batch, n_ctx, n_seq, n_threads;
    float *x;          // (max_batch, n_embd) residual stream
    float *xb;         // (max_batch, max(n_embd, q_dim)) normed input / block output
    float *xb2;        // (max_batch, max(n_embd, q_dim)) attention output / ffn output
    float *q;          // (max_batch, q_dim), q_dim = n_head * head_dim
    float *k, *v;      // (max_batch, kv_dim), kv_dim = n_head_kv * head_dim
    float *hb, *hb2;   // (max_batch, n_ff)
    float *att;        // (n_threads, LP_ATT_ROWS * ctx_blocks) attention scores
    float *att_part;   // (min(max_batch, n_seq) * n_head, LP_ATT_SEGS, head_dim + 2) decoding rows'
                       // partial attention outputs per position segment
    int32_t *order;    // (max_batch) the batch row of each row as the pass runs them (grouped by sequence)
    int32_t *row_pos, *row_seq;  // (max_batch) their positions and sequences
    int32_t *groups;   // (2 * max_batch, 3) per sequence in the batch: sequence, first row, rows
    int32_t *next;     // (max_batch) a sequence's next position while checking a batch; then each
                       // batch row's place in `order`
    int32_t *att_first;  // (max_batch + 1) attention: each sequence group's first chunk
    float *rope;       // (max_batch, head_dim) the rows' rope cos and sin (lp_rope_table)
    float *router;     // (max_batch, n_expert) router probabilities
    float *moe_x, *moe_y;   // (max_batch, n_embd) one expert's gathered input, output
    int32_t *moe_rows;      // (max_batch) tokens routed to one expert
    float *moe_w;           // (max_batch) their weights
    int32_t *moe_sel;       // (max_batch, n_expert_used) chosen experts per token
    float *moe_sel_w;       // (max_batch, n_expert_used) their weights
    void *work;        // activation quantization scratch of the largest matrix product
    int64_t work_size;
} lp_scratch;

// Bytes of scratch for batches of up to max_batch rows over caches of up to n_seq sequences
// of n_ctx positions, on n_threads threads (negative: an error code, e.g. a weight type the
// kernels do not take).
int64_t lp_scratch_size(const lp_weights *w, int max_batch, int n_ctx, int n_seq, int n_threads);
int lp_scratch_init(lp_scratch *s, const lp_weights *w, void *mem, int64_t size, int max_batch, int n_ctx,
                    int n_seq, int n_threads);

// One forward call: n rows; row t runs token[t] at position pos[t] of sequence seq[t].
// A sequence's rows come in order of position, the first at the sequence's length
// (each appends one position). out[t] != 0 marks the rows whose output is written.
// prompt[t] says what row t is: a prompt row (1) or a generated token's row (0; up to
// LP_GEN_ROWS of a sequence: a token and its drafts, each computed exactly as if it were
// its sequence's only row, so that verifying drafts gives the bits of decoding them one
// at a time; attention splits its positions into segments by the row's own length).
// NULL: a sequence's only row is a generated token's, the rows of a sequence
// with several are prompt rows. A sequence's prompt rows are computed by the batched
// product when it has LP_BATCHED_MIN or more of them in the call (where the type has
// one), else like generated tokens by row dot products; output projections by row dot
// products. So a row's result never depends on the other sequences in the call, and a
// prompt gives the same bits in any chunks of LP_BATCHED_MIN or more rows.
typedef struct {
    int n;
    const int32_t *token, *pos, *seq;  // (n)
    const int8_t *out;                 // (n)
    const int8_t *prompt;              // (n) or NULL
} lp_batch;

// LP_ESHAPE: head or expert counts that would index outside the buffers (the loader checks them first).
// LP_EPOS: a row's position is not its sequence's next one. LP_ESEQ: no such sequence.
// LP_EBATCH also: a sequence with generated and prompt rows in one call, or more than LP_GEN_ROWS generated.
enum { LP_ECONTEXT = -10, LP_ETOKEN = -11, LP_EBATCH = -12, LP_EWORK = -13, LP_ESHAPE = -14, LP_EPOS = -15,
       LP_ESEQ = -16 };

// What lp_decode writes to out, one row per marked row, in batch order.
enum lp_output {
    LP_OUT_LOGITS = 0,  // (rows, n_vocab)
    LP_OUT_HIDDEN = 1   // (rows, n_embd): final-norm hidden states (embeddings), no projection
};

// Runs the batch: appends each row's k and v to its sequence's cache, writes the
// marked rows' outputs. On an error nothing is appended (lengths unchanged).
int lp_decode(const lp_weights *w, lp_kv *kv, lp_scratch *s, const lp_batch *b, float *out, int output);

// ---------------------------------------------------------------------------
// Weight quantization (quants/quantize*.c): the bytes llama.cpp's reference quantizers
// write into a model file (no importance matrix), bit for bit.

// Refusals of lp_quantize_rows: a row holding NaN or inf; an output whose fp16 scales
// (F16 / BF16: values) overflow to inf.
enum { LP_ENONFINITE = -20, LP_EOVERFLOW = -21 };

// dst = nrows rows of n_per_row values of src (type src_type: F32, F16, BF16 or a
// quantized type, read as floats) in dst_type (a quantized type, F16 or BF16), on
// n_threads threads (the caller is one of them). work holds n_threads * n_per_row
// floats. Returns LP_OK, or an error with *bad_row the first refused row (else -1).
int lp_quantize_rows(int dst_type, int src_type, const void *src, void *dst, int64_t nrows, int64_t n_per_row,
                     float *work, int n_threads, int64_t *bad_row);

// The int8 multiply-add peak (engine/peak.c): iters loop steps of register-only multiply-adds
// (AVX-512 VNNI vpdpbusd for LP_ISA_AVX512, vpmaddubsw + vpmaddwd for LP_ISA_AVX2) on each of
// n_threads threads. Returns the multiply-adds done (the caller times the call), or
// LP_EBAD_ISA / LP_EBAD_SIZE.
int64_t lp_int8_peak(int isa, int64_t iters, int n_threads);
// The same on AVX2 with vpmaddubsw's pair sums added in int16 (vpaddw), never widened: the
// ceiling of the AVX2 tiles that add several steps of small weights in int16 first.
int64_t lp_int8_peak_i16(int64_t iters, int n_threads);
