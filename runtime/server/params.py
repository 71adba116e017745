"""Request bodies: JSON parsing and typed field access with OpenAI-shaped errors.

No schema library: a request is a dict, and `Fields` reads one field at a time with
its type and range checked, naming the field in the error (`param`), as OpenAI does.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from runtime.sampling import SamplingParams
from runtime.server.errors import APIError, bad_request

_MISSING = object()


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400."""
    raw = await request.body()
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
    return data


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
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

    def stop(self, key: str = "stop", max_items: int = 16) -> list[str]:
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
    each route keeps its own default) and `stop` the -r strings.
    """
    sampling: SamplingParams = field(default_factory=SamplingParams)
    given: frozenset[str] = frozenset()
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()

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


def grammar_constraint(f: Fields):
    """The Constraint factory (tokenizer -> GrammarConstraint) for the output format the request
    asks for: OpenAI `response_format` (json_object, json_schema), llama.cpp's `grammar` and
    `json_schema`; None for free text. An invalid grammar or an unsupported schema is a 400
    naming the fault."""
    from runtime.grammar import GrammarConstraint
    from runtime.grammar.request import RequestError, request_grammar
    try:
        gbnf = request_grammar({k: f.raw(k) for k in ("response_format", "grammar", "json_schema")})
    except RequestError as e:
        raise bad_request(str(e), param=e.param) from None
    if gbnf is None:
        return None
    return lambda tokenizer: GrammarConstraint(gbnf, tokenizer)
