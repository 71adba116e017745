"""The batched product's last activation rows: an AVX2 group of 8 or fewer rows takes a tile of one
panel half (gemm_avx2.c), as a mixture of experts' products often end (each expert gets a ragged
count of a prompt's rows). A row's result must not depend on the tile that computed it: the same
bits as in a call where it sits in a full group, as AVX-512's (whole-panel) tile gives, and within
the activation rounding of a float64 product of the gguf package's dequantized weights."""
from __future__ import annotations

import numpy as np
import pytest

from runtime import kernels, quant_types
from tests.isautil import with_and_without_avxvnni
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


_PRODUCTS = """
import sys
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from runtime import kernels
from tests.test_kernels import weight_tensor
kernels.set_isa("avx2")
rng = np.random.default_rng(9)
out = []
for name in ("Q2_K", "Q3_K", "Q4_K", "Q6_K", "Q4_0", "Q4_1", "Q8_0"):
    t = weight_tensor(kernels.WEIGHT_TYPES[name], 22, 512, rng)
    x = (rng.standard_normal((40, 512)) * rng.uniform(0.1, 10, (40, 1))).astype(np.float32)
    out.append(kernels.matmul(t, x, n_threads=2))
np.save(sys.argv[1], np.stack(out))
"""


@pytest.mark.skipif("avx2" not in BATCHED_ISAS, reason="no AVX2 here")
def test_avx_vnni_tiles_give_the_vpmaddubsw_tiles_bits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Where the CPU has AVX-VNNI, the AVX2 product takes VPDPBUSD (LLAMAPACK_AVXVNNI=0: the
    VPMADDUBSW tiles): both give the same bits, 40 rows (a half tile at the end) of the folded
    Q2_K and Q3_K, the sub-scaled Q4_K and Q6_K, and the legacy Q4_0, Q4_1 and Q8_0. Without
    AVX-VNNI both runs take the VPMADDUBSW tiles, and the outputs still have to agree."""
    outs = with_and_without_avxvnni(_PRODUCTS, tmp_path)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.isfinite(outs[0]).all() and np.abs(outs[0]).max() > 0
