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
from packer.runtime_build import build_runtime_once
from runtime.launcher import ALIGNMENT, LauncherError, _find_end, merge_args, parse_args_text, read_payload, read_zip

ROOT = Path(__file__).resolve().parent.parent
MOE = ROOT / "tests/fixtures/models/moe-Q4_0.gguf"
OUT = ROOT / "tests" / "out"
PROMPT = "Once upon a time"


@pytest.fixture(scope="session")
def runtime_exe() -> Path:
    return build_runtime_once(OUT / "dist", OUT / "pyinstaller")


@pytest.fixture(scope="module")
def packed(runtime_exe, smollm2_path, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("launch")
    return {"smollm2": build(smollm2_path, d / "smollm2.llamafile", runtime_exe, progress=False).output,
            "moe": build(MOE, d / "moe.llamafile", runtime_exe, args=["-c", "256", "..."], progress=False).output}


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


def test_dash_m_takes_a_gguf_or_another_packed_file(packed) -> None:
    expected = engine_text(MOE, PROMPT, 8, n_ctx=256)
    for model in (MOE, packed["moe"]):
        r = run(packed["smollm2"], "-m", str(model), "-p", PROMPT, "-n", "8", "--temp", "0", "-c", "256")
        assert r.returncode == 0, r.stderr
        assert r.stdout == expected + "\n"
        assert f"llamapack: {model.name}: llama, 1 layers" in r.stderr


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
        cd_offset = _find_end(fh, size)[0]
        crc = zlib.crc32(b"\xff\xfe\n").to_bytes(4, "little")
        for at, data in ((args.data_offset, b"\xff\xfe\n"), (args.header_offset + 14, crc), (cd_offset + 16, crc)):
            fh.seek(at)
            fh.write(data)
    with pytest.raises(LauncherError, match="not UTF-8"):
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
        cd_offset = _find_end(fh, size)[0]
        entries = read_zip(fh, size)
        at = cd_offset + 46 + len(".args") + 16  # second entry's compressed size (no extra on .args)
        assert entries[1].size < 1 << 31
        fh.seek(at + 4)
        fh.write((size).to_bytes(4, "little"))
        fh.seek(at + 8)
        fh.write((size).to_bytes(4, "little"))
    with pytest.raises(LauncherError, match="truncated file: moe-Q4_0.gguf ends at"):
        read_payload(str(f))
    assert os.path.getsize(f) == size
