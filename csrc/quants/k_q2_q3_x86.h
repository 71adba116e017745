// k_q2_q3_x86.h — the x86 bodies of the Q2_K and Q3_K dots (k_q2_q3.c, which has their notes),
// 256-bit registers, included once per ISA between its BEGIN/END brackets. The includer defines
//   K_X86_ISA              the functions' suffix (avx2, avxvnni)
//   K_X86_DOT(acc, sc, p)  acc + pairwise sums of sc * p (int16 -> int32 lanes)
// Each row's integer sums go in two chains (even and odd 32-weight vectors), added at the
// block's end: the same int32 lanes however they are summed.
#define K_X86_CAT2(f, isa) f##_##isa
#define K_X86_CAT(f, isa) K_X86_CAT2(f, isa)
#define K_X86(f) K_X86_CAT(f, K_X86_ISA)
#define K_X86_ROWS_DOTS2(t, isa) K_ROWS_DOTS(t, isa)
#define K_X86_ROWS_DOTS(t) K_X86_ROWS_DOTS2(t, K_X86_ISA)
// maddubs of 32 unsigned quants u (< 32, so the pair sums are exact) with the activations at q8
#define K_X86_PAIRS(u, q8) _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(q8)))

K_INLINE void K_X86(q2_K_rows)(int n, float *restrict s, size_t bs, const void *restrict vx, const void *restrict vy,
                               size_t by, const int nr) {
    const block_q2_K *restrict x = vx;
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i m15 = _mm_set1_epi8(0x0f);
    __m256 acc[4], acc_min[4];
    K_FOR_ROWS(r) acc[r] = _mm256_setzero_ps(), acc_min[r] = _mm256_setzero_ps();
    for (int i = 0; i < n / QK_K; i++) {
        K_PREFETCH_AHEAD(&x[i], sizeof(block_q2_K));
        const __m128 xdv = lp_halves2(&x[i].d);
        const __m128i raw = _mm_loadu_si128((const __m128i *)x[i].scales);
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m15));
        // the 16 4-bit scales in both lanes
        const __m256i sc = _mm256_broadcastsi128_si256(_mm_and_si128(raw, m15));
        __m256i sumi[4][2];
        K_FOR_ROWS(r) sumi[r][0] = sumi[r][1] = _mm256_setzero_si256();
        #pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            // two halves of 128 weights: 32 bytes of quants each, four 2-bit fields
            // (16-bit shifts: the mask keeps each byte's own bits)
            const __m256i b = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * h));
            const __m256i q0 = _mm256_and_si256(b, m3);
            const __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(b, 2), m3);
            const __m256i q2 = _mm256_and_si256(_mm256_srli_epi16(b, 4), m3);
            const __m256i q3 = _mm256_and_si256(_mm256_srli_epi16(b, 6), m3);
            K_FOR_ROWS(r) {
                // (the scale shuffles are the same for every row: the compiler computes them once)
                const int8_t *q8 = K_ROW(vy, r, by, i)->qs + 128 * h;
                sumi[r][0] = K_X86_DOT(K_X86_DOT(sumi[r][0], lp_q2_K_scale_pair(sc, 4 * h), K_X86_PAIRS(q0, q8)),
                                       lp_q2_K_scale_pair(sc, 4 * h + 2), K_X86_PAIRS(q2, q8 + 64));
                sumi[r][1] = K_X86_DOT(K_X86_DOT(sumi[r][1], lp_q2_K_scale_pair(sc, 4 * h + 1), K_X86_PAIRS(q1, q8 + 32)),
                                       lp_q2_K_scale_pair(sc, 4 * h + 3), K_X86_PAIRS(q3, q8 + 96));
                K_KEEP(sumi[r][0]);
                K_KEEP(sumi[r][1]);
            }
        }
        K_FOR_ROWS(r) {
            const block_q8_K *yr = K_ROW(vy, r, by, i);
            lp_q2_K_accumulate(&acc[r], &acc_min[r], _mm_mul_ps(xdv, _mm_set1_ps(yr->d)),
                               _mm256_add_epi32(sumi[r][0], sumi[r][1]), mins, yr->bsums);
        }
    }
    K_FOR_ROWS(r) s[r * bs] = lp_hsum_f32x8(_mm256_sub_ps(acc[r], acc_min[r]));
}
K_X86_ROWS_DOTS(q2_K)

// Q3_K: u = q + 4 = low | (high bit << 2) is unsigned 0..7, so maddubs applies;
// the 4 comes back out per group as 4 * scale * bsum.
K_INLINE void K_X86(q3_K_rows)(int n, float *restrict s, size_t bs, const void *restrict vx, const void *restrict vy,
                               size_t by, const int nr) {
    const block_q3_K *restrict x = vx;
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4);
    __m256 acc[4];
    K_FOR_ROWS(r) acc[r] = _mm256_setzero_ps();
    for (int i = 0; i < n / QK_K; i++) {
        K_PREFETCH_AHEAD(&x[i], sizeof(block_q3_K));
        const float xd = lp_half_to_float_f16c(x[i].d);
        const __m256i sc16 = lp_q3_K_scales16(x[i].scales);  // groups 0..7 | 8..15
        // scales of each half (8 groups) in both lanes
        const __m256i half_sc[2] = {_mm256_permute4x64_epi64(sc16, 0x44), _mm256_permute4x64_epi64(sc16, 0xee)};
        __m256i sumi[4][2];
        K_FOR_ROWS(r) {  // the 4 taken out: 4 * sum over groups of scale * bsum
            const __m256i corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)K_ROW(vy, r, by, i)->bsums));
            sumi[r][0] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 2));
            sumi[r][1] = _mm256_setzero_si256();
        }
        const __m256i hm = _mm256_loadu_si256((const __m256i *)x[i].hmask);
        #pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * h));
            #pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                // high bit k = 4h + j of hmask moved to bit 2 (16-bit shifts stay within bytes)
                const int k = 4 * h + j;
                const __m256i hb = k < 2 ? _mm256_slli_epi16(hm, 2 - k) : _mm256_srli_epi16(hm, k - 2);
                const __m256i u = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 2 * j), m3),
                                                  _mm256_and_si256(hb, m4));
                const __m256i pair = lp_q3_K_scale_pair(half_sc[h], j);
                K_FOR_ROWS(r) {
                    sumi[r][j & 1] = K_X86_DOT(sumi[r][j & 1], pair, K_X86_PAIRS(u, K_ROW(vy, r, by, i)->qs + 128 * h + 32 * j));
                    K_KEEP(sumi[r][j & 1]);
                }
            }
        }
        K_FOR_ROWS(r) acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(K_ROW(vy, r, by, i)->d * xd),
                                               _mm256_cvtepi32_ps(_mm256_add_epi32(sumi[r][0], sumi[r][1])), acc[r]);
    }
    K_FOR_ROWS(r) s[r * bs] = lp_hsum_f32x8(acc[r]);
}
K_X86_ROWS_DOTS(q3_K)

#undef K_X86_PAIRS
#undef K_X86
#undef K_X86_ROWS_DOTS
#undef K_X86_ROWS_DOTS2
#undef K_X86_CAT
#undef K_X86_CAT2
