"""Crafting the ZIP at the end of a packed file, for the tests of broken and hostile files.

A packed file ends with [ZIP central directory][zip64 end records][end record]; these helpers
rewrite that tail (the bytes before it stay), so a test can give the launcher any offset, size
or count it likes, and write small aligned ZIPs with a deflated `.args` of its choosing.
"""
from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

from runtime.payload import (
    ALIGNMENT, CDIR, CDIR_SIG, EOCD, EOCD64, EOCD64_LOC, EOCD64_LOC_SIG, EOCD64_SIG, EOCD_SIG, U16_MAX, U32_MAX,
    ZIP64_EXTRA_ID, ZipEntry, find_end, read_zip,
)


def entries_and_end(path: Path) -> tuple[list[ZipEntry], int]:
    """The file's entries and where its central directory starts."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        return read_zip(f, size), find_end(f, size).cd_offset


def central(e: ZipEntry, zip64: bool = False, **over: int) -> bytes:
    """A central directory header for e; zip64=True saturates the 32-bit size and offset slots and
    puts the values in a zip64 extra field. Keyword arguments override fields (size,
    compressed_size, header_offset, crc, method, n_comment)."""
    v = {"size": e.size, "compressed_size": e.compressed_size, "header_offset": e.header_offset, "crc": e.crc,
         "method": e.method, "n_comment": 0, **over}
    name = e.name.encode()
    if zip64:
        extra = struct.pack("<HHQQQ", ZIP64_EXTRA_ID, 24, v["size"], v["compressed_size"], v["header_offset"])
        usize = csize = lho = U32_MAX
    else:
        extra, usize, csize, lho = b"", v["size"], v["compressed_size"], v["header_offset"]
    return CDIR.pack(CDIR_SIG, 0x32D, 45, 0, v["method"], 0, 0x21, v["crc"], csize, usize, len(name), len(extra),
                     v["n_comment"], 0, 0, 0, lho) + name + extra


def end_records(cd_at: int, cd: bytes, n: int, zip64: bool = False, **over: int) -> bytes:
    """End records for a directory cd written at cd_at; zip64=True adds the zip64 record and locator
    with the values, the end record's slots saturated. Overrides: cd_offset, cd_size, count, rec_at,
    disk_count (the entries on this disk; default count)."""
    v = {"cd_offset": cd_at, "cd_size": len(cd), "count": n, "rec_at": cd_at + len(cd), **over}
    if not zip64:
        return EOCD.pack(EOCD_SIG, 0, 0, v.get("disk_count", v["count"]), v["count"], v["cd_size"], v["cd_offset"], 0)
    rec = EOCD64.pack(EOCD64_SIG, EOCD64.size - 12, 0x32D, 45, 0, 0, v["count"], v["count"], v["cd_size"],
                      v["cd_offset"])
    loc = EOCD64_LOC.pack(EOCD64_LOC_SIG, 0, v["rec_at"], 1)
    return rec + loc + EOCD.pack(EOCD_SIG, 0, 0, U16_MAX, U16_MAX, U32_MAX, U32_MAX, 0)


def set_tail(path: Path, cd_at: int, tail: bytes) -> None:
    """path's bytes up to cd_at, then tail."""
    os.truncate(path, cd_at)
    with open(path, "ab") as f:
        f.write(tail)


def zip64_tail(path: Path) -> bytes:
    """path's own directory rewritten in zip64 form (every size and offset in zip64 extras, zip64 end
    records): the same entries, read through the zip64 paths."""
    entries, cd_at = entries_and_end(path)
    cd = b"".join(central(e, zip64=True) for e in entries)
    return cd + end_records(cd_at, cd, len(entries), zip64=True)


def aligned_zip(path: Path, prefix: bytes, args: tuple[bytes, int] | None, gguf_name: str, gguf: bytes) -> Path:
    """prefix, then a ZIP with `.args` (data, compression method) and a stored GGUF whose data is
    ALIGNMENT-aligned (padding in its extra field), written by the stdlib."""
    path.write_bytes(prefix)
    with zipfile.ZipFile(path, "a") as z:
        if args is not None:
            z.writestr(".args", args[0], compress_type=args[1])
        info = zipfile.ZipInfo(gguf_name, (2024, 1, 1, 0, 0, 0))
        at = z.fp.tell() + 30 + len(gguf_name.encode()) + 4  # data offset with an empty padding record
        pad = -at % ALIGNMENT
        info.extra = struct.pack("<HH", 0xD935, pad) + bytes(pad)
        z.writestr(info, gguf, compress_type=zipfile.ZIP_STORED)
    return path


def patch_sizes(path: Path, name: str, size: int) -> None:
    """Sets the uncompressed size of entry `name` to size in both its headers (CRC left alone):
    a file whose directory lies about how much an entry inflates to."""
    entries, cd_at = entries_and_end(path)
    e = next(e for e in entries if e.name == name)
    with open(path, "r+b") as f:
        f.seek(e.header_offset + 22)
        f.write(struct.pack("<I", size))
        pos = cd_at
        for other in entries:  # the central headers, in order
            f.seek(pos)
            fields = CDIR.unpack(f.read(CDIR.size))
            if other.name == name:
                f.seek(pos + 24)
                f.write(struct.pack("<I", size))
            pos += CDIR.size + sum(fields[10:13])  # name, extra, comment
