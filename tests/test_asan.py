"""The kernels under AddressSanitizer and UBSan, fed NaN, inf, huge and denormal values.

csrc/build.py compiles csrc/*/*.c with -fsanitize=address,undefined,float-cast-overflow
and links the fuzz harness tests/neon/fuzz.c (the same as `make asan`); the harness
runs every activation quantizer, dot product (vec_dot, vec_dot_4acts, vec_dot_4weights), matrix
product (row dots and the batched product), row operation and the whole forward pass
of dense and mixture-of-experts models with damaged weights, on every ISA this CPU
has. Any out-of-bounds access, out-of-range float-to-int conversion or other
undefined behaviour aborts it; a hang hits the timeout. The NEON kernels get the
same harness under qemu in test_simd.py.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from packer.runtime_cross import csrc_build
from runtime import kernels

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_every_kernel_survives_nonfinite_inputs_under_asan(tmp_path: Path) -> None:
    build = csrc_build()
    exe = build.build_asan(tmp_path)
    run = build.run_asan(exe, timeout=240)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "Sanitizer" not in output and "runtime error" not in output, output[-6000:]
    for isa in kernels.available_isas():
        assert f"fuzzing the {isa} kernels" in output, output
    m = re.search(r"^(\d+) passed, (\d+) failed$", output, re.M)
    assert m and int(m.group(2)) == 0, output[-6000:]
    # quantizers, dots, products and ops for 10 input patterns, plus the models, per ISA
    assert int(m.group(1)) >= 400 * len(kernels.available_isas()), output[-2000:]
