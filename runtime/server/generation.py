"""What the API routes share: a generation request as the engine sees it, its job, prompt checks,
llama.cpp-style timings, and waiting for the output while watching for the client leaving."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Callable, Optional

from starlette.requests import Request

from runtime.constraint import Constraint
from runtime.decoding import Decoding
from runtime.engine import Chunk, Engine, Stats
from runtime.sampling import LLAMA_DEFAULT_SEED, SamplingParams
from runtime.server.errors import APIError, bad_request
from runtime.server.jobs import Job
from runtime.server.scheduler import Scheduler
from runtime.tokenizer import Tokenizer


ConstraintFactory = Callable[[Tokenizer], Constraint]


@dataclass
class Generation:
    """A generation request. `constraint` makes the request's Constraint (runtime/constraint.py:
    a grammar, a JSON Schema) from the engine's tokenizer, on the worker: a constraint holds
    per-request state."""
    ids: list[int]                 # the whole prompt, BOS included
    max_tokens: int = -1           # -1: until end of generation or a full context
    stop: list[str] = field(default_factory=list)
    params: SamplingParams = field(default_factory=SamplingParams)
    constraint: Optional[ConstraintFactory] = None
    n: int = 1                     # choices (OpenAI's `n`): sequences sharing the prompt's cache
    logprobs: Optional[int] = None  # report log-probabilities with this many top tokens (Decoding.logprobs)
    keep_stop: bool = False        # the text ends with the stop string that ended it (TGI)

    def decoding(self, engine: Engine, choice: int = 0) -> Decoding:
        """The generation state (sampler, processors, constraint, stop checks, text) of one of this
        request's choices; choice i > 0 draws with seed + i when the request has a seed."""
        constraint = self.constraint(engine.tokenizer) if self.constraint is not None else None
        params = self.params
        if choice and params.seed is not None and params.seed not in (-1, LLAMA_DEFAULT_SEED):  # a fixed seed
            params = replace(params, seed=(params.seed + choice) % LLAMA_DEFAULT_SEED)
        state = engine.decoding(self.ids, self.max_tokens, self.stop, params, constraint, keep_stop=self.keep_stop)
        state.logprobs = self.logprobs
        return state

    def run(self, engine: Engine) -> Iterator[Chunk]:
        """The single-sequence path: the engine's own loop over this request's state."""
        return engine.stream_decoding(self.decoding(engine))


@lru_cache(maxsize=8)
def _longest_piece(tokenizer: Tokenizer, n_vocab: int) -> int:
    """Bytes of the longest token text: no token covers more of a prompt."""
    return max((len(tokenizer.token_to_piece(t, True)) for t in range(n_vocab)), default=1) or 1


def prompt_ids(engine: Engine, text: str, param: str = "prompt") -> list[int]:
    """`text` tokenized as a prompt (BOS as the model says, special tokens parsed), refusing at once
    a text too long for the context even if every token were the vocabulary's longest: tokenizing
    megabytes takes seconds, and would only end in the same refusal. Run it off the event loop."""
    n_bytes = len(text.encode("utf-8", "surrogatepass"))
    longest = _longest_piece(engine.tokenizer, engine.model.config.n_vocab)
    if n_bytes > longest * engine.n_ctx:
        raise bad_request(f"the prompt has {n_bytes} bytes, more than {engine.n_ctx} tokens of this model "
                          f"hold (at most {longest} bytes each); this server's context holds {engine.n_ctx} "
                          "tokens", param=param, code="context_length_exceeded")
    return engine.tokenize(text, add_special=True, parse_special=True)


def check_prompt(engine: Engine, ids: list[int], param: str = "messages") -> None:
    if not ids:
        raise bad_request("the prompt is empty", param=param)
    if len(ids) >= engine.n_ctx:
        raise bad_request(f"the prompt has {len(ids)} tokens; this server's context holds {engine.n_ctx} "
                          "(prompt and reply together)", param=param, code="context_length_exceeded")


def start(scheduler: Scheduler, gen: Generation) -> Job:
    """The generation as a job, batched with the others by the scheduler's worker."""
    return scheduler.submit(Job(gen.run, gen.ids, generation=gen))


def timings(stats: Stats) -> dict[str, Any]:
    """llama.cpp server's `timings` object."""
    p_ms, g_ms = stats.prompt_seconds * 1000, stats.generation_seconds * 1000
    return {
        "cache_n": stats.cached_tokens,
        "prompt_n": stats.prompt_tokens,
        "prompt_ms": p_ms,
        "prompt_per_token_ms": p_ms / stats.prompt_tokens if stats.prompt_tokens else 0.0,
        "prompt_per_second": stats.prompt_tps,
        "predicted_n": stats.generated_tokens,
        "predicted_ms": g_ms,
        "predicted_per_token_ms": g_ms / stats.generated_tokens if stats.generated_tokens else 0.0,
        "predicted_per_second": stats.generation_tps,
        **({"draft_n": stats.draft_tokens, "draft_n_accepted": stats.draft_accepted} if stats.draft_tokens else {}),
    }


def usage(n_prompt: int, stats: Stats) -> dict[str, Any]:
    return {"prompt_tokens": n_prompt, "completion_tokens": stats.generated_tokens,
            "total_tokens": n_prompt + stats.generated_tokens,
            "prompt_tokens_details": {"cached_tokens": stats.cached_tokens},
            # speculative decoding's drafts, as OpenAI reports predicted outputs
            "completion_tokens_details": {"accepted_prediction_tokens": stats.draft_accepted,
                                          "rejected_prediction_tokens": stats.draft_tokens - stats.draft_accepted}}


class ClientGone(Exception):
    """The client disconnected before the response was ready."""


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def collect(job: Job, request: Request) -> list[Any]:
    """Every item of the job; cancels it (within one token) if the client disconnects first."""

    async def consume() -> list[Any]:
        return [item async for item in job]

    consumer = asyncio.ensure_future(consume())
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({consumer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if consumer in done:
            return consumer.result()
        raise ClientGone()
    finally:
        job.cancel()
        watcher.cancel()
        consumer.cancel()


def engine_error(exc: Exception) -> APIError:
    """An error raised by the engine during a job, for the client."""
    if isinstance(exc, APIError):
        return exc
    return APIError(500, f"generation failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
