"""The llama-architecture model: hyperparameters from GGUF metadata, weights bound
in place from the mapped file, and the C forward pass (csrc/model.c).

Every hyperparameter comes from the file; nothing is assumed about a model family.
Python owns every buffer (numpy arrays, kept alive here); C only fills them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime import kernels
from runtime.constants import (
    KEY_BLOCK_COUNT, KEY_CONTEXT_LENGTH, KEY_EMBEDDING_LENGTH, KEY_EXPERT_COUNT, KEY_EXPERT_USED_COUNT,
    KEY_FEED_FORWARD_LENGTH, KEY_GENERAL_ARCHITECTURE, KEY_HEAD_COUNT, KEY_HEAD_COUNT_KV, KEY_KEY_LENGTH,
    KEY_LAYER_NORM_RMS_EPS, KEY_ROPE_DIMENSION_COUNT, KEY_ROPE_FREQ_BASE, KEY_ROPE_SCALING_FACTOR,
    KEY_ROPE_SCALING_TYPE,
)
from runtime.gguf import GGUFFile
from runtime.kernels import ffi, lib

SUPPORTED_ARCHS = ("llama",)


class ModelError(ValueError):
    """A model this runtime cannot run; the message is one line naming why."""


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_vocab: int
    n_ctx_train: int
    n_embd: int
    n_layer: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_rot: int
    rms_eps: float
    rope_base: float
    rope_freq_scale: float   # 1 / linear scaling factor
    n_expert: int
    n_expert_used: int

    @property
    def q_dim(self) -> int:
        return self.n_head * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_head_kv * self.head_dim

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> ModelConfig:
        md = f.metadata
        arch = md.get(KEY_GENERAL_ARCHITECTURE)
        if arch not in SUPPORTED_ARCHS:
            raise ModelError(f"unsupported model architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHS)})")

        def get(key: str, default: Any = None) -> Any:
            value = md.get(key.format(arch=arch), default)
            if value is None:
                raise ModelError(f"model metadata lacks {key.format(arch=arch)}")
            return value

        n_embd, n_head = int(get(KEY_EMBEDDING_LENGTH)), int(get(KEY_HEAD_COUNT))
        n_head_kv = int(get(KEY_HEAD_COUNT_KV, n_head))
        head_dim = int(get(KEY_KEY_LENGTH, n_embd // n_head if n_head else 0))
        scaling = str(md.get(KEY_ROPE_SCALING_TYPE.format(arch=arch), "none"))
        factor = float(md.get(KEY_ROPE_SCALING_FACTOR.format(arch=arch), 0.0) or 0.0)
        if scaling not in ("none", "linear"):
            raise ModelError(f"unsupported rope scaling type {scaling!r} (supported: none, linear)")
        n_expert = int(md.get(KEY_EXPERT_COUNT.format(arch=arch), 0))
        emb = f.tensors.get("token_embd.weight")
        if emb is None:
            raise ModelError("model has no token_embd.weight tensor")
        cfg = cls(
            arch=arch, n_vocab=int(emb.shape[0]), n_ctx_train=int(get(KEY_CONTEXT_LENGTH)),
            n_embd=n_embd, n_layer=int(get(KEY_BLOCK_COUNT)), n_ff=int(get(KEY_FEED_FORWARD_LENGTH)),
            n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim,
            n_rot=int(get(KEY_ROPE_DIMENSION_COUNT, head_dim)),
            rms_eps=float(get(KEY_LAYER_NORM_RMS_EPS)), rope_base=float(get(KEY_ROPE_FREQ_BASE, 10000.0)),
            rope_freq_scale=1.0 / factor if scaling == "linear" and factor > 0 else 1.0,
            n_expert=n_expert,
            n_expert_used=int(md.get(KEY_EXPERT_USED_COUNT.format(arch=arch), 0)) if n_expert else 0,
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        checks = [
            (self.n_embd > 0 and self.n_layer > 0 and self.n_ff > 0, "sizes must be positive"),
            (self.n_head > 0 and self.n_head_kv > 0 and self.n_head % self.n_head_kv == 0,
             f"head_count {self.n_head} is not a multiple of head_count_kv {self.n_head_kv}"),
            (self.head_dim > 0 and self.n_rot % 2 == 0 and 0 < self.n_rot <= self.head_dim,
             f"rope dimension {self.n_rot} does not fit head size {self.head_dim}"),
            (self.n_expert == 0 or 0 < self.n_expert_used <= self.n_expert,
             f"expert_used_count {self.n_expert_used} of {self.n_expert} experts"),
            (self.rms_eps > 0 and self.rope_base > 0, "rms epsilon and rope base must be positive"),
        ]
        for ok, why in checks:
            if not ok:
                raise ModelError(f"bad model hyperparameters: {why}")


class Model:
    """A loaded model with its KV cache; `forward` runs tokens through it."""

    def __init__(self, f: GGUFFile, n_ctx: int | None = None, n_threads: int | None = None,
                 max_batch: int = 512) -> None:
        self.file = f
        self.config = cfg = ModelConfig.from_gguf(f)
        self.n_ctx = int(min(n_ctx or cfg.n_ctx_train, cfg.n_ctx_train) if n_ctx else cfg.n_ctx_train)
        if self.n_ctx < 1:
            raise ModelError(f"context size must be positive, got {self.n_ctx}")
        self.n_threads = n_threads or kernels.default_threads()
        self.max_batch = max(1, min(max_batch, self.n_ctx))
        self._keep: list[Any] = []  # every array and cdata C points into
        self._c = ffi.new("lp_model *")
        self._bind_weights()
        self._allocate()

    # -- weights -------------------------------------------------------------

    def _tensor(self, name: str, shape: tuple[int, ...], required: bool = True) -> Any:
        """An lp_tensor for a GGUF tensor, checked against the expected shape."""
        t = self.file.tensors.get(name)
        out = ffi.new("lp_tensor *")
        if t is None:
            if required:
                raise ModelError(f"model lacks tensor {name}")
            return out[0]
        if tuple(t.shape) != shape:
            raise ModelError(f"tensor {name} has shape {tuple(t.shape)}, expected {shape}")
        if len(shape) == 1:  # norms: float32 copies (tiny; any storage type)
            data = kernels.dequantize(t).astype(np.float32)
            self._keep.append(data)
            out.data, out.type, out.n_mat, out.rows, out.cols = ffi.from_buffer(data), 0, 1, 1, shape[0]
            return out[0]
        if t.type not in kernels.WEIGHT_TYPES.values():
            raise ModelError(f"tensor {name} has type {getattr(t.type, 'name', t.type)}, "
                             "which this runtime cannot compute with")
        if shape[-1] % kernels.type_info(t.type).block_size:
            raise ModelError(f"tensor {name}: row length {shape[-1]} is not a multiple of its block size")
        self._keep.append(t.data)
        out.data = ffi.from_buffer(t.data)
        out.type = int(t.type)
        out.n_mat = shape[0] if len(shape) == 3 else 1
        out.rows, out.cols = shape[-2], shape[-1]
        return out[0]

    def _bind_weights(self) -> None:
        cfg, c = self.config, self._c
        D, V, F = cfg.n_embd, cfg.n_vocab, cfg.n_ff
        c.tok_embd = self._tensor("token_embd.weight", (V, D))
        c.output_norm = self._tensor("output_norm.weight", (D,))
        tied = "output.weight" not in self.file.tensors
        c.output = self._tensor("token_embd.weight" if tied else "output.weight", (V, D))
        layers = ffi.new("lp_layer[]", cfg.n_layer)
        self._keep.append(layers)
        for i in range(cfg.n_layer):
            p, L = f"blk.{i}.", layers[i]
            L.attn_norm = self._tensor(p + "attn_norm.weight", (D,))
            L.wq = self._tensor(p + "attn_q.weight", (cfg.q_dim, D))
            L.wk = self._tensor(p + "attn_k.weight", (cfg.kv_dim, D))
            L.wv = self._tensor(p + "attn_v.weight", (cfg.kv_dim, D))
            L.wo = self._tensor(p + "attn_output.weight", (D, cfg.q_dim))
            L.ffn_norm = self._tensor(p + "ffn_norm.weight", (D,))
            if cfg.n_expert:
                E = cfg.n_expert
                L.ffn_gate_inp = self._tensor(p + "ffn_gate_inp.weight", (E, D))
                L.ffn_gate_exps = self._tensor(p + "ffn_gate_exps.weight", (E, F, D))
                L.ffn_up_exps = self._tensor(p + "ffn_up_exps.weight", (E, F, D))
                L.ffn_down_exps = self._tensor(p + "ffn_down_exps.weight", (E, D, F))
            else:
                L.ffn_gate = self._tensor(p + "ffn_gate.weight", (F, D))
                L.ffn_up = self._tensor(p + "ffn_up.weight", (F, D))
                L.ffn_down = self._tensor(p + "ffn_down.weight", (D, F))
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
