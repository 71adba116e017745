"""The x86 batched product's weight-side sums and min terms at the shapes their fast paths split
on (gemm_avx2.c: the +128 corrections 128 quants a step, the rest 32 at a time; gemm_avx2.h:
the min terms' own loop), and with non-finite activations. Oracle: a float64 product of the
gguf package's dequantized weights, within the activation rounding bound; AVX2 (with and
without AVX-VNNI) and AVX-512 give the same bits."""
from __future__ import annotations

import numpy as np
import pytest

from runtime import kernels
from tests.isautil import has_amx, with_and_without, with_and_without_avxvnni
from tests.test_kernels import _activation_error_bound, oracle_dequantize, weight_tensor

BATCHED_ISAS = [i for i in ("avx2", "avx512") if i in kernels.available_isas()]


def _product(isa: str, t: kernels.RawTensor, x: np.ndarray, threads: int = 2) -> np.ndarray:
    kernels.set_isa(isa)
    try:
        return kernels.matmul(t, x, n_threads=threads)
    finally:
        kernels.set_isa(kernels.best_isa())


def _assert_near_float64(name: str, t: kernels.RawTensor, x: np.ndarray, got: np.ndarray, label: str) -> None:
    w = oracle_dequantize(t)
    want64 = x.astype(np.float64) @ w.astype(np.float64).T
    bound = _activation_error_bound(kernels.WEIGHT_TYPES[name], t, w, x)
    assert (np.abs(got - want64) <= bound).all(), f"{name} {label}: against float64"


# Row lengths that are not a multiple of 128 (the corrections' 128-quant steps, then 32 at a
# time): 32, 96, 160 and 608 columns of the legacy types, whose corrections are per 32 (Q4_0,
# Q5_0 on an unsigned panel; Q8_0 with AVX-VNNI and on AVX-512).
@pytest.mark.skipif(not BATCHED_ISAS, reason="no x86 batched product here")
@pytest.mark.parametrize("name", ["Q4_0", "Q5_0", "Q8_0"])
@pytest.mark.parametrize("cols", [32, 96, 160, 608])
def test_legacy_products_at_row_lengths_past_128(name: str, cols: int) -> None:
    rng = np.random.default_rng(cols)
    t = weight_tensor(kernels.WEIGHT_TYPES[name], 21, cols, rng)
    x = (rng.standard_normal((37, cols)) * rng.uniform(0.1, 10, (37, 1))).astype(np.float32)
    got = {isa: _product(isa, t, x) for isa in BATCHED_ISAS}
    for isa, y in got.items():
        _assert_near_float64(name, t, x, y, f"{cols} columns, {isa}")
    if len(got) == 2:
        np.testing.assert_array_equal(got["avx2"], got["avx512"], err_msg=f"{name} {cols} columns")


_LEGACY = """
import sys
import numpy as np
from runtime import kernels
from tests.test_kernels import weight_tensor
kernels.set_isa("avx2")
rng = np.random.default_rng(3)
out = []
for name in ("Q4_0", "Q5_0", "Q8_0"):
    for cols in (96, 608):
        t = weight_tensor(kernels.WEIGHT_TYPES[name], 21, cols, rng)
        x = (rng.standard_normal((37, cols)) * rng.uniform(0.1, 10, (37, 1))).astype(np.float32)
        out.append(kernels.matmul(t, x, n_threads=2).ravel())
np.save(sys.argv[1], np.concatenate(out))
"""


@pytest.mark.skipif("avx2" not in BATCHED_ISAS, reason="no AVX2 here")
def test_legacy_products_past_128_with_and_without_avx_vnni(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same row lengths on AVX2 with AVX-VNNI (Q8_0's unsigned panel: its corrections) and
    without: the same bits."""
    outs = with_and_without_avxvnni(_LEGACY, tmp_path)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.isfinite(outs[0]).all() and np.abs(outs[0]).max() > 0


# NaN, +inf and -inf in three activation rows: those rows' outputs are not finite (float64
# says so too), and every other row is as in a product without them, within the float64 bound.
# 37 rows: a last group of 5 (a half tile); the K-quants with mins per 16 and per 32 (the min
# terms' loop), the corrections per 16 (Q3_K, Q6_K) and per 32 (Q4_0).
@pytest.mark.skipif(not BATCHED_ISAS, reason="no x86 batched product here")
@pytest.mark.parametrize("name", ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0"])
def test_non_finite_activations_stay_in_their_rows(name: str) -> None:
    qtype = kernels.WEIGHT_TYPES[name]
    cols = 512
    rng = np.random.default_rng(17)
    t = weight_tensor(qtype, 22, cols, rng)
    x = rng.standard_normal((37, cols)).astype(np.float32)
    bad = {3: np.nan, 20: np.inf, 35: -np.inf}  # the last in the half tile
    for row, v in bad.items():
        x[row, 7 * row % cols] = v
    good = np.array([r for r in range(37) if r not in bad])
    with np.errstate(invalid="ignore"):
        want64 = x.astype(np.float64) @ oracle_dequantize(t).astype(np.float64).T
    assert not np.isfinite(want64[list(bad)]).any()
    for isa in BATCHED_ISAS:
        for threads in (1, 2):
            got = _product(isa, t, x, threads)
            assert not np.isfinite(got[list(bad)]).any(), f"{name} {isa}: a non-finite row came out finite"
            assert np.isfinite(got[good]).all(), f"{name} {isa}: a finite row came out non-finite"
            _assert_near_float64(name, t, x[good], got[good], f"{isa} threads={threads}, the finite rows")


_K_TILES = """
import sys
import numpy as np
from runtime import kernels
from tests.test_kernels import weight_tensor
kernels.set_isa("avx2")
rng = np.random.default_rng(8)
out = []
for name in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"):
    for rows, n in ((61, 45), (64, 37), (300, 20)):
        t = weight_tensor(kernels.WEIGHT_TYPES[name], rows, 512, rng)
        x = (rng.standard_normal((n, 512)) * rng.uniform(0.1, 10, (n, 1))).astype(np.float32)
        out.append(kernels.matmul(t, x, n_threads=2).ravel())
np.save(sys.argv[1], np.concatenate(out))
"""


@pytest.mark.skipif("avx2" not in BATCHED_ISAS, reason="no AVX2 here")
def test_six_row_k_quant_tiles_with_and_without_avx_vnni(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The sub-scaled K-quants' tiles take 6 weight rows where both panel halves have rows, 4 for
    the chunk's last rows and for a half panel (gemm_avx2.c): 61, 64 and 300 weight rows (chunks
    of 61, 64, and 32 with 12 left) x 45, 37 and 20 activation rows, with AVX-VNNI and without
    (plain AVX2's 6-row tiles: every sub-scaled type; its panels that pair the sub-blocks of each
    32 columns, gemm.c's lp_gemm_avx2_pairs: Q2_K, Q3_K; Q6_K's pass over both halves): the same
    bits."""
    outs = with_and_without_avxvnni(_K_TILES, tmp_path)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.isfinite(outs[0]).all() and np.abs(outs[0]).max() > 0


@pytest.mark.skipif(not BATCHED_ISAS, reason="no x86 batched product here")
@pytest.mark.parametrize("name", ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_six_row_k_quant_tiles_near_float64(name: str) -> None:
    """The same shapes in this process (AVX-VNNI where the CPU has it), against float64 and AVX-512."""
    rng = np.random.default_rng(9)
    for rows, n in ((61, 45), (64, 37), (300, 20)):
        t = weight_tensor(kernels.WEIGHT_TYPES[name], rows, 512, rng)
        x = (rng.standard_normal((n, 512)) * rng.uniform(0.1, 10, (n, 1))).astype(np.float32)
        got = {isa: _product(isa, t, x) for isa in BATCHED_ISAS}
        for isa, y in got.items():
            _assert_near_float64(name, t, x, y, f"{rows}x512 n={n} {isa}")
        if len(got) == 2:
            np.testing.assert_array_equal(got["avx2"], got["avx512"], err_msg=f"{name} {rows} rows n={n}")


_AMX = """
import sys
import numpy as np
from runtime import kernels
from tests.test_kernels import weight_tensor
kernels.set_isa("avx512")
rng = np.random.default_rng(12)
out = []
for name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"):
    for rows, cols, n, threads in ((61, 512, 45, 2), (300, 256, 20, 2), (130, 1024, 37, 1), (16, 256, 16, 2),
                                   (64, 768, 70, 2)):
        t = weight_tensor(kernels.WEIGHT_TYPES[name], rows, cols, rng)
        x = (rng.standard_normal((n, cols)) * rng.uniform(0.1, 10, (n, 1))).astype(np.float32)
        out.append(kernels.matmul(t, x, n_threads=threads).ravel())
np.save(sys.argv[1], np.concatenate(out))
"""


@pytest.mark.skipif(not has_amx(), reason="no AMX-INT8 here (Intel Xeon 4th gen on)")
def test_amx_tiles_give_the_avx512_products_bits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The AVX-512 product with AMX tiles (LLAMAPACK_AMX=1) and without (VPDPBUSD): every weight
    type, the K-quants' sub-scales folded (Q2_K, Q3_K) or split into digits (Q4_K, Q5_K: 2; Q6_K: 3),
    chunks of 128 weight rows and a last one of 44 (300 rows), a tile pair of one tile (16, 61 -> 64
    rows), slabs of 4 panels and a last one of 1 (70 activation rows), one and two threads: the same
    bits. (In this process AMX is on, and the other tests compare it with AVX2 and float64.)"""
    outs = with_and_without("LLAMAPACK_AMX", _AMX, tmp_path)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.isfinite(outs[0]).all() and np.abs(outs[0]).max() > 0
