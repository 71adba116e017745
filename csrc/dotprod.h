// dotprod.h — the kernels of LP_ISA_DOTPROD: aarch64 CPUs with the Armv8.2-A dot-product
// instructions (SDOT/UDOT; Linux reports them as HWCAP_ASIMDDP). types.c fills that ISA's
// column of the traits table from the names below.
//
// The hot types have bodies of their own (dotprod.c, compiled for +dotprod); every other
// type is served by its NEON kernel under the same name, so a CPU with the extension
// never falls back further than NEON.
#pragma once
#include "lp.h"

#define LP_DECLARE_DOTPROD(t)                                                                       \
    void lp_vec_dot_##t##_dotprod(int n, float *restrict s, const void *restrict x, const void *restrict y); \
    void lp_vec_dot4_##t##_dotprod(int n, float *restrict s, size_t bs, const void *restrict x,      \
                                   const void *restrict y, size_t by);
LP_DECLARE_DOTPROD(q4_0)
LP_DECLARE_DOTPROD(q4_1)
LP_DECLARE_DOTPROD(q5_0)
LP_DECLARE_DOTPROD(q5_1)
LP_DECLARE_DOTPROD(q8_0)
LP_DECLARE_DOTPROD(q4_K)
LP_DECLARE_DOTPROD(q5_K)
LP_DECLARE_DOTPROD(q6_K)

// The NEON kernels, for the types without a dot-product body.
#define lp_vec_dot_f32_dotprod lp_vec_dot_f32_neon
#define lp_vec_dot4_f32_dotprod lp_vec_dot4_f32_neon
#define lp_vec_dot_f16_dotprod lp_vec_dot_f16_neon
#define lp_vec_dot4_f16_dotprod lp_vec_dot4_f16_neon
#define lp_vec_dot_bf16_dotprod lp_vec_dot_bf16_neon
#define lp_vec_dot4_bf16_dotprod lp_vec_dot4_bf16_neon
#define lp_vec_dot_q2_K_dotprod lp_vec_dot_q2_K_neon
#define lp_vec_dot4_q2_K_dotprod lp_vec_dot4_q2_K_neon
#define lp_vec_dot_q3_K_dotprod lp_vec_dot_q3_K_neon
#define lp_vec_dot4_q3_K_dotprod lp_vec_dot4_q3_K_neon

// 1 when this CPU has the dot-product instructions (asked of the kernel once).
int lp_cpu_has_dotprod(void);
