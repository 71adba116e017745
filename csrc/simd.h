// simd.h — shared SIMD helpers. AVX2 code lives between LP_AVX2_BEGIN and
// LP_AVX2_END, AVX-512 code between LP_AVX512_BEGIN and LP_AVX512_END (AVX-VNNI code,
// VEX VPDPBUSD/VPDPWSSD on 256-bit registers, between LP_AVXVNNI_BEGIN and _END; AMX tiles
// with AVX-512, between LP_AMX_BEGIN and _END), so the
// library itself is built for baseline x86-64 and only these functions use the
// wider instructions (they run only after types.c checked the CPU).
// NEON is baseline on aarch64, so it needs no such bracket.
#pragma once
#include "lp.h"

#if LP_X86
#include <immintrin.h>
#if defined(__clang__)
#define LP_AVX2_BEGIN _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c\"))), apply_to = function)")
#define LP_AVX2_END _Pragma("clang attribute pop")
#define LP_AVX512_BEGIN _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni\"))), apply_to = function)")
#define LP_AVX512_END _Pragma("clang attribute pop")
#define LP_AVXVNNI_BEGIN _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c,avxvnni\"))), apply_to = function)")
#define LP_AVXVNNI_END _Pragma("clang attribute pop")
#define LP_AMX_BEGIN _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,amx-tile,amx-int8\"))), apply_to = function)")
#define LP_AMX_END _Pragma("clang attribute pop")
#else
#define LP_AVX2_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c\")")
#define LP_AVX2_END _Pragma("GCC pop_options")
#define LP_AVX512_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni\")")
#define LP_AVX512_END _Pragma("GCC pop_options")
#define LP_AVXVNNI_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c,avxvnni\")")
#define LP_AVXVNNI_END _Pragma("GCC pop_options")
#define LP_AMX_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,amx-tile,amx-int8\")")
#define LP_AMX_END _Pragma("GCC pop_options")
#endif

// Asks for the weight bytes ahead of p now: the K-quant row dots (K_PREFETCH_AHEAD) and one
// weight row's dot of the other types, which streams the matrix row after row and which some
// cores' hardware prefetchers leave waiting on memory (Intel Xeon, AVX2 Q8_0: 7 GB/s a core).
// Two distances: the line 24 KiB ahead into L2 (PREFETCHT2) and the one 4 KiB ahead into L1.
// One distance, 8 KiB into L1, kept a core's stream at about 80% of what a plain read of memory
// gets: the far request into L2 keeps more lines in flight. Generation, 2 threads, alternating
// runs, Mistral-width: Q4_K_M 1.56 -> 1.43 s per 64 tokens, Q6_K 1.95 -> 1.71, Q8_0 3.04 ->
// 2.74, Q4_0 2.10 -> 2.00, Q2_K 2.02 -> 1.95; Mixtral-width Q4_K_M 1.62 -> 1.44; AVX2 Q4_K_M
// 1.82 -> 1.71. (The far one at 48 KiB measured as at 24; the far one alone, 10% slower.)
// Called once per 64 bytes or less of a row, it covers every line; on short rows too (the other
// types' rows once skipped it below 2048 columns, as if a small model's weights stayed in cache:
// on a machine whose last-level cache they do not stay in, SmolLM2's AVX2 generation went from
// 0.75 to 0.28 s per 64 tokens with it, and a laptop's cache holds less than its 92 MB).
static inline __attribute__((always_inline)) void lp_prefetch_ahead(const void *p) {
    _mm_prefetch((const char *)p + 4096, _MM_HINT_T0);
    _mm_prefetch((const char *)p + 24576, _MM_HINT_T2);
}
// The same for every line of the `bytes` at p.
static inline __attribute__((always_inline)) void lp_prefetch_ahead_bytes(const void *p, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) lp_prefetch_ahead((const char *)p + o);
}

// Kernels for R weight rows against one activation row (vec_dot: R = 1, vec_dot_4weights:
// R = 4) read R rows side by side: R short streams the hardware prefetcher follows
// badly. While a group of rows is read, the next group (the R rows after it,
// contiguous in memory) is prefetched at the same pace: the step covering bytes
// [off, off + step) of each row brings in R * step bytes of the next group, and the same
// share of the group after it into L2 (as lp_prefetch_ahead's far request: Mistral-width
// Q4_0 generation, AVX-512, 2.06 -> 1.65 s per 64 tokens; SmolLM2 Q4_1 0.28 -> 0.26). One row
// (R = 1) asks for its bytes ahead (lp_prefetch_ahead): Intel Xeon's
// prefetchers left the one stream waiting (Q4_1 6 GB/s a core).
// l2: the next group into L2 (PREFETCHT1) instead of L1, for groups too large to sit in L1
// beside the one being read (legacy_groups.c's four rows of over 12 KiB: Mistral-width Q8_0
// generation, AVX-512, 2.82 -> 2.68 s per 64 tokens; AVX-VNNI's Q4_0 vec_dot_4weights, since
// replaced by the group kernels, measured 4% slower with it: Q5_0's keeps L1). A group under
// 4 KiB (four 576-column Q8_0 rows) is asked for as one stream, 4 and 24 KiB ahead: the next
// group's same bytes are too close to cover the latency (a 49152 x 576 Q8_0 product, one
// activation row, AVX-512: 915-1110 -> 660-720 us).
static inline __attribute__((always_inline)) void lp_prefetch_next_to(const uint8_t *vx, size_t bx, size_t off, size_t step,
                                                                      const int R, const int l2) {
    if (R == 1 || R * bx < 4096) {  // (a short group: as one stream, R * step bytes a step)
        lp_prefetch_ahead_bytes(vx + off * R, step * R);
        return;
    }
    const char *p = (const char *)vx + R * bx + off * R;
    for (size_t k = 0; k < R * step; k += 64) {
        if (l2) _mm_prefetch(p + k, _MM_HINT_T1);
        else _mm_prefetch(p + k, _MM_HINT_T0);
        _mm_prefetch(p + R * bx + k, _MM_HINT_T2);
    }
}
static inline __attribute__((always_inline)) void lp_prefetch_next(const uint8_t *vx, size_t bx, size_t off, size_t step, const int R) {
    lp_prefetch_next_to(vx, bx, off, step, R, 0);
}

LP_AVX2_BEGIN
// sum of the 8 floats of x
static inline float lp_hsum_f32x8(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}
// sum of the 8 int32 of x
static inline int lp_hsum_i32x8(__m256i x) {
    __m128i r = _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    r = _mm_add_epi32(r, _mm_unpackhi_epi64(r, r));
    r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 1));
    return _mm_cvtsi128_si32(r);
}
// 32 unsigned bytes (each < 128) times 32 signed bytes: 8 int32 lanes.
static inline __m256i lp_dot_u8i8x32(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
static inline float lp_half_to_float_f16c(lp_half h) { return _cvtsh_ss(h); }
// The half float at p and the one after it (a block's d and dmin, or d and m) as floats in lanes
// 0 and 1 (lanes 2 and 3 are 0): one conversion
static inline __m128 lp_halves2(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int)v));
}
LP_AVX2_END

LP_AVX512_BEGIN
#define LP_INLINE static inline __attribute__((always_inline))

// The sums of the 16 lanes of a0 .. a3, in the order _mm512_reduce_add_ps takes for each:
// halves, then quarters, then (0 + 2) + (1 + 3). Four sums at once in 512-bit registers
// (float addition commutes, so which half comes first does not matter).
LP_INLINE __m128 lp_sums4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    // the 256-bit halves added: [h0 | h1], [h2 | h3]
    const __m512 h01 = _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, 0x44), _mm512_shuffle_f32x4(a0, a1, 0xEE));
    const __m512 h23 = _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, 0x44), _mm512_shuffle_f32x4(a2, a3, 0xEE));
    // their 128-bit halves added: [q0 | q1 | q2 | q3]
    const __m512 q = _mm512_add_ps(_mm512_shuffle_f32x4(h01, h23, 0x88), _mm512_shuffle_f32x4(h01, h23, 0xDD));
    const __m512 p = _mm512_add_ps(q, _mm512_permute_ps(q, _MM_SHUFFLE(1, 0, 3, 2)));  // 0 + 2, 1 + 3
    const __m512 t = _mm512_add_ps(p, _mm512_permute_ps(p, _MM_SHUFFLE(2, 3, 0, 1)));  // (0 + 2) + (1 + 3)
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0,
                                                                          0, 0, 0, 0), t));
}

// s[r] = the sum of the 16 lanes of acc[r] + add[r], r < R (1 or 4), each as
// _mm512_reduce_add_ps sums it.
LP_INLINE void lp_store_sums(float *s, const __m512 *acc, const float *add, const int R) {
    if (R == 1) {
        s[0] = _mm512_reduce_add_ps(acc[0]) + add[0];
        return;
    }
    _mm_storeu_ps(s, _mm_add_ps(lp_sums4(acc[0], acc[1], acc[2], acc[3]), _mm_loadu_ps(add)));
}

LP_AVX512_END
#endif

#if LP_ARM
#include <arm_neon.h>
// 16 signed bytes times 16 signed bytes, accumulated into 4 int32 lanes.
static inline int32x4_t lp_dot_i8x16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    const int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    const int16x8_t hi = vmull_s8(vget_high_s8(a), vget_high_s8(b));
    return vaddq_s32(acc, vaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)));
#endif
}
#endif
