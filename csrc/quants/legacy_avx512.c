// legacy_avx512.c — vec_dot of the 32-weight block formats (Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0) with AVX-512 VNNI.
//
// VPDPBUSD multiplies unsigned weight quants with signed activation quants and sums
// each four products into one int32 lane (no int16 step, so nothing saturates); the
// lanes become floats and take their block's dx * dy in a fused multiply-add.
// Offsets (-8, -16) come off as offset * activations, a second VPDPBUSD of the
// constant offset. Q8_0 weights are signed: their sign moves onto the activations and
// their magnitude (at most 128) is the unsigned side.
//
// Two layouts, each kept where it measured faster on this kind of CPU (Zen 4, which
// runs 512-bit operations as two 256-bit halves):
// - Q4_0, Q5_0: one block per 256-bit register, four blocks per step
//   (lp_dot_rows_offset below); the offset starts the integer sums and the four
//   blocks' scales are converted together.
// - Q4_1, Q5_1, Q8_0: two blocks per 512-bit register (block i in bits 0..255, block
//   i+1 in 256..511). One block per register measured slower for Q4_1 and Q5_1 (in
//   cache, their m * s adds work per block) and, for Q8_0, slower streaming short
//   rows (576 columns) from memory, which decoding does.
//
// Each kernel is written once for R weight rows against one activation row, or one
// weight row against A activation rows: R = A = 1 is vec_dot, R = 4 is vec_dot_4weights
// (decoding one sequence: the activation blocks, their scales and the offset sums are
// loaded or computed once for four rows, and the four results reduced together), A = 2..4
// is vec_dot_rows (several sequences, small prompt groups: the weight quants decoded once).
// Every row goes through the same operations in the same order either way, so both give
// vec_dot's results bit for bit.
#include "simd.h"
#include "quants/rows_pre.h"
#include "quants/avxvnni.h"

// A pair of blocks of four prepared activation rows (rows_pre.h; see "Prepared activation rows" below).
typedef struct {
    uint8_t qs[4][64];  // row a's quants of the two blocks (Q8_0: plus 128)
    float d[8];         // row a's two block scales in lanes 2a, 2a + 1
    float s[8];         // Q8_1: row a's two block sums s, the same way
} lp_pre_quad;

#if LP_X86
LP_AVX512_BEGIN

// 16 bytes at p, twice: bits 0..255 (block i), and 16 bytes at q twice: bits 256..511
LP_INLINE __m512i lp_pair128(const uint8_t *p, const uint8_t *q) {
    const __m256i a = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)q));
    return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}

// The 32 4-bit quants of two blocks: low nibbles (elements 0..15) then high nibbles (16..31).
LP_INLINE __m512i lp_nibbles64(const uint8_t *qs0, const uint8_t *qs1) {
    const __m512i v = lp_pair128(qs0, qs1);
    return _mm512_and_si512(_mm512_srlv_epi64(v, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4)), _mm512_set1_epi8(0x0f));
}

// Bit j of the little-endian 32-bit words at h0 (block i) and h1 (block i+1) as 0x10 in byte j.
LP_INLINE __m512i lp_fifth_bits64(const uint8_t *h0, const uint8_t *h1) {
    uint32_t a, b;
    memcpy(&a, h0, 4);
    memcpy(&b, h1, 4);
    return _mm512_maskz_mov_epi8((__mmask64)a | (__mmask64)b << 32, _mm512_set1_epi8(0x10));
}

// 32 activation quants of each of two blocks
LP_INLINE __m512i lp_act64(const int8_t *y0, const int8_t *y1) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)y0)),
                              _mm256_loadu_si256((const __m256i *)y1), 1);
}

// The 32 activation quants of one block in bits 0..255, zeros above.
LP_INLINE __m512i lp_act32(const int8_t *y0) {
    return _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)y0));
}

// The fp16 values a, b as floats [a, b, 0, 0].
LP_INLINE __m128 lp_half2(lp_half a, lp_half b) {
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)a | (uint32_t)b << 16)));
}

// Lane 0 of v in lanes 0..7, lane 1 in lanes 8..15: a pair's two block factors.
LP_INLINE __m512 lp_spread2(__m128 v) {
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                 _mm512_castps128_ps512(v));
}

// The two fp16 at p and the two at q (a block's [d, m] or [d, s]) as 4 floats.
LP_INLINE __m128 lp_dm2(const lp_half *p, const lp_half *q) {
    uint32_t a, b;
    memcpy(&a, p, 4);
    memcpy(&b, q, 4);
    return _mm_cvtph_ps(_mm_cvtsi64_si128((int64_t)((uint64_t)a | (uint64_t)b << 32)));
}

// The bodies below dot R weight rows (at vx + r * bx) with one activation row, or one
// weight row with A activation rows (at vy + a * by): R * A pairs, pair k in acc[k]. Each
// pair goes through the same operations in the same order whatever R and A are; what is
// shared (the activation blocks when R > 1, the weight quants when A > 1) is the same
// expression in every pair, computed once after the pair loop is unrolled.
#define LP_FOR_PAIRS(k) _Pragma("GCC unroll 4") for (int k = 0; k < R * A; k++)
#define LP_PAIR_X(k) (vx + (A > 1 ? 0 : (size_t)(k) * bx))
#define LP_PAIR_Y(k) ((const __typeof__(*vy) *)((const uint8_t *)vy + (A > 1 ? (size_t)(k) * by : 0)))

// A activation rows' sums to s[a * bs]: the sum of acc[a]'s lanes (as one row alone sums them)
// + lane a of add, a < A
LP_INLINE void lp_store_pre(float *s, size_t bs, const __m512 *acc, __m128 add, const int A) {
    const __m512 z = _mm512_setzero_ps();
    const __m128 sum = _mm_add_ps(lp_sums4(acc[0], A > 1 ? acc[1] : z, A > 2 ? acc[2] : z, A > 3 ? acc[3] : z), add);
    float out[4];
    _mm_storeu_ps(out, sum);
    for (int a = 0; a < A; a++) s[a * bs] = out[a];
}

// The pairs' sums: R weight rows to s[0..R-1] (lp_store_sums), A activation rows to s[a * bs]
// (lp_store_pre), each reduced as one row alone is.
LP_INLINE void lp_store_pairs(float *s, size_t bs, const __m512 *acc, const float *add, const int R, const int A) {
    if (A == 1) {
        lp_store_sums(s, acc, add, R);
        return;
    }
    float add4[4] = { 0 };
    for (int a = 0; a < A; a++) add4[a] = add[a];
    lp_store_pre(s, bs, acc, _mm_loadu_ps(add4), A);
}

// Q4_1 / Q5_1 block pairs: the weight quants (unsigned) of blocks i and j of row x.
#define LP_Q4_1_2(x, i, j) lp_nibbles64((x)[i].qs, (x)[j].qs)
#define LP_Q5_1_2(x, i, j) _mm512_or_si512(lp_nibbles64((x)[i].qs, (x)[j].qs), lp_fifth_bits64((x)[i].qh, (x)[j].qh))

// Q4_1 / Q5_1: sum over blocks of dx*dy * sum(q * qy) + m * s.
#define LP_DOT512_MIN(T, QUANTS2)                                                                           \
    LP_INLINE void lp_dot_rows_##T(int n, float *restrict s, size_t bs, const uint8_t *restrict vx,       \
                                   size_t bx, const block_q8_1 *restrict vy, size_t by, const int R,      \
                                   const int A) {                                                          \
        const int nb = n / 32;                                                                             \
        __m512 acc[4];                                                                                     \
        __m128 mins4[4];                                                                                   \
        LP_FOR_PAIRS(k) {                                                                                  \
            acc[k] = _mm512_setzero_ps();                                                                  \
            mins4[k] = _mm_setzero_ps();                                                                   \
        }                                                                                                  \
        int i = 0;                                                                                         \
        for (; i + 1 < nb; i += 2) {                                                                       \
            lp_prefetch_next(vx, bx, i * sizeof(block_##T), 2 * sizeof(block_##T), R);                     \
            LP_FOR_PAIRS(k) {                                                                              \
                const block_##T *x = (const block_##T *)LP_PAIR_X(k);                                      \
                const block_q8_1 *y = LP_PAIR_Y(k);                                                        \
                const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), QUANTS2(x, i, i + 1),        \
                                                      lp_act64(y[i].qs, y[i + 1].qs));                     \
                /* [d m] of two weight blocks times [d s] of two activation blocks: dx*dy, m*s, dx*dy, m*s */ \
                const __m128 f = _mm_mul_ps(lp_dm2(&x[i].d, &x[i + 1].d), lp_dm2(&y[i].d, &y[i + 1].d));   \
                const __m512 d = _mm512_permutexvar_ps(                                                    \
                    _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2), _mm512_castps128_ps512(f)); \
                acc[k] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(p), acc[k]);                               \
                mins4[k] = _mm_add_ps(mins4[k], f);                                                        \
            }                                                                                              \
        }                                                                                                  \
        float mins[4];                                                                                     \
        LP_FOR_PAIRS(k)                                                                                    \
            mins[k] = _mm_cvtss_f32(_mm_shuffle_ps(mins4[k], mins4[k], 1)) +                               \
                      _mm_cvtss_f32(_mm_shuffle_ps(mins4[k], mins4[k], 3));                                \
        if (i < nb) {                                                                                      \
            LP_FOR_PAIRS(k) {                                                                              \
                const block_##T *x = (const block_##T *)LP_PAIR_X(k);                                      \
                const block_q8_1 *y = LP_PAIR_Y(k);                                                        \
                const __m512i p = _mm512_maskz_mov_epi32(                                                  \
                    0x00ff, _mm512_dpbusd_epi32(_mm512_setzero_si512(), QUANTS2(x, i, i), lp_act32(y[i].qs))); \
                acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(x[i].d) * _cvtsh_ss(y[i].d)),           \
                                         _mm512_cvtepi32_ps(p), acc[k]);                                   \
                mins[k] += _cvtsh_ss(x[i].m) * _cvtsh_ss(y[i].s);                                          \
            }                                                                                              \
        }                                                                                                  \
        lp_store_pairs(s, bs, acc, mins, R, A);                                                            \
    }

LP_DOT512_MIN(q4_1, LP_Q4_1_2)
LP_DOT512_MIN(q5_1, LP_Q5_1_2)

// Q8_0: |qx| (at most 128, fits the unsigned side) times qy with qx's sign.
LP_INLINE void lp_dot_rows_q8_0(int n, float *restrict s, size_t bs, const uint8_t *restrict vx, size_t bx,
                                const block_q8_0 *restrict vy, size_t by, const int R, const int A) {
    const int nb = n / 32;
    __m512 acc[4];
    LP_FOR_PAIRS(k) acc[k] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 1 < nb; i += 2) {
        lp_prefetch_next(vx, bx, i * sizeof(block_q8_0), 2 * sizeof(block_q8_0), R);
        LP_FOR_PAIRS(k) {
            const block_q8_0 *x = (const block_q8_0 *)LP_PAIR_X(k);
            const block_q8_0 *y = LP_PAIR_Y(k);
            const __m512i a = lp_act64(y[i].qs, y[i + 1].qs);
            const __m512i q = lp_act64(x[i].qs, x[i + 1].qs);
            const __mmask64 neg = _mm512_movepi8_mask(q);
            const __m512i sa = _mm512_mask_sub_epi8(a, neg, _mm512_setzero_si512(), a);
            const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(q), sa);
            const __m512 d = lp_spread2(_mm_mul_ps(lp_half2(x[i].d, x[i + 1].d), lp_half2(y[i].d, y[i + 1].d)));
            acc[k] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(p), acc[k]);
        }
    }
    float tail[4] = { 0 };
    if (i < nb) {
        LP_FOR_PAIRS(k) {
            const block_q8_0 *x = (const block_q8_0 *)LP_PAIR_X(k);
            const block_q8_0 *y = LP_PAIR_Y(k);
            const __m256i a = _mm256_loadu_si256((const __m256i *)y[i].qs);
            const __m256i q = _mm256_loadu_si256((const __m256i *)x[i].qs);
            const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(q), _mm256_sign_epi8(a, q));
            tail[k] = _cvtsh_ss(x[i].d) * _cvtsh_ss(y[i].d) * (float)lp_hsum_i32x8(p);
        }
    }
    lp_store_pairs(s, bs, acc, tail, R, A);
}

// Four fp16 values, at p, p + stride, p + 2 stride and p + 3 stride, as floats in
// lanes 0..3 and again in lanes 4..7. The four loads and the packing stay in
// integer registers: vector shuffles here measured slower (they compete with the
// conversions for the same ports).
LP_INLINE __m256 lp_halves4x2(const uint8_t *p, const size_t stride) {
    uint16_t h[4];
    for (int k = 0; k < 4; k++) memcpy(&h[k], p + k * stride, 2);
    const uint64_t v = (uint64_t)h[0] | (uint64_t)h[1] << 16 | (uint64_t)h[2] << 32 | (uint64_t)h[3] << 48;
    return _mm256_cvtph_ps(_mm_set1_epi64x((long long)v));
}

// The 32 unsigned quants of the Q4_0 / Q5_0 block at x in the order of the
// activation quants. Q4_0: the 16 bytes twice, the low nibbles kept in bits 0..127
// and the high nibbles left in place in bits 128..255, i.e. the quants of elements
// 16..31 times 16 (no shift; the factor comes off at the end). Q5_0: shifted
// nibbles plus the fifth bits.
LP_INLINE __m256i lp_block_quants(const int q5, const uint8_t *x) {
    if (!q5) {
        const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)((const block_q4_0 *)x)->qs));
        return _mm256_and_si256(v, _mm256_setr_m128i(_mm_set1_epi8(0x0f), _mm_set1_epi8((char)0xf0)));
    }
    const block_q5_0 *b = (const block_q5_0 *)x;
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)b->qs));
    const __m256i lo4 = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f));
    uint32_t h;
    memcpy(&h, b->qh, 4);
    return _mm256_or_si256(lo4, _mm256_maskz_mov_epi8((__mmask32)h, _mm256_set1_epi8(0x10)));
}

// Q4_0 (q5 = 0) and Q5_0 (q5 = 1): R weight rows against one row of Q8_0
// activation blocks, one block per 256-bit register, four blocks per step.
//
// Per block, VPDPBUSD sums the products into eight int32 lanes whose accumulator
// starts at -offset * activations (8 or 16, scaled like the quants; computed once
// per activation block for all R rows), so the offset costs nothing per row. The
// lanes become floats and take dx * dy in a fused multiply-add. The four blocks'
// dx are converted together and multiplied by their dy at once; each block's
// product is broadcast from that register with an in-lane shuffle. Two
// accumulators per row (even and odd blocks) keep the adds from waiting on each
// other.
LP_INLINE void lp_dot_rows_offset(const int q5, int n, float *restrict s, size_t sb, const uint8_t *restrict vx,
                                  size_t bx, const block_q8_0 *restrict vy, size_t by, const int R, const int A) {
    const size_t bs = q5 ? sizeof(block_q5_0) : sizeof(block_q4_0);
    const __m256i off = q5 ? _mm256_set1_epi8(16) : _mm256_setr_m128i(_mm_set1_epi8(8), _mm_set1_epi8((char)0x80));
    const int nb = n / 32;
    __m256 acc[4][2];
    LP_FOR_PAIRS(k) acc[k][0] = acc[k][1] = _mm256_setzero_ps();
// block j of pair k (weights at x) against activation quants a, integer sums starting at
// p0, times d (the block's dx * dy in every lane)
#define LP_BLOCK(x, a, p0, d, k, j) \
    acc[k][(j) & 1] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(p0, lp_block_quants(q5, x), a)), acc[k][(j) & 1])
    int i = 0;
    for (; i + 4 <= nb; i += 4) {
        lp_prefetch_next(vx, bx, i * bs, 4 * bs, R);
        LP_FOR_PAIRS(k) {
            const block_q8_0 *y = LP_PAIR_Y(k);
            __m256i a[4], p0[4];
            for (int b = 0; b < 4; b++) {
                a[b] = _mm256_loadu_si256((const __m256i *)y[i + b].qs);
                p0[b] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_dpbusd_epi32(_mm256_setzero_si256(), off, a[b]));
            }
            const __m256 dy = lp_halves4x2((const uint8_t *)&y[i].d, sizeof(block_q8_0));
            const uint8_t *x = LP_PAIR_X(k) + i * bs;
            const __m256 d = _mm256_mul_ps(lp_halves4x2(x, bs), dy);  // d is the first field of both
            LP_BLOCK(x, a[0], p0[0], _mm256_shuffle_ps(d, d, 0x00), k, 0);
            LP_BLOCK(x + bs, a[1], p0[1], _mm256_shuffle_ps(d, d, 0x55), k, 1);
            LP_BLOCK(x + 2 * bs, a[2], p0[2], _mm256_shuffle_ps(d, d, 0xaa), k, 2);
            LP_BLOCK(x + 3 * bs, a[3], p0[3], _mm256_shuffle_ps(d, d, 0xff), k, 3);
        }
    }
    for (; i < nb; i++) {
        lp_prefetch_next(vx, bx, i * bs, bs, R);
        LP_FOR_PAIRS(k) {
            const block_q8_0 *y = LP_PAIR_Y(k);
            const __m256i a = _mm256_loadu_si256((const __m256i *)y[i].qs);
            const __m256i p0 = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_dpbusd_epi32(_mm256_setzero_si256(), off, a));
            const uint8_t *x = LP_PAIR_X(k) + i * bs;
            lp_half dx;
            memcpy(&dx, x, 2);
            LP_BLOCK(x, a, p0, _mm256_set1_ps(_cvtsh_ss(dx) * _cvtsh_ss(y[i].d)), k, i);
        }
    }
#undef LP_BLOCK
    // per pair: the two accumulators added, then the high half (elements 16..31 of
    // each block; times 16 for Q4_0) onto the low half, then the four lanes summed
    // as (0 + 2) + (1 + 3)
    __m128 v[4];
    LP_FOR_PAIRS(k) {
        const __m256 t = _mm256_add_ps(acc[k][0], acc[k][1]);
        const __m128 hi = _mm256_extractf128_ps(t, 1), lo = _mm256_castps256_ps128(t);
        v[k] = q5 ? _mm_add_ps(lo, hi) : _mm_fmadd_ps(hi, _mm_set1_ps(1.0f / 16), lo);
    }
    if (R == 1) {  // one weight row: each activation row's sum alone
        for (int a = 0; a < A; a++) {
            const __m128 h = _mm_add_ps(v[a], _mm_movehl_ps(v[a], v[a]));
            s[a * sb] = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
        }
        return;
    }
    const __m128 s01 = _mm_add_ps(_mm_unpacklo_ps(v[0], v[1]), _mm_unpackhi_ps(v[0], v[1]));
    const __m128 s23 = _mm_add_ps(_mm_unpacklo_ps(v[2], v[3]), _mm_unpackhi_ps(v[2], v[3]));
    _mm_storeu_ps(s, _mm_add_ps(_mm_movelh_ps(s01, s23), _mm_movehl_ps(s23, s01)));
}
#define lp_dot_rows_q4_0(...) lp_dot_rows_offset(0, __VA_ARGS__)
#define lp_dot_rows_q5_0(...) lp_dot_rows_offset(1, __VA_ARGS__)

// (LP_ALIGNED_CODE: rows_pre.h)
// vec_dot (R = A = 1), vec_dot_4weights (R = 4), vec_dot_rows (A = nr: decoding several
// sequences, small prompt groups)
#define LP_DOT512_ENTRY(T, ACT)                                                                                \
    LP_ALIGNED_CODE void lp_vec_dot_##T##_avx512(int n, float *restrict s, const void *restrict vx,            \
                                                 const void *restrict vy) {                                    \
        lp_dot_rows_##T(n, s, 0, vx, 0, (const ACT *)vy, 0, 1, 1);                                             \
    }                                                                                                          \
    LP_ALIGNED_CODE void lp_vec_dot_4weights_##T##_avx512(int n, float *restrict s, const void *restrict vx,   \
                                                          size_t bx, const void *restrict vy) {                \
        lp_dot_rows_##T(n, s, 0, vx, bx, (const ACT *)vy, 0, 4, 1);                                            \
    }                                                                                                          \
    void lp_vec_dot_rows_##T##_avx512(int n, float *restrict s, size_t bs, const void *restrict vx,            \
                                      const void *restrict vy, size_t by, int nr) {                            \
        for (; nr > 4; nr -= 4, s += 4 * bs, vy = (const uint8_t *)vy + 4 * by)                               \
            lp_dot_rows_##T(n, s, bs, vx, 0, (const ACT *)vy, by, 1, 4);                                       \
        switch (nr) {                                                                                          \
        case 1: lp_dot_rows_##T(n, s, bs, vx, 0, (const ACT *)vy, by, 1, 1); break;                            \
        case 2: lp_dot_rows_##T(n, s, bs, vx, 0, (const ACT *)vy, by, 1, 2); break;                            \
        case 3: lp_dot_rows_##T(n, s, bs, vx, 0, (const ACT *)vy, by, 1, 3); break;                            \
        default: lp_dot_rows_##T(n, s, bs, vx, 0, (const ACT *)vy, by, 1, 4); break;                           \
        }                                                                                                      \
    }
LP_DOT512_ENTRY(q4_0, block_q8_0)
LP_DOT512_ENTRY(q5_0, block_q8_0)
LP_DOT512_ENTRY(q4_1, block_q8_1)
LP_DOT512_ENTRY(q5_1, block_q8_1)
LP_DOT512_ENTRY(q8_0, block_q8_0)


// ---------------------------------------------------------------------------
// Prepared activation rows (rows_pre.h), for rows of an even number of blocks, in groups
// of four rows (the last group padded with zero scales): per pair of blocks a
// lp_pre_quad. The kernels below are the pair loops above with the activation side read
// from there and the scale products of all four rows made at once: dx * dy of the two
// blocks for every row in one multiply (then spread to each row's lanes by a permute),
// and (Q8_1) the four rows' m * s in one multiply and one add, each row's in its own two
// lanes (even and odd blocks, as the pair loop's lanes 1 and 3). Every float operation
// and its operands' order are the pair loop's, so each row's result is vec_dot's.

static void lp_prep_rows(const int q8_1, const void *restrict vy, size_t by, int rows, void *restrict out, int n) {
    const int np = n / 64;
    for (int g = 0; 4 * g < rows; g++) {
        lp_pre_quad *p = (lp_pre_quad *)out + (size_t)g * np;
        for (int j = 0; j < np; j++)
            for (int a = 0; a < 4; a++) {
                const int r = 4 * g + a;
                const uint8_t *y = (const uint8_t *)vy + (size_t)r * by;
                lp_half h[4] = { 0 };  // d, d', s, s' (zero past the last row)
                if (r < rows && q8_1) {
                    const block_q8_1 *b = (const block_q8_1 *)y + 2 * j;
                    memcpy(p[j].qs[a], b[0].qs, 32);
                    memcpy(p[j].qs[a] + 32, b[1].qs, 32);
                    h[0] = b[0].d, h[1] = b[1].d, h[2] = b[0].s, h[3] = b[1].s;
                } else if (r < rows) {
                    const block_q8_0 *b = (const block_q8_0 *)y + 2 * j;
                    _mm512_storeu_si512(p[j].qs[a], _mm512_xor_si512(lp_act64(b[0].qs, b[1].qs), _mm512_set1_epi8((char)0x80)));
                    h[0] = b[0].d, h[1] = b[1].d;
                }
                p[j].d[2 * a] = _cvtsh_ss(h[0]);
                p[j].d[2 * a + 1] = _cvtsh_ss(h[1]);
                p[j].s[2 * a] = _cvtsh_ss(h[2]);
                p[j].s[2 * a + 1] = _cvtsh_ss(h[3]);
            }
    }
}
static void lp_prep_q8_1(const void *restrict y, size_t by, int rows, void *restrict out, int n) {
    lp_prep_rows(1, y, by, rows, out, n);
}
static void lp_prep_q8_0(const void *restrict y, size_t by, int rows, void *restrict out, int n) {
    lp_prep_rows(0, y, by, rows, out, n);
}

// lanes 2a (0..7) and 2a + 1 (8..15) of the 8 products dx * dy: row a's block factors
LP_INLINE __m512 lp_row_factors(__m256 dxy, int a) {
    const __m512i idx = _mm512_inserti64x4(_mm512_set1_epi32(2 * a), _mm256_set1_epi32(2 * a + 1), 1);
    return _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(dxy));
}

// Q4_1 / Q5_1 (the pair loop of LP_DOT512_MIN), W weight rows (1 or 2, bx bytes apart) at
// once: the second row shares the activation loads and the call.
#define LP_PRE512_MIN(T, QUANTS2)                                                                          \
    LP_INLINE void lp_dot_pre_##T(int n, float *restrict s, size_t bs, const uint8_t *restrict vx,        \
                                  size_t bx, const uint8_t *restrict vp, const int A, const int W) {       \
        const int np = n / 64;                                                                             \
        const lp_pre_quad *p = (const lp_pre_quad *)vp;                                                    \
        __m512 acc[2][4];                                                                                  \
        __m256 mins8[2];                                                                                   \
        for (int w = 0; w < W; w++) {                                                                      \
            mins8[w] = _mm256_setzero_ps();                                                                \
            for (int a = 0; a < A; a++) acc[w][a] = _mm512_setzero_ps();                                   \
        }                                                                                                  \
        for (int j = 0; j < np; j++) {                                                                     \
            const int i = 2 * j;                                                                           \
            __m512i q[2];                                                                                  \
            __m256 dxy[2];                                                                                 \
            lp_prefetch_next(vx, bx, i * sizeof(block_##T), 2 * sizeof(block_##T), W);                     \
            for (int w = 0; w < W; w++) {                                                                  \
                const block_##T *x = (const block_##T *)(vx + w * bx);                                     \
                q[w] = QUANTS2(x, i, i + 1);                                                               \
                const __m256 dm = _mm256_castps128_ps256(lp_dm2(&x[i].d, &x[i + 1].d)); /* d m d' m' */    \
                const __m256 dx = _mm256_permutexvar_ps(_mm256_setr_epi32(0, 2, 0, 2, 0, 2, 0, 2), dm);    \
                const __m256 mx = _mm256_permutexvar_ps(_mm256_setr_epi32(1, 3, 1, 3, 1, 3, 1, 3), dm);    \
                dxy[w] = _mm256_mul_ps(dx, _mm256_loadu_ps(p[j].d));                                       \
                mins8[w] = _mm256_add_ps(mins8[w], _mm256_mul_ps(mx, _mm256_loadu_ps(p[j].s)));            \
            }                                                                                              \
            _Pragma("GCC unroll 4") for (int a = 0; a < A; a++) {                                          \
                const __m512i y = _mm512_loadu_si512(p[j].qs[a]);                                          \
                for (int w = 0; w < W; w++) {                                                              \
                    const __m512i pi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[w], y);               \
                    acc[w][a] = _mm512_fmadd_ps(lp_row_factors(dxy[w], a), _mm512_cvtepi32_ps(pi), acc[w][a]); \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
        for (int w = 0; w < W; w++) { /* row a's m * s: its lanes 2a + 2a + 1 */                          \
            const __m128 mins = _mm_hadd_ps(_mm256_castps256_ps128(mins8[w]), _mm256_extractf128_ps(mins8[w], 1)); \
            lp_store_pre(s + w, bs, acc[w], mins, A);                                                      \
        }                                                                                                  \
    }
LP_PRE512_MIN(q4_1, LP_Q4_1_2)
LP_PRE512_MIN(q5_1, LP_Q5_1_2)

// Q8_0 (the pair loop of lp_dot_rows_q8_0): the weights are the signed side, the
// activations plus 128 the unsigned one; the integer sums start at -128 * the weights'
// (once per pair for all rows), so they are the same exact sums of qx * qy.
LP_INLINE void lp_dot_pre_q8_0(int n, float *restrict s, size_t bs, const uint8_t *restrict vx, size_t bx,
                               const uint8_t *restrict vp, const int A, const int W) {
    const int np = n / 64;
    const lp_pre_quad *p = (const lp_pre_quad *)vp;
    __m512 acc[2][4];
    for (int w = 0; w < W; w++)
        for (int a = 0; a < A; a++) acc[w][a] = _mm512_setzero_ps();
    for (int j = 0; j < np; j++) {
        const int i = 2 * j;
        __m512i q[2], off[2];
        __m256 dxy[2];
        lp_prefetch_next(vx, bx, i * sizeof(block_q8_0), 2 * sizeof(block_q8_0), W);
        for (int w = 0; w < W; w++) {
            const block_q8_0 *x = (const block_q8_0 *)(vx + w * bx);
            q[w] = lp_act64(x[i].qs, x[i + 1].qs);
            off[w] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                      _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), q[w]));
            const __m256 dx = _mm256_permutexvar_ps(_mm256_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1),
                                                    _mm256_castps128_ps256(lp_half2(x[i].d, x[i + 1].d)));
            dxy[w] = _mm256_mul_ps(dx, _mm256_loadu_ps(p[j].d));
        }
        _Pragma("GCC unroll 4") for (int a = 0; a < A; a++) {
            const __m512i y = _mm512_loadu_si512(p[j].qs[a]);
            for (int w = 0; w < W; w++) {
                const __m512i pi = _mm512_dpbusd_epi32(off[w], y, q[w]);
                acc[w][a] = _mm512_fmadd_ps(lp_row_factors(dxy[w], a), _mm512_cvtepi32_ps(pi), acc[w][a]);
            }
        }
    }
    for (int w = 0; w < W; w++) lp_store_pre(s + w, bs, acc[w], _mm_setzero_ps(), A);
}

// The activation rows in groups of four (the last group's rows: nr's remainder), W weight
// rows at x, x + bx; bp: a row's share of a group of four.
#define LP_PRE512_GROUPS(T, W)                                                                                 \
    const uint8_t *p = vp;                                                                                     \
    for (; nr > 4; nr -= 4, s += 4 * bs, p += 4 * bp) lp_dot_pre_##T(n, s, bs, x, bx, p, 4, W);               \
    switch (nr) {                                                                                              \
    case 1: lp_dot_pre_##T(n, s, bs, x, bx, p, 1, W); break;                                                   \
    case 2: lp_dot_pre_##T(n, s, bs, x, bx, p, 2, W); break;                                                   \
    case 3: lp_dot_pre_##T(n, s, bs, x, bx, p, 3, W); break;                                                   \
    default: lp_dot_pre_##T(n, s, bs, x, bx, p, 4, W); break;                                                  \
    }
// lp_rows_pre_T: one weight row; lp_rows_pre_2w_T: two (rows_pre.h)
#define LP_PRE512_ENTRY(T)                                                                                     \
    static void lp_rows_pre_##T(int n, float *restrict s, size_t bs, const void *restrict x,                  \
                                const void *restrict vp, size_t bp, int nr) {                                 \
        const size_t bx = 0;                                                                                   \
        LP_PRE512_GROUPS(T, 1)                                                                                 \
    }                                                                                                          \
    static void lp_rows_pre_2w_##T(int n, float *restrict s, size_t bs, const void *restrict x, size_t bx,    \
                                   const void *restrict vp, size_t bp, int nr) {                              \
        LP_PRE512_GROUPS(T, 2)                                                                                 \
    }
LP_PRE512_ENTRY(q4_1)
LP_PRE512_ENTRY(q5_1)
LP_PRE512_ENTRY(q8_0)
#undef LP_PRE512_MIN
#undef LP_PRE512_ENTRY
#undef LP_PRE512_GROUPS

#undef LP_DOT512_OFFSET
#undef LP_DOT512_MIN
#undef LP_DOT512_ENTRY
#undef LP_FOR_PAIRS
#undef LP_PAIR_X
#undef LP_PAIR_Y
LP_AVX512_END
#endif

// The legacy types from two activation rows on (one row takes vec_dot_4weights); the
// K-quants from one (their prepared row is read as fast, and vec_dot permutes per row), on AVX2
// (and AVX-VNNI) Q4_K and Q5_K only.
lp_rows_pre lp_rows_pre_of(int type, int isa, int64_t n) {
    lp_rows_pre k = { 0 };
    if (lp_rows_pre_bytes(type, n) == 0) return k;
#if LP_X86
    if (isa == LP_ISA_AVX2) {
        const int vnni = lp_gemm_avx2_vnni();
        if (type == LP_Q4_K) k = (lp_rows_pre){ lp_prep_q8_K_avx2, vnni ? lp_rows_pre_q4_K_avxvnni : lp_rows_pre_q4_K_avx2, 1, NULL };
        if (type == LP_Q5_K) k = (lp_rows_pre){ lp_prep_q8_K_avx2, vnni ? lp_rows_pre_q5_K_avxvnni : lp_rows_pre_q5_K_avx2, 1, NULL };
        return k;
    }
    if (isa != LP_ISA_AVX512) return k;
    if (type == LP_Q4_1) k = (lp_rows_pre){ lp_prep_q8_1, lp_rows_pre_q4_1, 2, lp_rows_pre_2w_q4_1 };
    if (type == LP_Q5_1) k = (lp_rows_pre){ lp_prep_q8_1, lp_rows_pre_q5_1, 2, lp_rows_pre_2w_q5_1 };
    if (type == LP_Q8_0) k = (lp_rows_pre){ lp_prep_q8_0, lp_rows_pre_q8_0, 2, lp_rows_pre_2w_q8_0 };
    if (type == LP_Q4_K) k = (lp_rows_pre){ lp_prep_q8_K_avx512, lp_rows_pre_q4_K_avx512, 1, NULL };
    if (type == LP_Q5_K) k = (lp_rows_pre){ lp_prep_q8_K_avx512, lp_rows_pre_q5_K_avx512, 1, NULL };
    if (type == LP_Q6_K) k = (lp_rows_pre){ lp_prep_q6_K_avx512, lp_rows_pre_q6_K_avx512, 1, NULL };
#else
    (void)isa;
#endif
    return k;
}

int64_t lp_rows_pre_bytes(int type, int64_t n) {
    if (type == LP_Q4_K || type == LP_Q5_K || type == LP_Q6_K) return n % QK_K ? 0 : n / QK_K * (int64_t)sizeof(k_pre_q8_K);
    if (n % 64 || (type != LP_Q4_1 && type != LP_Q5_1 && type != LP_Q8_0)) return 0;
    return n / 64 * (int64_t)sizeof(lp_pre_quad) / 4;  // a row's share of a group of four
}
