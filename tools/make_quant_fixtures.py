"""Regenerate tests/fixtures/quant/: what llama.cpp's quantizer writes, for tests/test_quantize*.py.

Dev only (CI reads the committed fixtures and never runs this); llama.cpp, through llama-cpp-python
0.3.36, is the oracle. From the repository root, with the venv that has llama_cpp:

    /work/main/.venv/bin/python -m tools.make_quant_fixtures

1. blocks.npz + blocks.json: BLOCK_ROWS rows of 256 floats (random at several scales, and the edge
   cases: all-zero, constant, one outlier, huge ranges, denormals, tiny, ties, fp16 overflow) run
   through ggml_quantize_chunk (libggml-base, the entry llama_model_quantize uses) for every type;
   recorded: each row's output SHA-256 and whether ggml_validate_row_data accepts it (a row with
   an fp16 scale overflowed to inf is refused).
2. models.json: for each tiny model of MODELS (tools/random_gguf.py, deterministic seeds: the tests
   rewrite the same input files) and every mix, llama_model_quantize's output (nthread 2, no
   imatrix): the whole file's SHA-256 and size, general.file_type, and per tensor in file order
   "name type hash", the hash the first HASH_CHARS hex digits of the SHA-256 of its bytes.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from packer.mixes import MIXES
from tools.random_gguf import QT, ModelSpec, write_model

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "quant"
HASH_CHARS = 16   # of a SHA-256 in hex, per tensor and per block row (64 bits: plenty to tell bytes apart)
BLOCK_TYPES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q2_K": 10, "Q3_K": 11, "Q4_K": 12,
               "Q5_K": 13, "Q6_K": 14, "F16": 1, "BF16": 30}

# (name, spec, input types): row lengths multiples of 256 (dense, moe) and not (odd: 160 and 352,
# multiples of 32; narrow: 48 and 80, not even that: F16 fallbacks); tied output (odd, narrow);
# 4 query heads per kv head (odd); 8 experts (moe); a quantized input, requantized (odd Q8_0;
# llama_model_quantize with allow_requantize, as tools/bench_models.quantize calls it).
MODELS: list[tuple[str, ModelSpec, tuple[str, ...]]] = [
    ("dense", ModelSpec(n_vocab=96, n_embd=256, n_layer=8, n_head=2, n_head_kv=1, n_ff=256, init="fan_in",
                        seed=11), ("F32", "F16", "BF16")),
    ("odd", ModelSpec(n_vocab=64, n_embd=160, n_layer=4, n_head=4, n_head_kv=1, n_ff=352, tied=True,
                      init="fan_in", seed=12), ("F32", "Q8_0")),
    ("narrow", ModelSpec(n_vocab=40, n_embd=48, n_layer=2, n_head=4, n_head_kv=2, n_ff=80, tied=True,
                         init="fan_in", seed=13), ("F16",)),
    ("moe", ModelSpec(n_vocab=64, n_embd=256, n_layer=2, n_head=2, n_head_kv=1, n_ff=256, n_expert=8,
                      n_expert_used=2, init="fan_in", seed=14), ("BF16",)),
]


def model_spec(name: str, input_type: str) -> ModelSpec:
    """The spec of MODELS' `name` stored as `input_type` (its matrices; norms and router F32)."""
    import dataclasses

    spec = next(s for n, s, _ in MODELS if n == name)
    return dataclasses.replace(spec, qtype=QT[input_type])


def block_inputs() -> np.ndarray:
    """(rows, 256) float32: the random and edge-case rows of blocks.npz."""
    rng = np.random.default_rng(2026)
    rows: list[np.ndarray] = []
    for scale in (1.0, 1e-3, 1e3, 30.0):
        rows += [rng.standard_normal(256) * scale for _ in range(4)]
    rows += [rng.uniform(0, 1, 256), -rng.uniform(0, 1, 256), rng.uniform(-1, 0.1, 256)]  # one-signed, skewed
    rows += [np.zeros(256), np.full(256, 0.75), np.full(256, -2.5), np.full(256, 1e-3)]   # all-zero, constant
    outlier = rng.standard_normal(256) * 0.01
    outlier[77] = 40.0
    rows.append(outlier)
    sparse = np.zeros(256)
    sparse[rng.integers(0, 256, 9)] = rng.standard_normal(9)
    rows.append(sparse)
    rows.append(rng.standard_normal(256) * np.where(rng.uniform(size=256) < 0.5, 1e4, 1e-4))  # huge range
    rows.append(np.concatenate([np.full(16, 5.0), -np.full(16, 5.0), rng.standard_normal(224)]))  # +-max ties
    rows.append(np.round(rng.standard_normal(256) * 8) / 2)       # ties at half steps
    rows.append(rng.standard_normal(256) * 1e-40)                  # denormals
    rows.append(rng.standard_normal(256) * 1e-38)                  # tiny: inverse scales overflow
    mixed = rng.standard_normal(256) * 1e-41
    mixed[::32] = 1e-30
    rows.append(mixed)
    rows.append(rng.standard_normal(256) * 3e5)                    # Q8_0 fits fp16, Q4_0 does not
    rows.append(rng.standard_normal(256) * 1e7)                    # every fp16 scale overflows
    rows.append(rng.standard_normal(256) * 65504 / 3)              # near the F16 limit
    rows.append(np.linspace(-1, 1, 256))
    return np.array(rows, np.float32)


def _ggml():  # type: ignore[no-untyped-def]
    import llama_cpp

    libdir = Path(llama_cpp.__file__).parent / "lib"
    lib = ctypes.CDLL(str(libdir / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_validate_row_data.restype = ctypes.c_bool
    lib.ggml_validate_row_data.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    return lib


def make_blocks() -> dict:
    lib = _ggml()
    x = block_inputs()
    rows, k = x.shape
    out: dict = {"rows": rows, "types": {}}
    for name, t in BLOCK_TYPES.items():
        rs = lib.ggml_row_size(t, k)
        y = np.zeros(rows * rs, np.uint8)
        lib.ggml_quantize_chunk(t, x.ctypes.data, y.ctypes.data, 0, rows, k, None)
        out["types"][name] = {
            "row_bytes": rs,
            "sha256": [hashlib.sha256(y[i * rs:(i + 1) * rs].tobytes()).hexdigest()[:HASH_CHARS] for i in range(rows)],
            "valid": [bool(lib.ggml_validate_row_data(t, y[i * rs:].ctypes.data, rs)) for i in range(rows)],
        }
    np.savez_compressed(OUT / "blocks.npz", x=x)
    return out


def llama_quantize(src: Path, dst: Path, mix: str) -> None:
    from tools.bench_models import quantize

    quantize(src, dst, mix, log=lambda *a: None)


def describe(path: Path, mix: str) -> dict:
    from runtime.gguf import GGUFFile

    data = path.read_bytes()
    with GGUFFile(path) as f:
        return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "file_type": f.metadata["general.file_type"],
                "quantization_version": f.metadata["general.quantization_version"],
                "tensors": [f"{t.name} {t.type.name} {hashlib.sha256(t.data.tobytes()).hexdigest()[:HASH_CHARS]}"
                            for t in f.tensors.values()]}


def make_models() -> dict:
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, _, inputs in MODELS:
            for itype in inputs:
                src = Path(tmp) / f"{name}-{itype}.gguf"
                write_model(src, model_spec(name, itype))
                key = f"{name}-{itype}"
                out[key] = {"input_sha256": hashlib.sha256(src.read_bytes()).hexdigest(), "mixes": {}}
                for mix in MIXES:
                    dst = Path(tmp) / f"{key}-{mix}.gguf"
                    llama_quantize(src, dst, mix)
                    out[key]["mixes"][mix] = describe(dst, mix)
                    dst.unlink()
                    print(f"{key} {mix}: {out[key]['mixes'][mix]['size']} bytes", flush=True)
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    import llama_cpp

    meta = {"oracle": f"llama-cpp-python {llama_cpp.__version__} (llama_model_quantize, ggml_quantize_chunk)"}
    (OUT / "blocks.json").write_text(json.dumps({**meta, **make_blocks()}, indent=1) + "\n")
    if "--blocks-only" not in sys.argv:
        (OUT / "models.json").write_text(json.dumps({**meta, **make_models()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
