"""Tests for runtime.chat_template.

tests/fixtures/chat/expected.json (tools/make_chat_fixtures.py) holds two oracles' outputs:
llama-cpp-python's Jinja2ChatFormatter (Hugging Face semantics) for the SmolLM2 GGUF's template
and Mistral-7B-Instruct-v0.2's official templates, and llama.cpp's hard-coded templates by name.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from datetime import datetime
from pathlib import Path

import pytest

from runtime.chat_sandbox import Limits
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


@pytest.mark.parametrize("arch,turn_tokens,name", [
    ("llama", ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "llama3"),
    ("llama", ["<|im_start|>", "<|im_end|>"], "chatml"),
    ("gemma3", ["<start_of_turn>", "<end_of_turn>"], "gemma"),
    ("phi3", ["<|user|>", "<|assistant|>", "<|end|>", "<|system|>"], "phi3"),
    ("qwen2", ["<|endoftext|>"], "chatml"),  # no family's turn tokens: the architecture decides
    ("llama", ["<|im_start|>"], "mistral"),  # half a family's tokens is not that family
])
def test_missing_template_follows_the_vocabularys_turn_tokens(arch, turn_tokens, name):
    """A template-less file chats in the format whose turn tokens its vocabulary holds (a Llama 3
    file of architecture `llama` is not Mistral), each rendering llama.cpp's built-in of that name
    (test_builtin_names_match_llama_cpp)."""
    meta = {"general.architecture": arch, "tokenizer.ggml.tokens": ["<s>", "</s>", "a", *turn_tokens],
            "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 1}
    tmpl = ChatTemplate.from_metadata(meta)
    assert tmpl.name == name
    assert tmpl.render(CONVERSATIONS["system"]) == ChatTemplate(name, "<s>", "</s>").render(CONVERSATIONS["system"])


def test_a_file_template_that_does_not_compile_falls_back_with_a_note():
    """The model still runs (a one-shot prompt does not need the template) and chats in the
    format its vocabulary names, as llama.cpp falls back to its default; an override that does
    not compile is the user's own error."""
    meta = {"general.architecture": "llama", "tokenizer.chat_template": "{% for m in messages %}{% do x %}{% endfor %}",
            "tokenizer.ggml.tokens": ["<s>", "</s>", "<|im_start|>", "<|im_end|>"],
            "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 1}
    tmpl = ChatTemplate.from_metadata(meta)
    assert tmpl.name == "chatml" and tmpl.note is not None
    assert tmpl.note.startswith("the model's chat template does not compile (") and "chatting in chatml" in tmpl.note
    assert ChatTemplate.from_metadata({**meta, "tokenizer.chat_template": "{{ messages[0].content }}"}).note is None
    with pytest.raises(ChatTemplateError):
        ChatTemplate.from_metadata(meta, override="{% for m in messages %}{% do x %}{% endfor %}")


# llama.cpp's tests/test-chat-template.cpp: two official templates without a system role, its
# conversation, and the prompt its Jinja path makes (the system message folded into the first
# user turn with "\n": common/chat.cpp, system_message_not_supported)
LLAMA_CPP_CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant"}, {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"}, {"role": "user", "content": "Who are you"},
    {"role": "assistant", "content": "   I am an assistant   "}, {"role": "user", "content": "Another question"},
]
NO_SYSTEM_ROLE = {
    "mistral-7b-instruct-v0.2": (
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
        "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an "
        "assistant   </s>[INST] Another question [/INST]"),
    "gemma-7b-it": (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
        "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}",
        "<start_of_turn>user\nYou are a helpful assistant\nHello<end_of_turn>\n<start_of_turn>model\nHi there"
        "<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an assistant"
        "<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n"),
}


@pytest.mark.parametrize("name", sorted(NO_SYSTEM_ROLE))
def test_a_system_message_goes_into_the_first_turn_where_the_template_has_no_system_role(name):
    """Mistral 7B Instruct v0.2's and Gemma 1's official templates raise on a system message (the
    web page sends its system prompt as one): folded into the next message, as llama.cpp does."""
    source, expected = NO_SYSTEM_ROLE[name]
    tmpl = ChatTemplate(source, bos_token="", eos_token="</s>")
    assert tmpl.prompt(LLAMA_CPP_CONVERSATION, add_bos=False) == expected
    with pytest.raises(ChatTemplateError):  # render() is the template's own output: it refuses
        tmpl.render(LLAMA_CPP_CONVERSATION)
    if name.startswith("mistral"):  # alone: dropped
        assert tmpl.prompt(LLAMA_CPP_CONVERSATION[:1], add_bos=False) == tmpl.render([]) == ""
    # a template with a system role keeps it where it is
    chatml = ChatTemplate("chatml")
    assert chatml.prompt(LLAMA_CPP_CONVERSATION[:2], add_bos=False).startswith(
        "<|im_start|>system\nYou are a helpful assistant")


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
    # llama.cpp's names (tests/test_chat_template_builtin.py holds them all against llama.cpp)
    assert {"chatml", "mistral", "llama2", "llama3", "zephyr", "gemma", "phi3", "phi4", "vicuna",
            "mistral-v7", "deepseek3", "command-r"} <= set(BUILTIN_TEMPLATES)
    assert ChatTemplate.from_metadata(meta, override="phi4").render(CONVERSATIONS["single"]) == (
        "<|im_start|>user<|im_sep|>Hello<|im_end|><|im_start|>assistant<|im_sep|>")
    # a word that names no template is refused: it would be a template whose output is that word
    for word in ("llama3x", "phi5", "Vicuna"):
        with pytest.raises(ChatTemplateError, match=f"unknown chat template '{word}'"):
            ChatTemplate.from_metadata(meta, override=word)
    assert ChatTemplate.from_metadata(meta, override="{% for m in messages %}x{% endfor %}").name == "custom"


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


# -- hostile templates: bounded in time, size and memory (runtime/chat_sandbox.py) --------------------

USER = [{"role": "user", "content": "x"}]
SHORT = Limits(seconds=0.5)


def render_error(source: str, limits: Limits = SHORT, **extra) -> str:
    template = ChatTemplate(source)
    template.limits = limits
    t0 = time.monotonic()
    with pytest.raises(ChatTemplateError) as info:
        template.render(USER, **extra)
    assert time.monotonic() - t0 < limits.seconds + 5  # generous: "it stops", not a speed claim
    message = str(info.value)
    assert "\n" not in message and message.startswith("chat template")
    return message


@pytest.mark.parametrize("source", [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% set x = i * j %}{% endfor %}{% endfor %}",
])
def test_endless_loops_stop_at_the_time_limit(source):
    assert "longer than 0.5 s of CPU time" in render_error(source)


def test_the_time_limit_counts_the_renders_cpu_time_not_the_wall_clock():
    """A render that waits (a loaded or emulated machine: here a function that sleeps) is not a
    loop: a server under load must not refuse its model's template."""
    template = ChatTemplate("{{ nap() }}{% for m in messages %}{{ m.content }}{% endfor %}")
    template.limits = Limits(seconds=0.2)
    assert template.render(USER, nap=lambda: time.sleep(0.6) or "") == "x"


@pytest.mark.parametrize("source", [
    "{{ 'a' * 10**9 }}",
    "{% set n = 10**9 %}{{ 'a' * n }}",
    "{{ [0] * 10**9 }}",
    "{{ 10**9 * 'a' }}",
    "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set b %}{{ ns.s }}{{ ns.s }}{% endset %}"
    "{% set ns.s = b %}{% endfor %}",
    "{{ 'a'|center(1000000000) }}",
    "{{ 'a'.center(1000000000) }}",
    "{{ 'a'.ljust(1000000000) }}",
    "{{ 'a'|indent(1000000000) }}",
    "{{ '%1000000000s'|format('a') }}",
    "{{ '%1000000000s' % 'a' }}",
    "{{ '%*s' % (1000000000, 'a') }}",
    "{{ '{:>1000000000}'.format('a') }}",
    "{{ '{:>{w}}'.format('a', w=1000000000) }}",
    "{% set s = 'a' * 100000 %}{{ s.replace('', s) }}",
    "{% set s = 'a' * 100000 %}{{ s|replace('a', s) }}",
    "{% set s = 'a' * 100000 %}{{ s.join(range(100000)|map('string')) }}",
    "{% set s = 'a' * 100000 %}{{ range(100000)|join(s) }}",
    "{{ [1]|batch(1000000000, 'x')|list|length }}",
    "{{ (1).to_bytes(1000000000, 'big') }}",
    "{{ range(100000)|map('list')|sum(start=[]) }}",
    "{% for i in range(100000) %}{{ 'a' * 1000 }}{% endfor %}",
    "{{ 2 ** 1000000000 }}",
    "{% set ns = namespace(n=3) %}{% for i in range(30) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
])
def test_huge_strings_lists_and_numbers_are_refused(source):
    message = render_error(source, Limits(seconds=60))  # the size checks, not the clock, must stop these
    assert "SecurityError" in message or "refuse" in message


def test_folding_a_huge_constant_at_compile_time_takes_no_memory():
    # jinja2 computes constant expressions while compiling: 'a' * 10**9 would be 1 GB there
    tracemalloc.start()
    try:
        template = ChatTemplate("{{ 'a' * 10**9 }}{{ 'b'|center(1000000000) }}{{ '%1000000000s' % 'c' }}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20
    with pytest.raises(ChatTemplateError):
        template.render(USER)


def test_range_and_recursion_limits_are_one_line():
    slow_ok = Limits(seconds=60)
    assert "Range too big" in render_error("{% for i in range(10**12) %}x{% endfor %}", slow_ok)
    assert "recursion" in render_error("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", slow_ok)
    assert "recursion" in render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", slow_ok)


def test_memory_error_is_one_line():
    def exhausted():
        raise MemoryError()

    assert render_error("{{ boom() }}", Limits(seconds=60), boom=exhausted) == \
        "chat template: out of memory while rendering"


def test_memory_held_by_a_render_is_bounded():
    # a list growing by 100,000-item lists: each step is small, the total is not
    source = ("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}"
              "{% set ns.l = ns.l + [range(100000)|list] %}{% endfor %}")
    message = render_error(source, Limits(seconds=30, memory=256 << 20))
    assert "more than 256 MiB of memory" in message


def test_output_size_is_bounded_and_large_messages_still_render():
    assert "longer than 1000 characters" in render_error(
        "{% for i in range(100) %}{{ 'a' * 100 }}{% endfor %}", Limits(seconds=60, size=1000))
    big = "x" * (8 << 20)  # as much as a request body holds
    text = ChatTemplate("chatml").render([{"role": "user", "content": big}])
    assert big in text


def test_limits_leave_the_tracer_as_it_was():
    import sys

    def tracer(frame, event, arg):
        return None

    sys.settrace(tracer)
    try:
        ChatTemplate("chatml").render(USER)
        with pytest.raises(ChatTemplateError):
            ChatTemplate("{{ 'a' * 10**9 }}").render(USER)
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(None)
