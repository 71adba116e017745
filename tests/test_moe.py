"""Mixture of experts in prompt processing: each expert runs once per call over every prompt row
routed to it (one batched product per expert), and an expert's rows are computed alike however few
of them it gets, so a prompt gives the same bits in one call and in chunks of 16 rows or more."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime import kernels
from runtime.gguf import GGUFFile
from runtime.model import Model

FIXTURES = Path(__file__).parent / "fixtures" / "models"
REF = json.loads((FIXTURES / "reference.json").read_text())
ISAS = [i for i in ("avx2", "avx512", "i8mm") if i in kernels.available_isas()] or [kernels.best_isa()]


def _run(model: Model, tokens: list[int], sizes: list[int]) -> np.ndarray:
    """All positions' logits of `tokens` given in calls of `sizes` rows, from an empty cache."""
    model.clear(0)
    out, at = [], 0
    for size in sizes:
        out.append(model.forward(tokens[at:at + size], at, all_logits=True, prompt=True))
        at += size
    assert at == len(tokens)
    return np.concatenate(out)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", ["moe-Q4_K_M.gguf", "moe-Q4_0.gguf"])
def test_moe_prompt_gives_the_same_bits_in_chunks(name: str, isa: str) -> None:
    """The Mixtral-shaped fixtures (8 experts, 2 used): a 112-token prompt in one call (each expert
    sees ~28 rows) and in chunks of 16, 40 and 56 rows (~4, ~10, ~14), every position's logits the
    same bits; the recorded 40-token prompt in chunks of 16 and 24 as llama.cpp's last logits
    (test_fidelity's yardstick: top token, top 20 within 1% of the range)."""
    ref = REF["models"][name]
    p = max(ref["prompts"], key=lambda q: len(q["tokens"]))
    rng = np.random.default_rng(7)
    long = [1] + [int(t) for t in rng.integers(3, REF["vocab"]["n_vocab"], 111)]
    kernels.set_isa(isa)
    try:
        with GGUFFile(FIXTURES / name) as f:
            model = Model(f, n_ctx=REF["oracle"]["n_ctx"], n_threads=2)
            whole = _run(model, long, [112])
            chunked = _run(model, long, [16, 40, 56])
            last = _run(model, p["tokens"], [16, len(p["tokens"]) - 16])[-1]
    finally:
        kernels.set_isa(kernels.best_isa())
    np.testing.assert_array_equal(chunked, whole)
    want = np.asarray(p["last_logits"], dtype=np.float64)
    top = np.argsort(-want, kind="stable")[:20]
    assert int(np.argmax(last)) == top[0]
    assert np.abs(last[top] - want[top]).max() <= 0.01 * (want.max() - want.min())
