"""`packer build ./model-dir`: a Hugging Face checkpoint folder as the model (packer/hf/convert.py)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NoReturn

from packer.build import PackError

FLOAT32_MAX = 3.4028234663852886e38
_INT_RANGES = {"uint32": (0, 2**32 - 1), "int32": (-2**31, 2**31 - 1)}


class HFError(PackError):
    """A checkpoint folder that cannot be converted; the message is one line naming the file (and tensor)."""


def config_value(path: Path, key: str, value: Any, kind: str) -> Any:
    """value, key's value in the JSON file path, as kind: "uint32" or "int32" (a JSON number with
    no fraction, in the GGUF type's range: 2 or 2.0, not "2" nor true), "float32" (a finite JSON
    number in float32's range), "object", "list" or "string". Anything else is an HFError naming
    the file, the key and what it must be (the GGUF writer would fail on it with no name)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in _INT_RANGES:
        lo, hi = _INT_RANGES[kind]
        if not (number and math.isfinite(value) and value == int(value)):
            refuse(path, key, value, "an integer")
        if not lo <= value <= hi:
            refuse(path, key, value, f"an integer from {lo} to {hi}")
        return int(value)
    if kind == "float32":
        if not (number and math.isfinite(value)):
            refuse(path, key, value, "a number")
        if abs(value) > FLOAT32_MAX:
            refuse(path, key, value, f"a number within float32's range (±{FLOAT32_MAX:.4g})")
        return float(value)
    if kind == "object" and not isinstance(value, dict):
        refuse(path, key, value, "an object")
    if kind == "list" and not isinstance(value, list):
        refuse(path, key, value, "a list")
    if kind == "string" and not isinstance(value, str):
        refuse(path, key, value, "a string")
    return value


def refuse(path: Path, key: str, value: Any, what: str) -> NoReturn:
    """The error: `path: "key" must be what, not value` (value as JSON)."""
    shown = json.dumps(value, ensure_ascii=False)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise HFError(f"{path}: \"{key}\" must be {what}, not {shown}")
