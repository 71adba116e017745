"""Runs a script twice, with a kernel switch on and off: the AVX2 kernels' AVX-VNNI
(LLAMAPACK_AVXVNNI=1 / 0), the AVX-512 product's AMX tiles (LLAMAPACK_AMX=1 / 0)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def with_and_without(switch: str, script: str, tmp_path: Path) -> list[np.ndarray]:
    """The array each run of `script` saved at the path it got as argv[1]: the environment
    variable `switch` 1, then 0 (the switches are read once per process, hence a process each)."""
    outs = []
    for flag in ("1", "0"):
        path = tmp_path / f"{switch}{flag}.npy"
        env = {**os.environ, switch: flag}
        subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, env=env, check=True)
        outs.append(np.load(path))
    return outs


def with_and_without_avxvnni(script: str, tmp_path: Path) -> list[np.ndarray]:
    """with_and_without for the AVX2 kernels' AVX-VNNI."""
    return with_and_without("LLAMAPACK_AVXVNNI", script, tmp_path)


def has_amx() -> bool:
    """Whether the AVX-512 batched product takes AMX tiles here (the CPU has AMX-INT8, the kernel
    grants the tile state, LLAMAPACK_AMX is not 0)."""
    from runtime import kernels
    return "avx512" in kernels.available_isas() and kernels.amx()
