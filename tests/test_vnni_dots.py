"""The AVX-VNNI row dots (csrc/quants/avxvnni.h) against the AVX2 row dots they stand in for.

Where the CPU has AVX-VNNI (and LLAMAPACK_AVXVNNI is not 0) the traits table's AVX2 slots hold
the AVX-VNNI kernels; they must give the AVX2 kernels' results bit for bit, on any bytes: random
weight blocks, every quant at an end of its range, NaN and inf scales, activation quants of
-128, and activation rows quantized from NaN, inf and huge values. The AVX2 kernels themselves
are checked against float64 and the gguf package in test_kernels.py (which, on such a CPU, runs
through the AVX-VNNI ones too). Both kernels of a type are called directly (the library's
exported symbols, through ctypes), so a CPU with AVX-VNNI compares them in one process.
"""
from __future__ import annotations

import ctypes
import platform
import re
import subprocess

import numpy as np
import pytest

from tests.isautil import with_and_without_avxvnni

from runtime import _kernels, kernels
from tests.test_kernels import EXTREME_FILLS

X86 = platform.machine() in ("x86_64", "AMD64")
pytestmark = pytest.mark.skipif(not X86, reason="AVX-VNNI is x86")

SO = ctypes.CDLL(_kernels.__file__)
# the library's own switch: the CPU has AVX-VNNI and LLAMAPACK_AVXVNNI is not 0
VNNI = X86 and bool(SO.lp_gemm_avx2_vnni())
LEGACY = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
K_QUANTS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
# the AVX-VNNI kernels beyond vec_dot (each result must still be the AVX2 vec_dot's)
MORE_KINDS = {"Q5_0": ["vec_dot_4weights"],
              **{k: ["vec_dot_4acts", "vec_dot_rows"] for k in K_QUANTS}}

DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
ROWS = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def _sym(name: str) -> str:
    """The type's name in the kernels' symbols: q4_0, q4_K"""
    return name.lower().replace("_k", "_K")


def _fn(kind: str, name: str, isa: str, proto):  # type: ignore[no-untyped-def]
    return ctypes.cast(getattr(SO, f"lp_{kind}_{_sym(name)}_{isa}"), proto)


def _addr(a: np.ndarray) -> int:
    return a.ctypes.data


def weight_rows(name: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """rows x cols weights of type name, row after row: random blocks, then rows of one byte
    repeated (EXTREME_FILLS), the fp16 scale fields random, and a few of them inf or NaN."""
    qtype = kernels.WEIGHT_TYPES[name]
    info = kernels.type_info(qtype)
    nb = cols // info.block_size
    blocks = rng.integers(0, 256, (rows, nb, info.type_size), dtype=np.uint8)
    for r, fill in enumerate(EXTREME_FILLS[: rows // 2]):
        blocks[rows // 2 + r] = fill
    for off in kernels.half_fields(qtype):
        h = rng.uniform(-0.05, 0.05, (rows, nb)).astype(np.float16)
        h[1, 0], h[2, -1], h[3, nb // 2] = np.inf, np.nan, -np.inf
        blocks[:, :, off:off + 2] = h.view(np.uint8).reshape(rows, nb, 2)
    return blocks.reshape(rows, -1)


def act_rows(name: str, n: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """n activation rows in name's dot-product format: quantized from floats (one row holding
    NaN, inf and huge values), and raw random quant bytes (-128 included) with random scales.
    Q8_0's raw quants stop at -127: its AVX2 dot takes |w| against the activation with w's sign,
    which -128 has no room for (the activation quantizers never write it)."""
    act = kernels.type_info(kernels.WEIGHT_TYPES[name]).vec_dot_type
    x = (rng.standard_normal((n, cols)) * rng.uniform(0.01, 10, (n, 1))).astype(np.float32)
    x[0, 5], x[0, 300], x[0, 700], x[0, 900] = np.nan, np.inf, -np.inf, 3e38
    out = np.stack([kernels.quantize_act(act, x[r], isa="avx2") for r in range(n)])
    raw = out[n // 2:].copy()  # the second half: random quant bytes
    info = kernels.type_info(act)
    view = raw.reshape(raw.shape[0], -1, info.type_size)
    if info.block_size == 256:  # Q8_K: float d, 256 quants, 16 int16 sums
        view[:, :, 4:4 + 256] = rng.integers(0, 256, view[:, :, 4:4 + 256].shape, dtype=np.uint8)
        view[:, :, :4] = rng.uniform(0.001, 0.1, view.shape[:2]).astype(np.float32).view(np.uint8).reshape(*view.shape[:2], 4)
    else:  # Q8_0 / Q8_1: fp16 d (and s), 32 quants
        q0 = len(kernels.half_fields(act)) * 2
        span = 255 if name == "Q8_0" else 256  # Q8_0: every byte but 0x80 (-128)
        view[:, :, q0:] = ((rng.integers(0, span, view[:, :, q0:].shape) + 129 * (span == 255)) % 256).astype(np.uint8)
    out[n // 2:] = raw
    return np.ascontiguousarray(out)


def _dots(kind: str, name: str, isa: str, w: np.ndarray, y: np.ndarray, cols: int) -> np.ndarray:
    """Every weight row against every activation row through one kernel: vec_dot,
    vec_dot_4weights, vec_dot_4acts, or vec_dot_rows with nr = 1, 2, 4, 5 (results s[a][r])."""
    s = np.full((y.shape[0], w.shape[0]), -1.0, np.float32)
    for r in range(w.shape[0]):
        if kind == "vec_dot":
            f = _fn("vec_dot", name, isa, DOT)
            for a in range(y.shape[0]):
                f(cols, _addr(s[a:, r]), _addr(w[r]), _addr(y[a]))
        elif kind == "vec_dot_4weights":
            if r % 4 == 0:  # rows r..r+3 (side by side in w)
                f4w = ctypes.cast(getattr(SO, f"lp_vec_dot_4weights_{_sym(name)}_{isa}"),
                                  ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                                   ctypes.c_size_t, ctypes.c_void_p))
                for a in range(y.shape[0]):
                    f4w(cols, _addr(s[a, r:]), _addr(w[r]), w.shape[1], _addr(y[a]))
        elif kind == "vec_dot_4acts":
            f4 = ctypes.cast(getattr(SO, f"lp_vec_dot_4acts_{_sym(name)}_{isa}"),
                             ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t,
                                              ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t))
            for a in range(0, y.shape[0] - 3, 4):
                f4(cols, _addr(s[a:, r]), s.shape[1], _addr(w[r]), _addr(y[a]), y.shape[1])
        else:
            fr = _fn("vec_dot_rows", name, isa, ROWS)
            a = 0
            for nr in (1, 2, 4, 5):  # 12 rows
                fr(cols, _addr(s[a:, r]), s.shape[1], _addr(w[r]), _addr(y[a]), y.shape[1], nr)
                a += nr
    return s


def _assert_same_bits(got: np.ndarray, want: np.ndarray, label: str) -> None:
    diff = got.view(np.uint32) != want.view(np.uint32)
    assert not diff.any(), f"{label}: {diff.sum()} of {diff.size} differ, first at {np.argwhere(diff)[0]}"


@pytest.mark.parametrize("name", LEGACY + K_QUANTS)
def test_avx_vnni_row_dots_give_the_avx2_bits(name: str) -> None:
    """Each AVX-VNNI row dot of the type (vec_dot; Q5_0's vec_dot_4weights, the
    K-quants' vec_dot_4acts and vec_dot_rows) gives the AVX2 vec_dot's float bits for every
    weight row x activation row, NaN and inf results included. Without AVX-VNNI here, the traits table hands out the AVX2 kernels."""
    if not VNNI:
        _assert_dispatch(name, vnni=False)
        return
    rng = np.random.default_rng(sum(map(ord, name)))
    # legacy: an odd block count (the tail), and long enough for Q5_0's four-row body
    # (legacy.c, LP_DOT4W_MIN; shorter rows take vec_dot, as the decoding-shaped products below)
    cols = 2048 + 32 * 3 if name in LEGACY else 1024
    w = weight_rows(name, 2 * len(EXTREME_FILLS), cols, rng)
    y = act_rows(name, 12, cols, rng)
    want = _dots("vec_dot", name, "avx2", w, y, cols)
    assert np.isnan(want).any() and np.isfinite(want).mean() > 0.5 and (want != -1).all()
    for kind in ["vec_dot"] + MORE_KINDS.get(name, []):
        _assert_same_bits(_dots(kind, name, "avxvnni", w, y, cols), want, f"{name} {kind}")
    _assert_dispatch(name, vnni=True)


def _assert_dispatch(name: str, vnni: bool) -> None:
    """lp_traits(type)'s row holds the AVX-VNNI vec_dot where vnni, and never where not."""
    SO.lp_traits.restype = ctypes.c_void_p
    size = SO.lp_traits(1) - SO.lp_traits(0)
    row = ctypes.string_at(SO.lp_traits(kernels.WEIGHT_TYPES[name]), size)
    ptr = ctypes.cast(getattr(SO, f"lp_vec_dot_{_sym(name)}_avxvnni"), ctypes.c_void_p).value
    assert (ptr.to_bytes(8, "little") in row) == vnni


_MATMULS = """
import sys
import numpy as np
from runtime import kernels
from tests.test_vnni_dots import LEGACY, K_QUANTS, weight_rows
kernels.set_isa("avx2")
rng = np.random.default_rng(5)
out = []
for name in LEGACY + K_QUANTS:
    w = weight_rows(name, 40, 512, rng)
    t = kernels.RawTensor(kernels.WEIGHT_TYPES[name], (40, 512), w.reshape(-1))
    x = (rng.standard_normal((7, 512)) * rng.uniform(0.1, 10, (7, 1))).astype(np.float32)
    out += [kernels.matmul(t, x[:1], n_threads=2), kernels.matmul(t, x, n_threads=2)]
np.save(sys.argv[1], np.concatenate([o.reshape(-1) for o in out]))
"""


def test_llamapack_avxvnni_0_turns_them_off_with_the_same_bits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Decoding-shaped products (one activation row, and seven: below the batched product)
    of every type through the traits table, with LLAMAPACK_AVXVNNI=1 and =0: the same bits
    (without AVX-VNNI here, both runs are AVX2 and still have to agree)."""
    outs = with_and_without_avxvnni(_MATMULS, tmp_path)
    _assert_same_bits(outs[0], outs[1], "matmul")
    assert np.isnan(outs[0]).any() and np.isfinite(outs[0]).mean() > 0.5


def test_avx_vnni_instructions_stay_in_their_functions() -> None:
    """In the built library, VEX-encoded VPDPBUSD / VPDPWSSD (AVX-VNNI) appear only in functions
    named for AVX-VNNI, never in an AVX2 one (the code a CPU with AVX2 alone runs), and every
    AVX-VNNI row dot has them (its ISA brackets took effect) and no AVX-512 register."""
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", _kernels.__file__], capture_output=True,
                         text=True, check=True).stdout
    funcs: dict[str, list[str]] = {}
    for part in re.split(r"\n(?=[0-9a-f]+ <)", dis):
        m = re.match(r"[0-9a-f]+ <([^>]+)>:", part)
        if m:
            funcs[m.group(1)] = part.splitlines()[1:]
    vex = {f for f, lines in funcs.items() if any("{vex} vpdp" in ln for ln in lines)}
    assert vex and all("vnni" in f for f in vex), sorted(f for f in vex if "vnni" not in f)
    avx2 = [f for f in funcs if f.endswith("_avx2")]
    assert len(avx2) > 20 and not [f for f in avx2 if any("vpdp" in ln for ln in funcs[f])]
    rows = [f for f in funcs if re.fullmatch(r"lp_vec_dot(_4acts|_rows|_4weights)?_\w+_avxvnni", f)]
    assert len(rows) == 5 + 3 * 5 + 1, rows
    assert set(rows) <= vex
    assert not [f for f in rows if any("zmm" in ln or "{evex}" in ln for ln in funcs[f])]
