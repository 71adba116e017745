"""Attention on AVX-512 against AVX2, bit for bit: the AVX-512 scores (tiles of 8 rows x 16
positions) and values (8 dimensions a tile, two a 512-bit register) sum every output in the
order the AVX2 tiles do, so a prompt's hidden states are the same bits on both (the batched
product, the norms, the rope and the activation quantizer give the same bits on both too; the
row dot products of decoding rows do not, so only prompts are compared). Head sizes that are
not multiples of 8 (the rest in AVX2's pairs), prompts past one 128-position pass of the
values, chunks that start mid-block, and a batch of two sequences of ragged lengths. The
float64 reference of the same forward pass holds both ISAs (test_model.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime import kernels
from runtime.gguf import GGUFFile
from runtime.model import Model
from tests.tiny_models import QT, TinySpec, write_tiny_llama

pytestmark = pytest.mark.skipif(not {"avx2", "avx512"} <= set(kernels.available_isas()),
                                reason="needs AVX2 and AVX-512")


def _hidden(model: Model, isa: str, steps: list[tuple[list[int], list[int], list[int]]]) -> list[np.ndarray]:
    """Each step's final-norm hidden states of every row, on isa, from an empty cache."""
    kernels.set_isa(isa)
    try:
        for s in range(model.n_seq):
            model.clear(s)
        return [model.decode(t, p, q, outputs=[True] * len(t), hidden=True, prompt=[True] * len(t))
                for t, p, q in steps]
    finally:
        kernels.set_isa(kernels.best_isa())


@pytest.mark.parametrize("head_dim", [20, 36, 64])
def test_prompt_attention_same_bits_on_avx512_and_avx2(tmp_path: Path, head_dim: int) -> None:
    spec = TinySpec(n_embd=256, n_head=8, n_head_kv=2, key_length=head_dim, n_ctx=320, qtype=QT.Q8_0,
                    seed=20 + head_dim)
    path = tmp_path / "tiny.gguf"
    write_tiny_llama(path, spec)
    model = Model(GGUFFile(path), n_threads=2, max_batch=192, n_seq=2)
    rng = np.random.default_rng(head_dim)
    tok = [int(t) for t in rng.integers(0, spec.n_vocab, 600)]
    steps = [
        (tok[:150], list(range(150)), [0] * 150),                 # one prompt past a 128-position pass
        (tok[150:187], list(range(150, 187)), [0] * 37),          # a chunk starting mid-block
        # two sequences in one batch, ragged lengths
        (tok[187:209] + tok[300:441], list(range(187, 209)) + list(range(141)), [0] * 22 + [1] * 141),
    ]
    a, b = _hidden(model, "avx2", steps), _hidden(model, "avx512", steps)
    for i, (x, y) in enumerate(zip(a, b)):
        assert np.isfinite(x).all()
        np.testing.assert_array_equal(y, x, err_msg=f"step {i}: AVX-512 against AVX2")
