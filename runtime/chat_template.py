"""Chat templates: a conversation -> the prompt text the model was trained on.

A GGUF carries its template as Jinja source in `tokenizer.chat_template`. It is rendered the way
Hugging Face transformers renders it (`chat_template_utils._compile_jinja_template`):
`ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with the `loopcontrols`
extension, a pass-through `{% generation %}` tag, `tojson` as `json.dumps(ensure_ascii=False)`,
and the globals `raise_exception(msg)` and `strftime_now(fmt)`. Variables: `messages`,
`add_generation_prompt`, `bos_token`, `eos_token` (+ any extra keyword of `render`).
`--chat-template NAME` also takes every name of llama.cpp's built-in templates (BUILTIN_TEMPLATES,
runtime/chat_builtin.py:
mistral-v7, llama2-sys, phi4, deepseek3, command-r, vicuna, ...), which render as llama.cpp's do.

The template comes from a GGUF someone else made, so it is untrusted code: the sandbox refuses
attribute access that could reach Python internals (here that *raises* instead of rendering an
empty string as plain jinja2 does), and every failure becomes a one-line `ChatTemplateError`.

Without a template in the GGUF, a vocabulary that holds one family's turn tokens picks that
family's built-in format (`VOCAB_TEMPLATES`: Gemma's `<start_of_turn>`, Llama 3's header tokens,
chatml's `<|im_start|>`, Phi-3's `<|user|>`), so that e.g. Gemma 3 270M, which ships none, chats
in the format it was trained on and stops at `<end_of_turn>` (llama.cpp gives every template-less
file chatml, which such a model does not know and talks past). Otherwise a `llama`-architecture
file (Mistral, Mixtral) gets the Mistral `[INST] ... [/INST]` format (see `MISTRAL_TEMPLATE`),
and any other architecture chatml, llama.cpp's default.

BOS: templates often start with `bos_token` ("<s>"). Like llama.cpp's server
(common/chat.cpp, `common_chat_template_direct_apply_impl`), `prompt()` strips that leading text
when the model adds BOS itself (`tokenizer.ggml.add_bos_token`), so tokenizing the prompt with
add_special=True, parse_special=True gives exactly one BOS.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Mapping, Optional, Sequence

import jinja2
import jinja2.ext
from jinja2.sandbox import SecurityError

from runtime.chat_builtin import BUILTIN_TEMPLATES, MISTRAL
from runtime.chat_sandbox import BoundedSandbox, Limits, RenderAborted, bounded

from .gguf import get_key  # metadata reads, type-checked (GGUFError)

KEY_CHAT_TEMPLATE = "tokenizer.chat_template"
KEY_TOKENS = "tokenizer.ggml.tokens"
KEY_BOS_ID = "tokenizer.ggml.bos_token_id"
KEY_EOS_ID = "tokenizer.ggml.eos_token_id"

MISTRAL_TEMPLATE = MISTRAL  # what a llama-architecture file without a template gets


# A file without a template whose vocabulary holds a family's turn tokens chats in that family's
# format (what its model was trained on): the first entry whose tokens are all in the vocabulary
VOCAB_TEMPLATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gemma", ("<start_of_turn>", "<end_of_turn>")),
    ("llama3", ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    ("chatml", ("<|im_start|>", "<|im_end|>")),
    ("phi3", ("<|user|>", "<|assistant|>", "<|end|>")),
)


# Template variables the engine sets itself (and the names of prompt()'s own parameters): what
# --chat-template-kwargs and a request's chat_template_kwargs may not set
RESERVED_VARIABLES = ("messages", "add_generation_prompt", "bos_token", "eos_token", "tools", "raise_exception",
                      "strftime_now", "add_bos", "continue_final", "self", "extra")


def check_variables(variables: Mapping[str, Any]) -> None:
    """ChatTemplateError for a variable the engine sets itself, or a non-boolean enable_thinking."""
    for key in variables:
        if key in RESERVED_VARIABLES:
            raise ChatTemplateError(f"the template variable {key!r} is set by llamapack itself")
    if "enable_thinking" in variables and not isinstance(variables["enable_thinking"], bool):
        raise ChatTemplateError("enable_thinking must be true or false")


def check_override(value: str) -> str:
    """A --chat-template value: a built-in name or Jinja source (it has {{ or {%). A bare word that
    names no template (a typo, another program's name) is a ChatTemplateError, not a template whose
    output is that word."""
    if value in BUILTIN_TEMPLATES or "{{" in value or "{%" in value:
        return value
    raise ChatTemplateError(f"unknown chat template {value!r}: a name ({', '.join(BUILTIN_TEMPLATES)}) "
                            "or Jinja source")


class ChatTemplateError(ValueError):
    """A template that does not compile or render; the message is one line."""


class _TemplateRaised(jinja2.TemplateError):
    """What `raise_exception(msg)` raises inside a template."""


class _GenerationTag(jinja2.ext.Extension):
    """HF's `{% generation %}...{% endgeneration %}` (assistant-mask marker): renders its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> Any:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _StrictSandbox(BoundedSandbox):
    """The HF environment, bounded (chat_sandbox.py), and an unsafe attribute access raises at once."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        kind = type(obj).__name__
        raise SecurityError(f"access to attribute {attribute!r} of {kind!r} object is unsafe")


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: Optional[int] = None,
            separators: Optional[tuple[str, str]] = None, sort_keys: bool = False) -> str:
    """HF's tojson: plain json.dumps (jinja's own escapes HTML characters)."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> BoundedSandbox:
    env = _StrictSandbox(trim_blocks=True, lstrip_blocks=True,
                         extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _one_line(exc: BaseException) -> str:
    """`exc` as one line: its type (unless raised by the template) and message, plus the line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, _TemplateRaised):
        return f"chat template raised: {text}"
    if isinstance(exc, RenderAborted):
        return f"chat template: {text}"
    if isinstance(exc, MemoryError):
        return "chat template: out of memory while rendering"
    if isinstance(exc, RecursionError):
        return "chat template: recursion too deep"
    where = f" (template line {exc.lineno})" if getattr(exc, "lineno", None) else ""
    return f"chat template: {type(exc).__name__}: {text}{where}"


class ChatTemplate:
    """A compiled chat template with its special-token strings.

    Compiling and rendering run under `limits` (time, sizes, memory: see chat_sandbox.py); a
    template that exceeds them fails with a one-line ChatTemplateError, as any other failure."""

    limits = Limits()  # an instance may set its own

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "",
                 name: str = "custom") -> None:
        """Compile `source` (Jinja, or a BUILTIN_TEMPLATES name); raise ChatTemplateError."""
        if source in BUILTIN_TEMPLATES:
            name, source = source, BUILTIN_TEMPLATES[source]
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.name = name  # for logs: "gguf", a built-in name, or "custom"
        self.note: Optional[str] = None  # why the file's own template is not the one used (from_metadata)
        self._system_ok: Optional[bool] = None  # does the template show a system message (_takes_system)
        try:
            with bounded(self.limits):
                self._template = _environment().from_string(source)
        except (Exception, RenderAborted) as exc:  # TemplateSyntaxError, or anything while compiling
            raise ChatTemplateError(_one_line(exc)) from None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], override: Optional[str] = None,
                      tokens: Optional[Sequence[str]] = None) -> "ChatTemplate":
        """The template for a GGUF: `override` (--chat-template: a name or Jinja source), else
        the file's `tokenizer.chat_template`, else the built-in format whose turn tokens the
        vocabulary holds (VOCAB_TEMPLATES), else Mistral's format for a llama-architecture file
        and llama.cpp's default, chatml, for the others. BOS/EOS strings come from
        `tokens` (default: the file's `tokenizer.ggml.tokens`) at the file's BOS/EOS ids."""
        if tokens is None:
            tokens = get_key(metadata, KEY_TOKENS) or ()
        bos = _token_text(tokens, get_key(metadata, KEY_BOS_ID))
        eos = _token_text(tokens, get_key(metadata, KEY_EOS_ID))
        if override:
            check_override(override)
            name = override if override in BUILTIN_TEMPLATES else "custom"
            return cls(override, bos, eos, name=name)
        source = get_key(metadata, KEY_CHAT_TEMPLATE)
        if isinstance(source, str) and source.strip():
            try:
                return cls(source, bos, eos, name="gguf")
            except ChatTemplateError as exc:  # the model still runs, and chats in the format below
                fallback = cls._without_template(metadata, tokens, bos, eos)
                fallback.note = (f"the model's chat template does not compile ({exc}); chatting in "
                                 f"{fallback.name} (--chat-template to choose)")
                return fallback
        return cls._without_template(metadata, tokens, bos, eos)

    @classmethod
    def _without_template(cls, metadata: Mapping[str, Any], tokens: Sequence[str], bos: str,
                          eos: str) -> "ChatTemplate":
        vocab = set(tokens) if tokens else set()
        for name, turn_tokens in VOCAB_TEMPLATES:
            if all(t in vocab for t in turn_tokens):
                return cls(name, bos, eos)
        if get_key(metadata, "general.architecture", "llama") != "llama":
            return cls("chatml", bos, eos)
        return cls(MISTRAL_TEMPLATE, bos, eos, name="mistral")

    def _takes_system(self) -> bool:
        """Whether the template shows a system message: it renders [system, user] without an
        error and with the system text (as llama.cpp's capability check, which finds Mistral
        v0.2's and Gemma 1's official templates without a system role)."""
        if self._system_ok is None:
            probe = "llamapack system probe 7f3a"
            try:
                out = self._render([{"role": "system", "content": probe}, {"role": "user", "content": "u"}],
                                   True, {})
                self._system_ok = probe in out
            except ChatTemplateError:
                self._system_ok = False
        return self._system_ok

    def _fold_system(self, messages: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
        """A first system message folded into the next message as "system\ntext" (dropped when it
        is alone), where the template has no system role: what llama.cpp's server does
        (common/chat.cpp, system_message_not_supported)."""
        if not messages or messages[0].get("role") != "system" or self._takes_system():
            return messages
        if len(messages) == 1:
            return []
        first, second = messages[0], messages[1]
        merged = dict(second, content=f"{_text(first.get('content'))}\n{_text(second.get('content'))}")
        return [merged, *messages[2:]]

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
               **extra: Any) -> str:
        """The template's output for `messages` ([{"role", "content"}, ...]), exactly."""
        return self._render(messages, add_generation_prompt, extra)

    def _render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool,
                extra: Mapping[str, Any]) -> str:
        limit = self.limits.size
        out: list[str] = []
        n = 0
        try:
            with bounded(self.limits):
                for piece in self._template.generate(
                    messages=list(messages),
                    add_generation_prompt=add_generation_prompt,
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                    **extra,
                ):
                    n += len(piece)
                    if n > limit:
                        raise SecurityError(f"the output is longer than {limit} characters")
                    out.append(piece)
        except (Exception, RenderAborted) as exc:  # any failure of untrusted template code is its error
            raise ChatTemplateError(_one_line(exc)) from None
        return "".join(out)

    def prompt(self, messages: Sequence[Mapping[str, Any]], add_bos: bool,
               add_generation_prompt: bool = True, continue_final: bool = False, **extra: Any) -> str:
        """`render()` ready to tokenize with add_special=add_bos, parse_special=True.

        When the tokenizer will add BOS itself (`add_bos`), a leading BOS text is removed so
        the prompt does not start with two BOS tokens (llama.cpp's server does the same).
        `continue_final`: the last message (the assistant's start of a reply) is continued, not
        closed: as llama.cpp does, the messages before it are rendered with the generation
        prompt and its content follows as it is. A first system message the template has no
        role for goes into the next message (_fold_system), as llama.cpp's server does.
        """
        messages = self._fold_system(messages)
        # thinking on unless said otherwise, as llama.cpp's server sets it (QwQ's and DeepSeek-R1's
        # templates read an unset enable_thinking as false)
        extra.setdefault("enable_thinking", True)
        if continue_final and messages:
            head = self.render(messages[:-1], True, **extra)
            return self.strip_bos(head + str(messages[-1].get("content") or ""), add_bos)
        return self.strip_bos(self.render(messages, add_generation_prompt, **extra), add_bos)

    def strip_bos(self, text: str, add_bos: bool) -> str:
        """`text` without its leading BOS text if `add_bos` (the tokenizer adds the token)."""
        if add_bos and self.bos_token and text.startswith(self.bos_token):
            return text[len(self.bos_token):]
        return text


def _text(content: Any) -> str:
    """A message's content as text (None: empty; a list of parts: their texts joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) if isinstance(p, Mapping) else str(p) for p in content)
    return str(content)


def _token_text(tokens: Sequence[str], token_id: Any) -> str:
    """The text of `token_id`, or "" when the id is missing or out of range."""
    if isinstance(token_id, int) and 0 <= token_id < len(tokens):
        return str(tokens[token_id])
    return ""
