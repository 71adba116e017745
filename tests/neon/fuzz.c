// fuzz.c — every kernel fed NaN, +inf, -inf, huge finite values (whose fp16 scales
// overflow to inf), denormals, tiny values and ordinary ones, on every ISA the CPU
// has: the reference, AVX2 and AVX-512 natively; NEON when cross-compiled for
// aarch64 and run under qemu-user. Built with AddressSanitizer and UBSan (see
// csrc/build.py --asan, `make asan`), any read or write out of bounds, any
// out-of-range float-to-int conversion or other undefined behaviour stops it; a
// hang is caught by the caller's timeout. It also checks what the engine relies on:
// activations holding NaN or inf give non-finite products (so damaged weights show
// up as non-finite logits), the SIMD quantizers agree with the reference, and the
// batched dot products equal the single ones. Prints "N passed, M failed". The forward
// pass and the thread pool have their part in fuzz_model.c.
//
//   gcc -O1 -g -fsanitize=address,undefined,float-cast-overflow -Icsrc -Itests/neon csrc/*/*.c \
//       tests/neon/fuzz.c tests/neon/fuzz_model.c -lm -pthread
//   ./a.out [ISA...]      (ref avx2 avx512 neon dotprod i8mm; none: every ISA the CPU has)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz.h"

#define RNG_SEED 0x2545f4914f6cdd1dull
#include "rng.h"

static int passed, failed;
void check(int ok, const char *what, const char *isa, const char *type, int pattern) {
    if (ok) { passed++; return; }
    failed++;
    printf("FAIL %s [%s %s, input pattern %d]\n", what, isa, type, pattern);
}

const char *isa_name(int isa) {
    static const char *names[LP_ISA_COUNT] = { "ref", "avx2", "neon", "avx512", "dotprod", "i8mm" };
    return isa >= 0 && isa < LP_ISA_COUNT && names[isa] ? names[isa] : "?";
}

// ---------------------------------------------------------------------------
// Inputs


static float special(int pattern) {
    switch (pattern) {
    case P_ALL_NAN: case P_SOME_NAN: return NAN;
    case P_SOME_INF: return rnd() & 1 ? INFINITY : -INFINITY;
    case P_HUGE: return (rnd() & 1 ? 1.0f : -1.0f) * (1e30f + 3e38f * (float)(rnd() % 1000) / 1000.0f);
    case P_DENORMAL: return rnd_unit() * 1e-40f;
    case P_TINY: return rnd_unit() * 1e-37f;
    case P_ALL_NEG_INF: return -INFINITY;
    case P_ZERO: return 0.0f;
    default: {
        const float v[] = { NAN, INFINITY, -INFINITY, 3e38f, -1e30f, 1e-45f, -1e-40f, 0.0f, -0.0f, 65504.0f };
        return v[rnd() % 10];
    }
    }
}

// n floats of the pattern: all special, a special value now and then, or plain.
void fill(float *x, int64_t n, int pattern) {
    const int all = pattern == P_ALL_NAN || pattern == P_ALL_NEG_INF || pattern == P_ZERO ||
                    pattern == P_DENORMAL || pattern == P_TINY;
    for (int64_t i = 0; i < n; i++)
        x[i] = pattern == P_PLAIN ? rnd_unit() * 3 : all || rnd() % 29 == 0 ? special(pattern) : rnd_unit();
}

static int is_nonfinite_block(const float *x, int n) {
    for (int j = 0; j < n; j++) if (!isfinite(x[j])) return 1;
    return 0;
}

// Weights of type t: random bytes (so any fp16 scale, NaN and inf included, now and
// then), their scales set from the pattern (plain ones below scale); float types
// hold the pattern's values (plain ones below 3 * scale / 0.05).
void fill_weights(int t, uint8_t *w, int64_t n, int pattern, float scale) {
    const lp_type_traits *tr = lp_traits(t);
    if (t == LP_F32 || t == LP_F16 || t == LP_BF16) {
        float *x = malloc(sizeof(float) * (size_t)n);
        fill(x, n, pattern);
        for (int64_t i = 0; i < n; i++) {
            if (pattern == P_PLAIN) x[i] *= scale / 0.05f;
            if (t == LP_F32) ((float *)w)[i] = x[i];
            else if (t == LP_F16) ((lp_half *)w)[i] = lp_float_to_half(x[i]);
            else ((uint16_t *)w)[i] = (uint16_t)(lp_float_to_bits(x[i]) >> 16);
        }
        free(x);
        return;
    }
    const int64_t nb = n / tr->blck_size;
    for (int64_t i = 0; i < nb * tr->type_size; i++) w[i] = (uint8_t)rnd();
    if (pattern == P_MIXED) return;  // the random bytes as they are
    for (int64_t b = 0; b < nb; b++)
        for (int k = 0; k < tr->n_half; k++) {
            const float v = pattern == P_PLAIN || rnd() % 5 ? rnd_unit() * scale : special(pattern);
            const lp_half h = lp_float_to_half(v);
            memcpy(w + b * tr->type_size + tr->half_off[k], &h, sizeof(h));
        }
}

// ---------------------------------------------------------------------------
// Activation quantizers: every ISA writes the reference's scales; quants stay in
// [-127, 127], Q8_K group sums match; a block with NaN or inf has a NaN scale.

static void check_quantizer(int act, int isa, int pattern) {
    const lp_type_traits *a = lp_traits(act);
    if (!a->from_float[isa]) return;
    const int B = a->blck_size, n = 4 * QK_K, nb = n / B;
    float *x = malloc(sizeof(float) * n), *back = malloc(sizeof(float) * n);
    uint8_t *q = malloc((size_t)nb * a->type_size), *qr = malloc((size_t)nb * a->type_size);
    fill(x, n, pattern);
    a->from_float[isa](x, q, n);
    a->from_float[LP_ISA_REF](x, qr, n);
    a->to_float(q, back, n);
    int ok = 1;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = q + (size_t)b * a->type_size, *ref = qr + (size_t)b * a->type_size;
        const int head = act == LP_Q8_0 ? 2 : 4;  // bytes before the quants: d (and s)
        const int8_t *qs = (const int8_t *)(blk + head), *rs = (const int8_t *)(ref + head);
        const int scale_bytes = act == LP_Q8_K ? 4 : 2;  // d (Q8_1's s follows the quants, which may differ)
        for (int j = 0; j < B; j++) ok &= qs[j] != -128 && abs(qs[j] - rs[j]) <= 1;
        ok &= memcmp(blk, ref, scale_bytes) == 0;
        if (is_nonfinite_block(x + b * B, B))
            for (int j = 0; j < B; j++) ok &= isnan(back[b * B + j]);
        if (act == LP_Q8_K) {
            const block_q8_K *k = (const block_q8_K *)blk;
            for (int g = 0; g < QK_K / 16; g++) {
                int s = 0;
                for (int j = 0; j < 16; j++) s += k->qs[16 * g + j];
                ok &= s == k->bsums[g];
            }
        }
    }
    check(ok, "quantize", isa_name(isa), a->name, pattern);
    free(x); free(back); free(q); free(qr);
}

#define LP_TYPE_ID(T, t) LP_##T,

// ---------------------------------------------------------------------------
// Weight quantizers (quants/quantize*.c): each type's quantizer on the pattern's
// values (the K-quants' searches run plain or AVX2 as the ISA set says), then lp_quantize_rows, which must refuse exactly the
// rows holding NaN or inf, from float rows and from random quantized rows of every
// weight type (read as floats first).

static void check_weight_quantizer(int t, int isa, int pattern) {
    enum { ROWS = 3, COLS = 512 };
    const lp_type_traits *tr = lp_traits(t);
    const char *name = tr->name;
    float *x = malloc(sizeof(float) * ROWS * COLS), *work = malloc(sizeof(float) * 2 * COLS);
    uint8_t *y = malloc((size_t)(ROWS * COLS / tr->blck_size * tr->type_size));
    fill(x, ROWS * COLS, pattern);
    tr->quantize(x, y, ROWS * COLS);
    int nonfinite = -1;
    for (int r = ROWS - 1; r >= 0; r--) if (is_nonfinite_block(x + r * COLS, COLS)) nonfinite = r;
    int64_t bad = 0;
    const int rc = lp_quantize_rows(t, LP_F32, x, y, ROWS, COLS, work, 2, &bad);
    // the first refused row: the first with NaN or inf, unless an earlier one overflows fp16
    check(nonfinite >= 0 ? (rc == LP_ENONFINITE && bad == nonfinite) || (rc == LP_EOVERFLOW && bad >= 0 && bad < nonfinite)
                         : rc == LP_OK || (rc == LP_EOVERFLOW && bad >= 0 && bad < ROWS),
          "weight quantizer refusals", isa_name(isa), name, pattern);
    const int srcs[] = { LP_FOR_WEIGHT_TYPES(LP_TYPE_ID) };
    for (size_t i = 0; i < sizeof(srcs) / sizeof(srcs[0]); i++) {
        const lp_type_traits *st = lp_traits(srcs[i]);
        uint8_t *w = malloc((size_t)(ROWS * COLS / st->blck_size * st->type_size));
        fill_weights(srcs[i], w, ROWS * COLS, pattern, 1.0f);
        const int rc2 = lp_quantize_rows(t, srcs[i], w, y, ROWS, COLS, work, 2, &bad);
        check(rc2 == LP_OK || rc2 == LP_EOVERFLOW || (rc2 == LP_ENONFINITE && bad >= 0 && bad < ROWS),
              "weight quantizer from a quantized source", isa_name(isa), name, pattern);
        free(w);
    }
    free(x);
    free(work);
    free(y);
}

// ---------------------------------------------------------------------------
// Dot products: vec_dot, vec_dot_4acts, vec_dot_rows and vec_dot_4weights on weights and activations of the
// pattern. Non-finite activations give a NaN (quantized) or non-finite (float) dot;
// the batched kernels give vec_dot's result, bit for bit (any NaN for a NaN).

static int same_float(float a, float b) { return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof(a)) == 0; }

static void check_dots(int t, int isa, int n, int pattern) {
    const lp_type_traits *tr = lp_traits(t);
    if (!tr->vec_dot[isa] || n % tr->blck_size) return;
    const lp_type_traits *a = lp_traits(tr->vec_dot_type);
    const size_t wbytes = (size_t)n / tr->blck_size * tr->type_size;
    const size_t abytes = (size_t)n / a->blck_size * a->type_size;
    uint8_t *w = malloc(4 * wbytes), *act = malloc(4 * abytes);
    float *x = malloc(sizeof(float) * n);
    int nonfinite[4];
    for (int r = 0; r < 4; r++) fill_weights(t, w + r * wbytes, n, r == 0 ? P_PLAIN : pattern, 0.05f);
    for (int j = 0; j < 4; j++) {
        fill(x, n, j == 0 ? P_PLAIN : pattern);
        nonfinite[j] = is_nonfinite_block(x, n);
        if (tr->vec_dot_type == LP_F32) memcpy(act + j * abytes, x, abytes);
        else a->from_float[isa] ? a->from_float[isa](x, act + j * abytes, n)
                                : a->from_float[LP_ISA_REF](x, act + j * abytes, n);
    }
    float one[4][4];  // [weight row][activation row]
    int ok = 1;
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < 4; j++) {
            tr->vec_dot[isa](n, &one[r][j], w + r * wbytes, act + j * abytes);
            if (nonfinite[j]) ok &= tr->vec_dot_type == LP_F32 ? !isfinite(one[r][j]) : isnan(one[r][j]);
        }
    check(ok, "vec_dot: non-finite activations give a non-finite dot", isa_name(isa), tr->name, pattern);
    if (tr->vec_dot_4acts[isa]) {
        ok = 1;
        for (int r = 0; r < 4; r++) {
            float four[8];
            tr->vec_dot_4acts[isa](n, four, 2, w + r * wbytes, act, abytes);
            for (int j = 0; j < 4; j++) ok &= same_float(four[2 * j], one[r][j]);
        }
        check(ok, "vec_dot_4acts == vec_dot", isa_name(isa), tr->name, pattern);
    }
    if (tr->vec_dot_rows[isa]) {  // 1..4 activation rows (the buffers hold exactly four)
        ok = 1;
        for (int nr = 1; nr <= 4; nr++)
            for (int r = 0; r < 4; r++) {
                float rows[8];
                tr->vec_dot_rows[isa](n, rows, 2, w + r * wbytes, act, abytes, nr);
                for (int j = 0; j < nr; j++) ok &= same_float(rows[2 * j], one[r][j]);
            }
        check(ok, "vec_dot_rows == vec_dot", isa_name(isa), tr->name, pattern);
    }
    if (tr->vec_dot_4weights[isa]) {
        ok = 1;
        for (int j = 0; j < 4; j++) {
            float four[4];
            tr->vec_dot_4weights[isa](n, four, w, wbytes, act + j * abytes);
            for (int r = 0; r < 4; r++) ok &= same_float(four[r], one[r][j]);
        }
        check(ok, "vec_dot_4weights == vec_dot", isa_name(isa), tr->name, pattern);
    }
    free(w); free(act); free(x);
}

// The whole product (quantize, threads, tiles, the batched product for n >= 16):
// a row of x holding NaN or inf gives a row of non-finite y.
static void check_matmul(int t, int isa, int n, int pattern) {
    const lp_type_traits *tr = lp_traits(t);
    const int rows = 37, cols = 512;
    uint8_t *w = malloc((size_t)rows * cols / tr->blck_size * tr->type_size);
    fill_weights(t, w, (int64_t)rows * cols, pattern == P_SOME_NAN ? P_PLAIN : pattern, 0.05f);
    float *x = malloc(sizeof(float) * n * cols), *y = malloc(sizeof(float) * n * rows);
    for (int i = 0; i < n; i++) fill(x + (size_t)i * cols, cols, i % 3 ? P_PLAIN : pattern);
    const int64_t ws = lp_matmul_work_size(t, cols, n, 2);
    void *work = malloc(ws > 0 ? (size_t)ws : 1);
    lp_set_isa(isa);
    int ok = lp_matmul(t, w, rows, cols, x, n, y, work, 2) == LP_OK;
    for (int i = 0; i < n; i++)
        if (is_nonfinite_block(x + (size_t)i * cols, cols))
            for (int r = 0; r < rows; r++) ok &= !isfinite(y[(size_t)i * rows + r]);
    check(ok, n >= LP_GEMM_MIN ? "matmul (batched)" : "matmul", isa_name(isa), tr->name, pattern);
    free(w); free(x); free(y); free(work);
}

// ---------------------------------------------------------------------------
// Row operations: rmsnorm, rope with odd frequencies and rotation counts, softmax
// (NaN, inf, all -inf, empty), SwiGLU. Buffers are exactly as long as the rows.

static void check_ops(int isa, int pattern) {
    lp_set_isa(isa);
    const int n = 3, dim = 96;
    float *x = malloc(sizeof(float) * n * dim), *out = malloc(sizeof(float) * n * dim), *w = malloc(sizeof(float) * dim);
    fill(x, n * dim, pattern);
    fill(w, dim, pattern == P_ALL_NAN ? P_PLAIN : pattern);
    lp_rmsnorm(out, x, w, n, dim, 1e-5f);
    lp_rmsnorm(out, x, w, n, dim, NAN);
    int ok = 1;
    if (pattern == P_ALL_NAN)
        for (int i = 0; i < n * dim; i++) ok &= isnan(out[i]);
    const float bases[] = { 10000.0f, 1e-45f, 0.0f, -1.0f, NAN, INFINITY, 3e38f };
    const int rots[] = { 32, 31, 33, 0, -2, 1 };
    for (size_t b = 0; b < sizeof(bases) / sizeof(bases[0]); b++)
        for (size_t r = 0; r < sizeof(rots) / sizeof(rots[0]); r++) {
            float *q = malloc(sizeof(float) * 2 * 3 * 32);  // 2 rows, 3 heads of 32
            fill(q, 2 * 3 * 32, pattern);
            const int32_t pos[2] = { 1000000, 2147483647 };
            lp_rope(q, 2, pos, 3, 32, rots[r], bases[b], b % 2 ? NAN : 0.5f);
            free(q);
        }
    const int lens[] = { 0, 1, 7, 8, 33, 1000 };
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        const int len = lens[k];
        float *s = malloc(sizeof(float) * (len ? len : 1)), mx;
        fill(s, len, pattern);
        const int had_nan = len && pattern == P_SOME_NAN && is_nonfinite_block(s, len);
        lp_softmax(s, len);
        if (had_nan) ok &= isnan(s[0]);  // one NaN score: every probability is NaN
        fill(s, len, pattern);
        lp_softmax_exps(s, len, &mx);
        float *up = malloc(sizeof(float) * (len ? len : 1));
        fill(s, len, pattern);
        fill(up, len, P_PLAIN);
        lp_swiglu(s, up, len);
        free(s); free(up);
    }
    check(ok, "rmsnorm, rope, softmax, swiglu", isa_name(isa), "f32", pattern);
    free(x); free(out); free(w);
}


// Arguments: the ISAs to fuzz (ref, avx2, avx512, neon, dotprod, i8mm); none: every one the CPU has.
static int wanted(int isa, int argc, char **argv) {
    if (!lp_isa_available(isa)) return 0;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], isa_name(isa)) == 0) return 1;
    return argc < 2;
}


int main(int argc, char **argv) {
    const int types[] = { LP_FOR_WEIGHT_TYPES(LP_TYPE_ID) };  // csrc/type_list.h
    const int acts[] = { LP_FOR_ACT_TYPES(LP_TYPE_ID) };
    const int nt = sizeof(types) / sizeof(types[0]);
    const int na = sizeof(acts) / sizeof(acts[0]);
    const int wtypes[] = { LP_FOR_QUANT_TYPES(LP_TYPE_ID) LP_F16, LP_BF16 };
    for (int isa = 0; isa < LP_ISA_COUNT; isa++) {
        if (!wanted(isa, argc, argv)) continue;
        printf("fuzzing the %s kernels\n", isa_name(isa));
        lp_set_isa(isa);  // the weight quantizers' searches follow it (quantize_k.c)
        for (int p = 0; p < P_COUNT; p++)
            for (size_t i = 0; i < sizeof(wtypes) / sizeof(wtypes[0]); i++) check_weight_quantizer(wtypes[i], isa, p);
        for (int p = 0; p < P_COUNT; p++) {
            for (int i = 0; i < na; i++) check_quantizer(acts[i], isa, p);
            for (int i = 0; i < nt; i++) {
                check_dots(types[i], isa, 512, p);
                check_dots(types[i], isa, 96, p);  // an odd number of blocks (types with 32-blocks)
                if (p % 3 == 0 || p == P_SOME_NAN) {
                    check_matmul(types[i], isa, 3, p);
                    check_matmul(types[i], isa, 13, p);  // the row dots' 8-row pass, then 5 rows
                    check_matmul(types[i], isa, 20, p);
                }
            }
            check_ops(isa, p);
        }
        check_models(isa);
    }
    check_pool();
    lp_set_isa(lp_best_isa());
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
