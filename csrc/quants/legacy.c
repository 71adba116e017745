// legacy.c — the first GGML 4- and 5-bit formats: 32 weights per block, fp16 scales.
//   Q4_0: x = d * (q - 8),   q in 0..15   dot against Q8_0
//   Q4_1: x = d * q + m,     q in 0..15   dot against Q8_1
//   Q5_0: x = d * (q - 16),  q in 0..31   dot against Q8_0
//   Q5_1: x = d * q + m,     q in 0..31   dot against Q8_1
// Byte qs[j] holds element j in its low nibble and element j + 16 in its high one;
// Q5 keeps the fifth bit of element j as bit j of qh (a little-endian uint32).
// With Q8_1 activations (s = dy * sum(qy)) the min term of a block is m * s, so
// the dot is sum over blocks of dx*dy * sum(q*qy) + m*s: integers inside a block.
#include "avxvnni.h"

// The 32 quants of a block, unsigned (before the -8 / -16 offset), in element order.
static inline void unpack_q4(const uint8_t *qs, int *q) {
    for (int j = 0; j < 16; j++) {
        q[j] = qs[j] & 0x0f;
        q[j + 16] = qs[j] >> 4;
    }
}
static inline void unpack_q5(const uint8_t *qs, const uint8_t *qh, int *q) {
    uint32_t h;
    memcpy(&h, qh, 4);
    unpack_q4(qs, q);
    for (int j = 0; j < 32; j++) q[j] |= (int)((h >> j) & 1) << 4;
}

// ---------------------------------------------------------------------------
// Dequantizers (gguf-py order: float32 d times float32 q, then + m)

void lp_q4_0_to_float(const void *restrict vx, float *restrict y, int64_t n) {
    const block_q4_0 *restrict x = vx;
    int q[32];
    for (int64_t i = 0; i < n / QK4_0; i++, y += QK4_0) {
        const float d = lp_half_to_float(x[i].d);
        unpack_q4(x[i].qs, q);
        for (int j = 0; j < QK4_0; j++) y[j] = d * (float)(q[j] - 8);
    }
}

void lp_q4_1_to_float(const void *restrict vx, float *restrict y, int64_t n) {
    const block_q4_1 *restrict x = vx;
    int q[32];
    for (int64_t i = 0; i < n / QK4_1; i++, y += QK4_1) {
        const float d = lp_half_to_float(x[i].d), m = lp_half_to_float(x[i].m);
        unpack_q4(x[i].qs, q);
        for (int j = 0; j < QK4_1; j++) y[j] = d * (float)q[j] + m;
    }
}

void lp_q5_0_to_float(const void *restrict vx, float *restrict y, int64_t n) {
    const block_q5_0 *restrict x = vx;
    int q[32];
    for (int64_t i = 0; i < n / QK5_0; i++, y += QK5_0) {
        const float d = lp_half_to_float(x[i].d);
        unpack_q5(x[i].qs, x[i].qh, q);
        for (int j = 0; j < QK5_0; j++) y[j] = d * (float)(q[j] - 16);
    }
}

void lp_q5_1_to_float(const void *restrict vx, float *restrict y, int64_t n) {
    const block_q5_1 *restrict x = vx;
    int q[32];
    for (int64_t i = 0; i < n / QK5_1; i++, y += QK5_1) {
        const float d = lp_half_to_float(x[i].d), m = lp_half_to_float(x[i].m);
        unpack_q5(x[i].qs, x[i].qh, q);
        for (int j = 0; j < QK5_1; j++) y[j] = d * (float)q[j] + m;
    }
}

// ---------------------------------------------------------------------------
// As int8 quants with a scale (and min) per block, for the batched product.

// lp_<t>_to_s8 for a legacy type: UNPACK(block, u) gives the unsigned quants,
// OFFSET is taken off, MIN(block, i) stores the min where the type has one.
#define LP_LEGACY_TO_S8(t, UNPACK, OFFSET, MIN)                                                  \
    void lp_##t##_to_s8(const void *restrict vx, int8_t *restrict q, float *restrict scale,       \
                        int16_t *restrict sub, float *restrict min, int64_t n) {                   \
        const block_##t *restrict x = vx;                                                          \
        int u[32];                                                                                 \
        (void)min, (void)sub;                                                                      \
        for (int64_t i = 0; i < n / 32; i++) {                                                     \
            UNPACK(x[i], u);                                                                       \
            for (int j = 0; j < 32; j++) q[32 * i + j] = (int8_t)(u[j] - (OFFSET));                \
            scale[i] = lp_half_to_float(x[i].d);                                                   \
            MIN(x[i], i);                                                                          \
        }                                                                                          \
    }
#define LP_UNPACK4(b, u) unpack_q4((b).qs, u)
#define LP_UNPACK5(b, u) unpack_q5((b).qs, (b).qh, u)
#define LP_NO_MIN(b, i) ((void)0)
#define LP_MIN(b, i) (min[i] = lp_half_to_float((b).m))
LP_LEGACY_TO_S8(q4_0, LP_UNPACK4, 8, LP_NO_MIN)
LP_LEGACY_TO_S8(q4_1, LP_UNPACK4, 0, LP_MIN)
LP_LEGACY_TO_S8(q5_0, LP_UNPACK5, 16, LP_NO_MIN)
LP_LEGACY_TO_S8(q5_1, LP_UNPACK5, 0, LP_MIN)
#undef LP_LEGACY_TO_S8
#undef LP_UNPACK4
#undef LP_UNPACK5
#undef LP_NO_MIN
#undef LP_MIN

// ---------------------------------------------------------------------------
// Reference dot products: integer sum per block, one float multiply per block.

static inline int dot_block(const int *q, int offset, const int8_t *qy) {
    int sumi = 0;
    for (int j = 0; j < 32; j++) sumi += (q[j] - offset) * qy[j];
    return sumi;
}

void lp_vec_dot_q4_0_ref(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q4_0 *restrict x = vx;
    const block_q8_0 *restrict y = vy;
    int q[32];
    float sumf = 0.0f;
    for (int i = 0; i < n / QK4_0; i++) {
        unpack_q4(x[i].qs, q);
        const int sumi = dot_block(q, 8, y[i].qs);
        sumf += (float)sumi * (lp_half_to_float(x[i].d) * lp_half_to_float(y[i].d));
    }
    *s = sumf;
}

void lp_vec_dot_q4_1_ref(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q4_1 *restrict x = vx;
    const block_q8_1 *restrict y = vy;
    int q[32];
    float sumf = 0.0f;
    for (int i = 0; i < n / QK4_1; i++) {
        unpack_q4(x[i].qs, q);
        const int sumi = dot_block(q, 0, y[i].qs);
        sumf += (float)sumi * (lp_half_to_float(x[i].d) * lp_half_to_float(y[i].d)) +
                lp_half_to_float(x[i].m) * lp_half_to_float(y[i].s);
    }
    *s = sumf;
}

void lp_vec_dot_q5_0_ref(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q5_0 *restrict x = vx;
    const block_q8_0 *restrict y = vy;
    int q[32];
    float sumf = 0.0f;
    for (int i = 0; i < n / QK5_0; i++) {
        unpack_q5(x[i].qs, x[i].qh, q);
        const int sumi = dot_block(q, 16, y[i].qs);
        sumf += (float)sumi * (lp_half_to_float(x[i].d) * lp_half_to_float(y[i].d));
    }
    *s = sumf;
}

void lp_vec_dot_q5_1_ref(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q5_1 *restrict x = vx;
    const block_q8_1 *restrict y = vy;
    int q[32];
    float sumf = 0.0f;
    for (int i = 0; i < n / QK5_1; i++) {
        unpack_q5(x[i].qs, x[i].qh, q);
        const int sumi = dot_block(q, 0, y[i].qs);
        sumf += (float)sumi * (lp_half_to_float(x[i].d) * lp_half_to_float(y[i].d)) +
                lp_half_to_float(x[i].m) * lp_half_to_float(y[i].s);
    }
    *s = sumf;
}

// ---------------------------------------------------------------------------
// AVX2 (Q5_0, Q5_1; Q4_0 and Q4_1 take the group kernels of legacy_groups.c). Per block: the
// 16 quant bytes are loaded into both halves of a register
// and the upper half shifted by 4, so one AND leaves the 32 quants in element
// order; maddubs multiplies them (unsigned) with the activation bytes, and the
// offset of Q4_0/Q5_0 comes off as maddubs(offset, qy); madd sums to 8 int32,
// then one convert and one FMA with the block's scale. Two blocks per step into
// two accumulators. Q4_0/Q5_0 gather the 4 fp16 scales of a step in a general
// register for one conversion; Q4_1/Q5_1 convert [d, m] and [d, s] per block.
// (Measured on Zen 4, each choice against the alternatives: unpacking with
// inserts, merging two blocks per madd, the sign trick for the offset.)

#if LP_X86
LP_AVX2_BEGIN

// 32 quants of 4 bits: low nibbles of the 16 bytes at qs, then the high nibbles
static inline __m256i nibbles32(const uint8_t *qs) {
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    return _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f));
}

// Bit j of the 32 bits at p as 0x10 in byte j: the fifth bit of a Q5 quant
static inline __m256i fifth_bits32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    const __m256i which = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                            0x0101010101010101, 0x0000000000000000);
    const __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201ull);
    const __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)v), which);  // byte j = byte j/8 of v
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit), _mm256_set1_epi8(0x10));
}

// sum over the block of (q - offset) * qy for unsigned quants q < 32, as 8 int32 partial sums
static inline __m256i dot_block_avx2(__m256i q, const int8_t *qy, int offset) {
    const __m256i y = _mm256_loadu_si256((const __m256i *)qy);
    __m256i p = _mm256_maddubs_epi16(q, y);
    if (offset) p = _mm256_sub_epi16(p, _mm256_maddubs_epi16(_mm256_set1_epi8((char)offset), y));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

// The scales of blocks i, i + 1 of a Q4_0 / Q5_0 row, dx*dy in lanes 0 and 1: the
// four fp16 gathered into one 64-bit word, one conversion, one multiply.
#define LP_SCALES2(x, y, i)                                                                  \
    _mm_cvtph_ps(_mm_cvtsi64_si128((int64_t)((uint64_t)(x)[i].d | (uint64_t)(x)[(i) + 1].d << 16 | \
                                             (uint64_t)(y)[i].d << 32 | (uint64_t)(y)[(i) + 1].d << 48)))

#define LX_ISA avx2
#define LX_DOT dot_block_avx2
#include "legacy_x86.h"
#undef LX_ISA
#undef LX_DOT
LP_AVX2_END

// AVX-VNNI (avxvnni.h): a block's lanes by VPDPBUSD, the offset's by a second one; the
// lanes dot_block_avx2 makes (its int16 pair sums are exact: q < 32, |qy| <= 128).
LP_AVXVNNI_BEGIN
static inline __m256i dot_block_avxvnni(__m256i q, const int8_t *qy, int offset) {
    const __m256i y = _mm256_loadu_si256((const __m256i *)qy), zero = _mm256_setzero_si256();
    const __m256i p = _mm256_dpbusd_avx_epi32(zero, q, y);
    return offset ? _mm256_sub_epi32(p, _mm256_dpbusd_avx_epi32(zero, _mm256_set1_epi8((char)offset), y)) : p;
}
#define LX_ISA avxvnni
#define LX_DOT dot_block_avxvnni
#include "legacy_x86.h"
#undef LX_ISA
#undef LX_DOT

// vec_dot_4weights of Q4_0 / Q5_0 (decoding one sequence): four weight rows (x + r * bx)
// against one activation row. The activation blocks, their scales and their offset lanes are
// loaded or made once for the four rows; each row's lanes, scale products, accumulators (even
// and odd blocks) and final sum are vec_dot's (LP_DOT_Q8_0_BODY), so its result is vec_dot's
// bit for bit. Four streams of weights are followed worse by the hardware prefetchers than
// one: while a step reads its two blocks of each row, it asks for the same share of the next
// four rows (they follow in memory), and of the four after them into L2 (Mistral-width Q4_0
// generation with AVX-VNNI 1.76 -> 1.69 s per 64 tokens). Rows under LP_DOT4W_MIN columns take vec_dot (DOT) four
// times: streaming 576-column Q4_0 rows (one thread, Zen 4), four side by side ran at 6-7 GB/s
// with the prefetch, 8 without, one at a time 11; 4096 columns 12.3 against 11.8 (without the
// prefetch 5). QUANTS(xb, b) gives block b's unsigned quants of row xb.
#define LP_DOT4W_MIN 2048
#define LP_DOT4W_Q8_0_BODY(T, QUANTS, OFFSET, DOT)                                                \
    if (n < LP_DOT4W_MIN) {                                                                     \
        for (int r = 0; r < 4; r++) DOT(n, s + r, (const uint8_t *)vx + r * bx, vy);            \
        return;                                                                                 \
    }                                                                                           \
    const int nb = n / 32;                                                                      \
    const block_q8_0 *restrict y = vy;                                                          \
    const T *xr[4];                                                                             \
    __m256 acc0[4], acc1[4];                                                                    \
    for (int r = 0; r < 4; r++) {                                                               \
        xr[r] = (const T *)((const uint8_t *)vx + r * bx);                                      \
        acc0[r] = acc1[r] = _mm256_setzero_ps();                                                \
    }                                                                                           \
    const __m256i zero = _mm256_setzero_si256(), off = _mm256_set1_epi8(OFFSET);                \
    int i = 0;                                                                                  \
    for (; i + 1 < nb; i += 2) {                                                                \
        const __m128 dy = _mm_cvtph_ps(_mm_cvtsi32_si128((int)(y[i].d | (uint32_t)y[i + 1].d << 16))); \
        const __m256i y0 = _mm256_loadu_si256((const __m256i *)y[i].qs);                        \
        const __m256i y1 = _mm256_loadu_si256((const __m256i *)y[i + 1].qs);                    \
        const __m256i o0 = _mm256_dpbusd_avx_epi32(zero, off, y0), o1 = _mm256_dpbusd_avx_epi32(zero, off, y1); \
        lp_prefetch_next((const uint8_t *)vx, bx, (size_t)i * sizeof(T), 2 * sizeof(T), 4);     \
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) {                                   \
            const uint32_t dx = xr[r][i].d | (uint32_t)xr[r][i + 1].d << 16;                    \
            const __m256 d = _mm256_castps128_ps256(_mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)dx)), dy)); \
            const __m256i p0 = _mm256_sub_epi32(_mm256_dpbusd_avx_epi32(zero, QUANTS(xr[r], i), y0), o0); \
            const __m256i p1 = _mm256_sub_epi32(_mm256_dpbusd_avx_epi32(zero, QUANTS(xr[r], i + 1), y1), o1); \
            acc0[r] = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(d, _mm256_set1_epi32(0)), _mm256_cvtepi32_ps(p0), acc0[r]); \
            acc1[r] = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(d, _mm256_set1_epi32(1)), _mm256_cvtepi32_ps(p1), acc1[r]); \
        }                                                                                       \
    }                                                                                           \
    if (i < nb)                                                                                 \
        for (int r = 0; r < 4; r++) {                                                           \
            const __m128 d0 = _mm_mul_ps(lp_halves2(&xr[r][i].d), lp_halves2(&y[i].d)); /* lane 0 */  \
            const __m256i p0 = dot_block_avxvnni(QUANTS(xr[r], i), y[i].qs, OFFSET);            \
            acc0[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(d0), _mm256_cvtepi32_ps(p0), acc0[r]); \
        }                                                                                       \
    for (int r = 0; r < 4; r++) s[r] = lp_hsum_f32x8(_mm256_add_ps(acc0[r], acc1[r]));

#define Q5_QUANTS_OF(xb, b) _mm256_or_si256(nibbles32((xb)[b].qs), fifth_bits32((xb)[b].qh))
void lp_vec_dot_4weights_q5_0_avxvnni(int n, float *restrict s, const void *restrict vx, size_t bx,
                                      const void *restrict vy) {
    LP_DOT4W_Q8_0_BODY(block_q5_0, Q5_QUANTS_OF, 16, lp_vec_dot_q5_0_avxvnni)
}
#undef Q5_QUANTS_OF
#undef LP_DOT4W_Q8_0_BODY
#undef LP_DOT4W_MIN
LP_AVXVNNI_END
#undef LP_SCALES2
#endif

// ---------------------------------------------------------------------------
// NEON. Quants as bytes (unsigned, or signed once the offset is off), two
// 16-byte dot products per block, the int32 sums converted and scaled; two
// blocks per step into two accumulators.

#if LP_ARM
// The first 4 fp16 at p as floats (p's block has at least 8 bytes from there).
static inline float32x4_t halves4(const lp_half *p) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}

// Nibbles of a block: elements 0..15 in *lo, 16..31 in *hi.
static inline void nibbles_neon(const uint8_t *qs, uint8x16_t *lo, uint8x16_t *hi) {
    const uint8x16_t v = vld1q_u8(qs);
    *lo = vandq_u8(v, vdupq_n_u8(0x0f));
    *hi = vshrq_n_u8(v, 4);
}

// Q5 quants: the nibbles with bit j of qh as 0x10 in element j.
static inline void q5_neon(const uint8_t *qs, const uint8_t *qh, uint8x16_t *lo, uint8x16_t *hi) {
    static const uint8_t idx_lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    static const uint8_t idx_hi[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint32_t v;
    memcpy(&v, qh, 4);
    const uint8x16_t bytes = vreinterpretq_u8_u32(vdupq_n_u32(v));
    const uint8x16_t b = vld1q_u8(bit), h = vdupq_n_u8(0x10);
    nibbles_neon(qs, lo, hi);
    // element j takes qh byte j/8 and tests bit j%8
    *lo = vorrq_u8(*lo, vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, vld1q_u8(idx_lo)), b), h));
    *hi = vorrq_u8(*hi, vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, vld1q_u8(idx_hi)), b), h));
}

// (q - offset) . qy for one block (q < 32), times lane 0 of f: 4 float partial sums
static inline float32x4_t dot_block_neon(uint8x16_t lo, uint8x16_t hi, int offset, const int8_t *qy, float32x4_t f) {
    const int8x16_t off = vdupq_n_s8((int8_t)offset);
    const int8x16_t a = vsubq_s8(vreinterpretq_s8_u8(lo), off), b = vsubq_s8(vreinterpretq_s8_u8(hi), off);
    const int32x4_t p = lp_dot_i8x16(lp_dot_i8x16(vdupq_n_s32(0), a, vld1q_s8(qy)), b, vld1q_s8(qy + 16));
    return vmulq_laneq_f32(vcvtq_f32_s32(p), f, 0);
}

// Q4_0 / Q5_0 (Q8_0 activations). QUANTS(b, lo, hi) unpacks block b's quants.
// f = [dx, ...] * [dy, ...]: lane 0 is the block's scale.
#define LP_NEON_Q8_0_BODY(QUANTS, OFFSET)                                                    \
    const int nb = n / 32;                                                                   \
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0;                                       \
    uint8x16_t lo, hi;                                                                       \
    int i = 0;                                                                               \
    for (; i + 1 < nb; i += 2) {                                                             \
        QUANTS(i, &lo, &hi);                                                                 \
        acc0 = vaddq_f32(acc0, dot_block_neon(lo, hi, OFFSET, y[i].qs, vmulq_f32(halves4(&x[i].d), halves4(&y[i].d)))); \
        QUANTS(i + 1, &lo, &hi);                                                             \
        acc1 = vaddq_f32(acc1, dot_block_neon(lo, hi, OFFSET, y[i + 1].qs, vmulq_f32(halves4(&x[i + 1].d), halves4(&y[i + 1].d)))); \
    }                                                                                        \
    if (i < nb) {                                                                            \
        QUANTS(i, &lo, &hi);                                                                 \
        acc0 = vaddq_f32(acc0, dot_block_neon(lo, hi, OFFSET, y[i].qs, vmulq_f32(halves4(&x[i].d), halves4(&y[i].d)))); \
    }                                                                                        \
    *s = vaddvq_f32(vaddq_f32(acc0, acc1));

// Q4_1 / Q5_1 (Q8_1 activations): [d, m] times [d, s] = [dx*dy, m*s]; lane 1 of
// `mins` sums the min terms.
#define LP_NEON_Q8_1_BODY(QUANTS)                                                            \
    const int nb = n / 32;                                                                   \
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0, mins = acc0;                          \
    uint8x16_t lo, hi;                                                                       \
    int i = 0;                                                                               \
    for (; i + 1 < nb; i += 2) {                                                             \
        const float32x4_t f0 = vmulq_f32(halves4(&x[i].d), halves4(&y[i].d));               \
        const float32x4_t f1 = vmulq_f32(halves4(&x[i + 1].d), halves4(&y[i + 1].d));       \
        QUANTS(i, &lo, &hi);                                                                 \
        acc0 = vaddq_f32(acc0, dot_block_neon(lo, hi, 0, y[i].qs, f0));                      \
        QUANTS(i + 1, &lo, &hi);                                                             \
        acc1 = vaddq_f32(acc1, dot_block_neon(lo, hi, 0, y[i + 1].qs, f1));                  \
        mins = vaddq_f32(mins, vaddq_f32(f0, f1));                                           \
    }                                                                                        \
    if (i < nb) {                                                                            \
        const float32x4_t f0 = vmulq_f32(halves4(&x[i].d), halves4(&y[i].d));               \
        QUANTS(i, &lo, &hi);                                                                 \
        acc0 = vaddq_f32(acc0, dot_block_neon(lo, hi, 0, y[i].qs, f0));                      \
        mins = vaddq_f32(mins, f0);                                                          \
    }                                                                                        \
    *s = vaddvq_f32(vaddq_f32(acc0, acc1)) + vgetq_lane_f32(mins, 1);

#define Q4_NEON(b, lo, hi) nibbles_neon(x[b].qs, lo, hi)
#define Q5_NEON(b, lo, hi) q5_neon(x[b].qs, x[b].qh, lo, hi)

void lp_vec_dot_q4_0_neon(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q4_0 *restrict x = vx;
    const block_q8_0 *restrict y = vy;
    LP_NEON_Q8_0_BODY(Q4_NEON, 8)
}

void lp_vec_dot_q5_0_neon(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q5_0 *restrict x = vx;
    const block_q8_0 *restrict y = vy;
    LP_NEON_Q8_0_BODY(Q5_NEON, 16)
}

void lp_vec_dot_q4_1_neon(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q4_1 *restrict x = vx;
    const block_q8_1 *restrict y = vy;
    LP_NEON_Q8_1_BODY(Q4_NEON)
}

void lp_vec_dot_q5_1_neon(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q5_1 *restrict x = vx;
    const block_q8_1 *restrict y = vy;
    LP_NEON_Q8_1_BODY(Q5_NEON)
}
#undef Q4_NEON
#undef Q5_NEON
#undef LP_NEON_Q8_0_BODY
#undef LP_NEON_Q8_1_BODY
#endif

// Four activation rows per weight row (vec_dot_4acts): legacy_vec_dot_4acts.c.
