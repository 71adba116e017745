"""Several activation rows per decoded weight row (vec_dot_rows, vec_dot_4acts): each row's
result is bit for bit the one-row dot's, whatever the other rows are.

Decoding several sequences (and prompt groups under 16 rows) puts 2..8 activation rows
through one product; a sequence's logits must not depend on its neighbours, so the kernels
that decode a weight block once for several rows must give every row exactly vec_dot's
bits. Checked for every weight type on every instruction set this CPU runs, for 1..8 rows
(groups of up to four and the remainder), short and long rows (a Mistral-width 14336), and
with NaN and inf among the activations. The values themselves are checked against float64
in test_kernels.py (test_matmul_against_float64 runs 7 rows: a group of 4 and one of 3).
"""
from __future__ import annotations

import numpy as np
import pytest

from runtime import kernels, quant_types

WEIGHT_TYPES = list(quant_types.WEIGHT_TYPES)
ISAS = kernels.available_isas()


def _tensor(qtype: int, rows: int, cols: int, rng: np.random.Generator) -> kernels.RawTensor:
    """Random blocks with finite fp16 scale fields (random bytes elsewhere)."""
    info = kernels.type_info(qtype)
    if info.block_size == 1:
        vals = (rng.standard_normal(rows * cols) * 0.05).astype(np.float32)
        raw = vals.astype(np.float16).view(np.uint8) if qtype == kernels.WEIGHT_TYPES["F16"] else \
            (vals.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8) if qtype == kernels.WEIGHT_TYPES["BF16"] \
            else vals.view(np.uint8)
        return kernels.RawTensor(qtype, (rows, cols), raw)
    blocks = rng.integers(0, 256, (rows * cols // info.block_size, info.type_size), dtype=np.uint8)
    for off in kernels.half_fields(qtype):
        blocks[:, off:off + 2] = rng.uniform(-0.05, 0.05, (len(blocks), 1)).astype(np.float16).view(np.uint8)
    return kernels.RawTensor(qtype, (rows, cols), blocks.reshape(-1))


def _alone(t: kernels.RawTensor, x: np.ndarray) -> np.ndarray:
    return np.stack([kernels.matmul(t, row, n_threads=1) for row in x])


def _each_isa(fn) -> None:
    for isa in ISAS:
        kernels.set_isa(isa)
        try:
            fn(isa)
        finally:
            kernels.set_isa(kernels.best_isa())


@pytest.mark.parametrize("name", WEIGHT_TYPES)
def test_rows_together_equal_rows_alone(name: str) -> None:
    qtype = kernels.WEIGHT_TYPES[name]
    bs = kernels.type_info(qtype).block_size
    rng = np.random.default_rng(qtype)
    # short rows, and a Mistral-width feed-forward row (the long-row case)
    shapes = [(19, 3 * 256 if bs == 256 else 13 * 32), (5, 14336)]
    for rows, cols in shapes:
        t = _tensor(qtype, rows, cols, rng)
        x = (rng.standard_normal((8, cols)) * rng.uniform(0.1, 10, (8, 1))).astype(np.float32)

        def check(isa: str) -> None:
            alone = _alone(t, x)
            for n in range(1, 9):
                got = kernels.matmul(t, x[:n], n_threads=2)
                np.testing.assert_array_equal(got, alone[:n], err_msg=f"{name} {isa} {rows}x{cols} n={n}")
        _each_isa(check)


@pytest.mark.parametrize("name", WEIGHT_TYPES)
def test_rows_with_nonfinite_neighbours(name: str) -> None:
    """A row of NaN, one with an inf, one of huge values next to finite rows: no crash, and
    every row (the finite ones untouched by their neighbours) as it comes out alone."""
    qtype = kernels.WEIGHT_TYPES[name]
    bs = kernels.type_info(qtype).block_size
    cols = 2 * 256 if bs == 256 else 8 * 32
    rng = np.random.default_rng(100 + qtype)
    t = _tensor(qtype, 7, cols, rng)
    x = rng.standard_normal((6, cols)).astype(np.float32)
    x[1, :] = np.nan
    x[3, 5] = np.inf
    x[4, :] = 3e38

    def check(isa: str) -> None:
        alone = _alone(t, x)
        got = kernels.matmul(t, x, n_threads=1)
        np.testing.assert_array_equal(got, alone, err_msg=f"{name} {isa}")
        assert np.isfinite(got[[0, 2, 5]]).all(), f"{name} {isa}: a finite row took its neighbour's NaN"
    _each_isa(check)


@pytest.mark.parametrize("name", ["Q4_K", "Q5_K", "Q6_K", "Q4_1", "Q5_1", "Q8_0"])
def test_prepared_rows_at_the_ends_of_the_activation_range(name: str) -> None:
    """Activation rows whose every quant is at the end of its range (a constant row: each 16-group
    sums to 16 * +-127, the largest the prepared rows' group sums and their multiples hold), and
    rows at both ends alternately: the product's row dots, prepared or not, give vec_dot's bits."""
    qtype = kernels.WEIGHT_TYPES[name]
    info = kernels.type_info(qtype)
    rng = np.random.default_rng(300 + qtype)
    cols = 4 * 256 if info.block_size == 256 else 18 * 32
    t = _tensor(qtype, 5, cols, rng)
    w_rows = t.data.reshape(5, -1)
    x = np.stack([np.full(cols, 3.0), np.full(cols, -2.5), np.where(np.arange(cols) % 2, 1.0, -1.0),
                  np.where(np.arange(cols) % 32 < 16, 7.0, -7.0)]).astype(np.float32)

    def check(isa: str) -> None:
        for n in (1, 2, 4):
            got = kernels.matmul(t, x[:n], n_threads=1)
            for j in range(n):
                act = kernels.quantize_act(info.vec_dot_type, x[j], isa)
                want = [kernels.vec_dot(qtype, w_rows[r], act, cols, isa) for r in range(5)]
                np.testing.assert_array_equal(got[j], np.float32(want), err_msg=f"{name} {isa} n={n} row {j}")
    _each_isa(check)


@pytest.mark.parametrize("name", WEIGHT_TYPES)
def test_vec_dot_equals_matmul_rows(name: str) -> None:
    """The product's row dots (on AVX-512 some types read activation rows prepared once per
    product: rows_pre.h) give what vec_dot gives on the activation row as the quantizer
    leaves it, bit for bit: one weight row, one activation row, either way."""
    qtype = kernels.WEIGHT_TYPES[name]
    info = kernels.type_info(qtype)
    act_type = info.vec_dot_type
    rng = np.random.default_rng(200 + qtype)
    cols = 4 * 256 if info.block_size == 256 else 18 * 32  # an even number of blocks
    t = _tensor(qtype, 5, cols, rng)
    x = (rng.standard_normal((4, cols)) * rng.uniform(0.1, 10, (4, 1))).astype(np.float32)
    w_rows = t.data.reshape(5, -1)

    def check(isa: str) -> None:
        for n in (1, 4):
            got = kernels.matmul(t, x[:n], n_threads=1)
            for j in range(n):
                act = x[j] if act_type == kernels.WEIGHT_TYPES["F32"] else kernels.quantize_act(act_type, x[j], isa)
                want = [kernels.vec_dot(qtype, w_rows[r], act, cols, isa) for r in range(5)]
                np.testing.assert_array_equal(got[j], np.float32(want), err_msg=f"{name} {isa} n={n} row {j}")
    _each_isa(check)


@pytest.mark.skipif(not {"avx2", "avx512"} <= set(ISAS), reason="compares AVX2 with AVX-512")
@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q8_0"])
def test_group_kernels_give_the_same_bits_on_avx2_and_avx512(name: str) -> None:
    """Q4_0, Q4_1 and Q8_0 take one arithmetic on AVX2 (and AVX-VNNI) and AVX-512: each block's exact
    integer sum, then the same float steps per (row, block) lane (legacy_groups.c). A product
    gives the same bits on both, for 1..8 activation rows, any number of weight rows (pairs,
    fours and a remainder) and rows whose last group of blocks is partial (18 and 35 blocks)."""
    qtype = kernels.WEIGHT_TYPES[name]
    rng = np.random.default_rng(300 + qtype)
    for blocks in (18, 35, 128):
        cols = 32 * blocks
        t = _tensor(qtype, 23, cols, rng)
        x = (rng.standard_normal((8, cols)) * rng.uniform(0.1, 10, (8, 1))).astype(np.float32)
        got = {}
        for isa in ("avx2", "avx512"):
            kernels.set_isa(isa)
            try:
                got[isa] = [kernels.matmul(t, x[:n], n_threads=2) for n in range(1, 9)]
            finally:
                kernels.set_isa(kernels.best_isa())
        for n in range(8):
            np.testing.assert_array_equal(got["avx2"][n], got["avx512"][n], err_msg=f"{name} {cols} cols, {n + 1} rows")
