"""Sentence embeddings: the mean over positions of the final-norm hidden states, L2-normalised
(llama.cpp's `--embeddings --pooling mean`, whose `t_embd` is the output of `output_norm`).

The engine has no hidden-state output yet, so this adapter reads the model's own buffer:
after `Model.forward`, the C struct's `x` holds the residual stream of every position of
the batch (`lp_forward` normalises into `xb` only the rows whose logits it computes), and
`lp_rmsnorm` with `output_norm` turns it into what llama.cpp pools. Running a text at
position 0 overwrites the slot's KV cache, so the engine's token record is cleared.
"""
from __future__ import annotations

import numpy as np

from runtime.engine import Engine
from runtime.kernels import ffi, lib


def embed(engine: Engine, ids: list[int]) -> np.ndarray:
    """float32 (n_embd,) unit vector for the token ids (which must fit the context)."""
    model = engine.model
    c, cfg = model._c, model.config
    D, B = cfg.n_embd, model.max_batch
    hidden = np.empty((B, D), np.float32)   # (max_batch, n_embd) final-norm hidden states
    total = np.zeros(D, np.float64)
    engine.reset()  # the cache is about to be overwritten from position 0
    for start in range(0, len(ids), B):
        chunk = ids[start:start + B]
        model.forward(chunk, start)
        lib.lp_rmsnorm(ffi.cast("float *", ffi.from_buffer(hidden)), c.x,  # x: (max_batch, n_embd) residual stream
                       ffi.cast("float *", c.output_norm.data), len(chunk), D, cfg.rms_eps)
        total += hidden[:len(chunk)].sum(axis=0, dtype=np.float64)
    mean = total / max(len(ids), 1)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 0 else mean).astype(np.float32)
