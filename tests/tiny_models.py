"""The tests' tiny random-weight llama models (written by tools/random_gguf.py), a plain numpy
(float64) reference forward pass to hold the C forward against, and broken copies of a GGUF.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from tools.random_gguf import QT, ModelSpec, write_model


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


# ---------------------------------------------------------------------------
# Broken copies: a GGUF with chosen keys or tensors changed (load-time check tests).

VT = gguf.GGUFValueType


def rewrite_gguf(src: Path, dst: Path, keys: dict[str, tuple] | None = None, drop: tuple[str, ...] = (),
                 tensors: dict[str, np.ndarray | tuple[np.ndarray, QT] | None] | None = None) -> Path:
    """A copy of src with metadata `keys` set ({key: (value, GGUFValueType[, element type])}, any
    type, as a hostile file would), keys in `drop` removed, and `tensors` replaced ({name: float32
    array | (raw bytes array, ggml type) | None to remove}; new names are added)."""
    keys, tensors = dict(keys or {}), dict(tensors or {})
    reader = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(str(dst), "llama")
    del w.kv_data[0]["general.architecture"]  # copied (or replaced) below like any other key
    for fld in reader.fields.values():
        if fld.name.startswith("GGUF.") or fld.name in drop or fld.name in keys:
            continue
        vtype = fld.types[0]
        w.add_key_value(fld.name, fld.contents(), vtype, sub_type=fld.types[-1] if vtype == VT.ARRAY else None)
    for key, (value, vtype, *sub) in keys.items():
        w.add_key_value(key, value, vtype, sub_type=sub[0] if sub else None)
    for t in reader.tensors:
        new = tensors.pop(t.name, t)
        if new is None:
            continue
        if new is t:
            w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
        elif isinstance(new, tuple):
            w.add_tensor(t.name, new[0], raw_dtype=new[1])
        else:
            w.add_tensor(t.name, new.astype(np.float32))
    for name, new in tensors.items():  # added tensors
        if isinstance(new, tuple):
            w.add_tensor(name, new[0], raw_dtype=new[1])
        elif new is not None:
            w.add_tensor(name, new.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst
