"""One request's generation state: from a row of logits to the next token, and from tokens to text.

A `Decoding` holds everything one request decides with: the history (prompt + generated ids,
what the penalties look at), the sampler and logits processors, an optional `Constraint`
(runtime/constraint.py), the `StopChecker`, the streaming UTF-8 decoder and the `Stats`. It
never runs the model: whoever does (`Engine.stream_generate` for one sequence, a scheduler that
runs one batched forward for many) hands it the logits row of its sequence. Per request:

    state = Decoding(prompt, sampler, processors, constraint, tokenizer=tok, max_tokens=..., stop=...,
                     n_ctx=...)
    state.begin(cached_tokens)          # prompt processing starts (timing; cache reuse counts)
    ... run the prompt; logits = the row of its last position
    while True:
        tok = state.choose(logits)      # processors -> constraint.mask -> sampler; None: the
        if tok is None:                 #   constraint left no token (the state is done, COMPLETE)
            break
        chunk = state.accept(tok)       # constraint.advance, stop checks, text; chunk.text may be ''
        ... emit chunk if chunk.text
        if state.done:
            break
        logits = ... the forward pass of [tok] at position len(state.history) - 1
    final = state.finish()              # held-back text, finish_reason, stop_string, stats

`accept(tok, n_past)` takes the positions the sequence's KV cache holds before `tok` runs
(default: the history before `tok`, which is what a cache that holds the whole history has);
the stop checker ends generation when the cache is full (the token could not run). Timings:
`begin` starts the prompt clock; the first `choose` closes it (prompt_seconds) and starts the
generation clock, which each `accept` reads (generation_seconds). Every `Chunk` carries the
same `Stats` object, updated in place.

Each chunk also lists the generated tokens whose text it carries (`tokens`: an end-of-generation
token and the tokens of a stop string are in none), and, when `state.logprobs` is set to k (0 for
the chosen token's alone), their log-probabilities with the step's k most likely tokens
(`TokenLogprob`): the log-softmax of the model's logits, taken before the processors, the
constraint and the sampler change them.

`StopChecker` (runtime/sampling.py) alone decides when and why generation ends; a `Decoding`
only feeds it. A state is used by one thread at a time.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

import numpy as np

from runtime.constraint import Constraint
from runtime.sampling import COMPLETE, LogitsProcessor, StopChecker


@dataclass
class Stats:
    prompt_tokens: int = 0       # tokens evaluated for the prompt (after cache reuse)
    cached_tokens: int = 0       # prompt tokens found already in the KV cache
    prompt_seconds: float = 0.0
    generated_tokens: int = 0
    generation_seconds: float = 0.0
    draft_tokens: int = 0        # speculative decoding: tokens drafted and verified
    draft_accepted: int = 0      # drafted tokens kept (runtime/speculative.py)
    truncated: bool = False      # the context was shifted on the way (--context-shift)

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def generation_tps(self) -> float:
        return self.generated_tokens / self.generation_seconds if self.generation_seconds > 0 else 0.0


@dataclass
class TokenLogprob:
    """A generated token's log-probability and the step's most likely tokens: the log-softmax of
    the model's logits for that step, before any sampling transform (bias, penalties, constraint,
    temperature), computed in float64."""
    token: int
    logprob: float
    top: list[tuple[int, float]]  # (token, logprob), most likely first
    offset: int                   # characters of generated text before this token's text


@dataclass
class Chunk:
    """One streamed piece of generated text."""
    text: str
    token: int | None
    finish_reason: str | None = None  # "stop" (EOS or stop string), "length", or None while going
    stats: Stats = field(default_factory=Stats)
    stop_string: str | None = None    # on the last chunk: the stop string that ended it, if one did
    index: int = 0                    # which of a request's choices (OpenAI's `n`) it belongs to
    # the generated tokens whose text (or the start of it) this chunk carries, and their
    # log-probabilities when the request asked for them (Decoding.logprobs)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log(softmax(logits)) in float64 from a float32 row."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def top_logprobs(logprobs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k most likely tokens, most likely first (ties: lower id first)."""
    if k <= 0:
        return []
    k = min(k, logprobs.size)
    part = np.argpartition(-logprobs, k - 1)[:k]
    part = part[np.lexsort((part, -logprobs[part]))]
    return [(int(t), float(logprobs[t])) for t in part]


class TextDecoder(Protocol):
    def feed(self, token: int) -> str: ...

    def flush(self) -> str: ...


class Detokenizer(Protocol):
    """What a Decoding needs of a tokenizer (runtime.tokenizer.Tokenizer has it)."""

    def is_eog(self, token: int) -> bool: ...

    def decoder(self) -> TextDecoder: ...


class Decoding:
    """One request's sampling, constraint, stopping and text decoding; see the module doc.

    `tokenizer` None: no end-of-generation tokens and no text (chunks carry ids only), which is
    what `Engine.generate_step` wants. `max_tokens` < 0 and `n_ctx` < 0: no limit.
    """

    def __init__(self, prompt: Sequence[int], sampler: Callable[[np.ndarray], int],
                 processors: Iterable[LogitsProcessor] = (), constraint: Optional[Constraint] = None, *,
                 tokenizer: Optional[Detokenizer] = None, max_tokens: int = -1, stop: Sequence[str] = (),
                 n_ctx: int = -1, keep_stop: bool = False) -> None:
        self.history: list[int] = [int(t) for t in prompt]
        self.n_prompt = len(self.history)
        self.sampler = sampler
        self.processors = list(processors)
        self.constraint = constraint
        self.stopper = StopChecker(stop, max_tokens, is_eog=tokenizer.is_eog if tokenizer else None, n_ctx=n_ctx,
                                   keep_stop=keep_stop)
        self._decoder = tokenizer.decoder() if tokenizer else None
        # a constraint may show some control tokens as text (a tool-call format's markers)
        self._shown: Optional[Callable[[int], Optional[str]]] = getattr(constraint, "shown_text", None)
        self.stats = Stats(prompt_tokens=self.n_prompt)
        self.last_token: int | None = None
        self._t_prompt = time.perf_counter()   # begin() restarts it
        self._t_first: float | None = None     # when the first token was chosen
        # log-probabilities: None, or how many of each step's most likely tokens to report
        self.logprobs: int | None = None
        self._step_logprobs: np.ndarray | None = None  # this step's, until its token is accepted
        # generated tokens whose text is not out yet: (token, offset, logprob); a token goes out
        # with the chunk whose text reaches past its offset (a stop string's tokens never do)
        self._pending: list[tuple[int, int, TokenLogprob | None]] = []
        self._decoded = 0   # characters decoded so far
        self._released = 0  # characters sent out so far (a prefix of the decoded ones)

    @property
    def done(self) -> bool:
        return self.stopper.done

    @property
    def generated(self) -> list[int]:
        return self.history[self.n_prompt:]

    def begin(self, cached_tokens: int = 0) -> None:
        """Prompt processing starts now; `cached_tokens` of the prompt are already in the KV cache."""
        self._t_prompt = time.perf_counter()
        self.stats.cached_tokens = cached_tokens
        self.stats.prompt_tokens = self.n_prompt - cached_tokens

    def choose(self, logits: np.ndarray) -> int | None:
        """The next token from the logits (n_vocab,) of the last position: processors, then the
        constraint's mask, then the sampler. None when the constraint, or the processors (a
        logit_bias that bans every token), allow no token: generation then ends (reason COMPLETE,
        `done`) without a token; None too when it has ended already (a budget of no tokens:
        max_tokens 0 runs the prompt only, as llama.cpp's -n 0)."""
        if self._t_first is None:
            self._t_first = time.perf_counter()
            self.stats.prompt_seconds = self._t_first - self._t_prompt
        if self.done:
            return None
        if self.logprobs is not None:  # the model's own distribution, before any transform
            self._step_logprobs = log_softmax(logits)
        for proc in self.processors:  # the history is the prompt and what was generated, as in llama.cpp
            logits = proc(self.history, logits)
        if self.constraint is not None:
            # a copy: the mask may write into its argument, and the caller's row may be a model buffer
            logits = self.constraint.mask(np.array(logits, dtype=np.float32, copy=True))
        if (self.constraint is not None or self.processors) and not np.any(logits > -np.inf):
            # nothing allowed (the sampler would read all -inf as "nothing to prefer": any token)
            self.stopper.end(COMPLETE)
            return None
        return int(self.sampler(logits))

    def accept(self, token: int, n_past: int | None = None) -> Chunk:
        """Takes the chosen token; returns its chunk (text that is safe to show now, maybe '').
        `n_past`: positions the KV cache holds before `token` runs (default: the history so far)."""
        token = int(token)
        if n_past is None:
            n_past = len(self.history)
        complete = False
        if self.constraint is not None:
            self.constraint.advance(token)
            complete = self.constraint.done
        self.history.append(token)
        self.last_token = token
        self.stats.generated_tokens += 1
        self.stats.generation_seconds = time.perf_counter() - (self._t_first or self._t_prompt)
        self._pending.append((token, self._decoded, self._token_logprob(token)))
        text = self.stopper.push(token, self._decode, n_past=n_past, complete=complete)
        return self._release(Chunk(text, token, None, self.stats))

    def finish(self) -> Chunk:
        """The last chunk: text held back (a possible stop-string start, an unfinished character)
        unless a stop string was found, the finish reason (None if generation did not end), the
        stop string and the stats."""
        tail = self.stopper.flush(self._decoder.flush() if self._decoder else "")
        chunk = self._release(Chunk(tail, self.last_token, self.stopper.finish_reason, self.stats,
                                    self.stopper.stop_string))
        self._pending.clear()  # an end-of-generation token, a stop string's tokens: no text of theirs is out
        return chunk

    def _token_logprob(self, token: int) -> TokenLogprob | None:
        lp, self._step_logprobs = self._step_logprobs, None
        if lp is None or self.logprobs is None:
            return None
        return TokenLogprob(token, float(lp[token]), top_logprobs(lp, self.logprobs), self._decoded)

    def _release(self, chunk: Chunk) -> Chunk:
        """Gives `chunk` the pending tokens whose text starts within what is now out."""
        self._released += len(chunk.text)
        n = 0 if self._decoder is not None else len(self._pending)  # no text: every token goes out at once
        while n < len(self._pending) and self._pending[n][1] < self._released:
            n += 1
        out, self._pending = self._pending[:n], self._pending[n:]
        chunk.tokens = [t for t, _, _ in out]
        if self.logprobs is not None:
            chunk.logprobs = [lp for _, _, lp in out if lp is not None]
        return chunk

    def _decode(self, token: int) -> str:
        if not self._decoder:
            return ""
        shown = self._shown(token) if self._shown else None
        text = self._decoder.feed(token) if shown is None else shown
        self._decoded += len(text)
        return text
