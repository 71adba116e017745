"""`packer build`: one executable file = the runtime + a ZIP holding the GGUF, mapped in place.

Layout of the output (absolute offsets)::

    0        the runtime executable, verbatim (PyInstaller bootloader, its archive, its cookie)
    R        .args: local header + text (one argument per line)
             zeros, so that the GGUF data starts at a multiple of 65536
    G - h    MODEL.gguf local header (stored; zip64 extra when the model is 4 GiB or more)
    G        the GGUF bytes, verbatim
    G + S    tail: the runtime's PyInstaller cookie again (88 bytes, its pkg_length reaching back
             to the runtime's archive), or, when that is more than 4 GiB back, a whole copy of the
             archive with its cookie
    C        ZIP central directory (.args, MODEL.gguf), zip64 end record + locator if needed,
             end record

Why the tail: PyInstaller's bootloader finds its archive by scanning the executable back to
front for the cookie's magic, twice per start; appended weights would make every start read
the whole model (+87 s at 5 GiB). With a cookie a few hundred bytes from the end, the scan
stops at once and start-up does not depend on the model's size. `unzip` and `zipfile` see
the tail as unused bytes between the last entry and the central directory.

Writing: the bytes are copied by the kernel (copy_file_range, as `cp` does; a plain loop with
a bounded buffer where that is not available; holes of a sparse input stay holes) while a
thread computes the CRC over a sliding read-only window of the model: memory stays bounded
whatever the size. Everything goes into a
temporary file next to the output, renamed at the end; any failure (Ctrl-C, a full disk) removes it.
"""
from __future__ import annotations

import contextlib
import errno
import mmap
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from packer import pyiarchive
from packer.runtime_info import platform_tag
from packer.zipwriter import Entry, end_records
from runtime.launcher import ALIGNMENT, ARGS_NAME

COPY_CHUNK = 64 << 20     # bytes per copy call (progress granularity)
CRC_WINDOW = 32 << 20     # bytes of the model mapped at a time by the CRC thread
LOOP_BUFFER = 8 << 20     # the fallback copy loop's buffer
_NO_COPY_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.EBADF}


class PackError(Exception):
    """A user error while packing; the message is one line."""


@dataclass
class BuildResult:
    output: Path
    size: int
    runtime_size: int
    model_entry: str
    model_offset: int
    model_size: int
    tail: str           # "cookie" or "archive"
    seconds: float


# -- inputs ------------------------------------------------------------------------------

def default_runtime() -> Path:
    """The runtime for this platform: one installed with the package, else the one `make runtime` built."""
    name = f"llamapack-runtime-{platform_tag()}" + (".exe" if sys.platform == "win32" else "")
    here = Path(__file__).resolve().parent
    for candidate in (here / "runtimes" / name, here.parent / "dist" / name):
        if candidate.is_file():
            return candidate
    raise PackError(f"no runtime for {platform_tag()}: run `make runtime`, or give --runtime PATH")


def parse_args_option(text: str | None) -> list[str]:
    """--args "..." as .args lines, checked against the runtime's own command line."""
    if not text:
        return ["..."]
    try:
        args = shlex.split(text)
    except ValueError as e:
        raise PackError(f"bad --args: {e}") from None
    for a in args:
        if "\n" in a or "\r" in a or "\0" in a:
            raise PackError(f"bad --args: {a!r}: an argument cannot hold a line break")
    from runtime.cli import ArgsError, build_parser

    try:
        build_parser(strict=True).parse_args([a for a in args if a != "..."])
    except ArgsError as e:
        raise PackError(f"bad --args: {e}") from None
    return args


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _check_model(model: Path) -> None:
    from runtime.gguf import GGUFError, GGUFFile

    try:
        GGUFFile(model).close()
    except GGUFError as e:
        raise PackError(f"{model}: {e}") from None


def _runtime_archive(runtime: Path) -> pyiarchive.Archive:
    from runtime.launcher import LauncherError, NoPayload, read_zip

    with open(runtime, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            if any(e.name.lower().endswith(".gguf") for e in read_zip(f, size)):
                raise PackError(f"{runtime} is a packed file, not a runtime: give the bare runtime")
        except NoPayload:
            pass
        except LauncherError:
            pass  # bytes that look like a ZIP end record but are not one
        try:
            archive = pyiarchive.read_archive(f, size)
        except pyiarchive.ArchiveError as e:
            raise PackError(f"{runtime}: {e}") from None
    # another PyInstaller program would start, find no launcher and ignore the model
    try:
        info = pyiarchive.runtime_info(runtime)
    except pyiarchive.ArchiveError:
        info = {}
    if not info.get("platform"):
        raise PackError(f"{runtime} is not a llamapack runtime (no {pyiarchive.INFO_NAME} in its archive): "
                        "build one with `make runtime`")
    return archive


# -- copying -----------------------------------------------------------------------------

def _data_run(fd: int, pos: int, end: int) -> tuple[int, int] | None:
    """(start, end) of the next run of data at or after pos within [pos, end), skipping holes
    of a sparse file; None where the system cannot tell holes."""
    if not hasattr(os, "SEEK_DATA"):
        return None
    try:
        start = os.lseek(fd, pos, os.SEEK_DATA)
        stop = os.lseek(fd, start, os.SEEK_HOLE)
    except OSError as e:
        return (end, end) if e.errno == errno.ENXIO else None  # ENXIO: a hole up to the end
    return min(start, end), min(stop, end)


class _Crc(threading.Thread):
    """CRC-32 of fd[0:size], over a sliding read-only mapping (bounded memory); holes count as zeros."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__(daemon=True)
        self.fd, self.size = fd, size
        self.crc: int | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            crc, pos, zeros = 0, 0, memoryview(bytes(1 << 20))
            while pos < self.size and not self.stop.is_set():
                start, stop = _data_run(self.fd, pos, self.size) or (pos, self.size)
                if start > pos:  # a hole: zeros, without reading them
                    n = min(start - pos, len(zeros))
                    crc = zlib.crc32(zeros[:n], crc)
                    pos += n
                    continue
                lo = pos - pos % mmap.ALLOCATIONGRANULARITY
                hi = min(stop, pos + CRC_WINDOW)
                with mmap.mmap(self.fd, hi - lo, offset=lo, access=mmap.ACCESS_READ) as window:
                    with memoryview(window) as view:
                        crc = zlib.crc32(view[pos - lo:], crc)  # releases the GIL
                pos = hi
            self.crc = crc
        except BaseException as e:  # reported by the main thread
            self.error = e


class _Progress:
    """A one-line bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, total: int, label: str, enabled: bool | None = None) -> None:
        self.total, self.label, self.done = total, label, 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = self.last = time.monotonic()

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self.last > 0.1 or self.done >= self.total):
            self.last = now
            frac = self.done / self.total if self.total else 1.0
            rate = self.done / max(now - self.t0, 1e-9)
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% {self.done / 1e9:6.2f}/"
                             f"{self.total / 1e9:.2f} GB {rate / 1e9:5.2f} GB/s")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class _Copier:
    """Copies byte ranges between files: copy_file_range while the kernel takes it, else a loop.

    Holes in the source (a sparse file) are skipped and stay holes in the new output, as `cp` does.
    """

    def __init__(self, progress: _Progress) -> None:
        self.progress = progress
        self.kernel = hasattr(os, "copy_file_range")
        self.buf: bytearray | None = None

    def copy(self, src: int, dst: int, src_off: int, dst_off: int, n: int) -> None:
        done = 0
        while done < n:
            start, stop = _data_run(src, src_off + done, src_off + n) or (src_off + done, src_off + n)
            if start > src_off + done:  # a hole: leave it unwritten (zeros)
                self.progress.add(start - src_off - done)
                done = start - src_off
                continue
            step = min(COPY_CHUNK, stop - start)
            k = -1
            if self.kernel:
                try:
                    k = os.copy_file_range(src, dst, step, src_off + done, dst_off + done)
                except OSError as e:
                    if e.errno not in _NO_COPY_RANGE:
                        raise
                    self.kernel = False
            if k < 0:
                k = self._loop(src, dst, src_off + done, dst_off + done, step)
            if k == 0:
                raise PackError("an input file got shorter during the build")
            done += k
            self.progress.add(k)

    def _loop(self, src: int, dst: int, src_off: int, dst_off: int, n: int) -> int:
        if self.buf is None:
            self.buf = bytearray(LOOP_BUFFER)
        view = memoryview(self.buf)
        done = 0
        while done < n:
            k = os.preadv(src, [view[:min(LOOP_BUFFER, n - done)]], src_off + done)
            if k == 0:
                break
            _pwrite_all(dst, view[:k], dst_off + done)
            done += k
        return done


# -- build -------------------------------------------------------------------------------

def build(model: str | os.PathLike[str], output: str | os.PathLike[str], runtime: str | os.PathLike[str] | None = None,
          args: list[str] | None = None, progress: bool | None = None, full_archive: bool | None = None) -> BuildResult:
    """Packs model into output (see the module docstring). full_archive forces (True) or forbids
    (False) the whole-archive tail; by default the 88-byte cookie is used whenever it reaches."""
    t0 = time.perf_counter()
    model, output = Path(model), Path(output)
    runtime = Path(runtime) if runtime is not None else default_runtime()
    for what, p in (("model", model), ("runtime", runtime)):
        if not p.is_file():
            raise PackError(f"{what} not found: {p}")
        if _same_file(p, output):
            raise PackError(f"the output {output} is the {what} itself: choose another name")
    if output.is_dir():
        raise PackError(f"the output {output} is a directory")
    _check_model(model)
    arc = _runtime_archive(runtime)
    args_data = ("\n".join(args if args is not None else ["..."]) + "\n").encode("utf-8")

    # the layout, every offset absolute
    r_size, m_size = runtime.stat().st_size, model.stat().st_size
    mtime = model.stat().st_mtime
    name = model.name if model.name.lower().endswith(".gguf") else model.stem + ".gguf"
    args_entry = Entry(ARGS_NAME, len(args_data), r_size, mtime, zlib.crc32(args_data))
    gap_at = args_entry.data_offset + len(args_data)
    gguf_entry = Entry(name, m_size, 0, mtime)
    gguf_entry.header_offset = -(-(gap_at + gguf_entry.local_size) // ALIGNMENT) * ALIGNMENT - gguf_entry.local_size
    tail_at = gguf_entry.data_offset + m_size
    cookie = None
    if not full_archive:
        try:
            cookie = arc.cookie(tail_at)
        except pyiarchive.ArchiveError:
            if full_archive is False:
                raise PackError("the model is too large for a cookie-only tail") from None
    tail_size = len(cookie) if cookie else arc.length
    cd_at = tail_at + tail_size
    entries = [args_entry, gguf_entry]
    cd_size = sum(len(e.central_header()) for e in entries)
    total = cd_at + cd_size + len(end_records(cd_at, cd_size, len(entries)))

    out_dir = output.resolve().parent
    if not out_dir.is_dir():
        raise PackError(f"no such directory: {out_dir}")
    try:
        st = os.statvfs(out_dir)
        if st.f_bavail * st.f_frsize < total:
            raise PackError(f"not enough space in {out_dir}: the file needs {total / 1e9:.2f} GB, "
                            f"{st.f_bavail * st.f_frsize / 1e9:.2f} GB free")
    except (AttributeError, OSError):
        pass  # no statvfs here: a full disk is still caught while writing

    bar = _Progress(total, f"packing {output.name}", progress)
    fd, tmp = -1, None
    try:
        with _signals_held():  # a Ctrl-C lands once the name is known, to be cleaned up
            fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=out_dir)
        with open(runtime, "rb") as rf, open(model, "rb") as mf:
            crc_thread = _Crc(mf.fileno(), m_size)
            crc_thread.start()
            copied = False
            try:
                copier = _Copier(bar)
                copier.copy(rf.fileno(), fd, 0, 0, r_size)                       # the runtime
                _pwrite_all(fd, args_entry.local_header() + args_data, args_entry.header_offset)
                gap = gguf_entry.header_offset - gap_at
                _pwrite_all(fd, bytes(gap), gap_at)                              # zeros up to the alignment
                _pwrite_all(fd, gguf_entry.local_header(), gguf_entry.header_offset)  # CRC patched below
                copier.copy(mf.fileno(), fd, 0, gguf_entry.data_offset, m_size)  # the weights
                if os.fstat(mf.fileno()).st_size != m_size:
                    raise PackError(f"{model} changed size during the build")
                if cookie:
                    _pwrite_all(fd, cookie, tail_at)
                else:
                    copier.copy(rf.fileno(), fd, arc.start, tail_at, arc.length)
                copied = True
            finally:  # the thread reads the model's descriptor: done with it before it closes
                if not copied:
                    crc_thread.stop.set()
                crc_thread.join()
            if crc_thread.error is not None:
                raise crc_thread.error
            gguf_entry.crc = crc_thread.crc
            _pwrite_all(fd, gguf_entry.local_header(), gguf_entry.header_offset)
            cd = b"".join(e.central_header() for e in entries)
            _pwrite_all(fd, cd + end_records(cd_at, len(cd), len(entries)), cd_at)
            bar.add(total - bar.done)
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o777 & ~_umask())  # executable, as the umask allows
        os.close(fd)
        fd = -1
        os.replace(tmp, output)
    except BaseException as e:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        bar.close()
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise PackError(f"disk full while writing {output} ({e.strerror}); nothing was written") from None
        raise
    bar.close()
    return BuildResult(output, total, r_size, name, gguf_entry.data_offset, m_size,
                       "cookie" if cookie else "archive", time.perf_counter() - t0)


@contextlib.contextmanager
def _signals_held():
    """Holds SIGINT and SIGTERM back (where the system can) until the block is done."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
