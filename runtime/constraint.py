"""What a constraint on generated text promises the generation loop.

A constraint (JSON mode, a GBNF grammar, a JSON Schema, a tool-call format) decides, before
each sampled token, which tokens may come next. The generation loop (`Decoding.choose` and
`Decoding.accept` in runtime/decoding.py) calls, per step:

    logits = processors(history, logits)        # penalties, biases
    logits = constraint.mask(logits)            # rejected tokens get -inf (on a copy of the row)
    token  = sampler(logits)
    constraint.advance(token)
    ... stop checker: constraint.done ends generation with reason COMPLETE

- `mask(logits)` returns the float32 logits (n_vocab,) with every token the constraint
  rejects set to -inf (it may change and return the array it is given). End-of-generation
  tokens are allowed only where the output may end. When it leaves no token finite, nothing
  can continue the output: the loop ends generation (reason COMPLETE) without sampling.
- `advance(token)` takes the sampled token (always one `mask` allowed) into the state.
- `done` is True once the output is complete and nothing may follow it (e.g. a JSON object's
  closing brace): generation ends there, with finish_reason "stop".

Optional: `shown_text(token)` -> the text to show for a control token (normally shown as
nothing), or None: a tool-call format whose markers are control tokens ([TOOL_CALLS]) needs them in
the text it parses.

A constraint belongs to one request and is used by one thread at a time; runtime/grammar's
`GrammarConstraint` (GBNF grammars, JSON Schemas, any JSON object) is the one the server uses.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Constraint(Protocol):
    def mask(self, logits: np.ndarray) -> np.ndarray: ...

    def advance(self, token: int) -> None: ...

    @property
    def done(self) -> bool: ...
