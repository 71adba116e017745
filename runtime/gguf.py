"""GGUF reader: metadata as plain Python values, tensors as zero-copy views over an mmap.

A GGUF file (all integers little-endian) is laid out as:

    magic "GGUF" | uint32 version | uint64 tensor_count | uint64 kv_count
    kv_count x      (string key, uint32 value type, value)
    tensor_count x  (string name, uint32 n_dims, n_dims x uint64 ne, uint32 type, uint64 offset)
    padding to `general.alignment` (default 32)
    tensor data: each tensor at data_offset + its offset (a multiple of the alignment)

The GGUF may start at any byte `offset` of a larger file (the packed executable): every
alignment is computed relative to that start, every position this module reports (attributes
and error messages) is an absolute file offset.

Hostile files: every count and length is checked against the bytes left in the file before
anything is allocated, so a lying header costs an error, never memory. Every failure raises
`GGUFError` with one line naming the problem and its absolute byte offset.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .constants import (
    GGML_MAX_DIMS,
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_SCALAR_FORMATS,
    GGUF_SUPPORTED_VERSIONS,
    KEY_GENERAL_ALIGNMENT,
    METADATA_TYPES,
    GGMLType,
    GGUFValueType,
)

HEADER_SIZE = 24          # magic + version + tensor_count + kv_count
MIN_KV_SIZE = 13          # key length (8) + value type (4) + smallest value (1)
MIN_TENSOR_INFO_SIZE = 32  # name length (8) + n_dims (4) + one ne (8) + type (4) + offset (8)
MAX_ARRAY_DEPTH = 8       # arrays of arrays nest at most this deep (llama.cpp allows none)
INT64_MAX = 2**63 - 1

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SCALARS = {t: struct.Struct("<" + f) for t, f in GGUF_SCALAR_FORMATS.items()}
_DTYPES = {t: np.dtype("<" + f) for t, f in GGUF_SCALAR_FORMATS.items()}
# Smallest encoding of one array element of each type: what `count` must at least cost.
_MIN_ELEMENT_SIZE = {t: s.size for t, s in _SCALARS.items()}
_MIN_ELEMENT_SIZE[GGUFValueType.STRING] = 8
_MIN_ELEMENT_SIZE[GGUFValueType.ARRAY] = 12


class GGUFError(ValueError):
    """A file that is not a readable GGUF; the message is one line and names the offset."""


class Metadata(dict):
    """key -> value, as read; also each key's GGUF type (`types`) and offset (`offsets`).

    Read keys the runtime knows with `get_key`, which checks their type."""

    def __init__(self) -> None:
        super().__init__()
        self.types: dict[str, tuple[GGUFValueType, ...]] = {}
        self.offsets: dict[str, int] = {}


def _quote(text: str, limit: int = 60) -> str:
    """repr() of a name from the file, shortened (hostile names can be long or multi-line)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


@dataclass(frozen=True, eq=False)
class GGUFTensor:
    """One tensor of the file; `data` is a read-only view of its bytes in the mapping."""

    name: str
    shape: tuple[int, ...]  # numpy order, outermost first: (..., rows, row length)
    type: GGMLType          # storage type; see constants.GGML_QUANT_SIZES
    offset: int             # absolute file offset of the first byte of data
    nbytes: int
    data: np.ndarray        # uint8, (nbytes,), zero-copy over the mmap (or load_into_memory's copy)

    @property
    def n_elements(self) -> int:
        """Number of (logical, dequantized) elements."""
        return math.prod(self.shape)


class _Cursor:
    """Bounds-checked little-endian reads from the whole-file mapping; `pos` is absolute."""

    def __init__(self, mm: mmap.mmap, pos: int) -> None:
        self.mm = mm
        self.pos = pos
        self.size = len(mm)

    def need(self, n: int, what: str) -> None:
        """Fail unless `n` more bytes exist after `pos`."""
        if n > self.size - self.pos:
            raise GGUFError(f"gguf: {what} at offset {self.pos} runs past end of file "
                            f"(size {self.size})")

    def u32(self, what: str) -> int:
        self.need(4, what)
        (value,) = _U32.unpack_from(self.mm, self.pos)
        self.pos += 4
        return value

    def u64(self, what: str) -> int:
        self.need(8, what)
        (value,) = _U64.unpack_from(self.mm, self.pos)
        self.pos += 8
        return value

    def string(self, what: str) -> str:
        """A gguf string: uint64 byte length + UTF-8 bytes (strictly decoded)."""
        start = self.pos
        length = self.u64(f"{what} length")
        if length > self.size - self.pos:
            raise GGUFError(f"gguf: {what} length {length} at offset {start} runs past end "
                            f"of file (size {self.size})")
        raw = self.mm[self.pos:self.pos + length]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(f"gguf: {what} at offset {start} is not valid UTF-8 "
                            f"({e.reason} at byte {e.start})") from None
        self.pos += length
        return text

    def value_type(self, what: str) -> GGUFValueType:
        start = self.pos
        raw = self.u32(what)
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise GGUFError(f"gguf: unknown {what} {raw} at offset {start}") from None

    def value(self, vtype: GGUFValueType, depth: int = 0) -> Any:
        """One metadata value of type `vtype` (already read) as a plain Python value."""
        if vtype == GGUFValueType.STRING:
            return self.string("string")
        if vtype == GGUFValueType.ARRAY:
            return self.array(depth + 1)[1]
        scalar = _SCALARS[vtype]
        self.need(scalar.size, f"{vtype.name} value")
        (value,) = scalar.unpack_from(self.mm, self.pos)
        self.pos += scalar.size
        return value != 0 if vtype == GGUFValueType.BOOL else value

    def array(self, depth: int) -> tuple[GGUFValueType, list[Any]]:
        """An array value: uint32 element type, uint64 count, elements -> (type, list)."""
        start = self.pos
        if depth > MAX_ARRAY_DEPTH:
            raise GGUFError(f"gguf: arrays nested deeper than {MAX_ARRAY_DEPTH} at offset {start}")
        etype = self.value_type("array element type")
        count_pos = self.pos
        count = self.u64("array count")
        left = self.size - self.pos
        if count > left // _MIN_ELEMENT_SIZE[etype]:
            raise GGUFError(f"gguf: array count {count} of {etype.name} at offset {count_pos} "
                            f"needs more than the {left} bytes left in the file "
                            f"(size {self.size})")
        if etype == GGUFValueType.STRING:
            return etype, self._strings(count)
        if etype == GGUFValueType.ARRAY:
            return etype, [self.array(depth + 1)[1] for _ in range(count)]
        # Numbers: one numpy read (fits, checked above), then plain Python values.
        values = np.frombuffer(self.mm, dtype=_DTYPES[etype], count=count, offset=self.pos)
        self.pos += values.nbytes
        return etype, (values != 0).tolist() if etype == GGUFValueType.BOOL else values.tolist()

    def _strings(self, count: int) -> list[str]:
        """`count` gguf strings in a row: the tokenizer's 50k-150k tokens and merges."""
        mm, size, pos = self.mm, self.size, self.pos
        unpack = _U64.unpack_from
        out: list[str] = []
        append = out.append
        try:
            for _ in range(count):
                if size - pos < 8:
                    raise GGUFError(f"gguf: string length at offset {pos} runs past end of "
                                    f"file (size {size})")
                (length,) = unpack(mm, pos)
                if length > size - pos - 8:
                    raise GGUFError(f"gguf: string length {length} at offset {pos} runs past "
                                    f"end of file (size {size})")
                append(mm[pos + 8:pos + 8 + length].decode("utf-8"))
                pos += 8 + length
        except UnicodeDecodeError as e:
            raise GGUFError(f"gguf: string at offset {pos} is not valid UTF-8 "
                            f"({e.reason} at byte {e.start})") from None
        self.pos = pos
        return out


class GGUFFile:
    """A GGUF v2/v3 starting at byte `offset` of `path`, mapped read-only.

    Attributes:
        path, offset:  the file and the absolute offset of the GGUF's first byte
        file, mm:      the open file and its read-only mmap (whole file), kept open
        version:       2 or 3
        metadata:      a Metadata: key -> value; values are int, float, bool, str or list
                       (arrays, in file order; nested arrays are lists of lists). Numeric
                       arrays are plain lists too (one numpy read + tolist(), ~1 ms per 50k).
                       Read the keys the runtime knows with `get_key` (type-checked).
        value_types:   key -> (GGUFValueType,) or (ARRAY, element type) (= metadata.types)
        alignment:     from `general.alignment` (uint32 power of two) or 32
        data_offset:   absolute offset of the tensor data section
        tensors:       name -> GGUFTensor, in file order
    """

    def __init__(self, path: str | os.PathLike[str], offset: int = 0) -> None:
        self.path = os.fspath(path)
        self.offset = offset
        self.metadata = Metadata()
        self.value_types = self.metadata.types
        self.tensors: dict[str, GGUFTensor] = {}
        self.version = 0
        self.alignment = GGUF_DEFAULT_ALIGNMENT
        self.data_offset = 0
        try:
            self.file = open(self.path, "rb")
        except OSError as e:
            raise GGUFError(f"gguf: cannot open {self.path}: {e.strerror or e}") from None
        try:
            self.mm = self._map()
            self._parse(_Cursor(self.mm, offset))
        except BaseException:
            self.close()
            raise

    def _map(self) -> mmap.mmap:
        """Map the whole file read-only after checking that `offset` lies inside it."""
        size = os.fstat(self.file.fileno()).st_size
        if not isinstance(self.offset, int) or self.offset < 0:
            raise GGUFError(f"gguf: bad offset {self.offset!r} (must be an int >= 0)")
        if size == 0:
            raise GGUFError(f"gguf: {self.path} is empty (nothing at offset {self.offset})")
        if self.offset >= size:
            raise GGUFError(f"gguf: offset {self.offset} is past end of {self.path} "
                            f"(size {size})")
        try:
            mm = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise GGUFError(f"gguf: cannot map {self.path} (offset {self.offset}): {e}") from None
        # Where the file system keeps files in large folios (Linux 6.x: ext4, xfs, btrfs, tmpfs),
        # pages read through this mapping come in 2 MiB folios mapped by one page-table entry each:
        # a token's matrix products then take far fewer address translations (in a virtual
        # machine a miss walks two page tables: 30-40% faster generation there). Pages already
        # cached in 4 KiB folios (a file just written or copied) stay as they are.
        if hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                mm.madvise(mmap.MADV_HUGEPAGE)
            except OSError:
                pass
        return mm

    def _parse(self, cur: _Cursor) -> None:
        base = cur.pos
        # Header.
        cur.need(4, "magic")
        magic = self.mm[base:base + 4]
        if magic != GGUF_MAGIC:
            raise GGUFError(f"gguf: bad magic {magic!r} at offset {base} (not a GGUF file)")
        cur.pos += 4
        self.version = cur.u32("version")
        if self.version == 1:
            raise GGUFError(f"gguf: version 1 at offset {base + 4} is not supported "
                            "(GGUF v1 used 32-bit counts; convert the file to v3)")
        if self.version not in GGUF_SUPPORTED_VERSIONS:
            hint = " (big-endian file?)" if self.version & 0xFFFF == 0 else ""
            raise GGUFError(f"gguf: unsupported version {self.version} at offset {base + 4}"
                            f"{hint}; supported: 2, 3")
        n_tensors = cur.u64("tensor count")
        n_kv = cur.u64("metadata kv count")
        self._check_counts(cur, n_tensors, n_kv)

        # Metadata.
        kv_offsets = self.metadata.offsets
        for _ in range(n_kv):
            start = cur.pos
            key = cur.string("key")
            if key in self.metadata:
                raise GGUFError(f"gguf: duplicate key {_quote(key)} at offset {start} "
                                f"(first at offset {kv_offsets[key]})")
            vtype = cur.value_type("value type")
            if vtype == GGUFValueType.ARRAY:
                etype, self.metadata[key] = cur.array(1)
                self.value_types[key] = (vtype, etype)
            else:
                self.metadata[key] = cur.value(vtype)
                self.value_types[key] = (vtype,)
            kv_offsets[key] = start
        self._set_alignment(kv_offsets.get(KEY_GENERAL_ALIGNMENT))

        # Tensor infos, then the data section at the next aligned position (relative to base).
        infos = [self._tensor_info(cur) for _ in range(n_tensors)]
        rel_end = cur.pos - base
        self.data_offset = base + -(-rel_end // self.alignment) * self.alignment
        self._make_tensors(infos, cur.size)

    def _check_counts(self, cur: _Cursor, n_tensors: int, n_kv: int) -> None:
        """Refuse counts whose smallest possible encoding does not fit in the file."""
        left, base = cur.size - cur.pos, cur.pos - HEADER_SIZE
        if n_tensors * MIN_TENSOR_INFO_SIZE + n_kv * MIN_KV_SIZE > left:  # Python ints: exact
            raise GGUFError(f"gguf: tensor count {n_tensors} (offset {base + 8}) and kv count "
                            f"{n_kv} (offset {base + 16}) cannot fit in the {left} bytes left "
                            f"in the file (size {cur.size})")

    def _set_alignment(self, kv_offset: int | None) -> None:
        """Apply `general.alignment`: a uint32, nonzero power of two."""
        if kv_offset is None:
            return
        value = self.metadata[KEY_GENERAL_ALIGNMENT]
        if self.value_types[KEY_GENERAL_ALIGNMENT] != (GGUFValueType.UINT32,):
            raise GGUFError(f"gguf: {KEY_GENERAL_ALIGNMENT} at offset {kv_offset} has type "
                            f"{self.value_types[KEY_GENERAL_ALIGNMENT][0].name}, expected UINT32")
        if value == 0 or value & (value - 1):
            raise GGUFError(f"gguf: {KEY_GENERAL_ALIGNMENT} {value} at offset {kv_offset} is "
                            "not a nonzero power of two")
        self.alignment = value

    def _tensor_info(self, cur: _Cursor) -> tuple[str, tuple[int, ...], GGMLType, int, int, int]:
        """One tensor info -> (name, numpy shape, type, relative offset, nbytes, info offset)."""
        start = cur.pos
        name = cur.string("tensor name")
        where = f"tensor {_quote(name)} (info at offset {start})"
        dims_pos = cur.pos
        n_dims = cur.u32("tensor n_dims")
        if not 1 <= n_dims <= GGML_MAX_DIMS:
            raise GGUFError(f"gguf: {where} has n_dims {n_dims} at offset {dims_pos}, "
                            f"expected 1..{GGML_MAX_DIMS}")
        cur.need(8 * n_dims, "tensor dims")
        ne_pos = cur.pos
        ne = struct.unpack_from(f"<{n_dims}Q", cur.mm, ne_pos)  # ggml order: ne[0] = row length
        cur.pos += 8 * n_dims
        n_elements = 1
        for j, dim in enumerate(ne):
            if dim == 0:
                raise GGUFError(f"gguf: {where} has ne[{j}] = 0 (empty tensor) at offset "
                                f"{ne_pos + 8 * j}")
            n_elements *= dim
            if n_elements >= INT64_MAX:
                raise GGUFError(f"gguf: {where} has ne {list(ne)} at offset {ne_pos}: "
                                "element count overflows int64")
        type_pos = cur.pos
        type_id = cur.u32("tensor type")
        if type_id not in GGML_QUANT_SIZES:
            raise GGUFError(f"gguf: {where} has unknown ggml type {type_id} at offset {type_pos}")
        ggml_type = GGMLType(type_id)
        block_size, type_size = GGML_QUANT_SIZES[ggml_type]
        if ne[0] % block_size:
            raise GGUFError(f"gguf: {where} of type {ggml_type.name} has row length {ne[0]} "
                            f"at offset {ne_pos}, not a multiple of the block size {block_size}")
        offset_pos = cur.pos
        rel = cur.u64("tensor data offset")
        if rel % self.alignment:
            raise GGUFError(f"gguf: {where} has data offset {rel} at offset {offset_pos}, not "
                            f"a multiple of the alignment {self.alignment}")
        nbytes = n_elements // block_size * type_size
        # The one place dims are reversed: GGUF lists ne innermost first, numpy outermost first.
        shape = tuple(reversed(ne))
        return name, shape, ggml_type, rel, nbytes, start

    def _make_tensors(self, infos: list[tuple[str, tuple[int, ...], GGMLType, int, int, int]],
                      size: int) -> None:
        """Check data ranges (inside the file, no duplicates or overlaps), then make views."""
        seen: dict[str, int] = {}
        for name, _, _, rel, nbytes, start in infos:
            if name in seen:
                raise GGUFError(f"gguf: duplicate tensor name {_quote(name)} at offset {start} "
                                f"(first at offset {seen[name]})")
            seen[name] = start
            begin = self.data_offset + rel
            if nbytes > size - begin:
                raise GGUFError(f"gguf: tensor {_quote(name)} (info at offset {start}) data "
                                f"[{begin}, {begin + nbytes}) runs past end of file (size {size})")
        previous: tuple[str, int] | None = None
        for name, _, _, rel, nbytes, _ in sorted(infos, key=lambda info: info[3]):
            begin = self.data_offset + rel
            if previous is not None and begin < previous[1]:
                raise GGUFError(f"gguf: tensor {_quote(name)} data at offset {begin} overlaps "
                                f"tensor {_quote(previous[0])} (ends at offset {previous[1]})")
            previous = (name, begin + nbytes)
        for name, shape, ggml_type, rel, nbytes, _ in infos:
            begin = self.data_offset + rel
            data = np.frombuffer(self.mm, dtype=np.uint8, count=nbytes, offset=begin)
            self.tensors[name] = GGUFTensor(name, shape, ggml_type, begin, nbytes, data)

    def load_into_memory(self) -> None:
        """Reads the tensor data into memory of this process and points the tensors at it
        instead of the file mapping (llama.cpp's --no-mmap). The weights then cost their size in
        resident anonymous memory and the read at start-up, and they sit in transparent huge
        pages where the kernel gives them: reading 2 MiB pages takes fewer address translations
        than the file's 4 KiB ones (in a virtual machine each miss walks two page tables: one
        token's matrix products ran 30% faster there). GGUFError if memory or the read fails."""
        if not self.tensors:
            return
        lo = min(t.offset for t in self.tensors.values())
        hi = max(t.offset + t.nbytes for t in self.tensors.values())
        huge = 2 << 20
        try:
            raw = np.empty(hi - lo + huge, dtype=np.uint8)
        except MemoryError:
            raise GGUFError(f"gguf: not enough memory to load the {(hi - lo) >> 20} MiB of weights of "
                            f"{self.path} (without --no-mmap they are mapped from the file)") from None
        start = -raw.ctypes.data % huge  # 2 MiB aligned, for the huge pages
        buf = raw[start:start + hi - lo]
        if hasattr(mmap, "MADV_HUGEPAGE"):  # (numpy asks too, for large arrays; this is the aligned range)
            import ctypes
            try:
                ctypes.CDLL(None).madvise(ctypes.c_void_p(buf.ctypes.data), ctypes.c_size_t(buf.nbytes),
                                          mmap.MADV_HUGEPAGE)
            except (OSError, AttributeError):
                pass
        try:
            self.file.seek(lo)
            view, done = memoryview(buf), 0
            while done < buf.nbytes:
                n = self.file.readinto(view[done:])
                if not n:
                    raise OSError("unexpected end of file")
                done += n
        except OSError as e:
            raise GGUFError(f"gguf: cannot read the weights of {self.path}: {e}") from None
        for name, t in self.tensors.items():
            self.tensors[name] = GGUFTensor(t.name, t.shape, t.type, t.offset, t.nbytes,
                                            buf[t.offset - lo:t.offset - lo + t.nbytes])

    def close(self) -> None:
        """Drop the tensor table and close the mapping and the file.

        Views taken from `tensor.data` that are still alive keep the mapping valid; it is
        released when the last of them goes away.
        """
        self.tensors = {}
        mm = getattr(self, "mm", None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # exported views still alive; the mapping goes with the last of them
        self.file.close()

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GGUFFile({self.path!r}, offset={self.offset}, version={self.version}, "
                f"{len(self.metadata)} keys, {len(self.tensors)} tensors)")


# --- typed metadata reads -----------------------------------------------------------------------

def expected_types(key: str) -> tuple[tuple[GGUFValueType, ...], ...] | None:
    """The GGUF types constants.METADATA_TYPES allows for `key` ("llama.block_count" is looked up
    as "{arch}.block_count"), or None for a key the runtime does not read."""
    if key in METADATA_TYPES:
        return METADATA_TYPES[key]
    _, _, rest = key.partition(".")
    return METADATA_TYPES.get("{arch}." + rest) if rest else None


def type_label(vtype: tuple[GGUFValueType, ...]) -> str:
    """(UINT32,) -> "UINT32"; (ARRAY, STRING) -> "ARRAY of STRING"."""
    return " of ".join(t.name for t in vtype)


_INTEGER_RANGES = {GGUFValueType.UINT8: (0, 2**8), GGUFValueType.INT8: (-2**7, 2**7),
                   GGUFValueType.UINT16: (0, 2**16), GGUFValueType.INT16: (-2**15, 2**15),
                   GGUFValueType.UINT32: (0, 2**32), GGUFValueType.INT32: (-2**31, 2**31),
                   GGUFValueType.UINT64: (0, 2**64), GGUFValueType.INT64: (-2**63, 2**63)}


def _python_value_fits(vtype: GGUFValueType, value: Any) -> bool:
    """Whether a plain Python value could have been read as `vtype` (metadata dicts made in code)."""
    if vtype in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[vtype]
        return isinstance(value, int) and not isinstance(value, bool) and low <= value < high
    if vtype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        return isinstance(value, float)
    if vtype == GGUFValueType.BOOL:
        return isinstance(value, bool)
    return isinstance(value, str)


def _python_fits(vtype: tuple[GGUFValueType, ...], value: Any) -> bool:
    if vtype[0] != GGUFValueType.ARRAY:
        return _python_value_fits(vtype[0], value)
    return isinstance(value, list) and all(_python_value_fits(vtype[1], v) for v in value)


def check_key_type(metadata: dict[str, Any], key: str) -> None:
    """Raise GGUFError unless `metadata[key]` (present) has a type the runtime reads it as.

    A Metadata knows each value's GGUF type: it must be one METADATA_TYPES lists, exactly (as
    llama.cpp's loader checks). A plain dict (made in code) is checked by Python type instead."""
    expected = expected_types(key)
    if expected is None:
        return
    want = " or ".join(type_label(t) for t in expected)
    found = getattr(metadata, "types", {}).get(key)
    if found is not None:
        if found not in expected:
            where = metadata.offsets.get(key)  # type: ignore[attr-defined]
            raise GGUFError(f"gguf: metadata key {_quote(key)} has type {type_label(found)}, "
                            f"expected {want}" + (f" (key at offset {where})" if where is not None
                                                  else ""))
    elif not any(_python_fits(t, metadata[key]) for t in expected):
        raise GGUFError(f"gguf: metadata key {_quote(key)} has a {type(metadata[key]).__name__} "
                        f"value, expected {want}")


def get_key(metadata: dict[str, Any], key: str, default: Any = None) -> Any:
    """`metadata[key]` after check_key_type, or `default` when the key is absent (or None)."""
    value = metadata.get(key)
    if value is None:
        return default
    check_key_type(metadata, key)
    return value


def check_metadata_types(metadata: dict[str, Any]) -> None:
    """check_key_type on every key of `metadata` the runtime reads."""
    for key in metadata:
        if metadata[key] is not None:
            check_key_type(metadata, key)
