"""Generated text -> content and tool calls, on whole text and on text still being generated.

A format (formats.py) says where a call section starts (its triggers) and reads the section with
a `Cursor`: a forgiving reader of JSON-shaped text that stops with `Incomplete` where the text
ends too early and `Mismatch` where it cannot be the format. A section read up to `Incomplete`
still reports what it found (a call's name once its string is whole, its arguments' text so far),
which is what a stream sends as deltas; the arguments' text only ever grows.

Arguments are the model's own JSON text of the arguments value (checked by json.loads when the
section is whole), so a streamed call's deltas add up to exactly the text a plain response gives.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

NONE, PARTIAL, COMPLETE, INVALID = "none", "partial", "complete", "invalid"
WS = " \t\n\r"


class Incomplete(Exception):
    """The text ends before the format's next piece does."""


class Mismatch(Exception):
    """The text is not the format."""


@dataclass(frozen=True)
class Trigger:
    text: str               # where a section starts
    anchored: bool = False  # only at the start of the output (after whitespace)
    in_body: bool = False   # the text is the body's own start (else the body follows it)


@dataclass
class Call:
    name: str | None = None
    arguments: str = ""     # the arguments value's JSON text (so far)
    closed: bool = False    # the arguments value is whole


@dataclass
class Parsed:
    content: str                        # text before the section (generic format: its response)
    calls: list[Call] = field(default_factory=list)
    state: str = NONE                   # NONE (no section), PARTIAL, COMPLETE, INVALID


def _decode(quoted: str, where: int) -> str:
    try:
        return json.loads(quoted)
    except ValueError:
        raise Mismatch(f"bad string at {where}") from None


class Cursor:
    def __init__(self, text: str, i: int = 0, final: bool = False) -> None:
        self.text = text
        self.i = i
        self.final = final      # the text is all there is: nothing more may come at its end

    def ws(self) -> None:
        while self.i < len(self.text) and self.text[self.i] in WS:
            self.i += 1

    def at(self, s: str) -> bool:
        """Takes `s` if it comes next; False if something else does; Incomplete if the text ends
        inside it."""
        rest = self.text[self.i:self.i + len(s)]
        if rest == s:
            self.i += len(s)
            return True
        if s.startswith(rest) and self.i + len(rest) == len(self.text) and not (self.final and not rest):
            raise Incomplete()
        return False

    def lit(self, s: str) -> None:
        if not self.at(s):
            raise Mismatch(f"expected {s!r} at {self.i}")

    def string(self) -> str:
        """A JSON string, decoded."""
        start = self.i
        self.lit('"')
        end = self._string_end(start + 1)
        if end is None:
            raise Incomplete()
        self.i = end
        return _decode(self.text[start:end], start)

    def partial_string(self) -> tuple[str, bool]:
        """A JSON string decoded as far as the text goes (a cut escape held back), and whether
        it is whole."""
        start = self.i
        self.lit('"')
        end = self._string_end(start + 1)
        if end is not None:
            self.i = end
            return _decode(self.text[start:end], start), True
        body = self.text[start + 1:]
        i = 0
        while i < len(body):                           # an escape cut by the end waits
            if body[i] == "\\":
                step = 6 if body[i + 1:i + 2] == "u" else 2
                if i + step > len(body):
                    body = body[:i]
                    break
                i += step
            else:
                i += 1
        return _decode('"' + body + '"', start), False

    def _string_end(self, i: int) -> int | None:
        t = self.text
        while i < len(t):
            c = t[i]
            if c == "\\":
                i += 2
                continue
            if c == '"':
                return i + 1
            i += 1
        return None

    def value_end(self) -> int:
        """Skips one JSON value; its end. Brackets and strings are followed, not validated."""
        t, i = self.text, self.i
        if i >= len(t):
            raise Incomplete()
        if t[i] == '"':
            end = self._string_end(i + 1)
        elif t[i] in "{[":
            end = self._container_end(i)
        else:
            j = i
            while j < len(t) and t[j] not in WS + ",}]":
                j += 1
            end = j if j < len(t) else None          # a number may go on
            if end == i:
                raise Mismatch(f"expected a value at {i}")
        if end is None:
            raise Incomplete()
        self.i = end
        return end

    def _container_end(self, i: int) -> int | None:
        t, depth = self.text, 0
        while i < len(t):
            c = t[i]
            if c == '"':
                end = self._string_end(i + 1)
                if end is None:
                    return None
                i = end
                continue
            if c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return None


def read_call(cur: Cursor, calls: list[Call], args_key: str) -> None:
    """One call object {"name": ..., args_key: ..., other members skipped}, appended to `calls`
    as soon as it starts (so a partial read reports it)."""
    call = Call()
    cur.lit("{")
    calls.append(call)
    cur.ws()
    if cur.at("}"):
        raise Mismatch("a call without a name")
    while True:
        key = cur.string()
        cur.ws()
        cur.lit(":")
        cur.ws()
        if key == "name":
            call.name = cur.string()
        elif key == args_key:
            read_arguments(cur, call)
        else:
            cur.value_end()
        cur.ws()
        if cur.at(","):
            cur.ws()
            continue
        cur.lit("}")
        return


def read_call_array(cur: Cursor, calls: list[Call], args_key: str) -> None:
    """A JSON array of call objects."""
    cur.lit("[")
    while True:
        cur.ws()
        read_call(cur, calls, args_key)
        cur.ws()
        if not cur.at(","):
            cur.lit("]")
            return


def read_arguments(cur: Cursor, call: Call) -> None:
    """The arguments value's text into `call` (as far as it goes when the text ends inside it)."""
    start = cur.i
    try:
        end = cur.value_end()
    except Incomplete:
        call.arguments = cur.text[start:]
        raise
    call.arguments, call.closed = cur.text[start:end], True


def read_until(cur: Cursor, marks: tuple[str, ...]) -> str:
    """The text up to the first of `marks` (not taken); Incomplete if none comes before the end."""
    t = cur.text
    found = [(t.find(m, cur.i), m) for m in marks]
    found = [(i, m) for i, m in found if i >= 0]
    if not found:
        raise Incomplete()
    end = min(found)[0]
    out, cur.i = t[cur.i:end], end
    return out


# An anchored trigger (a call's JSON alone) may come inside a Markdown code block: its opening
# line, and what a text still being written may be of it
FENCE = re.compile(r"```(?:json|xml)?[ \t]*\n")
FENCE_START = re.compile(r"`{1,3}|```(?:j(?:s(?:o(?:n)?)?)?|x(?:m(?:l)?)?)?[ \t]*")
FENCE_END = re.compile(r"```(?:json|xml)?[ \t]*\n[ \t\n\r]*$")


def _anchor(text: str) -> int | None:
    """Where an anchored trigger may start: after leading white space and a code block's opening
    line (```json); None while the text may still become such a line."""
    i = len(text) - len(text.lstrip(WS))
    if text.startswith("`", i):
        m = FENCE.match(text, i)
        if m is None:
            return None if FENCE_START.fullmatch(text, i) else i
        i = m.end()
        i += len(text) - i - len(text[i:].lstrip(WS))
    return i


def _squeezed(text: str) -> str:
    """JSON text without the white space after its `{`s (an anchored trigger's text has none)."""
    return re.sub(r"\{[ \t\n\r]+", "{", text)


def _anchored_at(t: Trigger, text: str, i: int) -> bool:
    """The anchored trigger `t` at text[i:], white space after a `{` allowed ('{\n  "name"')."""
    j = i
    for ch in t.text:
        if not text.startswith(ch, j):
            return False
        j += 1
        if ch == "{":
            while j < len(text) and text[j] in WS:
                j += 1
    return True


def find_trigger(triggers: tuple[Trigger, ...], text: str) -> tuple[int, Trigger] | None:
    """The first place a section starts, and the trigger found there."""
    best: tuple[int, Trigger] | None = None
    lead = _anchor(text)
    for t in triggers:
        if t.anchored:
            pos = lead if lead is not None and _anchored_at(t, text, lead) else -1
        else:
            pos = text.find(t.text)
        if pos >= 0 and (best is None or pos < best[0]):
            best = (pos, t)
    return best


def content_before(text: str, pos: int) -> str:
    """The content before a section at `pos`: a code block's opening line just before it is not,
    nor white space alone (as a plain response's content is stripped)."""
    content = FENCE_END.sub("", text[:pos])
    return content if content.strip(WS) else ""


def held_back(triggers: tuple[Trigger, ...], text: str) -> int:
    """How many characters at the end of `text` (no section found yet) might still become a
    trigger, and so must not be shown as content yet."""
    hold = 0
    lead = _anchor(text)
    for t in triggers:
        if t.anchored:
            # all white space (and a code block's start) so far, or a trigger's start
            if lead is None or t.text.startswith(_squeezed(text[lead:])):
                hold = max(hold, len(text))
            continue
        for k in range(min(len(t.text) - 1, len(text)), 0, -1):
            if t.text.startswith(text[-k:]):
                hold = max(hold, k)
                break
    return hold


def check_calls(calls: list[Call], names: set[str]) -> bool:
    """Every call names a known tool and its arguments are a JSON object."""
    for c in calls:
        if c.name not in names or not c.closed:
            return False
        try:
            if not isinstance(json.loads(c.arguments), dict):
                return False
        except ValueError:
            return False
    return bool(calls)
