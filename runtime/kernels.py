"""The C kernels (``runtime._kernels``, built from ``csrc/`` by cffi) seen from Python.

A *tensor* here is anything with ``.type`` (GGML type id), ``.shape`` (numpy
order, outermost first) and ``.data`` (its bytes as a uint8 numpy array), such
as ``runtime.gguf`` tensors. Arrays cross into C without copies; C never
allocates: scratch buffers are numpy arrays made here (or passed in).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime import quant_types
from runtime._kernels import ffi, lib

ISAS = {"ref": lib.LP_ISA_REF, "avx2": lib.LP_ISA_AVX2, "neon": lib.LP_ISA_NEON, "avx512": lib.LP_ISA_AVX512,
        "dotprod": lib.LP_ISA_DOTPROD, "i8mm": lib.LP_ISA_I8MM}
_ISA_NAMES = {v: k for k, v in ISAS.items()}

#: Weight types the kernels dequantize and multiply, and the activation formats of the
#: integer dot products (GGML ids by name; the lists of csrc/type_list.h).
WEIGHT_TYPES = dict(quant_types.WEIGHT_TYPES)
ACT_TYPES = dict(quant_types.ACT_TYPES)
TYPE_NAMES = {v: k for k, v in {**WEIGHT_TYPES, **ACT_TYPES}.items()}


class KernelError(ValueError):
    """A tensor or array the kernels cannot take (unknown type, wrong size)."""


@dataclass(frozen=True)
class TypeInfo:
    block_size: int      # elements per block
    type_size: int       # bytes per block
    vec_dot_type: int    # activation format of the dot product (F32: plain floats)

    def row_bytes(self, n: int) -> int:
        return n // self.block_size * self.type_size


@dataclass(frozen=True)
class RawTensor:
    """Bytes of a given type and shape: the tensor shape the kernels take."""
    type: int
    shape: tuple[int, ...]
    data: np.ndarray


def type_name(t: int) -> str:
    return TYPE_NAMES.get(t, f"type {t}")


def type_info(t: int) -> TypeInfo:
    out = ffi.new("int[3]")
    if lib.lp_type_info(t, out, out + 1, out + 2) != 0:
        raise KernelError(f"tensor type {type_name(t)} is not supported by the kernels")
    return TypeInfo(out[0], out[1], out[2])


def half_fields(t: int) -> list[int]:
    """Byte offsets of the fp16 scale fields within one block of type t."""
    out = ffi.new("int[2]")
    n = lib.lp_type_half_fields(t, out)
    if n < 0:
        raise KernelError(f"tensor type {type_name(t)} is not supported by the kernels")
    return [out[i] for i in range(n)]


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------
# Instruction set

def best_isa() -> str:
    return _ISA_NAMES[lib.lp_best_isa()]


def available_isas() -> list[str]:
    return [name for name, v in ISAS.items() if lib.lp_isa_available(v)]


def get_isa() -> str:
    return _ISA_NAMES[lib.lp_get_isa()]


def amx() -> bool:
    """Whether the AVX-512 batched product (prompt processing) takes AMX tiles here."""
    return bool(lib.lp_gemm_amx())


def set_isa(name: str) -> None:
    """Selects the kernels matmul uses (to compare implementations)."""
    if name not in ISAS or lib.lp_set_isa(ISAS[name]) != 0:
        raise KernelError(f"instruction set {name!r} is not available here (have: {', '.join(available_isas())})")


def _isa_from_env() -> None:
    """LLAMAPACK_ISA=avx2 (or ref, avx512, neon, dotprod, i8mm) picks the kernels instead of the best
    the CPU has: to compare instruction sets, or to see what a machine without
    AVX-512 gets. A value this CPU cannot run is reported and ignored."""
    name = os.environ.get("LLAMAPACK_ISA", "").strip().lower()
    if not name:
        return
    try:
        set_isa(name)
    except KernelError as e:
        import sys
        print(f"llamapack: LLAMAPACK_ISA: {e}; using {get_isa()}", file=sys.stderr)


# ---------------------------------------------------------------------------
# Helpers

def _ptr(a: np.ndarray, ctype: str = "void *") -> Any:
    return ffi.cast(ctype, ffi.from_buffer(a))


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise KernelError(f"{what} failed (kernel error {rc})")


def _tensor_bytes(tensor: Any) -> tuple[TypeInfo, np.ndarray, int]:
    """Checks tensor's byte count against its type and shape; returns (info, bytes, n_elements)."""
    info = type_info(tensor.type)
    shape = tuple(int(d) for d in tensor.shape)
    if not shape or shape[-1] % info.block_size:
        raise KernelError(f"{type_name(tensor.type)} rows must be a multiple of {info.block_size}, shape {shape}")
    n = int(np.prod(shape, dtype=np.int64))
    data = tensor.data
    if data.dtype != np.uint8 or data.ndim != 1 or not data.flags.c_contiguous:
        data = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    if data.nbytes != info.row_bytes(n):
        raise KernelError(f"{type_name(tensor.type)} tensor of shape {shape} needs {info.row_bytes(n)} bytes, has {data.nbytes}")
    return info, data, n


# ---------------------------------------------------------------------------
# Operations

def dequantize(tensor: Any) -> np.ndarray:
    """float32 array of tensor.shape holding the tensor's values (reference kernel)."""
    _, data, n = _tensor_bytes(tensor)
    out = np.empty(tuple(tensor.shape), dtype=np.float32)
    _check(lib.lp_dequantize(tensor.type, _ptr(data), _ptr(out, "float *"), n), "dequantize")
    return out


def matmul(tensor: Any, x: np.ndarray, n_threads: int | None = None,
           out: np.ndarray | None = None, work: np.ndarray | None = None) -> np.ndarray:
    """y = x @ W.T for a 2-D weight tensor W (rows, cols) and x float32 (n, cols) or (cols,).

    Quantized weights use the integer dot-product path: each row of x is first
    quantized to the 8-bit blocks of the weight type's activation format.
    """
    info, data, _ = _tensor_bytes(tensor)
    if len(tensor.shape) != 2:
        raise KernelError(f"matmul needs a 2-D weight, got shape {tuple(tensor.shape)}")
    rows, cols = (int(d) for d in tensor.shape)
    x = np.ascontiguousarray(x, dtype=np.float32)
    single = x.ndim == 1
    x2 = x.reshape(1, -1) if single else x
    if x2.ndim != 2 or x2.shape[1] != cols:
        raise KernelError(f"matmul: x has shape {x.shape}, weight has {cols} columns")
    n = x2.shape[0]
    if out is None:
        out = np.empty((n, rows), dtype=np.float32)
    elif out.shape != (n, rows) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise KernelError(f"matmul: out must be float32 ({n}, {rows}) and contiguous")
    nt = default_threads() if n_threads is None else max(1, int(n_threads))
    need = lib.lp_matmul_work_size(tensor.type, cols, n, nt)
    if work is None or work.nbytes < need:
        work = np.empty(max(need, 1), dtype=np.uint8)
    _check(lib.lp_matmul(tensor.type, _ptr(data), rows, cols, _ptr(x2, "float *"), n,
                         _ptr(out, "float *"), _ptr(work), nt), "matmul")
    return out[0] if single else out


def quantize_act(act_type: int, x: np.ndarray, isa: str | None = None) -> np.ndarray:
    """x (float32, a multiple of the block size) quantized to an activation format, as bytes."""
    info = type_info(act_type)
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    if x.size % info.block_size:
        raise KernelError(f"quantize: {x.size} values is not a multiple of {info.block_size}")
    out = np.empty(info.row_bytes(x.size), dtype=np.uint8)
    isa_id = lib.lp_get_isa() if isa is None else ISAS[isa]
    _check(lib.lp_quantize_act(act_type, isa_id, _ptr(x, "float *"), _ptr(out), x.size), "quantize")
    return out


def dequantize_act(act_type: int, data: np.ndarray) -> np.ndarray:
    """Activation-format bytes back to float32."""
    info = type_info(act_type)
    n = data.nbytes // info.type_size * info.block_size
    return dequantize(RawTensor(act_type, (n,), data))


def vec_dot(t: int, w_row: np.ndarray, act: np.ndarray, n: int, isa: str) -> float:
    """One weight row (type t) dotted with one activation row in its vec_dot format."""
    out = ffi.new("float *")
    _check(lib.lp_vec_dot(t, ISAS[isa], n, _ptr(w_row), _ptr(act), out), f"vec_dot ({isa})")
    return float(out[0])


def read_sum(buf: np.ndarray, reps: int, n_threads: int) -> float:
    """Reads buf reps times on n_threads threads (read-bandwidth yardstick)."""
    return float(lib.lp_read_sum(_ptr(buf), buf.nbytes, reps, n_threads))


_isa_from_env()
