"""Many sequences at once: llamapack's batched decoding and its server, next to llama.cpp.

    make bench-serving                                   # both tables, SmolLM2 and the bench models given
    .venv/bin/python -m tools.bench_serving --models smollm2-Q4_1 --runs 3

1. Batched decoding, engine against engine: S sequences (S = 1, 2, 4, 8) with their own
   16-token prompts, then 16 untimed steps (a new process's first steps run slower) and 128
   timed ones of one row per sequence in ONE forward call each, greedy.
   llamapack: `Model.decode`; llama.cpp: `llama_decode` of a `llama_batch` whose rows carry
   the S sequence ids (llama-cpp-python's low-level API). Aggregate generated tokens/s, each
   engine in its own process, engines alternating run by run, medians. A model that holds a
   few of its real layers (the Mistral-width ones) is also run without logits (the same steps,
   no output product), and its S streams against one are estimated at the real depth
   (`full_depth_vs_one`): there the layers weigh eight times as much (Mistral's 32 against 4)
   and the rest as much as here; the output product, which reads 100 MB per step at Mistral's
   vocabulary and costs four rows about what it costs one, flatters the ratio of a short model.
2. The server, as clients see it: S concurrent streaming /v1/completions requests (128 tokens
   each, temperature 0) to `python -m runtime --server --parallel 8`; aggregate tokens/s over
   the wall time from the first request to the last token, and S streams against one.
3. Time to first token of a new short request while 3 others stream, alone and with a
   2,000-token prompt arriving just before it; and the longest pause of the 3 streams while
   that prompt is processed (chunked prefill bounds it by one chunk, not by the prompt).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from runtime.gguf import GGUFFile
from tools import bench_models
from tools.bench_machine import model_info, read_back
from tools.bench_worker import LOG_DIR

STREAMS = (1, 2, 4, 8)
PROMPT = 16
STEPS = 128
WARM = 16  # untimed steps first: a new process's first steps run slower (pages, caches, threads waking)


# ================================================================= batched decoding (worker side)

def _prompts(n_vocab: int, s: int) -> list[list[int]]:
    rng = np.random.default_rng(1)
    return [[int(t) for t in rng.integers(300, n_vocab, PROMPT)] for _ in range(s)]


def _next_tokens(logits: np.ndarray | None, prompts: list[list[int]], step: int) -> list[int]:
    """Each sequence's greedy token, or (no logits: a run without the output product) its prompt's
    tokens again in turn."""
    if logits is None:
        return [pr[step % PROMPT] for pr in prompts]
    return [int(i) for i in logits.argmax(axis=1)]


def ours_batched(path: str, threads: int, s: int, logits_on: bool = True) -> float:
    from runtime.model import Model
    model = Model(GGUFFile(path), n_ctx=PROMPT + WARM + STEPS + 8, n_threads=threads, n_seq=s, max_batch=PROMPT * s)
    prompts = _prompts(model.config.n_vocab, s)
    rows = [(t, p, q) for q, pr in enumerate(prompts) for p, t in enumerate(pr)]
    marks = [p == PROMPT - 1 for _, p, _ in rows]
    logits = model.decode([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], marks)
    t0 = 0.0
    for step in range(WARM + STEPS):
        t0 = time.perf_counter() if step == WARM else t0
        nxt = _next_tokens(logits if logits_on else None, prompts, step)
        logits = model.decode(nxt, [PROMPT + step] * s, list(range(s)), [logits_on] * s)
    return s * STEPS / (time.perf_counter() - t0)


def llama_batched(path: str, threads: int, s: int, logits_on: bool = True) -> float:
    import ctypes

    from tools.bench_worker import refuse_amx_tiles
    refuse_amx_tiles()  # (in this process: its AMX product crashes on a CPU with AMX)
    import llama_cpp as lc
    import llama_cpp.llama  # noqa: F401  (installs its own log callback first; ours replaces it)
    quiet = lc.llama_log_callback(lambda level, text, data: None)
    lc.llama_log_set(quiet, ctypes.c_void_p(0))
    lc.llama_backend_init()
    mp = lc.llama_model_default_params()
    model = lc.llama_model_load_from_file(path.encode(), mp)
    cp = lc.llama_context_default_params()
    cp.n_ctx = s * (PROMPT + STEPS + 8 + 256)  # per sequence: a share of n_ctx
    cp.n_batch = cp.n_ubatch = max(PROMPT * s, 32)
    cp.n_seq_max = s
    cp.n_threads = cp.n_threads_batch = threads
    ctx = lc.llama_init_from_model(model, cp)
    n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    batch = lc.llama_batch_init(max(PROMPT * s, 32), 0, s)

    def run(rows: list[tuple[int, int, int, bool]]) -> np.ndarray:
        batch.n_tokens = len(rows)
        for i, (tok, pos, seq, out) in enumerate(rows):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, out
        if lc.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        outs = [i for i, r in enumerate(rows) if r[3]]
        return np.array([np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, i), shape=(n_vocab,)) for i in outs])

    prompts = _prompts(n_vocab, s)
    logits = run([(t, p, q, p == PROMPT - 1) for q, pr in enumerate(prompts) for p, t in enumerate(pr)])
    t0 = 0.0
    for step in range(WARM + STEPS):
        t0 = time.perf_counter() if step == WARM else t0
        nxt = _next_tokens(logits if logits_on else None, prompts, step)
        logits = run([(nxt[q], PROMPT + step, q, logits_on) for q in range(s)])
    took = time.perf_counter() - t0
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    return s * STEPS / took


def worker(engine: str, path: str, threads: int, s: int, logits_on: bool) -> None:
    fn = ours_batched if engine == "llamapack" else llama_batched
    print(json.dumps({"tps": fn(path, threads, s, logits_on)}), flush=True)


def measure_batched(engine: str, path: Path, threads: int, s: int, logits_on: bool = True) -> float | None:
    run = subprocess.run([sys.executable, "-m", "tools.bench_serving", "--worker", engine, str(path), str(threads),
                          str(s), "logits" if logits_on else "none"], capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        print(f"  {engine} S={s} failed: {run.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return float(json.loads(run.stdout.strip().splitlines()[-1])["tps"])


def table_batched(models: list[tuple[str, Path]], threads: int, runs: int) -> None:
    print(f"\n## Batched decoding: S sequences, one forward call per step ({STEPS} timed steps after {PROMPT}-token "
          f"prompts and {WARM} untimed steps, greedy), aggregate generated tok/s, {threads} threads, medians of "
          f"{runs}; every run goes through all S in turn, and 'S vs 1' is the median of each run's ratio\n")
    print("| model | S | llamapack | llama.cpp | ratio | llamapack S vs 1 | llama.cpp S vs 1 "
          "| S vs 1 at full depth (est.), llamapack / llama.cpp |")
    print("|---|---|---|---|---|---|---|---|")
    for name, path in models:
        info = model_info(name, path)  # full_layers: the depth of the real model a bench model stands for
        layers = info.n_layer
        full = info.full_layers if info.full_layers and info.full_layers > layers else None  # (a model cut short)
        got: dict[tuple[str, int, bool], list[float]] = {}
        for r in range(runs):  # S in turn within a run: the machine's drift weighs on every S alike
            for s in STREAMS:
                order = ["llamapack", "llama.cpp"] if r % 2 == 0 else ["llama.cpp", "llamapack"]
                for logits_on in (True, False) if full else (True,):
                    for eng in order:
                        got.setdefault((eng, s, logits_on), []).append(
                            measure_batched(eng, path, threads, s, logits_on) or float("nan"))
        for s in STREAMS:
            engines = ("llamapack", "llama.cpp")
            med = {e: _median(got[(e, s, True)]) for e in engines}
            vs1 = {e: _median([a / b for a, b in zip(got[(e, s, True)], got[(e, 1, True)])]) for e in engines}
            deep = "-"
            if full:
                est = {e: _median([full_depth_vs_one(s, *tps, layers, full) for tps in
                                   zip(got[(e, s, True)], got[(e, s, False)], got[(e, 1, True)], got[(e, 1, False)])])
                       for e in engines}
                deep = f"{est['llamapack']:.2f}x / {est['llama.cpp']:.2f}x ({full} layers)"
            print(f"| {name} | {s} | {med['llamapack']:.1f} | {med['llama.cpp']:.1f} | "
                  f"{med['llamapack'] / med['llama.cpp']:.2f}x | {vs1['llamapack']:.2f}x | {vs1['llama.cpp']:.2f}x "
                  f"| {deep} |", flush=True)


def full_depth_vs_one(s: int, tps_s: float, tps_s_bare: float, tps_1: float, tps_1_bare: float,
                      layers: int, full_layers: int) -> float:
    """S streams' aggregate tok/s against one stream's, for the model at `full_layers` layers, from a
    file of `layers` of them: each count's step time (rows / tok/s) with the logits and without them
    (the same steps, no output product: `bare`). The step without logits stands for the layers (the
    embedding lookup and the final norm are negligible) and scales with the depth; the difference (the
    output product, the logits' handling) stays. A run without logits that came out slower than the one
    with them (noise) counts no output cost."""
    def step_at_depth(rows: int, tps: float, tps_bare: float) -> float:
        with_out, bare = rows / tps, rows / tps_bare
        return bare * full_layers / layers + max(with_out - bare, 0.0)
    return (s / step_at_depth(s, tps_s, tps_s_bare)) / (1 / step_at_depth(1, tps_1, tps_1_bare))


def _median(values: list[float]) -> float:
    """The median of the values that are numbers (a failed measurement is NaN); NaN if none is."""
    ok = [v for v in values if v == v]
    return statistics.median(ok) if ok else float("nan")


# ================================================================= the server (client side)

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`python -m runtime --server` on a free port, in its own process."""

    def __init__(self, path: Path, threads: int, parallel: int, n_ctx: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # its log (a line per request) to a file: a pipe nobody reads would stall it once full
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"server.{path.stem}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "runtime", "-m", str(path), "--server", "--nobrowser",
                                      "--port", str(self.port), "--parallel", str(parallel), "-c", str(n_ctx),
                                      "-t", str(threads)], stdout=subprocess.DEVNULL, stderr=self._log)
        import requests
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        self.close()
        raise RuntimeError(f"the server did not start (its log: {self.log_path})")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def stream(url: str, prompt: str | list[int], max_tokens: int, log: list[float] | None = None,
           until: threading.Event | None = None) -> dict[str, float]:
    """One streaming completion; its start, first-token and end times and its generated tokens
    (log: every streamed piece's arrival time; until: leave when it is set)."""
    import requests
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first, tokens = None, 0
    with requests.post(url + "/v1/completions", json=body, stream=True, timeout=600) as r:
        for line in r.iter_lines(decode_unicode=True):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if until is not None and until.is_set():
                break
            event = json.loads(line[6:])
            now = time.perf_counter()
            if event.get("choices") and event["choices"][0].get("text"):
                first = first or now
                if log is not None:
                    log.append(now)
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return {"start": t0, "first": first or time.perf_counter(), "end": time.perf_counter(), "tokens": tokens}


def _concurrently(jobs: list) -> list:  # type: ignore[type-arg]
    out: list = [None] * len(jobs)  # type: ignore[type-arg]

    def run(i: int) -> None:
        out[i] = jobs[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


STORY = "Once upon a time, in a small village by the sea, there lived"


def table_server(models: list[tuple[str, Path]], threads: int, runs: int) -> None:
    print(f"\n## The server: S concurrent streaming requests of {STEPS} tokens (temperature 0), --parallel 8, "
          f"aggregate tok/s over the wall time, medians of {runs}; every run goes through all S in turn, and "
          f"'vs one stream' is the median of each run's ratio\n")
    print("| model | S | aggregate tok/s | vs one stream | per stream tok/s |")
    print("|---|---|---|---|---|")
    for name, path in models:
        srv = Server(path, threads, 8, 4096)
        try:
            stream(srv.url, STORY, 8)  # warm-up
            for s in STREAMS:  # every slot used once before the timed runs
                _concurrently([lambda: stream(srv.url, STORY, 8) for _ in range(s)])
            rates: dict[int, list[float]] = {s: [] for s in STREAMS}
            for _ in range(runs):
                for s in STREAMS:
                    res = _concurrently([lambda: stream(srv.url, STORY, STEPS) for _ in range(s)])
                    wall = max(r["end"] for r in res) - min(r["start"] for r in res)
                    rates[s].append(sum(r["tokens"] for r in res) / wall)
            for s in STREAMS:
                agg = statistics.median(rates[s])
                vs1 = statistics.median([a / b for a, b in zip(rates[s], rates[1])])
                print(f"| {name} | {s} | {agg:.1f} | {vs1:.2f}x | {agg / s:.1f} |", flush=True)
            ttft(name, srv, runs)
        finally:
            srv.close()


def ttft(name: str, srv: Server, runs: int) -> None:
    """A short request's time to first token while 3 streams run, alone and with a 2,000-token prompt
    sent just before it; the 3 streams' longest pause between pieces meanwhile."""
    rng = np.random.default_rng(2)
    for with_long in (False, True):
        firsts, pauses = [], []
        for _ in range(runs):
            long_prompt = [int(t) for t in rng.integers(300, 20000, 2000)]  # a new one each run: none cached
            logs: list[list[float]] = [[], [], []]
            result: dict[str, object] = {}

            done = threading.Event()

            def background(i: int) -> None:  # counting: goes on until told to leave
                stream(srv.url, ", ".join(str(k) for k in range(100 * i, 100 * i + 8)) + ",", 4000, logs[i], done)

            bg = [threading.Thread(target=background, args=(i,)) for i in range(3)]
            for t in bg:
                t.start()
            time.sleep(1.0)  # the three are generating
            t_new = time.perf_counter()
            long_t = None
            if with_long:
                long_t = threading.Thread(target=lambda: result.setdefault("long", stream(srv.url, long_prompt, 1)))
                long_t.start()
                time.sleep(0.05)
            short = stream(srv.url, f"{STORY} a cat number {len(firsts)}", 4)
            firsts.append(short["first"] - short["start"])
            if long_t is not None:
                long_t.join()
            t_end = time.perf_counter()
            done.set()
            for t in bg:
                t.join()
            time.sleep(0.5)  # the server lets the three go
            gaps = [b - a for log in logs for a, b in zip(log, log[1:]) if t_new <= a <= t_end]
            pauses.append(max(gaps) if gaps else float("nan"))
        what = "with a 2,000-token prompt arriving" if with_long else "alone"
        print(f"\n{name}: time to first token of a new request while 3 stream, {what}: "
              f"{statistics.median(firsts) * 1000:.0f} ms; the streams' longest pause meanwhile "
              f"{statistics.median(pauses) * 1000:.0f} ms", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-Q4_1", help="comma-separated tools.bench_models names or paths")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=("batched", "server"), default=None)
    args = ap.parse_args()
    models = []
    for m in args.models.split(","):
        if os.path.exists(m):
            models.append((Path(m).name, Path(m)))
        else:
            bench_models.make([m])
            models.append((m, bench_models.model_path(m)))
    print(read_back(models))
    print(f"load average {os.getloadavg()[0]:.2f} at the start")
    if args.only != "server":
        table_batched(models, args.threads, args.runs)
    if args.only != "batched":
        table_server(models, args.threads, args.runs)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "logits")
    else:
        main()
