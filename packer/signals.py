"""Signals during `packer build`: the ones that would end the process raise Interrupted inside
cleanup_on_signals(), so the builder removes its temporary file first; signals_held() defers
them across the few steps that must not be cut in half (creating, renaming, cleaning up)."""
from __future__ import annotations

import contextlib
import signal
import threading

# The signals that end a process unless caught. Not here: the faults a program raises itself
# (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS), and SIGPIPE and SIGXFSZ, which
# Python ignores (the write fails instead, and the build cleans up as after any error).
CLEANUP_SIGNALS = tuple(getattr(signal, name) for name in (
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF",
    "SIGXCPU", "SIGPWR") if hasattr(signal, name))


class Interrupted(BaseException):
    """A signal stopped the build; the exit status is 128 + its number, as a shell reports it.
    (Not a KeyboardInterrupt: click would turn that into its own Abort.)"""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _interrupt(signum, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def cleanup_on_signals():
    """Within the block, each of CLEANUP_SIGNALS raises Interrupted, so that build() removes its
    temporary file (a hidden file as large as the model) before the process ends; the block
    restores the previous handlers. For a command line: a library call leaves handlers alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _interrupt) for s in CLEANUP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_held():
    """Holds CLEANUP_SIGNALS back (where the system can) until the block is done."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(CLEANUP_SIGNALS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
