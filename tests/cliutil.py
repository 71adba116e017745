"""Shared check for the command lines' user errors."""
from __future__ import annotations

import subprocess


def assert_one_line_error(r: subprocess.CompletedProcess[str], needle: str) -> None:
    """A user error: non-zero exit, no traceback, exactly one stderr line `error: ...` naming needle."""
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
