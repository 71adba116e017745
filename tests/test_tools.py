"""Tests for runtime/tools (tool-call formats, grammars, parsing, the constraint) and the request
side of runtime/server/tools.py, without a model.

Oracles: the real chat templates of Mistral Nemo, Llama 3.1 and Hermes 2 Pro (tests/fixtures/chat,
copied from llama.cpp's source tree) and Qwen2.5-Coder's (its GGUF), rendered by plain jinja2 the way
Hugging Face transformers renders them (sandbox, trim_blocks, lstrip_blocks, json.dumps as tojson)
from a conversation written by hand in Hugging Face's shape; the calls those templates write for an
assistant turn are the model's own format, which the parser must read back and the grammar must
accept; `jsonschema` checks arguments generated under the grammar.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import jinja2
import jinja2.ext
import jsonschema
import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runtime.chat_template import ChatTemplate
from runtime.decoding import Decoding
from runtime.gguf import GGUFFile
from runtime.grammar.constraint import compile_grammar
from runtime.server.errors import APIError
from runtime.server.openai import _messages
from runtime.server.params import Fields
from runtime.server.tools import ToolStream, tool_plan
from runtime.tokenizer import Tokenizer
from runtime.tools import ToolError, detect_format, read_tool_request
from runtime.tools.constraint import ToolConstraint
from runtime.tools.parse import COMPLETE, PARTIAL
from tools.random_gguf import VT, rewrite_gguf

CHAT = Path(__file__).parent / "fixtures" / "chat"
TEMPLATES = {
    "mistral": ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>"),
    "mistral-args": ("Mistral-Small-3.2-24B-Instruct-2506.jinja", "<s>", "</s>"),
    "llama3": ("meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "hermes": ("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", "<|begin_of_text|>", "<|im_end|>"),
}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The city", "maxLength": 12},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Unit"}},
        "required": ["city"]}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Adds two integers",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": -99, "maximum": 99,
                                                          "description": "First"},
                                                    "b": {"type": "integer", "minimum": 0, "maximum": 9,
                                                          "description": "Second"}},
                   "required": ["a", "b"], "additionalProperties": False}}}
TOOLS = [WEATHER, ADD]


TINY = Path(__file__).parent / "fixtures" / "models" / "dense-Q8_0.gguf"
MARKERS = ("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "<|python_tag|>")


def tiny_with_markers(dst: Path) -> Path:
    """The tiny random model (Mistral's first 512 pieces) with the tool formats' markers as control
    tokens 508.. (as in Mistral's and Llama 3's own vocabularies) and room for 2048 positions."""
    md = GGUFFile(TINY).metadata
    tokens, types = list(md["tokenizer.ggml.tokens"]), list(md["tokenizer.ggml.token_type"])
    for i, m in enumerate(MARKERS):
        tokens[508 + i], types[508 + i] = m, 3                     # CONTROL
    return rewrite_gguf(TINY, dst, keys={"llama.context_length": (2048, VT.UINT32),
                                         "tokenizer.ggml.tokens": (tokens, VT.ARRAY, VT.STRING),
                                         "tokenizer.ggml.token_type": (types, VT.ARRAY, VT.INT32)})


def template_source(name: str, qwen_path: Path | None = None) -> tuple[str, str, str]:
    if name == "qwen":
        return GGUFFile(qwen_path).metadata["tokenizer.chat_template"], "", "<|im_end|>"
    file, bos, eos = TEMPLATES[name]
    return (CHAT / file).read_text("utf-8"), bos, eos


def hf_render(source: str, messages: list, bos: str, eos: str, add_generation_prompt: bool = True,
              **variables) -> str:
    """What transformers' apply_chat_template renders (its jinja settings), with plain jinja2."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: \
        json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def raise_exception(msg: str) -> None:
        raise jinja2.TemplateError(msg)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source).render(messages=messages, bos_token=bos, eos_token=eos,
                                          add_generation_prompt=add_generation_prompt, **variables)


def conversation(call_id: str) -> tuple[list, list]:
    """A call and its result: as an OpenAI client sends it, and as Hugging Face templates take it."""
    openai_form = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "{\"temperature\": 21}"},
        {"role": "assistant", "content": "21 °C."},
        {"role": "user", "content": "And 2+3?"},
    ]
    hf_form = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "{\"temperature\": 21}"},
        {"role": "assistant", "content": "21 °C."},
        {"role": "user", "content": "And 2+3?"},
    ]
    return openai_form, hf_form


def plan_for(source: str, bos: str, eos: str, body: dict):
    template = ChatTemplate(source, bos, eos)
    f = Fields(body)
    return template, tool_plan(f, template, _messages(f), False)


# ----------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("name", [*TEMPLATES, "qwen"])
def test_history_renders_as_hugging_face_renders_it(name, qwen25_coder_path):
    source, bos, eos = template_source(name, qwen25_coder_path)
    call_id = "a1B2c3D4e"        # Mistral's templates want 9 letters and digits
    openai_form, hf_form = conversation(call_id)
    if name == "llama3":         # one call per turn, and no system message beside the tools
        openai_form, hf_form = openai_form[1:], hf_form[1:]
    template, plan = plan_for(source, bos, eos, {"messages": openai_form, "tools": TOOLS})
    assert plan.fmt.name == ("hermes" if name == "qwen" else name)
    tools = [{"type": "function", "function": t["function"]} for t in TOOLS]
    assert plan.prompt(template, add_bos=False) == hf_render(source, hf_form, bos, eos, tools=tools)


def test_mistral_shows_openai_ids_as_nine_characters_of_their_own():
    source, bos, eos = template_source("mistral")
    openai_form, _ = conversation("call_Zx81bQ2LmN0pA7sKd3Fv9YtE")
    template, plan = plan_for(source, bos, eos, {"messages": openai_form, "tools": TOOLS})
    text = plan.prompt(template, add_bos=False)   # the template raises for any other id length
    ids = re.findall(r'"id": "(\w+)"', text) + re.findall(r'"call_id": "(\w+)"', text)
    assert len(ids) == 2 and ids[0] == ids[1] and len(ids[0]) == 9


def test_generic_format_describes_tools_and_writes_the_history_as_json(smollm2_path):
    source = GGUFFile(smollm2_path).metadata["tokenizer.chat_template"]
    openai_form, _ = conversation("call_1")
    template, plan = plan_for(source, "", "", {"messages": openai_form, "tools": TOOLS, "tool_choice": "required"})
    assert plan.fmt.name == "generic"
    text = plan.prompt(template, add_bos=False)
    system = text.split("<|im_end|>")[0]
    assert "You are terse." in system and '"name": "get_weather"' in system and '"response"' not in system
    assert '<|im_start|>assistant\n{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"' in text
    assert '<|im_start|>user\n{"tool_response": {"tool_call_id": "call_1", "content": "{\\"temperature\\": 21}"}}' \
        in text


# ----------------------------------------------------------------------------- parsing what templates write

ASSISTANT_TURN = {    # where the template writes an assistant turn: (start marker, end marker)
    "mistral": ("[/INST]", "</s>"),
    "mistral-args": ("[/INST]", "</s>"),
    "llama3": ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
    "hermes": ("<|im_start|>assistant\n", "<|im_end|>"),
    "qwen": ("<|im_start|>assistant\n", "<|im_end|>"),
}


def written_calls(name: str, calls: list, qwen_path: Path | None) -> tuple[str, object]:
    """The text a template writes for an assistant turn with `calls`, and the template's format."""
    source, bos, eos = template_source(name, qwen_path)
    hf_calls = [{"id": f"abcdefgh{i}", "type": "function", "function": {"name": n, "arguments": a}}
                for i, (n, a) in enumerate(calls)]
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": hf_calls}]
    text = hf_render(source, messages, bos, eos, add_generation_prompt=False, tools=TOOLS)
    start, end = ASSISTANT_TURN[name]
    if name in ("hermes", "qwen"):      # their templates write the role line and the calls each after "\n"
        start = "<|im_start|>assistant"
    turn = text[text.rindex(start) + len(start):]
    return turn[:turn.index(end)].lstrip("\n"), detect_format(source)


@pytest.mark.parametrize("name", [*TEMPLATES, "qwen"])
def test_parse_reads_the_calls_the_template_writes(name, qwen25_coder_path):
    calls = [("get_weather", {"city": "Paris", "unit": "celsius"})]
    if name != "llama3":               # Llama 3.1 writes one call per turn
        calls.append(("add", {"a": 2, "b": 3}))
    text, fmt = written_calls(name, calls, qwen25_coder_path)
    parsed = fmt.parse(text, final=True)
    assert parsed.state == COMPLETE and parsed.content == ""
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == calls


@pytest.mark.parametrize("name", [*TEMPLATES, "qwen"])
def test_the_call_grammar_accepts_what_the_template_writes(name, qwen25_coder_path):
    text, fmt = written_calls(name, [("add", {"a": 2, "b": 3})], qwen25_coder_path)
    req = read_tool_request({"tools": TOOLS, "tool_choice": "required"})
    matcher = compile_grammar(fmt.body_gbnf(req))
    trig = fmt.triggers[0]
    assert text.startswith(trig.text)
    body = text if trig.in_body else text[len(trig.text):]
    assert matcher.match(body.encode())
    for wrong in ('"a": 2', '"a": 2, "b": 30', '"a": 2, "b": 3, "c": 1'):  # b missing, above maximum; extra
        assert not matcher.match(body.replace('"a": 2, "b": 3', wrong).encode())
    assert not matcher.match(body.replace("add", "sub", 1).encode())           # a tool it does not have


def test_content_before_a_call_and_partial_text():
    fmt = detect_format("... <tool_call> ...")
    text = 'Let me check.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    p = fmt.parse(text, final=True)
    assert p.state == COMPLETE and p.content == "Let me check.\n" and p.calls[0].arguments == '{"a": 1, "b": 2}'
    cut = fmt.parse(text[:text.index('"b"') + 3])
    assert cut.state == PARTIAL and cut.calls[0].name == "add" and cut.calls[0].arguments == '{"a": 1, "b"'
    assert fmt.parse("No tools needed.", final=True).calls == []
    matcher = compile_grammar(fmt.body_gbnf(read_tool_request({"tools": TOOLS})))
    for bare in ('{"name": "add", "arguments": {"a": 1, "b": 2}}',        # Qwen 2.5 often leaves out the tags
                 '{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'):
        p = fmt.parse(bare, final=True)
        assert p.state == COMPLETE and p.calls[0].arguments == '{"a": 1, "b": 2}' and matcher.match(bare.encode())


def _stream(plan, text: str, pieces: int, finish_reason: str = "stop") -> tuple[str, list, str]:
    """Feed `text` in pieces through a ToolStream; reassemble as the openai client does."""
    s = ToolStream(plan)
    size = max(1, len(text) // pieces)
    deltas = []
    for i in range(0, len(text), size):
        deltas += s.feed(text[i:i + size])
    more, finish = s.finish(finish_reason)
    deltas += more
    content, calls = "", []
    for d in deltas:
        content += d.get("content", "")
        for tc in d.get("tool_calls", []):
            if tc["index"] == len(calls):
                assert tc["id"].startswith("call_") and tc["type"] == "function" and tc["function"]["arguments"] == ""
                calls.append({"name": tc["function"]["name"], "arguments": ""})
            calls[tc["index"]]["arguments"] += tc["function"].get("arguments", "")
    return content, calls, finish


@pytest.mark.parametrize("pieces", [1, 7, 1000])
def test_stream_deltas_add_up_to_the_plain_message(pieces):
    source, bos, eos = template_source("hermes")
    _, plan = plan_for(source, bos, eos, {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS})
    text = ('I will call two tools. <tool_c\n<tool_call>\n{"name": "get_weather", "arguments": '
            '{"city": "Par\\"is"}}\n</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>')
    message, finish = plan.message(text, "stop")
    content, calls, stream_finish = _stream(plan, text, pieces)
    assert finish == stream_finish == "tool_calls"
    assert content == "I will call two tools. <tool_c\n" and message["content"] == content.strip()
    assert calls == [c["function"] for c in message["tool_calls"]]
    assert json.loads(calls[0]["arguments"]) == {"city": 'Par"is'}


BARE_CALLS = [  # how Qwen 2.5 Coder writes a call without the tags (tool_choice auto, temperature 1)
    '{"name": "get_weather", "arguments": {"city": "Rome"}}',
    '{\n  "name": "get_weather",\n  "arguments": {\n    "city": "Rome"\n  }\n}',
    '```json\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n```',
    '  ```\n{ "name": "get_weather", "arguments": {"city": "Rome"}}',
]


@pytest.mark.parametrize("text", BARE_CALLS)
@pytest.mark.parametrize("pieces", [1, 5, 1000])
def test_a_bare_call_with_spaces_or_in_a_code_block_is_a_call(text, pieces):
    """llama.cpp's Hermes trigger takes white space after the brace and a ```json block around the
    call; a leading exact {"name" missed 11 of 12 of Qwen 2.5 Coder's calls."""
    source, bos, eos = template_source("hermes")
    _, plan = plan_for(source, bos, eos, {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS})
    message, finish = plan.message(text, "stop")
    assert finish == "tool_calls" and message["content"] is None
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]] == [
        ("get_weather", {"city": "Rome"})]
    content, calls, stream_finish = _stream(plan, text, pieces)
    assert (content, stream_finish) == ("", "tool_calls") and calls == [c["function"] for c in message["tool_calls"]]


@pytest.mark.parametrize("fmt,text", [
    ("hermes", 'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>\n'
               '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'),
    ("hermes", '```json\n{\n  "name": "get_weather",\n  "arguments": {"city": "Rome"}\n}\n</tool_call>\n<tool_call>\n'
               '{"name": "add", "arguments": {"a": 1}}\n</tool_call>'),
    ("generic", '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}, '
                '{"name": "add", "arguments": {"a": 1, "b": 2}}]}'),
])
def test_a_reply_cut_anywhere_by_max_tokens_is_the_same_plain_and_streamed(fmt, text, smollm2_path):
    """Every cut of a reply with calls: the plain message has what the stream sent (the calls
    begun, the last one's arguments as far as they came; else the content), and its finish."""
    source, bos, eos = template_source("hermes") if fmt == "hermes" else \
        (GGUFFile(smollm2_path).metadata["tokenizer.chat_template"], "", "")
    _, plan = plan_for(source, bos, eos, {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS})
    for k in range(1, len(text) + 1):
        cut = text[:k]
        message, finish = plan.message(cut, "length")
        content, calls, stream_finish = _stream(plan, cut, 3, "length")
        plain_calls = [c["function"] for c in message.get("tool_calls", [])]
        assert finish == stream_finish in ("length", "tool_calls"), k  # (a cut after a whole call: its end)
        assert plain_calls == calls, k
        assert (message["content"] or "").strip() == content.strip(), k


@pytest.mark.parametrize("text", ["```python\nprint(1)\n```", "``` not a block", "{ not json", "`code` here"])
def test_text_that_only_starts_like_a_bare_call_is_content(text):
    source, bos, eos = template_source("hermes")
    _, plan = plan_for(source, bos, eos, {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS})
    assert plan.message(text, "stop") == ({"role": "assistant", "content": text}, "stop")
    for pieces in (1, 4):
        assert _stream(plan, text, pieces)[:2] == (text, [])


def test_generic_response_streams_as_content(smollm2_path):
    source = GGUFFile(smollm2_path).metadata["tokenizer.chat_template"]
    _, plan = plan_for(source, "", "", {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS})
    text = '{"response": "Caf\\u00e9 \\"ok\\"\\n"}'
    for pieces in (1, 9, 40):
        content, calls, finish = _stream(plan, text, pieces)
        assert (content, calls, finish) == ('Café "ok"\n', [], "stop")
    assert plan.message(text, "stop") == ({"role": "assistant", "content": 'Café "ok"\n'}, "stop")


def test_a_call_cut_by_max_tokens_is_content(smollm2_path):
    source, bos, eos = template_source("hermes")
    _, plan = plan_for(source, bos, eos, {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS})
    text = 'Well. <tool_call>\n{"name": "ad'          # cut before a call could be streamed
    assert plan.message(text, "length") == ({"role": "assistant", "content": text}, "length")
    s = ToolStream(plan)
    deltas = s.feed(text) + s.finish("length")[0]
    assert "".join(d["content"] for d in deltas) == text
    _, generic = plan_for(GGUFFile(smollm2_path).metadata["tokenizer.chat_template"], "", "",
                          {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS})
    assert generic.message('{"response": "It is', "length") == ({"role": "assistant", "content": "It is"}, "length")


# ----------------------------------------------------------------------------- the constraint


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path) -> Tokenizer:
    return Tokenizer.from_gguf(smollm2_path)


def _generate(constraint: ToolConstraint, tok: Tokenizer, rng: np.random.Generator, prefix: list[int] = (),
              steps: int = 400) -> str:
    """Random logits through the constraint: the text it lets out."""
    out = []
    for t in prefix:
        constraint.mask(np.zeros(tok.n_vocab, dtype=np.float32))
        constraint.advance(t)
        out.append(t)
    for _ in range(steps):
        logits = constraint.mask(rng.standard_normal(tok.n_vocab).astype(np.float32) * 4)
        t = int(np.argmax(logits))
        assert np.isfinite(logits[t])
        if tok.is_eog(t):
            break
        constraint.advance(t)
        out.append(t)
        if constraint.done:
            break
    return tok.detokenize(out)


@pytest.mark.parametrize("name", [*TEMPLATES, "generic"])
def test_required_calls_under_random_logits_parse_and_validate(name, smollm2):
    source = "" if name == "generic" else template_source(name)[0]
    fmt = detect_format(source)
    assert fmt.name == name
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for seed in range(3):
        req = read_tool_request({"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": seed == 2})
        c = ToolConstraint(fmt.body_gbnf(req), smollm2, triggers=fmt.triggers, forced=fmt.forced_prefix())
        text = _generate(c, smollm2, np.random.default_rng(seed))
        p = fmt.parse(text, final=True)
        assert p.state == COMPLETE and p.calls, text
        for call in p.calls:
            jsonschema.validate(json.loads(call.arguments), schemas[call.name])


def test_lazy_constraint_is_free_until_the_trigger(smollm2):
    fmt = detect_format("<tool_call>")
    req = read_tool_request({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "add"}}})
    c = ToolConstraint(fmt.body_gbnf(req), smollm2, triggers=fmt.triggers, forced=None)
    free = smollm2.tokenize("Sure, I can help. ", add_special=False)
    for t in free:
        logits = c.mask(np.zeros(smollm2.n_vocab, dtype=np.float32))
        assert np.isfinite(logits).all()            # anything goes
        c.advance(t)
    text = _generate(c, smollm2, np.random.default_rng(5), prefix=smollm2.tokenize("<tool_call>", add_special=False))
    p = fmt.parse("Sure, I can help. " + text, final=True)
    assert p.state == COMPLETE and p.calls and {c.name for c in p.calls} == {"add"}, text   # the named tool only
    for call in p.calls:
        jsonschema.validate(json.loads(call.arguments), ADD["function"]["parameters"])


def test_forced_start_is_the_one_token_allowed(qwen25_coder_path):
    tok = Tokenizer.from_gguf(qwen25_coder_path)
    fmt = detect_format("<tool_call>")
    req = read_tool_request({"tools": TOOLS, "tool_choice": "required"})
    c = ToolConstraint(fmt.body_gbnf(req), tok, triggers=fmt.triggers, forced=fmt.forced_prefix())
    logits = c.mask(np.zeros(tok.n_vocab, dtype=np.float32))
    (allowed,) = np.flatnonzero(np.isfinite(logits))
    assert tok.token_to_piece(int(allowed), True) == b"<tool_call>"   # Qwen's own token for it


# ----------------------------------------------------------------------------- request faults


@pytest.mark.parametrize("body, param, words", [
    ({"tools": {"type": "function"}}, "tools", "must be an array"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type", "must be \"function\""),
    ({"tools": [{"type": "function", "function": {"description": "x"}}]}, "tools[0].function.name", "is required"),
    ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name", "letters, digits"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name", "given twice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "format": "email"}}}}}]},
     "tools[0].function.parameters", "unsupported string format 'email'"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "object"}}]},
     "tools[0].function.parameters", "must be a JSON Schema"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice", "auto, none, required"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "sub"}}},
     "tool_choice.function.name", "not in 'tools'"),
    ({"tool_choice": "required"}, "tool_choice", "no 'tools'"),
    ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls", "boolean"),
])
def test_faults_name_the_field(body, param, words):
    with pytest.raises(ToolError) as err:
        read_tool_request(body)
    assert err.value.param == param and words in str(err.value)


def test_history_faults_and_tools_beside_a_grammar_are_400s():
    template = ChatTemplate("chatml")
    for messages, param in (
        ([{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}], "messages[1].tool_call_id"),
        ([{"role": "assistant", "content": "", "tool_calls": [{"id": "1", "function": {}}]}],
         "messages[0].tool_calls[0]"),
    ):
        f = Fields({"messages": messages})
        with pytest.raises(APIError) as err:
            tool_plan(f, template, _messages(f), False)
        assert err.value.status == 400 and err.value.param == param
    f = Fields({"messages": [{"role": "user", "content": "x"}], "tools": TOOLS})
    with pytest.raises(APIError) as err:
        tool_plan(f, template, _messages(f), True)
    assert "both constrain" in err.value.message


def byte_tokens(text: str) -> list[int]:
    """`text` as the tiny vocabulary's byte tokens (<0x00>.. are ids 3..258): no SentencePiece space."""
    return [3 + b for b in text.encode()]


@pytest.fixture(scope="module")
def marked(tmp_path_factory) -> Tokenizer:
    return Tokenizer.from_gguf(tiny_with_markers(tmp_path_factory.mktemp("tools") / "marked.gguf"))


def test_control_token_markers_are_allowed_where_the_grammar_takes_them_and_shown(marked):
    fmt = detect_format(template_source("mistral-args")[0])
    calls, args, call_id = (marked.tokenize(m, add_special=False, parse_special=True) for m in MARKERS[:3])
    assert [len(calls), len(args), len(call_id)] == [1, 1, 1] and marked.token_to_piece(calls[0]) == b""
    req = read_tool_request({"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False})
    c = ToolConstraint(fmt.body_gbnf(req), marked, triggers=fmt.triggers, forced="[TOOL_CALLS]", markers=fmt.markers)
    assert np.flatnonzero(np.isfinite(c.mask(np.zeros(marked.n_vocab, np.float32)))).tolist() == calls
    assert c.shown_text(calls[0]) == "[TOOL_CALLS]" and c.shown_text(5) is None
    for t in calls + byte_tokens("add"):
        c.advance(t)
    ok = np.isfinite(c.mask(np.zeros(marked.n_vocab, np.float32)))
    assert ok[args[0]] and ok[call_id[0]]
    c.advance(args[0])
    assert not np.isfinite(c.mask(np.zeros(marked.n_vocab, np.float32)))[args[0]]   # not inside the arguments


@pytest.mark.parametrize("lazy", [False, True])
def test_decoding_shows_the_markers_and_the_call_parses(marked, lazy):
    """Generation under random logits (the loop's own Decoding): the text has the control markers."""
    fmt = detect_format(template_source("mistral-args")[0])
    req = read_tool_request({"tools": TOOLS, "tool_choice": "auto" if lazy else "required",
                             "parallel_tool_calls": False})
    c = ToolConstraint(fmt.body_gbnf(req), marked, triggers=fmt.triggers, markers=fmt.markers,
                       forced=None if lazy else "[TOOL_CALLS]")
    state = Decoding([1], lambda logits: int(np.argmax(logits)), constraint=c, tokenizer=marked, max_tokens=300)
    rng = np.random.default_rng(1)
    script = byte_tokens("Sure.") + marked.tokenize("[TOOL_CALLS]", parse_special=True, add_special=False) \
        if lazy else []
    text = ""
    while not state.done:
        logits = rng.standard_normal(marked.n_vocab).astype(np.float32) * 4
        if script:                                   # auto: the model writes some text, then starts a call
            logits[script.pop(0)] = 1e9
        token = state.choose(logits)
        if token is None:
            break
        text += state.accept(token).text
    text += state.finish().text
    p = fmt.parse(text, final=True)
    assert p.state == COMPLETE and len(p.calls) == 1, text
    assert p.content == ("Sure." if lazy else "")
    call = p.calls[0]
    jsonschema.validate(json.loads(call.arguments), {t["function"]["name"]: t["function"]["parameters"]
                                                     for t in TOOLS}[call.name])
