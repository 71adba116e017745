// legacy_avx512.c — vec_dot of the 32-weight block formats (Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0) with AVX-512 VNNI: two blocks per 512-bit register.
//
// Block i fills bits 0..255 and block i+1 bits 256..511; VPDPBUSD multiplies the
// unsigned weight quants with the signed activation quants and sums each four
// products into one int32 lane (no int16 step, so nothing saturates), eight lanes
// per block. The lanes become floats and take their block's dx * dy in one fused
// multiply-add. Offsets (-8, -16) come off as offset * sum(qy), a second VPDPBUSD
// of the constant offset with the activations. Q8_0 weights are signed: their sign
// moves onto the activations and their magnitude (at most 128) is the unsigned side.
//
// For AVX-512 these types have no vec_dot4: matmul makes four vec_dot calls, so a
// batch gives each row exactly what one row alone gives.
#include "simd.h"

#if LP_X86
LP_AVX512_BEGIN

// 16 bytes at p, twice: bits 0..255 (block i), and 16 bytes at q twice: bits 256..511
static inline __m512i lp_pair128(const uint8_t *p, const uint8_t *q) {
    const __m256i a = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)q));
    return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}

// The 32 4-bit quants of two blocks: low nibbles (elements 0..15) then high nibbles (16..31).
static inline __m512i lp_nibbles64(const uint8_t *qs0, const uint8_t *qs1) {
    const __m512i v = lp_pair128(qs0, qs1);
    return _mm512_and_si512(_mm512_srlv_epi64(v, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4)), _mm512_set1_epi8(0x0f));
}

// Bit j of the little-endian 32-bit words at h0 (block i) and h1 (block i+1) as 0x10 in byte j.
static inline __m512i lp_fifth_bits64(const uint8_t *h0, const uint8_t *h1) {
    uint32_t a, b;
    memcpy(&a, h0, 4);
    memcpy(&b, h1, 4);
    return _mm512_maskz_mov_epi8((__mmask64)a | (__mmask64)b << 32, _mm512_set1_epi8(0x10));
}

// 32 activation quants of each of two blocks
static inline __m512i lp_act64(const int8_t *y0, const int8_t *y1) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)y0)),
                              _mm256_loadu_si256((const __m256i *)y1), 1);
}

// a (block i) in lanes 0..7, b (block i+1) in lanes 8..15
static inline __m512 lp_split16(float a, float b) {
    return _mm512_insertf32x8(_mm512_set1_ps(a), _mm256_set1_ps(b), 1);
}

// The two fp16 at p and the two at q (a block's [d, m] or [d, s]) as 4 floats.
static inline __m128 lp_dm2(const lp_half *p, const lp_half *q) {
    uint32_t a, b;
    memcpy(&a, p, 4);
    memcpy(&b, q, 4);
    return _mm_cvtph_ps(_mm_cvtsi64_si128((int64_t)((uint64_t)a | (uint64_t)b << 32)));
}

// dx * dy of blocks i (lanes 0..7) and i + 1 (lanes 8..15): the four fp16 scales
// gathered into one 64-bit word, one conversion, one multiply, one permute.
#define LP_D16(x, y, i)                                                                                     \
    ({                                                                                                       \
        const __m128 h = _mm_cvtph_ps(_mm_cvtsi64_si128((int64_t)((uint64_t)(x)[i].d | (uint64_t)(x)[(i) + 1].d << 16 | \
                                                                  (uint64_t)(y)[i].d << 32 | (uint64_t)(y)[(i) + 1].d << 48))); \
        _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),          \
                              _mm512_castps128_ps512(_mm_mul_ps(h, _mm_movehl_ps(h, h))));                   \
    })

// Q4_0 / Q5_0: sum over blocks of dx*dy * (sum(q * qy) - OFFSET * sum(qy)).
#define LP_DOT512_OFFSET(QUANTS2, OFFSET)                                                                 \
    const int nb = n / 32;                                                                                 \
    const __m512i off = _mm512_set1_epi8(OFFSET);                                                          \
    __m512 acc = _mm512_setzero_ps();                                                                      \
    int i = 0;                                                                                             \
    for (; i + 1 < nb; i += 2) {                                                                           \
        const __m512i q = QUANTS2(i, i + 1);                                                               \
        const __m512i a = lp_act64(y[i].qs, y[i + 1].qs);                                                  \
        const __m512i p = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q, a),             \
                                           _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, a));           \
        acc = _mm512_fmadd_ps(LP_D16(x, y, i), _mm512_cvtepi32_ps(p), acc);                               \
    }                                                                                                      \
    if (i < nb) {                                                                                          \
        const __m512i q = QUANTS2(i, i);                                                                   \
        const __m512i a = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)y[i].qs));           \
        const __m512i p = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q, a),             \
                                           _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, a));           \
        const __m512 d = lp_split16(_cvtsh_ss(x[i].d) * _cvtsh_ss(y[i].d), 0.0f);                          \
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(_mm512_maskz_mov_epi32(0x00ff, p)), acc);             \
    }                                                                                                      \
    *s = _mm512_reduce_add_ps(acc);

// Q4_1 / Q5_1: sum over blocks of dx*dy * sum(q * qy) + m * s.
#define LP_DOT512_MIN(QUANTS2)                                                                            \
    const int nb = n / 32;                                                                                 \
    __m512 acc = _mm512_setzero_ps();                                                                      \
    __m128 mins4 = _mm_setzero_ps();                                                                       \
    int i = 0;                                                                                             \
    for (; i + 1 < nb; i += 2) {                                                                           \
        const __m512i q = QUANTS2(i, i + 1);                                                               \
        const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, lp_act64(y[i].qs, y[i + 1].qs)); \
        /* [d m] of two weight blocks times [d s] of two activation blocks: dx*dy, m*s, dx*dy, m*s */      \
        const __m128 f = _mm_mul_ps(lp_dm2(&x[i].d, &x[i + 1].d), lp_dm2(&y[i].d, &y[i + 1].d));         \
        const __m512 d = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2), \
                                               _mm512_castps128_ps512(f));                                 \
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(p), acc);                                             \
        mins4 = _mm_add_ps(mins4, f);                                                                      \
    }                                                                                                      \
    float mins = _mm_cvtss_f32(_mm_shuffle_ps(mins4, mins4, 1)) + _mm_cvtss_f32(_mm_shuffle_ps(mins4, mins4, 3)); \
    if (i < nb) {                                                                                          \
        const __m512i a = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)y[i].qs));           \
        const __m512i p = _mm512_maskz_mov_epi32(0x00ff, _mm512_dpbusd_epi32(_mm512_setzero_si512(), QUANTS2(i, i), a)); \
        acc = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(x[i].d) * _cvtsh_ss(y[i].d)), _mm512_cvtepi32_ps(p), acc); \
        mins += _cvtsh_ss(x[i].m) * _cvtsh_ss(y[i].s);                                                     \
    }                                                                                                      \
    *s = _mm512_reduce_add_ps(acc) + mins;

#define LP_Q4_2(i, j) lp_nibbles64(x[i].qs, x[j].qs)
#define LP_Q5_2(i, j) _mm512_or_si512(lp_nibbles64(x[i].qs, x[j].qs), lp_fifth_bits64(x[i].qh, x[j].qh))

void lp_vec_dot_q4_0_avx512(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q4_0 *restrict x = vx;
    const block_q8_0 *restrict y = vy;
    LP_DOT512_OFFSET(LP_Q4_2, 8)
}

void lp_vec_dot_q5_0_avx512(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q5_0 *restrict x = vx;
    const block_q8_0 *restrict y = vy;
    LP_DOT512_OFFSET(LP_Q5_2, 16)
}

void lp_vec_dot_q4_1_avx512(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q4_1 *restrict x = vx;
    const block_q8_1 *restrict y = vy;
    LP_DOT512_MIN(LP_Q4_2)
}

void lp_vec_dot_q5_1_avx512(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q5_1 *restrict x = vx;
    const block_q8_1 *restrict y = vy;
    LP_DOT512_MIN(LP_Q5_2)
}

// Q8_0: |qx| (at most 128, fits the unsigned side) times qy with qx's sign.
void lp_vec_dot_q8_0_avx512(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q8_0 *restrict x = vx;
    const block_q8_0 *restrict y = vy;
    const int nb = n / 32;
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 1 < nb; i += 2) {
        const __m512i q = lp_act64(x[i].qs, x[i + 1].qs);
        const __m512i a = lp_act64(y[i].qs, y[i + 1].qs);
        const __mmask64 neg = _mm512_movepi8_mask(q);
        const __m512i sa = _mm512_mask_sub_epi8(a, neg, _mm512_setzero_si512(), a);
        const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(q), sa);
        acc = _mm512_fmadd_ps(LP_D16(x, y, i), _mm512_cvtepi32_ps(p), acc);
    }
    float tail = 0.0f;
    if (i < nb) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)x[i].qs);
        const __m256i a = _mm256_loadu_si256((const __m256i *)y[i].qs);
        const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(q), _mm256_sign_epi8(a, q));
        tail = _cvtsh_ss(x[i].d) * _cvtsh_ss(y[i].d) * (float)lp_hsum_i32x8(p);
    }
    *s = _mm512_reduce_add_ps(acc) + tail;
}

#undef LP_DOT512_OFFSET
#undef LP_DOT512_MIN
#undef LP_Q4_2
#undef LP_Q5_2
LP_AVX512_END
#endif
