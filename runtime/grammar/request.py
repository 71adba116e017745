"""The grammar a request asks for, from the fields each API uses; RequestError names the fault.

- OpenAI `response_format`: {"type": "text"}; {"type": "json_object"} (any JSON object; with a
  "schema" member, as llama.cpp's server also takes it, that schema); {"type": "json_schema",
  "json_schema": {"name", "schema", "strict"}} (the schema is always enforced, strict or not).
- llama.cpp's own fields: `grammar` (GBNF text) and `json_schema` (a schema).
- TGI's `parameters.grammar`: {"type": "json", "value": schema} or {"type": "regex", "value": re}.

Each function returns GBNF text (checked: it parses) or None when the request sets no
constraint. The server turns RequestError into a 400 with `param` set.
"""
from __future__ import annotations

from typing import Any

from .gbnf import GrammarError, parse_grammar
from .json_schema import JSON_OBJECT_GBNF, SchemaError, json_schema_to_gbnf
from .regex import PatternError, regex_gbnf


class RequestError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def _schema(schema: Any, param: str) -> str:
    if not isinstance(schema, (dict, bool)):
        raise RequestError(f"'{param}' must be a JSON Schema (an object)", param)
    try:
        gbnf = json_schema_to_gbnf(schema)
        parse_grammar(gbnf)  # what the schema asks may still be no grammar (a $ref cycle, {3,1})
    except SchemaError as e:
        raise RequestError(f"'{param}': {e}", param) from None
    except GrammarError as e:
        raise RequestError(f"'{param}': the schema's grammar cannot be built: {e}", param) from None
    return gbnf


def _gbnf(text: Any, param: str) -> str | None:
    if not isinstance(text, str):
        raise RequestError(f"'{param}' must be a string (a GBNF grammar)", param)
    if not text:  # llama.cpp's server: an empty grammar is none (free text, over the server's default)
        return None
    try:
        parse_grammar(text)
    except GrammarError as e:
        raise RequestError(f"'{param}': invalid grammar: {e}", param) from None
    return text


def _response_format(rf: Any) -> str | None:
    if rf is None:
        return None
    if not isinstance(rf, dict):
        raise RequestError("'response_format' must be an object", "response_format")
    kind = rf.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return _schema(rf["schema"], "response_format.schema") if rf.get("schema") is not None else JSON_OBJECT_GBNF
    if kind == "json_schema":
        spec = rf.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise RequestError("'response_format.json_schema.schema' is required", "response_format.json_schema")
        return _schema(spec["schema"], "response_format.json_schema.schema")
    raise RequestError(f"'response_format.type' must be text, json_object or json_schema, not {kind!r}",
                       "response_format.type")


def request_grammar(body: dict) -> str | None:
    """OpenAI's response_format or llama.cpp's grammar / json_schema (at most one of them)."""
    given = [k for k in ("response_format", "grammar", "json_schema") if body.get(k) is not None]
    found = {"response_format": lambda: _response_format(body["response_format"]),
             "grammar": lambda: _gbnf(body["grammar"], "grammar"),
             "json_schema": lambda: _schema(body["json_schema"], "json_schema")}
    grammars = [(k, found[k]()) for k in given]
    grammars = [(k, g) for k, g in grammars if g is not None]
    if len(grammars) > 1:
        raise RequestError(f"'{grammars[0][0]}' and '{grammars[1][0]}' both constrain the output: "
                           "give one of them", grammars[1][0])
    return grammars[0][1] if grammars else None


def tgi_grammar(grammar: Any) -> str | None:
    """TGI's parameters.grammar: {"type": "json" | "regex", "value": ...}."""
    if grammar is None:
        return None
    param = "parameters.grammar"
    if not isinstance(grammar, dict):
        raise RequestError(f"'{param}' must be an object with type and value", param)
    kind, value = grammar.get("type"), grammar.get("value")
    if kind == "json":
        if isinstance(value, str):
            import json
            try:
                value = json.loads(value)
            except ValueError:
                raise RequestError(f"'{param}.value' is not valid JSON", f"{param}.value") from None
        return _schema(value, f"{param}.value")
    if kind == "regex":
        if not isinstance(value, str):
            raise RequestError(f"'{param}.value' must be a regular expression (a string)", f"{param}.value")
        try:
            gbnf = regex_gbnf(value)
            parse_grammar(gbnf)  # ({3,1}: a pattern read, and no grammar)
            return gbnf
        except (PatternError, GrammarError) as e:
            raise RequestError(f"'{param}.value': {e}", f"{param}.value") from None
    raise RequestError(f"'{param}.type' must be json or regex, not {kind!r}", f"{param}.type")
