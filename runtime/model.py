"""The llama-architecture model: hyperparameters from GGUF metadata, weights bound
in place from the mapped file, and the C forward pass (csrc/engine/model.c).

Every hyperparameter comes from the file; nothing is assumed about a model family.
Python owns every buffer (numpy arrays, kept alive here); C only fills them.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from runtime import kernels
from runtime.gguf import GGUFFile
from runtime.kernels import ffi, lib
from runtime.model_check import (  # noqa: F401  (ModelConfig, check_model: part of this module's API)
    ModelConfig, ModelError, check_model, global_tensors, layer_tensors,
)


class Model:
    """A loaded model with its KV cache; `forward` runs tokens through it."""

    def __init__(self, f: GGUFFile, n_ctx: int | None = None, n_threads: int | None = None,
                 max_batch: int = 512) -> None:
        self.file = f
        self.config = cfg = check_model(f)  # everything the file says, before any allocation
        self.n_ctx = int(min(n_ctx or cfg.n_ctx_train, cfg.n_ctx_train) if n_ctx else cfg.n_ctx_train)
        if self.n_ctx < 1:
            raise ModelError(f"context size must be positive, got {self.n_ctx}")
        self.n_threads = n_threads or kernels.default_threads()
        self.max_batch = max(1, min(max_batch, self.n_ctx))
        self._keep: list[Any] = []  # every array and cdata C points into
        self._c = ffi.new("lp_model *")
        self._bind_weights()
        try:
            self._allocate()
        except MemoryError:
            raise ModelError(f"not enough memory for a context of {self.n_ctx} positions with "
                             f"{self.n_threads} threads (try a smaller -c)") from None

    # -- weights -------------------------------------------------------------

    def _tensor(self, name: str) -> Any:
        """An lp_tensor for a GGUF tensor (shape and type checked by check_model)."""
        t = self.file.tensors[name]
        out = ffi.new("lp_tensor *")
        if len(t.shape) == 1:  # norms: float32 copies (tiny; any storage type)
            data = kernels.dequantize(t).astype(np.float32)
            self._keep.append(data)
            out.data, out.type, out.rows, out.cols = ffi.from_buffer(data), 0, 1, t.shape[0]
            return out[0]
        self._keep.append(t.data)
        out.data = ffi.from_buffer(t.data)
        out.type = int(t.type)
        out.rows, out.cols = t.shape[-2], t.shape[-1]
        return out[0]

    def _bind_weights(self) -> None:
        cfg, c = self.config, self._c
        names = {field: name for field, (name, _) in global_tensors(cfg).items()}
        if names["output"] not in self.file.tensors:
            names["output"] = names["tok_embd"]  # tied: the output reuses the embeddings
        for field, name in names.items():
            setattr(c, field, self._tensor(name))
        layers = ffi.new("lp_layer[]", cfg.n_layer)
        self._keep.append(layers)
        for i in range(cfg.n_layer):
            for field, (name, _) in layer_tensors(cfg, i).items():
                setattr(layers[i], field, self._tensor(name))
        c.layers = layers

    # -- buffers -------------------------------------------------------------

    def _buf(self, shape: tuple[int, ...], dtype: Any = np.float32) -> Any:
        a = np.zeros(shape, dtype=dtype)
        self._keep.append(a)
        return ffi.cast("float *" if dtype == np.float32 else "int32_t *" if dtype == np.int32
                        else "uint16_t *", ffi.from_buffer(a))

    def _allocate(self) -> None:
        cfg, c, B = self.config, self._c, self.max_batch
        for name in ("n_vocab", "n_embd", "n_layer", "n_head", "n_head_kv", "head_dim", "n_rot", "n_ff",
                     "n_expert", "n_expert_used", "rms_eps", "rope_base", "rope_freq_scale"):
            setattr(c, name, getattr(cfg, name))
        c.n_ctx, c.max_batch, c.n_threads = self.n_ctx, B, self.n_threads
        wide = max(cfg.n_embd, cfg.q_dim)
        k_len = -(-self.n_ctx // lib.LP_KV_BLOCK) * lib.LP_KV_BLOCK  # whole blocks of positions
        self.k_cache = np.zeros((cfg.n_layer, k_len * cfg.kv_dim), np.uint16)
        self.v_cache = np.zeros((cfg.n_layer, k_len * cfg.kv_dim), np.uint16)
        self._keep += [self.k_cache, self.v_cache]
        c.k_cache = ffi.cast("uint16_t *", ffi.from_buffer(self.k_cache))
        c.v_cache = ffi.cast("uint16_t *", ffi.from_buffer(self.v_cache))
        c.x, c.xb, c.xb2 = self._buf((B, cfg.n_embd)), self._buf((B, wide)), self._buf((B, wide))
        c.q, c.k, c.v = self._buf((B, cfg.q_dim)), self._buf((B, cfg.kv_dim)), self._buf((B, cfg.kv_dim))
        c.hb, c.hb2 = self._buf((B, cfg.n_ff)), self._buf((B, cfg.n_ff))
        c.att = self._buf((self.n_threads, lib.LP_ATT_ROWS * k_len))
        c.att_part = self._buf((cfg.n_head_kv, lib.LP_ATT_SEGS, lib.LP_ATT_ROWS, cfg.head_dim + 2))
        E, K = max(cfg.n_expert, 1), max(cfg.n_expert_used, 1)
        c.router = self._buf((B, E))
        c.moe_x, c.moe_y = self._buf((B, cfg.n_embd)), self._buf((B, cfg.n_embd))
        c.moe_rows, c.moe_w = self._buf((B,), np.int32), self._buf((B,))
        c.moe_sel, c.moe_sel_w = self._buf((B, K), np.int32), self._buf((B, K))
        work = max(lib.lp_matmul_multi_work_size(types, len(types), group[0].cols, B, self.n_threads)
                   for group in self._matrix_groups() for types in [ffi.new("int[]", [t.type for t in group])])
        self._work = np.zeros(max(work, 1), np.uint8)
        c.work, c.work_size = ffi.from_buffer(self._work), self._work.nbytes

    def _matrix_groups(self) -> list[list[Any]]:
        """The weight matrices as the forward pass multiplies them: the projections
        of one input (q, k, v; gate, up) together."""
        c = self._c
        out = [[c.output]]
        for i in range(self.config.n_layer):
            L = c.layers[i]
            out += [[L.wq, L.wk, L.wv], [L.wo]]
            out += ([[L.ffn_gate_inp], [L.ffn_gate_exps, L.ffn_up_exps], [L.ffn_down_exps]] if self.config.n_expert
                    else [[L.ffn_gate, L.ffn_up], [L.ffn_down]])
        return out

    # -- forward -------------------------------------------------------------

    def forward(self, tokens: list[int] | np.ndarray, pos: int, all_logits: bool = False) -> np.ndarray:
        """Runs tokens at positions pos.. (the cache holds 0..pos-1).

        Returns float32 logits (n_vocab,) of the last token, or (n, n_vocab) with all_logits.
        Long inputs go through in chunks of max_batch.
        """
        out = self._run(tokens, pos, lib.LP_OUT_ALL_LOGITS if all_logits else lib.LP_OUT_LAST_LOGITS)
        return out if all_logits else out[0]

    def hidden(self, tokens: list[int] | np.ndarray, pos: int) -> np.ndarray:
        """Final-norm hidden states (n, n_embd) of the tokens run at positions pos.. (embeddings)."""
        return self._run(tokens, pos, lib.LP_OUT_HIDDEN)

    def _run(self, tokens: list[int] | np.ndarray, pos: int, output: int) -> np.ndarray:
        ids = np.ascontiguousarray(tokens, dtype=np.int32).reshape(-1)
        n = ids.size
        if n == 0:
            raise ModelError("no tokens to evaluate")
        if pos < 0 or pos + n > self.n_ctx:
            raise ModelError(f"{pos + n} tokens exceed the context size {self.n_ctx}")
        bad = ids[(ids < 0) | (ids >= self.config.n_vocab)]
        if bad.size:
            raise ModelError(f"token id {int(bad[0])} is outside the vocabulary (0..{self.config.n_vocab - 1})")
        every_row = output != lib.LP_OUT_LAST_LOGITS
        width = self.config.n_embd if output == lib.LP_OUT_HIDDEN else self.config.n_vocab
        out = np.empty((n if every_row else 1, width), np.float32)
        for start in range(0, n, self.max_batch):
            chunk = ids[start:start + self.max_batch]
            # rows of out for this chunk; the last-logits mode keeps only the final chunk's
            dst = out[start:start + chunk.size] if every_row else out
            rc = lib.lp_forward(self._c, ffi.cast("int32_t *", ffi.from_buffer(chunk)), chunk.size, pos + start,
                                ffi.cast("float *", ffi.from_buffer(dst)), output)
            if rc != 0:
                raise ModelError(f"forward pass failed (error {rc})")
        return out
