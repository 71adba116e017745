// rows_pre.h — several activation rows against one weight row, from activation rows
// prepared once per product (legacy_groups.c: the legacy types on AVX-512, Q4_0, Q4_1 and
// Q8_0 on AVX2 and AVX-VNNI; k_q4_q6.c: Q4_K, Q5_K and Q6_K on AVX-512, AVX2 and AVX-VNNI;
// rows_pre.c: which of them serve a type on an ISA).
//
// Decoding several sequences dots every weight row with each sequence's activation row;
// what a kernel does per activation row then sets the speed. A prepared row has the
// activation side's work done once per product: the quants in the order of the kernel's
// lanes, the scales and (Q8_1) sums as floats, and the sums that take an offset back out
// (the legacy types' -8, -16 or -128 times a block's activations). Each row goes through the same
// operations whatever else shares the call, so its result is the one-row dot's bit for bit.
#pragma once
#include "lp.h"

// The kernels' entry points start on a 64-byte line, so where their loops fall in the
// lines (which moved a Q4_1 vec_dot streaming 6144-column rows by 15% on Zen 5) does not
// depend on the code before them in their file.
#define LP_ALIGNED_CODE __attribute__((aligned(64)))

// out = activation rows y (rows of n quants in the type's dot-product format, by bytes
// apart), prepared: lp_rows_pre_bytes(type, n) per row, rows rounded up to a multiple of 4
typedef void (*lp_rows_prep_fn)(const void *restrict y, size_t by, int rows, void *restrict out, int n);
// s[a * bs] = dot(weight row x, prepared activation row a at p + a * bp), a < nr (any nr >= 1)
typedef void (*lp_rows_pre_fn)(int n, float *restrict s, size_t bs, const void *restrict x,
                               const void *restrict p, size_t bp, int nr);
// the same for four weight rows, x + w * bx (w < 4): to s[a * bs + w]
typedef void (*lp_rows_pre4_fn)(int n, float *restrict s, size_t bs, const void *restrict x, size_t bx,
                                const void *restrict p, size_t bp, int nr);
typedef struct {
    lp_rows_prep_fn prep;  // NULL: no such kernel for this type, ISA and row length
    lp_rows_pre_fn dot;
    int min_rows;          // used from this many activation rows on
    lp_rows_pre4_fn dot4;  // NULL: one weight row at a time
} lp_rows_pre;

// rows_pre.c: which kernels (if any) take a type's products on an ISA, for rows of n columns
lp_rows_pre lp_rows_pre_of(int type, int isa, int64_t n);
// Bytes of one prepared row of n columns for weight type `type` on any ISA (0: none); the
// row dots take row a at p + a * bp with bp this size
int64_t lp_rows_pre_bytes(int type, int64_t n);

// legacy_groups.c: the legacy types' kernels on an ISA ({ 0 }: none), and the bytes of one of
// their prepared rows of n columns (n a multiple of 32)
lp_rows_pre lp_rows_pre_legacy(int type, int isa);
int64_t lp_rows_pre_legacy_bytes(int64_t n);

// A prepared Q8_K block (Q4_K, Q5_K, Q6_K): the quants first and 320 bytes in all, so in a row
// that starts on a 64-byte line (matmul.c lines them up) no load of 64 quants spans two lines.
typedef struct {
    int8_t qs[QK_K];
    union {
        float fbs[8];       // Q4_K, Q5_K: yd * the sum of sub-block g's activations (k4_bsum_factors_avx2)
        int16_t nbs[16];    // Q6_K: -8 * the sum of group g's 16 activations (bsums)
    };
    float d;
    uint8_t pad[28];
} k_pre_q8_K;

// k_q4_q6_x86.h: Q4_K, Q5_K, Q6_K on AVX2 and AVX-VNNI (nr any)
void lp_prep_q8_K_avx2(const void *restrict y, size_t by, int rows, void *restrict out, int n);
void lp_prep_q6_K_avx2(const void *restrict y, size_t by, int rows, void *restrict out, int n);  // (AVX-512's too)
void lp_rows_pre_q4_K_avx2(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict p,
                           size_t bp, int nr);
void lp_rows_pre_q5_K_avx2(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict p,
                           size_t bp, int nr);
void lp_rows_pre_q6_K_avx2(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict p,
                           size_t bp, int nr);
void lp_rows_pre_q4_K_avxvnni(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict p,
                              size_t bp, int nr);
void lp_rows_pre_q5_K_avxvnni(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict p,
                              size_t bp, int nr);
void lp_rows_pre_q6_K_avxvnni(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict p,
                              size_t bp, int nr);
// k_q4_q6_avx512.h: Q4_K, Q5_K (vec_dot's arithmetic; one activation row and up: nr = 1..8)
void lp_prep_q8_K_avx512(const void *restrict y, size_t by, int rows, void *restrict out, int n);
void lp_rows_pre_q4_K_avx512(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict p,
                             size_t bp, int nr);
void lp_rows_pre_q5_K_avx512(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict p,
                             size_t bp, int nr);
// Q6_K (vec_dot's arithmetic; nr = 1..8)
void lp_rows_pre_q6_K_avx512(int n, float *restrict s, size_t bs, const void *restrict x, const void *restrict p,
                             size_t bp, int nr);
