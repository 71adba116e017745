// avxvnni.h — the AVX-VNNI row dots (Intel Core 12th gen on, Core Ultra; AMD Zen 4 and 5):
// VPDPBUSD (4 unsigned x 4 signed bytes summed into an int32 lane, added to it) and VPDPWSSD
// (2 int16 x int16 products into an int32 lane, added) in VEX form on 256-bit registers. Where
// the AVX2 row dots take VPMADDUBSW + VPMADDWD (+ VPADDD), these take one or two instructions
// fewer, with the same int32 lanes: every product and pair sum the AVX2 code forms is exact
// (no int16 saturation on the ranges each type feeds it), so any exact way of summing gives
// the same lanes, and the float steps after them are the AVX2 ones, in the same order. The
// results are the AVX2 row dots' bit for bit (tests/test_vnni_dots.py).
//
// Their bodies sit beside the AVX2 ones: legacy_groups.c (Q4_0, Q4_1, Q8_0: vec_dot and the
// prepared-row dots), legacy_x86.h (Q5_0, Q5_1, included by legacy.c once per ISA), k_q2_q3_x86.h and k_q4_q6_x86.h (the K-quants, included once per ISA).
// Only the functions between LP_AVXVNNI_BEGIN and LP_AVXVNNI_END may use the
// instructions, and types.c hands them out in the AVX2 slots of the traits table only where
// the CPU has AVX-VNNI and LLAMAPACK_AVXVNNI is not 0 (the switch of the batched product's
// AVX-VNNI tiles, engine/gemm_vnni.c): a CPU with AVX2 alone never runs them.
#pragma once
#include "simd.h"

#if LP_X86

// 1 where the AVX2 kernels take AVX-VNNI: the CPU has it and LLAMAPACK_AVXVNNI is not 0
// (engine/gemm_vnni.c; read once).
int lp_gemm_avx2_vnni(void);

LP_DECLARE_DOTS_ON(q2_K, avxvnni) LP_DECLARE_DOTS_ON(q3_K, avxvnni) LP_DECLARE_DOTS_ON(q4_K, avxvnni)
LP_DECLARE_DOTS_ON(q5_K, avxvnni) LP_DECLARE_DOTS_ON(q6_K, avxvnni)
void lp_vec_dot_q4_0_avxvnni(int n, float *restrict s, const void *restrict x, const void *restrict y);
void lp_vec_dot_q4_1_avxvnni(int n, float *restrict s, const void *restrict x, const void *restrict y);
void lp_vec_dot_q8_0_avxvnni(int n, float *restrict s, const void *restrict x, const void *restrict y);
void lp_vec_dot_q5_0_avxvnni(int n, float *restrict s, const void *restrict x, const void *restrict y);
void lp_vec_dot_q5_1_avxvnni(int n, float *restrict s, const void *restrict x, const void *restrict y);
void lp_vec_dot_4weights_q5_0_avxvnni(int n, float *restrict s, const void *restrict x, size_t bx,
                                      const void *restrict y);
#endif
