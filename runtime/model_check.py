"""What a GGUF must hold for this runtime to run it, checked before anything is allocated.

    cfg = check_model(gguf_file)   # ModelConfig, or ModelError / GGUFError / TokenizerError

Standard library + numpy only (no C kernels), so `packer build` can refuse at build time a model
the runtime would refuse at start-up, with the same one-line message. Checked, in this order:
  1. the architecture is one the runtime implements;
  2. every metadata key the runtime reads has the GGUF type llama.cpp's loader requires;
  3. the hyperparameters are in range (each error names its key), before any is used to size
     anything: a block_count of 2**31 fails here, not in an allocation;
  4. the vocabulary can be built (tokenizer.check_vocab);
  5. the tensors: block_count matches the blk.N tensors present, every tensor the forward pass
     uses exists with the shape the hyperparameters give and a type the kernels compute with,
     and no layer holds a tensor the forward pass would silently ignore (biases, ...).
Tensor data lying inside the file is the GGUF reader's check (runtime/gguf.py).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from runtime.constants import (
    GGML_QUANT_SIZES, KEY_BLOCK_COUNT, KEY_CONTEXT_LENGTH, KEY_EMBEDDING_LENGTH, KEY_EXPERT_COUNT,
    KEY_EXPERT_USED_COUNT, KEY_FEED_FORWARD_LENGTH, KEY_GENERAL_ARCHITECTURE, KEY_HEAD_COUNT,
    KEY_HEAD_COUNT_KV, KEY_KEY_LENGTH, KEY_LAYER_NORM_RMS_EPS, KEY_ROPE_DIMENSION_COUNT,
    KEY_ROPE_FREQ_BASE, KEY_ROPE_SCALING_FACTOR, KEY_ROPE_SCALING_TYPE, KEY_VALUE_LENGTH, MAX_CONTEXT,
    MAX_DIM, MAX_EXPERTS, MAX_LAYERS, ROPE_SCALING_FACTOR_RANGE, RUNTIME_TENSOR_TYPES,
    SUPPORTED_ARCHS,
)
from runtime.gguf import GGUFFile, check_metadata_types, get_key
from runtime.tokenizer import check_vocab


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
        """The hyperparameters, type- and range-checked (not against the tensors: check_model)."""
        md = f.metadata
        arch = architecture(md)
        check_metadata_types(md)
        return _read_config(md, arch, check_vocab(md))


def architecture(md: dict[str, Any]) -> str:
    arch = get_key(md, KEY_GENERAL_ARCHITECTURE)
    if arch not in SUPPORTED_ARCHS:
        raise ModelError(f"unsupported model architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHS)})")
    return arch


def check_model(f: GGUFFile) -> ModelConfig:
    """Everything above; returns the checked hyperparameters. Allocates nothing sized by the file."""
    cfg = ModelConfig.from_gguf(f)
    check_tensors(f, cfg)
    return cfg


# -- hyperparameters -----------------------------------------------------------

def _bad(key: str, value: Any, why: str) -> ModelError:
    return ModelError(f"model: {key} = {value!r} {why}")


def _read_config(md: dict[str, Any], arch: str, n_vocab: int) -> ModelConfig:
    def key(template: str) -> str:
        return template.format(arch=arch)

    def count(template: str, default: int | None = None, low: int = 1, high: int = MAX_DIM) -> int:
        """An integer key, required unless a default is given, within low..high."""
        value = get_key(md, key(template), default)
        if value is None:
            raise ModelError(f"model metadata lacks {key(template)}")
        if not low <= value <= high:
            raise _bad(key(template), value, f"is out of range (expected {low}..{high})")
        return value

    n_embd = count(KEY_EMBEDDING_LENGTH)
    n_layer = count(KEY_BLOCK_COUNT, high=MAX_LAYERS)
    n_ff = count(KEY_FEED_FORWARD_LENGTH)
    n_ctx_train = count(KEY_CONTEXT_LENGTH, high=MAX_CONTEXT)
    n_head = count(KEY_HEAD_COUNT)
    n_head_kv = count(KEY_HEAD_COUNT_KV, n_head, high=n_head)
    if n_head % n_head_kv:
        raise _bad(key(KEY_HEAD_COUNT_KV), n_head_kv, f"does not divide {key(KEY_HEAD_COUNT)} = {n_head}")
    if key(KEY_KEY_LENGTH) not in md and n_embd % n_head:
        raise _bad(key(KEY_EMBEDDING_LENGTH), n_embd, f"is not a multiple of {key(KEY_HEAD_COUNT)} = {n_head}")
    head_dim = count(KEY_KEY_LENGTH, n_embd // n_head)
    count(KEY_VALUE_LENGTH, head_dim, low=head_dim, high=head_dim)  # one head size for k and v
    n_rot = count(KEY_ROPE_DIMENSION_COUNT, head_dim, high=head_dim)
    if n_rot % 2:
        raise _bad(key(KEY_ROPE_DIMENSION_COUNT), n_rot, "is odd (rope rotates pairs)")
    n_expert = count(KEY_EXPERT_COUNT, 0, low=0, high=MAX_EXPERTS)
    n_expert_used = count(KEY_EXPERT_USED_COUNT, None, high=n_expert) if n_expert else 0
    return ModelConfig(
        arch=arch, n_vocab=n_vocab, n_ctx_train=n_ctx_train, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff,
        n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, n_rot=n_rot,
        rms_eps=_rms_eps(md, key(KEY_LAYER_NORM_RMS_EPS)), rope_base=_rope_base(md, key(KEY_ROPE_FREQ_BASE)),
        rope_freq_scale=_rope_freq_scale(md, key(KEY_ROPE_SCALING_TYPE), key(KEY_ROPE_SCALING_FACTOR)),
        n_expert=n_expert, n_expert_used=n_expert_used)


def _rms_eps(md: dict[str, Any], key: str) -> float:
    eps = get_key(md, key)
    if eps is None:
        raise ModelError(f"model metadata lacks {key}")
    if not 0 < eps <= 1:  # also refuses NaN
        raise _bad(key, eps, "is out of range (expected a number in (0, 1])")
    return eps


def _rope_base(md: dict[str, Any], key: str) -> float:
    base = get_key(md, key, 10000.0)
    # Below 1 the rotation frequencies grow with the dimension instead of falling (1e-45 makes
    # them overflow to inf and the activations NaN); no model is trained that way.
    if not (1 <= base and math.isfinite(base)):
        raise _bad(key, base, "is out of range (expected a finite number >= 1)")
    return base


def _rope_freq_scale(md: dict[str, Any], type_key: str, factor_key: str) -> float:
    """1 / the linear scaling factor. As in llama.cpp, no scaling type means linear, a factor
    of 0 or none means 1, and type "none" ignores the factor."""
    scaling = get_key(md, type_key, "linear")
    if scaling not in ("none", "linear"):
        raise ModelError(f"unsupported rope scaling type {scaling!r} ({type_key}; supported: none, linear)")
    factor = get_key(md, factor_key, 0.0)
    if scaling == "none" or factor == 0:
        return 1.0
    low, high = ROPE_SCALING_FACTOR_RANGE
    if not low <= factor <= high:  # also refuses NaN
        raise _bad(factor_key, factor, f"is out of range (expected 0 for none, or {low:g}..{high:g})")
    return 1.0 / factor


# -- tensors -------------------------------------------------------------------

_BLOCK_NAME = re.compile(r"blk\.(\d+)\.")


def global_tensors(cfg: ModelConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """lp_model field -> (tensor name, numpy shape) outside the layers; output.weight may be
    absent (tied to token_embd)."""
    D, V = cfg.n_embd, cfg.n_vocab
    return {"tok_embd": ("token_embd.weight", (V, D)), "output_norm": ("output_norm.weight", (D,)),
            "output": ("output.weight", (V, D))}


def layer_tensors(cfg: ModelConfig, i: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """lp_layer field -> (tensor name, numpy shape) of layer i; all required."""
    D, F, E, p = cfg.n_embd, cfg.n_ff, cfg.n_expert, f"blk.{i}."
    out = {"attn_norm": (p + "attn_norm.weight", (D,)), "wq": (p + "attn_q.weight", (cfg.q_dim, D)),
           "wk": (p + "attn_k.weight", (cfg.kv_dim, D)), "wv": (p + "attn_v.weight", (cfg.kv_dim, D)),
           "wo": (p + "attn_output.weight", (D, cfg.q_dim)), "ffn_norm": (p + "ffn_norm.weight", (D,))}
    if E:
        out.update(ffn_gate_inp=(p + "ffn_gate_inp.weight", (E, D)),
                   ffn_gate_exps=(p + "ffn_gate_exps.weight", (E, F, D)),
                   ffn_up_exps=(p + "ffn_up_exps.weight", (E, F, D)),
                   ffn_down_exps=(p + "ffn_down_exps.weight", (E, D, F)))
    else:
        out.update(ffn_gate=(p + "ffn_gate.weight", (F, D)), ffn_up=(p + "ffn_up.weight", (F, D)),
                   ffn_down=(p + "ffn_down.weight", (D, F)))
    return out


def check_tensors(f: GGUFFile, cfg: ModelConfig) -> None:
    """Layer count against the blk.N tensors, then each tensor's presence, shape and type."""
    blocks: dict[int, list[str]] = {}
    for name in f.tensors:
        m = _BLOCK_NAME.match(name)
        if m:
            blocks.setdefault(int(m.group(1)), []).append(name)
    key = KEY_BLOCK_COUNT.format(arch=cfg.arch)
    if len(blocks) != cfg.n_layer:
        raise _bad(key, cfg.n_layer, f"does not match the {len(blocks)} layers (blk.N tensors) in the file")
    expected = dict(global_tensors(cfg).values())
    if "output.weight" not in f.tensors:
        del expected["output.weight"]  # tied: the output reuses token_embd
    for i in range(cfg.n_layer):
        if i not in blocks:
            raise _bad(key, cfg.n_layer, f"but the file has no blk.{i}.* tensors")
        layer = dict(layer_tensors(cfg, i).values())
        for name in blocks[i]:
            if name not in layer:
                raise ModelError(f"tensor {name} is not used by this runtime's {cfg.arch} forward pass "
                                 "(a model that needs it cannot run here)")
        expected.update(layer)
    for name, shape in expected.items():
        _check_tensor(f, name, shape)


def _check_tensor(f: GGUFFile, name: str, shape: tuple[int, ...]) -> None:
    t = f.tensors.get(name)
    if t is None:
        raise ModelError(f"model lacks tensor {name}")
    if tuple(t.shape) != shape:
        raise ModelError(f"tensor {name} has shape {tuple(t.shape)}, expected {shape} from the hyperparameters"
                         + (" (rows = vocabulary size)" if name in ("token_embd.weight", "output.weight") else ""))
    if t.type not in RUNTIME_TENSOR_TYPES:
        raise ModelError(f"tensor {name} has type {t.type.name}, which this runtime cannot compute with")
    if shape[-1] % GGML_QUANT_SIZES[t.type][0]:  # the reader checks it too; the kernels rely on it
        raise ModelError(f"tensor {name}: row length {shape[-1]} is not a multiple of its block size")
