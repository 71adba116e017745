"""`packer build MODEL.gguf --quantize MIX`: the GGUF llama.cpp's `llama_model_quantize` would
write (no importance matrix), streamed tensor by tensor into wherever the builder wants it.

The output, byte for byte as llama.cpp writes it:
- header: GGUF v3, the tensor and key counts;
- the input's keys in their order, without general.quantization_version and general.file_type,
  then those two (uint32: 2, and the mix's file type, e.g. 15 for Q4_K_M);
- tensor infos in llama.cpp's order (by layer number, then name: mixes.file_order), each with its
  type from the mix (packer/mixes.py) and its offset; zeros up to the alignment;
- each tensor's data, zero-padded to the alignment (32, or the input's general.alignment).
Data: a tensor that keeps its type is copied; the others are read as floats (F32, or converted
from F16, BF16 or, with allow_requantize, a quantized type) and quantized by the C kernels
(csrc/quants/quantize*.c, bit-identical to llama.cpp's reference quantizers) on every thread.

Streaming: rows go through in slabs of about SLAB_BYTES of output, each written and added to
the running CRC before the next is made; the input is mapped, and the pages of a slab already
read are dropped, so memory stays bounded by the slab and not the model. Refusals (one line,
naming the tensor): a quantized input without allow_requantize, a type the kernels cannot read,
NaN or inf in a weight, a weight so large that its fp16 scale overflows (as llama.cpp refuses
them).
"""
from __future__ import annotations

import contextlib
import mmap
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from packer.build import PackError
from packer.mixes import MIXES, MixError, ModelInfo, choose_types, file_order, find_mix, n_dims
from runtime.constants import (
    GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_SCALAR_FORMATS, KEY_GENERAL_ALIGNMENT, KEY_GENERAL_FILE_TYPE,
    KEY_GENERAL_QUANTIZATION_VERSION, GGMLType, GGUFValueType as VT,
)
from runtime.gguf import GGUFFile, GGUFTensor

QUANTIZATION_VERSION = 2   # ggml's GGML_QNT_VERSION, written as general.quantization_version
SLAB_BYTES = 32 << 20      # output bytes made per call into C
GGUF_MAGIC = b"GGUF"


class QuantizeError(PackError):
    """A model that cannot be quantized as asked; the message is one line."""


@dataclass
class TensorPlan:
    name: str
    shape: tuple[int, ...]   # numpy order: (..., rows, row length)
    src: GGUFTensor
    type: GGMLType           # in the output
    offset: int = 0          # relative to the output's data section

    @property
    def nbytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.type]
        return int(np.prod(self.shape)) // block * size

    @property
    def converted(self) -> bool:
        return self.type != self.src.type


@dataclass
class QuantPlan:
    """What --quantize writes: header bytes, then each tensor at data_offset + its offset."""
    mix: str
    file_type: int
    header: bytes
    tensors: list[TensorPlan]
    alignment: int
    size: int                # the whole output GGUF

    @property
    def data_offset(self) -> int:
        return len(self.header)

    def type_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tensors:
            counts[t.type.name] = counts.get(t.type.name, 0) + 1
        return counts


# -- the plan -----------------------------------------------------------------------------

def model_info(f: GGUFFile) -> ModelInfo:
    md = f.metadata
    arch = str(md.get("general.architecture", ""))

    def first(key: str, default: int) -> int:
        v = md.get(f"{arch}.{key}", default)
        v = v[0] if isinstance(v, list) and v else v
        return int(v) if isinstance(v, (int, float)) else default

    n_head = first("attention.head_count", 0)
    return ModelInfo(arch, first("block_count", 0), n_head, first("attention.head_count_kv", n_head),
                     first("expert_count", 0))


def plan(f: GGUFFile, mix: str, allow_requantize: bool = False, keep: frozenset[str] = frozenset()) -> QuantPlan:
    """The output of quantizing f with mix (find_mix's names); QuantizeError when it cannot be made.
    Tensors named in keep keep their type (a GPTQ layer's lossless Q4_1 blocks: packer/hf)."""
    try:
        mix = find_mix(mix)
        names = file_order(list(f.tensors))
        tensors = [f.tensors[n] for n in names]
        types = choose_types(mix, model_info(f), [(t.name, t.shape, t.type) for t in tensors])
        types.update((t.name, t.type) for t in tensors if t.name in keep)
    except MixError as e:
        raise QuantizeError(str(e)) from None
    plans = [TensorPlan(t.name, t.shape, t, types[t.name]) for t in tensors]
    for p in plans:
        _check_conversion(p, allow_requantize)
    alignment = f.alignment if KEY_GENERAL_ALIGNMENT in f.metadata else GGUF_DEFAULT_ALIGNMENT
    offset = 0
    for p in plans:
        p.offset = offset
        offset += _pad(p.nbytes, alignment)
    file_type = MIXES[mix][0]
    head = _header(f, plans, file_type, alignment)
    return QuantPlan(mix, file_type, head, plans, alignment, len(head) + offset)


def _check_conversion(p: TensorPlan, allow_requantize: bool) -> None:
    from runtime.kernels import WEIGHT_TYPES

    if not p.converted:
        return
    src = p.src.type
    if src not in (GGMLType.F32, GGMLType.F16, GGMLType.BF16) and not allow_requantize:
        raise QuantizeError(f"tensor {p.name!r} is already quantized ({src.name}): requantizing loses "
                            "quality; give --allow-requantize to do it anyway")
    if src not in WEIGHT_TYPES.values():
        raise QuantizeError(f"tensor {p.name!r}: cannot read type {src.name} to quantize it")


def _pad(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


# -- GGUF encoding ---------------------------------------------------------------------------

def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _value(vtype: VT, value: Any) -> bytes:
    if vtype == VT.STRING:
        return _string(value)
    return struct.pack("<" + GGUF_SCALAR_FORMATS[vtype], value)


def _kv(key: str, vtypes: tuple[VT, ...], value: Any) -> bytes:
    out = [_string(key), struct.pack("<I", vtypes[0])]
    if vtypes[0] != VT.ARRAY:
        out.append(_value(vtypes[0], value))
        return b"".join(out)
    etype = vtypes[1]
    if etype == VT.ARRAY:
        raise QuantizeError(f"metadata key {key!r} is an array of arrays, which GGUF readers refuse")
    out.append(struct.pack("<IQ", etype, len(value)))
    if etype == VT.STRING:
        out.extend(_string(s) for s in value)
    else:
        out.append(np.asarray(value).astype("<" + GGUF_SCALAR_FORMATS[etype]).tobytes())
    return b"".join(out)


def _header(f: GGUFFile, plans: list[TensorPlan], file_type: int, alignment: int) -> bytes:
    dropped = (KEY_GENERAL_QUANTIZATION_VERSION, KEY_GENERAL_FILE_TYPE)
    kvs = [_kv(k, f.value_types[k], v) for k, v in f.metadata.items() if k not in dropped]
    kvs.append(_kv(KEY_GENERAL_QUANTIZATION_VERSION, (VT.UINT32,), QUANTIZATION_VERSION))
    kvs.append(_kv(KEY_GENERAL_FILE_TYPE, (VT.UINT32,), file_type))
    infos = []
    for p in plans:
        ne = list(reversed(p.shape))[:n_dims(p.shape)]
        infos.append(_string(p.name) + struct.pack(f"<I{len(ne)}qIQ", len(ne), *ne, p.type, p.offset))
    head = GGUF_MAGIC + struct.pack("<IQQ", 3, len(plans), len(kvs)) + b"".join(kvs) + b"".join(infos)
    return head + bytes(_pad(len(head), alignment) - len(head))


# -- writing ---------------------------------------------------------------------------------

Progress = Callable[[int, int, int, int], None]   # (tensors done, tensor count, input bytes read, output bytes)


def write(qp: QuantPlan, emit: Callable[[bytes | memoryview | np.ndarray, int], None], n_threads: int,
          progress: Progress | None = None) -> int:
    """Makes the output front to back: emit(data, position) for each piece (position relative
    to the GGUF's first byte); returns the CRC-32 of the whole. Raises QuantizeError."""
    crc = zlib.crc32(qp.header)
    emit(qp.header, 0)
    pos, read = len(qp.header), 0
    for i, p in enumerate(qp.tensors):
        for piece in _tensor_pieces(p, n_threads):
            crc = zlib.crc32(piece, crc)
            emit(piece, pos)
            pos += len(piece) if isinstance(piece, (bytes, memoryview)) else piece.nbytes
        pad = qp.data_offset + p.offset + _pad(p.nbytes, qp.alignment) - pos
        if pad:
            crc = zlib.crc32(bytes(pad), crc)
            emit(bytes(pad), pos)
            pos += pad
        read += p.src.nbytes
        if progress:
            progress(i + 1, len(qp.tensors), read, pos)
    return crc


def _tensor_pieces(p: TensorPlan, n_threads: int):
    """The tensor's bytes in the output type, slab by slab (views: use each before the next)."""
    src = p.src.data
    if not p.converted:
        for start in range(0, len(src), SLAB_BYTES):
            piece = src[start:start + SLAB_BYTES]
            bad = _first_nonfinite(piece, p.src.type)
            if bad is not None:  # a float tensor kept as it is: refused as a quantized one would be
                from runtime._kernels import lib

                row = (start // _FLOAT_BYTES[p.src.type] + bad) // p.shape[-1]
                raise QuantizeError(_refusal(p, lib.LP_ENONFINITE, row))
            yield memoryview(piece)
        return
    from runtime._kernels import ffi, lib

    n_per_row = p.shape[-1]
    rows = int(np.prod(p.shape[:-1]))
    in_row = src.nbytes // rows if rows else 0
    out_row = p.nbytes // rows if rows else 0
    slab_rows = max(1, SLAB_BYTES // max(out_row, 1))
    out = np.empty(min(rows, slab_rows) * out_row, np.uint8)
    work = np.empty(n_threads * n_per_row, np.float32)
    bad = ffi.new("int64_t *")
    for r0 in range(0, rows, slab_rows):
        n = min(slab_rows, rows - r0)
        chunk = src[r0 * in_row:(r0 + n) * in_row]
        rc = lib.lp_quantize_rows(p.type, p.src.type, ffi.from_buffer(chunk), ffi.from_buffer(out), n, n_per_row,
                                  ffi.cast("float *", ffi.from_buffer(work)), n_threads, bad)
        if rc != 0:
            raise QuantizeError(_refusal(p, rc, r0 + bad[0]))
        _drop_pages(p.src, r0 * in_row, n * in_row)
        yield out[:n * out_row]


_FLOAT_BYTES = {GGMLType.F32: 4, GGMLType.F16: 2, GGMLType.BF16: 2}


def _first_nonfinite(data, qtype: GGMLType) -> int | None:
    """The index of the first NaN or inf of float data (bytes of F32, F16 or BF16), else None
    (other types: None)."""
    if qtype == GGMLType.F32 or qtype == GGMLType.F16:
        bad = ~np.isfinite(np.frombuffer(data, "<f4" if qtype == GGMLType.F32 else "<f2"))
    elif qtype == GGMLType.BF16:  # exponent bits all set
        bad = (np.frombuffer(data, "<u2") & 0x7F80) == 0x7F80
    else:
        return None
    return int(np.argmax(bad)) if bad.any() else None


def _refusal(p: TensorPlan, rc: int, row: int) -> str:
    from runtime._kernels import lib

    if rc == lib.LP_ENONFINITE:
        return f"tensor {p.name!r} holds NaN or inf (row {row}): the model is damaged; nothing to quantize"
    if rc == lib.LP_EOVERFLOW:
        return (f"tensor {p.name!r}: its weights are too large for {p.type.name} (row {row}: a scale "
                "overflows fp16)")
    return f"tensor {p.name!r}: cannot quantize {p.src.type.name} to {p.type.name} (kernel error {rc})"


def _drop_pages(t: GGUFTensor, start: int, n: int) -> None:
    """Lets the kernel drop the input pages just read (they are clean: re-read if needed), so
    that the mapping does not hold the whole model in memory."""
    mm = getattr(t.data.base, "obj", None) if isinstance(t.data.base, memoryview) else t.data.base
    if not isinstance(mm, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    page = mmap.PAGESIZE
    lo = (t.offset + start + page - 1) // page * page
    hi = (t.offset + start + n) // page * page
    if hi > lo:
        try:
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        except (OSError, ValueError):
            pass


@dataclass
class Entry:
    """A packed file's model entry made by the quantizer (packer/build.py)."""
    plan: QuantPlan
    threads: int
    name: str               # <model stem>.<mix>.gguf


def entry(stack: contextlib.ExitStack, model: Path, mix: str, allow_requantize: bool, threads: int | None) -> Entry:
    """The Entry for quantizing model with mix; its GGUF is mapped until stack closes."""
    from runtime.kernels import default_threads

    f = stack.enter_context(GGUFFile(model))
    try:
        qp = plan(f, mix, allow_requantize)
    except QuantizeError as e:
        raise QuantizeError(f"{model}: {e}") from None
    stem = model.name[:-5] if model.name.lower().endswith(".gguf") else model.name
    return Entry(qp, max(1, min(256, threads or default_threads())), f"{stem}.{qp.mix}.gguf")


class RateLine:
    """The quantizer's part of a progress line: tensors done and input MB/s."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.text = ""

    def __call__(self, done: int, total: int, read: int, written: int) -> None:
        rate = read / max(time.perf_counter() - self.t0, 1e-9)
        self.text = f"tensors {done}/{total}, {rate / 1e6:,.0f} MB/s"
