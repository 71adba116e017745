// harness.c — checks every SIMD kernel against the plain-C reference on random
// data, for whichever SIMD set this build has (NEON when cross-compiled for
// aarch64 and run under qemu-user; AVX2 on x86-64). Prints one line per check and
// a closing "N passed, M failed" line; exits non-zero on any failure.
//
//   aarch64-linux-gnu-gcc -O2 -static -Icsrc csrc/*/*.c tests/neon/harness.c -lm -pthread
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "lp.h"

#define RNG_SEED 0x9e3779b97f4a7c15ull
#include "rng.h"

static int passed, failed;
static void report(int ok, const char *what, const char *type, double got, double want, double tol) {
    if (ok) passed++; else failed++;
    printf("%s %-22s %-5s got %.9g want %.9g (tol %.3g)\n", ok ? "ok  " : "FAIL", what, type, got, want, tol);
}

// Random weights of type t: random bytes with finite fp16 scales; random values for float types.
static void random_weights(int t, uint8_t *w, int n) {
    const lp_type_traits *tr = lp_traits(t);
    const int nb = n / tr->blck_size;
    if (t == LP_F32) { for (int i = 0; i < n; i++) ((float *)w)[i] = rnd_unit(); return; }
    if (t == LP_F16) { for (int i = 0; i < n; i++) ((lp_half *)w)[i] = lp_float_to_half(rnd_unit()); return; }
    if (t == LP_BF16) { for (int i = 0; i < n; i++) ((uint16_t *)w)[i] = (uint16_t)(lp_float_to_bits(rnd_unit()) >> 16); return; }
    for (int i = 0; i < nb * tr->type_size; i++) w[i] = (uint8_t)rnd();
    for (int b = 0; b < nb; b++)
        for (int k = 0; k < tr->n_half; k++) {
            const lp_half h = lp_float_to_half(rnd_unit() * 0.05f);
            memcpy(w + (size_t)b * tr->type_size + tr->half_off[k], &h, sizeof(h));
        }
}

// Sum of |w_i * a_i| over dequantized values: the scale of float summation noise.
static double abs_dot(int t, const uint8_t *w, int act_t, const void *act, int n, float *tmp_w, float *tmp_a) {
    lp_traits(t)->to_float(w, tmp_w, n);
    if (act_t == LP_F32) memcpy(tmp_a, act, sizeof(float) * n);
    else lp_traits(act_t)->to_float(act, tmp_a, n);
    double s = 0;
    for (int i = 0; i < n; i++) s += fabs((double)tmp_w[i] * tmp_a[i]);
    return s;
}

// The SIMD quantizer against the reference: same scales, quants within one step.
static void check_quantizer(int act_t, int isa, const float *x, int n) {
    const lp_type_traits *a = lp_traits(act_t);
    if (!a->from_float[isa]) return;
    const size_t bytes = (size_t)n / a->blck_size * a->type_size;
    uint8_t *qr = malloc(bytes), *qs = malloc(bytes);
    float *fr = malloc(sizeof(float) * n), *fs = malloc(sizeof(float) * n);
    a->from_float[LP_ISA_REF](x, qr, n);
    a->from_float[isa](x, qs, n);
    a->to_float(qr, fr, n);
    a->to_float(qs, fs, n);
    double worst = 0, step = 0;
    for (int b = 0; b < n / a->blck_size; b++) {
        float amax = 0;
        for (int j = 0; j < a->blck_size; j++) amax = fmaxf(amax, fabsf(x[b * a->blck_size + j]));
        const double d = amax / 127.0 * 1.001;  // one quantization step, with fp16 rounding of the scale
        for (int j = 0; j < a->blck_size; j++) {
            const int i = b * a->blck_size + j;
            const double diff = fabs((double)fr[i] - fs[i]);
            if (diff / (d > 0 ? d : 1) > worst / (step > 0 ? step : 1)) { worst = diff; step = d; }
        }
    }
    if (act_t == LP_Q8_K) {  // group sums must match the stored quants
        const block_q8_K *y = (const block_q8_K *)qs;
        for (int b = 0; b < n / QK_K; b++)
            for (int g = 0; g < QK_K / 16; g++) {
                int s = 0;
                for (int j = 0; j < 16; j++) s += y[b].qs[16 * g + j];
                if (s != y[b].bsums[g]) worst = step = 1e9;
            }
    }
    report(worst <= step, "quantize", a->name, worst, 0.0, step);
    free(qr); free(qs); free(fr); free(fs);
}

static void check_dot(int t, int isa, int n, int seeds) {
    const lp_type_traits *tr = lp_traits(t);
    if (!tr->vec_dot[isa]) { report(0, "vec_dot missing", tr->name, 0, 0, 0); return; }
    const lp_type_traits *a = lp_traits(tr->vec_dot_type);
    const size_t wbytes = (size_t)n / tr->blck_size * tr->type_size;
    const size_t abytes = (size_t)n / a->blck_size * a->type_size;
    uint8_t *w = malloc(wbytes);
    uint8_t *act = malloc(abytes);
    float *x = malloc(sizeof(float) * n), *tw = malloc(sizeof(float) * n), *ta = malloc(sizeof(float) * n);
    double worst_rel = 0, got_w = 0, want_w = 0, tol_w = 0;
    for (int s = 0; s < seeds; s++) {
        random_weights(t, w, n);
        for (int i = 0; i < n; i++) x[i] = rnd_unit() * (1 + (i % 7));
        if (tr->vec_dot_type == LP_F32) memcpy(act, x, abytes);
        else a->from_float[LP_ISA_REF](x, act, n);
        float ref, simd;
        tr->vec_dot[LP_ISA_REF](n, &ref, w, act);
        tr->vec_dot[isa](n, &simd, w, act);
        const double tol = 1e-5 * abs_dot(t, w, tr->vec_dot_type, act, n, tw, ta) + 1e-30;
        const double rel = fabs((double)ref - simd) / tol;
        if (!(rel <= worst_rel)) { worst_rel = rel; got_w = simd; want_w = ref; tol_w = tol; }
        if (s == 0 && tr->vec_dot_type != LP_F32) check_quantizer(tr->vec_dot_type, isa, x, n);
    }
    report(worst_rel <= 1.0, "vec_dot vs reference", tr->name, got_w, want_w, tol_w);
    free(w); free(act); free(x); free(tw); free(ta);
}

// vec_dot_4acts (one weight row, four activation rows) must give vec_dot's results exactly.
static void check_4acts(int t, int isa, int n) {
    const lp_type_traits *tr = lp_traits(t);
    if (!tr->vec_dot_4acts[isa]) return;  // matmul makes four vec_dot calls: the same by construction
    const lp_type_traits *a = lp_traits(tr->vec_dot_type);
    const size_t wbytes = (size_t)n / tr->blck_size * tr->type_size;
    const size_t abytes = (size_t)n / a->blck_size * a->type_size;
    uint8_t *w = malloc(wbytes), *act = malloc(4 * abytes);
    float *x = malloc(sizeof(float) * n);
    int same = 1;
    double got_w = 0, want_w = 0;
    for (int s = 0; s < 10; s++) {
        random_weights(t, w, n);
        for (int j = 0; j < 4; j++) {
            for (int i = 0; i < n; i++) x[i] = rnd_unit() * (1 + ((i + j) % 5));
            if (tr->vec_dot_type == LP_F32) memcpy(act + j * abytes, x, abytes);
            else a->from_float[LP_ISA_REF](x, act + j * abytes, n);
        }
        float four[8];
        tr->vec_dot_4acts[isa](n, four, 2, w, act, abytes);  // results at stride 2
        for (int j = 0; j < 4; j++) {
            float one;
            tr->vec_dot[isa](n, &one, w, act + j * abytes);
            if (memcmp(&one, &four[2 * j], sizeof(float)) != 0 && same) { same = 0; got_w = four[2 * j]; want_w = one; }
        }
    }
    report(same, "vec_dot_4acts == vec_dot", tr->name, got_w, want_w, 0);
    free(w); free(act); free(x);
}

// vec_dot_4weights (four weight rows, one activation row) must give vec_dot's results exactly.
static void check_4weights(int t, int isa, int n) {
    const lp_type_traits *tr = lp_traits(t);
    if (!tr->vec_dot_4weights[isa]) return;  // matmul makes a vec_dot call per row
    const lp_type_traits *a = lp_traits(tr->vec_dot_type);
    const size_t wbytes = (size_t)n / tr->blck_size * tr->type_size;
    const size_t abytes = (size_t)n / a->blck_size * a->type_size;
    uint8_t *w = malloc(4 * wbytes), *act = malloc(abytes);
    float *x = malloc(sizeof(float) * n);
    int same = 1;
    double got_w = 0, want_w = 0;
    for (int s = 0; s < 10; s++) {
        for (int r = 0; r < 4; r++) random_weights(t, w + r * wbytes, n);
        for (int i = 0; i < n; i++) x[i] = rnd_unit() * (1 + (i % 5));
        a->from_float[LP_ISA_REF](x, act, n);
        float four[4];
        tr->vec_dot_4weights[isa](n, four, w, wbytes, act);
        for (int r = 0; r < 4; r++) {
            float one;
            tr->vec_dot[isa](n, &one, w + r * wbytes, act);
            if (memcmp(&one, &four[r], sizeof(float)) != 0 && same) { same = 0; got_w = four[r]; want_w = one; }
        }
    }
    report(same, "vec_dot_4weights == vec_dot", tr->name, got_w, want_w, 0);
    free(w); free(act); free(x);
}

// The whole matmul path (quantize, thread pool, tiles) with the SIMD kernels
// against the same with the reference ones.
static void check_matmul(int t, int isa) {
    const lp_type_traits *tr = lp_traits(t);
    const int rows = 37, cols = 512, n = 5;
    uint8_t *w = malloc((size_t)rows * cols / tr->blck_size * tr->type_size);
    random_weights(t, w, rows * cols);
    float *x = malloc(sizeof(float) * n * cols), *y0 = malloc(sizeof(float) * n * rows),
          *y1 = malloc(sizeof(float) * n * rows);
    for (int i = 0; i < n * cols; i++) x[i] = rnd_unit();
    const int64_t ws = lp_matmul_work_size(t, cols, n, 2);
    void *work = malloc(ws > 0 ? ws : 1);
    lp_set_isa(LP_ISA_REF);
    lp_matmul(t, w, rows, cols, x, n, y0, work, 1);
    lp_set_isa(isa);
    lp_matmul(t, w, rows, cols, x, n, y1, work, 2);
    double worst = 0, scale = 1e-30;
    for (int i = 0; i < n * rows; i++) {
        worst = fmax(worst, fabs((double)y0[i] - y1[i]));
        scale = fmax(scale, fabs((double)y0[i]));
    }
    // the SIMD quantizer may round a near-tie the other way: one step of one activation
    report(worst <= 1e-3 * scale, "matmul 2 threads", tr->name, worst, 0.0, 1e-3 * scale);
    free(w); free(x); free(y0); free(y1); free(work);
}

// The batched product (n >= LP_GEMM_MIN activation rows) against the same rows one at a time
// (row dots): the same integer products, summed in another float order, so within 1e-5 of
// each row's largest magnitude, and not the row dots' exact bits (it ran). Partial tiles of
// weight and activation rows, odd block counts, 1 and 3 threads.
static void check_batched(int t, int isa) {
    const lp_type_traits *tr = lp_traits(t);
    if (!tr->to_s8[LP_ISA_REF]) return;
    const int shapes[][3] = { { 37, 512, 16 }, { 61, 768, 45 }, { 5, 256, 33 }, { 64, 1024, 67 }, { 19, 416, 24 } };
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        const int rows = shapes[k][0], cols = shapes[k][1], n = shapes[k][2];
        if (cols % tr->blck_size) continue;
        uint8_t *w = malloc((size_t)rows * cols / tr->blck_size * tr->type_size);
        random_weights(t, w, rows * cols);
        float *x = malloc(sizeof(float) * n * cols), *y = malloc(sizeof(float) * n * rows),
              *one = malloc(sizeof(float) * n * rows);
        for (int i = 0; i < n * cols; i++) x[i] = rnd_unit() * (1 + i / cols % 7);
        const int64_t ws = lp_matmul_work_size(t, cols, n, 3);
        void *work = malloc(ws > 0 ? ws : 1);
        lp_set_isa(isa);
        const int batched = lp_gemm_use(tr, isa, cols, n);
        for (int i = 0; i < n; i++) lp_matmul(t, w, rows, cols, x + (size_t)i * cols, 1, one + (size_t)i * rows, work, 1);
        double worst = 0;
        int same_bits = 1;
        for (int threads = 1; threads <= 3; threads += 2) {
            lp_matmul(t, w, rows, cols, x, n, y, work, threads);
            for (int i = 0; i < n; i++) {
                double scale = 1e-30;
                for (int r = 0; r < rows; r++) scale = fmax(scale, fabs((double)one[i * rows + r]));
                for (int r = 0; r < rows; r++) {
                    const double err = fabs((double)y[i * rows + r] - one[i * rows + r]) / (1e-5 * scale);
                    worst = err > worst || err != err ? err : worst;
                    same_bits &= memcmp(&y[i * rows + r], &one[i * rows + r], sizeof(float)) == 0;
                }
            }
        }
        char what[64];
        snprintf(what, sizeof(what), "batched %dx%d n=%d", rows, cols, n);
        report(batched && worst <= 1.0 && !same_bits, what, tr->name, worst, 0.0, 1.0);
        free(w); free(x); free(y); free(one); free(work);
    }
}

// The ISA the library picked for this CPU, by name (tests check it per emulated CPU model).
static void report_best_isa(const int *isas, const char **names, int count) {
    const char *best = "reference";
    for (int k = 0; k < count; k++)
        if (lp_best_isa() == isas[k]) best = names[k];
    printf("best ISA: %s\n", best);
}

#define LP_TYPE_ID(T, t) LP_##T,

int main(void) {
    if (lp_best_isa() == LP_ISA_REF) {
        printf("no SIMD kernels in this build\n0 passed, 1 failed\n");
        return 1;
    }
    const int isas[] = { LP_ISA_AVX2, LP_ISA_AVX512, LP_ISA_NEON, LP_ISA_DOTPROD, LP_ISA_I8MM };
    const char *names[] = { "AVX2", "AVX-512", "NEON", "DOTPROD", "I8MM" };
    report_best_isa(isas, names, 5);
    const int types[] = { LP_FOR_WEIGHT_TYPES(LP_TYPE_ID) };  // csrc/type_list.h
    for (int k = 0; k < 5; k++) {
        const int isa = isas[k];
        if (!lp_isa_available(isa)) continue;
        if (isa == LP_ISA_I8MM) {  // DOTPROD's kernels (checked above) and a batched product of its own
            printf("checking the I8MM batched product against the row dots\n");
            for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) check_batched(types[i], isa);
            continue;
        }
        printf("checking %s kernels against the reference\n", names[k]);
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
            check_dot(types[i], isa, 4096, 20);
            check_dot(types[i], isa, 256, 20);
            check_dot(types[i], isa, 96, 20);  // an odd number of blocks
            check_4acts(types[i], isa, 1024);
            check_4weights(types[i], isa, 1024);
            check_4weights(types[i], isa, 96);  // an odd number of blocks
            check_4weights(types[i], isa, 416);  // groups of four blocks and a tail
            check_matmul(types[i], isa);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
