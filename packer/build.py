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
             end record, whose comment holds CRC-32s of the runtime, the local headers, the tail
             and the directory (runtime/payload.py; `packer verify` checks them)

Why the tail: PyInstaller's bootloader finds its archive by scanning the executable back to
front for the cookie's magic, twice per start; appended weights would make every start read
the whole model (+87 s at 5 GiB). With a cookie a few hundred bytes from the end, the scan
stops at once and start-up does not depend on the model's size. `unzip` and `zipfile` see
the tail as unused bytes between the last entry and the central directory.

The ZIP records are runtime/payload.py's, the module the launcher reads them with. build()
reads as its steps: check the inputs and the model, lay the file out, then write it into a
temporary file (runtime, entries, tail, directory) that is renamed over the output at the end.

Quantizing (`--quantize MIX`, packer/quantize.py): the model entry is then the GGUF llama.cpp's
quantizer would write, made tensor by tensor straight into its place in the temporary file (no
GGUF on disk in between), its CRC computed as it goes; everything else is as below.

Writing: the bytes are copied by the kernel (copy_file_range, as `cp` does; a plain loop with
a bounded buffer where that is not available; holes of a sparse input stay holes) while a
thread computes the CRC over a sliding read-only window of the model: memory stays bounded
whatever the size. Everything goes into a
temporary file next to the output, renamed at the end; any failure (Ctrl-C, a full disk, any
signal that would end the process, under `packer build`) removes it, and the next build to the
same output removes one a SIGKILL left (packer/tempfiles.py). The output must be a regular
file (or not exist yet): a device, a FIFO or a socket is refused, never replaced.
"""
from __future__ import annotations

import contextlib
import errno
import mmap
import os
import shlex
import stat
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packer import pyiarchive, tempfiles
from packer.runtime_info import platform_tag
from packer.signals import CLEANUP_SIGNALS, Interrupted, cleanup_on_signals, signals_held as _signals_held  # noqa: F401 (re-exported)
from runtime.payload import (
    ARGS_NAME, CHECKSUM_COMMENT_SIZE, MAX_ARGS_LINES, NoPayload, PayloadError, StoredEntry, args_text,
    central_directory, checksum_comment, read_zip,
)

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
    if len(args) > MAX_ARGS_LINES:
        raise PackError(f"bad --args: {len(args)} arguments, more than the {MAX_ARGS_LINES} a packed file may hold")
    for a in args:
        if "\n" in a or "\r" in a or "\0" in a:
            raise PackError(f"bad --args: {a!r}: an argument cannot hold a line break")
    from packer.verify import args_problem

    if (problem := args_problem(args)) is not None:  # as `packer verify` checks them
        raise PackError(f"bad --args: {problem}")
    return args


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _check_model(model: Path) -> None:
    """The runtime's own checks of the file, at build time: a model the runtime cannot run
    (architecture, hyperparameters, tensor types, tokenizer) is refused with the runtime's
    one-line reason before anything is written. Standard library and numpy only: no kernels."""
    from runtime.gguf import GGUFError, GGUFFile
    from runtime.model_check import check_model

    try:
        f = GGUFFile(model)
    except GGUFError as e:  # "gguf: ..." after the file's name: said once
        raise PackError(f"{model}: {str(e).removeprefix('gguf: ')}") from None
    try:
        check_model(f)
    except ValueError as e:  # the checks' errors (ModelError, GGUFError, TokenizerError) are all ValueErrors
        raise PackError(f"{model}: {str(e).removeprefix('gguf: ')}") from None
    finally:
        f.close()


def _runtime_archive(runtime: Path) -> pyiarchive.Archive:
    with open(runtime, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            if any(e.name.lower().endswith(".gguf") for e in read_zip(f, size)):
                raise PackError(f"{runtime} is a packed file, not a runtime: give the bare runtime")
        except NoPayload:
            pass
        except PayloadError:
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


def _crc_range(fd: int, start: int, size: int, stop_event: threading.Event | None = None) -> int:
    """CRC-32 of fd[start:start+size], over a sliding read-only mapping (bounded memory); holes
    count as zeros, without being read."""
    crc, pos, end, zeros = 0, start, start + size, memoryview(bytes(1 << 20))
    while pos < end and not (stop_event and stop_event.is_set()):
        lo_data, hi_data = _data_run(fd, pos, end) or (pos, end)
        if lo_data > pos:  # a hole
            n = min(lo_data - pos, len(zeros))
            crc = zlib.crc32(zeros[:n], crc)
            pos += n
            continue
        lo = pos - pos % mmap.ALLOCATIONGRANULARITY
        hi = min(hi_data, pos + CRC_WINDOW)
        with mmap.mmap(fd, hi - lo, offset=lo, access=mmap.ACCESS_READ) as window:
            with memoryview(window) as view:
                crc = zlib.crc32(view[pos - lo:], crc)  # releases the GIL
        pos = hi
    return crc


class _Crc(threading.Thread):
    """_crc_range(fd, 0, size) in a thread, while the main thread copies: `with _Crc(fd, size) as c:`
    starts it, and waits for it at the end of the block (stopped early when the block fails)."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__(daemon=True)
        self.fd, self.size = fd, size
        self.crc: int | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self.crc = _crc_range(self.fd, 0, self.size, self.stop)
        except BaseException as e:  # reported by the main thread
            self.error = e

    def __enter__(self) -> _Crc:
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.stop.set()
        with _signals_held():  # a second signal must not cut this wait short
            self.join()
        if exc_type is None and self.error is not None:
            raise self.error


class _Progress:
    """A one-line bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, total: int, label: str, enabled: bool | None = None) -> None:
        self.total, self.label, self.done = total, label, 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = self.last = time.monotonic()
        self.status = ""  # appended to the line (the quantizer's tensors and MB/s)

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self.last > 0.1 or self.done >= self.total):
            self.last = now
            frac = self.done / self.total if self.total else 1.0
            rate = self.done / max(now - self.t0, 1e-9)
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% {self.done / 1e9:6.2f}/"
                             f"{self.total / 1e9:.2f} GB {rate / 1e9:5.2f} GB/s{self.status}")
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
          args: list[str] | None = None, progress: bool | None = None, full_archive: bool | None = None,
          quantize: str | None = None, allow_requantize: bool = False, threads: int | None = None) -> BuildResult:
    """Packs model (a GGUF, or a Hugging Face checkpoint folder: packer/hf) into output (see the
    module docstring). full_archive forces (True) or forbids
    (False) the whole-archive tail; by default the 88-byte cookie is used whenever it reaches.
    quantize names a mix (packer/mixes.py): the entry is then the GGUF llama.cpp's quantizer
    would make of model, written straight into place on `threads` threads (default: all)."""
    t0 = time.perf_counter()
    model, output, runtime = _check_inputs(model, output, runtime)
    target = _output_target(output)
    for name in tempfiles.remove_stale(target):  # before the free space is measured
        sys.stderr.write(f"note: removed {name}, left by a build to {output.name} that did not finish\n")
    with contextlib.ExitStack() as stack:
        quant = None
        if model.is_dir():  # a Hugging Face checkpoint folder, converted on the way (packer/hf)
            from packer.hf.entry import entry as hf_entry

            quant = hf_entry(model, quantize, allow_requantize, threads)
        elif quantize:  # packer/quantize.py: the model entry's plan (its GGUF mapped until the end)
            from packer.quantize import entry

            _check_model(model)
            quant = entry(stack, model, quantize, allow_requantize, threads)
        else:
            _check_model(model)
        layout = _lay_out(model, runtime, args, full_archive, quant)
        _check_space(target.parent, layout.total)
        bar = _Progress(layout.total, f"packing {output.name}", progress)
        try:
            with _new_file(target, output) as fd:
                _write(fd, layout, bar)
        finally:
            bar.close()
    g = layout.gguf_entry
    return BuildResult(output, layout.total, layout.runtime_size, g.name, g.data_offset, g.size,
                       "cookie" if layout.cookie else "archive", time.perf_counter() - t0)


def _check_inputs(model, output, runtime) -> tuple[Path, Path, Path]:
    """(model, output, runtime) as paths: the inputs exist, and neither is the output."""
    if os.fspath(output).endswith(("/", os.sep)) and not Path(output).is_dir():
        raise PackError(f"the output {os.fspath(output)} names a directory, and there is none: give the path of a "
                        "file to write")
    model, output = Path(model), Path(output)
    runtime = Path(runtime) if runtime is not None else default_runtime()
    for what, p in (("model", model), ("runtime", runtime)):
        if not (p.is_file() or (what == "model" and p.is_dir())):
            raise PackError(f"{what} not found: {p}")
        if _same_file(p, output):
            raise PackError(f"the output {output} is the {what} itself: choose another name")
    if model.is_dir() and output.exists() and _same_file(model, output.parent):
        # a checkpoint's files (config, tokenizer, weights, shards) are the model's input too
        raise PackError(f"the output {output} is a file of the model's folder {model}: choose another name")
    return model, output, runtime


@dataclass
class _Layout:
    """Where each part of the output goes, every offset absolute (see the module docstring)."""
    model: Path
    runtime: Path
    archive: pyiarchive.Archive     # the runtime's own PyInstaller archive
    args_data: bytes                # the .args entry's bytes
    args_entry: StoredEntry         # at the end of the runtime
    gguf_entry: StoredEntry         # after zeros, its data ALIGNMENT-aligned
    cookie: bytes | None            # the tail: this cookie, or (None) a copy of the archive
    tail_at: int
    cd_at: int                      # the central directory, end records and checksum comment
    total: int                      # the output's size
    quant: Any = None               # quantize.Entry: the model entry is quantized on the way (else copied)

    @property
    def runtime_size(self) -> int:
        return self.args_entry.header_offset

    @property
    def gap(self) -> tuple[int, bytes]:
        """(offset, zeros) between the end of .args and the model's local header."""
        at = self.args_entry.data_offset + len(self.args_data)
        return at, bytes(self.gguf_entry.header_offset - at)

    @property
    def entries(self) -> list[StoredEntry]:
        return [self.args_entry, self.gguf_entry]


def _lay_out(model: Path, runtime: Path, args: list[str] | None, full_archive: bool | None,
            quant: Any = None) -> _Layout:
    """Where everything goes: the runtime, .args, zeros, the aligned model, the tail, the directory."""
    arc = _runtime_archive(runtime)
    args_data = args_text(args if args is not None else ["..."])
    mtime = model.stat().st_mtime
    name = model.name if model.name.lower().endswith(".gguf") else model.stem + ".gguf"
    args_entry = StoredEntry(ARGS_NAME, len(args_data), runtime.stat().st_size, mtime, zlib.crc32(args_data))
    gguf_entry = (StoredEntry(_entry_name(quant.name), quant.plan.size, 0, mtime) if quant else
                  StoredEntry(_entry_name(name), model.stat().st_size, 0, mtime))
    gguf_entry.place_aligned(args_entry.data_offset + len(args_data))
    tail_at = gguf_entry.data_offset + gguf_entry.size
    cookie = _tail_cookie(arc, tail_at, full_archive)
    cd_at = tail_at + (len(cookie) if cookie else arc.length)
    total = cd_at + len(central_directory([args_entry, gguf_entry], cd_at)) + CHECKSUM_COMMENT_SIZE
    return _Layout(model, runtime, arc, args_data, args_entry, gguf_entry, cookie, tail_at, cd_at, total, quant)


def _entry_name(name: str) -> str:
    """A ZIP entry's name is UTF-8: a file name's bytes that are not (Python's surrogate escapes)
    become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _tail_cookie(arc: pyiarchive.Archive, tail_at: int, full_archive: bool | None) -> bytes | None:
    """The runtime's cookie rewritten to sit at tail_at, or None for a whole copy of the archive."""
    if full_archive:
        return None
    try:
        return arc.cookie(tail_at)
    except pyiarchive.ArchiveError:
        if full_archive is False:
            raise PackError("the model is too large for a cookie-only tail") from None
        return None


def _write(fd: int, layout: _Layout, bar: _Progress) -> None:
    """The whole output into fd, front to back; the model entry copied (_copy_model) or made by
    the quantizer (_quantize_model), each returning the entry's CRC."""
    copier = _Copier(bar)
    with open(layout.runtime, "rb") as rf:
        copier.copy(rf.fileno(), fd, 0, 0, layout.runtime_size)  # the runtime
        _write_headers(fd, layout)
        make = _quantize_model if layout.quant else _copy_model
        layout.gguf_entry.crc = make(fd, copier, layout, bar)
        tail_crc = _write_tail(fd, copier, rf, layout)
        runtime_crc = _crc_range(rf.fileno(), 0, layout.runtime_size)
    _write_directory(fd, layout, runtime_crc, tail_crc)
    bar.add(layout.total - bar.done)


def _copy_model(fd: int, copier: _Copier, layout: _Layout, bar: _Progress) -> int:
    """The weights copied into place while a thread computes their CRC."""
    gguf = layout.gguf_entry
    with open(layout.model, "rb") as mf:
        with _Crc(mf.fileno(), gguf.size) as model_crc:  # joined before mf closes: it reads mf
            copier.copy(mf.fileno(), fd, 0, gguf.data_offset, gguf.size)
            if os.fstat(mf.fileno()).st_size != gguf.size:
                raise PackError(f"{layout.model} changed size during the build")
    return model_crc.crc


def _quantize_model(fd: int, copier: _Copier, layout: _Layout, bar: _Progress) -> int:
    """The quantized GGUF (packer/quantize.py) written into place as it is made, its CRC on the way."""
    from packer.quantize import RateLine, write

    q, at = layout.quant, layout.gguf_entry.data_offset
    rate = RateLine()

    def emit(data, pos: int) -> None:
        _pwrite_all(fd, data, at + pos)
        bar.add(memoryview(data).nbytes)

    def progress(*state: int) -> None:
        rate(*state)
        bar.status = "  " + rate.text

    return write(q.plan, emit, q.threads, progress)


def _write_headers(fd: int, layout: _Layout) -> None:
    """.args, the zeros up to the alignment and the model's local header (its CRC is patched in
    by _write_directory)."""
    args, gguf = layout.args_entry, layout.gguf_entry
    _pwrite_all(fd, args.local_header() + layout.args_data, args.header_offset)
    gap_at, zeros = layout.gap
    _pwrite_all(fd, zeros, gap_at)
    _pwrite_all(fd, gguf.local_header(), gguf.header_offset)


def _write_tail(fd: int, copier: _Copier, rf, layout: _Layout) -> int:
    """The cookie, or a copy of the runtime's archive, after the model; returns its CRC."""
    if layout.cookie:
        _pwrite_all(fd, layout.cookie, layout.tail_at)
        return zlib.crc32(layout.cookie)
    arc = layout.archive
    copier.copy(rf.fileno(), fd, arc.start, layout.tail_at, arc.length)
    return _crc_range(rf.fileno(), arc.start, arc.length)


def _write_directory(fd: int, layout: _Layout, runtime_crc: int, tail_crc: int) -> None:
    """The model's local header again, now with its CRC; then the central directory, the end
    records and the checksum comment (runtime/payload.py, "checksums")."""
    gguf = layout.gguf_entry
    _pwrite_all(fd, gguf.local_header(), gguf.header_offset)
    headers = layout.args_entry.local_header() + layout.gap[1] + gguf.local_header()  # between the data
    directory = central_directory(layout.entries, layout.cd_at)
    comment = checksum_comment(runtime=runtime_crc, headers=zlib.crc32(headers), tail=tail_crc,
                               directory=zlib.crc32(directory))
    _pwrite_all(fd, directory + comment, layout.cd_at)


# -- the output ------------------------------------------------------------------------------

_NOT_REGULAR = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def _output_target(output: Path) -> Path:
    """The path the new file is renamed to: output, or the file a symlink output points to.

    The file is written beside it and renamed over it, which would replace a device, a FIFO or a
    socket with a regular file (`-o /dev/null` as root did): anything but a regular file is refused.
    """
    target = Path(os.path.realpath(output))
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    for test, kind in _NOT_REGULAR:
        if mode is not None and test(mode):
            what = f"{output} ({target})" if target != output.absolute() else str(output)
            raise PackError(f"the output {what} is {kind}, not a regular file: give the path of a file to write")
    if not target.parent.is_dir():
        raise PackError(f"{'not a directory' if target.parent.exists() else 'no such directory'}: {target.parent}")
    return target


def _check_space(out_dir: Path, total: int) -> None:
    try:
        st = os.statvfs(out_dir)
    except (AttributeError, OSError):
        return  # no statvfs here: a full disk is still caught while writing
    if st.f_flag & getattr(os, "ST_RDONLY", 1):  # (its free space is 0 or meaningless)
        raise PackError(f"cannot create a file in {out_dir} (read-only file system)")
    if st.f_blocks and st.f_bavail * st.f_frsize < total:  # f_blocks 0: a pseudo file system (/proc)
        raise PackError(f"not enough space in {out_dir}: the file needs {total / 1e9:.2f} GB, "
                        f"{st.f_bavail * st.f_frsize / 1e9:.2f} GB free")


@contextlib.contextmanager
def _new_file(target: Path, output: Path):
    """A descriptor of a new temporary file beside target, renamed over target (executable, as the
    umask allows) when the block ends well; on any failure, a signal included, closed and removed."""
    fd, tmp = -1, None
    try:
        with _signals_held():  # a signal lands once the name is known, to be cleaned up
            fd, tmp = _temp_file(target)
        yield fd
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o777 & ~_umask())
        os.close(fd)
        fd = -1
        with _signals_held():  # renamed and forgotten together: a signal now finds a finished file
            os.replace(tmp, target)
            tmp = None
    except BaseException as e:
        with _signals_held():  # a second signal must not stop the clean-up halfway
            if fd >= 0:
                os.close(fd)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise PackError(f"disk full while writing {output} ({e.strerror}); nothing was written") from None
        raise


def _temp_file(target: Path) -> tuple[int, str]:
    try:
        return tempfiles.create(target)  # .NAME.PID.XXXXXXXX.tmp, locked while open (packer/tempfiles.py)
    except OSError as e:
        raise PackError(f"cannot create a file in {target.parent} ({e.strerror or e})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
