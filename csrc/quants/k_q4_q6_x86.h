// k_q4_q6_x86.h — the AVX2 and AVX-VNNI bodies of the Q4_K, Q5_K and Q6_K dots (k_q4_q6.c),
// 256-bit registers (AVX-512 has bodies of its own in 512-bit registers: k_q4_q6_avx512.h). The
// includer defines
//   K_X86_ISA          avx2, avxvnni (the functions' suffix)
//   K_X86_DOT(acc, sc, p)  acc + pairwise sums of sc * p (int16 -> int32 lanes)
//   K_X86_KEEP(v)      K_KEEP for those registers
//   K_X86_CHAINS       2 where K_X86_DOT is one instruction that waits for the one before (AVX-VNNI's
//                      VPDPWSSD, 5 cycles): one or two rows then sum into two chains, added at the
//                      block's end (the same integers)
// and includes it between the ISA's BEGIN/END brackets. Each is checked against the
// reference by the tests.
#define K_X86_CAT2(f, isa) f##_##isa
#define K_X86_CAT(f, isa) K_X86_CAT2(f, isa)
#define K_X86(f) K_X86_CAT(f, K_X86_ISA)
#define K_X86_ROWS_DOTS2(t, isa) K_ROWS_DOTS(t, isa)
#define K_X86_ROWS_DOTS(t) K_X86_ROWS_DOTS2(t, K_X86_ISA)
#define K_X86_PRE_ROWS2(t, isa) K_PRE_ROWS(t, isa)
#define K_X86_PRE_ROWS(t) K_X86_PRE_ROWS2(t, K_X86_ISA)
#define K_X86_TWO(nr) (K_X86_CHAINS > 1 && (nr) <= 2)

#ifndef K_X86_HELPERS  // (defined by the first, AVX2, pass; AVX-VNNI's functions call them too)
#define K_X86_HELPERS
// Bit b of each byte of h at bit 4 (the other bits anything): one 16-bit shift, never across bytes
static inline __attribute__((always_inline)) __m256i k5_bit_to_4(__m256i h, const int b) {
    return b < 4 ? _mm256_slli_epi16(h, 4 - b) : b > 4 ? _mm256_srli_epi16(h, b - 4) : h;
}

// Sub-blocks 2k (low nibbles) and 2k + 1 (high nibbles) of a Q4_K or Q5_K block's quants qs, Q5_K (q5):
// with bits 2k and 2k + 1 of its qh (hb) at bit 4
static inline __attribute__((always_inline)) void k4_quants_x86(const uint8_t *qs, const __m256i hb, const int k,
                                                                const int q5, __m256i *q0, __m256i *q1) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), bit4 = _mm256_set1_epi8(0x10);
    const __m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
    *q0 = _mm256_and_si256(bits, m4);
    *q1 = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
    if (q5) {
        *q0 = _mm256_or_si256(*q0, _mm256_and_si256(k5_bit_to_4(hb, 2 * k), bit4));
        *q1 = _mm256_or_si256(*q1, _mm256_and_si256(k5_bit_to_4(hb, 2 * k + 1), bit4));
    }
}
// Q6_K block x's scales: sc16, the 16 as int16; scales, int16 with even groups in the low lane and
// odd groups in the high one (sub-block b, 32 quants = groups 2b and 2b + 1, takes its factors
// from element b of each lane)
static inline __attribute__((always_inline)) void k6_scales_x86(const block_q6_K *x, __m256i *sc16, __m256i *scales) {
    const __m128i sc8 = _mm_loadu_si128((const __m128i *)x->scales);
    *sc16 = _mm256_cvtepi8_epi16(sc8);
    *scales = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15)));
}
// Q6_K block x's half h, 128 quants (unsigned, 0..63) from ql[64h..64h+63] and qh[32h..32h+31], as 4
// vectors of 32: q[k] holds quants 32k.. of the half
static inline __attribute__((always_inline)) void k6_quants_x86(const block_q6_K *x, const int h, __m256i q[4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x03);
    const __m256i l0 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h));
    const __m256i l1 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h + 32));
    const __m256i hh = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
    q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hh, m2), 4));
    q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(hh, _mm256_set1_epi8(0x0c)), 2));
    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hh, _mm256_set1_epi8(0x30)));
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                           _mm256_srli_epi16(_mm256_and_si256(hh, _mm256_set1_epi8((char)0xc0)), 2));
}
#endif

// Q4_K (q5 = 0) or Q5_K (q5 = 1): both start with d, dmin and the packed scales. Activation rows as
// Q8_K blocks (pre 0) or prepared (pre 1: lp_prep_q8_K_avx2, on 64-byte lines). The quants of
// sub-blocks 2k and 2k + 1 (the low and high nibbles of the same 32 bytes) take one VPMADDWD each,
// its factor the sub-block's scale broadcast from k4_group_x86 (no shuffle). Per block
// and row: d * yd * sum(scale * quant dot) in 8 lanes, and (dmin * min g) * (yd * bsum g) in lane g
// of 8 others (bsum g: the sum of sub-block g's activations), the first factor made once per
// block for all rows (k4_group_x86), the second once per product in a prepared row.
K_INLINE void K_X86(k4_rows)(int n, float *restrict s, size_t bs, const void *restrict vx, const void *restrict vy,
                           size_t by, const int nr, const int q5, const int pre) {
    const uint8_t *x = vx;
    const size_t size = q5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const size_t qs_off = q5 ? offsetof(block_q5_K, qs) : offsetof(block_q4_K, qs);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const int nb = n / QK_K;
    __m256 acc[4], accm[4];
    K_FOR_ROWS(r) acc[r] = accm[r] = _mm256_setzero_ps();
    for (int i0 = 0; i0 < nb; i0 += 4) {
        k4_group_x86 g;
        k4_group_unpack_x86(x, size, nb - i0, &g);
        const int gn = nb - i0 < 4 ? nb - i0 : 4;
        for (int j = 0; j < gn; j++, x += size) {
            const int i = i0 + j;
            K_PREFETCH_AHEAD(x, size);
            const __m256 d = _mm256_broadcast_ss(&g.dd[2 * j]);
            // Q5_K: qh byte l carries bit j of quant l of sub-block j, moved to bit 4 by one 16-bit
            // shift (or none) that keeps it in its byte
            const __m256i hb = q5 ? _mm256_loadu_si256((const __m256i *)(x + offsetof(block_q5_K, qh))) : m4;
            __m256i sumi[4], sumi2[4];
            K_FOR_ROWS(r) sumi[r] = _mm256_setzero_si256();
            K_FOR_ROWS(r) sumi2[r] = _mm256_setzero_si256();
            for (int k = 0; k < 4; k++) {
                // sub-blocks 2k (low nibbles) and 2k+1 (high nibbles), Q5_K: bits 2k and 2k + 1 of hb
                __m256i q0, q1;
                k4_quants_x86(x + qs_off, hb, k, q5, &q0, &q1);
                // the sub-blocks' scales in every int16 element (broadcast from memory: no shuffle)
                const __m256i s0 = _mm256_set1_epi32(g.sc[j][2 * k]), s1 = _mm256_set1_epi32(g.sc[j][2 * k + 1]);
                K_FOR_ROWS(r) {
                    const int8_t *a = pre ? K4_PRE(vy, r, by, i)->qs + 64 * k : K_ROW(vy, r, by, i)->qs + 64 * k;
                    // a pair sum is within 2 * 31 * 128
                    const __m256i p0 = _mm256_maddubs_epi16(q0, _mm256_loadu_si256((const __m256i *)a));
                    const __m256i p1 = _mm256_maddubs_epi16(q1, _mm256_loadu_si256((const __m256i *)(a + 32)));
                    sumi[r] = K_X86_DOT(sumi[r], s0, p0);
                    K_X86_KEEP(sumi[r]);
                    if (K_X86_TWO(nr)) {
                        sumi2[r] = K_X86_DOT(sumi2[r], s1, p1);
                        K_X86_KEEP(sumi2[r]);
                    } else {
                        sumi[r] = K_X86_DOT(sumi[r], s1, p1);
                        K_X86_KEEP(sumi[r]);
                    }
                }
            }
            const __m256 mf = _mm256_load_ps(g.mf[j]);
            K_FOR_ROWS(r) {
                const float yd = pre ? K4_PRE(vy, r, by, i)->d : K_ROW(vy, r, by, i)->d;
                if (K_X86_TWO(nr)) sumi[r] = _mm256_add_epi32(sumi[r], sumi2[r]);
                acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(yd)), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
                accm[r] = _mm256_fmadd_ps(mf, pre ? _mm256_load_ps(K4_PRE(vy, r, by, i)->fbs) : k4_bsum_factors_avx2(K_ROW(vy, r, by, i)),
                                          accm[r]);
            }
        }
    }
    K_FOR_ROWS(r) s[r * bs] = lp_hsum_f32x8(_mm256_sub_ps(acc[r], accm[r]));
}
// Q4_K or Q5_K against 5..8 prepared rows (nr, a constant): k4_rows's loop with twice the rows, the
// integer sums of all of them in registers (8 chains) and their float sums in memory: a block's
// quants decoded once for 8 rows instead of twice for 4. Each row's operations are k4_rows's, in
// the same order: the same bits.
K_INLINE void K_X86(k4_rows8)(int n, float *restrict s, size_t bs, const void *restrict vx, const void *restrict vy,
                            size_t by, const int nr, const int q5) {
    const uint8_t *x = vx;
    const size_t size = q5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const size_t qs_off = q5 ? offsetof(block_q5_K, qs) : offsetof(block_q4_K, qs);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const int nb = n / QK_K;
    float accbuf[2][8][8] __attribute__((aligned(32)));  // acc, accm of each row
    float (*acc)[8] = accbuf[0], (*accm)[8] = accbuf[1];
    __asm__("" : "+r"(acc), "+r"(accm));  // memory, not registers
    for (int r = 0; r < nr; r++) {
        _mm256_store_ps(acc[r], _mm256_setzero_ps());
        _mm256_store_ps(accm[r], _mm256_setzero_ps());
    }
    for (int i0 = 0; i0 < nb; i0 += 4) {
        k4_group_x86 g;
        k4_group_unpack_x86(x, size, nb - i0, &g);
        const int gn = nb - i0 < 4 ? nb - i0 : 4;
        for (int j = 0; j < gn; j++, x += size) {
            const int i = i0 + j;
            K_PREFETCH_AHEAD(x, size);
            const __m256i hb = q5 ? _mm256_loadu_si256((const __m256i *)(x + offsetof(block_q5_K, qh))) : m4;
            __m256i sumi[8];
#pragma GCC unroll 8
            for (int r = 0; r < nr; r++) sumi[r] = _mm256_setzero_si256();
            for (int k = 0; k < 4; k++) {
                __m256i q0, q1;
                k4_quants_x86(x + qs_off, hb, k, q5, &q0, &q1);
                const __m256i s0 = _mm256_set1_epi32(g.sc[j][2 * k]), s1 = _mm256_set1_epi32(g.sc[j][2 * k + 1]);
#pragma GCC unroll 8
                for (int r = 0; r < nr; r++) {
                    const int8_t *a = K4_PRE(vy, r, by, i)->qs + 64 * k;
                    const __m256i p0 = _mm256_maddubs_epi16(q0, _mm256_loadu_si256((const __m256i *)a));
                    const __m256i p1 = _mm256_maddubs_epi16(q1, _mm256_loadu_si256((const __m256i *)(a + 32)));
                    sumi[r] = K_X86_DOT(sumi[r], s0, p0);
                    K_X86_KEEP(sumi[r]);
                    sumi[r] = K_X86_DOT(sumi[r], s1, p1);
                    K_X86_KEEP(sumi[r]);
                }
            }
            const __m256 d = _mm256_broadcast_ss(&g.dd[2 * j]);
            const __m256 mf = _mm256_load_ps(g.mf[j]);
#pragma GCC unroll 8
            for (int r = 0; r < nr; r++) {
                const k_pre_q8_K *a = K4_PRE(vy, r, by, i);
                _mm256_store_ps(acc[r], _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(a->d)), _mm256_cvtepi32_ps(sumi[r]),
                                                        _mm256_load_ps(acc[r])));
                _mm256_store_ps(accm[r], _mm256_fmadd_ps(mf, _mm256_load_ps(a->fbs), _mm256_load_ps(accm[r])));
            }
        }
    }
    for (int r = 0; r < nr; r++) s[r * bs] = lp_hsum_f32x8(_mm256_sub_ps(_mm256_load_ps(acc[r]), _mm256_load_ps(accm[r])));
}
// 5..8 rows (nr), each count a body of its own
#define K_X86_ROWS8_BY_COUNT(q5)                                                                            \
    switch (nr) {                                                                                           \
    case 5: K_X86(k4_rows8)(n, s, bs, x, y, by, 5, q5); break;                                              \
    case 6: K_X86(k4_rows8)(n, s, bs, x, y, by, 6, q5); break;                                              \
    case 7: K_X86(k4_rows8)(n, s, bs, x, y, by, 7, q5); break;                                              \
    default: K_X86(k4_rows8)(n, s, bs, x, y, by, 8, q5); break;                                             \
    }
K_INLINE void K_X86(q4_K_pre_rows8)(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,
                                  size_t by, int nr) { K_X86_ROWS8_BY_COUNT(0) }
K_INLINE void K_X86(q5_K_pre_rows8)(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,
                                  size_t by, int nr) { K_X86_ROWS8_BY_COUNT(1) }
#undef K_X86_ROWS8_BY_COUNT
K_INLINE void K_X86(q4_K_rows)(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,
                             size_t by, const int nr) { K_X86(k4_rows)(n, s, bs, x, y, by, nr, 0, 0); }
K_INLINE void K_X86(q5_K_rows)(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,
                             size_t by, const int nr) { K_X86(k4_rows)(n, s, bs, x, y, by, nr, 1, 0); }
K_INLINE void K_X86(q4_K_pre_rows)(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,
                                 size_t by, const int nr) { K_X86(k4_rows)(n, s, bs, x, y, by, nr, 0, 1); }
K_INLINE void K_X86(q5_K_pre_rows)(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,
                                 size_t by, const int nr) { K_X86(k4_rows)(n, s, bs, x, y, by, nr, 1, 1); }
K_X86_ROWS_DOTS(q4_K)
K_X86_ROWS_DOTS(q5_K)
K_X86_PRE_ROWS(q4_K)
K_X86_PRE_ROWS(q5_K)

K_INLINE void K_X86(q6_rows)(int n, float *restrict s, size_t bs, const void *restrict vx, const void *restrict vy,
                            size_t by, const int nr, const int pre) {
    const block_q6_K *restrict x = vx;
    __m256 acc[4];
    K_FOR_ROWS(r) acc[r] = _mm256_setzero_ps();
    for (int i = 0; i < n / QK_K; i++) {
        K_PREFETCH_AHEAD(&x[i], sizeof(block_q6_K));
        const float xd = lp_half_to_float_f16c(x[i].d);
        __m256i sc16, scales;
        k6_scales_x86(&x[i], &sc16, &scales);
        // pre: the -32 offset first, -32 * sum of scale * (activation sum of its group), from the
        // prepared -8 * sums against 4 times the scales
        const __m256i sc16x4 = _mm256_slli_epi16(sc16, 2);
        __m256i sumi[4], sumi2[4];
        K_FOR_ROWS(r) sumi[r] = pre ? _mm256_madd_epi16(sc16x4, _mm256_loadu_si256((const __m256i *)K4_PRE(vy, r, by, i)->nbs))
                                    : _mm256_setzero_si256();
        K_FOR_ROWS(r) sumi2[r] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            k6_quants_x86(&x[i], h, q);
            const __m256i q0 = q[0], q1 = q[1], q2 = q[2], q3 = q[3];
            K_FOR_ROWS(r) {
                const int8_t *a = (pre ? K4_PRE(vy, r, by, i)->qs : K_ROW(vy, r, by, i)->qs) + 128 * h;
                const __m256i p0 = _mm256_maddubs_epi16(q0, _mm256_loadu_si256((const __m256i *)(a + 0)));
                const __m256i p1 = _mm256_maddubs_epi16(q1, _mm256_loadu_si256((const __m256i *)(a + 32)));
                const __m256i p2 = _mm256_maddubs_epi16(q2, _mm256_loadu_si256((const __m256i *)(a + 64)));
                const __m256i p3 = _mm256_maddubs_epi16(q3, _mm256_loadu_si256((const __m256i *)(a + 96)));
                // (the scale shuffles are the same for every row: the compiler computes them once)
                __m256i t = K_X86_DOT(sumi[r], _mm256_shuffle_epi8(scales, bcast16_mask(4 * h + 0)), p0);
                __m256i u = K_X86_DOT(K_X86_TWO(nr) ? sumi2[r] : t, _mm256_shuffle_epi8(scales, bcast16_mask(4 * h + 1)), p1);
                t = K_X86_DOT(K_X86_TWO(nr) ? t : u, _mm256_shuffle_epi8(scales, bcast16_mask(4 * h + 2)), p2);
                if (K_X86_TWO(nr)) {
                    sumi[r] = t;
                    sumi2[r] = K_X86_DOT(u, _mm256_shuffle_epi8(scales, bcast16_mask(4 * h + 3)), p3);
                    K_X86_KEEP(sumi2[r]);
                } else {
                    sumi[r] = K_X86_DOT(t, _mm256_shuffle_epi8(scales, bcast16_mask(4 * h + 3)), p3);
                }
                K_X86_KEEP(sumi[r]);
            }
        }
        K_FOR_ROWS(r) {
            if (K_X86_TWO(nr)) sumi[r] = _mm256_add_epi32(sumi[r], sumi2[r]);
            if (!pre) {  // the offset from the Q8_K row's sums
                const __m256i bsums = _mm256_loadu_si256((const __m256i *)K_ROW(vy, r, by, i)->bsums);
                sumi[r] = _mm256_sub_epi32(sumi[r], _mm256_slli_epi32(_mm256_madd_epi16(sc16, bsums), 5));
            }
            const float yd = pre ? K4_PRE(vy, r, by, i)->d : K_ROW(vy, r, by, i)->d;
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(xd * yd), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
        }
    }
    K_FOR_ROWS(r) s[r * bs] = lp_hsum_f32x8(acc[r]);
}
K_INLINE void K_X86(q6_K_rows)(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,
                             size_t by, const int nr) { K_X86(q6_rows)(n, s, bs, x, y, by, nr, 0); }
K_INLINE void K_X86(q6_K_pre_rows)(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,
                                 size_t by, const int nr) { K_X86(q6_rows)(n, s, bs, x, y, by, nr, 1); }
// Q6_K against 5..8 prepared rows (nr, a constant): q6_rows's loop with twice the rows, the
// integer sums of all of them in registers (8 chains), the block's 8 scale vectors and the rows'
// float sums in memory: a block's quants decoded once for 8 rows instead of twice for 4. Each
// row's operations are q6_rows's, in the same order: the same bits.
K_INLINE void K_X86(q6_rows8)(int n, float *restrict s, size_t bs, const void *restrict vx, const void *restrict vy,
                            size_t by, const int nr) {
    const block_q6_K *restrict x = vx;
    float accbuf[8][8] __attribute__((aligned(32)));
    __m256i scbuf[8];  // the scale factors of quant vector 4h + k (q6_rows's shuffles)
    float (*acc)[8] = accbuf;
    __m256i *scv = scbuf;
    __asm__("" : "+r"(acc), "+r"(scv));  // memory, not registers
    for (int r = 0; r < nr; r++) _mm256_store_ps(acc[r], _mm256_setzero_ps());
    for (int i = 0; i < n / QK_K; i++) {
        K_PREFETCH_AHEAD(&x[i], sizeof(block_q6_K));
        const float xd = lp_half_to_float_f16c(x[i].d);
        __m256i sc16, scales;
        k6_scales_x86(&x[i], &sc16, &scales);
        for (int k = 0; k < 8; k++) _mm256_store_si256(&scv[k], _mm256_shuffle_epi8(scales, bcast16_mask(k)));
        const __m256i sc16x4 = _mm256_slli_epi16(sc16, 2);
        __m256i sumi[8];
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++)
            sumi[r] = _mm256_madd_epi16(sc16x4, _mm256_loadu_si256((const __m256i *)K4_PRE(vy, r, by, i)->nbs));
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            k6_quants_x86(&x[i], h, q);
            const __m256i q0 = q[0], q1 = q[1], q2 = q[2], q3 = q[3];
#pragma GCC unroll 8
            for (int r = 0; r < nr; r++) {
                const int8_t *a = K4_PRE(vy, r, by, i)->qs + 128 * h;
                sumi[r] = K_X86_DOT(sumi[r], _mm256_load_si256(&scv[4 * h]), _mm256_maddubs_epi16(q0, _mm256_loadu_si256((const __m256i *)a)));
                K_X86_KEEP(sumi[r]);
                sumi[r] = K_X86_DOT(sumi[r], _mm256_load_si256(&scv[4 * h + 1]), _mm256_maddubs_epi16(q1, _mm256_loadu_si256((const __m256i *)(a + 32))));
                K_X86_KEEP(sumi[r]);
                sumi[r] = K_X86_DOT(sumi[r], _mm256_load_si256(&scv[4 * h + 2]), _mm256_maddubs_epi16(q2, _mm256_loadu_si256((const __m256i *)(a + 64))));
                K_X86_KEEP(sumi[r]);
                sumi[r] = K_X86_DOT(sumi[r], _mm256_load_si256(&scv[4 * h + 3]), _mm256_maddubs_epi16(q3, _mm256_loadu_si256((const __m256i *)(a + 96))));
                K_X86_KEEP(sumi[r]);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++)
            _mm256_store_ps(acc[r], _mm256_fmadd_ps(_mm256_set1_ps(xd * K4_PRE(vy, r, by, i)->d), _mm256_cvtepi32_ps(sumi[r]),
                                                    _mm256_load_ps(acc[r])));
    }
    for (int r = 0; r < nr; r++) s[r * bs] = lp_hsum_f32x8(_mm256_load_ps(acc[r]));
}
K_INLINE void K_X86(q6_K_pre_rows8)(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,
                                  size_t by, int nr) {
    switch (nr) {
    case 5: K_X86(q6_rows8)(n, s, bs, x, y, by, 5); break;
    case 6: K_X86(q6_rows8)(n, s, bs, x, y, by, 6); break;
    case 7: K_X86(q6_rows8)(n, s, bs, x, y, by, 7); break;
    default: K_X86(q6_rows8)(n, s, bs, x, y, by, 8); break;
    }
}
K_X86_ROWS_DOTS(q6_K)
K_X86_PRE_ROWS(q6_K)

#undef K_X86
#undef K_X86_ROWS_DOTS
#undef K_X86_ROWS_DOTS2
#undef K_X86_PRE_ROWS
#undef K_X86_PRE_ROWS2
#undef K_X86_TWO
#undef K_X86_CAT
#undef K_X86_CAT2
