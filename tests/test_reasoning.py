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
