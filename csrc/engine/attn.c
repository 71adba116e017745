// attn.c — causal attention over the fp16 KV cache, for a batch of rows of one or
// several sequences; each row attends to positions 0..pos of its own sequence (with a
// sliding window, the last n_swa of them).
//
// K and V are cached alike: per sequence, layer and kv head, blocks of LP_KV_BLOCK positions, each
// (head_dim, LP_KV_BLOCK), the head's blocks one after another. A 16-position tile
// of scores reads one contiguous run of head_dim * 16 keys; the outputs sum, per
// dimension, 8 contiguous positions at a time; and all a head reads at a context of
// len positions is one contiguous run of len * head_dim values (transposed rows of
// n_ctx would touch a page per dimension: while decoding at short contexts every
// one of those scattered lines was a cache miss).
//
// Work is split by sequence and kv head: the query rows of one kv head are its group
// of query heads times the sequence's rows in the batch, ordered (row, head); a chunk
// takes up to LP_ATT_ROWS of them, so every key and value it reads serves several rows
// (the query heads of a group during decoding; neighbouring tokens too during prompt
// processing). A decoding row (its sequence's only row in the call) of a model with
// fewer kv heads than twice the threads (SmolLM2 has 3) also has each head's positions
// split into segments of whole K blocks, merged afterwards (flash-decoding): alone, one
// thread would otherwise take two heads' reads while the other takes one. The split
// depends only on the row's own length, so a row's result is the same in any batch.
// Per chunk, over its positions p in [p0, p1):
//   s[i][p] = q_i . k_p / sqrt(head_dim)            p < len_i = pos_i + 1
//   m_i = max s[i][p], e[i][p] = exp(s[i][p] - m_i), l_i = sum e[i][p]
//   o_i[d] = sum over p of e[i][p] v_p[d]
// and out_i = o_i / l_i, or, over segments, out_i = sum w o_i / sum w l_i with
// w = exp(m_i - max over segments of m_i).
// Register tiles: 4 rows x 16 positions for the scores (keys converted once for 4
// rows; AVX-512: 8 rows), 4 rows x 2 dimensions for the outputs (AVX-512: 8 dimensions).
#include <math.h>

#include "simd.h"

typedef struct {
    const lp_weights *w;
    const lp_kv *kv;
    const lp_scratch *s;
    const lp_seq_groups *g;    // the rows by sequence
    const int32_t *pos;        // (n) each row's position
    const float *q;            // (n, q_dim)
    float *out;                // (n, q_dim)
    const int32_t *first;      // (groups + 1) each group's first chunk
    int layer, group;          // group: query heads per kv head
    int64_t score_len;         // scores per row: n_ctx rounded up to whole blocks
    int window;                // sliding window: a row sees its last `window` positions (0: all)
    float scale;               // of q.k
    int simd;                  // LP_ISA_AVX2 or LP_ISA_AVX512 (their kernels), or 0
} attn_ctx;

typedef struct {
    const float *q[LP_ATT_ROWS];
    float *out[LP_ATT_ROWS];
    float *s[LP_ATT_ROWS];
    int len[LP_ATT_ROWS];
} attn_rows;

// ---------------------------------------------------------------------------
// Reference

// Dimension d of position p of one kv head's keys or values (kt: the head's first
// dimension in block 0; ks: the stride of the blocks).
#define LP_KEY(kt, ks, d, p) ((kt)[(int64_t)((p) / LP_KV_BLOCK) * (ks) + (d) * LP_KV_BLOCK + (p) % LP_KV_BLOCK])
// (ks = lp_kv_index(hd, 0, LP_KV_BLOCK): the cache's layout, lp.h, seen from one head)

static void scores_ref(const attn_rows *r, int nr, const uint16_t *kt, int64_t ks, int hd, int p0, int p1,
                       float scale) {
    for (int i = 0; i < nr; i++)
        for (int p = p0; p < p1 && p < r->len[i]; p++) {
            float sum = 0.0f;
            for (int d = 0; d < hd; d++) sum += r->q[i][d] * lp_half_to_float(LP_KEY(kt, ks, d, p));
            r->s[i][p] = sum * scale;
        }
}

static void values_ref(const attn_rows *r, int nr, const uint16_t *vt, int64_t ks, int hd) {
    for (int i = 0; i < nr; i++)
        for (int d = 0; d < hd; d++) {
            float sum = 0.0f;
            for (int p = 0; p < r->len[i]; p++) sum += r->s[i][p] * lp_half_to_float(LP_KEY(vt, ks, d, p));
            r->out[i][d] = sum;
        }
}

// ---------------------------------------------------------------------------
// AVX2

#if LP_X86
LP_AVX2_BEGIN
static inline __m256 load8_half(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

// Scores of rows [i0, i0 + NR) (NR <= 4) at positions [p, p + 16).
static inline __attribute__((always_inline)) void scores_tile_avx2(const attn_rows *r, int i0, const int NR,
                                                                   const uint16_t *kt, int64_t ks, int hd,
                                                                   int p, float scale) {
    __m256 acc[4][2];
    const float *q[4];  // (in registers: read through r, they were loaded again every step)
    for (int i = 0; i < NR; i++) {
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        q[i] = r->q[i0 + i];
    }
    const uint16_t *k = kt + (int64_t)((unsigned)p / LP_KV_BLOCK) * ks;  // p: a block start
    for (int d = 0; d < hd; d++, k += LP_KV_BLOCK) {
        const __m256 k0 = load8_half(k), k1 = load8_half(k + 8);
        for (int i = 0; i < NR; i++) {
            const __m256 qd = _mm256_broadcast_ss(&q[i][d]);
            acc[i][0] = _mm256_fmadd_ps(qd, k0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(qd, k1, acc[i][1]);
        }
    }
    const __m256 sc = _mm256_set1_ps(scale);
    for (int i = 0; i < NR; i++) {
        _mm256_storeu_ps(r->s[i0 + i] + p, _mm256_mul_ps(acc[i][0], sc));
        _mm256_storeu_ps(r->s[i0 + i] + p + 8, _mm256_mul_ps(acc[i][1], sc));
    }
}

// All rows' scores, in tiles of 16 positions up to the longest row's length
// rounded up to a whole tile: a row's scores past its own length are computed but
// never read (the score rows have room for them, and the K cache holds whole blocks).
static void scores_avx2(const attn_rows *r, int nr, const uint16_t *kt, int64_t ks, int hd, float scale) {
    int maxlen = 0;
    for (int i = 0; i < nr; i++) maxlen = r->len[i] > maxlen ? r->len[i] : maxlen;
    for (int p = 0; p < maxlen; p += 16) {
        for (int i = 0; i < nr; i += 4) switch (nr - i < 4 ? nr - i : 4) {  // a constant row count per tile
            case 4: scores_tile_avx2(r, i, 4, kt, ks, hd, p, scale); break;
            case 3: scores_tile_avx2(r, i, 3, kt, ks, hd, p, scale); break;
            case 2: scores_tile_avx2(r, i, 2, kt, ks, hd, p, scale); break;
            default: scores_tile_avx2(r, i, 1, kt, ks, hd, p, scale);
            }
    }
}

// The sums of the 8 lanes of a, b, c, e, in that order.
static inline __m128 hsum4_f32x8(__m256 a, __m256 b, __m256 c, __m256 e) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, e));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

// Positions of the outputs' sums per pass: a pass's values of one head (128 * 64
// dimensions * 2 bytes: 16 KiB) stay in L1 while its dimension pairs go over them.
#define LP_V_CHUNK 128

// out[d], out[d + 1] of rows [i0, i0 + NR) (+= when add) over positions [p0, p2):
// [p0, p1) in whole vectors (p1 no longer than any of the rows), then [p1, p2) in
// vectors whose lanes past a row's length count zero: the values past p2 (the last
// position written) and each row's scores past its length masked to zero.
// p0, p1 are multiples of 8, so 8 positions never straddle a block.
static inline __attribute__((always_inline)) void values_tile_avx2(const attn_rows *r, int i0, const int NR,
                                                                   const uint16_t *vt, int64_t ks, int d, int p0,
                                                                   int p1, int p2, int add) {
    __m256 acc[4][2];
    for (int i = 0; i < NR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    // dimension d of positions p..p+7, and d + 1
    const uint16_t *v0 = vt + d * LP_KV_BLOCK, *v1 = v0 + LP_KV_BLOCK;
#define LP_V8(v, p) ((v) + (int64_t)((unsigned)(p) / LP_KV_BLOCK) * ks + (unsigned)(p) % LP_KV_BLOCK)  /* p >= 0 */
    for (int p = p0; p < p1; p += 8) {
        // the same line of the next pass: a pass reads one line of each block per dimension
        // pair, lines 2 KiB apart that the hardware prefetcher does not follow
        if (p % LP_KV_BLOCK == 0) _mm_prefetch((const char *)LP_V8(v0, p + LP_V_CHUNK), _MM_HINT_T0);
        const __m256 a = load8_half(LP_V8(v0, p)), b = load8_half(LP_V8(v1, p));
        for (int i = 0; i < NR; i++) {
            const __m256 s = _mm256_loadu_ps(r->s[i0 + i] + p);
            acc[i][0] = _mm256_fmadd_ps(s, a, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(s, b, acc[i][1]);
        }
    }
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int p = p1; p < p2; p += 8) {
        // the 8 positions lie in one block (the cache holds whole blocks); those past p2 hold
        // whatever was written there (NaN, from another sequence), so they count as zeros
        const __m256 inside = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(p2 - p), lane));
        const __m256 a = _mm256_and_ps(load8_half(LP_V8(v0, p)), inside);
        const __m256 b = _mm256_and_ps(load8_half(LP_V8(v1, p)), inside);
        for (int i = 0; i < NR; i++) {
            const __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32(r->len[i0 + i] - p), lane);
            const __m256 s = _mm256_and_ps(_mm256_loadu_ps(r->s[i0 + i] + p), _mm256_castsi256_ps(live));
            acc[i][0] = _mm256_fmadd_ps(s, a, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(s, b, acc[i][1]);
        }
    }
#undef LP_V8
    // the 2 * NR sums, four at a time: rows i, i + 1
    for (int i = 0; i < NR; i += 2) {
        float o[4];
        const __m256 z = _mm256_setzero_ps();
        _mm_storeu_ps(o, hsum4_f32x8(acc[i][0], acc[i][1], i + 1 < NR ? acc[i + 1][0] : z, i + 1 < NR ? acc[i + 1][1] : z));
        for (int j = 0; j < 2 && i + j < NR; j++) {
            float *out = r->out[i0 + i + j] + d;
            out[0] = add ? out[0] + o[2 * j] : o[2 * j];
            out[1] = add ? out[1] + o[2 * j + 1] : o[2 * j + 1];
        }
    }
}

#if LP_X86
static int values_wide_avx512(const attn_rows *r, int i0, int NR, const uint16_t *vt, int64_t ks, int hd, int p0,
                              int p1, int p2, int add);
#endif

// The positions in chunks of LP_V_CHUNK, and within a chunk every tile of 4 rows: the chunk's
// values stay in cache for all the rows (a prompt chunk's 16 rows read each value from L1 four
// times, not from L2). Each row's sums are the same as tile by tile: its positions in the same
// order, its chunks added in the same order. wide (AVX-512): a tile's dimensions 8 at a time
// (values_wide_avx512: the same sums), the rest in pairs.
static void values_avx2(const attn_rows *r, int nr, const uint16_t *vt, int64_t ks, int hd, int wide) {
    int minlen[LP_ATT_ROWS / 4], maxlen[LP_ATT_ROWS / 4], most = 0;
    for (int i0 = 0, t = 0; i0 < nr; i0 += 4, t++) {
        const int NR = nr - i0 < 4 ? nr - i0 : 4;
        minlen[t] = maxlen[t] = r->len[i0];
        for (int i = 1; i < NR; i++) {
            minlen[t] = r->len[i0 + i] < minlen[t] ? r->len[i0 + i] : minlen[t];
            maxlen[t] = r->len[i0 + i] > maxlen[t] ? r->len[i0 + i] : maxlen[t];
        }
        most = maxlen[t] > most ? maxlen[t] : most;
    }
    for (int c = 0; c < most || c == 0; c += LP_V_CHUNK)
        for (int i0 = 0, t = 0; i0 < nr; i0 += 4, t++) {
            if (c > 0 && c >= maxlen[t]) continue;  // this tile's rows end before the chunk
            const int NR = nr - i0 < 4 ? nr - i0 : 4;
            const int whole = minlen[t] / 8 * 8;  // positions every row of the tile has, in whole vectors
            const int end = maxlen[t] - c < LP_V_CHUNK ? maxlen[t] : c + LP_V_CHUNK;
            const int p1 = whole < c ? c : whole < end ? whole : end;
            const int d0 = wide ? values_wide_avx512(r, i0, NR, vt, ks, hd, c, p1, end, c > 0) : 0;
            for (int d = d0; d + 2 <= hd; d += 2) switch (NR) {  // a constant row count per tile
                case 4: values_tile_avx2(r, i0, 4, vt, ks, d, c, p1, end, c > 0); break;
                case 3: values_tile_avx2(r, i0, 3, vt, ks, d, c, p1, end, c > 0); break;
                case 2: values_tile_avx2(r, i0, 2, vt, ks, d, c, p1, end, c > 0); break;
                default: values_tile_avx2(r, i0, 1, vt, ks, d, c, p1, end, c > 0);
                }
        }
    if (hd % 2)  // an odd head size: the last dimension in plain C
        for (int i = 0; i < nr; i++) {
            float sum = 0.0f;
            for (int p = 0; p < r->len[i]; p++) sum += r->s[i][p] * _cvtsh_ss(LP_KEY(vt, ks, hd - 1, p));
            r->out[i][hd - 1] = sum;
        }
}
LP_AVX2_END
#endif

// ---------------------------------------------------------------------------
// AVX-512: the scores in tiles of 8 rows x 16 positions, one 512-bit register a row: a block's
// 16 keys of one dimension are converted once for 8 rows (AVX2: once for 4 rows, two halves),
// and q's dimension is the multiply-add's broadcast operand. Each score is the same sum, over
// the dimensions in order, as AVX2's: the same bits. The values keep AVX2's 8-lane sums (16
// lanes would add a row's positions in another order), two dimensions a register.

#if LP_X86
LP_AVX512_BEGIN
static inline __attribute__((always_inline)) void scores_tile_avx512(const attn_rows *r, int i0, const int NR,
                                                                     const uint16_t *kt, int64_t ks, int hd,
                                                                     int p, float scale) {
    __m512 acc[8];
    const float *q[8];
    for (int i = 0; i < NR; i++) {
        acc[i] = _mm512_setzero_ps();
        q[i] = r->q[i0 + i];
    }
    const uint16_t *k = kt + (int64_t)((unsigned)p / LP_KV_BLOCK) * ks;  // p: a block start
    for (int d = 0; d < hd; d++, k += LP_KV_BLOCK) {
        const __m512 kd = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)k));
        for (int i = 0; i < NR; i++) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(q[i][d]), kd, acc[i]);
    }
    const __m512 sc = _mm512_set1_ps(scale);
    for (int i = 0; i < NR; i++) _mm512_storeu_ps(r->s[i0 + i] + p, _mm512_mul_ps(acc[i], sc));
}

static void scores_avx512(const attn_rows *r, int nr, const uint16_t *kt, int64_t ks, int hd, float scale) {
    int maxlen = 0;
    for (int i = 0; i < nr; i++) maxlen = r->len[i] > maxlen ? r->len[i] : maxlen;
    for (int p = 0; p < maxlen; p += 16) {
        int i = 0;
        for (; nr - i >= 8; i += 8) scores_tile_avx512(r, i, 8, kt, ks, hd, p, scale);
        switch (nr - i) {  // a constant row count per tile
        case 0: break;
        case 1: scores_tile_avx512(r, i, 1, kt, ks, hd, p, scale); break;
        case 2: scores_tile_avx512(r, i, 2, kt, ks, hd, p, scale); break;
        case 3: scores_tile_avx512(r, i, 3, kt, ks, hd, p, scale); break;
        case 4: scores_tile_avx512(r, i, 4, kt, ks, hd, p, scale); break;
        case 5: scores_tile_avx512(r, i, 5, kt, ks, hd, p, scale); break;
        case 6: scores_tile_avx512(r, i, 6, kt, ks, hd, p, scale); break;
        default: scores_tile_avx512(r, i, 7, kt, ks, hd, p, scale);
        }
    }
}

// The values: AVX2's tile of 4 rows over 8 dimensions instead of 2, each 512-bit register
// holding the 8-lane sums of two dimensions (d in the low half, d + 1 in the high half: the
// AVX2 tile's two registers) against a row's 8 scores in both halves. Every lane sums the
// products AVX2's lane does, in the same order, and the lanes are summed as AVX2 sums them
// (hsum4_f32x8): the same bits, with half the multiply-adds, and a row's scores loaded once
// for 8 dimensions instead of 2.

// Positions p..p+7 of the two dimensions at a and b (8 halves each). b's 8 halves go to the
// high 128 bits as a broadcast load blended in: an insert (a lane-crossing shuffle) took a
// slot of the multiply-add pipes on Zen 5 (one per 4 of the tile's multiply-adds), a blend does not.
static inline __m512 load2x8_half(const uint16_t *a, const uint16_t *b) {
    const __m256i lo = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)a));
    const __m256i hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)b));
    return _mm512_cvtph_ps(_mm256_blend_epi32(lo, hi, 0xf0));
}

// out[d .. d + 7] of rows [i0, i0 + NR) (+= when add) over positions [p0, p2), as
// values_tile_avx2 does for two dimensions: [p0, p1) whole, [p1, p2) with the values past p2
// and each row's scores past its length as zeros.
static inline __attribute__((always_inline)) void values_tile_avx512(const attn_rows *r, int i0, const int NR,
                                                                     const uint16_t *vt, int64_t ks, int d, int p0,
                                                                     int p1, int p2, int add) {
    __m512 acc[4][4];  // [row][dimension pair]
    for (int i = 0; i < NR; i++)
        for (int k = 0; k < 4; k++) acc[i][k] = _mm512_setzero_ps();
    const uint16_t *v0 = vt + d * LP_KV_BLOCK;  // dimension d + j: v0 + j * LP_KV_BLOCK
#define LP_V8(v, p) ((v) + (int64_t)((unsigned)(p) / LP_KV_BLOCK) * ks + (unsigned)(p) % LP_KV_BLOCK)  /* p >= 0 */
#define LP_VPAIR(k, p) load2x8_half(LP_V8(v0 + 2 * (k) * LP_KV_BLOCK, p), LP_V8(v0 + (2 * (k) + 1) * LP_KV_BLOCK, p))
    for (int p = p0; p < p1; p += 8) {
        if (p % LP_KV_BLOCK == 0)  // the next pass's lines (values_tile_avx2): one per dimension pair
            for (int k = 0; k < 4; k++)
                _mm_prefetch((const char *)LP_V8(v0 + 2 * k * LP_KV_BLOCK, p + LP_V_CHUNK), _MM_HINT_T0);
        __m512 v[4];
        for (int k = 0; k < 4; k++) v[k] = LP_VPAIR(k, p);
        for (int i = 0; i < NR; i++) {
            const __m512 s = _mm512_broadcast_f32x8(_mm256_loadu_ps(r->s[i0 + i] + p));
            for (int k = 0; k < 4; k++) acc[i][k] = _mm512_fmadd_ps(s, v[k], acc[i][k]);
        }
    }
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7);
    for (int p = p1; p < p2; p += 8) {  // (see values_tile_avx2)
        const __mmask16 inside = _mm512_cmpgt_epi32_mask(_mm512_set1_epi32(p2 - p), lane);
        __m512 v[4];
        for (int k = 0; k < 4; k++) v[k] = _mm512_maskz_mov_ps(inside, LP_VPAIR(k, p));
        for (int i = 0; i < NR; i++) {
            const __mmask16 live = _mm512_cmpgt_epi32_mask(_mm512_set1_epi32(r->len[i0 + i] - p), lane);
            const __m512 s = _mm512_maskz_mov_ps(live, _mm512_broadcast_f32x8(_mm256_loadu_ps(r->s[i0 + i] + p)));
            for (int k = 0; k < 4; k++) acc[i][k] = _mm512_fmadd_ps(s, v[k], acc[i][k]);
        }
    }
#undef LP_VPAIR
#undef LP_V8
    // per dimension pair, rows i, i + 1: the four sums of values_tile_avx2
    for (int i = 0; i < NR; i += 2)
        for (int k = 0; k < 4; k++) {
            float o[4];
            const __m512 a = acc[i][k], b = i + 1 < NR ? acc[i + 1][k] : _mm512_setzero_ps();
            _mm_storeu_ps(o, hsum4_f32x8(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1),
                                         _mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1)));
            for (int j = 0; j < 2 && i + j < NR; j++) {
                float *out = r->out[i0 + i + j] + d + 2 * k;
                out[0] = add ? out[0] + o[2 * j] : o[2 * j];
                out[1] = add ? out[1] + o[2 * j + 1] : o[2 * j + 1];
            }
        }
}

// A tile's dimensions 8 at a time (values_avx2's wide part); returns the first one left.
static int values_wide_avx512(const attn_rows *r, int i0, int NR, const uint16_t *vt, int64_t ks, int hd, int p0,
                              int p1, int p2, int add) {
    int d = 0;
    for (; d + 8 <= hd; d += 8) switch (NR) {  // a constant row count per tile
        case 4: values_tile_avx512(r, i0, 4, vt, ks, d, p0, p1, p2, add); break;
        case 3: values_tile_avx512(r, i0, 3, vt, ks, d, p0, p1, p2, add); break;
        case 2: values_tile_avx512(r, i0, 2, vt, ks, d, p0, p1, p2, add); break;
        default: values_tile_avx512(r, i0, 1, vt, ks, d, p0, p1, p2, add);
        }
    return d;
}
LP_AVX512_END
#endif

// ---------------------------------------------------------------------------

// Partial result of (decoding row's group g, kv head, segment, query head of the group):
// o[head_dim], then m, l. (The scratch holds n_seq decoding rows' worth: one per sequence.)
static float *part_of(const attn_ctx *c, int g, int kvh, int seg, int row) {
    const int64_t slot = (((int64_t)g * c->w->n_head_kv + kvh) * LP_ATT_SEGS + seg) * c->group + row;
    return c->s->att_part + slot * (c->w->head_dim + 2);
}

// Position segments of a decoding row of a sequence of len positions: as many as make
// twice the threads' chunks out of its kv heads, in all a multiple of the threads, each at
// least LP_ATT_SEG_MIN long (1: no split). They depend on the row alone, never on the rest
// of the batch, so a row gets the same sums whatever else is decoded with it.
static int decoding_segments(int n_head_kv, int nt, int len) {
    if (nt < 2 || n_head_kv >= 2 * nt) return 1;
    int segs = (2 * nt + n_head_kv - 1) / n_head_kv;
    while ((n_head_kv * segs) % nt && segs < LP_ATT_SEGS) segs++;
    const int most = len / LP_ATT_SEG_MIN;
    segs = segs < most ? segs : most;
    return segs > LP_ATT_SEGS ? LP_ATT_SEGS : segs < 1 ? 1 : segs;
}

// Group g's segments per kv head (prompt rows: 1) and their length (whole K blocks).
static int group_segs(const attn_ctx *c, int g, int *seg_len) {
    const int len = c->pos[c->g->groups[3 * g + 1]] + 1;
    const int segs = g < c->g->n_single ? decoding_segments(c->w->n_head_kv, c->s->n_threads, len) : 1;
    *seg_len = segs == 1 ? (int)c->score_len
                         : (int)(((len + segs - 1) / segs + LP_KV_BLOCK - 1) / LP_KV_BLOCK * LP_KV_BLOCK);
    return segs;
}

// Sliding window: a row at position pos sees positions pos - window + 1 .. pos, as
// llama.cpp's standard window hides p0 when pos - p0 >= window. Scores before the
// window become -inf (weight 0); a row whose window starts past this segment sees
// none of it (length 0: the segment merge then gives it no weight). Rows row0.. of
// the chunk; the group's rows start at `first`.
static void hide_outside_window(const attn_ctx *c, attn_rows *r, int nr, int first, int row0, int p0) {
    for (int i = 0; i < nr; i++) {
        const int t = first + (row0 + i) / c->group;
        const int64_t start = (int64_t)c->pos[t] - c->window + 1 - p0;  // first visible, segment-relative
        if (start >= r->len[i]) {
            r->len[i] = 0;
            continue;
        }
        for (int64_t p = 0; p < start; p++) r->s[i][p] = -INFINITY;
    }
}

static void attention_chunk(void *vctx, int chunk, int ith) {
    const attn_ctx *c = vctx;
    const lp_weights *w = c->w;
    const int hd = w->head_dim, q_dim = w->n_head * hd;
    // the chunk's sequence group: first[g] <= chunk < first[g + 1]; then its segment, kv head, rows
    int g = 0;
    while (c->first[g + 1] <= chunk) g++;
    const int32_t *grp = c->g->groups + 3 * g;
    int seg_len;
    const int segs = group_segs(c, g, &seg_len), local = chunk - c->first[g];
    const int seg = local % segs, head_chunk = local / segs;
    const int rows_per_head = grp[2] * c->group;
    const int cph = (rows_per_head + LP_ATT_ROWS - 1) / LP_ATT_ROWS;
    const int kvh = head_chunk / cph, row0 = head_chunk % cph * LP_ATT_ROWS;
    const int nr = rows_per_head - row0 < LP_ATT_ROWS ? rows_per_head - row0 : LP_ATT_ROWS;
    const int p0 = seg * seg_len;
    const float scale = c->scale;
    attn_rows r;
    memset(&r, 0, sizeof(r));
    float *s = c->s->att + (int64_t)ith * LP_ATT_ROWS * c->score_len;
    for (int i = 0; i < nr; i++) {
        const int row = row0 + i, t = grp[1] + row / c->group, h = kvh * c->group + row % c->group;
        const int len = c->pos[t] + 1 - p0;  // this row's positions in the segment
        r.q[i] = c->q + (int64_t)t * q_dim + h * hd;
        r.out[i] = segs == 1 ? c->out + (int64_t)t * q_dim + h * hd : part_of(c, g, kvh, seg, row);
        r.s[i] = s + (int64_t)i * c->score_len;
        r.len[i] = len < 0 ? 0 : len < seg_len ? len : seg_len;
    }
    // the segment's keys and values: the group's sequence, from block p0 / LP_KV_BLOCK on
    const int64_t ks = lp_kv_index(hd, 0, LP_KV_BLOCK), at = lp_kv_index(hd, 0, p0);
    const uint16_t *kt = lp_kv_head(c->kv, c->kv->k, grp[0], c->layer, kvh) + at;
    const uint16_t *vt = lp_kv_head(c->kv, c->kv->v, grp[0], c->layer, kvh) + at;
#if LP_X86
    if (c->simd == LP_ISA_AVX512) scores_avx512(&r, nr, kt, ks, hd, scale);
    else if (c->simd) scores_avx2(&r, nr, kt, ks, hd, scale);
    else
#endif
        scores_ref(&r, nr, kt, ks, hd, 0, seg_len, scale);
    if (c->window > 0) hide_outside_window(c, &r, nr, grp[1], row0, p0);
    float mx[LP_ATT_ROWS], l[LP_ATT_ROWS];
    for (int i = 0; i < nr; i++) l[i] = (float)lp_softmax_exps(r.s[i], r.len[i], &mx[i]);
#if LP_X86
    if (c->simd) values_avx2(&r, nr, vt, ks, hd, c->simd == LP_ISA_AVX512);
    else
#endif
        values_ref(&r, nr, vt, ks, hd);
    for (int i = 0; i < nr; i++) {
        if (segs == 1) {
            const float inv = 1.0f / l[i];
            for (int d = 0; d < hd; d++) r.out[i][d] *= inv;
        } else {
            r.out[i][hd] = mx[i];
            r.out[i][hd + 1] = l[i];
        }
    }
}

// A split decoding row's output from its segments: out = sum over segments of w o / sum
// of w l, w = exp(m - the largest m): each segment's sums rescaled to one common maximum.
// Segments a row does not reach have l = 0 and m = -inf (w = 0). A segment with NaN
// scores (l or m NaN) is not skipped: its NaN reaches the output, as it does without
// segments.
static void merge_segments(const attn_ctx *c) {
    const lp_weights *w = c->w;
    const int hd = w->head_dim, q_dim = w->n_head * hd;
    for (int g = 0; g < c->g->n_single; g++) {
        int seg_len;
        const int segs = group_segs(c, g, &seg_len);
        if (segs == 1) continue;
        for (int kvh = 0; kvh < w->n_head_kv; kvh++)
            for (int row = 0; row < c->group; row++) {
                const int t = c->g->groups[3 * g + 1], h = kvh * c->group + row;
                float *out = c->out + (int64_t)t * q_dim + h * hd;
                float top = -INFINITY;
                for (int sg = 0; sg < segs; sg++) {
                    const float *p = part_of(c, g, kvh, sg, row);
                    if (p[hd + 1] != 0.0f && p[hd] > top) top = p[hd];
                }
                float lsum = 0.0f;
                for (int d = 0; d < hd; d++) out[d] = 0.0f;
                for (int sg = 0; sg < segs; sg++) {
                    const float *p = part_of(c, g, kvh, sg, row);
                    if (p[hd + 1] == 0.0f) continue;
                    const float wt = expf(p[hd] - top);
                    lsum += wt * p[hd + 1];
                    for (int d = 0; d < hd; d++) out[d] += wt * p[d];
                }
                const float inv = 1.0f / lsum;
                for (int d = 0; d < hd; d++) out[d] *= inv;
            }
    }
}

void lp_attention(const lp_weights *w, const lp_kv *kv, int layer, const lp_seq_groups *g, const int32_t *pos,
                  const float *q, float *out, const lp_scratch *s) {
    const int isa = lp_get_isa();
    attn_ctx c = {
        .w = w, .kv = kv, .s = s, .g = g, .pos = pos, .q = q, .out = out, .layer = layer,
        .group = w->n_head / w->n_head_kv, .first = s->att_first,
        .score_len = ((int64_t)s->n_ctx + LP_KV_BLOCK - 1) / LP_KV_BLOCK * LP_KV_BLOCK,
        .window = lp_layer_swa(w, layer) ? w->n_swa : 0,
        .scale = w->attn_scale > 0.0f ? w->attn_scale : 1.0f / sqrtf((float)w->head_dim),
        .simd = isa == LP_ISA_AVX2 || isa == LP_ISA_AVX512 ? isa : 0,
    };
    // chunks: per sequence group and kv head, its query rows LP_ATT_ROWS at a time, times the
    // segments of a decoding row
    int chunks = 0;
    for (int i = 0; i < g->n; i++) {
        const int cph = (g->groups[3 * i + 2] * c.group + LP_ATT_ROWS - 1) / LP_ATT_ROWS;
        int seg_len;
        s->att_first[i] = chunks;
        chunks += w->n_head_kv * cph * group_segs(&c, i, &seg_len);
    }
    s->att_first[g->n] = chunks;
    lp_parallel_chunks(attention_chunk, &c, chunks, s->n_threads);
    merge_segments(&c);
}
