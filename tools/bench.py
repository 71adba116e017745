"""llamapack against llama.cpp (llama-cpp-python), side by side on the same GGUF files.

    make bench                                      # every model, medians of 5 runs (~7 min on a quiet machine)
    .venv/bin/python -m tools.bench --quick         # 1 run, fewer models (development)
    .venv/bin/python -m tools.bench --models smollm2-Q4_1,moe-Q4_K_M --runs 3
    .venv/bin/python -m tools.bench --isa avx2      # llamapack as a CPU without AVX-512 runs it

Each engine runs in its own worker process (this module with --worker), so a crash in one
is reported and the other's numbers still print, and its resident memory is its own. The
parent asks the two workers in turn, run by run (the order flips every run), and prints
medians. Both are driven the same way from Python: a prompt in one call, then one token per
call with argmax of the last logits.

1. Per model and quant type: prompt tok/s (a 512-token prompt), generation tok/s (128
   tokens after a 16-token prompt), the ratio, and the bandwidth fraction of generation:
   weight bytes read per token (the embedding row, not the table; for MoE the non-expert
   weights + n_expert_used/n_expert of the expert weights) x tok/s / the machine's read
   bandwidth (runtime.kernels.read_sum over 1 GiB).
2. Time per generated token at context 128, 1024 and 4096 (32 steps from each depth).
3. 1 vs 2 threads (SmolLM2 Q4_1).
4. MoE 2-of-8 vs the dense model of the same per-token arithmetic.
5. Resident memory of each worker after the runs vs weights touched + KV cache.
6. The same numbers as a picture: build/bench.png (tools/bench_plot.py).
The models come from tools/bench_models.py (made once, cached in build/bench-models/).
The machine's load average at the start and the end is printed: other jobs skew the numbers
(llama.cpp's 2-thread generation suffers most when a core is taken away).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import select
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime import kernels
from runtime.gguf import GGUFFile
from tools import bench_models, bench_plot

ROOT = Path(__file__).resolve().parent.parent

PP, TG, TG_PROMPT = 512, 128, 16
CONTEXTS, CTX_STEPS = (128, 1024, 4096), 32
CTX_MODEL = THREADS_MODEL = "smollm2-Q4_1"
QUICK_MODELS = ("smollm2-Q4_1", "smollm2-Q4_K_M", "moe-Q4_K_M", "dense-Q4_K_M")
ENGINES = ("llamapack", "llama.cpp")
LOG_DIR = ROOT / "build" / "bench-logs"
TIMEOUT = 600.0  # seconds one worker request may take


# ================================================================= worker (one engine, one model)

class OursW:
    def __init__(self, path: str, threads: int, n_ctx: int, flash_attn: bool) -> None:
        from runtime.model import Model
        self.model = Model(GGUFFile(path), n_ctx=n_ctx, n_threads=threads, max_batch=PP)
        self.n_vocab = self.model.config.n_vocab

    def eval(self, ids: list[int], pos: int) -> np.ndarray:
        """Runs ids at positions pos.. (what the cache holds past pos is dropped); last logits."""
        return self.model.forward(ids, pos)


class LlamaCppW:
    def __init__(self, path: str, threads: int, n_ctx: int, flash_attn: bool) -> None:
        import llama_cpp
        self._lc = llama_cpp
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                   n_batch=PP, n_ubatch=PP, flash_attn=flash_attn, verbose=False)
        self.n_vocab = self.llm.n_vocab()

    def eval(self, ids: list[int], pos: int) -> np.ndarray:
        self.llm.n_tokens = pos          # Llama.eval drops the cache from n_tokens on
        self.llm.eval(ids)
        ptr = self._lc.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))


def _mem() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(val.split()[0]) * 1024
    return out


def worker(engine: str, path: str, threads: int, n_ctx: int, flash_attn: bool) -> None:
    """Answers JSON requests, one per line, on the original stdout (fd 1 goes to stderr)."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(**kw: object) -> None:
        proto.write(json.dumps(kw) + "\n")
        proto.flush()

    try:
        if engine == "llama.cpp":  # the libraries' own pages are not the model's: load them before the baseline
            import llama_cpp  # noqa: F401
        else:
            import runtime.model  # noqa: F401
        base = _mem()
        t0 = time.perf_counter()
        eng = (OursW if engine == "llamapack" else LlamaCppW)(path, threads, n_ctx, flash_attn)
        load_s = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - reported to the parent, which prints it
        reply(error=f"{type(e).__name__}: {e}")
        return
    ids = [int(i) for i in np.random.default_rng(0).integers(300, eng.n_vocab, max(n_ctx, PP))]
    filled = 0
    reply(ok=True, load_s=load_s, mem_base=base)
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        try:
            if op == "quit":
                return
            if op == "mem":
                reply(mem=_mem())
            elif op == "pp":
                t0 = time.perf_counter()
                eng.eval(ids[:req["n"]], 0)
                reply(s=time.perf_counter() - t0)
                filled = req["n"]
            elif op in ("tg", "steps"):
                pos = req["at"] if op == "steps" else TG_PROMPT
                if op == "tg":  # the short prompt, untimed
                    logits = eng.eval(ids[:TG_PROMPT], 0)
                    tok = int(np.argmax(logits))
                else:
                    tok = ids[pos]
                out, t0 = [], time.perf_counter()
                for i in range(req["n"]):
                    tok = int(np.argmax(eng.eval([tok], pos + i)))
                    out.append(tok)
                reply(s=time.perf_counter() - t0, tokens=out)
                filled = pos  # the steps' own tokens are dropped by the next request
            elif op == "fill":  # extend the cache to req["to"] tokens of the id list
                t0 = time.perf_counter()
                eng.eval(ids[filled:req["to"]], filled)
                filled = req["to"]
                reply(s=time.perf_counter() - t0)
            else:
                reply(error=f"unknown op {op!r}")
        except Exception as e:  # noqa: BLE001
            reply(error=f"{type(e).__name__}: {e}")


# ================================================================= parent side

class WorkerError(RuntimeError):
    pass


class Worker:
    """One engine on one model, in a child process; `call` sends a request, returns the reply."""

    def __init__(self, engine: str, model: str, path: Path, threads: int, n_ctx: int, flash_attn: bool) -> None:
        self.engine, self.model = engine, model
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{model}.{engine}.t{threads}.c{n_ctx}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.bench", "--worker", engine, str(path), str(threads), str(n_ctx),
             str(int(flash_attn))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=ROOT)
        self._buf = b""
        self.hello = self._read()

    def _read(self) -> dict:
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        deadline = time.monotonic() + TIMEOUT
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.close()
                raise WorkerError(f"{self.engine} on {self.model}: no answer in {TIMEOUT:.0f} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                rc = self.proc.wait()
                tail = self.log_path.read_bytes().decode("utf-8", "replace").strip().splitlines()[-8:]
                self.close()
                why = f"signal {-rc}" if rc < 0 else f"exit status {rc}"
                raise WorkerError(f"{self.engine} on {self.model}: worker died ({why})"
                                  + ("; its stderr ends:\n      " + "\n      ".join(tail) if tail else ""))
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        if "error" in msg:
            raise WorkerError(f"{self.engine} on {self.model}: {msg['error']}")
        return msg

    def call(self, op: str, **kw: object) -> dict:
        self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"op": "quit"}\n')  # type: ignore[union-attr]
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@dataclass
class ModelInfo:
    name: str
    path: Path
    file_bytes: int          # every tensor
    token_bytes: int         # weights read per generated token
    kv_bytes_per_ctx: int    # fp16 K and V, per token of context
    n_expert: int
    n_expert_used: int
    types: str


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
        token = 0.0
        for t in T.values():
            if t.name == "token_embd.weight":
                token += t.nbytes if tied else t.nbytes / emb.shape[0]  # the output matrix, or one row
            elif "_exps." in t.name:
                token += t.nbytes * used / n_expert
            else:
                token += t.nbytes
        return ModelInfo(name, path, sum(t.nbytes for t in T.values()), int(token),
                         n_layer * n_head_kv * head_dim * 2 * 2, n_expert, used, bench_models.type_histogram(path))


class ReadBandwidth:
    """The machine's read bandwidth (runtime.kernels.read_sum over 1 GiB), sampled as often as asked:
    between the runs it shows what the other jobs on the machine leave at that moment."""

    def __init__(self) -> None:
        self.buf = np.ones(1 << 27, dtype=np.uint64)  # 1 GiB, touched

    def measure(self, threads: int, reps: int = 1) -> float:
        kernels.read_sum(self.buf, 1, threads)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            kernels.read_sum(self.buf, 2, threads)
            times.append(time.perf_counter() - t0)
        return 2 * self.buf.nbytes / statistics.median(times) / 1e9


@dataclass
class Pair:
    """The workers of both engines (either may be missing: not installed, or failed)."""
    workers: dict[str, Worker] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def alternate(self, run: int) -> list[Worker]:
        ws = [self.workers[e] for e in ENGINES if e in self.workers]
        return ws if run % 2 == 0 else ws[::-1]

    def call(self, w: Worker, op: str, **kw: object) -> dict | None:
        try:
            return w.call(op, **kw)
        except WorkerError as e:
            self.errors[w.engine] = str(e)
            self.workers.pop(w.engine, None)
            return None

    def close(self) -> None:
        for w in self.workers.values():
            w.close()


def start(info: ModelInfo, engines: list[str], threads: int, n_ctx: int, flash_attn: bool) -> Pair:
    pair = Pair()
    for e in engines:
        try:
            pair.workers[e] = Worker(e, info.name, info.path, threads, n_ctx, flash_attn)
        except WorkerError as err:
            pair.errors[e] = str(err)
    return pair


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def run_pp_tg(pair: Pair, runs: int, rb: ReadBandwidth, threads: int) -> dict[str, dict]:
    """{engine: {pp, tg (tok/s medians), tokens (first greedy run)}, "_bw": GB/s}: warm-up, then alternating
    runs, the read bandwidth sampled after each."""
    res: dict[str, dict] = {e: {"pp": [], "tg": [], "tokens": None} for e in pair.workers}
    bws = []
    for run in range(-1, runs):  # run -1: warm-up (pages the weights in, starts the threads)
        if run >= 0:
            bws.append(rb.measure(threads, 3))
        for w in pair.alternate(run):
            pp = pair.call(w, "pp", n=PP)
            tg = pp and pair.call(w, "tg", n=TG)
            if run >= 0 and pp and tg:
                res[w.engine]["pp"].append(PP / pp["s"])
                res[w.engine]["tg"].append(TG / tg["s"])
            if tg and res[w.engine]["tokens"] is None:
                res[w.engine]["tokens"] = tg["tokens"]
    out: dict[str, dict] = {e: {"pp": med(r["pp"]), "tg": med(r["tg"]), "tokens": r["tokens"],
                                "spread": {k: spread(r[k]) for k in ("pp", "tg")}}
                            for e, r in res.items() if e in pair.workers}
    out["_bw"] = med(bws)  # type: ignore[assignment]
    return out


def spread(xs: list[float]) -> float:
    """(max - min) / median of the runs: how noisy the median is."""
    return (max(xs) - min(xs)) / statistics.median(xs) if len(xs) > 1 else float("nan")


# ================================================================= printing

def fmt(x: float, spec: str = ".1f", unit: str = "") -> str:
    return "-" if x != x else format(x, spec) + unit


def ratio(a: dict, b: dict, key: str) -> float:
    return a[key] / b[key] if a and b and a[key] == a[key] and b[key] == b[key] else float("nan")


def agreement(res: dict) -> str:
    a, b = (res.get(e, {}).get("tokens") for e in ENGINES)
    if not a or not b:
        return ""
    same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
    return f"greedy tokens equal for {same}/{len(a)}"


def main_header(threads: int, runs: int) -> None:
    print(f"\n== prompt {PP} and generation {TG} (after a {TG_PROMPT}-token prompt), tok/s | {threads} threads "
          f"| median of {runs}\n   ratio: ours / llama.cpp | bw: generation tok/s x weight bytes read per token "
          f"(read/tok) / read bandwidth (GB/s: its median, measured between the runs)")
    head = (f"{'model':<15}{'file':>8}{'read/tok':>9} | {'prompt: ours':>12}{'llama.cpp':>10}{'ratio':>7} | "
            f"{'gen: ours':>9}{'llama.cpp':>10}{'ratio':>7} | {'bw: ours':>8}{'llama.cpp':>10}{'GB/s':>6}")
    print(head + "\n" + "-" * len(head), flush=True)


def main_row(info: ModelInfo, res: dict) -> None:
    o, l = res.get("llamapack", {}), res.get("llama.cpp", {})
    nan = float("nan")
    bw = res.get("_bw", nan)
    bo = o.get("tg", nan) * info.token_bytes / 1e9 / bw
    bl = l.get("tg", nan) * info.token_bytes / 1e9 / bw
    print(f"{info.name:<15}{info.file_bytes / 2**20:>6.0f}Mi{info.token_bytes / 2**20:>7.1f}Mi | "
          f"{fmt(o.get('pp', nan)):>12}{fmt(l.get('pp', nan)):>10}{fmt(ratio(o, l, 'pp'), '.2f', 'x'):>7} | "
          f"{fmt(o.get('tg', nan)):>9}{fmt(l.get('tg', nan)):>10}{fmt(ratio(o, l, 'tg'), '.2f', 'x'):>7} | "
          f"{fmt(100 * bo, '.0f', '%'):>8}{fmt(100 * bl, '.0f', '%'):>10}{fmt(bw):>6}", flush=True)


def main_notes(rows: list) -> None:
    print("\ntensor types (llama.cpp's quantizer falls back where a row length is not a multiple of 256); greedy "
          "tokens of the two engines (the prompt is random ids: where logits are near-tied the engines may part early):")
    for info, res, errors in rows:
        print(f"  {info.name:<15}{info.types}")
        notes = [agreement(res)] if agreement(res) else []
        sp = {e: res[e]["spread"] for e in ENGINES if e in res}
        if any(v["tg"] == v["tg"] for v in sp.values()):
            notes.append("spread of the runs (max-min)/median: " + ", ".join(
                f"{e} prompt {fmt(100 * v['pp'], '.0f', '%')} gen {fmt(100 * v['tg'], '.0f', '%')}"
                for e, v in sp.items()))
        for note in notes:
            print(f"  {'':<15}{note}")
        for e, err in errors.items():
            print(f"  {'':<15}{e} FAILED: {err}")


# ================================================================= sections

def bench_models_section(infos: list[ModelInfo], engines: list[str], args, rb: ReadBandwidth) -> list:
    rows = []
    main_header(args.threads, args.runs)
    for info in infos:
        pair = start(info, engines, args.threads, 1024, args.flash_attn)
        res = run_pp_tg(pair, args.runs, rb, args.threads)
        mem = {}
        for e, w in list(pair.workers.items()):
            m = pair.call(w, "mem")
            if m:
                mem[e] = (w.hello["mem_base"], m["mem"], info.file_bytes + 1024 * info.kv_bytes_per_ctx)
        pair.close()
        res["_mem"] = mem
        rows.append((info, res, pair.errors))
        main_row(info, res)
    main_notes(rows)
    return rows


def context_section(info: ModelInfo, engines: list[str], args) -> dict[str, dict[int, float]]:
    """{engine: {context: ms per token}}."""
    print(f"  {info.name}: context {', '.join(map(str, args.contexts))} ...", file=sys.stderr, flush=True)
    n_ctx = (max(args.contexts) + CTX_STEPS + 255) // 256 * 256 + 256
    pair = start(info, engines, args.threads, n_ctx, args.flash_attn)
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
    print(f"\n== generation time per token vs context ({info.name}, {args.threads} threads, {CTX_STEPS} steps "
          f"from each depth, median of {args.side_runs})")
    print("ratio: llama.cpp's time / ours (above 1: ours is faster)")
    head = f"{'context':>8} | {'ours ms/tok':>12}{'llama.cpp':>11}{'ratio':>8} | {'ours tok/s':>11}{'llama.cpp':>10}"
    print(head + "\n" + "-" * len(head))
    nan = float("nan")
    for ctx in sorted(args.contexts):
        o, l = out.get("llamapack", {}).get(ctx, nan), out.get("llama.cpp", {}).get(ctx, nan)
        print(f"{ctx:>8} | {fmt(o, '.2f'):>12}{fmt(l, '.2f'):>11}{fmt(l / o, '.2f', 'x'):>8} | "
              f"{fmt(1e3 / o):>11}{fmt(1e3 / l):>10}")
    for e, err in pair.errors.items():
        print(f"  {e} FAILED: {err}")
    return out


def threads_section(info: ModelInfo, engines: list[str], args, main_res: dict | None,
                    rb: ReadBandwidth) -> dict[int, dict]:
    counts = sorted({1, args.threads})
    out: dict[int, dict] = {}
    for t in counts:
        if t == args.threads and main_res is not None:
            out[t] = main_res
            continue
        print(f"  {info.name}: {t} thread(s) ...", file=sys.stderr, flush=True)
        pair = start(info, engines, t, 1024, args.flash_attn)
        out[t] = run_pp_tg(pair, args.side_runs, rb, t)
        pair.close()
        for e, err in pair.errors.items():
            print(f"  {e} FAILED ({t} threads): {err}")
    print(f"\n== threads ({info.name}, tok/s, medians of {args.runs} ({args.threads} thr) and {args.side_runs} (1 thr); "
          "bw: of the read bandwidth at that count, measured between the runs)")
    head = (f"{'threads':>8} | {'prompt: ours':>12}{'llama.cpp':>10}{'ratio':>7} | {'gen: ours':>9}{'llama.cpp':>10}"
            f"{'ratio':>7} | {'bw: ours':>8}{'llama.cpp':>10}{'GB/s':>6}")
    print(head + "\n" + "-" * len(head))
    nan = float("nan")
    for t in counts:
        o, l = out[t].get("llamapack", {}), out[t].get("llama.cpp", {})
        bw = out[t].get("_bw", nan)
        bo, bl = (x.get("tg", nan) * info.token_bytes / 1e9 / bw for x in (o, l))
        print(f"{t:>8} | {fmt(o.get('pp', nan)):>12}{fmt(l.get('pp', nan)):>10}{fmt(ratio(o, l, 'pp'), '.2f', 'x'):>7} | "
              f"{fmt(o.get('tg', nan)):>9}{fmt(l.get('tg', nan)):>10}{fmt(ratio(o, l, 'tg'), '.2f', 'x'):>7} | "
              f"{fmt(100 * bo, '.0f', '%'):>8}{fmt(100 * bl, '.0f', '%'):>10}{fmt(bw):>6}")
    return out


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


# ================================================================= main

def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 run, fewer models (development)")
    ap.add_argument("--runs", type=int, help="runs per engine (default 5; --quick: 1)")
    ap.add_argument("--threads", type=int, default=min(2, kernels.default_threads()))
    ap.add_argument("--models", help="comma-separated subset of: " + ", ".join(bench_models.ALL))
    ap.add_argument("--contexts", default=",".join(map(str, CONTEXTS)))
    ap.add_argument("--no-llama-cpp", action="store_true", help="llamapack only")
    ap.add_argument("--isa", help="llamapack's instruction set (avx2, avx512, ...; default: the best this CPU has)")
    ap.add_argument("--flash-attn", action="store_true", help="llama.cpp with flash attention")
    ap.add_argument("--plot", type=Path, default=ROOT / "build" / "bench.png")
    args = ap.parse_args()
    args.runs = args.runs or (1 if args.quick else 5)
    args.side_runs = 1 if args.quick else 3
    args.contexts = [int(c) for c in args.contexts.split(",") if c]
    if args.isa:  # this process and the workers it starts (they inherit the environment)
        try:
            kernels.set_isa(args.isa)
        except kernels.KernelError as e:
            sys.exit(f"bench: {e}")
        os.environ["LLAMAPACK_ISA"] = args.isa
    names = args.models.split(",") if args.models else list(QUICK_MODELS if args.quick else bench_models.ALL)
    t_start = time.monotonic()
    load0 = os.getloadavg()

    engines = ["llamapack"]
    have_lc = importlib.util.find_spec("llama_cpp") is not None
    if args.no_llama_cpp:
        pass
    elif have_lc:
        engines.append("llama.cpp")
    else:
        print("llama-cpp-python is not installed (make bench installs it): llamapack's numbers only")
    lc_version = ""
    if "llama.cpp" in engines:
        lc_version = importlib.metadata.version("llama_cpp_python")

    infos = []
    for name in names:
        try:
            path = bench_models.model_path(name)
            if not path.exists():
                if not have_lc:
                    print(f"skipping {name}: making it needs llama-cpp-python")
                    continue
                bench_models.make(name, log=lambda s: print(s, file=sys.stderr, flush=True))
            infos.append(model_info(name, path))
        except Exception as e:  # noqa: BLE001
            print(f"skipping {name}: {type(e).__name__}: {e}")

    counts = sorted({1, args.threads})
    rb = ReadBandwidth()
    bws = {t: rb.measure(t, 3 if args.quick else 5) for t in counts}
    print(f"llamapack ({kernels.get_isa()}) vs llama.cpp"
          + (f" (llama-cpp-python {lc_version}, flash_attn {'on' if args.flash_attn else 'off'})" if lc_version
             else " (not run)")
          + f" | {os.cpu_count()} CPUs | read bandwidth at start "
          + ", ".join(f"{bws[t]:.1f} GB/s ({t} thr)" for t in counts)
          + f" | load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")

    rows = bench_models_section(infos, engines, args, rb)
    moe = moe_section(rows)
    by = {info.name: (info, res) for info, res, _ in rows}
    ctx = thr = None
    if CTX_MODEL in by and args.contexts:
        ctx = context_section(by[CTX_MODEL][0], engines, args)
    if THREADS_MODEL in by and len(counts) > 1:
        thr = threads_section(by[THREADS_MODEL][0], engines, args, by[THREADS_MODEL][1], rb)
    memory_section(rows)

    load1 = os.getloadavg()
    took = time.monotonic() - t_start
    title = (f"llamapack vs llama.cpp {lc_version} | {args.threads} threads | median of {args.runs} | "
             f"load avg {load0[0]:.1f}->{load1[0]:.1f}")
    try:
        bench_plot.plot(args.plot, rows, ctx, thr, moe, title, ENGINES, PP, TG, CTX_MODEL, THREADS_MODEL)
        print(f"\nplot: {args.plot}")
    except ImportError:
        print("\nno plot: matplotlib is not installed (make bench installs it)")
    print(f"took {took / 60:.1f} min | load average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} "
          f"| worker logs in {LOG_DIR.relative_to(ROOT)}/")


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1")
    else:
        main()
