"""The grammar a request asks for (runtime/grammar/request.py): OpenAI response_format, llama.cpp's
grammar / json_schema fields, TGI's json and regex grammars; faults named with their field.
Python's `re` is the oracle for the regex grammars, `jsonschema` for the schema ones."""
from __future__ import annotations

import json
import re

import jsonschema
import pytest

from runtime.grammar import JSON_OBJECT_GBNF, compile_grammar
from runtime.grammar.request import RequestError, request_grammar, tgi_grammar

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
          "required": ["n"], "additionalProperties": False}


def test_openai_and_llama_cpp_fields() -> None:
    assert request_grammar({}) is None
    assert request_grammar({"response_format": {"type": "text"}}) is None
    assert request_grammar({"response_format": {"type": "json_object"}}) == JSON_OBJECT_GBNF
    for body in ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA,
                                                                              "strict": True}}},
                 {"response_format": {"type": "json_object", "schema": SCHEMA}},
                 {"json_schema": SCHEMA}):
        m = compile_grammar(request_grammar(body))
        for text in ('{"n": 3}', '{"n": 10}', '{"n": 0}', '{}'):
            assert m.match(text.encode()) == jsonschema.Draft202012Validator(SCHEMA).is_valid(json.loads(text))
    g = request_grammar({"grammar": 'root ::= "yes" | "no"'})
    assert compile_grammar(g).match(b"no")


@pytest.mark.parametrize("body, param, words", [
    ({"grammar": 'root ::= "a" valu'}, "grammar", "line 1, column 14: undefined rule 'valu'"),
    ({"grammar": 3}, "grammar", "must be a string"),
    ({"json_schema": {"type": "string", "format": "email"}}, "json_schema", "unsupported string format 'email'"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema",
     "schema' is required"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object", "not": {}}}}},
     "response_format.json_schema.schema", "unsupported JSON Schema keyword 'not'"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "not 'xml'"),
    ({"grammar": 'root ::= "a"', "json_schema": SCHEMA}, "json_schema", "give one of them"),
    # a schema whose grammar cannot be built was a 500 at generation: a 400 naming it
    ({"json_schema": {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}},
     "json_schema", "left recursion"),
    ({"json_schema": {"$ref": "#"}}, "json_schema", "left recursion"),
    ({"json_schema": {"type": "string", "pattern": "^a{3,1}$"}}, "json_schema", "the maximum is below the minimum"),
    ({"json_schema": {"type": "string", "pattern": "^a{5000}$"}}, "json_schema", "repetition count above 2000"),
    ({"json_schema": {"type": "integer", "minimum": 10 ** 16}}, "json_schema", "beyond the 15 digits"),
    ({"json_schema": {"type": "integer", "maximum": float("inf")}}, "json_schema", "must be finite, not inf"),
    ({"json_schema": {"type": "number", "minimum": float("nan")}}, "json_schema", "must be finite, not nan"),
    ({"json_schema": {"type": "string", "enum": [1, 2]}}, "json_schema", "no value of enum has the type"),
])
def test_faults_are_named(body: dict, param: str, words: str) -> None:
    with pytest.raises(RequestError) as err:
        request_grammar(body)
    assert err.value.param == param
    assert words in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("pattern, texts", [
    (r"^\d{3}-[a-z]+$", ["123-ab", "12-ab", "123-", "123-abc!", "999-z"]),
    (r"(ab|c)*\.?", ["", "abc.", "ab.c", "cc", "a"]),
    (r"[^\s\d]+ \w{2}", ["ab_1 x9", "a b", "é! zz", "9 ab"]),
    (r'"[^"\\]*"|null', ['"x y"', 'null', '"a"b"', 'nul']),
])
def test_tgi_regex_grammars_match_like_re(pattern: str, texts: list[str]) -> None:
    m = compile_grammar(tgi_grammar({"type": "regex", "value": pattern}))
    for text in texts:
        assert m.match(text.encode()) == bool(re.fullmatch(pattern, text)), text


@pytest.mark.parametrize("schema, texts", [
    # a key outside the Basic Multilingual Plane is one character of the exclusion (it was \u1F600
    # and "0": the emoji key took the other keys' schema)
    ({"type": "object", "properties": {"\U0001F600": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
     ['{"\U0001F600": 1}', '{"\U0001F600": "x"}', '{"b": "x"}', '{"\U0001F600": 1, "b": "y"}']),
    # properties, even none, without additionalProperties: no other members (a tool without
    # parameters takes {} only, as llama.cpp's grammar)
    ({"type": "object", "properties": {}}, ['{}', '{"type": "time"}']),
    ({"type": "object"}, ['{}', '{"type": "time"}']),
    # a type beside enum: only the values of that type
    ({"type": "string", "enum": ["a", 1]}, ['"a"', '1']),
    # an extra key may not spell a declared one with escapes (JSON's last value wins: {"a": "x"})
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
     ['{"a": 1, "b": "x"}', '{"a": 1, "\\u0061": "x"}', '{"\\n": "x"}']),
    # a surrogate pair is one character written as two escapes
    ({"type": "string", "minLength": 2}, ['"ab"', '"\\ud83d\\ude00"', '"\U0001F600x"']),
])
def test_schema_grammars_accept_what_jsonschema_does(schema: dict, texts: list[str]) -> None:
    m = compile_grammar(request_grammar({"json_schema": schema}))
    closed = dict(schema, additionalProperties=False) if schema.get("properties") == {} else schema
    for text in texts:
        assert m.match(text.encode()) == jsonschema.Draft202012Validator(closed).is_valid(json.loads(text)), text


def test_tgi_regex_faults_are_named() -> None:
    with pytest.raises(RequestError, match="the maximum is below the minimum") as err:
        tgi_grammar({"type": "regex", "value": "a{3,1}"})
    assert err.value.param == "parameters.grammar.value"


def test_tgi_json_and_faults() -> None:
    m = compile_grammar(tgi_grammar({"type": "json", "value": json.dumps(SCHEMA)}))
    assert m.match(b'{"n": 5}') and not m.match(b'{"n": 50}')
    with pytest.raises(RequestError, match="lookahead|not supported"):
        tgi_grammar({"type": "regex", "value": "a(?=b)"})
    with pytest.raises(RequestError) as err:
        tgi_grammar({"type": "lark", "value": "x"})
    assert err.value.param == "parameters.grammar.type"
