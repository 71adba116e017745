"""config.json of a Hugging Face checkpoint: which architecture, and the GGUF keys llama.cpp's
converter writes for it (conversion/base.py's set_gguf_parameters and the llama model's)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packer.hf import HFError, config_value, refuse

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
#: the numbers a rope parameters object may hold that the converter reads, and their GGUF types
_ROPE_NUMBERS = {"factor": "float32", "rope_theta": "float32", "original_max_position_embeddings": "uint32",
                 "low_freq_factor": "float32", "high_freq_factor": "float32", "partial_rotary_factor": "float32"}
_ROPE_POSITIVE = ("factor", "rope_theta", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor")


@dataclass
class HFConfig:
    path: Path
    hf_arch: str
    arch: str
    hparams: dict[str, Any]
    text_keys: frozenset[str] = frozenset()   # those of hparams that come from text_config

    def _first(self, names: tuple[str, ...], required: bool) -> tuple[str, Any] | None:
        """(name, value) of the first of names config.json sets (not null)."""
        for n in names:
            if self.hparams.get(n) is not None:
                return n, self.hparams[n]
        if required:
            raise HFError(f"{self.path}: no {' or '.join(names)} in it")
        return None

    def get(self, *names: str, required: bool = False) -> Any:
        """The first of names config.json sets (not null), as it is."""
        found = self._first(names, required)
        return None if found is None else found[1]

    def checked(self, name: str, value: Any, kind: str, positive: bool = False) -> Any:
        """value, config.json's name (or a part of it: "rope_parameters.factor"), as kind
        (packer/hf config_value), and above 0 if positive: else an error naming the file and the key."""
        where = f"text_config.{name}" if name.split(".")[0] in self.text_keys else name
        out = config_value(self.path, where, value, kind)
        if positive and not out > 0:
            refuse(self.path, where, value, "a positive integer" if kind == "uint32" else "a positive number")
        return out

    def get_int(self, *names: str, required: bool = False, positive: bool = False) -> int | None:
        """The first of names config.json sets, which must be an integer (a GGUF UINT32; above 0 if positive)."""
        found = self._first(names, required)
        return None if found is None else self.checked(*found, "uint32", positive)

    def get_float(self, *names: str, required: bool = False) -> float | None:
        """The first of names config.json sets, which must be a number (a GGUF FLOAT32)."""
        found = self._first(names, required)
        return None if found is None else self.checked(*found, "float32")

    @property
    def n_layer(self) -> int:
        return self.get_int("num_hidden_layers", "n_layers", "n_layer", required=True)

    @property
    def n_head(self) -> int:
        return self.get_int("num_attention_heads", "n_heads", required=True, positive=True)   # a divisor

    @property
    def n_head_kv(self) -> int:
        return self.get_int("num_key_value_heads", "n_kv_heads") or self.n_head

    @property
    def n_expert(self) -> int:
        return self.get_int("num_local_experts", "num_experts") or 0

    @property
    def head_dim(self) -> int | None:
        """config.json's head_dim, when it gives one (else hidden_size / heads)."""
        return self.get_int("head_dim")

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
        theta = self._rope_parameters().get("sliding_attention", {}).get("rope_theta")   # checked
        return None if theta is None else float(theta)

    def _rope_parameters(self) -> dict[str, Any]:
        """As the converter reads them: a split per layer type kept as it is; otherwise the
        top-level keys of earlier configs mirrored in. Every number the converter reads is checked."""
        src = next((n for n in ("rope_parameters", "rope_scaling") if self.hparams.get(n)), None)
        rp = self._rope_numbers(src, self.hparams[src]) if src else {}
        if "full_attention" in rp or "sliding_attention" in rp:
            return {k: self._rope_numbers(f"{src}.{k}", v) if k in ("full_attention", "sliding_attention") else v
                    for k, v in rp.items()}
        if (local := self.get_float(*_LOCAL_THETA)) is not None:
            rp["sliding_attention"] = {"rope_theta": local}
        for key, names in (("rope_theta", _GLOBAL_THETA), ("partial_rotary_factor", _PARTIAL_ROTARY),
                           ("original_max_position_embeddings", ("original_max_position_embeddings",))):
            if key not in rp and (found := self._first(names, False)) is not None:
                rp[key] = self.checked(*found, _ROPE_NUMBERS[key], key in _ROPE_POSITIVE)
        if "rope_type" not in rp and rp.get("type") is not None:
            rp["rope_type"] = rp["type"]
        return rp

    def _rope_numbers(self, name: str, value: Any) -> dict[str, Any]:
        """A rope parameters object (config.json's name), its numbers checked."""
        rp = dict(self.checked(name, value, "object"))
        for key, kind in _ROPE_NUMBERS.items():
            if rp.get(key) is not None:
                rp[key] = self.checked(f"{name}.{key}", rp[key], kind, key in _ROPE_POSITIVE)
        for key in ("long_factor", "short_factor"):   # LongRoPE's (Phi-3)
            if rp.get(key) is not None:
                rp[key] = [self.checked(f"{name}.{key}[{i}]", f, "float32")
                           for i, f in enumerate(self.checked(f"{name}.{key}", rp[key], "list"))]
        return rp


def read_config(folder: Path) -> HFConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise HFError(f"{path}: missing: not a Hugging Face checkpoint folder")
    try:
        hp = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise HFError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(hp, dict):
        raise HFError(f"{path}: not a JSON object")
    archs = hp.get("architectures")
    if isinstance(archs, str):  # transformers reads a list only (and llama.cpp's converter its first item)
        raise HFError(f"{path}: \"architectures\" must be a list, not the string {json.dumps(archs)}: write "
                      f"[{json.dumps(archs)}]")
    if not archs or not isinstance(archs, list):
        raise HFError(f"{path}: no \"architectures\" in it")
    if archs[0] not in ARCHITECTURES:
        raise HFError(f"{path}: architecture {archs[0]} is not supported (supported: {', '.join(ARCHITECTURES)})")
    text_keys: frozenset[str] = frozenset()
    if hp.get("text_config") is not None:
        text = config_value(path, "text_config", hp["text_config"], "object")
        hp, text_keys = {**hp, **text}, frozenset(text)
    return HFConfig(path, archs[0], ARCHITECTURES[archs[0]], hp, text_keys)


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
        if (v := cfg.get_int(*names)) is not None:
            out.append((f"{a}.{key}", "UINT32", v))
    out += _rope_keys(cfg)
    if (eps := cfg.get_float("rms_norm_eps", "norm_eps")) is not None:
        out.append((f"{a}.attention.layer_norm_rms_epsilon", "FLOAT32", eps))
    if cfg.n_expert:
        out.append((f"{a}.expert_count", "UINT32", cfg.n_expert))
    if (used := cfg.get_int("num_experts_per_tok", "num_experts_per_token", "top_k_experts")) is not None:
        out.append((f"{a}.expert_used_count", "UINT32", used))
    if (head_dim := cfg.head_dim) is not None:
        out += [(f"{a}.attention.key_length", "UINT32", head_dim), (f"{a}.attention.value_length", "UINT32", head_dim)]
    out.append(("general.file_type", "UINT32", file_type))
    if a == "gemma3":
        out += gemma3_keys(cfg)
    if a == "qwen3moe" and (n_ff_exp := cfg.get_int("moe_intermediate_size")) is not None:
        out.append((f"{a}.expert_feed_forward_length", "UINT32", n_ff_exp))
    if cfg.llama:
        out.append((f"{a}.vocab_size", "UINT32", cfg.get_int("vocab_size", required=True)))
        rope_dim = cfg.head_dim or cfg.get_int("hidden_size", required=True) // cfg.n_head
        out.append((f"{a}.rope.dimension_count", "UINT32", rope_dim))
    return out


def _rope_keys(cfg: HFConfig) -> list[tuple[str, str, Any]]:
    a, rp = cfg.arch, cfg.rope
    out: list[tuple[str, str, Any]] = []
    kind, factor = rp.get("rope_type"), rp.get("factor")
    if kind == "linear" and factor is not None:
        out += [(f"{a}.rope.scaling.type", "STRING", "linear"), (f"{a}.rope.scaling.factor", "FLOAT32", float(factor))]
    elif kind == "yarn" and factor is not None:
        # without original_max_position_embeddings, transformers takes max_position_embeddings
        orig = rp.get("original_max_position_embeddings") or cfg.get_int("max_position_embeddings", required=True)
        out += [(f"{a}.rope.scaling.type", "STRING", "yarn"), (f"{a}.rope.scaling.factor", "FLOAT32", float(factor)),
                (f"{a}.rope.scaling.original_context_length", "UINT32", int(orig))]
    elif kind not in (None, "default", "llama3"):   # llama3: the rope_freqs tensor (archs.py)
        raise HFError(f"{cfg.path}: rope type {kind!r} is not supported by this converter")
    if rp.get("rope_theta") is not None:
        out.append((f"{a}.rope.freq_base", "FLOAT32", float(rp["rope_theta"])))
    if cfg.rope_swa_theta is not None:
        out.append((f"{a}.rope.freq_base_swa", "FLOAT32", cfg.rope_swa_theta))
    return out
