"""Structured output through the server, with the official `openai` client: response_format
json_schema (what `client.beta.chat.completions.parse` sends for a pydantic model) and json_object,
llama.cpp's `grammar` and `json_schema` fields; invalid grammars and unsupported schemas are 400s
naming the fault, and the server keeps serving. `jsonschema` checks the outputs."""
from __future__ import annotations

import json
import re

import jsonschema
import openai
import pydantic
import pytest
from test_server import client, engine, server  # noqa: F401  (the server tests' fixtures, shared)


class Cat(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=12)
    age: int = pydantic.Field(ge=0, le=30)
    indoor: bool


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    r = client.beta.chat.completions.parse(
        model="m", temperature=0, max_tokens=80, response_format=Cat,
        messages=[{"role": "user", "content": "Describe a cat as JSON."}])
    cat = r.choices[0].message.parsed
    assert r.choices[0].finish_reason == "stop" and isinstance(cat, Cat)
    jsonschema.validate(json.loads(r.choices[0].message.content), Cat.model_json_schema())


def test_json_schema_streamed_and_json_object(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"colors": {"type": "array", "items": {"enum": ["red", "green"]},
                                                          "minItems": 1, "maxItems": 3}},
              "required": ["colors"], "additionalProperties": False}
    stream = client.chat.completions.create(
        model="m", temperature=0, max_tokens=60, stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema, "strict": True}},
        messages=[{"role": "user", "content": "Name some colors."}])
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    jsonschema.validate(json.loads(text), schema)
    r = client.chat.completions.create(model="m", temperature=0, max_tokens=100,
                                       response_format={"type": "json_object"},
                                       messages=[{"role": "user", "content": "A cat as JSON with the keys name "
                                                                             "and age."}])
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_llama_cpp_grammar_and_json_schema_fields(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="m", temperature=0.8, seed=1, max_tokens=20, extra_body={"grammar": 'root ::= ("yes" | "no") "!"'},
        messages=[{"role": "user", "content": "Is the sky blue?"}])
    assert re.fullmatch(r"(yes|no)!", r.choices[0].message.content)
    schema = {"type": "integer", "minimum": 10, "maximum": 99}
    c = client.completions.create(model="m", prompt="A number:", temperature=0, max_tokens=8,
                                  extra_body={"json_schema": schema})
    jsonschema.validate(json.loads(c.choices[0].text), schema)


@pytest.mark.parametrize("body, param, words", [
    ({"grammar": 'root ::= "a" valu'}, "grammar", "line 1, column 14: undefined rule 'valu'"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"e": {"type": "string", "format": "email"}}}}}},
     "response_format.json_schema.schema", "unsupported string format 'email'"),
    ({"json_schema": {"type": "object", "patternProperties": {"^x": {}}}}, "json_schema",
     "unsupported JSON Schema keyword 'patternProperties'"),
])
def test_faults_are_400s_naming_them(client: openai.OpenAI, body: dict, param: str, words: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="m", max_tokens=4, extra_body=body,
                                       messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 400
    assert words in err.value.body["message"] and err.value.body["param"] == param
    r = client.chat.completions.create(model="m", max_tokens=2, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].finish_reason in ("stop", "length")            # still serving


def test_tgi_grammar_json_schema_and_regex(server) -> None:  # noqa: F811  (the fixture)
    """TGI's parameters.grammar through huggingface_hub's client: a JSON Schema, a regex, and a bad regex."""
    import requests
    from huggingface_hub import InferenceClient

    hub = InferenceClient(server.url)
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "population": {"type": "integer", "minimum": 0}},
              "required": ["city", "population"], "additionalProperties": False}
    text = hub.text_generation("The largest city in France as JSON:", max_new_tokens=60,
                               grammar={"type": "json", "value": schema})
    jsonschema.validate(json.loads(text), schema)
    text = hub.text_generation("Today's date:", max_new_tokens=20,
                               grammar={"type": "regex", "value": r"20[0-9]{2}-[01][0-9]-[0-3][0-9]"})
    assert re.fullmatch(r"20[0-9]{2}-[01][0-9]-[0-3][0-9]", text), text
    any_object = requests.post(server.url + "/generate", timeout=60, json={
        "inputs": "A cat as JSON:", "parameters": {"max_new_tokens": 60, "grammar": {"type": "json"}}}).json()
    assert isinstance(json.loads(any_object["generated_text"]), dict)
    bad = requests.post(server.url + "/generate", timeout=60, json={
        "inputs": "x", "parameters": {"grammar": {"type": "regex", "value": "a(b"}}})
    assert bad.status_code == 422 and "parameters.grammar.value" in bad.json()["error"]  # TGI: 422
