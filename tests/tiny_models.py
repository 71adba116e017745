"""The tests' tiny random-weight models of every architecture (written by tools/random_gguf.py) and a plain numpy
(float64) reference forward pass to hold the C forward against; rewrite_gguf (broken copies of a
GGUF) comes from tools/random_gguf.py too.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.arch import ARCHS, swa_layers
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
# Reference forward pass, float64, the whole sequence from position 0, with every flag of
# runtime/arch.py as llama.cpp's graphs apply it (src/models/*.cpp; ggml's rope, YaRN included).

YARN_BETA_FAST, YARN_BETA_SLOW = 32.0, 1.0  # llama.cpp's defaults


def _rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


@dataclass(frozen=True)
class Rope:
    """One layer's rope: base, linear / YaRN scale, per-frequency factors, magnitude factor."""
    n_rot: int
    base: float
    freq_scale: float = 1.0
    yarn: bool = False
    orig_ctx: int = 0
    factors: np.ndarray | None = None
    attn_factor: float = 1.0
    neox: bool = False

    def angles(self, T: int) -> tuple[np.ndarray, np.ndarray]:
        """cos, sin (T, n_rot/2), magnitude included."""
        i = np.arange(self.n_rot // 2)
        theta = self.base ** (-2.0 * i / self.n_rot)
        if self.factors is not None:
            theta = theta / self.factors
        pos = np.arange(T)[:, None]
        extrap, interp = pos * theta, pos * theta * self.freq_scale
        mscale = self.attn_factor
        if self.yarn:  # ggml's rope_yarn: ramp between interpolated and extrapolated angles
            low, high = (self._corr_dim(b) for b in (YARN_BETA_FAST, YARN_BETA_SLOW))
            low, high = max(0.0, np.floor(low)), min(self.n_rot - 1.0, np.ceil(high))
            mix = 1 - np.clip((i - low) / max(0.001, high - low), 0, 1)
            ang = interp * (1 - mix) + extrap * mix
            mscale *= 1 + 0.1 * np.log(1 / self.freq_scale)
        else:
            ang = interp
        return np.cos(ang) * mscale, np.sin(ang) * mscale

    def _corr_dim(self, n_rot_turns: float) -> float:
        return self.n_rot * np.log(self.orig_ctx / (n_rot_turns * 2 * np.pi)) / (2 * np.log(self.base))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x (T, heads, hd): pairs rotate, adjacent (llama) or n_rot/2 apart (NEOX); dims past
        n_rot stay."""
        T, half = x.shape[0], self.n_rot // 2
        c, s = (a[:, None, :] for a in self.angles(T))
        out = x.copy()
        if self.neox:
            x0, x1 = x[..., :half], x[..., half:self.n_rot]
            out[..., :half], out[..., half:self.n_rot] = x0 * c - x1 * s, x0 * s + x1 * c
        else:
            x0, x1 = x[..., 0:self.n_rot:2], x[..., 1:self.n_rot:2]
            out[..., 0:self.n_rot:2], out[..., 1:self.n_rot:2] = x0 * c - x1 * s, x0 * s + x1 * c
        return out


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def layer_ropes(spec: TinySpec, n_ctx: int, W: dict[str, np.ndarray]) -> list[Rope]:
    """Each layer's rope, as llama.cpp sets it up for a context of n_ctx positions."""
    arch = ARCHS[spec.arch]
    scale = 1.0 / (spec.rope_yarn or spec.rope_linear or 1.0)
    factors = W["rope_freqs.weight"] if spec.rope_freqs else None
    if spec.longrope:  # the long factors once the context exceeds the original one
        long = n_ctx > (spec.rope_orig_ctx or spec.n_ctx)
        factors = W["rope_factors_long.weight" if long else "rope_factors_short.weight"]
    base = Rope(spec.head_dim, spec.rope_base, scale, bool(spec.rope_yarn), spec.rope_orig_ctx or spec.n_ctx,
                factors, spec.rope_attn_factor or 1.0, arch.rope_neox)
    swa = swa_layers(spec.swa_pattern if spec.swa_pattern is not None else arch.swa_pattern or 0, spec.n_layer)
    if not (spec.n_swa and arch.swa_pattern is not None):
        return [base] * spec.n_layer
    local = dataclasses.replace(base, base=spec.rope_base_swa or 10000.0, freq_scale=1.0)
    return [local if swa[i] else base for i in range(spec.n_layer)]


def _window_mask(T: int, n_swa: int) -> np.ndarray:
    """Causal mask, and with n_swa > 0 llama.cpp's standard window: p - p0 >= n_swa is hidden."""
    pos = np.arange(T)
    hidden = (pos[None, :] > pos[:, None]) | ((pos[:, None] - pos[None, :] >= n_swa) if n_swa else False)
    return np.where(hidden, -np.inf, 0.0)


def _attention(spec: TinySpec, W: dict[str, np.ndarray], p: str, h: np.ndarray, rope: Rope,
               mask: np.ndarray) -> np.ndarray:
    arch, T, hd, H, Hkv = ARCHS[spec.arch], h.shape[0], spec.head_dim, spec.n_head, spec.n_head_kv
    if spec.fused_qkv:
        qkv = h @ W[p + "attn_qkv.weight"].T + (W[p + "attn_qkv.bias"] if spec.qkv_bias else 0)
        q, k, v = np.split(qkv, [H * hd, (H + Hkv) * hd], axis=1)
    else:
        q, k, v = (h @ W[f"{p}attn_{x}.weight"].T + (W[f"{p}attn_{x}.bias"] if spec.qkv_bias else 0)
                   for x in "qkv")
    q, k, v = q.reshape(T, H, hd), k.reshape(T, Hkv, hd), v.reshape(T, Hkv, hd)
    if arch.qk_norm:
        q = _rmsnorm(q, W[p + "attn_q_norm.weight"], spec.rms_eps)
        k = _rmsnorm(k, W[p + "attn_k_norm.weight"], spec.rms_eps)
    q, k = rope(q), rope(k)
    k, v = np.repeat(k, H // Hkv, axis=1), np.repeat(v, H // Hkv, axis=1)
    att = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
    att = np.exp(att - att.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    return np.einsum("hts,shd->thd", att, v).reshape(T, H * hd) @ W[p + "attn_output.weight"].T


def _ffn(spec: TinySpec, W: dict[str, np.ndarray], p: str, h: np.ndarray) -> np.ndarray:
    arch = ARCHS[spec.arch]
    act = _gelu_tanh if arch.activation == "gelu_tanh" else _silu
    if spec.n_expert:
        probs = h @ W[p + "ffn_gate_inp.weight"].T
        probs = np.exp(probs - probs.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        out = np.zeros_like(h)
        for t in range(h.shape[0]):
            top = np.argsort(-probs[t], kind="stable")[: spec.n_expert_used]
            wts = probs[t, top] / probs[t, top].sum()  # normalised top-k (Mixtral, Qwen3 MoE)
            for e, we in zip(top, wts):
                g = W[p + "ffn_gate_exps.weight"][e] @ h[t]
                u = W[p + "ffn_up_exps.weight"][e] @ h[t]
                out[t] += we * (W[p + "ffn_down_exps.weight"][e] @ (act(g) * u))
        return out
    if arch.fused_gate_up:  # ffn_up holds the gate rows, then the up rows
        g, u = np.split(h @ W[p + "ffn_up.weight"].T, 2, axis=1)
    else:
        g, u = h @ W[p + "ffn_gate.weight"].T, h @ W[p + "ffn_up.weight"].T
    return (act(g) * u) @ W[p + "ffn_down.weight"].T


def reference_logits(spec: TinySpec, tokens: list[int], n_ctx: int | None = None) -> np.ndarray:
    """(T, n_vocab) float64 logits of every position; n_ctx (default the model's) only picks
    Phi-3's long or short rope factors."""
    arch = ARCHS[spec.arch]
    W = {k: v.astype(np.float64) for k, v in spec.weights.items()}
    T, eps = len(tokens), spec.rms_eps
    ropes = layer_ropes(spec, n_ctx or spec.n_ctx, W)
    swa = swa_layers(spec.swa_pattern if spec.swa_pattern is not None else arch.swa_pattern or 0, spec.n_layer)
    use_swa = spec.n_swa and arch.swa_pattern is not None
    x = W["token_embd.weight"][tokens] * (np.sqrt(spec.n_embd) if arch.embd_scale else 1.0)
    for i in range(spec.n_layer):
        p = f"blk.{i}."
        mask = _window_mask(T, spec.n_swa if use_swa and swa[i] else 0)
        a = _attention(spec, W, p, _rmsnorm(x, W[p + "attn_norm.weight"], eps), ropes[i], mask)
        x = x + (_rmsnorm(a, W[p + "post_attention_norm.weight"], eps) if arch.post_norms else a)
        f = _ffn(spec, W, p, _rmsnorm(x, W[p + "ffn_norm.weight"], eps))
        x = x + (_rmsnorm(f, W[p + "post_ffw_norm.weight"], eps) if arch.post_norms else f)
    out_w = W["token_embd.weight"] if spec.tied else W["output.weight"]
    logits = _rmsnorm(x, W["output_norm.weight"], eps) @ out_w.T
    if spec.final_softcap and arch.name == "gemma3":
        logits = spec.final_softcap * np.tanh(logits / spec.final_softcap)
    return logits
