"""A reply's thinking (runtime/reasoning.py) on the chat route, as llama.cpp's server returns it:
`message.reasoning_content` (streamed as `delta.reasoning_content`) apart from the content, read
through the official openai client; `chat_template_kwargs` (Qwen 3's enable_thinking) and
`reasoning_effort: "none"` reach the template; `reasoning_format` none and deepseek-legacy.

The model is SmolLM2 (its vocabulary has chatml's tokens) with a template written the way Qwen 3's
official one treats thinking (an empty block in the generation prompt when enable_thinking is
false) and one the way DeepSeek-R1's opens it (the generation prompt ends with `<think>`); a
grammar makes the reply, so that the test knows it.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import requests
from serverutil import ServerThread

from runtime.engine import Engine
from runtime.reasoning import ThinkSplit, split
from runtime.server.params import Defaults

QWEN3_LIKE = (
    "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
R1_LIKE = (
    "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
)
REPLY = "<think>\nThe user greets me.\nI greet back.\n</think>\n\nHello there!"
HI = [{"role": "user", "content": "Hi"}]


def gbnf(text: str) -> str:
    return "root ::= " + '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# -- the split, whole and streamed -------------------------------------------------------------

CASES = [  # (reply, prompt opened a block) -> (thinking, content)
    (REPLY, False, ("The user greets me.\nI greet back.", "Hello there!")),
    ("  <think>a</think>b", False, ("a", "b")),
    ("Hello <think>x</think>", False, (None, "Hello <think>x</think>")),  # only at the start
    ("<think>\n\n</think>\n\nok", False, (None, "ok")),                 # an empty block: no thinking
    ("<think>cut short  ", False, ("cut short", "")),                   # cut inside: all thinking
    ("<thin", False, (None, "<thin")),
    ("x </think>\n y", True, ("x", "y")),                               # the prompt opened it
    ("a </thin", True, ("a </thin", "")),
    ("", False, (None, "")),
]


@pytest.mark.parametrize("text,opened,expected", CASES)
def test_split_whole_and_in_every_cut(text: str, opened: bool, expected: tuple) -> None:
    assert split(text, opened) == expected
    for cuts in ([1] * len(text), [2, 3] * len(text), [len(text)]):  # pieces of 1, 2-3 and all characters
        s, at, think, content = ThinkSplit(opened), 0, "", ""
        for n in cuts:
            if at >= len(text):
                break
            t, c = s.feed(text[at:at + n])
            think, content, at = think + t, content + c, at + n
        t, c = s.finish()
        assert (think + t, content + c) == ((expected[0] or ""), expected[1]), cuts[:3]


# -- the server --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def qwen3_like(smollm2_path: Path) -> Engine:
    eng = Engine.load(smollm2_path, n_ctx=512, chat_template=QWEN3_LIKE)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def server(qwen3_like: Engine) -> ServerThread:
    with ServerThread(qwen3_like) as srv:
        yield srv


def client(srv: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_thinking_is_reasoning_content_plain_and_streamed(server: ServerThread) -> None:
    c = client(server)
    body = {"grammar": gbnf(REPLY)}
    r = c.chat.completions.create(model="m", messages=HI, temperature=0, extra_body=body)
    msg = r.choices[0].message
    assert msg.content == "Hello there!" and msg.model_extra["reasoning_content"] == "The user greets me.\nI greet back."
    think, content = "", ""
    for ev in c.chat.completions.create(model="m", messages=HI, temperature=0, stream=True, extra_body=body):
        if ev.choices:
            d = ev.choices[0].delta
            think += (d.model_extra or {}).get("reasoning_content") or ""
            content += d.content or ""
    assert (think, content) == ("The user greets me.\nI greet back.", "Hello there!")


@pytest.mark.parametrize("fmt,expected", [("none", (None, REPLY)), ("deepseek-legacy", (True, REPLY))])
def test_reasoning_format_none_and_legacy_keep_the_reply(server: ServerThread, fmt: str, expected: tuple) -> None:
    c = client(server)
    body = {"grammar": gbnf(REPLY), "reasoning_format": fmt}
    msg = c.chat.completions.create(model="m", messages=HI, temperature=0, extra_body=body).choices[0].message
    assert msg.content == expected[1]
    assert (msg.model_extra.get("reasoning_content") is not None) == bool(expected[0])
    streamed = "".join(ev.choices[0].delta.content or "" for ev in c.chat.completions.create(
        model="m", messages=HI, temperature=0, stream=True, extra_body=body) if ev.choices)
    assert streamed == REPLY


def test_enable_thinking_false_reaches_the_template(server: ServerThread) -> None:
    """Qwen 3's switch: chat_template_kwargs, or OpenAI's reasoning_effort "none"; the prompt gets
    the empty block (more prompt tokens), the same in /apply-template."""
    c = client(server)
    base = c.chat.completions.create(model="m", messages=HI, max_tokens=1).usage.prompt_tokens
    for body in ({"chat_template_kwargs": {"enable_thinking": False}}, {"reasoning_effort": "none"}):
        off = c.chat.completions.create(model="m", messages=HI, max_tokens=1, extra_body=body).usage.prompt_tokens
        assert off > base, body
        prompt = requests.post(server.url + "/apply-template", json={"messages": HI, **body}, timeout=30).json()["prompt"]
        assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n"), body
    for bad in ({"chat_template_kwargs": [1]}, {"chat_template_kwargs": {"messages": []}},
                {"chat_template_kwargs": {"enable_thinking": "no"}}, {"reasoning_format": "xml"}):
        r = requests.post(server.url + "/v1/chat/completions", json={"messages": HI, **bad}, timeout=30)
        assert r.status_code == 400 and len(r.json()["error"]["message"].splitlines()) == 1, bad


def test_command_line_kwargs_are_the_default(qwen3_like: Engine) -> None:
    """--chat-template-kwargs: every request's default, a request's own wins."""
    with ServerThread(qwen3_like, defaults=Defaults(template_kwargs={"enable_thinking": False})) as srv:
        get = lambda body: requests.post(srv.url + "/apply-template", json={"messages": HI, **body},  # noqa: E731
                                         timeout=30).json()["prompt"]
        assert get({}).endswith("<think>\n\n</think>\n\n")
        assert get({"chat_template_kwargs": {"enable_thinking": True}}).endswith("<|im_start|>assistant\n")


def test_a_block_the_prompt_opens(smollm2_path: Path) -> None:
    """DeepSeek-R1's generation prompt ends with <think>: the reply starts inside the block."""
    eng = Engine.load(smollm2_path, n_ctx=512, chat_template=R1_LIKE)
    try:
        with ServerThread(eng) as srv:
            reply = "Thinking it over.\n</think>\n\nHi!"
            msg = client(srv).chat.completions.create(model="m", messages=HI, temperature=0,
                                                      extra_body={"grammar": gbnf(reply)}).choices[0].message
            assert (msg.model_extra["reasoning_content"], msg.content) == ("Thinking it over.", "Hi!")
    finally:
        eng.close()


def test_a_template_without_the_tags_leaves_the_reply_alone(smollm2_path: Path) -> None:
    """SmolLM2's own template knows no thinking: a reply that starts with <think> is content."""
    eng = Engine.load(smollm2_path, n_ctx=512)
    try:
        with ServerThread(eng) as srv:
            msg = client(srv).chat.completions.create(model="m", messages=HI, temperature=0,
                                                      extra_body={"grammar": gbnf(REPLY)}).choices[0].message
            assert msg.content == REPLY and "reasoning_content" not in (msg.model_extra or {})
    finally:
        eng.close()


# -- what a second look found ------------------------------------------------------------------

QWQ_LIKE = (  # QwQ's and DeepSeek-R1's way: an unset enable_thinking is false to them
    "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content }}"
    "{%- if m.reasoning_content is defined %}{{- '[thought: ' + m.reasoning_content + ']' }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}"
    "{%- if not enable_thinking %}{{- '</think>\\n\\n' }}{%- endif %}{%- endif %}"
)


@pytest.fixture(scope="module")
def opened(smollm2_path: Path) -> ServerThread:
    eng = Engine.load(smollm2_path, n_ctx=512, chat_template=QWQ_LIKE)
    with ServerThread(eng) as srv:
        yield srv
    eng.close()


def test_thinking_is_on_unless_said_and_history_keeps_its_thinking(opened: ServerThread) -> None:
    """llama.cpp gives every template enable_thinking (true unless said): QwQ's read it unset as
    false and closed the block at once. An assistant message's reasoning_content reaches the template."""
    apply = lambda body: requests.post(opened.url + "/apply-template", json=body, timeout=30).json()["prompt"]  # noqa: E731
    assert apply({"messages": HI}).endswith("<|im_start|>assistant\n<think>\n")
    assert apply({"messages": HI, "reasoning_effort": "none"}).endswith("<think>\n</think>\n\n")
    history = [*HI, {"role": "assistant", "content": "Hello", "reasoning_content": "greet"}, *HI]
    assert "Hello[thought: greet]<|im_end|>" in apply({"messages": history})


def test_a_json_schema_in_an_opened_block_is_the_content(opened: ServerThread) -> None:
    """The prompt opened a block, but a response_format rules from the first token: the JSON is
    the content (it was all reasoning_content, and the content empty)."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False}
    r = client(opened).chat.completions.create(model="m", messages=HI, temperature=0, max_tokens=20, response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    msg = r.choices[0].message
    assert json.loads(msg.content)["a"] is not None and "reasoning_content" not in (msg.model_extra or {})


@pytest.mark.parametrize("body", [{"stop": ["Hi"]}, {"max_tokens": 3}, {"max_tokens": 9}])
def test_streamed_logprobs_are_every_tokens_once(server: ServerThread, body: dict) -> None:
    """Tokens whose text the split held back and then let go at the end (a stop right after the
    block, a cut inside it) lost their log-probabilities in the stream."""
    req = {"messages": HI, "temperature": 0, "grammar": gbnf(REPLY), "logprobs": True, **body}
    plain = requests.post(server.url + "/v1/chat/completions", json=req, timeout=60).json()["choices"][0]
    streamed = []
    with requests.post(server.url + "/v1/chat/completions", json={**req, "stream": True}, stream=True, timeout=60) as r:
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("data: {"):
                for c in json.loads(line[6:])["choices"]:
                    streamed += [e["token"] for e in (c.get("logprobs") or {}).get("content") or []]
    assert streamed == [e["token"] for e in plain["logprobs"]["content"]] and streamed


def test_a_prefill_inside_the_block_and_legacy_with_an_opened_block(opened: ServerThread) -> None:
    """An assistant prefill that stops inside the thinking: the reply goes on thinking. Legacy's
    content keeps the <think> the prompt opened."""
    c = client(opened)
    prefill = [*HI, {"role": "assistant", "content": "<think>\nLet me"}]
    msg = c.chat.completions.create(model="m", messages=prefill, temperature=0,
                                    extra_body={"grammar": gbnf(" see\n</think>\n\nHi")}).choices[0].message
    assert (msg.model_extra["reasoning_content"], msg.content) == (" see", "Hi")
    msg = c.chat.completions.create(model="m", messages=HI, temperature=0, extra_body={
        "grammar": gbnf("abc\n</think>\n\nHi"), "reasoning_format": "deepseek-legacy"}).choices[0].message
    assert (msg.model_extra["reasoning_content"], msg.content) == ("abc", "<think>\nabc\n</think>\n\nHi")


@pytest.mark.parametrize("key", ["add_bos", "continue_final", "self", "messages", "bos_token"])
def test_variables_llamapack_sets_are_refused(server: ServerThread, key: str) -> None:
    r = requests.post(server.url + "/v1/chat/completions", timeout=30,
                      json={"messages": HI, "chat_template_kwargs": {key: True}})
    assert r.status_code == 400 and key in r.json()["error"]["message"]
    from tests.cliutil import assert_one_line_error

    run = subprocess.run([sys.executable, "-m", "runtime", "-m", "x.gguf", "-p", "x", "--chat-template-kwargs",
                          json.dumps({key: True})], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert_one_line_error(run, "--chat-template-kwargs")
