"""Tool calling (OpenAI `tools`): what a request offers, the model's own call format, the grammar
that keeps a call well-formed, and reading calls back out of the generated text.

    request.py     `tools` / `tool_choice` / `parallel_tool_calls` read and checked (ToolError)
    formats.py     the call formats (Hermes/Qwen `<tool_call>`, Mistral `[TOOL_CALLS]`, Llama 3.1
                   JSON, a generic JSON answer), detected from the chat template's text; each
                   one's grammar and how the conversation is handed to the template
    parse.py       generated text -> content and calls, also on partial text (streaming)
    constraint.py  the Constraint: free text until a call starts, then the call's grammar

Imports numpy (through the grammar engine): not for the launcher's start-up path.
"""
from .formats import Format, detect_format
from .request import Tool, ToolError, ToolRequest, read_tool_request

__all__ = ["Format", "detect_format", "Tool", "ToolError", "ToolRequest", "read_tool_request"]
