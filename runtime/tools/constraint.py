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

from runtime.grammar.constraint import GrammarConstraint
from runtime.grammar.regex import gbnf_literal

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
        self.grammar = GrammarConstraint(body_gbnf, tokenizer)
        self.tokenizer = tokenizer
        self.triggers = triggers
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
        saved = [float(logits[t]) for t in self._marks]
        logits = self.grammar.mask(logits)
        for (token, text), value in zip(self._marks.items(), saved):
            if self.grammar.fits(text):      # a marker's control token where the grammar takes its text
                logits[token] = value
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
        elif token not in self._marks:
            self.grammar.advance(token)
        elif not self.grammar.feed(self._marks[token]):
            raise ValueError(f"tool call: {self._marks[token]!r} does not fit the call here")

    def shown_text(self, token: int) -> str | None:
        """A marker's text for its control token (else None: the token shows as it always does)."""
        text = self._marks.get(token)
        return None if text is None else text.decode()

    @property
    def done(self) -> bool:
        return self.phase == GRAMMAR and self.grammar.done

    # --- lazy: free text until a trigger -----------------------------------------------------

    def _free(self, token: int) -> None:
        if self.tokenizer.is_eog(token):
            return
        self._text += self.tokenizer.token_to_piece(token, True)
        text = self._text.decode("utf-8", errors="ignore")
        found = find_trigger(self.triggers, text)
        if found is None:
            return
        pos, trig = found
        if self.grammar.feed(text[pos if trig.in_body else pos + len(trig.text):].encode("utf-8")):
            self.phase = GRAMMAR
        else:
            self.triggers = ()          # not a call this grammar takes: the output stays free
