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
enum lp_isa { LP_ISA_REF = 0, LP_ISA_AVX2 = 1, LP_ISA_NEON = 2, LP_ISA_AVX512 = 3, LP_ISA_DOTPROD = 4,
              LP_ISA_COUNT = 5 };

// Error codes (negative returns).
enum lp_err { LP_OK = 0, LP_EUNKNOWN_TYPE = -1, LP_EBAD_SIZE = -2, LP_EBAD_ISA = -3, LP_ENO_KERNEL = -4 };

// Best ISA this CPU runs and this build has (checked once).
int lp_best_isa(void);
// 1 when this build has kernels for isa and the CPU can run them.
int lp_isa_available(int isa);
// The ISA matmul uses; set to compare implementations. Returns LP_EBAD_ISA if unavailable.
int lp_set_isa(int isa);
int lp_get_isa(void);

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
void lp_rope(float *x, int64_t n, int n_head, int head_dim, int n_rot, int64_t pos0, float freq_base,
             float freq_scale);
void lp_softmax(float *x, int64_t n);
double lp_softmax_exps(float *x, int64_t n, float *max_out);
void lp_swiglu(float *gate, const float *up, int64_t n);

// ---------------------------------------------------------------------------
// The llama-architecture model (model.c). Python fills this from the GGUF file
// and owns every buffer; the forward pass allocates nothing.

typedef struct {
    const void *data;   // the tensor's bytes, NULL when the model has no such tensor
    int type;           // GGML type id
    int64_t rows, cols; // of one matrix (a vector: rows = 1; stacked experts: each expert's)
} lp_tensor;

typedef struct {
    lp_tensor attn_norm, wq, wk, wv, wo, ffn_norm;
    lp_tensor ffn_gate, ffn_up, ffn_down;                               // dense feed-forward
    lp_tensor ffn_gate_inp, ffn_gate_exps, ffn_up_exps, ffn_down_exps;  // mixture of experts
} lp_layer;

typedef struct {
    // hyperparameters
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_rot, n_ff;
    int n_expert, n_expert_used;   // 0, 0 for a dense model
    int n_ctx;                     // KV cache length
    int max_batch;                 // tokens per forward call the scratch holds
    int n_threads;
    float rms_eps, rope_base, rope_freq_scale;
    // weights
    lp_tensor tok_embd, output_norm, output;
    lp_layer *layers;              // (n_layer)
    // KV cache in fp16, k and v alike: per layer and kv head, blocks of LP_KV_BLOCK
    // positions, each (head_dim, LP_KV_BLOCK), n_ctx rounded up to whole blocks
    uint16_t *k_cache;  // (n_layer, n_ctx rounded up to LP_KV_BLOCK, times kv_dim)
    uint16_t *v_cache;  // (n_layer, n_ctx rounded up to LP_KV_BLOCK, times kv_dim)
    // scratch
    float *x;          // (max_batch, n_embd) residual stream
    float *xb;         // (max_batch, max(n_embd, q_dim)) normed input / block output
    float *xb2;        // (max_batch, max(n_embd, q_dim)) attention output / ffn output
    float *q;          // (max_batch, q_dim), q_dim = n_head * head_dim
    float *k, *v;      // (max_batch, kv_dim), kv_dim = n_head_kv * head_dim
    float *hb, *hb2;   // (max_batch, n_ff)
    float *att;        // (n_threads, LP_ATT_ROWS * n_ctx rounded up to LP_KV_BLOCK) attention scores
    float *att_part;   // (n_head_kv, LP_ATT_SEGS, LP_ATT_ROWS, head_dim + 2) partial attention outputs
    float *router;     // (max_batch, n_expert) router probabilities
    float *moe_x, *moe_y;   // (max_batch, n_embd) one expert's gathered input, output
    int32_t *moe_rows;      // (max_batch) tokens routed to one expert
    float *moe_w;           // (max_batch) their weights
    int32_t *moe_sel;       // (max_batch, n_expert_used) chosen experts per token
    float *moe_sel_w;       // (max_batch, n_expert_used) their weights
    void *work;        // activation quantization scratch
    int64_t work_size;
} lp_model;

// Positions per block of the K cache.
enum { LP_KV_BLOCK = 16 };

// Query rows an attention chunk takes (m->att holds LP_ATT_ROWS rows of scores per thread).
enum { LP_ATT_ROWS = 16 };
// At most this many position segments per kv head (decoding with fewer kv heads than
// twice the threads splits each head's positions), each at least LP_ATT_SEG_MIN long.
enum { LP_ATT_SEGS = 8, LP_ATT_SEG_MIN = 256 };

// LP_ESHAPE: head or expert counts that would index outside the buffers (the loader checks them first).
enum { LP_ECONTEXT = -10, LP_ETOKEN = -11, LP_EBATCH = -12, LP_EWORK = -13, LP_ESHAPE = -14 };

// What lp_forward writes to out.
enum lp_output {
    LP_OUT_LAST_LOGITS = 0,  // (1, n_vocab): the last token's logits
    LP_OUT_ALL_LOGITS = 1,   // (n, n_vocab)
    LP_OUT_HIDDEN = 2        // (n, n_embd): final-norm hidden states (embeddings), no projection
};

// Runs n tokens at positions pos..pos+n-1 (the KV cache holds 0..pos-1).
int lp_forward(lp_model *m, const int32_t *tokens, int n, int pos, float *out, int output);

// The int8 multiply-add peak (engine/peak.c): iters loop steps of register-only multiply-adds
// (AVX-512 VNNI vpdpbusd for LP_ISA_AVX512, vpmaddubsw + vpmaddwd for LP_ISA_AVX2) on each of
// n_threads threads. Returns the multiply-adds done (the caller times the call), or
// LP_EBAD_ISA / LP_EBAD_SIZE.
int64_t lp_int8_peak(int isa, int64_t iters, int n_threads);
