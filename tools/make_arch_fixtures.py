#!/usr/bin/env python3
"""Regenerate tests/fixtures/arch/llama_cpp_logits.json: llama.cpp's logits for a tiny random-weight
model of each architecture and flag in runtime/arch.py.

Dev only (CI reads the JSON and never runs this): llama.cpp through llama-cpp-python is the oracle.
Run from the repository root with a Python that has llama_cpp and gguf, e.g.
`/work/main/.venv/bin/python -m tools.make_arch_fixtures`.

`python -m tools.make_arch_fixtures quant` writes tests/fixtures/arch/llama_cpp_quant.json: per
architecture of QUANT_MODELS (row lengths 256, so the K-quants are what they say), the F32 model
quantized by llama_model_quantize to each mix of QUANT_MIXES; per file its SHA-256 (the test
quantizes in-process with packer/quantize.py and must get the same bytes; this script checks that
first and stops on a difference), llama.cpp's top-20 last-position logits on three prompts chosen
with a clear top token in every file, a greedy run with its margins, and how far llama.cpp's top-20
logits are from the float64 forward pass of the file's own (dequantized) weights.

`python -m tools.make_arch_fixtures chat` writes tests/fixtures/arch/real_chat.json: for the real
Gemma 3 270M, whose file has no chat template (llama_model_chat_template gives none, recorded), the
prompt of llama.cpp's built-in `gemma` template (llama_chat_apply_template by name) for
tools/make_chat_fixtures.py's conversations: the format a template-less file with Gemma's turn
tokens chats in.

`python -m tools.make_arch_fixtures real` writes tests/fixtures/arch/real_models.json instead:
llama.cpp on the real Qwen2.5-Coder-0.5B-Instruct and Gemma 3 270M (tests/real_models.py), per
text of REAL_TEXTS its tokens, top-40 last-position logits and a greedy run with its margins, as
tools/make_model_fixtures.py records SmolLM2 (tests/test_arch.py holds the C forward pass to them
with tests/test_fidelity.py's rules).

Per model of MODELS: the F32 GGUF is written by tools/random_gguf.py (seeded: the test writes the
same bytes again and checks their SHA-256), llama.cpp evaluates each prompt in one batch with a
context of the model's n_ctx, and its last-position logits are stored. The tests hold the float64
reference forward pass of tests/tiny_models.py to them (tests/test_arch.py); so does this script,
which prints the largest difference per model as a check of its own.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "arch" / "llama_cpp_logits.json"
PROMPT_LENGTHS = (1, 12, 40)

# The shared shape: 512 tokens of the "bytes" vocabulary, embd 128, 4 heads / 2 kv, ff 192,
# 2 layers, context 256, F32, fan_in draws. Each model changes what its flags need.
BASE: dict[str, Any] = dict(n_vocab=512, n_embd=128, n_layer=2, n_head=4, n_head_kv=2, n_ff=192, n_ctx=256,
                            rope_base=10000.0, vocab="bytes", init="fan_in")
MODELS: dict[str, dict[str, Any]] = {
    "llama-rope_freqs": dict(rope_freqs=True, rope_base=500000.0, seed=11),
    "llama-yarn": dict(rope_yarn=4.0, rope_orig_ctx=64, seed=12),
    "llama-bias-fused_qkv": dict(qkv_bias=True, fused_qkv=True, seed=13),
    "qwen2": dict(arch="qwen2", qkv_bias=True, tied=True, rope_base=1e6, seed=21),
    "qwen3": dict(arch="qwen3", key_length=64, rope_base=1e6, seed=31),
    "qwen3moe": dict(arch="qwen3moe", n_expert=8, n_expert_used=2, n_ff=64, key_length=64, seed=41),
    "gemma3": dict(arch="gemma3", n_layer=6, n_swa=8, key_length=64, n_head_kv=1, rope_base=1e6,
                   final_softcap=8.0, rms_eps=1e-6, seed=51),
    "gemma3-pattern2": dict(arch="gemma3", n_swa=5, swa_pattern=2, rope_base_swa=20000.0, seed=52),
    "phi3-longrope": dict(arch="phi3", fused_qkv=True, longrope=True, rope_orig_ctx=64, rope_attn_factor=1.19,
                          seed=61),
    "phi3-short": dict(arch="phi3", longrope=True, rope_orig_ctx=4096, n_ctx=256, seed=62),
}


REAL_OUT = ROOT / "tests" / "fixtures" / "arch" / "real_models.json"
REAL_N_CTX = 1024
REAL_N_GREEDY = 16
# A text of ~700 tokens: past Gemma 3's 512-position window, so its local layers drop the start.
LONG = ("Sliding-window attention keeps only the most recent positions in view on most layers, "
        "while every sixth layer still attends to the whole context. ") * 24 + "To summarise in one sentence:"
REAL_TEXTS = {
    "qwen2.5-coder": (
        "<|im_start|>user\nWrite a Python function that reverses a string.<|im_end|>\n<|im_start|>assistant\n",
        "def quicksort(arr):", "Python is a programming language that", "// Compute the factorial of n in C\n"),
    "gemma3": (
        "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n",
        "The quick brown fox", "def fibonacci(n):", "Once upon a time", LONG),
}


def real_record(path: Path, texts: tuple[str, ...]) -> dict[str, Any]:
    import llama_cpp

    from tools.make_model_fixtures import Oracle, text_record

    o = Oracle.__new__(Oracle)  # Oracle's n_ctx is the tiny models' 512: one prompt here is longer
    o.llm = llama_cpp.Llama(model_path=str(path), n_ctx=REAL_N_CTX, n_threads=2, logits_all=True, verbose=False,
                            seed=0)
    o.vocab = llama_cpp.llama_model_get_vocab(o.llm.model)
    try:
        prompts = [text_record(o, text, REAL_N_GREEDY) for text in texts]
    finally:
        o.close()
    for p in prompts:
        print(f"{path.name} {p['text'][:30]!r} ({len(p['tokens'])} tokens) -> {p['greedy']['text'][:60]!r}",
              file=sys.stderr)
    return {"n_ctx": REAL_N_CTX, "prompts": prompts}


def gguf_reference_spec(path: Path):  # -> tests.tiny_models.TinySpec
    """The float64 reference's spec of a real llama, qwen2 or gemma3 file: its hyperparameters read
    from the GGUF's own keys, its weights dequantized by the gguf package."""
    from runtime.gguf import GGUFFile
    from tests.tiny_models import TinySpec

    with GGUFFile(path) as f:
        md = f.metadata
    arch = md["general.architecture"]
    if arch not in ("llama", "qwen2", "gemma3"):
        raise ValueError(f"{path.name}: no reference spec for {arch}")
    W = dequantized_weights(path)
    k = lambda key, default=None: md.get(f"{arch}.{key}", default)  # noqa: E731
    return TinySpec(arch=arch, n_vocab=W["token_embd.weight"].shape[0], n_embd=k("embedding_length"),
                    n_layer=k("block_count"), n_head=k("attention.head_count"),
                    n_head_kv=k("attention.head_count_kv"), n_ff=k("feed_forward_length"),
                    n_ctx=k("context_length"), rope_base=k("rope.freq_base", 10000.0),
                    rms_eps=k("attention.layer_norm_rms_epsilon"), key_length=k("attention.key_length"),
                    n_swa=k("attention.sliding_window", 0), final_softcap=k("final_logit_softcapping", 0.0),
                    tied="output.weight" not in W, qkv_bias=arch == "qwen2", weights=W)


def real_exact_main() -> None:
    """Adds to each greedy run of real_models.json the exact pass's view of it (`exact_margins`): at
    each step, how far llama.cpp's token leads every other in a float64 forward pass of the file's
    own dequantized weights, as a fraction of the prompt's logit range (negative: the exact pass
    prefers another token). llama.cpp is not rerun."""
    from tests.real_models import gemma3_path, qwen25_coder_path
    from tests.tiny_models import reference_logits

    doc = json.loads(REAL_OUT.read_text(encoding="utf-8"))
    for name, path in {"qwen2.5-coder": qwen25_coder_path(), "gemma3": gemma3_path()}.items():
        spec = gguf_reference_spec(path)
        for p in doc["models"][name]["prompts"]:
            g, n0 = p["greedy"], len(p["tokens"])
            span = p["logit_max"] - p["logit_min"]
            ex = reference_logits(spec, p["tokens"] + g["tokens"][:-1])[n0 - 1:]
            margins = []
            for row, tok in zip(ex, g["tokens"]):
                margins.append(round(float(row[tok] - np.delete(row, tok).max()) / span, 6))
            g["exact_margins"] = margins
            print(f"{name} {p['text'][:30]!r}: exact margins {[round(100 * m, 2) for m in margins]} (% of the range)",
                  file=sys.stderr)
    REAL_OUT.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {REAL_OUT}", file=sys.stderr)


def real_main() -> None:
    from tests.real_models import gemma3_path, qwen25_coder_path

    paths = {"qwen2.5-coder": qwen25_coder_path(), "gemma3": gemma3_path()}
    doc = {"generator": "tools/make_arch_fixtures.py real",
           "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
           "models": {name: real_record(paths[name], texts) for name, texts in REAL_TEXTS.items()}}
    REAL_OUT.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {REAL_OUT} ({REAL_OUT.stat().st_size} bytes)", file=sys.stderr)
    real_exact_main()


def spec_of(name: str):  # -> tests.tiny_models.TinySpec
    from tests.tiny_models import TinySpec

    return TinySpec(**{**BASE, **MODELS[name]})


def prompts(spec, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[1] + [int(t) for t in rng.integers(3, spec.n_vocab, n - 1)] for n in PROMPT_LENGTHS]


def llama_cpp_last_logits(path: Path, n_ctx: int, ids: list[int]) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=2, logits_all=True, verbose=False, seed=0)
    try:
        llm.eval(ids)
        return np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
    finally:
        llm.close()


def main() -> None:
    from tests.tiny_models import reference_logits, write_tiny_llama

    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            spec = spec_of(name)
            path = Path(tmp) / f"{name}.gguf"
            write_tiny_llama(path, spec)
            entry: dict[str, Any] = {"spec": MODELS[name],
                                     "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "prompts": []}
            worst = 0.0
            for ids in prompts(spec, spec.seed):
                want = llama_cpp_last_logits(path, spec.n_ctx, ids)
                ref = reference_logits(spec, ids)[-1]
                worst = max(worst, float(np.abs(ref - want).max() / (want.max() - want.min())))
                entry["prompts"].append({"tokens": ids, "last_logits": [round(float(v), 5) for v in want]})
            models[name] = entry
            print(f"{name}: reference vs llama.cpp max |diff| {worst:.3%} of the logit range", file=sys.stderr)
    doc = {"generator": "tools/make_arch_fixtures.py", "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
           "base": BASE, "models": models}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)", file=sys.stderr)


# ---------------------------------------------------------------- quantized models (mode "quant")

QUANT_OUT = ROOT / "tests" / "fixtures" / "arch" / "llama_cpp_quant.json"
QUANT_MIXES = ("Q4_K_M", "Q4_0", "Q5_K_M", "Q6_K", "Q8_0", "Q2_K", "Q3_K_M")
# Every matrix's rows 256 long (embd, ff, q dim): the K-quant mixes use K-quants, not their fallbacks.
QUANT_BASE: dict[str, Any] = dict(n_vocab=512, n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=256, n_ctx=256,
                                  rope_base=10000.0, vocab="bytes", init="fan_in")
QUANT_MODELS: dict[str, dict[str, Any]] = {
    "llama-rope_freqs": dict(rope_freqs=True, rope_base=500000.0, seed=111),
    "llama-yarn": dict(rope_yarn=4.0, rope_orig_ctx=64, seed=112),
    "qwen2": dict(arch="qwen2", qkv_bias=True, tied=True, rope_base=1e6, seed=121),
    "qwen3": dict(arch="qwen3", n_head=8, key_length=64, rope_base=1e6, seed=131),
    "qwen3moe": dict(arch="qwen3moe", n_head=8, key_length=64, n_expert=8, n_expert_used=2, seed=141),
    "gemma3": dict(arch="gemma3", n_layer=6, n_swa=8, key_length=64, n_head_kv=1, tied=True, rope_base=1e6,
                   final_softcap=30.0, rms_eps=1e-6, seed=151),
    "phi3": dict(arch="phi3", fused_qkv=True, longrope=True, rope_orig_ctx=64, rope_attn_factor=1.19, seed=161),
}
QUANT_PROMPTS = (1, 12, 40)
QUANT_GREEDY_PROMPT = 1
QUANT_N_GREEDY = 16
QUANT_MARGIN = 0.02   # a chosen prompt's top-1 beats its top-2 by this much of the range in every file
N_TOP = 20


def quant_spec(name: str):  # -> tests.tiny_models.TinySpec
    from tests.tiny_models import TinySpec

    return TinySpec(**{**QUANT_BASE, **QUANT_MODELS[name]})


def dequantized_weights(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a GGUF as float32 values (numpy shape, row length last), read and
    dequantized by the gguf package."""
    import gguf

    out = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        shape = tuple(int(n) for n in reversed(t.shape))
        out[t.name] = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).reshape(shape)
    return out


def top_record(logits: np.ndarray, exact: np.ndarray) -> dict[str, Any]:
    """llama.cpp's top-N_TOP logits, its range and margin, and its distance to the exact forward."""
    top = np.argsort(-logits, kind="stable")[:N_TOP]
    span = float(logits.max() - logits.min())
    second = float(logits[top[1]])
    return {"top_ids": [int(i) for i in top], "top_logits": [round(float(logits[i]), 5) for i in top],
            "logit_min": round(float(logits.min()), 5), "logit_max": round(float(logits.max()), 5),
            "margin": round((float(logits[top[0]]) - second) / span, 6),
            "exact_rel": round(float(np.abs(logits[top] - exact[top]).max()) / span, 6)}


def _quant_files(name: str, tmp: Path) -> tuple[Path, dict[str, Path]]:
    """The F32 source and llama.cpp's file of each mix; each checked against packer/quantize.py."""
    from tests.test_quantize import quantized_bytes
    from tests.tiny_models import write_tiny_llama
    from tools.make_model_fixtures import quantize  # its log callback lives as long as the process

    src = tmp / f"{name}-F32.gguf"
    write_tiny_llama(src, quant_spec(name))
    files = {}
    for mix in QUANT_MIXES:
        dst = tmp / f"{name}-{mix}.gguf"
        quantize(src, dst, mix)
        ours = quantized_bytes(src, mix)
        if ours != dst.read_bytes():
            raise SystemExit(f"{name} {mix}: packer/quantize.py does not write llama.cpp's file")
        files[mix] = dst
    return src, files


def _choose_prompts(spec, oracles: dict[str, Any]) -> list[list[int]]:
    """Per length of QUANT_PROMPTS the first random prompt (BOS + ids; one token alone: any id) whose
    top-1 is clear in every file."""
    rng = np.random.default_rng(spec.seed + 7919)
    out = []
    for n in QUANT_PROMPTS:
        for _ in range(200):
            ids = [1] * (n > 1) + [int(t) for t in rng.integers(3, spec.n_vocab, n - (n > 1))]
            if min(_margin(o.last_logits(ids)) for o in oracles.values()) >= QUANT_MARGIN:
                out.append(ids)
                break
        else:
            raise SystemExit(f"no prompt of {n} tokens with a clear top token in every file")
    return out


def _margin(logits: np.ndarray) -> float:
    top2 = np.partition(logits, -2)[-2:]
    return float(top2[1] - top2[0]) / float(logits.max() - logits.min())


def quant_record(name: str, tmp: Path) -> dict[str, Any]:
    import llama_cpp

    from tests.tiny_models import reference_logits
    from tools.make_model_fixtures import ORACLE, Oracle

    spec = quant_spec(name)
    src, files = _quant_files(name, tmp)
    oracles = {}
    for mix, path in files.items():
        o = Oracle.__new__(Oracle)  # Oracle's n_ctx is 512, the model's is its own
        o.llm = llama_cpp.Llama(model_path=str(path), **{**ORACLE, "n_ctx": spec.n_ctx})
        o.vocab = llama_cpp.llama_model_get_vocab(o.llm.model)
        oracles[mix] = o
    try:
        prompts = _choose_prompts(spec, oracles)
        mixes = {}
        for mix, o in oracles.items():
            exact_spec = dataclasses.replace(spec, weights=dequantized_weights(files[mix]))
            recs = []
            for ids in prompts:
                recs.append(top_record(o.last_logits(ids).astype(np.float64), reference_logits(exact_spec, ids)[-1]))
            toks, margins = o.greedy(prompts[QUANT_GREEDY_PROMPT], QUANT_N_GREEDY)
            mixes[mix] = {"sha256": hashlib.sha256(files[mix].read_bytes()).hexdigest(), "prompts": recs,
                          "greedy": {"tokens": toks, "margins": [round(m, 6) for m in margins]}}
            shown = " ".join(f"{r['margin']:.1%}" for r in recs)
            print(f"{name} {mix}: margins {shown}, llama.cpp to exact "
                  f"{max(r['exact_rel'] for r in recs):.2%}, greedy min margin {min(margins):.2%}", file=sys.stderr)
    finally:
        for o in oracles.values():
            o.close()
    return {"spec": QUANT_MODELS[name], "sha256": hashlib.sha256(src.read_bytes()).hexdigest(), "prompts": prompts,
            "mixes": mixes}


def quant_main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        models = {name: quant_record(name, Path(tmp)) for name in QUANT_MODELS}
    doc = {"generator": "tools/make_arch_fixtures.py quant",
           "llama_cpp_python": importlib.metadata.version("llama-cpp-python"), "base": QUANT_BASE,
           "greedy_prompt": QUANT_GREEDY_PROMPT, "models": models}
    QUANT_OUT.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {QUANT_OUT} ({QUANT_OUT.stat().st_size} bytes)", file=sys.stderr)


# ---------------------------------------------------------------- chat without a template (mode "chat")

CHAT_OUT = ROOT / "tests" / "fixtures" / "arch" / "real_chat.json"


def chat_main() -> None:
    import llama_cpp

    from tests.real_models import gemma3_path
    from tools.make_chat_fixtures import CONVERSATIONS, apply_template

    llm = llama_cpp.Llama(model_path=str(gemma3_path()), n_ctx=64, vocab_only=True, verbose=False)
    tmpl = llama_cpp.llama_model_chat_template(llm.model, None)  # NULL: the file has none
    cases = []
    for cname, messages in CONVERSATIONS.items():
        if cname in ("bad_order", "tool_role"):
            continue
        for add_ass in (True, False):
            cases.append({"conversation": cname, "add_generation_prompt": add_ass,
                          "expected": apply_template(b"gemma", messages, add_ass)})
    llm.close()
    doc = {"generator": "tools/make_arch_fixtures.py chat",
           "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
           "model": "gemma3", "file_template": tmpl.decode() if tmpl else None, "template": "gemma",
           "cases": cases}
    CHAT_OUT.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {CHAT_OUT} ({len(cases)} cases)", file=sys.stderr)


if __name__ == "__main__":
    {"real": real_main, "real-exact": real_exact_main, "quant": quant_main, "chat": chat_main}.get(
        sys.argv[1] if sys.argv[1:] else "", main)()
