"""What llama.cpp's converter does differently for the architectures beyond the llama layer:
extra hyperparameter keys (Gemma 3, Phi-3), tensors it generates from config.json (Llama 3's
rope_freqs, Phi-3's LongRoPE factors), Gemma's norm offset.

- Llama 3.x (`rope_type: llama3`): rope_freqs.weight, one factor per frequency pair: 1 for
  wavelengths under original_context/high_freq_factor, `factor` over original_context/
  low_freq_factor, a smooth blend between. The converter computes the inverse frequencies
  base^(-2i/d) with torch's float32 pow, a vectorized approximation whose last bit depends on the
  CPU's vector unit; here base^(-2i/d) is float64 rounded to float32 (the correctly rounded
  value, within 1 ulp of torch's), and every later step in float32 in the converter's order
  (reciprocals times constants, as torch evaluates `scalar / tensor`), which is exact given the
  same frequencies.
- Gemma 3: norm weights stored as w for a scale of 1 + w: the converter writes 1 + w (float32);
  the embedding keeps only the tokenizer's rows; keys final_logit_softcapping, sliding_window and
  the sliding layers' rope base.
- Phi-3: its own key set and order; LongRoPE's long/short factors as F32 tensors and their
  attention factor sqrt(1 + ln(scale)/ln(original_context)).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from packer.hf import HFError
from packer.hf.config import HFConfig

KV = list[tuple[str, str, Any]]


def llama3_rope_factors(rp: dict[str, Any], dim: int) -> np.ndarray:
    """rope_freqs for rope parameters rp and head dimension dim (float32, dim/2 values)."""
    f32 = np.float32
    base = float(rp.get("rope_theta", 10000.0))
    factor, low = float(rp.get("factor", 8.0)), float(rp.get("low_freq_factor", 1.0))
    high, old = float(rp.get("high_freq_factor", 4.0)), float(rp.get("original_max_position_embeddings", 8192))
    expo = np.arange(0, dim, 2, dtype=f32) / f32(dim)
    freqs = f32(1.0) / (np.float64(f32(base)) ** expo.astype(np.float64)).astype(f32)
    return llama3_factors_from_freqs(freqs, factor, low, high, old)


def llama3_factors_from_freqs(freqs: np.ndarray, factor: float, low: float, high: float, old: float) -> np.ndarray:
    """The factor of each inverse frequency, float32 step by step in the converter's order."""
    f32 = np.float32
    freqs = np.asarray(freqs, f32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        wavelen = (f32(1) / freqs) * f32(2 * math.pi)
        smooth = ((f32(1) / wavelen) * f32(old) - f32(low)) / f32(high - low)
        blend = f32(1) / ((f32(1) - smooth) / f32(factor) + smooth)
    short, long = wavelen < f32(old / high), wavelen > f32(old / low)
    return np.where(short, f32(1), np.where(long, f32(factor), blend)).astype(f32)


def generated_tensors(cfg: HFConfig) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, float32 values) of the tensors the converter writes before the checkpoint's."""
    rp = cfg.rope
    if cfg.arch == "llama" and str(rp.get("rope_type", "")).lower() == "llama3":
        dim = cfg.head_dim or cfg.get_int("hidden_size", required=True) // cfg.n_head
        return [("rope_freqs.weight", llama3_rope_factors(rp, dim))]
    if cfg.arch == "phi3" and rp.get("long_factor"):
        long, short = rp.get("long_factor"), rp.get("short_factor")
        if not isinstance(short, list) or len(long) != len(short) or len(long) * 2 != phi3_rope_dims(cfg):
            raise HFError(f"{cfg.path}: rope long_factor and short_factor must both have "
                          f"{phi3_rope_dims(cfg) // 2} values")
        return [("rope_factors_long.weight", np.asarray(long, np.float32)),
                ("rope_factors_short.weight", np.asarray(short, np.float32))]
    return []


# -- Phi-3 -------------------------------------------------------------------------------------

def phi3_rope_dims(cfg: HFConfig) -> int:
    n_embd = cfg.get_int("hidden_size", "n_embd", required=True)
    return int(cfg.rope.get("partial_rotary_factor", 1.0) * n_embd) // cfg.n_head


def _phi3_orig_ctx(cfg: HFConfig) -> int:
    orig = cfg.rope.get("original_max_position_embeddings")
    if orig is None:
        orig = cfg.get_int("original_max_position_embeddings")
    if orig is None:
        raise HFError(f"{cfg.path}: no original_max_position_embeddings in it (Phi-3 needs it)")
    return orig


def phi3_head_keys(cfg: HFConfig) -> KV:
    """The keys the converter writes right after general.architecture: LongRoPE's attention factor."""
    rp = cfg.rope
    if cfg.arch != "phi3" or not rp.get("long_factor"):
        return []
    kind = str(rp.get("rope_type", "")).lower()
    scale = cfg.get_int("n_positions", "max_position_embeddings", required=True) / _phi3_orig_ctx(cfg)
    if kind in ("su", "longrope"):
        attn = math.sqrt(1 + math.log(scale) / math.log(_phi3_orig_ctx(cfg))) if scale > 1.0 else 1.0
    elif kind == "yarn":
        attn = 0.1 * math.log(scale) + 1.0 if scale > 1.0 else 1.0
    else:
        raise HFError(f"{cfg.path}: rope type {kind!r} is not supported for Phi-3")
    return [("phi3.rope.scaling.attn_factor", "FLOAT32", attn)]


def phi3_keys(cfg: HFConfig, file_type: int) -> KV:
    a = "phi3"
    return [(f"{a}.context_length", "UINT32", cfg.get_int("n_positions", "max_position_embeddings", required=True)),
            (f"{a}.rope.scaling.original_context_length", "UINT32", _phi3_orig_ctx(cfg)),
            (f"{a}.embedding_length", "UINT32", cfg.get_int("hidden_size", "n_embd", required=True)),
            (f"{a}.feed_forward_length", "UINT32", cfg.get_int("intermediate_size", required=True)),
            (f"{a}.block_count", "UINT32", cfg.n_layer),
            (f"{a}.attention.head_count", "UINT32", cfg.n_head),
            (f"{a}.attention.head_count_kv", "UINT32", cfg.get_int("num_key_value_heads", "n_head_kv", required=True)),
            (f"{a}.attention.layer_norm_rms_epsilon", "FLOAT32", cfg.get_float("rms_norm_eps", required=True)),
            (f"{a}.rope.dimension_count", "UINT32", phi3_rope_dims(cfg)),
            (f"{a}.rope.freq_base", "FLOAT32", float(cfg.rope.get("rope_theta", 10000.0))),
            ("general.file_type", "UINT32", file_type),
            (f"{a}.attention.sliding_window", "UINT32", cfg.get_int("sliding_window") or 0)]


# -- Gemma 3 -----------------------------------------------------------------------------------

def gemma3_keys(cfg: HFConfig) -> KV:
    """The keys Gemma 3 adds after the common ones (those it sets again keep their place)."""
    out: KV = []
    if softcap := cfg.get_float("final_logit_softcapping"):
        out.append(("gemma3.final_logit_softcapping", "FLOAT32", softcap))
    if cfg.hparams.get("sliding_window_pattern") != 1:
        out.append(("gemma3.attention.sliding_window", "UINT32", cfg.get_int("sliding_window", required=True)))
    return out


def tokenizer_extra(cfg: HFConfig) -> KV:
    """Gemma 3 with a SentencePiece model: no space prefix (written after the tokenizer keys)."""
    if cfg.arch == "gemma3" and (cfg.path.parent / "tokenizer.model").is_file():
        return [("tokenizer.ggml.add_space_prefix", "BOOL", False)]
    return []


def norm_shift(cfg: HFConfig, gguf_name: str) -> float:
    """What the converter adds to a tensor: 1 to Gemma 3's norm weights."""
    return 1.0 if cfg.arch == "gemma3" and gguf_name.endswith("norm.weight") else 0.0
