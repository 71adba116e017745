"""`response_format: {"type": "json_object"}`: generation constrained to one JSON object.

llama.cpp compiles a JSON grammar and masks the logits of tokens the grammar rejects.
This is the same idea with a hand-written JSON automaton instead of a grammar engine, behind
the `Constraint` interface (runtime/constraint.py) that the generation loop drives:

- `advance(state, text)` runs a character-level JSON recogniser (a pushdown automaton
  with an immutable tuple state) over a token's text and says whether the output so far
  is still the prefix of a valid JSON object.
- `JsonObject.mask`: the candidates are visited by descending logit (after the penalties)
  and the first `k` that keep the output valid are kept (k = 1 when greedy, else top_k, or
  64: `candidates(params)`); every other logit is set to -inf, and the usual sampler picks
  among the rest. `advance` moves the automaton over the sampled token's text.
- when the object is complete (`done`), generation ends (finish_reason "stop");
  end-of-generation tokens are masked until then, and never needed: nothing may follow the
  object. Whitespace runs are capped so a model cannot pad forever.

The output is therefore always a valid JSON object unless `max_tokens` (or the context)
cuts it short, in which case finish_reason is "length", as with llama.cpp. Tokens whose
text is not whole UTF-8 on its own (byte-fallback pieces) are not used in JSON mode.
A JSON schema (`json_schema`) is not enforced: only the object shape.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from runtime.sampling import SamplingParams
from runtime.tokenizer import Tokenizer

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

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tok = tokenizer
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


def candidates(params: SamplingParams) -> int:
    """How many valid tokens a step keeps: 1 when greedy, else top_k (64 without a top_k)."""
    return 1 if params.temp <= 0 else (params.top_k if params.top_k > 0 else 64)


class JsonObject:
    """The Constraint "the output is one JSON object"; one per request."""

    def __init__(self, tokenizer: Tokenizer, k: int = 64) -> None:
        self.pieces = _Pieces(tokenizer)
        self.k = max(1, k)
        self.state: State = START
        self._next: dict[int, State] = {}  # the last mask's allowed tokens and where each leads

    @classmethod
    def factory(cls, params: SamplingParams) -> Callable[[Tokenizer], JsonObject]:
        """A per-request constructor for `params` (the server makes the constraint on its worker)."""
        k = candidates(params)
        return lambda tokenizer: cls(tokenizer, k)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        allowed = _allowed(logits, self.state, self.pieces, self.k)
        self._next = dict(allowed)
        masked = np.full_like(logits, -np.inf)
        cand = np.fromiter(self._next, dtype=np.int64, count=len(self._next))
        masked[cand] = logits[cand]
        return masked

    def advance(self, token: int) -> None:
        nxt = self._next.get(token)
        if nxt is None:  # a token the last mask did not offer: ask the automaton itself
            text = self.pieces(token)
            nxt = advance(self.state, text) if text is not None else None
            if nxt is None:
                raise ValueError(f"token {token} does not continue the JSON object")
        self.state, self._next = nxt, {}

    @property
    def done(self) -> bool:
        return self.state[0] == "done"
