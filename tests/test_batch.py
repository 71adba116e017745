"""Several sequences in one forward call (lp_decode): each row as if decoded alone, each
sequence's cache its own, and the cache operations the server uses (copy, truncate, clear)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.gguf import GGUFFile
from runtime.model import ATTENTION_WEIGHT, Model, ModelError, _span_sum
from tests.tiny_models import QT, TinySpec, reference_logits, write_tiny_llama

PROMPTS = [[1, 5, 17, 42, 3, 88, 60, 7], [2, 9, 71, 33, 19], [4, 4, 8, 15, 16, 23, 42, 11, 12, 13, 14]]


def _model(tmp_path: Path, spec: TinySpec, **kw) -> Model:
    path = tmp_path / "tiny.gguf"
    write_tiny_llama(path, spec)
    return Model(GGUFFile(path), **kw)


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / (want.max() - want.min()))


SPECS = [TinySpec(qtype=QT.Q8_0, n_embd=128, n_ff=128, seed=11),
         TinySpec(qtype=QT.Q4_0, n_embd=128, n_ff=128, n_expert=4, n_expert_used=2, seed=12)]


@pytest.mark.parametrize("spec", SPECS, ids=["dense-Q8_0", "moe-Q4_0"])
@pytest.mark.parametrize("threads", [1, 2])
def test_interleaved_batches_match_each_sequence_alone(tmp_path: Path, spec: TinySpec, threads: int) -> None:
    """Three sequences decoded together, prompts in one mixed batch, then a token each per step,
    give each sequence exactly the logits it gets alone, as close to the float64 reference."""
    model = _model(tmp_path, spec, n_threads=threads, n_seq=3)
    extra = [[30, 31, 32], [40, 41, 42], [50, 51, 52]]
    alone = []
    for i, p in enumerate(PROMPTS):
        model.clear(0)
        rows = [model.forward(p, 0)]
        for j, tok in enumerate(extra[i]):
            rows.append(model.forward([tok], len(p) + j))
        alone.append(np.array(rows))
    model.clear(0)
    # every prompt in one call, the last row of each marked
    toks, pos, seqs, marks = [], [], [], []
    for s, p in enumerate(PROMPTS):
        toks += p
        pos += list(range(len(p)))
        seqs += [s] * len(p)
        marks += [False] * (len(p) - 1) + [True]
    together = [[row] for row in model.decode(toks, pos, seqs, marks)]
    for j in range(3):  # then one row per sequence per call
        out = model.decode([e[j] for e in extra], [len(p) + j for p in PROMPTS], [0, 1, 2], [True] * 3)
        for s in range(3):
            together[s].append(out[s])
    for s, p in enumerate(PROMPTS):
        got = np.array(together[s])
        assert np.array_equal(got, alone[s]), f"sequence {s}: {_rel_err(got, alone[s]):.2e} of the range apart"
        want = reference_logits(spec, p + extra[s])[len(p) - 1:]
        assert _rel_err(got, want) < 0.04


def test_a_sequence_never_reads_another_sequences_cells(tmp_path: Path) -> None:
    """Sequence 1's logits are the same bits whatever sequence 0 holds, with the batch shapes equal."""
    model = _model(tmp_path, TinySpec(seed=13), n_seq=2)
    results = []
    for other in ([7, 8, 9, 10, 11, 12], [90, 89, 88, 87, 86, 85]):
        model.clear(0)
        model.clear(1)
        model.decode(other[:3] + PROMPTS[1], [0, 1, 2] + list(range(5)), [0] * 3 + [1] * 5)
        out = model.decode(other[3:] + [60], [3, 4, 5, 5], [0, 0, 0, 1], [True] * 4)
        results.append(out[3])
    assert np.array_equal(results[0], results[1])  # sequence 0 held different tokens each time
    assert model.seq_len(0) == 6 and model.seq_len(1) == 6


def test_copy_prefix_continues_like_the_source(tmp_path: Path) -> None:
    """A copied prefix is the source's cache: continuing from it gives the source's bits."""
    model = _model(tmp_path, TinySpec(qtype=QT.Q8_0, n_embd=128, n_ff=128, seed=14), n_seq=3)
    p = PROMPTS[2]
    for k in (0, 5, 16 + 1):  # none, inside the first block, past it (the source holds 11 + 9)
        model.clear(0)
        src = p + [20, 21, 22, 23, 24, 25, 26, 27, 28]
        model.forward(src[:k], 0) if k else None
        want = model.forward(src[k:], k, all_logits=True)
        model.copy_prefix(0, 1, k)
        assert model.seq_len(1) == k
        got = model.forward(src[k:], k, all_logits=True, seq=1)
        assert np.array_equal(got, want)
    # a copy onto a sequence that held more: the rest is gone
    model.copy_prefix(0, 2, 20)
    model.copy_prefix(0, 2, 3)
    assert model.seq_len(2) == 3
    with pytest.raises(ModelError, match="position 5 is past the 3 positions"):
        model.forward([1], 5, seq=2)


def test_warming_a_sequence_changes_no_cell(tmp_path: Path) -> None:
    """Model.warm (the server's idle warm-up of its cache) leaves every cell as it was: a
    sequence continues with the same bits after every layer of every sequence is warmed, the
    sequences' lengths unchanged; a bad sequence or layer is a ModelError."""
    spec = TinySpec(qtype=QT.Q8_0, n_embd=128, n_ff=128, seed=18)
    model = _model(tmp_path, spec, n_seq=2, n_ctx=128)  # the whole training context: several blocks
    p = PROMPTS[2] * 10  # 110 positions
    model.forward(p, 0)
    want = model.forward([5, 6, 7], len(p), all_logits=True)
    model.truncate(0, len(p))
    for seq in range(2):
        for layer in range(model.config.n_layer):
            model.warm(seq, layer)
    assert (model.seq_len(0), model.seq_len(1)) == (len(p), 0)
    assert np.array_equal(model.forward([5, 6, 7], len(p), all_logits=True), want)
    with pytest.raises(ModelError, match="sequence 2 does not exist"):
        model.warm(2, 0)
    with pytest.raises(ModelError, match="layer .* does not exist"):
        model.warm(0, model.config.n_layer)


def test_truncate_and_clear(tmp_path: Path) -> None:
    model = _model(tmp_path, TinySpec(seed=15), n_seq=2)
    p = PROMPTS[0]
    full = model.forward(p, 0, all_logits=True)
    model.truncate(0, 3)
    assert model.seq_len(0) == 3
    again = model.forward(p[3:], 3, all_logits=True)
    assert np.allclose(again, full[3:], atol=1e-4 * np.ptp(full))
    model.clear(0)
    assert model.seq_len(0) == 0
    model.truncate(0, 50)  # past the length: unchanged
    assert model.seq_len(0) == 0


def test_bad_rows_are_refused_and_append_nothing(tmp_path: Path) -> None:
    model = _model(tmp_path, TinySpec(seed=16), n_seq=2, max_batch=8)
    model.decode([1, 2], [0, 1], [0, 0])
    with pytest.raises(ModelError, match="not its sequence's next"):
        model.decode([3], [5], [0])  # a gap
    with pytest.raises(ModelError, match="not its sequence's next"):
        model.decode([3, 4], [2, 2], [0, 0])  # the same position twice
    with pytest.raises(ModelError, match="no such sequence"):
        model.decode([3], [0], [2])
    with pytest.raises(ModelError, match="larger than 8"):
        model.decode([1] * 9, list(range(2, 11)), [0] * 9)
    with pytest.raises(ModelError, match="sequence 5 does not exist"):
        model.copy_prefix(0, 5, 1)
    with pytest.raises(ModelError, match="holds 2 positions, not 3"):
        model.copy_prefix(0, 1, 3)
    assert model.seq_len(0) == 2 and model.seq_len(1) == 0


def test_kv_memory_scales_with_sequences(tmp_path: Path) -> None:
    spec = TinySpec(seed=17)
    one = _model(tmp_path, spec, n_ctx=64, n_seq=1).kv_bytes
    four = _model(tmp_path, spec, n_ctx=64, n_seq=4).kv_bytes
    # K and V in fp16 per position, layer and kv dimension, whole blocks of 16 positions
    per_seq = 2 * 2 * 64 * spec.n_layer * spec.n_head_kv * (spec.n_embd // spec.n_head)
    assert per_seq <= one < per_seq + 1024
    assert 4 * per_seq <= four < 4 * per_seq + 1024


def test_real_model_rows_are_computed_alike_in_any_batch(smollm2_path: Path) -> None:
    """SmolLM2: a decoding row gives the same bits alone, next to another sequence's decoding row,
    and next to a prompt chunk (which goes through the batched product); at 600 positions, where
    alone it splits each of its 3 kv heads' positions into segments, too. A prompt gives the same
    bits in one call and in chunks of 16 rows or more."""
    model = Model(GGUFFile(smollm2_path), n_ctx=1024, n_threads=2, n_seq=3)
    rng = np.random.default_rng(0)
    long = [int(t) for t in rng.integers(100, 20000, 600)]
    prompt = [int(t) for t in rng.integers(100, 20000, 40)]
    whole = model.forward(prompt, 0, all_logits=True, seq=2)
    model.clear(2)
    parts = [model.forward(prompt[:17], 0, all_logits=True, seq=2), model.forward(prompt[17:], 17, all_logits=True, seq=2)]
    assert np.array_equal(np.concatenate(parts), whole)
    model.truncate(2, 24)  # a cached prefix leaving a chunk of 16 prompt rows: the same bits
    assert np.array_equal(model.forward(prompt[24:], 24, seq=2, prompt=True), whole[-1])
    for ctx in (PROMPTS[2], long):
        model.clear(0)
        model.forward(ctx, 0)
        alone = model.forward([1500], len(ctx))
        for others in ([77], prompt[:20]):  # one decoding row; a prompt chunk (batched product)
            model.truncate(0, len(ctx))
            model.clear(1)
            model.forward(PROMPTS[0], 0, seq=1)
            n1 = len(PROMPTS[0])
            out = model.decode([1500] + others, [len(ctx)] + list(range(n1, n1 + len(others))),
                               [0] + [1] * len(others), [True] + [False] * len(others))
            assert np.array_equal(out[0], alone), (len(ctx), len(others))


def test_span_sum_against_the_sum_itself() -> None:
    """The closed form of sum(min(q, window) for q in lo+1..hi), no window and windows of every
    relation to the range."""
    rng = np.random.default_rng(5)
    for _ in range(300):
        lo = int(rng.integers(0, 300))
        hi = lo + int(rng.integers(0, 300))
        window = int(rng.choice([0, 1, int(rng.integers(1, 700))]))
        want = sum(min(q, window) if window else q for q in range(lo + 1, hi + 1))
        assert _span_sum(lo, hi, window) == want, (lo, hi, window)


@pytest.mark.parametrize("spec", SPECS, ids=["dense-Q8_0", "moe-Q4_0"])
def test_prompt_cost_counts_the_weights_and_each_rows_attention(tmp_path: Path, spec: TinySpec) -> None:
    """Model.prompt_cost against a count of its own: every 2-D layer tensor's elements as the gguf
    package reads them (of the experts, the share a token uses), and each row's attention over every
    position up to its own (q.k and v: 2 x heads x head size a position and layer), weighted."""
    from gguf import GGUFReader

    model = _model(tmp_path, spec)
    cfg = model.config
    share = spec.n_expert_used / spec.n_expert if spec.n_expert else 1.0
    weights = sum(int(t.n_elements) * (share if "_exps" in t.name else 1.0)
                  for t in GGUFReader(tmp_path / "tiny.gguf").tensors
                  if t.name.startswith("blk.") and len(t.shape) > 1)
    for start, rows in [(0, 1), (0, 64), (100, 37), (1000, 512)]:
        keys = cfg.n_layer * sum(p + 1 for p in range(start, start + rows))
        want = rows * weights + ATTENTION_WEIGHT * 2 * cfg.n_head * cfg.head_dim * keys
        assert model.prompt_cost(start, rows) == pytest.approx(want, rel=1e-12)
