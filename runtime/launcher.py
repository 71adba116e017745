"""The launcher inside every packed file: finds its own weights and runs the chosen mode.

At start it reads the payload at the end of its own executable (runtime/payload.py: the ZIP,
the single stored and aligned `.gguf` entry, `.args`), merges the stored arguments with the
user's, and hands (path, offset) to the engine, which maps the weights in place: nothing is
extracted or copied. The mode is chat on a terminal, else the server, unless the arguments say.

Only the standard library is imported here: `--version` and every error about the file
itself answer before numpy and the kernels load.
"""
from __future__ import annotations

import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Sequence

from runtime import __version__
from runtime.payload import NoPayload, PayloadError, merge_args, read_payload, resolve_model


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
        except (PayloadError, OSError) as e:
            own_error = f"{os.path.basename(self_path)}: {e}"
    stored = payload.args if payload else None
    if stored:
        try:
            cli.check_args(stored)
        except cli.ArgsError as e:
            return cli.fail(f"bad .args in {os.path.basename(self_path)}: {e}")
    args = cli.build_parser().parse_args(merge_args(stored, user))
    try:
        if payload and args.model in (None, payload.gguf.name) and not (args.model and os.path.exists(args.model)):
            path, offset = payload.path, payload.gguf.data_offset  # our own weights (llamafile's .args: -m NAME)
        elif args.model:
            path, offset = resolve_model(args.model)
        elif own_error:
            return cli.fail(own_error)
        else:
            return cli.fail("no model given (-m PATH)")
    except PayloadError as e:
        return cli.fail(str(e))
    args.model = path
    return cli.run(args, offset, default_mode=default_mode(sys.stdin, sys.stdout, sys.stderr))


def _isatty(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):
        return False


def default_mode(stdin, stdout, stderr) -> str:
    """The mode without one asked for: chat where a person is at a terminal (typing, or piping
    lines in with the reply on the screen: `echo hi | ./model.llamafile`) or where lines come
    from a pipe or a file (`echo hi | ./model.llamafile > out` in a script: the chat reads them
    and ends at their end), else the server (a double-click: no terminal, no input)."""
    if _isatty(stdin) or _isatty(stdout) or _isatty(stderr) or _piped(stdin):
        return "chat"
    return "server"


def _piped(stream) -> bool:
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_size > 0)


def _follow_the_parent() -> None:
    """The one-file build runs as two processes: PyInstaller's bootloader, which unpacks the
    runtime into a temporary directory and removes it after, and this one. If the bootloader is
    killed outright (SIGKILL), this one is told (SIGTERM, Linux's parent-death signal) instead of
    writing on in the terminal unattended, and removes the unpacked runtime on its way out."""
    if not getattr(sys, "frozen", False) or not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
            return
    except (OSError, AttributeError):
        return

    def clean_up() -> None:  # at exit (SIGTERM ends the process through SystemExit, or the chat's own way)
        if os.getppid() != parent and getattr(sys, "_MEIPASS", None):  # the bootloader is gone
            import shutil

            shutil.rmtree(sys._MEIPASS, ignore_errors=True)

    def terminated(signum, frame) -> None:
        raise SystemExit(128 + signum)

    import atexit

    atexit.register(clean_up)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminated)
    if os.getppid() != parent:  # it died before the signal was asked for
        raise SystemExit(128 + signal.SIGTERM)


def entry() -> None:
    """The packed file's process: main(), then stdout flushed while this can still say how it
    went (cli.flushed)."""
    _follow_the_parent()
    from runtime import cli

    sys.exit(cli.flushed(main()))


if __name__ == "__main__":
    entry()
