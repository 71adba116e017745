// api.h — what Python sees of the kernel library (through cffi; build.py feeds
// this file to cffi's cdef with the preprocessor lines removed, so keep it plain C).
#pragma once
#include <stdint.h>

// GGML type ids, as stored in GGUF tensor infos.
enum lp_type {
    LP_F32 = 0, LP_F16 = 1, LP_Q4_0 = 2, LP_Q4_1 = 3, LP_Q5_0 = 6, LP_Q5_1 = 7,
    LP_Q8_0 = 8, LP_Q8_1 = 9, LP_Q2_K = 10, LP_Q3_K = 11, LP_Q4_K = 12, LP_Q5_K = 13,
    LP_Q6_K = 14, LP_Q8_K = 15, LP_BF16 = 30, LP_TYPE_COUNT = 31
};

// Instruction sets a kernel may be built for.
enum lp_isa { LP_ISA_REF = 0, LP_ISA_AVX2 = 1, LP_ISA_NEON = 2, LP_ISA_COUNT = 3 };

// Error codes (negative returns).
enum lp_err { LP_OK = 0, LP_EUNKNOWN_TYPE = -1, LP_EBAD_SIZE = -2, LP_EBAD_ISA = -3, LP_ENO_KERNEL = -4 };

// Best ISA this CPU runs and this build has (checked once).
int lp_best_isa(void);
// 1 when this build has kernels for isa and the CPU can run them.
int lp_isa_available(int isa);
// The ISA matmul uses; set to compare implementations. Returns LP_EBAD_ISA if unavailable.
int lp_set_isa(int isa);
int lp_get_isa(void);

// Block size, bytes per block and dot-product activation type of a type id.
int lp_type_info(int type, int *blck_size, int *type_size, int *vec_dot_type);
// Byte offsets of the fp16 scale fields inside one block (up to 2); returns how many.
int lp_type_half_fields(int type, int *offsets);

// dst[0..n) = the n values stored in src (n a multiple of the block size).
int lp_dequantize(int type, const void *src, float *dst, int64_t n);

// Bytes of scratch matmul needs for n activation rows of cols values.
int64_t lp_matmul_work_size(int type, int64_t cols, int64_t n);
// y (n, rows) = x (n, cols) @ W^T, W (rows, cols) of the given type. work holds
// lp_matmul_work_size bytes. Uses n_threads threads (the caller is one of them).
int lp_matmul(int type, const void *w, int64_t rows, int64_t cols, const float *x, int64_t n,
              float *y, void *work, int n_threads);

// Single kernels, for tests: quantize n floats to an activation type; dot one
// weight row with one quantized activation row.
int lp_quantize_act(int act_type, int isa, const float *x, void *y, int64_t n);
int lp_vec_dot(int type, int isa, int64_t n, const void *w, const void *act, float *out);

// Reads nbytes of buf reps times on n_threads threads; returns a checksum (the
// caller times it: this is the read-bandwidth yardstick of the benchmarks).
double lp_read_sum(const void *buf, int64_t nbytes, int reps, int n_threads);
