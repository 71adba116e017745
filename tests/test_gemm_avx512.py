"""The AVX-512 batched product of the K-quants against AVX2's, bit for bit, on what the AVX-512
path does alone: its own row decoders (Q4_K and Q5_K 128 quants a step; Q6_K straight to the
tile's offset quants 0..63, the 32 never subtracted), rows of 4096 and 14336 columns, over
several chunks of rows and a last partial one. The weights
are random bytes whose fp16 scales include inf, NaN, the largest finite half and subnormals,
and the activations hold NaN, inf and huge rows: both ISAs must give the same bits, NaNs
where the other has them, and the rows with finite inputs must stay within the activation
rounding bound of a float64 product of the gguf package's dequantized weights."""
from __future__ import annotations

import numpy as np
import pytest

from runtime import kernels
from tests.test_gemm_tail import _product
from tests.test_kernels import _activation_error_bound, oracle_dequantize, weight_tensor

pytestmark = pytest.mark.skipif(not {"avx2", "avx512"} <= set(kernels.available_isas()),
                                reason="needs AVX2 and AVX-512")

# fp16 bit patterns for a super-block's d (and dmin): inf, -inf, NaN, 65504, the smallest subnormal
ODD_HALVES = [0x7C00, 0xFC00, 0x7E00, 0x7BFF, 0x0001]


def _with_odd_scales(t: kernels.RawTensor, rng: np.random.Generator) -> tuple[kernels.RawTensor, np.ndarray]:
    """t with the half fields of a few super-blocks set to ODD_HALVES; which weight rows stay finite."""
    info = kernels.type_info(t.type)
    blocks = t.data.reshape(-1, info.type_size)
    per_row = t.shape[1] // info.block_size
    rows = rng.choice(t.shape[0], len(ODD_HALVES), replace=False)
    for row, half in zip(rows, ODD_HALVES):
        for off in kernels.half_fields(t.type):
            blocks[row * per_row + rng.integers(per_row), off:off + 2] = np.array([half], np.uint16).view(np.uint8)
    finite = np.ones(t.shape[0], bool)
    finite[rows[:3]] = False  # inf, -inf, NaN
    return t, finite


@pytest.mark.parametrize("name", ["Q6_K", "Q4_K", "Q5_K"])
@pytest.mark.parametrize("rows,cols", [(200, 4096), (70, 14336)])
def test_avx512_k_quant_product_equals_avx2_with_odd_values(name: str, rows: int, cols: int) -> None:
    rng = np.random.default_rng(rows + cols)
    t, finite_rows = _with_odd_scales(weight_tensor(kernels.WEIGHT_TYPES[name], rows, cols, rng), rng)
    n = 40  # two whole groups of 16 activation rows and a partial one
    x = (rng.standard_normal((n, cols)) * rng.uniform(0.1, 10, (n, 1))).astype(np.float32)
    x[3, 5], x[7, 100], x[9, cols - 1] = np.nan, np.inf, -np.inf
    x[11] *= np.float32(1e30)
    got = _product("avx512", t, x)
    np.testing.assert_array_equal(got, _product("avx2", t, x), err_msg=f"{name} {rows}x{cols}")
    assert np.isnan(got[3]).all() and not np.isfinite(got[:, ~finite_rows]).any()
    ok = np.setdiff1d(np.arange(n), [3, 7, 9, 11])
    with np.errstate(invalid="ignore", over="ignore"):  # the inf/NaN-scaled rows, dropped here
        w = oracle_dequantize(t)[finite_rows]
    want64 = x[ok].astype(np.float64) @ w.astype(np.float64).T
    sub = kernels.RawTensor(t.type, (int(finite_rows.sum()), cols),
                            t.data.reshape(rows, -1)[finite_rows].reshape(-1).copy())
    bound = _activation_error_bound(t.type, sub, w, x[ok])
    assert (np.abs(got[ok][:, finite_rows] - want64) <= bound).all(), f"{name} {rows}x{cols} against float64"
