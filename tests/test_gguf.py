"""Tests for runtime.gguf: the real SmolLM2 file against gguf-py's reader, and hostile files."""

from __future__ import annotations

import os
import shutil
import struct
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf.quants import quantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.constants import GGML_QUANT_SIZES, GGMLType, GGUFValueType
from runtime.gguf import GGUFError, GGUFFile

VT = GGUFValueType
FUZZ = settings(max_examples=150, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- a small valid file, written by gguf-py's GGUFWriter ---------------------------------------

SMALL_KVS: list[tuple[str, Any, VT, VT | None]] = [
    ("k.u8", 200, VT.UINT8, None),
    ("k.i8", -5, VT.INT8, None),
    ("k.u16", 65535, VT.UINT16, None),
    ("k.i16", -32768, VT.INT16, None),
    ("k.u32", 4_000_000_000, VT.UINT32, None),
    ("k.i32", -2_000_000_000, VT.INT32, None),
    ("k.f32", -2.25, VT.FLOAT32, None),
    ("k.bool", True, VT.BOOL, None),
    ("k.str", "héllo ✓ wörld", VT.STRING, None),
    ("k.u64", 2**64 - 1, VT.UINT64, None),
    ("k.i64", -(2**63), VT.INT64, None),
    ("k.f64", 1e300, VT.FLOAT64, None),
    ("k.i32s", [1, -2, 3, 2**31 - 1], VT.ARRAY, VT.INT32),
    ("k.f32s", [0.5, -1.5, 3.0], VT.ARRAY, VT.FLOAT32),
    ("k.bools", [True, False, True], VT.ARRAY, VT.BOOL),
    ("k.tokens", ["<s>", "", "Ġthe", "日本"], VT.ARRAY, VT.STRING),
    ("k.nested", [[1, 2], [3, 4, 5]], VT.ARRAY, None),
]
F32_DATA = np.arange(6, dtype=np.float32).reshape(2, 3)
Q8_DATA = quantize(np.linspace(-1, 1, 128, dtype=np.float32).reshape(2, 64),
                   gguf.GGMLQuantizationType.Q8_0)


def write_small_gguf(path: Path, alignment: int | None = 64) -> None:
    """Every value type, two tiny tensors (F32 and Q8_0), optional custom alignment."""
    w = gguf.GGUFWriter(str(path), "llama")
    for key, value, vtype, sub_type in SMALL_KVS:
        sub = None if sub_type is None else gguf.GGUFValueType(sub_type)
        w.add_key_value(key, value, gguf.GGUFValueType(vtype), sub_type=sub)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_tensor("blk.0.f32", F32_DATA)
    w.add_tensor("blk.0.q80", Q8_DATA, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def field_map(path: Path) -> dict[str, tuple[int, int]]:
    """'<key or tensor>/<field>' -> (offset, width), located by gguf-py's reader (an oracle)."""
    reader = gguf.GGUFReader(path)
    base = reader.data.__array_interface__["data"][0]

    def at(part: np.ndarray) -> tuple[int, int]:
        return part.__array_interface__["data"][0] - base, part.nbytes

    out = {"version": (4, 4), "tensor_count": (8, 8), "kv_count": (16, 8)}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        out[f"{key}/key_len"], out[f"{key}/key"], out[f"{key}/type"] = map(at, field.parts[:3])
        if field.types[0] == VT.ARRAY:
            out[f"{key}/elem_type"], out[f"{key}/count"] = map(at, field.parts[3:5])
        elif field.types[0] == VT.STRING:
            out[f"{key}/str_len"], out[f"{key}/value"] = map(at, field.parts[3:5])
        else:
            out[f"{key}/value"] = at(field.parts[3])
    for t in reader.tensors:
        labels = ("name_len", "name", "n_dims", "dims", "type", "offset")
        for label, part in zip(labels, t.field.parts, strict=True):
            out[f"{t.name}/{label}"] = at(part)
        off, _ = out[f"{t.name}/dims"]
        for j in range(len(t.shape)):
            out[f"{t.name}/dims{j}"] = (off + 8 * j, 8)
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict[str, tuple[int, int]]]:
    path = tmp_path_factory.mktemp("small") / "small.gguf"
    write_small_gguf(path)
    return path.read_bytes(), field_map(path)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "case.gguf"


def check(path: Path, data: bytes | None = None, offset: int = 0) -> GGUFError | None:
    """Parse (after writing `data`); None if it parsed, else the GGUFError. Anything else fails."""
    if data is not None:
        path.write_bytes(data)
    try:
        with GGUFFile(path, offset) as g:
            for t in g.tensors.values():  # touch both ends of every view
                assert t.data.size == t.nbytes
                _ = int(t.data[0]) + int(t.data[-1])
    except GGUFError as e:
        message = str(e)
        assert "\n" not in message and message.startswith("gguf: "), message
        return e
    return None


def expect_error(path: Path, data: bytes, offset: int = 0) -> str:
    err = check(path, data, offset)
    assert err is not None, "hostile file parsed without error"
    assert "offset" in str(err), str(err)
    return str(err)


def patch(data: bytes, where: tuple[int, int], value: int | bytes) -> bytes:
    """Overwrite a little-endian field (or raw bytes) at `where` = (offset, width)."""
    off, width = where
    raw = value if isinstance(value, bytes) else value.to_bytes(width, "little")
    return data[:off] + raw + data[off + len(raw):]


# --- constants --------------------------------------------------------------------------------

# gguf-py 0.19.0 lists Q8_1 as (32, 4 + 4 + 32) from before ggml's switch to fp16 d and s;
# ggml-common.h has static_assert(sizeof(block_q8_1) == 2*sizeof(ggml_half) + QK8_1) == 36.
KNOWN_GGUF_PY_DIFFERENCES = {GGMLType.Q8_1: ((32, 36), (32, 40))}


def test_type_table_matches_gguf_package() -> None:
    for t in GGMLType:
        ref = gguf.GGMLQuantizationType(int(t))
        assert ref.name == t.name
        if t in KNOWN_GGUF_PY_DIFFERENCES:
            ours, theirs = KNOWN_GGUF_PY_DIFFERENCES[t]
            assert (GGML_QUANT_SIZES[t], gguf.GGML_QUANT_SIZES[ref]) == (ours, theirs)
            continue
        assert GGML_QUANT_SIZES[t] == gguf.GGML_QUANT_SIZES[ref], t.name
    assert set(GGML_QUANT_SIZES) == set(GGMLType)
    assert {v.name: int(v) for v in VT} == {v.name: int(v) for v in gguf.GGUFValueType}


# --- the small file ---------------------------------------------------------------------------

def test_small_file_values(small: tuple[bytes, Any], scratch: Path) -> None:
    scratch.write_bytes(small[0])
    with GGUFFile(scratch) as g:
        assert g.version == 3 and g.alignment == 64 and g.offset == 0
        expected = {key: value for key, value, _, _ in SMALL_KVS}
        expected |= {"general.architecture": "llama", "general.alignment": 64}
        assert g.metadata == expected
        assert g.value_types["k.f32s"] == (VT.ARRAY, VT.FLOAT32)
        assert g.value_types["k.nested"] == (VT.ARRAY, VT.ARRAY)
        assert g.value_types["k.u64"] == (VT.UINT64,)
        f32, q8 = g.tensors["blk.0.f32"], g.tensors["blk.0.q80"]
        assert list(g.tensors) == ["blk.0.f32", "blk.0.q80"]
        assert (f32.shape, f32.type, f32.n_elements, f32.nbytes) == ((2, 3), GGMLType.F32, 6, 24)
        assert (q8.shape, q8.type, q8.n_elements, q8.nbytes) == ((2, 64), GGMLType.Q8_0, 128, 136)
        assert f32.data.tobytes() == F32_DATA.tobytes() and q8.data.tobytes() == Q8_DATA.tobytes()
        assert g.data_offset % 64 == 0 and f32.offset == g.data_offset and q8.offset % 64 == 0
        assert not f32.data.flags.writeable


def test_default_alignment_and_version_2(tmp_path: Path) -> None:
    path = tmp_path / "a.gguf"
    write_small_gguf(path, alignment=None)
    with GGUFFile(path) as g:
        assert g.alignment == 32 and g.data_offset % 32 == 0
    path.write_bytes(patch(path.read_bytes(), (4, 4), 2))
    with GGUFFile(path) as g:
        assert g.version == 2 and g.tensors["blk.0.q80"].data.tobytes() == Q8_DATA.tobytes()


def test_close_with_live_views(small: tuple[bytes, Any], scratch: Path) -> None:
    scratch.write_bytes(small[0])
    g = GGUFFile(scratch)
    view = g.tensors["blk.0.f32"].data
    g.close()  # a live view keeps the mapping; close must not raise
    assert view.tobytes() == F32_DATA.tobytes() and g.file.closed and g.tensors == {}
    with GGUFFile(scratch) as g2:
        pass
    assert g2.mm.closed and g2.file.closed


def test_deep_nesting_is_bounded(scratch: Path) -> None:
    depth = 5000  # would overflow Python's stack without the bound
    value = struct.pack("<IQ", VT.ARRAY, 1) * depth + struct.pack("<IQ", VT.UINT8, 0)
    kv = struct.pack("<Q", 1) + b"k" + struct.pack("<I", VT.ARRAY) + value
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv
    assert "nested" in expect_error(scratch, data)
    shallow = struct.pack("<IQ", VT.ARRAY, 1) * 2 + struct.pack("<IQ", VT.UINT8, 1) + b"\x07"
    ok = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv[:13] + shallow
    scratch.write_bytes(ok)
    with GGUFFile(scratch) as g:
        assert g.metadata == {"k": [[[7]]]} and g.tensors == {}


# --- open errors ------------------------------------------------------------------------------

def test_open_errors(tmp_path: Path, small: tuple[bytes, Any]) -> None:
    with pytest.raises(GGUFError, match="cannot open .*No such file or directory"):
        GGUFFile(tmp_path / "missing.gguf")
    with pytest.raises(GGUFError, match="cannot open"):
        GGUFFile(tmp_path)
    path = tmp_path / "x.gguf"
    for data, pattern in [(b"", "empty"), (b"GGU", "magic at offset 0 runs past end"),
                          (b"GGUF\x03\x00", "version at offset 4 runs past end"),
                          (b"GGUX" + bytes(20), r"bad magic b'GGUX' at offset 0")]:
        with pytest.raises(GGUFError, match=pattern):
            path.write_bytes(data)
            GGUFFile(path)
    path.write_bytes(small[0])
    for offset in (len(small[0]), 10**12, -1):
        with pytest.raises(GGUFError, match="offset"):
            GGUFFile(path, offset)


# --- lying fields -----------------------------------------------------------------------------

LIES: list[tuple[str, int]] = [
    ("version", 1), ("version", 4), ("version", 0), ("version", 0x03000000),
    ("tensor_count", 2**63), ("tensor_count", 2**64 - 1), ("tensor_count", 10**9),
    ("kv_count", 2**63), ("kv_count", 2**64 - 1), ("kv_count", 10**9),
    ("k.str/key_len", 2**64 - 1), ("k.str/key_len", 2**63), ("k.str/key_len", 10**6),
    ("k.str/str_len", 2**64 - 1), ("k.str/str_len", 10**6),
    ("k.u8/type", 13), ("k.u8/type", 2**32 - 1),
    ("k.tokens/elem_type", 13), ("k.tokens/count", 2**64 - 1), ("k.tokens/count", 2**61),
    ("k.tokens/count", 10**5), ("k.i32s/count", 2**62), ("k.i32s/count", 10**6),
    ("k.nested/count", 2**63), ("k.f64/type", VT.ARRAY),
    ("general.alignment/value", 0), ("general.alignment/value", 3),
    ("general.alignment/value", 48), ("general.alignment/type", VT.INT32),
    ("blk.0.q80/name_len", 2**64 - 1), ("blk.0.q80/n_dims", 0), ("blk.0.q80/n_dims", 5),
    ("blk.0.q80/n_dims", 2**32 - 1), ("blk.0.q80/dims0", 0), ("blk.0.q80/dims0", 2**63),
    ("blk.0.q80/dims0", 2**64 - 1), ("blk.0.q80/dims0", 33), ("blk.0.q80/dims1", 2**62),
    ("blk.0.q80/dims1", 10**6), ("blk.0.q80/type", 4), ("blk.0.q80/type", 31),
    ("blk.0.q80/type", 99), ("blk.0.q80/type", 2**32 - 1), ("blk.0.q80/offset", 1),
    ("blk.0.q80/offset", 32), ("blk.0.q80/offset", 0), ("blk.0.q80/offset", 4096),
    ("blk.0.q80/offset", 2**64 - 64), ("blk.0.f32/offset", 64),
]


@pytest.mark.parametrize("field,value", LIES, ids=[f"{f}={v}" for f, v in LIES])
def test_lying_field_is_an_error(small: tuple[bytes, Any], scratch: Path,
                                 field: str, value: int) -> None:
    data, fields = small
    expect_error(scratch, patch(data, fields[field], value))


def test_byte_edits_are_errors(small: tuple[bytes, Any], scratch: Path) -> None:
    data, fields = small
    name_off, _ = fields["blk.0.q80/name"]
    dup_name = patch(data, (name_off, 9), b"blk.0.f32")
    assert "duplicate tensor name" in expect_error(scratch, dup_name)
    key_off, _ = fields["k.i8/key"]
    assert "duplicate key" in expect_error(scratch, patch(data, (key_off, 4), b"k.u8"))
    assert "UTF-8" in expect_error(scratch, patch(data, (key_off, 1), b"\xff"))
    str_off, _ = fields["k.str/value"]
    assert "UTF-8" in expect_error(scratch, patch(data, (str_off + 2, 1), b"\xc3"))
    tok_off = data.index("日本".encode())
    assert "UTF-8" in expect_error(scratch, patch(data, (tok_off, 1), b"\x80"))
    assert "magic" in expect_error(scratch, patch(data, (0, 4), b"GGML"))


def test_lies_that_may_parse(small: tuple[bytes, Any], scratch: Path) -> None:
    """One count too many reads later fields as entries: an error or (never) a crash."""
    data, fields = small
    for field in ("tensor_count", "kv_count"):
        value = int.from_bytes(data[fields[field][0]:][:8], "little")
        for lie in (value + 1, value - 1, 0):
            check(scratch, patch(data, fields[field], lie))


# --- fuzzing ----------------------------------------------------------------------------------

def test_truncation_at_every_offset(small: tuple[bytes, Any], scratch: Path) -> None:
    data = small[0]
    scratch.write_bytes(data)
    with GGUFFile(scratch) as g:
        end = max(t.offset + t.nbytes for t in g.tensors.values())
    for cut in range(len(data)):
        err = check(scratch, data[:cut])
        assert (err is not None) == (cut < end), cut
        assert err is None or "offset" in str(err)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1,
                      max_size=8))
def test_random_bytes(small: tuple[bytes, Any], scratch: Path,
                      edits: list[tuple[int, int]]) -> None:
    data = bytearray(small[0])
    for pos, byte in edits:
        data[pos % len(data)] = byte
    check(scratch, bytes(data))


@FUZZ
@given(bits=st.lists(st.integers(0, 10**7), min_size=1, max_size=4))
def test_random_bit_flips(small: tuple[bytes, Any], scratch: Path, bits: list[int]) -> None:
    data = bytearray(small[0])
    for bit in bits:
        bit %= 8 * len(data)
        data[bit // 8] ^= 1 << (bit % 8)
    check(scratch, bytes(data))


LIE_VALUES = st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 31, 32, 63, 64, 255, 2**31,
                              2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1])


@FUZZ
@given(data=st.data())
def test_random_lying_fields(small: tuple[bytes, Any], scratch: Path, data: st.DataObject) -> None:
    raw, fields = small
    names = sorted(k for k in fields if not k.endswith(("/key", "/name", "/value", "/dims")))
    field = data.draw(st.sampled_from(names))
    off, width = fields[field]
    value = data.draw(LIE_VALUES | st.integers(0, 2 ** (8 * width) - 1)) % 2 ** (8 * width)
    check(scratch, patch(raw, (off, width), value))


# --- the real model ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real(smollm2_path: Path) -> Iterator[GGUFFile]:
    g = GGUFFile(smollm2_path)
    yield g
    g.close()


def test_real_model_matches_gguf_reader(real: GGUFFile, smollm2_path: Path) -> None:
    ref = gguf.GGUFReader(smollm2_path)
    assert real.metadata["general.architecture"] == "llama"
    assert len(real.tensors) == 272
    assert {t.type for t in real.tensors.values()} <= {GGMLType.F32, GGMLType.Q4_1, GGMLType.Q8_0}
    assert Counter(t.type for t in real.tensors.values()) == Counter(
        int(t.tensor_type) for t in ref.tensors)
    assert (real.alignment, real.data_offset, real.version) == (ref.alignment, ref.data_offset, 3)

    fields = {k: f for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert list(real.metadata) == list(fields)
    for key, field in fields.items():
        assert real.metadata[key] == field.contents(), key
        assert real.value_types[key] == tuple(field.types[:2]), key

    assert list(real.tensors) == [t.name for t in ref.tensors]
    for t in ref.tensors:
        ours = real.tensors[t.name]
        assert ours.shape == tuple(reversed(t.shape.tolist())), t.name  # gguf-py: ggml order
        assert (ours.type, ours.nbytes, ours.n_elements) == (t.tensor_type, t.n_bytes, t.n_elements)
        assert ours.offset == t.data_offset
        assert np.array_equal(ours.data, t.data.reshape(-1).view(np.uint8)), t.name


def test_real_model_parse_time(smollm2_path: Path) -> None:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        GGUFFile(smollm2_path).close()
        best = min(best, time.perf_counter() - start)
    assert best < 0.5, f"parsing took {best:.3f} s"


@pytest.mark.parametrize("junk", [65536, 12345])
def test_real_model_at_offset(real: GGUFFile, smollm2_path: Path, tmp_path: Path,
                              junk: int) -> None:
    path = tmp_path / "packed.bin"
    with open(path, "wb") as out, open(smollm2_path, "rb") as src:
        out.write(os.urandom(junk))
        shutil.copyfileobj(src, out)
    with GGUFFile(path, offset=junk) as g:
        assert g.offset == junk and g.data_offset == real.data_offset + junk
        assert g.metadata == real.metadata
        assert list(g.tensors) == list(real.tensors)
        for name, t in g.tensors.items():
            r = real.tensors[name]
            assert (t.shape, t.type, t.nbytes, t.offset) == (r.shape, r.type, r.nbytes,
                                                             r.offset + junk)
            assert np.array_equal(t.data, r.data), name
    with pytest.raises(GGUFError, match="bad magic"):
        GGUFFile(path, offset=0)


def test_real_model_truncated(real: GGUFFile, smollm2_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    shutil.copyfile(smollm2_path, path)
    size = path.stat().st_size
    tokens_mid = real.data_offset // 3  # inside the tokenizer arrays
    cuts = [size - 1, real.data_offset + 100, real.data_offset - 1, tokens_mid, 1000, 24, 3]
    for cut in cuts:  # descending: truncate the same copy further each time
        os.truncate(path, cut)
        err = check(path)
        assert err is not None and "offset" in str(err), cut


# --- typed metadata reads (get_key): the types llama.cpp's loader requires ----------------------

def test_metadata_type_table_uses_gguf_key_names() -> None:
    """Every key the type table checks is spelled as gguf-py (the converters) writes it."""
    from runtime.constants import METADATA_TYPES
    names = {v for group in vars(gguf.Keys).values() if isinstance(group, type)
             for v in vars(group).values() if isinstance(v, str)}
    assert sorted(k for k in METADATA_TYPES if k not in names) == []


def test_expected_types_by_architecture() -> None:
    from runtime.gguf import expected_types
    assert expected_types("llama.block_count") == expected_types("qwen2.block_count") == ((VT.UINT32,),)
    assert expected_types("tokenizer.ggml.scores") == ((VT.ARRAY, VT.FLOAT32),)
    assert expected_types("general.name") == ((VT.STRING,),)
    assert expected_types("k.u8") is None and expected_types("nodot") is None


def test_get_key_checks_the_file_type(tmp_path: Path) -> None:
    """A key of the wrong GGUF type: a one-line GGUFError naming the key, both types and its
    offset; the right type reads; an absent key gives the default; unknown keys are unchecked."""
    from runtime.gguf import check_metadata_types, get_key
    path = tmp_path / "typed.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_key_value("llama.context_length", 512, gguf.GGUFValueType.UINT32)
    w.add_key_value("llama.block_count", "2", gguf.GGUFValueType.STRING)
    w.add_key_value("tokenizer.ggml.scores", [1.0, 2.0], gguf.GGUFValueType.ARRAY,
                    sub_type=gguf.GGUFValueType.FLOAT64)
    w.add_key_value("k.anything", 1.5, gguf.GGUFValueType.FLOAT64)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    with GGUFFile(path) as f:
        md = f.metadata
        assert get_key(md, "llama.context_length") == 512 and get_key(md, "k.anything") == 1.5
        assert get_key(md, "llama.embedding_length", 7) == 7
        offset = md.offsets["llama.block_count"]
        with pytest.raises(GGUFError, match=f"'llama.block_count' has type STRING, expected UINT32 "
                                            rf"\(key at offset {offset}\)"):
            get_key(md, "llama.block_count")
        with pytest.raises(GGUFError, match="'tokenizer.ggml.scores' has type ARRAY of FLOAT64, "
                                            "expected ARRAY of FLOAT32"):
            get_key(md, "tokenizer.ggml.scores")
        with pytest.raises(GGUFError, match="llama.block_count"):
            check_metadata_types(md)
        assert md["llama.block_count"] == "2"  # plain dict reads are unchanged


@pytest.mark.parametrize("key, value", [
    ("llama.block_count", True), ("llama.block_count", -1), ("llama.block_count", 2**32),
    ("llama.block_count", 2.0), ("llama.rope.freq_base", 10000), ("tokenizer.ggml.add_bos_token", 1),
    ("tokenizer.ggml.scores", [0.0, 1]), ("tokenizer.ggml.tokens", "abc"), ("tokenizer.ggml.tokens", ["a", 1]),
    ("tokenizer.ggml.token_type", [1, 2**32]),
])
def test_get_key_on_a_plain_dict_checks_the_python_type(key: str, value: Any) -> None:
    """Metadata made in code (no GGUF types): the value must be one the GGUF type could hold."""
    from runtime.gguf import get_key
    with pytest.raises(GGUFError, match=key.replace(".", r"\.")):
        get_key({key: value}, key)


def test_get_key_on_a_plain_dict_accepts_good_values() -> None:
    from runtime.gguf import get_key
    md = {"llama.block_count": 2**32 - 1, "llama.rope.freq_base": 1e4, "tokenizer.ggml.token_type": [-1, 6],
          "tokenizer.ggml.tokens": ["a", ""], "tokenizer.ggml.model": None}
    assert [get_key(md, k, "dflt") for k in md] == [2**32 - 1, 1e4, [-1, 6], ["a", ""], "dflt"]


def test_load_into_memory_copies_every_tensor_off_the_mapping(smollm2_path) -> None:
    """GGUFFile.load_into_memory (--no-mmap): each tensor's bytes as mapped, in memory that is not
    the file mapping, the first one 2 MiB aligned (for the huge pages), the rest at their offsets."""
    mapped = GGUFFile(smollm2_path)
    f = GGUFFile(smollm2_path)
    f.load_into_memory()
    try:
        assert f.tensors.keys() == mapped.tensors.keys()
        mm = np.frombuffer(f.mm, dtype=np.uint8)
        first = min(f.tensors.values(), key=lambda t: t.offset)
        assert first.data.ctypes.data % (2 << 20) == 0
        for name, t in f.tensors.items():
            assert np.array_equal(t.data, mapped.tensors[name].data), name
            assert not np.shares_memory(t.data, mm), name
            assert t.data.ctypes.data - first.data.ctypes.data == t.offset - first.offset
        del mm
    finally:
        f.close()
        mapped.close()


@pytest.mark.skipif(not Path("/proc/self/smaps").exists() or not Path("/sys/kernel/mm/transparent_hugepage").exists(),
                    reason="Linux with transparent huge pages: the mapping's flags in /proc")
def test_the_file_mapping_asks_for_huge_pages(smollm2_path) -> None:
    """The weights' mapping carries MADV_HUGEPAGE ("hg" in its VmFlags): where the file system caches
    files in large folios, its pages are then read and mapped 2 MiB at a time."""
    f = GGUFFile(smollm2_path)
    try:
        addr = np.frombuffer(f.mm, dtype=np.uint8).ctypes.data
        flags, inside = None, False
        for line in Path("/proc/self/smaps").read_text().splitlines():
            head = line.split()[0] if line.strip() else ""
            if "-" in head and ":" not in head:
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= addr < hi
            elif inside and head == "VmFlags:":
                flags = line.split()[1:]
        assert flags is not None and "hg" in flags, flags
    finally:
        f.close()
