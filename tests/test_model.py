"""The C forward pass against the numpy float64 reference (tests/tiny_models.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.gguf import GGUFFile
from runtime.model import Model, ModelError
from tests.tiny_models import QT, TinySpec, reference_logits, write_tiny_llama

TOKENS = [1, 5, 17, 42, 3, 88, 60, 7, 19, 33, 71, 2, 9]


def _load(tmp_path: Path, spec: TinySpec, **kw) -> tuple[Model, TinySpec]:
    path = tmp_path / "tiny.gguf"
    write_tiny_llama(path, spec)
    return Model(GGUFFile(path), **kw), spec


def _assert_close(got: np.ndarray, want: np.ndarray, rel: float) -> None:
    """Within rel of the logit range (the fp16 KV cache and 8-bit activations round)."""
    span = want.max() - want.min()
    err = np.abs(got - want).max()
    assert err <= rel * span, f"max error {err:.4g} is {err / span:.2%} of the logit range"


@pytest.mark.parametrize("spec", [
    TinySpec(),                                            # dense, GQA
    TinySpec(n_head_kv=4, seed=1),                         # plain multi-head
    TinySpec(rope_linear=2.0, rope_base=1e6, seed=2),      # linear rope scaling, Mistral's base
    TinySpec(tied=True, seed=3),                           # output tied to the embeddings
    TinySpec(n_expert=4, n_expert_used=2, seed=4),         # mixture of experts
], ids=["dense", "mha", "rope-linear", "tied", "moe"])
@pytest.mark.parametrize("threads", [1, 2])
def test_forward_f32_matches_reference(tmp_path: Path, spec: TinySpec, threads: int) -> None:
    model, spec = _load(tmp_path, spec, n_threads=threads)
    want = reference_logits(spec, TOKENS)
    _assert_close(model.forward(TOKENS, 0, all_logits=True), want, 2e-3)


@pytest.mark.parametrize("qtype", [QT.Q8_0, QT.Q4_0, QT.Q5_1], ids=["Q8_0", "Q4_0", "Q5_1"])
def test_forward_quantized_matches_reference(tmp_path: Path, qtype: QT) -> None:
    """The reference uses the stored (dequantized) weights exactly, so the gap is the
    8-bit rounding of every matmul input (half a step of amax/127 per value) compounded
    over 14 products and sharp random attention: 1-2.5% of the range measured, 4% allowed.
    The engine's fidelity tests hold it to llama.cpp, which rounds the same way."""
    model, spec = _load(tmp_path, TinySpec(qtype=qtype, n_embd=128, n_ff=128, seed=5))
    want = reference_logits(spec, TOKENS)
    _assert_close(model.forward(TOKENS, 0, all_logits=True), want, 4e-2)


def test_incremental_decode_equals_batch(tmp_path: Path) -> None:
    """Prompt in one batch, then one token at a time: the same logits as all at once."""
    model, spec = _load(tmp_path, TinySpec(seed=6))
    full = model.forward(TOKENS, 0, all_logits=True)
    model.forward(TOKENS[:5], 0)
    for i in range(5, len(TOKENS)):
        step = model.forward(TOKENS[i:i + 1], i)
        np.testing.assert_allclose(step, full[i], rtol=1e-4, atol=1e-4 * np.abs(full).max())


@pytest.mark.parametrize("threads", [2, 3])
def test_long_context_decode_split_by_positions(tmp_path: Path, threads: int) -> None:
    """Decoding with fewer kv heads than twice the threads splits each head's
    positions into segments (from 512 positions on) and merges their softmax sums:
    the same logits as one thread (no split) to float rounding, and the float64
    reference within the fp16 KV cache's rounding (0.23% of the range measured)."""
    spec = TinySpec(n_ctx=900, seed=10)
    tokens = [int(t) for t in np.random.default_rng(10).integers(0, spec.n_vocab, 790)]
    split, spec = _load(tmp_path, spec, n_threads=threads, max_batch=256)
    whole, _ = _load(tmp_path / ".." / tmp_path.name, spec, n_threads=1, max_batch=256)
    want = reference_logits(spec, tokens)
    for model in (split, whole):
        for p in range(0, 770, 256):
            model.forward(tokens[p:min(p + 256, 770)], p)
    for i in range(770, 790):
        got = split.forward(tokens[i:i + 1], i)
        _assert_close(got, whole.forward(tokens[i:i + 1], i), 1e-5)
        _assert_close(got, want[i], 5e-3)


def test_every_instruction_set_matches_reference(tmp_path: Path) -> None:
    """The forward pass (attention included: it has its own plain-C and AVX2 paths)
    on each instruction set the CPU has, prompt then decoding, against float64."""
    from runtime import kernels
    model, spec = _load(tmp_path, TinySpec(seed=11), n_threads=2)
    want = reference_logits(spec, TOKENS)
    try:
        for isa in kernels.available_isas():
            kernels.set_isa(isa)
            _assert_close(model.forward(TOKENS[:9], 0, all_logits=True), want[:9], 2e-3)
            for i in range(9, len(TOKENS)):
                _assert_close(model.forward(TOKENS[i:i + 1], i), want[i], 2e-3)
    finally:
        kernels.set_isa(kernels.best_isa())


def test_chunked_prompt_equals_single_batch(tmp_path: Path) -> None:
    model, _ = _load(tmp_path, TinySpec(seed=7), max_batch=4)
    assert model.max_batch == 4
    last = model.forward(TOKENS, 0)
    ref, spec = _load(tmp_path / ".." / tmp_path.name, TinySpec(seed=7))
    np.testing.assert_allclose(last, ref.forward(TOKENS, 0), rtol=1e-4, atol=1e-4)


def test_errors_are_model_errors(tmp_path: Path) -> None:
    model, spec = _load(tmp_path, TinySpec(n_ctx=16, seed=8))
    with pytest.raises(ModelError, match="context size"):
        model.forward(list(range(17)), 0)
    with pytest.raises(ModelError, match="outside the vocabulary"):
        model.forward([spec.n_vocab], 0)
    with pytest.raises(ModelError, match="no tokens"):
        model.forward([], 0)


def test_hidden_states_are_the_final_norm_of_the_reference(tmp_path: Path) -> None:
    """Model.hidden: (n, n_embd) final-norm hidden states; projected by the output
    weight they give the logits."""
    model, spec = _load(tmp_path, TinySpec(seed=9))
    hidden = model.hidden(TOKENS, 0)
    assert hidden.shape == (len(TOKENS), spec.n_embd)
    want = reference_logits(spec, TOKENS)
    got = hidden.astype(np.float64) @ spec.weights["output.weight"].astype(np.float64).T
    _assert_close(got, want, 2e-3)


def test_out_of_memory_is_a_model_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Buffers too big for the machine (a huge -c or thread count): one line, not MemoryError."""
    path = tmp_path / "tiny.gguf"
    write_tiny_llama(path, TinySpec())

    def no_memory(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(np, "zeros", no_memory)
    with pytest.raises(ModelError, match="not enough memory for a context of 128 positions"):
        Model(GGUFFile(path), n_threads=2)
