"""The PyInstaller archive (CArchive) at the back of a one-file runtime, read with the stdlib.

A one-file executable is [bootloader][archive: entries, table of contents][cookie]. The
88-byte cookie (all integers big-endian)::

    char magic[8] "MEI\\014\\013\\012\\013\\016" | u32 pkg_length | u32 toc_offset | u32 toc_length
    u32 python_version | char python_libname[64]

On every start the bootloader scans the executable back to front for the magic, then takes
`package start = cookie end - pkg_length`; the table of contents and every entry offset are
relative to that start. So a cookie written anywhere later in the file works, as long as its
pkg_length reaches back to the archive (a 32-bit field: at most 4 GiB back) or a whole copy
of the archive sits right before it. packer/build.py uses this to keep the scan short.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass

MAGIC = b"MEI\014\013\012\013\016"
COOKIE = struct.Struct("!8sIIII64s")   # 88 bytes
TOC_ENTRY = struct.Struct("!IIIIBc")   # entry length, offset, length, uncompressed length, compressed, type
INFO_NAME = "llamapack-runtime.json"   # written by packer/llamapack-runtime.spec
SCAN_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """Not a PyInstaller one-file executable (or a damaged one); one line."""


@dataclass(frozen=True)
class Archive:
    start: int          # absolute offset of the package start
    cookie_at: int      # absolute offset of the cookie
    toc_offset: int     # relative to start
    toc_length: int
    python_version: int  # e.g. 311
    python_lib: str

    @property
    def end(self) -> int:
        return self.cookie_at + COOKIE.size

    @property
    def length(self) -> int:
        return self.end - self.start

    def cookie(self, cookie_at: int | None = None) -> bytes:
        """This archive's cookie, rewritten to sit at cookie_at (its pkg_length reaching back here)."""
        at = self.cookie_at if cookie_at is None else cookie_at
        length = at + COOKIE.size - self.start
        if not 0 < length < 1 << 32:
            raise ArchiveError(f"a cookie at offset {at} cannot reach the archive at {self.start} (32-bit length)")
        return COOKIE.pack(MAGIC, length, self.toc_offset, self.toc_length, self.python_version,
                           self.python_lib.encode())


def find_cookie(f, end: int, stop: int = 0) -> int:
    """Absolute offset of the last cookie magic in f[stop:end], scanning back as the bootloader does; -1 if none."""
    pos = end
    while pos > stop:
        lo = max(stop, pos - SCAN_CHUNK)
        f.seek(lo)
        chunk = f.read(pos - lo + len(MAGIC) - 1 if pos < end else pos - lo)
        i = chunk.rfind(MAGIC)
        if i >= 0:
            return lo + i
        pos = lo
    return -1


def read_archive(f, end: int, stop: int = 0) -> Archive:
    """The archive whose cookie is the last one in f[stop:end]."""
    at = find_cookie(f, end, stop)
    if at < 0:
        raise ArchiveError("no PyInstaller archive (cookie) found: not a one-file runtime")
    f.seek(at)
    raw = f.read(COOKIE.size)
    if len(raw) < COOKIE.size:
        raise ArchiveError(f"truncated PyInstaller cookie at offset {at}")
    _, length, toc_offset, toc_length, pyver, pylib = COOKIE.unpack(raw)
    start = at + COOKIE.size - length
    if start < 0 or toc_offset + toc_length > length:
        raise ArchiveError(f"damaged PyInstaller cookie at offset {at}")
    return Archive(start, at, toc_offset, toc_length, pyver, pylib.rstrip(b"\0").decode("utf-8", "replace"))


def read_toc(f, arc: Archive) -> dict[str, tuple[int, int, int, int, str]]:
    """name -> (offset from start, length, uncompressed length, compressed flag, type code)."""
    f.seek(arc.start + arc.toc_offset)
    data = f.read(arc.toc_length)
    toc, pos = {}, 0
    while pos + TOC_ENTRY.size <= len(data):
        n, off, length, ulen, cflag, typ = TOC_ENTRY.unpack_from(data, pos)
        if n < TOC_ENTRY.size:
            raise ArchiveError("damaged PyInstaller table of contents")
        name = data[pos + TOC_ENTRY.size:pos + n].rstrip(b"\0").decode("utf-8", "replace")
        toc[name] = (off, length, ulen, cflag, typ.decode("ascii", "replace"))
        pos += n
    return toc


def runtime_info(path: str | os.PathLike[str], end: int | None = None) -> dict[str, str]:
    """The facts the spec recorded in the runtime (version, platform, ...); {} when absent."""
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size if end is None else end
        arc = read_archive(f, end)
        entry = read_toc(f, arc).get(INFO_NAME)
        if entry is None:
            return {}
        off, length, _, cflag, _ = entry
        if length > 1 << 20:  # a few hundred bytes of JSON: anything larger is damage, not facts
            return {}
        f.seek(arc.start + off)
        raw = f.read(length)
    try:
        return json.loads(zlib.decompress(raw) if cflag else raw)
    except (ValueError, zlib.error):
        return {}
