// legacy_groups.c — the dot products of the 32-weight block formats on x86, over groups of
// four blocks: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 on AVX-512 VNNI, Q4_0, Q4_1 and Q8_0 on AVX2
// and AVX-VNNI. One kernel serves one sequence and several.
//
// The arithmetic (every path below does exactly this, so a row's result never depends on
// how many weight rows or activation rows share the call, nor, for Q4_0, Q4_1 and Q8_0, on the
// ISA):
//   per block b:  isum_b = the exact integer sum of the products of the quants
//                 (Q4_0, Q5_0: less 8 or 16 * the activations' sum)
//   per row of 4-block groups, four float lanes c = 0..3 (block b goes to lane b mod 4):
//                 acc_c = fma(float(isum_b), dx_b * dy_b, acc_c)
//                 Q4_1, Q5_1 then acc_c = fma(m_b, s_b, acc_c)
//   the result:   (acc_0 + acc_1) + (acc_2 + acc_3)
// Blocks past a row's last (a row of 18 blocks has a group of 2) add exact zeros.
//
// AVX-512, the reduction kernel (b4_groups): a 512-bit register holds one weight row's
// four blocks of a group as 16-byte quarters, gathered from the blocks with one permute.
// Q4/Q5: the low nibbles (elements 0..15) and the high ones (16..31) are two registers;
// Q8_0: its first 16 quants and its last 16. An activation row is prepared once per product
// in the same order (b4_act). VPDPBUSD leaves four int32 lanes per block and weight row;
// four weight rows' registers reduce to one with the blocks' exact sums in lanes 4w + b,
// and the float steps run on 16 (row, block) pairs at once. With several activation rows,
// the transposed kernel (b4t_groups: Q4_0, Q4_1, and Q8_0 from 5 rows) rearranges the four
// weight rows once per group instead, so that no activation row needs the reduction.
// AVX2 and AVX-VNNI: the transposed kernel in 256-bit registers, two weight rows a register
// (b4v_groups); four weight rows whose last group holds two blocks (a row of 576: 18 blocks)
// take that group in one register set, lane 4w + b holding the blocks of rows 2 (b / 2) + w, for
// each activation row's blocks 0, 1, 0, 1 (b4v_tail2: two passes' work in one).
//
// Signs: VPDPBUSD multiplies unsigned bytes by signed ones; the weights are the unsigned side,
// the activations the signed one. Q4_0 and Q5_0's offset comes off as -8 or -16 * the
// activations' block sum, prepared with them (b4_act.off); Q8_0's quants go in plus 128, and
// -128 * the activations' block sum takes it back out the same way. (AVX2's Q8_0 takes |w|
// against the activations with w's sign instead: VPMADDUBSW's pair sums would saturate.)
#include "simd.h"
#include "quants/rows_pre.h"
#include "quants/avxvnni.h"

// A group of four blocks of one prepared activation row (rows_pre.h).
typedef struct {
    // Quants 0..15 of the four blocks, in the weights'
    // order (b4_fetch): Q4_0, Q4_1, Q8_0 (j, b), bytes 4j..4j+3 of block b at 16j + 4b; Q5_0,
    // Q5_1 (b, j), block b's 16 at 16b
    int8_t lo[64];
    int8_t hi[64];  // quants 16..31, the same way
    float d[4];     // the blocks' scales (0 past the row's last block)
    union {
        float s[4];        // Q4_1, Q5_1: the Q8_1 block's s (d * the quants' sum)
        int32_t off[4];    // Q4_0, Q5_0, Q8_0: -8, -16 or -128 * the quants' sum
    };
    uint8_t pad[32];        // 192 bytes: lo and hi start on 64-byte lines
} b4_act;
_Static_assert(sizeof(b4_act) == 192, "b4_act");

enum { B4_Q4_0, B4_Q4_1, B4_Q5_0, B4_Q5_1, B4_Q8_0 };

// Block bytes and field offsets of each type
#define B4_BS(T) ((T) == B4_Q4_0 ? 18 : (T) == B4_Q4_1 ? 20 : (T) == B4_Q5_0 ? 22 : (T) == B4_Q5_1 ? 24 : 34)
#define B4_QS(T) ((T) == B4_Q4_0 ? 2 : (T) == B4_Q4_1 ? 4 : (T) == B4_Q5_0 ? 6 : (T) == B4_Q5_1 ? 8 : 2)
#define B4_QH(T) ((T) == B4_Q5_0 ? 2 : 4)
#define B4_MIN(T) ((T) == B4_Q4_1 || (T) == B4_Q5_1)
#define B4_Q5(T) ((T) == B4_Q5_0 || (T) == B4_Q5_1)
// The types whose block sums start at the prepared offset (b4_act.off)
#define B4_OFF(T) ((T) == B4_Q4_0 || (T) == B4_Q5_0 || (T) == B4_Q8_0)
#define B4_JB(T) ((T) == B4_Q4_0 || (T) == B4_Q4_1 || (T) == B4_Q8_0)  // quants in (j, b) order (b4_fetch)
// The second 64-byte load of a group starts here: the group's last 64 bytes (Q8_0: bytes
// 64..127; its second 16 quants come from bytes 8..135)
#define B4_B(T) ((T) == B4_Q8_0 ? 64 : 4 * B4_BS(T) - 64)

#if LP_X86
// ---------------------------------------------------------------------------
// Prepared activation rows (every ISA here), and AVX2 / AVX-VNNI Q4_0, Q4_1 and Q8_0.
LP_AVX2_BEGIN

// One activation row prepared: n / 32 blocks (Q8_1 when q8_1, else Q8_0) at y to the
// groups g0 .. g1 - 1 of out (group g at out[g - g0]).
LP_INLINE void b4_prep_row(const int T, const uint8_t *restrict y, int nb, int g0, int g1, b4_act *restrict out) {
    const int q8_1 = B4_MIN(T);
    const size_t by = q8_1 ? sizeof(block_q8_1) : sizeof(block_q8_0);
    for (int g = g0; g < g1; g++) {
        b4_act *o = &out[g - g0];
        for (int k = 0; k < 4; k++) {
            const int b = 4 * g + k;
            __m256i q = _mm256_setzero_si256();
            float d = 0, sv = 0;
            int32_t sum = 0;
            if (b < nb) {
                const uint8_t *blk = y + (size_t)b * by;
                lp_half h[2];
                memcpy(h, blk, sizeof h);
                q = _mm256_loadu_si256((const __m256i *)(blk + (q8_1 ? 4 : 2)));
                d = _cvtsh_ss(h[0]);
                sv = q8_1 ? _cvtsh_ss(h[1]) : 0;
                if (B4_OFF(T))  // the quants' sum
                    sum = lp_hsum_i32x8(_mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1)));
            }
            if (B4_JB(T)) {  // bytes 4j..4j+3 of the quants to bytes 16j + 4k..
                int8_t e[32];
                _mm256_storeu_si256((__m256i *)e, q);
                for (int j = 0; j < 4; j++) {
                    memcpy(o->lo + 16 * j + 4 * k, e + 4 * j, 4);
                    memcpy(o->hi + 16 * j + 4 * k, e + 16 + 4 * j, 4);
                }
            } else {
                _mm_storeu_si128((__m128i *)(o->lo + 16 * k), _mm256_castsi256_si128(q));
                _mm_storeu_si128((__m128i *)(o->hi + 16 * k), _mm256_extracti128_si256(q, 1));
            }
            o->d[k] = d;
            if (q8_1) o->s[k] = sv;
            else o->off[k] = (T == B4_Q4_0 ? -8 : T == B4_Q5_0 ? -16 : -128) * sum;
        }
        memset(o->pad, 0, sizeof o->pad);
    }
}

// lp_prep_<t>_b4 (rows_pre.h)
#define B4_PREP(T, t)                                                                                              \
    static void lp_prep_##t##_b4(const void *restrict y, size_t by, int rows, void *restrict out, int n) {     \
        const int nb = n / 32, ng = (nb + 3) / 4;                                                              \
        for (int r = 0; r < rows; r++)                                                                         \
            b4_prep_row(T, (const uint8_t *)y + (size_t)r * by, nb, 0, ng, (b4_act *)out + (size_t)r * ng);       \
    }
B4_PREP(B4_Q4_0, q4_0)
B4_PREP(B4_Q4_1, q4_1)
B4_PREP(B4_Q5_0, q5_0)
B4_PREP(B4_Q5_1, q5_1)
B4_PREP(B4_Q8_0, q8_0)
#undef B4_PREP
#define B4_CHUNK 32  // groups of a raw activation row prepared at a time on the stack (6 KiB)
// vec_dot's body (n, s, vx, vy: one weight row, one activation row as quantized): the row
// prepared B4_CHUNK groups at a time, its accumulator (ACC, zeroed by ZERO) carried through
// GROUPS over each chunk, then STORE
#define B4_VEC_DOT(T, ACC, ZERO, GROUPS, STORE)                                                                \
    const int nb = n / 32, ng = (nb + 3) / 4;                                                                  \
    b4_act buf[B4_CHUNK] __attribute__((aligned(64)));                                                         \
    ACC acc[1] = { ZERO };                                                                                     \
    for (int g = 0; g < ng; g += B4_CHUNK) {                                                                   \
        const int g1 = g + B4_CHUNK < ng ? g + B4_CHUNK : ng;                                                  \
        b4_prep_row(T, (const uint8_t *)vy, nb, g, g1, buf);                                                   \
        GROUPS(T, (const uint8_t *)vx, 0, nb, g, g1, (const uint8_t *)buf, 0, g, acc, 1, 1);                   \
    }                                                                                                          \
    STORE(s, 0, acc, 1, 1);

// AVX2 and AVX-VNNI, Q4_0, Q4_1 and Q8_0: the same arithmetic in 256-bit registers, two weight rows
// a register (lane 4w + b: row w's block b). A block's 16 quant bytes of both rows go into
// one register's halves (one per block b), an in-lane 4 x 4 transpose of dwords makes
// register j hold bytes 4j..4j+3 of every (row, block), as the AVX-512 transposed kernel's;
// each activation row then takes eight VPMADDUBSW summed in int16 (a lane's 8 pairs of products
// of quants < 16 and activations >= -128: at most 30720 in size) and one VPMADDWD (AVX-VNNI:
// eight VPDPBUSD), straight into the blocks' exact sums. The float steps are the AVX-512
// kernels' per (row, block) lane, so every x86 path gives the same bits.

// In-lane 4 x 4 transpose of dwords: out[j] dword b of each half = in[b]'s dword j
LP_INLINE void b4v_transpose(const __m256i *in, __m256i *out) {
    const __m256i t0 = _mm256_unpacklo_epi32(in[0], in[1]), t1 = _mm256_unpackhi_epi32(in[0], in[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(in[2], in[3]), t3 = _mm256_unpackhi_epi32(in[2], in[3]);
    out[0] = _mm256_unpacklo_epi64(t0, t2);
    out[1] = _mm256_unpackhi_epi64(t0, t2);
    out[2] = _mm256_unpacklo_epi64(t1, t3);
    out[3] = _mm256_unpackhi_epi64(t1, t3);
}

// The group's quants (lo[j], hi[j] lane 4w + b: bytes 4j.. of quants 0..15 and 16..31 of row
// w's block b; unsigned nibbles, or Q8_0's signed quants),
// d (and m) of rows x and x + bx (W = 1: x alone; zeros in row 1's lanes), blocks < nbl.
// T2 (b4v_tail2): the last two blocks of four rows x .. x + 3 bx instead, lane 4w + b holding
// row 2 (b / 2) + w's block b % 2.
// The halves come in as each block's first 4 bytes (d, then Q4_1's m; Q4_0 and Q8_0: d and two
// quant bytes), 4 dwords a row, split and widened in vector registers: gathering them 16 bits at
// a time in general registers took a third of a one-row dot's time (Q4_1, Zen 3).
LP_INLINE void b4v_weights(const int T, const int T2, const uint8_t *x, size_t bx, const int nbl, const int W,
                           __m256i *lo, __m256i *hi, __m256 *dx, __m256 *mx) {
    const int bs = B4_BS(T);
    __m256i yb[4], yh[4];  // block b's 16 quant bytes of both rows (Q8_0: and its last 16)
    for (int b = 0; b < 4; b++) {
        yb[b] = yh[b] = _mm256_setzero_si256();
        if (b >= nbl) continue;
        for (int w = 0; w < W; w++) {
            const uint8_t *blk = T2 ? x + (2 * (b / 2) + w) * bx + b % 2 * bs : x + w * bx + b * bs;
            const __m128i q = _mm_loadu_si128((const __m128i *)(blk + B4_QS(T)));
            yb[b] = w ? _mm256_inserti128_si256(yb[b], q, 1) : _mm256_castsi128_si256(q);
            if (T == B4_Q8_0) {
                const __m128i q2 = _mm_loadu_si128((const __m128i *)(blk + B4_QS(T) + 16));
                yh[b] = w ? _mm256_inserti128_si256(yh[b], q2, 1) : _mm256_castsi128_si256(q2);
            }
        }
    }
    __m256i t[4];
    b4v_transpose(yb, t);
    if (T == B4_Q8_0) {
        for (int j = 0; j < 4; j++) lo[j] = t[j];
        b4v_transpose(yh, hi);
    } else {
        const __m256i m4 = _mm256_set1_epi8(0x0f);
        for (int j = 0; j < 4; j++) {
            lo[j] = _mm256_and_si256(t[j], m4);
            hi[j] = _mm256_and_si256(_mm256_srli_epi16(t[j], 4), m4);
        }
    }
    __m128i h[2];  // dword b of h[w]: row w's block b's first 4 bytes
    for (int w = 0; w < 2; w++) {
        int32_t v[4] = { 0, 0, 0, 0 };
        for (int b = 0; b < 4; b++)
            if (w < W && b < nbl) memcpy(&v[b], T2 ? x + (2 * (b / 2) + w) * bx + b % 2 * bs : x + w * bx + b * bs, 4);
        h[w] = _mm_setr_epi32(v[0], v[1], v[2], v[3]);
    }
    const __m128i low = _mm_set1_epi32(0xffff);
    *dx = _mm256_cvtph_ps(_mm_packus_epi32(_mm_and_si128(h[0], low), _mm_and_si128(h[1], low)));
    *mx = B4_MIN(T) ? _mm256_cvtph_ps(_mm_packus_epi32(_mm_srli_epi32(h[0], 16), _mm_srli_epi32(h[1], 16)))
                    : _mm256_setzero_ps();
}

// Group g's four float steps of each activation row, from its blocks' exact sums (the offsets
// already off: each ISA's ISUM). T2: the group is a row's last, of two blocks, in b4v_tail2's lanes
// (every activation field read as its blocks 0, 1, 0, 1: B4V_T2)
#define B4V_T2(T2, v) ((T2) ? _mm256_shuffle_epi32((v), 0x44) : (v))
#define B4V_T2F(T2, v) ((T2) ? _mm256_permute_ps((v), 0x44) : (v))
LP_INLINE void b4v_float(const int T, const int T2, __m256i isum, const b4_act *y, __m256 dx, __m256 mx,
                         __m256 *acc) {
    const __m256 f = _mm256_mul_ps(dx, B4V_T2F(T2, _mm256_broadcast_ps((const __m128 *)y->d)));
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), f, *acc);
    if (B4_MIN(T)) *acc = _mm256_fmadd_ps(mx, B4V_T2F(T2, _mm256_broadcast_ps((const __m128 *)y->s)), *acc);
}

// s[a * bs + w] = (acc_0 + acc_1) + (acc_2 + acc_3) of row w's lanes (as b4_store)
LP_INLINE void b4v_store(float *s, size_t bs, const __m256 *acc, const int W, const int A) {
    for (int a = 0; a < A; a++) {
        const __m256 t = _mm256_add_ps(acc[a], _mm256_permute_ps(acc[a], _MM_SHUFFLE(2, 3, 0, 1)));
        const __m256 u = _mm256_add_ps(t, _mm256_permute_ps(t, _MM_SHUFFLE(1, 0, 3, 2)));
        s[a * bs] = _mm256_cvtss_f32(u);
        if (W == 2) s[a * bs + 1] = _mm_cvtss_f32(_mm256_extractf128_ps(u, 1));
    }
}

// One pass of A activation rows (a constant) over every group, into acc, then stored (b4v_rows)
#define B4V_PASS(isa, A)                                                                                       \
    do {                                                                                                       \
        b4v_groups_##isa(T, x, bx, nb, 0, ng, p, bp, 0, acc, W, A);                                            \
        b4v_store(s, bs, acc, W, A);                                                                           \
    } while (0)
// The body of one ISA: b4v_groups_<isa> (W = 1, 2 weight rows, A = 1..4 activation rows,
// groups g0 .. g1 - 1, activations of group g at group g - pg) and the entry points of T
// (t): vec_dot, the row dots of one and of four weight rows (two pairs).
#define B4V_ISA(isa, AUX, ISUM)                                                                                \
    /* group g (nbl blocks: a constant 4 but in a row's last group, so that the loop has no checks) */      \
    LP_INLINE void b4v_group_##isa(const int T, const uint8_t *restrict x, size_t bx, const int nbl, int g,     \
                                   const uint8_t *restrict p, size_t bp, int pg, __m256 *acc, const int W,     \
                                   const int A) {                                                              \
        __m256i lo[4], hi[4];                                                                                  \
        __m256 dx, mx;                                                                                         \
        b4v_weights(T, 0, x + (size_t)g * 4 * B4_BS(T), bx, nbl, W, lo, hi, &dx, &mx);                         \
        __m256i aux[8];                                                                                        \
        AUX(T, lo, hi, aux);                                                                                   \
        _Pragma("GCC unroll 8") for (int a = 0; a < A; a++) {                                                  \
            const b4_act *y = (const b4_act *)(p + a * bp) + (g - pg);                                         \
            b4v_float(T, 0, ISUM(T, 0, lo, hi, aux, y), y, dx, mx, &acc[a]);                                   \
        }                                                                                                      \
    }                                                                                                          \
    LP_INLINE void b4v_groups_##isa(const int T, const uint8_t *restrict x, size_t bx, int nb, int g0, int g1,  \
                                    const uint8_t *restrict p, size_t bp, int pg, __m256 *acc, const int W,    \
                                    const int A) {                                                             \
        const int bs = B4_BS(T), gw = nb / 4 < g1 ? nb / 4 : g1;  /* groups g < gw have four blocks */          \
        int g = g0;                                                                                            \
        for (; g < gw; g++) {                                                                                  \
            lp_prefetch_next(x, bx, (size_t)g * 4 * bs, 4 * bs, W);                                            \
            b4v_group_##isa(T, x, bx, 4, g, p, bp, pg, acc, W, A);                                             \
        }                                                                                                      \
        if (g < g1) b4v_group_##isa(T, x, bx, nb - 4 * g, g, p, bp, pg, acc, W, A);                            \
    }                                                                                                          \
    /* The last group g, of two blocks, of four weight rows x .. x + 3 bx at once (rows 0 and 1 into acc0, */ \
    /* 2 and 3 into acc1): every lane's steps as b4v_group's, the lanes of no block (b = 2, 3) plus +0.0 */  \
    /* as its exact zeros add, so that the results are the bits of two passes (half their work) */           \
    LP_INLINE void b4v_tail2_##isa(const int T, const uint8_t *restrict x, size_t bx, int g,                   \
                                   const uint8_t *restrict p, size_t bp, __m256 *acc0, __m256 *acc1,          \
                                   const int A) {                                                              \
        __m256i lo[4], hi[4], aux[8];                                                                          \
        __m256 dx, mx;                                                                                         \
        b4v_weights(T, 1, x + (size_t)g * 4 * B4_BS(T), bx, 4, 2, lo, hi, &dx, &mx);                           \
        AUX(T, lo, hi, aux);                                                                                   \
        const __m256 zero = _mm256_setzero_ps();                                                               \
        _Pragma("GCC unroll 8") for (int a = 0; a < A; a++) {                                                  \
            const b4_act *y = (const b4_act *)(p + a * bp) + g;                                                \
            /* lane 4w + b: acc0's block b (b < 2), acc1's block b - 2 */                                    \
            __m256 c = _mm256_blend_ps(acc0[a], _mm256_permute_ps(acc1[a], 0x4e), 0xcc);                     \
            b4v_float(T, 1, ISUM(T, 1, lo, hi, aux, y), y, dx, mx, &c);                                        \
            acc0[a] = _mm256_blend_ps(_mm256_add_ps(acc0[a], zero), c, 0x33);                                  \
            acc1[a] = _mm256_blend_ps(_mm256_add_ps(acc1[a], zero), _mm256_permute_ps(c, 0x4e), 0x33);         \
        }                                                                                                      \
    }                                                                                                          \
    /* A activation rows (a constant, up to 8) of four weight rows: two pairs (W = 2) over their whole */     \
    /* groups, then a last group of two blocks for both in one (b4v_tail2) */                                \
    LP_INLINE void b4v_four_##isa(const int T, int n, float *restrict s, size_t bs, const uint8_t *restrict x,  \
                                  size_t bx, const uint8_t *restrict p, size_t bp, const int A) {              \
        const int nb = n / 32, ng = (nb + 3) / 4, g1 = nb % 4 == 2 ? nb / 4 : ng;                             \
        __m256 acc[2][8];                                                                                      \
        for (int a = 0; a < A; a++) acc[0][a] = acc[1][a] = _mm256_setzero_ps();                               \
        b4v_groups_##isa(T, x, bx, nb, 0, g1, p, bp, 0, acc[0], 2, A);                                         \
        b4v_groups_##isa(T, x + 2 * bx, bx, nb, 0, g1, p, bp, 0, acc[1], 2, A);                                \
        if (g1 < ng) b4v_tail2_##isa(T, x, bx, g1, p, bp, acc[0], acc[1], A);                                  \
        b4v_store(s, bs, acc[0], 2, A);                                                                        \
        b4v_store(s + 2, bs, acc[1], 2, A);                                                                    \
    }                                                                                                          \
    /* 5..8 activation rows (A) in one pass over the groups */                                             \
    LP_INLINE void b4v_rows8_##isa(const int T, int n, float *restrict s, size_t bs, const uint8_t *restrict x, \
                                   size_t bx, const uint8_t *restrict p, size_t bp, int A, const int W) {      \
        const int nb = n / 32, ng = (nb + 3) / 4;                                                              \
        __m256 acc[8];                                                                                         \
        for (int a = 0; a < 8; a++) acc[a] = _mm256_setzero_ps();                                              \
        switch (A) {                                                                                           \
        case 5: B4V_PASS(isa, 5); break;                                                                       \
        case 6: B4V_PASS(isa, 6); break;                                                                       \
        case 7: B4V_PASS(isa, 7); break;                                                                       \
        default: B4V_PASS(isa, 8); break;                                                                      \
        }                                                                                                      \
    }                                                                                                          \
    LP_INLINE void b4v_rows_##isa(const int T, int n, float *restrict s, size_t bs, const uint8_t *restrict x,  \
                                  size_t bx, const uint8_t *restrict p, size_t bp, int nr, const int W) {       \
        const int nb = n / 32, ng = (nb + 3) / 4;                                                              \
        for (; nr > 0; nr -= 4, s += 4 * bs, p += 4 * bp) {                                                    \
            __m256 acc[4];                                                                                     \
            for (int a = 0; a < 4; a++) acc[a] = _mm256_setzero_ps();                                          \
            switch (nr) {                                                                                      \
            case 1: B4V_PASS(isa, 1); break;                                                                   \
            case 2: B4V_PASS(isa, 2); break;                                                                   \
            case 3: B4V_PASS(isa, 3); break;                                                                   \
            default: B4V_PASS(isa, 4); break;                                                                  \
            }                                                                                                  \
        }                                                                                                      \
    }
#define B4V_ENTRY(T, t, isa)                                                                                   \
    LP_ALIGNED_CODE void lp_vec_dot_##t##_##isa(int n, float *restrict s, const void *restrict vx,             \
                                                const void *restrict vy) {                                     \
        B4_VEC_DOT(T, __m256, _mm256_setzero_ps(), b4v_groups_##isa, b4v_store)                                \
    }                                                                                                          \
    /* 5..8 rows: entry points of their own, so that the code of 1..4 stays as it was (where a loop */    \
    /* falls in the lines moves its speed by a fifth) */                                                       \
    __attribute__((noinline)) LP_ALIGNED_CODE static void lp_rows8_##t##_##isa(int n, float *restrict s,      \
            size_t bs, const void *restrict x, const void *restrict p, size_t bp, int nr) {                    \
        b4v_rows8_##isa(T, n, s, bs, (const uint8_t *)x, 0, (const uint8_t *)p, bp, nr, 1);                    \
    }                                                                                                          \
    __attribute__((noinline)) LP_ALIGNED_CODE static void lp_rows8x4_##t##_##isa(int n, float *restrict s,    \
            size_t bs, const void *restrict x, size_t bx, const void *restrict p, size_t bp, int nr) {         \
        const uint8_t *xb = (const uint8_t *)x, *pb = (const uint8_t *)p;                                      \
        switch (nr) {                                                                                          \
        case 5: b4v_four_##isa(T, n, s, bs, xb, bx, pb, bp, 5); break;                                         \
        case 6: b4v_four_##isa(T, n, s, bs, xb, bx, pb, bp, 6); break;                                         \
        case 7: b4v_four_##isa(T, n, s, bs, xb, bx, pb, bp, 7); break;                                         \
        default: b4v_four_##isa(T, n, s, bs, xb, bx, pb, bp, 8); break;                                        \
        }                                                                                                      \
    }                                                                                                          \
    LP_ALIGNED_CODE static void lp_rows_pre_##t##_##isa(int n, float *restrict s, size_t bs,                   \
                                                        const void *restrict x, const void *restrict p,        \
                                                        size_t bp, int nr) {                                   \
        for (; nr > 4; nr -= 8, s += 8 * bs, p = (const uint8_t *)p + 8 * bp)                                  \
            lp_rows8_##t##_##isa(n, s, bs, x, p, bp, nr < 8 ? nr : 8);                                         \
        if (nr > 0) b4v_rows_##isa(T, n, s, bs, (const uint8_t *)x, 0, (const uint8_t *)p, bp, nr, 1);         \
    }                                                                                                          \
    LP_ALIGNED_CODE static void lp_rows_pre4_##t##_##isa(int n, float *restrict s, size_t bs,                  \
                                                         const void *restrict x, size_t bx,                    \
                                                         const void *restrict p, size_t bp, int nr) {          \
        for (; nr > 4; nr -= 8, s += 8 * bs, p = (const uint8_t *)p + 8 * bp)                                  \
            lp_rows8x4_##t##_##isa(n, s, bs, x, bx, p, bp, nr < 8 ? nr : 8);                                   \
        const uint8_t *xb = (const uint8_t *)x, *pb = (const uint8_t *)p;                                      \
        switch (nr) {                                                                                          \
        case 1: b4v_four_##isa(T, n, s, bs, xb, bx, pb, bp, 1); break;                                         \
        case 2: b4v_four_##isa(T, n, s, bs, xb, bx, pb, bp, 2); break;                                         \
        case 3: b4v_four_##isa(T, n, s, bs, xb, bx, pb, bp, 3); break;                                         \
        case 4: b4v_four_##isa(T, n, s, bs, xb, bx, pb, bp, 4); break;                                         \
        default: break;                                                                                        \
        }                                                                                                      \
    }

// The activations' 16 bytes j of the lower (y->lo) or upper (y->hi) quants, in both halves;
// their four blocks' offset sums
#define B4V_Y(y, half, j) \
    B4V_T2(T2, _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)((y)->half + 16 * (j)))))
#define B4V_OFF(y) B4V_T2(T2, _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(y)->off)))

// AVX2. Q4_0, Q4_1: VPMADDUBSW pairs summed in int16, then VPMADDWD. Q8_0: |w| (aux, made once
// per group) against the activations with w's sign, each VPMADDUBSW's pairs (at most
// 2 x 128 x 127) to int32 by its own VPMADDWD.
LP_INLINE void b4v_aux_avx2(const int T, const __m256i *lo, const __m256i *hi, __m256i *aux) {
    if (T != B4_Q8_0) return;
    for (int j = 0; j < 4; j++) {
        aux[j] = _mm256_abs_epi8(lo[j]);
        aux[4 + j] = _mm256_abs_epi8(hi[j]);
    }
}
LP_INLINE __m256i b4v_isum_avx2(const int T, const int T2, const __m256i *lo, const __m256i *hi, const __m256i *aux,
                                const b4_act *y) {
    const __m256i ones = _mm256_set1_epi16(1);
    if (T == B4_Q8_0) {
        __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_maddubs_epi16(aux[j], _mm256_sign_epi8(B4V_Y(y, lo, j), lo[j])), ones));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_maddubs_epi16(aux[4 + j], _mm256_sign_epi8(B4V_Y(y, hi, j), hi[j])), ones));
        }
        return _mm256_add_epi32(s0, s1);  // (exact: no offset to take out)
    }
    __m256i p = _mm256_setzero_si256();
    for (int j = 0; j < 4; j++) {
        p = _mm256_add_epi16(p, _mm256_maddubs_epi16(lo[j], B4V_Y(y, lo, j)));
        p = _mm256_add_epi16(p, _mm256_maddubs_epi16(hi[j], B4V_Y(y, hi, j)));
    }
    p = _mm256_madd_epi16(p, ones);
    return T == B4_Q4_0 ? _mm256_add_epi32(p, B4V_OFF(y)) : p;
}
B4V_ISA(avx2, b4v_aux_avx2, b4v_isum_avx2)
B4V_ENTRY(B4_Q4_0, q4_0, avx2)
B4V_ENTRY(B4_Q4_1, q4_1, avx2)
B4V_ENTRY(B4_Q8_0, q8_0, avx2)
LP_AVX2_END

// AVX-VNNI: eight VPDPBUSD; Q8_0 as AVX-512's (its quants + 128 the unsigned side: aux, once
// per group)
LP_AVXVNNI_BEGIN
LP_INLINE void b4v_aux_avxvnni(const int T, const __m256i *lo, const __m256i *hi, __m256i *aux) {
    if (T != B4_Q8_0) return;
    for (int j = 0; j < 4; j++) {
        aux[j] = _mm256_xor_si256(lo[j], _mm256_set1_epi8((char)0x80));
        aux[4 + j] = _mm256_xor_si256(hi[j], _mm256_set1_epi8((char)0x80));
    }
}
LP_INLINE __m256i b4v_isum_avxvnni(const int T, const int T2, const __m256i *lo, const __m256i *hi, const __m256i *aux,
                                   const b4_act *y) {
    const __m256i *ul = T == B4_Q8_0 ? aux : lo, *uh = T == B4_Q8_0 ? aux + 4 : hi;
    __m256i p = B4_OFF(T) ? B4V_OFF(y) : _mm256_setzero_si256();  // the sums start at the offset
    for (int j = 0; j < 4; j++) {
        p = _mm256_dpbusd_avx_epi32(p, ul[j], B4V_Y(y, lo, j));
        p = _mm256_dpbusd_avx_epi32(p, uh[j], B4V_Y(y, hi, j));
    }
    return p;
}
B4V_ISA(avxvnni, b4v_aux_avxvnni, b4v_isum_avxvnni)
B4V_ENTRY(B4_Q4_0, q4_0, avxvnni)
B4V_ENTRY(B4_Q4_1, q4_1, avxvnni)
B4V_ENTRY(B4_Q8_0, q8_0, avxvnni)
LP_AVXVNNI_END
#undef B4V_Y
#undef B4V_OFF
#undef B4V_ISA
#undef B4V_PASS
#undef B4V_ENTRY

LP_AVX512_BEGIN

// Four weight rows of more bytes than this: the next four are asked for into L2 (simd.h)
#define B4_L1_GROUP 12288

// Word index (for VPERMT2W over the loads at 0 and at `b`) of the word at byte o of a group
#define B4_IX(o, b) ((o) + 2 <= 64 ? (o) / 2 : 32 + ((o) - (b)) / 2)
// The 8 words of 16 bytes at byte o
#define B4_IX8(o, b) B4_IX(o, b), B4_IX((o) + 2, b), B4_IX((o) + 4, b), B4_IX((o) + 6, b), \
                     B4_IX((o) + 8, b), B4_IX((o) + 10, b), B4_IX((o) + 12, b), B4_IX((o) + 14, b)
// The word-gathered types' quant bytes of a group in the kernel's order. Q5_0, Q5_1: block
// b's 16 bytes in bytes 16b..16b+15. Q8_0, (j, b) as b4_fetch's: its first 16 quants here
// (bytes 2 + 34 b + 4 j.. of the loads at 0 and 64), its last 16 in b4_ixq8_hi.
#define B4_IXQ(T) { B4_IX8(B4_QS(T), B4_B(T)), B4_IX8(B4_QS(T) + B4_BS(T), B4_B(T)),                 \
                    B4_IX8(B4_QS(T) + 2 * B4_BS(T), B4_B(T)), B4_IX8(B4_QS(T) + 3 * B4_BS(T), B4_B(T)) }
#define B4_IX4(o, b) B4_IX(o, b), B4_IX((o) + 2, b)
#define B4_IXJ(o, j) B4_IX4((o) + 4 * (j), 64), B4_IX4((o) + 34 + 4 * (j), 64), B4_IX4((o) + 68 + 4 * (j), 64), \
                     B4_IX4((o) + 102 + 4 * (j), 64)
static const uint16_t b4_ixq[5][32] __attribute__((aligned(64))) = {
    [B4_Q5_0] = B4_IXQ(B4_Q5_0), [B4_Q5_1] = B4_IXQ(B4_Q5_1),
    [B4_Q8_0] = { B4_IXJ(2, 0), B4_IXJ(2, 1), B4_IXJ(2, 2), B4_IXJ(2, 3) }
};
// Words 2b, 2b + 1: block b's d and m (at 2; Q5_0, Q8_0: d again), for the types gathered by words
#define B4_M(T) (B4_MIN(T) ? 2 : 0)
#define B4_IXD_WORDS(T) B4_IX(0, B4_B(T)), B4_IX(B4_M(T), B4_B(T)), B4_IX(B4_BS(T), B4_B(T)),              \
                        B4_IX(B4_M(T) + B4_BS(T), B4_B(T)), B4_IX(2 * B4_BS(T), B4_B(T)),                   \
                        B4_IX(B4_M(T) + 2 * B4_BS(T), B4_B(T)), B4_IX(3 * B4_BS(T), B4_B(T)),               \
                        B4_IX(B4_M(T) + 3 * B4_BS(T), B4_B(T))
#define B4_IXD(T) { B4_IXD_WORDS(T) }
// Q5_0, Q5_1: words 8 + 2b, 9 + 2b, block b's 32 fifth bits (qh)
#define B4_IXH(T) B4_IX(B4_QH(T), B4_B(T)), B4_IX(B4_QH(T) + 2, B4_B(T)), B4_IX(B4_QH(T) + B4_BS(T), B4_B(T)),     \
                  B4_IX(B4_QH(T) + B4_BS(T) + 2, B4_B(T)), B4_IX(B4_QH(T) + 2 * B4_BS(T), B4_B(T)),               \
                  B4_IX(B4_QH(T) + 2 * B4_BS(T) + 2, B4_B(T)), B4_IX(B4_QH(T) + 3 * B4_BS(T), B4_B(T)),           \
                  B4_IX(B4_QH(T) + 3 * B4_BS(T) + 2, B4_B(T))
#define B4_IXDH(T) { B4_IXD_WORDS(T), B4_IXH(T) }
static const uint16_t b4_ixd[5][32] __attribute__((aligned(64))) = {
    [B4_Q5_0] = B4_IXDH(B4_Q5_0), [B4_Q5_1] = B4_IXDH(B4_Q5_1), [B4_Q8_0] = B4_IXD(B4_Q8_0)
};
// Q8_0's last 16 quants (bytes 18 + 34 b + 4 j..) from the loads at 8 and at 72, (j, b) order
#define B4_IX2(o) ((o) < 72 ? ((o) - 8) / 2 : 32 + ((o) - 72) / 2)
#define B4_IX2_4(o) B4_IX2(o), B4_IX2((o) + 2)
#define B4_IX2_J(j) B4_IX2_4(18 + 4 * (j)), B4_IX2_4(52 + 4 * (j)), B4_IX2_4(86 + 4 * (j)), B4_IX2_4(120 + 4 * (j))
static const uint16_t b4_ixq8_hi[32] __attribute__((aligned(64))) = { B4_IX2_J(0), B4_IX2_J(1), B4_IX2_J(2),
                                                                       B4_IX2_J(3) };
#define B4_LOADIX(t) _mm512_load_si512((const void *)(t))

// 64 bytes from byte o of a group of which `avail` lie in the row (all of them when full:
// else a masked load of the bytes that lie in the row, so nothing past the row is touched)
LP_INLINE __m512i b4_ld(const uint8_t *x, const int o, const int full, const int avail) {
    if (full) return _mm512_loadu_si512(x + o);
    const int r = avail - o;
    return _mm512_maskz_loadu_epi8(r >= 64 ? ~0ULL : r <= 0 ? 0 : (1ULL << r) - 1, x + o);
}

// The 4- and 5-bit types' group: the packed quants in the kernel's order (q) and per block b
// the dword d_b | m_b << 16 (dm). Q4_1 and Q4_0 gather dwords (one uop) from loads placed so
// that every field they take starts on a multiple of 4: Q4_1's fields do at 0 and 16; Q4_0's
// quants at 2 (even blocks) and 8 (odd), its d at 0 and 2. Q5_0 and Q5_1 gather words, and
// their fifth bits (qh: dwords 4..7 of the register dm comes from).
LP_INLINE void b4_fetch(const int T, const uint8_t *x, const int full, const int avail, __m512i *q, __m128i *dm,
                        __m512i *qh) {
    if (T == B4_Q4_1) {
        const __m512i a = b4_ld(x, 0, full, avail), b = b4_ld(x, 16, full, avail);
        *q = _mm512_permutex2var_epi32(a, _mm512_setr_epi32(1, 6, 11, 28, 2, 7, 12, 29, 3, 8, 13, 30, 4, 9, 14, 31), b);
        *dm = _mm512_castsi512_si128(_mm512_permutexvar_epi32(_mm512_setr_epi32(0, 5, 10, 15, 0, 0, 0, 0, 0, 0, 0, 0,
                                                                                0, 0, 0, 0), a));
    } else if (T == B4_Q4_0) {
        const __m512i a = b4_ld(x, 0, full, avail), a2 = b4_ld(x, 2, full, avail), b = b4_ld(x, 8, full, avail);
        *q = _mm512_permutex2var_epi32(a2, _mm512_setr_epi32(0, 19, 9, 28, 1, 20, 10, 29, 2, 21, 11, 30, 3, 22, 12, 31), b);
        *dm = _mm512_castsi512_si128(_mm512_permutex2var_epi32(a, _mm512_setr_epi32(0, 20, 9, 29, 0, 0, 0, 0, 0, 0, 0, 0,
                                                                                     0, 0, 0, 0), a2));
    } else {
        const __m512i a = b4_ld(x, 0, full, avail), b = b4_ld(x, B4_B(T), full, avail);
        *q = _mm512_permutex2var_epi16(a, B4_LOADIX(b4_ixq[T]), b);
        *qh = _mm512_permutex2var_epi16(a, B4_LOADIX(b4_ixd[T]), b);  // (and dwords 4..7: the qh)
        *dm = _mm512_castsi512_si128(*qh);
    }
}

// One weight row's group, unpacked: lo, the quants 0..15 of each block, hi, 16..31 (in the
// order of b4_fetch's q; Q8_0 in (j, b) order too, plus 128), and dm (b4_fetch). avail: the
// group's bytes that lie in the row.
LP_INLINE void b4_weights(const int T, const uint8_t *x, const int full, const int avail, __m512i *lo, __m512i *hi,
                          __m128i *dm) {
    if (T == B4_Q8_0) {  // quants 0..15 from the loads at 0 and 64, 16..31 from those at 8 and 72
        const __m512i a = b4_ld(x, 0, full, avail), b = b4_ld(x, 64, full, avail);
        *dm = _mm512_castsi512_si128(_mm512_permutex2var_epi16(a, B4_LOADIX(b4_ixd[T]), b));
        *lo = _mm512_permutex2var_epi16(a, B4_LOADIX(b4_ixq[T]), b);
        *hi = _mm512_permutex2var_epi16(b4_ld(x, 8, full, avail), B4_LOADIX(b4_ixq8_hi), b4_ld(x, 72, full, avail));
        *lo = _mm512_xor_si512(*lo, _mm512_set1_epi8((char)0x80));  // plus 128: the unsigned side
        *hi = _mm512_xor_si512(*hi, _mm512_set1_epi8((char)0x80));
        return;
    }
    __m512i q, qh = _mm512_setzero_si512();
    b4_fetch(T, x, full, avail, &q, dm, &qh);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    *lo = _mm512_and_si512(q, m4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
    if (B4_Q5(T)) {  // the fifth bits: block b's bit i to byte 16b + i of lo (i < 16) or of hi (i >= 16)
        // block b's qh in every dword of quarter b; byte i of a quarter: qh byte i / 8 (lo) or
        // 2 + i / 8 (hi), tested against bit i % 8
        const __m512i h = _mm512_permutexvar_epi32(_mm512_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7), qh);
        const __m512i bits = _mm512_set1_epi64((long long)0x8040201008040201ull), b16 = _mm512_set1_epi8(0x10);
        const __m512i sl = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
        const __m512i sh = _mm512_broadcast_i32x4(_mm_setr_epi8(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
        *lo = _mm512_mask_add_epi8(*lo, _mm512_test_epi8_mask(_mm512_shuffle_epi8(h, sl), bits), *lo, b16);
        *hi = _mm512_mask_add_epi8(*hi, _mm512_test_epi8_mask(_mm512_shuffle_epi8(h, sh), bits), *hi, b16);
    }
}

// r[w] holds weight row w's four int32 lanes per block b: lanes 4b + j, or 4j + b (jb); returns
// the sums of each block's lanes, row w's block b in lane 4w + b.
LP_INLINE __m512i b4_reduce(const __m512i *r, const int jb) {
    if (jb) {  // the 256-bit halves added, then the 128-bit quarters
        const __m512i p01 = _mm512_add_epi32(_mm512_shuffle_i32x4(r[0], r[1], 0x44), _mm512_shuffle_i32x4(r[0], r[1], 0xEE));
        const __m512i p23 = _mm512_add_epi32(_mm512_shuffle_i32x4(r[2], r[3], 0x44), _mm512_shuffle_i32x4(r[2], r[3], 0xEE));
        return _mm512_add_epi32(_mm512_shuffle_i32x4(p01, p23, 0x88), _mm512_shuffle_i32x4(p01, p23, 0xDD));
    }
    const __m512i ia = _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29);
    const __m512i ib = _mm512_add_epi32(ia, _mm512_set1_epi32(2));
    const __m512i p01 = _mm512_add_epi32(_mm512_permutex2var_epi32(r[0], ia, r[1]), _mm512_permutex2var_epi32(r[0], ib, r[1]));
    const __m512i p23 = _mm512_add_epi32(_mm512_permutex2var_epi32(r[2], ia, r[3]), _mm512_permutex2var_epi32(r[2], ib, r[3]));
    const __m512i ic = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_add_epi32(_mm512_permutex2var_epi32(p01, ic, p23),
                            _mm512_permutex2var_epi32(p01, _mm512_add_epi32(ic, _mm512_set1_epi32(1)), p23));
}

// Lanes 4w + b: row w's d_b, and m_b (Q4_1, Q5_1), from each row's dm (b4_fetch)
LP_INLINE void b4_scales(const int T, const __m128i *dm, __m512 *dx, __m512 *mx) {
    const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_setr_m128i(dm[0], dm[1])),
                                         _mm256_setr_m128i(dm[2], dm[3]), 1);
    *dx = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
    *mx = B4_MIN(T) ? _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16))) : _mm512_setzero_ps();
}

// W weight rows (x, x + bx, ...; W = 1 or 4) against A prepared activation rows (p + a * bp,
// A = 1..8), groups g0 .. g1 - 1 of a row of nb blocks; the activations of group g at
// group g - pg of their row. acc[a]: lane 4w + c, weight row w's lane c.
LP_INLINE void b4_groups(const int T, const uint8_t *restrict x, size_t bx, int nb, int g0, int g1,
                         const uint8_t *restrict p, size_t bp, int pg, __m512 *acc, const int W, const int A) {
    const int bs = B4_BS(T);
    const int row_bytes = nb * bs;
    const __m512i zero = _mm512_setzero_si512();
    for (int g = g0; g < g1; g++) {
        const int off = g * 4 * bs;
        const int full = off + 4 * bs <= row_bytes;
        lp_prefetch_next_to(x, bx, off, 4 * bs, W, W * bx > B4_L1_GROUP);
        __m512i lo[4], hi[4];
        __m128i dm[4];
        for (int w = 0; w < 4; w++) {
            lo[w] = hi[w] = zero;
            dm[w] = _mm_setzero_si128();
        }
        for (int w = 0; w < W; w++) {
            if (full) b4_weights(T, x + w * bx + off, 1, 4 * bs, &lo[w], &hi[w], &dm[w]);
            else b4_weights(T, x + w * bx + off, 0, row_bytes - off, &lo[w], &hi[w], &dm[w]);
        }
        __m512 dx, mx;
        b4_scales(T, dm, &dx, &mx);
        _Pragma("GCC unroll 4") for (int a = 0; a < A; a++) {
            const b4_act *y = (const b4_act *)(p + a * bp) + (g - pg);
            __m512i r[4];
            for (int w = 0; w < 4; w++) r[w] = zero;
            for (int w = 0; w < W; w++)
                r[w] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, lo[w], _mm512_load_si512(y->lo)), hi[w],
                                           _mm512_load_si512(y->hi));
            __m512i isum = b4_reduce(r, B4_JB(T));
            if (B4_OFF(T))
                isum = _mm512_add_epi32(isum, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)y->off)));
            const __m512 f = _mm512_mul_ps(dx, _mm512_broadcast_f32x4(_mm_loadu_ps(y->d)));
            acc[a] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), f, acc[a]);
            if (B4_MIN(T)) acc[a] = _mm512_fmadd_ps(mx, _mm512_broadcast_f32x4(_mm_loadu_ps(y->s)), acc[a]);
        }
    }
}

// Four rows' registers of 128-bit quarters j to four registers of quarters w: out[j]'s
// quarter w is in[w]'s quarter j.
LP_INLINE void b4_transpose(const __m512i *in, __m512i *out) {
    const __m512i u01 = _mm512_shuffle_i32x4(in[0], in[1], 0x44), u23 = _mm512_shuffle_i32x4(in[2], in[3], 0x44);
    const __m512i v01 = _mm512_shuffle_i32x4(in[0], in[1], 0xEE), v23 = _mm512_shuffle_i32x4(in[2], in[3], 0xEE);
    out[0] = _mm512_shuffle_i32x4(u01, u23, 0x88);
    out[1] = _mm512_shuffle_i32x4(u01, u23, 0xDD);
    out[2] = _mm512_shuffle_i32x4(v01, v23, 0x88);
    out[3] = _mm512_shuffle_i32x4(v01, v23, 0xDD);
}

// The same for four weight rows of a B4_JB type (Q4_0, Q4_1) with the weights transposed:
// the four rows' registers of packed quants, each (j, b) ordered, become four whose lane
// 4w + b holds bytes 4j..4j+3 of row w's block b (a 4 x 4 transpose of 128-bit quarters);
// each activation row then takes its eight VPDPBUSD straight into the blocks' sums (its
// four bytes j broadcast to every row's lanes), with no reduction per activation row.
LP_INLINE void b4t_groups(const int T, const uint8_t *restrict x, size_t bx, int nb, int g0, int g1,
                          const uint8_t *restrict p, size_t bp, int pg, __m512 *acc, const int A) {
    const int bs = B4_BS(T);
    const int row_bytes = nb * bs;
    const __m512i zero = _mm512_setzero_si512(), m4 = _mm512_set1_epi8(0x0f);
    for (int g = g0; g < g1; g++) {
        const int off = g * 4 * bs;
        const int full = off + 4 * bs <= row_bytes;
        lp_prefetch_next_to(x, bx, off, 4 * bs, 4, 4 * bx > B4_L1_GROUP);
        __m512i lo[4], hi[4];
        __m128i dm[4];
        if (T == B4_Q8_0) {  // both halves transposed
            __m512i l[4], h[4];
            for (int w = 0; w < 4; w++) {
                if (full) b4_weights(T, x + w * bx + off, 1, 4 * bs, &l[w], &h[w], &dm[w]);
                else b4_weights(T, x + w * bx + off, 0, row_bytes - off, &l[w], &h[w], &dm[w]);
            }
            b4_transpose(l, lo);
            b4_transpose(h, hi);
        } else {
            __m512i q[4], t[4];
            for (int w = 0; w < 4; w++) {
                __m512i qh;  // (Q5 only)
                if (full) b4_fetch(T, x + w * bx + off, 1, 4 * bs, &q[w], &dm[w], &qh);
                else b4_fetch(T, x + w * bx + off, 0, row_bytes - off, &q[w], &dm[w], &qh);
            }
            b4_transpose(q, t);
            for (int j = 0; j < 4; j++) {
                lo[j] = _mm512_and_si512(t[j], m4);
                hi[j] = _mm512_and_si512(_mm512_srli_epi16(t[j], 4), m4);
            }
        }
        __m512 dx, mx;
        b4_scales(T, dm, &dx, &mx);
        _Pragma("GCC unroll 8") for (int a = 0; a < A; a++) {
            const b4_act *y = (const b4_act *)(p + a * bp) + (g - pg);
            __m512i s0 = zero, s1 = zero;
            for (int j = 0; j < 4; j++) {
                s0 = _mm512_dpbusd_epi32(s0, lo[j], _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)(y->lo + 16 * j))));
                s1 = _mm512_dpbusd_epi32(s1, hi[j], _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)(y->hi + 16 * j))));
            }
            __m512i isum = _mm512_add_epi32(s0, s1);
            if (B4_OFF(T)) isum = _mm512_add_epi32(isum, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)y->off)));
            const __m512 f = _mm512_mul_ps(dx, _mm512_broadcast_f32x4(_mm_loadu_ps(y->d)));
            acc[a] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), f, acc[a]);
            if (B4_MIN(T)) acc[a] = _mm512_fmadd_ps(mx, _mm512_broadcast_f32x4(_mm_loadu_ps(y->s)), acc[a]);
        }
    }
}

// s[a * bs + w] = (acc_0 + acc_1) + (acc_2 + acc_3) of weight row w's lanes in acc[a]
LP_INLINE void b4_store(float *s, size_t bs, const __m512 *acc, const int W, const int A) {
    for (int a = 0; a < A; a++) {
        const __m512 t = _mm512_add_ps(acc[a], _mm512_permute_ps(acc[a], _MM_SHUFFLE(2, 3, 0, 1)));
        const __m512 u = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(1, 0, 3, 2)));
        const __m128 v = _mm512_castps512_ps128(_mm512_maskz_compress_ps(0x1111, u));
        if (W == 1) s[a * bs] = _mm_cvtss_f32(v);
        else _mm_storeu_ps(s + a * bs, v);
    }
}

// The entry points of type T (t: its name, ACT: its activation block)
// Four weight rows of a B4_JB type against A activation rows take the transposed kernel
// from B4T_MIN(T) rows on (same bits either way). Q8_0 from 5: with 2-4 rows, its two
// halves' transposes cost more than the reductions they save (in L2, 4 rows of 4096 columns:
// 2.0 against 1.6 cycles per block and row; 8 rows: 1.15 against 1.53).
#define B4T_MIN(T) ((T) == B4_Q8_0 ? 5 : 2)
#define B4_ROWS_CALL(T, A)                                                      \
    do {                                                                        \
        if (W == 4 && B4_JB(T) && (A) >= B4T_MIN(T))                            \
            b4t_groups(T, x, bx, nb, 0, ng, p, bp, 0, acc, A);                  \
        else                                                                    \
            b4_groups(T, x, bx, nb, 0, ng, p, bp, 0, acc, W, A);                \
    } while (0)
#define B4_ENTRY(T, t)                                                                                         \
    /* vec_dot: one weight row, one activation row as quantized */                                             \
    LP_ALIGNED_CODE void lp_vec_dot_##t##_avx512(int n, float *restrict s, const void *restrict vx,            \
                                                 const void *restrict vy) {                                    \
        B4_VEC_DOT(T, __m512, _mm512_setzero_ps(), b4_groups, b4_store)                                        \
    }                                                                                                          \
    /* W weight rows against nr prepared activation rows, four at a time */                                   \
    LP_INLINE void b4_rows_##t(int n, float *restrict s, size_t bs, const uint8_t *restrict x, size_t bx,      \
                               const uint8_t *restrict p, size_t bp, int nr, const int W) {                    \
        const int nb = n / 32, ng = (nb + 3) / 4;                                                              \
        const int most = W == 4 && B4_JB(T) ? 8 : 4; /* activation rows per pass */                            \
        for (; nr > 0; nr -= most, s += most * bs, p += most * bp) {                                           \
            __m512 acc[8];                                                                                     \
            for (int a = 0; a < 8; a++) acc[a] = _mm512_setzero_ps();                                          \
            switch (nr < most ? nr : most) {                                                                   \
            case 1: B4_ROWS_CALL(T, 1); b4_store(s, bs, acc, W, 1); break;                                     \
            case 2: B4_ROWS_CALL(T, 2); b4_store(s, bs, acc, W, 2); break;                                     \
            case 3: B4_ROWS_CALL(T, 3); b4_store(s, bs, acc, W, 3); break;                                     \
            case 4: B4_ROWS_CALL(T, 4); b4_store(s, bs, acc, W, 4); break;                                     \
            case 5: B4_ROWS_CALL(T, 5); b4_store(s, bs, acc, W, 5); break;                                     \
            case 6: B4_ROWS_CALL(T, 6); b4_store(s, bs, acc, W, 6); break;                                     \
            case 7: B4_ROWS_CALL(T, 7); b4_store(s, bs, acc, W, 7); break;                                     \
            default: B4_ROWS_CALL(T, 8); b4_store(s, bs, acc, W, 8); break;                                    \
            }                                                                                                  \
        }                                                                                                      \
    }                                                                                                          \
    LP_ALIGNED_CODE static void lp_rows_pre_##t(int n, float *restrict s, size_t bs, const void *restrict x,  \
                                                const void *restrict p, size_t bp, int nr) {                  \
        b4_rows_##t(n, s, bs, (const uint8_t *)x, 0, (const uint8_t *)p, bp, nr, 1);                           \
    }                                                                                                          \
    LP_ALIGNED_CODE static void lp_rows_pre4_##t(int n, float *restrict s, size_t bs, const void *restrict x, \
                                                 size_t bx, const void *restrict p, size_t bp, int nr) {      \
        b4_rows_##t(n, s, bs, (const uint8_t *)x, bx, (const uint8_t *)p, bp, nr, 4);                          \
    }
B4_ENTRY(B4_Q4_0, q4_0)
B4_ENTRY(B4_Q4_1, q4_1)
B4_ENTRY(B4_Q5_0, q5_0)
B4_ENTRY(B4_Q5_1, q5_1)
B4_ENTRY(B4_Q8_0, q8_0)
#undef B4_ENTRY

LP_AVX512_END
#endif

// rows_pre.h: the legacy types' share of lp_rows_pre_of and lp_rows_pre_bytes
lp_rows_pre lp_rows_pre_legacy(int type, int isa) {
    lp_rows_pre k = { 0 };
#if LP_X86
    if (isa == LP_ISA_AVX2) {
        const int vnni = lp_gemm_avx2_vnni();
        if (type == LP_Q4_0)
            k = (lp_rows_pre){ lp_prep_q4_0_b4, vnni ? lp_rows_pre_q4_0_avxvnni : lp_rows_pre_q4_0_avx2, 1,
                               vnni ? lp_rows_pre4_q4_0_avxvnni : lp_rows_pre4_q4_0_avx2 };
        if (type == LP_Q4_1)
            k = (lp_rows_pre){ lp_prep_q4_1_b4, vnni ? lp_rows_pre_q4_1_avxvnni : lp_rows_pre_q4_1_avx2, 1,
                               vnni ? lp_rows_pre4_q4_1_avxvnni : lp_rows_pre4_q4_1_avx2 };
        if (type == LP_Q8_0)
            k = (lp_rows_pre){ lp_prep_q8_0_b4, vnni ? lp_rows_pre_q8_0_avxvnni : lp_rows_pre_q8_0_avx2,
                               1, vnni ? lp_rows_pre4_q8_0_avxvnni : lp_rows_pre4_q8_0_avx2 };
        return k;
    }
    if (isa != LP_ISA_AVX512) return k;
    if (type == LP_Q4_0) k = (lp_rows_pre){ lp_prep_q4_0_b4, lp_rows_pre_q4_0, 1, lp_rows_pre4_q4_0 };
    if (type == LP_Q4_1) k = (lp_rows_pre){ lp_prep_q4_1_b4, lp_rows_pre_q4_1, 1, lp_rows_pre4_q4_1 };
    if (type == LP_Q5_0) k = (lp_rows_pre){ lp_prep_q5_0_b4, lp_rows_pre_q5_0, 1, lp_rows_pre4_q5_0 };
    if (type == LP_Q5_1) k = (lp_rows_pre){ lp_prep_q5_1_b4, lp_rows_pre_q5_1, 1, lp_rows_pre4_q5_1 };
    if (type == LP_Q8_0) k = (lp_rows_pre){ lp_prep_q8_0_b4, lp_rows_pre_q8_0, 1, lp_rows_pre4_q8_0 };
#else
    (void)type, (void)isa;
#endif
    return k;
}

int64_t lp_rows_pre_legacy_bytes(int64_t n) { return (n / 32 + 3) / 4 * (int64_t)sizeof(b4_act); }
