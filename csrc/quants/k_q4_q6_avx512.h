// k_q4_q6_avx512.h — the AVX-512 bodies of the Q4_K, Q5_K and Q6_K dots (k_q4_q6.c includes
// it between the AVX-512 brackets), in 512-bit registers: 64 quants per instruction.
//
// Decoding one token is compute-bound on these types (a core decodes Q4_K at about the
// rate it reads memory), so several activation rows (k_rows.h's nr: decoding several
// sequences, small prompt groups) cost what their per-row work costs. The bodies keep
// that work small: per row and 64 quants one VPDPBUSD (Q4_K, Q5_K: the scales applied once
// per block) or a maddubs and a VPDPWSSD (Q6_K: the scales applied in the same
// instruction), per row and block a few float operations; the weight decode (nibbles,
// high bits, scales) is done once per block for all rows. Each row's arithmetic is the
// same whatever nr is and whether its activations were prepared (rows_pre.h), so
// vec_dot, vec_dot_4acts, vec_dot_rows and the prepared-row dots agree bit for bit.
// (Q6_K in Q4_K's lane order measured 5-7% slower for one row: its decode costs more.)

// Up to 8 rows at once (32 vector registers hold their accumulators).
#define K8_FOR_ROWS(r) _Pragma("GCC unroll 8") for (int r = 0; r < nr; r++)
// body(n, s, bs, x, y, by, nr) with nr = 1..8 a constant
#define K8_SWITCH(body)                                        \
    switch (nr) {                                              \
    case 1: body(n, s, bs, x, y, by, 1); break;                \
    case 2: body(n, s, bs, x, y, by, 2); break;                \
    case 3: body(n, s, bs, x, y, by, 3); break;                \
    case 4: body(n, s, bs, x, y, by, 4); break;                \
    case 5: body(n, s, bs, x, y, by, 5); break;                \
    case 6: body(n, s, bs, x, y, by, 6); break;                \
    case 7: body(n, s, bs, x, y, by, 7); break;                \
    default: body(n, s, bs, x, y, by, 8); break;               \
    }
#define K8_ROWS_DOTS(t)                                                                                       \
    LP_ALIGNED_CODE void lp_vec_dot_##t##_avx512(int n, float *restrict s, const void *restrict x,           \
                                                 const void *restrict y) {                                   \
        t##_rows_avx512(n, s, 0, x, y, 0, 1);                                                                \
    }                                                                                                        \
    void lp_vec_dot_4acts_##t##_avx512(int n, float *restrict s, size_t bs, const void *restrict x,          \
                                       const void *restrict y, size_t by) {                                  \
        t##_rows_avx512(n, s, bs, x, y, by, 4);                                                              \
    }                                                                                                        \
    LP_ALIGNED_CODE void lp_vec_dot_rows_##t##_avx512(int n, float *restrict s, size_t bs, const void *restrict x, \
                                      const void *restrict y, size_t by, int nr) {                           \
        K8_SWITCH(t##_rows_avx512);                                                                          \
    }

// shift counts per 256-bit half: a in the low half, b in the high one
static inline __m512i k_half_counts(int a, int b) {
    return _mm512_inserti64x4(_mm512_set1_epi16((short)a), _mm256_set1_epi16((short)b), 1);
}
// The 32 bytes at p in both 256-bit halves
static inline __m512i k_bcast32(const uint8_t *p) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
}
static inline float k_hsum_f32x16(__m512 v, __m256 extra) {
    return lp_hsum_f32x8(_mm256_add_ps(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)), extra));
}

// Q4_K (q5 = 0) or Q5_K (q5 = 1), with VPDPBUSD: int32 lane j of every register k
// (k = 0..3) sums quants of one sub-block only, j / 2, at 16 * (j % 2) + 4k..+3 of it, so a
// row's four products of a block add up in one chain of VPDPBUSD and take their
// sub-block's scale in one multiply per block (instead of an int16 step and a
// VPDPWSSD per register). The weights are gathered into that order with one permute
// per register; the activations are either read in it (a row prepared once per
// product: lp_prep_q8_K_avx512) or permuted per row (vec_dot on Q8_K rows as they lie). Per
// block and row: d * yd * sum(scale * dot) in 16 lanes, and (dmin * min g) * (yd * bsum g) in
// lane g of 8 (bsum g: the sum of sub-block g's activations): the first factor made once per
// block for all rows, the second once per product in a prepared row (k4_bsum_factors_avx2), so a
// row's min terms are one FMA a block.

// dword 4j + k of the 64 at y (a block's activation quants), for j = 0..15
static inline __m512i k4_act_perm(const int8_t *y, int k) {
    const __m512i idx = _mm512_and_si512(
        _mm512_add_epi32(_mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60),
                         _mm512_set1_epi32(k)), _mm512_set1_epi32(31));
    const __m512i lo = _mm512_permutex2var_epi32(_mm512_loadu_si512((const void *)y), idx,
                                                 _mm512_loadu_si512((const void *)(y + 64)));
    const __m512i hi = _mm512_permutex2var_epi32(_mm512_loadu_si512((const void *)(y + 128)), idx,
                                                 _mm512_loadu_si512((const void *)(y + 192)));
    return _mm512_mask_blend_epi32(0xff00, lo, hi);
}

// Field f of activation row r's block i, prepared (pre: K4_PRE) or a Q8_K row as it lies
#define K4_Y(vy, r, by, i, f) (pre ? K4_PRE(vy, r, by, i)->f : K_ROW(vy, r, by, i)->f)

// Q8_K rows as the Q4_K / Q5_K row dots (k4_rows_avx512) read them with pre = 1: each block's quants
// in k4_act_perm's order, and k4_bsum_factors_avx2. (Q6_K's: lp_prep_q6_K_avx2.)
void lp_prep_q8_K_avx512(const void *restrict vy, size_t by, int rows, void *restrict out, int n) {
    for (int r = 0; r < rows; r++) {
        const block_q8_K *y = (const block_q8_K *)((const uint8_t *)vy + (size_t)r * by);
        k_pre_q8_K *o = (k_pre_q8_K *)out + (size_t)r * (n / QK_K);
        for (int i = 0; i < n / QK_K; i++) {
            o[i].d = y[i].d;
            _mm256_storeu_ps(o[i].fbs, k4_bsum_factors_avx2(&y[i]));
            for (int k = 0; k < 4; k++) _mm512_storeu_si512((void *)(o[i].qs + 64 * k), k4_act_perm(y[i].qs, k));
        }
    }
}

K_INLINE void k4_rows_avx512(int n, float *restrict s, size_t bs, const void *restrict vx, const void *restrict vy,
                             size_t by, const int nr, const int q5, const int pre) {
    const uint8_t *x = vx;
    const size_t size = q5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const size_t qs_off = q5 ? offsetof(block_q5_K, qs) : offsetof(block_q4_K, qs);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i bit4 = _mm512_set1_epi8(0x10);
    // sub-block j / 2: odd ones are the high nibbles; Q5_K: bit j / 2 of each qh byte
    const __m512i nib_shift = _mm512_setr_epi32(0, 0, 4, 4, 0, 0, 4, 4, 0, 0, 4, 4, 0, 0, 4, 4);
    const __m512i sub = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    __m512 acc[8];
    __m256 accm[8];  // the mins' sums: lane g, sub-block g's
    K8_FOR_ROWS(r) { acc[r] = _mm512_setzero_ps(); accm[r] = _mm256_setzero_ps(); }
    for (int i = 0; i < n / QK_K; i++, x += size) {
        const block_q4_K *b = (const block_q4_K *)x;  // d, dmin, scales: the same fields in Q5_K
        K_PREFETCH_AHEAD(x, size);
        const __m128 ddm = lp_halves2(&b->d);
        const __m512 d = _mm512_broadcastss_ps(ddm);
        const __m256 dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(ddm));
        const __m128i sm = k4_scale_min_avx2(b->scales);
        // lane j: the scale of sub-block j / 2
        const __m512i sc = _mm512_cvtepu8_epi32(
            _mm_shuffle_epi8(sm, _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)));
        // lane g: dmin * min g, for every row (against k4_bsum_factors)
        const __m256 mf = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8))));
        const __m512i qlo = _mm512_loadu_si512((const void *)(x + qs_off));
        const __m512i qhi = _mm512_loadu_si512((const void *)(x + qs_off + 64));
        const __m512i qh = q5 ? _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(x + offsetof(block_q5_K, qh))))
                              : m4;
        __m512i q[4];
        for (int k = 0; k < 4; k++) {
            // lane j: qs bytes 32 * (j / 4) + 16 * (j % 2) + 4k..+3, nibble (j / 2) % 2
            const __m512i idx = _mm512_add_epi32(
                _mm512_setr_epi32(0, 4, 0, 4, 8, 12, 8, 12, 16, 20, 16, 20, 24, 28, 24, 28), _mm512_set1_epi32(k));
            q[k] = _mm512_and_si512(_mm512_srlv_epi32(_mm512_permutex2var_epi32(qlo, idx, qhi), nib_shift), m4);
            if (q5) {  // qh byte l: bit j is the fifth bit of quant l of sub-block j
                const __m512i hidx = _mm512_add_epi32(_mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4),
                                                      _mm512_set1_epi32(k));
                const __m512i hb = _mm512_srlv_epi32(_mm512_permutexvar_epi32(hidx, qh), sub);
                q[k] = _mm512_or_si512(q[k], _mm512_and_si512(_mm512_slli_epi32(hb, 4), bit4));
            }
        }
        K8_FOR_ROWS(r) {
            const int8_t *yq = K4_Y(vy, r, by, i, qs);
            __m512i sumi = _mm512_setzero_si512();
            for (int k = 0; k < 4; k++)
                sumi = _mm512_dpbusd_epi32(sumi, q[k], pre ? _mm512_loadu_si512((const void *)(yq + 64 * k))
                                                             : k4_act_perm(yq, k));
            // Q4_K: a lane's 16 products of 4-bit quants and Q8_K's (-128..127) fit an int16, so
            // VPMADDWD multiplies it by the scale (its high half by sc's zero) in one
            // instruction, exactly as VPMULLD's two; Q5_K's 5-bit quants can reach 63488
            sumi = q5 ? _mm512_mullo_epi32(sumi, sc) : _mm512_madd_epi16(sumi, sc);
            acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(K4_Y(vy, r, by, i, d))), _mm512_cvtepi32_ps(sumi), acc[r]);
            accm[r] = _mm256_fmadd_ps(mf, pre ? _mm256_loadu_ps(K4_PRE(vy, r, by, i)->fbs) : k4_bsum_factors_avx2(K_ROW(vy, r, by, i)),
                                      accm[r]);
        }
    }
    K8_FOR_ROWS(r) s[r * bs] = k_hsum_f32x16(acc[r], _mm256_sub_ps(_mm256_setzero_ps(), accm[r]));
}
// the bodies K8_ROWS_DOTS and K8_PRE_ROWS take: <t>_rows_avx512, <t>_pre_rows_avx512
#define K4_BODY(name, q5, pre)                                                                                \
    K_INLINE void name(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,  \
                       size_t by, const int nr) {                                                            \
        k4_rows_avx512(n, s, bs, x, y, by, nr, q5, pre);                                                     \
    }
K4_BODY(q4_K_rows_avx512, 0, 0)
K4_BODY(q5_K_rows_avx512, 1, 0)
K4_BODY(q4_K_pre_rows_avx512, 0, 1)
K4_BODY(q5_K_pre_rows_avx512, 1, 1)
K8_ROWS_DOTS(q4_K)
K8_ROWS_DOTS(q5_K)
// the row dots from prepared rows (rows_pre.h), nr = 1..8
#define K8_PRE_ROWS(t)                                                                                       \
    LP_ALIGNED_CODE void lp_rows_pre_##t##_avx512(int n, float *restrict s, size_t bs, const void *restrict x, \
                                  const void *restrict y, size_t by, int nr) {                              \
        K8_SWITCH(t##_pre_rows_avx512);                                                                      \
    }
K8_PRE_ROWS(q4_K)
K8_PRE_ROWS(q5_K)

// Q6_K: register 2h holds quants 128h..128h+63 (low nibbles of ql[64h..64h+63], high
// bits 0-1 / 2-3 of qh[32h..32h+31]), register 2h+1 quants 128h+64..128h+127 (high
// nibbles, qh bits 4-5 / 6-7). Quants unsigned 0..63; the -32 offset per row as
// 32 * sum(scale * bsum), subtracted in the integer sum.

K_INLINE void q6_rows_avx512(int n, float *restrict s, size_t bs, const void *restrict vx, const void *restrict vy,
                             size_t by, const int nr, const int pre) {
    const block_q6_K *restrict x = vx;
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i m30 = _mm512_set1_epi8(0x30);
    const __m512i lo_counts = k_half_counts(4, 2), hi_counts = k_half_counts(0, 2);
    __m512 acc[8];
    K8_FOR_ROWS(r) acc[r] = _mm512_setzero_ps();
    for (int i = 0; i < n / QK_K; i++) {
        K_PREFETCH_AHEAD(&x[i], sizeof(block_q6_K));
        const __m512 xd = _mm512_set1_ps(lp_half_to_float_f16c(x[i].d));
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)x[i].scales);
        const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);  // group g's scale in lane g
        const __m256i sc16x4 = _mm256_slli_epi16(sc16, 2);  // (pre: against -8 * the group sums)
        const __m512i sc512 = _mm512_castsi256_si512(sc16);
        __m512i q[4], sc[4];
        for (int h = 0; h < 2; h++) {
            const __m512i l = _mm512_loadu_si512((const void *)(x[i].ql + 64 * h));
            const __m512i hh = k_bcast32(x[i].qh + 32 * h);
            // bits 0-1 (low half) and 2-3 (high half) of hh to bits 4-5; then bits 4-5 and 6-7
            q[2 * h] = _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_and_si512(_mm512_sllv_epi16(hh, lo_counts), m30));
            q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                           _mm512_and_si512(_mm512_srlv_epi16(hh, hi_counts), m30));
        }
        for (int m = 0; m < 4; m++) {  // quants 64m..64m+63: groups 4m..4m+3, 8 int16 lanes each
            const __m512i idx = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_setr_epi16(4 * m, 4 * m, 4 * m, 4 * m, 4 * m, 4 * m, 4 * m, 4 * m, 4 * m + 1,
                                                         4 * m + 1, 4 * m + 1, 4 * m + 1, 4 * m + 1, 4 * m + 1, 4 * m + 1,
                                                         4 * m + 1)),
                _mm256_setr_epi16(4 * m + 2, 4 * m + 2, 4 * m + 2, 4 * m + 2, 4 * m + 2, 4 * m + 2, 4 * m + 2, 4 * m + 2,
                                  4 * m + 3, 4 * m + 3, 4 * m + 3, 4 * m + 3, 4 * m + 3, 4 * m + 3, 4 * m + 3, 4 * m + 3),
                1);
            sc[m] = _mm512_permutexvar_epi16(idx, sc512);
        }
        K8_FOR_ROWS(r) {
            const int8_t *yq = K4_Y(vy, r, by, i, qs);
            __m512i sumi;
            if (pre)  // the -32 offset first: -32 * sum of scale * (activation sum of its group), lanes 0..7
                sumi = _mm512_zextsi256_si512(_mm256_madd_epi16(sc16x4, _mm256_loadu_si256((const __m256i *)K4_PRE(vy, r, by, i)->nbs)));
            else
                sumi = _mm512_setzero_si512();
            for (int m = 0; m < 4; m++) {
                const __m512i p = _mm512_maddubs_epi16(q[m], _mm512_loadu_si512((const void *)(yq + 64 * m)));
                sumi = _mm512_dpwssd_epi32(sumi, p, sc[m]);
            }
            if (!pre) {  // the same from the bsums, after the chain (no wait on them)
                const __m256i bsums = _mm256_loadu_si256((const __m256i *)K_ROW(vy, r, by, i)->bsums);
                const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bsums), 5);
                sumi = _mm512_sub_epi32(sumi, _mm512_zextsi256_si512(offset));
            }
            acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(xd, _mm512_set1_ps(K4_Y(vy, r, by, i, d))), _mm512_cvtepi32_ps(sumi), acc[r]);
        }
    }
    K8_FOR_ROWS(r) s[r * bs] = k_hsum_f32x16(acc[r], _mm256_setzero_ps());
}
K_INLINE void q6_K_rows_avx512(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,
                               size_t by, const int nr) {
    q6_rows_avx512(n, s, bs, x, y, by, nr, 0);
}
K_INLINE void q6_K_pre_rows_avx512(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict y,
                                   size_t by, const int nr) {
    q6_rows_avx512(n, s, bs, x, y, by, nr, 1);
}
K8_ROWS_DOTS(q6_K)
K8_PRE_ROWS(q6_K)

// Q6_K for the AVX-512 batched product (gemm.c): its quants as stored, 0..63 (the tile's unsigned
// operand: gemm.c's panel_offset), in lp_q6_K_to_s8's order, so each byte is to_s8's + 32; with
// to_s8's scale and sub-scales. (From to_s8 the product added the 32 back in a pass over the row.)
// Quarter k of a half's 128 quants: nibble k / 2 of ql[32 (k % 2) ..], bits 2k, 2k + 1 of qh; a
// register holds quarters 0 and 1 (the low nibbles of both 32 bytes of ql), another 2 and 3.
void lp_q6_K_to_u6_avx512(const void *restrict vx, int8_t *restrict q, float *restrict scale, int16_t *restrict sub,
                          int64_t n) {
    const block_q6_K *restrict x = vx;
    const __m512i low4 = _mm512_set1_epi8(0x0f), two = _mm512_set1_epi8(0x03);
    const __m512i lo_counts = k_half_counts(0, 2), hi_counts = k_half_counts(4, 6);
    for (int64_t i = 0; i < n / QK_K; i++) {
        int8_t *o = q + QK_K * i;
        for (int h = 0; h < 2; h++, o += 128) {
            const __m512i l = _mm512_loadu_si512((const void *)(x[i].ql + 64 * h));
            const __m512i qh = k_bcast32(x[i].qh + 32 * h);
            const __m512i h01 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, lo_counts), two), 4);
            const __m512i h23 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, hi_counts), two), 4);
            _mm512_storeu_si512((void *)o, _mm512_or_si512(_mm512_and_si512(l, low4), h01));
            _mm512_storeu_si512((void *)(o + 64), _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), low4), h23));
        }
        scale[i] = lp_half_to_float(x[i].d);
        _mm256_storeu_si256((__m256i *)(sub + 16 * i), _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[i].scales)));
    }
}
