"""The launcher inside a packed file, run as the user runs it: the real executable, under
`env -i` (no venv, no PYTHONPATH), against the engine's own greedy output; `.args`; `-m`;
modes; and broken files, each ending in one line on stderr and a non-zero exit.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
import zlib
from pathlib import Path

import pytest

from tests.cliutil import assert_one_line_error

from packer.build import build
from runtime.payload import ALIGNMENT, PayloadError, find_end, merge_args, parse_args_text, read_payload, read_zip

ROOT = Path(__file__).resolve().parent.parent
MOE = ROOT / "tests/fixtures/models/moe-Q4_0.gguf"
PROMPT = "Once upon a time"


def engine_text(model: Path, prompt: str, n: int, n_ctx: int = 4096) -> str:
    from runtime.engine import Engine

    eng = Engine.load(model, n_ctx=n_ctx)
    try:
        return "".join(eng.generate(prompt, max_tokens=n, temp=0))
    finally:
        eng.close()


def run(exe: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120,
        stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, env=env, stdin=stdin)


# -- running ------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["smollm2", "moe"])
def test_packed_file_under_env_i_gives_the_engines_greedy_text(packed, which, smollm2_path) -> None:
    model = {"smollm2": Path(smollm2_path), "moe": MOE}[which]
    expected = engine_text(model, PROMPT, 16, n_ctx=256 if which == "moe" else 4096)
    r = subprocess.run(["env", "-i", str(packed[which]), "-p", PROMPT, "-n", "16", "--temp", "0"],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected + "\n"
    assert f"ctx {256 if which == 'moe' else 4096}" in r.stderr  # the moe file's .args: -c 256


def test_version_answers_at_once(packed) -> None:
    t0 = time.perf_counter()
    r = run(packed["smollm2"], "--version")
    assert r.returncode == 0 and r.stdout.strip() == "llamapack 0.1.0" and r.stderr == ""
    assert time.perf_counter() - t0 < 5


def test_args_convention(runtime_exe, tmp_path) -> None:
    """`.args` lines are defaults; `...` marks where the user's arguments go (else they follow)."""
    after = build(MOE, tmp_path / "after.llamafile", runtime_exe, args=["-n", "3", "--temp", "0", "..."],
                  progress=False).output
    before = build(MOE, tmp_path / "before.llamafile", runtime_exe, args=["--temp", "0", "...", "-n", "3"],
                   progress=False).output
    assert "generation 3 tokens" in run(after, "-p", "Hi").stderr
    assert "generation 5 tokens" in run(after, "-p", "Hi", "-n", "5").stderr    # the user's come last: they win
    assert "generation 3 tokens" in run(before, "-p", "Hi", "-n", "5").stderr   # stored after `...`: they win


def test_the_users_mode_wins_over_the_args_one(runtime_exe, tmp_path) -> None:
    """.args `--server` (or `-p`): the user's --chat runs the chat (the server started, or the
    stored prompt ran, whatever the user asked)."""
    for stored in (["--server", "--nobrowser", "--temp", "0"], ["-p", "stored", "--temp", "0"]):
        f = build(MOE, tmp_path / f"{stored[0].strip('-')}.llamafile", runtime_exe, args=stored,
                  progress=False).output
        r = subprocess.run([str(f), "--chat", "-n", "3"], input="Hi\n", capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0 and "[3 tokens" in r.stderr and "serving" not in r.stderr, r.stderr


def test_args_may_name_the_files_own_entry(runtime_exe, tmp_path) -> None:
    """llamafile's .args say `-m NAME.gguf`, the ZIP entry; the launcher takes its own weights."""
    f = build(MOE, tmp_path / "m.llamafile", runtime_exe, args=["-m", MOE.name, "-c", "256", "..."],
              progress=False).output
    r = subprocess.run([str(f), "-p", PROMPT, "-n", "4", "--temp", "0"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stdout == engine_text(MOE, PROMPT, 4, 256) + "\n", r.stderr


def test_merge_args() -> None:
    assert merge_args(["-c", "2048", "..."], ["-p", "x"]) == ["-c", "2048", "-p", "x"]
    assert merge_args(["-c", "2048"], ["-p", "x"]) == ["-c", "2048", "-p", "x"]
    assert merge_args(["...", "--temp", "0"], ["-p", "x"]) == ["-p", "x", "--temp", "0"]
    assert merge_args(None, ["-p", "x"]) == ["-p", "x"]
    assert parse_args_text(b"-c\n2048\r\n...\n") == ["-c", "2048", "..."]
    assert parse_args_text(b"-p\nhello world\n") == ["-p", "hello world"]


def test_start_up_path_is_standard_library_only_and_acyclic() -> None:
    """The launcher, the payload reader and the command line load only the standard library (numpy
    and the kernels load with the model), and neither cli nor payload imports the launcher back,
    even inside a function: the launcher sits on top, with no import cycle."""
    import ast

    code = ("import sys; before = set(sys.modules)\n"
            "import runtime.launcher, runtime.payload, runtime.cli\n"
            "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
            "print(' '.join(sorted(new - set(sys.stdlib_module_names))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["runtime"], r.stdout + r.stderr
    for module in ("runtime/cli.py", "runtime/payload.py"):
        tree = ast.parse((ROOT / module).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "runtime.launcher" not in imported, module


def test_dash_m_takes_a_gguf_or_another_packed_file(packed) -> None:
    expected = engine_text(MOE, PROMPT, 8, n_ctx=256)
    for model in (MOE, packed["moe"]):
        r = run(packed["smollm2"], "-m", str(model), "-p", PROMPT, "-n", "8", "--temp", "0", "-c", "256")
        assert r.returncode == 0, r.stderr
        assert r.stdout == expected + "\n"
        assert f"llamapack: {model.name}: llama, 1 layer, " in r.stderr


def test_bare_runtime_runs_a_gguf_given_with_dash_m(runtime_exe) -> None:
    r = run(runtime_exe, "-m", str(MOE), "-p", PROMPT, "-n", "4", "--temp", "0", "-c", "256")
    assert r.returncode == 0 and r.stdout == engine_text(MOE, PROMPT, 4, 256) + "\n", r.stderr


def test_python_dash_m_runtime_reads_a_packed_file_too(packed) -> None:
    r = subprocess.run([sys.executable, "-m", "runtime", "-m", str(packed["moe"]), "-p", PROMPT, "-n", "4",
                        "--temp", "0", "-c", "256"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout == engine_text(MOE, PROMPT, 4, 256) + "\n", r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_available() -> bool:
    try:
        from runtime.server import serve  # noqa: F401
    except ImportError:
        return False
    return True


def wait_health(port: int, proc: subprocess.Popen, timeout: float = 60) -> dict:
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                return json.loads(resp.read())
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the server did not answer")


def test_server_mode(packed) -> None:
    port = free_port()
    p = subprocess.Popen([str(packed["moe"]), "--server", "--nobrowser", "--port", str(port)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if not server_available():
            err = p.communicate(timeout=60)[1]
            return assert_one_line_error(subprocess.CompletedProcess([], p.returncode, "", err), "server mode is not available")
        assert wait_health(port, p)["status"] == "ok"
        p.send_signal(2)
        p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


def test_no_arguments_and_no_terminal_serves_and_opens_the_browser(runtime_exe, tmp_path) -> None:
    """A double-click: stdin is not a terminal, so the web UI; the browser opens on its URL."""
    port = free_port()
    f = build(MOE, tmp_path / "m.llamafile", runtime_exe, args=["-c", "256", "--port", str(port), "..."],
              progress=False).output
    seen = tmp_path / "browser-was-asked-for"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > "{seen}"\n')
    browser.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BROWSER": str(browser)}
    p = subprocess.Popen([str(f)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    try:
        if not server_available():
            err = p.communicate(timeout=60)[1]
            return assert_one_line_error(subprocess.CompletedProcess([], p.returncode, "", err), "server mode is not available")
        assert wait_health(port, p)["status"] == "ok"
        deadline = time.monotonic() + 30
        while not seen.exists():
            assert time.monotonic() < deadline, "the browser was not opened"
            time.sleep(0.1)
        assert seen.read_text().strip() == f"http://127.0.0.1:{port}/"
        p.send_signal(2)
        p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


# -- broken files ---------------------------------------------------------------------------

def runtime_plus_zip(runtime_exe: Path, path: Path, entries: list[tuple[str, bytes, int]]) -> Path:
    """The runtime with a ZIP appended by the stdlib (no alignment, no tail cookie)."""
    shutil.copyfile(runtime_exe, path)
    path.chmod(0o755)
    with zipfile.ZipFile(path, "a") as z:
        for name, data, method in entries:
            z.writestr(name, data, compress_type=method)
    return path


def test_broken_files_give_one_line_errors(runtime_exe, packed, tmp_path) -> None:
    gguf = MOE.read_bytes()
    stored, deflated = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
    cases = {
        "compressed": ([("moe.gguf", gguf, deflated)], "is compressed"),
        "misaligned": ([(".args", b"...\n", stored), ("moe.gguf", gguf, stored)], "not 65536-aligned"),
        "two": ([("a.gguf", gguf, stored), ("b.gguf", gguf, stored)], "2 .gguf entries"),
        "none": ([(".args", b"-c\n256\n", stored)], "no .gguf entry"),
    }
    for name, (entries, needle) in cases.items():
        f = runtime_plus_zip(runtime_exe, tmp_path / f"{name}.llamafile", entries)
        if name == "misaligned":
            assert read_zip(open(f, "rb"), f.stat().st_size)[1].data_offset % ALIGNMENT != 0
        assert_one_line_error(run(f, "-p", "Hi", "-n", "2"), needle)

    half = tmp_path / "truncated.llamafile"
    with open(packed["smollm2"], "rb") as src, open(half, "wb") as dst:
        dst.write(src.read(packed["smollm2"].stat().st_size // 2))
    half.chmod(0o755)
    assert_one_line_error(run(half, "-p", "Hi"), "truncated")
    assert_one_line_error(run(runtime_exe, "-p", "Hi"), "no model inside")


def test_bad_args_entries(runtime_exe, tmp_path) -> None:
    unknown = build(MOE, tmp_path / "unknown.llamafile", runtime_exe, args=["--no-such-flag"], progress=False).output
    assert_one_line_error(run(unknown, "-p", "Hi"), "bad .args in unknown.llamafile: unrecognized arguments: --no-such-flag")

    f = build(MOE, tmp_path / "binary.llamafile", runtime_exe, args=["ab"], progress=False).output
    size = f.stat().st_size
    with open(f, "r+b") as fh:  # .args := b"\xff\xfe\n" with matching CRCs: readable, but not text
        args = read_zip(fh, size)[0]
        cd_offset = find_end(fh, size).cd_offset
        crc = zlib.crc32(b"\xff\xfe\n").to_bytes(4, "little")
        for at, data in ((args.data_offset, b"\xff\xfe\n"), (args.header_offset + 14, crc), (cd_offset + 16, crc)):
            fh.seek(at)
            fh.write(data)
    with pytest.raises(PayloadError, match="not UTF-8"):
        read_payload(str(f))
    assert_one_line_error(run(f, "-p", "Hi"), "bad .args: not UTF-8")


def test_bad_dash_m(packed, tmp_path) -> None:
    assert_one_line_error(run(packed["moe"], "-m", str(tmp_path / "nope.gguf"), "-p", "Hi"), "model file not found")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\0" * 4096)
    assert_one_line_error(run(packed["moe"], "-m", str(junk), "-p", "Hi"), "neither a GGUF file nor a packed file")
    assert_one_line_error(run(packed["moe"], "--no-such-flag"), "unrecognized arguments")


def test_reader_rejects_lying_directories(packed, tmp_path) -> None:
    """A central directory whose sizes point past it: an error naming the entry, never a crash."""
    f = tmp_path / "lying.llamafile"
    shutil.copyfile(packed["moe"], f)
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        cd_offset = find_end(fh, size).cd_offset
        entries = read_zip(fh, size)
        at = cd_offset + 46 + len(".args") + 16  # second entry's compressed size (no extra on .args)
        assert entries[1].size < 1 << 31
        fh.seek(at + 4)
        fh.write((size).to_bytes(4, "little"))
        fh.seek(at + 8)
        fh.write((size).to_bytes(4, "little"))
    with pytest.raises(PayloadError, match="damaged or truncated file: moe-Q4_0.gguf ends at"):
        read_payload(str(f))
    assert os.path.getsize(f) == size


# -- hostile .args ---------------------------------------------------------------------------

def test_deflated_args_cannot_inflate_past_its_declared_size(runtime_exe, tmp_path) -> None:
    """A .args declared as 16 bytes whose deflate data makes 64 MiB: refused after 17 bytes, the
    memory never holding the rest; -m on such a file takes its weights and leaves its .args alone."""
    import tracemalloc

    from tests.ziptail import aligned_zip, patch_sizes

    bomb = aligned_zip(tmp_path / "bomb.llamafile", b"x", (b"\n" * (64 << 20), zipfile.ZIP_DEFLATED), MOE.name,
                       MOE.read_bytes())
    patch_sizes(bomb, ".args", 16)
    tracemalloc.start()
    try:
        with pytest.raises(PayloadError, match=r"\.args: inflates past its declared size of 16 bytes"):
            read_payload(str(bomb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak
    assert read_payload(str(bomb), with_args=False).gguf.name == MOE.name
    r = run(runtime_exe, "-m", str(bomb), "-p", PROMPT, "-n", "2", "--temp", "0", "-c", "64")
    assert r.returncode == 0 and r.stdout == engine_text(MOE, PROMPT, 2, 64) + "\n", r.stderr

    own = tmp_path / "own.llamafile"  # the same bytes behind the runtime: the file's own .args
    aligned_zip(own, runtime_exe.read_bytes(), (b"\n" * (64 << 20), zipfile.ZIP_DEFLATED), MOE.name, MOE.read_bytes())
    patch_sizes(own, ".args", 16)
    own.chmod(0o755)
    assert_one_line_error(run(own, "-p", "Hi"), ".args: inflates past its declared size")


def test_deflated_args_cut_short_or_not_deflate(tmp_path) -> None:
    from tests.ziptail import aligned_zip, patch_sizes

    f = aligned_zip(tmp_path / "a.llamafile", b"x", (b"-c\n256\n", zipfile.ZIP_DEFLATED), MOE.name, MOE.read_bytes())
    patch_sizes(f, ".args", 100)  # the stream ends before the declared size
    with pytest.raises(PayloadError, match="CRC or size mismatch"):
        read_payload(str(f))
    g = aligned_zip(tmp_path / "b.llamafile", b"x", (b"-c\n256\n", zipfile.ZIP_DEFLATED), MOE.name, MOE.read_bytes())
    with open(g, "r+b") as fh:  # the deflate block header made invalid (BTYPE 11)
        fh.seek(read_zip(fh, g.stat().st_size)[0].data_offset)
        fh.write(b"\x07")
    with pytest.raises(PayloadError, match="bad deflate data"):
        read_payload(str(g))


def test_args_with_too_many_lines(runtime_exe, tmp_path) -> None:
    """argparse's cost grows with the square of the argument count (10^5 lines took minutes): the
    launcher refuses more than MAX_ARGS_LINES lines at once, and `packer build --args` too."""
    from runtime.payload import MAX_ARGS_LINES

    text = b"-c\n256\n" * 50_000
    t0 = time.perf_counter()
    with pytest.raises(PayloadError, match=f"bad .args: 100000 lines, more than the {MAX_ARGS_LINES}"):
        parse_args_text(text)
    assert time.perf_counter() - t0 < 5  # refused before any parsing (minutes before the cap)
    assert len(parse_args_text(b"-c\n256\n" * (MAX_ARGS_LINES // 2))) == MAX_ARGS_LINES
    f = build(MOE, tmp_path / "many.llamafile", runtime_exe, args=["-c", "256"] * 1000, progress=False).output
    assert_one_line_error(run(f, "-p", "Hi"), "bad .args: 2000 lines")
    from tests.test_packer import packer

    r = packer("build", str(MOE), "-o", str(tmp_path / "x.llamafile"), "--runtime", str(runtime_exe),
               "--args", "-c 256 " * 1000)
    assert_one_line_error(r, f"bad --args: 2000 arguments, more than the {MAX_ARGS_LINES}")
    assert not (tmp_path / "x.llamafile").exists()


# -- hostile directories ----------------------------------------------------------------------

def hostile_tails(entries, cd_at: int) -> dict[str, tuple[bytes, str]]:
    """name -> (a directory + end records with one field from the file set to 2**63 or past the file,
    the error it must give)."""
    from tests.ziptail import central, end_records

    big = 1 << 63
    args, gguf = entries

    def tail(g_over: dict | None = None, zip64: bool = True, **end_over) -> bytes:
        cd = central(args, zip64=zip64) + central(gguf, zip64=zip64, **(g_over or {}))
        return cd + end_records(cd_at, cd, 2, zip64=zip64, **end_over)

    return {
        "offset 2^63": (tail({"header_offset": big}), "local header offset 9223372036854775808 is past"),
        "offset 2^64-1": (tail({"header_offset": (1 << 64) - 1}), "is past the central directory"),
        "size 2^63": (tail({"size": big, "compressed_size": big}), "truncated file: moe-Q4_0.gguf ends at"),
        "directory at 2^63": (tail(cd_offset=big), "runs past the end records"),
        "directory size 2^63": (tail(cd_size=big), "too large for a packed file"),
        "zip64 record at 2^63": (tail(rec_at=big), "bad zip64 end record locator"),
        "count 2^63": (tail(count=big), "entries cannot fit in a central directory"),
        "32-bit offset past the file": (tail({"header_offset": U32_MAX - 1}, zip64=False), "is past the central"),
        "comment past the directory": (tail({"n_comment": 60000}), "runs past the directory"),
        "entries on this disk": (tail(zip64=False, disk_count=1), "damaged end record: 1 entries on this disk, 2 in"),
    }


U32_MAX = 0xFFFFFFFF


def test_hostile_offsets_sizes_and_counts_give_one_line(packed, tmp_path) -> None:
    """A zip64 offset of 2^63 (a traceback once: OverflowError in a seek), sizes and counts past the
    file, in the central directory, the zip64 extra, the zip64 end record and its locator."""
    from tests.ziptail import entries_and_end, set_tail, zip64_tail

    f = tmp_path / "hostile.llamafile"
    shutil.copyfile(packed["moe"], f)
    f.chmod(0o755)
    entries, cd_at = entries_and_end(f)
    set_tail(f, cd_at, zip64_tail(f))  # the same file in zip64 form still reads
    assert read_payload(str(f)).gguf == read_payload(str(packed["moe"])).gguf
    for name, (tail, needle) in hostile_tails(entries, cd_at).items():
        set_tail(f, cd_at, tail)
        with pytest.raises(PayloadError) as e:
            read_payload(str(f))
        assert needle in str(e.value) and "\n" not in str(e.value), (name, str(e.value))
    for name in ("offset 2^63", "zip64 record at 2^63"):  # as the user meets it
        set_tail(f, cd_at, hostile_tails(entries, cd_at)[name][0])
        assert_one_line_error(run(f, "-p", "Hi"), hostile_tails(entries, cd_at)[name][1])
        assert_one_line_error(run(packed["smollm2"], "-m", str(f), "-p", "Hi"), "neither a GGUF file nor a packed")


def mutate(data: bytearray, rng) -> bytearray:
    """One random change: a byte, a run of bytes, or a 2/4/8-byte field set to an extreme."""
    out = bytearray(data)
    at = rng.randrange(len(out))
    kind = rng.randrange(4)
    if kind == 0:
        out[at] ^= 1 << rng.randrange(8)
    elif kind == 1:
        for i in range(at, min(len(out), at + rng.randrange(1, 16))):
            out[i] = rng.randrange(256)
    else:
        width = rng.choice((2, 4, 8))
        value = rng.choice((0, 1, (1 << 8 * width) - 1, 1 << 8 * width - 1, (1 << 8 * width - 1) - 1, 65536))
        out[at:at + width] = (value % (1 << 8 * width)).to_bytes(width, "little")[:len(out) - at]
    return out


def test_fuzzed_tails_work_or_fail_in_one_line(packed, runtime_exe, tmp_path) -> None:
    """Hundreds of random changes to a packed file's directory, end records (plain and zip64), local
    headers and .args: the launcher's reader either reads the file or raises a one-line PayloadError,
    never anything else; a few of them run through the real executable, and through `packer verify`
    (which fails every changed file) and `packer inspect`."""
    import random

    from tests.ziptail import entries_and_end, set_tail, zip64_tail

    from packer.pyiarchive import ArchiveError
    from packer.verify import inspect, verify
    from runtime.gguf import GGUFError

    f = tmp_path / "fuzz.llamafile"
    shutil.copyfile(packed["moe"], f)
    f.chmod(0o755)
    entries, cd_at = entries_and_end(f)
    args, gguf = entries
    with open(f, "rb") as fh:
        heads = {}  # offset -> bytes: the .args local header and data, the GGUF's local header
        for e, end in ((args, args.data_end), (gguf, gguf.data_offset)):
            fh.seek(e.header_offset)
            heads[e.header_offset] = fh.read(end - e.header_offset)
        fh.seek(cd_at)
        tails = [fh.read(), zip64_tail(f)]
    rng = random.Random(12)
    outcomes, samples = {"read": 0, "refused": 0}, []
    for i in range(600):
        tail = tails[i % 2]  # even: as built, with its checksum record; odd: the zip64 form, without
        where = rng.randrange(4)  # mostly the directory and end records, else a local header
        new_tail = bytes(mutate(bytearray(tail), rng)) if where < 3 else tail
        changed = new_tail != tail
        if where == 3 or rng.random() < 0.1:
            at = rng.choice(list(heads))
            head = bytes(mutate(bytearray(heads[at]), rng))
            changed |= head != heads[at]
            with open(f, "r+b") as fh:
                fh.seek(at)
                fh.write(head)
        if rng.random() < 0.1:
            new_tail, changed = new_tail[:rng.randrange(len(new_tail))], True  # truncated
        set_tail(f, cd_at, new_tail)
        try:
            read_payload(str(f))
            outcomes["read"] += 1
        except PayloadError as e:
            assert "\n" not in str(e) and str(e), (i, str(e))
            outcomes["refused"] += 1
        if i % 100 == 7:
            samples.append(run(f, "-p", "Hi", "-n", "1", "-c", "64"))
        if i % 20 == 4:  # `packer verify` and `packer inspect` read the same bytes: reports or one-line errors
            assert verify(str(f)).ok is not changed, i  # (even i: the checksum record catches every change)
            try:
                inspect(str(f))
            except (PayloadError, GGUFError, ArchiveError) as e:
                assert "\n" not in str(e), (i, str(e))
        with open(f, "r+b") as fh:  # undo the local header changes
            for at, raw in heads.items():
                fh.seek(at)
                fh.write(raw)
    assert outcomes["read"] > 10 and outcomes["refused"] > 300, outcomes
    for r in samples:
        assert "Traceback" not in r.stderr and r.returncode in (0, 1), r.stderr
        if r.returncode:
            assert_one_line_error(r, "")


# -- the packed file's process, its output and its terminal ---------------------------------

def test_a_reader_that_leaves_or_a_full_disk(packed) -> None:
    """`| head` closing early is no error and prints nothing more; a full disk is one line and
    status 1 (both printed "Exception ignored ... " at exit, status 120)."""
    exe = packed["smollm2"]
    r = subprocess.run(f"'{exe}' -p 'List fifty fruits, one per line:' -n 200 --temp 0 | head -c 1",
                       shell=True, capture_output=True, text=True, timeout=120, executable="/bin/bash")
    assert len(r.stdout) == 1 and "Exception" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run(f"'{exe}' -p 'List fifty fruits, one per line:' -n 200 --temp 0 | head -c 1; "
                       "exit ${PIPESTATUS[0]}", shell=True, capture_output=True, text=True, timeout=120,
                       executable="/bin/bash")
    assert r.returncode == 0, r.stderr
    with open("/dev/full", "w") as full:
        r = subprocess.run([str(exe), "-p", "Hello", "-n", "200", "--temp", "0"], stdout=full, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, text=True, timeout=120)
    errors = [line for line in r.stderr.splitlines() if not line.startswith("llamapack: ")]  # (the load lines)
    assert r.returncode == 1 and len(errors) == 1 and "No space left on device" in errors[0], r.stderr


def test_lines_piped_in_with_the_reply_on_a_terminal_are_a_chat(packed, smollm2_path) -> None:
    """`echo hi | ./model.llamafile` at a terminal answers (it started the server and waited for
    Ctrl-C): stdin is not a terminal, but stderr is."""
    import pty

    from runtime.launcher import default_mode

    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert default_mode(None, None, tty) == "chat" and default_mode(None, None, None) == "server"
        r = subprocess.run([str(packed["smollm2"]), "--temp", "0", "-n", "8"], input="What is the capital of France?\n",
                           stdout=subprocess.PIPE, stderr=slave, text=True, timeout=120)
    finally:
        os.close(slave)
        os.close(master)
    assert r.returncode == 0
    from runtime.engine import Engine
    from runtime.sampling import SamplingParams

    eng = Engine.load(smollm2_path)
    try:
        reply = "".join(c.text for c in eng.stream_chat([{"role": "user", "content": "What is the capital of France?"}],
                                                          max_tokens=8, params=SamplingParams(temp=0)))
    finally:
        eng.close()
    assert r.stdout == reply + "\n"


def test_lines_piped_in_with_no_terminal_at_all_are_a_chat(packed, tmp_path) -> None:
    """`echo hi | ./model.llamafile > out 2> log` in a script started the server (no terminal: taken
    for a double-click) and never ended; lines from a pipe or a file are a chat that ends with them."""
    from runtime.launcher import default_mode

    with open(tmp_path / "lines.txt", "w+") as f:
        f.write("hi\n")
        f.flush()
        assert default_mode(f, None, None) == "chat"
    with open(os.devnull) as null:
        assert default_mode(null, None, None) == "server"
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        r = subprocess.run([str(packed["smollm2"]), "--temp", "0", "-n", "4", "--port", "1"],
                           input="What is the capital of France?\n", stdout=out, stderr=err, text=True, timeout=120)
    assert r.returncode == 0, (tmp_path / "err").read_text()
    assert (tmp_path / "out").read_text().strip() and "serving" not in (tmp_path / "err").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
@pytest.mark.parametrize("mode", ["generating", "chat waiting for a line"])
def test_killing_the_visible_process_ends_the_worker_and_its_files(packed, tmp_path, mode) -> None:
    """The one-file build is two processes; SIGKILL to the first (what a task manager does) left the
    second generating into the terminal, and the unpacked runtime (83 MB) in the temp directory."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = ["-p", PROMPT, "-n", "100000", "--context-shift", "--temp", "0"] if mode == "generating" else \
        ["--chat", "--temp", "0", "-n", "4"]
    p = subprocess.Popen([str(packed["smollm2"]), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.PIPE, env={**os.environ, "TMPDIR": str(tmp)})
    try:
        deadline = time.monotonic() + 60
        child = None
        while child is None:
            assert time.monotonic() < deadline, "the worker did not start"
            kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
            child = int(kids[0]) if kids else None
            time.sleep(0.1)
        if mode == "generating":
            p.stdout.read(20)  # it generates
        else:
            p.stdin.write(b"Hi\n")
            p.stdin.flush()
            p.stdout.readline()  # its reply; now it waits for the next line
        assert list(tmp.iterdir())  # its unpacked runtime
        p.kill()
        p.wait(timeout=10)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child}").exists() and open(f"/proc/{child}/stat").read().split()[2] != "Z":
            assert time.monotonic() < deadline, "the worker goes on without its parent"
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        while list(tmp.iterdir()):
            assert time.monotonic() < deadline, f"left behind: {list(tmp.iterdir())}"
            time.sleep(0.1)
    finally:
        if p.poll() is None:
            p.kill()
        subprocess.run(["pkill", "-KILL", "-P", str(p.pid)], capture_output=True)
