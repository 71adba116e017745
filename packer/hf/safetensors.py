"""Safetensors files read without torch or the `safetensors` package: the format is an 8-byte
little-endian header length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]},
"__metadata__": {...}}, then the raw little-endian data (offsets relative to its start).

Every tensor is checked against its file when the header is read: a dtype this converter
reads, data_offsets inside the file, and shape x dtype size equal to the data's length. Data is
read per tensor (np.fromfile at its offset): memory holds one tensor at a time.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from packer.hf import HFError

#: dtype name -> numpy dtype of the stored element (BF16 as its raw 16 bits)
DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "I32": np.dtype("<i4")}
MAX_HEADER = 100 << 20   # the format's own limit on the JSON header


@dataclass(frozen=True)
class SafeTensor:
    name: str
    file: Path
    dtype: str           # a key of DTYPES
    shape: tuple[int, ...]
    offset: int          # absolute, in file
    nbytes: int

    def read(self) -> np.ndarray:
        """The tensor's elements (BF16 as uint16 bit patterns), shaped."""
        with open(self.file, "rb") as f:
            f.seek(self.offset)
            data = np.fromfile(f, DTYPES[self.dtype], math.prod(self.shape))
        if data.size != math.prod(self.shape):
            raise HFError(f"{self.file}: tensor {self.name!r} is truncated (the file got shorter while reading)")
        return data.reshape(self.shape)


def read_header(path: Path, allowed: tuple[str, ...] = ("F32", "F16", "BF16")) -> dict[str, SafeTensor]:
    """The tensors of one .safetensors file, by name, each checked against the file."""
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise HFError(f"{path}: truncated: not a safetensors file ({size} bytes)")
            n = int.from_bytes(head, "little")
            if n > MAX_HEADER or 8 + n > size:
                raise HFError(f"{path}: truncated or not a safetensors file (header of {n} bytes, file of {size})")
            raw = f.read(n)
    except FileNotFoundError:
        raise HFError(f"{path}: missing") from None
    try:
        header = json.loads(raw, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # (JSONDecodeError is a ValueError)
        raise HFError(f"{path}: bad safetensors header ({_reason(e)})") from None
    if not isinstance(header, dict):
        raise HFError(f"{path}: bad safetensors header (not a JSON object)")
    start = 8 + n
    out = {}
    for name, meta in header.items():
        if name != "__metadata__":
            out[name] = _tensor(path, name, meta, start, size, allowed)
    return out


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's pairs as a dict; a key given twice is an error (the format forbids it, and
    which entry would win is a guess)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} is given twice")
        out[key] = value
    return out


def _reason(e: Exception) -> str:
    return "nested too deeply" if isinstance(e, RecursionError) else str(e)


def _tensor(path: Path, name: str, meta, start: int, size: int, allowed: tuple[str, ...]) -> SafeTensor:
    try:
        dtype, shape, (lo, hi) = meta["dtype"], tuple(int(d) for d in meta["shape"]), meta["data_offsets"]
        lo, hi = int(lo), int(hi)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise HFError(f"{path}: tensor {name!r}: bad header entry {meta!r}") from None
    if dtype not in allowed:
        raise HFError(f"{path}: tensor {name!r} has dtype {dtype}, which is not supported (only "
                      f"{', '.join(allowed)})")
    if any(d < 0 for d in shape) or not 0 <= lo <= hi:
        raise HFError(f"{path}: tensor {name!r}: bad shape {list(shape)} or data offsets [{lo}, {hi}]")
    if start + hi > size:
        raise HFError(f"{path}: truncated: tensor {name!r} ends at byte {start + hi}, the file at {size}")
    if hi - lo != math.prod(shape) * DTYPES[dtype].itemsize:
        raise HFError(f"{path}: tensor {name!r}: {hi - lo} bytes of data for shape {list(shape)} {dtype}")
    return SafeTensor(name, path, dtype, shape, start + lo, hi - lo)


def checkpoint_tensors(folder: Path, allowed: tuple[str, ...] = ("F32", "F16", "BF16")) -> list[SafeTensor]:
    """Every tensor of the checkpoint in folder, in the order llama.cpp's converter visits them:
    the shard files sorted by name, each one's tensors sorted by name. With an index
    (model.safetensors.index.json), every shard it names must be there and hold what it says."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            assert isinstance(weight_map, dict) and all(isinstance(v, str) for v in weight_map.values())
        except (ValueError, KeyError, TypeError, AssertionError, RecursionError):
            raise HFError(f"{index}: no weight_map of tensor names to shard files in it") from None
        shards = sorted(set(weight_map.values()))
    elif (folder / "model.safetensors").is_file():
        weight_map, shards = None, ["model.safetensors"]
    else:
        shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
        if not shards:
            raise HFError(f"{folder}: no model.safetensors, model.safetensors.index.json or model-*.safetensors "
                          "(only safetensors checkpoints are read)")
        weight_map = None
    out: list[SafeTensor] = []
    where: dict[str, Path] = {}
    for shard in shards:
        path = folder / shard
        if not path.is_file():
            named = next(k for k, v in weight_map.items() if v == shard) if weight_map else "?"
            raise HFError(f"{path}: missing (model.safetensors.index.json puts tensor {named!r} in it)")
        tensors = read_header(path, allowed)
        for name in sorted(tensors):  # which copy is meant would be a guess
            if name in where:
                raise HFError(f"{path}: tensor {name!r} is also in {where[name].name}")
            where[name] = path
        out.extend(tensors[k] for k in sorted(tensors))
    if weight_map is not None:
        _check_index(index, weight_map, out)
    return out


def _check_index(index: Path, weight_map: dict[str, str], found: list[SafeTensor]) -> None:
    where = {t.name: t.file.name for t in found}
    for name, shard in weight_map.items():
        if where.get(name) != shard:
            raise HFError(f"{index.parent / shard}: tensor {name!r} is missing from it (named by {index.name})")
