"""Builds the kernel library as the cffi extension module ``runtime._kernels``.

Run directly (``python csrc/build.py``, what ``make`` does) to compile in place,
or through setuptools' ``cffi_modules`` hook when the package is installed.
The library is built for baseline x86-64 / aarch64: AVX2 functions carry their
own target attribute (simd.h) and are used only after a CPU check, so one build
runs on any CPU of the architecture.
"""
from __future__ import annotations

import re
import sys
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


def make_builder(absolute: bool) -> FFI:
    """setuptools wants paths relative to the project; a direct build, absolute ones."""
    base = ROOT if absolute else Path()
    builder = FFI()
    builder.cdef(_cdef())
    builder.set_source(
        "runtime._kernels",
        '#include "api.h"',
        sources=sorted(str(base / "csrc" / p.name) for p in HERE.glob("*.c")),
        include_dirs=[str(base / "csrc")],
        extra_compile_args=CFLAGS,
        extra_link_args=["-pthread"],
        libraries=["m"],
    )
    return builder


ffibuilder = make_builder(absolute=False)

if __name__ == "__main__":
    import shutil

    tmp = ROOT / "build" / "cffi"
    built = Path(make_builder(absolute=True).compile(tmpdir=str(tmp), verbose="-v" in sys.argv))
    for old in (ROOT / "runtime").glob("_kernels*.so"):
        old.unlink()
    shutil.copy2(built, ROOT / "runtime" / built.name)
