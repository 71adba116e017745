"""Architectures as data: per GGUF `general.architecture`, what its forward pass differs in.

    arch = ARCHS["qwen2"]                      # an Arch: flags + which optional tensors exist
    table = layer_table(arch, cfg, i)          # [TensorSpec(name, shape, need, field)] of layer i

One forward pass serves every architecture listed here; an Arch only says which of its steps
apply (facts from llama.cpp's per-architecture graphs, src/models/*.cpp):

  rope_neox     rotate the two halves of each head (NEOX) instead of adjacent pairs (llama)
  qk_norm       an RMS norm over each head of q and of k, before rope (attn_q_norm, attn_k_norm)
  post_norms    RMS norms on the attention and FFN outputs before each residual add
                (post_attention_norm, post_ffw_norm)
  activation    "silu" (SwiGLU) or "gelu_tanh" (GeGLU with the tanh approximation)
  embd_scale    the token embeddings are multiplied by sqrt(n_embd)
  swa_pattern   with `{arch}.attention.sliding_window` set: every swa_pattern-th layer (the last
                of each group) attends globally, the others within the window (the file's
                `{arch}.attention.sliding_window_pattern` overrides it); None: the architecture
                has no sliding window and the key is ignored
  moe           "no", "optional" (experts when `{arch}.expert_count` > 0) or "required"
  fused_gate_up the FFN's gate and up projections are one tensor ffn_up of 2*n_ff rows, gate first
  final_softcap the file's `{arch}.final_logit_softcapping` applies: logits become c*tanh(x/c)
                (llama.cpp reads it for Gemma 2/3 only; attention logit soft-capping, Gemma 2's, is in
                none of these architectures: the ModelConfig field stays 0)
  rope_factors  the global per-frequency rope factor tensors the architecture may carry:
                "rope_freqs" (Llama 3.1+) or "rope_factors_long"/"rope_factors_short" (Phi-3 LongRoPE)

What every architecture may carry, as llama.cpp's loader accepts it: q/k/v in one fused attn_qkv
tensor instead of three; biases on q, k, v (or on the fused tensor); output.weight absent (tied to
token_embd). The hyperparameter keys are constants.py's KEY_* templates, formatted with the
architecture name; model_check reads them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from runtime.model_check import ModelConfig

Need = Literal["required", "optional"]


@dataclass(frozen=True)
class Arch:
    name: str
    rope_neox: bool = False
    qk_norm: bool = False
    post_norms: bool = False
    activation: str = "silu"
    embd_scale: bool = False
    swa_pattern: int | None = None
    moe: str = "optional"
    fused_gate_up: bool = False
    final_softcap: bool = False
    rope_factors: tuple[str, ...] = ()


ARCHS: dict[str, Arch] = {a.name: a for a in (
    Arch("llama", rope_factors=("rope_freqs",)),
    Arch("qwen2", rope_neox=True, moe="no"),
    Arch("qwen3", rope_neox=True, qk_norm=True, moe="no"),
    Arch("qwen3moe", rope_neox=True, qk_norm=True, moe="required"),
    Arch("gemma3", rope_neox=True, qk_norm=True, post_norms=True, activation="gelu_tanh",
         embd_scale=True, swa_pattern=6, moe="no", final_softcap=True),
    Arch("phi3", rope_neox=True, moe="no", fused_gate_up=True,
         rope_factors=("rope_factors_long", "rope_factors_short")),
)}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor a model of this architecture may hold: GGUF name, numpy shape (row length last),
    whether it must be there, and the lp_model / lp_layer field the C forward binds it to (None
    for a tensor the C side has no field for yet)."""
    name: str
    shape: tuple[int, ...]
    need: Need = "required"
    field: str | None = None


def global_table(arch: Arch, cfg: ModelConfig) -> list[TensorSpec]:
    """The tensors outside the layers."""
    D, V = cfg.n_embd, cfg.n_vocab
    out = [TensorSpec("token_embd.weight", (V, D), field="tok_embd"),
           TensorSpec("output_norm.weight", (D,), field="output_norm"),
           TensorSpec("output.weight", (V, D), "optional", field="output")]  # absent: tied
    fields = {"rope_freqs": "rope_freqs", "rope_factors_long": "rope_long", "rope_factors_short": "rope_short"}
    out += [TensorSpec(f"{name}.weight", (cfg.n_rot // 2,), "optional", fields[name]) for name in arch.rope_factors]
    return out


def layer_table(arch: Arch, cfg: ModelConfig, i: int) -> list[TensorSpec]:
    """The tensors of layer i. A fused attn_qkv and separate attn_q/k/v are both listed as
    optional: exactly one of the two forms must be present (model_check checks it)."""
    D, F, E, hd, p = cfg.n_embd, cfg.n_ff, cfg.n_expert, cfg.head_dim, f"blk.{i}."
    Q, KV = cfg.q_dim, cfg.kv_dim
    opt: Need = "optional"
    out = [TensorSpec(p + "attn_norm.weight", (D,), field="attn_norm"),
           TensorSpec(p + "attn_q.weight", (Q, D), opt, "wq"),
           TensorSpec(p + "attn_k.weight", (KV, D), opt, "wk"),
           TensorSpec(p + "attn_v.weight", (KV, D), opt, "wv"),
           TensorSpec(p + "attn_qkv.weight", (Q + 2 * KV, D), opt, "wqkv"),
           TensorSpec(p + "attn_q.bias", (Q,), opt, "bq"), TensorSpec(p + "attn_k.bias", (KV,), opt, "bk"),
           TensorSpec(p + "attn_v.bias", (KV,), opt, "bv"), TensorSpec(p + "attn_qkv.bias", (Q + 2 * KV,), opt, "bqkv"),
           TensorSpec(p + "attn_output.weight", (D, Q), field="wo"),
           TensorSpec(p + "ffn_norm.weight", (D,), field="ffn_norm")]
    if arch.qk_norm:
        out += [TensorSpec(p + "attn_q_norm.weight", (hd,), field="attn_q_norm"),
                TensorSpec(p + "attn_k_norm.weight", (hd,), field="attn_k_norm")]
    if arch.post_norms:
        out += [TensorSpec(p + "post_attention_norm.weight", (D,), field="attn_post_norm"),
                TensorSpec(p + "post_ffw_norm.weight", (D,), field="ffn_post_norm")]
    if E:
        out += [TensorSpec(p + "ffn_gate_inp.weight", (E, D), field="ffn_gate_inp"),
                TensorSpec(p + "ffn_gate_exps.weight", (E, F, D), field="ffn_gate_exps"),
                TensorSpec(p + "ffn_up_exps.weight", (E, F, D), field="ffn_up_exps"),
                TensorSpec(p + "ffn_down_exps.weight", (E, D, F), field="ffn_down_exps")]
    elif arch.fused_gate_up:
        out += [TensorSpec(p + "ffn_up.weight", (2 * F, D), field="ffn_up"),
                TensorSpec(p + "ffn_down.weight", (D, F), field="ffn_down")]
    else:
        out += [TensorSpec(p + "ffn_gate.weight", (F, D), field="ffn_gate"),
                TensorSpec(p + "ffn_up.weight", (F, D), field="ffn_up"),
                TensorSpec(p + "ffn_down.weight", (D, F), field="ffn_down")]
    return out


def swa_layers(pattern: int, n_layer: int) -> tuple[bool, ...]:
    """Which layers use the sliding window, llama.cpp's set_swa_pattern: in each group of
    `pattern` layers all but the last; pattern 0: every layer; pattern 1: none."""
    return tuple(pattern == 0 or i % pattern < pattern - 1 for i in range(n_layer))
