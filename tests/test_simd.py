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


def _build_and_run(cc: str, out: Path, runner: list[str], extra: list[str]) -> str:
    # csrc/build.py's recipe, which `make` ran first: unless a C file changed since, this only links
    csrc_build().build_program(cc, ["harness.c"], out, extra)
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
    exe = csrc_build().build_neon_fuzz(tmp_path / "fuzz-aarch64")
    # one emulator per ISA, side by side: a minute each under qemu
    runs = {isa: subprocess.Popen([qemu, str(exe), isa], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for isa in ("neon", "dotprod", "i8mm")}
    passed = 0
    for isa, proc in runs.items():
        output = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, output[-4000:]
        assert f"fuzzing the {isa} kernels" in output, output
        m = re.search(r"^(\d+) passed, (\d+) failed$", output, re.M)
        assert m and int(m.group(2)) == 0, output[-4000:]
        passed += int(m.group(1))
    assert passed >= 1200, passed


def test_the_object_cache_follows_the_sources_and_their_headers(tmp_path: Path, monkeypatch) -> None:
    """The test programs' objects come from build/objcache while nothing changed: a changed C file or
    header beside it, or other flags, compile again."""
    build = csrc_build()
    monkeypatch.setattr(build, "OBJ_CACHE", tmp_path / "cache")
    src, header = tmp_path / "src" / "main.c", tmp_path / "src" / "value.h"
    src.parent.mkdir()
    src.write_text('#include <stdio.h>\n#include "value.h"\nint main(void) { printf("%d\\n", VALUE); return 0; }\n')

    def run(value: int, flags: list[str]) -> str:
        header.write_text(f"#define VALUE {value}\n")
        exe = build.compile_and_link("gcc", [src], tmp_path / "out" / "main", flags, [])
        return subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.strip()

    assert run(1, ["-O1"]) == "1"
    assert len(list((tmp_path / "cache").glob("*.o"))) == 1
    assert run(1, ["-O1"]) == "1" and len(list((tmp_path / "cache").glob("*.o"))) == 1  # from the cache
    assert run(2, ["-O1"]) == "2"  # the header changed
    assert run(2, ["-O2"]) == "2"
    assert len(list((tmp_path / "cache").glob("*.o"))) == 3
    src.write_text(src.read_text().replace("VALUE)", "VALUE + 40)"))
    assert run(2, ["-O2"]) == "42"
