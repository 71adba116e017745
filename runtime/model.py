"""The llama-architecture model: hyperparameters from GGUF metadata, weights bound
in place from the mapped file, and the C forward pass (csrc/engine/model.c).

Every hyperparameter comes from the file; nothing is assumed about a model family.
The state is in three parts, as in C (api.h): the weights (read-only), the KV cache
of `n_seq` sequences, and the scratch of one forward call. Python owns the memory
(numpy arrays, kept alive here); C says how much it needs and fills it.

`forward` and `hidden` run one sequence's tokens (long inputs in chunks of
`max_batch`); `decode` runs one batch of rows of several sequences, each row
`(token, position, sequence)`, as the server's continuous batching does.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from runtime import kernels
from runtime.gguf import GGUFFile
from runtime.kernels import ffi, lib
from runtime.model_check import (  # noqa: F401  (ModelConfig, check_model: part of this module's API)
    ModelConfig, ModelError, c_flags, check_model, global_tensors, layer_tensors,
)

_ERRORS = {
    "LP_ECONTEXT": "the position is past the context size",
    "LP_ETOKEN": "a token id is outside the vocabulary",
    "LP_EBATCH": "the batch is empty or larger than the scratch holds",
    "LP_EWORK": "the scratch is too small for a matrix product",
    "LP_ESHAPE": "the model's shapes do not fit the cache or scratch",
    "LP_EPOS": "a row's position is not its sequence's next one",
    "LP_ESEQ": "no such sequence",
    "LP_EUNKNOWN_TYPE": "a tensor type the kernels do not take",
    "LP_EBAD_SIZE": "a bad buffer size",
}


def _error(rc: int) -> str:
    for name, text in _ERRORS.items():
        if getattr(lib, name) == rc:
            return f"{text} (error {rc})"
    return f"error {rc}"


# What a float multiply-add of attention costs against one of the weight matrices' int8 products:
# 512-row prompt chunks at positions 1536-2047 against the first 512 rows (AVX2, 2 threads) took
# 2.0-2.2x as long on SmolLM2 135M, 1.6x on Qwen2.5 0.5B and 1.2x on a model of Mistral 7B's width,
# which the multiply-adds of prompt_cost give with this weight between 2.7 and 3.6.
ATTENTION_WEIGHT = 3.0


def _span_sum(lo: int, hi: int, window: int) -> int:
    """The sum of min(q, window) over q = lo + 1 .. hi (0 <= lo <= hi; window 0: no window)."""
    def tri(n: int) -> int:
        return n * (n + 1) // 2
    if window <= 0:
        return tri(hi) - tri(lo)
    below = tri(min(hi, window)) - tri(min(lo, window))  # the q up to the window: q each
    return below + window * max(0, hi - max(lo, window))  # and past it: the window each


def layer_macs(tensors: Any, n_expert: int, n_expert_used: int) -> float:
    """The multiply-adds a token makes in the layers' weight matrices (every 2-D `blk.` tensor; of a
    mixture of experts' stacked experts, the share a token uses): GGUFFile.tensors' values."""
    total = 0.0
    for t in tensors:
        if t.name.startswith("blk.") and len(t.shape) > 1:
            share = n_expert_used / n_expert if "_exps." in t.name and n_expert else 1.0
            total += float(np.prod(t.shape)) * share
    return total


def _aligned(nbytes: int) -> np.ndarray:
    """nbytes of zeroed memory at a 64-byte aligned address (C lays its buffers out in it)."""
    raw = np.zeros(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + nbytes]


class Model:
    """A loaded model with the KV cache of `n_seq` sequences; `forward` and `decode` run tokens."""

    def __init__(self, f: GGUFFile, n_ctx: int | None = None, n_threads: int | None = None,
                 max_batch: int = 512, n_seq: int = 1) -> None:
        self.file = f
        self.config = cfg = check_model(f)  # everything the file says, before any allocation
        self.n_ctx = int(min(n_ctx or cfg.n_ctx_train, cfg.n_ctx_train) if n_ctx else cfg.n_ctx_train)
        if self.n_ctx < 1:
            raise ModelError(f"context size must be positive, got {self.n_ctx}")
        if n_seq < 1:
            raise ModelError(f"the number of sequences must be positive, got {n_seq}")
        self.n_threads = n_threads or kernels.default_threads()
        self.max_batch = max(1, min(max_batch, self.n_ctx * n_seq))
        self.n_seq = n_seq
        self._keep: list[Any] = []  # every array and cdata C points into
        self._cost_terms: tuple[float, int, int] | None = None  # prompt_cost's, once asked (see there)
        self._w = ffi.new("lp_weights *")
        self._bind_weights()
        try:
            self._allocate()
        except MemoryError:
            each = f" for each of {n_seq} sequences" if n_seq > 1 else ""
            raise ModelError(f"not enough memory for a context of {self.n_ctx} positions{each} with "
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
        cfg, w = self.config, self._w
        for name in ("n_vocab", "n_embd", "n_layer", "n_head", "n_head_kv", "head_dim", "n_rot", "n_ff",
                     "n_expert", "n_expert_used", "rms_eps", "rope_base", "rope_freq_scale"):
            setattr(w, name, getattr(cfg, name))
        for name, value in c_flags(cfg).items():  # the architecture's flags (runtime/arch.py)
            setattr(w, name, value)
        names = {field: name for field, (name, _) in global_tensors(cfg).items()}
        if names["output"] not in self.file.tensors:
            names["output"] = names["tok_embd"]  # tied: the output reuses the embeddings
        for field, name in names.items():
            setattr(w, field, self._tensor(name))
        layers = ffi.new("lp_layer[]", cfg.n_layer)
        self._keep.append(layers)
        for i in range(cfg.n_layer):
            for field, (name, _) in layer_tensors(cfg, i).items():
                setattr(layers[i], field, self._tensor(name))
        w.layers = layers

    # -- cache and scratch -----------------------------------------------------

    def _allocate(self) -> None:
        kv_bytes = lib.lp_kv_size(self._w, self.n_seq, self.n_ctx)
        scratch_bytes = lib.lp_scratch_size(self._w, self.max_batch, self.n_ctx, self.n_seq, self.n_threads)
        for rc in (kv_bytes, scratch_bytes):
            if rc < 0:
                raise ModelError(f"cannot lay out the model's buffers: {_error(int(rc))}")
        self._kv_mem, self._scratch_mem = _aligned(int(kv_bytes)), _aligned(int(scratch_bytes))
        self._kv, self._scratch = ffi.new("lp_kv *"), ffi.new("lp_scratch *")
        for rc in (lib.lp_kv_init(self._kv, self._w, ffi.from_buffer(self._kv_mem), kv_bytes, self.n_seq,
                                  self.n_ctx),
                   lib.lp_scratch_init(self._scratch, self._w, ffi.from_buffer(self._scratch_mem), scratch_bytes,
                                       self.max_batch, self.n_ctx, self.n_seq, self.n_threads)):
            if rc != 0:
                raise ModelError(f"cannot lay out the model's buffers: {_error(rc)}")

    @property
    def kv_bytes(self) -> int:
        """Bytes of the KV cache (all sequences)."""
        return int(self._kv_mem.nbytes)

    @property
    def scratch_bytes(self) -> int:
        return int(self._scratch_mem.nbytes)

    # -- sequences -------------------------------------------------------------

    def _check_seq(self, seq: int) -> None:
        if not 0 <= seq < self.n_seq:
            raise ModelError(f"sequence {seq} does not exist (0..{self.n_seq - 1})")

    def seq_len(self, seq: int = 0) -> int:
        """Positions sequence `seq` holds in the cache."""
        self._check_seq(seq)
        return int(self._kv.len[seq])

    def copy_prefix(self, src: int, dst: int, n: int) -> None:
        """Sequence dst becomes the first n positions of sequence src (copied, not recomputed)."""
        self._check_seq(src)
        self._check_seq(dst)
        if not 0 <= n <= self.seq_len(src):
            raise ModelError(f"sequence {src} holds {self.seq_len(src)} positions, not {n}")
        rc = lib.lp_kv_copy(self._kv, src, dst, n)
        if rc != 0:
            raise ModelError(f"cache copy failed: {_error(rc)}")

    def truncate(self, seq: int, n: int) -> None:
        """Sequence seq keeps its first n positions (0: cleared)."""
        self._check_seq(seq)
        rc = lib.lp_kv_truncate(self._kv, seq, max(0, n))
        if rc != 0:
            raise ModelError(f"cache truncate failed: {_error(rc)}")

    def warm(self, seq: int, layer: int) -> None:
        """Makes sequence seq's cache memory of one layer resident, unchanged (lp_kv_warm)."""
        self._check_seq(seq)
        if not 0 <= layer < self.config.n_layer:
            raise ModelError(f"layer {layer} does not exist (0..{self.config.n_layer - 1})")
        rc = lib.lp_kv_warm(self._kv, seq, layer)
        if rc != 0:
            raise ModelError(f"cache warm-up failed: {_error(rc)}")

    def clear(self, seq: int) -> None:
        self.truncate(seq, 0)

    def shift(self, seq: int, keep: int, discard: int) -> None:
        """Context shift: sequence seq drops positions keep .. keep+discard-1 and the later ones
        move down by discard (their keys rotated to the new positions), as llama.cpp's
        `--context-shift` does when the context is full."""
        self._check_seq(seq)
        if keep < 0 or discard < 0 or keep + discard > self.seq_len(seq):
            raise ModelError(f"cannot drop positions {keep}..{keep + discard - 1} of sequence {seq}, "
                             f"which holds {self.seq_len(seq)}")
        rc = lib.lp_kv_shift(self._w, self._kv, seq, keep, discard)
        if rc != 0:
            raise ModelError(f"context shift failed: {_error(rc)}")

    # -- cost ----------------------------------------------------------------

    def prompt_cost(self, start: int, rows: int) -> float:
        """What `rows` prompt rows at positions start .. start + rows - 1 of one sequence cost, in
        multiply-adds: each row's of the layers' weight matrices (of a mixture of experts, the
        experts a token uses), and attention's over the positions up to its own (a sliding-window
        layer's over its window), weighted by ATTENTION_WEIGHT as attention runs in float. The
        server cuts long prompts into chunks of about equal cost with it: a chunk's rows attend to
        all the earlier positions, so at 2,000 tokens a chunk of a small model's prompt costs twice
        the first one of as many rows."""
        cfg = self.config
        if self._cost_terms is None:  # a row's weight multiply-adds, the global and the windowed layers
            windowed = sum(cfg.swa_layers[:cfg.n_layer]) if cfg.n_swa > 0 else 0
            self._cost_terms = (layer_macs(self.file.tensors.values(), cfg.n_expert, cfg.n_expert_used),
                                cfg.n_layer - windowed, windowed)
        row_macs, global_layers, windowed = self._cost_terms
        per_key = 2 * cfg.n_head * cfg.head_dim  # a query row's q.k and its share of v, per position
        keys = (global_layers * _span_sum(start, start + rows, 0)
                + windowed * _span_sum(start, start + rows, cfg.n_swa))
        return rows * row_macs + ATTENTION_WEIGHT * per_key * keys

    # -- forward -------------------------------------------------------------

    def decode(self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[int],
               outputs: Sequence[bool] | None = None, hidden: bool = False,
               prompt: Sequence[bool] | None = None) -> np.ndarray:
        """One forward call over a batch of rows (token, position, sequence); a sequence's rows come
        in order of position, the first at its length. Returns the marked rows' float32 logits
        (rows, n_vocab), or final-norm hidden states (rows, n_embd) with hidden; `outputs` None
        marks the last row only. `prompt` says which rows are prompt rows and which a generated
        token's (one per sequence, or a token and its drafts: up to LP_GEN_ROWS, each computed as a
        lone generated row); None: a sequence's only row is generated, several are a prompt. A row's result depends on its kind, never on the other sequences (lp_batch)."""
        n = len(tokens)
        if n == 0:
            raise ModelError("no tokens to evaluate")
        if n > self.max_batch:
            raise ModelError(f"a batch of {n} rows is larger than {self.max_batch}")
        if not (len(positions) == len(seqs) == n and (outputs is None or len(outputs) == n)
                and (prompt is None or len(prompt) == n)):
            raise ModelError("tokens, positions, sequences, outputs and kinds differ in length")
        ids = np.ascontiguousarray(tokens, dtype=np.int32)
        pos = np.ascontiguousarray(positions, dtype=np.int32)
        seq = np.ascontiguousarray(seqs, dtype=np.int32)
        mark = None if outputs is None else np.asarray(outputs, dtype=bool).astype(np.int8)
        kinds = None if prompt is None else np.asarray(prompt, dtype=bool).astype(np.int8)
        bad = ids[(ids < 0) | (ids >= self.config.n_vocab)]
        if bad.size:
            raise ModelError(f"token id {int(bad[0])} is outside the vocabulary (0..{self.config.n_vocab - 1})")
        if int(pos.max()) >= self.n_ctx:
            raise ModelError(f"position {int(pos.max())} exceeds the context size {self.n_ctx}")
        rows = 1 if mark is None else int(mark.sum())
        out = np.empty((rows, self.config.n_embd if hidden else self.config.n_vocab), np.float32)
        batch = ffi.new("lp_batch *")
        keep = (ids, pos, seq, mark, kinds)
        batch.n = n
        batch.token = ffi.cast("int32_t *", ffi.from_buffer(ids))
        batch.pos = ffi.cast("int32_t *", ffi.from_buffer(pos))
        batch.seq = ffi.cast("int32_t *", ffi.from_buffer(seq))
        batch.out = ffi.cast("int8_t *", ffi.from_buffer(mark)) if mark is not None else ffi.NULL
        batch.prompt = ffi.cast("int8_t *", ffi.from_buffer(kinds)) if kinds is not None else ffi.NULL
        rc = lib.lp_decode(self._w, self._kv, self._scratch, batch,
                           ffi.cast("float *", ffi.from_buffer(out)), lib.LP_OUT_HIDDEN if hidden else lib.LP_OUT_LOGITS)
        del keep
        if rc != 0:
            raise ModelError(f"forward pass failed: {_error(rc)}")
        return out

    def forward(self, tokens: list[int] | np.ndarray, pos: int, all_logits: bool = False, seq: int = 0,
                prompt: bool | None = None) -> np.ndarray:
        """Runs tokens at positions pos.. of sequence seq (the cache keeps its positions 0..pos-1
        and drops the rest); `prompt` says whether they are prompt tokens or (one) generated
        token, None: several are a prompt, one is generated (see `decode`).

        Returns float32 logits (n_vocab,) of the last token, or (n, n_vocab) with all_logits.
        Long inputs go through in chunks of max_batch.
        """
        out = self._run(tokens, pos, seq, all_rows=all_logits, hidden=False, prompt=prompt)
        return out if all_logits else out[0]

    def hidden(self, tokens: list[int] | np.ndarray, pos: int, seq: int = 0) -> np.ndarray:
        """Final-norm hidden states (n, n_embd) of the tokens run at positions pos.. (embeddings)."""
        return self._run(tokens, pos, seq, all_rows=True, hidden=True, prompt=True)

    def _run(self, tokens: list[int] | np.ndarray, pos: int, seq: int, all_rows: bool, hidden: bool,
             prompt: bool | None) -> np.ndarray:
        ids = np.ascontiguousarray(tokens, dtype=np.int32).reshape(-1)
        n = ids.size
        self._check_seq(seq)
        if n == 0:
            raise ModelError("no tokens to evaluate")
        if pos < 0 or pos + n > self.n_ctx:
            raise ModelError(f"{pos + n} tokens exceed the context size {self.n_ctx}")
        if pos > self.seq_len(seq):
            raise ModelError(f"position {pos} is past the {self.seq_len(seq)} positions sequence {seq} holds")
        self.truncate(seq, pos)
        kinds = np.full(min(n, self.max_batch), n > 1 if prompt is None else prompt)  # every chunk alike
        parts, start = [], 0
        while start < n:
            size = min(self.max_batch, n - start)
            chunk = ids[start:start + size]
            marks = [True] * size if all_rows else None  # None: the last row
            out = self.decode(chunk, np.arange(pos + start, pos + start + size), np.full(size, seq), marks,
                              hidden=hidden, prompt=kinds[:size])
            start += size
            if all_rows or start >= n:
                parts.append(out)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
