"""The model entry `packer build FOLDER` writes: the checkpoint converted (packer/hf/convert.py),
as it is (F16/BF16, what llama.cpp's converter writes) or quantized with a mix (packer/quantize.py
reads the converted tensors as it reads a GGUF's), planned before anything is written."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

from packer.hf import HFError
from packer.hf.convert import HFCheckpoint
from packer.quantize import GGUF_MAGIC, Entry, QuantizeError, QuantPlan, TensorPlan, _kv, _pad, _string, plan
from runtime.constants import GGMLType

_FILE_TYPE_NAMES = {GGMLType.BF16: "BF16", GGMLType.F16: "F16", GGMLType.Q4_1: "Q4_1"}


def entry(folder: Path, mix: str | None, allow_requantize: bool, threads: int | None) -> Entry:
    """The Entry for folder: checked as the runtime checks a model, then planned."""
    from runtime.kernels import default_threads
    from runtime.model_check import check_model

    try:
        ckpt = HFCheckpoint(folder)
        try:
            check_model(ckpt)
        except ValueError as e:  # ModelError, GGUFError, TokenizerError: one line each
            raise HFError(f"{folder}: {e}") from None
        try:
            qp = plan(ckpt, mix, allow_requantize, ckpt.kept_q4_1) if mix else as_converted(ckpt)
        except QuantizeError as e:
            raise HFError(f"{folder}: {e}") from None
    except HFError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, ZeroDivisionError,
            struct.error) as e:
        # a value the checks do not name (config values are checked as read, packer/hf config_value;
        # a tokenizer.json of an unexpected shape is not): what it was converted with says which
        raise HFError(f"{folder}: a value in its config files cannot be used ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else 'no detail'})") from None
    for note in ckpt.notes:  # once the plan stands: an error stays the one line
        sys.stderr.write(f"note: {note}\n")
    name = f"{folder.resolve().name}.{qp.mix}.gguf"
    return Entry(qp, max(1, min(256, threads or default_threads())), name)


def as_converted(ckpt: HFCheckpoint) -> QuantPlan:
    """The converter's own GGUF: its keys and tensors in its order, each tensor in its type."""
    plans = [TensorPlan(t.name, t.shape, t, t.type) for t in ckpt.tensors.values()]
    offset = 0
    for p in plans:
        p.offset = offset
        offset += _pad(p.nbytes, ckpt.alignment)
    kvs = [_kv(k, ckpt.value_types[k], v) for k, v in ckpt.metadata.items()]
    infos = []
    for p in plans:
        ne = list(reversed(p.shape))
        infos.append(_string(p.name) + struct.pack(f"<I{len(ne)}qIQ", len(ne), *ne, p.type, p.offset))
    head = GGUF_MAGIC + struct.pack("<IQQ", 3, len(plans), len(kvs)) + b"".join(kvs) + b"".join(infos)
    head += bytes(_pad(len(head), ckpt.alignment) - len(head))
    return QuantPlan(_FILE_TYPE_NAMES[ckpt.output_type], ckpt.metadata["general.file_type"], head, plans,
                     ckpt.alignment, len(head) + offset)
