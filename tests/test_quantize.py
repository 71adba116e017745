"""The weight quantizers and the mixes against llama.cpp's recorded outputs (tests/fixtures/quant,
made by tools/make_quant_fixtures.py with llama-cpp-python 0.3.36 as the oracle).

- blocks: every type's quantizer (C, lp_quantize_rows; the plain C and the AVX2 searches) on random
  and edge-case rows gives the bytes ggml_quantize_chunk gave, row by row, and refuses exactly the
  rows ggml_validate_row_data refused (an fp16 scale overflowed);
- models: for each tiny model (F32, F16, BF16 and a Q8_0 input requantized; row lengths multiples
  of 256 and not; tied output; MoE) and every mix, packer.quantize writes the file
  llama_model_quantize wrote: the same SHA-256 of the whole file, hence the same metadata, tensor
  order, types and bytes (per-tensor hashes are compared first, for a readable failure);
- NaN or inf in a weight is refused, naming the row; thread count does not change the bytes.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from packer import quantize as Q
from packer.mixes import MIXES, MixError, find_mix
from runtime import kernels
from runtime._kernels import ffi, lib
from runtime.gguf import GGUFFile
from tools.make_quant_fixtures import BLOCK_TYPES, HASH_CHARS, MODELS, model_spec
from tools.random_gguf import write_model

FIX = Path(__file__).resolve().parent / "fixtures" / "quant"
BLOCKS = json.loads((FIX / "blocks.json").read_text())
MODEL_FIX = json.loads((FIX / "models.json").read_text())


def quantize_rows(t: int, x: np.ndarray, n_threads: int = 2, src_type: int = 0) -> tuple[int, int, np.ndarray]:
    """(return code, first refused row, output bytes) of lp_quantize_rows on float rows x."""
    rows, k = x.shape
    bs, ts = ffi.new("int *"), ffi.new("int *")
    assert lib.lp_type_info(t, bs, ts, ffi.new("int *")) == 0
    out = np.zeros(rows * k // bs[0] * ts[0], np.uint8)
    work = np.zeros(n_threads * k, np.float32)
    bad = ffi.new("int64_t *")
    rc = lib.lp_quantize_rows(t, src_type, ffi.from_buffer(x), ffi.from_buffer(out), rows, k,
                              ffi.cast("float *", ffi.from_buffer(work)), n_threads, bad)
    return rc, bad[0], out


def short_hash(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:HASH_CHARS]


@pytest.fixture(params=sorted({"ref", kernels.best_isa()}))
def isa(request):
    """The plain C searches, and the SIMD ones where the CPU has them (quantize_k_avx2.c)."""
    before = kernels.get_isa()
    kernels.set_isa(request.param)
    yield request.param
    kernels.set_isa(before)


@pytest.mark.parametrize("name", list(BLOCK_TYPES))
def test_blocks_match_llama_cpp(name: str, isa: str) -> None:
    x = np.load(FIX / "blocks.npz")["x"]
    rec = BLOCKS["types"][name]
    rs = rec["row_bytes"]
    got, refused = [], []
    for i in range(len(x)):  # row by row, so that every refusal is seen
        rc, bad, out = quantize_rows(BLOCK_TYPES[name], x[i:i + 1])
        assert rc in (0, lib.LP_EOVERFLOW) and bad == (0 if rc else -1)
        assert len(out) == rs
        got.append(short_hash(out.tobytes()))
        refused.append(rc == lib.LP_EOVERFLOW)
    wrong = [i for i in range(len(x)) if got[i] != rec["sha256"][i]]
    assert not wrong, f"{name} ({isa}): rows {wrong} differ from llama.cpp's bytes"
    assert refused == [not v for v in rec["valid"]], f"{name}: refusals differ from ggml_validate_row_data"
    assert not all(refused)
    if name in ("Q4_0", "Q8_0", "F16"):
        assert any(refused)  # the fixture does hold rows these types cannot store


def test_bytes_do_not_depend_on_the_thread_count() -> None:
    x = np.load(FIX / "blocks.npz")["x"][:20]
    for t in (BLOCK_TYPES["Q4_K"], BLOCK_TYPES["Q4_0"]):
        one = quantize_rows(t, x, n_threads=1)[2]
        for n in (2, 3, 7):
            assert np.array_equal(quantize_rows(t, x, n_threads=n)[2], one)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_rows_are_refused(bad: float) -> None:
    x = np.random.default_rng(0).standard_normal((6, 256)).astype(np.float32)
    x[4, 100] = bad
    x[5, 3] = bad
    for name, t in BLOCK_TYPES.items():
        rc, row, _ = quantize_rows(t, x, n_threads=3)
        assert (rc, row) == (lib.LP_ENONFINITE, 4), name


def test_f16_source_rows() -> None:
    """F16 input is read exactly: the same bytes as from its float32 values."""
    x = np.load(FIX / "blocks.npz")["x"][:16]
    h = x.astype(np.float16)
    for t in (BLOCK_TYPES["Q6_K"], BLOCK_TYPES["Q5_1"]):
        assert np.array_equal(quantize_rows(t, h, src_type=1)[2], quantize_rows(t, h.astype(np.float32))[2])


def test_mix_names() -> None:
    assert find_mix("q4_k_m") == "Q4_K_M"
    with pytest.raises(MixError, match="unknown quantization type 'Q4_K_X': one of Q2_K, Q3_K_S") as e:
        find_mix("Q4_K_X")
    assert "\n" not in str(e.value)
    assert set(MIXES) == set(MODEL_FIX["dense-F32"]["mixes"])  # every mix has its recorded files


def quantized_bytes(src: Path, mix: str, allow_requantize: bool = False, n_threads: int = 2) -> bytes:
    with GGUFFile(src) as f:
        qp = Q.plan(f, mix, allow_requantize)
        buf = bytearray(qp.size)

        def emit(data, pos: int) -> None:
            view = memoryview(data).cast("B")
            buf[pos:pos + len(view)] = view

        crc = Q.write(qp, emit, n_threads)
    assert crc == zlib.crc32(buf)
    return bytes(buf)


INPUTS = [(name, itype) for name, _, inputs in MODELS for itype in inputs]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("quant-models")
    out = {}
    for name, itype in INPUTS:
        key = f"{name}-{itype}"
        out[key] = d / f"{key}.gguf"
        write_model(out[key], model_spec(name, itype))
        assert hashlib.sha256(out[key].read_bytes()).hexdigest() == MODEL_FIX[key]["input_sha256"], (
            f"{key}: tools/random_gguf.py no longer writes the recorded input")
    return out


@pytest.mark.parametrize("key", [f"{n}-{t}" for n, t in INPUTS])
def test_every_mix_matches_llama_cpp(model_files, key: str) -> None:
    for mix, rec in MODEL_FIX[key]["mixes"].items():
        data = quantized_bytes(model_files[key], mix, allow_requantize=True)
        if hashlib.sha256(data).hexdigest() == rec["sha256"]:
            continue
        path = model_files[key].with_name(f"{key}-{mix}.gguf")
        path.write_bytes(data)
        with GGUFFile(path) as f:
            ours = [f"{t.name} {t.type.name} {short_hash(t.data.tobytes())}" for t in f.tensors.values()]
            assert (f.metadata["general.file_type"], ours) == (rec["file_type"], rec["tensors"]), f"{key} {mix}"
        pytest.fail(f"{key} {mix}: tensors agree but the file differs (metadata or layout)")


def test_the_fixtures_cover_the_rules() -> None:
    """The recorded files exercise what the mixes decide: fallbacks, F16 fallbacks, tied output, MoE bumps."""
    def types(key: str, mix: str) -> dict[str, str]:
        return dict(t.split()[:2] for t in MODEL_FIX[key]["mixes"][mix]["tensors"])

    dense = types("dense-F32", "Q4_K_M")
    assert dense["blk.0.ffn_down.weight"] == "Q6_K" and dense["blk.1.ffn_down.weight"] == "Q4_K"
    assert dense["output.weight"] == "Q6_K" and dense["blk.0.attn_norm.weight"] == "F32"
    odd = types("odd-F32", "Q2_K")
    assert odd["blk.0.attn_q.weight"] == "Q4_0" and odd["token_embd.weight"] == "Q8_0"  # 160 columns
    assert types("narrow-F16", "Q4_0")["blk.0.attn_q.weight"] == "F16"                  # 48 columns
    moe = types("moe-BF16", "Q4_K_M")
    assert moe["blk.0.attn_v.weight"] == "Q8_0" and moe["blk.0.attn_output.weight"] == "Q5_K"
    assert moe["blk.0.ffn_gate_inp.weight"] == "F32"
    assert MODEL_FIX["dense-F32"]["mixes"]["Q4_K_M"]["file_type"] == 15


def test_requantizing_is_refused_unless_allowed(model_files) -> None:
    with GGUFFile(model_files["odd-Q8_0"]) as f:
        with pytest.raises(Q.QuantizeError, match="already quantized .Q8_0.: .*--allow-requantize"):
            Q.plan(f, "Q4_K_M")
        Q.plan(f, "Q8_0")  # nothing to convert: allowed


def test_nan_weight_is_refused_naming_the_tensor(tmp_path, model_files) -> None:
    from tools.random_gguf import rewrite_gguf

    with GGUFFile(model_files["narrow-F16"]) as f:
        w = f.tensors["blk.1.ffn_up.weight"]
        values = np.frombuffer(w.data.tobytes(), np.float16).astype(np.float32).reshape(w.shape)
    values[3, 5] = np.nan
    bad = rewrite_gguf(model_files["narrow-F16"], tmp_path / "nan.gguf", tensors={"blk.1.ffn_up.weight": values})
    with pytest.raises(Q.QuantizeError, match=r"tensor 'blk.1.ffn_up.weight' holds NaN or inf \(row 3\)"):
        quantized_bytes(bad, "Q4_0")
