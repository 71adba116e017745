// gemm.h — what the batched products of prompt processing share: gemm.c (the activation
// panels, the AVX-512 tiles, the entry points), gemm_amx.c (the AMX tiles), gemm_avx2.c (the
// AVX2 tiles) and gemm_i8mm.c (the aarch64 SMMLA tile).
#pragma once
#include "simd.h"

#define LP_G_LANES 16  // activation rows per panel group (x86: per vector)
#define LP_G_RT 16     // weight rows a thread decodes at once (a chunk of the job): I8MM's, x86's fewest
#define LP_G_RT_X86 64 // x86: the most (gemm.c, chunk_rows): the activation panels are read once a chunk
#define LP_G_RT_AMX 128 // AMX: the most (its tiles take the panels 4 times as fast)
#define LP_ALIGN 64

// One block of 32 columns of a group of LP_G_LANES activation rows. The quants' layout is
// the ISA's (build_act_group): x86, q[k][j] = columns 4k..4k+3 of row j, + 128 (unsigned);
// I8MM, signed and in row pairs: byte 16 * (4 p + s) + 8 i + c = column 8 s + c of row 2 p + i.
typedef struct {
    uint8_t q[8][LP_G_LANES][4];
    float d[LP_G_LANES];          // each row's scale for this block
    union {
        float m[2][LP_G_LANES];       // min-term factors: d * sum(quants), of the block (min unit 32: m[0])
                                      // or of each half (min unit 16)
        int32_t bias[2][LP_G_LANES];  // a type without mins whose AVX-512 weights are offset (panel_offset):
                                      // -offset * the sum of each half's quants
    };
} act_block;
_Static_assert(sizeof(act_block) == 704, "act_block size");

static inline int64_t align_up(int64_t v) { return (v + LP_ALIGN - 1) / LP_ALIGN * LP_ALIGN; }

enum { SUB_NONE, SUB_FOLD, SUB_MULLD, SUB_DIGITS };

typedef struct {
    const lp_type_traits *t;
    const uint8_t *w;
    int64_t rows, cols, n, w_row_bytes, units, min_units, nblk, groups;
    int64_t subs;          // integer sub-scales a row (cols / s8_sub; 0: the type has none)
    int sub_way, sub_part, sub_neg;  // AVX-512: how the tile applies them (gemm.c, sub_way)
    int pairs;             // plain AVX2: the panels pair each 32 columns' sub-blocks (lp_gemm_avx2_pairs)
    int amx;               // AVX-512 on a CPU with AMX-INT8 (lp_gemm_amx): the AMX tiles
    int dig_n, dig_base, dig_usgn;  // SUB_DIGITS (AMX): the sub-scales' digits (gemm.c, amx_digits)
    const uint8_t *xq;
    int64_t xq_row_bytes;
    int isa;               // LP_ISA_AVX512, LP_ISA_AVX2 or LP_ISA_I8MM: which tile
    act_block *act;        // (groups, nblk)
    uint8_t *act_q;        // AMX: the panels' quants, (groups, nblk, 512), each group's blocks contiguous
    int rt;                // weight rows a chunk (LP_G_RT; x86: up to LP_G_RT_X86)
    uint8_t *wpanels;      // per thread
    int64_t wpanel_bytes;
    float *y;
} gemm_ctx;

// A chunk's decoded weight rows on x86 (rt rows; row r of each at r * its row length).
typedef struct {
    const int8_t *q;      // (rt, cols)
    const float *scale;   // (rt, units)
    const int32_t *corr;  // (rt, corr_stride(c)): -128 * the sum of each unit's quants
                          // (times their sub-scales, where the type has them)
    const float *min;     // (rt, min_units)
    const int32_t *sub;   // (rt, subs): the sub-scales as the ISA's tile takes them
} wpanel;

static inline int64_t corr_stride(const gemm_ctx *c) { return c->subs > c->units ? c->subs : c->units; }

// The float steps of an output, the same on every ISA (so all give the same bits), from
// acc = 0: the K-quants (sub-scaled: one unit a super-block) first make their min terms,
// acc = fma(m_act, min, acc) for each min unit, then acc = fma(float(isum) * d_act, scale,
// acc) for each unit; the legacy types (units of 32) make for each unit the scale step,
// then its min step where the type has mins.

// The ranges a type's decoded quants (lo..hi) and integer sub-scales (slo..shi) lie in where its
// format fixes them (gemm.c; NULL: the legacy types, whose range depends on the weights).
typedef struct { int type, lo, hi, slo, shi; } quant_bounds;
const quant_bounds *lp_gemm_type_bounds(const lp_type_traits *t);

// Whether the AVX-512 product takes the AMX tiles (gemm_amx.c).
static inline int lp_gemm_amx_on(int isa) {
#if LP_X86
    return isa == LP_ISA_AVX512 && lp_gemm_amx();
#else
    (void)isa;
    return 0;
#endif
}
// AMX: the digits a type's sub-scales split into (the tiles take a quant times a digit), their
// base and whether they are unsigned; 0 where three digits do not cover the range.
int lp_gemm_amx_digits(const quant_bounds *b, int *base, int *usgn);
// AMX: one chunk of nr decoded rows (gemm.c's gemm_chunk: its wpanel; sub, the sub-scales as
// decoded) against every activation row; scratch: the chunk's AMX weights.
void lp_gemm_amx_chunk(const gemm_ctx *c, const wpanel *wp, const int16_t *sub, int nr, uint8_t *scratch);

// AVX2 (gemm_avx2.c): the tiles of one chunk, every activation group, its nr rows; the
// range of its decoded quants [lo, hi] picks how VPMADDUBSW is fed. And the per-unit
// corrections of one decoded row (unit columns each), its range folded into [*lo, *hi].
void lp_gemm_avx2_chunk(const gemm_ctx *c, const wpanel *wp, int nr, int lo, int hi, int sgn);
// Whether the AVX2 product uses AVX-VNNI (the CPU has it, and LLAMAPACK_AVXVNNI is not 0): then
// its tiles take VPDPBUSD, the K-quants' sub-scales applied as sub_way says (gemm.c).
int lp_gemm_avx2_vnni(void);
// Whether plain AVX2's panels of type t pair the sub-blocks of each 32 columns (gemm.c), and a
// decoded row of cols quants put in that order (gemm_avx2.c).
int lp_gemm_avx2_pairs(const lp_type_traits *t, int isa);
void lp_gemm_pairs_avx2(int8_t *q, int64_t cols);
// SUB_FOLD's fold of one row (x86): q (subs sub-blocks of 16) *= each sub-scale (negated: neg).
void lp_gemm_fold_avx2(int8_t *q, const int16_t *sub, int64_t subs, int neg);
void lp_gemm_unit_sums_avx2(const int8_t *q, int64_t cols, int unit, int32_t *corr, int *lo, int *hi);
// AVX-512 Q6_K rows as the tile takes them (quants/k_q4_q6_avx512.h): to_s8's quants + 32
// (panel_offset), its scale and sub-scales.
void lp_q6_K_to_u6_avx512(const void *restrict x, int8_t *restrict q, float *restrict scale, int16_t *restrict sub,
                          int64_t n);

// The I8MM product (gemm_i8mm.c): a thread's scratch, and one chunk of LP_G_RT weight rows
// against every activation row (an lp_chunk_fn on a gemm_ctx).
int64_t lp_gemm_i8mm_scratch(const lp_type_traits *t, int64_t cols);
void lp_gemm_i8mm_chunk(void *ctx, int chunk, int ith);
