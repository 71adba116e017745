"""A Hugging Face checkpoint folder as the GGUF llama.cpp's convert_hf_to_gguf.py writes from it
(outtype auto), without torch and without writing that GGUF anywhere: `open_checkpoint` returns
an object shaped like runtime.gguf.GGUFFile (metadata with types, tensors by name) whose tensor
data is made when read, one tensor at a time, so packer/quantize.py can plan and stream it as it
does a GGUF file.

What the converter does, and this module too:
- names: model.embed_tokens -> token_embd, lm_head -> output, model.norm -> output_norm, per
  layer input_layernorm -> attn_norm, post_attention_layernorm -> ffn_norm, self_attn.{q,k,v,o}_proj
  -> attn_{q,k,v,output}, mlp.{gate,up,down}_proj -> ffn_{gate,up,down}, block_sparse_moe.gate ->
  ffn_gate_inp, block_sparse_moe.experts.E.{w1,w2,w3} -> ffn_{gate,down,up}_exps (the experts of a
  layer stacked on a new first axis, E in order); rotary inv_freq buffers are dropped;
- q_proj and k_proj rows permuted from Hugging Face's rotate-half order back to the interleaved
  pairs llama.cpp's rope expects: per head, the rows (h, 2, d/2) become (h, d/2, 2);
- types: the file type is BF16 when the first 2-D tensor is BF16, else F16; 1-D tensors, norms
  and ffn_gate_inp are F32, every other tensor the file type (BF16 made from float32 by rounding
  to nearest even, NaN kept quiet, as gguf-py does);
- tensor order: shards by file name, each shard's tensors by name, a layer's stacked experts
  where its last expert tensor is met.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from packer.hf import HFError, config_value
from packer.hf.archs import generated_tensors, norm_shift, phi3_head_keys, tokenizer_extra
from packer.hf.config import HFConfig, hparam_keys, read_config
from packer.hf.gptq import group_weights, read_gptq_config
from packer.hf.safetensors import SafeTensor, checkpoint_tensors
from packer.hf.tokenizer import tokenizer_keys
from runtime.constants import GGML_QUANT_SIZES, GGMLType, GGUFValueType as VT
from runtime.gguf import Metadata

ALIGNMENT = 32
_FILE_TYPES = {GGMLType.BF16: 32, GGMLType.F16: 1, GGMLType.Q4_1: 3}   # general.file_type (llama_ftype)
_LAYER_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "block_sparse_moe.gate": "ffn_gate_inp", "mlp.gate": "ffn_gate_inp",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",          # Qwen3, Gemma 3
    "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",   # Gemma 3
    "self_attn.qkv_proj": "attn_qkv", "mlp.gate_up_proj": "ffn_up",                 # Phi-3 (kept fused)
}
#: Gemma 3's post_attention_layernorm is a norm of the attention output, not the FFN's input norm
_GEMMA3_NAMES = {**_LAYER_NAMES, "post_attention_layernorm": "post_attention_norm"}
_GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "lm_head.weight": "output.weight",
                 "model.norm.weight": "output_norm.weight"}
_EXPERT = re.compile(r"model\.layers\.(\d+)\.(?:block_sparse_moe|mlp)\.experts\.(\d+)\."
                     r"(w[123]|gate_proj|up_proj|down_proj)\.weight$")
_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_EXPERT_NAMES = {"w1": "ffn_gate_exps", "w2": "ffn_down_exps", "w3": "ffn_up_exps",
                 "gate_proj": "ffn_gate_exps", "down_proj": "ffn_down_exps", "up_proj": "ffn_up_exps"}
#: the order the converter writes a layer's stacked experts in: Mixtral's, Qwen3 MoE's
_EXPERT_ORDERS = (("w1", "w2", "w3"), ("down_proj", "gate_proj", "up_proj"))
_SKIP = re.compile(r"rotary_emb\.inv_freq$")
#: a multimodal checkpoint's vision tower and projector, which a text conversion leaves out
_MULTIMODAL = re.compile(r"^(vision_tower|multi_modal_projector)\.|\.(vision_tower|multi_modal_projector)\.")


@dataclass(eq=False)
class HFTensor:
    """A tensor of the GGUF being made: what runtime.gguf.GGUFTensor offers, its data made on read."""
    name: str
    shape: tuple[int, ...]          # numpy order
    type: GGMLType
    make: Callable[[], np.ndarray]  # the tensor's values (any float dtype, or BF16 bits as uint16), shaped
    sources: list[SafeTensor] = field(default_factory=list)
    offset: int = 0

    @property
    def nbytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.type]
        return math.prod(self.shape) // block * size

    @property
    def data(self) -> np.ndarray:
        """The bytes in self.type, made now (uint8, flat)."""
        return encode(self.make(), self.type, self.sources[0].dtype if self.sources else "F32")


class HFCheckpoint:
    """The GGUF a checkpoint folder converts to, in GGUFFile's shape (packer/quantize.py reads it)."""

    def __init__(self, folder: Path, gptq_lossless: bool = True) -> None:
        self.path = folder
        self.config = read_config(folder)
        self.alignment = ALIGNMENT
        self.gptq = read_gptq_config(folder, self.config.hparams)
        self.notes: list[str] = []   # what a GPTQ checkpoint's conversion kept and lost, for stderr
        sources = checkpoint_tensors(folder, ("F32", "F16", "BF16") + (("I32",) if self.gptq else ()))
        if self.gptq:  # packer/hf/gptq.py: layers as Q4_1 blocks (lossless) or dequantized
            sources, self.notes = group_weights(self.gptq, sources, gptq_lossless)
        self.file_type = _file_type(sources)
        self.tensors: dict[str, HFTensor] = {t.name: t for t in _tensors(self.config, sources, self.file_type)}
        self.metadata = Metadata()
        self.value_types = self.metadata.types
        for key, vtype, value in self._keys():
            self.metadata[key] = value
            self.metadata.types[key] = tuple(VT[v] for v in vtype.split(":"))

    def _keys(self) -> list[tuple[str, str, object]]:
        cfg = self.config
        head = [("general.architecture", "STRING", cfg.arch), *phi3_head_keys(cfg),
                ("general.type", "STRING", "model")]
        head += _sampling_keys(self.path)
        head += [("general.name", "STRING", id_to_title(self.path.resolve().name)),
                 ("general.size_label", "STRING", size_label(list(self.tensors.values())))]
        body = hparam_keys(cfg, _FILE_TYPES[self.output_type])
        body.append(("general.quantization_version", "UINT32", 2))
        keys = head + body + tokenizer_keys(self.path, cfg.get_int("vocab_size"), cfg.llama, cfg.arch == "phi3")
        return keys + tokenizer_extra(cfg)

    @property
    def output_type(self) -> GGMLType:
        """The file's type: Q4_1 when GPTQ layers are kept as Q4_1 blocks, else the float type."""
        return GGMLType.Q4_1 if self.kept_q4_1 else self.file_type

    @property
    def kept_q4_1(self) -> frozenset[str]:
        return frozenset(t.name for t in self.tensors.values() if t.type == GGMLType.Q4_1)

    def close(self) -> None:
        pass

    def __enter__(self) -> HFCheckpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- tensors -------------------------------------------------------------------------------

def _file_type(sources: list[SafeTensor]) -> GGMLType:
    """The first 2-D BF16 or F16 tensor's type; F16 when there is none."""
    first = next((t for t in sources if len(t.shape) >= 2 and t.dtype in ("BF16", "F16")), None)
    return GGMLType.BF16 if first is not None and first.dtype == "BF16" else GGMLType.F16


def _gguf_type(name: str, ndim: int, file_type: GGMLType, dtype: str = "") -> GGMLType:
    if dtype == "Q4_1":  # a GPTQ layer kept as it is
        return GGMLType.Q4_1
    if ndim <= 1 or name.endswith(("_norm.weight", "ffn_gate_inp.weight")) or not name.endswith(".weight"):
        return GGMLType.F32
    return file_type


def _tensors(cfg: HFConfig, sources: list[SafeTensor], file_type: GGMLType):
    """The GGUF's tensors in the converter's order, each shape checked against config.json."""
    experts: dict[int, dict[str, SafeTensor]] = {}
    n_expert = cfg.n_expert
    for name, values in generated_tensors(cfg):   # written first, as the converter does
        yield HFTensor(name, values.shape, GGMLType.F32, lambda v=values: v)
    for src in sources:
        if _SKIP.search(src.name) or _MULTIMODAL.search(src.name):
            continue
        if "language_model." in src.name:   # a multimodal checkpoint's text model, as a text checkpoint's
            src = replace(src, name=src.name.replace("language_model.", ""))
        if m := _EXPERT.match(src.name):
            layer = experts.setdefault(int(m[1]), {})
            layer[f"{m[2]}.{m[3]}"] = src
            if len(layer) == 3 * n_expert:
                yield from _stacked(cfg, int(m[1]), layer, file_type)
            continue
        name = _gguf_name(cfg, src)
        yield _single(cfg, name, src, file_type)
    for bid, layer in experts.items():
        if len(layer) != 3 * n_expert:
            some = next(iter(layer.values()))
            raise HFError(f"{some.file}: layer {bid} has {len(layer)} expert tensors, config.json's "
                          f"num_local_experts={n_expert} needs {3 * n_expert}")


def _gguf_name(cfg: HFConfig, src: SafeTensor) -> str:
    if src.name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[src.name]
    m = _LAYER.match(src.name)
    names = _GEMMA3_NAMES if cfg.arch == "gemma3" else _LAYER_NAMES
    if m and m[2] in names and int(m[1]) < cfg.n_layer:
        return f"blk.{m[1]}.{names[m[2]]}.{m[3]}"
    if m and m[2] in names:  # a known tensor of a layer the config does not have
        raise HFError(f"{src.file}: tensor {src.name!r} is in layer {m[1]}, but config.json's num_hidden_layers "
                      f"is {cfg.n_layer}")
    raise HFError(f"{src.file}: tensor {src.name!r} is not one this converter knows for {cfg.hf_arch}")


def _single(cfg: HFConfig, name: str, src: SafeTensor, file_type: GGMLType) -> HFTensor:
    _check_shape(cfg, name, src, src.shape)
    make = src.read
    if cfg.llama and name.endswith(("attn_q.weight", "attn_q.bias")):
        make = _permuted(src, cfg.n_head)
    elif cfg.llama and name.endswith(("attn_k.weight", "attn_k.bias")):
        make = _permuted(src, cfg.n_head_kv)
    gtype = _gguf_type(name, len(src.shape), file_type, src.dtype)
    if shift := norm_shift(cfg, name):   # in float32, as the converter adds it
        return HFTensor(name, src.shape, gtype, lambda: _as_f32(src.read(), src.dtype) + np.float32(shift))
    if cfg.arch == "gemma3" and name == "token_embd.weight":
        return _vocab_rows(cfg, name, src, gtype)
    return HFTensor(name, src.shape, gtype, make, [src])


def _vocab_rows(cfg: HFConfig, name: str, src: SafeTensor, gtype: GGMLType) -> HFTensor:
    """Gemma 3's embedding cut to the tokenizer's tokens (the converter drops the rows past them)."""
    from packer.hf.tokenizer import vocab_count

    n = min(vocab_count(cfg.path.parent), src.shape[0])
    return HFTensor(name, (n, *src.shape[1:]), gtype, lambda: src.read()[:n], [src])


def _permuted(src: SafeTensor, n_head: int) -> Callable[[], np.ndarray]:
    def make() -> np.ndarray:
        w = src.read()
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    return make


def _stacked(cfg: HFConfig, bid: int, layer: dict[str, SafeTensor], file_type: GGMLType):
    order = next((o for o in _EXPERT_ORDERS if any(k.endswith("." + o[0]) for k in layer)), _EXPERT_ORDERS[0])
    for wid in order:
        if any(f"{e}.{wid}" not in layer for e in range(cfg.n_expert)):
            some = next(iter(layer.values()))
            raise HFError(f"{some.file}: layer {bid} lacks {wid} of some of its {cfg.n_expert} experts")
        parts = [layer[f"{e}.{wid}"] for e in range(cfg.n_expert)]
        name = f"blk.{bid}.{_EXPERT_NAMES[wid]}.weight"
        for p in parts:
            _check_shape(cfg, name, p, p.shape)
        if len({p.dtype for p in parts}) > 1:
            raise HFError(f"{parts[0].file}: the experts of {name} mix dtypes")

        def make(parts=parts) -> np.ndarray:
            return np.stack([p.read() for p in parts])
        gtype = _gguf_type(name, 3, file_type, parts[0].dtype)
        yield HFTensor(name, (cfg.n_expert, *parts[0].shape), gtype, make, parts)


def expected_shape(cfg: HFConfig, name: str) -> tuple[int, ...] | None:
    """The Hugging Face (numpy-order) shape config.json gives a GGUF-named tensor (experts: one)."""
    n_embd, n_vocab = cfg.get_int("hidden_size", required=True), cfg.get_int("vocab_size", required=True)
    head_dim = cfg.head_dim or n_embd // cfg.n_head
    n_ff = cfg.get_int("intermediate_size", required=True)
    n_ff_exp = cfg.get_int("moe_intermediate_size", "intermediate_size")   # Qwen3 MoE's experts
    q, kv = cfg.n_head * head_dim, cfg.n_head_kv * head_dim
    n_up = 2 * n_ff if cfg.arch == "phi3" else n_ff   # Phi-3's gate and up in one tensor
    role = name.split(".")[-2] if name.startswith("blk.") else name.rsplit(".", 1)[0]
    return {"token_embd": (n_vocab, n_embd), "output": (n_vocab, n_embd), "output_norm": (n_embd,),
            "attn_norm": (n_embd,), "ffn_norm": (n_embd,), "attn_q": (q, n_embd), "attn_k": (kv, n_embd),
            "attn_v": (kv, n_embd), "attn_output": (n_embd, q), "ffn_gate": (n_ff, n_embd), "ffn_up": (n_up, n_embd),
            "ffn_down": (n_embd, n_ff), "ffn_gate_inp": (cfg.n_expert, n_embd), "ffn_gate_exps": (n_ff_exp, n_embd),
            "ffn_up_exps": (n_ff_exp, n_embd), "ffn_down_exps": (n_embd, n_ff_exp), "attn_q_norm": (head_dim,),
            "attn_k_norm": (head_dim,), "post_attention_norm": (n_embd,), "post_ffw_norm": (n_embd,),
            "attn_qkv": (q + 2 * kv, n_embd)}.get(role)


def _check_shape(cfg: HFConfig, name: str, src: SafeTensor, shape: tuple[int, ...]) -> None:
    want = expected_shape(cfg, name)
    if name.endswith(".bias") and want is not None:
        want = want[:1]
    if want is not None and tuple(shape) != want:
        raise HFError(f"{src.file}: tensor {src.name!r} has shape {list(shape)}, config.json gives {list(want)}")


# -- data ----------------------------------------------------------------------------------

def bf16_from_f32(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits: round to nearest even, NaN made quiet (gguf-py's rounding). In
    uint32: after the NaN step no value is within 0x8000 of the top, so the sum cannot wrap."""
    n = np.ascontiguousarray(x, np.float32).view(np.uint32)
    n = np.where((n & 0x7FFFFFFF) > 0x7F800000, (n & 0xFFFF0000) | np.uint32(64 << 16), n)
    return ((n + (np.uint32(0x7FFF) + ((n >> 16) & 1))) >> 16).astype(np.uint16)


def _bf16_kept(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits through float32 and back, as the converter does: the same bits, NaN made quiet."""
    return np.where((bits & 0x7FFF) > 0x7F80, bits | np.uint16(0x40), bits)


def _as_f32(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(np.float32)


def encode(values: np.ndarray, gtype: GGMLType, dtype: str) -> np.ndarray:
    """values (safetensors dtype `dtype`) as the bytes of GGUF type gtype. The converter reads
    F16 and F32 as they are and everything else (BF16) as float32 first."""
    if dtype == "Q4_1":  # already the blocks' bytes
        return np.ascontiguousarray(values).reshape(-1).view(np.uint8)
    if dtype == "BF16" and gtype == GGMLType.BF16:  # no float32 copy of the tensor
        return np.ascontiguousarray(_bf16_kept(values)).reshape(-1).view(np.uint8)
    if dtype == "BF16":
        values = _as_f32(values, dtype)
    if gtype == GGMLType.F32:
        out = values.astype("<f4")
    elif gtype == GGMLType.F16:
        out = values.astype("<f2")
    elif gtype == GGMLType.BF16:
        out = bf16_from_f32(values.astype(np.float32))
    else:
        raise HFError(f"cannot write a {gtype.name} tensor from a checkpoint")
    return np.ascontiguousarray(out).reshape(-1).view(np.uint8)


# -- general.* -----------------------------------------------------------------------------

def id_to_title(text: str) -> str:
    """A folder name as the converter titles it: words split on '-', lower-case words capitalized
    unless they are version numbers."""
    return " ".join(w.title() if w.islower() and not re.match(r"^(v\d+(?:\.\d+)*|\d.*)$", w) else w
                    for w in text.strip().replace("-", " ").split())


def _rounded(n: float) -> str:
    for limit, scale, suffix in ((1e12, 1e-12, "T"), (1e9, 1e-9, "B"), (1e6, 1e-6, "M")):
        if n > limit:
            break
    else:
        scale, suffix = 1e-3, "K"
    v = n * scale
    fix = max(2 - len(str(round(v)).lstrip("0")), 0)
    return f"{v:.{fix}f}{suffix}"


def size_label(tensors: list[HFTensor]) -> str:
    """'1.0M', or '8x560K' with experts: the shared weights plus one expert's."""
    total = shared = expert = expert_sum = n_exp = 0
    for t in tensors:
        size = math.prod(t.shape)
        if "_exps." in t.name and len(t.shape) >= 3:
            expert += size // t.shape[0]
            expert_sum += t.shape[0]
            n_exp += 1
        else:
            shared += size
        total += size
    if n_exp:
        return f"{expert_sum // n_exp}x{_rounded(shared + expert)}"
    return _rounded(total)


def _sampling_keys(folder: Path) -> list[tuple[str, str, object]]:
    """general.sampling.* from generation_config.json, as the converter copies them (each value
    checked: a GGUF INT32 or FLOAT32)."""
    from packer.hf.tokenizer import _json

    path = folder / "generation_config.json"
    gen = _json(path)
    out: list[tuple[str, str, object]] = []
    for key, names, vtype in (("top_k", ("top_k",), "INT32"), ("top_p", ("top_p",), "FLOAT32"),
                              ("min_p", ("min_p",), "FLOAT32"), ("temp", ("temperature",), "FLOAT32"),
                              ("penalty_repeat", ("penalty_repeat", "repetition_penalty"), "FLOAT32")):
        name = next((n for n in names if gen.get(n) is not None), None)
        if name is not None:
            out.append((f"general.sampling.{key}", vtype, config_value(path, name, gen[name], vtype.lower())))
    return out
