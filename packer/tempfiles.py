"""The temporary file `packer build` writes beside its output, and those of builds that ended with
no chance to remove theirs (SIGKILL, the OOM killer, a power cut), hundreds of MB each.

A build's temporary file is `.NAME.PID.XXXXXXXX.tmp` (NAME the output's file name, PID the
building process, XXXXXXXX mkstemp's random part), locked (flock) by the build while it is open.
The next build to the same output removes those whose process is gone AND whose lock nobody
holds: the PID keeps the file of a build that has not locked it yet (or has just closed it to
rename it), the lock keeps the file of a live build whose PID means nothing here (another PID
namespace or host sharing the folder). A file of another form (another output's, an older
packer's with no PID) is left alone.
"""
from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock, and os.kill(pid, 0) would end the process
    fcntl = None  # type: ignore[assignment]


def create(target: Path) -> tuple[int, str]:
    """(descriptor, path) of a new temporary file beside target, named for this process and locked."""
    fd, path = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # a file system without locks (some NFS set-ups): the PID still protects it here
    return fd, path


def remove_stale(target: Path) -> list[str]:
    """Removes the temporary files that builds to target left when they died; their names."""
    if fcntl is None:
        return []
    pattern = re.compile(rf"\.{re.escape(target.name)}\.([0-9]{{1,10}})\.[a-z0-9_]{{8}}\.tmp")
    try:
        names = sorted(os.listdir(target.parent))
    except OSError:
        return []
    removed = []
    for name in names:
        m = pattern.fullmatch(name)
        if m and not _alive(int(m[1])) and _unlink_unlocked(target.parent / name):
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    """Whether a process pid may be running here (when in doubt: yes)."""
    if pid <= 0 or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # EPERM: another user's process
        return True
    return True


def _unlink_unlocked(path: Path) -> bool:
    """Removes path if it is a regular file whose lock this process can take (nobody holds it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # OSError: a live build holds it
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
