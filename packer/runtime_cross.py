"""The linux-aarch64 runtime, built on an x86-64 Linux machine (`make runtime PLATFORM=linux-aarch64`).

Everything comes from the package registries, cached under build/aarch64/:

    apt/       a private apt root (its own lists, cache and empty dpkg status: the machine's
               package state is never touched) that downloads Debian's arm64 packages
    sysroot/   those packages unpacked: an aarch64 CPython 3.11 with its shared library and headers
    site/      aarch64 wheels from PyPI (numpy, cffi, the server's packages, PyInstaller with its
               aarch64 bootloader), the versions this machine's environment has
    bin/       host tools PyInstaller calls, pointed at the aarch64 ones (ldd, objdump, strip, ...)
    stage/     runtime/ and the spec, with the kernels cross-compiled by aarch64-linux-gnu-gcc
    bare/      libc6 and zlib1g alone: the smallest aarch64 Debian a packed file runs on (tests)

PyInstaller itself runs on the aarch64 Python under qemu-aarch64, so it analyses, collects and
links exactly what the aarch64 interpreter imports. The result is
dist/llamapack-runtime-linux-aarch64, rebuilt only when its inputs change (a stamp beside it).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from packer.runtime_build import DIST

ROOT = Path(__file__).resolve().parent.parent
PLATFORM = "linux-aarch64"
CACHE = ROOT / "build" / "aarch64"
PY = "3.11"  # Debian bookworm's Python, the interpreter the runtime carries
# Debian packages of the sysroot (apt adds their dependencies): the interpreter, its shared library
# (PyInstaller's bootloader loads it), headers for the kernels' extension module, and libstdc++
# (numpy's wheels link it).
DEBIAN_PACKAGES = [f"python{PY}-minimal", f"libpython{PY}-stdlib", f"libpython{PY}", f"libpython{PY}-dev",
                   "libstdc++6", "zlib1g"]
BARE_PACKAGES = ["libc6", "zlib1g"]  # what the runtime's bootloader needs of the system
# PyPI distributions for the runtime (pyproject's dependencies) and the build.
WHEELS = ["numpy", "cffi", "click", "jinja2", "starlette", "uvicorn", "pyinstaller"]
WHEEL_PLATFORMS = ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64"]
CROSS = "aarch64-linux-gnu-"
CROSS_TOOLS = ["objdump", "objcopy", "strip", "readelf", "nm"]
KERNELS = f"_kernels.cpython-{PY.replace('.', '')}-aarch64-linux-gnu.so"


class CrossBuildError(RuntimeError):
    """A step of the cross build failed; the message says which and why."""


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise CrossBuildError(f"{what} failed ({r.returncode}): {' '.join(map(str, cmd[:6]))} ...\n"
                              f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def _stamped(stamp: Path, key: str) -> bool:
    return stamp.is_file() and stamp.read_text() == key


def _hash(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()


def check_host() -> None:
    """The host tools this build needs (`make` installs them: tools/debian-packages.sh)."""
    missing = [t for t in ("qemu-aarch64", CROSS + "gcc", "apt-get", "dpkg-deb") + tuple(CROSS + t for t in CROSS_TOOLS)
               if not shutil.which(t)]
    if missing:
        raise CrossBuildError(f"the {PLATFORM} runtime needs {', '.join(missing)}: run `make` (it installs them)")


# -- Debian's arm64 packages, through a private apt root ------------------------------------

def _debian_sources() -> str:
    """The machine's Debian archive entries (by their signing keyring), as one-line sources for arm64."""
    lines = []
    etc = Path("/etc/apt")
    for f in sorted(etc.glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.M))
            if "debian-archive-keyring" not in fields.get("Signed-By", "") or "deb" not in fields.get("Types", "").split():
                continue
            for uri in fields.get("URIs", "").split():
                for suite in fields.get("Suites", "").split():
                    lines.append(f"deb [arch=arm64 signed-by={fields['Signed-By'].strip()}] {uri} {suite} "
                                 f"{fields.get('Components', 'main')}")
    for f in [etc / "sources.list", *sorted(etc.glob("sources.list.d/*.list"))]:
        if f.is_file():
            for line in f.read_text().splitlines():
                m = re.match(r"\s*deb\s+(\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)", line)
                if m and "debian" in m.group(2) and "deb-src" not in line:
                    lines.append(f"deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                                 f"{m.group(2)} {m.group(3)} {m.group(4)}")
    if not lines:
        raise CrossBuildError("no Debian archive in /etc/apt: the arm64 packages come from Debian's archive")
    return "\n".join(dict.fromkeys(lines)) + "\n"


def _apt(root: Path) -> list[str]:
    """apt-get with its lists, cache and status inside root and arm64 as its only architecture; the
    machine's apt settings (apt.conf.d: proxies, date checks of a mirror) still apply."""
    return ["apt-get", "-q", "-o", f"Dir::Etc={root / 'etc'}", "-o", "Dir::Etc::Parts=/etc/apt/apt.conf.d",
            "-o", f"Dir::State={root / 'state'}",
            "-o", f"Dir::Cache={root / 'cache'}", "-o", f"Dir::State::status={root / 'state' / 'status'}",
            "-o", "APT::Architecture=arm64", "-o", "APT::Architectures::=arm64", "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root"]


def download_debs(cache: Path = CACHE) -> list[Path]:
    """Debian's arm64 packages for the sysroot (with their dependencies), downloaded once."""
    root = cache / "apt"
    stamp = root / "downloaded"
    sources = _debian_sources()
    key = _hash(sources, *DEBIAN_PACKAGES, *BARE_PACKAGES)
    archives = root / "cache" / "archives"
    if not _stamped(stamp, key):
        shutil.rmtree(root, ignore_errors=True)
        for d in ("etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d", "state/lists/partial",
                  "cache/archives/partial"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "etc" / "sources.list").write_text(sources)
        (root / "state" / "status").write_text("")
        _run(_apt(root) + ["update"], "apt-get update (arm64 lists)")
        _run(_apt(root) + ["install", "-y", "--download-only", "--no-install-recommends",
                           *DEBIAN_PACKAGES, *BARE_PACKAGES], "apt-get download (arm64 packages)")
        stamp.write_text(key)
    return sorted(archives.glob("*.deb"))


def _unpack(debs: list[Path], dest: Path, key: str) -> Path:
    stamp = dest.with_name(dest.name + ".stamp")
    if not _stamped(stamp, key):
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(dest)], f"unpacking {deb.name}")
        stamp.write_text(key)
    return dest


def sysroot(cache: Path = CACHE) -> Path:
    """Every downloaded package unpacked (no maintainer scripts run: none is needed to run Python)."""
    debs = download_debs(cache)
    return _unpack(debs, cache / "sysroot", _hash(*(d.name for d in debs)))


def bare_root(cache: Path = CACHE) -> Path:
    """libc6 and zlib1g only: an aarch64 system with nothing the runtime should carry itself."""
    debs = [d for d in download_debs(cache) if d.name.split("_")[0] in BARE_PACKAGES]
    return _unpack(debs, cache / "bare", _hash(*(d.name for d in debs)))


def qemu_cmd(root: Path, cpu: str = "max") -> list[str]:
    """How to run an aarch64 program of root on this machine."""
    return ["qemu-aarch64", "-L", str(root), "-cpu", cpu]


# -- aarch64 wheels ---------------------------------------------------------------------------

def _pins() -> list[str]:
    """This environment's versions of everything installed: the aarch64 runtime gets the same ones."""
    pins = {}
    for d in importlib.metadata.distributions():
        name = d.metadata["Name"]
        if name and name.lower() != "llamapack":
            pins[name.lower()] = f"{name}=={d.version}"
    return sorted(pins.values())


def site_packages(cache: Path = CACHE) -> Path:
    """The runtime's distributions and PyInstaller as aarch64 wheels, installed into site/."""
    site = cache / "site"
    pins = _pins()
    key = _hash(*WHEELS, *WHEEL_PLATFORMS, *pins)
    stamp = cache / "site.stamp"
    if not _stamped(stamp, key):
        shutil.rmtree(site, ignore_errors=True)
        constraints = cache / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n")
        plat = [a for p in WHEEL_PLATFORMS for a in ("--platform", p)]
        _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(site),
              *plat, "--python-version", PY, "--implementation", "cp", "--abi", f"cp{PY.replace('.', '')}",
              "--only-binary=:all:", "-c", str(constraints), *WHEELS], "pip install (aarch64 wheels)")
        stamp.write_text(key)
    return site


# -- the kernels, cross-compiled ------------------------------------------------------------

def csrc_build():
    """csrc/build.py as a module (a script beside the C sources, not a package): the compiler flags,
    the source list, cffi's builder, compile_and_link. The tests that build C harnesses use it too."""
    spec = importlib.util.spec_from_file_location("llamapack_csrc_build", ROOT / "csrc" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_kernels(root: Path, out: Path, cache: Path = CACHE) -> Path:
    """runtime._kernels for aarch64: cffi's C source for api.h, compiled with csrc/*/*.c by the cross gcc."""
    csrc = csrc_build()
    src = cache / "kernels" / "_kernels.c"
    src.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # cffi says "generating ..."
        csrc.make_builder(absolute=True).emit_c_code(str(src))
    sources = [str(p) for p in csrc.c_sources()] + [str(src)]
    out.parent.mkdir(parents=True, exist_ok=True)
    cflags = ["-fPIC", *csrc.CFLAGS, f"-I{ROOT / 'csrc'}", "-isystem", str(root / "usr" / "include" / f"python{PY}"),
              "-idirafter", str(root / "usr" / "include")]
    try:  # a file at a time on every CPU (the objects in the cache, not beside the module)
        return csrc.compile_and_link(CROSS + "gcc", sources, out, cflags, ["-shared", "-lm"], objs=src.parent / "objs",
                                     cache=False)  # cffi's module includes Python.h
    except subprocess.CalledProcessError as e:
        raise CrossBuildError(f"cross-compiling the kernels failed:\n{(e.stdout or '')[-3000:]}{(e.stderr or '')[-3000:]}")


# -- PyInstaller under qemu ---------------------------------------------------------------------

def _host_tools(root: Path, bin_dir: Path) -> Path:
    """Wrappers PyInstaller finds first on PATH: its host-tool calls see aarch64 binaries."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    q = " ".join(qemu_cmd(root))
    scripts = {
        # the aarch64 dynamic loader lists dependencies, as paths into the sysroot that the host
        # tools can open too; the emulator's vdso line (no name) is dropped
        "ldd": f'{q} {root}/lib/ld-linux-aarch64.so.1 --library-path {_libpath(root)} --list "$@"'
               ' | grep -v "^[[:space:]]*(0x"',
        # no ld.so cache: the host's would name x86-64 libraries; PyInstaller then searches the paths
        "ldconfig": 'echo "0 libs found in cache"',
        # PyInstaller's isolated subprocesses run sys.executable, which must go through qemu too
        "python-aarch64": f'exec {q} {root}/usr/bin/python{PY} "$@"',
    }
    scripts.update({t: f'exec {CROSS}{t} "$@"' for t in CROSS_TOOLS})
    for name, body in scripts.items():
        p = bin_dir / name
        p.write_text(f"#!/bin/sh\n{body}\n")
        p.chmod(0o755)
    return bin_dir


def _libpath(root: Path) -> str:
    """The sysroot's library directories, searched first by PyInstaller and by the ldd wrapper."""
    return os.pathsep.join(str(root / d / "aarch64-linux-gnu") for d in ("lib", "usr/lib"))


def _stage(stage: Path, root: Path, cache: Path) -> Path:
    """runtime/ and the spec's files in a tree of their own, the aarch64 kernels in place of the host's."""
    shutil.rmtree(stage, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "_kernels*", "*.o")
    shutil.copytree(ROOT / "runtime", stage / "runtime", ignore=skip)
    (stage / "packer").mkdir(parents=True)
    for name in ("__init__.py", "llamapack-runtime.spec", "runtime_entry.py", "runtime_info.py"):
        shutil.copy2(ROOT / "packer" / name, stage / "packer" / name)
    build_kernels(root, stage / "runtime" / KERNELS, cache)
    return stage


# Runs PyInstaller's main with sys.executable pointing at the qemu wrapper (its isolated
# subprocesses) while sys._base_executable stays the aarch64 binary (whose libraries it reads).
_PYINSTALLER_MAIN = ("import runpy, sys; sys.executable = sys.argv.pop(1); sys.argv[0] = 'pyinstaller'; "
                     "runpy.run_module('PyInstaller', run_name='__main__', alter_sys=True)")


def inputs_hash(cache: Path = CACHE) -> str:
    from packer.runtime_build import inputs_hash as host_inputs

    csrc = sorted((ROOT / "csrc").rglob("*.[ch]")) + [ROOT / "csrc" / "build.py", Path(__file__)]
    debs = sorted(p.name for p in (cache / "apt" / "cache" / "archives").glob("*.deb"))
    return _hash(host_inputs(), *debs, *WHEELS, *(p.read_bytes() for p in csrc))


def build_runtime(dist: Path = DIST, work: Path = CACHE / "pyinstaller", force: bool = False,
                  cache: Path = CACHE, say: Callable[[str], None] | None = None) -> Path:
    """dist/llamapack-runtime-linux-aarch64, built unless its stamp says it is current; say, when
    given, gets a line before each long step (`make` prints them)."""
    say = say or (lambda line: None)
    check_host()
    root = sysroot(cache)
    site = site_packages(cache)
    exe = Path(dist) / f"llamapack-runtime-{PLATFORM}"
    stamp = exe.with_name(exe.name + ".inputs")
    digest = inputs_hash(cache)
    if not force and exe.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return exe
    stamp.unlink(missing_ok=True)
    say(f"building {exe.name}: the kernels by {CROSS}gcc, then PyInstaller under qemu (about 3 minutes)")
    stage = _stage(cache / "stage", root, cache)
    bin_dir = _host_tools(root, cache / "bin")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=f"{site}{os.pathsep}{stage}", PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1",
               LD_LIBRARY_PATH=_libpath(root))
    env.pop("PYTHONHOME", None)
    cmd = [*qemu_cmd(root), str(root / "usr" / "bin" / f"python{PY}"), "-c", _PYINSTALLER_MAIN,
           str(bin_dir / "python-aarch64"), "--noconfirm", "--log-level", "WARN", "--distpath", str(dist),
           "--workpath", str(work), str(stage / "packer" / "llamapack-runtime.spec")]
    _run(cmd, "PyInstaller under qemu-aarch64", cwd=stage, env=env)
    if not exe.is_file():
        raise CrossBuildError(f"PyInstaller under qemu-aarch64 made no {exe}")
    stamp.write_text(digest + "\n")
    return exe


_built: dict[tuple[Path, Path], Path] = {}


def build_runtime_once(dist: Path = DIST, work: Path = CACHE / "pyinstaller") -> Path:
    """build_runtime, at most once per process (a test session)."""
    key = (Path(dist).resolve(), Path(work).resolve())
    if key not in _built:
        _built[key] = build_runtime(dist, work)
    return _built[key]


def buildable_platforms() -> list[str]:
    """The platforms other than its own this machine builds runtimes for."""
    from packer.runtime_info import platform_tag

    return [PLATFORM] if platform_tag() == "linux-x86_64" else []
