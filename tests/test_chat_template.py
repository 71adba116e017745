"""Tests for runtime.chat_template.

tests/fixtures/chat/expected.json (tools/make_chat_fixtures.py) holds two oracles' outputs:
llama-cpp-python's Jinja2ChatFormatter (Hugging Face semantics) for the SmolLM2 GGUF's template
and Mistral-7B-Instruct-v0.2's official templates, and llama.cpp's hard-coded templates by name.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from runtime.chat_template import BUILTIN_TEMPLATES, ChatTemplate, ChatTemplateError
from runtime.gguf import GGUFFile

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "chat" / "expected.json").read_text("utf-8"))
CONVERSATIONS = FIXTURE["conversations"]
MISTRAL_META = {  # a GGUF without tokenizer.chat_template (Mistral's vocabulary starts like this)
    "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>", "▁hello"],
    "tokenizer.ggml.bos_token_id": 1,
    "tokenizer.ggml.eos_token_id": 2,
}


def _case_id(case: dict) -> str:
    name = case.get("template") or case.get("name")
    return f"{name}-{case['conversation']}-{'gen' if case['add_generation_prompt'] else 'nogen'}"


def _render(source: str, tokens: dict, conversation: str, add_generation_prompt: bool) -> str:
    return ChatTemplate(source, **tokens).render(CONVERSATIONS[conversation], add_generation_prompt)


# ------------------------------------------------------------------------------ oracle fixtures

@pytest.mark.parametrize("case", FIXTURE["jinja"], ids=_case_id)
def test_jinja_matches_hf_semantics(case):
    source, tokens = FIXTURE["templates"][case["template"]], FIXTURE["tokens"][case["template"]]
    if case["error"] is None:
        assert _render(source, tokens, case["conversation"], case["add_generation_prompt"]) == case["expected"]
    else:
        with pytest.raises(ChatTemplateError) as info:
            _render(source, tokens, case["conversation"], case["add_generation_prompt"])
        assert case["error"] in str(info.value)


@pytest.mark.parametrize("case", FIXTURE["llama_cpp_builtin"], ids=_case_id)
def test_builtin_names_match_llama_cpp(case):
    tmpl = ChatTemplate(case["name"], bos_token="<s>", eos_token="</s>")
    assert tmpl.render(CONVERSATIONS[case["conversation"]], case["add_generation_prompt"]) == case["expected"]


def test_smollm2_gguf_template(smollm2_path):
    meta = GGUFFile(smollm2_path).metadata
    tmpl = ChatTemplate.from_metadata(meta)
    assert tmpl.name == "gguf"
    assert tmpl.source == FIXTURE["templates"]["smollm2"]
    assert (tmpl.bos_token, tmpl.eos_token) == ("<|im_start|>", "<|im_end|>")
    expected = next(c["expected"] for c in FIXTURE["jinja"] if c["template"] == "smollm2"
                    and c["conversation"] == "single" and c["add_generation_prompt"])
    assert tmpl.render(CONVERSATIONS["single"]) == expected
    assert expected.endswith("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
    # add_bos_token is false for SmolLM2: nothing is stripped
    assert tmpl.prompt(CONVERSATIONS["single"], add_bos=meta["tokenizer.ggml.add_bos_token"]) == expected


# ------------------------------------------------------------------------- Mistral, the fallback

def test_missing_template_is_mistral():
    tmpl = ChatTemplate.from_metadata(MISTRAL_META)
    assert tmpl.name == "mistral"
    assert tmpl.render([{"role": "user", "content": "Hello"}]) == "<s>[INST] Hello [/INST]"
    conv = CONVERSATIONS["multi"]
    assert tmpl.render(conv) == "<s>[INST] Hello [/INST]Hi! How can I help?</s>[INST] Tell me a joke. [/INST]"


@pytest.mark.parametrize("conversation", ["single", "multi", "ends_assistant", "unicode"])
def test_mistral_equals_official_v02_without_system(conversation):
    official = ChatTemplate(FIXTURE["templates"]["mistral-v0.2"], "<s>", "</s>")
    ours = ChatTemplate.from_metadata(MISTRAL_META)
    for agp in (True, False):
        assert ours.render(CONVERSATIONS[conversation], agp) == official.render(CONVERSATIONS[conversation], agp)


def test_mistral_system_folded_into_first_user_turn():
    tmpl = ChatTemplate.from_metadata(MISTRAL_META)
    assert tmpl.render(CONVERSATIONS["system"]) == "<s>[INST] You are terse.\n\nHi there [/INST]"
    assert tmpl.render(CONVERSATIONS["system_multi"]) == (
        "<s>[INST] You are a helpful assistant\n\nHello [/INST]Hi there</s>"
        "[INST] Who are you [/INST]   I am an assistant   </s>[INST] Another question [/INST]"
    )


@pytest.mark.parametrize("conversation", ["bad_order", "tool_role"])
def test_mistral_rejects_bad_roles(conversation):
    with pytest.raises(ChatTemplateError, match="chat template raised: "):
        ChatTemplate.from_metadata(MISTRAL_META).render(CONVERSATIONS[conversation])


def test_prompt_strips_bos_only_when_tokenizer_adds_it():
    tmpl = ChatTemplate.from_metadata(MISTRAL_META)
    conv = CONVERSATIONS["single"]
    assert tmpl.prompt(conv, add_bos=True) == "[INST] Hello [/INST]"
    assert tmpl.prompt(conv, add_bos=False) == "<s>[INST] Hello [/INST]"
    assert ChatTemplate("x{{ bos_token }}", "<s>").prompt(conv, add_bos=True) == "x<s>"


# ---------------------------------------------------------------------------- override, tokens

def test_override_by_name_and_by_source(smollm2_path):
    meta = GGUFFile(smollm2_path).metadata
    assert ChatTemplate.from_metadata(meta, override="mistral").render(CONVERSATIONS["single"]) == (
        "<|im_start|>[INST] Hello [/INST]")  # SmolLM2's BOS text is <|im_start|>
    tmpl = ChatTemplate.from_metadata(meta, override="{{ messages[0].content | upper }}")
    assert tmpl.name == "custom" and tmpl.render(CONVERSATIONS["single"]) == "HELLO"
    assert ChatTemplate.from_metadata(MISTRAL_META, override="chatml").name == "chatml"
    assert set(BUILTIN_TEMPLATES) == {"chatml", "mistral", "llama2", "llama3", "zephyr", "gemma"}


def test_missing_or_bad_token_ids_give_empty_strings():
    tmpl = ChatTemplate.from_metadata({"tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.eos_token_id": 7})
    assert (tmpl.bos_token, tmpl.eos_token) == ("", "")
    assert ChatTemplate.from_metadata({}, tokens=["<s>", "</s>"]).bos_token == ""


# ------------------------------------------------------------------------ HF environment details

def test_tojson_like_hf():
    out = ChatTemplate("{{ messages | tojson }}").render([{"role": "user", "content": "é <b> & 日"}])
    assert out == '[{"role": "user", "content": "é <b> & 日"}]'
    out = ChatTemplate("{{ messages[0] | tojson(indent=2) }}").render([{"role": "user", "content": "x"}])
    assert out == '{\n  "role": "user",\n  "content": "x"\n}'


def test_strftime_now():
    assert ChatTemplate("{{ strftime_now('%Y') }}").render([]) == str(datetime.now().year)


def test_trim_and_lstrip_blocks():
    source = "{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}"
    assert ChatTemplate(source).render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]) == "a\nb\n"


def test_loopcontrols_and_generation_tag():
    source = ("{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
              "{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}")
    assert ChatTemplate(source).render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]) == "a"


def test_extra_variables_pass_through():
    assert ChatTemplate("{{ tools | length }}").render([], tools=[{"name": "f"}]) == "1"
    assert ChatTemplate("{{ add_generation_prompt }}").render([], add_generation_prompt=False) == "False"


# ----------------------------------------------------------------------------- errors, sandbox

def test_raise_exception_is_one_line_error():
    with pytest.raises(ChatTemplateError) as info:
        ChatTemplate("{{ raise_exception('bad\\nroles') }}").render([])
    assert str(info.value) == "chat template raised: bad roles"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("source", ["{% for %}", "{{ 'a' + }}", "{% if x %}unclosed"])
def test_syntax_error_at_construction(source):
    with pytest.raises(ChatTemplateError) as info:
        ChatTemplate(source)
    assert "\n" not in str(info.value) and "TemplateSyntaxError" in str(info.value)


@pytest.mark.parametrize("source", [
    "{{ undefined_thing.attr }}",
    "{{ messages[0].content + 1 }}",
    "{{ 1 / 0 }}",
])
def test_runtime_errors_are_chat_template_errors(source):
    with pytest.raises(ChatTemplateError) as info:
        ChatTemplate(source).render([{"role": "user", "content": "x"}])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__ }}",
    "{{ cycler.__init__.__globals__.os.system('touch {marker}') }}",
    "{{ lipsum.__globals__['os'].popen('touch {marker}').read() }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch {marker}') }}",
    "{% set x = messages.append({'role': 'user', 'content': 'injected'}) %}",
])
def test_sandbox_escape_raises_and_runs_nothing(source, tmp_path):
    marker = tmp_path / "pwned"
    meta = dict(MISTRAL_META, **{"tokenizer.chat_template": source.replace("{marker}", str(marker))})
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(ChatTemplateError) as info:
        ChatTemplate.from_metadata(meta).render(messages)
    assert "unsafe" in str(info.value) or "SecurityError" in str(info.value) or "undefined" in str(info.value)
    assert not marker.exists()
    assert messages == [{"role": "user", "content": "x"}]
