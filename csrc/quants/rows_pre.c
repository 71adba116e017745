// rows_pre.c — which row-dot kernels on prepared activation rows (rows_pre.h) serve a weight
// type on an ISA: the legacy types' are legacy_groups.c's, the K-quants' k_q4_q6.c's.
#include "quants/rows_pre.h"
#include "quants/avxvnni.h"

// The legacy types on AVX-512 from one activation row on; the K-quants from one (their
// prepared row is read as fast, and vec_dot permutes per row); on AVX2 (and AVX-VNNI) Q4_0, Q4_1,
// Q8_0, Q4_K, Q5_K and Q6_K.
lp_rows_pre lp_rows_pre_of(int type, int isa, int64_t n) {
    lp_rows_pre k = { 0 };
    if (lp_rows_pre_bytes(type, n) == 0) return k;
#if LP_X86
    if (isa == LP_ISA_AVX2) {
        const int vnni = lp_gemm_avx2_vnni();
        if (type == LP_Q4_K) k = (lp_rows_pre){ lp_prep_q8_K_avx2, vnni ? lp_rows_pre_q4_K_avxvnni : lp_rows_pre_q4_K_avx2, 1, NULL };
        if (type == LP_Q5_K) k = (lp_rows_pre){ lp_prep_q8_K_avx2, vnni ? lp_rows_pre_q5_K_avxvnni : lp_rows_pre_q5_K_avx2, 1, NULL };
        if (type == LP_Q6_K) k = (lp_rows_pre){ lp_prep_q6_K_avx2, vnni ? lp_rows_pre_q6_K_avxvnni : lp_rows_pre_q6_K_avx2, 1, NULL };
    }
    if (isa == LP_ISA_AVX512) {
        if (type == LP_Q4_K) k = (lp_rows_pre){ lp_prep_q8_K_avx512, lp_rows_pre_q4_K_avx512, 1, NULL };
        if (type == LP_Q5_K) k = (lp_rows_pre){ lp_prep_q8_K_avx512, lp_rows_pre_q5_K_avx512, 1, NULL };
        if (type == LP_Q6_K) k = (lp_rows_pre){ lp_prep_q6_K_avx2, lp_rows_pre_q6_K_avx512, 1, NULL };
    }
#endif
    return k.prep ? k : lp_rows_pre_legacy(type, isa);
}

int64_t lp_rows_pre_bytes(int type, int64_t n) {
    if (type == LP_Q4_K || type == LP_Q5_K || type == LP_Q6_K) return n % QK_K ? 0 : n / QK_K * (int64_t)sizeof(k_pre_q8_K);
    if (n % 32 || n <= 0 || (type != LP_Q4_0 && type != LP_Q4_1 && type != LP_Q5_0 && type != LP_Q5_1 && type != LP_Q8_0))
        return 0;
    return lp_rows_pre_legacy_bytes(n);
}
