// lp.h — llamapack's kernel library: tensor types, block layouts, half-float
// conversion, and the per-type function table every kernel file fills in.
//
// Block layouts are the GGML ones (the bytes inside a GGUF file); each struct is
// checked against its byte size below. Activation formats (Q8_0, Q8_1, Q8_K) are
// what the integer dot products consume: a row of float activations is quantized
// once to 8-bit blocks, then dotted with every weight row.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "api.h"
#include "type_list.h"

// ---------------------------------------------------------------------------
// Instruction sets. Every kernel has a plain-C reference; the SIMD versions are
// compiled only where the target has them and picked at run time (types.c).
#if defined(__x86_64__) || defined(_M_X64)
#define LP_X86 1
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#define LP_ARM 1
#endif

// ---------------------------------------------------------------------------
// Half floats. Conversions are exact (half → float) or round-to-nearest-even
// (float → half), matching numpy's float16.
typedef uint16_t lp_half;

static inline float lp_bits_to_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t lp_float_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float lp_half_to_float(lp_half h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    const uint32_t man = h & 0x3ff;
    if (exp == 0x1f) return lp_bits_to_float(sign | 0x7f800000u | (man << 13));  // inf / nan
    if (exp != 0) return lp_bits_to_float(sign | ((exp + 112) << 23) | (man << 13));
    // zero or subnormal: man * 2^-24, exact in float
    const float v = (float)man * 5.9604644775390625e-08f;
    return sign ? -v : v;
}

static inline lp_half lp_float_to_half(float f) {
    const uint32_t x = lp_float_to_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000;
    const uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (lp_half)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) return (lp_half)(sign | 0x7c00);  // rounds past 65504: inf
    if (ax < 0x38800000u) {                                   // below 2^-14: subnormal half
        // ties-to-even rounding of ax's value to a multiple of 2^-24, done in float
        const float v = lp_bits_to_float(ax) + 0.5f;           // 0.5 = 2^-1: aligns the ulp to 2^-24
        return (lp_half)(sign | (lp_float_to_bits(v) - lp_float_to_bits(0.5f)));
    }
    const uint32_t odd = (ax >> 13) & 1;
    const uint32_t r = ax + 0xc8000fffu + odd;  // rebias exponent (-112 << 23) and round
    return (lp_half)(sign | (r >> 13));
}

// n floats as IEEE halves, lp_float_to_half's bits (quantize_legacy.c: F16C on x86)
void lp_floats_to_halves(lp_half *restrict y, const float *restrict x, int64_t n);

static inline float lp_bf16_to_fp32(uint16_t h) { return lp_bits_to_float((uint32_t)h << 16); }

// ---------------------------------------------------------------------------
// Block layouts (GGML). QK = elements per block.
#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256
#define K_SCALE_SIZE 12

typedef struct { lp_half d; uint8_t qs[QK4_0 / 2]; } block_q4_0;
typedef struct { lp_half d, m; uint8_t qs[QK4_1 / 2]; } block_q4_1;
typedef struct { lp_half d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;
typedef struct { lp_half d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1;
typedef struct { lp_half d; int8_t qs[QK8_0]; } block_q8_0;
typedef struct { lp_half d, s; int8_t qs[QK8_1]; } block_q8_1;  // s = d * sum(qs)

typedef struct {  // 2.625 bits per weight
    uint8_t scales[QK_K / 16];  // low nibble: scale, high nibble: min, per 16 weights
    uint8_t qs[QK_K / 4];       // 2-bit quants
    lp_half d, dmin;            // super-block scales for the scales and the mins
} block_q2_K;
typedef struct {  // 3.4375 bits per weight
    uint8_t hmask[QK_K / 8];    // high bit of each quant
    uint8_t qs[QK_K / 4];       // low 2 bits
    uint8_t scales[12];         // 16 6-bit scales, packed
    lp_half d;
} block_q3_K;
typedef struct {  // 4.5 bits per weight
    lp_half d, dmin;
    uint8_t scales[K_SCALE_SIZE];  // 8 6-bit scales and 8 6-bit mins, packed
    uint8_t qs[QK_K / 2];
} block_q4_K;
typedef struct {  // 5.5 bits per weight
    lp_half d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
typedef struct {  // 6.5625 bits per weight
    uint8_t ql[QK_K / 2];       // low 4 bits
    uint8_t qh[QK_K / 4];       // high 2 bits
    int8_t scales[QK_K / 16];   // 8-bit scales
    lp_half d;
} block_q6_K;
typedef struct {  // activations for the K-quant dot products
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];  // sum of each group of 16 quants
} block_q8_K;

_Static_assert(sizeof(block_q4_0) == 18, "q4_0 size");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1 size");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0 size");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1 size");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0 size");
_Static_assert(sizeof(block_q8_1) == 36, "q8_1 size");
_Static_assert(sizeof(block_q2_K) == 84, "q2_K size");
_Static_assert(sizeof(block_q3_K) == 110, "q3_K size");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K size");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K size");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K size");
_Static_assert(sizeof(block_q8_K) == 292, "q8_K size");

// ---------------------------------------------------------------------------
// Function shapes. n is a count of elements, always a whole number of blocks.
typedef void (*lp_to_float_fn)(const void *restrict x, float *restrict y, int64_t n);
typedef void (*lp_from_float_fn)(const float *restrict x, void *restrict y, int64_t n);
// *s = dot(weights x, activations y); x in the weight type, y in its vec_dot_type.
typedef void (*lp_vec_dot_fn)(int n, float *restrict s, const void *restrict x, const void *restrict y);
// s[j * bs] = dot(x, activation row j at y + j * by), j = 0..3: one weight row decoded once for
// four activation rows (prompt processing). Each result equals vec_dot's, bit for bit.
typedef void (*lp_vec_dot_4acts_fn)(int n, float *restrict s, size_t bs, const void *restrict x,
                                    const void *restrict y, size_t by);
// vec_dot_4acts for nr = 1..LP_ROWS_MAX activation rows (decoding several sequences, small
// prompt groups): each result equals vec_dot's, bit for bit.
#define LP_ROWS_MAX 8
typedef void (*lp_vec_dot_rows_fn)(int n, float *restrict s, size_t bs, const void *restrict x,
                                   const void *restrict y, size_t by, int nr);
// s[r] = dot(weight row r at x + r * bx, y), r = 0..3: four weight rows against one
// activation row (decoding), the activation read once. Each result equals vec_dot's, bit for bit.
typedef void (*lp_vec_dot_4weights_fn)(int n, float *restrict s, const void *restrict x, size_t bx,
                                       const void *restrict y);

// Weights as int8 for the batched product of prompt processing (gemm.c): n
// elements of one row to int8 quants q, a float scale per unit of s8_unit (16, 32
// or 256) elements, an integer sub-scale per s8_sub elements (types with s8_sub > 0)
// and a float min per unit of s8_min_unit: element k =
// scale[k / s8_unit] * sub[k / s8_sub] * q[k] + min[k / s8_min_unit]. Types without
// mins leave min untouched, types without sub-scales sub. The scales and mins are
// exact products of the block's fields, so the integer dot products are the ones
// vec_dot computes.
typedef void (*lp_to_s8_fn)(const void *restrict x, int8_t *restrict q, float *restrict scale,
                            int16_t *restrict sub, float *restrict min, int64_t n);

typedef struct {
    const char *name;
    int blck_size;                       // elements per block
    int type_size;                       // bytes per block
    int vec_dot_type;                    // activation format for vec_dot (LP_F32: plain floats)
    int n_half;                          // fp16 scale fields in a block, at byte offsets half_off
    int half_off[2];
    lp_to_float_fn to_float;             // reference dequantizer, bit-exact with gguf-py
    lp_from_float_fn from_float[LP_ISA_COUNT];  // activation quantizer (activation types only)
    lp_vec_dot_fn vec_dot[LP_ISA_COUNT];        // NULL where not compiled for that ISA
    lp_vec_dot_4acts_fn vec_dot_4acts[LP_ISA_COUNT];        // NULL: matmul makes four vec_dot calls
    lp_vec_dot_4weights_fn vec_dot_4weights[LP_ISA_COUNT];  // NULL: a vec_dot call per weight row
    lp_vec_dot_rows_fn vec_dot_rows[LP_ISA_COUNT];  // NULL: vec_dot_4acts, then vec_dot per row
    int64_t max_row_bytes_4weights;      // vec_dot_4weights only for rows up to this long
                                         // (where it measured faster)
    lp_to_s8_fn to_s8[LP_ISA_COUNT];     // [LP_ISA_REF] NULL: no batched product (float types);
                                         // NULL for an ISA: the reference serves it
    int s8_unit, s8_min;                 // to_s8's unit of scales (columns); 1 when it writes mins
    int s8_min_unit;                     // its unit of mins (columns; divides s8_unit)
    int s8_sub;                          // its unit of integer sub-scales (columns; 0: none)
    lp_from_float_fn quantize;           // weight quantizer (quantize_*.c): llama.cpp's reference
                                         // bytes; NULL for a type no model file is written in
} lp_type_traits;

// NULL for a type id the library does not know.
const lp_type_traits *lp_traits(int type);

// ---------------------------------------------------------------------------
// Kernels, by file. Names: lp_<type>_to_float, lp_quantize_<act>_<isa>,
// lp_vec_dot_<type>_<isa>. The <isa> ones exist only where compiled. The declaration
// macros take type_list.h's X(NAME, name) pairs.
#define LP_DECLARE_DOT(T, t)                                                                              \
    void lp_vec_dot_##t##_ref(int n, float *restrict s, const void *restrict x, const void *restrict y);  \
    void lp_vec_dot_##t##_avx2(int n, float *restrict s, const void *restrict x, const void *restrict y); \
    void lp_vec_dot_##t##_neon(int n, float *restrict s, const void *restrict x, const void *restrict y);
#define LP_DECLARE_DOT_4ACTS(T, t)                                                                \
    void lp_vec_dot_4acts_##t##_avx2(int n, float *restrict s, size_t bs, const void *restrict x, \
                                     const void *restrict y, size_t by);                          \
    void lp_vec_dot_4acts_##t##_neon(int n, float *restrict s, size_t bs, const void *restrict x, \
                                     const void *restrict y, size_t by);
// vec_dot_4acts as four vec_dot calls: for a type or ISA with no shared-decode kernel (yet).
#define LP_DOT_4ACTS_FROM_DOT(t, isa)                                                                      \
    void lp_vec_dot_4acts_##t##_##isa(int n, float *restrict s, size_t bs, const void *restrict x,         \
                                      const void *restrict y, size_t by) {                                 \
        for (int j = 0; j < 4; j++) lp_vec_dot_##t##_##isa(n, &s[j * bs], x, (const uint8_t *)y + j * by); \
    }
#define LP_DECLARE_DOT512(t) \
    void lp_vec_dot_##t##_avx512(int n, float *restrict s, const void *restrict x, const void *restrict y);
#define LP_DECLARE_TO_S8(T, t) \
    void lp_##t##_to_s8(const void *restrict x, int8_t *restrict q, float *restrict scale, int16_t *restrict sub, float *restrict min, int64_t n);
#define LP_DECLARE_TO_FLOAT(T, t) void lp_##t##_to_float(const void *restrict x, float *restrict y, int64_t n);
#define LP_DECLARE_QUANTIZE(T, t)                                                      \
    void lp_quantize_##t##_ref(const float *restrict x, void *restrict y, int64_t n);  \
    void lp_quantize_##t##_avx2(const float *restrict x, void *restrict y, int64_t n); \
    void lp_quantize_##t##_neon(const float *restrict x, void *restrict y, int64_t n);

LP_FOR_WEIGHT_TYPES(LP_DECLARE_DOT)
LP_FOR_WEIGHT_TYPES(LP_DECLARE_DOT_4ACTS)
LP_FOR_WEIGHT_TYPES(LP_DECLARE_TO_FLOAT)
LP_FOR_QUANT_TYPES(LP_DECLARE_TO_S8)
// vec_dot and vec_dot_4acts of type t on a further ISA: the K-quants' AVX-512 bodies, and
// aarch64's dot-product ones (quants/dotprod.h; types.c serves the other types there with
// their NEON kernels).
#define LP_DECLARE_DOTS_ON(t, isa)                                                                          \
    void lp_vec_dot_##t##_##isa(int n, float *restrict s, const void *restrict x, const void *restrict y);  \
    void lp_vec_dot_4acts_##t##_##isa(int n, float *restrict s, size_t bs, const void *restrict x,          \
                                      const void *restrict y, size_t by);                                  \
    void lp_vec_dot_rows_##t##_##isa(int n, float *restrict s, size_t bs, const void *restrict x,           \
                                     const void *restrict y, size_t by, int nr);
LP_DECLARE_DOTS_ON(q2_K, avx2) LP_DECLARE_DOTS_ON(q3_K, avx2) LP_DECLARE_DOTS_ON(q4_K, avx2)
LP_DECLARE_DOTS_ON(q5_K, avx2) LP_DECLARE_DOTS_ON(q6_K, avx2)
LP_DECLARE_DOTS_ON(q2_K, neon) LP_DECLARE_DOTS_ON(q3_K, neon) LP_DECLARE_DOTS_ON(q4_K, neon)
LP_DECLARE_DOTS_ON(q5_K, neon) LP_DECLARE_DOTS_ON(q6_K, neon)
LP_DECLARE_DOTS_ON(q2_K, avx512) LP_DECLARE_DOTS_ON(q3_K, avx512)
LP_DECLARE_DOTS_ON(q4_K, avx512) LP_DECLARE_DOTS_ON(q5_K, avx512) LP_DECLARE_DOTS_ON(q6_K, avx512)
LP_DECLARE_DOTS_ON(q4_0, dotprod) LP_DECLARE_DOTS_ON(q4_1, dotprod) LP_DECLARE_DOTS_ON(q5_0, dotprod)
LP_DECLARE_DOTS_ON(q5_1, dotprod) LP_DECLARE_DOTS_ON(q8_0, dotprod) LP_DECLARE_DOTS_ON(q4_K, dotprod)
LP_DECLARE_DOTS_ON(q5_K, dotprod) LP_DECLARE_DOTS_ON(q6_K, dotprod)
void lp_q2_K_to_s8_avx2(const void *restrict x, int8_t *restrict q, float *restrict scale, int16_t *restrict sub, float *restrict min, int64_t n);
void lp_q3_K_to_s8_avx2(const void *restrict x, int8_t *restrict q, float *restrict scale, int16_t *restrict sub, float *restrict min, int64_t n);
void lp_q4_K_to_s8_avx2(const void *restrict x, int8_t *restrict q, float *restrict scale, int16_t *restrict sub, float *restrict min, int64_t n);
void lp_q5_K_to_s8_avx2(const void *restrict x, int8_t *restrict q, float *restrict scale, int16_t *restrict sub, float *restrict min, int64_t n);
void lp_q6_K_to_s8_avx2(const void *restrict x, int8_t *restrict q, float *restrict scale, int16_t *restrict sub, float *restrict min, int64_t n);
LP_DECLARE_DOT512(q4_0) LP_DECLARE_DOT512(q4_1) LP_DECLARE_DOT512(q5_0) LP_DECLARE_DOT512(q5_1) LP_DECLARE_DOT512(q8_0)
LP_FOR_ACT_TYPES(LP_DECLARE_QUANTIZE)
#define LP_DECLARE_QUANTIZE_WEIGHTS(T, t) void lp_quantize_weights_##t(const float *restrict x, void *restrict y, int64_t n);
LP_FOR_QUANT_TYPES(LP_DECLARE_QUANTIZE_WEIGHTS) LP_DECLARE_QUANTIZE_WEIGHTS(F16, f16) LP_DECLARE_QUANTIZE_WEIGHTS(BF16, bf16)
LP_FOR_ACT_TYPES(LP_DECLARE_TO_FLOAT)
// 1 when this CPU has the dot-product instructions, the int8 matrix multiply (asked of the
// kernel once; types.c).
int lp_cpu_has_dotprod(void);
int lp_cpu_has_i8mm(void);

// Thread pool (pool.c). lp_parallel_chunks runs fn(ctx, chunk, ith) for every chunk
// in [0, n_chunks) on up to nth threads (the caller among them) and returns when all
// are done; ith < nth names the thread running a chunk (for per-thread scratch).
// lp_parallel runs fn(ctx, part, nth) for each part in [0, nth). Calls are serialised.
typedef void (*lp_chunk_fn)(void *ctx, int chunk, int ith);
typedef void (*lp_task_fn)(void *ctx, int ith, int nth);
void lp_parallel_chunks(lp_chunk_fn fn, void *ctx, int n_chunks, int nth);
void lp_parallel(lp_task_fn fn, void *ctx, int nth);

// The KV cache's addressing, the one place that knows its layout (api.h, lp_kv): the
// first block of (sequence, layer, kv head) in the K or V cache, and the offset of
// dimension d of position p from there.
static inline uint16_t *lp_kv_head(const lp_kv *kv, uint16_t *cache, int seq, int layer, int kvh) {
    return cache + (((int64_t)seq * kv->n_layer + layer) * kv->n_head_kv + kvh) * kv->ctx_blocks * kv->head_dim;
}
static inline int64_t lp_kv_index(int head_dim, int d, int64_t p) {
    return p / LP_KV_BLOCK * head_dim * LP_KV_BLOCK + (int64_t)d * LP_KV_BLOCK + p % LP_KV_BLOCK;
}
// One position's head_dim values of one (sequence, layer, kv head) (head: lp_kv_head) into the
// cache at position p, as fp16 (state.c).
void lp_kv_put(uint16_t *head, int head_dim, int64_t p, const float *row);

// The batch's rows grouped by sequence, as lp_decode runs them: group g is sequence
// groups[3g]'s rows groups[3g+1] .. groups[3g+1] + groups[3g+2] - 1 (in order of
// position); the n_single groups of a generated token's one row come first, then the
// prompts of fewer than LP_GEMM_MIN rows (rows 0..n_dot_rows-1: row dot products),
// then the longer prompts (the batched product).
typedef struct {
    int n, n_single;                         // groups; those of generated tokens (rows 0..n_single-1)
    int n_dot_rows;                          // rows computed by row dot products
    const int32_t *groups;                   // (n, 3) sequence, first row, rows
} lp_seq_groups;

// Rotary embedding with every option of GGML's rope_ext (ops.c: lp_rope_apply).
typedef struct {
    float base, freq_scale;
    float ext_factor;              // YaRN's mix (0: none, 1: YaRN)
    float corr_low, corr_high;     // YaRN's correction dimensions (pair indices)
    float attn_factor;             // cos and sin times this
    const float *factors;          // (n_rot/2) divisors of the angles, or NULL
    int neox;                      // pairs (i, i + n_rot/2) instead of (2i, 2i + 1)
} lp_rope_cfg;
void lp_rope_apply(float *x, int64_t n, const int32_t *pos, int n_head, int head_dim, int n_rot,
                   const lp_rope_cfg *cfg);
// The same in two steps: every row's cos and sin once (table: (n, head_dim)), then a matrix
// turned by them (a forward pass: every layer's q and k with one table; rows r.. of a matrix
// with the table from row r).
void lp_rope_table(float *table, int64_t n, const int32_t *pos, int head_dim, int n_rot, const lp_rope_cfg *cfg);
void lp_rope_rows(float *x, int64_t n, int n_head, int head_dim, int n_rot, const lp_rope_cfg *cfg,
                  const float *table);
int lp_rope_same(const lp_rope_cfg *a, const lp_rope_cfg *b);
// Layer l's rope as the forward pass applies it (model.c; the context shift rotates with it too).
lp_rope_cfg lp_rope_of(const lp_weights *w, const lp_kv *kv, int l);

// Layer l attends within the sliding window (api.h's n_swa, swa_pattern; llama.cpp's
// set_swa_pattern): every layer but each swa_pattern-th, or every layer for pattern 0.
static inline int lp_layer_swa(const lp_weights *w, int l) {
    return w->n_swa > 0 && (w->swa_pattern == 0 || l % w->swa_pattern < w->swa_pattern - 1);
}

// Causal attention of the rows at one layer (attn.c): out (n, q_dim) from q (n, q_dim),
// row i over positions 0..pos[i] of its group's sequence's cache.
void lp_attention(const lp_weights *w, const lp_kv *kv, int layer, const lp_seq_groups *g, const int32_t *pos,
                  const float *q, float *out, const lp_scratch *s);

// Batched product (gemm.c, AVX-512 VNNI and AVX2; gemm_i8mm.c, aarch64 SMMLA): used by lp_matmul
// for n >= LP_GEMM_MIN activation rows of a type with to_s8 where lp_gemm_use says so (AVX-512,
// I8MM: every such type; AVX2: those it makes faster than the row dots).
#define LP_GEMM_MIN LP_BATCHED_MIN
int64_t lp_gemm_work_size(const lp_type_traits *t, int64_t cols, int64_t n, int n_threads);
int lp_gemm_use(const lp_type_traits *t, int isa, int64_t cols, int64_t n);
// 1 when type t has a batched product on isa at this row length (for any number of rows).
int lp_gemm_available(const lp_type_traits *t, int isa, int64_t cols);
// y (n, rows) = the rows quantized in xq @ W^T. The activation panels it builds first (at the
// start of work, after its alignment) depend on lp_gemm_panel_kind(t, isa) alone: a product of
// the same xq and kind can take them as they are (panels_ready: 1).
void lp_gemm(const lp_type_traits *t, int isa, const uint8_t *w, int64_t rows, int64_t cols, const uint8_t *xq,
             int64_t xq_row_bytes, int64_t n, float *y, uint8_t *work, int n_threads, int panels_ready);
int lp_gemm_panel_kind(const lp_type_traits *t, int isa);
