"""runtime.chat_template's built-in templates against llama.cpp's, by name.

The oracle is llama.cpp itself, run here: llama-cpp-python's `llama_chat_apply_template(name, ...)`
renders llama.cpp's hard-coded template of that name (src/llama-chat.cpp), what `--chat-template
NAME` selects in llama.cpp; `llama_chat_builtin_templates` lists the names. Every name but our own
"mistral" must render the same text for any conversation (system or not, one or several turns,
roles llama.cpp drops, spaces and newlines it trims or keeps, non-ASCII), with and without the
generation prompt, whatever the file's BOS/EOS texts: like llama.cpp's, the built-ins write fixed
texts ("<s>", "</s>") and no BOS of their own at the start.

The prompt's tokens: llama.cpp tokenizes that text with add_special=true; llamapack tokenizes
`ChatTemplate.prompt(messages, add_bos)` with add_special=add_bos. They are the same tokens, with
two documented differences (test_prompt_tokens_equal_llama_cpps):
  * a template that starts with the vocabulary's BOS text (gigachat's "<s>") gets one BOS, where
    llama.cpp's prompt starts with two (llama.cpp warns "the final prompt starts with 2 BOS tokens");
  * a template with no system role (yandex drops system messages) gets a first system message
    folded into the next message as "system\\ntext", where llama.cpp's drops it.
"""

from __future__ import annotations

import ctypes
from functools import cache
from pathlib import Path

import pytest

from runtime.chat_template import BUILTIN_TEMPLATES, ChatTemplate, ChatTemplateError, check_override
from runtime.gguf import GGUFFile
from runtime.tokenizer import Tokenizer

MISTRAL_VOCAB = Path(__file__).parent / "fixtures" / "models" / "dense-Q8_0.gguf"  # "<s>", add_bos true
OURS_ONLY = {"mistral"}  # llama.cpp reads the name "mistral" as its "llama2" (test_chat_template.py)


def _m(role: str, content: str) -> dict:
    return {"role": role, "content": content}


CONVERSATIONS = {
    "empty": [],
    "user": [_m("user", "Hello")],
    "system_user": [_m("system", "You are terse."), _m("user", "Hi there")],
    "turns": [_m("user", "Hello"), _m("assistant", "Hi! How can I help?"), _m("user", "Tell me a joke.")],
    "system_turns": [  # llama.cpp's tests/test-chat-template.cpp conversation
        _m("system", "You are a helpful assistant"), _m("user", "Hello"), _m("assistant", "Hi there"),
        _m("user", "Who are you"), _m("assistant", "   I am an assistant   "), _m("user", "Another question"),
    ],
    "ends_with_reply": [_m("user", "2+2?"), _m("assistant", "4")],
    "spaces": [_m("system", " \n sys \t"), _m("user", "  héllo — 日本語 🙂\n\t"), _m("assistant", "\n  reply  \n"),
               _m("user", " x\r\n\v\f")],
    "non_ascii": [_m("system", "Réponds en français."), _m("user", "Привет! 你好 🙂"),
                  _m("assistant", "¡Hola! ünïcödé"), _m("user", "ß → ẞ?")],
    "reply_first": [_m("assistant", "first"), _m("user", "u")],
    "systems_and_tools": [_m("system", "s1"), _m("system", "s2"), _m("user", "u"), _m("tool", "t"),
                          _m("assistant", "a"), _m("system", "late"), _m("user", "u2")],
    "other_roles": [_m("user", "u"), _m("assistant_tool_call", "{}"), _m("ipython", "r"), _m("function", "f"),
                    _m("Éclair", "x"), _m("éclair", "y"), _m("user", "q")],
    "empty_texts": [_m("system", ""), _m("user", ""), _m("assistant", "")],
}
NAMES = sorted(set(BUILTIN_TEMPLATES) - OURS_ONLY)


@cache
def template(name: str, bos: str = "<s>", eos: str = "</s>") -> ChatTemplate:
    """A built-in, compiled once (~25 ms each) for all the cases that render it."""
    return ChatTemplate(name, bos, eos)


@pytest.fixture(scope="module")
def llama_cpp():
    try:
        import llama_cpp
    except ImportError:  # the oracle is a test dependency: a set-up failure, not a reason to skip
        pytest.fail("llama-cpp-python is not installed in this environment (the oracle of these tests)")
    return llama_cpp


def llama_cpp_render(llama_cpp, name: str, messages: list[dict], add_ass: bool) -> str:
    """llama_chat_apply_template(name, messages, add_ass): llama.cpp's built-in template's text."""
    chat = (llama_cpp.llama_chat_message * max(1, len(messages)))()
    for i, m in enumerate(messages):
        chat[i].role = m["role"].encode()  # the array keeps the bytes alive
        chat[i].content = m["content"].encode()
    size = 1 << 12
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_chat_apply_template(name.encode(), chat, len(messages), add_ass, buf, size)
        assert n >= 0, f"llama.cpp has no template {name!r}"
        if n < size:
            return buf.raw[:n].decode("utf-8")
        size = n + 1


def test_the_names_are_llama_cpps(llama_cpp):
    """Every name llama.cpp knows is a built-in here (and "mistral", ours)."""
    out = (ctypes.c_char_p * 256)()
    n = llama_cpp.llama_chat_builtin_templates(out, len(out))
    assert 0 < n <= len(out)
    assert set(NAMES) == {out[i].decode() for i in range(n)}


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("name", NAMES)
def test_builtin_renders_as_llama_cpp(llama_cpp, name: str, conversation: str):
    messages = CONVERSATIONS[conversation]
    for add_generation_prompt in (True, False):
        expected = llama_cpp_render(llama_cpp, name, messages, add_generation_prompt)
        for bos, eos in (("<s>", "</s>"), ("<|begin_of_text|>", "<|eot_id|>"), ("", "")):
            out = template(name, bos, eos).render(messages, add_generation_prompt)
            assert out == expected, (add_generation_prompt, bos, eos)


@pytest.fixture(scope="module")
def vocab(llama_cpp):
    """The tiny model with Mistral's vocabulary (BOS "<s>", add_bos_token true): its metadata, our
    tokenizer of it, and llama.cpp's."""
    meta = GGUFFile(str(MISTRAL_VOCAB)).metadata
    assert meta["tokenizer.ggml.add_bos_token"] is True
    theirs = llama_cpp.Llama(str(MISTRAL_VOCAB), vocab_only=True, verbose=False)
    return meta, Tokenizer.from_gguf_metadata(meta), theirs


@pytest.mark.parametrize("name", NAMES)
def test_prompt_tokens_equal_llama_cpps(llama_cpp, vocab, name: str):
    """ChatTemplate.from_metadata(--chat-template NAME).prompt(...) tokenized by llamapack ==
    llama.cpp's text for NAME tokenized by llama.cpp with add_special=true, but the two documented
    differences (module docstring)."""
    meta, ours, theirs = vocab
    template = ChatTemplate.from_metadata(meta, override=name)
    assert (template.name, template.bos_token) == (name, "<s>")
    for conversation in ("user", "system_user", "system_turns", "spaces", "non_ascii"):
        messages = CONVERSATIONS[conversation]
        for add_generation_prompt in (True, False):
            text = llama_cpp_render(llama_cpp, name, messages, add_generation_prompt)
            expected = theirs.tokenize(text.encode(), add_bos=True, special=True)
            prompt = template.prompt(messages, add_bos=True, add_generation_prompt=add_generation_prompt)
            tokens = ours.tokenize(prompt, add_special=True, parse_special=True)
            if name == "gigachat":  # "<s>" written by the template: one BOS here, two in llama.cpp
                assert text.startswith("<s>") and expected[:2] == [1, 1]
                assert tokens == expected[1:]
            elif name == "yandex" and messages[0]["role"] == "system":  # no system role: folded
                folded = [_m(messages[1]["role"], messages[0]["content"] + "\n" + messages[1]["content"]),
                          *messages[2:]]
                assert prompt == llama_cpp_render(llama_cpp, name, folded, add_generation_prompt)
                assert messages[0]["content"] not in text and messages[0]["content"] in prompt
            else:
                assert tokens == expected, conversation
                assert prompt == text


@pytest.mark.parametrize("name", ["gigachat", "smolvlm", "hunyuan-vl"])
def test_a_template_that_writes_bos_loses_it_when_the_tokenizer_adds_it(llama_cpp, name: str):
    """The three that start with a BOS text of their own, with a vocabulary whose BOS is that text."""
    text = llama_cpp_render(llama_cpp, name, CONVERSATIONS["user"], True)
    bos = {"gigachat": "<s>", "smolvlm": "<|im_start|>", "hunyuan-vl": "<｜hy_begin▁of▁sentence｜>"}[name]
    assert text.startswith(bos)
    template = ChatTemplate(name, bos, "</s>")
    assert template.prompt(CONVERSATIONS["user"], add_bos=True) == text[len(bos):]
    assert template.prompt(CONVERSATIONS["user"], add_bos=False) == text
    assert ChatTemplate(name, "<other>", "</s>").prompt(CONVERSATIONS["user"], add_bos=True) == text


def test_every_builtin_but_yandex_shows_a_system_message():
    """prompt() folds a system message only where the template drops it (_takes_system)."""
    dropped = [n for n in BUILTIN_TEMPLATES if not template(n)._takes_system()]
    assert dropped == ["yandex"]


def test_every_name_is_accepted_and_listed():
    for name in BUILTIN_TEMPLATES:
        assert check_override(name) == name
        assert ChatTemplate.from_metadata({}, override=name).name == name
    with pytest.raises(ChatTemplateError) as info:
        check_override("mistral-v2")
    message = str(info.value)
    head, listed = "unknown chat template 'mistral-v2': a name (", ") or Jinja source"
    assert "\n" not in message and message.startswith(head) and message.endswith(listed)
    assert message[len(head):-len(listed)].split(", ") == list(BUILTIN_TEMPLATES)
