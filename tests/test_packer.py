"""`packer build / inspect / verify`: the file layout, against `zipfile`, `unzip` and the
bootloader's cookie scan; user errors; what a failed or interrupted build leaves behind.

The runtime is the one `make` built into dist/ (PyInstaller, ~30 s); the `runtime_exe` fixture
builds it again only when its inputs changed since.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.cliutil import assert_one_line_error

from packer import build as build_mod
from packer.build import PackError, build, parse_args_option
from packer.pyiarchive import COOKIE, MAGIC, read_archive, read_toc
from packer.verify import Report, _check_parts, verify
from runtime.payload import ALIGNMENT, read_payload
from tools.bench_pack import write_padded_gguf

ROOT = Path(__file__).resolve().parent.parent
MOE = ROOT / "tests/fixtures/models/moe-Q4_0.gguf"


def sha256(path: Path, offset: int = 0, size: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        left = size if size is not None else os.path.getsize(path) - offset
        while left:
            chunk = f.read(min(left, 16 << 20))
            assert chunk
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def packer(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "packer.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


# -- layout ------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["smollm2", "moe"])
def test_zipfile_lists_and_extracts_byte_identical(packed, which, smollm2_path) -> None:
    src = {"smollm2": Path(smollm2_path), "moe": MOE}[which]
    with zipfile.ZipFile(packed[which]) as z:
        assert z.namelist() == [".args", src.name]
        assert z.testzip() is None  # every CRC
        info = z.getinfo(src.name)
        assert info.compress_type == zipfile.ZIP_STORED and info.file_size == src.stat().st_size
        h = hashlib.sha256()
        with z.open(info) as f:
            while chunk := f.read(16 << 20):
                h.update(chunk)
    assert h.hexdigest() == sha256(src)


@pytest.mark.parametrize("which", ["smollm2", "moe"])
def test_unzip_lists_without_warnings_and_extracts_identical(packed, which, smollm2_path) -> None:
    if shutil.which("unzip") is None:
        pytest.fail("unzip is missing: `make` installs it")
    src = {"smollm2": Path(smollm2_path), "moe": MOE}[which]
    r = subprocess.run(["unzip", "-l", str(packed[which])], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "warning" not in r.stdout.lower() and src.name in r.stdout and ".args" in r.stdout
    p = subprocess.run(f"unzip -p '{packed[which]}' '{src.name}' | sha256sum", shell=True, capture_output=True,
                       text=True)
    assert p.stdout.split()[0] == sha256(src)
    t = subprocess.run(["unzip", "-tq", str(packed[which])], capture_output=True, text=True)
    assert t.returncode == 0 and "No errors" in t.stdout, t.stdout + t.stderr


def test_gguf_data_is_aligned_and_the_runtime_verbatim(packed, runtime_exe, smollm2_path) -> None:
    f = packed["smollm2"]
    with zipfile.ZipFile(f) as z:
        info = z.getinfo(Path(smollm2_path).name)
    with open(f, "rb") as fh:  # the data offset from the local header, independently of our reader
        fh.seek(info.header_offset)
        n_name, n_extra = struct.unpack("<HH", fh.read(30)[26:30])
    data_at = info.header_offset + 30 + n_name + n_extra
    assert data_at % ALIGNMENT == 0
    assert read_payload(str(f)).gguf.data_offset == data_at
    size = runtime_exe.stat().st_size
    assert sha256(f, 0, size) == sha256(runtime_exe)
    assert os.access(f, os.X_OK)


def test_tail_cookie_keeps_the_bootloader_scan_short(packed, runtime_exe) -> None:
    """The last cookie magic sits right before the central directory and points back at the runtime's archive."""
    f = packed["smollm2"]
    size = f.stat().st_size
    with open(f, "rb") as fh:
        arc = read_archive(fh, size)
        assert size - arc.cookie_at < 1024
        assert arc.start < runtime_exe.stat().st_size  # the runtime's own archive, 88 bytes of tail
        assert "PYZ.pyz" in read_toc(fh, arc)
    with open(runtime_exe, "rb") as fh:
        own = read_archive(fh, runtime_exe.stat().st_size)
    assert (arc.start, arc.toc_offset, arc.toc_length) == (own.start, own.toc_offset, own.toc_length)


def test_full_archive_tail(runtime_exe, tmp_path) -> None:
    """When the cookie cannot reach back (> 4 GiB), a copy of the whole archive goes before the directory."""
    r = build(MOE, tmp_path / "m.llamafile", runtime_exe, progress=False, full_archive=True)
    assert r.tail == "archive"
    with open(r.output, "rb") as fh:
        arc = read_archive(fh, r.size)
        assert arc.start == r.model_offset + r.model_size
        assert "PYZ.pyz" in read_toc(fh, arc)
    assert verify(str(r.output)).ok
    out = subprocess.run([str(r.output), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("llamapack ")


def test_zip64_model_over_4_gib(runtime_exe, tmp_path) -> None:
    """A model of 4 GiB and more: zip64 sizes, and (the cookie cannot reach back) the archive copy."""
    src = write_padded_gguf(MOE, tmp_path / "huge.gguf", (1 << 32) + (1 << 20))
    try:
        r = build(src, tmp_path / "huge.llamafile", runtime_exe, progress=False)
        assert r.tail == "archive" and r.model_size >= 1 << 32 and r.model_offset % ALIGNMENT == 0
        with zipfile.ZipFile(r.output) as z:
            info = z.getinfo("huge.gguf")
            assert info.file_size == r.model_size and info.compress_type == zipfile.ZIP_STORED
        u = subprocess.run(["unzip", "-l", str(r.output)], capture_output=True, text=True)
        assert u.returncode == 0 and u.stderr == "" and str(r.model_size) in u.stdout, u.stderr
        assert read_payload(str(r.output)).gguf.size == r.model_size
        rep = Report()  # the recorded CRCs around the weights, zip64 end records included
        with open(r.output, "rb") as fh:
            _check_parts(rep, fh, read_payload(str(r.output)))
        assert rep.ok and [c.name for c in rep.checks] == ["runtime", "headers", "tail", "directory"], rep
        t0 = time.perf_counter()
        v = subprocess.run([str(r.output), "--version"], capture_output=True, text=True, timeout=120)
        assert v.returncode == 0, v.stderr
        assert time.perf_counter() - t0 < 5  # a scan of 4 GiB takes far longer
        g = subprocess.run([str(r.output), "-p", "Hello", "-n", "4", "--temp", "0", "-c", "64"], capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert g.returncode == 0 and "generation 4 tokens" in g.stderr, g.stderr
    finally:
        for p in tmp_path.iterdir():
            p.unlink()


def test_build_never_modifies_inputs(runtime_exe, tmp_path) -> None:
    before = (sha256(MOE), MOE.stat().st_mtime_ns, sha256(runtime_exe), runtime_exe.stat().st_mtime_ns)
    build(MOE, tmp_path / "a.llamafile", runtime_exe, progress=False)
    assert before == (sha256(MOE), MOE.stat().st_mtime_ns, sha256(runtime_exe), runtime_exe.stat().st_mtime_ns)


def test_build_is_reproducible(runtime_exe, tmp_path) -> None:
    a = build(MOE, tmp_path / "a.llamafile", runtime_exe, progress=False).output
    b = build(MOE, tmp_path / "b.llamafile", runtime_exe, progress=False).output
    assert sha256(a) == sha256(b)


def test_cli_build_and_progress_off_a_terminal(runtime_exe, tmp_path) -> None:
    out = tmp_path / "m.llamafile"
    r = packer("build", str(MOE), "-o", str(out), "--runtime", str(runtime_exe), "--args", "-c 512 --temp 0.5")
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("wrote ") and "\r" not in r.stderr and len(r.stderr.splitlines()) == 1
    assert read_payload(str(out)).args == ["-c", "512", "--temp", "0.5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.llamafile"]


# -- user errors --------------------------------------------------------------------------

def test_build_user_errors(runtime_exe, tmp_path, smollm2_path) -> None:
    out = str(tmp_path / "o.llamafile")
    rt = ["--runtime", str(runtime_exe)]
    assert_one_line_error(packer("build", str(tmp_path / "nope.gguf"), "-o", out, *rt), "model not found")
    assert_one_line_error(packer("build", str(MOE), "-o", out, "--runtime", str(tmp_path / "nope")), "runtime not found")
    notgguf = tmp_path / "x.gguf"
    notgguf.write_bytes(b"not a gguf at all" * 10)
    assert_one_line_error(packer("build", str(notgguf), "-o", out, *rt), "bad magic")
    assert_one_line_error(packer("build", str(MOE), "-o", str(MOE), *rt), "is the model itself")
    assert_one_line_error(packer("build", str(MOE), "-o", str(runtime_exe), "--runtime", str(runtime_exe)),
                   "is the runtime itself")
    assert_one_line_error(packer("build", str(MOE), "-o", out, *rt, "--args", "--no-such-flag"), "bad --args")
    assert_one_line_error(packer("build", str(MOE), "-o", out, *rt, "--args", "-c 'unclosed"), "bad --args")
    assert_one_line_error(packer("build", str(MOE), "-o", out, *rt, "--args", "--chat-template llama3x"),
                          "unknown chat template")
    assert_one_line_error(packer("build", str(MOE), "-o", out, *rt, "--args", "--port 99999"), "--port")
    for printing in ("--help", "-c 64 -h", "--version"):  # they would print and exit on every run
        assert_one_line_error(packer("build", str(MOE), "-o", out, *rt, "--args", printing), "print and exit")
    assert_one_line_error(packer("build", str(MOE), "-o", out, *rt, "--args", "--vers"),  # whole names only
                          "unrecognized arguments: --vers")
    assert_one_line_error(packer("build", str(MOE), "-o", str(tmp_path / "no/dir/o.llamafile"), *rt), "no such directory")
    assert_one_line_error(packer("build", str(MOE), "-o", str(tmp_path / "newdir") + "/", *rt),
                          f"the output {tmp_path / 'newdir'}/ names a directory, and there is none")
    assert_one_line_error(packer("build", str(MOE), "-o", out, "--runtime", "/bin/sh"), "no PyInstaller archive")
    packed = build(MOE, tmp_path / "p.llamafile", runtime_exe, progress=False).output
    assert_one_line_error(packer("build", str(MOE), "-o", out, "--runtime", str(packed)), "is a packed file")
    assert_one_line_error(packer("build", str(MOE)), "-o")
    assert_one_line_error(packer("inspect", str(MOE)), "no ZIP end record")
    assert_one_line_error(packer("verify", str(tmp_path / "nope.llamafile")), "does not exist")
    assert not (tmp_path / "o.llamafile").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.llamafile", "x.gguf"]


def test_a_model_file_name_that_is_not_utf8_packs(runtime_exe, tmp_path) -> None:
    """The ZIP entry's name is UTF-8: a file name's other bytes become U+FFFD (it was a traceback)."""
    name = tmp_path / os.fsdecode(b"bad\xffname.gguf")
    shutil.copyfile(MOE, name)
    out = build(name, tmp_path / "p.llamafile", runtime_exe, progress=False)
    assert out.model_entry == "bad\ufffdname.gguf"
    r = packer("verify", str(out.output))
    assert r.returncode == 0, r.stdout + r.stderr


def write_gguf(path: Path, arch: str, keys: dict, tensors: dict) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    for k, v in keys.items():
        getattr(w, f"add_{k}")(v)
    for name, data in tensors.items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def retype_tensor(path: Path, name: str, ggml_type: int) -> None:
    """Sets a tensor's type in the GGUF tensor table (same element size: the file stays consistent)."""
    raw = path.read_bytes()
    at = raw.index(struct.pack("<Q", len(name)) + name.encode()) + 8 + len(name)
    n_dims = struct.unpack_from("<I", raw, at)[0]
    at += 4 + 8 * n_dims
    path.write_bytes(raw[:at] + struct.pack("<I", ggml_type) + raw[at + 4:])


def test_build_refuses_a_model_the_runtime_cannot_run(runtime_exe, tmp_path) -> None:
    """Checked at build time with the runtime's own one-line reason: an architecture it does not
    implement, metadata it needs and lacks, a tensor type it cannot compute with. Nothing written."""
    import numpy as np

    from tests.tiny_models import TinySpec, write_tiny_llama

    phi2 = write_gguf(tmp_path / "phi2.gguf", "phi2", {"context_length": 128},
                      {"token_embd.weight": np.zeros((8, 32), np.float32)})
    lacking = write_gguf(tmp_path / "lacking.gguf", "llama", {"context_length": 128},
                         {"token_embd.weight": np.zeros((8, 32), np.float32)})
    i32 = write_tiny_llama(tmp_path / "i32.gguf", TinySpec()) and tmp_path / "i32.gguf"
    retype_tensor(i32, "blk.0.attn_q.weight", 26)  # F32 -> I32, both 4 bytes an element
    out = tmp_path / "out" / "o.llamafile"
    out.parent.mkdir()
    # the runtime's wording may change; the reason's subject may not: the architecture, a missing key, the tensor
    for model, needle in ((phi2, "'phi2'"), (lacking, "tokenizer.ggml.model"), (i32, "blk.0.attn_q.weight")):
        r = packer("build", str(model), "-o", str(out), "--runtime", str(runtime_exe))
        assert_one_line_error(r, needle)
        assert str(model) in r.stderr
        with pytest.raises(PackError, match=needle):
            build(model, out, runtime_exe, progress=False)
    assert list(out.parent.iterdir()) == []


def test_args_option() -> None:
    assert parse_args_option(None) == ["..."]
    assert parse_args_option('-c 2048 --temp 0.7 -r "User:" ...') == ["-c", "2048", "--temp", "0.7", "-r", "User:",
                                                                       "..."]
    with pytest.raises(PackError, match="line break"):
        parse_args_option("-p 'a\nb'")
    assert parse_args_option("-f story.txt -p hi ...") == ["-f", "story.txt", "-p", "hi", "..."]  # one mode


@pytest.mark.parametrize("text, reason", [
    ("--server --chat", "bad --args: --chat and --server are two modes at once: give one"),
    ("-p hi --server ...", "bad --args: -p and --server are two modes at once: give one"),
    ("-f story.txt --chat --server", "bad --args: -f, --chat and --server are three modes at once: give one"),
    ("-c 2048 ... --temp 0 ...", "bad --args: \"...\" is given 2 times: it marks the one place the user's own "
                                 "arguments go"),
])
def test_args_the_launcher_would_silently_drop_are_refused(runtime_exe, tmp_path, text: str, reason: str) -> None:
    """Two modes (the launcher runs one of them) or a second "..." (dropped) passed the runtime's
    parse: refused as one line, nothing written."""
    with pytest.raises(PackError) as e:
        parse_args_option(text)
    assert str(e.value) == reason
    r = packer("build", str(MOE), "-o", str(tmp_path / "x.llamafile"), "--runtime", str(runtime_exe), "--args", text)
    assert_one_line_error(r, reason)
    assert list(tmp_path.iterdir()) == []


# -- failures leave nothing behind --------------------------------------------------------

def test_interrupt_in_the_middle_leaves_nothing(runtime_exe, tmp_path, monkeypatch) -> None:
    calls = []
    real = build_mod._Copier.copy

    def copy_then_interrupt(self, *a):
        calls.append(1)
        if len(calls) == 2:  # the model's bytes
            raise KeyboardInterrupt
        return real(self, *a)

    monkeypatch.setattr(build_mod._Copier, "copy", copy_then_interrupt)
    (tmp_path / "out.llamafile").write_bytes(b"previous version")
    with pytest.raises(KeyboardInterrupt):
        build(MOE, tmp_path / "out.llamafile", runtime_exe, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.llamafile"]
    assert (tmp_path / "out.llamafile").read_bytes() == b"previous version"  # untouched


def test_full_disk_leaves_nothing(runtime_exe, tmp_path, monkeypatch) -> None:
    def no_space(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(build_mod.os, "copy_file_range", no_space, raising=False)
    monkeypatch.setattr(build_mod.os, "preadv", no_space)
    with pytest.raises(PackError, match="disk full"):
        build(MOE, tmp_path / "out.llamafile", runtime_exe, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_copy_loop_fallback_gives_the_same_bytes(runtime_exe, tmp_path, monkeypatch) -> None:
    """Where copy_file_range is missing (macOS) or refused (across filesystems), the loop copies."""
    a = build(MOE, tmp_path / "a.llamafile", runtime_exe, progress=False).output

    def exdev(*a, **kw):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(build_mod.os, "copy_file_range", exdev, raising=False)
    b = build(MOE, tmp_path / "b.llamafile", runtime_exe, progress=False).output
    assert sha256(a) == sha256(b)


@pytest.fixture(scope="module")
def dense_big_gguf(tmp_path_factory) -> Path:
    """A 1 GiB GGUF with real bytes on disk: long enough to interrupt its packing."""
    d = tmp_path_factory.mktemp("dense")
    sparse = write_padded_gguf(MOE, d / "sparse.gguf", 1 << 30)
    dense = d / "big.gguf"
    shutil.copyfile(sparse, dense)  # writes the holes out
    sparse.unlink()
    return dense


def _build_writing(runtime_exe: Path, gguf: Path, out: Path) -> subprocess.Popen[str]:
    """`packer build gguf -o out`, once its temporary file is there (a big model: still copying)."""
    p = subprocess.Popen([sys.executable, "-m", "packer.cli", "build", str(gguf), "-o", str(out),
                          "--runtime", str(runtime_exe)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not any(f.name.endswith(".tmp") for f in out.parent.iterdir()):
        if p.poll() is not None or time.monotonic() >= deadline:
            p.kill()
            raise AssertionError(f"the build wrote no temporary file: {p.communicate()[1]}")
        time.sleep(0.005)
    return p


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
def test_signal_during_a_real_build_leaves_nothing(runtime_exe, dense_big_gguf, tmp_path, sig) -> None:
    """A signal from outside while 1 GiB is copied: the hidden temporary file goes, the previous
    output stays as it was, and the exit status is 128 + the signal's number."""
    out = tmp_path / "out.llamafile"
    out.write_bytes(b"previous version")
    p = _build_writing(runtime_exe, dense_big_gguf, out)
    try:
        p.send_signal(sig)
        err = p.communicate(timeout=60)[1]
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 128 + sig, err
    assert err == f"error: interrupted by {signal.Signals(sig).name}; nothing was written\n"
    assert [f.name for f in tmp_path.iterdir()] == ["out.llamafile"] and out.read_bytes() == b"previous version"


SIGNAL_SCRIPT = """
import os, signal, sys
from packer import build as b
from packer.cli import main
real = b._Copier.copy
def copy(self, src, dst, src_off, dst_off, n):  # the signal arrives while the model is copied
    if dst_off > 0 and n > 4096:
        os.kill(os.getpid(), int(os.environ["SIG"]))
    return real(self, src, dst, src_off, dst_off, n)
b._Copier.copy = copy
sys.exit(main(sys.argv[1:]))
"""


def test_every_catchable_signal_cleans_up(runtime_exe, tmp_path) -> None:
    """Each signal that would end the process (SIGHUP and SIGQUIT left a 0.5-0.8 GB hidden .tmp),
    sent in the middle of the model's copy: nothing left but the previous output, untouched."""
    from packer.build import CLEANUP_SIGNALS

    assert {signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1} <= set(CLEANUP_SIGNALS)
    runs = {}
    for sig in CLEANUP_SIGNALS:  # one build per signal, side by side, each in its own directory
        out = tmp_path / signal.Signals(sig).name / "out.llamafile"
        out.parent.mkdir()
        out.write_bytes(b"previous version")
        runs[sig] = subprocess.Popen([sys.executable, "-c", SIGNAL_SCRIPT, "build", str(MOE), "-o", str(out),
                                      "--runtime", str(runtime_exe)], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, "SIG": str(int(sig))})
    for sig, p in runs.items():
        err = p.communicate(timeout=120)[1]
        name = signal.Signals(sig).name
        assert (p.returncode, err) == (128 + sig, f"error: interrupted by {name}; nothing was written\n"), name
        out = tmp_path / name / "out.llamafile"
        assert list(out.parent.iterdir()) == [out] and out.read_bytes() == b"previous version", name


def test_the_next_build_removes_what_a_sigkill_left(runtime_exe, dense_big_gguf, tmp_path) -> None:
    """SIGKILL cannot be caught: the killed build's temporary file (named for its PID) stays; the
    next build to the same output removes it, and says so."""
    out = tmp_path / "out.llamafile"
    p = _build_writing(runtime_exe, dense_big_gguf, out)
    try:
        p.kill()
        p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    left = [f.name for f in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(f".out.llamafile.{p.pid}.") and left[0].endswith(".tmp"), left
    r = packer("build", str(MOE), "-o", str(out), "--runtime", str(runtime_exe))
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0] == f"note: removed {left[0]}, left by a build to out.llamafile that did not finish"
    assert [f.name for f in tmp_path.iterdir()] == ["out.llamafile"] and verify(out).ok


def test_stale_temporary_files_go_and_live_ones_stay(runtime_exe, tmp_path) -> None:
    """Only this output's temporary files whose process is gone and whose lock nobody holds are
    removed: never one of a live build (its PID alive; or its lock held, as a build in another PID
    namespace or host holds it), another output's, or one of another form."""
    import fcntl

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a PID no process has now
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    names = {"stale": f".out.llamafile.{dead.pid}.abcd1234.tmp",
             "live": f".out.llamafile.{live.pid}.abcd1234.tmp",
             "locked": f".out.llamafile.{dead.pid}.locked_1.tmp",
             "other output": f".other.llamafile.{dead.pid}.abcd1234.tmp",
             "no pid": ".out.llamafile.abcd1234.tmp",
             "a directory": f".out.llamafile.{dead.pid}.dir12345.tmp"}
    for what, name in names.items():
        if what == "a directory":
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_bytes(b"partial")
    holder = open(tmp_path / names["locked"], "rb")  # its own open file: the lock excludes this process too
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        r = build(MOE, tmp_path / "out.llamafile", runtime_exe, progress=False)
    finally:
        holder.close()
        live.kill()
        live.wait()
    assert verify(r.output).ok
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(n for w, n in names.items() if w != "stale"),
                                                                 "out.llamafile"])


# -- the output --------------------------------------------------------------------------

def test_output_that_is_not_a_regular_file_is_refused(runtime_exe, tmp_path) -> None:
    """`-o /dev/null` as root replaced /dev/null with the packed file (temporary file + rename):
    a device, a FIFO, a socket or a directory (directly or through a symlink) is refused, unchanged."""
    import socket
    import stat

    os.mkfifo(tmp_path / "fifo")
    os.symlink("/dev/null", tmp_path / "null-link")  # the real /dev/null is only pointed at, never written
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    kinds = {"fifo": "a FIFO", "null-link": "a character device", "sock": "a socket"}
    if os.geteuid() == 0:  # a device node of our own, as /dev/null (major 1, minor 3)
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        kinds["null"] = "a character device"
    try:
        before = {n: os.lstat(tmp_path / n) for n in kinds}
        for n, kind in kinds.items():
            r = packer("build", str(MOE), "-o", str(tmp_path / n), "--runtime", str(runtime_exe))
            assert_one_line_error(r, f"is {kind}, not a regular file")
            after = os.lstat(tmp_path / n)
            assert (after.st_ino, after.st_mode, after.st_rdev) == (before[n].st_ino, before[n].st_mode,
                                                                    before[n].st_rdev), n
        with pytest.raises(PackError, match="is a directory, not a regular file"):
            build(MOE, tmp_path, runtime_exe, progress=False)
        assert_one_line_error(packer("build", str(MOE), "-o", str(tmp_path), "--runtime", str(runtime_exe)),
                              "is a directory")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kinds)
    finally:
        sock.close()


def test_output_in_a_place_that_cannot_be_written(runtime_exe, tmp_path) -> None:
    rt = ["--runtime", str(runtime_exe)]
    assert_one_line_error(packer("build", str(MOE), "-o", "/proc/llamapack-test.llamafile", *rt),
                          "cannot create a file in /proc")
    assert_one_line_error(packer("build", str(MOE), "-o", str(MOE / "x.llamafile"), *rt), "not a directory")
    if os.geteuid() != 0:  # root writes in a read-only directory
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        assert_one_line_error(packer("build", str(MOE), "-o", str(ro / "x.llamafile"), *rt), "cannot create a file")


def test_existing_output_is_replaced_atomically(runtime_exe, tmp_path) -> None:
    """A regular file is replaced by a rename: a reader holding the old file keeps its bytes; a symlink
    stays a symlink and its target gets the new file."""
    out = tmp_path / "out.llamafile"
    out.write_bytes(b"previous version")
    with open(out, "rb") as reader:
        old_inode = os.fstat(reader.fileno()).st_ino
        build(MOE, out, runtime_exe, progress=False)
        assert reader.read() == b"previous version"
    assert out.stat().st_ino != old_inode and read_payload(str(out)).gguf.name == MOE.name
    target = tmp_path / "real.llamafile"
    target.write_bytes(b"previous version")
    (tmp_path / "link.llamafile").symlink_to(target.name)
    r = packer("build", str(MOE), "-o", str(tmp_path / "link.llamafile"), "--runtime", str(runtime_exe))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "link.llamafile").is_symlink() and read_payload(str(target)).gguf.name == MOE.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.llamafile", "out.llamafile", "real.llamafile"]


def test_sparse_input_stays_sparse(runtime_exe, tmp_path) -> None:
    src = write_padded_gguf(MOE, tmp_path / "sparse.gguf", 1 << 30)
    r = build(src, tmp_path / "s.llamafile", runtime_exe, progress=False)
    assert r.output.stat().st_blocks * 512 < r.size // 4
    with zipfile.ZipFile(r.output) as z:
        assert z.getinfo("sparse.gguf").CRC == zlib_crc(src)


def zlib_crc(path: Path) -> int:
    import zlib

    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def test_runtime_build_says_each_step(runtime_exe, tmp_path, monkeypatch) -> None:
    """`make runtime` names its steps on stderr during its half minute: here through a stand-in for
    PyInstaller that logs as PyInstaller 6 does, then for the real, current runtime."""
    from packer import runtime_build as rb

    real_log = ["1978 INFO: Initializing module dependency graph...\n",
                "2001 INFO: Analyzing modules for base_library.zip ...\n",
                f"8800 INFO: Analyzing {rb.ROOT / 'packer' / 'runtime_entry.py'}\n",
                "27389 INFO: Looking for dynamic libraries\n",
                "28389 INFO: Building PYZ because PYZ-00.toc is non existent\n",
                "28389 INFO: Building PYZ (ZlibArchive) /w/PYZ-00.pyz\n",
                "31831 INFO: Building PKG (CArchive) llamapack-runtime.pkg\n",
                "31940 INFO: Building EXE from EXE-00.toc\n"]

    class FakePyInstaller:
        def __init__(self, cmd, **kw):
            self.stdout, self.returncode = iter(real_log), 0
            dist = Path(cmd[cmd.index("--distpath") + 1])
            dist.mkdir(parents=True, exist_ok=True)
            (dist / rb.runtime_name()).write_bytes(b"exe")

        def __enter__(self):
            return self

        def __exit__(self, *a):
            pass

    monkeypatch.setattr(rb.subprocess, "Popen", FakePyInstaller)
    said: list[str] = []
    rb.build_runtime(tmp_path / "dist", tmp_path / "work", say=said.append)
    steps = [line.split(" s  ", 1)[1] for line in said[2:]]
    assert said[0].startswith("checking the inputs") and "with PyInstaller" in said[1]
    assert steps == [step for _, step in rb.STEPS] + ["done"]
    monkeypatch.undo()
    said.clear()
    rb.build_runtime(runtime_exe.parent, rb.WORK, say=said.append)
    assert said[-1] == f"{runtime_exe.relative_to(ROOT)} is up to date"


def test_cookie_constants_match_pyinstaller() -> None:
    """Our reading of the cookie is PyInstaller's own (its reader ships with it)."""
    from PyInstaller.archive.readers import CArchiveReader

    assert CArchiveReader._COOKIE_MAGIC_PATTERN == MAGIC
    assert struct.calcsize(CArchiveReader._COOKIE_FORMAT) == COOKIE.size


def test_pyinstaller_reader_sees_the_runtime_archive_in_a_packed_file(packed) -> None:
    from PyInstaller.archive.readers import CArchiveReader

    r = CArchiveReader(str(packed["smollm2"]))
    assert "PYZ.pyz" in r.toc and "llamapack-runtime.json" in r.toc
