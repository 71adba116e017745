"""Text Generation Inference routes: POST /generate, POST /generate_stream, and POST / (TGI's
compatibility route: `{inputs, parameters, stream}`, where `huggingface_hub.InferenceClient(url)`
sends `text_generation` calls; a plain answer there is a one-element list, as TGI returns).

TGI's semantics are kept: sampling happens when `do_sample` is true or any of temperature,
top_k, top_p, typical_p is set away from neutral, otherwise decoding is greedy; unset sampling
fields are neutral (temperature 1, whole vocabulary, top_p 1, no min_p); `repetition_penalty`
looks at the whole sequence; `max_new_tokens` defaults to 100; finish reasons are `length`,
`eos_token`, `stop_sequence`. What the server's command line set (--temp, --top-k, --seed, -n,
-r...) replaces TGI's neutral defaults for requests that leave it unset: `--temp 0.7` makes such
requests sample at 0.7 unless they say `do_sample: false`. Errors have TGI's shape,
`{"error": "...", "error_type": "validation"}`, which huggingface_hub turns into its
ValidationError.

Tokens are reported as TGI reports them: one entry (`details.tokens`) or event (the stream) per
generated token, with its id, its log-probability (of the model's distribution, as the OpenAI
routes' `logprobs`) and its text: the characters it completes, so a character made of several
tokens comes with the last of them and the others have "" (their texts join to the generated
text). An end-of-generation token ends the list with `special: true`, text "" and logprob null.
A stop sequence that ended the text is part of it, as in TGI's answers (TGI stops only where the
text ends with one after a token; here one inside a token ends the text too, just after it).
`top_n_tokens` is refused.
"""
from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime.decoding import TokenLogprob
from runtime.engine import Chunk, Engine
from runtime.sampling import LLAMA_DEFAULT_SEED, SamplingParams
from runtime.server.errors import APIError, bad_request
from runtime.server.generation import ClientGone, Generation, check_prompt, collect, engine_error, start
from runtime.server.params import Defaults, Fields, RouteGroup, gbnf_constraint, read_json, with_bias
from runtime.server.jobs import Job
from runtime.server.sse import EventStream
from runtime.tokenizer import TokenizerError

DEFAULT_MAX_NEW_TOKENS = 100


def _tgi_error(e: APIError) -> JSONResponse:
    kind = {429: "overloaded", 503: "overloaded", 500: "generation"}.get(e.status, "validation")
    status = 422 if e.status == 400 else e.status
    return JSONResponse({"error": e.message, "error_type": kind}, status_code=status)


def _tgi_errors(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except APIError as e:
            return _tgi_error(e)
        except TokenizerError as e:
            return _tgi_error(bad_request(str(e)))
    return wrapped


def _params(p: Fields, d: Defaults) -> SamplingParams:
    for key, neutral in (("typical_p", 1.0), ("watermark", False), ("top_n_tokens", 0), ("adapter_id", None)):
        v = p.raw(key)
        if v is not None and v != neutral:
            raise bad_request(f"'parameters.{key}' is not supported by this server", param=f"parameters.{key}")
    if p.integer("best_of", 1, lo=1) != 1:
        raise bad_request("'parameters.best_of' must be 1", param="parameters.best_of")
    server = d.sampling

    def given(name: str, value: Any) -> Any:  # the command line's value, if it set one
        return getattr(server, name) if name in d.given else value

    do_sample = p.boolean("do_sample", None)
    temperature = p.number("temperature", given("temp", None), lo=0.0, hi=100.0)
    top_k = p.integer("top_k", given("top_k", None), lo=0)
    top_p = p.number("top_p", given("top_p", None), lo=0.0, hi=1.0)
    sampling = bool(do_sample) or (temperature not in (None, 1.0)) or bool(top_k and top_k > 0) \
        or (top_p is not None and top_p < 1.0)
    if do_sample is False and all(p.raw(k) is None for k in ("temperature", "top_k", "top_p")):
        sampling = False  # the request asked for greedy decoding; only its own fields overrule that
    seed = p.integer("seed", given("seed", None), lo=0, hi=2**64 - 1)
    if sampling and seed is None:  # drawn here, so that details.seed says which, as TGI's does
        seed = secrets.randbits(32) % LLAMA_DEFAULT_SEED
    return SamplingParams(
        temp=(1.0 if temperature is None else temperature) if sampling else 0.0,
        top_k=top_k or 0, top_p=1.0 if top_p is None else top_p, min_p=given("min_p", 0.0),
        repeat_penalty=p.number("repetition_penalty", given("repeat_penalty", 1.0), lo=0.0, hi=100.0),
        repeat_last_n=given("repeat_last_n", -1), presence_penalty=given("presence_penalty", 0.0),
        frequency_penalty=p.number("frequency_penalty", given("frequency_penalty", 0.0), lo=-2.0, hi=2.0),
        seed=seed,
    )


class TGIRequest:
    def __init__(self, engine: Engine, body: dict[str, Any], defaults: Defaults) -> None:
        f = Fields(body)
        self.inputs = f.string("inputs")
        p = f.obj("parameters") or Fields({}, prefix="parameters.")
        self.params = _params(p, defaults)
        self.max_new_tokens = p.integer("max_new_tokens", defaults.max_tokens_or(DEFAULT_MAX_NEW_TOKENS), lo=1)
        self.stop = defaults.stop_for(p)
        self.details = bool(p.boolean("details", False))
        self.prefill_details = bool(p.boolean("decoder_input_details", False))
        self.full_text = bool(p.boolean("return_full_text", False))
        self.stream = bool(f.boolean("stream", False))
        # the request's grammar, else the server's (-j, --grammar); and its --ignore-eos
        own = p.raw("grammar")
        self.constraint = _grammar(own) if own is not None else gbnf_constraint(defaults.grammar)
        self.params = with_bias(engine, Fields({}), self.params, defaults)
        ids = engine.tokenize(self.inputs, add_special=True, parse_special=True)
        truncate = p.integer("truncate", None, lo=1)
        if truncate is not None and len(ids) > truncate:
            ids = ids[-truncate:]
        check_prompt(engine, ids, param="inputs")
        self.ids = ids

    def generation(self, per_token: bool) -> Generation:
        """per_token: the answer lists each token (a stream, or `details`): logprobs 0 gives each
        token's own log-probability and where its text starts (TokenLogprob); without it no step
        pays for a log-softmax over the vocabulary."""
        return Generation(self.ids, self.max_new_tokens, self.stop, self.params, constraint=self.constraint,
                          logprobs=0 if per_token else None, keep_stop=True)


def _grammar(grammar: Any) -> Any:
    """TGI's `parameters.grammar` as a constraint factory: {"type": "json", "value": a JSON Schema}
    (no value: any JSON object) or {"type": "regex", "value": a regular expression}; None if absent."""
    from runtime.grammar import GrammarConstraint
    from runtime.grammar.request import JSON_OBJECT_GBNF, RequestError, tgi_grammar
    if grammar is None:
        return None
    try:
        if isinstance(grammar, dict) and grammar.get("type") == "json" and grammar.get("value") is None:
            gbnf = JSON_OBJECT_GBNF
        else:
            gbnf = tgi_grammar(grammar)
    except RequestError as e:
        raise bad_request(str(e), param=e.param) from None
    return lambda tokenizer: GrammarConstraint(gbnf, tokenizer)


def _finish(engine: Engine, last: Chunk) -> str:
    if last.finish_reason == "length":
        return "length"
    return "eos_token" if last.token is not None and engine.tokenizer.is_eog(last.token) else "stop_sequence"


def _token(lp: TokenLogprob, text: str) -> dict[str, Any]:
    return {"id": lp.token, "text": text, "logprob": lp.logprob, "special": False}


def _eog(engine: Engine, last: Chunk) -> dict[str, Any] | None:
    """The entry of the end-of-generation token that ended the text, if one did."""
    if last.token is None or not engine.tokenizer.is_eog(last.token):
        return None
    return {"id": last.token, "text": "", "logprob": None, "special": True}


def _tokens(chunks: list[Chunk], text: str) -> list[dict[str, Any]]:
    """One entry per token whose text went out: its text is the generated text from its offset to
    the next token's."""
    lps = [lp for c in chunks for lp in c.logprobs or ()]
    ends = [lp.offset for lp in lps[1:]] + [len(text)]
    return [_token(lp, text[lp.offset:end]) for lp, end in zip(lps, ends)]


class TGIRoutes(RouteGroup):

    def routes(self) -> list[Route]:
        return [
            Route("/generate", _tgi_errors(self.generate), methods=["POST"]),
            Route("/generate_stream", _tgi_errors(self.generate_stream), methods=["POST"]),
            Route("/", _tgi_errors(self.compat), methods=["POST"]),
        ]

    async def _request(self, request: Request) -> TGIRequest:
        body = await read_json(request)
        return await self.scheduler.off_loop(TGIRequest, self.engine, body, self.defaults)  # it tokenizes

    async def generate(self, request: Request) -> Response:
        out = await self._generate(request, await self._request(request))
        return await self.answer(lambda: out)  # (every token listed: long, then written in steps)

    async def generate_stream(self, request: Request) -> Response:
        return self._stream(await self._request(request))

    async def compat(self, request: Request) -> Response:
        req = await self._request(request)
        if req.stream:
            return self._stream(req)
        out = await self._generate(request, req)
        return await self.answer(lambda: [out])

    async def _generate(self, request: Request, req: TGIRequest) -> dict[str, Any]:
        job = start(self.scheduler, req.generation(per_token=req.details))
        try:
            chunks: list[Chunk] = await collect(job, request)
        except ClientGone:
            raise APIError(499, "the client closed the connection") from None
        except APIError:
            raise
        except Exception as e:
            raise engine_error(e) from None
        last = chunks[-1]
        text = "".join(c.text for c in chunks)
        out: dict[str, Any] = {"generated_text": (req.inputs + text) if req.full_text else text}
        if req.details:
            eog = _eog(self.engine, last)
            out["details"] = {
                "finish_reason": _finish(self.engine, last), "generated_tokens": last.stats.generated_tokens,
                "seed": req.params.seed, "prefill": self._prefill(req),
                "tokens": _tokens(chunks, text) + ([eog] if eog else []),
            }
        return out

    def _prefill(self, req: TGIRequest) -> list[dict[str, Any]]:
        if not req.prefill_details:
            return []
        return [{"id": t, "text": self.engine.tokenizer.token_to_piece(t, True).decode("utf-8", "replace"),
                 "logprob": None} for t in req.ids]

    def _stream(self, req: TGIRequest) -> EventStream:
        job = start(self.scheduler, req.generation(per_token=True))
        return EventStream(self._events(job, req))

    async def _events(self, job: Job, req: TGIRequest) -> AsyncIterator[str]:
        """An event per token, as TGI streams: a token's event goes out when the next token comes
        (its text runs to where the next one's starts), so the last token's event is the one that
        carries the details and the whole text (with what the engine held back to its end); an
        end-of-generation token has an event of its own after it."""
        text = ""
        held: TokenLogprob | None = None
        index = 0

        def event(token: dict[str, Any], last: Chunk | None = None) -> str:
            out: dict[str, Any] = {"index": index, "token": token, "generated_text": None, "details": None,
                                   "top_tokens": None}
            if last is not None:
                out["generated_text"] = (req.inputs + text) if req.full_text else text
                out["details"] = {"finish_reason": _finish(self.engine, last),
                                  "generated_tokens": last.stats.generated_tokens,
                                  "seed": req.params.seed, "input_length": len(req.ids)}
            return json.dumps(out)

        try:
            async for chunk in job:
                text += chunk.text
                for lp in chunk.logprobs or ():
                    if held is not None:
                        index += 1
                        yield event(_token(held, text[held.offset:lp.offset]))
                    held = lp
                if chunk.finish_reason:
                    eog = _eog(self.engine, chunk)
                    if held is not None:
                        index += 1
                        yield event(_token(held, text[held.offset:]), None if eog else chunk)
                    if eog or held is None:  # (no token at all: the event carries what there is)
                        index += 1
                        yield event(eog or {"id": 0, "text": text, "logprob": None, "special": False}, chunk)
                    return
        except Exception as e:
            err = engine_error(e)
            yield json.dumps({"error": err.message, "error_type": "generation"})
        finally:
            job.cancel()
