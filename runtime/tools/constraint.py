"""The Constraint (runtime/constraint.py) of a tool-calling request.

Two ways in, then the section's grammar (Format.body_gbnf) decides every token:
- forced (tool_choice required or a named function; the generic format always): the section's
  start text comes first: when the vocabulary has it as one token (Qwen's `<tool_call>`, Mistral's
  `[TOOL_CALLS]`, special or not) that token is forced, the one the model knows; otherwise the
  text is part of the grammar, which lets the model spell it with any tokens. Then the grammar;
- lazy (tool_choice auto): any text, until the output shows one of the format's triggers (read
  with special tokens' text); the text from there is fed to the grammar, which decides the rest
  (llama.cpp's lazy grammars with trigger words work this way). Text the grammar cannot take
  leaves the output free: the parse then finds no call in it.

Like GrammarConstraint, control tokens are never allowed inside the grammar, and end of
generation only where the section may end, with one exception: the format's markers. Where the
vocabulary has a marker as one control token (Mistral's [TOOL_CALLS] and [ARGS], Llama's
<|python_tag|>), that token is allowed wherever the grammar takes the marker's text, and its text
is shown in the output (`shown_text`, read by the generation loop) so that the call parses.
"""
from __future__ import annotations

import numpy as np

from runtime.grammar.constraint import compile_grammar
from runtime.grammar.matcher import DEAD, NO_PARTIAL
from runtime.grammar.regex import gbnf_literal
from runtime.grammar.vocab import masker

from .parse import Trigger, find_trigger


def prefixed(gbnf: str, text: str) -> str:
    """The grammar `gbnf` (its first line the root rule, as formats.embed writes it) after `text`."""
    head, rest = gbnf.split("\n", 1)
    assert head.startswith("root ::= ")
    return f"root ::= {gbnf_literal(text)} ( {head[len('root ::= '):]} )\n{rest}"

FREE, FORCED, GRAMMAR = "free", "forced", "grammar"


class ToolConstraint:
    def __init__(self, body_gbnf: str, tokenizer, *, triggers: tuple[Trigger, ...] = (),
                 forced: str | None = None, markers: tuple[str, ...] = ()) -> None:
        """`forced` (the text a required section starts with, maybe ""): forced mode; None: lazy
        mode with `triggers`. `markers`: the format's marker texts."""
        self._marks: dict[int, bytes] = {}     # control tokens that are a marker: their text
        for text in markers:
            ids = tokenizer.tokenize(text, add_special=False, parse_special=True)
            if len(ids) == 1 and not tokenizer.token_to_piece(ids[0], False) \
                    and tokenizer.token_to_piece(ids[0], True) == text.encode():
                self._marks[ids[0]] = text.encode()
        self._forced: list[int] = []
        if forced:
            ids = tokenizer.tokenize(forced, add_special=False, parse_special=True)
            if len(ids) == 1 and tokenizer.token_to_piece(ids[0], True) == forced.encode():
                self._forced = ids
            else:
                body_gbnf = prefixed(body_gbnf, forced)
        self.matcher = compile_grammar(body_gbnf)
        self.tokenizer = tokenizer
        self._masker = masker(self.matcher, tokenizer)
        self.triggers = triggers
        self._cid, self._partial = self.matcher.start, NO_PARTIAL
        self._ended = False
        self._text = b""                      # lazy mode: the output so far (special tokens' text too)
        self.phase = FREE if forced is None else FORCED if self._forced else GRAMMAR

    # --- Constraint --------------------------------------------------------------------------

    def mask(self, logits: np.ndarray) -> np.ndarray:
        if self.phase == FREE:
            return logits
        if self.phase == FORCED:
            keep = self._forced[0]
            value = logits[keep]
            logits[:] = -np.inf
            logits[keep] = value if np.isfinite(value) else 0.0
            return logits
        ok = np.zeros(self.tokenizer.n_vocab, dtype=bool) if self._ended else \
            self._masker.allowed(self._cid, self._partial)
        if self._marks and not self._ended:
            ok = ok.copy()              # the masker's array may be its cache
            for token, text in self._marks.items():
                ok[token] = self.matcher.feed(self._cid, self._partial, text)[0] != DEAD
        n = min(len(ok), len(logits))
        np.copyto(logits[:n], np.float32(-np.inf), where=~ok[:n])
        logits[n:] = -np.inf
        return logits

    def advance(self, token: int) -> None:
        if self.phase == FREE:
            self._free(token)
        elif self.phase == FORCED:
            if token != self._forced[0]:
                raise ValueError(f"tool call: token {token} where the call's start was forced")
            self._forced.pop(0)
            if not self._forced:
                self.phase = GRAMMAR
        else:
            self._grammar(token)

    def shown_text(self, token: int) -> str | None:
        """A marker's text for its control token (else None: the token shows as it always does)."""
        text = self._marks.get(token)
        return None if text is None else text.decode()

    @property
    def done(self) -> bool:
        if self.phase != GRAMMAR:
            return False
        return self._ended or (self._partial == NO_PARTIAL and self.matcher.finished(self._cid))

    # --- the phases --------------------------------------------------------------------------

    def _free(self, token: int) -> None:
        if self.tokenizer.is_eog(token):
            return
        self._text += self.tokenizer.token_to_piece(token, True)
        text = self._text.decode("utf-8", errors="ignore")
        found = find_trigger(self.triggers, text)
        if found is None:
            return
        pos, trig = found
        body = text[pos if trig.in_body else pos + len(trig.text):]
        cid, partial = self.matcher.feed(self.matcher.start, NO_PARTIAL, body.encode("utf-8"))
        if cid == DEAD:
            self.triggers = ()          # not a call this grammar takes: the output stays free
            return
        self._cid, self._partial = cid, partial
        self.phase = GRAMMAR

    def _grammar(self, token: int) -> None:
        if self._ended:
            raise ValueError(f"tool call: token {token} after the end of the call")
        if self.tokenizer.is_eog(token):
            if not (self._partial == NO_PARTIAL and self.matcher.accepts(self._cid)):
                raise ValueError(f"tool call: end of generation (token {token}) inside the call")
            self._ended = True
            return
        piece = self._marks.get(token) or self.tokenizer.token_to_piece(token, False)
        cid, partial = self.matcher.feed(self._cid, self._partial, piece)
        if cid == DEAD or not piece:
            raise ValueError(f"tool call: token {token} ({piece!r}) does not fit the call here")
        self._cid, self._partial = cid, partial

