"""`response_format: {"type": "json_object"}`: generation constrained to one JSON object.

llama.cpp compiles a JSON grammar and masks the logits of tokens the grammar rejects.
This is the same idea with a hand-written JSON automaton instead of a grammar engine:

- `advance(state, text)` runs a character-level JSON recogniser (a pushdown automaton
  with an immutable tuple state) over a token's text and says whether the output so far
  is still the prefix of a valid JSON object.
- at each step the candidates are visited by descending logit (after the penalties) and
  the first `k` that keep the output valid are kept (k = 1 when greedy, else top_k, or 64);
  every other logit is set to -inf, and the usual sampler picks among the rest.
- when the object is complete, generation ends (finish_reason "stop"); end-of-generation
  tokens are masked until then. Whitespace runs are capped so a model cannot pad forever.

The output is therefore always a valid JSON object unless `max_tokens` (or the context)
cuts it short, in which case finish_reason is "length", as with llama.cpp. Tokens whose
text is not whole UTF-8 on its own (byte-fallback pieces) are not used in JSON mode.
A JSON schema (`json_schema`) is not enforced: only the object shape.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np

from runtime.engine import Chunk, Engine, Stats
from runtime.sampling import COMPLETE, SamplingParams, StopChecker, make_logits_processors, make_sampler

MAX_WS_RUN = 24      # consecutive whitespace characters allowed between tokens of JSON
SCAN_LIMIT = 2048    # candidates examined per step before settling for the valid ones found

_WS = " \t\n\r"
_DIGITS = "0123456789"
_HEX = "0123456789abcdefABCDEF"
_ESCAPES = '"\\/bfnrtu'

# state: (mode, stack, aux, ws_run)
#   mode: "root" '{' expected | "value" | "key0" key or '}' | "key" | "colon" | "after" ',' or closer
#         | "arr0" value or ']' | "str" | "esc" | "hex" | "num" | "lit" | "done"
#   stack: the open containers, e.g. "{[{"; aux: per mode (is_key, hex left, number phase, literal rest)
State = tuple
START: State = ("root", "", None, 0)


def _after_value(stack: str) -> State:
    return ("after", stack, None, 0) if stack else ("done", "", None, 0)


def _start_value(ch: str, stack: str) -> State | None:
    if ch == "{":
        return ("key0", stack + "{", None, 0)
    if ch == "[":
        return ("arr0", stack + "[", None, 0)
    if ch == '"':
        return ("str", stack, False, 0)
    if ch == "-":
        return ("num", stack, "-", 0)
    if ch == "0":
        return ("num", stack, "0", 0)
    if ch in "123456789":
        return ("num", stack, "int", 0)
    for lit in ("true", "false", "null"):
        if ch == lit[0]:
            return ("lit", stack, lit[1:], 0)
    return None


# number phases: what may follow, and whether the number may end there
_NUM_NEXT = {
    "-": lambda c: "0" if c == "0" else "int" if c in "123456789" else None,
    "0": lambda c: "." if c == "." else "e" if c in "eE" else None,
    "int": lambda c: "int" if c in _DIGITS else "." if c == "." else "e" if c in "eE" else None,
    ".": lambda c: "frac" if c in _DIGITS else None,
    "frac": lambda c: "frac" if c in _DIGITS else "e" if c in "eE" else None,
    "e": lambda c: "esign" if c in "+-" else "exp" if c in _DIGITS else None,
    "esign": lambda c: "exp" if c in _DIGITS else None,
    "exp": lambda c: "exp" if c in _DIGITS else None,
}
_NUM_END = {"0", "int", "frac", "exp"}


def feed(state: State, ch: str) -> State | None:
    """The state after one more character, or None if the text stops being a JSON prefix."""
    mode, stack, aux, ws = state
    if mode == "str":
        if ch == '"':
            return ("colon", stack, None, 0) if aux else _after_value(stack)
        if ch == "\\":
            return ("esc", stack, aux, 0)
        return None if ord(ch) < 0x20 else state
    if mode == "esc":
        if ch not in _ESCAPES:
            return None
        return ("hex", stack, (aux, 4), 0) if ch == "u" else ("str", stack, aux, 0)
    if mode == "hex":
        if ch not in _HEX:
            return None
        is_key, left = aux
        return ("hex", stack, (is_key, left - 1), 0) if left > 1 else ("str", stack, is_key, 0)
    if mode == "num":
        nxt = _NUM_NEXT[aux](ch)
        if nxt is not None:
            return ("num", stack, nxt, 0)
        if aux not in _NUM_END:
            return None
        return feed(_after_value(stack), ch)  # the number ended; ch belongs to what follows
    if mode == "lit":
        if not aux or ch != aux[0]:
            return None
        return ("lit", stack, aux[1:], 0) if len(aux) > 1 else _after_value(stack)
    if mode == "done":
        return None
    if ch in _WS:  # between tokens of the structure
        return (mode, stack, aux, ws + 1) if ws < MAX_WS_RUN else None
    if mode == "root":
        return ("key0", "{", None, 0) if ch == "{" else None
    if mode == "value":
        return _start_value(ch, stack)
    if mode == "arr0":
        if ch == "]":
            return _after_value(stack[:-1])
        return _start_value(ch, stack)
    if mode in ("key0", "key"):
        if ch == '"':
            return ("str", stack, True, 0)
        if ch == "}" and mode == "key0":
            return _after_value(stack[:-1])
        return None
    if mode == "colon":
        return ("value", stack, None, 0) if ch == ":" else None
    if mode == "after":
        top = stack[-1]
        if ch == ",":
            return ("key", stack, None, 0) if top == "{" else ("value", stack, None, 0)
        if (ch == "}" and top == "{") or (ch == "]" and top == "["):
            return _after_value(stack[:-1])
        return None
    raise AssertionError(mode)


def advance(state: State, text: str) -> State | None:
    for ch in text:
        s = feed(state, ch)
        if s is None:
            return None
        state = s
    return state


def is_valid_object(text: str) -> bool:
    """True if `text` is exactly one JSON object (whitespace around allowed)."""
    s = advance(START, text.rstrip(_WS))
    return s is not None and s[0] == "done"


class _Pieces:
    """Each token's text, or None for tokens JSON mode never uses (empty, partial UTF-8, EOG)."""

    def __init__(self, engine: Engine) -> None:
        self.tok = engine.tokenizer
        self.cache: dict[int, str | None] = {}

    def __call__(self, tid: int) -> str | None:
        text = self.cache.get(tid, "")
        if text == "":
            text = None
            if not self.tok.is_eog(tid):
                try:
                    piece = self.tok.token_to_piece(tid).decode("utf-8")
                    text = piece or None
                except UnicodeDecodeError:
                    pass
            self.cache[tid] = text
        return text


def _allowed(logits: np.ndarray, state: State, pieces: _Pieces, k: int) -> list[tuple[int, State]]:
    """Up to k (token, next state) pairs that keep the output valid, by descending logit."""
    out: list[tuple[int, State]] = []
    n = logits.size
    head = min(SCAN_LIMIT, n)
    top = np.argpartition(-logits, head - 1)[:head] if head < n else np.arange(n)
    order = top[np.argsort(-logits[top], kind="stable")]
    scanned = 0
    while True:
        for tid in order[scanned:]:
            tid = int(tid)
            if not np.isfinite(logits[tid]):
                break
            text = pieces(tid)
            if text is None:
                continue
            nxt = advance(state, text)
            if nxt is not None:
                out.append((tid, nxt))
                if len(out) >= k:
                    return out
        if out or order.size >= n:
            return out
        scanned = order.size  # nothing valid near the top: look through the whole vocabulary
        order = np.argsort(-logits, kind="stable")


def stream_json(engine: Engine, ids: Sequence[int], max_tokens: int = -1, stop: list[str] | None = None,
                params: SamplingParams | None = None) -> Iterator[Chunk]:
    """Like Engine.stream_generate, with every token constrained to continue a JSON object."""
    params = params or SamplingParams()
    sampler = make_sampler(temp=params.temp, top_k=params.top_k, top_p=params.top_p, min_p=params.min_p,
                           seed=params.seed)
    processors = make_logits_processors(repeat_penalty=params.repeat_penalty, repeat_last_n=params.repeat_last_n,
                                        presence_penalty=params.presence_penalty,
                                        frequency_penalty=params.frequency_penalty)
    k = 1 if params.temp <= 0 else (params.top_k if params.top_k > 0 else 64)
    pieces = _Pieces(engine)
    stats, decoder = Stats(), engine.tokenizer.decoder()
    stopper = StopChecker(stop or [], max_tokens, n_ctx=engine.n_ctx)  # EOG tokens are masked (_Pieces)
    state = START
    t0 = t1 = time.perf_counter()
    logits, _ = engine.prefill(list(ids))
    tok, i = None, 0
    while True:
        for proc in processors:
            logits = proc(engine.tokens, logits)
        allowed = _allowed(logits, state, pieces, k)
        if not allowed:
            stopper.end(COMPLETE)  # no token continues the object
            break
        masked = np.full_like(logits, -np.inf)
        cand = np.array([t for t, _ in allowed])
        masked[cand] = logits[cand]
        tok = int(sampler(masked))
        state = dict(allowed).get(tok, allowed[0][1])
        if i == 0:
            t1 = time.perf_counter()
            stats.cached_tokens = engine.last_reused
            stats.prompt_tokens = len(ids) - engine.last_reused
            stats.prompt_seconds = t1 - t0
        i += 1
        stats.generated_tokens = i
        stats.generation_seconds = time.perf_counter() - t1
        text = stopper.push(tok, decoder.feed, n_past=engine.n_past, complete=state[0] == "done")
        if text:
            yield Chunk(text, tok, None, stats)
        if stopper.done:
            break
        logits = engine.eval([tok])
    tail = stopper.flush(decoder.flush())
    yield Chunk(tail, tok, stopper.finish_reason, stats, stopper.stop_string)
