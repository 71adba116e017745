"""config.json of a Hugging Face checkpoint: which architecture, and the GGUF keys llama.cpp's
converter writes for it (conversion/base.py's set_gguf_parameters and the llama model's)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packer.hf import HFError

#: Hugging Face class -> GGUF architecture. All share the llama layer's tensor names; "llama"
#: models get the converter's llama extras (q/k rows permuted, vocab_size and rope dimension keys,
#: add_space_prefix from tokenizer_config.json); Qwen2 has q/k/v biases and NEOX rope instead;
#: Qwen3, Gemma 3 and Phi-3: packer/hf/archs.py.
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "MixtralForCausalLM": "llama",
                 "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "Gemma3ForCausalLM": "gemma3",
                 "Phi3ForCausalLM": "phi3", "Qwen3MoeForCausalLM": "qwen3moe",
                 "Gemma3ForConditionalGeneration": "gemma3"}   # its text model only


_GLOBAL_THETA = ("global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta", "rotary_emb_base")
_LOCAL_THETA = ("local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta", "rope_local_base_freq")
_PARTIAL_ROTARY = ("partial_rotary_factor", "rope_pct", "rope_percent")


@dataclass
class HFConfig:
    path: Path
    hf_arch: str
    arch: str
    hparams: dict[str, Any]

    def get(self, *names: str, required: bool = False) -> Any:
        """The first of names config.json sets (not null)."""
        for n in names:
            if self.hparams.get(n) is not None:
                return self.hparams[n]
        if required:
            raise HFError(f"{self.path}: no {' or '.join(names)} in it")
        return None

    @property
    def n_layer(self) -> int:
        return int(self.get("num_hidden_layers", "n_layers", "n_layer", required=True))

    @property
    def n_head(self) -> int:
        return int(self.get("num_attention_heads", "n_heads", required=True))

    @property
    def n_head_kv(self) -> int:
        return int(self.get("num_key_value_heads", "n_kv_heads") or self.n_head)

    @property
    def n_expert(self) -> int:
        return int(self.get("num_local_experts", "num_experts") or 0)

    @property
    def llama(self) -> bool:
        """The converter's llama model class (permutes q/k, writes vocab_size and the rope dimension)."""
        return self.arch == "llama"

    @property
    def rope(self) -> dict[str, Any]:
        """rope_parameters (transformers 5) or rope_scaling + top-level rope keys (earlier), one
        dict: the global layers' where they are given per layer type (Gemma 3)."""
        rp = self._rope_parameters()
        return dict(rp.get("full_attention", rp))

    @property
    def rope_swa_theta(self) -> float | None:
        """The sliding-window layers' rope base: rope_parameters' sliding_attention, or (earlier
        configs) rope_local_base_freq and its other names."""
        theta = self._rope_parameters().get("sliding_attention", {}).get("rope_theta")
        return None if theta is None else float(theta)

    def _rope_parameters(self) -> dict[str, Any]:
        """As the converter reads them: a split per layer type kept as it is; otherwise the
        top-level keys of earlier configs mirrored in."""
        rp = dict(self.hparams.get("rope_parameters") or self.hparams.get("rope_scaling") or {})
        if "full_attention" in rp or "sliding_attention" in rp:
            return rp
        if (local := self.get(*_LOCAL_THETA)) is not None:
            rp["sliding_attention"] = {"rope_theta": local}
        for key, names in (("rope_theta", _GLOBAL_THETA), ("partial_rotary_factor", _PARTIAL_ROTARY),
                           ("original_max_position_embeddings", ("original_max_position_embeddings",))):
            if key not in rp and (v := self.get(*names)) is not None:
                rp[key] = v
        if "rope_type" not in rp and rp.get("type") is not None:
            rp["rope_type"] = rp["type"]
        return rp


def read_config(folder: Path) -> HFConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise HFError(f"{path}: missing: not a Hugging Face checkpoint folder")
    try:
        hp = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise HFError(f"{path}: not valid JSON ({e})") from None
    archs = hp.get("architectures") if isinstance(hp, dict) else None
    if not archs or not isinstance(archs, list):
        raise HFError(f"{path}: no \"architectures\" in it")
    if archs[0] not in ARCHITECTURES:
        raise HFError(f"{path}: architecture {archs[0]} is not supported (supported: {', '.join(ARCHITECTURES)})")
    if "text_config" in hp:
        hp = {**hp, **hp["text_config"]}
    return HFConfig(path, archs[0], ARCHITECTURES[archs[0]], hp)


def hparam_keys(cfg: HFConfig, file_type: int) -> list[tuple[str, str, Any]]:
    """(key, GGUF type, value) for the model's hyperparameters, in the converter's order."""
    from packer.hf.archs import gemma3_keys, phi3_keys

    a = cfg.arch
    if a == "phi3":
        return phi3_keys(cfg, file_type)
    out: list[tuple[str, str, Any]] = [(f"{a}.block_count", "UINT32", cfg.n_layer)]
    for key, names in (("context_length", ("max_position_embeddings", "n_ctx", "n_positions", "max_length",
                                           "max_sequence_length", "model_max_length")),
                       ("embedding_length", ("hidden_size", "n_embd", "dim")),
                       ("feed_forward_length", ("intermediate_size", "n_inner", "hidden_dim")),
                       ("attention.head_count", ("num_attention_heads", "n_head", "n_heads")),
                       ("attention.head_count_kv", ("num_key_value_heads", "n_kv_heads"))):
        if (v := cfg.get(*names)) is not None:
            out.append((f"{a}.{key}", "UINT32", int(v)))
    out += _rope_keys(cfg)
    if (eps := cfg.get("rms_norm_eps", "norm_eps")) is not None:
        out.append((f"{a}.attention.layer_norm_rms_epsilon", "FLOAT32", float(eps)))
    if cfg.n_expert:
        out.append((f"{a}.expert_count", "UINT32", cfg.n_expert))
    if (used := cfg.get("num_experts_per_tok", "num_experts_per_token", "top_k_experts")) is not None:
        out.append((f"{a}.expert_used_count", "UINT32", int(used)))
    if (head_dim := cfg.hparams.get("head_dim")) is not None:
        out += [(f"{a}.attention.key_length", "UINT32", int(head_dim)),
                (f"{a}.attention.value_length", "UINT32", int(head_dim))]
    out.append(("general.file_type", "UINT32", file_type))
    if a == "gemma3":
        out += gemma3_keys(cfg)
    if a == "qwen3moe" and (n_ff_exp := cfg.get("moe_intermediate_size")) is not None:
        out.append((f"{a}.expert_feed_forward_length", "UINT32", int(n_ff_exp)))
    if cfg.llama:
        out.append((f"{a}.vocab_size", "UINT32", int(cfg.get("vocab_size", required=True))))
        rope_dim = cfg.hparams.get("head_dim") or int(cfg.get("hidden_size", required=True)) // cfg.n_head
        out.append((f"{a}.rope.dimension_count", "UINT32", int(rope_dim)))
    return out


def _rope_keys(cfg: HFConfig) -> list[tuple[str, str, Any]]:
    a, rp = cfg.arch, cfg.rope
    out: list[tuple[str, str, Any]] = []
    kind, factor = rp.get("rope_type"), rp.get("factor")
    for key in ("factor", "rope_theta", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"):
        if rp.get(key) is not None and not (math.isfinite(float(rp[key])) and float(rp[key]) > 0):
            raise HFError(f"{cfg.path}: rope {key} {rp[key]!r}: not a positive number")
    if kind == "linear" and factor is not None:
        out += [(f"{a}.rope.scaling.type", "STRING", "linear"), (f"{a}.rope.scaling.factor", "FLOAT32", float(factor))]
    elif kind == "yarn" and factor is not None:
        # without original_max_position_embeddings, transformers takes max_position_embeddings
        orig = rp.get("original_max_position_embeddings") or cfg.get("max_position_embeddings", required=True)
        out += [(f"{a}.rope.scaling.type", "STRING", "yarn"), (f"{a}.rope.scaling.factor", "FLOAT32", float(factor)),
                (f"{a}.rope.scaling.original_context_length", "UINT32", int(orig))]
    elif kind not in (None, "default", "llama3"):   # llama3: the rope_freqs tensor (archs.py)
        raise HFError(f"{cfg.path}: rope type {kind!r} is not supported by this converter")
    if rp.get("rope_theta") is not None:
        out.append((f"{a}.rope.freq_base", "FLOAT32", float(rp["rope_theta"])))
    if cfg.rope_swa_theta is not None:
        out.append((f"{a}.rope.freq_base_swa", "FLOAT32", cfg.rope_swa_theta))
    return out
