// peak.c — the int8 multiply-add peak of this CPU, the yardstick of prompt processing in
// the benchmarks (tools/bench): registers only, no memory traffic, on every thread asked.
// Each thread keeps LP_PEAK_CHAINS independent accumulators so the multiply ports, not the
// instructions' latency, bound the loop. A multiply-add here is one unsigned x signed byte
// product added into an int32 sum, the unit of the integer dot products of quantized matmuls.
#include "simd.h"

enum { LP_PEAK_CHAINS = 12 };

// sums: each thread's total, stored so the work cannot be dropped (the caller only times the call).
typedef struct { int isa, i16; int64_t iters; int32_t sums[256]; } peak_ctx;

#if LP_X86
// The compiler must neither hoist the products out of the loop nor share one product among
// the chains: an empty asm says `a` changed ("v": any xmm/ymm/zmm register).
#define LP_PEAK_OPAQUE(v) __asm__ volatile("" : "+v"(v))

LP_AVX2_BEGIN
// vpmaddubsw (32 byte products, summed in pairs to int16) + vpmaddwd by ones (to int32)
// + vpaddd: 32 multiply-adds per step, as AVX2 integer dot products do them. Only the add
// depends on the previous step, so 4 accumulators (named: an array of them lands on the
// stack) hide its latency; LP_PEAK_CHAINS steps per loop.
static inline __m256i peak_step_avx2(__m256i acc, __m256i a, __m256i b, __m256i ones) {
    LP_PEAK_OPAQUE(a);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
}

static int32_t peak_avx2(int64_t iters) {
    const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(5), ones = _mm256_set1_epi16(1);
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < LP_PEAK_CHAINS; j += 4) {
            s0 = peak_step_avx2(s0, a, b, ones);
            s1 = peak_step_avx2(s1, a, b, ones);
            s2 = peak_step_avx2(s2, a, b, ones);
            s3 = peak_step_avx2(s3, a, b, ones);
        }
    return lp_hsum_i32x8(_mm256_add_epi32(_mm256_add_epi32(s0, s1), _mm256_add_epi32(s2, s3)));
}

// vpmaddubsw + vpaddw: the products' pair sums added in int16, never widened in the loop, as
// the AVX2 tiles of the batched product add a few steps of small weights (gemm_avx2.c). Here
// vpmaddubsw is not paired with vpmaddwd, which shares its two multiply ports: the loop can
// issue two a cycle where the pair issues one. 32 multiply-adds per step, LP_PEAK_CHAINS steps
// a loop (the int16 sums wrap: only the time counts).
static inline __m256i peak_step_i16(__m256i acc, __m256i a, __m256i b) {
    LP_PEAK_OPAQUE(a);
    return _mm256_add_epi16(acc, _mm256_maddubs_epi16(a, b));
}

static int32_t peak_avx2_i16(int64_t iters) {
    const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(5);
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0;
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < LP_PEAK_CHAINS; j += 6) {  // six named accumulators (an array lands on the stack)
            s0 = peak_step_i16(s0, a, b);
            s1 = peak_step_i16(s1, a, b);
            s2 = peak_step_i16(s2, a, b);
            s3 = peak_step_i16(s3, a, b);
            s4 = peak_step_i16(s4, a, b);
            s5 = peak_step_i16(s5, a, b);
        }
    const __m256i t = _mm256_add_epi16(_mm256_add_epi16(_mm256_add_epi16(s0, s1), _mm256_add_epi16(s2, s3)),
                                       _mm256_add_epi16(s4, s5));
    return lp_hsum_i32x8(_mm256_madd_epi16(t, _mm256_set1_epi16(1)));
}
LP_AVX2_END

LP_AVX512_BEGIN
// vpdpbusd on 512-bit registers: 64 multiply-adds per chain step.
static int32_t peak_avx512(int64_t iters) {
    __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5);
    __m512i acc[LP_PEAK_CHAINS];
    for (int j = 0; j < LP_PEAK_CHAINS; j++) acc[j] = _mm512_setzero_si512();
    for (int64_t i = 0; i < iters; i++) {
        LP_PEAK_OPAQUE(a);
        for (int j = 0; j < LP_PEAK_CHAINS; j++) acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
    }
    __m512i s = acc[0];
    for (int j = 1; j < LP_PEAK_CHAINS; j++) s = _mm512_add_epi32(s, acc[j]);
    return _mm512_reduce_add_epi32(s);
}
LP_AVX512_END
#endif

static void peak_task(void *vctx, int ith, int nth) {
    peak_ctx *c = vctx;
    int32_t s = 0;
#if LP_X86
    if (c->isa == LP_ISA_AVX2) s = c->i16 ? peak_avx2_i16(c->iters) : peak_avx2(c->iters);
    if (c->isa == LP_ISA_AVX512) s = peak_avx512(c->iters);
#endif
    c->sums[ith] = s;
}

static int64_t int8_peak(int isa, int i16, int64_t iters, int n_threads) {
    if ((isa != LP_ISA_AVX2 && isa != LP_ISA_AVX512) || !lp_isa_available(isa)) return LP_EBAD_ISA;
    if (iters < 1 || n_threads < 1 || n_threads > 256) return LP_EBAD_SIZE;
    peak_ctx c = { .isa = isa, .i16 = i16, .iters = iters };
    lp_parallel(peak_task, &c, n_threads);
    const int64_t per_step = isa == LP_ISA_AVX512 ? 64 : 32;
    return iters * LP_PEAK_CHAINS * per_step * n_threads;
}

int64_t lp_int8_peak(int isa, int64_t iters, int n_threads) { return int8_peak(isa, 0, iters, n_threads); }

int64_t lp_int8_peak_i16(int64_t iters, int n_threads) { return int8_peak(LP_ISA_AVX2, 1, iters, n_threads); }
