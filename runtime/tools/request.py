"""A request's tools: OpenAI's `tools`, `tool_choice` and `parallel_tool_calls`, checked.

    tools: [{"type": "function", "function": {"name", "description"?, "parameters"?, "strict"?}}]
    tool_choice: "auto" (default with tools) | "none" | "required"
                 | {"type": "function", "function": {"name": ...}}
    parallel_tool_calls: bool (default true)

Every fault is a ToolError naming the field (`param`), which the server answers with a 400: a
tool that is not a function, a missing or invalid name, a name given twice, a parameters schema
the grammar engine cannot enforce (its message names the keyword), a choice naming no tool.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from runtime.grammar.json_schema import SchemaError, json_schema_to_gbnf

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")   # OpenAI's rule for function names (plus '.', as llama.cpp)
EMPTY_PARAMETERS = {"type": "object", "properties": {}}


class ToolError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Tool:
    name: str
    parameters: Any           # the JSON Schema of the arguments
    spec: dict                # the tool as the template sees it: {"type": "function", "function": {...}}


@dataclass(frozen=True)
class ToolRequest:
    tools: tuple[Tool, ...]
    choice: str               # "auto", "none", "required" or "named"
    named: str | None = None  # the function tool_choice names
    parallel: bool = True

    @property
    def calling(self) -> bool:
        """The model is offered calls (tools given and tool_choice is not none)."""
        return bool(self.tools) and self.choice != "none"

    @property
    def forced(self) -> bool:
        """The output must be a call (required, or a named function)."""
        return self.calling and self.choice in ("required", "named")

    @property
    def callable(self) -> tuple[Tool, ...]:
        """The tools a call may name."""
        return tuple(t for t in self.tools if self.named is None or t.name == self.named)


def _function(tool: Any, where: str) -> Tool:
    if not isinstance(tool, dict):
        raise ToolError(f"'{where}' must be an object", where)
    if tool.get("type") != "function":
        raise ToolError(f"'{where}.type' must be \"function\" (the only tool type this server calls), "
                        f"not {tool.get('type')!r}", f"{where}.type")
    fn = tool.get("function")
    if not isinstance(fn, dict):
        raise ToolError(f"'{where}.function' must be an object with a name", f"{where}.function")
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise ToolError(f"'{where}.function.name' is required (a string)", f"{where}.function.name")
    if not NAME.fullmatch(name):
        raise ToolError(f"'{where}.function.name' {name!r} must be 1 to 64 letters, digits, '_', '-' or '.'",
                        f"{where}.function.name")
    desc = fn.get("description")
    if desc is not None and not isinstance(desc, str):
        raise ToolError(f"'{where}.function.description' must be a string", f"{where}.function.description")
    params = fn.get("parameters")
    if params is None:
        params = EMPTY_PARAMETERS
    if not isinstance(params, dict):
        raise ToolError(f"'{where}.function.parameters' must be a JSON Schema (an object)",
                        f"{where}.function.parameters")
    try:
        json_schema_to_gbnf(params)            # what the call's grammar will need
    except SchemaError as e:
        raise ToolError(f"'{where}.function.parameters': {e}", f"{where}.function.parameters") from None
    except RecursionError:
        raise ToolError(f"'{where}.function.parameters' nests too deeply", f"{where}.function.parameters") from None
    spec_fn = {"name": name}
    if desc is not None:
        spec_fn["description"] = desc
    spec_fn["parameters"] = params
    return Tool(name, params, {"type": "function", "function": spec_fn})


def _choice(raw: Any, names: list[str]) -> tuple[str, str | None]:
    if raw is None:
        return ("auto" if names else "none"), None
    if isinstance(raw, str):
        if raw not in ("auto", "none", "required"):
            raise ToolError(f"'tool_choice' must be auto, none, required or a function, not {raw!r}", "tool_choice")
        if raw == "required" and not names:
            raise ToolError("'tool_choice' is required but the request has no 'tools'", "tool_choice")
        return raw, None
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("function"), dict):
        name = raw["function"].get("name")
        if not isinstance(name, str):
            raise ToolError("'tool_choice.function.name' must be a string", "tool_choice.function.name")
        if name not in names:
            raise ToolError(f"'tool_choice' names the function {name!r}, which is not in 'tools'",
                            "tool_choice.function.name")
        return "named", name
    raise ToolError("'tool_choice' must be auto, none, required or "
                    "{\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice")


def read_tool_request(body: dict) -> ToolRequest:
    """The request's tools and choice; ToolError names the first fault."""
    raw = body.get("tools")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ToolError("'tools' must be an array of function tools", "tools")
    tools = [_function(t, f"tools[{i}]") for i, t in enumerate(raw)]
    names = [t.name for t in tools]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ToolError(f"'tools[{i}].function.name' {n!r} is given twice", f"tools[{i}].function.name")
    choice, named = _choice(body.get("tool_choice"), names)
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise ToolError("'parallel_tool_calls' must be a boolean", "parallel_tool_calls")
    return ToolRequest(tuple(tools), choice, named, True if parallel is None else parallel)
