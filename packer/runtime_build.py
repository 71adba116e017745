"""Builds the one-file runtime with PyInstaller, again only when its inputs changed.

    python -m packer.runtime_build [--dist DIR] [--work DIR] [--force] [--platform linux-aarch64|all]

`make`, `make runtime` and the test suite's fixture all come here, and to the same dist/: the
runtime `make` built is the one the tests run. The inputs (every file under runtime/, the spec
and the entry script, the installed distributions' versions) are hashed into a stamp beside
the executable; a matching stamp means the executable is current.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from packer.runtime_info import platform_tag

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"                   # where `make` (and the tests) keep the runtimes
WORK = ROOT / "build" / "pyinstaller"  # PyInstaller's work directory for this platform's
SPEC = ROOT / "packer" / "llamapack-runtime.spec"
INPUTS = [ROOT / "packer" / "runtime_entry.py", SPEC, ROOT / "packer" / "runtime_info.py"]


def runtime_name() -> str:
    return f"llamapack-runtime-{platform_tag()}" + (".exe" if sys.platform == "win32" else "")


def inputs_hash() -> str:
    h = hashlib.sha256()
    files = sorted(p for p in (ROOT / "runtime").rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".c", ".o"))
    for p in files + INPUTS:
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes())
    for d in sorted(importlib.metadata.distributions(), key=lambda d: d.metadata["Name"] or ""):
        h.update(f"{d.metadata['Name']}=={d.version}\n".encode())
    h.update(sys.version.encode())
    return h.hexdigest()


# PyInstaller's log lines that start a step, and how `make runtime` names the step
STEPS = [
    ("Analyzing modules for base_library.zip", "analysing the standard library's core modules"),
    ("Analyzing " + str(ROOT / "packer" / "runtime_entry.py"), "following the launcher's imports (the long step)"),
    ("Looking for dynamic libraries", "collecting the binaries (Python, numpy, the kernels)"),
    ("Building PYZ", "compressing the Python modules (PYZ)"),
    ("Building PKG", "writing the archive of binaries and data (PKG)"),
    ("Building EXE", "joining the bootloader and the archive into the executable"),
]


def build_runtime(dist: Path = DIST, work: Path = WORK, force: bool = False,
                  say: Callable[[str], None] | None = None) -> Path:
    """The runtime executable in dist, built unless its stamp says it is current.
    say, when given, gets a line per step (`make runtime` prints them)."""
    say = say or (lambda line: None)
    exe = Path(dist) / runtime_name()
    stamp = exe.with_name(exe.name + ".inputs")
    say("checking the inputs (runtime/, the spec, the installed packages)")
    digest = inputs_hash()
    if not force and exe.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        say(f"{_shown(exe)} is up to date")
        return exe
    stamp.unlink(missing_ok=True)
    say(f"building {_shown(exe)} with PyInstaller (about half a minute)")
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "INFO",
           "--distpath", str(dist), "--workpath", str(work), str(SPEC)]
    t0 = time.monotonic()
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
        log, said = [], set()
        for line in p.stdout:  # PyInstaller logs on stderr: kept for a failure, steps named as they start
            log.append(line)
            for needle, step in STEPS:
                if needle in line and step not in said:
                    said.add(step)
                    say(f"{time.monotonic() - t0:4.0f} s  {step}")
    if p.returncode != 0 or not exe.is_file():
        raise RuntimeError(f"PyInstaller failed ({p.returncode}):\n{''.join(log[-60:])}")
    stamp.write_text(digest + "\n")
    say(f"{time.monotonic() - t0:4.0f} s  done")
    return exe


def _shown(p: Path) -> str:
    return str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)


_built: dict[tuple[Path, Path], Path] = {}


def build_runtime_once(dist: Path = DIST, work: Path = WORK) -> Path:
    """build_runtime, at most once per process: a test session builds (or checks) the runtime once,
    even if runtime/ changes under it meanwhile."""
    key = (Path(dist).resolve(), Path(work).resolve())
    if key not in _built:
        _built[key] = build_runtime(dist, work)
    return _built[key]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dist", type=Path, default=DIST)
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--force", action="store_true")
    p.add_argument("--platform", default=platform_tag(),
                   help="this machine's (default), another one it can cross-build (packer/runtime_cross.py), or all")
    a = p.parse_args()
    from packer import runtime_cross

    cross = runtime_cross.buildable_platforms()
    if a.platform not in (platform_tag(), "all", *cross):
        print(f"error: cannot build a {a.platform} runtime on {platform_tag()} (can: {', '.join([platform_tag(), *cross])})",
              file=sys.stderr)
        return 2
    say = lambda line: print(f"runtime: {line}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        exes = [build_runtime(a.dist, a.work, a.force, say=say)] if a.platform in (platform_tag(), "all") else []
        exes += [runtime_cross.build_runtime(a.dist, force=a.force, say=say)
                 for c in cross if a.platform in (c, "all")]
    except runtime_cross.CrossBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for exe in exes:
        print(f"{_shown(exe)}: {exe.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
