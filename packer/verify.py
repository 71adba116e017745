"""`packer inspect FILE` (what is inside) and `packer verify FILE` (does it all hold).

Both read the file with the launcher's own ZIP reader (runtime/launcher.py), so they see
what a start would see.
"""
from __future__ import annotations

import os
import zlib
from collections import Counter
from dataclasses import dataclass, field

from packer import pyiarchive
from runtime.launcher import ALIGNMENT, ARGS_NAME, LauncherError, read_entry, read_payload, read_zip

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
        arch = md.get("general.architecture", "?")
        n_params = sum(t.n_elements for t in f.tensors.values())
        types = Counter()
        for t in f.tensors.values():
            types[GGMLType(t.type).name if t.type in GGMLType._value2member_map_ else str(t.type)] += t.nbytes
        total = sum(types.values()) or 1
        rows = [("name", str(md.get("general.name", "-"))),
                ("architecture", f"{arch}, {md.get(f'{arch}.block_count', '?')} layers, "
                                 f"{md.get(f'{arch}.embedding_length', '?')} embd"
                                 + (f", {md[f'{arch}.expert_count']} experts ({md.get(f'{arch}.expert_used_count')} used)"
                                    if md.get(f"{arch}.expert_count") else "")),
                ("parameters", f"{n_params / 1e6:,.1f} M in {len(f.tensors)} tensors"),
                ("quant types", ", ".join(f"{k} {v / total:.0%}" for k, v in types.most_common())),
                ("context", f"{md.get(f'{arch}.context_length', '?')} (training)"),
                ("chat template", "yes" if md.get("tokenizer.chat_template") else "no (a default is used)"),
                ("gguf", f"v{f.version}, {len(md)} metadata keys, tensor data at offset {f.data_offset}")]
    finally:
        f.close()
    return rows


def inspect(path: str) -> list[tuple[str, str]]:
    """(label, text) rows describing a packed file; raises LauncherError when it is not one."""
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
    rows.append(("args", " ".join(payload.args) if payload.args is not None else "(no .args entry)"))
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
    except (LauncherError, OSError) as e:
        rep.add("zip", False, str(e))
        return rep
    g = payload.gguf
    rep.add("zip", True, f"{len(payload.entries)} entries, central directory at the end")
    rep.add("alignment", g.data_offset % ALIGNMENT == 0, f"{g.name} data at offset {g.data_offset:,}")
    with open(path, "rb") as f:
        for e in payload.entries:
            if e.method != 0:
                try:
                    read_entry(f, e, 1 << 30)
                    rep.add(f"crc {e.name}", True, "deflated, matches")
                except LauncherError as err:
                    rep.add(f"crc {e.name}", False, str(err))
                continue
            f.seek(e.data_offset)
            crc, left = 0, e.size
            while left:
                chunk = f.read(min(VERIFY_CHUNK, left))
                if not chunk:
                    break
                crc = zlib.crc32(chunk, crc)
                left -= len(chunk)
            rep.add(f"crc {e.name}", left == 0 and crc == e.crc,
                    f"{crc:08x}" + ("" if crc == e.crc else f", central directory says {e.crc:08x}"))
    from runtime.gguf import GGUFError, GGUFFile

    try:
        gf = GGUFFile(path, g.data_offset)
        end = max((t.offset + t.nbytes for t in gf.tensors.values()), default=gf.data_offset)
        n = len(gf.tensors)
        gf.close()
        rep.add("gguf", end <= g.data_end, f"{n} tensors, {len(gf.metadata)} metadata keys" +
                ("" if end <= g.data_end else f", tensor data ends at {end:,}, past the entry's end {g.data_end:,}"))
    except GGUFError as e:
        rep.add("gguf", False, str(e))
    if payload.args is not None:
        from runtime.cli import ArgsError, build_parser

        try:
            build_parser(strict=True).parse_args([a for a in payload.args if a != "..."])
            rep.add(ARGS_NAME, True, " ".join(payload.args))
        except ArgsError as e:
            rep.add(ARGS_NAME, False, str(e))
    with open(path, "rb") as f:
        try:
            arc = pyiarchive.read_archive(f, payload.file_size)
            pyiarchive.read_toc(f, arc)
            ok = arc.cookie_at >= g.data_end and arc.start >= 0
            rep.add("start-up", ok, f"the bootloader's scan stops {payload.file_size - arc.cookie_at:,} bytes "
                                    f"from the end" if ok else "the last PyInstaller cookie is before the model: "
                                    "every start would scan the whole model")
        except pyiarchive.ArchiveError as e:
            rep.add("start-up", False, str(e))
    return rep
