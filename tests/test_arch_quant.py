"""Every architecture of runtime/arch.py quantized, against llama.cpp: the tiny random-weight models
of tools/make_arch_fixtures.py (QUANT_MODELS: llama with Llama 3's rope_freqs and with YaRN, qwen2,
qwen3, qwen3moe, gemma3, phi3) in each seed mix (Q4_K_M, Q4_0, Q5_K_M, Q6_K, Q8_0, Q2_K, Q3_K_M).

The oracle: tests/fixtures/arch/llama_cpp_quant.json, llama.cpp's outputs on the files its
llama_model_quantize wrote from the same F32 model. Here the F32 model is written again (its SHA-256
checked) and quantized in-process by packer/quantize.py, which must give llama.cpp's file byte for
byte (its recorded SHA-256: the per-tensor type choices of each architecture's names, e.g. phi3's
attn_qkv, a tied token_embd, eight experts, are llama.cpp's). On that file the engine is held to llama.cpp with tests/test_fidelity.py's checks (the top token
of each prompt equal, the top-20 logits close, greedy steps equal where llama.cpp's choice is not a
near-tie), with tolerances measured on these models rather than on SmolLM2's:

Both engines round every matmul input to 8 bits; in these small, sharp random models a last-bit
difference in a float sum (summation order, a different kernel for the same product) flips some of
those roundings, and the logits move by as much as the rounding itself: the engine against itself,
a 40-token prompt in chunks of 4 (row dot products) instead of one batch (the batched product),
moves 0.5% of the logit range; it and llama.cpp are each 0.2-1.0% of the range from the exact
float64 forward pass of the file's own (dequantized) weights, and differ from each other by up to
1.2% (the 1-token prompts, one attention position, are bit-identical). Hence: top-20 logits within
LOGITS_REL; the greedy run teacher-forced (the engine fed llama.cpp's tokens) with the steps whose
llama.cpp margin is below NEAR_TIE left out (the flips measured were at margins of 0.09-0.71%; at
least 10 of 16 steps per file remain); and accuracy itself: the engine's top-20 logits no further
from the exact forward pass than llama.cpp's, give or take EXACT_SLACK (measured: up to 0.32%
further, and as often nearer).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from runtime.gguf import GGUFFile
from runtime.model import Model
from tests.test_fidelity import _compare_logits
from tests.test_quantize import quantized_bytes
from tests.tiny_models import reference_logits, write_tiny_llama
from tools.make_arch_fixtures import QUANT_MIXES, dequantized_weights, quant_spec

DOC = json.loads((Path(__file__).parent / "fixtures" / "arch" / "llama_cpp_quant.json").read_text())
NAMES = sorted(DOC["models"])
LOGITS_REL = 0.02
NEAR_TIE = 0.01
EXACT_SLACK = 0.006


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("arch-quant")
    out = {}
    for name in NAMES:
        path = d / f"{name}-F32.gguf"
        write_tiny_llama(path, quant_spec(name))
        assert hashlib.sha256(path.read_bytes()).hexdigest() == DOC["models"][name]["sha256"], \
            f"{name}: tools/random_gguf.py no longer writes the F32 model llama.cpp quantized"
        out[name] = path
    return out


def test_every_seed_mix_is_recorded() -> None:
    assert NAMES == ["gemma3", "llama-rope_freqs", "llama-yarn", "phi3", "qwen2", "qwen3", "qwen3moe"]
    for name in NAMES:
        assert tuple(DOC["models"][name]["mixes"]) == QUANT_MIXES


@pytest.mark.parametrize("mix", QUANT_MIXES)
@pytest.mark.parametrize("name", NAMES)
def test_quantized_model_matches_llama_cpp(sources, tmp_path: Path, name: str, mix: str) -> None:
    rec, model_rec = DOC["models"][name]["mixes"][mix], DOC["models"][name]
    path = tmp_path / f"{name}-{mix}.gguf"
    path.write_bytes(quantized_bytes(sources[name], mix))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == rec["sha256"], \
        f"{name} {mix}: packer/quantize.py does not write the file llama.cpp's quantizer wrote"
    spec = quant_spec(name)
    exact_spec = dataclasses.replace(spec, weights=dequantized_weights(path))
    with GGUFFile(path) as f:
        model = Model(f, n_ctx=spec.n_ctx, n_threads=2)
        for i, (ids, p) in enumerate(zip(model_rec["prompts"], rec["prompts"])):
            got = model.forward(ids, 0)
            span = p["logit_max"] - p["logit_min"]
            _compare_logits(got, p["top_ids"], p["top_logits"], span, f"{name} {mix} prompt {i}", LOGITS_REL)
            exact = reference_logits(exact_spec, ids)[-1]
            top = p["top_ids"]
            ours = float(np.abs(got[top] - exact[top]).max()) / span
            assert ours <= p["exact_rel"] + EXACT_SLACK, \
                f"{name} {mix} prompt {i}: {ours:.2%} of the range from exact, llama.cpp {p['exact_rel']:.2%}"
        _assert_greedy_steps(model, model_rec["prompts"][DOC["greedy_prompt"]], rec["greedy"], f"{name} {mix}")


def _assert_greedy_steps(model: Model, prompt: list[int], greedy: dict, what: str) -> None:
    """Fed llama.cpp's greedy tokens one by one, the engine's top token is llama.cpp's at every step
    whose llama.cpp margin is NEAR_TIE or more."""
    logits, pos, compared = model.forward(prompt, 0), len(prompt), 0
    for step, (tok, margin) in enumerate(zip(greedy["tokens"], greedy["margins"])):
        if margin >= NEAR_TIE:
            assert int(np.argmax(logits)) == tok, f"{what}: greedy step {step} (llama.cpp's margin {margin:.2%})"
            compared += 1
        logits = model.forward([tok], pos)
        pos += 1
    assert compared >= 10, f"{what}: only {compared} clear greedy steps"
