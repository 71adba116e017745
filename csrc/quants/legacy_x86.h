// legacy_x86.h — the x86 vec_dot bodies of Q5_0 and Q5_1 (legacy.c, which has
// their notes), 256-bit registers, included once per ISA between its BEGIN/END brackets. The
// includer defines
//   LX_ISA                    the functions' suffix (avx2, avxvnni)
//   LX_DOT(q, qy, offset)     a block's sum of (q - offset) * qy as 8 int32 lanes, the bytes
//                             4j..4j+3 in lane j (every ISA's lanes hold the same integers)
// and LP_SCALES2, nibbles32, fifth_bits32 (and simd.h's lp_halves2).
#define LX_CAT2(t, isa) lp_vec_dot_##t##_##isa
#define LX_CAT(t, isa) LX_CAT2(t, isa)
#define LX_FN(t) LX_CAT(t, LX_ISA)

// Q4_0 / Q5_0 (Q8_0 activations). QUANTS(i) gives block i's unsigned quants.
#define LP_DOT_Q8_0_BODY(QUANTS, OFFSET)                                                     \
    const int nb = n / 32;                                                                   \
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                           \
    int i = 0;                                                                               \
    for (; i + 1 < nb; i += 2) {                                                             \
        lp_prefetch_ahead(&x[i]);                                                            \
        const __m128 h = LP_SCALES2(x, y, i);                  /* dx0 dx1 dy0 dy1 */         \
        const __m256 d = _mm256_castps128_ps256(_mm_mul_ps(h, _mm_movehl_ps(h, h)));         \
        const __m256i p0 = LX_DOT(QUANTS(i), y[i].qs, OFFSET);                       \
        const __m256i p1 = LX_DOT(QUANTS(i + 1), y[i + 1].qs, OFFSET);               \
        acc0 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(d, _mm256_set1_epi32(0)), _mm256_cvtepi32_ps(p0), acc0); \
        acc1 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(d, _mm256_set1_epi32(1)), _mm256_cvtepi32_ps(p1), acc1); \
    }                                                                                        \
    if (i < nb) {                                                                            \
        const __m128 d0 = _mm_mul_ps(lp_halves2(&x[i].d), lp_halves2(&y[i].d));  /* lane 0 */      \
        const __m256i p0 = LX_DOT(QUANTS(i), y[i].qs, OFFSET);                       \
        acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(d0), _mm256_cvtepi32_ps(p0), acc0);     \
    }                                                                                        \
    *s = lp_hsum_f32x8(_mm256_add_ps(acc0, acc1));

// Q4_1 / Q5_1 (Q8_1 activations): [d, m] of the weights times [d, s] of the
// activations is [dx*dy, m*s] in one multiply; lane 1 of `mins` sums the min terms.
#define LP_DOT_Q8_1_BODY(QUANTS)                                                             \
    const int nb = n / 32;                                                                   \
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                           \
    __m128 mins = _mm_setzero_ps();                                                          \
    int i = 0;                                                                               \
    for (; i + 1 < nb; i += 2) {                                                             \
        lp_prefetch_ahead(&x[i]);                                                            \
        const __m128 f0 = _mm_mul_ps(lp_halves2(&x[i].d), lp_halves2(&y[i].d));                    \
        const __m128 f1 = _mm_mul_ps(lp_halves2(&x[i + 1].d), lp_halves2(&y[i + 1].d));            \
        const __m256i p0 = LX_DOT(QUANTS(i), y[i].qs, 0);                            \
        const __m256i p1 = LX_DOT(QUANTS(i + 1), y[i + 1].qs, 0);                    \
        acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(f0), _mm256_cvtepi32_ps(p0), acc0);     \
        acc1 = _mm256_fmadd_ps(_mm256_broadcastss_ps(f1), _mm256_cvtepi32_ps(p1), acc1);     \
        mins = _mm_add_ps(mins, _mm_add_ps(f0, f1));                                         \
    }                                                                                        \
    if (i < nb) {                                                                            \
        const __m128 f0 = _mm_mul_ps(lp_halves2(&x[i].d), lp_halves2(&y[i].d));                    \
        const __m256i p0 = LX_DOT(QUANTS(i), y[i].qs, 0);                            \
        acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(f0), _mm256_cvtepi32_ps(p0), acc0);     \
        mins = _mm_add_ps(mins, f0);                                                         \
    }                                                                                        \
    *s = lp_hsum_f32x8(_mm256_add_ps(acc0, acc1)) + _mm_cvtss_f32(_mm_shuffle_ps(mins, mins, 1));

#define Q5_QUANTS(b) _mm256_or_si256(nibbles32(x[b].qs), fifth_bits32(x[b].qh))

void LX_FN(q5_0)(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q5_0 *restrict x = vx;
    const block_q8_0 *restrict y = vy;
    LP_DOT_Q8_0_BODY(Q5_QUANTS, 16)
}

void LX_FN(q5_1)(int n, float *restrict s, const void *restrict vx, const void *restrict vy) {
    const block_q5_1 *restrict x = vx;
    const block_q8_1 *restrict y = vy;
    LP_DOT_Q8_1_BODY(Q5_QUANTS)
}
#undef Q5_QUANTS
#undef LP_DOT_Q8_0_BODY
#undef LP_DOT_Q8_1_BODY
#undef LX_FN
#undef LX_CAT
#undef LX_CAT2
