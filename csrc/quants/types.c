// types.c — the per-type function table and the run-time choice of ISA.
//
// quants/ holds the kernels per type family: <family>.c has the family's layout notes,
// dequantizer, int8 decoder (to_s8), reference and AVX2/NEON kernels; a family's further
// bodies sit beside it as <family>_<isa or kernel shape>.c, or .h when the family file
// includes them (legacy_groups.c, legacy_vec_dot_4acts.c, legacy_dotprod.c, legacy_x86.h, k_q2_q3_x86.h,
// k_q4_q6_x86.h, k_q4_q6_avx512.h, k_q4_q6_dotprod.c). Shared by several families: k_rows.h (the row body of
// vec_dot, vec_dot_4acts and vec_dot_rows), dotprod.h (what the aarch64 dot-product bodies share),
// avxvnni.h (the AVX-VNNI row dots, in the AVX2 slots where the CPU has it). act_quant.c: the
// activation quantizers. Which types exist is csrc/type_list.h; this table has a row for each.
#include "avxvnni.h"

#if LP_X86
#define LP_AVX2(f) [LP_ISA_AVX2] = f, [LP_ISA_AVX512] = f,
#else
#define LP_AVX2(f)
#endif
// DOTPROD: NEON with the dot-product instructions (quants/dotprod.h); the types without a
// body of their own there take their NEON kernels.
#define lp_vec_dot_f32_dotprod lp_vec_dot_f32_neon
#define lp_vec_dot_4acts_f32_dotprod lp_vec_dot_4acts_f32_neon
#define lp_vec_dot_f16_dotprod lp_vec_dot_f16_neon
#define lp_vec_dot_4acts_f16_dotprod lp_vec_dot_4acts_f16_neon
#define lp_vec_dot_bf16_dotprod lp_vec_dot_bf16_neon
#define lp_vec_dot_4acts_bf16_dotprod lp_vec_dot_4acts_bf16_neon
#define lp_vec_dot_q2_K_dotprod lp_vec_dot_q2_K_neon
#define lp_vec_dot_4acts_q2_K_dotprod lp_vec_dot_4acts_q2_K_neon
#define lp_vec_dot_q3_K_dotprod lp_vec_dot_q3_K_neon
#define lp_vec_dot_4acts_q3_K_dotprod lp_vec_dot_4acts_q3_K_neon
#if LP_ARM
// I8MM: DOTPROD's kernels, and the batched product of gemm_i8mm.c (which takes the reference to_s8).
#define LP_NEON(f) [LP_ISA_NEON] = f, [LP_ISA_DOTPROD] = f, [LP_ISA_I8MM] = f,
#define LP_NEON_DOT(t, k) [LP_ISA_NEON] = lp_##k##_##t##_neon, [LP_ISA_DOTPROD] = lp_##k##_##t##_dotprod, \
                          [LP_ISA_I8MM] = lp_##k##_##t##_dotprod,
#else
#define LP_NEON(f)
#define LP_NEON_DOT(t, k)
#endif
#define LP_DOTS(t) .vec_dot = { [LP_ISA_REF] = lp_vec_dot_##t##_ref, LP_AVX2(lp_vec_dot_##t##_avx2) LP_NEON_DOT(t, vec_dot) }, \
                   .vec_dot_4acts = { LP_AVX2(lp_vec_dot_4acts_##t##_avx2) LP_NEON_DOT(t, vec_dot_4acts) }
#define LP_S8(t, unit, min) .to_s8 = { [LP_ISA_REF] = lp_##t##_to_s8 }, .s8_unit = unit, .s8_min = min, .s8_min_unit = unit
// The K-quants: a float scale per super-block, integer sub-scales per group of `sub`
// columns, mins (where the type has them) per group; an AVX2 decoder where one pays.
#if LP_X86
#define LP_S8_LOW(t) [LP_ISA_AVX2] = lp_##t##_to_s8_avx2, [LP_ISA_AVX512] = lp_##t##_to_s8_avx2
#else
#define LP_S8_LOW(t)
#endif
#define LP_S8_K(t, low, sub, min, min_unit) .to_s8 = { [LP_ISA_REF] = lp_##t##_to_s8, low }, .s8_unit = QK_K, \
                                            .s8_min = min, .s8_min_unit = min_unit, .s8_sub = sub
// Types with an AVX-512 vec_dot of their own (legacy_groups.c): products of any number of
// activation rows take its prepared-row dots (rows_pre.h), so there is no vec_dot_4weights or
// vec_dot_rows for AVX-512. max_4w: the longest row (bytes) AVX-VNNI's vec_dot_4weights takes.
#if LP_X86
#define LP_DOTS512(t, max_4w) .vec_dot = { [LP_ISA_REF] = lp_vec_dot_##t##_ref, [LP_ISA_AVX2] = lp_vec_dot_##t##_avx2, \
                                   [LP_ISA_AVX512] = lp_vec_dot_##t##_avx512 },                             \
                      .vec_dot_4acts = { [LP_ISA_AVX2] = lp_vec_dot_4acts_##t##_avx2 }, .max_row_bytes_4weights = max_4w
// Q4_0, Q4_1 and Q8_0 have no AVX2 vec_dot_4acts either: their AVX2 products take prepared rows too.
#define LP_DOTS512_Q4(t) .vec_dot = { [LP_ISA_REF] = lp_vec_dot_##t##_ref, [LP_ISA_AVX2] = lp_vec_dot_##t##_avx2, \
                                      [LP_ISA_AVX512] = lp_vec_dot_##t##_avx512 }
#else
#define LP_DOTS512(t, max_4w) LP_DOTS(t)
#define LP_DOTS512_Q4(t) LP_DOTS(t)
#endif
// K-quants with AVX-512 bodies of their own (vec_dot, vec_dot_4acts and vec_dot_rows from one
// body, k_rows.h).
#if LP_X86
#define LP_DOTS_K512(t) .vec_dot = { [LP_ISA_REF] = lp_vec_dot_##t##_ref, [LP_ISA_AVX2] = lp_vec_dot_##t##_avx2, \
                                     [LP_ISA_AVX512] = lp_vec_dot_##t##_avx512 },                             \
                        .vec_dot_4acts = { [LP_ISA_AVX2] = lp_vec_dot_4acts_##t##_avx2, [LP_ISA_AVX512] = lp_vec_dot_4acts_##t##_avx512 }, \
                        .vec_dot_rows = { [LP_ISA_AVX2] = lp_vec_dot_rows_##t##_avx2, [LP_ISA_AVX512] = lp_vec_dot_rows_##t##_avx512 }
#else
#define LP_DOTS_K512(t) LP_DOTS(t)
#endif
#define LP_QUANTS(t) .from_float = { [LP_ISA_REF] = lp_quantize_##t##_ref, LP_AVX2(lp_quantize_##t##_avx2) LP_NEON(lp_quantize_##t##_neon) }

#define LP_WQ(t) .quantize = lp_quantize_weights_##t  // weight quantizer (quantize_*.c)

static const lp_type_traits traits[LP_TYPE_COUNT] = {
    [LP_F32] = { "f32", 1, 4, LP_F32, 0, {0}, lp_f32_to_float, {0}, LP_DOTS(f32) },
    [LP_F16] = { "f16", 1, 2, LP_F32, 0, {0}, lp_f16_to_float, {0}, LP_DOTS(f16), LP_WQ(f16) },
    [LP_BF16] = { "bf16", 1, 2, LP_F32, 0, {0}, lp_bf16_to_float, {0}, LP_DOTS(bf16), LP_WQ(bf16) },
    [LP_Q4_0] = { "q4_0", QK4_0, sizeof(block_q4_0), LP_Q8_0, 1, {0}, lp_q4_0_to_float, {0}, LP_DOTS512_Q4(q4_0), LP_S8(q4_0, 32, 0), LP_WQ(q4_0) },
    [LP_Q4_1] = { "q4_1", QK4_1, sizeof(block_q4_1), LP_Q8_1, 2, {0, 2}, lp_q4_1_to_float, {0}, LP_DOTS512_Q4(q4_1), LP_S8(q4_1, 32, 1), LP_WQ(q4_1) },
    [LP_Q5_0] = { "q5_0", QK5_0, sizeof(block_q5_0), LP_Q8_0, 1, {0}, lp_q5_0_to_float, {0}, LP_DOTS512(q5_0, INT64_MAX), LP_S8(q5_0, 32, 0), LP_WQ(q5_0) },
    [LP_Q5_1] = { "q5_1", QK5_1, sizeof(block_q5_1), LP_Q8_1, 2, {0, 2}, lp_q5_1_to_float, {0}, LP_DOTS512(q5_1, 2048), LP_S8(q5_1, 32, 1), LP_WQ(q5_1) },
    [LP_Q8_0] = { "q8_0", QK8_0, sizeof(block_q8_0), LP_Q8_0, 1, {0}, lp_q8_0_to_float, LP_QUANTS(q8_0), LP_DOTS512_Q4(q8_0), LP_S8(q8_0, 32, 0), LP_WQ(q8_0) },
    [LP_Q8_1] = { "q8_1", QK8_1, sizeof(block_q8_1), LP_Q8_1, 2, {0, 2}, lp_q8_1_to_float, LP_QUANTS(q8_1), {0} },
    [LP_Q2_K] = { "q2_K", QK_K, sizeof(block_q2_K), LP_Q8_K, 2, {80, 82}, lp_q2_K_to_float, {0}, LP_DOTS_K512(q2_K), LP_S8_K(q2_K, LP_S8_LOW(q2_K), 16, 1, 16), LP_WQ(q2_K) },
    [LP_Q3_K] = { "q3_K", QK_K, sizeof(block_q3_K), LP_Q8_K, 1, {108}, lp_q3_K_to_float, {0}, LP_DOTS_K512(q3_K), LP_S8_K(q3_K, LP_S8_LOW(q3_K), 16, 0, QK_K), LP_WQ(q3_K) },
    [LP_Q4_K] = { "q4_K", QK_K, sizeof(block_q4_K), LP_Q8_K, 2, {0, 2}, lp_q4_K_to_float, {0}, LP_DOTS_K512(q4_K), LP_S8_K(q4_K, LP_S8_LOW(q4_K), 32, 1, 32), LP_WQ(q4_K) },
    [LP_Q5_K] = { "q5_K", QK_K, sizeof(block_q5_K), LP_Q8_K, 2, {0, 2}, lp_q5_K_to_float, {0}, LP_DOTS_K512(q5_K), LP_S8_K(q5_K, LP_S8_LOW(q5_K), 32, 1, 32), LP_WQ(q5_K) },
    [LP_Q6_K] = { "q6_K", QK_K, sizeof(block_q6_K), LP_Q8_K, 1, {208}, lp_q6_K_to_float, {0}, LP_DOTS_K512(q6_K), LP_S8_K(q6_K, LP_S8_LOW(q6_K), 16, 0, QK_K), LP_WQ(q6_K) },
    [LP_Q8_K] = { "q8_K", QK_K, sizeof(block_q8_K), LP_Q8_K, 0, {0}, lp_q8_K_to_float, LP_QUANTS(q8_K), {0} },
};

#if LP_X86
// AVX-VNNI (avxvnni.h): where the CPU has it and LLAMAPACK_AVXVNNI is not 0, lp_traits hands
// out a copy of the table whose AVX2 slots hold these types' AVX-VNNI row dots (their results
// are the AVX2 ones bit for bit); the slots not listed keep their AVX2 kernels.
#include <pthread.h>
#define LP_VNNI_K(T, t) { LP_##T, lp_vec_dot_##t##_avxvnni, lp_vec_dot_4acts_##t##_avxvnni, lp_vec_dot_rows_##t##_avxvnni, NULL }
#define LP_VNNI_LEGACY(T, t) { LP_##T, lp_vec_dot_##t##_avxvnni, NULL, NULL, NULL }
#define LP_VNNI_OFFSET(T, t) { LP_##T, lp_vec_dot_##t##_avxvnni, NULL, NULL, lp_vec_dot_4weights_##t##_avxvnni }
static const struct {
    int type;
    lp_vec_dot_fn dot;
    lp_vec_dot_4acts_fn dot_4acts;  // NULL: the AVX2 one stays (or none)
    lp_vec_dot_rows_fn dot_rows;
    lp_vec_dot_4weights_fn dot_4weights;
} vnni_dots[] = {
    LP_VNNI_LEGACY(Q4_0, q4_0), LP_VNNI_LEGACY(Q4_1, q4_1), LP_VNNI_LEGACY(Q8_0, q8_0), LP_VNNI_OFFSET(Q5_0, q5_0), LP_VNNI_LEGACY(Q5_1, q5_1),
    LP_VNNI_K(Q2_K, q2_K), LP_VNNI_K(Q3_K, q3_K), LP_VNNI_K(Q4_K, q4_K),
    LP_VNNI_K(Q5_K, q5_K), LP_VNNI_K(Q6_K, q6_K),
};
#undef LP_VNNI_K
#undef LP_VNNI_LEGACY
#undef LP_VNNI_OFFSET
static lp_type_traits traits_vnni[LP_TYPE_COUNT];
static pthread_once_t traits_vnni_once = PTHREAD_ONCE_INIT;

static void make_traits_vnni(void) {
    memcpy(traits_vnni, traits, sizeof traits);
    for (size_t i = 0; i < sizeof vnni_dots / sizeof vnni_dots[0]; i++) {
        lp_type_traits *t = &traits_vnni[vnni_dots[i].type];
        t->vec_dot[LP_ISA_AVX2] = vnni_dots[i].dot;
        if (vnni_dots[i].dot_4acts) t->vec_dot_4acts[LP_ISA_AVX2] = vnni_dots[i].dot_4acts;
        if (vnni_dots[i].dot_rows) t->vec_dot_rows[LP_ISA_AVX2] = vnni_dots[i].dot_rows;
        if (vnni_dots[i].dot_4weights) t->vec_dot_4weights[LP_ISA_AVX2] = vnni_dots[i].dot_4weights;
    }
}

static const lp_type_traits *table(void) {
    if (!lp_gemm_avx2_vnni()) return traits;
    pthread_once(&traits_vnni_once, make_traits_vnni);
    return traits_vnni;
}
#else
static const lp_type_traits *table(void) { return traits; }
#endif

const lp_type_traits *lp_traits(int type) {
    if (type < 0 || type >= LP_TYPE_COUNT || traits[type].name == NULL) return NULL;
    return &table()[type];
}

int lp_type_info(int type, int *blck_size, int *type_size, int *vec_dot_type) {
    const lp_type_traits *t = lp_traits(type);
    if (!t) return LP_EUNKNOWN_TYPE;
    *blck_size = t->blck_size;
    *type_size = t->type_size;
    *vec_dot_type = t->vec_dot_type;
    return LP_OK;
}

int lp_type_half_fields(int type, int *offsets) {
    const lp_type_traits *t = lp_traits(type);
    if (!t) return LP_EUNKNOWN_TYPE;
    for (int i = 0; i < t->n_half; i++) offsets[i] = t->half_off[i];
    return t->n_half;
}

// ---------------------------------------------------------------------------
// CPU features, checked once.

#if defined(__linux__) && defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
int lp_cpu_has_dotprod(void) { return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0; }
int lp_cpu_has_i8mm(void) { return (getauxval(AT_HWCAP2) & HWCAP2_I8MM) != 0; }
#else
int lp_cpu_has_dotprod(void) { return 0; }  // other systems: NEON (a check of their own would go here)
int lp_cpu_has_i8mm(void) { return 0; }
#endif

static int cpu_has(int isa) {
    switch (isa) {
    case LP_ISA_REF: return 1;
#if LP_X86
    case LP_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    case LP_ISA_AVX512:
        return cpu_has(LP_ISA_AVX2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512vnni");
#endif
#if LP_ARM
    case LP_ISA_NEON: return 1;
    case LP_ISA_DOTPROD: return lp_cpu_has_dotprod();
    case LP_ISA_I8MM: return lp_cpu_has_dotprod() && lp_cpu_has_i8mm();
#endif
    default: return 0;
    }
}

int lp_isa_available(int isa) { return isa >= 0 && isa < LP_ISA_COUNT && cpu_has(isa); }

int lp_best_isa(void) {
    static int best = -1;
    if (best < 0) {
        int b = LP_ISA_REF;
        if (lp_isa_available(LP_ISA_AVX2)) b = LP_ISA_AVX2;
        if (lp_isa_available(LP_ISA_AVX512)) b = LP_ISA_AVX512;
        if (lp_isa_available(LP_ISA_NEON)) b = LP_ISA_NEON;
        if (lp_isa_available(LP_ISA_DOTPROD)) b = LP_ISA_DOTPROD;
        if (lp_isa_available(LP_ISA_I8MM)) b = LP_ISA_I8MM;
        best = b;
    }
    return best;
}

static int current_isa = -1;

int lp_get_isa(void) {
    if (current_isa < 0) current_isa = lp_best_isa();
    return current_isa;
}

int lp_set_isa(int isa) {
    if (!lp_isa_available(isa)) return LP_EBAD_ISA;
    current_isa = isa;
    return LP_OK;
}
