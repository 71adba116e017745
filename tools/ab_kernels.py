"""Two builds of the kernel library against each other, in one process, call by call.

    .venv/bin/python -m tools.ab_kernels A B MODEL [--tensors NAME,..] [--rows 1,4,512] [--rows-path]

A and B are source trees (their runtime/_kernels*.so) or the libraries themselves. Both are
loaded into this one process (copied first, so that the same file can be compared with itself),
and every weight tensor chosen (default: the first of each type in MODEL's GGUF) is multiplied by
the same activations, for each row count, by A then B then A ... Each turn is a few calls; the
machine's neighbours, which on a shared VM move a kernel's speed by a third from one minute to
the next, fall on both builds alike, and a turn's B/A ratio is taken against the A turn next to it.

Printed per tensor and row count: each build's median GMAC/s, the median of the pairs' B/A ratios
with their range, and whether B's outputs equal A's bit for bit. The products go the way the
engine's would (`lp_matmul`: row dots below LP_BATCHED_MIN rows, the batched product from there)
or, with --rows-path, always by row dots; both on one instruction set (--isa, default the one the
running library has: the CPU's best, or LLAMAPACK_ISA).

Comparing trees by running a script with each on PYTHONPATH in turn is what this replaces: the
project is installed in editable mode, so a script outside a tree imports the editable tree
whatever the working directory, and the two "builds" are silently the same.
"""
from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

from runtime import kernels
from runtime.gguf import GGUFFile


def library_path(where: str) -> Path:
    """The kernel library of a source tree (runtime/_kernels*.so) or the file itself."""
    p = Path(where)
    if p.is_dir():
        found = sorted((p / "runtime").glob("_kernels*.so"))
        if not found:
            raise SystemExit(f"ab_kernels: no runtime/_kernels*.so in {p} (build it: python csrc/build.py)")
        return found[0]
    if not p.is_file():
        raise SystemExit(f"ab_kernels: {p} is neither a source tree nor a file")
    return p


def load_library(path: Path, tag: str, tmp: Path) -> Any:
    """The cffi module of the library at path, loaded as package `tag` from a copy of its own."""
    copy = tmp / tag / path.name
    copy.parent.mkdir()
    shutil.copyfile(path, copy)  # (a second dlopen of the same file would give back the first)
    name = f"{tag}._kernels"
    sys.modules[tag] = types.ModuleType(tag)
    loader = importlib.machinery.ExtensionFileLoader(name, str(copy))
    spec = importlib.util.spec_from_file_location(name, copy, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class Product:
    """One weight tensor times n activation rows through one library's lp_matmul or lp_matmul_rows."""

    def __init__(self, module: Any, qtype: int, data: np.ndarray, rows: int, cols: int, x: np.ndarray,
                 threads: int, rows_path: bool) -> None:
        ffi, self.lib = module.ffi, module.lib
        n = x.shape[0]
        self.y = np.empty((n, rows), np.float32)
        work = np.empty(self.lib.lp_matmul_work_size(qtype, cols, max(n, 16), threads), np.uint8)
        self.keep = (data, x, work)
        self.args = (qtype, ffi.from_buffer(data), rows, cols, ffi.cast("float *", ffi.from_buffer(x)), n)
        self.rest = (ffi.cast("float *", ffi.from_buffer(self.y)), ffi.from_buffer(work), threads)
        self.rows_path = rows_path

    def __call__(self) -> None:
        rc = (self.lib.lp_matmul_rows(*self.args, self.args[-1], *self.rest) if self.rows_path
              else self.lib.lp_matmul(*self.args, *self.rest))
        if rc != 0:
            raise SystemExit(f"ab_kernels: the product failed (kernel error {rc})")


def compare(a: Product, b: Product, macs: int, turns: int, budget: float = 0.05) -> dict:
    """Turns of A and B alternating; each turn as many calls as take about `budget` seconds."""
    a(), b()  # (first touches)
    t0 = time.perf_counter()
    a()
    calls = max(1, int(budget / max(time.perf_counter() - t0, 1e-6)))
    rates: dict[str, list[float]] = {"A": [], "B": []}
    for _ in range(turns):
        for tag, product in (("A", a), ("B", b)):
            t0 = time.perf_counter()
            for _ in range(calls):
                product()
            rates[tag].append(macs * calls / (time.perf_counter() - t0) / 1e9)
    ratios = [rb / ra for ra, rb in zip(rates["A"], rates["B"])]
    return {"a": statistics.median(rates["A"]), "b": statistics.median(rates["B"]),
            "ratio": statistics.median(ratios), "lo": min(ratios), "hi": max(ratios),
            "same": bool(np.array_equal(a.y, b.y))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.ab_kernels", description=__doc__.splitlines()[0])
    ap.add_argument("a", help="build A: a source tree or its runtime/_kernels*.so")
    ap.add_argument("b", help="build B: the same")
    ap.add_argument("model", help="a GGUF whose weight tensors are multiplied")
    ap.add_argument("--tensors", default="", help="tensor names, comma-separated (default: one of each type)")
    ap.add_argument("--rows", default="1,4,512", help="activation row counts (default 1,4,512)")
    ap.add_argument("--rows-path", action="store_true", help="row dots for every row count")
    ap.add_argument("--turns", type=int, default=9, help="turns of each build (default 9)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--isa", default=kernels.get_isa(), help="the instruction set of both (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.isa not in kernels.available_isas():
        raise SystemExit(f"ab_kernels: instruction set {args.isa!r} is not available here "
                         f"(have: {', '.join(kernels.available_isas())})")
    paths = library_path(args.a), library_path(args.b)
    f = GGUFFile(args.model)
    names = [t for t in args.tensors.split(",") if t]
    if not names:
        seen: set[int] = set()
        for name, t in f.tensors.items():
            if len(t.shape) == 2 and t.type not in seen and t.type in kernels.WEIGHT_TYPES.values():
                seen.add(t.type)
                names.append(name)
    missing = [name for name in names if name not in f.tensors]
    if missing:
        raise SystemExit(f"ab_kernels: no tensor {missing[0]!r} in {args.model}")
    row_counts = [int(v) for v in args.rows.split(",") if v]
    print(f"A {paths[0]}\nB {paths[1]}\n{args.isa}, {args.threads} thread(s), {args.turns} turns each, "
          f"{'row dots' if args.rows_path else 'as the engine picks'}")
    with tempfile.TemporaryDirectory() as tmp:
        libs = load_library(paths[0], "ab_a", Path(tmp)), load_library(paths[1], "ab_b", Path(tmp))
        for m in libs:
            if m.lib.lp_set_isa(kernels.ISAS[args.isa]) != 0:
                raise SystemExit(f"ab_kernels: a build cannot run {args.isa}")
        for name in names:
            t = f.tensors[name]
            _, data, _ = kernels._tensor_bytes(t)
            rows, cols = (int(d) for d in t.shape)
            for n in row_counts:
                x = np.random.default_rng(n).standard_normal((n, cols)).astype(np.float32)
                a, b = (Product(lib, t.type, data, rows, cols, x, args.threads, args.rows_path) for lib in libs)
                r = compare(a, b, rows * cols * n, args.turns)
                print(f"{name} ({kernels.type_name(t.type)} {rows}x{cols}) rows {n}: A {r['a']:.1f} B {r['b']:.1f} "
                      f"GMAC/s, B/A {r['ratio']:.3f} [{r['lo']:.3f}-{r['hi']:.3f}], "
                      f"{'same bits' if r['same'] else 'OUTPUTS DIFFER'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
