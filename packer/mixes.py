"""Quantization mixes: which type each tensor of a model gets under `--quantize NAME`, as
llama.cpp's `llama_model_quantize` chooses it without an importance matrix (src/llama-quant.cpp
of llama-cpp-python 0.3.36: tensor_allows_quantization, llama_tensor_get_type and its fallback).

The rules, for the mixes offered here:
- Only tensors of two or more dimensions whose name ends in "weight" are quantized; norms
  ("_norm.weight"), the MoE router ("ffn_gate_inp.weight") and a few other small tensors of
  other architectures keep their type.
- output.weight (and token_embd.weight when the model has no output.weight: tied embeddings)
  becomes Q6_K, Q8_0 when the mix's type does not divide its rows or the mix is Q8_0.
- attn_v: Q2_K -> Q4_K with 4+ query heads per kv head, else Q3_K; Q3_K_M -> Q5_K for the first
  two, Q4_K after; Q3_K_L -> Q5_K; Q4_K_M / Q5_K_M -> Q6_K on "more bits" layers (the first and
  last eighth, and every third layer between); Q4_K_S -> Q5_K for the first four; a 70B llama's
  Q3_K / Q4_K -> Q5_K; with 8 experts every mix -> Q8_0 (attn_k too).
- ffn_down: Q2_K -> Q3_K; Q3_K_M -> Q5_K in the first sixteenth, Q4_K after; Q3_K_L -> Q5_K;
  Q4_K_M / Q5_K_M -> Q6_K on "more bits" layers; Q4_K_S -> Q5_K in the first eighth.
- attn_output: Q2_K -> Q3_K, Q3_K_M -> Q4_K, Q3_K_L -> Q5_K; with 8 experts Q2_K, Q3_K_S,
  Q3_K_M, Q4_K_S, Q4_K_M -> Q5_K.
- A row length the chosen type's block does not divide falls back: Q2_K, Q3_K -> Q4_0,
  Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and to F16 when even 32 does not divide it.
- F16 and BF16 convert every quantizable tensor, no rule applies.
Layer positions count the tensors of a role in llama.cpp's order (by layer number, then name);
with experts, the layer is read from the name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from runtime.constants import GGML_QUANT_SIZES, GGMLType as T

#: mix name -> (llama.cpp's general.file_type value, the mix's default tensor type)
MIXES: dict[str, tuple[int, T]] = {
    "Q2_K": (10, T.Q2_K), "Q3_K_S": (11, T.Q3_K), "Q3_K_M": (12, T.Q3_K), "Q3_K_L": (13, T.Q3_K),
    "Q4_0": (2, T.Q4_0), "Q4_1": (3, T.Q4_1), "Q4_K_S": (14, T.Q4_K), "Q4_K_M": (15, T.Q4_K),
    "Q5_0": (8, T.Q5_0), "Q5_1": (9, T.Q5_1), "Q5_K_S": (16, T.Q5_K), "Q5_K_M": (17, T.Q5_K),
    "Q6_K": (18, T.Q6_K), "Q8_0": (7, T.Q8_0), "F16": (1, T.F16), "BF16": (32, T.BF16),
}

FLOAT_TYPES = (T.F32, T.F16, T.BF16)
_FALLBACK = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}
_KEEP = ("_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
         "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
         "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
         "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
         "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
         "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
         "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
         "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd")
_LAYER = re.compile(r"blk\.\s*([+-]?\d+)")


class MixError(ValueError):
    """A model the mix cannot be applied to; one line."""


def mix_names() -> str:
    return ", ".join(MIXES)


def find_mix(name: str) -> str:
    """The mix's canonical name (case ignored), or MixError listing the valid ones."""
    canon = name.upper()
    if canon not in MIXES:
        raise MixError(f"unknown quantization type {name!r}: one of {mix_names()}")
    return canon


@dataclass(frozen=True)
class ModelInfo:
    """What the rules read of a model's metadata."""
    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int
    n_expert: int

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:
        return self.arch == "llama" and self.n_layer == 80 and self.n_head != self.n_head_kv


def layer_of(name: str) -> int:
    """blk.N.... -> N; -1 for the tensors outside the layers (as llama.cpp sorts them)."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else -1


def file_order(names: list[str]) -> list[str]:
    """llama.cpp's order of a model's tensors: by layer number (the others first), then by name."""
    return sorted(names, key=lambda n: (layer_of(n), n.encode()))


def n_dims(shape: tuple[int, ...]) -> int:
    """ggml's count of dimensions (numpy shape, outermost first): trailing 1s do not count."""
    ne = list(reversed(shape))
    while len(ne) > 1 and ne[-1] == 1:
        ne.pop()
    return len(ne)


def quantizable(name: str, shape: tuple[int, ...]) -> bool:
    return (n_dims(shape) >= 2 and name.endswith("weight") and not any(k in name for k in _KEEP)
            and name not in ("position_embd.weight", "token_types.weight"))


def category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"), ("attn_v.weight", "attn_v"),
                      ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                      ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if part in name:
            return cat
    return "other"


def more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


class _Chooser:
    """llama_tensor_get_type: the counters of the layer rules advance as tensors are chosen, in file order."""

    def __init__(self, mix: str, info: ModelInfo, names: list[str]) -> None:
        self.mix, self.info = mix, info
        self.default = MIXES[mix][1]
        cats = [category(n) for n in names]
        self.n_attn_v = sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in cats)
        self.tied = "output" not in cats
        self.i_attn_v = 0
        self.i = {"ffn_down": 0, "ffn_gate": 0, "ffn_up": 0}

    def choose(self, name: str, row_length: int) -> T:
        if self.default not in FLOAT_TYPES:
            return self._fallback(name, row_length, self._rule(name, row_length))
        return self.default

    def _layer(self, role: str, name: str) -> tuple[int, int]:
        """(this tensor's layer, the layer count) for the ffn rules."""
        i, n = self.i[role], self.info.n_layer
        if max(1, self.info.n_expert) > 1:
            i = layer_of(name)
            m = _LAYER.match(name)
            if m is None:
                raise MixError(f"cannot tell the layer of tensor {name!r}")
            if not 0 <= i < n:
                raise MixError(f"tensor {name!r}: layer {i} outside [0, {n})")
        self.i[role] += 1
        return i, n

    def _rule(self, name: str, row_length: int) -> T:
        mix, info, new = self.mix, self.info, self.default
        cat = category(name)
        falcon = info.arch == "falcon"
        if cat == "output" or (self.tied and cat == "token_embd"):
            if falcon or row_length % GGML_QUANT_SIZES[new][0]:
                return T.Q8_0
            return new if new == T.Q8_0 else T.Q6_K
        if cat == "token_embd":
            return new
        if cat in ("attn_v", "attn_qkv", "attn_kv_b"):
            return self._attn_v(new)
        if cat == "attn_k":
            return T.Q8_0 if info.n_expert == 8 else new
        if cat == "ffn_down":
            return self._ffn_down(name, new)
        if cat == "attn_output":
            if falcon:
                return T.Q4_K if mix == "Q3_K_L" else new
            if info.n_expert == 8:
                return T.Q5_K if mix in ("Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M") else new
            return {"Q2_K": T.Q3_K, "Q3_K_M": T.Q4_K, "Q3_K_L": T.Q5_K}.get(mix, new)
        if cat in ("ffn_gate", "ffn_up"):
            self._layer(cat, name)  # only counted (and checked) for these mixes
        return new

    def _attn_v(self, new: T) -> T:
        mix, info, i = self.mix, self.info, self.i_attn_v
        if mix == "Q2_K":
            new = T.Q4_K if info.n_gqa >= 4 else T.Q3_K
        elif mix == "Q3_K_M":
            new = T.Q5_K if i < 2 else T.Q4_K
        elif mix == "Q3_K_L":
            new = T.Q5_K
        elif mix in ("Q4_K_M", "Q5_K_M") and more_bits(i, self.n_attn_v):
            new = T.Q6_K
        elif mix == "Q4_K_S" and i < 4:
            new = T.Q5_K
        if info.is_70b and new in (T.Q3_K, T.Q4_K):
            new = T.Q5_K
        if info.n_expert == 8:
            new = T.Q8_0
        self.i_attn_v += 1
        return new

    def _ffn_down(self, name: str, new: T) -> T:
        mix, falcon = self.mix, self.info.arch == "falcon"
        i, n = self._layer("ffn_down", name)
        if mix == "Q2_K":
            return T.Q3_K
        if mix == "Q3_K_M":
            return T.Q5_K if i < n // 16 else T.Q4_K if not falcon or more_bits(i, n) else T.Q3_K
        if mix == "Q3_K_L":
            return T.Q4_K if falcon else T.Q5_K
        if mix == "Q4_K_M":
            if falcon:
                return T.Q6_K if i < n // 16 else T.Q5_K if more_bits(i, n) else T.Q4_K
            return T.Q6_K if more_bits(i, n) else new
        if mix == "Q5_K_M" and more_bits(i, n):
            return T.Q6_K
        if mix == "Q4_K_S" and not falcon and i < n // 8:
            return T.Q5_K
        return new

    @staticmethod
    def _fallback(name: str, row_length: int, new: T) -> T:
        block = GGML_QUANT_SIZES[new][0]
        if row_length % block == 0:
            return new
        if new in _FALLBACK:
            new = _FALLBACK[new]
        elif block > 32:
            raise MixError(f"tensor {name!r}: no fallback for type {new.name} (row length {row_length})")
        return new if row_length % GGML_QUANT_SIZES[new][0] == 0 else T.F16


def choose_types(mix: str, info: ModelInfo, tensors: list[tuple[str, tuple[int, ...], T]]) -> dict[str, T]:
    """{name: type in the output} for (name, numpy shape, type) in llama.cpp's order (file_order)."""
    chooser = _Chooser(mix, info, [name for name, _, _ in tensors])
    out = {}
    for name, shape, qtype in tensors:
        out[name] = chooser.choose(name, shape[-1]) if quantizable(name, shape) else qtype
    return out
