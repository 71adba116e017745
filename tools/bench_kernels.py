"""Kernel throughput: matvec GB/s of weight bytes per type, next to read bandwidth.

    make bench-kernels          (or: .venv/bin/python tools/bench_kernels.py [--quick])

For each weight type, y = W x with W 4096x4096 (one activation row: the decode
case). Several distinct copies of W, together larger than the last-level cache,
are used in turn, so every product streams its weights from memory as in real
decoding. The yardstick is the same machine's read bandwidth, measured by the
kernel library's own read loop over a 1 GiB buffer. Medians of several runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runtime import kernels  # noqa: E402

TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
         "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
GOAL_TYPES = {"Q4_0", "Q4_K", "Q6_K", "Q8_0"}
STREAM_BYTES = 512 << 20   # weights cycled through per type: well past the 32 MiB L3


def random_weights(qtype: int, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    info = kernels.type_info(qtype)
    if info.block_size == 1:
        vals = rng.standard_normal(rows * cols).astype(np.float32) * 0.02
        if info.type_size == 2:
            return vals.astype(np.float16).view(np.uint8) if qtype == kernels.WEIGHT_TYPES["F16"] else \
                (vals.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        return vals.view(np.uint8)
    blocks = rng.integers(0, 256, (rows * cols // info.block_size, info.type_size), dtype=np.uint8)
    for off in kernels.half_fields(qtype):
        blocks[:, off:off + 2] = rng.uniform(-0.01, 0.01, (len(blocks), 1)).astype(np.float16).view(np.uint8)
    return blocks.reshape(-1)


def read_bandwidth(threads: int, runs: int) -> float:
    buf = np.ones(1 << 27, dtype=np.uint64)  # 1 GiB, touched
    kernels.read_sum(buf, 1, threads)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        kernels.read_sum(buf, 2, threads)
        times.append(time.perf_counter() - t0)
    return 2 * buf.nbytes / statistics.median(times) / 1e9


def matvec_gbps(name: str, threads: int, runs: int, rng: np.random.Generator) -> float:
    qtype = kernels.WEIGHT_TYPES[name]
    rows = cols = 4096
    one = random_weights(qtype, rows, cols, rng)
    copies = max(2, STREAM_BYTES // one.nbytes)
    mats = [kernels.RawTensor(qtype, (rows, cols), one if i == 0 else np.roll(one, i * 4099))
            for i in range(copies)]
    x = rng.standard_normal(cols).astype(np.float32)
    out = np.empty((1, rows), np.float32)
    work = np.empty(kernels.type_info(qtype).row_bytes(cols) * 2 + 64, np.uint8)
    for m in mats:  # page in, warm up
        kernels.matmul(m, x, n_threads=threads, out=out, work=work)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for m in mats:
            kernels.matmul(m, x, n_threads=threads, out=out, work=work)
        times.append((time.perf_counter() - t0) / len(mats))
    return one.nbytes / statistics.median(times) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--types", default=",".join(TYPES))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    thread_counts = sorted({1, min(2, kernels.default_threads())})
    print(f"kernels: {kernels.best_isa()} | threads: {thread_counts} | matvec 4096x4096, "
          f"weights streamed from memory | median of {args.runs}")
    bw = {t: read_bandwidth(t, args.runs) for t in thread_counts}
    print("read bandwidth: " + ", ".join(f"{bw[t]:.1f} GB/s ({t} thr)" for t in thread_counts))
    head = f"{'type':<6}" + "".join(f"{f'GB/s {t}thr':>12}{'of read':>9}" for t in thread_counts)
    print(head)
    print("-" * len(head))
    short = []
    for name in args.types.split(","):
        row = f"{name:<6}"
        for t in thread_counts:
            g = matvec_gbps(name, t, args.runs, rng)
            row += f"{g:>12.1f}{g / bw[t]:>9.0%}"
            if t == thread_counts[-1] and name in GOAL_TYPES and g < 0.8 * bw[t]:
                short.append(name)
        print(row, flush=True)
    print(f"goal: Q4_0, Q4_K, Q6_K, Q8_0 at >= 80% of read bandwidth on {thread_counts[-1]} threads: "
          + ("met" if not short else "not met for " + ", ".join(short)))


if __name__ == "__main__":
    main()
