"""`packer build ./model-dir`: a Hugging Face checkpoint folder as the model (packer/hf/convert.py)."""
from __future__ import annotations

from packer.build import PackError


class HFError(PackError):
    """A checkpoint folder that cannot be converted; the message is one line naming the file (and tensor)."""

