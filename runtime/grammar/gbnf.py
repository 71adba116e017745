"""GBNF, llama.cpp's grammar format, parsed into flat rules the matcher walks.

The format (as llama.cpp reads it):

    root  ::= item ("," ws item)*       # a rule: name ::= alternatives; `root` is the start
    item  ::= "lit\\n" | [a-z0-9_-]+ | [^"] | . | ( "x" | "y" ){2,4} | other?

- names are letters, digits and '-'; a rule ends at the end of its line (newlines are free
  inside parentheses and after '|'); `#` starts a comment;
- literals "..." and classes [...] take the escapes \\n \\t \\r \\\\ \\" \\[ \\] \\- \\xHH \\uHHHH
  \\UHHHHHHHH; `[^...]` is a negated class, `a-z` a range; `.` is any character;
- `*` `+` `?` `{m}` `{m,}` `{m,n}` repeat the item before them.

Rules are stored as llama.cpp stores them, one flat list of (type, value) elements per rule:
the alternatives' elements separated by ALT, the rule closed by END. A character element is
CHAR or CHAR_NOT (negated) or CHAR_ANY, followed by CHAR_ALT (a further character of the same
class) and CHAR_RNG_UPPER (the upper end of a range) elements. Repetitions are rewritten into
helper rules:  S{m,n} -> S..S (m times) then S' where S'_1 ::= S | and S'_k ::= S S'_(k-1) | ;
S{m,} -> S..S S' where S' ::= S S' | .

Errors are GrammarError("line L, column C: ..."), pointing at the fault. Rules that can
derive themselves at their left edge (left recursion) are refused, as llama.cpp refuses them:
the stack matcher would grow forever on them. Token references (`<[id]>`, `<name>`) are
llama.cpp's and are not supported: they are refused by name.
"""
from __future__ import annotations

from dataclasses import dataclass

END, ALT, RULE_REF, CHAR, CHAR_NOT, CHAR_RNG_UPPER, CHAR_ALT, CHAR_ANY = range(8)
CHAR_STARTS = (CHAR, CHAR_NOT, CHAR_ANY)
MAX_REPEAT = 2000          # largest repetition count written in a grammar (llama.cpp's bound too)
MAX_ELEMENTS = 1_000_000   # grammar size after repetitions are expanded
_ESCAPES = {"t": 9, "r": 13, "n": 10, "\\": 92, '"': 34, "[": 91, "]": 93, "-": 45}
_HEX_LEN = {"x": 2, "u": 4, "U": 8}


class GrammarError(ValueError):
    """An invalid grammar: the message names the fault and where it is."""


@dataclass(frozen=True)
class Grammar:
    """Parsed rules: rules[i] is rule i's element list (type, value), closed by END."""
    rules: tuple[tuple[tuple[int, int], ...], ...]
    names: tuple[str, ...]
    root: int


def _is_word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "-")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text + "\0"     # a sentinel: the end of input reads as "\0"
        self.n = len(text)
        self.ids: dict[str, int] = {}
        self.rules: list[list[tuple[int, int]] | None] = []
        self.first_use: dict[int, int] = {}     # rule id -> offset of its first reference
        self.defined_at: dict[int, int] = {}    # rule id -> offset of its definition
        self.size = 0

    # --- errors and positions --------------------------------------------------------------

    def error(self, pos: int, message: str) -> GrammarError:
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return GrammarError(f"line {line}, column {column}: {message}")

    def at(self, pos: int) -> str:
        return self.text[pos] if pos < self.n else "\0"

    def describe(self, pos: int) -> str:
        if pos >= self.n:
            return "the end of the grammar"
        return "a newline" if self.text[pos] in "\r\n" else repr(self.text[pos])

    # --- symbols ---------------------------------------------------------------------------

    def symbol(self, name: str) -> int:
        if name not in self.ids:
            self.ids[name] = len(self.rules)
            self.rules.append(None)
        return self.ids[name]

    def new_symbol(self, base: str) -> int:
        return self.symbol(f"{base}_{len(self.rules)}")

    def add_rule(self, rule_id: int, elements: list[tuple[int, int]]) -> None:
        self.size += len(elements)
        if self.size > MAX_ELEMENTS:
            raise GrammarError(f"grammar too large: more than {MAX_ELEMENTS} elements once "
                               "repetitions are expanded")
        self.rules[rule_id] = elements

    # --- lexing ----------------------------------------------------------------------------

    def space(self, pos: int, newline_ok: bool) -> int:
        while True:
            ch = self.at(pos)
            if ch == "#":
                while pos < self.n and self.text[pos] not in "\r\n":
                    pos += 1
            elif ch in " \t" or (newline_ok and ch in "\r\n"):
                pos += 1
            else:
                return pos

    def name(self, pos: int) -> int:
        end = pos
        while _is_word(self.at(end)):
            end += 1
        if end == pos:
            raise self.error(pos, f"expected a rule name, found {self.describe(pos)}")
        return end

    def integer(self, pos: int) -> tuple[int, int]:
        end = pos
        while self.at(end).isascii() and self.at(end).isdigit():
            end += 1
        if end == pos:
            raise self.error(pos, f"expected a number, found {self.describe(pos)}")
        return int(self.text[pos:end]), end

    def char(self, pos: int) -> tuple[int, int]:
        """One character of a literal or class, escapes decoded: (code point, next offset)."""
        ch = self.at(pos)
        if pos >= self.n:
            raise self.error(pos, "unexpected end of the grammar")
        if ch != "\\":
            return ord(ch), pos + 1
        esc = self.at(pos + 1)
        if esc in _ESCAPES:
            return _ESCAPES[esc], pos + 2
        if esc in _HEX_LEN:
            size = _HEX_LEN[esc]
            digits = self.text[pos + 2:pos + 2 + size]
            if len(digits) != size or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise self.error(pos, f"expected {size} hex digits after \\{esc}")
            return int(digits, 16), pos + 2 + size
        raise self.error(pos, f"unknown escape '\\{esc}'" if pos + 1 < self.n
                         else "unexpected end of the grammar")

    # --- grammar structure -----------------------------------------------------------------

    def parse(self) -> Grammar:
        pos = self.space(0, True)
        while pos < self.n:
            pos = self.rule(pos)
        if not self.ids:
            raise GrammarError("line 1, column 1: empty grammar: no rules")
        for rule_id, rule in enumerate(self.rules):
            if rule is None:
                name = next(k for k, v in self.ids.items() if v == rule_id)
                raise self.error(self.first_use[rule_id], f"undefined rule '{name}'")
        if "root" not in self.ids:
            raise GrammarError("line 1, column 1: the grammar has no 'root' rule")
        rules = tuple(tuple(r) for r in self.rules)  # type: ignore[arg-type]
        names = tuple(sorted(self.ids, key=self.ids.__getitem__))
        grammar = Grammar(rules, names, self.ids["root"])
        bad = left_recursive_rule(grammar)
        if bad is not None:
            user = names[bad].split("_")[0]     # helper rules are named rule_N ('_' is not in names)
            raise self.error(self.defined_at[self.ids[user]],
                             f"left recursion in rule '{user}' (not supported)")
        return grammar

    def rule(self, pos: int) -> int:
        start = pos
        end = self.name(pos)
        name = self.text[pos:end]
        rule_id = self.symbol(name)
        if rule_id in self.defined_at:
            raise self.error(start, f"rule '{name}' is defined twice")
        self.defined_at[rule_id] = start
        pos = self.space(end, False)
        if self.text[pos:pos + 3] != "::=":
            raise self.error(pos, f"expected '::=' after '{name}', found {self.describe(pos)}")
        pos = self.alternates(self.space(pos + 3, True), name, rule_id, nested=False)
        if self.at(pos) == "\r":
            pos += 2 if self.at(pos + 1) == "\n" else 1
        elif self.at(pos) == "\n":
            pos += 1
        elif pos < self.n:
            raise self.error(pos, f"unexpected {self.describe(pos)}")
        return self.space(pos, True)

    def alternates(self, pos: int, name: str, rule_id: int, nested: bool) -> int:
        elements: list[tuple[int, int]] = []
        pos = self.sequence(pos, name, elements, nested)
        while self.at(pos) == "|":
            elements.append((ALT, 0))
            pos = self.sequence(self.space(pos + 1, True), name, elements, nested)
        elements.append((END, 0))
        self.add_rule(rule_id, elements)
        return pos

    def sequence(self, pos: int, name: str, out: list[tuple[int, int]], nested: bool) -> int:
        last = len(out)     # where the item a repetition operator applies to starts
        while pos < self.n:
            ch = self.text[pos]
            if ch == '"':
                last, pos = len(out), self.literal(pos, out)
            elif ch == "[":
                last, pos = len(out), self.char_class(pos, out)
            elif _is_word(ch):
                end = self.name(pos)
                rule_id = self.symbol(self.text[pos:end])
                self.first_use.setdefault(rule_id, pos)
                last = len(out)
                out.append((RULE_REF, rule_id))
                pos = end
            elif ch == "(":
                sub = self.new_symbol(name)
                pos = self.alternates(self.space(pos + 1, True), name, sub, nested=True)
                if self.at(pos) != ")":
                    raise self.error(pos, f"expected ')', found {self.describe(pos)}")
                last = len(out)
                out.append((RULE_REF, sub))
                pos += 1
            elif ch == ".":
                last = len(out)
                out.append((CHAR_ANY, 0))
                pos += 1
            elif ch in "*+?{":
                pos = self.repetition(pos, name, out, last)
            elif ch in "<!":
                raise self.error(pos, "token references (<...>) are not supported")
            else:
                break
            pos = self.space(pos, nested)
        return pos

    def literal(self, pos: int, out: list[tuple[int, int]]) -> int:
        pos += 1
        while self.at(pos) != '"' or pos >= self.n:
            if pos >= self.n:
                raise self.error(pos, "unterminated string literal")
            cp, pos = self.char(pos)
            out.append((CHAR, cp))
        return pos + 1

    def char_class(self, pos: int, out: list[tuple[int, int]]) -> int:
        open_at = pos
        pos += 1
        kind = CHAR
        if self.at(pos) == "^":
            kind, pos = CHAR_NOT, pos + 1
        first = len(out)
        while self.at(pos) != "]" or pos >= self.n:
            if pos >= self.n:
                raise self.error(open_at, "unterminated character class")
            cp, pos = self.char(pos)
            out.append((kind if len(out) == first else CHAR_ALT, cp))
            if self.at(pos) == "-" and self.at(pos + 1) != "]" and pos + 1 < self.n:
                upper, pos = self.char(pos + 1)
                if upper < cp:
                    raise self.error(pos, f"character range {chr(cp)!r}-{chr(upper)!r} is reversed")
                out.append((CHAR_RNG_UPPER, upper))
        if len(out) == first:
            raise self.error(open_at, "empty character class")
        return pos + 1

    def repetition(self, pos: int, name: str, out: list[tuple[int, int]], last: int) -> int:
        if last == len(out):
            raise self.error(pos, f"'{self.text[pos]}' has no item before it to repeat")
        op = self.text[pos]
        if op != "{":
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[op]
            self.repeat(out, last, lo, hi, name)
            return pos + 1
        start = pos
        lo, pos = self.integer(self.space(pos + 1, True))
        pos = self.space(pos, True)
        hi: int | None = lo
        if self.at(pos) == ",":
            pos = self.space(pos + 1, True)
            hi = None
            if self.at(pos).isdigit():
                hi, pos = self.integer(pos)
                pos = self.space(pos, True)
        if self.at(pos) != "}":
            raise self.error(pos, f"expected '}}' or ',' in a repetition, found {self.describe(pos)}")
        if lo > MAX_REPEAT or (hi is not None and hi > MAX_REPEAT):
            raise self.error(start, f"repetition count above {MAX_REPEAT}")
        if hi is not None and hi < lo:
            raise self.error(start, f"repetition {{{lo},{hi}}}: the maximum is below the minimum")
        self.repeat(out, last, lo, hi, name)
        return pos + 1

    def repeat(self, out: list[tuple[int, int]], last: int, lo: int, hi: int | None, name: str) -> None:
        """Rewrites out[last:] (one item) into lo copies and the optional rest as helper rules."""
        item = out[last:]
        del out[last:]
        if len(item) * max(lo, hi or 0, 1) + self.size > MAX_ELEMENTS:
            raise GrammarError(f"grammar too large: more than {MAX_ELEMENTS} elements once "
                               "repetitions are expanded")
        for _ in range(lo):
            out.extend(item)
        if hi is None:                      # S' ::= S S' |
            rec = self.new_symbol(name)
            self.add_rule(rec, item + [(RULE_REF, rec), (ALT, 0), (END, 0)])
            out.append((RULE_REF, rec))
            return
        prev = None                         # S'_k ::= S S'_(k-1) |   (S'_1 ::= S |)
        for _ in range(hi - lo):
            opt = self.new_symbol(name)
            tail = [(RULE_REF, prev)] if prev is not None else []
            self.add_rule(opt, item + tail + [(ALT, 0), (END, 0)])
            prev = opt
        if prev is not None:
            out.append((RULE_REF, prev))


def alternatives(rule: tuple[tuple[int, int], ...]) -> list[list[tuple[int, int]]]:
    """A rule's alternatives, each its list of elements."""
    alts: list[list[tuple[int, int]]] = [[]]
    for el in rule[:-1]:
        if el[0] == ALT:
            alts.append([])
        else:
            alts[-1].append(el)
    return alts


def nullable_rules(grammar: Grammar) -> list[bool]:
    """Which rules can derive the empty string (a fixed point over the rules)."""
    nullable = [False] * len(grammar.rules)
    changed = True
    while changed:
        changed = False
        for i, rule in enumerate(grammar.rules):
            if nullable[i]:
                continue
            for alt in alternatives(rule):
                if all(t == RULE_REF and nullable[v] for t, v in alt):
                    nullable[i] = changed = True
                    break
    return nullable


def _left_edges(grammar: Grammar) -> list[list[tuple[int, bool, bool]]]:
    """Per rule, the rules it can start with: (rule, pushes, skipped). `pushes`: something
    follows the reference in its alternative (the matcher's stack grows by it); `skipped`: the
    reference comes after nullable references."""
    nullable = nullable_rules(grammar)
    edges: list[list[tuple[int, bool, bool]]] = []
    for rule in grammar.rules:
        out = []
        for alt in alternatives(rule):
            for i, (t, v) in enumerate(alt):
                if t != RULE_REF:
                    break
                out.append((v, i + 1 < len(alt), i > 0))
                if not nullable[v]:
                    break
        edges.append(out)
    return edges


def _reaches(edges: list[list[tuple[int, bool, bool]]], start: int, goal: int,
             plain_only: bool = False) -> bool:
    seen, todo = set(), [start]
    while todo:
        r = todo.pop()
        if r == goal:
            return True
        if r not in seen:
            seen.add(r)
            todo.extend(s for s, _, skipped in edges[r] if not (plain_only and skipped))
    return False


def left_recursive_rule(grammar: Grammar) -> int | None:
    """A rule that derives itself at its left edge in a way the stack matcher cannot follow, or
    None. Refused: a cycle of left-edge references with something after one of them (the stack
    would grow forever), and a cycle of references that open their alternatives (llama.cpp's
    own test). A cycle that only passes through empty-able items in tail position, as
    `("x"?)*` makes, is harmless and kept."""
    edges = _left_edges(grammar)
    for r, out in enumerate(edges):
        for s, pushes, skipped in out:
            if pushes and _reaches(edges, s, r):
                return r
            if not skipped and _reaches(edges, s, r, plain_only=True):
                return r
    return None


def parse_grammar(text: str) -> Grammar:
    """GBNF text -> Grammar; GrammarError naming the fault (line, column) if it is invalid."""
    if not isinstance(text, str):
        raise GrammarError("a grammar must be text")
    if "\0" in text:
        raise GrammarError("the grammar contains a NUL character")
    return _Parser(text).parse()
