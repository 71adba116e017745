"""The tool-call formats: how a model writes calls, the grammar of a call section, and how a
conversation with calls and results is handed to its chat template.

A template that knows tools is used in its own format, detected from its text (the same facts
llama.cpp's common/chat.cpp reads: the markers the template writes):

    hermes   `<tool_call>` in the template (Qwen 2.5, Hermes 2 Pro / 3):
             <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>   (repeated)
    mistral  `[TOOL_CALLS]` (Mistral Nemo and Mistral v0.3 style, tools in `[AVAILABLE_TOOLS]`):
             [TOOL_CALLS][{"name": "f", "arguments": {...}, "id": "a1b2c3d4e"}, ...]
    mistral-args  `[TOOL_CALLS]` and `[ARGS]` (Mistral Small 3.2, Devstral):
             [TOOL_CALLS]f[CALL_ID]a1b2c3d4e[ARGS]{...}   ([CALL_ID] part optional; repeated)
    llama3   the `ipython` role and `"parameters"` (Llama 3.1 / 3.2 / 3.3):
             {"name": "f", "parameters": {...}}   (or after <|python_tag|>; one call)

Those templates receive `tools` (the request's tool objects) and the messages as Hugging Face
gives them: assistant `tool_calls` with `arguments` as an object, `tool` messages with
`tool_call_id`. Any other template gets the `generic` format: the tools described in a system
message, the answer a JSON object, {"tool_calls": [{"name", "arguments"}, ...]} or (tool_choice
auto) {"response": "..."}, always under the grammar so that it parses; earlier calls and results
are written into the conversation as that JSON (results as user messages).

A format's section starts at one of its triggers (parse.Trigger); `body_gbnf` is the grammar of
the section from there, built from each tool's parameters schema (runtime/grammar json_schema).
"""
from __future__ import annotations

import hashlib
import json
import string
from typing import Any

from runtime.grammar.json_schema import json_schema_to_gbnf
from runtime.grammar.regex import gbnf_literal

from .parse import COMPLETE, INVALID, PARTIAL, Call, Cursor, Incomplete, Mismatch, Parsed, Trigger, \
    content_before, find_trigger, read_arguments, read_call, read_call_array, read_until
from .request import NAME, Tool, ToolRequest

SP = "x-tool-sp"           # rule names of the wrappers around the JSON grammar
CALLS = "x-tool-calls"


def _refs_moved(schema: Any, base: str) -> Any:
    """`schema` with its own references (#/...) pointing into `base`, where it now lives."""
    if isinstance(schema, list):
        return [_refs_moved(s, base) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for k, v in schema.items():
        if k == "$ref" and isinstance(v, str) and v.startswith("#"):
            out[k] = base + v[1:]
        elif k in ("properties", "$defs", "definitions") and isinstance(v, dict):
            out[k] = {name: _refs_moved(s, base) for name, s in v.items()}
        else:
            out[k] = _refs_moved(v, base)
    return out


def call_schema(tools: tuple[Tool, ...], args_key: str, extra: dict | None = None) -> dict:
    """The JSON Schema of one call object: {"name": <a tool's name>, args_key: <its arguments>}
    (+ `extra` optional members); tool i's parameters are "#/$defs/tool-i" (see with_tools)."""
    branches = []
    for i, t in enumerate(tools):
        props = {"name": {"const": t.name}, args_key: {"$ref": f"#/$defs/tool-{i}"}, **(extra or {})}
        branches.append({"type": "object", "properties": props, "required": ["name", args_key],
                         "additionalProperties": False})
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def with_tools(tools: tuple[Tool, ...], schema: dict) -> dict:
    """`schema` (made of call_schema's) as a root schema, each tool's parameters under $defs."""
    defs = {f"tool-{i}": _refs_moved(t.parameters, f"#/$defs/tool-{i}") for i, t in enumerate(tools)}
    return {"$defs": defs, **schema}


def embed(schema: dict, name: str, wrappers: dict[str, str]) -> str:
    """GBNF: the JSON grammar of `schema` as rule `name`, plus the wrapper rules (root among them)."""
    gbnf = json_schema_to_gbnf(schema)
    assert gbnf.startswith("root ::= ")
    lines = [f"{k} ::= {v}" for k, v in wrappers.items()]
    return "\n".join(lines) + f"\n{name} ::= " + gbnf[len("root ::= "):]


class Format:
    name = "generic"
    triggers: tuple[Trigger, ...] = (Trigger("{", anchored=True, in_body=True),)
    markers: tuple[str, ...] = ()  # the format's special texts (maybe control tokens: see constraint.py)
    content_in_body = False    # the answer's content is inside the section (generic: "response")
    args_key = "arguments"
    template_tools = False     # the template is given `tools` and Hugging Face shaped messages
    lazy = False               # tool_choice auto: free text until a trigger (else the whole output
                               # is the body's grammar)

    # --- grammar -----------------------------------------------------------------------------

    def body_gbnf(self, req: ToolRequest) -> str:
        """The grammar of a section from its trigger on (see Trigger.in_body)."""
        raise NotImplementedError

    def forced_prefix(self) -> str:
        """Text that starts every section when a call is required (the first trigger when the
        body follows it)."""
        t = self.triggers[0]
        return "" if t.in_body else t.text

    # --- reading -----------------------------------------------------------------------------

    def read_body(self, cur: Cursor, calls: list[Call], out: Parsed, trig: Trigger) -> None:
        raise NotImplementedError

    def parse(self, text: str, final: bool = False) -> Parsed:
        """Content and calls of `text`, whole (`final`) or still being generated."""
        found = find_trigger(self.triggers, text)
        if found is None:
            return Parsed(text)
        pos, trig = found
        out = Parsed(content_before(text, pos), state=PARTIAL)
        cur = Cursor(text, pos if trig.in_body else pos + len(trig.text), final)
        try:
            self.read_body(cur, out.calls, out, trig)
            tail = text[cur.i:].strip(" \t\n\r")
            # (a call's JSON in a code block: the block's end may follow it)
            fenced = trig.anchored and "```" in text[:pos] and "```".startswith(tail)
            out.state = COMPLETE if not tail or (fenced and (final or tail == "```")) else \
                PARTIAL if fenced else INVALID
        except Incomplete:
            out.state = PARTIAL
        except Mismatch:
            out.state = INVALID
        return out

    # --- the conversation --------------------------------------------------------------------

    def call_id(self, call_id: str) -> str:
        """The id a template is shown for a call's id."""
        return call_id

    def prepare(self, messages: list[dict], req: ToolRequest) -> tuple[list[dict], dict[str, Any]]:
        """The messages and the extra template variables for the template."""
        out = [self._message(m) for m in messages]
        return out, ({"tools": [t.spec for t in req.tools]} if req.calling else {})

    def _message(self, m: dict) -> dict:
        m = dict(m)
        if m.get("tool_calls"):
            m["tool_calls"] = [{"id": self.call_id(c["id"]), "type": "function",
                                "function": {"name": c["name"], "arguments": _as_object(c["arguments"])}}
                               for c in m["tool_calls"]]
        if "tool_call_id" in m:
            m["tool_call_id"] = self.call_id(m["tool_call_id"])
        return m


def _as_object(arguments: str) -> Any:
    """Arguments as Hugging Face templates take them: the JSON value, or the text if not JSON."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


class Hermes(Format):
    name = "hermes"
    # Qwen 2.5 (the Coder models above all) often writes the call's JSON alone, without the tags
    triggers = (Trigger("<tool_call>"), Trigger('{"name"', anchored=True, in_body=True))
    markers = ("<tool_call>", "</tool_call>")
    template_tools = True
    lazy = True

    def body_gbnf(self, req: ToolRequest) -> str:
        more = f'( {SP} "<tool_call>" {SP} call {SP} "</tool_call>" )*' if req.parallel else ""
        return embed(with_tools(req.callable, call_schema(req.callable, "arguments")), "call", {
            "root": f'{SP} call {SP} "</tool_call>" {more} | call',
            SP: "[ \\t\\n]{0,3}"})

    def read_body(self, cur: Cursor, calls: list[Call], out: Parsed, trig: Trigger) -> None:
        bare = trig.in_body              # a call without its opening tag (the closing one may follow)
        while True:
            cur.ws()
            read_call(cur, calls, self.args_key)
            cur.ws()
            if not bare:
                cur.lit("</tool_call>")
            elif not cur.at("</tool_call>"):
                return
            cur.ws()
            if not cur.at("<tool_call>"):
                return
            bare = False


class Mistral(Format):
    name = "mistral"
    triggers = (Trigger("[TOOL_CALLS]"),)
    markers = ("[TOOL_CALLS]",)
    template_tools = True
    lazy = True
    ID = {"type": "string", "pattern": "^[a-zA-Z0-9]{9}$"}

    def body_gbnf(self, req: ToolRequest) -> str:
        calls = {"type": "array", "items": call_schema(req.callable, "arguments", {"id": self.ID}),
                 "minItems": 1, **({} if req.parallel else {"maxItems": 1})}
        return embed(with_tools(req.callable, calls), CALLS, {"root": f"{SP} {CALLS}", SP: "[ \\t\\n]{0,3}"})

    def read_body(self, cur: Cursor, calls: list[Call], out: Parsed, trig: Trigger) -> None:
        cur.ws()
        read_call_array(cur, calls, self.args_key)

    def call_id(self, call_id: str) -> str:
        """Mistral's templates insist on ids of 9 letters and digits: other ids (OpenAI's call_...)
        are shown as 9 characters of their hash, the same for a call and its result."""
        if len(call_id) == 9 and call_id.isalnum() and call_id.isascii():
            return call_id
        digest = hashlib.sha256(call_id.encode()).digest()
        alphabet = string.ascii_letters + string.digits
        return "".join(alphabet[b % len(alphabet)] for b in digest[:9])


class MistralArgs(Mistral):
    """Mistral's newer format (Mistral Small 3.2, Devstral, Magistral): each call is
    [TOOL_CALLS]name[ARGS]{...}, some templates with [CALL_ID]id before [ARGS]."""
    name = "mistral-args"
    triggers = (Trigger("[TOOL_CALLS]"),)
    markers = ("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]")

    def body_gbnf(self, req: ToolRequest) -> str:
        tools = req.callable
        # the converter names the rule of "#/$defs/tool-i" after its last part: tool-i
        refs = {"anyOf": [{"$ref": f"#/$defs/tool-{i}"} for i in range(len(tools))]}
        lines = json_schema_to_gbnf(with_tools(tools, refs)).splitlines()[1:]
        for i in range(len(tools)):
            assert any(line.startswith(f"tool-{i} ::= ") for line in lines)
        one = " | ".join(f'{gbnf_literal(t.name)} ( "[CALL_ID]" [a-zA-Z0-9]{{9}} )? "[ARGS]" tool-{i}'
                         for i, t in enumerate(tools))
        more = f'( {SP} "[TOOL_CALLS]" {CALLS} )*' if req.parallel else ""
        return "\n".join([f"root ::= {CALLS} {more}", f"{CALLS} ::= {one}", f"{SP} ::= [ \\t\\n]{{0,2}}"]
                         + lines) + "\n"

    def read_body(self, cur: Cursor, calls: list[Call], out: Parsed, trig: Trigger) -> None:
        while True:
            call = Call()
            calls.append(call)
            name = read_until(cur, ("[CALL_ID]", "[ARGS]"))
            if not NAME.fullmatch(name):
                raise Mismatch(f"a tool name {name!r}")
            call.name = name
            if cur.at("[CALL_ID]"):
                read_until(cur, ("[ARGS]",))
            cur.lit("[ARGS]")
            read_arguments(cur, call)
            cur.ws()
            if not cur.at("[TOOL_CALLS]"):
                return


class Llama3(Format):
    name = "llama3"
    # the JSON at the start of the output, or after <|python_tag|> (Llama 3's marker for tool code)
    triggers = (Trigger("{", anchored=True, in_body=True), Trigger("<|python_tag|>"))
    markers = ("<|python_tag|>",)
    args_key = "parameters"
    template_tools = True
    lazy = True

    def body_gbnf(self, req: ToolRequest) -> str:
        return embed(with_tools(req.callable, call_schema(req.callable, "parameters")), "call", {"root": f"{SP} call", SP: "[ \\t\\n]{0,2}"})

    def read_body(self, cur: Cursor, calls: list[Call], out: Parsed, trig: Trigger) -> None:
        cur.ws()
        read_call(cur, calls, self.args_key)


class Generic(Format):
    """For templates that know no tools: the tools in a system message, a JSON answer."""
    content_in_body = True

    def body_gbnf(self, req: ToolRequest) -> str:
        calls = {"type": "array", "items": call_schema(req.callable, "arguments"),
                 "minItems": 1, **({} if req.parallel else {"maxItems": 1})}
        answer = {"type": "object", "properties": {"tool_calls": calls},
                  "required": ["tool_calls"], "additionalProperties": False}
        schema = answer if req.forced else {"anyOf": [answer, {
            "type": "object", "properties": {"response": {"type": "string"}},
            "required": ["response"], "additionalProperties": False}]}
        schema = with_tools(req.callable, schema)
        return embed(schema, "answer", {"root": "answer"})

    def read_body(self, cur: Cursor, calls: list[Call], out: Parsed, trig: Trigger) -> None:
        cur.lit("{")
        cur.ws()
        key = cur.string()
        cur.ws()
        cur.lit(":")
        cur.ws()
        if key == "response":
            text, whole = cur.partial_string()
            out.content += text
            if not whole:
                raise Incomplete()
        elif key == "tool_calls":
            read_call_array(cur, calls, self.args_key)
        else:
            raise Mismatch(f"unknown key {key!r}")
        cur.ws()
        cur.lit("}")

    def prepare(self, messages: list[dict], req: ToolRequest) -> tuple[list[dict], dict[str, Any]]:
        out: list[dict] = []
        for m in messages:
            if m.get("tool_calls"):
                calls = [{"name": c["name"], "arguments": _as_object(c["arguments"])} for c in m["tool_calls"]]
                out.append({"role": "assistant", "content": json.dumps({"tool_calls": calls}, ensure_ascii=False)})
            elif m["role"] == "tool":
                result = json.dumps({"tool_response": {"tool_call_id": m.get("tool_call_id", ""),
                                                       "content": m["content"]}}, ensure_ascii=False)
                if out and out[-1].get("tool_results"):        # results of one turn: one user message
                    out[-1]["content"] += "\n" + result
                else:
                    out.append({"role": "user", "content": result, "tool_results": True})
            else:
                out.append({"role": m["role"], "content": m["content"]})
        for m in out:
            m.pop("tool_results", None)
        if req.calling:
            out = self._with_system(out, self.instructions(req))
        return out, {}

    @staticmethod
    def _with_system(messages: list[dict], text: str) -> list[dict]:
        if messages and messages[0]["role"] == "system":
            return [{"role": "system", "content": messages[0]["content"] + "\n\n" + text}] + messages[1:]
        return [{"role": "system", "content": text}] + messages

    @staticmethod
    def instructions(req: ToolRequest) -> str:
        tools = "\n".join(json.dumps(t.spec["function"], ensure_ascii=False) for t in req.callable)
        call = '{"tool_calls": [{"name": "<tool name>", "arguments": {<the arguments>}}]}'
        text = ("You can call these tools (the JSON Schema of each one's arguments is its "
                f"\"parameters\"):\n{tools}\n\nRespond with a JSON object only. To call tools: {call}")
        if not req.forced:
            text += '. To answer without a tool: {"response": "<your answer>"}'
        return text + "."


FORMATS = {f.name: f for f in (Hermes(), Mistral(), MistralArgs(), Llama3(), Generic())}


def detect_format(template_source: str) -> Format:
    """The format a chat template writes calls in (generic when it writes none we know)."""
    if "[TOOL_CALLS]" in template_source:
        return FORMATS["mistral-args" if "[ARGS]" in template_source else "mistral"]
    if "<tool_call>" in template_source:
        return FORMATS["hermes"]
    if "ipython<|end_header_id|>" in template_source and '"parameters"' in template_source:
        return FORMATS["llama3"]
    return FORMATS["generic"]


__all__ = ["Format", "FORMATS", "detect_format", "call_schema"]
