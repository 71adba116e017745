"""The launcher inside every packed file: finds its own weights and runs the chosen mode.

A packed file (see packer/build.py) is laid out as::

    [runtime executable][ZIP local entries: .args, MODEL.gguf (stored, data 65536-aligned)]
    [copy of the runtime's PyInstaller archive][ZIP central directory][zip64 end records][end record]

At start the launcher reads the ZIP end record at the end of its own executable, then the
central directory, picks the single `.gguf` entry, checks that it is stored (not compressed)
with its data at a 65536-aligned absolute offset, and hands (path, offset) to the engine,
which maps the weights in place: nothing is extracted or copied.

`.args` holds one argument per line; a line `...` marks where the user's own arguments
go (appended at the end when there is no such line), as llamafile does.

Only the standard library is imported here: `--version` and every error about the file
itself answer before numpy and the kernels load.
"""
from __future__ import annotations

import os
import signal
import struct
import sys
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from runtime import __version__

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


class LauncherError(ValueError):
    """A packed file (or a -m argument) the launcher cannot use; the message is one line."""


class NoPayload(LauncherError):
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


def _zip64_fields(extra: bytes, want: list[str], name: str) -> dict[str, int]:
    """The zip64 extra record's values for the fields whose 32-bit slot was saturated."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        if tag == ZIP64_EXTRA_ID:
            if size < 8 * len(want) or pos + 4 + size > len(extra):
                raise LauncherError(f"zip: {name}: short zip64 extra field")
            values = struct.unpack_from(f"<{len(want)}Q", extra, pos + 4)
            return dict(zip(want, values))
        pos += 4 + size
    raise LauncherError(f"zip: {name}: sizes need a zip64 extra field and there is none")


def _read_exactly(f, offset: int, n: int, what: str) -> bytes:
    """n bytes at offset (both already checked to lie within the file), or a one-line error."""
    f.seek(offset)
    data = f.read(n)
    if len(data) != n:
        raise LauncherError(f"truncated file: {what} at offset {offset} is cut short")
    return data


def _zip64_end(f, eocd_at: int) -> tuple[int, int, int, int]:
    """(directory offset, size, count, record offset) from the zip64 end record and its locator."""
    loc_at = eocd_at - EOCD64_LOC.size
    if loc_at < 0:
        raise LauncherError("zip: zip64 end record locator missing")
    sig, _, rec_at, _ = EOCD64_LOC.unpack(_read_exactly(f, loc_at, EOCD64_LOC.size, "the zip64 locator"))
    if sig != EOCD64_LOC_SIG or rec_at + EOCD64.size > loc_at:
        raise LauncherError(f"zip: bad zip64 end record locator at offset {loc_at}")
    rec = EOCD64.unpack(_read_exactly(f, rec_at, EOCD64.size, "the zip64 end record"))
    if rec[0] != EOCD64_SIG:
        raise LauncherError(f"zip: bad zip64 end record at offset {rec_at}")
    return rec[9], rec[8], rec[7], rec_at


def find_end(f, file_size: int) -> ZipEnd:
    """The end records at the end of the open binary file f, checked against its size."""
    tail_len = min(file_size, EOCD.size + U16_MAX)  # the record, and a comment of up to 64 KiB
    tail = _read_exactly(f, file_size - tail_len, tail_len, "the end of the file")

    def ends_the_file(at: int) -> bool:  # the record and its comment: else a chance match in other bytes
        return at + EOCD.size <= len(tail) and at + EOCD.size + EOCD.unpack_from(tail, at)[7] == len(tail)

    pos = tail.rfind(b"PK\x05\x06")
    while pos >= 0 and not ends_the_file(pos):
        pos = tail.rfind(b"PK\x05\x06", 0, pos)
    if pos < 0:
        raise NoPayload("no ZIP end record at the end of the file (not a packed file, or stripped)")
    _, disk, cd_disk, disk_count, count, cd_size, cd_offset, _ = EOCD.unpack_from(tail, pos)
    eocd_at = file_size - tail_len + pos
    if disk != 0 or cd_disk != 0 or disk_count != count:
        raise LauncherError("zip: multi-disk archives are not supported")
    records_at = eocd_at
    if U32_MAX in (cd_size, cd_offset) or count == U16_MAX:
        cd_offset, cd_size, count, records_at = _zip64_end(f, eocd_at)
    if cd_size > MAX_CENTRAL_DIR:
        raise LauncherError(f"zip: central directory of {cd_size} bytes is too large for a packed file")
    if cd_offset + cd_size > records_at:
        raise LauncherError(f"damaged or truncated file: the ZIP central directory at offset {cd_offset} "
                            f"runs past the end records at {records_at} (file size {file_size})")
    if count > cd_size // CDIR.size:
        raise LauncherError(f"zip: {count} entries cannot fit in a central directory of {cd_size} bytes")
    return ZipEnd(cd_offset, cd_size, count, records_at, eocd_at, tail[pos + EOCD.size:])


def _central_entry(f, cd: bytes, pos: int, end: ZipEnd) -> tuple[ZipEntry, int]:
    """The entry whose central header starts at cd[pos], and where the next one starts."""
    where = end.cd_offset + pos
    if pos + CDIR.size > len(cd):
        raise LauncherError(f"zip: central directory at offset {end.cd_offset} is truncated")
    (sig, _, _, flags, method, _, _, crc, csize, usize, n_name, n_extra, n_comment,
     _, _, _, lho) = CDIR.unpack_from(cd, pos)
    if sig != CDIR_SIG:
        raise LauncherError(f"zip: bad central directory entry at offset {where}")
    name_end = pos + CDIR.size + n_name
    if name_end + n_extra + n_comment > len(cd):
        raise LauncherError(f"zip: central directory entry at offset {where} runs past the directory")
    name = cd[pos + CDIR.size:name_end].decode("utf-8" if flags & 0x800 else "cp437", "replace")
    extra = cd[name_end:name_end + n_extra]
    want = [k for k, v in (("size", usize), ("compressed_size", csize), ("header_offset", lho)) if v == U32_MAX]
    if want:
        big = _zip64_fields(extra, want, name)
        usize, csize, lho = big.get("size", usize), big.get("compressed_size", csize), big.get("header_offset", lho)
    if flags & 0x1:
        raise LauncherError(f"zip: {name} is encrypted")
    if lho + LOCAL.size > end.cd_offset:
        raise LauncherError(f"zip: {name}: local header offset {lho} is past the central directory at "
                            f"{end.cd_offset}")
    local = LOCAL.unpack(_read_exactly(f, lho, LOCAL.size, f"{name}'s local header"))
    if local[0] != LOCAL_SIG:
        raise LauncherError(f"zip: {name}: no local header at offset {lho}")
    data_offset = lho + LOCAL.size + local[9] + local[10]
    entry = ZipEntry(name, method, crc, csize, usize, lho, data_offset)
    if entry.data_end > end.cd_offset:
        raise LauncherError(f"damaged or truncated file: {name} ends at offset {entry.data_end}, past the "
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
        raise LauncherError(f"{entry.name}: {max(entry.size, entry.compressed_size)} bytes is too large "
                            f"(at most {limit})")
    raw = _read_exactly(f, entry.data_offset, entry.compressed_size, entry.name)
    if entry.method == 0:
        data = raw
    elif entry.method == 8:
        data = _inflate(raw, entry.size, entry.name)
    else:
        raise LauncherError(f"{entry.name}: unsupported compression method {entry.method}")
    if len(data) != entry.size or zlib.crc32(data) != entry.crc:
        raise LauncherError(f"{entry.name}: CRC or size mismatch (damaged file)")
    return data


def _inflate(raw: bytes, size: int, name: str) -> bytes:
    """raw deflate data that must inflate to exactly size bytes; stops one byte past it."""
    d = zlib.decompressobj(-15)
    try:
        data = d.decompress(raw, size + 1)
    except zlib.error as e:
        raise LauncherError(f"{name}: bad deflate data ({e})") from None
    if len(data) > size:
        raise LauncherError(f"{name}: inflates past its declared size of {size} bytes (damaged file)")
    if not d.eof:
        raise LauncherError(f"{name}: deflate data is cut short (damaged file)")
    return data


def parse_args_text(data: bytes) -> list[str]:
    """The lines of a .args entry: one argument per line, `...` kept as the marker.

    At most MAX_ARGS_LINES: the command-line parser's cost grows with the square of the
    number of arguments (argparse), and no set of defaults needs thousands of them.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LauncherError(f"bad .args: not UTF-8 text (byte {e.start})") from None
    if "\0" in text:
        raise LauncherError("bad .args: contains a NUL byte")
    n = text.count("\n") + (not text.endswith("\n"))
    if n > MAX_ARGS_LINES:
        raise LauncherError(f"bad .args: {n} lines, more than the {MAX_ARGS_LINES} arguments a packed file may hold")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_payload(path: str, with_args: bool = True) -> Payload:
    """The model entry and .args of a packed file; LauncherError when it is not usable.
    with_args=False leaves .args unread (args is None): for -m, which takes only the weights."""
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        entries = read_zip(f, file_size)
        ggufs = [e for e in entries if e.name.lower().endswith(".gguf")]
        if not ggufs:
            raise LauncherError("no .gguf entry in the file's ZIP")
        if len(ggufs) > 1:
            raise LauncherError(f"{len(ggufs)} .gguf entries in the file's ZIP "
                                f"({', '.join(e.name for e in ggufs)}); a packed file holds one")
        g = ggufs[0]
        if g.method != 0 or g.compressed_size != g.size:
            raise LauncherError(f"{g.name} is compressed (method {g.method}); it must be stored to be "
                                f"mapped in place: repack it with `packer build`")
        if g.data_offset % ALIGNMENT:
            raise LauncherError(f"{g.name}: data at offset {g.data_offset} is not {ALIGNMENT}-aligned; "
                                f"repack it with `packer build`")
        args = None
        named = [e for e in entries if e.name == ARGS_NAME]
        if len(named) > 1:
            raise LauncherError("bad .args: the file has several .args entries")
        if named and with_args:
            args = parse_args_text(read_entry(f, named[0], MAX_ARGS_SIZE))
    return Payload(path, file_size, entries, g, args)


def merge_args(stored: list[str] | None, user: Sequence[str]) -> list[str]:
    """llamafile's convention: the user's arguments replace the `...` line, or follow."""
    stored = list(stored or [])
    if "..." in stored:
        i = stored.index("...")
        return stored[:i] + list(user) + [a for a in stored[i + 1:] if a != "..."]
    return stored + list(user)


def resolve_model(path: str) -> tuple[str, int]:
    """(file, offset of the GGUF in it) for -m: a plain GGUF, or another packed file's weights."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise LauncherError(f"model file not found: {path}") from None
    except IsADirectoryError:
        raise LauncherError(f"model path is a directory: {path}") from None
    if magic == b"GGUF":
        return path, 0
    try:
        return path, read_payload(path, with_args=False).gguf.data_offset
    except LauncherError as e:
        raise LauncherError(f"{path}: neither a GGUF file nor a packed file ({e})") from None


# -- main ---------------------------------------------------------------------------

class OneInterruptPerCtrlC:
    """A SIGINT handler that raises KeyboardInterrupt once per Ctrl-C.

    In the one-file build a Ctrl-C reaches the Python process twice: from the terminal (it
    signals the whole foreground process group) and forwarded by PyInstaller's bootloader
    (the parent process) a few milliseconds later. The copy would interrupt whatever runs
    next (the chat's next prompt, the clean-up after a one-shot); copies that come within
    DEBOUNCE seconds of the first are dropped.
    """
    DEBOUNCE = 0.25

    def __init__(self) -> None:
        self.last = -1.0

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self)

    def __call__(self, signum, frame) -> None:
        now = time.monotonic()
        if now - self.last < self.DEBOUNCE:
            return
        self.last = now
        raise KeyboardInterrupt


def _self_path() -> str | None:
    """The packed file this process runs from (the one-file executable), else None."""
    return sys.executable if getattr(sys, "frozen", False) else None


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None, self_path: str | None = None) -> int:
    """The packed file's entry point; self_path (default: this executable) holds the weights."""
    user = list(sys.argv[1:] if argv is None else argv)
    if "--version" in (user[:user.index("--")] if "--" in user else user):
        print(f"llamapack {__version__}")
        return 0
    from runtime import cli  # argparse only: numpy and the kernels load with the model

    if getattr(sys, "frozen", False):
        OneInterruptPerCtrlC().install()
    self_path = self_path or _self_path()
    payload, own_error = None, None
    if self_path:
        try:
            payload = read_payload(self_path)
        except NoPayload:
            own_error = ("no model inside this file (no ZIP end record: a bare runtime, or a truncated or "
                         "stripped packed file); give one with -m MODEL.gguf")
        except (LauncherError, OSError) as e:
            own_error = f"{os.path.basename(self_path)}: {e}"
    stored = payload.args if payload else None
    if stored:
        try:
            cli.build_parser(strict=True).parse_args([a for a in stored if a != "..."])
        except cli.ArgsError as e:
            return _fail(f"bad .args in {os.path.basename(self_path)}: {e}")
    args = cli.build_parser().parse_args(merge_args(stored, user))
    try:
        if payload and args.model in (None, payload.gguf.name) and not (args.model and os.path.exists(args.model)):
            path, offset = payload.path, payload.gguf.data_offset  # our own weights (llamafile's .args: -m NAME)
        elif args.model:
            path, offset = resolve_model(args.model)
        elif own_error:
            return _fail(own_error)
        else:
            return _fail("no model given (-m PATH)")
    except LauncherError as e:
        return _fail(str(e))
    args.model = path
    default_mode = "chat" if sys.stdin is not None and sys.stdin.isatty() else "server"
    return cli.run(args, offset, default_mode=default_mode)


if __name__ == "__main__":
    sys.exit(main())
