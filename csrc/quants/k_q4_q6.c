// k_q4_q6.c — the 4-, 5- and 6-bit K-quants: Q4_K, Q5_K, Q6_K. Super-blocks of
// 256 weights; dot products against Q8_K activations (float d, int8 qs[256],
// int16 bsums[16] = sums of 16 consecutive qs).
//
// Q4_K / Q5_K: 8 sub-blocks of 32, each with a 6-bit scale sc and a 6-bit min m
// (packed in scales[12]); x = (d * sc) * q - (dmin * m), q in 0..15 (Q4_K) or
// 0..31 (Q5_K: fifth bit in qh). Sub-block 2k takes the low nibbles of
// qs[32k..32k+31], sub-block 2k+1 their high nibbles; Q5_K's sub-block j takes
// bit j of qh[0..31].
// Q6_K: 16 groups of 16, each with an int8 scale; x = (d * sc) * (q - 32), q in
// 0..63 from 4 bits of ql and 2 bits of qh (layout in q6_K_unpack below).
//
// Dot products: the quant x activation parts are integer, with one float factor
// per super-block; the min term of Q4_K/Q5_K (and, in AVX2, the -32 offset of
// Q6_K) comes from the activation's bsums.
#include "k_rows.h"
#include "avxvnni.h"
#include "quants/rows_pre.h"

// ---------------------------------------------------------------------------
// Shared helpers

// The packed scales of a Q4_K/Q5_K block as 16 bytes: sm[0..7] the 6-bit
// scales, sm[8..15] the 6-bit mins. Bytes 0..3 hold scales 0..3 (low 6 bits) and
// the top 2 bits of scales 4..7; bytes 4..7 the same for the mins; bytes 8..11
// the low 4 bits of scales 4..7 (low nibble) and of mins 4..7 (high nibble).
static inline void k4_scale_min(const uint8_t *restrict p, uint8_t *restrict sm) {
    uint32_t w[3], out[4];
    memcpy(w, p, 12);
    out[0] = w[0] & 0x3f3f3f3fu;                                             // scales 0..3
    out[1] = (w[2] & 0x0f0f0f0fu) | (((w[0] >> 6) & 0x03030303u) << 4);      // scales 4..7
    out[2] = w[1] & 0x3f3f3f3fu;                                             // mins 0..3
    out[3] = ((w[2] >> 4) & 0x0f0f0f0fu) | (((w[1] >> 6) & 0x03030303u) << 4);  // mins 4..7
    memcpy(sm, out, 16);
}

// The 256 quants of a Q6_K block, minus 32, in order. Each half of 128 owns 64
// bytes of ql and 32 of qh; within a half, quarter k (32 quants, l = 0..31)
// takes nibble k/2 of ql[32*(k%2) + l] and bits 2k, 2k+1 of qh[l].
static inline void q6_K_unpack(const block_q6_K *restrict b, int8_t *restrict q) {
    for (int h = 0; h < 2; h++, q += 128) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        for (int l = 0; l < 32; l++) {
            q[l + 0] = (int8_t)(((ql[l] & 0x0f) | ((qh[l] & 0x03) << 4)) - 32);
            q[l + 32] = (int8_t)(((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 0x03) << 4)) - 32);
            q[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 0x03) << 4)) - 32);
            q[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 0x03) << 4)) - 32);
        }
    }
}

// The 256 quants of a Q4_K block (qh NULL) or Q5_K block, in order: sub-block
// 2k takes the low nibbles of qs[32k..32k+31], 2k+1 the high ones; Q5_K's
// sub-block j adds bit j of qh[l] as bit 4.
static inline void k4_unpack(const uint8_t *restrict qs, const uint8_t *restrict qh, uint8_t *restrict q) {
    for (int k = 0; k < 4; k++)
        for (int l = 0; l < 32; l++) {
            q[64 * k + l] = qs[32 * k + l] & 0x0f;
            q[64 * k + 32 + l] = qs[32 * k + l] >> 4;
        }
    if (!qh) return;
    for (int j = 0; j < 8; j++)
        for (int l = 0; l < 32; l++) q[32 * j + l] |= ((qh[l] >> j) & 1) << 4;
}

// ---------------------------------------------------------------------------
// Reference dequantizers (bit-exact with gguf-py: float32 products in its order)

// x = (d * sc) * q - (dmin * m) for the Q4_K/Q5_K quants q of one block
static inline void k4_to_float(lp_half hd, lp_half hdmin, const uint8_t *scales, const uint8_t *q, float *y) {
    const float d = lp_half_to_float(hd), dmin = lp_half_to_float(hdmin);
    uint8_t sm[16];
    k4_scale_min(scales, sm);
    for (int j = 0; j < 8; j++) {
        const float dl = d * (float)sm[j], ml = dmin * (float)sm[8 + j];
        for (int l = 0; l < 32; l++) y[32 * j + l] = dl * (float)q[32 * j + l] - ml;
    }
}

void lp_q4_K_to_float(const void *restrict vx, float *restrict y, int64_t n) {
    const block_q4_K *restrict x = vx;
    for (int64_t i = 0; i < n / QK_K; i++, y += QK_K) {
        uint8_t q[QK_K];
        k4_unpack(x[i].qs, NULL, q);
        k4_to_float(x[i].d, x[i].dmin, x[i].scales, q, y);
    }
}

void lp_q5_K_to_float(const void *restrict vx, float *restrict y, int64_t n) {
    const block_q5_K *restrict x = vx;
    for (int64_t i = 0; i < n / QK_K; i++, y += QK_K) {
        uint8_t q[QK_K];
        k4_unpack(x[i].qs, x[i].qh, q);
        k4_to_float(x[i].d, x[i].dmin, x[i].scales, q, y);
    }
}

void lp_q6_K_to_float(const void *restrict vx, float *restrict y, int64_t n) {
    const block_q6_K *restrict x = vx;
    for (int64_t i = 0; i < n / QK_K; i++, y += QK_K) {
        const float d = lp_half_to_float(x[i].d);
        int8_t q[QK_K];
        q6_K_unpack(&x[i], q);
        for (int g = 0; g < QK_K / 16; g++) {
            const float dl = d * (float)x[i].scales[g];
            for (int l = 0; l < 16; l++) y[16 * g + l] = dl * (float)q[16 * g + l];
        }
    }
}

// ---------------------------------------------------------------------------
// As int8 quants for the batched product: the 6- or 8-bit group scales as integer
// sub-scales, one float scale d per super-block and (Q4_K, Q5_K) a float min per group.
// The products dmin * m are exact in float (11-bit times 6-bit).

static inline void k4_to_s8(lp_half hd, lp_half hdmin, const uint8_t *scales, float *scale, int16_t *sub,
                            float *min) {
    const float dmin = lp_half_to_float(hdmin);
    uint8_t sm[16];
    k4_scale_min(scales, sm);
    *scale = lp_half_to_float(hd);
    for (int j = 0; j < 8; j++) {
        sub[j] = sm[j];
        min[j] = -(dmin * (float)sm[8 + j]);
    }
}

void lp_q4_K_to_s8(const void *restrict vx, int8_t *restrict q, float *restrict scale, int16_t *restrict sub,
                   float *restrict min, int64_t n) {
    const block_q4_K *restrict x = vx;
    for (int64_t i = 0; i < n / QK_K; i++) {
        k4_unpack(x[i].qs, NULL, (uint8_t *)q + QK_K * i);  // quants < 16: the same as int8
        k4_to_s8(x[i].d, x[i].dmin, x[i].scales, scale + i, sub + 8 * i, min + 8 * i);
    }
}

void lp_q5_K_to_s8(const void *restrict vx, int8_t *restrict q, float *restrict scale, int16_t *restrict sub,
                   float *restrict min, int64_t n) {
    const block_q5_K *restrict x = vx;
    for (int64_t i = 0; i < n / QK_K; i++) {
        k4_unpack(x[i].qs, x[i].qh, (uint8_t *)q + QK_K * i);  // quants < 32
        k4_to_s8(x[i].d, x[i].dmin, x[i].scales, scale + i, sub + 8 * i, min + 8 * i);
    }
}

void lp_q6_K_to_s8(const void *restrict vx, int8_t *restrict q, float *restrict scale, int16_t *restrict sub,
                   float *restrict min, int64_t n) {
    const block_q6_K *restrict x = vx;
    (void)min;
    for (int64_t i = 0; i < n / QK_K; i++) {
        q6_K_unpack(&x[i], q + QK_K * i);
        scale[i] = lp_half_to_float(x[i].d);
        for (int g = 0; g < QK_K / 16; g++) sub[16 * i + g] = x[i].scales[g];
    }
}

// ---------------------------------------------------------------------------
// Reference dot products

// One Q4_K/Q5_K block (quants q, packed scales) times one Q8_K block: the scale
// terms sum(sc_j * dot_j) and, via bsums, the min terms, each with its float factor.
static inline float k4_dot_block(lp_half hd, lp_half hdmin, const uint8_t *scales, const uint8_t *q,
                                 const block_q8_K *y) {
    uint8_t sm[16];
    k4_scale_min(scales, sm);
    int sumi = 0;
    for (int j = 0; j < 8; j++) {
        int dot = 0;
        for (int l = 0; l < 32; l++) dot += q[32 * j + l] * y->qs[32 * j + l];
        sumi += sm[j] * dot;
    }
    int summ = 0;  // each min times the activation sum of its sub-block
    for (int g = 0; g < QK_K / 16; g++) summ += sm[8 + g / 2] * y->bsums[g];
    const float d = lp_half_to_float(hd) * y->d;
    const float dmin = lp_half_to_float(hdmin) * y->d;
    return d * (float)sumi - dmin * (float)summ;
}

void lp_vec_dot_q4_K_ref(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q4_K *restrict x = vx;
    const block_q8_K *restrict y = vy;
    float sumf = 0.0f;
    for (int i = 0; i < n / QK_K; i++) {
        uint8_t q[QK_K];
        k4_unpack(x[i].qs, NULL, q);
        sumf += k4_dot_block(x[i].d, x[i].dmin, x[i].scales, q, &y[i]);
    }
    *s = sumf;
}

void lp_vec_dot_q5_K_ref(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q5_K *restrict x = vx;
    const block_q8_K *restrict y = vy;
    float sumf = 0.0f;
    for (int i = 0; i < n / QK_K; i++) {
        uint8_t q[QK_K];
        k4_unpack(x[i].qs, x[i].qh, q);
        sumf += k4_dot_block(x[i].d, x[i].dmin, x[i].scales, q, &y[i]);
    }
    *s = sumf;
}

void lp_vec_dot_q6_K_ref(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q6_K *restrict x = vx;
    const block_q8_K *restrict y = vy;
    float sumf = 0.0f;
    for (int i = 0; i < n / QK_K; i++) {
        int8_t q[QK_K];
        q6_K_unpack(&x[i], q);
        // sum over groups of 16 of scale * dot(q - 32, y)
        int sumi = 0;
        for (int g = 0; g < QK_K / 16; g++) {
            int dot = 0;
            for (int l = 0; l < 16; l++) dot += q[16 * g + l] * y[i].qs[16 * g + l];
            sumi += x[i].scales[g] * dot;
        }
        sumf += (lp_half_to_float(x[i].d) * y[i].d) * (float)sumi;
    }
    *s = sumf;
}

// ---------------------------------------------------------------------------
// AVX2. Quants are unsigned bytes, so maddubs(q, y) gives int16 pair sums
// directly (at most 2*63*127, no saturation); madd with the 16-bit scale makes
// int32 lanes that stay in one accumulator per block. Each body serves 1 or 4
// activation rows (k_rows.h). The Q4_K/Q5_K/Q6_K bodies are in k_q4_q6_x86.h (AVX2, and
// AVX-VNNI with VPDPWSSD for the scale step) and k_q4_q6_avx512.h (512-bit registers).

#if LP_X86
LP_AVX2_BEGIN
// Mask for _mm256_shuffle_epi8 that copies int16 element j of each 128-bit lane
// to all 8 elements of that lane.
static inline __m256i bcast16_mask(int j) { return _mm256_set1_epi16((short)(0x0100 + 0x0202 * j)); }

// The per-block factors of up to 4 consecutive Q4_K / Q5_K blocks for the AVX2 and AVX-VNNI row
// dots, unpacked two blocks to a register (one block's scale unpacking and spreading alone was a
// third of the single-row dot's vector operations).
typedef struct {
    int32_t sc[4][8];  // block b: its 8 scales, each twice as int16 (a VPMADDWD factor by one broadcast)
    float mf[4][8];    // block b: dmin * min g (against k4_bsum_factors_avx2)
    float dd[8];       // d, dmin of block b at 2b, 2b + 1
} __attribute__((aligned(32))) k4_group_x86;

// The 16 bytes of each 128-bit lane: a block's d, dmin and packed scales, as 8 scales then 8 mins
// (k4_scale_min's unpacking)
static inline __m256i k4_scale_min_x2(__m256i v) {
    // scale bytes b0..11 at 4..15; a: [b0..3, b8..11, b4..7, b8..11]; b: b0..3 under the scales 4..7, b4..7 under the mins 4..7
    const __m256i a = _mm256_shuffle_epi8(v, _mm256_broadcastsi128_si256(_mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15)));
    const __m256i b = _mm256_shuffle_epi8(v, _mm256_broadcastsi128_si256(_mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11)));
    const __m256i low6 = _mm256_and_si256(a, _mm256_broadcastsi128_si256(_mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0)));
    const __m256i high4 = _mm256_and_si256(_mm256_srli_epi16(a, 4), _mm256_broadcastsi128_si256(_mm_setr_epi32(0, 0, 0, 0x0f0f0f0f)));
    const __m256i top2 = _mm256_and_si256(_mm256_srli_epi16(b, 2), _mm256_set1_epi8(0x30));
    return _mm256_or_si256(_mm256_or_si256(low6, high4), top2);
}

// The 12 packed scale bytes of a Q4_K/Q5_K block (p points at them, 4 bytes into the block) as 16
// bytes: the 8 scales, then the 8 mins. Same unpacking as k4_scale_min.
static inline __m128i k4_scale_min_avx2(const uint8_t *p) {
    return _mm256_castsi256_si128(k4_scale_min_x2(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(p - 4)))));
}

// Blocks x, x + size, ... (nb of them, at most 4 used; the last is read again for the rest)
static inline void k4_group_unpack_x86(const uint8_t *x, size_t size, int nb, k4_group_x86 *g) {
    const uint8_t *p[4] = { x, x + size * (nb > 1), x + size * (nb > 2 ? 2 : nb - 1), x + size * (nb > 3 ? 3 : nb - 1) };
    __m256i v[2];
    for (int h = 0; h < 2; h++)
        v[h] = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p[2 * h])),
                                       _mm_loadu_si128((const __m128i *)p[2 * h + 1]), 1);
    // d, dmin: dword 0 of each lane
    const __m256 dd = _mm256_cvtph_ps(_mm256_castsi256_si128(
        _mm256_permutevar8x32_epi32(_mm256_unpacklo_epi32(v[0], v[1]), _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0))));
    _mm256_store_ps(g->dd, dd);
    for (int h = 0; h < 2; h++) {
        const __m256i sm = k4_scale_min_x2(v[h]);
        const __m256i s16 = _mm256_unpacklo_epi8(sm, _mm256_setzero_si256());
        const __m256i lo = _mm256_unpacklo_epi16(s16, s16), hi = _mm256_unpackhi_epi16(s16, s16);
        _mm256_store_si256((__m256i *)g->sc[2 * h], _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_store_si256((__m256i *)g->sc[2 * h + 1], _mm256_permute2x128_si256(lo, hi, 0x31));
        for (int l = 0; l < 2; l++) {
            const int b = 2 * h + l;
            const __m128i mins = _mm_srli_si128(l ? _mm256_extracti128_si256(sm, 1) : _mm256_castsi256_si128(sm), 8);
            const __m256 dmin = _mm256_permutevar8x32_ps(dd, _mm256_set1_epi32(2 * b + 1));
            _mm256_store_ps(g->mf[b], _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(mins))));
        }
    }
}

// Lane g: yd * the sum of the activations of sub-block g (32 of them), from a Q8_K block
static inline __m256 k4_bsum_factors_avx2(const block_q8_K *y) {
    const __m256i s = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), _mm256_set1_epi16(1));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(y->d));
}

// Q8_K rows prepared for the row dots (rows_pre.h): each block's quants as they are, on 64-byte
// lines, and per block Q4_K's / Q5_K's k4_bsum_factors_avx2 (the AVX2 and AVX-VNNI dots) or Q6_K's
// -8 * each 16-group's sum (|sum| <= 2048: 8 times fits an int16) against 4 times the scales, the
// -32 offset in one VPMADDWD (every x86 ISA's).
static void k_prep_rows_x86(const void *restrict vy, size_t by, int rows, void *restrict out, int n, const int q6) {
    for (int r = 0; r < rows; r++) {
        const block_q8_K *y = (const block_q8_K *)((const uint8_t *)vy + (size_t)r * by);
        k_pre_q8_K *o = (k_pre_q8_K *)out + (size_t)r * (n / QK_K);
        for (int i = 0; i < n / QK_K; i++) {
            o[i].d = y[i].d;
            if (q6) {
                const __m256i bs16 = _mm256_loadu_si256((const __m256i *)y[i].bsums);
                _mm256_storeu_si256((__m256i *)o[i].nbs, _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(bs16, 3)));
            } else {
                _mm256_storeu_ps(o[i].fbs, k4_bsum_factors_avx2(&y[i]));
            }
            memcpy(o[i].qs, y[i].qs, QK_K);
        }
    }
}
void lp_prep_q8_K_avx2(const void *restrict y, size_t by, int rows, void *restrict out, int n) {
    k_prep_rows_x86(y, by, rows, out, n, 0);
}
void lp_prep_q6_K_avx2(const void *restrict y, size_t by, int rows, void *restrict out, int n) {
    k_prep_rows_x86(y, by, rows, out, n, 1);
}

// to_s8 on x86 (the batched product's decoder): the bytes and floats of lp_q4_K_to_s8 and
// lp_q5_K_to_s8, 32 quants a step and a block's 16 factors at once (the same products).
static inline void k4_to_s8_avx2(lp_half hd, lp_half hdmin, const uint8_t *scales, float *scale, int16_t *sub,
                                 float *min) {
    const __m128i sm = k4_scale_min_avx2(scales);
    const __m256 dmin = _mm256_set1_ps(lp_half_to_float(hdmin));
    const __m256 m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8)));
    *scale = lp_half_to_float(hd);
    _mm_storeu_si128((__m128i *)sub, _mm_cvtepu8_epi16(sm));
    _mm256_storeu_ps(min, _mm256_xor_ps(_mm256_mul_ps(dmin, m), _mm256_set1_ps(-0.0f)));  // -(dmin * m)
}

// The 256 quants of a Q4_K/Q5_K block (k4_unpack); qh NULL for Q4_K.
static inline void k4_unpack_avx2(const uint8_t *qs, const uint8_t *qh, int8_t *q) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    const __m256i h = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
    for (int k = 0; k < 4; k++) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
        __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
        if (qh) {  // bit j of qh is bit 4 of sub-block j's quants
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2 * k), one), 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2 * k + 1), one), 4));
        }
        _mm256_storeu_si256((__m256i *)(q + 64 * k), lo);
        _mm256_storeu_si256((__m256i *)(q + 64 * k + 32), hi);
    }
}

void lp_q4_K_to_s8_avx2(const void *restrict vx, int8_t *restrict q, float *restrict scale, int16_t *restrict sub,
                        float *restrict min, int64_t n) {
    const block_q4_K *restrict x = vx;
    for (int64_t i = 0; i < n / QK_K; i++) {
        k4_unpack_avx2(x[i].qs, NULL, q + QK_K * i);
        k4_to_s8_avx2(x[i].d, x[i].dmin, x[i].scales, scale + i, sub + 8 * i, min + 8 * i);
    }
}

void lp_q5_K_to_s8_avx2(const void *restrict vx, int8_t *restrict q, float *restrict scale, int16_t *restrict sub,
                        float *restrict min, int64_t n) {
    const block_q5_K *restrict x = vx;
    for (int64_t i = 0; i < n / QK_K; i++) {
        k4_unpack_avx2(x[i].qs, x[i].qh, q + QK_K * i);
        k4_to_s8_avx2(x[i].d, x[i].dmin, x[i].scales, scale + i, sub + 8 * i, min + 8 * i);
    }
}

// Q6_K's decoder on x86: the bytes of lp_q6_K_to_s8, a half's 64 bytes of ql and 32 of qh
// making its 128 quants 32 at a time (q6_K_unpack's layout).
void lp_q6_K_to_s8_avx2(const void *restrict vx, int8_t *restrict q, float *restrict scale, int16_t *restrict sub,
                        float *restrict min, int64_t n) {
    const block_q6_K *restrict x = vx;
    const __m256i low4 = _mm256_set1_epi8(0x0f), two = _mm256_set1_epi8(0x03), off = _mm256_set1_epi8(32);
    (void)min;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int8_t *o = q + QK_K * i;
        for (int h = 0; h < 2; h++, o += 128) {
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)(x[i].ql + 64 * h));
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(x[i].ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(x[i].qh + 32 * h));
            for (int k = 0; k < 4; k++) {  // quarter k: nibble k/2 of l(k%2), bits 2k, 2k+1 of qh
                const __m256i l = k % 2 ? l1 : l0;
                const __m256i lo = _mm256_and_si256(k < 2 ? l : _mm256_srli_epi16(l, 4), low4);
                const __m256i hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), two), 4);
                _mm256_storeu_si256((__m256i *)(o + 32 * k), _mm256_sub_epi8(_mm256_or_si256(lo, hi), off));
            }
        }
        scale[i] = lp_half_to_float(x[i].d);
        _mm256_storeu_si256((__m256i *)(sub + 16 * i), _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[i].scales)));
    }
}

#define K_X86_ISA avx2
#define K_X86_DOT(acc, sc, p) _mm256_add_epi32(acc, _mm256_madd_epi16(sc, p))
#define K_X86_KEEP(v) K_KEEP(v)
#define K_X86_CHAINS 1
#include "k_q4_q6_x86.h"
#undef K_X86_ISA
#undef K_X86_DOT
#undef K_X86_KEEP
#undef K_X86_CHAINS
LP_AVX2_END

// AVX-VNNI (avxvnni.h): VPDPWSSD scales and adds in one (the int32 lanes of VPMADDWD + VPADDD).
LP_AVXVNNI_BEGIN
#define K_X86_ISA avxvnni
#define K_X86_DOT(acc, sc, p) _mm256_dpwssd_avx_epi32(acc, sc, p)
#define K_X86_KEEP(v) K_KEEP(v)
#define K_X86_CHAINS 2
#include "k_q4_q6_x86.h"
#undef K_X86_ISA
#undef K_X86_DOT
#undef K_X86_KEEP
#undef K_X86_CHAINS
LP_AVXVNNI_END

LP_AVX512_BEGIN
#include "k_q4_q6_avx512.h"
LP_AVX512_END
#endif

// ---------------------------------------------------------------------------
// NEON. Quants in 0..31 fit int8, so they go straight into the signed dot;
// Q6_K subtracts its 32 before the dot. Scales multiply int32 partial sums.
// Each body serves 1 or 4 activation rows (k_rows.h).

#if LP_ARM
// Sum of min * (activations of its sub-block) for one Q4_K/Q5_K block.
static inline int k4_min_dot_neon(const uint8_t *mins, const int16_t *bsums) {
    const int16x8_t pairs = vpaddq_s16(vld1q_s16(bsums), vld1q_s16(bsums + 8));
    const int16x8_t m = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mins)));
    int32x4_t p = vmull_s16(vget_low_s16(pairs), vget_low_s16(m));
    p = vmlal_s16(p, vget_high_s16(pairs), vget_high_s16(m));
    return vaddvq_s32(p);
}

// Q4_K (q5 = 0) or Q5_K (q5 = 1): both start with d, dmin and the packed scales.
K_INLINE void k4_rows_neon(int n, float *restrict s, size_t bs, const void *restrict vx, const void *restrict vy,
                           size_t by, const int nr, const int q5) {
    const uint8_t *x = vx, *y = vy;
    const size_t size = q5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const size_t qs_off = q5 ? offsetof(block_q5_K, qs) : offsetof(block_q4_K, qs);
    const uint8x16_t m4 = vdupq_n_u8(0x0f);
    const uint8x16_t bit4 = vdupq_n_u8(0x10);
    float sumf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < n / QK_K; i++, x += size) {
        lp_half hd, hdmin;
        memcpy(&hd, x + offsetof(block_q4_K, d), sizeof(hd));
        memcpy(&hdmin, x + offsetof(block_q4_K, dmin), sizeof(hdmin));
        uint8_t sm[16];
        k4_scale_min(x + offsetof(block_q4_K, scales), sm);
        // Q5_K: qh byte l carries bit j of quant l of sub-block j; h0/h1 shift down 2 bits per pair
        uint8x16_t h0 = m4, h1 = m4;
        if (q5) h0 = vld1q_u8(x + offsetof(block_q5_K, qh)), h1 = vld1q_u8(x + offsetof(block_q5_K, qh) + 16);
        int32x4_t sumi[4];
        K_FOR_ROWS(r) sumi[r] = vdupq_n_s32(0);
        for (int k = 0; k < 4; k++) {
            // sub-block 2k: low nibbles of qs[32k..32k+31] (Q5_K: | bit 0 of h at bit 4);
            // sub-block 2k+1: high nibbles (Q5_K: | bit 1 of h)
            const uint8x16_t b0 = vld1q_u8(x + qs_off + 32 * k), b1 = vld1q_u8(x + qs_off + 32 * k + 16);
            uint8x16_t q00 = vandq_u8(b0, m4), q01 = vandq_u8(b1, m4);
            uint8x16_t q10 = vshrq_n_u8(b0, 4), q11 = vshrq_n_u8(b1, 4);
            if (q5) {
                q00 = vorrq_u8(q00, vandq_u8(vshlq_n_u8(h0, 4), bit4));
                q01 = vorrq_u8(q01, vandq_u8(vshlq_n_u8(h1, 4), bit4));
                q10 = vorrq_u8(q10, vandq_u8(vshlq_n_u8(h0, 3), bit4));
                q11 = vorrq_u8(q11, vandq_u8(vshlq_n_u8(h1, 3), bit4));
                h0 = vshrq_n_u8(h0, 2);
                h1 = vshrq_n_u8(h1, 2);
            }
            K_FOR_ROWS(r) {
                const int8_t *a = K_ROW(y, r, by, i)->qs + 64 * k;
                const int32x4_t p0 = k_dot32_neon(vreinterpretq_s8_u8(q00), vreinterpretq_s8_u8(q01), a);
                const int32x4_t p1 = k_dot32_neon(vreinterpretq_s8_u8(q10), vreinterpretq_s8_u8(q11), a + 32);
                sumi[r] = vmlaq_n_s32(sumi[r], p0, sm[2 * k]);
                sumi[r] = vmlaq_n_s32(sumi[r], p1, sm[2 * k + 1]);
            }
        }
        const float xd = k_half_to_float_neon(hd), xdmin = k_half_to_float_neon(hdmin);
        K_FOR_ROWS(r) {
            const block_q8_K *yr = K_ROW(y, r, by, i);
            const int summ = k4_min_dot_neon(sm + 8, yr->bsums);
            const float d = xd * yr->d;
            const float dmin = xdmin * yr->d;
            sumf[r] += d * (float)vaddvq_s32(sumi[r]) - dmin * (float)summ;
        }
    }
    K_FOR_ROWS(r) s[r * bs] = sumf[r];
}
K_INLINE void q4_K_rows_neon(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,
                             size_t by, const int nr) { k4_rows_neon(n, s, bs, x, y, by, nr, 0); }
K_INLINE void q5_K_rows_neon(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,
                             size_t by, const int nr) { k4_rows_neon(n, s, bs, x, y, by, nr, 1); }
K_ROWS_DOTS(q4_K, neon)
K_ROWS_DOTS(q5_K, neon)

K_INLINE void q6_K_rows_neon(int n, float *restrict s, size_t bs, const void *restrict vx, const void *restrict vy,
                             size_t by, const int nr) {
    const block_q6_K *restrict x = vx;
    const uint8_t *y = vy;
    const uint8x16_t m4 = vdupq_n_u8(0x0f);
    const uint8x16_t m2 = vdupq_n_u8(0x03);
    const int8x16_t off = vdupq_n_s8(32);
    float sumf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < n / QK_K; i++) {
        int32x4_t sumi[4];
        K_FOR_ROWS(r) sumi[r] = vdupq_n_s32(0);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[i].ql + 64 * h;
            const uint8_t *qh = x[i].qh + 32 * h;
            const int8_t *sc = x[i].scales + 8 * h;
            for (int c = 0; c < 2; c++) {
                // 16 quants of each quarter of this half: l = 16c .. 16c+15
                const uint8x16_t l0 = vld1q_u8(ql + 16 * c), l1 = vld1q_u8(ql + 32 + 16 * c);
                const uint8x16_t hh = vld1q_u8(qh + 16 * c);
                const uint8x16_t u0 = vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8(vandq_u8(hh, m2), 4));
                const uint8x16_t u1 = vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hh, 2), m2), 4));
                const uint8x16_t u2 = vorrq_u8(vshrq_n_u8(l0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hh, 4), m2), 4));
                const uint8x16_t u3 = vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vshrq_n_u8(hh, 6), 4));
                // quarter k covers groups 2k + c (local to this half), activations 32k + 16c
                const int8x16_t q0 = vsubq_s8(vreinterpretq_s8_u8(u0), off);
                const int8x16_t q1 = vsubq_s8(vreinterpretq_s8_u8(u1), off);
                const int8x16_t q2 = vsubq_s8(vreinterpretq_s8_u8(u2), off);
                const int8x16_t q3 = vsubq_s8(vreinterpretq_s8_u8(u3), off);
                K_FOR_ROWS(r) {
                    const int8_t *a = K_ROW(y, r, by, i)->qs + 128 * h + 16 * c;
                    sumi[r] = vmlaq_n_s32(sumi[r], k_dot16_neon(q0, a + 0), sc[0 + c]);
                    sumi[r] = vmlaq_n_s32(sumi[r], k_dot16_neon(q1, a + 32), sc[2 + c]);
                    sumi[r] = vmlaq_n_s32(sumi[r], k_dot16_neon(q2, a + 64), sc[4 + c]);
                    sumi[r] = vmlaq_n_s32(sumi[r], k_dot16_neon(q3, a + 96), sc[6 + c]);
                }
            }
        }
        const float xd = k_half_to_float_neon(x[i].d);
        K_FOR_ROWS(r) sumf[r] += (xd * K_ROW(y, r, by, i)->d) * (float)vaddvq_s32(sumi[r]);
    }
    K_FOR_ROWS(r) s[r * bs] = sumf[r];
}
K_ROWS_DOTS(q6_K, neon)
#endif
