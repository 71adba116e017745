"""Request bodies: JSON parsing and typed field access with OpenAI-shaped errors.

No schema library: a request is a dict, and `Fields` reads one field at a time with
its type and range checked, naming the field in the error (`param`), as OpenAI does.
"""
from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from runtime.sampling import SamplingParams
from runtime.server import jsonout
from runtime.server.errors import APIError, bad_request, shutting_down

if TYPE_CHECKING:
    from runtime.engine import Engine

_MISSING = object()


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400; a 499 when the client leaves before its body
    is in, and a 503 when the server stops meanwhile."""
    try:
        raw = await _body(request)
    except ClientDisconnect:
        raise APIError(499, "the client closed the connection") from None
    if not raw.strip():
        raise bad_request("the request body is empty; expected a JSON object")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise bad_request(f"the request body is not UTF-8: {e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise bad_request(f"the request body is not valid JSON: {e}") from None
    except RecursionError:  # json's C parser counts nesting against the recursion limit
        raise bad_request("the request body nests JSON arrays or objects too deeply") from None
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object, not {_kind(data)}")
    if _SURROGATE_ESCAPE.search(text):
        data = _without_lone_surrogates(data)
    return data


async def _body(request: Request) -> bytes:
    """The request's body, or the scheduler's 503 as soon as the server stops: a body still
    arriving then was left for uvicorn to cancel seconds later, a 500 and a traceback."""
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is None:
        return await request.body()
    if scheduler.closed:
        raise shutting_down()
    stopped: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    body = asyncio.ensure_future(request.body())
    scheduler.stopping.add(stopped)
    try:
        await asyncio.wait((body, stopped), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request's task is cancelled: so is its read
        body.cancel()
        raise
    finally:
        scheduler.stopping.discard(stopped)
    if body.done():
        if stopped.done():
            stopped.exception()  # (retrieved: the body came first)
        return body.result()
    body.cancel()
    raise stopped.exception()  # type: ignore[misc]


# A JSON escape of a UTF-16 surrogate: json.loads joins a pair into one character and keeps a lone
# one (JavaScript's JSON.stringify writes one for a string cut inside an emoji), which no UTF-8
# text can hold: the reply's encoding failed after the work was done
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(value: Any) -> Any:
    """value with every lone surrogate in its strings (keys too) made U+FFFD, as the tokenizer
    reads one."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float) and not math.isfinite(value):  # NaN, Infinity, 1e400: JSON extensions
        return str(value).replace("inf", "infinity")
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


class Fields:
    """Typed access to the fields of one JSON object; `prefix` names nested objects in errors."""

    def __init__(self, data: dict[str, Any], prefix: str = "") -> None:
        self.data = data
        self.prefix = prefix

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def raw(self, key: str) -> Any:
        """The value, None when absent or null."""
        return self.data.get(key)

    def _fail(self, key: str, expected: str, value: Any) -> APIError:
        return bad_request(f"'{self._name(key)}' must be {expected}, not {_kind(value)}", param=self._name(key))

    def number(self, key: str, default: Any = None, lo: float | None = None, hi: float | None = None) -> Any:
        v = self.data.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self._fail(key, "a number", v)
        self._range(key, v, lo, hi)
        return float(v)

    def integer(self, key: str, default: Any = None, lo: int | None = None, hi: int | None = None) -> Any:
        v = self.data.get(key)
        if v is None:
            return default
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._fail(key, "an integer", v)
        self._range(key, v, lo, hi)
        return v

    def boolean(self, key: str, default: Any = None) -> Any:
        v = self.data.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self._fail(key, "a boolean", v)
        return v

    def string(self, key: str, default: Any = _MISSING) -> Any:
        v = self.data.get(key)
        if v is None:
            if default is _MISSING:
                raise bad_request(f"'{self._name(key)}' is required", param=self._name(key))
            return default
        if not isinstance(v, str):
            raise self._fail(key, "a string", v)
        return v

    def obj(self, key: str) -> Fields | None:
        v = self.data.get(key)
        if v is None:
            return None
        if not isinstance(v, dict):
            raise self._fail(key, "an object", v)
        return Fields(v, prefix=f"{self._name(key)}.")

    def stop(self, key: str = "stop", max_items: int = 128) -> list[str]:
        """A string or an array of strings (OpenAI's `stop`, TGI's `stop`)."""
        v = self.data.get(key)
        if v is None:
            return []
        if isinstance(v, str):
            return [v] if v else []
        if isinstance(v, list) and all(isinstance(s, str) for s in v):
            if len(v) > max_items:
                raise bad_request(f"'{self._name(key)}' has {len(v)} items; at most {max_items}",
                                  param=self._name(key))
            return [s for s in v if s]
        raise bad_request(f"'{self._name(key)}' must be a string or an array of strings", param=self._name(key))

    def _range(self, key: str, v: float, lo: float | None, hi: float | None) -> None:
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            bounds = f"between {lo} and {hi}" if lo is not None and hi is not None else \
                f">= {lo}" if lo is not None else f"<= {hi}"
            raise bad_request(f"'{self._name(key)}' must be {bounds}, got {v}", param=self._name(key))


@dataclass(frozen=True)
class Defaults:
    """What a request gets for a field it does not set: the server's command line (and a packed
    file's .args), as llama.cpp's server takes its defaults from its own. A request's value wins.

    `sampling` is complete (llama.cpp's defaults where the command line said nothing) and is what
    the OpenAI routes and /props use; `given` names the fields the command line did set, which
    are the only ones to replace TGI's own neutral defaults. `max_tokens` is -n when given (else
    each route keeps its own default) and `stop` the -r strings. `grammar` (GBNF: --grammar,
    --grammar-file, -j, -jf) constrains every answer whose request names no output format, and
    `ignore_eos` (--ignore-eos) is every request's `ignore_eos` unless it says otherwise, as
    llama.cpp's server takes both from its command line.
    """
    sampling: SamplingParams = field(default_factory=SamplingParams)
    given: frozenset[str] = frozenset()
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    template_kwargs: dict[str, Any] = field(default_factory=dict)  # --chat-template-kwargs
    reasoning_format: str = "auto"  # --reasoning-format (runtime/reasoning.py)
    grammar: str | None = None      # GBNF
    ignore_eos: bool = False

    def max_tokens_or(self, route_default: int) -> int:
        return route_default if self.max_tokens is None else self.max_tokens

    def stop_for(self, f: Fields, key: str = "stop") -> list[str]:
        """The request's stop strings; the server's -r when the request names none (null or absent)."""
        return f.stop(key) if f.raw(key) is not None else list(self.stop)


def sampling_params(f: Fields, temperature: str = "temperature", repeat_penalty: str = "repeat_penalty",
                    greedy: bool = False, defaults: Defaults | None = None) -> SamplingParams:
    """SamplingParams from OpenAI-style fields plus llama.cpp's extensions (top_k, min_p,
    repeat_penalty, repeat_last_n); absent fields get the server's defaults (llama.cpp's unless
    its command line said otherwise)."""
    d = (defaults or Defaults()).sampling
    seed = f.integer("seed", -1 if d.seed is None else d.seed, lo=-1, hi=2**64 - 1)
    return SamplingParams(
        temp=0.0 if greedy else f.number(temperature, d.temp, lo=0.0, hi=100.0),
        top_k=f.integer("top_k", d.top_k, lo=-1 << 31, hi=1 << 31),
        top_p=f.number("top_p", d.top_p, lo=0.0, hi=1.0),
        min_p=f.number("min_p", d.min_p, lo=0.0, hi=1.0),
        repeat_penalty=f.number(repeat_penalty, d.repeat_penalty, lo=0.0, hi=100.0),
        repeat_last_n=f.integer("repeat_last_n", d.repeat_last_n, lo=-1, hi=1 << 31),
        presence_penalty=f.number("presence_penalty", d.presence_penalty, lo=-2.0, hi=2.0),
        frequency_penalty=f.number("frequency_penalty", d.frequency_penalty, lo=-2.0, hi=2.0),
        seed=None if seed < 0 else seed,
    )


OUTPUT_FORMAT_FIELDS = ("response_format", "grammar", "json_schema")


def names_output_format(f: Fields) -> bool:
    """Whether the request says what its output is (even free text: `response_format` text, an
    empty `grammar`): the server's command-line grammar is then not used."""
    return any(f.raw(k) is not None for k in OUTPUT_FORMAT_FIELDS)


def grammar_constraint(f: Fields, defaults: Defaults | None = None):
    """The Constraint factory (tokenizer -> GrammarConstraint) for the output format the request
    asks for: OpenAI `response_format` (json_object, json_schema), llama.cpp's `grammar` and
    `json_schema`; with none of them, the server's own grammar (Defaults.grammar); None for free
    text. An invalid grammar or an unsupported schema is a 400 naming the fault."""
    from runtime.grammar.request import RequestError, request_grammar
    try:
        gbnf = request_grammar({k: f.raw(k) for k in OUTPUT_FORMAT_FIELDS})
    except RequestError as e:
        raise bad_request(str(e), param=e.param) from None
    if gbnf is None and defaults is not None and not names_output_format(f):
        gbnf = defaults.grammar
    return gbnf_constraint(gbnf)


def gbnf_constraint(gbnf: str | None):
    """A Constraint factory for GBNF text (None: no constraint)."""
    if gbnf is None:
        return None
    from runtime.grammar import GrammarConstraint
    return lambda tokenizer: GrammarConstraint(gbnf, tokenizer)


MAX_TOP_LOGPROBS = 20  # OpenAI's limit on top_logprobs


def top_logprobs_count(f: Fields, key: str) -> int | None:
    """An integer field asking for that many most likely tokens per step (0..20), None when absent."""
    return f.integer(key, None, lo=0, hi=MAX_TOP_LOGPROBS)


def chat_logprobs(f: Fields) -> int | None:
    """OpenAI chat's `logprobs` (bool) and `top_logprobs` (0..20): None when not asked for."""
    top = top_logprobs_count(f, "top_logprobs")
    if not f.boolean("logprobs", False):
        if top is not None:
            raise bad_request("'top_logprobs' requires 'logprobs': true", param="top_logprobs")
        return None
    return top or 0


def _bias_value(key: str, v: Any) -> float:
    if v is False:  # llama.cpp: the token is never chosen
        return -math.inf
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise bad_request(f"'{key}' must be a number between -100 and 100 (or false: never), not {_kind(v)}",
                          param="logit_bias")
    if not -100 <= v <= 100:
        raise bad_request(f"'{key}' must be between -100 and 100, got {v}", param="logit_bias")
    return float(v)


def logit_bias(f: Fields, n_vocab: int, tokenize: Any) -> tuple[tuple[int, float], ...]:
    """`logit_bias` as (token id, bias) pairs, a token's biases summed: OpenAI's object of token
    ids (as strings) -> bias in [-100, 100], and llama.cpp's forms too: `[[id or text, bias], ...]`,
    a text key (`tokenize(text)` gives its tokens, each biased), `false` for "never"."""
    raw = f.raw("logit_bias")
    if raw is None:
        return ()
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list) and all(isinstance(p, list) and len(p) == 2 for p in raw):
        pairs = [(p[0], p[1]) for p in raw]
        # (a string here is a text, "788" too, as llama.cpp reads the array form)
    else:
        raise bad_request("'logit_bias' must be an object {token id: bias} or an array of [token, bias] pairs",
                          param="logit_bias")
    total: dict[int, float] = {}
    for key, value in pairs:
        where = f"logit_bias[{json.dumps(key)}]"
        bias = _bias_value(where, value)
        if isinstance(raw, dict) and isinstance(key, str) and key.strip().lstrip("-").isdigit():  # OpenAI's ids
            key = int(key)
        if isinstance(key, int) and not isinstance(key, bool):
            if not 0 <= key < n_vocab:
                raise bad_request(f"'{where}': token id {key} is outside the vocabulary (0..{n_vocab - 1})",
                                  param="logit_bias")
            ids = [key]
        elif isinstance(key, str) and key:
            ids = tokenize(key)
        else:
            raise bad_request(f"'{where}': a token must be an id or a non-empty text", param="logit_bias")
        for t in ids:
            total[t] = total.get(t, 0.0) + bias
    return tuple(total.items())


def template_kwargs(f: Fields, defaults: Defaults | None = None) -> dict[str, Any]:
    """The template's extra variables: the command line's --chat-template-kwargs, then the request's
    `chat_template_kwargs` (an object: e.g. Qwen 3's {"enable_thinking": false}); OpenAI's
    `reasoning_effort: "none"` is enable_thinking false, another effort goes to the template as
    `reasoning_effort` (as llama.cpp's server does)."""
    out = dict(defaults.template_kwargs) if defaults else {}
    raw = f.raw("chat_template_kwargs")
    if raw is not None:
        if not isinstance(raw, dict):
            raise bad_request("'chat_template_kwargs' must be an object of template variables",
                              param="chat_template_kwargs")
        out.update(raw)
    from runtime.chat_template import ChatTemplateError, check_variables

    try:
        check_variables(out)
    except ChatTemplateError as e:
        raise bad_request(f"'chat_template_kwargs': {e}", param="chat_template_kwargs") from None
    effort = f.string("reasoning_effort", None)
    if effort == "none":
        out["enable_thinking"] = False
    elif effort:
        out["reasoning_effort"] = effort
    return out


def reasoning_format(f: Fields, defaults: Defaults | None = None) -> str:
    """`reasoning_format` (runtime/reasoning.py's FORMATS), the command line's when unset."""
    from runtime.reasoning import FORMATS

    value = f.string("reasoning_format", defaults.reasoning_format if defaults else "auto")
    if value not in FORMATS:
        raise bad_request(f"'reasoning_format' must be one of {', '.join(FORMATS)}", param="reasoning_format")
    return value


# sampler fields of llama.cpp this engine does not implement, with their neutral values
NEUTRAL = {"typical_p": 1.0, "mirostat": 0, "dry_multiplier": 0.0, "xtc_probability": 0.0, "dynatemp_range": 0.0,
           "top_n_sigma": -1.0, "min_keep": 0, "n_indent": 0, "post_sampling_probs": False}
SAMPLERS = ["penalties", "top_k", "top_p", "min_p", "temperature"]  # this engine's chain, in order


def refuse_unsupported(f: Fields) -> None:
    """llama.cpp's sampler fields this engine does not have: a 400 unless neutral (every route
    takes llama.cpp's own fields, as its server does on its OpenAI routes too)."""
    for key, neutral in NEUTRAL.items():
        v = f.raw(key)
        if v is not None and v != neutral:
            raise bad_request(f"'{key}' is not supported by this server (only {json.dumps(neutral)})", param=key)
    if f.raw("samplers") is not None:
        raise bad_request(f"'samplers' is not supported: the chain is fixed ({', '.join(SAMPLERS)})", param="samplers")
    if f.raw("id_slot") not in (None, -1):
        raise bad_request("'id_slot' is not supported: the server picks the slot that caches most of the prompt",
                          param="id_slot")


def ignore_eos(f: Fields, defaults: Defaults | None = None) -> bool:
    """llama.cpp's `ignore_eos`: the request's, else the server's (--ignore-eos)."""
    return bool(f.boolean("ignore_eos", defaults.ignore_eos if defaults else False))


def with_bias(engine: Any, f: Fields, params: SamplingParams, defaults: Defaults | None = None) -> SamplingParams:
    """`params` with the request's logit_bias (text keys tokenized: llama.cpp's extension) and
    llama.cpp's `ignore_eos` (every end-of-generation token never chosen)."""
    bias = dict(logit_bias(f, engine.model.config.n_vocab,
                           lambda text: engine.tokenize(text, add_special=False, parse_special=False)))
    if ignore_eos(f, defaults):
        bias.update((t, -math.inf) for t in engine.tokenizer.eog_ids)
    return replace(params, logit_bias=tuple(bias.items())) if bias else params


def prompt_options(f: Fields, messages: list[dict[str, Any]]) -> dict[str, bool]:
    """How a conversation becomes the prompt (ChatTemplate.prompt's options): a last assistant
    message is continued, not closed (llama.cpp's assistant prefill), unless the request says
    `continue_final_message: false`; `continue_final_message: true` asks for it explicitly;
    `add_generation_prompt` (default true) is the template's own switch otherwise."""
    cfm = f.raw("continue_final_message")
    if cfm not in (None, True, False, "content"):
        raise bad_request("'continue_final_message' must be a boolean", param="continue_final_message")
    add = f.boolean("add_generation_prompt", None)
    last_is_assistant = bool(messages) and messages[-1].get("role") == "assistant"
    if cfm is None and last_is_assistant:  # the prefill
        if len(messages) >= 2 and messages[-2].get("role") == "assistant":
            raise bad_request("the conversation ends with two assistant messages: only the last one can be "
                              "continued", param="messages")
        return {"add_generation_prompt": False, "continue_final": True}
    if cfm in (True, "content"):
        if add:
            raise bad_request("'add_generation_prompt' and 'continue_final_message' cannot both be true",
                              param="add_generation_prompt")
        if not last_is_assistant:
            raise bad_request("'continue_final_message' needs the last message to be the assistant's",
                              param="continue_final_message")
        return {"add_generation_prompt": False, "continue_final": True}
    return {"add_generation_prompt": True if add is None else add, "continue_final": False}


class RouteGroup:
    """One API's routes (OpenAI's, llama.cpp's native and utility ones, TGI's) over the shared
    engine, scheduler, served model name and command-line defaults."""

    def __init__(self, engine: Engine, scheduler: Any, model_id: str, defaults: Defaults | None = None) -> None:
        self.engine = engine
        self.scheduler = scheduler
        self.model_id = model_id
        self.defaults = defaults or Defaults()

    def routes(self) -> list[Route]:
        raise NotImplementedError

    async def answer(self, make: Callable[[], Any], heavy: bool = False) -> Response:
        """The JSON answer `make()` builds. A light one is built and written here, on the event loop,
        when one json.dumps of it is a single step (a small answer should not queue behind other
        requests' tokenizing on the text thread); otherwise it is written there in steps
        (json_response). `heavy`: building it is work too (log-probabilities to format, thousands of
        vectors to convert), so both happen on the text thread."""
        if not heavy:
            value = make()
            if not jsonout.takes_steps(value):
                return jsonout.json_response(value)
            return await self.scheduler.off_loop(jsonout.json_response, value)
        return await self.scheduler.off_loop(lambda: jsonout.json_response(make()))
