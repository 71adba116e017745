"""Builds the kernel library as the cffi extension module ``runtime._kernels``.

Run directly (``python csrc/build.py``, what ``make`` does) to compile in place,
or through setuptools' ``cffi_modules`` hook when the package is installed.
The library is built for baseline x86-64 / aarch64: AVX2 functions carry their
own target attribute (simd.h) and are used only after a CPU check, so one build
runs on any CPU of the architecture.

``python csrc/build.py --asan`` (``make asan``) instead builds the kernels with
AddressSanitizer and UBSan, linked with the fuzz harness tests/neon/fuzz.c (NaN,
inf, huge and denormal inputs to every kernel on every ISA of this CPU), into
build/asan/fuzz, and runs it.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CFLAGS = ["-O3", "-std=gnu11", "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Wextra",
          "-Wno-unused-parameter", "-Wno-unused-function", "-pthread"]


def _cdef() -> str:
    text = (HERE / "api.h").read_text()
    text = re.sub(r"//[^\n]*", "", text)  # comments
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def c_sources() -> list[Path]:
    """The library's C files: csrc/quants/*.c and csrc/engine/*.c (one compile each, the same flags)."""
    return sorted(HERE.glob("*/*.c"))


def make_builder(absolute: bool) -> FFI:
    """setuptools wants paths relative to the project; a direct build, absolute ones."""
    base = ROOT if absolute else Path()
    builder = FFI()
    builder.cdef(_cdef())
    builder.set_source(
        "runtime._kernels",
        '#include "api.h"',
        sources=[str(base / p.relative_to(ROOT)) for p in c_sources()],
        include_dirs=[str(base / "csrc")],
        extra_compile_args=CFLAGS,
        extra_link_args=["-pthread"],
        libraries=["m"],
    )
    return builder


ffibuilder = make_builder(absolute=False)

# The sanitizer build: float-cast-overflow is not part of "undefined" in gcc, and it is
# the check that matters most here (NaN or inf converted to an integer).
SANITIZE = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all"]
ASAN_CFLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", *SANITIZE] + CFLAGS[1:]
FUZZ = ROOT / "tests" / "neon" / "fuzz.c"


def build_asan(out_dir: Path, cc: str = "gcc") -> Path:
    """Compiles the library's C files and the fuzz harness with the sanitizers (one object per file, two
    at a time) and links them into out_dir/fuzz; returns its path. Raises CalledProcessError
    with the compiler's output on failure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = c_sources() + [FUZZ]

    def compile_one(src: Path) -> Path:
        obj = out_dir / f"{src.parent.name}_{src.stem}.o"
        subprocess.run([cc, *ASAN_CFLAGS, f"-I{HERE}", "-c", str(src), "-o", str(obj)],
                       check=True, capture_output=True, text=True)
        return obj

    with ThreadPoolExecutor(max_workers=2) as pool:
        objects = list(pool.map(compile_one, sources))
    exe = out_dir / "fuzz"
    subprocess.run([cc, *SANITIZE, *map(str, objects), "-lm", "-pthread", "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    return exe


def run_asan(exe: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs the sanitizer build of the fuzz harness (a hang ends as TimeoutExpired)."""
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    return subprocess.run([str(exe)], capture_output=True, text=True, timeout=timeout, env=env)


if __name__ == "__main__" and "--asan" in sys.argv:
    try:
        fuzz = build_asan(ROOT / "build" / "asan")
    except subprocess.CalledProcessError as e:
        sys.exit(f"asan build failed:\n{e.stdout}{e.stderr}")
    run = run_asan(fuzz)
    print(run.stdout + run.stderr, end="")
    sys.exit(run.returncode)

if __name__ == "__main__":
    import shutil

    tmp = ROOT / "build" / "cffi"
    built = Path(make_builder(absolute=True).compile(tmpdir=str(tmp), verbose="-v" in sys.argv))
    for old in (ROOT / "runtime").glob("_kernels*.so"):
        old.unlink()
    shutil.copy2(built, ROOT / "runtime" / built.name)
