"""The payload of a packed file: the ZIP at its end, as the launcher reads it and the packer writes it.

A packed file (see packer/build.py) is laid out as::

    [runtime executable][ZIP local entries: .args, MODEL.gguf (stored, data 65536-aligned)]
    [copy of the runtime's PyInstaller archive][ZIP central directory][zip64 end records][end record]

Reading (runtime/launcher.py at start, `-m`, `packer inspect` and `packer verify`): the end record
at the end of the file, then the central directory, then the single `.gguf` entry, checked to be
stored (not compressed) with its data at a 65536-aligned absolute offset, so that the engine maps
the weights in place: nothing is extracted or copied.

Writing (`packer build`): stored entries at absolute offsets, zip64 when a size or an offset passes
32 bits, the directory and end records at the very end, and in the end record's comment the CRC-32s
of the parts ZIP itself does not check (see "checksums" below).

`.args` holds one argument per line; a line `...` marks where the user's own arguments go
(appended at the end when there is no such line), as llamafile does.

Only the standard library is imported here: `--version` and every error about the file
itself answer before numpy and the kernels load.
"""
from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

ALIGNMENT = 65536           # the GGUF entry's data starts at a multiple of this absolute offset
ARGS_NAME = ".args"
MAX_CENTRAL_DIR = 1 << 24   # bytes; a packed file's directory has a handful of entries
MAX_ARGS_SIZE = 1 << 20     # bytes of .args, inflated
MAX_ARGS_LINES = 1024       # arguments in .args

# ZIP records (APPNOTE.TXT 4.3), all little-endian
EOCD = struct.Struct("<IHHHHIIH")              # end of central directory record, 22 bytes
EOCD_SIG = 0x06054B50
EOCD64_LOC = struct.Struct("<IIQI")            # zip64 end of central directory locator, 20 bytes
EOCD64_LOC_SIG = 0x07064B50
EOCD64 = struct.Struct("<IQHHIIQQQQ")          # zip64 end of central directory record, 56 bytes
EOCD64_SIG = 0x06064B50
CDIR = struct.Struct("<IHHHHHHIIIHHHHHII")     # central directory file header, 46 bytes
CDIR_SIG = 0x02014B50
LOCAL = struct.Struct("<IHHHHHIIIHH")          # local file header, 30 bytes
LOCAL_SIG = 0x04034B50
ZIP64_EXTRA_ID = 0x0001
U32_MAX = 0xFFFFFFFF
U16_MAX = 0xFFFF
EOCD_MAGIC = struct.pack("<I", EOCD_SIG)       # the signatures as they stand in the file
CDIR_MAGIC = struct.pack("<I", CDIR_SIG)

# what `packer build` writes (APPNOTE.TXT 4.5)
MADE_BY = (3 << 8) | 45        # Unix, spec 4.5
VERSION = 20                   # version needed to extract: 2.0, or 4.5 with zip64 records
VERSION_ZIP64 = 45
FILE_MODE = 0o100644 << 16     # regular file, rw-r--r--
UTF8_FLAG = 0x800
# how the first local header `packer build` writes (.args: small, ASCII name, stored) begins
ARGS_HEADER_START = struct.pack("<IHHH", LOCAL_SIG, VERSION, 0, 0)


class PayloadError(ValueError):
    """A packed file (or a -m argument) the launcher cannot use; the message is one line."""


class NoPayload(PayloadError):
    """The file has no ZIP at its end: a bare runtime, or a packed file that was stripped."""


@dataclass(frozen=True)
class ZipEntry:
    name: str
    method: int            # 0 stored, 8 deflated
    crc: int
    compressed_size: int
    size: int
    header_offset: int     # absolute offset of the local header
    data_offset: int       # absolute offset of the first data byte

    @property
    def data_end(self) -> int:
        return self.data_offset + self.compressed_size


@dataclass(frozen=True)
class Payload:
    path: str
    file_size: int
    entries: list[ZipEntry]
    gguf: ZipEntry
    args: list[str] | None  # the lines of .args, or None when there is no .args entry


# -- reading the ZIP at the end of a file --------------------------------------------
#
# Every number below comes from the file and may be anything: each offset, size and count is
# checked against the file before it is used (a seek past 2**63 would raise OverflowError, a
# huge count would loop, a huge size would allocate).

@dataclass(frozen=True)
class ZipEnd:
    """What the end records say, with where they are."""
    cd_offset: int      # the central directory: cd_offset .. cd_offset + cd_size
    cd_size: int
    count: int          # entries in it
    records_at: int     # first byte after the directory: the zip64 end record, else the end record
    eocd_at: int        # the end record; its comment runs to the end of the file
    comment: bytes

    @property
    def directory_span(self) -> tuple[int, int]:
        """[directory, end of the end record's fixed part): what the "directory" checksum covers."""
        return self.cd_offset, self.eocd_at + EOCD.size


def _zip64_fields(extra: bytes, want: list[str], name: str) -> dict[str, int]:
    """The zip64 extra record's values for the fields whose 32-bit slot was saturated."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        if tag == ZIP64_EXTRA_ID:
            if size < 8 * len(want) or pos + 4 + size > len(extra):
                raise PayloadError(f"zip: {name}: short zip64 extra field")
            values = struct.unpack_from(f"<{len(want)}Q", extra, pos + 4)
            return dict(zip(want, values))
        pos += 4 + size
    raise PayloadError(f"zip: {name}: sizes need a zip64 extra field and there is none")


def _read_exactly(f, offset: int, n: int, what: str) -> bytes:
    """n bytes at offset (both already checked to lie within the file), or a one-line error."""
    f.seek(offset)
    data = f.read(n)
    if len(data) != n:
        raise PayloadError(f"truncated file: {what} at offset {offset} is cut short")
    return data


def _zip64_end(f, eocd_at: int) -> tuple[int, int, int, int]:
    """(directory offset, size, count, record offset) from the zip64 end record and its locator."""
    loc_at = eocd_at - EOCD64_LOC.size
    if loc_at < 0:
        raise PayloadError("zip: zip64 end record locator missing")
    sig, _, rec_at, _ = EOCD64_LOC.unpack(_read_exactly(f, loc_at, EOCD64_LOC.size, "the zip64 locator"))
    if sig != EOCD64_LOC_SIG or rec_at + EOCD64.size > loc_at:
        raise PayloadError(f"zip: bad zip64 end record locator at offset {loc_at}")
    rec = EOCD64.unpack(_read_exactly(f, rec_at, EOCD64.size, "the zip64 end record"))
    if rec[0] != EOCD64_SIG:
        raise PayloadError(f"zip: bad zip64 end record at offset {rec_at}")
    return rec[9], rec[8], rec[7], rec_at


def find_end(f, file_size: int) -> ZipEnd:
    """The end records at the end of the open binary file f, checked against its size."""
    tail_len = min(file_size, EOCD.size + U16_MAX)  # the record, and a comment of up to 64 KiB
    tail = _read_exactly(f, file_size - tail_len, tail_len, "the end of the file")

    def ends_the_file(at: int) -> bool:  # the record and its comment: else a chance match in other bytes
        return at + EOCD.size <= len(tail) and at + EOCD.size + EOCD.unpack_from(tail, at)[7] == len(tail)

    pos = tail.rfind(EOCD_MAGIC)
    while pos >= 0 and not ends_the_file(pos):
        pos = tail.rfind(EOCD_MAGIC, 0, pos)
    if pos < 0:
        raise NoPayload("no ZIP end record at the end of the file (not a packed file, or stripped)")
    _, disk, cd_disk, disk_count, count, cd_size, cd_offset, _ = EOCD.unpack_from(tail, pos)
    eocd_at = file_size - tail_len + pos
    if disk != 0 or cd_disk != 0:
        raise PayloadError("zip: multi-disk archives are not supported")
    if disk_count != count:
        raise PayloadError(f"zip: damaged end record: {disk_count} entries on this disk, {count} in all")
    records_at = eocd_at
    if U32_MAX in (cd_size, cd_offset) or count == U16_MAX:
        cd_offset, cd_size, count, records_at = _zip64_end(f, eocd_at)
    if cd_size > MAX_CENTRAL_DIR:
        raise PayloadError(f"zip: central directory of {cd_size} bytes is too large for a packed file")
    if cd_offset + cd_size > records_at:
        raise PayloadError(f"damaged or truncated file: the ZIP central directory at offset {cd_offset} "
                           f"runs past the end records at {records_at} (file size {file_size})")
    if count > cd_size // CDIR.size:
        raise PayloadError(f"zip: {count} entries cannot fit in a central directory of {cd_size} bytes")
    return ZipEnd(cd_offset, cd_size, count, records_at, eocd_at, tail[pos + EOCD.size:])


def _central_entry(f, cd: bytes, pos: int, end: ZipEnd) -> tuple[ZipEntry, int]:
    """The entry whose central header starts at cd[pos], and where the next one starts."""
    where = end.cd_offset + pos
    if pos + CDIR.size > len(cd):
        raise PayloadError(f"zip: central directory at offset {end.cd_offset} is truncated")
    (sig, _, _, flags, method, _, _, crc, csize, usize, n_name, n_extra, n_comment,
     _, _, _, lho) = CDIR.unpack_from(cd, pos)
    if sig != CDIR_SIG:
        raise PayloadError(f"zip: bad central directory entry at offset {where}")
    name_end = pos + CDIR.size + n_name
    if name_end + n_extra + n_comment > len(cd):
        raise PayloadError(f"zip: central directory entry at offset {where} runs past the directory")
    name = cd[pos + CDIR.size:name_end].decode("utf-8" if flags & UTF8_FLAG else "cp437", "replace")
    extra = cd[name_end:name_end + n_extra]
    want = [k for k, v in (("size", usize), ("compressed_size", csize), ("header_offset", lho)) if v == U32_MAX]
    if want:
        big = _zip64_fields(extra, want, name)
        usize, csize, lho = big.get("size", usize), big.get("compressed_size", csize), big.get("header_offset", lho)
    if flags & 0x1:
        raise PayloadError(f"zip: {name} is encrypted")
    if lho + LOCAL.size > end.cd_offset:
        raise PayloadError(f"zip: {name}: local header offset {lho} is past the central directory at "
                           f"{end.cd_offset}")
    local = LOCAL.unpack(_read_exactly(f, lho, LOCAL.size, f"{name}'s local header"))
    if local[0] != LOCAL_SIG:
        raise PayloadError(f"zip: {name}: no local header at offset {lho}")
    data_offset = lho + LOCAL.size + local[9] + local[10]
    entry = ZipEntry(name, method, crc, csize, usize, lho, data_offset)
    if entry.data_end > end.cd_offset:
        raise PayloadError(f"damaged or truncated file: {name} ends at offset {entry.data_end}, past the "
                           f"central directory at {end.cd_offset}")
    return entry, name_end + n_extra + n_comment


def read_zip(f, file_size: int) -> list[ZipEntry]:
    """Entries of the ZIP at the end of the open binary file f, with absolute data offsets."""
    end = find_end(f, file_size)
    cd = _read_exactly(f, end.cd_offset, end.cd_size, "the central directory")
    entries, pos = [], 0
    for _ in range(end.count):  # bounded by find_end: at most one entry per 46 bytes of directory
        entry, pos = _central_entry(f, cd, pos, end)
        entries.append(entry)
    return entries


def read_entry(f, entry: ZipEntry, limit: int) -> bytes:
    """The uncompressed bytes of a small entry (stored or deflated), checked against its CRC.

    Never holds more than limit + 1 bytes: deflate data is inflated only up to the declared size
    (one byte more tells a lie), so a small entry cannot expand into gigabytes.
    """
    if entry.size > limit or entry.compressed_size > limit:
        raise PayloadError(f"{entry.name}: {max(entry.size, entry.compressed_size)} bytes is too large "
                           f"(at most {limit})")
    raw = _read_exactly(f, entry.data_offset, entry.compressed_size, entry.name)
    if entry.method == 0:
        data = raw
    elif entry.method == 8:
        data = _inflate(raw, entry.size, entry.name)
    else:
        raise PayloadError(f"{entry.name}: unsupported compression method {entry.method}")
    if len(data) != entry.size or zlib.crc32(data) != entry.crc:
        raise PayloadError(f"{entry.name}: CRC or size mismatch (damaged file)")
    return data


def _inflate(raw: bytes, size: int, name: str) -> bytes:
    """raw deflate data that must inflate to exactly size bytes; stops one byte past it."""
    d = zlib.decompressobj(-15)
    try:
        data = d.decompress(raw, size + 1)
    except zlib.error as e:
        raise PayloadError(f"{name}: bad deflate data ({e})") from None
    if len(data) > size:
        raise PayloadError(f"{name}: inflates past its declared size of {size} bytes (damaged file)")
    if not d.eof:
        raise PayloadError(f"{name}: deflate data is cut short (damaged file)")
    return data


def read_payload(path: str, with_args: bool = True) -> Payload:
    """The model entry and .args of a packed file; PayloadError when it is not usable.
    with_args=False leaves .args unread (args is None): for -m, which takes only the weights."""
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        entries = read_zip(f, file_size)
        ggufs = [e for e in entries if e.name.lower().endswith(".gguf")]
        if not ggufs:
            raise PayloadError("no .gguf entry in the file's ZIP")
        if len(ggufs) > 1:
            raise PayloadError(f"{len(ggufs)} .gguf entries in the file's ZIP "
                               f"({', '.join(e.name for e in ggufs)}); a packed file holds one")
        g = ggufs[0]
        if g.method != 0 or g.compressed_size != g.size:
            raise PayloadError(f"{g.name} is compressed (method {g.method}); it must be stored to be "
                               f"mapped in place: repack it with `packer build`")
        if g.data_offset % ALIGNMENT:
            raise PayloadError(f"{g.name}: data at offset {g.data_offset} is not {ALIGNMENT}-aligned; "
                               f"repack it with `packer build`")
        args = None
        named = [e for e in entries if e.name == ARGS_NAME]
        if len(named) > 1:
            raise PayloadError("bad .args: the file has several .args entries")
        if named and with_args:
            args = parse_args_text(read_entry(f, named[0], MAX_ARGS_SIZE))
    return Payload(path, file_size, entries, g, args)


def resolve_model(path: str) -> tuple[str, int]:
    """(file, offset of the GGUF in it) for -m: a plain GGUF, or another packed file's weights."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise PayloadError(f"model file not found: {path}") from None
    except IsADirectoryError:
        raise PayloadError(f"model path is a directory: {path}") from None
    if magic == b"GGUF":
        return path, 0
    try:
        return path, read_payload(path, with_args=False).gguf.data_offset
    except PayloadError as e:
        raise PayloadError(f"{path}: neither a GGUF file nor a packed file ({e})") from None


# -- .args ---------------------------------------------------------------------------------

def parse_args_text(data: bytes) -> list[str]:
    """The lines of a .args entry: one argument per line, `...` kept as the marker.

    At most MAX_ARGS_LINES: the command-line parser's cost grows with the square of the
    number of arguments (argparse), and no set of defaults needs thousands of them.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PayloadError(f"bad .args: not UTF-8 text (byte {e.start})") from None
    if "\0" in text:
        raise PayloadError("bad .args: contains a NUL byte")
    n = text.count("\n") + (not text.endswith("\n"))
    if n > MAX_ARGS_LINES:
        raise PayloadError(f"bad .args: {n} lines, more than the {MAX_ARGS_LINES} arguments a packed file may hold")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def args_text(args: Sequence[str]) -> bytes:
    """The .args entry for args (already checked to hold no line break): one argument per line."""
    return ("\n".join(args) + "\n").encode("utf-8")


def merge_args(stored: list[str] | None, user: Sequence[str]) -> list[str]:
    """llamafile's convention: the user's arguments replace the `...` line, or follow."""
    stored = list(stored or [])
    if "..." in stored:
        i = stored.index("...")
        return stored[:i] + list(user) + [a for a in stored[i + 1:] if a != "..."]
    return stored + list(user)


# -- writing -------------------------------------------------------------------------------

def dos_time(mtime: float) -> tuple[int, int]:
    """(time, date) in MS-DOS format, local time, clamped to 1980..2107."""
    t = time.localtime(mtime)
    year = min(max(t.tm_year, 1980), 2107)
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), ((year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday


@dataclass
class StoredEntry:
    """An entry to write, stored: the name, its size, where its local header goes, and (once known) its CRC."""
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

    def place_aligned(self, after: int) -> None:
        """Puts the local header at or after offset `after`, so that the data starts at a multiple
        of ALIGNMENT (the bytes in between are left to the writer: zeros)."""
        self.header_offset = -(-(after + self.local_size) // ALIGNMENT) * ALIGNMENT - self.local_size

    def local_header(self) -> bytes:
        t, d = dos_time(self.mtime)
        if self.zip64_size:  # sizes in the zip64 extra field; the 32-bit slots say so
            extra = struct.pack("<HHQQ", ZIP64_EXTRA_ID, 16, self.size, self.size)
            size32, version = U32_MAX, VERSION_ZIP64
        else:
            extra, size32, version = b"", self.size, VERSION
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
        version = VERSION_ZIP64 if big else VERSION
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
        out += EOCD64.pack(EOCD64_SIG, EOCD64.size - 12, MADE_BY, VERSION_ZIP64, 0, 0, count, count, cd_size,
                           cd_offset)
        out += EOCD64_LOC.pack(EOCD64_LOC_SIG, 0, rec_at, 1)
        cd_offset, cd_size, count = min(cd_offset, U32_MAX), min(cd_size, U32_MAX), min(count, U16_MAX)
    return out + EOCD.pack(EOCD_SIG, 0, 0, count, count, cd_size, cd_offset, comment_size)


def central_directory(entries: Sequence[StoredEntry], cd_offset: int) -> bytes:
    """The central directory of entries, written at cd_offset, and the end records after it, which
    announce the checksum comment that follows them (checksum_comment)."""
    cd = b"".join(e.central_header() for e in entries)
    return cd + end_records(cd_offset, len(cd), len(entries), CHECKSUM_COMMENT_SIZE)


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


def checksum_ranges(entries: Sequence[ZipEntry], end: ZipEnd) -> dict[str, list[tuple[int, int]]]:
    """The byte ranges each of CHECKSUM_PARTS covers in a file with these entries and end records."""
    entries = sorted(entries, key=lambda e: e.header_offset)
    between = []
    for e, nxt in zip(entries, entries[1:] + [None]):
        between.append((e.header_offset, e.data_offset))
        if nxt is not None:
            between.append((e.data_end, nxt.header_offset))
    return {"runtime": [(0, entries[0].header_offset)], "headers": between,
            "tail": [(entries[-1].data_end, end.cd_offset)], "directory": [end.directory_span]}
