"""Regenerate tests/fixtures/chat/builtin.llama_cpp.json from llama-cpp-python (dev only; CI never
runs it): what llama.cpp renders for each of its built-in chat template names, and the tokens of it.

  * `llama_chat_builtin_templates`: llama.cpp's names;
  * `llama_chat_apply_template(name, ...)` on every conversation below, with and without the
    generation prompt (add_ass): the text of llama.cpp's hard-coded template (src/llama-chat.cpp),
    what `--chat-template NAME` selects there;
  * that text tokenized by llama.cpp (add_special, parse_special) with the vocabulary of
    tests/fixtures/models/dense-Q8_0.gguf (Mistral's: BOS "<s>", add_bos true), for TOKEN_CASES.

tests/test_chat_template_builtin.py holds runtime/chat_builtin.py's templates to them.

Usage (a Python with llama-cpp-python installed), from the repository root:
    python -m tools.make_chat_builtin_fixtures
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

from tools.make_chat_fixtures import _m, apply_template

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "chat" / "builtin.llama_cpp.json"
MISTRAL_VOCAB = ROOT / "tests" / "fixtures" / "models" / "dense-Q8_0.gguf"


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
TOKEN_CASES = ("user", "system_user", "system_turns", "spaces", "non_ascii")


def main() -> None:
    import llama_cpp

    out = (ctypes.c_char_p * 256)()
    n = llama_cpp.llama_chat_builtin_templates(out, len(out))
    assert 0 < n < len(out)
    names = sorted(out[i].decode() for i in range(n))
    vocab = llama_cpp.Llama(str(MISTRAL_VOCAB), vocab_only=True, verbose=False)
    renders: dict[str, dict[str, list[str]]] = {}
    tokens: dict[str, dict[str, list[list[int]]]] = {}
    for name in names:
        renders[name] = {c: [apply_template(name.encode(), messages, add_ass) for add_ass in (True, False)]
                         for c, messages in CONVERSATIONS.items()}
        tokens[name] = {c: [vocab.tokenize(text.encode(), add_bos=True, special=True) for text in renders[name][c]]
                        for c in TOKEN_CASES}
    data = {"generator": f"tools/make_chat_builtin_fixtures.py, llama-cpp-python {llama_cpp.__version__}",
            "names": names, "conversations": CONVERSATIONS, "token_cases": list(TOKEN_CASES),
            "renders": renders, "tokens": tokens}
    OUT.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(names)} templates x {len(CONVERSATIONS)} conversations")


if __name__ == "__main__":
    main()
