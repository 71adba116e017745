"""tools/random_gguf.py, the one writer of random-weight GGUFs.

The committed fixtures (tests/fixtures/models/) are llama.cpp's quantizations of models that
tools/make_model_fixtures.py writes with this module from the seeds reference.json records. The
writer must keep giving those weights, or regenerating the fixtures changes every recorded output:
llama.cpp keeps norms and routers F32 and its legacy quantizers (Q4_0, Q5_0, Q8_0) round exactly
as gguf-py's, so those tensors of the committed files are compared bit for bit.
"""
from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from tools.random_gguf import QT, ModelSpec, tensor_layout, write_model

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "models"
# one file per family whose tensors are (nearly) all of types gguf-py quantizes
FILES = ("dense-Q8_0.gguf", "moe-Q4_0.gguf", "dense-ropelinear-Q8_0.gguf", "dense-tied-Q8_0.gguf")
EXACT = {QT.F32, QT.Q4_0, QT.Q5_0, QT.Q8_0}


def _fixture_spec(family: dict) -> ModelSpec:
    """The family's model as reference.json records it (the vocabulary aside: weights only)."""
    h = family["hparams"]
    return ModelSpec(n_vocab=h["vocab_size"], n_embd=h["embedding_length"], n_layer=h["block_count"],
                     n_ff=h["feed_forward_length"], n_head=h["attention.head_count"],
                     n_head_kv=h["attention.head_count_kv"], n_ctx=h["context_length"],
                     n_expert=h.get("expert_count", 0), n_expert_used=h.get("expert_used_count", 0),
                     rope_base=h["rope.freq_base"], rms_eps=h["attention.layer_norm_rms_epsilon"],
                     rope_linear=h.get("rope.scaling.factor"), tied=family["tied_embeddings"],
                     init="fan_in", seed=family["seed"])


@pytest.mark.parametrize("name", FILES)
def test_fixture_weights_come_back_from_their_seed(tmp_path: Path, name: str) -> None:
    ref = json.loads((FIXTURES / "reference.json").read_text())
    spec = _fixture_spec(ref["families"][ref["models"][name]["family"]])
    ours = write_model(tmp_path / "m.gguf", spec, keep_values=True)
    committed = gguf.GGUFReader(FIXTURES / name)
    assert sorted(t.name for t in committed.tensors) == sorted(ours)
    checked = 0
    for t in committed.tensors:
        if t.tensor_type not in EXACT:
            continue  # K-quants: gguf-py has no quantizer for them
        want = np.array(t.data).view(np.uint8).ravel()
        got = np.asarray(gguf.quants.quantize(ours[t.name], t.tensor_type)).view(np.uint8).ravel()
        assert np.array_equal(got, want), f"{name}: {t.name} ({t.tensor_type.name}) differs"
        checked += 1
    assert checked >= len(committed.tensors) - 1
    # the hyperparameters as written are the ones llama.cpp copied into the fixture
    mine = gguf.GGUFReader(tmp_path / "m.gguf")
    for key, field in mine.fields.items():
        if key.startswith("llama."):
            assert committed.fields[key].contents() == pytest.approx(field.contents()), key


def test_bench_model_keys_types_and_tiles(tmp_path: Path) -> None:
    """A named F16 model with the byte vocabulary and tiled draws, as the benchmark makes them:
    its file type and vocab size, special tokens, F32 norms (ones) and router, F16 matrices."""
    spec = ModelSpec(n_vocab=300, n_embd=64, n_layer=1, n_ff=128, n_expert=4, n_expert_used=2, vocab="bytes",
                     init="tiled", qtype=QT.F16, name="bench-test")
    write_model(tmp_path / "b.gguf", spec)
    r = gguf.GGUFReader(tmp_path / "b.gguf")
    kv = {k: f.contents() for k, f in r.fields.items()}
    assert (kv["general.name"], kv["general.file_type"], kv["llama.vocab_size"]) == ("bench-test", 1, 300)
    assert (kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.eos_token_id"]) == (1, 2)
    tokens = kv["tokenizer.ggml.tokens"]
    assert len(tokens) == 300 and tokens[3] == "<0x00>" and tokens[258] == "<0xFF>" and tokens[259] == "\u2581a"
    assert [(t.name, tuple(int(n) for n in reversed(t.shape))) for t in r.tensors] == tensor_layout(spec)
    for t in r.tensors:
        if t.name.endswith("norm.weight"):
            assert t.tensor_type == QT.F32 and np.all(np.array(t.data) == 1)
        elif t.name.endswith("ffn_gate_inp.weight"):
            assert t.tensor_type == QT.F32
        else:
            assert t.tensor_type == QT.F16 and 0 < np.std(np.array(t.data, np.float32)) < 2


def test_per_tensor_types_and_values_kept(tmp_path: Path) -> None:
    spec = ModelSpec(qtype=QT.Q8_0, qtypes={"token_embd.weight": QT.F16, "blk.0.ffn_norm.weight": QT.F16})
    values = write_model(tmp_path / "q.gguf", spec, keep_values=True)
    r = gguf.GGUFReader(tmp_path / "q.gguf")
    types = {t.name: t.tensor_type for t in r.tensors}
    assert (types["token_embd.weight"], types["blk.0.ffn_norm.weight"]) == (QT.F16, QT.F16)
    assert (types["blk.0.attn_q.weight"], types["blk.1.ffn_norm.weight"]) == (QT.Q8_0, QT.F32)
    for t in r.tensors:  # kept values are the stored ones, dequantized
        stored = gguf.quants.dequantize(np.array(t.data), t.tensor_type).reshape(values[t.name].shape)
        assert np.array_equal(stored, values[t.name]), t.name


def test_spec_rejects_unknown_choices() -> None:
    with pytest.raises(ValueError, match="init 'gauss'"):
        ModelSpec(init="gauss")
    with pytest.raises(ValueError, match="vocab 'gpt2'"):
        ModelSpec(vocab="gpt2")
    with pytest.raises(ValueError, match="Q8_0"):
        ModelSpec(name="x", qtype=QT.Q8_0)
