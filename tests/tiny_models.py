"""The tests' tiny random-weight llama models (written by tools/random_gguf.py) and a plain numpy
(float64) reference forward pass to hold the C forward against; rewrite_gguf (broken copies of a
GGUF) comes from tools/random_gguf.py too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tools.random_gguf import QT, VT, ModelSpec, rewrite_gguf, write_model

__all__ = ["QT", "VT", "TinySpec", "reference_logits", "rewrite_gguf", "write_tiny_llama"]


@dataclass(frozen=True)
class TinySpec(ModelSpec):
    """A tests' model (ModelSpec's defaults: 96 tokens, embd 64, 2 layers, F32) that keeps, once
    written, the float32 values its file holds (after quantization) for reference_logits."""
    weights: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)


def write_tiny_llama(path: Path, spec: TinySpec) -> TinySpec:
    """Writes the model; fills spec.weights with the values as stored."""
    spec.weights.update(write_model(path, spec, keep_values=True))
    return spec


# ---------------------------------------------------------------------------
# Reference forward pass, float64, the whole sequence from position 0.

def _rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x: np.ndarray, base: float, scale: float) -> np.ndarray:
    """x (T, heads, hd); adjacent pairs rotate by pos * scale * base^(-2i/hd)."""
    T, _, hd = x.shape
    inv = base ** (-np.arange(0, hd, 2) / hd)
    ang = (np.arange(T)[:, None] * scale) * inv[None, :]          # (T, hd/2)
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


def reference_logits(spec: TinySpec, tokens: list[int]) -> np.ndarray:
    """(T, n_vocab) float64 logits of every position."""
    W = {k: v.astype(np.float64) for k, v in spec.weights.items()}
    T, hd, H, Hkv = len(tokens), spec.head_dim, spec.n_head, spec.n_head_kv
    scale = 1.0 / spec.rope_linear if spec.rope_linear else 1.0
    x = W["token_embd.weight"][tokens]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(spec.n_layer):
        p = f"blk.{i}."
        h = _rmsnorm(x, W[p + "attn_norm.weight"], spec.rms_eps)
        q = _rope((h @ W[p + "attn_q.weight"].T).reshape(T, H, hd), spec.rope_base, scale)
        k = _rope((h @ W[p + "attn_k.weight"].T).reshape(T, Hkv, hd), spec.rope_base, scale)
        v = (h @ W[p + "attn_v.weight"].T).reshape(T, Hkv, hd)
        k, v = np.repeat(k, H // Hkv, axis=1), np.repeat(v, H // Hkv, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(T, H * hd)
        x = x + o @ W[p + "attn_output.weight"].T
        h = _rmsnorm(x, W[p + "ffn_norm.weight"], spec.rms_eps)
        if spec.n_expert:
            probs = h @ W[p + "ffn_gate_inp.weight"].T
            probs = np.exp(probs - probs.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            out = np.zeros_like(x)
            for t in range(T):
                top = np.argsort(-probs[t], kind="stable")[: spec.n_expert_used]
                wts = probs[t, top] / probs[t, top].sum()
                for e, we in zip(top, wts):
                    g = W[p + "ffn_gate_exps.weight"][e] @ h[t]
                    u = W[p + "ffn_up_exps.weight"][e] @ h[t]
                    out[t] += we * (W[p + "ffn_down_exps.weight"][e] @ (_silu(g) * u))
            x = x + out
        else:
            g, u = h @ W[p + "ffn_gate.weight"].T, h @ W[p + "ffn_up.weight"].T
            x = x + (_silu(g) * u) @ W[p + "ffn_down.weight"].T
    out_w = W["token_embd.weight"] if spec.tied else W["output.weight"]
    return _rmsnorm(x, W["output_norm.weight"], spec.rms_eps) @ out_w.T
