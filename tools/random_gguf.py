"""Random-weight GGUFs of every architecture in runtime/arch.py: one spec (ModelSpec) and one writer (write_model) for the
tests (tests/tiny_models.py), the fixture generator (tools/make_model_fixtures.py) and the
benchmark's models (tools/bench_models.py).

A spec names the shapes, the vocabulary, how the weights are drawn and how they are stored; the
same spec, seed included, always gives the same bytes. The committed fixtures rely on that:
tests/fixtures/models/ holds llama.cpp's outputs for models the fixture tool regenerates from their
recorded seeds (tests/test_random_gguf.py holds the writer to those files).

Weight draws (`init`), all from numpy's default_rng(seed):
- "scaled" (the tests' models): normal draws in the order token_embd, output_norm, output, then
  the layers; token_embd std 1, the other matrices std fan_in^-0.5, times 3 for attn_q, attn_k and
  the router, times 4 for output (sharp attention and a clear top token for the float64
  reference); norms 1 + 0.1 N(0,1).
- "fan_in" (the fixtures): normal draws in file order; token_embd std 1, output 2 n_embd^-0.5, the
  router 3 n_embd^-0.5, the other matrices fan_in^-0.5; norms 1 + 0.1 N(0,1); a tied model's
  output_norm gets random signs.
- "tiled" (the benchmark's ~1 GB models): fan_in's stds on slices of one seeded pool of 4M normal
  draws at random offsets (cheap, and speed does not depend on the values); norms 1.

Vocabularies (`vocab`):
- "numbered": <unk> <s> </s> t3 t4 ..., without special-token keys (the runtime's defaults apply);
- "bytes": <unk> <s> </s>, the 256 byte tokens, then filler pieces ▁a ▁b ...;
- "mistral": the first n_vocab pieces of Mistral's SentencePiece model (mistral-common's
  tokenizer.model.v1, read with sentencepiece: both needed only for this vocabulary).
"bytes" and "mistral" also say BOS 1, EOS 2, UNK 0, add BOS, no EOS, as llama.cpp's converter does.

Architectures (`arch`, runtime/arch.py's names): a llama spec without extras writes exactly the files
it always has; other architectures add their tensors (q/k norms, post norms, fused gate-up) and keys,
and the extras any architecture may carry are switched on by the spec (biases, fused qkv, rope
factors, sliding window, YaRN, soft-capping). Extra 1-D tensors are drawn after the ones before them
in file order: biases 0.5 N(0,1), rope factors 1 + 3 U(0,1), norms as the other norms.

Tensors are in the converter's order (token_embd, the layers, output_norm, output); the matrices
are stored as `qtype`, 1-D tensors (norms, biases, rope factors) and the MoE router as F32, unless
`qtypes` names a tensor's type.
The file is written tensor by tensor, so a large model never sits in memory whole.

rewrite_gguf copies a GGUF with keys or tensors changed, added or removed: the tests' broken
models, and the benchmark's big model (SmolLM2 plus a sparse unused tensor, SparseZeros).
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import gguf
import numpy as np

from runtime.arch import ARCHS
from runtime.constants import KEY_SLIDING_WINDOW_PATTERN

QT = gguf.GGMLQuantizationType
VT = gguf.GGUFValueType
Layout = list[tuple[str, tuple[int, ...]]]   # (tensor name, numpy shape), in file order
Vocab = tuple[list[str], list[float], list[int]]

# general.file_type of a named model by its matrices' type: llama.cpp's LLAMA_FTYPE_ALL_F32, _MOSTLY_F16
FILE_TYPES = {QT.F32: 0, QT.F16: 1}


@dataclass(frozen=True)
class ModelSpec:
    """A llama-architecture model with random weights; the defaults are the tests' tiny model."""
    n_vocab: int = 96
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 96                     # per expert in a MoE model
    n_ctx: int = 128                   # llama.context_length
    n_expert: int = 0                  # 0: dense
    n_expert_used: int = 0
    rope_base: float = 10000.0
    rope_linear: float | None = None   # linear rope scaling factor
    rms_eps: float = 1e-5
    tied: bool = False                 # no output.weight: the output reuses token_embd
    vocab: str = "numbered"            # "numbered", "bytes" or "mistral" (see the module's docstring)
    init: str = "scaled"               # "scaled", "fan_in" or "tiled" (see the module's docstring)
    qtype: QT = QT.F32                 # storage type of the matrices; norms and the router are F32
    qtypes: Mapping[str, QT] = field(default_factory=dict)  # tensor name -> type, over the rule above
    seed: int = 0
    name: str | None = None            # general.name; a named model also says its file type and vocab size
    # -- other architectures and the extras (runtime/arch.py); the defaults add nothing
    arch: str = "llama"
    key_length: int | None = None      # head size when not n_embd / n_head ({arch}.attention.key_length)
    qkv_bias: bool = False
    fused_qkv: bool = False
    rope_yarn: float | None = None     # YaRN scaling factor
    rope_orig_ctx: int | None = None   # rope.scaling.original_context_length
    rope_attn_factor: float | None = None
    rope_freqs: bool = False           # Llama 3.1's rope_freqs.weight
    longrope: bool = False             # Phi-3's rope_factors_long / rope_factors_short
    n_swa: int = 0                     # attention.sliding_window
    swa_pattern: int | None = None     # attention.sliding_window_pattern
    rope_base_swa: float | None = None
    final_softcap: float = 0.0

    def __post_init__(self) -> None:
        if self.vocab not in VOCABS:
            raise ValueError(f"vocab {self.vocab!r}: one of {', '.join(VOCABS)}")
        if self.init not in INITS:
            raise ValueError(f"init {self.init!r}: one of {', '.join(INITS)}")
        if self.name is not None and self.qtype not in FILE_TYPES:
            raise ValueError(f"a named model's matrices are F32 or F16, not {self.qtype.name}")

    @property
    def head_dim(self) -> int:
        return self.key_length or self.n_embd // self.n_head

    def tensor_qtype(self, name: str) -> QT:
        if name in self.qtypes:
            return self.qtypes[name]
        one_d = name.endswith(("norm.weight", ".bias")) or name.startswith(("rope_freqs", "rope_factors"))
        return QT.F32 if one_d or name.endswith("ffn_gate_inp.weight") else self.qtype


def tensor_layout(spec: ModelSpec) -> Layout:
    """Every tensor's name and numpy shape (reversed ggml ne: the row length last), in file order."""
    arch = ARCHS[spec.arch]
    D, F, V, X, hd = spec.n_embd, spec.n_ff, spec.n_vocab, spec.n_expert, spec.head_dim
    Q, KV = spec.n_head * hd, spec.n_head_kv * hd
    out: Layout = [("token_embd.weight", (V, D))]
    if spec.rope_freqs:
        out.append(("rope_freqs.weight", (hd // 2,)))
    if spec.longrope:
        out += [("rope_factors_long.weight", (hd // 2,)), ("rope_factors_short.weight", (hd // 2,))]
    for i in range(spec.n_layer):
        p = f"blk.{i}."
        out.append((p + "attn_norm.weight", (D,)))
        qkv = [("attn_qkv", Q + 2 * KV)] if spec.fused_qkv else [("attn_q", Q), ("attn_k", KV), ("attn_v", KV)]
        out += [(f"{p}{n}.weight", (rows, D)) for n, rows in qkv]
        if spec.qkv_bias:
            out += [(f"{p}{n}.bias", (rows,)) for n, rows in qkv]
        out.append((p + "attn_output.weight", (D, Q)))
        if arch.qk_norm:
            out += [(p + "attn_q_norm.weight", (hd,)), (p + "attn_k_norm.weight", (hd,))]
        if arch.post_norms:
            out.append((p + "post_attention_norm.weight", (D,)))
        out.append((p + "ffn_norm.weight", (D,)))
        if X:
            out += [(p + "ffn_gate_inp.weight", (X, D)), (p + "ffn_gate_exps.weight", (X, F, D)),
                    (p + "ffn_up_exps.weight", (X, F, D)), (p + "ffn_down_exps.weight", (X, D, F))]
        elif arch.fused_gate_up:
            out += [(p + "ffn_up.weight", (2 * F, D)), (p + "ffn_down.weight", (D, F))]
        else:
            out += [(p + "ffn_gate.weight", (F, D)), (p + "ffn_up.weight", (F, D)), (p + "ffn_down.weight", (D, F))]
        if arch.post_norms:
            out.append((p + "post_ffw_norm.weight", (D,)))
    out.append(("output_norm.weight", (D,)))
    if not spec.tied:
        out.append(("output.weight", (V, D)))
    return out


# ---------------------------------------------------------------- weight draws

Values = Iterator[tuple[str, np.ndarray]]   # (tensor name, float values), in file order
SCALED_GAIN = {"attn_q": 3, "attn_k": 3, "ffn_gate_inp": 3, "output": 4}


def _role(name: str) -> str:
    """'blk.3.attn_q.weight' -> 'attn_q'."""
    return name.split(".")[-2]


def _one_d(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """A 1-D tensor's draw: biases 0.5 N(0,1), rope factors 1 + 3 U(0,1), norms 1 + 0.1 N(0,1)."""
    if name.endswith(".bias"):
        return (0.5 * rng.standard_normal(n)).astype(np.float32)
    if name.startswith(("rope_freqs", "rope_factors")):
        return (1 + 3 * rng.random(n)).astype(np.float32)
    return (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)


def _scaled(spec: ModelSpec, layout: Layout) -> Values:
    rng = np.random.default_rng(spec.seed)
    shapes = dict(layout)

    def draw(name: str) -> np.ndarray:
        shape = shapes[name]
        if len(shape) == 1:
            return _one_d(name, shape[0], rng)
        x = rng.standard_normal(shape).astype(np.float32)
        if name == "token_embd.weight":
            return x
        return x / np.sqrt(shape[-1]) * SCALED_GAIN.get(_role(name), 1)

    first = ["token_embd.weight", "output_norm.weight"] + ([] if spec.tied else ["output.weight"])
    values = {name: draw(name) for name in first}
    values.update((name, draw(name)) for name, _ in layout if name not in values)
    for name, _ in layout:
        yield name, values.pop(name)


def _fan_in_std(name: str, shape: tuple[int, ...]) -> float:
    if name == "token_embd.weight":
        return 1.0
    gain = {"output": 2, "ffn_gate_inp": 3}.get(_role(name))
    return gain * shape[-1] ** -0.5 if gain else shape[-1] ** -0.5


def _fan_in(spec: ModelSpec, layout: Layout) -> Values:
    rng = np.random.default_rng(spec.seed)
    for name, shape in layout:
        if len(shape) == 1:
            values = _one_d(name, shape[0], rng)
            if spec.tied and name == "output_norm.weight":
                # random signs: the final hidden state still carries the input token's own embedding,
                # and with the output matrix tied to the embedding that self-match would win every step
                values *= rng.choice(np.array([-1.0, 1.0], np.float32), shape[0])
        else:
            values = (rng.standard_normal(shape) * _fan_in_std(name, shape)).astype(np.float32)
        yield name, values


def _tiled(spec: ModelSpec, layout: Layout) -> Values:
    rng = np.random.default_rng(spec.seed)
    pool = rng.standard_normal(1 << 22, dtype=np.float32)
    for name, shape in layout:
        n = int(np.prod(shape))
        if len(shape) == 1:
            yield name, np.ones(shape, np.float32)
            continue
        std = _fan_in_std(name, shape)
        out = np.empty(n, np.float32)
        done = 0
        while done < n:
            start = int(rng.integers(0, pool.size // 2))
            k = min(n - done, pool.size - start)
            out[done:done + k] = pool[start:start + k] * std
            done += k
        yield name, out.reshape(shape)


INITS: dict[str, Callable[[ModelSpec, Layout], Values]] = {"scaled": _scaled, "fan_in": _fan_in, "tiled": _tiled}


# ---------------------------------------------------------------- vocabularies

def _numbered(n: int) -> Vocab:
    return ["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(3, n)], [0.0] * n, [2, 3, 3] + [1] * (n - 3)


def _bytes(n: int) -> Vocab:
    """<unk> <s> </s>, the 256 byte tokens, then filler pieces; SentencePiece token types."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256  # UNKNOWN, CONTROL, BYTE
    letters = "abcdefghijklmnopqrstuvwxyz"
    i = 0
    while len(tokens) < n:
        piece, k = "", i   # a, b, ..., z, aa, ab, ...
        while True:
            piece = letters[k % 26] + piece
            k = k // 26 - 1
            if k < 0:
                break
        tokens.append("\u2581" + piece)
        types.append(1)  # NORMAL
        i += 1
    scores = [0.0] * 259 + [-float(j) for j in range(n - 259)]
    return tokens, scores, types


@functools.lru_cache(maxsize=1)
def _mistral_pieces() -> tuple[tuple[str, float, int], ...]:
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or spec.origin is None:
        raise RuntimeError("the mistral vocabulary needs mistral-common and sentencepiece "
                           "(pip install sentencepiece mistral-common)")
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(
        model_file=str(Path(spec.origin).parent / "data" / "tokenizer.model.v1"))
    pieces = tuple((sp.id_to_piece(i), float(sp.get_score(i)),
                    2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i) else
                    6 if sp.is_byte(i) else 1)  # UNKNOWN, CONTROL, UNUSED, BYTE, NORMAL
                   for i in range(sp.get_piece_size()))
    assert [p[0] for p in pieces[:4]] == ["<unk>", "<s>", "</s>", "<0x00>"] and pieces[258][0] == "<0xFF>"
    return pieces


def mistral_vocab(n: int | None = None) -> Vocab:
    """The first n pieces (all if None) of Mistral 7B v0.1/v0.2's and Mixtral's SentencePiece
    model: (tokens, scores, token types)."""
    pieces = _mistral_pieces()[:n]
    return [t for t, _, _ in pieces], [s for _, s, _ in pieces], [k for _, _, k in pieces]


VOCABS: dict[str, Callable[[int], Vocab]] = {"numbered": _numbered, "bytes": _bytes, "mistral": mistral_vocab}


# ---------------------------------------------------------------- the writer

def _add_hparams(w: gguf.GGUFWriter, spec: ModelSpec) -> None:
    if spec.name is not None:
        w.add_name(spec.name)
        w.add_file_type(FILE_TYPES[spec.qtype])
        w.add_vocab_size(spec.n_vocab)
    w.add_context_length(spec.n_ctx)
    w.add_embedding_length(spec.n_embd)
    w.add_block_count(spec.n_layer)
    w.add_feed_forward_length(spec.n_ff)
    w.add_head_count(spec.n_head)
    w.add_head_count_kv(spec.n_head_kv)
    w.add_rope_freq_base(spec.rope_base)
    w.add_layer_norm_rms_eps(spec.rms_eps)
    w.add_rope_dimension_count(spec.head_dim)
    if spec.n_expert:
        w.add_expert_count(spec.n_expert)
        w.add_expert_used_count(spec.n_expert_used)
    if spec.rope_linear:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(spec.rope_linear)
    _add_arch_hparams(w, spec)


def _add_arch_hparams(w: gguf.GGUFWriter, spec: ModelSpec) -> None:
    """The keys of the other architectures and of the extras; none for a plain llama spec."""
    if spec.key_length:
        w.add_key_length(spec.key_length)
        w.add_value_length(spec.key_length)
    if spec.arch == "qwen3moe":
        w.add_expert_feed_forward_length(spec.n_ff)
    if spec.rope_yarn:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(spec.rope_yarn)
    if spec.rope_orig_ctx:
        w.add_rope_scaling_orig_ctx_len(spec.rope_orig_ctx)
    if spec.rope_attn_factor:
        w.add_rope_scaling_attn_factors(spec.rope_attn_factor)
    if spec.n_swa:
        w.add_sliding_window(spec.n_swa)
    if spec.swa_pattern is not None:
        w.add_uint32(KEY_SLIDING_WINDOW_PATTERN.format(arch=spec.arch), spec.swa_pattern)
    if spec.rope_base_swa:
        w.add_rope_freq_base_swa(spec.rope_base_swa)
    if spec.final_softcap:
        w.add_final_logit_softcapping(spec.final_softcap)


def _add_vocab(w: gguf.GGUFWriter, spec: ModelSpec) -> None:
    tokens, scores, types = VOCABS[spec.vocab](spec.n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    if spec.vocab != "numbered":
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)


def _add_tensor_info(w: gguf.GGUFWriter, name: str, shape: tuple[int, ...], qtype: QT) -> None:
    if qtype in (QT.F32, QT.F16):
        dtype = np.dtype(np.float32 if qtype == QT.F32 else np.float16)
        w.add_tensor_info(name, shape, dtype, int(np.prod(shape)) * dtype.itemsize)
    else:
        byte_shape = gguf.quant_shape_to_byte_shape(shape, qtype)
        w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=qtype)


def write_model(path: Path, spec: ModelSpec, *, keep_values: bool = False) -> dict[str, np.ndarray]:
    """Writes spec's model to path. With keep_values, returns every tensor's values as the file
    holds them (float32, after quantization) by name; else {}."""
    layout = tensor_layout(spec)
    qtypes = {name: spec.tensor_qtype(name) for name, _ in layout}
    w = gguf.GGUFWriter(str(path), spec.arch)
    _add_hparams(w, spec)
    _add_vocab(w, spec)
    for name, shape in layout:
        _add_tensor_info(w, name, shape, qtypes[name])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    stored = {}
    for name, values in INITS[spec.init](spec, layout):
        data = gguf.quants.quantize(np.asarray(values, np.float32), qtypes[name])
        w.write_tensor_data(data)
        if keep_values:
            stored[name] = gguf.quants.dequantize(data, qtypes[name]).astype(np.float32)
    w.close()
    return stored


# ---------------------------------------------------------------- copies with changes

class SparseZeros:
    """Tensor data of `nbytes` zero bytes (I8) for rewrite_gguf, written as a hole in the file:
    instant, and no disk used for it."""

    dtype = np.dtype(np.int8)

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.shape = (nbytes,)

    def tofile(self, f) -> None:  # type: ignore[no-untyped-def]
        f.seek(self.nbytes - 1, os.SEEK_CUR)
        f.write(b"\0")


def rewrite_gguf(src: Path, dst: Path, keys: dict[str, tuple] | None = None, drop: tuple[str, ...] = (),
                 tensors: dict[str, np.ndarray | tuple[np.ndarray | SparseZeros, QT] | None] | None = None,
                 ) -> Path:
    """A copy of src with metadata `keys` set ({key: (value, GGUFValueType[, element type])}, any
    type, as a hostile file would), keys in `drop` removed, and `tensors` replaced ({name: float32
    array | (raw bytes array or SparseZeros, ggml type) | None to remove}; new names are added
    after the others)."""
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
