// dotprod.h — what the kernels of LP_ISA_DOTPROD share: aarch64 CPUs with the Armv8.2-A
// dot-product instructions (SDOT: four int8 products summed into each int32 lane; Linux
// reports them as HWCAP_ASIMDDP). Their bodies sit beside their families' files:
// legacy_dotprod.c (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and k_q4_q6_dotprod.c (Q4_K, Q5_K, Q6_K);
// every other type is served by its NEON kernel (types.c), so a CPU with the extension never
// falls back further than NEON. Their declarations are in lp.h.
//
// The library is built for baseline armv8-a; only the functions of the files that include
// this header are compiled for +dotprod (from here to LP_DOTPROD_END), and types.c uses
// them only after lp_cpu_has_dotprod() said yes (once, at start-up). Each body serves
// vec_dot (1 activation row) and vec_dot_4acts (4 rows, each row's arithmetic the same as
// vec_dot's, so the results are equal bit for bit): see k_rows.h.
#pragma once
#include "lp.h"

#if LP_ARM
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("dotprod"))), apply_to = function)
#define LP_DOTPROD_END _Pragma("clang attribute pop")
#else
#pragma GCC target("arch=armv8.2-a+dotprod")  // what arm_neon.h asks of SDOT's callers
#define LP_DOTPROD_END
#endif
#include "k_rows.h"

// 32 int8 products of a (two vectors) and b, summed into 4 int32 lanes added to acc.
static inline int32x4_t dp_dot32(int32x4_t acc, int8x16_t a0, int8x16_t a1, const int8_t *b) {
    return vdotq_s32(vdotq_s32(acc, a0, vld1q_s8(b)), a1, vld1q_s8(b + 16));
}
static inline float dp_half(lp_half h) { return k_half_to_float_neon(h); }
#endif
