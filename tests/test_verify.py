"""`packer inspect` and `packer verify`: what they show, and that verify names every kind of
damage (a cut anywhere, a flipped bit in each part of the file), reading with bounded memory.
"""
from __future__ import annotations

import os
import shutil
import struct
import zipfile
from pathlib import Path


from packer.pyiarchive import read_archive
from packer.verify import inspect, verify
from runtime.payload import read_payload
from tests.test_packer import packer

ROOT = Path(__file__).resolve().parent.parent
MOE = ROOT / "tests/fixtures/models/moe-Q4_0.gguf"


def test_inspect_and_verify(packed) -> None:
    listing = inspect(str(packed["moe"]))
    rows = dict(listing)
    assert "aligned to 65536" in " ".join(v for k, v in listing if k == "entry")
    assert rows["args"] == "-c 256 ..."
    assert "llamapack 0.1.0" in rows["runtime"] and "-> the runtime's own archive" in rows["start-up"]
    assert "8 experts (2 used)" in rows["architecture"]
    r = packer("inspect", str(packed["smollm2"]))
    assert r.returncode == 0 and "chat template  yes" in r.stdout and "Q4_1" in r.stdout, r.stderr
    r = packer("verify", str(packed["smollm2"]))
    assert r.returncode == 0 and r.stdout.rstrip().endswith("verified") and "FAIL" not in r.stdout


def test_inspect_quotes_arguments_as_a_shell_would(runtime_exe, tmp_path) -> None:
    """.args lines with spaces are shown quoted, as --args took them (`-p Hello world` read as three)."""
    from packer.build import build

    out = build(MOE, tmp_path / "q.llamafile", runtime_exe, args=["-p", "Hello world", "..."], progress=False).output
    assert dict(inspect(str(out)))["args"] == "-p 'Hello world' ..."


def test_verify_catches_a_flipped_byte(packed, tmp_path) -> None:
    bad = tmp_path / "bad.llamafile"
    shutil.copyfile(packed["moe"], bad)
    g = read_payload(str(bad)).gguf
    with open(bad, "r+b") as fh:
        fh.seek(g.data_offset + g.size // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0xFF]))
    r = packer("verify", str(bad))
    assert r.returncode == 1 and "FAIL  crc moe-Q4_0.gguf" in r.stdout and r.stdout.rstrip().endswith("FAILED")


def test_an_entry_that_is_no_gguf_is_named_once(packed, runtime_exe, tmp_path) -> None:
    """A model entry whose bytes are not a GGUF: the check `gguf` says why, without a second "gguf:"
    ("FAIL  gguf: gguf: bad magic ..."); `packer build` of such a file names it once too."""
    bad = tmp_path / "bad.llamafile"
    shutil.copyfile(packed["moe"], bad)
    with open(bad, "r+b") as fh:
        fh.seek(read_payload(str(bad)).gguf.data_offset)
        fh.write(b"XXXX")
    r = packer("verify", str(bad))
    assert r.returncode == 1 and r.stdout.rstrip().endswith("FAILED"), r.stdout
    line = next(line for line in r.stdout.splitlines() if line.startswith("FAIL  gguf"))
    assert line.startswith("FAIL  gguf: bad magic b'XXXX' at offset "), line
    assert "gguf: gguf" not in r.stdout + r.stderr
    text = tmp_path / "notes.gguf"
    text.write_text("hello\n")
    r = packer("build", str(text), "-o", str(tmp_path / "x.llamafile"), "--runtime", str(runtime_exe))
    assert r.returncode == 1 and r.stderr == f"error: {text}: bad magic b'hell' at offset 0 (not a GGUF file)\n"


def test_verify_names_args_the_launcher_would_drop(runtime_exe, tmp_path) -> None:
    """A file whose .args hold two modes (built by a packer that let them through, or by build()
    itself, which takes the lines as given): the .args check fails, naming them."""
    from packer.build import build

    out = build(MOE, tmp_path / "m.llamafile", runtime_exe, args=["--server", "--chat", "..."], progress=False).output
    r = packer("verify", str(out))
    assert r.returncode == 1 and "FAIL  .args: --chat and --server are two modes at once: give one" in r.stdout, r.stdout


def flip_byte(path: Path, at: int) -> None:
    """Changes one byte, undone by a second call. A hex digit stays a hex digit (0<->1, 2<->3, ...,
    a<->b, ..., e<->f), so that a recorded CRC changes its value, not its syntax."""
    with open(path, "r+b") as fh:
        fh.seek(at)
        b = fh.read(1)[0]
        fh.seek(at)
        hexdigits = b"0123456789abcdef"
        fh.write(bytes([hexdigits[hexdigits.index(b) ^ 1] if b in hexdigits else b ^ 0x01]))


def test_verify_names_each_kind_of_damage(packed, tmp_path) -> None:
    """One flipped bit anywhere (the bootloader, the Python archive, a local header, the zeros
    before the GGUF, the weights, the tail cookie, a harmless field of the directory, the checksum
    record) or a cut anywhere: `packer verify` fails, naming the part. Starting such a file gives
    PyInstaller's errors, a crash, or nothing visible (a flipped weight)."""
    from runtime.payload import find_end

    f = tmp_path / "damaged.llamafile"
    shutil.copyfile(packed["moe"], f)
    size = f.stat().st_size
    p = read_payload(str(f))
    args, g = sorted(p.entries, key=lambda e: e.header_offset)
    with open(f, "rb") as fh:
        arc, end = read_archive(fh, size), find_end(fh, size)
    flips = {"bootloader": (0x3000, "runtime"), "python archive": (arc.start + 100, "runtime"),
             "gguf local header": (g.header_offset + 10, "headers"), "alignment zeros": (args.data_end + 5, "headers"),
             "weights": (g.data_offset + g.size // 2, f"crc {g.name}"), "tail cookie": (arc.cookie_at + 20, "tail"),
             "directory time field": (end.cd_offset + 12, "directory"),
             "checksum record": (end.eocd_at + 22 + 3, "checksums"), "a recorded crc": (size - 1, "directory")}
    for what, (at, part) in flips.items():
        flip_byte(f, at)
        rep = verify(str(f))
        flip_byte(f, at)
        failed = [c.name for c in rep.checks if not c.ok]
        assert not rep.ok and part in failed, (what, failed)
    assert verify(str(f)).ok  # every flip undone
    flip_byte(f, end.cd_offset + 12)  # the launcher reads this file fine; verify does not pass it
    read_payload(str(f))
    r = packer("verify", str(f))
    assert r.returncode == 1 and "FAIL  directory:" in r.stdout and "central directory and end records damaged" \
        in r.stdout and r.stdout.rstrip().endswith("FAILED"), r.stdout
    flip_byte(f, end.cd_offset + 12)

    cuts = {"inside the runtime": (size // 3, "no complete runtime"), "inside the weights": (g.data_offset + 100,
            f"ZIP entries start at offset {args.header_offset:,}"), "inside the end record": (size - 1, "cut short")}
    for what, (n, needle) in cuts.items():
        cut = tmp_path / "cut.llamafile"
        with open(f, "rb") as src, open(cut, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.truncate(cut, n)
        r = packer("verify", str(cut))
        assert r.returncode == 1 and "FAIL  zip:" in r.stdout and needle in r.stdout, (what, r.stdout)
        assert "truncated" in r.stdout or "cut short" in r.stdout, (what, r.stdout)
    # bytes appended after the end record are named as such (not as a file cut short)
    with open(f, "ab") as fh:
        fh.write(b"junk" * 10)
    r = packer("verify", str(f))
    assert r.returncode == 1 and f"40 bytes follow the ZIP end record at offset {end.eocd_at:,}" in r.stdout, r.stdout
    assert "truncated" not in r.stdout and "cut short" not in r.stdout


def test_verify_inflates_a_deflated_entry_piece_by_piece(tmp_path) -> None:
    """A deflated entry is checked 1 MiB at a time: one claiming 10^9 bytes that inflates to 64 MiB
    neither fills the memory nor passes; a sound one passes."""
    import tracemalloc

    from packer.verify import Report, _check_entry
    from tests.ziptail import aligned_zip, patch_sizes

    f = aligned_zip(tmp_path / "d.zip", b"x", (b"\n" * (64 << 20), zipfile.ZIP_DEFLATED), MOE.name, b"GGUF")
    rep = Report()
    with open(f, "rb") as fh:
        _check_entry(rep, fh, read_payload_entries(f)[0])
    assert rep.ok, rep.checks
    patch_sizes(f, ".args", 10 ** 9)
    rep = Report()
    tracemalloc.start()
    try:
        with open(f, "rb") as fh:
            _check_entry(rep, fh, read_payload_entries(f)[0])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not rep.ok and "does not inflate to its size" in rep.checks[0].detail and peak < 8 << 20, (rep, peak)


def read_payload_entries(path: Path):
    from runtime.payload import read_zip

    with open(path, "rb") as fh:
        return read_zip(fh, path.stat().st_size)


def test_checksum_record_covers_every_byte(packed) -> None:
    """The entries' CRCs and the four recorded parts (runtime, headers, tail, directory) tile the file."""
    from runtime.payload import checksum_ranges, find_end, read_checksum_comment

    for f in packed.values():
        size = f.stat().st_size
        p = read_payload(str(f))
        with open(f, "rb") as fh:
            end = find_end(fh, size)
        assert read_checksum_comment(end.comment) is not None
        ranges = sorted([r for rs in checksum_ranges(p.entries, end).values() for r in rs] +
                        [(e.data_offset, e.data_end) for e in p.entries])
        ranges.append((end.eocd_at + 22, size))  # the comment itself: checked against its own CRCs
        assert ranges[0][0] == 0 and ranges[-1][1] == size
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])), ranges


def test_runtime_facts_entry_of_a_damaged_size_is_not_read(runtime_exe, tmp_path) -> None:
    """A table of contents whose facts entry claims 4 GiB: `packer inspect` shows no facts, without
    reading the file into memory."""
    import tracemalloc

    from packer.pyiarchive import INFO_NAME, TOC_ENTRY, runtime_info

    f = tmp_path / "rt"
    shutil.copyfile(runtime_exe, f)
    with open(f, "r+b") as fh:
        arc = read_archive(fh, f.stat().st_size)
        fh.seek(arc.start + arc.toc_offset)
        toc = fh.read(arc.toc_length)
        at = arc.start + arc.toc_offset + toc.index(INFO_NAME.encode()) - TOC_ENTRY.size
        fh.seek(at + 8)  # the entry's length field
        fh.write(struct.pack("!I", 0xFFFFFFF0))
    tracemalloc.start()
    try:
        assert runtime_info(f) == {}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
