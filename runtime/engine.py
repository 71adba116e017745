"""The inference engine: a GGUF model, its tokenizer and chat template, and generation.

Shaped like llama-cpp-python so its users feel at home::

    eng = Engine.load("model.gguf", n_ctx=4096)
    ids = eng.tokenize("Hello", add_special=True)
    logits = eng.eval(ids)              # appends to the KV cache
    for piece in eng.generate("Once upon a time", max_tokens=32, temp=0):
        print(piece, end="")

Layers, as in mlx-lm: `generate_step(prompt, sampler, processors, constraint)` yields token
ids; `stream_generate` yields text pieces and timings, and ends where `sampling.StopChecker`
says; chat, the CLI and the server consume only that. Both run the one loop `_decode`, which
hands each step's logits to a per-request `decoding.Decoding` (processors, constraint, sampler,
stop checks, text): the same object a batching scheduler drives row by row.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from os import PathLike
from typing import Any, Callable, Optional

import numpy as np

from runtime.chat_template import ChatTemplate
from runtime.constraint import Constraint
from runtime.decoding import Chunk, Decoding, Stats  # Chunk and Stats: importable from here too
from runtime.gguf import GGUFFile
from runtime.model import Model, ModelError
from runtime.sampling import LogitsProcessor, SamplingParams, make_sampling
from runtime.speculative import CostModel, SpecParams, Speculator, take_rows
from runtime.tokenizer import Tokenizer


class NonFiniteError(ModelError):
    """The forward pass produced NaN or inf: damaged weights (a NaN, or values whose
    activations overflow) or metadata. One request fails; the engine stays usable."""


def check_finite(values: np.ndarray, pos: int, what: str = "logits") -> None:
    """Raises NonFiniteError unless every value is finite; values (n, ...) or (width,) are
    the outputs of positions pos, pos + 1, ... (the error names the first bad one)."""
    finite = np.isfinite(values)
    if finite.all():
        return
    rows = finite.reshape(len(values), -1).all(axis=1) if values.ndim > 1 else np.array([False])
    bad = pos + int(np.argmin(rows))
    raise NonFiniteError(f"the model produced non-finite {what} (NaN/inf) at position {bad}: "
                         "the weights or metadata are damaged")


class Engine:
    def __init__(self, gguf: GGUFFile, model: Model, tokenizer: Tokenizer, template: ChatTemplate,
                 seq: int = 0) -> None:
        self.gguf = gguf
        self.model = model
        self.seq = seq               # the model's KV cache sequence this engine uses
        self.tokenizer = tokenizer
        self.template = template
        self.template_kwargs: dict[str, Any] = {}  # the template's extra variables (--chat-template-kwargs)
        self.tokens: list[int] = []  # what the KV cache holds, position by position
        self.last_reused = 0         # prompt tokens the last prefill found in the cache
        # A full context: generation ends (False), or the cache drops half of what follows the
        # first n_keep tokens (-1: the prompt) and goes on (llama.cpp's --context-shift, --keep).
        self.context_shift = False
        self.n_keep = 0
        # speculative decoding (runtime/speculative.py): on unless None or draft_max 0
        self.speculation: SpecParams | None = SpecParams()
        self.draft_cost = CostModel(SpecParams().row_cost)  # this model's cost of a draft row

    @classmethod
    def load(cls, path: str | PathLike[str], offset: int = 0, n_ctx: int = 4096, n_threads: int | None = None,
             chat_template: str | None = None, n_seq: int = 1, max_batch: int = 512,
             use_mmap: bool = True) -> Engine:
        """`n_seq` sequences in the KV cache (the server's slots; this engine uses the first),
        forward calls of up to `max_batch` rows; `use_mmap` False: the weights are read into
        memory (GGUFFile.load_into_memory) instead of mapped from the file."""
        f = GGUFFile(path, offset)
        try:
            if not use_mmap:
                f.load_into_memory()
            model = Model(f, n_ctx=n_ctx, n_threads=n_threads, n_seq=n_seq, max_batch=max_batch)
            tokenizer = Tokenizer.from_gguf_metadata(f.metadata)
            template = ChatTemplate.from_metadata(f.metadata, override=chat_template)
        except BaseException:
            f.close()
            raise
        return cls(f, model, tokenizer, template)

    # -- llama-cpp-python-like basics -----------------------------------------

    @property
    def n_ctx(self) -> int:
        return self.model.n_ctx

    @property
    def n_past(self) -> int:
        return len(self.tokens)

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return self.tokenizer.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, ids: list[int], special: bool = False) -> str:
        """Text of ids; special=True keeps the text of control tokens."""
        return self.tokenizer.detokenize(ids, special=special)

    def reset(self) -> None:
        self.tokens = []

    def eval(self, ids: list[int], prompt: bool | None = None) -> np.ndarray:
        """Runs ids after what the cache holds; returns float32 logits of the last one. `prompt`:
        whether they are prompt tokens or a generated one (None: several are a prompt), which is
        how the forward pass computes them (Model.forward)."""
        ids = [int(i) for i in ids]
        logits = self.model.forward(ids, self.n_past, seq=self.seq, prompt=prompt)
        check_finite(logits, self.n_past + len(ids) - 1)  # before the cache counts these tokens
        self.tokens.extend(ids)
        return logits

    def embed(self, ids: list[int]) -> np.ndarray:
        """Sentence embedding: the mean over positions of the final-norm hidden states,
        L2-normalised (llama.cpp's mean pooling). Uses the KV cache from position 0."""
        if not ids:
            raise ModelError("nothing to embed")
        self.reset()
        hidden = self.model.hidden(ids, 0, seq=self.seq)
        check_finite(hidden, 0, "hidden states")
        mean = hidden.mean(axis=0, dtype=np.float64)
        norm = float(np.linalg.norm(mean))
        return (mean / norm if norm > 0 else mean).astype(np.float32)

    def cached_prefix(self, ids: list[int]) -> int:
        """How many leading tokens of ids `prefill` takes from the cache: the common prefix with
        what the cache holds, less the last token (at least one runs, for its logits)."""
        common = 0
        for a, b in zip(self.tokens, ids):
            if a != b:
                break
            common += 1
        return max(0, min(common, len(ids) - 1))

    def prefill(self, ids: list[int]) -> tuple[np.ndarray, int]:
        """Makes the cache hold exactly ids, reusing the longest common prefix.

        Returns the last position's logits and how many tokens came from the cache.
        """
        if not ids:
            raise ModelError("empty prompt")
        common = self.cached_prefix(ids)
        del self.tokens[common:]
        self.last_reused = common
        return self.eval(ids[common:], prompt=True), common

    def make_room(self, n_prompt: int) -> bool:
        """Before the next token runs: with context_shift, a full cache shifts (shift_context);
        whether it did."""
        if self.context_shift and self.n_past + 1 >= self.n_ctx:
            self.shift_context(n_prompt)
            return True
        return False

    def draft_room(self, n_past: int) -> int:
        """How many draft tokens may follow the next token when it runs at position n_past: its
        rows fill the context to its end, or, with context_shift, only to where one token alone
        would leave the cache before make_room shifts it, so that the shift drops the same
        positions whether drafts ran or not (the same text at temperature 0)."""
        end = self.n_ctx - 1 if self.context_shift else self.n_ctx
        return end - n_past - 1

    def shift_context(self, n_prompt: int) -> int:
        """Makes room in a full cache as llama.cpp's server does: keeps the first n_keep tokens
        (the prompt's n_prompt for -1; one more for the BOS), drops half of the rest, and moves
        the later ones down. Returns how many positions were dropped."""
        n_keep = (n_prompt if self.n_keep < 0 else self.n_keep) + int(self.tokenizer.add_bos)
        n_keep = max(0, min(self.n_ctx - 4, n_keep))
        n_left = self.n_past - n_keep
        n_discard = max(0, min(n_left // 2, n_left - 1))
        self.model.shift(self.seq, n_keep, n_discard)
        del self.tokens[n_keep:n_keep + n_discard]
        return n_discard

    # -- generation -----------------------------------------------------------

    def decoding(self, ids: list[int], max_tokens: int = -1, stop: list[str] | None = None,
                 params: SamplingParams | None = None, constraint: Constraint | None = None,
                 sampler: Optional[Callable[[np.ndarray], int]] = None,
                 logits_processors: Optional[Iterable[LogitsProcessor]] = None, keep_stop: bool = False) -> Decoding:
        """A request's generation state for ids: sampler and processors from params unless given,
        this engine's tokenizer (end-of-generation tokens, text) and context size; max_tokens -1:
        no limit, -2: until the context is full. `keep_stop`: the
        text ends with the stop string that ended it (StopChecker)."""
        made_sampler, made_processors = make_sampling(params or SamplingParams())
        n_ctx = -1 if self.context_shift else self.n_ctx
        if max_tokens == -2:  # llama.cpp's -n -2: until the context is full, even with context shift on
            # (which makes room before the last position is taken: stop there, unshifted)
            max_tokens, n_ctx = -1, self.n_ctx - 1 if self.context_shift else self.n_ctx
        return Decoding(ids, sampler or made_sampler,
                        made_processors if logits_processors is None else logits_processors, constraint,
                        tokenizer=self.tokenizer, max_tokens=max_tokens, stop=stop or [],
                        n_ctx=n_ctx, keep_stop=keep_stop)

    def _decode(self, state: Decoding) -> Iterator[Chunk]:
        """The single-sequence loop: prefill the state's prompt, then choose, accept and run the
        chosen token until the state is done: alone, or with draft tokens that follow it, verified
        in the same call (runtime/speculative.py; `speculation` None or draft_max 0: never).
        Yields each accepted token's chunk (text may be ''); the caller ends with `state.finish()`."""
        ids = state.history[:state.n_prompt]
        state.begin(self.cached_prefix(ids))
        logits, _ = self.prefill(ids)
        tok = state.choose(logits)
        if tok is None:
            return
        yield state.accept(tok, self.n_past)
        spec = Speculator(self.speculation, self.draft_cost) if self.speculation and self.speculation.enabled \
            else None
        while not state.done:
            if self.make_room(state.n_prompt):
                state.stats.truncated = True
            drafts = spec.draft(state, min(self.draft_room(self.n_past), self.model.max_batch - 1)) if spec else []
            base = self.n_past
            rows = self._run_generated([tok] + drafts)
            try:
                chunks, kept, tok = take_rows(state, drafts, rows, base, check_finite)  # type: ignore[assignment]
            except BaseException:  # e.g. non-finite logits: the cache does not keep what made them
                self._keep_generated(base, 0)
                raise
            self._keep_generated(base, kept)
            if spec:
                spec.record(state, len(drafts), kept)
            yield from chunks
            if tok is None:
                return

    def _keep_generated(self, base: int, kept: int) -> None:
        """The cache keeps `kept` of the rows run from position base (the rejected drafts leave)."""
        if base + kept < self.n_past:
            self.model.truncate(self.seq, base + kept)
            del self.tokens[base + kept:]

    def _run_generated(self, ids: list[int]) -> np.ndarray:
        """Runs a chosen token and its drafts as generated rows (each computed as a lone generated
        row); returns every row's logits (len(ids), n_vocab). The call is timed for the drafts'
        cost model."""
        n = self.n_past
        start = time.perf_counter()
        rows = self.model.decode(ids, range(n, n + len(ids)), [self.seq] * len(ids), [True] * len(ids),
                                 prompt=[False] * len(ids))
        self.draft_cost.record(len(ids), time.perf_counter() - start)
        self.tokens.extend(ids)
        return rows

    def generate_step(self, prompt: list[int], sampler: Callable[[np.ndarray], int],
                      logits_processors: Iterable[LogitsProcessor] = (),
                      constraint: Constraint | None = None) -> Iterator[int]:
        """Yields sampled token ids, the first after the prompt, until the caller stops: at the
        latest when the context is full (the next one could not run) or the constraint is done.
        End-of-generation tokens are yielded like any other: stopping on them is the caller's."""
        state = Decoding(prompt, sampler, logits_processors, constraint, n_ctx=-1 if self.context_shift else self.n_ctx)
        for chunk in self._decode(state):
            yield int(chunk.token)  # type: ignore[arg-type]

    def stream_generate(self, prompt: str | list[int], max_tokens: int = -1, stop: list[str] | None = None,
                        params: SamplingParams | None = None, parse_special: bool = True, *,
                        constraint: Constraint | None = None, sampler: Optional[Callable[[np.ndarray], int]] = None,
                        logits_processors: Optional[Iterable[LogitsProcessor]] = None) -> Iterator[Chunk]:
        """Yields text pieces; the last chunk carries finish_reason and the timings.

        `sampler` / `logits_processors`, when given, replace what params would build; `constraint`
        (runtime/constraint.py) restricts every token, e.g. to one JSON object."""
        ids = self.tokenize(prompt, add_special=True, parse_special=parse_special) if isinstance(prompt, str) \
            else list(prompt)
        return self.stream_decoding(self.decoding(ids, max_tokens, stop, params, constraint, sampler,
                                                  logits_processors))

    def stream_decoding(self, state: Decoding) -> Iterator[Chunk]:
        """Runs a request's state on this engine: its non-empty text pieces, then the last chunk."""
        n_prompt = state.n_prompt
        if n_prompt >= self.n_ctx:
            raise ModelError(f"the prompt has {n_prompt} token{'s' * (n_prompt != 1)} and the context holds "
                             f"{self.n_ctx}: no room for a reply (a larger -c, or a shorter prompt)")
        for chunk in self._decode(state):
            if chunk.text:
                yield chunk
        yield state.finish()

    def chat_prompt(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of a conversation rendered with the model's chat template (one BOS)."""
        add_bos = self.tokenizer.add_bos
        text = self.template.prompt(messages, add_bos=add_bos, add_generation_prompt=add_generation_prompt,
                                    **self.template_kwargs)
        return self.tokenize(text, add_special=True, parse_special=True)

    def stream_chat(self, messages: list[dict[str, str]], max_tokens: int = -1, stop: list[str] | None = None,
                    params: SamplingParams | None = None, *, constraint: Constraint | None = None) -> Iterator[Chunk]:
        """The assistant's reply to a conversation, streamed; the KV cache keeps the shared prefix."""
        return self.stream_generate(self.chat_prompt(messages), max_tokens=max_tokens, stop=stop, params=params,
                                    constraint=constraint)

    def generate(self, prompt: str | list[int], max_tokens: int = -1, stop: list[str] | None = None,
                 **sampling: object) -> Iterator[str]:
        """Streams the generated text, piece by piece."""
        params = SamplingParams(**sampling)  # type: ignore[arg-type]
        for chunk in self.stream_generate(prompt, max_tokens=max_tokens, stop=stop, params=params):
            if chunk.text:
                yield chunk.text

    def close(self) -> None:
        self.gguf.close()
