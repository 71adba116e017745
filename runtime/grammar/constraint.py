"""GrammarConstraint: a GBNF grammar (or a compiled one) as a runtime.constraint.Constraint.

    c = GrammarConstraint(grammar_text, tokenizer)
    logits = c.mask(logits)      # tokens the grammar rejects -> -inf
    c.advance(token)
    c.done                       # the grammar matched and nothing may follow

A token is allowed when all of its bytes keep the grammar alive, as llama.cpp's grammar
sampler decides it (a token ending inside a UTF-8 character is allowed when the character can
still become one the grammar takes). Two deliberate differences from llama.cpp: control tokens
(<|im_start|> and the like) are never allowed, even where their text would match (llama.cpp
matches their text); end-of-generation tokens are allowed only where the grammar has matched
and no character is half written (llama.cpp does not look at the half character).

mask and advance raise GrammarError for a grammar so ambiguous that more than MAX_STACKS parse
stacks are alive at once (llama.cpp follows them all, exponentially many for some grammars).
"""
from __future__ import annotations

import functools
import threading

import numpy as np

from .gbnf import parse_grammar
from .matcher import DEAD, NO_PARTIAL, Matcher
from .vocab import masker

_COMPILE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=64)
def _compile_cached(text: str) -> Matcher:
    return Matcher(parse_grammar(text))


def compile_grammar(text: str) -> Matcher:
    """GBNF text -> Matcher, cached by text (its tables fill up as requests use it);
    GrammarError if the grammar is invalid."""
    with _COMPILE_LOCK:
        return _compile_cached(text)


class GrammarConstraint:
    def __init__(self, grammar: str | Matcher, tokenizer) -> None:
        self.matcher = grammar if isinstance(grammar, Matcher) else compile_grammar(grammar)
        self.tokenizer = tokenizer
        self._masker = masker(self.matcher, tokenizer)
        self._cid = self.matcher.start
        self._partial = NO_PARTIAL
        self._ended = False

    def allowed(self) -> np.ndarray:
        """bool (n_vocab,): the tokens allowed next."""
        if self._ended:
            return np.zeros(self.tokenizer.n_vocab, dtype=bool)
        return self._masker.allowed(self._cid, self._partial)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        ok = self.allowed()
        n = min(len(ok), len(logits))
        np.copyto(logits[:n], np.float32(-np.inf), where=~ok[:n])
        logits[n:] = -np.inf            # rows beyond the tokenizer's vocabulary (padding)
        return logits

    def advance(self, token: int) -> None:
        if self._ended:
            raise ValueError(f"grammar: token {token} after the end of the output")
        if self.tokenizer.is_eog(token):
            if not (self._partial == NO_PARTIAL and self.matcher.accepts(self._cid)):
                raise ValueError(f"grammar: end of generation (token {token}) before the grammar matched")
            self._ended = True
            return
        piece = self.tokenizer.token_to_piece(token, False)
        if not piece or not self.feed(piece):
            raise ValueError(f"grammar: token {token} ({piece!r}) does not fit the grammar here")

    def fits(self, data: bytes) -> bool:
        """Would the grammar take `data` next?"""
        return not self._ended and self.matcher.feed(self._cid, self._partial, data)[0] != DEAD

    def feed(self, data: bytes) -> bool:
        """Takes `data`, text that came other than as one allowed token (a tool call's start seen in
        free text, a control token's text); False, and nothing taken, if the grammar rejects it."""
        cid, partial = self.matcher.feed(self._cid, self._partial, data)
        if self._ended or cid == DEAD:
            return False
        self._cid, self._partial = cid, partial
        return True

    @property
    def done(self) -> bool:
        return self._ended or (self._partial == NO_PARTIAL and self.matcher.finished(self._cid))
