"""The batched product's last activation rows: an AVX2 group of 8 or fewer rows takes a tile of one
panel half (gemm_avx2.c), as a mixture of experts' products often end (each expert gets a ragged
count of a prompt's rows). A row's result must not depend on the tile that computed it: the same
bits as in a call where it sits in a full group, as AVX-512's (whole-panel) tile gives, and within
the activation rounding of a float64 product of the gguf package's dequantized weights."""
from __future__ import annotations

import numpy as np
import pytest

from runtime import kernels, quant_types
from tests.test_kernels import _activation_error_bound, oracle_dequantize, weight_tensor

BATCHED_ISAS = [i for i in ("avx2", "avx512") if i in kernels.available_isas()]
# rows in the call: a last group of 8 (the half tile's largest), 9 (a whole panel again), 1, none
TAILS = (24, 25, 17, 32)


def _product(isa: str, t: kernels.RawTensor, x: np.ndarray) -> np.ndarray:
    kernels.set_isa(isa)
    try:
        return kernels.matmul(t, x, n_threads=2)
    finally:
        kernels.set_isa(kernels.best_isa())


@pytest.mark.skipif("avx2" not in BATCHED_ISAS, reason="no AVX2 here")
@pytest.mark.parametrize("name", list(quant_types.QUANT_TYPES))
def test_last_rows_of_a_product_in_a_half_tile(name: str) -> None:
    qtype = kernels.WEIGHT_TYPES[name]
    rng = np.random.default_rng(5)
    rows, cols = 22, 512  # 22: a partial group of weight rows too
    t = weight_tensor(qtype, rows, cols, rng)
    x = (rng.standard_normal((40, cols)) * rng.uniform(0.1, 10, (40, 1))).astype(np.float32)
    whole = _product("avx2", t, x)  # groups of 16, 16 and 8 rows
    w = oracle_dequantize(t)
    for n in TAILS:
        got = _product("avx2", t, x[:n])
        np.testing.assert_array_equal(got, whole[:n], err_msg=f"{name}: {n} rows against the same rows of 40")
        if "avx512" in BATCHED_ISAS:
            np.testing.assert_array_equal(got, _product("avx512", t, x[:n]), err_msg=f"{name}: {n} rows, AVX-512")
        want64 = x[:n].astype(np.float64) @ w.astype(np.float64).T
        bound = _activation_error_bound(qtype, t, w, x[:n])
        assert (np.abs(got - want64) <= bound).all(), f"{name}: {n} rows against float64"
