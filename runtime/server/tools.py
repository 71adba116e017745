"""OpenAI tool calling on /v1/chat/completions (runtime/tools does the work; this is the API's side).

`tool_plan(f, template, messages, constrained)` reads `tools`, `tool_choice`, `parallel_tool_calls`
and the calls and results in the history (400s naming the fault) and returns a `ToolPlan`, or None
when the request has neither tools nor tool messages. The plan renders the prompt (the template's
own format, see runtime/tools/formats.py), makes the request's Constraint, and shapes the output:

- plain: `message.tool_calls` [{"id": "call_...", "type": "function", "function": {"name",
  "arguments": JSON text}}], content before the calls (or null), finish_reason "tool_calls";
- streamed (`ToolStream`, one per choice): content deltas as the text comes (text that may
  still become a call's start is held back), then per call a delta with its index, id, type,
  name and empty arguments, then deltas of `function.arguments`, as OpenAI streams them.

Generation cut short inside the calls (at max_tokens) ends with finish_reason "length" and the
calls begun, the last one's arguments as far as they came, plain as streamed; cut before any call
has its name, the output is content (the generic format's cut `response`: its text so far).
"""
from __future__ import annotations

import json
import secrets
import string
from typing import Any, Callable

from runtime.chat_template import ChatTemplate
from runtime.grammar import GrammarError, SchemaError, parse_grammar
from runtime.server.errors import bad_request
from runtime.server.params import Fields
from runtime.tools import Format, ToolError, ToolRequest, detect_format, read_tool_request
from runtime.tools.constraint import ToolConstraint
from runtime.tools.parse import COMPLETE, INVALID, NONE, PARTIAL, check_calls, held_back

ALPHANUM = string.ascii_letters + string.digits


def call_id() -> str:
    """An id as OpenAI gives a call: call_ and 24 letters and digits."""
    return "call_" + "".join(secrets.choice(ALPHANUM) for _ in range(24))


def _history(raw: list, messages: list[dict]) -> tuple[list[dict], bool]:
    """`messages` (role and content, from the chat route) with their calls and results: assistant
    `tool_calls` as [{"id", "name", "arguments": text}], tool messages' `tool_call_id` and `name`.
    Also: whether the history has any."""
    out, found = [], False
    for i, (r, m) in enumerate(zip(raw, messages)):
        m = dict(m)
        where = f"messages[{i}]"
        calls = r.get("tool_calls")
        if calls is not None and r.get("role") == "assistant":
            if not isinstance(calls, list):
                raise bad_request(f"'{where}.tool_calls' must be an array", param=f"{where}.tool_calls")
            if calls:
                m["tool_calls"] = [_history_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
                found = True
        if r.get("role") == "tool":
            cid = r.get("tool_call_id")
            if not isinstance(cid, str):
                raise bad_request(f"'{where}.tool_call_id' is required (a string) in a tool message",
                                  param=f"{where}.tool_call_id")
            m["tool_call_id"] = cid
            if isinstance(r.get("name"), str):
                m["name"] = r["name"]
            found = True
        out.append(m)
    return out, found


def _history_call(c: Any, where: str) -> dict:
    fn = c.get("function") if isinstance(c, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise bad_request(f"'{where}' must be {{\"id\", \"type\": \"function\", \"function\": {{\"name\", "
                          "\"arguments\"}}}", param=where)
    args = fn.get("arguments", "{}")
    if not isinstance(args, str):
        args = json.dumps(args, ensure_ascii=False)
    cid = c.get("id")
    return {"id": cid if isinstance(cid, str) and cid else call_id(), "name": fn["name"], "arguments": args}


class ToolPlan:
    def __init__(self, req: ToolRequest, fmt: Format, messages: list[dict], variables: dict[str, Any]) -> None:
        self.req = req
        self.fmt = fmt
        self.messages = messages          # as the template takes them
        self.variables = variables        # extra template variables (tools)
        self.names = {t.name for t in req.callable}
        self.gbnf = fmt.body_gbnf(req) if req.calling else None

    def prompt(self, template: ChatTemplate, add_bos: bool, **kwargs: Any) -> str:
        """The prompt; `kwargs`: the request's other template variables (chat_template_kwargs)."""
        return template.prompt(self.messages, add_bos=add_bos, **{**kwargs, **self.variables})

    def constraint(self) -> Callable | None:
        """The Constraint factory (tokenizer -> constraint), None when no call is offered."""
        if self.gbnf is None:
            return None
        gbnf, fmt = self.gbnf, self.fmt
        forced = fmt.forced_prefix() if self.req.forced or not fmt.lazy else None
        return lambda tokenizer: ToolConstraint(gbnf, tokenizer, triggers=fmt.triggers, forced=forced,
                                                markers=fmt.markers)

    def message(self, text: str, finish_reason: str | None) -> tuple[dict, str | None]:
        """A plain response's message and finish reason."""
        if not self.req.calling:
            return {"role": "assistant", "content": text}, finish_reason
        p = self.fmt.parse(text, final=True)
        if p.state == COMPLETE and check_calls(p.calls, self.names):
            calls = [{"id": call_id(), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                     for c in p.calls]
            return {"role": "assistant", "content": p.content.strip() or None, "tool_calls": calls}, "tool_calls"
        if self.fmt.content_in_body and not p.calls and p.state != INVALID:    # {"response": ...}
            return {"role": "assistant", "content": p.content}, finish_reason
        if p.state == PARTIAL or finish_reason == "length":
            # cut short in the calls (max_tokens; read whole, a cut call is no JSON): the calls
            # begun, as a stream sends them, read as it reads them
            p = self.fmt.parse(text)
            if p.state == PARTIAL:
                calls = [{"id": call_id(), "type": "function",
                          "function": {"name": c.name, "arguments": c.arguments}} for c in _named(p.calls)]
                if calls:
                    return {"role": "assistant", "content": p.content.strip() or None, "tool_calls": calls}, \
                        finish_reason
                if self.fmt.content_in_body:  # before a call's name: no content (the stream sent none)
                    return {"role": "assistant", "content": p.content}, finish_reason
        return {"role": "assistant", "content": text}, finish_reason

    def stream(self) -> "ToolStream":
        return ToolStream(self)


class ToolStream:
    """One choice's streamed deltas."""

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self.text = ""
        self.sent = 0                       # characters of content sent
        self.calls: list[list] = []         # per call sent: [id, characters of arguments sent]
        self.free = not plan.req.calling    # plain text from here on

    def feed(self, piece: str) -> list[dict]:
        self.text += piece
        if self.free:
            return self._content(self.text)
        p = self.plan.fmt.parse(self.text)
        if p.state == NONE:
            return self._content(self.text[:len(self.text) - held_back(self.plan.fmt.triggers, self.text)])
        if p.state == INVALID and not self.calls:
            self.free = True
            return self._content(self.text)
        deltas = self._content(p.content)
        for i, c in enumerate(_named(p.calls)):
            if i == len(self.calls):
                self.calls.append([call_id(), 0])
                deltas.append({"tool_calls": [{"index": i, "id": self.calls[i][0], "type": "function",
                                               "function": {"name": c.name, "arguments": ""}}]})
            new = c.arguments[self.calls[i][1]:]
            if new:
                self.calls[i][1] = len(c.arguments)
                deltas.append({"tool_calls": [{"index": i, "function": {"arguments": new}}]})
        return deltas

    def finish(self, finish_reason: str | None) -> tuple[list[dict], str | None]:
        """Deltas still due at the end (held-back text) and the finish reason."""
        if self.free:
            return self._content(self.text), finish_reason
        p = self.plan.fmt.parse(self.text, final=True)
        if p.state == NONE:
            return self._content(self.text), finish_reason
        if self.calls and p.state == COMPLETE and check_calls(p.calls, self.plan.names):
            return [], "tool_calls"
        if not self.calls and not self.plan.fmt.content_in_body:   # a call cut short: its text, as content
            return self._content(self.text), finish_reason
        return [], finish_reason

    def _content(self, content: str) -> list[dict]:
        if len(content) <= self.sent:
            return []
        delta, self.sent = content[self.sent:], len(content)
        return [{"content": delta}]


def _named(calls: list) -> list:
    """The calls up to the first whose name is not out yet (a stream sends a call with its name)."""
    out = []
    for c in calls:
        if c.name is None:
            break
        out.append(c)
    return out


def tool_plan(f: Fields, template: ChatTemplate, messages: list[dict], constrained: bool) -> ToolPlan | None:
    """The request's tool calling (400s for faults); None without tools or tool messages.
    `constrained`: the request also asks for a grammar (response_format, grammar, json_schema)."""
    try:
        req = read_tool_request({k: f.raw(k) for k in ("tools", "tool_choice", "parallel_tool_calls")})
    except ToolError as e:
        raise bad_request(str(e), param=e.param) from None
    raw = f.raw("messages")
    history, found = _history(raw, messages)
    if not req.tools and not found:
        return None
    if req.calling and constrained:
        raise bad_request("'tools' and a response format or grammar both constrain the output: give one "
                          "(or tool_choice none)", param="tools")
    fmt = detect_format(template.source)
    msgs, variables = fmt.prepare(history, req)
    try:
        plan = ToolPlan(req, fmt, msgs, variables)
        if plan.gbnf is not None:
            parse_grammar(plan.gbnf)        # the tools together (each one's schema is checked already)
    except (SchemaError, GrammarError) as e:
        raise bad_request(f"'tools': the call grammar cannot be built: {e}", param="tools") from None
    return plan


def refuse_functions(f: Fields) -> None:
    """OpenAI's deprecated `functions` / `function_call`: this server answers `tools` only."""
    for key in ("functions", "function_call"):
        if f.raw(key) not in (None, [], {}):
            raise bad_request(f"'{key}' (deprecated by OpenAI) is not supported: use 'tools' and 'tool_choice'",
                              param=key)
