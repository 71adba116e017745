"""ZIP records for a packed file, written at absolute offsets (APPNOTE.TXT 4.3 and 4.5).

Only what a packed file needs: stored entries, zip64 when a size or an offset passes 32 bits,
a central directory and end records at the very end, whose comment holds the CRC-32s of the
parts ZIP itself does not check (see "checksums" below). The record layouts are shared with the
reader in runtime/launcher.py.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from runtime.launcher import (
    CDIR, CDIR_SIG, EOCD, EOCD64, EOCD64_LOC, EOCD64_LOC_SIG, EOCD64_SIG, EOCD_SIG, LOCAL, LOCAL_SIG, U16_MAX,
    U32_MAX, ZIP64_EXTRA_ID,
)

MADE_BY = (3 << 8) | 45        # Unix, spec 4.5
FILE_MODE = 0o100644 << 16     # regular file, rw-r--r--
UTF8_FLAG = 0x800


def dos_time(mtime: float) -> tuple[int, int]:
    """(time, date) in MS-DOS format, local time, clamped to 1980..2107."""
    t = time.localtime(mtime)
    year = min(max(t.tm_year, 1980), 2107)
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), ((year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday


@dataclass
class Entry:
    """A stored entry: the name, its size, where its local header goes, and (once known) its CRC."""
    name: str
    size: int
    header_offset: int
    mtime: float
    crc: int = 0

    @property
    def raw_name(self) -> bytes:
        return self.name.encode("utf-8")

    @property
    def flags(self) -> int:
        return 0 if self.name.isascii() else UTF8_FLAG

    @property
    def zip64_size(self) -> bool:
        return self.size >= U32_MAX

    @property
    def local_size(self) -> int:
        """Bytes of the local header: the data starts this far after header_offset."""
        return LOCAL.size + len(self.raw_name) + (20 if self.zip64_size else 0)

    @property
    def data_offset(self) -> int:
        return self.header_offset + self.local_size

    def local_header(self) -> bytes:
        t, d = dos_time(self.mtime)
        if self.zip64_size:  # sizes in the zip64 extra field; the 32-bit slots say so
            extra = struct.pack("<HHQQ", ZIP64_EXTRA_ID, 16, self.size, self.size)
            size32, version = U32_MAX, 45
        else:
            extra, size32, version = b"", self.size, 20
        return LOCAL.pack(LOCAL_SIG, version, self.flags, 0, t, d, self.crc, size32, size32,
                          len(self.raw_name), len(extra)) + self.raw_name + extra

    def central_header(self) -> bytes:
        t, d = dos_time(self.mtime)
        big = []  # zip64 extra values, in the order the spec fixes: size, compressed size, offset
        size32 = offset32 = None
        if self.zip64_size:
            big += [self.size, self.size]
            size32 = U32_MAX
        if self.header_offset >= U32_MAX:
            big.append(self.header_offset)
            offset32 = U32_MAX
        extra = struct.pack(f"<HH{len(big)}Q", ZIP64_EXTRA_ID, 8 * len(big), *big) if big else b""
        version = 45 if big else 20
        return CDIR.pack(CDIR_SIG, MADE_BY, version, self.flags, 0, t, d, self.crc,
                         self.size if size32 is None else size32, self.size if size32 is None else size32,
                         len(self.raw_name), len(extra), 0, 0, 0, FILE_MODE,
                         self.header_offset if offset32 is None else offset32) + self.raw_name + extra


def end_records(cd_offset: int, cd_size: int, count: int, comment_size: int = 0) -> bytes:
    """The zip64 end record and locator when needed, then the end record (announcing a comment of
    comment_size bytes, written after it); written right after the directory."""
    out = b""
    if cd_offset >= U32_MAX or cd_size >= U32_MAX or count >= U16_MAX:
        rec_at = cd_offset + cd_size
        out += EOCD64.pack(EOCD64_SIG, EOCD64.size - 12, MADE_BY, 45, 0, 0, count, count, cd_size, cd_offset)
        out += EOCD64_LOC.pack(EOCD64_LOC_SIG, 0, rec_at, 1)
        cd_offset, cd_size, count = min(cd_offset, U32_MAX), min(cd_size, U32_MAX), min(count, U16_MAX)
    return out + EOCD.pack(EOCD_SIG, 0, 0, count, count, cd_size, cd_offset, comment_size)


# -- checksums -------------------------------------------------------------------------------
#
# ZIP's CRCs cover the entries' data only. The rest of a packed file (the runtime before the
# entries, the tail before the directory, the directory and end records themselves) gets
# CRC-32s of its own, in the end record's comment, for `packer verify`:
#
#     llamapack crc32 runtime=XXXXXXXX headers=XXXXXXXX tail=XXXXXXXX directory=XXXXXXXX
#
# runtime: bytes [0, first local header); headers: the bytes between the entries' data (local
# headers, the zeros before the aligned GGUF), in file order; tail: [end of the last entry's
# data, directory); directory: [directory, end of the end record's fixed part), the comment's
# length included. With the entries' own CRCs, every byte of the file is covered.

CHECKSUM_PARTS = ("runtime", "headers", "tail", "directory")
_CHECKSUM_PREFIX = b"llamapack crc32"


def checksum_comment(**crcs: int) -> bytes:
    """The comment for the CRCs of CHECKSUM_PARTS; always CHECKSUM_COMMENT_SIZE bytes, so that the
    directory's CRC can cover the comment's length."""
    return _CHECKSUM_PREFIX + b"".join(b" %s=%08x" % (k.encode(), crcs[k]) for k in CHECKSUM_PARTS)


CHECKSUM_COMMENT_SIZE = len(checksum_comment(**dict.fromkeys(CHECKSUM_PARTS, 0)))


def read_checksum_comment(comment: bytes) -> dict[str, int] | None:
    """{part: crc} from an end record's comment; None when it holds no llamapack checksums."""
    words = comment.split(b" ")
    if len(comment) != CHECKSUM_COMMENT_SIZE or b" ".join(words[:2]) != _CHECKSUM_PREFIX:
        return None
    try:
        pairs = dict(w.decode("ascii").split("=") for w in words[2:])
        return {k: int(pairs[k], 16) for k in CHECKSUM_PARTS}
    except (ValueError, KeyError, UnicodeDecodeError):
        return None
