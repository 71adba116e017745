"""The benchmark's yardsticks and what it knows of each model, for tools/bench.py.

- ReadBandwidth: the machine's read bandwidth (lp_read_sum over 1 GiB), what generation is held to.
- Int8Peak: the machine's int8 multiply-add peak per ISA (lp_int8_peak: AVX-512 VNNI vpdpbusd or
  AVX2 vpmaddubsw + vpmaddwd, registers only, on every thread), what prompt processing is held to.
  Both are sampled between the runs: the bandwidth's median shows what the other jobs leave; the
  peak is the best sample, the machine's own.
- from_disk: a model file's page cache as read from disk, not as just written (Linux caches a file
  read from disk in 2 MiB folios where its file system can, one just written in 4 KiB ones, and
  both engines map those pages: in a virtual machine generation differs by a third).
- ModelInfo: bytes read and int8 multiply-adds per token, from the GGUF's tensor table, and the
  full-depth estimates of a model that holds a few of its real layers.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime import kernels
from runtime.gguf import GGUFFile
from runtime.model import layer_macs
from tools import bench_models
from tools.bench_worker import PP


def from_disk(path: Path) -> float | None:
    """Drops `path`'s pages from the page cache (those no process maps) and reads them back through
    the runtime's own mapping of the file (GGUFFile: with its huge-page advice), as a model read from
    disk is cached; returns the share of the file mapped in 2 MiB pages (None where Linux's /proc
    does not say)."""
    with open(path, "rb") as f:
        if hasattr(os, "posix_fadvise"):
            os.fdatasync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    with GGUFFile(path) as g:
        view = np.frombuffer(g.mm, dtype=np.uint8)
        int(view[::4096].sum())  # one byte of every page: the whole file is read
        addr, size = view.ctypes.data, view.nbytes
        del view
        return huge_share(addr, size, "FilePmdMapped")


def read_back(models: list[tuple[str, Path]]) -> str:
    """from_disk for each (name, path), and the line the benches print of it."""
    shares = [f"{name} {share:.0%}" if (share := from_disk(path)) is not None else name for name, path in models]
    return ("models read back from disk into the page cache (a file just written sits in 4 KiB pages), mapped in "
            "2 MiB pages: " + ", ".join(shares))


def huge_share(addr: int, size: int, field: str, smaps: str | None = None) -> float | None:
    """The share of the `size` bytes at `addr` in 2 MiB pages, from the smaps `field` of the mappings
    that overlap them (FilePmdMapped for a file, AnonHugePages for memory); None where Linux's /proc
    does not say. smaps: the text to read instead of this process's /proc/self/smaps."""
    try:
        text = Path("/proc/self/smaps").read_text() if smaps is None else smaps
    except OSError:
        return None
    inside, huge = False, 0
    for line in text.splitlines():
        head = line.split()[0] if line.strip() else ""
        if "-" in head and ":" not in head:
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo < addr + size and addr < hi
        elif inside and head == field + ":":
            huge += int(line.split()[1]) * 1024
    return min(huge / size, 1.0)


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def run_ratio(a: dict[int, float], b: dict[int, float]) -> float:
    """The median over runs of a's value / b's in the same run (runs where both have one): the two
    engines of a run are measured side by side, so a machine whose speed drifts between runs moves
    both sides of each ratio alike, where it moves a ratio of the two medians."""
    return med([a[r] / b[r] for r in sorted(a.keys() & b.keys())])


def spread(xs: list[float]) -> float:
    """(max - min) / median of the runs: how noisy the median is."""
    return (max(xs) - min(xs)) / statistics.median(xs) if len(xs) > 1 else float("nan")


class ReadBandwidth:
    """The machine's read bandwidth in GB/s (runtime.kernels.read_sum over 1 GiB), sampled as often as asked.
    Its buffer should sit in 2 MiB pages (numpy asks for them), as the models' weights do: `huge` says
    what share does (in small pages a virtual machine reads it markedly slower)."""

    def __init__(self) -> None:
        self.buf = np.ones(1 << 27, dtype=np.uint64)  # 1 GiB, touched

    def huge(self) -> float | None:
        return huge_share(self.buf.ctypes.data, self.buf.nbytes, "AnonHugePages")

    def measure(self, threads: int, reps: int = 1) -> float:
        kernels.read_sum(self.buf, 1, threads)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            kernels.read_sum(self.buf, 2, threads)
            times.append(time.perf_counter() - t0)
        return 2 * self.buf.nbytes / statistics.median(times) / 1e9


class Int8Peak:
    """The int8 multiply-add peak of `isa` (avx512: VNNI, avx2: maddubs + madd) in G multiply-adds/s: the
    best of the samples (a sample lasts milliseconds; other jobs can only slow it, never speed it up).
    i16 (avx2 only): maddubs with its pair sums added in int16 (lp_int8_peak_i16), the ceiling of the
    AVX2 tiles that sum small weights' products in int16 before widening them."""

    ITERS = 2_000_000  # loop steps per thread per sample: ~0.05-0.2 s

    def __init__(self, isa: str, i16: bool = False) -> None:
        self.isa = kernels.ISAS[isa]
        self.i16 = i16

    def _run(self, iters: int, threads: int) -> int:
        if self.i16:
            return kernels.lib.lp_int8_peak_i16(iters, threads)
        return kernels.lib.lp_int8_peak(self.isa, iters, threads)

    def measure(self, threads: int, reps: int = 1) -> float:
        self._run(self.ITERS // 20, threads)  # wakes the threads and the units
        rates = []
        for _ in range(reps):
            t0 = time.perf_counter()
            n = self._run(self.ITERS, threads)
            rates.append(n / (time.perf_counter() - t0) / 1e9)
        return max(rates)


def peak_isa(isa: str) -> str | None:
    """The ISA whose int8 peak bounds `isa`'s prompt processing (None: no micro-kernel for it)."""
    return isa if isa in ("avx2", "avx512") else None


@dataclass
class ModelInfo:
    name: str
    path: Path
    file_bytes: int          # every tensor
    token_bytes: int         # weights read per generated token
    layer_bytes: int         # the part of token_bytes in the layers (blk.N.*)
    layer_macs: int          # int8 multiply-adds per prompt token in the layers' matrices
    rest_macs: float         # per prompt token outside them: the output matrix, for the last token only
    kv_bytes_per_ctx: int    # fp16 K and V, per token of context
    n_layer: int
    n_expert: int
    n_expert_used: int
    types: str
    full_layers: int | None = None  # the real model's depth, when the file holds fewer layers

    @property
    def macs(self) -> float:
        return self.layer_macs + self.rest_macs

    def at_depth(self, layers: int) -> tuple[float, float]:
        """(read bytes per generated token, multiply-adds per prompt token) with `layers` layers like these."""
        k = layers / self.n_layer
        return (self.token_bytes - self.layer_bytes + k * self.layer_bytes, self.rest_macs + k * self.layer_macs)

    def full_depth(self, pp: float, tg: float) -> tuple[float, float]:
        """Estimated (prompt, generation) tok/s at the real depth from those measured here: time per token
        scales with the work per token, weight bytes read for generation (memory-bound), multiply-adds for
        the prompt (compute-bound). Attention's own cost, small at these contexts, scales with the layers too."""
        if not self.full_layers:
            return float("nan"), float("nan")
        read, macs = self.at_depth(self.full_layers)
        return pp * self.macs / macs, tg * self.token_bytes / read


def model_info(name: str, path: Path) -> ModelInfo:
    with GGUFFile(path) as f:
        md, T = f.metadata, f.tensors
        arch = md["general.architecture"]
        n_expert = int(md.get(f"{arch}.expert_count", 0))
        used = int(md.get(f"{arch}.expert_used_count", 0)) if n_expert else 0
        n_layer, n_embd = int(md[f"{arch}.block_count"]), int(md[f"{arch}.embedding_length"])
        n_head = int(md[f"{arch}.attention.head_count"])
        n_head_kv = int(md.get(f"{arch}.attention.head_count_kv", n_head))
        head_dim = int(md.get(f"{arch}.attention.key_length", n_embd // n_head))
        emb = T["token_embd.weight"]
        tied = "output.weight" not in T
        token = layer = 0.0
        rest_macs = 0.0
        for t in T.values():
            share = used / n_expert if "_exps." in t.name else 1.0  # of the experts, those a token uses
            elements = int(np.prod(t.shape)) * share
            if t.name == "token_embd.weight":
                token += t.nbytes if tied else t.nbytes / emb.shape[0]  # the output matrix, or one row
                rest_macs += elements / PP if tied else 0.0
                continue
            token += t.nbytes * share
            if t.name.startswith("blk."):
                layer += t.nbytes * share
            elif t.name == "output.weight":
                rest_macs += elements / PP
        return ModelInfo(name, path, sum(t.nbytes for t in T.values()), int(token), int(layer),
                         int(layer_macs(T.values(), n_expert, used)),
                         rest_macs, n_layer * n_head_kv * head_dim * 2 * 2, n_layer, n_expert, used,
                         bench_models.type_histogram(path), bench_models.full_layers(name))
