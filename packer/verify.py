"""`packer inspect FILE` (what is inside) and `packer verify FILE` (does it all hold).

Both read the file with the launcher's own ZIP reader (runtime/payload.py), so they see
what a start would see. verify also checks every byte: the entries against their ZIP CRCs,
the rest (runtime, local headers, tail, directory) against the CRC-32s `packer build` records
in the end record's comment (runtime/payload.py, "checksums"), so a truncated or damaged file is
named as such, part by part, where starting it would give PyInstaller's errors or a crash.
"""
from __future__ import annotations

import os
import shlex
import zlib
from collections import Counter
from dataclasses import dataclass, field

from packer import pyiarchive
from runtime.constants import KEY_GENERAL_ARCHITECTURE, KEY_GENERAL_NAME, KEY_TOKENIZER_CHAT_TEMPLATE
from runtime.payload import (
    ALIGNMENT, ARGS_HEADER_START, ARGS_NAME, CDIR_MAGIC, EOCD, EOCD_MAGIC, NoPayload, PayloadError, checksum_ranges,
    find_end, read_checksum_comment, read_payload, read_zip,
)

VERIFY_CHUNK = 16 << 20


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def _gguf_summary(path: str, offset: int) -> list[tuple[str, str]]:
    from runtime.constants import GGMLType
    from runtime.gguf import GGUFFile

    f = GGUFFile(path, offset)
    try:
        md = f.metadata
        arch = md.get(KEY_GENERAL_ARCHITECTURE, "?")
        n_params = sum(t.n_elements for t in f.tensors.values())
        types = Counter()
        for t in f.tensors.values():
            types[GGMLType(t.type).name if t.type in GGMLType._value2member_map_ else str(t.type)] += t.nbytes
        total = sum(types.values()) or 1
        rows = [("name", str(md.get(KEY_GENERAL_NAME, "-"))),
                ("architecture", f"{arch}, {md.get(f'{arch}.block_count', '?')} layers, "
                                 f"{md.get(f'{arch}.embedding_length', '?')} embd"
                                 + (f", {md[f'{arch}.expert_count']} experts ({md.get(f'{arch}.expert_used_count')} used)"
                                    if md.get(f"{arch}.expert_count") else "")),
                ("parameters", f"{n_params / 1e6:,.1f} M in {len(f.tensors)} tensors"),
                ("quant types", ", ".join(f"{k} {v / total:.0%}" for k, v in types.most_common())),
                ("context", f"{md.get(f'{arch}.context_length', '?')} (training)"),
                ("chat template", "yes" if md.get(KEY_TOKENIZER_CHAT_TEMPLATE) else "no (a default is used)"),
                ("gguf", f"v{f.version}, {len(md)} metadata keys, tensor data at offset {f.data_offset}")]
    finally:
        f.close()
    return rows


def inspect(path: str) -> list[tuple[str, str]]:
    """(label, text) rows describing a packed file; raises PayloadError when it is not one."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        entries = read_zip(f, size)
    payload = read_payload(path)
    runtime_end = min(e.header_offset for e in entries)
    info = {}
    try:
        info = pyiarchive.runtime_info(path, end=runtime_end)
    except (pyiarchive.ArchiveError, OSError):
        pass
    rows = [("file", f"{path}: {size:,} bytes"),
            ("runtime", f"{runtime_end:,} bytes" + (f": llamapack {info.get('version', '?')}, {info.get('platform', '?')}, "
                                                    f"Python {info.get('python', '?')}, PyInstaller "
                                                    f"{info.get('pyinstaller', '?')}" if info else ": no runtime facts"))]
    rows.append(("start-up", _tail(path, entries, size)))
    for e in entries:
        method = {0: "stored", 8: "deflated"}.get(e.method, f"method {e.method}")
        align = f", {'aligned' if e.data_offset % ALIGNMENT == 0 else 'NOT aligned'} to {ALIGNMENT}" \
            if e.name.lower().endswith(".gguf") else ""
        rows.append(("entry", f"{e.name}: {e.size:,} bytes {method}, data at offset {e.data_offset:,}"
                              f"{align}, crc {e.crc:08x}"))
    rows += _gguf_summary(path, payload.gguf.data_offset)
    rows.append(("args", shlex.join(payload.args) if payload.args is not None else "(no .args entry)"))
    return rows


def _tail(path: str, entries, size: int) -> str:
    """Where the bootloader's back-to-front scan stops: the last cookie, and what it points at."""
    with open(path, "rb") as f:
        try:
            arc = pyiarchive.read_archive(f, size)
        except pyiarchive.ArchiveError as e:
            return f"no PyInstaller cookie ({e})"
    scanned = size - arc.cookie_at
    where = "the runtime's own archive" if arc.start < min(e.header_offset for e in entries) \
        else "a copy of the runtime's archive"
    return f"cookie at offset {arc.cookie_at:,} ({scanned:,} bytes from the end) -> {where} at {arc.start:,}"


def verify(path: str) -> Report:
    """Every check a packed file must pass; report.ok only when all hold."""
    rep = Report()
    try:
        payload = read_payload(path)  # the launcher's checks: one stored .gguf, aligned; readable .args
    except NoPayload as e:
        rep.add("zip", False, _why_no_end_record(path) or str(e))
        return rep
    except (PayloadError, OSError) as e:
        rep.add("zip", False, str(e))
        _check_directory_alone(rep, path)
        return rep
    g = payload.gguf
    rep.add("zip", True, f"{len(payload.entries)} entries, central directory at the end")
    rep.add("alignment", g.data_offset % ALIGNMENT == 0, f"{g.name} data at offset {g.data_offset:,}")
    with open(path, "rb") as f:
        for e in payload.entries:
            _check_entry(rep, f, e)
        _check_parts(rep, f, payload)
    _check_gguf(rep, path, g)
    if payload.args is not None:
        problem = args_problem(payload.args)
        rep.add(ARGS_NAME, problem is None, problem or shlex.join(payload.args))
    _check_start_up(rep, path, payload)
    return rep


def args_problem(args: list[str]) -> str | None:
    """Why .args lines would not do what they say, or None: the runtime's own check (a command line
    it parses, runtime/cli.py's check_args), then what that lets through and the launcher would
    silently drop: a second `...` (the user's arguments go at the first), two modes at once (it
    runs the one given last: the others are dead text)."""
    from runtime.cli import ArgsError, build_parser, check_args

    try:
        check_args(args)
    except ArgsError as e:
        return str(e)
    if (n := args.count("...")) > 1:
        return f"\"...\" is given {n} times: it marks the one place the user's own arguments go"
    ns = build_parser(strict=True).parse_args([a for a in args if a != "..."])
    one_shot = "-f" if getattr(ns, "prompt_from", None) == "file" else "-p"
    modes = [flag for flag, on in ((one_shot, ns.prompt is not None or ns.file is not None), ("--chat", ns.chat),
                                   ("--server", ns.server)) if on]
    if len(modes) > 1:
        count = ("two", "three")[len(modes) - 2]
        return f"{', '.join(modes[:-1])} and {modes[-1]} are {count} modes at once: give one"
    return None


def _crc(f, ranges: list[tuple[int, int]]) -> tuple[int, bool]:
    """(CRC-32 of the bytes of f in ranges, one after the other; whether all of them could be read)."""
    crc = 0
    for start, end in ranges:
        f.seek(start)
        left = max(end - start, 0)
        while left:
            chunk = f.read(min(VERIFY_CHUNK, left))
            if not chunk:
                return crc, False
            crc = zlib.crc32(chunk, crc)
            left -= len(chunk)
    return crc, True


def _check_entry(rep: Report, f, e) -> None:
    """The entry's data against the CRC the directory records."""
    if e.method == 8:
        crc, whole = _inflated_crc(f, e)
    elif e.method == 0:
        crc, whole = _crc(f, [(e.data_offset, e.data_end)])
    else:
        rep.add(f"crc {e.name}", False, f"unsupported compression method {e.method}")
        return
    rep.add(f"crc {e.name}", whole and crc == e.crc,
            f"{crc:08x}" + ("" if whole else ", the data is cut short or does not inflate to its size") +
            ("" if crc == e.crc else f", the directory says {e.crc:08x}: the data is damaged"))


def _inflated_crc(f, e) -> tuple[int, bool]:
    """(CRC-32 of a deflated entry's inflated bytes, whether they are exactly its declared size),
    inflated piece by piece: memory stays bounded whatever the data claims."""
    d, crc, n = zlib.decompressobj(-15), 0, 0
    f.seek(e.data_offset)
    left = e.compressed_size
    try:
        while left and n <= e.size:
            pending = f.read(min(VERIFY_CHUNK, left))
            if not pending:
                return crc, False
            left -= len(pending)
            while pending and n <= e.size:
                out = d.decompress(pending, 1 << 20)
                crc, n, pending = zlib.crc32(out, crc), n + len(out), d.unconsumed_tail
    except zlib.error:
        return crc, False
    return crc, d.eof and n == e.size


PART_WORDS = {"runtime": "the runtime (bootloader and Python archive)", "headers": "the ZIP local headers",
              "tail": "the tail (the PyInstaller cookie or archive copy before the directory)",
              "directory": "the ZIP central directory and end records"}


def _check_parts(rep: Report, f, payload) -> None:
    """The CRC-32s `packer build` records for what ZIP's own CRCs leave out: with them, every byte."""
    end = find_end(f, payload.file_size)
    recorded = _recorded(rep, end)
    if recorded is None:
        return
    for part, ranges in checksum_ranges(payload.entries, end).items():
        crc, _ = _crc(f, ranges)
        where = f"bytes {ranges[0][0]:,}..{ranges[-1][1]:,}"
        rep.add(part, crc == recorded[part], f"{where}, crc {crc:08x}" if crc == recorded[part] else
                f"{where}: crc {crc:08x}, recorded {recorded[part]:08x}: {PART_WORDS[part]} damaged")


def _recorded(rep: Report, end) -> dict[str, int] | None:
    """The CRCs the end record's comment holds; None (with a check saying why) when it holds none."""
    recorded = read_checksum_comment(end.comment)
    if recorded is None and end.comment:
        rep.add("checksums", False, f"the end record's comment is not a llamapack checksum record: damaged "
                                    f"({end.comment[:80]!r})")
    elif recorded is None:
        rep.add("checksums", True, "none recorded (built by an older packer): the runtime, the headers and "
                                   "the directory are not checked")
    return recorded


def _check_directory_alone(rep: Report, path: str) -> None:
    """When the launcher cannot read the entries: whether the directory is what `packer build` wrote."""
    try:
        with open(path, "rb") as f:
            end = find_end(f, os.fstat(f.fileno()).st_size)
            recorded = _recorded(rep, end)
            if recorded is not None:
                crc, _ = _crc(f, [end.directory_span])
                rep.add("directory", crc == recorded["directory"], f"crc {crc:08x}" + (
                    "" if crc == recorded["directory"] else
                    f", recorded {recorded['directory']:08x}: {PART_WORDS['directory']} damaged"))
    except (PayloadError, OSError):
        pass  # the end records themselves are unreadable: the zip check says so


def _check_gguf(rep: Report, path: str, g) -> None:
    from runtime.gguf import GGUFError, GGUFFile

    try:
        gf = GGUFFile(path, g.data_offset)
    except GGUFError as e:  # its messages start "gguf: ", the check's name
        rep.add("gguf", False, str(e).removeprefix("gguf: "))
        return
    try:
        end = max((t.offset + t.nbytes for t in gf.tensors.values()), default=gf.data_offset)
        rep.add("gguf", end <= g.data_end, f"{len(gf.tensors)} tensors, {len(gf.metadata)} metadata keys" +
                ("" if end <= g.data_end else f", tensor data ends at {end:,}, past the entry's end {g.data_end:,}"))
    finally:
        gf.close()


def _check_start_up(rep: Report, path: str, payload) -> None:
    """The bootloader's back-to-front scan must meet a cookie after the model, and a readable archive."""
    with open(path, "rb") as f:
        try:
            arc = pyiarchive.read_archive(f, payload.file_size)
            pyiarchive.read_toc(f, arc)
        except pyiarchive.ArchiveError as e:
            rep.add("start-up", False, str(e))
            return
    ok = arc.cookie_at >= payload.gguf.data_end and arc.start >= 0
    rep.add("start-up", ok, f"the bootloader's scan stops {payload.file_size - arc.cookie_at:,} bytes from the end"
            if ok else "the last PyInstaller cookie is before the model: every start would scan the whole model")


def _why_no_end_record(path: str) -> str | None:
    """For a file without a ZIP end record: whether it is a packed file cut short, or None when
    nothing says so."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - (1 << 17)))
        last = f.read()
        at = last.rfind(EOCD_MAGIC)
        while at >= 0:  # the last end record whose comment ends in the file: bytes after it were appended
            end = at + EOCD.size + (EOCD.unpack_from(last, at)[7] if at + EOCD.size <= len(last) else 1 << 17)
            if end <= len(last):
                return (f"{len(last) - end:,} bytes follow the ZIP end record at offset {size - len(last) + at:,}: "
                        "something was appended to the file")
            at = last.rfind(EOCD_MAGIC, 0, at)
        if CDIR_MAGIC in last or EOCD_MAGIC in last:  # pieces of a directory or an end record
            return (f"truncated: the ZIP directory or end record at the end is cut short at {size:,} bytes "
                    "(a partial download or copy)")
        try:
            arc = pyiarchive.read_archive(f, size)
        except pyiarchive.ArchiveError:
            return (f"no ZIP end record and no complete runtime in {size:,} bytes: not a packed file, or one cut "
                    f"short inside its runtime (a partial download or copy)")
        runtime_end = arc.start + arc.toc_offset + arc.toc_length + pyiarchive.COOKIE.size  # its own cookie's end
        f.seek(runtime_end)  # then the runtime's last bytes (ELF section headers), then the entries
        at = f.read(1 << 16).find(ARGS_HEADER_START)
        if at >= 0:
            return (f"truncated: ZIP entries start at offset {runtime_end + at:,} after the runtime, but the file "
                    f"ends at {size:,} bytes without the ZIP directory (a partial download or copy)")
    return None
