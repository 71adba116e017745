"""llamapack against llama.cpp (llama-cpp-python), side by side on the same GGUF files.

    make bench                                      # every model, every ISA table, medians of 5 runs (over an hour)
    .venv/bin/python -m tools.bench --quick         # 1 run, fewer models (development)
    .venv/bin/python -m tools.bench --models smollm2-Q4_1,mistral-Q4_K_M --runs 3
    .venv/bin/python -m tools.bench --isa avx2      # only the AVX2 table

One table per instruction set (--isa; by default the best this CPU has, then avx2 where the CPU has
more, then avx2-vnni where it has AVX-VNNI): llamapack's kernels for that ISA (LLAMAPACK_ISA)
against a llama.cpp built for it. The avx2 table is AVX2 alone on both sides (LLAMAPACK_AVXVNNI=0,
and a second llama-cpp-python built without AVX-512 or AVX-VNNI: make bench builds it once into
build/llama-cpp-avx2), as AMD Zen 2/3 and older Intel laptops run. The avx2-vnni table adds AVX-VNNI
on both sides (a third build, build/llama-cpp-avxvnni), as Intel Core 12th-14th gen and Core Ultra
laptops run; its prompt column has no peak fraction (no AVX-VNNI micro-kernel).
Each engine runs in its own worker process (tools/bench_worker.py); the parent asks the two in
turn, run by run (the order flips every run), and prints medians.

1. Per model and quant type: prompt tok/s (a 512-token prompt), generation tok/s (128 tokens after
   a 16-token prompt), the ratio, generation's fraction of the read bandwidth (weight bytes read per
   token x tok/s / lp_read_sum's GB/s) and prompt processing's fraction of the int8 multiply-add
   peak (multiply-adds per token x tok/s / lp_int8_peak's rate; on AVX2 the widening pair's, and the
   header also prints lp_int8_peak_i16's, the pair sums added in int16), both yardsticks sampled between
   the runs. Models at Mistral 7B's and Mixtral 8x7B's width hold a few of their 32 layers: a
   second row gives the full-depth estimate.
2. Time per generated token at context 128, 1024 and 4096 (32 steps from each depth).
3. 1 vs 2 threads (SmolLM2 Q4_1).
4. MoE 2-of-8 vs the dense model of the same per-token arithmetic.
5. Resident memory of each worker after the runs vs weights touched + KV cache.
6. The same numbers as a picture: build/bench.png (tools/bench_plot.py).
2-6 are measured for the first ISA only. The models come from tools/bench_models.py (made once,
cached in build/bench-models/). The load average at the start and the end is printed: other jobs
skew the numbers (llama.cpp's 2-thread generation suffers most when a core is taken away).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import sys
import time
from pathlib import Path

from runtime import kernels
from tools import bench_models, bench_plot
from tools import bench_report as report
from tools.bench_machine import Int8Peak, ReadBandwidth, med, model_info, peak_isa, read_back
from tools.bench_sections import Yardsticks, context_section, models_section, threads_section
from tools.bench_worker import ENGINES, LOG_DIR, PP, ROOT, TG, Engine

CONTEXTS = (128, 1024, 4096)
CTX_MODEL = THREADS_MODEL = "smollm2-Q4_1"
QUICK_MODELS = ("smollm2-Q4_1", "moe-Q4_K_M", "dense-Q4_K_M", "mistral-Q4_K_M")
LLAMA_AVX2 = ROOT / "build" / "llama-cpp-avx2"  # the Makefile's AVX2-only llama-cpp-python
LLAMA_AVXVNNI = ROOT / "build" / "llama-cpp-avxvnni"  # and its AVX2 + AVX-VNNI one
# A table that is not an ISA of its own: the avx2 kernels with AVX-VNNI against llama.cpp's AVX2 +
# AVX-VNNI build
VNNI_TABLE = "avx2-vnni"


def has_avx_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx_vnni" in line for line in f)
    except OSError:
        return False


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 run, fewer models (development)")
    ap.add_argument("--runs", type=int, help="runs per engine (default 5; --quick: 1)")
    ap.add_argument("--threads", type=int, default=min(2, kernels.default_threads()))
    ap.add_argument("--models", help="comma-separated subset of: " + ", ".join(bench_models.ALL))
    ap.add_argument("--contexts", default=",".join(map(str, CONTEXTS)))
    ap.add_argument("--no-llama-cpp", action="store_true", help="llamapack only")
    ap.add_argument("--isa", help="comma-separated instruction sets, one table each (default: the best this "
                                  "CPU has, then avx2 if that is not it)")
    ap.add_argument("--flash-attn", action="store_true", help="llama.cpp with flash attention")
    ap.add_argument("--plot", type=Path, default=ROOT / "build" / "bench.png")
    args = ap.parse_args()
    args.runs = args.runs or (1 if args.quick else 5)
    args.side_runs = 1 if args.quick else 3
    args.contexts = [int(c) for c in args.contexts.split(",") if c]
    best = kernels.best_isa()
    default = [best] + (["avx2"] if best == "avx512" else [])
    if "avx2" in default and has_avx_vnni() and (LLAMA_AVXVNNI / "llama_cpp").is_dir():
        default.append(VNNI_TABLE)
    args.isas = args.isa.split(",") if args.isa else default
    for isa in args.isas:
        if isa == VNNI_TABLE:
            if not has_avx_vnni():
                sys.exit(f"bench: {VNNI_TABLE}: this CPU has no AVX-VNNI")
            continue
        if isa not in kernels.available_isas():
            sys.exit(f"bench: instruction set {isa!r} is not available here (have: "
                     f"{', '.join(kernels.available_isas())})")
    names = args.models.split(",") if args.models else list(QUICK_MODELS if args.quick else bench_models.ALL)
    unknown = [n for n in names if n not in bench_models.ALL]
    if unknown:
        sys.exit(f"bench: unknown model {', '.join(unknown)} (have: {', '.join(bench_models.ALL)})")
    args.names = names
    return args


def engines_for(isa: str, have_lc: bool) -> tuple[list[Engine], str]:
    """The two engines of the `isa` table, and what that table says of its llama.cpp."""
    if isa == VNNI_TABLE:
        ours = Engine("llamapack", (("LLAMAPACK_ISA", "avx2"), ("LLAMAPACK_AVXVNNI", "1")), f".{isa}")
        return _built(ours, have_lc, LLAMA_AVXVNNI, isa, "built with AVX2 and AVX-VNNI, without AVX-512")
    if isa == "avx2":  # AVX2 alone, as the AVX2 llama.cpp
        ours = Engine("llamapack", (("LLAMAPACK_ISA", isa), ("LLAMAPACK_AVXVNNI", "0")), f".{isa}")
    else:
        ours = Engine("llamapack", (("LLAMAPACK_ISA", isa),), f".{isa}")
    if not have_lc:
        return [ours], "llama.cpp not run"
    if isa == "avx2" and kernels.best_isa() != "avx2":
        return _built(ours, have_lc, LLAMA_AVX2, isa, "built without AVX-512 or AVX-VNNI")
    return [ours, Engine("llama.cpp")], "llama.cpp as installed (native build)"


def _built(ours: Engine, have_lc: bool, where: Path, isa: str, what: str) -> tuple[list[Engine], str]:
    """ours against the llama-cpp-python installed in `where` by the Makefile."""
    if not have_lc:
        return [ours], "llama.cpp not run"
    if not (where / "llama_cpp").is_dir():
        return [ours], f"llama.cpp not run: no build in {where.relative_to(ROOT)} (make bench builds it)"
    path = os.pathsep.join(p for p in (str(where), os.environ.get("PYTHONPATH", "")) if p)
    return [ours, Engine("llama.cpp", (("PYTHONPATH", path),), f".{isa}")], \
        f"llama.cpp {what} ({where.relative_to(ROOT)})"


def load_models(names: list[str], have_lc: bool) -> list:
    missing = [n for n in names if not bench_models.model_path(n).exists()]
    if missing and have_lc:
        try:
            bench_models.make(missing, log=lambda s: print(s, file=sys.stderr, flush=True))
        except Exception as e:  # noqa: BLE001 - the models that were made still run
            print(f"could not make every model: {type(e).__name__}: {e}")
    infos, paths = [], []
    for name in names:
        path = bench_models.model_path(name)
        if not path.exists():
            print(f"skipping {name}: " + ("making it needs llama-cpp-python" if not have_lc else "not made"))
            continue
        try:
            infos.append(model_info(name, path))
        except Exception as e:  # noqa: BLE001
            print(f"skipping {name}: {type(e).__name__}: {e}")
            continue
        paths.append((name, path))
    if paths:
        print(read_back(paths))
    return infos


def machine_line(args, rb: ReadBandwidth, lc_version: str, load0: tuple) -> None:
    counts = sorted({1, args.threads})
    bws = {t: rb.measure(t, 3 if args.quick else 5) for t in counts}
    peaks = {(isa, t): Int8Peak(isa).measure(t, 3) for isa in ("avx2", "avx512")
             if isa in kernels.available_isas() for t in counts}
    print(f"llamapack vs llama.cpp" + (f" (llama-cpp-python {lc_version}, flash_attn "
                                      f"{'on' if args.flash_attn else 'off'})" if lc_version else " (not run)")
          + f" | {os.cpu_count()} CPUs | load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    if load0[0] > (os.cpu_count() or 1) - 0.5:
        print(f"warning: load average {load0[0]:.1f} on {os.cpu_count()} CPUs: other jobs share the cores. llama.cpp's "
              "threads wait for each other (spinning) at every operation, so its multi-thread figures suffer most; "
              "the figures are indicative only")
    huge = rb.huge()
    print("read bandwidth at start: " + ", ".join(f"{bws[t]:.1f} GB/s ({t} thr)" for t in counts)
          + (f" (its 1 GiB buffer {huge:.0%} in 2 MiB pages)" if huge is not None else ""))
    print("int8 multiply-add peak at start (registers only; avx512: vpdpbusd, avx2: vpmaddubsw+vpmaddwd): "
          + ", ".join(f"{isa} {v:.0f} GMAC/s ({t} thr)" for (isa, t), v in peaks.items()))
    if "avx2" in kernels.available_isas():
        i16 = {t: Int8Peak("avx2", i16=True).measure(t, 3) for t in counts}
        pair, wide = Int8Peak("avx2"), Int8Peak("avx2", i16=True)
        most = max(counts)
        ratio = med([wide.measure(most) / pair.measure(most) for _ in range(5)])  # samples side by side
        print("avx2 with the pair sums added in int16 (vpmaddubsw+vpaddw, the K-quant tiles' inner loop; "
              "vpmaddwd shares vpmaddubsw's ports): " + ", ".join(f"{v:.0f} GMAC/s ({t} thr)" for t, v in i16.items())
              + f"; {ratio:.2f}x the int8 column's avx2 peak ({most} thr, the median of 5 pairs of samples)")


def main() -> None:
    args = parse_args()
    t_start, load0 = time.monotonic(), os.getloadavg()
    have_lc = not args.no_llama_cpp and importlib.util.find_spec("llama_cpp") is not None
    if not have_lc and not args.no_llama_cpp:
        print("llama-cpp-python is not installed (make bench installs it): llamapack's numbers only")
    lc_version = importlib.metadata.version("llama_cpp_python") if have_lc else ""
    infos = load_models(args.names, have_lc)
    rb = ReadBandwidth()
    machine_line(args, rb, lc_version, load0)

    first_rows: list = []
    ctx = thr = moe = None
    for i, isa in enumerate(args.isas):
        engines, lc_note = engines_for(isa, have_lc)
        ys = Yardsticks(rb, Int8Peak(p) if (p := peak_isa(isa)) else None)
        rows = models_section(f"{isa}: llamapack ({isa} kernels) vs {lc_note}", infos, engines, args, ys)
        m = report.moe_section(rows)
        if i:
            continue
        first_rows, moe = rows, m
        by = {info.name: (info, res) for info, res, _ in rows}
        if CTX_MODEL in by and args.contexts:
            ctx = context_section(by[CTX_MODEL][0], engines, args)
        if THREADS_MODEL in by and args.threads > 1:
            thr = threads_section(by[THREADS_MODEL][0], engines, args, by[THREADS_MODEL][1], ys)
        report.memory_section(rows)

    load1 = os.getloadavg()
    took = time.monotonic() - t_start
    title = (f"llamapack ({args.isas[0]}) vs llama.cpp {lc_version} | {args.threads} threads | median of {args.runs} "
             f"| load avg {load0[0]:.1f}->{load1[0]:.1f}")
    try:
        bench_plot.plot(args.plot, first_rows, ctx, thr, moe, title, ENGINES, PP, TG, CTX_MODEL, THREADS_MODEL)
        print(f"\nplot: {args.plot}")
    except ImportError:
        print("\nno plot: matplotlib is not installed (make bench installs it)")
    print(f"took {took / 60:.1f} min | load average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} "
          f"| worker logs in {LOG_DIR.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
