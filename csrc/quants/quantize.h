// quantize.h — what the weight quantizers (quantize_legacy.c, quantize_k.c) share:
// the rounding and float-to-integer conversions their output depends on, bit for bit.
//
// The quantizers make the bytes llama.cpp's reference quantizers make (no importance
// matrix), so they round the way those do: nearest_int adds 1.5 * 2^23 and reads the
// low mantissa bits (ties to even, exact for |x| < 2^22; outside that range it still
// returns a well-defined, if meaningless, number), and a plain C cast of a float to a
// small integer is done as x86-64's cvttss2si does it: truncation toward zero into 32
// bits, every NaN and every value outside the int32 range giving INT32_MIN, then the
// low bits. C leaves such conversions undefined; these helpers make them total, and
// the result is the one llama.cpp's x86-64 build writes for the same inputs (e.g. a
// block of denormals, whose inverse scale overflows to inf).
#pragma once
#include <math.h>

#include "lp.h"

static inline int lp_nearest_int(float f) {
    const float v = f + 12582912.0f;
    return (int)(lp_float_to_bits(v) & 0x007fffff) - 0x00400000;
}

// (int32_t)f as cvttss2si computes it: NaN and out-of-range values give INT32_MIN.
static inline int32_t lp_cvtt_i32(float f) {
    if (!(f > -2147483904.0f && f < 2147483648.0f)) return INT32_MIN;  // NaN fails both
    return (int32_t)f;
}

// (int8_t)f and (uint8_t)f as compiled for x86-64: the low byte of lp_cvtt_i32.
static inline int8_t lp_cvt_i8(float f) { return (int8_t)(uint8_t)((uint32_t)lp_cvtt_i32(f) & 0xff); }
static inline uint8_t lp_cvt_u8(float f) { return (uint8_t)((uint32_t)lp_cvtt_i32(f) & 0xff); }

static inline int lp_imin(int a, int b) { return a < b ? a : b; }
static inline int lp_imax(int a, int b) { return a > b ? a : b; }

// The K-quants' scale-and-min search on 8 sub-blocks of n (<= 32) values at xs + n j, weights
// at ws + n j: quants into Ls + n j, scale and -min into scales[j], neg_mins[j] (quantize_k.c's
// best_scale_min, once per sub-block; the AVX2 version runs the eight side by side).
void lp_best_scale_min8_avx2(int n, int nmax, const float *xs, const float *ws, uint8_t *Ls, float *scales,
                             float *neg_mins, float rmin, float rdelta, int nstep, int mad);
// Q6_K's search (best_scale_q6) likewise: quants (0..2 nmax - 1) into Ls + n j, scales[j].
void lp_best_scale_q6_8_avx2(int n, int nmax, const float *xs, int8_t *Ls, float *scales);
// Q3_K's search (best_scale_q3) likewise.
void lp_best_scale_q3_8_avx2(int n, int nmax, const float *xs, int8_t *Ls, float *scales);
// Q8_0's quantizer and the F16 -> F32 reading on AVX2 (quantize_legacy_avx2.c): the same results.
void lp_quantize_weights_q8_0_avx2(const float *restrict x, void *restrict y, int64_t n);
void lp_f16_to_float_f16c(const void *restrict x, float *restrict y, int64_t n);
void lp_floats_to_halves_f16c(lp_half *restrict y, const float *restrict x, int64_t n);

// The quantizer's AVX2 paths serve where the kernels run AVX2 or AVX-512 (lp_set_isa).
static inline int lp_quantize_use_avx2(void) {
#if LP_X86
    const int isa = lp_get_isa();
    return isa == LP_ISA_AVX2 || isa == LP_ISA_AVX512;
#else
    return 0;
#endif
}
