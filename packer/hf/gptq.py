"""GPTQ checkpoints: `quantization_config` in config.json (or quantize_config.json) with
quant_method "gptq"; each quantized linear layer X stored as X.qweight, X.qzeros, X.scales and
X.g_idx instead of X.weight.

The format (AutoGPTQ / GPTQModel, as llama.cpp's converter reads it), for a layer of K inputs,
N outputs, b bits, group size g (-1: one group of K):
- qweight int32 [K*b/32, N]: the b-bit codes packed along the input axis, little end first
  (input k of output n in word k*b//32, bits (k*b) % 32 and up; for 3 bits a code may straddle
  two words: the words of a column are one little-endian bit stream);
- qzeros int32 [K/g, N*b/32]: the zero points packed the same way along the output axis;
- scales float16 [K/g, N]; g_idx int32 [K]: each input's group (k // g, unless act-order);
- weight[n, k] = scales[g_idx[k], n] * (q[k, n] - zero[g_idx[k], n]), where zero is the stored
  value + 1 in the original format (checkpoint_format "gptq", the default: AutoGPTQ stored zero-1)
  and the stored value itself in "gptq_v2".

4-bit codes, groups a multiple of 32 long and no act-order (g_idx = k // g) map onto Q4_1 blocks
(32 inputs: x = d*q + m) with q unchanged, d = scale and m = -scale*zero rounded to fp16: the
converter keeps those layers as Q4_1 (`lossless`). Anything else is dequantized to float32 as
above (the exact float32 llama.cpp's converter computes) and quantized like any float weight.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from packer.hf import HFError
from packer.hf.safetensors import SafeTensor

PARTS = ("qweight", "qzeros", "scales", "g_idx")
Q4_1_BLOCK = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", (16,))])   # 20 bytes per 32 weights


@dataclass(frozen=True)
class GPTQConfig:
    bits: int
    group_size: int     # -1: one group per input row
    desc_act: bool      # act-order: g_idx is not k // g
    v1: bool            # checkpoint_format "gptq": stored zeros are zero - 1
    source: Path

    def describe(self) -> str:
        return (f"GPTQ {self.bits}-bit, group size {self.group_size}, "
                f"{'act-order' if self.desc_act else 'no act-order'}")


def read_gptq_config(folder: Path, hparams: dict) -> GPTQConfig | None:
    """The checkpoint's GPTQ settings, or None for a float checkpoint; HFError for another method."""
    qc, source = hparams.get("quantization_config"), folder / "config.json"
    if not isinstance(qc, dict) and (folder / "quantize_config.json").is_file():
        source = folder / "quantize_config.json"
        try:
            qc = json.loads(source.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise HFError(f"{source}: not valid JSON ({e})") from None
        if not isinstance(qc, dict):
            raise HFError(f"{source}: not a JSON object")
        qc.setdefault("quant_method", "gptq")
    if not isinstance(qc, dict):
        return None
    method = qc.get("quant_method")
    if method != "gptq":
        raise HFError(f"{source}: quantization method {method!r} is not supported (float checkpoints and GPTQ only)")
    bits = qc.get("bits")
    if bits not in (2, 3, 4, 8):
        raise HFError(f"{source}: GPTQ bits={bits!r} is not supported (2, 3, 4 or 8)")
    fmt = qc.get("checkpoint_format", "gptq")
    if fmt not in ("gptq", "gptq_v2"):
        raise HFError(f"{source}: GPTQ checkpoint_format {fmt!r} is not supported (gptq or gptq_v2)")
    group = qc.get("group_size", 128)
    if isinstance(group, bool) or not isinstance(group, int) or not (group == -1 or group >= 1):
        raise HFError(f"{source}: GPTQ group_size={group!r} is not supported (a positive integer, or -1: one "
                      "group per row)")
    return GPTQConfig(int(bits), group, bool(qc.get("desc_act", False)), fmt == "gptq", source)


def _unpack(words: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The b-bit codes of each row of int32 words (the words of a row one little-endian bit
    stream), the first `count` of them per row: uint8 [rows, count]."""
    w = np.ascontiguousarray(words).astype("<i4").view("<u4")
    if 32 % bits == 0:
        per = 32 // bits
        shifts = np.arange(per, dtype=np.uint32) * bits
        codes = (w[..., None] >> shifts) & ((1 << bits) - 1)
        return codes.reshape(w.shape[0], -1)[:, :count].astype(np.uint8)
    stream = np.unpackbits(w.view(np.uint8), axis=-1, bitorder="little")[:, :count * bits]
    weights = (1 << np.arange(bits)).astype(np.uint8)
    return (stream.reshape(w.shape[0], count, bits) * weights).sum(-1).astype(np.uint8)


@dataclass(frozen=True)
class GPTQWeight:
    """A quantized layer X as the weight X.weight; read() gives float32 values [N, K], or the
    Q4_1 blocks' bytes [N, K/32*20] when dtype is "Q4_1" (shaped like SafeTensor for convert.py)."""
    name: str
    parts: dict[str, SafeTensor]
    config: GPTQConfig
    shape: tuple[int, int]
    dtype: str          # "Q4_1" (kept losslessly) or "F32" (dequantized)

    @property
    def file(self) -> Path:
        return self.parts["qweight"].file

    def codes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """q [K, N], zeros [G, N] (true zero points), scales float16 [G, N], g_idx [K]."""
        n, k = self.shape
        b = self.config.bits
        q = _unpack(self.parts["qweight"].read().T, b, k).T
        scales = self.parts["scales"].read()
        if not np.isfinite(scales).all():  # (a kept Q4_1 layer would carry it into every answer)
            raise HFError(f"{self.parts['scales'].file}: tensor {self.name[:-7]}.scales holds NaN or inf: the "
                          "checkpoint is damaged")
        zeros = _unpack(self.parts["qzeros"].read(), b, n).astype(np.int16) + (1 if self.config.v1 else 0)
        if "g_idx" in self.parts:
            g_idx = self.parts["g_idx"].read().astype(np.int64)
        else:
            g_idx = np.arange(k) // _g(self.config, k)
        if g_idx.min(initial=0) < 0 or g_idx.max(initial=0) >= scales.shape[0]:
            raise HFError(f"{self.parts['g_idx'].file}: tensor {self.name[:-7]}.g_idx names a group outside its "
                          f"{scales.shape[0]} groups (0..{scales.shape[0] - 1})")
        return q, zeros, scales, g_idx

    def read(self) -> np.ndarray:
        q, zeros, scales, g_idx = self.codes()
        if self.dtype == "Q4_1":
            return _q4_1(q, zeros, scales, _g(self.config, self.shape[1]))
        # float32 products of float16 scales and small integers: exact, as llama.cpp computes them
        return (scales[g_idx].astype(np.float32) * (q.astype(np.int16) - zeros[g_idx]).astype(np.float32)).T


def _g(cfg: GPTQConfig, k: int) -> int:
    return k if cfg.group_size == -1 else cfg.group_size


def _q4_1(q: np.ndarray, zeros: np.ndarray, scales: np.ndarray, g: int) -> np.ndarray:
    """Q4_1 blocks of each output row: per 32 inputs d = scale, m = -scale*zero (fp16), the codes
    as they are (qs[j] = q[j] | q[j+16] << 4)."""
    k, n = q.shape
    group = np.arange(k // 32) * 32 // g                       # each block's group
    s = scales[group].T                                        # [N, K/32] float16
    blocks = np.empty((n, k // 32), Q4_1_BLOCK)
    blocks["d"] = s
    blocks["m"] = (-(s.astype(np.float32) * zeros[group].T.astype(np.float32))).astype(np.float16)
    codes = q.T.reshape(n, k // 32, 2, 16)
    blocks["qs"] = codes[:, :, 0] | (codes[:, :, 1] << 4)
    return blocks.view(np.uint8).reshape(n, -1)


def _trivial_g_idx(parts: dict[str, SafeTensor], g: int, k: int) -> bool:
    if "g_idx" not in parts:
        return True
    return bool(np.array_equal(parts["g_idx"].read(), np.arange(k) // g))


def group_weights(cfg: GPTQConfig, sources: list[SafeTensor], lossless: bool = True) -> tuple[list, list[str]]:
    """sources with each quantized layer's parts replaced by one GPTQWeight, placed after the
    float tensors (where llama.cpp's converter puts its dequantized weights); and the notes for
    stderr (what was kept losslessly, what was requantized)."""
    by_base: dict[str, dict[str, SafeTensor]] = {}
    floats = []
    for t in sources:
        base, _, part = t.name.rpartition(".")
        if part in PARTS:
            by_base.setdefault(base, {})[part] = t
        else:
            floats.append(t)
    float_names = {t.name: t for t in floats}
    weights, kept, deq = [], 0, 0
    for base, parts in by_base.items():
        if base + ".weight" in float_names:  # which one is the layer? (the float one was dropped)
            t = float_names[base + ".weight"]
            raise HFError(f"{t.file}: layer {base!r} has both a float {t.name!r} and GPTQ tensors "
                          f"({', '.join(sorted(parts))}): the checkpoint is inconsistent")
        missing = [p for p in ("qweight", "qzeros", "scales") if p not in parts]
        if missing:
            some = next(iter(parts.values()))
            raise HFError(f"{some.file}: GPTQ layer {base!r} has no {missing[0]} tensor")
        w = _weight(cfg, base, parts, lossless)
        kept, deq = kept + (w.dtype == "Q4_1"), deq + (w.dtype != "Q4_1")
        weights.append(w)
    notes = []
    if kept:
        notes.append(f"{cfg.describe()}: {kept} layers kept losslessly as Q4_1 blocks (codes and scales "
                     "unchanged; each group's -scale*zero rounded to fp16)")
    if deq:
        why = "not 4-bit" if cfg.bits != 4 else ("act-order" if cfg.desc_act else "groups not a multiple of 32")
        notes.append(f"{cfg.describe()}: {deq} layers dequantized to float ({why}): the GPTQ grid is lost, "
                     "and --quantize rounds them a second time")
    return floats + weights, notes


def _weight(cfg: GPTQConfig, base: str, parts: dict[str, SafeTensor], lossless: bool) -> GPTQWeight:
    qw, sc = parts["qweight"], parts["scales"]
    if qw.dtype != "I32" or parts["qzeros"].dtype != "I32" or sc.dtype != "F16" or len(qw.shape) != 2:
        raise HFError(f"{qw.file}: GPTQ layer {base!r}: qweight/qzeros must be I32 and scales F16 (got "
                      f"{qw.dtype}, {parts['qzeros'].dtype}, {sc.dtype})")
    n = qw.shape[1]
    k = qw.shape[0] * 32 // cfg.bits
    g = _g(cfg, k)
    groups = -(-k // g)
    want = {"scales": (groups, n), "qzeros": (groups, -(-n * cfg.bits // 32)), "g_idx": (k,)}
    for p, shape in want.items():
        if p in parts and parts[p].shape != shape:
            raise HFError(f"{parts[p].file}: tensor {parts[p].name!r} has shape {list(parts[p].shape)}, "
                          f"qweight {list(qw.shape)} at {cfg.bits} bits gives {list(shape)}")
    exact = (lossless and cfg.bits == 4 and g % 32 == 0 and k % 32 == 0 and not cfg.desc_act
             and _trivial_g_idx(parts, g, k))
    return GPTQWeight(base + ".weight", parts, cfg, (n, k), "Q4_1" if exact else "F32")
