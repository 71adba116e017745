"""Tool calling through the server, with the official `openai` client: tools with tool_choice
required and a named tool, plain and streamed (the stream reassembled as the client does), on
SmolLM2 (a template without tools: the generic JSON format) and Qwen2.5-Coder (its GGUF's Hermes
`<tool_call>` template). Arguments are checked with `jsonschema` against the tool's parameters; a
history with a call and its result renders as transformers renders it (the prompt's token count);
malformed tools are 400s naming the fault and the server keeps serving."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import openai
import pytest
import requests
from serverutil import ServerThread
from test_server import client, engine, server  # noqa: F401  (the server tests' fixtures, shared)
from test_tools import TEMPLATES, TOOLS, conversation, hf_render, template_source, tiny_with_markers

from runtime.engine import Engine

LIGHT = [{"type": "function", "function": {"name": "light", "description": "Light", "parameters": {  # Hermes'
    "type": "object", "properties": {"on": {"type": "boolean", "description": "On"},           # template wants
                                     "room": {"enum": ["hall", "bed"], "description": "Room"}},  # descriptions
    "required": ["on"]}}}]

SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def check_calls(calls, names=tuple(SCHEMAS)) -> None:
    assert calls
    for c in calls:
        assert c.id.startswith("call_") and c.type == "function" and c.function.name in names
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])


def streamed(stream) -> tuple[str, list, str]:
    """Content, calls and finish reason of a stream, put together as the openai client's users do."""
    content, calls, finish = "", [], None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for tc in choice.delta.tool_calls or []:
            if tc.index == len(calls):
                calls.append(tc.model_copy(deep=True))
            else:
                calls[tc.index].function.arguments += tc.function.arguments or ""
        finish = choice.finish_reason or finish
    return content, calls, finish


# ----------------------------------------------------------------------------- SmolLM2: generic format


def test_required_tool_call(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, temperature=0, max_tokens=80)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert len(choice.message.tool_calls) == 1
    check_calls(choice.message.tool_calls)


def test_named_tool_streamed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Add 2 and 3."}], tools=TOOLS, stream=True,
        tool_choice={"type": "function", "function": {"name": "add"}}, parallel_tool_calls=False,
        temperature=0.7, seed=3, max_tokens=80)
    content, calls, finish = streamed(stream)
    assert finish == "tool_calls" and content == ""
    check_calls(calls, names=("add",))


def test_calls_cut_at_max_tokens_are_the_same_plain_and_streamed(client: openai.OpenAI) -> None:
    """Cut short inside its calls (the model repeats its call until max_tokens), a reply ends with
    "length" and the calls begun, plain as streamed: the whole first call, the cut one as far as
    it came (the stream had sent those deltas already)."""
    kw = dict(model="m", messages=ASK, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=48)
    r = client.chat.completions.create(**kw)
    choice = r.choices[0]
    content, calls, finish = streamed(client.chat.completions.create(**kw, stream=True))
    assert choice.finish_reason == finish == "length"
    assert len(choice.message.tool_calls) == len(calls) >= 2
    plain = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls]
    assert plain == [(c.function.name, c.function.arguments) for c in calls]
    check_calls(choice.message.tool_calls[:1])
    assert (choice.message.content or "") == content


def test_tool_call_with_logprobs_plain_and_streamed(client: openai.OpenAI) -> None:
    """Logprobs come with a call: one entry per generated token, the same plain and streamed (a
    tool stream holds text back; its tokens' logprobs go out with the next delta)."""
    kw = dict(model="m", messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
              temperature=0, max_tokens=80, logprobs=True, top_logprobs=2)
    r = client.chat.completions.create(**kw)
    plain = r.choices[0].logprobs.content
    assert plain and all(e.logprob <= 0 and len(e.top_logprobs) == 2 for e in plain)
    assert r.choices[0].message.tool_calls[0].function.name in "".join(e.token for e in plain)  # the call's text
    got = []
    for chunk in client.chat.completions.create(**kw, stream=True):
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            got += chunk.choices[0].logprobs.content
    assert [e.token for e in got] == [e.token for e in plain]
    # the second request finds its prompt cached, which rounds the last rows a little differently
    assert max(abs(a.logprob - b.logprob) for a, b in zip(got, plain)) < 0.5


def test_tool_choice_none_is_a_plain_answer(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="none",
                                       temperature=0, max_tokens=12)
    plain = client.chat.completions.create(model="m", messages=ASK, temperature=0, max_tokens=12)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content
    assert r.usage.prompt_tokens == plain.usage.prompt_tokens         # the same prompt: no tools in it


@pytest.mark.parametrize("tools, param, words", [
    ([{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "format": "email"}}}}}],
     "tools[0].function.parameters", "unsupported string format 'email'"),
    ([{"type": "function", "function": {"description": "no name"}}], "tools[0].function.name", "is required"),
    ([{"type": "code_interpreter"}], "tools[0].type", "must be \"function\""),
])
def test_malformed_tools_are_400s(client: openai.OpenAI, tools: list, param: str, words: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="m", messages=ASK, tools=tools, max_tokens=4)
    assert words in err.value.body["message"] and err.value.body["param"] == param
    r = client.chat.completions.create(model="m", max_tokens=2, messages=ASK)
    assert r.choices[0].finish_reason in ("stop", "length")            # still serving


# ----------------------------------------------------------------------------- Qwen2.5-Coder: <tool_call>


@pytest.fixture(scope="module")
def qwen(qwen25_coder_path: Path):
    eng = Engine.load(qwen25_coder_path, n_ctx=1024)
    with ServerThread(eng, parallel=1) as srv:
        yield eng, openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    eng.close()


def test_qwen_required_plain_and_named_streamed(qwen) -> None:
    _, c = qwen
    r = c.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="required",
                                  temperature=0, max_tokens=40)
    assert r.choices[0].finish_reason == "tool_calls"
    check_calls(r.choices[0].message.tool_calls)
    content, calls, finish = streamed(c.chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}},
        parallel_tool_calls=False, temperature=0, max_tokens=40, stream=True))
    assert finish == "tool_calls" and content == "" and len(calls) == 1
    check_calls(calls, names=("add",))


def test_qwen_auto_answers_or_calls(qwen) -> None:
    _, c = qwen
    r = c.chat.completions.create(model="m", messages=ASK, tools=TOOLS, temperature=0, max_tokens=40)
    message = r.choices[0].message
    if r.choices[0].finish_reason == "tool_calls":
        check_calls(message.tool_calls)
    else:
        assert message.tool_calls is None and message.content


def test_qwen_history_with_a_tool_result_renders_as_transformers(qwen, qwen25_coder_path) -> None:
    eng, c = qwen
    openai_form, hf_form = conversation("call_Zx81bQ2LmN0pA7sKd3Fv9YtE")
    r = c.chat.completions.create(model="m", messages=openai_form, tools=TOOLS, temperature=0, max_tokens=2)
    source, bos, eos = template_source("qwen", qwen25_coder_path)
    expected = hf_render(source, hf_form, bos, eos, tools=TOOLS)
    assert "<tool_response>\n{\"temperature\": 21}\n</tool_response>" in expected
    assert r.usage.prompt_tokens == len(eng.tokenize(expected, add_special=True, parse_special=True))
    # /apply-template gives the text the chat route completes: the tools, the call and its result
    url = str(c.base_url).rstrip("/").removesuffix("/v1")
    applied = requests.post(url + "/apply-template", json={"messages": openai_form, "tools": TOOLS}, timeout=60)
    assert applied.status_code == 200 and applied.json()["prompt"] == expected


# ----------------------------------------------------------------------------- tiny random model, real templates


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    """The tiny random model with the formats' markers as control tokens and room for the templates'
    tool prompts."""
    return tiny_with_markers(tmp_path_factory.mktemp("tools") / "tiny.gguf")


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_tiny_model_calls_in_the_templates_format(name, tiny_path) -> None:
    """Random weights, so only the grammar makes these calls: Mistral's [TOOL_CALLS] array and
    [TOOL_CALLS]name[ARGS]{...} (control tokens), Llama 3.1's JSON, Hermes' <tool_call> tags, plain
    and streamed; and a history with a call and its result renders as transformers renders it."""
    source, bos, eos = template_source(name)
    eng = Engine.load(tiny_path, n_ctx=2048, chat_template=source)
    with ServerThread(eng, parallel=1) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        schema = LIGHT[0]["function"]["parameters"]
        for seed in range(2):
            r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "On"}], tools=LIGHT,
                                          tool_choice="required", parallel_tool_calls=False, temperature=1,
                                          seed=seed, max_tokens=150)
            (call,) = r.choices[0].message.tool_calls
            assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "light"
            jsonschema.validate(json.loads(call.function.arguments), schema)
        content, calls, finish = streamed(c.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "On"}], tools=LIGHT, stream=True,
            tool_choice={"type": "function", "function": {"name": "light"}}, parallel_tool_calls=False,
            temperature=1, seed=7, max_tokens=150))
        assert finish == "tool_calls" and len(calls) == 1 and not content.strip()
        jsonschema.validate(json.loads(calls[0].function.arguments), schema)
        openai_form, hf_form = conversation("a1B2c3D4e")
        if name == "llama3":        # its template puts the tools into the first user message
            openai_form, hf_form = openai_form[1:], hf_form[1:]
        r = c.chat.completions.create(model="m", messages=openai_form, tools=TOOLS, max_tokens=1)
        expected = hf_render(source, hf_form, eng.template.bos_token, eng.template.eos_token, tools=TOOLS)
        assert r.usage.prompt_tokens == len(eng.tokenize(expected, add_special=False, parse_special=True))
    eng.close()
