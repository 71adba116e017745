"""Kernel throughput: matvec GB/s of weight bytes per type, next to read bandwidth.

    make bench-kernels          (or: .venv/bin/python -m tools.bench_kernels [--quick])
    .venv/bin/python -m tools.bench_kernels --prompt [--isas avx2,avx512] [--types Q4_0,Q4_K]

For each weight type, y = W x with W 4096x4096 (one activation row: the decode
case). Several distinct copies of W, together larger than the last-level cache,
are used in turn, so every product streams its weights from memory as in real
decoding. The yardstick is the same machine's read bandwidth, measured by the
kernel library's own read loop over a 512 MiB buffer, once after every run (each
type's fraction is over the read passes between its own runs: the machine's
neighbours move both alike). Medians of several runs.

--prompt measures prompt processing instead: y = x @ W^T for 512 activation rows
(compute-bound), in GFLOP/s (2 * n * rows * cols), for each instruction set: the
row dots (12 rows per call, below the batched product's threshold; the weights stay
in cache between calls) and all 512 rows in one call (the batched product, where
the instruction set has one). Runs alternate between all of them.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from runtime import kernels

TYPES = list(kernels.WEIGHT_TYPES)
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


READ_BUF_WORDS = 1 << 26   # 512 MiB of uint64 for the read-bandwidth yardstick


def read_pass(buf: np.ndarray, threads: int) -> float:
    """GB/s of one pass of the library's read loop over buf."""
    t0 = time.perf_counter()
    kernels.read_sum(buf, 1, threads)
    return buf.nbytes / (time.perf_counter() - t0) / 1e9


def read_bandwidth(buf: np.ndarray, threads: int, runs: int) -> float:
    kernels.read_sum(buf, 1, threads)
    return statistics.median(read_pass(buf, threads) for _ in range(runs))


def matvec_gbps(name: str, threads: int, runs: int, rng: np.random.Generator,
                buf: np.ndarray) -> tuple[float, float]:
    """(median GB/s, its fraction of the median read bandwidth over the same runs). Each
    run streams every copy of W once and, right after, reads buf once, so a change in
    what the machine's other tenants leave of the memory bandwidth touches both medians
    alike."""
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
    gbps, reads = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        for m in mats:
            kernels.matmul(m, x, n_threads=threads, out=out, work=work)
        gbps.append(one.nbytes * len(mats) / (time.perf_counter() - t0) / 1e9)
        reads.append(read_pass(buf, threads))
    return statistics.median(gbps), statistics.median(gbps) / statistics.median(reads)


PROMPT_SHAPES = [(512, 1536, 576), (512, 4096, 4096)]    # (n, rows, cols)
PROMPT_SHAPES_K = [(512, 576, 1536), (512, 4096, 4096)]  # K-quants: cols a multiple of 256
ROW_DOT_CALL = 12  # activation rows per call for the row dots: below the batched product's 16


def prompt_gflops(name: str, n: int, rows: int, cols: int, isas: list[str], threads: int, runs: int,
                  rng: np.random.Generator) -> dict[tuple[str, int], float]:
    """GFLOP/s of x (n, cols) @ W^T, W (rows, cols) in type name, for each instruction set
    and each count of activation rows per lp_matmul call (ROW_DOT_CALL, n). The runs of
    all of them alternate, so a change in the machine's load touches each alike."""
    qtype = kernels.WEIGHT_TYPES[name]
    t = kernels.RawTensor(qtype, (rows, cols), random_weights(qtype, rows, cols, rng))
    x = rng.standard_normal((n, cols)).astype(np.float32)
    out = np.empty((n, rows), np.float32)
    work = np.empty(max(1, kernels.lib.lp_matmul_work_size(qtype, cols, n, threads)), np.uint8)
    cases = [(isa, per_call) for isa in isas for per_call in (ROW_DOT_CALL, n)]

    def run(isa: str, per_call: int) -> float:
        kernels.set_isa(isa)
        t0 = time.perf_counter()
        for j in range(0, n, per_call):
            kernels.matmul(t, x[j:j + per_call], n_threads=threads, out=out[j:j + per_call], work=work)
        return time.perf_counter() - t0

    times: dict[tuple[str, int], list[float]] = {c: [] for c in cases}
    try:
        for c in cases:  # warm up
            run(*c)
        for _ in range(runs):
            for c in cases:
                times[c].append(run(*c))
    finally:
        kernels.set_isa(kernels.best_isa())
    return {c: 2 * n * rows * cols / statistics.median(v) / 1e9 for c, v in times.items()}


def prompt_main(args: argparse.Namespace, types: list[str]) -> None:
    isas = [i for i in args.isas.split(",") if i in kernels.available_isas()]
    threads = min(2, kernels.default_threads())
    rng = np.random.default_rng(0)
    print(f"prompt products, {threads} threads, GFLOP/s, median of {args.runs}: 'rows' = the row dots "
          f"({ROW_DOT_CALL} activation rows per call), 'all' = all n rows in one call (the batched "
          f"product where the ISA has one)")
    head = f"{'type':<6}{'n x rows x cols':>18}" + "".join(f"{i + ' ' + k:>12}" for i in isas for k in ("rows", "all"))
    print(head)
    print("-" * len(head))
    for name in types:
        info = kernels.type_info(kernels.WEIGHT_TYPES[name])
        if info.block_size == 1:
            continue
        for n, rows, cols in PROMPT_SHAPES_K if info.block_size == 256 else PROMPT_SHAPES:
            g = prompt_gflops(name, n, rows, cols, isas, threads, args.runs, rng)
            print(f"{name:<6}{f'{n} x {rows} x {cols}':>18}" + "".join(f"{v:>12.1f}" for v in g.values()), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.bench_kernels", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--prompt", action="store_true", help="prompt products (n = 512) instead of matvec")
    ap.add_argument("--isas", default="avx2,avx512,neon", help="with --prompt: instruction sets to compare")
    args = ap.parse_args()
    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]  # q4_k -> Q4_K
    unknown = [t for t in types if t not in TYPES]
    if unknown or args.runs < 1:
        ap.error(f"unknown type {unknown[0]} (known: {', '.join(TYPES)})" if unknown else "--runs must be at least 1")
    args.types = ",".join(types)
    if args.prompt:
        prompt_main(args, args.types.split(","))
        return
    rng = np.random.default_rng(0)
    thread_counts = sorted({1, min(2, kernels.default_threads())})
    print(f"kernels: {kernels.best_isa()} | threads: {thread_counts} | matvec 4096x4096, "
          f"weights streamed from memory | median of {args.runs}")
    buf = np.ones(READ_BUF_WORDS, dtype=np.uint64)  # touched
    bw = {t: read_bandwidth(buf, t, args.runs) for t in thread_counts}
    print("read bandwidth: " + ", ".join(f"{bw[t]:.1f} GB/s ({t} thr)" for t in thread_counts)
          + " | 'of read': over the median of read passes taken between that type's runs")
    head = f"{'type':<6}" + "".join(f"{f'GB/s {t}thr':>12}{'of read':>9}" for t in thread_counts)
    print(head)
    print("-" * len(head))
    short = []
    for name in args.types.split(","):
        row = f"{name:<6}"
        for t in thread_counts:
            g, frac = matvec_gbps(name, t, args.runs, rng, buf)
            row += f"{g:>12.1f}{frac:>9.0%}"
            if t == thread_counts[-1] and name in GOAL_TYPES and frac < 0.8:
                short.append(name)
        print(row, flush=True)
    print(f"goal: Q4_0, Q4_K, Q6_K, Q8_0 at >= 80% of read bandwidth on {thread_counts[-1]} threads: "
          + ("met" if not short else "not met for " + ", ".join(short)))


if __name__ == "__main__":
    main()
