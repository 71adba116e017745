"""SIMD kernels against the plain-C reference, through the C harness tests/neon/harness.c.

NEON: cross-compiled with Debian's aarch64 gcc and run under qemu-user (both
installed by `make`). AVX2: the same harness built natively, when the CPU has AVX2.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from packer.runtime_cross import csrc_build
from runtime import kernels

ROOT = Path(__file__).resolve().parent.parent
# the library's C files (csrc/build.py's c_sources)
LIB_SOURCES = [str(p) for p in sorted((ROOT / "csrc").glob("*/*.c"))]
CFLAGS = ["-O2", "-std=gnu11", "-ffp-contract=off", "-pthread", "-Wall", "-Wextra", "-Wno-unused-parameter"]


def _compile(cc: str, sources: list[str], out: Path, cflags: list[str], link: list[str]) -> Path:
    """Each file compiled on its own, as many at a time as there are CPUs (csrc/build.py)."""
    return csrc_build().compile_and_link(cc, sources, out, [*cflags, f"-I{ROOT / 'csrc'}"], link)


def _build_and_run(cc: str, out: Path, runner: list[str], extra: list[str]) -> str:
    sources = LIB_SOURCES + [str(ROOT / "tests/neon/harness.c")]
    _compile(cc, sources, out, [*CFLAGS, *extra], [*extra, "-pthread", "-lm"])
    run = subprocess.run([*runner, str(out)], capture_output=True, text=True, timeout=600)
    return run.stdout + run.stderr


def _assert_all_passed(output: str) -> None:
    m = re.search(r"^(\d+) passed, (\d+) failed$", output, re.M)
    assert m, f"harness printed no summary:\n{output}"
    failures = [line for line in output.splitlines() if line.startswith("FAIL")]
    assert int(m.group(2)) == 0 and not failures, "\n".join(failures)
    assert int(m.group(1)) >= 13 * 4, output  # every type: two dot sizes, dot_4acts and the matmul path


def test_neon_kernels_under_qemu(tmp_path: Path) -> None:
    cc, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    assert cc and qemu, "aarch64-linux-gnu-gcc and qemu-aarch64 are needed: run `make` (it installs them)"
    output = _build_and_run(cc, tmp_path / "harness-aarch64", [qemu], ["-static"])
    assert "checking NEON kernels" in output, output
    _assert_all_passed(output)


@pytest.mark.skipif("avx2" not in kernels.available_isas(), reason="this CPU has no AVX2")
def test_avx2_kernels_native(tmp_path: Path) -> None:
    output = _build_and_run("gcc", tmp_path / "harness-x86", [], [])
    assert "checking AVX2 kernels" in output, output
    _assert_all_passed(output)


def test_neon_kernels_fuzzed_with_nonfinite_inputs_under_qemu(tmp_path: Path) -> None:
    """tests/neon/fuzz.c (see test_asan.py) on the NEON, DOTPROD and I8MM kernels (qemu's default CPU
    has the dot-product and int8 matrix-multiply instructions): NaN, inf, huge and denormal inputs. A static qemu binary
    cannot carry AddressSanitizer; UBSan traps instead (no run-time library needed), and a read
    past a buffer ends as a crash or a hang."""
    cc, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    assert cc and qemu, "aarch64-linux-gnu-gcc and qemu-aarch64 are needed: run `make` (it installs them)"
    exe = tmp_path / "fuzz-aarch64"
    sources = LIB_SOURCES + [str(ROOT / "tests/neon" / f) for f in ("fuzz.c", "fuzz_model.c")]
    ub = ["-fsanitize=undefined,float-cast-overflow", "-fsanitize-undefined-trap-on-error"]
    _compile(cc, sources, exe, ["-O1", *CFLAGS[1:], "-static", *ub], ["-static", *ub, "-pthread", "-lm"])
    run = subprocess.run([qemu, str(exe), "neon", "dotprod", "i8mm"], capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    for isa in ("neon", "dotprod", "i8mm"):
        assert f"fuzzing the {isa} kernels" in output, output
    m = re.search(r"^(\d+) passed, (\d+) failed$", output, re.M)
    assert m and int(m.group(2)) == 0 and int(m.group(1)) >= 1200, output[-4000:]
