"""Kernels against the `gguf` package's numpy dequantizers and float64 matrix products.

Dequantization must be bit-exact. matmul quantizes each activation row to 8-bit
blocks before the integer dot products, so it is compared with float64
``x @ dequantize(W).T`` within a bound derived from that rounding (see
``_activation_error_bound``), per output element.
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from packer.runtime_cross import csrc_build
from runtime import kernels, quant_types
from runtime.kernels import ffi, lib
from runtime.gguf import GGUFFile

QT = gguf.GGMLQuantizationType
WEIGHT_TYPES = list(quant_types.WEIGHT_TYPES)
ISAS = kernels.available_isas()
ROOT = Path(__file__).resolve().parent.parent


def random_blocks(qtype: int, n_blocks: int, rng: np.random.Generator, scale: float = 0.05) -> np.ndarray:
    """Random bytes for n_blocks of qtype, with every fp16 scale field finite (|s| < scale)."""
    info = kernels.type_info(qtype)
    if info.block_size == 1:  # plain float types: random finite values
        vals = rng.standard_normal(n_blocks).astype(np.float32)
        if qtype == kernels.WEIGHT_TYPES["F16"]:
            return vals.astype(np.float16).view(np.uint8)
        if qtype == kernels.WEIGHT_TYPES["BF16"]:
            return (vals.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        return vals.view(np.uint8)
    blocks = rng.integers(0, 256, size=(n_blocks, info.type_size), dtype=np.uint8)
    for off in kernels.half_fields(qtype):
        h = (rng.uniform(-scale, scale, n_blocks)).astype(np.float16)
        blocks[:, off:off + 2] = h.view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(-1)


def weight_tensor(qtype: int, rows: int, cols: int, rng: np.random.Generator) -> kernels.RawTensor:
    info = kernels.type_info(qtype)
    n_blocks = rows * cols // info.block_size
    return kernels.RawTensor(qtype, (rows, cols), random_blocks(qtype, n_blocks, rng))


def filled_tensor(qtype: int, rows: int, cols: int, fill: int, rng: np.random.Generator) -> kernels.RawTensor:
    """Every byte of every block `fill` but the fp16 scale fields (random, 0.001 to 0.05)."""
    info = kernels.type_info(qtype)
    n_blocks = rows * cols // info.block_size
    blocks = np.full((n_blocks, info.type_size), fill, np.uint8)
    for off in kernels.half_fields(qtype):
        h = rng.uniform(0.001, 0.05, n_blocks).astype(np.float16)
        blocks[:, off:off + 2] = h.view(np.uint8).reshape(n_blocks, 2)
    return kernels.RawTensor(qtype, (rows, cols), blocks.reshape(-1))


def oracle_dequantize(t: kernels.RawTensor) -> np.ndarray:
    info = kernels.type_info(t.type)
    rows = int(np.prod(t.shape[:-1]))
    data = t.data.reshape(rows, info.row_bytes(t.shape[-1]))
    return gguf.quants.dequantize(data, QT(t.type)).reshape(t.shape)


# ---------------------------------------------------------------------------
# Dequantization: bit-exact


@pytest.mark.parametrize("name", WEIGHT_TYPES)
@pytest.mark.parametrize("seed", range(4))
def test_dequantize_random_blocks_bit_exact(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    qtype = kernels.WEIGHT_TYPES[name]
    scale = [1e-4, 0.05, 1.0, 60000.0][seed]  # tiny to near the fp16 limit
    n_blocks = 8 * 512 // kernels.type_info(qtype).block_size
    t = kernels.RawTensor(qtype, (8, 512), random_blocks(qtype, n_blocks, rng, scale))
    got = kernels.dequantize(t)
    want = oracle_dequantize(t)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.astype(np.float32).view(np.uint32)), (
        f"{name}: {np.count_nonzero(got != want)} values differ")


@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16", "BF16"])
def test_dequantize_quantized_data_bit_exact(name: str) -> None:
    """Blocks made by the oracle's own quantizer from smooth data (realistic scales)."""
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((16, 1024)) * np.linspace(0.01, 3, 1024)).astype(np.float32)
    data = gguf.quants.quantize(w, QT[name])  # float types come back as float16 / bf16 words
    t = kernels.RawTensor(QT[name], (16, 1024), data.view(np.uint8).reshape(-1))
    np.testing.assert_array_equal(kernels.dequantize(t), oracle_dequantize(t))


def test_dequantize_every_smollm2_tensor_bit_exact(smollm2_path) -> None:
    with GGUFFile(smollm2_path) as f:
        assert len(f.tensors) == 272
        for t in f.tensors.values():
            got = kernels.dequantize(t)
            want = oracle_dequantize(t)
            assert np.array_equal(got, want), t.name


def test_dequantize_row_slices_match_full(smollm2_path) -> None:
    """Rows dequantized one at a time from their bytes (an embedding lookup) equal the full tensor's."""
    with GGUFFile(smollm2_path) as f:
        emb = f.tensors["token_embd.weight"]
        full = kernels.dequantize(emb)
        n_rows, cols = emb.shape
        rb = kernels.type_info(emb.type).row_bytes(cols)
        for r in (0, 1, 17, n_rows - 1):
            row = kernels.RawTensor(emb.type, (cols,), emb.data[r * rb:(r + 1) * rb])
            np.testing.assert_array_equal(kernels.dequantize(row), full[r])


# ---------------------------------------------------------------------------
# The one list of types (csrc/type_list.h)

def test_quant_types_module_is_generated_from_the_type_list() -> None:
    """runtime/quant_types.py is what csrc/build.py makes of csrc/type_list.h today (`make` rewrites it)."""
    build = csrc_build()
    assert (ROOT / "runtime" / "quant_types.py").read_text() == build.quant_types_module()
    lists = build.type_lists()
    assert lists["WEIGHT"] == {**lists["FLOAT"], **lists["QUANT"]}
    assert lists["WEIGHT"]["Q4_K"] == lib.LP_Q4_K and lists["ACT"]["Q8_K"] == lib.LP_Q8_K


def test_traits_table_has_a_row_for_each_listed_type_and_no_other() -> None:
    """Each type id: known to the kernels iff listed; a dot product iff a weight type; an
    activation quantizer iff an activation format; and the weight types' activation formats
    are the listed ones."""
    listed = {**quant_types.WEIGHT_TYPES, **quant_types.ACT_TYPES}
    block = np.zeros(4096, dtype=np.uint8)
    out = ffi.new("float *")
    for t in range(lib.LP_TYPE_COUNT):
        known = lib.lp_type_info(t, ffi.new("int *"), ffi.new("int *"), ffi.new("int *")) == 0
        assert known == (t in listed.values()), t
        if not known:
            continue
        n = kernels.type_info(t).block_size
        x = np.zeros(n, dtype=np.float32)
        dot = lib.lp_vec_dot(t, lib.LP_ISA_REF, n, ffi.from_buffer(block), ffi.from_buffer(block), out)
        assert (dot == 0) == (t in quant_types.WEIGHT_TYPES.values()), (t, dot)
        quant = lib.lp_quantize_act(t, lib.LP_ISA_REF, ffi.cast("float *", ffi.from_buffer(x)),
                                    ffi.from_buffer(block), n)
        assert (quant == 0) == (t in quant_types.ACT_TYPES.values()), (t, quant)
    formats = {kernels.type_info(t).vec_dot_type for t in quant_types.QUANT_TYPES.values()}
    assert formats == set(quant_types.ACT_TYPES.values())
    assert {kernels.type_info(t).vec_dot_type for t in quant_types.FLOAT_TYPES.values()} == {lib.LP_F32}


# ---------------------------------------------------------------------------
# matmul


def _activation_error_bound(qtype: int, t: kernels.RawTensor, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-output bound on |kernel - x @ w.T| (n, rows).

    Each activation block of size B is stored as int8 q with scale d = amax/127
    (Q8_0, Q8_1: d rounded to fp16, relative error <= 2^-11; Q8_K: float). A value
    is rebuilt as q*d16 with |q*d16 - x| <= 0.5*d + 127*|d16 - d| <= (0.5 + 127*2^-11)*d.
    Summed against |w| that bounds the rounding of the whole product. Q8_1 also
    stores s = d*sum(q) in fp16, used against the weight block's min m: add
    |m| * 32*amax * 2^-10 per block. Float summation adds ~1e-5 of sum |w||x|.
    """
    info = kernels.type_info(qtype)
    n, cols = x.shape
    act = kernels.type_info(info.vec_dot_type)
    absw = np.abs(w.astype(np.float64))
    slack = 1e-5 * (np.abs(x.astype(np.float64)) @ absw.T) + 1e-6
    if info.vec_dot_type == kernels.WEIGHT_TYPES["F32"]:
        return slack
    B = act.block_size
    amax = np.abs(x).reshape(n, cols // B, B).max(axis=2)           # (n, blocks)
    step = np.repeat(amax / 127.0 * (0.5 + 127 * 2.0**-11), B, axis=1)  # (n, cols)
    bound = step @ absw.T + slack
    if info.vec_dot_type == kernels.ACT_TYPES["Q8_1"]:
        rows = w.shape[0]
        blocks = t.data.reshape(rows, cols // info.block_size, info.type_size)
        m = np.abs(blocks[:, :, 2:4].copy().view(np.float16)[..., 0].astype(np.float64))  # (rows, blocks)
        bound += (32 * amax * 2.0**-10) @ m.T
    return bound


@pytest.mark.parametrize("name", WEIGHT_TYPES)
@pytest.mark.parametrize("n", [1, 7, 45, 64])
def test_matmul_against_float64(name: str, n: int) -> None:
    qtype = kernels.WEIGHT_TYPES[name]
    bs = kernels.type_info(qtype).block_size
    cols = 3 * 256 if bs == 256 else 13 * 32  # odd numbers of blocks
    rows = 37 if n >= 45 else 131
    rng = np.random.default_rng(n * 100 + qtype)
    t = weight_tensor(qtype, rows, cols, rng)
    w = oracle_dequantize(t)
    x = (rng.standard_normal((n, cols)) * rng.uniform(0.1, 10, (n, 1))).astype(np.float32)
    want = x.astype(np.float64) @ w.astype(np.float64).T
    bound = _activation_error_bound(qtype, t, w, x)
    for isa in ISAS:
        kernels.set_isa(isa)
        try:
            for threads in (1, 2, 3):
                got = kernels.matmul(t, x, n_threads=threads)
                assert got.shape == (n, rows)
                excess = np.abs(got - want) / bound
                assert excess.max() <= 1.0, (
                    f"{name} {isa} threads={threads}: worst error {np.abs(got - want).max():.3g}, "
                    f"{excess.max():.2f}x the bound")
        finally:
            kernels.set_isa(kernels.best_isa())


@pytest.mark.parametrize("name", WEIGHT_TYPES)
def test_batched_rows_equal_single_rows_exactly(name: str) -> None:
    """Small batches (four activation rows per decoded weight row) give each row
    bit for bit what decoding one token at a time gives. (From 16 rows on, AVX-512 and
    AVX2 take the batched product: see test_batched_product_matches_row_dots.)"""
    qtype = kernels.WEIGHT_TYPES[name]
    rng = np.random.default_rng(11)
    t = weight_tensor(qtype, 21, 512, rng)
    x = rng.standard_normal((9, 512)).astype(np.float32)
    for isa in ISAS:
        kernels.set_isa(isa)
        try:
            batch = kernels.matmul(t, x, n_threads=2)
            for j in range(x.shape[0]):
                np.testing.assert_array_equal(batch[j], kernels.matmul(t, x[j], n_threads=1), err_msg=f"{isa} row {j}")
        finally:
            kernels.set_isa(kernels.best_isa())


BLOCKS_OF_32 = [n for n in WEIGHT_TYPES if kernels.type_info(kernels.WEIGHT_TYPES[n]).block_size == 32]


@pytest.mark.parametrize("name", BLOCKS_OF_32)
def test_four_weight_rows_equal_one_at_a_time(name: str) -> None:
    """The row dots take weight rows four at a time, and a tensor's last rows one at a time
    (matmul.c); AVX2 computes a last group of two blocks of the four rows in one register set.
    A fifth row that copies one of the four gets that row's bits, whatever the row length (a
    last group of 1, 2 or 3 blocks, or none) and the number of activation rows."""
    qtype = kernels.WEIGHT_TYPES[name]
    rng = np.random.default_rng(12)
    for cols in (64, 96, 544, 576, 608, 640, 1088):
        t = weight_tensor(qtype, 4, cols, rng)
        blocks = t.data.reshape(4, -1)
        x = (rng.standard_normal((9, cols)) * rng.uniform(0.1, 10, (9, 1))).astype(np.float32)
        for isa in ISAS:
            kernels.set_isa(isa)
            try:
                for k in range(4):
                    t5 = kernels.RawTensor(qtype, (5, cols), np.concatenate([blocks, blocks[k:k + 1]]).reshape(-1))
                    for n in (1, 2, 4, 5, 8, 9):
                        y = kernels.matmul(t5, x[:n], n_threads=1).reshape(n, 5)
                        assert y[:, 4].tobytes() == y[:, k].tobytes(), f"{isa} cols={cols} row {k} of 4, {n} rows"
            finally:
                kernels.set_isa(kernels.best_isa())


QUANT_TYPES = list(quant_types.QUANT_TYPES)
BATCHED_ISAS = [i for i in ("avx2", "avx512", "i8mm") if i in ISAS]  # instruction sets with a batched product


def _row_by_row(t: kernels.RawTensor, x: np.ndarray) -> np.ndarray:
    """x @ W.T one activation row at a time: n = 1 never takes the batched product."""
    return np.stack([kernels.matmul(t, row, n_threads=1) for row in x])


@pytest.mark.skipif(not BATCHED_ISAS, reason="no instruction set here has a batched product")
@pytest.mark.parametrize("name", QUANT_TYPES)
def test_batched_product_matches_row_dots(name: str) -> None:
    """The batched product (int8 weight panels x 16-row activation panels; VPDPBUSD on
    AVX-512, VPMADDUBSW on AVX2) makes the same integer products as the row dots of its
    instruction set, so the two agree to float rounding: partial tiles of weight rows and
    of activation rows, 1-3 threads. Both ISAs' batched products give the same bits."""
    qtype = kernels.WEIGHT_TYPES[name]
    rng = np.random.default_rng(21)
    # 1000 and 300 rows: chunks of 64 and 32 weight rows (gemm.c, chunk_rows), the last one partial
    for rows, cols, n in [(37, 512, 16), (61, 768, 45), (5, 256, 33), (64, 1024, 100), (1000, 256, 40), (300, 512, 20)]:
        t = weight_tensor(qtype, rows, cols, rng)
        x = (rng.standard_normal((n, cols)) * rng.uniform(0.1, 10, (n, 1))).astype(np.float32)
        batched = {}
        try:
            for isa in BATCHED_ISAS:
                kernels.set_isa(isa)
                want = _row_by_row(t, x)
                tol = 1e-5 * np.abs(want).max(axis=1, keepdims=True) + 1e-30
                for threads in (1, 2, 3):
                    got = kernels.matmul(t, x, n_threads=threads)
                    assert (np.abs(got - want) <= tol).all(), f"{name} {isa} {rows}x{cols} n={n} threads={threads}"
                # it is a different summation, so it was the batched product that ran
                assert not np.array_equal(got, want), f"{name} {isa}: the row dots' exact bits"
                batched[isa] = got
        finally:
            kernels.set_isa(kernels.best_isa())
        if len(batched) == 2:
            np.testing.assert_array_equal(batched["avx2"], batched["avx512"], err_msg=f"{name} {rows}x{cols}")


# One byte repeated over a whole weight matrix (scale fields apart): every quant at an
# end of its range (0x00, 0x7f, 0x80, 0xff), and for Q8_0, whose quants are the bytes,
# the weight ranges at which AVX2 changes how it feeds VPMADDUBSW (gemm.c, avx2_mode).
EXTREME_FILLS = [0x00, 0x7F, 0x80, 0xFF, 0x1F, 0x20, 0x21, 0x40, 0x41, 0xC0, 0xDF, 0xE0, 0xF0, 0xF8]


@pytest.mark.skipif(not BATCHED_ISAS, reason="no instruction set here has a batched product")
@pytest.mark.parametrize("name", QUANT_TYPES)
def test_batched_product_at_quant_extremes(name: str) -> None:
    """Weights at the ends of their quant range (Q8_0: -128 and 127) against activations
    at +-127 (rows of +1, of -1, of random signs): the largest int16 pair sums and
    partial sums, which must neither saturate nor wrap. Against float64 and the row dots."""
    qtype = kernels.WEIGHT_TYPES[name]
    rows, cols, n = 37, 512, 33
    rng = np.random.default_rng(31)
    signs = rng.choice([-1.0, 1.0], (n, cols))
    signs[0], signs[1] = 1.0, -1.0
    x = signs.astype(np.float32)
    x[-1] *= rng.uniform(0.5, 1.0, cols).astype(np.float32)  # one row not at the extremes
    for fill in EXTREME_FILLS:
        _assert_batched_near(filled_tensor(qtype, rows, cols, fill, rng), x, f"{name} fill {fill:#04x}")


def _assert_batched_near(t: kernels.RawTensor, x: np.ndarray, label: str) -> None:
    """On every ISA with a batched product, 1 and 3 threads: within float-order tolerance of
    that ISA's row dots, and within the activation rounding bound of float64."""
    w = oracle_dequantize(t)
    want64 = x.astype(np.float64) @ w.astype(np.float64).T
    bound = _activation_error_bound(t.type, t, w, x)
    for isa in BATCHED_ISAS:
        kernels.set_isa(isa)
        try:
            want = _row_by_row(t, x)
            tol = 1e-5 * np.abs(want).max(axis=1, keepdims=True) + 1e-30
            for threads in (1, 3):
                got = kernels.matmul(t, x, n_threads=threads)
                msg = f"{label} {isa} threads={threads}"
                assert (np.abs(got - want) <= tol).all(), msg + ": against the row dots"
                assert (np.abs(got - want64) <= bound).all(), msg + ": against float64"
        finally:
            kernels.set_isa(kernels.best_isa())


# The K-quants' bytes of group scales (block layouts of gguf; the rest but the fp16 fields
# are quant bits): blocks whose quants sit at one end of their range, group scales at one
# end of theirs.
K_SCALE_BYTES = {"Q2_K": (0, 16), "Q3_K": (96, 108), "Q4_K": (4, 16), "Q5_K": (4, 16), "Q6_K": (192, 208)}
# 0x00 / 0xFF: every quant field at its low / high end (Q3_K -4 / 3, Q6_K -32 / 31); scales
# 0x00 / 0xFF (Q3_K: -32 / 31), 0x7F / 0x80 (Q6_K's int8: 127 / -128), 0x0F (Q2_K: scale 15, min 0).
K_SCALE_FILLS = [0x00, 0xFF, 0x7F, 0x80, 0x0F]


@pytest.mark.skipif(not BATCHED_ISAS, reason="no instruction set here has a batched product")
@pytest.mark.parametrize("name", list(K_SCALE_BYTES))
def test_batched_product_at_sub_scale_extremes(name: str) -> None:
    """The K-quants' group scales are applied in integers (int16 sums times the scale on
    AVX2, int32 on AVX-512, folded into the quants where the product fits a byte): quants at
    either end of their range times group scales at either end of theirs, against activations
    at +-127, the largest sums the block formats allow, must neither saturate nor wrap.
    Against the row dots (float order apart) and float64, on every ISA with a batched product."""
    qtype = kernels.WEIGHT_TYPES[name]
    info = kernels.type_info(qtype)
    lo, hi = K_SCALE_BYTES[name]
    rows, cols, n = 21, 768, 33
    rng = np.random.default_rng(37)
    x = rng.choice([-1.0, 1.0], (n, cols)).astype(np.float32)
    x[0], x[1] = 1.0, -1.0
    for qfill in (0x00, 0xFF):
        for sfill in K_SCALE_FILLS:
            t = filled_tensor(qtype, rows, cols, qfill, rng)
            t.data.reshape(-1, info.type_size)[:, lo:hi] = sfill
            _assert_batched_near(t, x, f"{name} quants {qfill:#04x} scales {sfill:#04x}")


def _multi_product(ts: list, x: np.ndarray, fill: int = 0) -> list[np.ndarray]:
    """lp_matmul_multi of the tensors on x (a work buffer of `fill` bytes), each matrix's output."""
    n, cols = x.shape
    outs = [np.full((n, t.shape[0]), np.nan, np.float32) for t in ts]
    types = ffi.new("int[]", [t.type for t in ts])
    mm = ffi.new("lp_mm[]", len(ts))
    for i, (t, out) in enumerate(zip(ts, outs)):
        mm[i].type, mm[i].w, mm[i].rows = t.type, ffi.from_buffer(t.data), t.shape[0]
        mm[i].y = ffi.cast("float *", ffi.from_buffer(out))
    work = np.full(lib.lp_matmul_multi_work_size(types, len(ts), cols, n, 2), fill, np.uint8)
    assert lib.lp_matmul_multi(mm, len(ts), cols, ffi.cast("float *", x.ctypes.data), n, ffi.from_buffer(work), 2) == 0
    assert lib.lp_matmul_multi(mm, lib.LP_MM_MAX + 1, cols, ffi.cast("float *", x.ctypes.data), n,
                               ffi.from_buffer(work), 2) == lib.LP_EBAD_SIZE
    return outs


@pytest.mark.parametrize("n", [1, 5, 20])
def test_matmul_multi_equals_single_products(n: int) -> None:
    """lp_matmul_multi (q, k, v in one job; mixed types share or split the quantized
    input by activation format) gives each matrix exactly what lp_matmul gives."""
    rng = np.random.default_rng(12)
    cols = 512
    names = ["Q5_0", "Q4_K", "Q8_0", "F16"]  # Q8_0 input shared by Q5_0 and Q8_0; Q8_K; none
    ts = [weight_tensor(kernels.WEIGHT_TYPES[nm], rows, cols, rng) for nm, rows in zip(names, (40, 17, 33, 9))]
    x = rng.standard_normal((n, cols)).astype(np.float32)
    for t, out in zip(ts, _multi_product(ts, x)):
        np.testing.assert_array_equal(out, kernels.matmul(t, x, n_threads=2))


@pytest.mark.parametrize("isa", [i for i in ("avx512", "avx2") if i in kernels.available_isas()])
@pytest.mark.parametrize("names", [["Q4_K", "Q5_K", "Q6_K", "Q4_K"], ["Q4_0", "Q8_0", "Q5_0", "Q4_1"]],
                         ids=["k-quants", "legacy"])
def test_matmul_multi_shares_panels_exactly(isa: str, names: list[str]) -> None:
    """A prompt's multi-matrix product quantizes the input once per format and builds the batched
    product's activation panels once for consecutive matrices that read them alike (Q4_K and Q5_K;
    Q4_0, Q8_0 and Q5_0), again where they differ (AVX-512 Q6_K's offset panel, Q4_1's Q8_1 rows):
    each matrix still gets exactly what lp_matmul gives it alone, with a ragged last group of rows."""
    rng = np.random.default_rng(13)
    cols = 512
    ts = [weight_tensor(kernels.WEIGHT_TYPES[nm], rows, cols, rng) for nm, rows in zip(names, (40, 17, 33, 24))]
    kernels.set_isa(isa)
    try:
        for n in (40, 17):
            x = (rng.standard_normal((n, cols)) * rng.uniform(0.1, 10, (n, 1))).astype(np.float32)
            for nm, t, out in zip(names, ts, _multi_product(ts, x, fill=0xA5)):
                np.testing.assert_array_equal(out, kernels.matmul(t, x, n_threads=2), err_msg=f"{nm}, {n} rows")
    finally:
        kernels.set_isa(kernels.best_isa())


def test_matmul_threads_agree_exactly() -> None:
    """Threads split rows, never a dot product: results are identical for any count."""
    rng = np.random.default_rng(3)
    t = weight_tensor(kernels.WEIGHT_TYPES["Q4_K"], 300, 512, rng)
    x = rng.standard_normal((9, 512)).astype(np.float32)
    one = kernels.matmul(t, x, n_threads=1)
    for threads in (2, 5, 16):
        np.testing.assert_array_equal(kernels.matmul(t, x, n_threads=threads), one)


def test_matmul_vector_and_out_buffer() -> None:
    rng = np.random.default_rng(4)
    t = weight_tensor(kernels.WEIGHT_TYPES["Q8_0"], 40, 64, rng)
    x = rng.standard_normal(64).astype(np.float32)
    y = kernels.matmul(t, x)
    assert y.shape == (40,)
    out = np.empty((1, 40), np.float32)
    kernels.matmul(t, x[None, :], out=out)
    np.testing.assert_array_equal(out[0], y)


def test_matmul_on_real_weights(smollm2_path) -> None:
    """A real Q4_1 projection of SmolLM2 against float64."""
    with GGUFFile(smollm2_path) as f:
        t = f.tensors["blk.0.attn_q.weight"]
        assert t.type == QT.Q4_1
        w = oracle_dequantize(t)
        x = np.random.default_rng(5).standard_normal((3, w.shape[1])).astype(np.float32)
        got = kernels.matmul(t, x, n_threads=2)
        want = x.astype(np.float64) @ w.astype(np.float64).T
        assert (np.abs(got - want) <= _activation_error_bound(t.type, t, w, x)).all()


@pytest.mark.parametrize("act", ["Q8_0", "Q8_1", "Q8_K"])
def test_activation_quantizers(act: str) -> None:
    """Every ISA's quantizer rebuilds x within half a step (plus fp16 scale rounding)."""
    qt = kernels.ACT_TYPES[act]
    B = kernels.type_info(qt).block_size
    rng = np.random.default_rng(6)
    x = (rng.standard_normal(8 * 256) * rng.uniform(0.01, 100)).astype(np.float32)
    x[:B] = 0.0  # an all-zero block
    step = np.repeat(np.abs(x).reshape(-1, B).max(axis=1) / 127.0, B)
    for isa in ISAS:
        q = kernels.quantize_act(qt, x, isa=isa)
        back = kernels.dequantize_act(qt, q)
        assert (np.abs(back - x) <= step * (0.5 + 127 * 2.0**-11) + 1e-30).all(), isa
        assert not back[:B].any()


@pytest.mark.parametrize("act", ["Q8_0", "Q8_1", "Q8_K"])
def test_activation_quantizers_total_over_nonfinite_values(act: str) -> None:
    """A block holding NaN or inf comes back all NaN on every ISA (its dot products are NaN),
    the blocks around it are untouched, and blocks of tiny values (whose inverse scale would be
    inf) come back near zero. The Q8_K quantizer used to run past the row on a NaN block."""
    qt = kernels.ACT_TYPES[act]
    B = kernels.type_info(qt).block_size
    rng = np.random.default_rng(9)
    blocks = rng.standard_normal((6, B)).astype(np.float32)
    blocks[0, :] = np.nan
    blocks[1, 7] = np.nan
    blocks[2, 0] = np.inf
    blocks[3, -1] = -np.inf
    blocks[4] *= np.float32(1e-39)  # denormal: 127 / amax overflows
    x = blocks.reshape(-1)
    for isa in ISAS:
        back = kernels.dequantize_act(qt, kernels.quantize_act(qt, x, isa=isa)).reshape(6, B)
        assert np.isnan(back[:4]).all(), isa
        assert np.isfinite(back[4:]).all() and (np.abs(back[4]) <= 1e-38).all(), isa
        step = np.abs(blocks[5]).max() / 127
        assert (np.abs(back[5] - blocks[5]) <= step * (0.5 + 127 * 2.0**-11)).all(), isa


def test_q8_0_reference_quantizer_is_ggufs() -> None:
    """The reference Q8_0 quantizer (largest magnitude taken from the bit patterns) writes
    gguf's numpy Q8_0 bytes, bit for bit, from tiny to large values."""
    rng = np.random.default_rng(10)
    x = (rng.standard_normal((64, 32)) * np.logspace(-30, 5, 64)[:, None]).astype(np.float32)
    x[3] = 0.0
    want = gguf.quants.quantize(x.reshape(1, -1), QT.Q8_0).reshape(-1)
    got = kernels.quantize_act(kernels.ACT_TYPES["Q8_0"], x, isa="ref")
    assert np.array_equal(got, want)


# ---------------------------------------------------------------------------
# Errors


def test_bad_inputs_raise_kernel_error() -> None:
    rng = np.random.default_rng(8)
    t = weight_tensor(kernels.WEIGHT_TYPES["Q4_0"], 4, 64, rng)
    with pytest.raises(kernels.KernelError, match="columns"):
        kernels.matmul(t, np.zeros((2, 65), np.float32))
    with pytest.raises(kernels.KernelError, match="bytes"):
        kernels.dequantize(kernels.RawTensor(t.type, (4, 64), t.data[:-1]))
    with pytest.raises(kernels.KernelError, match="multiple of 32"):
        kernels.dequantize(kernels.RawTensor(t.type, (4, 48), t.data[: 4 * 18 + 0]))
    with pytest.raises(kernels.KernelError, match="not supported"):
        kernels.dequantize(kernels.RawTensor(16, (256,), np.zeros(66, np.uint8)))  # IQ2_XXS
    with pytest.raises(kernels.KernelError, match="not available"):
        kernels.set_isa("sse9")


@pytest.mark.parametrize("isa", ISAS)
def test_softmax_and_swiglu_against_float64(isa: str) -> None:
    """Every ISA's softmax and SwiGLU (AVX2: a vector exp) within a few float ulps of float64,
    over lengths with and without a vector tail and inputs from deep underflow to overflow."""
    rng = np.random.default_rng(8)
    kernels.set_isa(isa)
    try:
        for n in (1, 7, 8, 33, 1000, 4099):
            x = (rng.standard_normal(n) * 30).astype(np.float32)
            got = x.copy()
            lib.lp_softmax(ffi.cast("float *", got.ctypes.data), n)
            want = np.exp(x.astype(np.float64) - x.max())
            want /= want.sum()
            assert np.allclose(got, want, rtol=1e-5, atol=1e-37), f"softmax n={n}"
        g = np.concatenate([rng.standard_normal(10001) * 20, [-200.0, -88.5, -87.0, 0.0, 87.0, 89.0, 200.0]])
        g = g.astype(np.float32)
        up = rng.standard_normal(g.size).astype(np.float32)
        got = g.copy()
        lib.lp_swiglu(ffi.cast("float *", got.ctypes.data), ffi.cast("float *", up.ctypes.data), g.size)
        want = g.astype(np.float64) / (1 + np.exp(-g.astype(np.float64))) * up
        assert np.allclose(got, want, rtol=2e-6, atol=1e-37), "swiglu"
    finally:
        kernels.set_isa(kernels.best_isa())


def test_isa_from_environment() -> None:
    """LLAMAPACK_ISA picks the instruction set at import; one the CPU lacks is
    reported on stderr in one line and the best available is kept."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    code = "from runtime import kernels; print(kernels.get_isa())"
    root = str(Path(__file__).resolve().parent.parent)
    for want in ISAS:
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                             env={**os.environ, "LLAMAPACK_ISA": want.upper()})
        assert run.returncode == 0 and run.stdout.strip() == want and run.stderr == ""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "LLAMAPACK_ISA": "sse9"})
    assert run.returncode == 0 and run.stdout.strip() == kernels.best_isa()
    assert run.stderr.count("\n") == 1 and "LLAMAPACK_ISA" in run.stderr and "sse9" in run.stderr
