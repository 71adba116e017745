// k_q2_q3.c — the low-bit K-quants, Q2_K and Q3_K: super-blocks of 256 weights in
// 16 groups of 16, each group with its own small scale. Dot products against Q8_K
// activations (float d, 256 int8 quants, bsums = sums of each 16 quants).
//
// Q2_K: x = (d * sc) * q - (dmin * m), q in 0..3, sc and m 4-bit per group.
// Q3_K: x = (d * (sc - 32)) * q, q in -4..3 (2 low bits, minus 4 when the high
//       bit is clear), sc 6-bit per group.
//
// Quant order inside a block (both types): the 2-bit fields of 32 bytes of qs
// give 128 weights, shift 0 first: weight 128*h + 32*j + l is bits 2j..2j+1 of
// qs[32*h + l]. Q3_K's high bit of weight 32*k + l is bit k of hmask[l].
#include "k_rows.h"
#include "avxvnni.h"

// ---------------------------------------------------------------------------
// Q3_K scale unpacking. 16 6-bit values in 12 bytes: the low 4 bits of scale s
// are the low (s < 8) or high (s >= 8) nibble of byte s % 8; the top 2 bits are
// bits 2*(s/4).. of byte 8 + s % 4. Returns the signed scale (value - 32).
static inline int lp_q3_K_scale(const uint8_t *sc, int s) {
    const int lo = s < 8 ? sc[s] & 0x0f : sc[s - 8] >> 4;
    const int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
    return (lo | hi << 4) - 32;
}

// ---------------------------------------------------------------------------
// Reference

void lp_q2_K_to_float(const void *restrict vx, float *restrict y, int64_t n) {
    const block_q2_K *restrict x = vx;
    for (int64_t i = 0; i < n / QK_K; i++, y += QK_K) {
        const float d = lp_half_to_float(x[i].d);
        const float dmin = lp_half_to_float(x[i].dmin);
        for (int k = 0; k < QK_K; k++) {
            // the group's scale and min are float32 products first, as gguf-py does
            const uint8_t sc = x[i].scales[k / 16];
            const float dl = d * (float)(sc & 0x0f);
            const float ml = dmin * (float)(sc >> 4);
            const int q = (x[i].qs[32 * (k / 128) + k % 32] >> (2 * (k / 32 % 4))) & 3;
            y[k] = dl * (float)q - ml;
        }
    }
}

void lp_q3_K_to_float(const void *restrict vx, float *restrict y, int64_t n) {
    const block_q3_K *restrict x = vx;
    for (int64_t i = 0; i < n / QK_K; i++, y += QK_K) {
        const float d = lp_half_to_float(x[i].d);
        for (int k = 0; k < QK_K; k++) {
            const float dl = d * (float)lp_q3_K_scale(x[i].scales, k / 16);
            const int lo = (x[i].qs[32 * (k / 128) + k % 32] >> (2 * (k / 32 % 4))) & 3;
            const int hbit = (x[i].hmask[k % 32] >> (k / 32)) & 1;
            y[k] = dl * (float)(lo - (hbit ? 0 : 4));
        }
    }
}

// As int8 quants, the group scales as integer sub-scales (the batched product sums a
// whole super-block in integers, as vec_dot does) and one float scale per super-block:
// Q2_K q in 0..3, sub-scale sc in 0..15, scale d, a float min per group of 16,
// -(dmin * m), exact in float; Q3_K q in -4..3, sub-scale sc - 32 in -32..31, scale d.
void lp_q2_K_to_s8(const void *restrict vx, int8_t *restrict q, float *restrict scale, int16_t *restrict sub,
                   float *restrict min, int64_t n) {
    const block_q2_K *restrict x = vx;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float dmin = lp_half_to_float(x[i].dmin);
        scale[i] = lp_half_to_float(x[i].d);
        for (int g = 0; g < QK_K / 16; g++) {
            min[16 * i + g] = -(dmin * (float)(x[i].scales[g] >> 4));
            sub[16 * i + g] = (int16_t)(x[i].scales[g] & 0x0f);
        }
        // group g = 8h + 2j + l / 16 is field j of bytes 32h + l
        for (int g = 0; g < QK_K / 16; g++, q += 16) {
            const uint8_t *qs = x[i].qs + 32 * (g / 8) + 16 * (g % 2);
            const int shift = 2 * (g / 2 % 4);
            for (int l = 0; l < 16; l++) q[l] = (int8_t)((qs[l] >> shift) & 3);
        }
    }
}

void lp_q3_K_to_s8(const void *restrict vx, int8_t *restrict q, float *restrict scale, int16_t *restrict sub,
                   float *restrict min, int64_t n) {
    const block_q3_K *restrict x = vx;
    (void)min;
    for (int64_t i = 0; i < n / QK_K; i++) {
        scale[i] = lp_half_to_float(x[i].d);
        // group g = 8h + 2j + l / 16: field j of bytes 32h + l, high bit 4h + j of hmask[l]
        for (int g = 0; g < QK_K / 16; g++, q += 16) {
            const uint8_t *qs = x[i].qs + 32 * (g / 8) + 16 * (g % 2), *hm = x[i].hmask + 16 * (g % 2);
            const int shift = 2 * (g / 2 % 4), k = g / 2;
            sub[16 * i + g] = (int16_t)lp_q3_K_scale(x[i].scales, g);
            for (int l = 0; l < 16; l++) q[l] = (int8_t)(((qs[l] >> shift) & 3) + 4 * ((hm[l] >> k) & 1) - 4);
        }
    }
}

void lp_vec_dot_q2_K_ref(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q2_K *restrict x = vx;
    const block_q8_K *restrict y = vy;
    float sumf = 0.0f;
    for (int i = 0; i < n / QK_K; i++) {
        // mins: sum over groups of m * (sum of the group's activation quants)
        int summs = 0;
        for (int g = 0; g < 16; g++) summs += (x[i].scales[g] >> 4) * y[i].bsums[g];
        // scales: sum over groups of sc * (group's q . q8); group g = 8h + 2j + (l >= 16)
        int isum = 0;
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++) {
                const uint8_t *q2 = x[i].qs + 32 * h;
                const int8_t *q8 = y[i].qs + 128 * h + 32 * j;
                int sum0 = 0, sum1 = 0;
                for (int l = 0; l < 16; l++) sum0 += ((q2[l] >> 2 * j) & 3) * q8[l];
                for (int l = 16; l < 32; l++) sum1 += ((q2[l] >> 2 * j) & 3) * q8[l];
                const uint8_t *sc = x[i].scales + 8 * h + 2 * j;
                isum += (sc[0] & 0x0f) * sum0 + (sc[1] & 0x0f) * sum1;
            }
        const float dall = y[i].d * lp_half_to_float(x[i].d);
        const float dmin = y[i].d * lp_half_to_float(x[i].dmin);
        sumf += dall * (float)isum - dmin * (float)summs;
    }
    *s = sumf;
}

void lp_vec_dot_q3_K_ref(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q3_K *restrict x = vx;
    const block_q8_K *restrict y = vy;
    float sumf = 0.0f;
    for (int i = 0; i < n / QK_K; i++) {
        // the 256 quants, -4..3, in weight order
        int8_t q[QK_K];
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++) {
                    const int lo = (x[i].qs[32 * h + l] >> 2 * j) & 3;
                    const int hbit = (x[i].hmask[l] >> (4 * h + j)) & 1;
                    q[128 * h + 32 * j + l] = (int8_t)(lo - (hbit ? 0 : 4));
                }
        // sum over groups of scale * (group's q . q8)
        int isum = 0;
        for (int g = 0; g < 16; g++) {
            int sumi = 0;
            for (int l = 0; l < 16; l++) sumi += q[16 * g + l] * y[i].qs[16 * g + l];
            isum += lp_q3_K_scale(x[i].scales, g) * sumi;
        }
        sumf += (y[i].d * lp_half_to_float(x[i].d)) * (float)isum;
    }
    *s = sumf;
}

// ---------------------------------------------------------------------------
// AVX2. Each 32-byte vector k of 2-bit quants spans two groups: 2k in the low
// 128-bit lane, 2k+1 in the high one. maddubs(q, q8) gives 16 pair sums; madd
// with a vector holding scale 2k in the low lane and 2k+1 in the high lane
// scales them and sums pairs again. Integer sums stay in registers for the
// whole super-block; one float multiply-add per super-block (two for Q2_K).
// Each body serves 1 or 4 activation rows (k_rows.h). The bodies are in k_q2_q3_x86.h, once
// for AVX2 and once for AVX-VNNI (VPDPWSSD: the madd and the add in one).

#if LP_X86
LP_AVX2_BEGIN
// 16-bit words holding scale bytes 2k (low lane) and 2k+1 (high lane), from a
// vector with the 16 scale bytes in both lanes (pshufb index 0x80 gives zero).
static inline __m256i lp_q2_K_scale_pair(__m256i sc, int k) {
    const __m256i idx = _mm256_add_epi8(_mm256_set1_epi16((short)0x8000),
                                        _mm256_setr_m128i(_mm_set1_epi8((char)(2 * k)),
                                                          _mm_set1_epi8((char)(2 * k + 1))));
    return _mm256_shuffle_epi8(sc, idx);
}

// Same for 16-bit signed scales: `w` holds 8 words (groups 8h..8h+7) in both
// lanes; picks word 2j for the low lane and 2j+1 for the high lane.
static inline __m256i lp_q3_K_scale_pair(__m256i w, int j) {
    const int lo = 4 * j, hi = 4 * j + 2;
    const __m256i idx = _mm256_setr_m128i(_mm_set1_epi16((short)(lo | (lo + 1) << 8)),
                                          _mm_set1_epi16((short)(hi | (hi + 1) << 8)));
    return _mm256_shuffle_epi8(w, idx);
}


// One activation row's block result into the accumulators: dv = (d, dmin) times the
// activation scale; sumi the scaled integer sums, mins the 16 4-bit mins as words.
static inline void lp_q2_K_accumulate(__m256 *acc, __m256 *acc_min, __m128 dv, __m256i sumi, __m256i mins,
                                      const int16_t *bsums) {
    const __m256i summs = _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)bsums));  // 8 pair sums
    *acc_min = _mm256_fmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dv)), _mm256_cvtepi32_ps(summs), *acc_min);
    *acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(dv), _mm256_cvtepi32_ps(sumi), *acc);
}

// The 16 signed 6-bit Q3_K scales as words (groups 0..7 | 8..15): low nibbles of
// bytes 0..7, then their high nibbles; top bits: byte 8 + s%4 shifted right by 2*(s/4).
static inline __m256i lp_q3_K_scales16(const uint8_t *scales) {
    // in 64-bit integer registers (the vector units are the busy ones): bytes 0..7 of
    // each half are scales 0..7 and 8..15, low 4 bits | top 2 bits << 4
    uint64_t packed;
    uint32_t top32;
    memcpy(&packed, scales, 8);
    memcpy(&top32, scales + 8, 4);
    const uint64_t m4 = 0x0f0f0f0f0f0f0f0full, m2 = 0x0303030303030303ull, top = top32;
    const uint64_t top01 = top | top << 30, top23 = top >> 4 | top << 26;  // scales 0..7's and 8..15's top bits
    const uint64_t s0 = (packed & m4) | (top01 & m2) << 4, s1 = (packed >> 4 & m4) | (top23 & m2) << 4;
    return _mm256_cvtepi8_epi16(_mm_sub_epi8(_mm_set_epi64x((long long)s1, (long long)s0), _mm_set1_epi8(32)));
}


#define K_X86_ISA avx2
#define K_X86_DOT(acc, sc, p) _mm256_add_epi32(acc, _mm256_madd_epi16(sc, p))
#include "k_q2_q3_x86.h"
#undef K_X86_ISA
#undef K_X86_DOT

// to_s8 on AVX2 (what the batched product runs on): the reference's bytes, 32 quants a step.
void lp_q2_K_to_s8_avx2(const void *restrict vx, int8_t *restrict q, float *restrict scale, int16_t *restrict sub,
                        float *restrict min, int64_t n) {
    const block_q2_K *restrict x = vx;
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int64_t i = 0; i < n / QK_K; i++, q += QK_K) {
        const float dmin = lp_half_to_float_f16c(x[i].dmin);
        scale[i] = lp_half_to_float_f16c(x[i].d);
        const __m128i raw = _mm_loadu_si128((const __m128i *)x[i].scales);
        const __m128i mins = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0f));
        const __m256 ndmin = _mm256_set1_ps(-dmin);  // -(dmin * m), exactly
        _mm256_storeu_ps(min + 16 * i, _mm256_mul_ps(ndmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(mins))));
        _mm256_storeu_ps(min + 16 * i + 8, _mm256_mul_ps(ndmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(mins, 8)))));
        const __m128i sc = _mm_and_si128(raw, _mm_set1_epi8(0x0f));
        _mm256_storeu_si256((__m256i *)(sub + 16 * i), _mm256_cvtepu8_epi16(sc));
        for (int h = 0; h < 2; h++) {
            const __m256i b = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * h));
            for (int j = 0; j < 4; j++)
                _mm256_storeu_si256((__m256i *)(q + 128 * h + 32 * j), _mm256_and_si256(_mm256_srli_epi16(b, 2 * j), m3));
        }
    }
}

// Q3_K: u = q + 4 = low | (high bit << 2) in 0..7, less 4.
void lp_q3_K_to_s8_avx2(const void *restrict vx, int8_t *restrict q, float *restrict scale, int16_t *restrict sub,
                        float *restrict min, int64_t n) {
    const block_q3_K *restrict x = vx;
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4);
    (void)min;
    for (int64_t i = 0; i < n / QK_K; i++, q += QK_K) {
        scale[i] = lp_half_to_float_f16c(x[i].d);
        _mm256_storeu_si256((__m256i *)(sub + 16 * i), lp_q3_K_scales16(x[i].scales));
        const __m256i hm = _mm256_loadu_si256((const __m256i *)x[i].hmask);
        for (int h = 0; h < 2; h++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * h));
            for (int j = 0; j < 4; j++) {
                const int k = 4 * h + j;  // high bit k of hmask moved to bit 2
                const __m256i hb = k < 2 ? _mm256_slli_epi16(hm, 2 - k) : _mm256_srli_epi16(hm, k - 2);
                const __m256i u = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 2 * j), m3),
                                                  _mm256_and_si256(hb, m4));
                _mm256_storeu_si256((__m256i *)(q + 128 * h + 32 * j), _mm256_sub_epi8(u, m4));
            }
        }
    }
}
LP_AVX2_END

// AVX-VNNI (avxvnni.h): VPDPWSSD scales and adds in one (the int32 lanes of VPMADDWD + VPADDD).
LP_AVXVNNI_BEGIN
#define K_X86_ISA avxvnni
#define K_X86_DOT(acc, sc, p) _mm256_dpwssd_avx_epi32(acc, sc, p)
#include "k_q2_q3_x86.h"
#undef K_X86_ISA
#undef K_X86_DOT
LP_AVXVNNI_END
#endif

// ---------------------------------------------------------------------------
// AVX-512 (256-bit vectors with AVX-512VL and VNNI). The 2-bit fields are used
// where they sit in the byte, not shifted down: field j of a byte is q * 4^j, and
// the group's scale is taken times 4^(2-j) instead, so every product is 16 * q *
// scale (field 3, which would overflow maddubs, is shifted down by 2 and joins
// field 2's factor). That saves a shift per 32 weights; Q3_K's high bit goes in
// with one ternary-logic op, and VPDPWSSD scales and adds in one. The integer sums
// of a block are 16 times the AVX2 ones (exact); 1/16 goes into the float scale.

#if LP_X86
LP_AVX512_BEGIN
#define K_TERN_OR_AND 0xF8  // a | (b & c)

// The four 32-weight vectors of a half: quant field j in place (q * 4^j; field 3 as q * 16).
static inline void k_fields_in_place(__m256i b, __m256i f[4]) {
    f[0] = _mm256_and_si256(b, _mm256_set1_epi8(0x03));
    f[1] = _mm256_and_si256(b, _mm256_set1_epi8(0x0c));
    f[2] = _mm256_and_si256(b, _mm256_set1_epi8(0x30));
    f[3] = _mm256_and_si256(_mm256_srli_epi16(b, 2), _mm256_set1_epi8(0x30));
}

// The 16 word scales (groups 0..7 | 8..15) times 16, 4, 1, 1 for the groups of fields
// 0..3 (groups 8h + 2j, 8h + 2j + 1), in one variable shift.
static inline __m256i k_scales_in_place(__m256i sc16) {
    const __m128i sh = _mm_setr_epi16(4, 4, 2, 2, 0, 0, 0, 0);
    return _mm256_sllv_epi16(sc16, _mm256_broadcastsi128_si256(sh));
}

// Word scale pairs (scale 2k in the low lane, 2k+1 in the high lane) for the four
// fields of half h, from the in-place scales.
static inline void k_scale_pairs(__m256i sc, int h, __m256i pair[4]) {
    const __m256i w = h ? _mm256_permute4x64_epi64(sc, 0xee) : _mm256_permute4x64_epi64(sc, 0x44);
    for (int j = 0; j < 4; j++) pair[j] = lp_q3_K_scale_pair(w, j);
}

// The 256 weights of block i against nr activation rows, into two int32 sums per row
// (even and odd fields: two dependency chains). hms: Q3_K's high bits, for each of
// the 8 vectors moved to the bit above its field (selected by hbit[j]); NULL for Q2_K.
K_INLINE void k_block_in_place(const uint8_t *qs, __m256i sc, const __m256i *hms, const __m256i *hbit,
                               const void *restrict vy, size_t by, int i, const int nr, __m256i sumi[4][2]) {
    #pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256i f[4], pair[4];
        k_fields_in_place(_mm256_loadu_si256((const __m256i *)(qs + 32 * h)), f);
        k_scale_pairs(sc, h, pair);
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const __m256i u = hms ? _mm256_ternarylogic_epi32(f[j], hms[4 * h + j], hbit[j], K_TERN_OR_AND) : f[j];
            K_FOR_ROWS(r) {
                const __m256i q8 = _mm256_loadu_si256((const __m256i *)(K_ROW(vy, r, by, i)->qs + 128 * h + 32 * j));
                sumi[r][j & 1] = _mm256_dpwssd_epi32(sumi[r][j & 1], _mm256_maddubs_epi16(u, q8), pair[j]);
                K_KEEP_V(sumi[r][j & 1]);
            }
        }
    }
}

K_INLINE void q2_K_rows_avx512(int n, float *restrict s, size_t bs, const void *restrict vx, const void *restrict vy,
                               size_t by, const int nr) {
    const block_q2_K *restrict x = vx;
    const __m128i m15 = _mm_set1_epi8(0x0f);
    __m256 acc[4], acc_min[4];
    K_FOR_ROWS(r) acc[r] = _mm256_setzero_ps(), acc_min[r] = _mm256_setzero_ps();
    for (int i = 0; i < n / QK_K; i++) {
        K_PREFETCH_AHEAD(&x[i], sizeof(block_q2_K));
        const __m128 xdv = _mm_mul_ps(lp_halves2(&x[i].d), _mm_setr_ps(1.0f / 16, 1.0f, 0, 0));
        const __m128i raw = _mm_loadu_si128((const __m128i *)x[i].scales);
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m15));
        const __m256i sc = k_scales_in_place(_mm256_cvtepu8_epi16(_mm_and_si128(raw, m15)));
        __m256i sumi[4][2];
        K_FOR_ROWS(r) sumi[r][0] = sumi[r][1] = _mm256_setzero_si256();
        k_block_in_place(x[i].qs, sc, NULL, NULL, vy, by, i, nr, sumi);
        K_FOR_ROWS(r) {
            const block_q8_K *yr = K_ROW(vy, r, by, i);
            lp_q2_K_accumulate(&acc[r], &acc_min[r], _mm_mul_ps(xdv, _mm_set1_ps(yr->d)),  // d / 16, dmin
                               _mm256_add_epi32(sumi[r][0], sumi[r][1]), mins, yr->bsums);
        }
    }
    K_FOR_ROWS(r) s[r * bs] = lp_hsum_f32x8(_mm256_sub_ps(acc[r], acc_min[r]));
}
K_ROWS_DOTS(q2_K, avx512)

// Q3_K: u = 16 * (q + 4) with field 3's factor; the high bit of weight 32k + l
// (bit k of hmask[l]) goes to the bit above the field: bit 2, 4, 6, 6 for fields
// 0..3. Two of those shifts serve two fields each (hmask << 3, hmask >> 1).
K_INLINE void q3_K_rows_avx512(int n, float *restrict s, size_t bs, const void *restrict vx, const void *restrict vy,
                               size_t by, const int nr) {
    const block_q3_K *restrict x = vx;
    const __m256i hbit[4] = {_mm256_set1_epi8(0x04), _mm256_set1_epi8(0x10), _mm256_set1_epi8(0x40),
                             _mm256_set1_epi8(0x40)};
    __m256 acc[4];
    K_FOR_ROWS(r) acc[r] = _mm256_setzero_ps();
    for (int i = 0; i < n / QK_K; i++) {
        K_PREFETCH_AHEAD(&x[i], sizeof(block_q3_K));
        const float xd = lp_half_to_float_f16c(x[i].d) * (1.0f / 16);
        const __m256i sc16 = lp_q3_K_scales16(x[i].scales);  // groups 0..7 | 8..15
        const __m256i sc = k_scales_in_place(sc16);
        __m256i sumi[4][2];
        K_FOR_ROWS(r) {  // the 4 taken out: 16 * 4 * sum over groups of scale * bsum
            const __m256i corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)K_ROW(vy, r, by, i)->bsums));
            sumi[r][0] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 6));
            sumi[r][1] = _mm256_setzero_si256();
        }
        const __m256i hm = _mm256_loadu_si256((const __m256i *)x[i].hmask);
        // left shifts as additions (the shift unit is this loop's busiest)
        const __m256i hm_l1 = _mm256_add_epi16(hm, hm), hm_l2 = _mm256_add_epi16(hm_l1, hm_l1);
        const __m256i hm_l3 = _mm256_add_epi16(hm_l2, hm_l2), hm_l4 = _mm256_add_epi16(hm_l3, hm_l3);
        const __m256i hm_r1 = _mm256_srli_epi16(hm, 1);
        const __m256i hms[8] = {hm_l2, hm_l3, hm_l4, hm_l3, _mm256_srli_epi16(hm, 2), hm_r1, hm, hm_r1};
        k_block_in_place(x[i].qs, sc, hms, hbit, vy, by, i, nr, sumi);
        K_FOR_ROWS(r) acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(K_ROW(vy, r, by, i)->d * xd),
                                               _mm256_cvtepi32_ps(_mm256_add_epi32(sumi[r][0], sumi[r][1])), acc[r]);
    }
    K_FOR_ROWS(r) s[r * bs] = lp_hsum_f32x8(acc[r]);
}
K_ROWS_DOTS(q3_K, avx512)
LP_AVX512_END
#endif

// ---------------------------------------------------------------------------
// NEON. Signed 8-bit dot products per group of 16 (k_dot16_neon), each group's
// int32 lanes multiplied by its scale into one accumulator per super-block.
// Each body serves 1 or 4 activation rows (k_rows.h).

#if LP_ARM
K_INLINE void q2_K_rows_neon(int n, float *restrict s, size_t bs, const void *restrict vx, const void *restrict vy,
                             size_t by, const int nr) {
    const block_q2_K *restrict x = vx;
    const uint8x16_t m3 = vdupq_n_u8(3);
    float32x4_t acc[4];
    K_FOR_ROWS(r) acc[r] = vdupq_n_f32(0.0f);
    for (int i = 0; i < n / QK_K; i++) {
        const uint8x16_t raw = vld1q_u8(x[i].scales);
        const int16x8_t m_lo = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(vshrq_n_u8(raw, 4))));
        const int16x8_t m_hi = vreinterpretq_s16_u16(vmovl_u8(vget_high_u8(vshrq_n_u8(raw, 4))));
        uint8_t sc[16];
        vst1q_u8(sc, vandq_u8(raw, vdupq_n_u8(0x0f)));
        // scales times group dot products
        int32x4_t isum[4];
        K_FOR_ROWS(r) isum[r] = vdupq_n_s32(0);
        for (int h = 0; h < 2; h++) {
            const uint8x16_t b0 = vld1q_u8(x[i].qs + 32 * h), b1 = vld1q_u8(x[i].qs + 32 * h + 16);
            for (int j = 0; j < 4; j++) {
                const int8x16_t sh = vdupq_n_s8((int8_t)(-2 * j));  // negative: shift right
                const int8x16_t q0 = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(b0, sh), m3));
                const int8x16_t q1 = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(b1, sh), m3));
                K_FOR_ROWS(r) {
                    const int8_t *q8 = K_ROW(vy, r, by, i)->qs + 128 * h + 32 * j;
                    const int32x4_t p0 = k_dot16_neon(q0, q8);
                    const int32x4_t p1 = k_dot16_neon(q1, q8 + 16);
                    isum[r] = vmlaq_n_s32(isum[r], p0, sc[8 * h + 2 * j]);
                    isum[r] = vmlaq_n_s32(isum[r], p1, sc[8 * h + 2 * j + 1]);
                }
            }
        }
        const float xd = k_half_to_float_neon(x[i].d), xdmin = k_half_to_float_neon(x[i].dmin);
        K_FOR_ROWS(r) {
            const block_q8_K *yr = K_ROW(vy, r, by, i);
            // mins times bsums
            const int16x8_t b_lo = vld1q_s16(yr->bsums), b_hi = vld1q_s16(yr->bsums + 8);
            int32x4_t summs = vmull_s16(vget_low_s16(m_lo), vget_low_s16(b_lo));
            summs = vmlal_s16(summs, vget_high_s16(m_lo), vget_high_s16(b_lo));
            summs = vmlal_s16(summs, vget_low_s16(m_hi), vget_low_s16(b_hi));
            summs = vmlal_s16(summs, vget_high_s16(m_hi), vget_high_s16(b_hi));
            const float dall = yr->d * xd;
            const float dmin = yr->d * xdmin;
            acc[r] = vmlaq_n_f32(acc[r], vcvtq_f32_s32(isum[r]), dall);
            acc[r] = vmlsq_n_f32(acc[r], vcvtq_f32_s32(summs), dmin);
        }
    }
    K_FOR_ROWS(r) s[r * bs] = vaddvq_f32(acc[r]);
}
K_ROWS_DOTS(q2_K, neon)

K_INLINE void q3_K_rows_neon(int n, float *restrict s, size_t bs, const void *restrict vx, const void *restrict vy,
                             size_t by, const int nr) {
    const block_q3_K *restrict x = vx;
    const uint8x16_t m3 = vdupq_n_u8(3), m4 = vdupq_n_u8(4);
    float32x4_t acc[4];
    K_FOR_ROWS(r) acc[r] = vdupq_n_f32(0.0f);
    for (int i = 0; i < n / QK_K; i++) {
        int sc[16];
        for (int g = 0; g < 16; g++) sc[g] = lp_q3_K_scale(x[i].scales, g);
        const uint8x16_t hm0 = vld1q_u8(x[i].hmask), hm1 = vld1q_u8(x[i].hmask + 16);
        int32x4_t isum[4];
        K_FOR_ROWS(r) isum[r] = vdupq_n_s32(0);
        for (int h = 0; h < 2; h++) {
            const uint8x16_t b0 = vld1q_u8(x[i].qs + 32 * h), b1 = vld1q_u8(x[i].qs + 32 * h + 16);
            for (int j = 0; j < 4; j++) {
                const int k = 4 * h + j;
                const int8x16_t sh = vdupq_n_s8((int8_t)(-2 * j));  // negative: shift right
                const uint8x16_t bit = vdupq_n_u8((uint8_t)(1 << k));
                // q = low - 4 where the high bit is clear: -4..3
                const uint8x16_t lo0 = vandq_u8(vshlq_u8(b0, sh), m3), lo1 = vandq_u8(vshlq_u8(b1, sh), m3);
                const uint8x16_t sub0 = vbicq_u8(m4, vtstq_u8(hm0, bit));
                const uint8x16_t sub1 = vbicq_u8(m4, vtstq_u8(hm1, bit));
                const int8x16_t q0 = vreinterpretq_s8_u8(vsubq_u8(lo0, sub0));
                const int8x16_t q1 = vreinterpretq_s8_u8(vsubq_u8(lo1, sub1));
                K_FOR_ROWS(r) {
                    const int8_t *q8 = K_ROW(vy, r, by, i)->qs + 128 * h + 32 * j;
                    const int32x4_t p0 = k_dot16_neon(q0, q8);
                    const int32x4_t p1 = k_dot16_neon(q1, q8 + 16);
                    isum[r] = vmlaq_n_s32(isum[r], p0, sc[2 * k]);
                    isum[r] = vmlaq_n_s32(isum[r], p1, sc[2 * k + 1]);
                }
            }
        }
        const float xd = k_half_to_float_neon(x[i].d);
        K_FOR_ROWS(r) acc[r] = vmlaq_n_f32(acc[r], vcvtq_f32_s32(isum[r]), K_ROW(vy, r, by, i)->d * xd);
    }
    K_FOR_ROWS(r) s[r * bs] = vaddvq_f32(acc[r]);
}
K_ROWS_DOTS(q3_K, neon)
#endif
