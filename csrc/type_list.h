// type_list.h — the tensor types of the kernel library, listed once, by role:
// X(NAME, name) per type, NAME as in the lp_type ids of api.h (LP_<NAME>), name as in
// the kernels' function names (lp_vec_dot_<name>_<isa>, ...) and the traits table.
//
// Everything else derives from these lists: the kernel declarations (lp.h), the type
// loops of the C harnesses (tests/neon), and, through csrc/build.py, Python's lists
// (runtime/quant_types.py, generated, importable without the kernels). The traits
// table (quants/types.c) has a row for each listed type and none other (checked by
// tests/test_kernels.py). A new type: its id in api.h, its name here, its row there.
// Plain macros only: csrc/build.py reads this file as text.
#pragma once

// Weights stored as floats: their dot products take float32 activations.
#define LP_FOR_FLOAT_TYPES(X) X(F32, f32) X(F16, f16) X(BF16, bf16)

// Block-quantized weights: integer dot products against an activation format.
#define LP_FOR_QUANT_TYPES(X) X(Q4_0, q4_0) X(Q4_1, q4_1) X(Q5_0, q5_0) X(Q5_1, q5_1) X(Q8_0, q8_0) \
    X(Q2_K, q2_K) X(Q3_K, q3_K) X(Q4_K, q4_K) X(Q5_K, q5_K) X(Q6_K, q6_K)

// Activation formats: a row of floats quantized once, then dotted with every weight row.
#define LP_FOR_ACT_TYPES(X) X(Q8_0, q8_0) X(Q8_1, q8_1) X(Q8_K, q8_K)

// Every type a model's tensor may have.
#define LP_FOR_WEIGHT_TYPES(X) LP_FOR_FLOAT_TYPES(X) LP_FOR_QUANT_TYPES(X)
