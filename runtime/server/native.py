"""llama.cpp server's native routes, which local tools call: POST /completion, POST /infill,
POST /apply-template, GET /slots.

/completion takes llama.cpp's body: `prompt` (a string, token ids, or a mix: only a string first
gets BOS), `n_predict` (or `max_tokens`; -1: until the end; 0: the prompt read into the cache,
nothing generated), `stop`, the sampling fields
(`temperature`, `top_k`, `top_p`, `min_p`, `repeat_penalty`, `repeat_last_n`, `presence_penalty`,
`frequency_penalty`, `seed`), `logit_bias`, `ignore_eos` (every end-of-generation token biased to
never), `grammar` / `json_schema`, `n_probs` (alias `logprobs`: log-probabilities with that many top
tokens, `completion_probabilities`), `return_tokens`, `stream`, `cache_prompt` (the prompt cache is
always on). A field left out gets the server's default (its command line), as on every route.
Sampler fields this engine does not have (`typical_p`, `mirostat`, `dry_multiplier`, ...) are
refused with a 400 unless neutral, here and on the OpenAI routes, which take `n_predict` (over
`max_tokens`) and `ignore_eos` too, as llama.cpp's do. The answer: `content`, `tokens`, `stop`, `stop_type`
("eos", "word", "limit"), `stopping_word`, `generation_settings`, `timings`, `truncated` (true when
--context-shift dropped part of the context on the way, as llama.cpp's; a prompt longer than the
context is refused, not cut), `tokens_cached`, `tokens_evaluated`,
`tokens_predicted`, `prompt`, `id_slot`. Streamed, as llama.cpp streams it: `data: {...}` events
with `content` and `stop: false`, then one with `stop: true` and the rest of the fields, no [DONE].

/infill builds the fill-in-the-middle prompt as llama.cpp's server does (its order and budgets:
repository and file-separator tokens where the model has them, `input_extra` chunks, then
`[FIM_PRE] input_prefix prompt [FIM_SUF] input_suffix [FIM_MID]`) and completes it like /completion;
a model without FIM tokens gets a 400.
"""
from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime.chat_template import ChatTemplateError
from runtime.decoding import Chunk
from runtime.engine import Engine
from runtime.sampling import SamplingParams
from runtime.server.errors import APIError, bad_request
from runtime.server.generation import (
    ClientGone, Generation, check_prompt, collect, engine_error, prompt_ids, start, timings,
)
from runtime.server.logprobs import LogprobFormat
from runtime.server.params import (
    SAMPLERS, Defaults, Fields, RouteGroup, grammar_constraint, ignore_eos, names_output_format, prompt_options,
    read_json, refuse_unsupported, sampling_params, template_kwargs, top_logprobs_count, with_bias,
)
from runtime.server.jobs import Job
from runtime.server.sse import EventStream
from runtime.tokenizer import TokenizerError

N_BATCH = 2048  # llama.cpp's default --batch-size, which sets /infill's prefix and suffix budgets


def generation_settings(params: SamplingParams, n_predict: int, stop: list[str], **extra: Any) -> dict[str, Any]:
    """llama.cpp's `generation_settings` (and /props' `default_generation_settings.params`)."""
    return {"n_predict": n_predict, "max_tokens": n_predict, "temperature": params.temp, "top_k": params.top_k,
            "top_p": params.top_p, "min_p": params.min_p, "repeat_penalty": params.repeat_penalty,
            "repeat_last_n": params.repeat_last_n, "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty, "seed": -1 if params.seed is None else params.seed,
            "stop": list(stop), "logit_bias": [{"token": t, "bias": b if math.isfinite(b) else False}
                                               for t, b in params.logit_bias],
            "samplers": SAMPLERS, **extra}


def _mixed_prompt(engine: Engine, p: list[Any]) -> list[int]:
    """llama.cpp's mixed prompt: token ids and texts in order; only a text in first place gets BOS."""
    n_vocab = engine.model.config.n_vocab
    out: list[int] = []
    for i, item in enumerate(p):
        if isinstance(item, str):
            out += engine.tokenize(item, add_special=i == 0, parse_special=True)
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < n_vocab:
            out.append(item)
        else:
            raise bad_request(f"'prompt[{i}]' must be a token id (0..{n_vocab - 1}) or a string", param="prompt")
    return out


def completion_prompt(engine: Engine, f: Fields) -> list[int]:
    p = f.raw("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], (str, list)):
        p = p[0]  # one prompt in an array
    if isinstance(p, str):
        return prompt_ids(engine, p)
    if isinstance(p, list) and p and any(isinstance(x, int) for x in p):
        return _mixed_prompt(engine, p)
    if isinstance(p, list) and len(p) > 1:
        raise bad_request("'prompt' must be one prompt: this server completes one prompt per request", param="prompt")
    raise bad_request("'prompt' must be a string, an array of token ids, or a mix of both", param="prompt")


class CompletionRequest:
    """A /completion (or /infill) body, checked; built on the text thread (it tokenizes)."""

    def __init__(self, engine: Engine, f: Fields, defaults: Defaults, ids: list[int] | None = None) -> None:
        self.ids = completion_prompt(engine, f) if ids is None else ids
        key = next((k for k in ("n_predict", "max_completion_tokens", "max_tokens") if f.raw(k) is not None),
                   "n_predict")
        self.n_predict = f.integer(key, defaults.max_tokens_or(-1), lo=-1)  # 0: the prompt into the cache only
        refuse_unsupported(f)
        self.stop = defaults.stop_for(f)
        self.ignore_eos = ignore_eos(f, defaults)
        self.params = with_bias(engine, f, sampling_params(f, defaults=defaults), defaults)
        self.constraint = grammar_constraint(f, defaults)
        self.grammar = f.raw("grammar") if isinstance(f.raw("grammar"), str) else \
            (defaults.grammar or "") if not names_output_format(f) else ""
        key = "n_probs" if f.raw("n_probs") is not None else "logprobs"
        self.n_probs = top_logprobs_count(f, key) or 0
        self.stream = bool(f.boolean("stream", False))
        self.return_tokens = bool(f.boolean("return_tokens", False))
        f.boolean("cache_prompt", True)  # checked; the prompt cache is always on
        check_prompt(engine, self.ids, param="prompt")

    def generation(self) -> Generation:
        return Generation(self.ids, self.n_predict, self.stop, self.params, constraint=self.constraint,
                          logprobs=self.n_probs or None)

    def settings(self) -> dict[str, Any]:
        return generation_settings(self.params, self.n_predict, self.stop, n_probs=self.n_probs,
                                   ignore_eos=self.ignore_eos, stream=self.stream, grammar=self.grammar)


def infill_ids(engine: Engine, f: Fields, n_predict: int) -> list[int]:
    """The fill-in-the-middle prompt, laid out as llama.cpp's server lays it out (format_prompt_infill):
    [extra context] [BOS] FIM_PRE prefix prompt FIM_SUF suffix FIM_MID, where the extra context is
    FIM_REP "myproject\\n", each input_extra chunk as FIM_SEP "filename\\n" text (or a "--- snippet ---"
    line without FIM_SEP), then FIM_SEP "filename\\n"; the prefix keeps its last 3/4 of a batch, the
    suffix its first 1/4 less the prompt, the extra context what the context has left."""
    tok = engine.tokenizer
    fim = tok.fim_ids
    missing = [name for key, name in (("pre", "prefix"), ("suf", "suffix"), ("mid", "middle")) if fim[key] is None]
    if missing:
        raise bad_request(f"this model cannot fill in the middle: it has no FIM {', '.join(missing)} token "
                          "(tokenizer.ggml.fim_pre_token_id / fim_suf / fim_mid, or <|fim_prefix|>...)")

    def text_ids(text: str) -> list[int]:
        return engine.tokenize(text, add_special=False, parse_special=False)

    prefix, suffix = text_ids(f.string("input_prefix")), text_ids(f.string("input_suffix"))
    prompt = engine.tokenize(f.string("prompt", ""), add_special=False, parse_special=True)
    extra: list[int] = []
    if fim["rep"] is not None:
        extra += [fim["rep"]] + text_ids("myproject\n")
    chunks = f.raw("input_extra") or []
    if not isinstance(chunks, list):
        raise bad_request("'input_extra' must be an array of {filename, text} objects", param="input_extra")
    for i, c in enumerate(chunks):
        if not isinstance(c, dict) or not isinstance(c.get("text"), str) \
                or not isinstance(c.get("filename", ""), str):
            raise bad_request(f"'input_extra[{i}]' must be an object with a string 'text' (and 'filename')",
                              param="input_extra")
        if fim["sep"] is not None:
            extra += [fim["sep"]] + text_ids(c.get("filename", "tmp") + "\n")
        else:
            extra += text_ids("\n\n--- snippet ---\n\n")
        extra += text_ids(c["text"])
    if fim["sep"] is not None:
        extra += [fim["sep"]] + text_ids("filename\n")
    n_prefix = min(len(prefix), 3 * (N_BATCH // 4))
    n_suffix = min(len(suffix), max(0, N_BATCH // 4 - (2 + len(prompt))))
    n_extra = min(max(0, engine.n_ctx - N_BATCH - 2 * n_predict), len(extra))
    head = [fim["pre"]] + prefix[len(prefix) - n_prefix:] + prompt
    if tok.add_bos and tok.bos_id is not None:
        head = [tok.bos_id] + head
    return extra[len(extra) - n_extra:] + head + [fim["suf"]] + suffix[:n_suffix] + [fim["mid"]]


def _stop_type(last: Chunk) -> str:
    if last.stop_string is not None:
        return "word"
    return {"stop": "eos", "length": "limit"}.get(last.finish_reason or "", "none")


class NativeRoutes(RouteGroup):
    def __init__(self, engine: Engine, scheduler: Any, model_id: str, defaults: Defaults | None = None) -> None:
        super().__init__(engine, scheduler, model_id, defaults)
        self.fmt = LogprobFormat(engine.tokenizer)

    def routes(self) -> list[Route]:
        return [
            Route("/completion", self.completion, methods=["POST"]),
            Route("/infill", self.infill, methods=["POST"]),
            Route("/apply-template", self.apply_template, methods=["POST"]),
            Route("/slots", self.slots, methods=["GET"]),
        ]

    # -- /completion, /infill ---------------------------------------------------

    async def completion(self, request: Request) -> Response:
        f = Fields(await read_json(request))
        req = await self.scheduler.off_loop(CompletionRequest, self.engine, f, self.defaults)
        return await self._answer(request, req)

    async def infill(self, request: Request) -> Response:
        f = Fields(await read_json(request))

        def make() -> CompletionRequest:
            ids = infill_ids(self.engine, f, self.defaults.max_tokens_or(-1))
            return CompletionRequest(self.engine, f, self.defaults, ids=ids)

        return await self._answer(request, await self.scheduler.off_loop(make))

    async def _answer(self, request: Request, req: CompletionRequest) -> Response:
        job = start(self.scheduler, req.generation())
        if req.stream:
            return EventStream(self._events(job, req))
        try:
            chunks: list[Chunk] = await collect(job, request)
        except ClientGone:
            raise APIError(499, "the client closed the connection") from None
        except (APIError, TokenizerError):
            raise
        except Exception as e:
            raise engine_error(e) from None
        content = "".join(c.text for c in chunks)

        def answer() -> dict[str, Any]:
            body = self._final(job, req, chunks[-1], content, [t for c in chunks for t in c.tokens])
            if req.n_probs:
                body["completion_probabilities"] = self.fmt.llama([e for c in chunks for e in c.logprobs or []])
            return body

        # every token's top alternatives (n_probs): formatted on the text thread
        return await self.answer(answer, heavy=bool(req.n_probs))

    def _partial(self, job: Job, req: CompletionRequest, chunk: Chunk) -> dict[str, Any]:
        out = {"index": 0, "content": chunk.text, "tokens": chunk.tokens,  # a stream always has them
               "stop": False, "id_slot": job.slot, "tokens_predicted": chunk.stats.generated_tokens,
               "tokens_evaluated": len(req.ids)}
        if req.n_probs:
            out["completion_probabilities"] = self.fmt.llama(chunk.logprobs or [])
        return out

    def _final(self, job: Job, req: CompletionRequest, last: Chunk, content: str, tokens: list[int]) -> dict[str, Any]:
        stats = last.stats
        return {
            "index": 0, "content": content, "tokens": tokens if req.return_tokens else [], "id_slot": job.slot,
            "stop": True, "model": self.model_id, "tokens_predicted": stats.generated_tokens,
            "tokens_evaluated": len(req.ids), "generation_settings": req.settings(),
            "prompt": self.engine.detokenize(req.ids, special=True), "has_new_line": "\n" in content,
            "truncated": stats.truncated, "stop_type": _stop_type(last), "stopping_word": last.stop_string or "",
            # what the slot's cache holds: the prompt and every generated token but the last (never run)
            "tokens_cached": len(req.ids) + max(0, stats.generated_tokens - 1),
            "timings": timings(stats),
        }

    async def _events(self, job: Job, req: CompletionRequest) -> AsyncIterator[str]:
        try:
            async for chunk in job:
                if chunk.text or chunk.tokens:
                    yield json.dumps(self._partial(job, req, chunk))
                if chunk.finish_reason is not None:
                    yield json.dumps(self._final(job, req, chunk, "", []))
        except Exception as e:  # after the headers went out, the error travels as an event
            yield json.dumps(engine_error(e).body())
        finally:
            job.cancel()

    # -- /apply-template ----------------------------------------------------------

    async def apply_template(self, request: Request) -> Response:
        """{messages, add_generation_prompt?, continue_final_message?} -> {prompt}: the text the chat
        routes would complete."""
        from runtime.server.openai import _messages  # the chat route's reading of messages
        from runtime.server.tools import tool_plan  # and of tools and tool calls in the history
        f = Fields(await read_json(request))
        messages = _messages(f)
        options = prompt_options(f, messages)
        kwargs = template_kwargs(f, self.defaults)
        tools = tool_plan(f, self.engine.template, messages, constrained=False)
        add_bos, template = self.engine.tokenizer.add_bos, self.engine.template
        try:
            if tools:  # as the chat route: the plan renders the tools and the calls and results
                text = await self.scheduler.off_loop(lambda: tools.prompt(template, add_bos, **kwargs))
            else:
                text = await self.scheduler.off_loop(lambda: template.prompt(messages, add_bos, **options, **kwargs))
        except ChatTemplateError as e:
            raise bad_request(f"the model's chat template failed: {e}", param="messages") from None
        return await self.answer(lambda: {"prompt": text})  # (megabytes of messages: in steps)

    # -- /slots ---------------------------------------------------------------------

    async def slots(self, request: Request) -> Response:
        d = self.defaults
        out = []
        for info, (gen, n_decoded) in zip(self.scheduler.slot_info(), self.scheduler.slot_work()):
            if gen is not None:
                params, n_predict, stop = gen.params, gen.max_tokens, gen.stop
            else:
                params, n_predict, stop = d.sampling, d.max_tokens_or(-1), list(d.stop)
            busy = gen is not None
            out.append({
                "id": info["id"], "n_ctx": info["n_ctx"], "speculative": False, "is_processing": info["is_processing"],
                "n_cached": info["n_cached"], "params": generation_settings(params, n_predict, stop),
                "next_token": [{"has_next_token": busy, "has_new_line": False, "n_decoded": n_decoded,
                                "n_remain": -1 if n_predict < 0 or not busy else max(0, n_predict - n_decoded)}],
            })
        return JSONResponse(out)
