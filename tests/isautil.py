"""Runs a script twice, with the AVX2 kernels' AVX-VNNI on and off (LLAMAPACK_AVXVNNI=1 / 0)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def with_and_without_avxvnni(script: str, tmp_path: Path) -> list[np.ndarray]:
    """The array each run of `script` saved at the path it got as argv[1]: AVX-VNNI on, then off
    (the switch is read once per process, hence a process each)."""
    outs = []
    for flag in ("1", "0"):
        path = tmp_path / f"vnni{flag}.npy"
        env = {**os.environ, "LLAMAPACK_AVXVNNI": flag}
        subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, env=env, check=True)
        outs.append(np.load(path))
    return outs
