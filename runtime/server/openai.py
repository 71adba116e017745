"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models, /v1/embeddings.

Fields absent from a request get the server's defaults, as in llama.cpp's server: its command
line's (-n, --temp, --seed, -r...), else llama.cpp's (temperature 0.8, top_k 40, top_p 0.95,
min_p 0.05; no token limit for a chat, 16 tokens for a completion, as OpenAI has it).
llama.cpp's extra fields (top_k, min_p, repeat_penalty, repeat_last_n) are accepted too. The last
streamed chunk and every plain response carry llama.cpp's `timings` object (prompt and generation
speed). `logprobs` (chat: with `top_logprobs` up to 20; completions: `logprobs: k`) come in OpenAI's
shapes (server/logprobs.py), plain and streamed; `logit_bias` changes sampling, not the reported
logprobs (as OpenAI and llama.cpp). A chat whose last message is the assistant's is continued
(llama.cpp's prefill; `continue_final_message`, `add_generation_prompt` honoured: params.py).
"""
from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime.chat_template import ChatTemplateError
from runtime.engine import Chunk, Engine
from runtime.reasoning import Thinking, opens_thinking, thinks
from runtime.server.errors import APIError, bad_request
from runtime.server.generation import (
    ClientGone, Generation, check_prompt, collect, engine_error, prompt_ids, start, timings, usage,
)
from runtime.server.logprobs import LogprobFormat, by_choice
from runtime.server.params import (
    Defaults, Fields, RouteGroup, chat_logprobs, grammar_constraint, prompt_options, read_json, reasoning_format,
    refuse_unsupported, sampling_params, template_kwargs, top_logprobs_count, with_bias,
)
from runtime.server.jobs import Job
from runtime.server.sse import EventStream
from runtime.server.tools import ToolPlan, refuse_functions, tool_plan
from runtime.tokenizer import TokenizerError

ROLES = ("system", "developer", "user", "assistant", "tool")


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def _messages(f: Fields) -> list[dict[str, str]]:
    raw = f.raw("messages")
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty array of {role, content} objects", param="messages")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"'{where}' must be an object", param=where)
        role = m.get("role")
        if role not in ROLES:
            raise bad_request(f"'{where}.role' must be one of {', '.join(ROLES)}", param=f"{where}.role")
        content = m.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):  # content parts: only text
            texts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise bad_request(f"'{where}.content[{j}]': only text content parts are supported",
                                      param=f"{where}.content")
                texts.append(part["text"])
            content = "\n".join(texts)
        elif not isinstance(content, str):
            raise bad_request(f"'{where}.content' must be a string or an array of text parts",
                              param=f"{where}.content")
        message = {"role": "system" if role == "developer" else role, "content": content}
        if role == "assistant" and isinstance(m.get("reasoning_content"), str):  # its thinking, for
            message["reasoning_content"] = m["reasoning_content"]  # templates that show it (Qwen 3's)
        out.append(message)
    return out


def _unsupported(f: Fields, *keys: str) -> None:
    for key in keys:
        v = f.raw(key)
        if not (v is None or v is False or v == [] or v == {} or (type(v) is int and v == 0)):
            raise bad_request(f"'{key}' is not supported by this server", param=key)


def _common(f: Fields, default_max: int, defaults: Defaults, slots: int) -> tuple[int, list[str], Any, bool, int]:
    # llama.cpp's n_predict wins here too, as its server reads its own fields on these routes
    key = next((k for k in ("n_predict", "max_completion_tokens", "max_tokens") if f.raw(k) is not None),
               "max_tokens")
    max_tokens = f.integer(key, defaults.max_tokens_or(default_max), lo=-1)
    if max_tokens == 0:
        raise bad_request(f"'{key}' must be at least 1 (or -1: until the end of generation)", param=key)
    n = f.integer("n", 1)
    if not 1 <= n <= slots:
        raise bad_request(f"'n' must be between 1 and {slots}: each choice takes one of the server's "
                          f"{slots} slot{'s' if slots > 1 else ''} (--parallel)", param="n")
    stop = defaults.stop_for(f)
    refuse_unsupported(f)
    params = sampling_params(f, defaults=defaults)
    stream = f.boolean("stream", False)
    return max_tokens, stop, params, stream, n


def _by_choice(chunks: list[Chunk], n: int) -> list[tuple[str, Chunk]]:
    """Each choice's text and last chunk, in choice order."""
    texts: list[list[str]] = [[] for _ in range(n)]
    last: list[Any] = [None] * n
    for c in chunks:
        texts[c.index].append(c.text)
        if c.finish_reason is not None or last[c.index] is None:
            last[c.index] = c
    return [("".join(t), c) for t, c in zip(texts, last)]


def _include_usage(f: Fields) -> bool:
    """stream_options.include_usage: a last event with no choices and the usage of all of them."""
    opts = f.obj("stream_options")
    return bool(opts.boolean("include_usage", False)) if opts else False


def _usage_event(head: dict[str, Any], obj: str, n_prompt: int, finals: list[Chunk]) -> str:
    return json.dumps({**head, "object": obj, "choices": [], "usage": _usage(n_prompt, finals)})


def _usage(n_prompt: int, finals: list[Chunk]) -> dict[str, Any]:
    """The usage of every choice together (one prompt, all their tokens; the prompt's cached part as
    the first choice, which read it, found it)."""
    out = usage(n_prompt, min(finals, key=lambda c: c.index).stats)
    out["completion_tokens"] = sum(c.stats.generated_tokens for c in finals)
    out["total_tokens"] = n_prompt + out["completion_tokens"]
    return out


class OpenAIRoutes(RouteGroup):
    def __init__(self, engine: Engine, scheduler: Any, model_id: str, defaults: Defaults | None = None) -> None:
        super().__init__(engine, scheduler, model_id, defaults)
        self.created = int(time.time())

    def routes(self) -> list[Route]:
        out = []
        for prefix in ("/v1", ""):
            out += [
                Route(f"{prefix}/chat/completions", self.chat, methods=["POST"]),
                Route(f"{prefix}/completions", self.completions, methods=["POST"]),
                Route(f"{prefix}/models", self.models, methods=["GET"]),
                Route(f"{prefix}/models/{{model_id:path}}", self.model, methods=["GET"]),
                Route(f"{prefix}/embeddings", self.embeddings, methods=["POST"]),
            ]
        return out

    # -- /v1/models --------------------------------------------------------------

    def _model_object(self) -> dict[str, Any]:
        eng = self.engine
        cfg = eng.model.config
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "llamapack",
                "meta": {"n_ctx": eng.n_ctx, "n_ctx_train": cfg.n_ctx_train, "n_vocab": cfg.n_vocab,
                         "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "chat_template": eng.template.name}}

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_object()]})

    async def model(self, request: Request) -> Response:
        """GET /v1/models/{id} (the openai client's models.retrieve): the one model this server runs."""
        model_id = request.path_params["model_id"]
        if model_id != self.model_id:
            raise APIError(404, f"the model {model_id!r} does not exist: this server runs {self.model_id!r}",
                           param="model", code="model_not_found")
        return JSONResponse(self._model_object())

    # -- /v1/chat/completions ----------------------------------------------------

    async def chat(self, request: Request) -> Response:
        f = Fields(await read_json(request))
        messages = _messages(f)
        max_tokens, stop, params, stream, n = _common(f, -1, self.defaults, len(self.scheduler.slots))
        constraint = grammar_constraint(f)
        tools = tool_plan(f, self.engine.template, messages, constraint is not None)
        if tools is not None:
            constraint = tools.constraint() or constraint
        elif constraint is None:  # no output format asked for: the server's (-j, --grammar), if any
            constraint = grammar_constraint(f, self.defaults)
        refuse_functions(f)
        logprobs = chat_logprobs(f)
        params = with_bias(self.engine, f, params, self.defaults)
        options = prompt_options(f, messages)
        kwargs = template_kwargs(f, self.defaults)
        think_format = reasoning_format(f, self.defaults)
        include_usage = _include_usage(f)
        eng = self.engine

        def prompt() -> tuple[str, list[int]]:
            if tools:  # the plan renders its own prompt (tools and tool messages for the template)
                text = tools.prompt(eng.template, eng.tokenizer.add_bos, **kwargs)
            else:
                text = eng.template.prompt(messages, add_bos=eng.tokenizer.add_bos, **options, **kwargs)
            return text, prompt_ids(eng, text, param="messages")

        try:
            text, ids = await self.scheduler.off_loop(prompt)
        except ChatTemplateError as e:
            raise bad_request(f"the model's chat template failed: {e}", param="messages") from None
        check_prompt(self.engine, ids)
        # the reply's thinking apart (runtime/reasoning.py), where the template knows the tags and
        # the reply may think: a JSON schema (response_format, json_schema) or a required tool call
        # rules from the first token and leaves no room for a block, so its output is the content
        # (a GBNF `grammar` may make a block: its output is split); with tools, legacy's content
        # would hide the calls from their parser: the thinking is apart then too
        forced = constraint is not None and (f.raw("grammar") is None if tools is None else
                                             tools.req.forced or not tools.fmt.lazy)
        thinking = None if think_format == "none" or forced or not thinks(eng.template.source) else \
            Thinking(opens_thinking(text), legacy=think_format == "deepseek-legacy" and tools is None)
        job = start(self.scheduler, Generation(ids, max_tokens, stop, params, constraint=constraint, n=n,
                                               logprobs=logprobs))
        head = {"id": _id("chatcmpl"), "created": int(time.time()), "model": self.model_id,
                "system_fingerprint": "llamapack"}
        if stream:
            return EventStream(self._chat_events(job, head, len(ids), include_usage, n, tools, thinking))
        chunks = await self._collect(job, request)
        choices, lps = _by_choice(chunks, n), by_choice(chunks, n)
        fmt = LogprobFormat(self.engine.tokenizer)

        def message(text: str, finish: str | None) -> tuple[dict[str, Any], str | None]:
            thought, text = thinking.split(text) if thinking else (None, text)
            out, finish = tools.message(text, finish) if tools else ({"role": "assistant", "content": text}, finish)
            if thought is not None:
                out["reasoning_content"] = thought
            return out, finish

        messages_out = [message(text, last.finish_reason) for text, last in choices]
        return await self.answer(lambda: {
            **head, "object": "chat.completion",
            "choices": [{"index": i, "message": message,
                         "logprobs": None if logprobs is None else fmt.chat(lps[i]),
                         "finish_reason": finish} for i, (message, finish) in enumerate(messages_out)],
            "usage": _usage(len(ids), [c for _, c in choices]), "timings": timings(choices[0][1].stats),
        }, heavy=logprobs is not None)  # every token's top alternatives: formatted on the text thread

    async def _chat_events(self, job: Job, head: dict[str, Any], n_prompt: int, include_usage: bool,
                           n: int = 1, tools: ToolPlan | None = None,
                           thinking: Thinking | None = None) -> AsyncIterator[str]:
        fmt = LogprobFormat(self.engine.tokenizer)

        def event(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None,
                  **extra: Any) -> str:
            body = {**head, "object": "chat.completion.chunk",
                    "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
                    **extra}
            return json.dumps(body)

        try:
            for i in range(n):
                yield event(i, {"role": "assistant", "content": ""})
            finals: list[Chunk] = []
            shapes = [tools.stream() for _ in range(n)] if tools else None
            splits = [thinking.stream() for _ in range(n)] if thinking else None
            # each choice's logprobs of tokens whose text has not gone out yet (held back by the
            # thinking split or a tool stream): the next event with text carries them, else the last
            unsent: list[list[Any]] = [[] for _ in range(n)]

            def out(index: int, delta: dict[str, Any], wanted: bool) -> str:
                lps, unsent[index] = unsent[index], []
                return event(index, delta, logprobs=fmt.chat(lps) if wanted else None)

            async for chunk in job:
                i, finish, text = chunk.index, chunk.finish_reason, chunk.text
                wanted = chunk.logprobs is not None
                if wanted:
                    unsent[i] += chunk.logprobs
                if splits:  # the thinking goes out as reasoning_content, the rest as below
                    thought, text = splits[i].feed(text)
                    if finish:
                        more_thought, more = splits[i].finish()
                        thought, text = thought + more_thought, text + more
                    if thought:
                        yield out(i, {"reasoning_content": thought}, wanted)
                if shapes:  # tool calls: content and call deltas, the finish reason
                    deltas = shapes[i].feed(text)
                    if finish:
                        more_deltas, finish = shapes[i].finish(finish)
                        deltas += more_deltas
                    for delta in deltas:
                        yield out(i, delta, wanted)
                elif text:
                    yield out(i, {"content": text}, wanted)
                if finish:
                    finals.append(chunk)
                    rest, unsent[i] = unsent[i], []
                    yield event(i, {}, finish, logprobs=fmt.chat(rest) if rest else None,
                                timings=timings(chunk.stats))
            if include_usage and finals:
                yield _usage_event(head, "chat.completion.chunk", n_prompt, finals)
            yield "[DONE]"
        except Exception as e:  # after the headers went out, the error travels as an event
            yield json.dumps(engine_error(e).body())
        finally:
            job.cancel()

    # -- /v1/completions ---------------------------------------------------------

    def _prompt_ids(self, f: Fields) -> tuple[list[int], str | None]:
        p = f.raw("prompt")
        if isinstance(p, list) and len(p) == 1 and isinstance(p[0], (str, list)):
            p = p[0]
        if isinstance(p, str):
            return prompt_ids(self.engine, p), p
        if isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
            n_vocab = self.engine.model.config.n_vocab
            if any(not 0 <= t < n_vocab for t in p):
                raise bad_request(f"'prompt' has a token id outside the vocabulary (0..{n_vocab - 1})",
                                  param="prompt")
            return list(p), None
        if isinstance(p, list) and len(p) > 1:
            raise bad_request("'prompt' must be one prompt: this server completes one prompt per request",
                              param="prompt")
        raise bad_request("'prompt' must be a string or an array of token ids", param="prompt")

    async def completions(self, request: Request) -> Response:
        f = Fields(await read_json(request))
        ids, text = await self.scheduler.off_loop(self._prompt_ids, f)
        max_tokens, stop, params, stream, n = _common(f, 16, self.defaults, len(self.scheduler.slots))
        echo = f.boolean("echo", False)
        constraint = grammar_constraint(f, self.defaults)
        _unsupported(f, "best_of", "suffix")
        logprobs = top_logprobs_count(f, "logprobs")
        if echo and logprobs is not None:
            raise bad_request("'logprobs' with 'echo' is not supported: the prompt's tokens have no "
                              "log-probabilities here", param="logprobs")
        params = with_bias(self.engine, f, params, self.defaults)
        check_prompt(self.engine, ids, param="prompt")
        prefix = (text if text is not None else self.engine.detokenize(ids)) if echo else ""
        job = start(self.scheduler, Generation(ids, max_tokens, stop, params, constraint=constraint, n=n,
                                               logprobs=logprobs))
        head = {"id": _id("cmpl"), "created": int(time.time()), "model": self.model_id,
                "system_fingerprint": "llamapack"}
        if stream:
            return EventStream(self._completion_events(job, head, len(ids), prefix, n, _include_usage(f)))
        chunks = await self._collect(job, request)
        choices, lps = _by_choice(chunks, n), by_choice(chunks, n)
        fmt = LogprobFormat(self.engine.tokenizer)
        return await self.answer(lambda: {
            **head, "object": "text_completion",
            "choices": [{"index": i, "text": prefix + text,
                         "logprobs": None if logprobs is None else fmt.completion(lps[i]),
                         "finish_reason": last.finish_reason} for i, (text, last) in enumerate(choices)],
            "usage": _usage(len(ids), [c for _, c in choices]), "timings": timings(choices[0][1].stats),
        }, heavy=logprobs is not None)

    async def _completion_events(self, job: Job, head: dict[str, Any], n_prompt: int,
                                 prefix: str, n: int = 1, include_usage: bool = False) -> AsyncIterator[str]:
        fmt = LogprobFormat(self.engine.tokenizer)

        def event(index: int, text: str, finish: str | None = None, chunk: Chunk | None = None,
                  **extra: Any) -> str:
            lps = None if chunk is None or chunk.logprobs is None else fmt.completion(chunk.logprobs)
            body = {**head, "object": "text_completion",
                    "choices": [{"index": index, "text": text, "logprobs": lps, "finish_reason": finish}],
                    **extra}
            return json.dumps(body)

        try:
            for i in range(n if prefix else 0):
                yield event(i, prefix)
            finals: list[Chunk] = []
            async for chunk in job:
                if chunk.finish_reason:
                    finals.append(chunk)
                    yield event(chunk.index, chunk.text, chunk.finish_reason, chunk, timings=timings(chunk.stats))
                elif chunk.text:
                    yield event(chunk.index, chunk.text, chunk=chunk)
            if include_usage and finals:
                yield _usage_event(head, "text_completion", n_prompt, finals)
            yield "[DONE]"
        except Exception as e:
            yield json.dumps(engine_error(e).body())
        finally:
            job.cancel()

    # -- /v1/embeddings ----------------------------------------------------------

    def _embedding_inputs(self, f: Fields) -> list[list[int]]:
        raw = f.raw("input")
        if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw)):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise bad_request("'input' must be a string, an array of strings, or token id arrays", param="input")
        out = []
        n_vocab = self.engine.model.config.n_vocab
        for i, item in enumerate(raw):
            if isinstance(item, str):  # (too many bytes for the context: refused before tokenizing)
                ids = prompt_ids(self.engine, item, param="input")
            elif isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool)
                                                         and 0 <= t < n_vocab for t in item):
                ids = list(item)
            else:
                raise bad_request(f"'input[{i}]' must be a string or an array of token ids", param="input")
            if not ids:
                raise bad_request(f"'input[{i}]' is empty", param="input")
            if len(ids) > self.engine.n_ctx:
                raise bad_request(f"'input[{i}]' has {len(ids)} tokens; the context holds {self.engine.n_ctx}",
                                  param="input", code="context_length_exceeded")
            out.append(ids)
        return out

    async def embeddings(self, request: Request) -> Response:
        f = Fields(await read_json(request))
        inputs = await self.scheduler.off_loop(self._embedding_inputs, f)
        fmt = f.string("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise bad_request("'encoding_format' must be float or base64", param="encoding_format")
        if f.raw("dimensions") is not None:
            raise bad_request("'dimensions' is not supported: the model's size is fixed", param="dimensions")

        def work(engine: Engine) -> Any:
            for ids in inputs:
                yield engine.embed(ids)

        job = self.scheduler.submit(Job(work))
        vectors = await self._collect(job, request)
        n = sum(len(ids) for ids in inputs)

        def answer() -> dict[str, Any]:
            data = []
            for i, v in enumerate(vectors):
                v = np.asarray(v, "<f4")  # (n_embd,) float32: Python floats of the same values
                emb: Any = base64.b64encode(v.tobytes()).decode() if fmt == "base64" else v.tolist()
                data.append({"object": "embedding", "index": i, "embedding": emb})
            return {"object": "list", "data": data, "model": self.model_id,
                    "usage": {"prompt_tokens": n, "total_tokens": n}}

        # thousands of vectors: megabytes of JSON, built and written on the text thread
        return await self.answer(answer, heavy=len(vectors) > 1)

    # -- shared ------------------------------------------------------------------

    async def _collect(self, job: Job, request: Request) -> list[Any]:
        try:
            return await collect(job, request)
        except ClientGone:
            raise APIError(499, "the client closed the connection") from None
        except APIError:
            raise
        except TokenizerError as e:
            raise bad_request(str(e)) from None
        except Exception as e:
            raise engine_error(e) from None
