// gemm_dump.c — runs lp_matmul on the products in a file, at the ISA the library picks for
// this CPU, and writes the results: the aarch64 side of tests/test_aarch64.py's comparison
// of the batched products across platforms (the x86-64 side runs the same file in Python).
//
//   gemm_dump IN OUT THREADS
// IN: records of int32 type, rows, cols, n (little-endian), then the weights (rows x cols
// of the type) and x (n x cols float32). OUT: for each record y (n x rows float32).
// Prints "isa: NAME" and exits non-zero on a bad record or a failed product.
#include <stdio.h>
#include <stdlib.h>

#include "lp.h"

static int run(FILE *in, FILE *out, int threads) {
    int32_t h[4];
    while (fread(h, sizeof(h), 1, in) == 1) {
        const lp_type_traits *t = lp_traits(h[0]);
        const int64_t rows = h[1], cols = h[2], n = h[3];
        if (!t || rows < 1 || rows > 4096 || cols < 1 || cols > 65536 || cols % t->blck_size || n < 1 || n > 4096)
            return fprintf(stderr, "bad record\n"), 1;
        const size_t wbytes = (size_t)(rows * cols / t->blck_size * t->type_size);
        const int64_t ws = lp_matmul_work_size(h[0], cols, n, threads);
        uint8_t *w = malloc(wbytes), *work = malloc(ws > 0 ? (size_t)ws : 1);
        float *x = malloc(sizeof(float) * (size_t)(n * cols)), *y = malloc(sizeof(float) * (size_t)(n * rows));
        int ok = w && work && x && y && ws >= 0 && fread(w, 1, wbytes, in) == wbytes &&
                 fread(x, sizeof(float), (size_t)(n * cols), in) == (size_t)(n * cols) &&
                 lp_matmul(h[0], w, rows, cols, x, n, y, work, threads) == LP_OK &&
                 fwrite(y, sizeof(float), (size_t)(n * rows), out) == (size_t)(n * rows);
        free(w); free(work); free(x); free(y);
        if (!ok) return fprintf(stderr, "record of type %d failed\n", h[0]), 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    static const char *names[LP_ISA_COUNT] = { "ref", "avx2", "neon", "avx512", "dotprod", "i8mm" };
    if (argc != 4) return fprintf(stderr, "usage: gemm_dump IN OUT THREADS\n"), 2;
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    if (!in || !out) return fprintf(stderr, "cannot open the files\n"), 2;
    printf("isa: %s\n", names[lp_get_isa()]);
    const int rc = run(in, out, atoi(argv[3]));
    fclose(in);
    return fclose(out) != 0 || rc;
}
