"""AVX-512 softmax exps and SwiGLU against AVX2's, bit for bit: 16 lanes each doing an AVX2
lane's operations, the softmax sum added 8 lanes at a time in AVX2's order, the last 8..15
values through AVX2's own steps. Lengths around the 8- and 16-value steps; values from deep
underflow to overflow, NaN and +-inf."""
from __future__ import annotations

import numpy as np
import pytest

from runtime import kernels
from runtime.kernels import ffi, lib

pytestmark = pytest.mark.skipif(not {"avx2", "avx512"} <= set(kernels.available_isas()),
                                reason="needs AVX2 and AVX-512")
LENGTHS = (1, 8, 15, 16, 17, 24, 31, 33, 1000, 4099)


def _ptr(a: np.ndarray) -> object:
    return ffi.cast("float *", a.ctypes.data)


def _on(isa: str, fn) -> object:  # type: ignore[no-untyped-def]
    kernels.set_isa(isa)
    try:
        return fn()
    finally:
        kernels.set_isa(kernels.best_isa())


def _inputs(n: int, rng: np.random.Generator, spread: float = 40.0) -> np.ndarray:
    x = (rng.standard_normal(n) * spread).astype(np.float32)
    if spread > 10:  # (not among values of one size: 200 would leave every other exp 0)
        odd = np.array([-200.0, -104.5, -88.5, -87.0, 0.0, 87.0, 89.0, 200.0], np.float32)
        k = min(n, odd.size)
        x[rng.choice(n, k, replace=False)] = odd[:k]
    return x


@pytest.mark.parametrize("n", LENGTHS)
def test_softmax_exps_same_bits_on_avx512_and_avx2(n: int) -> None:
    rng = np.random.default_rng(n)
    # cases 3..10: exps all of one size, where the order of the sum shows (now and then)
    for case in range(11):
        x = _inputs(n, rng, 0.5 if case >= 3 else 40.0)
        if case == 1:
            x[rng.integers(n)] = np.inf
        if case == 2:
            x[rng.integers(n)] = np.nan
        out, sums = {}, {}
        for isa in ("avx2", "avx512"):
            y, mx = x.copy(), ffi.new("float *")
            sums[isa] = _on(isa, lambda: lib.lp_softmax_exps(_ptr(y), n, mx))
            out[isa] = (y, mx[0])
        np.testing.assert_array_equal(out["avx512"][0], out["avx2"][0], err_msg=f"n={n} case {case}")
        assert np.array_equal([out["avx512"][1], sums["avx512"]], [out["avx2"][1], sums["avx2"]], equal_nan=True)
        if case == 0:  # and against float64
            want = np.exp(x.astype(np.float64) - x.max())
            assert np.allclose(out["avx512"][0], want, rtol=3e-7, atol=1e-37)


@pytest.mark.parametrize("n", LENGTHS)
def test_swiglu_same_bits_on_avx512_and_avx2(n: int) -> None:
    rng = np.random.default_rng(100 + n)
    g = _inputs(n, rng)
    g[rng.integers(n)] = [np.nan, np.inf, -np.inf][n % 3]
    up = rng.standard_normal(n).astype(np.float32)
    out = {}
    for isa in ("avx2", "avx512"):
        y = g.copy()
        _on(isa, lambda: lib.lp_swiglu(_ptr(y), _ptr(up), n))
        out[isa] = y
    np.testing.assert_array_equal(out["avx512"], out["avx2"], err_msg=f"n={n}")
    fin = np.isfinite(g)
    want = g[fin].astype(np.float64) / (1 + np.exp(-g[fin].astype(np.float64))) * up[fin]
    assert np.allclose(out["avx512"][fin], want, rtol=2e-6, atol=1e-30)  # (below: float32 subnormals)
