"""The benchmark's measurements, for tools/bench.py: the main runs (prompt and generation per model,
engines alternating, the yardsticks sampled between runs), time per token vs context, and threads.
The tables they feed are printed by tools/bench_report.py."""
from __future__ import annotations

import sys
from dataclasses import dataclass

from tools import bench_report as report
from tools.bench_machine import Int8Peak, ModelInfo, ReadBandwidth, med, run_ratio, spread
from tools.bench_worker import ENGINES, PP, TG, Engine, Pair, start

CTX_STEPS = 32


@dataclass
class Yardsticks:
    """What the machine can do, sampled between the runs: read bandwidth, and the int8 peak of the
    table's ISA (None where there is no micro-kernel for it)."""
    bw: ReadBandwidth
    peak: Int8Peak | None

    def sample(self, threads: int) -> tuple[float, float]:
        return self.bw.measure(threads, 3), self.peak.measure(threads, 3) if self.peak else float("nan")


def run_pp_tg(pair: Pair, runs: int, ys: Yardsticks, threads: int) -> dict[str, dict]:
    """{engine: {pp, tg (tok/s medians), tokens (first greedy run), spread}, "_bw": GB/s (median), "_peak":
    G multiply-adds/s (best), "_ratio": {pp, tg: llamapack / llama.cpp, the median of each run's ratio}}:
    a warm-up, then alternating runs, the yardsticks sampled after each.

    A run measures A's prompt, B's prompt, B's generation, A's generation (A, B: alternate(run)), so
    that the two measurements of each ratio are next to each other in time: the speed of a shared
    machine drifts over tens of seconds, and a whole generation run between them (A pp, A tg, B pp,
    B tg) let that drift into the ratio."""
    res: dict[str, dict] = {e: {"pp": [], "tg": [], "tokens": None} for e in pair.workers}
    by_run: dict[str, dict[str, dict[int, float]]] = {e: {"pp": {}, "tg": {}} for e in pair.workers}
    bws, peaks = [], []
    for run in range(-1, runs):  # run -1: warm-up (pages the weights in, starts the threads)
        if run >= 0:
            bw, peak = ys.sample(threads)
            bws.append(bw)
            peaks.append(peak)
        order = pair.alternate(run)
        for op, n, ws in (("pp", PP, order), ("tg", TG, order[::-1])):
            for w in ws:
                if w.engine not in pair.workers:  # (it failed: pair.call dropped it)
                    continue
                got = pair.call(w, op, n=n)
                if got and run >= 0:
                    res[w.engine][op].append(n / got["s"])
                    by_run[w.engine][op][run] = n / got["s"]
                if got and op == "tg" and res[w.engine]["tokens"] is None:
                    res[w.engine]["tokens"] = got["tokens"]
    out: dict[str, dict] = {e: {"pp": med(r["pp"]), "tg": med(r["tg"]), "tokens": r["tokens"],
                                "spread": {k: spread(r[k]) for k in ("pp", "tg")}}
                            for e, r in res.items() if e in pair.workers}
    if all(e in by_run for e in ENGINES):
        out["_ratio"] = {k: run_ratio(by_run[ENGINES[0]][k], by_run[ENGINES[1]][k]) for k in ("pp", "tg")}
    out["_bw"] = med(bws)  # type: ignore[assignment]
    out["_peak"] = max(peaks) if peaks else float("nan")  # type: ignore[assignment]
    return out


def models_section(title: str, infos: list[ModelInfo], engines: list[Engine], args, ys: Yardsticks) -> list:
    """The main table of one ISA: every model, both engines; [(info, results, errors)]."""
    rows, systems = [], {}
    report.main_header(title, args.threads, args.runs)
    for info in infos:
        pair = start(info.name, info.path, engines, args.threads, 1024, args.flash_attn)
        for e, w in pair.workers.items():
            systems.setdefault(e, w.hello.get("system", ""))
        res = run_pp_tg(pair, args.runs, ys, args.threads)
        mem = {}
        for e, w in list(pair.workers.items()):
            m = pair.call(w, "mem")
            if m:
                mem[e] = (w.hello["mem_base"], m["mem"], info.file_bytes + 1024 * info.kv_bytes_per_ctx)
        pair.close()
        res["_mem"] = mem
        rows.append((info, res, pair.errors))
        report.main_row(info, res)
    report.main_notes(rows, systems)
    return rows


def context_section(info: ModelInfo, engines: list[Engine], args) -> dict[str, dict[int, float]]:
    """{engine: {context: ms per token}}: CTX_STEPS generation steps from each depth."""
    print(f"  {info.name}: context {', '.join(map(str, args.contexts))} ...", file=sys.stderr, flush=True)
    n_ctx = (max(args.contexts) + CTX_STEPS + 255) // 256 * 256 + 256
    pair = start(info.name, info.path, engines, args.threads, n_ctx, args.flash_attn)
    out: dict[str, dict[int, float]] = {e: {} for e in pair.workers}
    for ctx in sorted(args.contexts):
        for w in pair.alternate(0):
            pair.call(w, "fill", to=ctx)
            pair.call(w, "steps", at=ctx, n=4)  # warm-up
        times: dict[str, list[float]] = {e: [] for e in pair.workers}
        for run in range(args.side_runs):
            for w in pair.alternate(run):
                r = pair.call(w, "steps", at=ctx, n=CTX_STEPS)
                if r:
                    times[w.engine].append(r["s"] / CTX_STEPS * 1e3)
        for e, t in times.items():
            if e in out:
                out[e][ctx] = med(t)
    pair.close()
    report.context_table(info, out, args, CTX_STEPS, pair.errors)
    return out


def threads_section(info: ModelInfo, engines: list[Engine], args, main_res: dict | None,
                    ys: Yardsticks) -> dict[int, dict]:
    """{threads: run_pp_tg's results} for 1 and args.threads threads (the main run's results reused)."""
    counts = sorted({1, args.threads})
    out: dict[int, dict] = {}
    errors: dict[str, str] = {}
    for t in counts:
        if t == args.threads and main_res is not None:
            out[t] = main_res
            continue
        print(f"  {info.name}: {t} thread(s) ...", file=sys.stderr, flush=True)
        pair = start(info.name, info.path, engines, t, 1024, args.flash_attn)
        out[t] = run_pp_tg(pair, args.side_runs, ys, t)
        pair.close()
        errors.update({f"{e} ({t} threads)": err for e, err in pair.errors.items()})
    report.threads_table(info, out, args, errors)
    return out
