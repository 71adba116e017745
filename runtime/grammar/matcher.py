"""The grammar as a pushdown matcher over code points, with its states made deterministic.

A parse position is a *stack* of element positions (a tuple of indexes into the flat element
list, top last), as llama.cpp keeps it: the top is the character element to match next, the
elements below it are where to continue in the rules that referenced the current one. The
empty stack means the grammar has matched completely. Because of alternatives, the matcher is
in a *set* of stacks at once; `expand` turns a stack whose top is a rule reference into the
stacks whose tops are characters (every alternative of the rule, empty ones skipped).

For speed the sets are interned: a `config` is one frozenset of stacks with a small integer id
(0 is the dead set: nothing matches), and moving a config over one character is memoized in a
table `trans[config, char class]`. The character classes split the code point space into runs
that every character element of the grammar treats alike (their bounds are the bounds of all
ranges in the grammar), so one table column serves all the code points of a run. Configs
repeat a lot (a JSON string's body returns to the same config after every character), so the
table fills up quickly and most steps are one array read.

Code points follow llama.cpp's UTF-8 decoding: a 4-byte lead F0-FF gives up to 22 bits, so
the space runs to 0x3FFFFF; a token may end inside a character (`partial`: the bits so far and
the number of continuation bytes still due), and is then allowed if the character could still
become one the grammar takes next (llama.cpp's range test, `partial_fits`).
"""
from __future__ import annotations

import bisect
import threading

import numpy as np

from .gbnf import ALT, CHAR_ALT, CHAR_ANY, CHAR_NOT, CHAR_RNG_UPPER, CHAR_STARTS, END, RULE_REF, Grammar, GrammarError

UNIVERSE = 0x400000          # code points llama.cpp's decoder can produce
DEAD = 0                     # the config of no stacks
Stack = tuple[int, ...]
NO_PARTIAL = (0, 0)          # (bits so far, continuation bytes still due)
MAX_STACKS = 4096            # parse stacks alive at once: more means a grammar too ambiguous to follow
_LEAD_LEN = (1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 3, 4)   # UTF-8 length by a lead's high nibble


def decode_utf8(data: bytes, partial: tuple[int, int] = NO_PARTIAL) -> tuple[list[int], tuple[int, int]] | None:
    """Bytes -> (code points, partial character at the end), continuing `partial`, with
    llama.cpp's rules: a lead byte's length comes from its high nibble (F8-FF count as 4-byte
    leads), bytes inside a character are not checked, a continuation byte where a character
    should start is invalid (None), and so is a non-continuation byte where one is due."""
    value, due = partial
    i, n = 0, len(data)
    cps: list[int] = []
    while i < n and due > 0:
        b = data[i]
        if b >> 6 != 2:
            return None
        value = (value << 6) | (b & 0x3F)
        i += 1
        due -= 1
    if partial[1] > 0 and due == 0:
        cps.append(value)
    while i < n:
        b = data[i]
        due = _LEAD_LEN[b >> 4] - 1
        if due < 0:
            return None
        value = b & ((1 << (7 - due)) - 1)
        i += 1
        while i < n and due > 0:
            value = (value << 6) | (data[i] & 0x3F)
            i += 1
            due -= 1
        if due == 0:
            cps.append(value)
    return cps, ((value, due) if due else NO_PARTIAL)


class CharSet:
    """One character element: [a-z0-9], [^"\\\\], ".", or a literal's single character."""
    __slots__ = ("negated", "any", "ranges")

    def __init__(self, negated: bool, any_char: bool, ranges: list[tuple[int, int]]) -> None:
        self.negated, self.any, self.ranges = negated, any_char, ranges

    def partial_fits(self, value: int, due: int) -> bool:
        """Could a character begun as (value, due) still match? llama.cpp's test: the run of code
        points the character may become overlaps an allowed range (for a negated set: overlaps
        no excluded range). Overlong two-byte leads (C0, C1) never fit."""
        if due < 0 or (due == 1 and value < 2):
            return False
        low = value << (6 * due)
        high = low | ((1 << (6 * due)) - 1)
        if low == 0:
            low = {2: 1 << 11, 3: 1 << 16}.get(due, 0)
        if self.any:
            return True
        for lo, hi in self.ranges:
            if lo <= high and low <= hi:
                return not self.negated
        return self.negated


class Matcher:
    """A compiled grammar: char sets, the memoized stack expansion and the config table.
    Shared by every request that uses the same grammar text (state lives in the caller: a
    config id and a partial character); the tables grow under a lock."""

    def __init__(self, grammar: Grammar) -> None:
        self.grammar = grammar
        self._flatten(grammar)
        self._make_classes()
        self.configs: list[frozenset[Stack]] = [frozenset()]
        self._config_ids: dict[frozenset[Stack], int] = {frozenset(): DEAD}
        self.trans = np.full((64, self.n_classes), -1, dtype=np.int32)
        self.trans[DEAD] = DEAD
        self._expanded: dict[Stack, frozenset[Stack]] = {}
        self._partial: dict[tuple[int, int, int], bool] = {}
        self._moves_of: dict[int, list[tuple[int, frozenset[Stack]]]] = {}
        self.lock = threading.RLock()
        start: set[Stack] = set()
        for s in self.alts[grammar.root]:
            start |= self.expand(() if self._is_end(s) else (s,))
        self.start = self.intern(frozenset(start))

    # --- compiling -------------------------------------------------------------------------

    def _flatten(self, grammar: Grammar) -> None:
        """All rules in one element list; per rule the positions its alternatives start at;
        per character element its CharSet and the position after it (-1: end of alternative)."""
        self.types: list[int] = []
        self.values: list[int] = []
        offsets = []
        for rule in grammar.rules:
            offsets.append(len(self.types))
            for t, v in rule:
                self.types.append(t)
                self.values.append(v)
        self.alts: list[list[int]] = []
        for rule_id, rule in enumerate(grammar.rules):
            base = offsets[rule_id]
            starts = [base] + [base + i + 1 for i, (t, _) in enumerate(rule) if t == ALT]
            self.alts.append(starts)
        self.charsets: dict[int, CharSet] = {}
        self.after: dict[int, int] = {}
        types = self.types
        for p, t in enumerate(types):
            if t not in CHAR_STARTS:
                continue
            ranges, q = [], p
            while True:
                lo = self.values[q]
                if types[q + 1] == CHAR_RNG_UPPER:
                    ranges.append((lo, self.values[q + 1]))
                    q += 2
                else:
                    ranges.append((lo, lo))
                    q += 1
                if types[q] != CHAR_ALT:
                    break
            self.charsets[p] = CharSet(t == CHAR_NOT, t == CHAR_ANY, [] if t == CHAR_ANY else ranges)
            self.after[p] = -1 if self._is_end(q) else q

    def _is_end(self, p: int) -> bool:
        return self.types[p] in (END, ALT)

    def _make_classes(self) -> None:
        """Class k holds the code points in [bounds[k-1], bounds[k]); each char element's
        member mask has bit k set when it matches the class."""
        cuts = set()
        for cs in self.charsets.values():
            for lo, hi in cs.ranges:
                cuts.add(lo)
                cuts.add(hi + 1)
        self.bounds = sorted(c for c in cuts if 0 < c < UNIVERSE)
        self.n_classes = len(self.bounds) + 1
        self.member: dict[int, int] = {}
        everything = (1 << self.n_classes) - 1
        for p, cs in self.charsets.items():
            bits = 0
            for lo, hi in cs.ranges:
                first, last = self.class_of(lo), self.class_of(hi)
                bits |= ((1 << (last - first + 1)) - 1) << first
            self.member[p] = everything if cs.any else (everything ^ bits if cs.negated else bits)

    def class_of(self, cp: int) -> int:
        return bisect.bisect_right(self.bounds, cp)

    # --- configs ---------------------------------------------------------------------------

    def intern(self, config: frozenset[Stack]) -> int:
        cid = self._config_ids.get(config)
        if cid is None:
            cid = len(self.configs)
            self.configs.append(config)
            self._config_ids[config] = cid
            if cid >= len(self.trans):
                grown = np.full((2 * len(self.trans), self.n_classes), -1, dtype=np.int32)
                grown[:len(self.trans)] = self.trans
                self.trans = grown
        return cid

    def expand(self, stack: Stack) -> frozenset[Stack]:
        """The stacks `stack` stands for once every rule reference on top is opened: each has a
        character element on top, or is empty (the grammar has matched)."""
        done = self._expanded.get(stack)
        if done is not None:
            return done
        out, seen, todo = set(), set(), [stack]
        types, values = self.types, self.values
        while todo:
            st = todo.pop()
            if st in seen:
                continue
            seen.add(st)
            if not st or types[st[-1]] != RULE_REF:
                out.add(st)
                continue
            p = st[-1]
            base = st[:-1] if self._is_end(p + 1) else st[:-1] + (p + 1,)
            for s in self.alts[values[p]]:
                todo.append(base if self._is_end(s) else base + (s,))
            if len(seen) > 4 * MAX_STACKS:
                raise GrammarError(f"the grammar is too ambiguous: more than {MAX_STACKS} parse stacks "
                                   "alive at once")
        result = frozenset(out)
        self._expanded[stack] = result
        return result

    def step(self, cid: int, cls: int) -> int:
        """The config after one character of class `cls` (memoized in trans)."""
        nxt = int(self.trans[cid, cls])
        if nxt >= 0:
            return nxt
        with self.lock:
            new: set[Stack] = set()
            for bits, moved in self._moves(cid):
                if (bits >> cls) & 1:
                    new |= moved
            if len(new) > MAX_STACKS:
                raise GrammarError(f"the grammar is too ambiguous: more than {MAX_STACKS} parse stacks "
                                   "alive at once")
            nxt = self.intern(frozenset(new))
            self.trans[cid, cls] = nxt
        return nxt

    def _moves(self, cid: int) -> list[tuple[int, frozenset[Stack]]]:
        """Per stack of the config: the classes its top matches (bits) and the stacks it
        becomes then (the same for every one of those classes)."""
        moves = self._moves_of.get(cid)
        if moves is None:
            moves = []
            for st in self.configs[cid]:
                if st:
                    after = self.after[st[-1]]
                    moves.append((self.member[st[-1]], self.expand(st[:-1] + (after,) if after >= 0 else st[:-1])))
            self._moves_of[cid] = moves
        return moves

    def partial_fits(self, cid: int, value: int, due: int) -> bool:
        """Can some stack of the config take a character begun as (value, due)?"""
        key = (cid, value, due)
        ok = self._partial.get(key)
        if ok is None:
            ok = any(st and self.charsets[st[-1]].partial_fits(value, due) for st in self.configs[cid])
            self._partial[key] = ok
        return ok

    def accepts(self, cid: int) -> bool:
        """The grammar has matched: the output may end here."""
        return () in self.configs[cid]

    def finished(self, cid: int) -> bool:
        """Matched, and nothing may follow."""
        return self.configs[cid] == frozenset({()})

    # --- feeding text ----------------------------------------------------------------------

    def feed(self, cid: int, partial: tuple[int, int], data: bytes) -> tuple[int, tuple[int, int]]:
        """The state after `data` (a token's bytes): (DEAD, ...) if the grammar rejects them."""
        decoded = decode_utf8(data, partial)
        if decoded is None or 0 in decoded[0] or (not data and partial != NO_PARTIAL):
            return DEAD, NO_PARTIAL
        cps, partial = decoded
        for cp in cps:
            cid = self.step(cid, self.class_of(cp))
            if cid == DEAD:
                return DEAD, NO_PARTIAL
        if partial != NO_PARTIAL and not self.partial_fits(cid, *partial):
            return DEAD, NO_PARTIAL
        return cid, partial

    def match(self, data: bytes) -> bool:
        """Does the grammar match all of `data` (UTF-8) exactly?"""
        cid, partial = self.feed(self.start, NO_PARTIAL, data)
        return cid != DEAD and partial == NO_PARTIAL and self.accepts(cid)

    def match_prefix(self, data: bytes) -> bool:
        """Is `data` the beginning of something the grammar matches?"""
        return self.feed(self.start, NO_PARTIAL, data)[0] != DEAD
