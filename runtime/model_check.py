"""What a GGUF must hold for this runtime to run it, checked before anything is allocated.

    cfg = check_model(gguf_file)   # ModelConfig, or ModelError / GGUFError / TokenizerError
    cfg = read_model(gguf_file)    # the same checks but 6: what the file asks for, runnable or not

Standard library + numpy only (no C kernels), so `packer build` can refuse at build time a model
the runtime would refuse at start-up, with the same one-line message. Checked, in this order:
  1. the architecture is one runtime/arch.py describes;
  2. every metadata key the runtime reads has the GGUF type llama.cpp's loader requires;
  3. the hyperparameters are in range (each error names its key), before any is used to size
     anything: a block_count of 2**31 fails here, not in an allocation;
  4. the vocabulary can be built (tokenizer.check_vocab);
  5. the tensors against the architecture's table (arch.py): block_count matches the blk.N
     tensors present, every required tensor exists with the shape the hyperparameters give and a
     type the kernels compute with, no model tensor is one the table does not know (it would be
     silently ignored; a tensor named like none of llama.cpp's, e.g. padding, is not a model tensor);
  6. every feature the model needs (its architecture's flags, its optional tensors, its rope
     scaling) is one the C forward pass implements (C_FORWARD_FEATURES); otherwise one line names
     what is missing.
Tensor data lying inside the file is the GGUF reader's check (runtime/gguf.py).
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from runtime.arch import ARCHS, Arch, TensorSpec, global_table, layer_table, swa_layers
from runtime.constants import (
    GGML_QUANT_SIZES, KEY_BLOCK_COUNT, KEY_CONTEXT_LENGTH, KEY_EMBEDDING_LENGTH,
    KEY_EXPERT_COUNT, KEY_EXPERT_FEED_FORWARD_LENGTH, KEY_EXPERT_USED_COUNT, KEY_FEED_FORWARD_LENGTH,
    KEY_FINAL_LOGIT_SOFTCAPPING, KEY_GENERAL_ARCHITECTURE, KEY_HEAD_COUNT, KEY_HEAD_COUNT_KV, KEY_KEY_LENGTH,
    KEY_LAYER_NORM_RMS_EPS, KEY_ROPE_DIMENSION_COUNT, KEY_ROPE_FREQ_BASE, KEY_ROPE_FREQ_BASE_SWA,
    KEY_ROPE_SCALING_ATTN_FACTOR, KEY_ROPE_SCALING_FACTOR, KEY_ROPE_SCALING_ORIG_CTX_LEN, KEY_ROPE_SCALING_TYPE,
    KEY_SLIDING_WINDOW, KEY_SLIDING_WINDOW_PATTERN, KEY_VALUE_LENGTH, MAX_CONTEXT, MAX_DIM, MAX_EXPERTS,
    MAX_LAYERS, ROPE_SCALING_FACTOR_RANGE, RUNTIME_TENSOR_TYPES,
)
from runtime.gguf import GGUFFile, check_metadata_types, get_key
from runtime.tokenizer import check_vocab

# What the C forward pass (csrc/engine/model.c) implements beyond the plain llama layer: the
# feature names of `needed_features`. A flag lands here with its branch in the C forward pass.
C_FORWARD_FEATURES: frozenset[str] = frozenset((
    "NEOX rope", "q/k/v biases", "q/k RMS norms", "post-attention/post-FFN norms", "gelu_tanh activation",
    "an embedding scale", "an attention scale", "sliding-window attention", "final logit soft-capping",
    "YaRN rope scaling", "rope frequency factors (rope_freqs.weight)", "LongRoPE factors (rope_factors_long/short)",
    "a rope attention factor", "a fused attn_qkv tensor", "a fused attn_qkv.bias", "a fused gate/up ffn_up tensor"))


class ModelError(ValueError):
    """A model this runtime cannot run; the message is one line naming why."""


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_vocab: int
    n_ctx_train: int
    n_embd: int
    n_layer: int
    n_ff: int                # per expert in a MoE model
    n_head: int
    n_head_kv: int
    head_dim: int
    n_rot: int
    rms_eps: float
    rope_base: float
    rope_freq_scale: float   # 1 / linear scaling factor
    n_expert: int
    n_expert_used: int
    # -- the architecture's flags (runtime/arch.py) and what the file adds to them; the defaults
    #    are the plain llama layer
    rope_neox: bool = False              # rotate halves (NEOX) instead of adjacent pairs
    rope_scaling: str = "none"           # "none", "linear", "yarn" or "longrope" ({arch}.rope.scaling.type)
    rope_orig_ctx: int = 0               # YaRN / LongRoPE: the context the model was trained for
    rope_attn_factor: float = 1.0        # cos/sin magnitude factor ({arch}.rope.scaling.attn_factor)
    rope_factors: str = ""               # "rope_freqs" (Llama 3.1+), "longrope" (Phi-3 long/short) or ""
    rope_base_swa: float = 10000.0       # rope base of the sliding-window layers
    qkv_bias: bool = False               # biases on q, k and v
    fused_qkv: bool = False              # one attn_qkv tensor: q rows, then k, then v
    fused_qkv_bias: bool = False         # ... with one attn_qkv.bias
    fused_gate_up: bool = False          # one ffn_up tensor of 2*n_ff rows: gate, then up
    qk_norm: bool = False                # RMS norm per head of q and k (attn_q_norm, attn_k_norm)
    post_norms: bool = False             # post_attention_norm, post_ffw_norm before the residual adds
    activation: str = "silu"             # "silu" or "gelu_tanh"
    embd_scale: float = 1.0              # token embeddings times this (Gemma: sqrt(n_embd))
    attn_scale: float | None = None      # q.k scale; None: 1/sqrt(head_dim)
    n_swa: int = 0                       # sliding window (positions), 0: none
    swa_pattern: int = 0                 # ... on every layer but each swa_pattern-th (0: every layer)
    swa_layers: tuple[bool, ...] = ()    # per layer: uses the sliding window
    attn_softcap: float = 0.0            # attention logits c*tanh(x/c); 0: none
    final_softcap: float = 0.0           # output logits c*tanh(x/c); 0: none

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
        return _read_config(md, ARCHS[arch], check_vocab(md))


def architecture(md: dict[str, Any]) -> str:
    arch = get_key(md, KEY_GENERAL_ARCHITECTURE)
    if arch not in ARCHS:
        raise ModelError(f"unsupported model architecture {arch!r} (supported: {', '.join(ARCHS)})")
    return arch


def read_model(f: GGUFFile) -> ModelConfig:
    """Checks 1-5: the hyperparameters and the tensor-derived flags of what the file asks for."""
    return check_tensors(f, ModelConfig.from_gguf(f))


def check_model(f: GGUFFile) -> ModelConfig:
    """Everything above; returns the checked hyperparameters. Allocates nothing sized by the file."""
    cfg = read_model(f)
    missing = [feature for feature in needed_features(cfg) if feature not in C_FORWARD_FEATURES]
    if missing:
        raise ModelError(f"model: this {cfg.arch} model needs {', '.join(missing)}, which this runtime's "
                         "forward pass does not implement yet")
    return cfg


def needed_features(cfg: ModelConfig) -> list[str]:
    """The forward-pass features beyond the plain llama layer that cfg needs, by name."""
    flags = [
        (cfg.rope_neox, "NEOX rope"), (cfg.rope_scaling == "yarn", "YaRN rope scaling"),
        (cfg.rope_factors == "rope_freqs", "rope frequency factors (rope_freqs.weight)"),
        (cfg.rope_factors == "longrope", "LongRoPE factors (rope_factors_long/short)"),
        (cfg.rope_attn_factor != 1.0, "a rope attention factor"),
        (cfg.qkv_bias, "q/k/v biases"), (cfg.fused_qkv, "a fused attn_qkv tensor"),
        (cfg.fused_qkv_bias, "a fused attn_qkv.bias"),
        (cfg.fused_gate_up, "a fused gate/up ffn_up tensor"), (cfg.qk_norm, "q/k RMS norms"),
        (cfg.post_norms, "post-attention/post-FFN norms"), (cfg.activation != "silu", f"{cfg.activation} activation"),
        (cfg.embd_scale != 1.0, "an embedding scale"),
        (cfg.attn_scale is not None and cfg.attn_scale != 1 / math.sqrt(cfg.head_dim), "an attention scale"),
        (cfg.n_swa > 0 and any(cfg.swa_layers), "sliding-window attention"),
        (cfg.attn_softcap > 0, "attention logit soft-capping"), (cfg.final_softcap > 0, "final logit soft-capping"),
    ]
    return [name for on, name in flags if on]


# -- hyperparameters -----------------------------------------------------------

def _bad(key: str, value: Any, why: str) -> ModelError:
    return ModelError(f"model: {key} = {value!r} {why}")


def _read_config(md: dict[str, Any], arch: Arch, n_vocab: int) -> ModelConfig:
    def key(template: str) -> str:
        return template.format(arch=arch.name)

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
    if arch.moe == "no" and n_expert:
        raise _bad(key(KEY_EXPERT_COUNT), n_expert, f"but a {arch.name} model has no experts")
    if arch.moe == "required" and not n_expert:
        raise ModelError(f"model metadata lacks {key(KEY_EXPERT_COUNT)} (a {arch.name} model has experts)")
    n_expert_used = count(KEY_EXPERT_USED_COUNT, None, high=n_expert) if n_expert else 0
    if arch.moe == "required":  # llama.cpp: the expert width, else feed_forward_length / experts used
        n_ff = count(KEY_EXPERT_FEED_FORWARD_LENGTH, max(n_ff // n_expert_used, 1))
    rope = _rope_scaling(md, key, n_ctx_train)
    return ModelConfig(
        arch=arch.name, n_vocab=n_vocab, n_ctx_train=n_ctx_train, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff,
        n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, n_rot=n_rot,
        rms_eps=_rms_eps(md, key(KEY_LAYER_NORM_RMS_EPS)), rope_base=_rope_base(md, key(KEY_ROPE_FREQ_BASE)),
        n_expert=n_expert, n_expert_used=n_expert_used, rope_neox=arch.rope_neox, qk_norm=arch.qk_norm,
        post_norms=arch.post_norms, activation=arch.activation, fused_gate_up=arch.fused_gate_up,
        embd_scale=math.sqrt(n_embd) if arch.embd_scale else 1.0, attn_scale=1 / math.sqrt(head_dim),
        final_softcap=_softcap(md, key(KEY_FINAL_LOGIT_SOFTCAPPING)) if arch.final_softcap else 0.0,
        **rope, **_sliding_window(md, key, arch, n_layer, n_ctx_train))


def _rms_eps(md: dict[str, Any], key: str) -> float:
    eps = get_key(md, key)
    if eps is None:
        raise ModelError(f"model metadata lacks {key}")
    if not 0 < eps <= 1:  # also refuses NaN
        raise _bad(key, eps, "is out of range (expected a number in (0, 1])")
    return eps


def _rope_base(md: dict[str, Any], key: str) -> float:
    base = get_key(md, key, 10000.0)  # llama.cpp's default, for the sliding-window base too
    # Below 1 the rotation frequencies grow with the dimension instead of falling (1e-45 makes
    # them overflow to inf and the activations NaN); no model is trained that way.
    if not (1 <= base and math.isfinite(base)):
        raise _bad(key, base, "is out of range (expected a finite number >= 1)")
    return base


ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")  # llama.cpp's names


def _rope_scaling(md: dict[str, Any], key: Any, n_ctx_train: int) -> dict[str, Any]:
    """The rope scaling fields of ModelConfig. As in llama.cpp: no scaling type means linear, a
    factor of 0 or none means 1, and type "none" ignores the factor."""
    type_key, factor_key = key(KEY_ROPE_SCALING_TYPE), key(KEY_ROPE_SCALING_FACTOR)
    scaling = get_key(md, type_key, "linear")
    if scaling not in ROPE_SCALING_TYPES:
        raise ModelError(f"unsupported rope scaling type {scaling!r} ({type_key}; "
                         f"supported: {', '.join(ROPE_SCALING_TYPES)})")
    factor = get_key(md, factor_key, 0.0)
    freq_scale = 1.0
    if scaling != "none" and factor != 0:
        low, high = ROPE_SCALING_FACTOR_RANGE
        if not low <= factor <= high:  # also refuses NaN
            raise _bad(factor_key, factor, f"is out of range (expected 0 for none, or {low:g}..{high:g})")
        freq_scale = 1.0 / factor
    attn_key = key(KEY_ROPE_SCALING_ATTN_FACTOR)
    attn_factor = get_key(md, attn_key, 1.0)
    if not 0 < attn_factor <= 100:
        raise _bad(attn_key, attn_factor, "is out of range (expected a number in (0, 100])")
    orig = get_key(md, key(KEY_ROPE_SCALING_ORIG_CTX_LEN), n_ctx_train)
    if not 1 <= orig <= MAX_CONTEXT:
        raise _bad(key(KEY_ROPE_SCALING_ORIG_CTX_LEN), orig, f"is out of range (expected 1..{MAX_CONTEXT})")
    if freq_scale == 1.0 and scaling in ("linear", "yarn"):
        scaling = "none"  # a factor of 1 scales nothing (and YaRN's ramp then mixes equal angles)
    return {"rope_scaling": scaling, "rope_freq_scale": freq_scale, "rope_attn_factor": attn_factor,
            "rope_orig_ctx": orig}


def _softcap(md: dict[str, Any], key: str) -> float:
    cap = get_key(md, key, 0.0)
    if not (cap == 0 or 1e-3 <= cap <= 1e6):  # also refuses NaN and negatives
        raise _bad(key, cap, "is out of range (expected 0 for none, or 0.001..1e6)")
    return cap


def _sliding_window(md: dict[str, Any], key: Any, arch: Arch, n_layer: int, n_ctx_train: int) -> dict[str, Any]:
    """n_swa, swa_layers and rope_base_swa. Only architectures with a window pattern read the
    window (llama.cpp ignores the key elsewhere, and turns it off for Phi-3)."""
    window = get_key(md, key(KEY_SLIDING_WINDOW), 0) if arch.swa_pattern is not None else 0
    if not window:
        return {}
    if window > MAX_CONTEXT:
        raise _bad(key(KEY_SLIDING_WINDOW), window, f"is out of range (expected 0..{MAX_CONTEXT})")
    pattern = get_key(md, key(KEY_SLIDING_WINDOW_PATTERN), arch.swa_pattern)
    if pattern > MAX_LAYERS:
        raise _bad(key(KEY_SLIDING_WINDOW_PATTERN), pattern, f"is out of range (expected 0..{MAX_LAYERS})")
    return {"n_swa": window, "swa_pattern": pattern, "swa_layers": swa_layers(pattern, n_layer),
            "rope_base_swa": _rope_base(md, key(KEY_ROPE_FREQ_BASE_SWA))}


# -- tensors -------------------------------------------------------------------

_BLOCK_NAME = re.compile(r"blk\.(\d+)\.")
# Names of model tensors outside the layers, as llama.cpp's architectures name them: one of these
# that the table does not list is a tensor the model needs and this runtime would ignore. Other
# names (a file's own extra data, e.g. the benchmarks' padding tensor) are not model tensors.
_GLOBAL_NAME = re.compile(r"(token_embd|token_embd_norm|token_types|position_embd|output|output_norm|rope_\w+"
                          r"|cls|cls\.output|per_layer_\w+|altup_\w+|laurel_\w+|dense_\w+)\.(weight|bias)$")


def global_tensors(cfg: ModelConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """lp_model field -> (tensor name, numpy shape) outside the layers; output.weight may be
    absent (tied to token_embd)."""
    present = {"rope_freqs": cfg.rope_factors == "rope_freqs", "rope_long": cfg.rope_factors == "longrope",
               "rope_short": cfg.rope_factors == "longrope"}
    return {t.field: (t.name, t.shape) for t in global_table(ARCHS[cfg.arch], cfg)
            if t.field and present.get(t.field, True)}


def layer_tensors(cfg: ModelConfig, i: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """lp_layer field -> (tensor name, numpy shape) of layer i, for the tensors the C forward
    binds that the model has (check_model refuses a model that needs any other)."""
    present = {"wq": not cfg.fused_qkv, "wk": not cfg.fused_qkv, "wv": not cfg.fused_qkv, "wqkv": cfg.fused_qkv}
    present.update(dict.fromkeys(("bq", "bk", "bv"), cfg.qkv_bias and not cfg.fused_qkv_bias), bqkv=cfg.fused_qkv_bias)
    return {t.field: (t.name, t.shape) for t in layer_table(ARCHS[cfg.arch], cfg, i)
            if t.field and present.get(t.field, True)}


def c_flags(cfg: ModelConfig) -> dict[str, int | float]:
    """lp_weights' architecture flags (csrc/api.h) for cfg."""
    return {"rope_neox": int(cfg.rope_neox), "act_gelu": int(cfg.activation == "gelu_tanh"),
            "embd_scale": cfg.embd_scale, "attn_scale": cfg.attn_scale or 0.0, "n_swa": cfg.n_swa,
            "swa_pattern": cfg.swa_pattern, "rope_base_swa": cfg.rope_base_swa, "final_softcap": cfg.final_softcap,
            "rope_yarn": int(cfg.rope_scaling == "yarn"), "rope_orig_ctx": cfg.rope_orig_ctx,
            "rope_attn_factor": cfg.rope_attn_factor}


def check_tensors(f: GGUFFile, cfg: ModelConfig) -> ModelConfig:
    """Layer count against the blk.N tensors, then each tensor's presence, shape and type against
    the architecture's table; returns cfg with the flags the optional tensors present give."""
    arch = ARCHS[cfg.arch]
    blocks: dict[int, list[str]] = {}
    for name in f.tensors:
        m = _BLOCK_NAME.match(name)
        if m:
            blocks.setdefault(int(m.group(1)), []).append(name)
    key = KEY_BLOCK_COUNT.format(arch=cfg.arch)
    if len(blocks) != cfg.n_layer:
        raise _bad(key, cfg.n_layer, f"does not match the {len(blocks)} layers (blk.N tensors) in the file")
    table = global_table(arch, cfg)
    known = {t.name for t in table}
    for name in f.tensors:
        if name not in known and _GLOBAL_NAME.match(name):
            raise _unused(name, cfg)
    for i in range(cfg.n_layer):
        if i not in blocks:
            raise _bad(key, cfg.n_layer, f"but the file has no blk.{i}.* tensors")
        layer = layer_table(arch, cfg, i)
        names = {t.name for t in layer}
        for name in blocks[i]:
            if name not in names:
                raise _unused(name, cfg)
        _check_attention_form(f, f"blk.{i}.")
        table += layer
    for t in table:
        if t.need == "required" or t.name in f.tensors:
            _check_tensor(f, t)
    return _tensor_flags(f, cfg)


def _unused(name: str, cfg: ModelConfig) -> ModelError:
    return ModelError(f"tensor {name} is not used by this runtime's {cfg.arch} forward pass "
                      "(a model that needs it cannot run here)")


def _check_attention_form(f: GGUFFile, p: str) -> None:
    """q, k and v as three tensors or as one fused attn_qkv, not both and not partly."""
    separate = [p + f"attn_{x}.weight" in f.tensors for x in "qkv"]
    fused = p + "attn_qkv.weight" in f.tensors
    if fused and any(separate):
        raise ModelError(f"model has both {p}attn_qkv.weight and separate q/k/v tensors")
    if not fused and not all(separate):
        missing = next(p + f"attn_{x}.weight" for x, there in zip("qkv", separate) if not there)
        raise ModelError(f"model lacks tensor {missing}")
    biases = [p + f"attn_{x}.bias" in f.tensors for x in "qkv"]
    if any(biases) and not all(biases):
        raise ModelError(f"model has only some of the {p}attn_q/k/v.bias tensors (all three or none)")


def _tensor_flags(f: GGUFFile, cfg: ModelConfig) -> ModelConfig:
    """The flags that optional tensors set (their presence is uniform across layers in real files;
    layer 0 decides, and the others were checked against the same table)."""
    t = f.tensors
    long_short = ["rope_factors_long.weight" in t, "rope_factors_short.weight" in t]
    if any(long_short) and not all(long_short):
        raise ModelError("model has only one of rope_factors_long.weight and rope_factors_short.weight (LongRoPE needs both)")
    factors = "rope_freqs" if "rope_freqs.weight" in t else "longrope" if all(long_short) else ""
    return dataclasses.replace(
        cfg, fused_qkv="blk.0.attn_qkv.weight" in t, rope_factors=factors, fused_qkv_bias="blk.0.attn_qkv.bias" in t,
        qkv_bias="blk.0.attn_q.bias" in t or "blk.0.attn_qkv.bias" in t)


def _check_tensor(f: GGUFFile, spec: TensorSpec) -> None:
    name, shape = spec.name, spec.shape
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
