"""The benchmark's tables, for tools/bench.py: pure formatting of the numbers tools/bench_sections.py
measured (no timing here, so the tests can drive it with made-up results)."""
from __future__ import annotations

from tools.bench_machine import ModelInfo
from tools.bench_worker import ENGINES, PP, TG, TG_PROMPT

NAN = float("nan")


def fmt(x: float, spec: str = ".1f", unit: str = "") -> str:
    return "-" if x != x else format(x, spec) + unit


def ratio(a: dict, b: dict, key: str) -> float:
    return a[key] / b[key] if a and b and a[key] == a[key] and b[key] == b[key] else NAN


def run_ratio(res: dict, key: str) -> float:
    """llamapack / llama.cpp of one measurement: the median of each run's ratio where the runs gave
    it (bench_sections.run_pp_tg), else the ratio of the two medians."""
    r = res.get("_ratio", {}).get(key, NAN)
    return r if r == r else ratio(res.get("llamapack", {}), res.get("llama.cpp", {}), key)


def pct(x: float) -> str:
    return fmt(100 * x, ".0f", "%")


def agreement(res: dict) -> str:
    a, b = (res.get(e, {}).get("tokens") for e in ENGINES)
    if not a or not b:
        return ""
    same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
    return f"greedy tokens equal for {same}/{len(a)}"


def fractions(info: ModelInfo, res: dict, engine: str) -> tuple[float, float]:
    """(generation's fraction of the read bandwidth, prompt's fraction of the int8 peak) of one engine:
    bytes read per token x tok/s / bandwidth; multiply-adds per prompt token x tok/s / peak."""
    r = res.get(engine, {})
    return (r.get("tg", NAN) * info.token_bytes / 1e9 / res.get("_bw", NAN),
            r.get("pp", NAN) * info.macs / 1e9 / res.get("_peak", NAN))


HEAD = (f"{'model':<15}{'file':>8}{'read/tok':>9} | {'prompt: ours':>12}{'llama.cpp':>10}{'ratio':>7} | "
        f"{'gen: ours':>9}{'llama.cpp':>10}{'ratio':>7} | {'bw: ours':>8}{'llama.cpp':>10}{'GB/s':>6} | "
        f"{'int8: ours':>10}{'llama.cpp':>10}{'GMAC/s':>7}")


def main_header(title: str, threads: int, runs: int) -> None:
    print(f"\n== {title}\n   prompt {PP} and generation {TG} (after a {TG_PROMPT}-token prompt), tok/s | {threads} "
          f"threads | median of {runs}\n   ratio: ours / llama.cpp, the median of each run's (both engines "
          f"measured side by side in every run) | bw: generation tok/s x weight bytes read per "
          f"token (read/tok) / read bandwidth (GB/s)\n   int8: prompt tok/s x int8 multiply-adds per token (the "
          f"weight matrices') / this ISA's int8 multiply-add peak (GMAC/s)\n   both yardsticks are sampled "
          f"between the runs (bandwidth: median, peak: best sample); rows 'xN layers': the real model's depth, estimated from the "
          f"measured rows\n   (prompt scaled by multiply-adds per token, generation by bytes read per token)")
    print(HEAD + "\n" + "-" * len(HEAD), flush=True)


def main_row(info: ModelInfo, res: dict) -> None:
    print(main_row_text(info, res), flush=True)


def main_row_text(info: ModelInfo, res: dict) -> str:
    o, l = res.get("llamapack", {}), res.get("llama.cpp", {})
    (bo, io), (bl, il) = fractions(info, res, "llamapack"), fractions(info, res, "llama.cpp")
    line = (f"{info.name:<15}{info.file_bytes / 2**20:>6.0f}Mi{info.token_bytes / 2**20:>7.1f}Mi | "
            f"{fmt(o.get('pp', NAN)):>12}{fmt(l.get('pp', NAN)):>10}{fmt(run_ratio(res, 'pp'), '.2f', 'x'):>7} | "
            f"{fmt(o.get('tg', NAN)):>9}{fmt(l.get('tg', NAN)):>10}{fmt(run_ratio(res, 'tg'), '.2f', 'x'):>7} | "
            f"{pct(bo):>8}{pct(bl):>10}{fmt(res.get('_bw', NAN)):>6} | "
            f"{pct(io):>10}{pct(il):>10}{fmt(res.get('_peak', NAN), '.0f'):>7}")
    if info.full_layers:
        (po, go), (pl, gl) = (info.full_depth(r.get("pp", NAN), r.get("tg", NAN)) for r in (o, l))
        read = info.at_depth(info.full_layers)[0]
        line += (f"\n{'  x' + str(info.full_layers) + ' layers':<15}{'':>8}{read / 2**20:>7.0f}Mi | "
                 f"{fmt(po):>12}{fmt(pl):>10}{'':>7} | {fmt(go):>9}{fmt(gl):>10}")
    return line


def main_notes(rows: list, systems: dict[str, str]) -> None:
    print("\nengines: " + "\n         ".join(f"{e}: {s}" for e, s in systems.items()))
    print("tensor types (llama.cpp's quantizer falls back where a row length is not a multiple of 256); greedy "
          "tokens of the two engines (the prompt is random ids: where logits are near-tied the engines may part early):")
    for info, res, errors in rows:
        print(f"  {info.name:<15}{info.types}")
        notes = [agreement(res)] if agreement(res) else []
        sp = {e: res[e]["spread"] for e in ENGINES if e in res}
        if any(v["tg"] == v["tg"] for v in sp.values()):
            notes.append("spread of the runs (max-min)/median: " + ", ".join(
                f"{e} prompt {pct(v['pp'])} gen {pct(v['tg'])}" for e, v in sp.items()))
        for note in notes:
            print(f"  {'':<15}{note}")
        for e, err in errors.items():
            print(f"  {'':<15}{e} FAILED: {err}")


def context_table(info: ModelInfo, out: dict[str, dict[int, float]], args, steps: int, errors: dict) -> None:
    print(f"\n== generation time per token vs context ({info.name}, {args.threads} threads, {steps} steps "
          f"from each depth, median of {args.side_runs})")
    print("ratio: llama.cpp's time / ours (above 1: ours is faster)")
    head = f"{'context':>8} | {'ours ms/tok':>12}{'llama.cpp':>11}{'ratio':>8} | {'ours tok/s':>11}{'llama.cpp':>10}"
    print(head + "\n" + "-" * len(head))
    for ctx in sorted(args.contexts):
        o, l = out.get("llamapack", {}).get(ctx, NAN), out.get("llama.cpp", {}).get(ctx, NAN)
        print(f"{ctx:>8} | {fmt(o, '.2f'):>12}{fmt(l, '.2f'):>11}{fmt(l / o, '.2f', 'x'):>8} | "
              f"{fmt(1e3 / o):>11}{fmt(1e3 / l):>10}")
    for e, err in errors.items():
        print(f"  {e} FAILED: {err}")


def threads_table(info: ModelInfo, out: dict[int, dict], args, errors: dict) -> None:
    print(f"\n== threads ({info.name}, tok/s, medians of {args.runs} ({args.threads} thr) and {args.side_runs} "
          "(1 thr); bw: of the read bandwidth at that count, measured between the runs)")
    head = (f"{'threads':>8} | {'prompt: ours':>12}{'llama.cpp':>10}{'ratio':>7} | {'gen: ours':>9}{'llama.cpp':>10}"
            f"{'ratio':>7} | {'bw: ours':>8}{'llama.cpp':>10}{'GB/s':>6}")
    print(head + "\n" + "-" * len(head))
    for t in sorted(out):
        o, l = out[t].get("llamapack", {}), out[t].get("llama.cpp", {})
        bo, bl = (fractions(info, out[t], e)[0] for e in ENGINES)
        print(f"{t:>8} | {fmt(o.get('pp', NAN)):>12}{fmt(l.get('pp', NAN)):>10}{fmt(run_ratio(out[t], 'pp'), '.2f', 'x'):>7}"
              f" | {fmt(o.get('tg', NAN)):>9}{fmt(l.get('tg', NAN)):>10}{fmt(run_ratio(out[t], 'tg'), '.2f', 'x'):>7} | "
              f"{pct(bo):>8}{pct(bl):>10}{fmt(out[t].get('_bw', NAN)):>6}")
    for e, err in errors.items():
        print(f"  {e} FAILED: {err}")


def moe_section(rows: list) -> dict | None:
    by = {info.name: (info, res) for info, res, _ in rows}
    if "moe-Q4_K_M" not in by or "dense-Q4_K_M" not in by:
        return None
    (mi, mr), (di, dr) = by["moe-Q4_K_M"], by["dense-Q4_K_M"]
    print(f"\n== experts used, not experts present: MoE {mi.n_expert_used}-of-{mi.n_expert} vs dense "
          f"(same shapes, dense n_ff = {mi.n_expert_used} x expert n_ff), Q4_K_M")
    print(f"   weights in the file: MoE {mi.file_bytes / 2**20:.0f} MiB, dense {di.file_bytes / 2**20:.0f} MiB "
          f"({mi.file_bytes / di.file_bytes:.2f}x); read per token: MoE {mi.token_bytes / 2**20:.1f} MiB, "
          f"dense {di.token_bytes / 2**20:.1f} MiB ({mi.token_bytes / di.token_bytes:.2f}x)")
    out: dict = {"_read": mi.token_bytes / di.token_bytes, "_present": mi.file_bytes / di.file_bytes}
    for e in ENGINES:
        if e not in mr or e not in dr:
            continue
        m, d = mr[e]["tg"], dr[e]["tg"]
        out[e] = (1e3 / m, 1e3 / d)
        print(f"   {e:<10} ms/token: MoE {fmt(1e3 / m, '.2f')}, dense {fmt(1e3 / d, '.2f')}: "
              f"MoE/dense {fmt(d / m, '.2f', 'x')} (weights read {mi.token_bytes / di.token_bytes:.2f}x, "
              f"present {mi.file_bytes / di.file_bytes:.2f}x)")
    return out


def memory_section(rows: list) -> None:
    print("\n== resident memory of each engine's worker after the runs (n_ctx 1024), MiB: growth over the "
          "process before loading, vs weights + KV cache")
    head = (f"{'model':<15}{'engine':<11}{'weights':>8}{'KV':>6}{'expect':>8} | {'RSS':>7}{'anon':>7}{'file':>7}"
            f"{'extra':>7} | {'peak':>6}")
    print(head + "\n" + "-" * len(head))
    for info, res, _ in rows:
        for e, (base, after, _) in res.get("_mem", {}).items():
            d = {k: (after[k] - base.get(k, 0)) / 2**20 for k in after}
            kv = 1024 * info.kv_bytes_per_ctx / 2**20
            exp = info.file_bytes / 2**20 + kv
            print(f"{info.name:<15}{e:<11}{info.file_bytes / 2**20:>8.0f}{kv:>6.0f}{exp:>8.0f} | {d['VmRSS']:>7.0f}"
                  f"{d['RssAnon']:>7.0f}{d['RssFile']:>7.0f}{d['VmRSS'] - exp:>+7.0f} | {d['VmHWM']:>6.0f}")
