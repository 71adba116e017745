"""runtime.chat_template's built-in templates against llama.cpp's, by name.

The oracle is llama.cpp itself, recorded by tools/make_chat_builtin_fixtures.py (dev only: CI has no
llama-cpp-python) in tests/fixtures/chat/builtin.llama_cpp.json: `llama_chat_apply_template(name,
...)` renders llama.cpp's hard-coded template of that name (src/llama-chat.cpp), what
`--chat-template NAME` selects in llama.cpp; `llama_chat_builtin_templates` lists the names. Every name but our own
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

import json
from functools import cache
from pathlib import Path

import pytest

from runtime.chat_template import BUILTIN_TEMPLATES, ChatTemplate, ChatTemplateError, check_override
from runtime.gguf import GGUFFile
from runtime.tokenizer import Tokenizer

MISTRAL_VOCAB = Path(__file__).parent / "fixtures" / "models" / "dense-Q8_0.gguf"  # "<s>", add_bos true
OURS_ONLY = {"mistral"}  # llama.cpp reads the name "mistral" as its "llama2" (test_chat_template.py)


RECORDED = json.loads((Path(__file__).parent / "fixtures" / "chat" / "builtin.llama_cpp.json").read_text("utf-8"))
CONVERSATIONS: dict[str, list[dict]] = RECORDED["conversations"]


def _m(role: str, content: str) -> dict:
    return {"role": role, "content": content}
NAMES = sorted(set(BUILTIN_TEMPLATES) - OURS_ONLY)


@cache
def template(name: str, bos: str = "<s>", eos: str = "</s>") -> ChatTemplate:
    """A built-in, compiled once (~25 ms each) for all the cases that render it."""
    return ChatTemplate(name, bos, eos)


def llama_cpp_render(name: str, conversation: str, add_ass: bool) -> str:
    """What llama_chat_apply_template(name, the conversation, add_ass) rendered (recorded)."""
    return RECORDED["renders"][name][conversation][0 if add_ass else 1]


def test_the_names_are_llama_cpps():
    """Every name llama.cpp knows is a built-in here (and "mistral", ours)."""
    assert set(NAMES) == set(RECORDED["names"])


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("name", NAMES)
def test_builtin_renders_as_llama_cpp(name: str, conversation: str):
    messages = CONVERSATIONS[conversation]
    for add_generation_prompt in (True, False):
        expected = llama_cpp_render(name, conversation, add_generation_prompt)
        for bos, eos in (("<s>", "</s>"), ("<|begin_of_text|>", "<|eot_id|>"), ("", "")):
            out = template(name, bos, eos).render(messages, add_generation_prompt)
            assert out == expected, (add_generation_prompt, bos, eos)


@pytest.fixture(scope="module")
def vocab():
    """The tiny model with Mistral's vocabulary (BOS "<s>", add_bos_token true): its metadata and our
    tokenizer of it (llama.cpp's tokens of each text are recorded)."""
    meta = GGUFFile(str(MISTRAL_VOCAB)).metadata
    assert meta["tokenizer.ggml.add_bos_token"] is True
    return meta, Tokenizer.from_gguf_metadata(meta)


@pytest.mark.parametrize("name", NAMES)
def test_prompt_tokens_equal_llama_cpps(vocab, name: str):
    """ChatTemplate.from_metadata(--chat-template NAME).prompt(...) tokenized by llamapack ==
    llama.cpp's text for NAME tokenized by llama.cpp with add_special=true, but the two documented
    differences (module docstring)."""
    meta, ours = vocab
    template = ChatTemplate.from_metadata(meta, override=name)
    assert (template.name, template.bos_token) == (name, "<s>")
    for conversation in RECORDED["token_cases"]:
        messages = CONVERSATIONS[conversation]
        for add_generation_prompt in (True, False):
            text = llama_cpp_render(name, conversation, add_generation_prompt)
            expected = RECORDED["tokens"][name][conversation][0 if add_generation_prompt else 1]
            prompt = template.prompt(messages, add_bos=True, add_generation_prompt=add_generation_prompt)
            tokens = ours.tokenize(prompt, add_special=True, parse_special=True)
            if name == "gigachat":  # "<s>" written by the template: one BOS here, two in llama.cpp
                assert text.startswith("<s>") and expected[:2] == [1, 1]
                assert tokens == expected[1:]
            elif name == "yandex" and messages[0]["role"] == "system":  # no system role: folded
                folded = [_m(messages[1]["role"], messages[0]["content"] + "\n" + messages[1]["content"]),
                          *messages[2:]]
                assert prompt == template.prompt(folded, add_bos=True, add_generation_prompt=add_generation_prompt)
                assert template.render(folded, add_generation_prompt) == prompt
                assert messages[0]["content"] not in text and messages[0]["content"] in prompt
            else:
                assert tokens == expected, conversation
                assert prompt == text


@pytest.mark.parametrize("name", ["gigachat", "smolvlm", "hunyuan-vl"])
def test_a_template_that_writes_bos_loses_it_when_the_tokenizer_adds_it(name: str):
    """The three that start with a BOS text of their own, with a vocabulary whose BOS is that text."""
    text = llama_cpp_render(name, "user", True)
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
