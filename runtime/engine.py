"""The inference engine: a GGUF model, its tokenizer and chat template, and generation.

Shaped like llama-cpp-python so its users feel at home::

    eng = Engine.load("model.gguf", n_ctx=4096)
    ids = eng.tokenize("Hello", add_special=True)
    logits = eng.eval(ids)              # appends to the KV cache
    for piece in eng.generate("Once upon a time", max_tokens=32, temp=0):
        print(piece, end="")

Layers, as in mlx-lm: `generate_step` yields token ids; `stream_generate` turns
them into text pieces and timings, and ends where `sampling.StopChecker` says; chat,
the CLI and the server consume only that.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from os import PathLike

import numpy as np

from runtime.chat_template import ChatTemplate
from runtime.gguf import GGUFFile
from runtime.model import Model, ModelError
from runtime.sampling import SamplingParams, StopChecker, make_logits_processors, make_sampler
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


@dataclass
class Stats:
    prompt_tokens: int = 0       # tokens evaluated for the prompt (after cache reuse)
    cached_tokens: int = 0       # prompt tokens found already in the KV cache
    prompt_seconds: float = 0.0
    generated_tokens: int = 0
    generation_seconds: float = 0.0

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def generation_tps(self) -> float:
        return self.generated_tokens / self.generation_seconds if self.generation_seconds > 0 else 0.0


@dataclass
class Chunk:
    """One streamed piece of generated text."""
    text: str
    token: int | None
    finish_reason: str | None = None  # "stop" (EOS or stop string), "length", or None while going
    stats: Stats = field(default_factory=Stats)
    stop_string: str | None = None    # on the last chunk: the stop string that ended it, if one did


class Engine:
    def __init__(self, gguf: GGUFFile, model: Model, tokenizer: Tokenizer, template: ChatTemplate) -> None:
        self.gguf = gguf
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.tokens: list[int] = []  # what the KV cache holds, position by position
        self.last_reused = 0         # prompt tokens the last prefill found in the cache

    @classmethod
    def load(cls, path: str | PathLike[str], offset: int = 0, n_ctx: int = 4096, n_threads: int | None = None,
             chat_template: str | None = None) -> Engine:
        f = GGUFFile(path, offset)
        try:
            model = Model(f, n_ctx=n_ctx, n_threads=n_threads)
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

    def eval(self, ids: list[int]) -> np.ndarray:
        """Runs ids after what the cache holds; returns float32 logits of the last one."""
        ids = [int(i) for i in ids]
        logits = self.model.forward(ids, self.n_past)
        check_finite(logits, self.n_past + len(ids) - 1)  # before the cache counts these tokens
        self.tokens.extend(ids)
        return logits

    def embed(self, ids: list[int]) -> np.ndarray:
        """Sentence embedding: the mean over positions of the final-norm hidden states,
        L2-normalised (llama.cpp's mean pooling). Uses the KV cache from position 0."""
        if not ids:
            raise ModelError("nothing to embed")
        self.reset()
        hidden = self.model.hidden(ids, 0)
        check_finite(hidden, 0, "hidden states")
        mean = hidden.mean(axis=0, dtype=np.float64)
        norm = float(np.linalg.norm(mean))
        return (mean / norm if norm > 0 else mean).astype(np.float32)

    def prefill(self, ids: list[int]) -> tuple[np.ndarray, int]:
        """Makes the cache hold exactly ids, reusing the longest common prefix.

        Returns the last position's logits and how many tokens came from the cache.
        """
        if not ids:
            raise ModelError("empty prompt")
        common = 0
        for a, b in zip(self.tokens, ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # at least one token runs, for its logits
        del self.tokens[common:]
        self.last_reused = common
        return self.eval(ids[common:]), common

    # -- generation -----------------------------------------------------------

    def generate_step(self, prompt: list[int], params: SamplingParams) -> Iterator[int]:
        """Yields sampled token ids, the first after the prompt, until the caller stops: at the
        latest when the context is full (StopChecker), as the next one could not run."""
        sampler = make_sampler(temp=params.temp, top_k=params.top_k, top_p=params.top_p, min_p=params.min_p,
                               seed=params.seed)
        processors = make_logits_processors(repeat_penalty=params.repeat_penalty,
                                            repeat_last_n=params.repeat_last_n,
                                            presence_penalty=params.presence_penalty,
                                            frequency_penalty=params.frequency_penalty)
        logits, _ = self.prefill(prompt)
        while True:
            for proc in processors:  # the history is the prompt and what was generated, as in llama.cpp
                logits = proc(self.tokens, logits)
            tok = int(sampler(logits))
            yield tok
            logits = self.eval([tok])

    def stream_generate(self, prompt: str | list[int], max_tokens: int = -1, stop: list[str] | None = None,
                        params: SamplingParams | None = None, parse_special: bool = True) -> Iterator[Chunk]:
        """Yields text pieces; the last chunk carries finish_reason and the timings."""
        params = params or SamplingParams()
        ids = self.tokenize(prompt, add_special=True, parse_special=parse_special) if isinstance(prompt, str) \
            else list(prompt)
        if len(ids) >= self.n_ctx:
            raise ModelError(f"the prompt has {len(ids)} tokens; the context holds {self.n_ctx}")
        stats = Stats()
        decoder = self.tokenizer.decoder()
        stopper = StopChecker(stop or [], max_tokens, is_eog=self.tokenizer.is_eog, n_ctx=self.n_ctx)
        t0 = t1 = time.perf_counter()
        tok = None
        for i, tok in enumerate(self.generate_step(ids, params)):
            if i == 0:  # the first token closes prompt processing
                t1 = time.perf_counter()
                stats.cached_tokens = self.last_reused
                stats.prompt_tokens = len(ids) - self.last_reused
                stats.prompt_seconds = t1 - t0
            stats.generated_tokens = i + 1
            stats.generation_seconds = time.perf_counter() - t1
            text = stopper.push(tok, decoder.feed, n_past=self.n_past)
            if text:
                yield Chunk(text, tok, None, stats)
            if stopper.done:
                break
        # text held back (a possible stop-string start, an unfinished character) ends the output,
        # unless a stop string was found
        tail = stopper.flush(decoder.flush())
        yield Chunk(tail, tok, stopper.finish_reason, stats, stopper.stop_string)

    def chat_prompt(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of a conversation rendered with the model's chat template (one BOS)."""
        add_bos = self.tokenizer.add_bos
        text = self.template.prompt(messages, add_bos=add_bos, add_generation_prompt=add_generation_prompt)
        return self.tokenize(text, add_special=True, parse_special=True)

    def stream_chat(self, messages: list[dict[str, str]], max_tokens: int = -1, stop: list[str] | None = None,
                    params: SamplingParams | None = None) -> Iterator[Chunk]:
        """The assistant's reply to a conversation, streamed; the KV cache keeps the shared prefix."""
        return self.stream_generate(self.chat_prompt(messages), max_tokens=max_tokens, stop=stop, params=params)

    def generate(self, prompt: str | list[int], max_tokens: int = -1, stop: list[str] | None = None,
                 **sampling: object) -> Iterator[str]:
        """Streams the generated text, piece by piece."""
        params = SamplingParams(**sampling)  # type: ignore[arg-type]
        for chunk in self.stream_generate(prompt, max_tokens=max_tokens, stop=stop, params=params):
            if chunk.text:
                yield chunk.text

    def close(self) -> None:
        self.gguf.close()
