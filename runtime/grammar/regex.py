"""A JSON Schema `pattern` (a regular expression) as a GBNF expression over a JSON string's body.

The body is what sits between the quotes, so every character of the regex is written as JSON
writes it: `"` as \\", a newline as \\n, other control characters as \\u00XX. The subset:
literals and escapes (\\d \\w \\s \\D \\W \\S, \\. \\n \\t \\uHHHH ...), classes [...] with ranges and
negation, `.`, groups (...) and (?:...), alternation |, quantifiers * + ? {m} {m,} {m,n} (lazy
`?` after them changes nothing here). `^` may open and `$` may close the whole pattern; without
them the pattern may match anywhere in the string (JSON Schema's search semantics), so any
characters may come before and after it. Anything else (back-references, look-arounds, \\b,
named groups, anchors inside) raises SchemaError naming it.
"""
from __future__ import annotations

import json

MAX_CP = 0x10FFFF
# \s: a pattern is read in two dialects, ECMA-262's (JSON Schema's own) and Python's re (the
# jsonschema package's): \s is what both call white space, \S what neither does (no-break space,
# U+3000 ... are white space in both; U+FEFF only in ECMA-262, U+001C-U+001F and U+0085 only in
# Python's), so that a string the grammar makes passes either validator
_SPACE_BOTH = [(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029),
               (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)]
_SPACE_EITHER = _SPACE_BOTH + [(0x1C, 0x1F), (0x85, 0x85), (0xFEFF, 0xFEFF)]
_CLASS_ESCAPES = {
    "d": [(0x30, 0x39)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "s": _SPACE_BOTH,
}
_CHAR_ESCAPES = {"n": 10, "t": 9, "r": 13, "f": 12, "v": 11, "0": 0}
_RAW_BAD = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F)]   # written escaped in JSON


class PatternError(ValueError):
    pass


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, at = [], 0
    for lo, hi in sorted(ranges):
        if lo > at:
            out.append((at, lo - 1))
        at = max(at, hi + 1)
    if at <= MAX_CP:
        out.append((at, MAX_CP))
    return out


def _normalize(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _gbnf_char(cp: int) -> str:
    if cp in (0x22, 0x5C, 0x5B, 0x5D, 0x2D, 0x5E) or cp < 0x20 or cp == 0x7F:
        return f"\\x{cp:02X}" if cp < 0x100 else f"\\u{cp:04X}"
    return chr(cp)


def gbnf_literal(text: str) -> str:
    """text as a GBNF string literal."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def charset_gbnf(ranges: list[tuple[int, int]], json_body: bool = True) -> str:
    """A set of code points as GBNF. Over a JSON string body (json_body) the characters JSON
    writes raw go in one class, the others are written as their escapes; else one class."""
    ranges = _normalize(ranges)
    if not json_body:
        if not ranges:
            raise PatternError("a character class that matches nothing")
        return "[" + "".join(_gbnf_char(lo) if lo == hi else f"{_gbnf_char(lo)}-{_gbnf_char(hi)}"
                             for lo, hi in ranges) + "]"
    raw = _normalize([(lo, hi) for lo, hi in _intersect(ranges, _complement(_RAW_BAD))])
    parts = []
    if raw:
        parts.append("[" + "".join(_gbnf_char(lo) if lo == hi else f"{_gbnf_char(lo)}-{_gbnf_char(hi)}"
                                    for lo, hi in raw) + "]")
    for lo, hi in _intersect(ranges, _RAW_BAD):
        for cp in range(lo, hi + 1):
            parts.append(gbnf_literal(json.dumps(chr(cp))[1:-1]))
    if not parts:
        raise PatternError("a character class that matches nothing")
    return parts[0] if len(parts) == 1 else "(" + " | ".join(parts) + ")"


def _intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for lo1, hi1 in a:
        for lo2, hi2 in b:
            lo, hi = max(lo1, lo2), min(hi1, hi2)
            if lo <= hi:
                out.append((lo, hi))
    return out


class _RegexParser:
    def __init__(self, pattern: str, json_body: bool) -> None:
        self.p = pattern
        self.i = 0
        self.json_body = json_body

    def chars(self, ranges: list[tuple[int, int]]) -> str:
        return charset_gbnf(ranges, self.json_body)

    def error(self, what: str) -> PatternError:
        return PatternError(f"{what} (at offset {self.i} of the pattern)")

    def peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def alternation(self) -> str:
        alts = [self.concat()]
        while self.peek() == "|":
            self.i += 1
            alts.append(self.concat())
        return alts[0] if len(alts) == 1 else "(" + " | ".join(a or '""' for a in alts) + ")"

    def concat(self) -> str:
        items = []
        while self.peek() not in ("", "|", ")"):
            if self.peek() in "^$":
                raise self.error(f"anchor '{self.peek()}' inside the pattern is not supported")
            atom = self.atom()
            items.append(self.quantified(atom))
        return " ".join(i for i in items if i)

    def quantified(self, atom: str) -> str:
        ch = self.peek()
        if ch in ("*", "+", "?"):
            self.i += 1
            q = ch
        elif ch == "{" and self._brace():
            q = self._brace_take()
        else:
            return atom
        if self.peek() == "?":
            self.i += 1                 # lazy: the same strings
        elif self.peek() == "+":
            raise self.error("possessive quantifiers are not supported")
        if self.peek() in ("*", "+") or (self.peek() == "{" and self._brace()):
            raise self.error("a quantifier after a quantifier")
        return f"({atom}){q}"

    def _brace(self) -> bool:
        end = self.p.find("}", self.i)
        body = self.p[self.i + 1:end] if end > 0 else ""
        lo, _, hi = body.partition(",")
        return end > 0 and lo.isdigit() and (hi == "" or hi.isdigit())

    def _brace_take(self) -> str:
        end = self.p.index("}", self.i)
        body = self.p[self.i + 1:end]
        self.i = end + 1
        return "{" + body + "}"

    def atom(self) -> str:
        ch = self.peek()
        if ch == "(":
            self.i += 1
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise self.error("group syntax (?...) other than (?:...) is not supported")
            inner = self.alternation()
            if self.peek() != ")":
                raise self.error("missing ')'")
            self.i += 1
            return f"({inner})" if inner else '""'
        if ch in "*+?":
            raise self.error(f"nothing to repeat before '{ch}'")
        if ch == "[":
            return self.chars(self.char_class())
        if ch == ".":
            self.i += 1
            return self.chars(_complement([(10, 10)]))
        if ch == "\\":
            ranges = self.escape(in_class=False)
            return self.chars(ranges)
        self.i += 1
        return gbnf_literal(json.dumps(ch)[1:-1] if self.json_body else ch)

    def escape(self, in_class: bool) -> list[tuple[int, int]]:
        self.i += 1
        ch = self.peek()
        if not ch:
            raise self.error("a trailing backslash")
        self.i += 1
        if ch == "S":
            return _complement(_SPACE_EITHER)
        if ch.lower() in _CLASS_ESCAPES:
            ranges = _CLASS_ESCAPES[ch.lower()]
            return _complement(ranges) if ch.isupper() else ranges
        if ch in _CHAR_ESCAPES:
            cp = _CHAR_ESCAPES[ch]
            return [(cp, cp)]
        if ch in "xu":
            size = 2 if ch == "x" else 4
            digits = self.p[self.i:self.i + size]
            if len(digits) != size or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise self.error(f"\\{ch} needs {size} hex digits")
            self.i += size
            cp = int(digits, 16)
            return [(cp, cp)]
        if ch.isalnum():
            raise self.error(f"escape '\\{ch}' is not supported")
        return [(ord(ch), ord(ch))]

    def char_class(self) -> list[tuple[int, int]]:
        self.i += 1
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while first or self.peek() != "]":
            if not self.peek():
                raise self.error("missing ']'")
            first = False
            lo = self.class_item()
            if self.peek() == "-" and self.p[self.i + 1:self.i + 2] not in ("]", ""):
                self.i += 1
                hi = self.class_item()
                if len(lo) != 1 or len(hi) != 1 or lo[0][0] != lo[0][1] or hi[0][0] != hi[0][1]:
                    raise self.error("a range with a class escape at one end")
                if hi[0][0] < lo[0][0]:
                    raise self.error("a reversed range in a character class")
                ranges.append((lo[0][0], hi[0][0]))
            else:
                ranges.extend(lo)
        self.i += 1
        return _complement(ranges) if negated else ranges

    def class_item(self) -> list[tuple[int, int]]:
        if self.peek() == "\\":
            return self.escape(in_class=True)
        if self.p.startswith("[:", self.i):
            raise self.error("POSIX classes [:...:] are not supported")
        cp = ord(self.peek())
        self.i += 1
        return [(cp, cp)]


def _parse(body: str, json_body: bool) -> str:
    parser = _RegexParser(body, json_body)
    expr = parser.alternation()
    if parser.i != len(body):
        raise parser.error("unbalanced ')'")
    return f"({expr})" if expr else '""'


def pattern_gbnf(pattern: str, any_char: str) -> str:
    """The GBNF of the JSON string bodies that contain a match of `pattern` (or match it whole
    when it is anchored by ^ and $); `any_char` is the rule of one JSON string character."""
    body = pattern
    anchored_start = body.startswith("^")
    if anchored_start:
        body = body[1:]
    anchored_end = body.endswith("$") and not body.endswith("\\$")
    if anchored_end:
        body = body[:-1]
    parts = ([] if anchored_start else [f"{any_char}*"]) + [_parse(body, True)] \
        + ([] if anchored_end else [f"{any_char}*"])
    return " ".join(parts)


def regex_gbnf(pattern: str) -> str:
    """A grammar (root rule `root`) of the texts that match `pattern` whole (TGI's regex
    grammars); PatternError for what the subset does not cover."""
    body = pattern[1:] if pattern.startswith("^") else pattern
    body = body[:-1] if body.endswith("$") and not body.endswith("\\$") else body
    return f"root ::= {_parse(body, False)}\n"
