"""Speculative decoding with no second model: prompt lookup (n-gram drafts), verified in one pass.

One stream's generation reads every weight once per token; a forward call over a few rows of
the same sequence reads them once for all of those rows. So, each step, guess the tokens that
follow from the text itself, feed [the chosen token, draft 1 .. draft k] as k + 1 rows of one
forward call, and keep the drafts the model agrees with: up to k + 1 tokens for one weight read.

Drafting (`NgramIndex`): the longest recent suffix of the history (prompt + generated, n-grams
of `ngram_max` down to `ngram_min` tokens) that occurred before; the tokens that followed its
latest earlier occurrence are the draft (as llama.cpp's prompt-lookup / n-gram drafting does).
Text that repeats or edits its prompt (rewriting a document, code edits, quoting) drafts well;
free text rarely finds a match, and then nothing is drafted and nothing is lost.

Verifying (`take_rows`): row i of the call gives the logits after [token, d1 .. di]. The
request's own `Decoding` chooses from row 0 exactly as it would without drafts (processors
on the history so far, the constraint's mask, the sampler); row i + 1 is used only if the token
chosen from row i is d(i+1). So every token comes from the logits of the same history through
the same chain, one `choose` and one `accept` each, in order: penalties, grammar constraints,
stop strings, end-of-generation tokens and max_tokens act per position as they always do.
At temperature 0 the output is the one of decoding token by token, provided the rows' logits
are too: the forward pass computes every generated row of a sequence as if it were the
sequence's only row (lp_batch in csrc/api.h), so they are bit for bit.

When sampling, drawing x from p and keeping the draft d when x == d *is* the standard
accept/reject rule for a deterministic draft (draft probability 1 for d): d is kept with
probability p(d), and on rejection x is distributed as p without d, renormalised. The output
is distributed exactly as without speculation; with a fixed seed it is even the same text,
since the sampler draws once per token either way.

When it pays (`DraftPolicy`): a draft of k tokens makes a call of k + 1 rows, which costs
cost(k + 1) one-row calls (`CostModel`: measured on this model as it runs), and brings
1 + a1 + a1 a2 + ... + a1 ... ak tokens on average (ai: the recent rate at which draft i is
kept when the ones before it were: drafts are kept in runs). k is the count that makes the
most tokens per unit of time (0 when none beats a lone row; up to draft_max; a draft shorter
than draft_min is not verified). A run of rejections brings a1 down and drafting stops; while
it is stopped the evidence decays, so a later repetitive stretch is tried again.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from runtime.decoding import Chunk, Decoding


@dataclass(frozen=True)
class SpecParams:
    """Speculative decoding settings (CLI: --draft-max, --draft-min)."""
    draft_max: int = 8        # most draft tokens per step (0: no speculation); at most MAX_DRAFT
    draft_min: int = 0        # a draft shorter than this is not verified
    ngram_min: int = 2        # the shortest suffix looked up in the history
    ngram_max: int = 4        # the longest
    row_cost: float = 0.15    # one more row's cost relative to a one-row call, until measured
    adaptive: bool = True     # False: draft draft_max tokens whenever a match is found

    @property
    def enabled(self) -> bool:
        return self.draft_max > 0


MAX_DRAFT = 15  # LP_GEN_ROWS - 1: a call holds a token and at most 15 drafts of one sequence


# ---------------------------------------------------------------------------------------------
# Drafting

class NgramIndex:
    """Where each n-gram of a growing token list last occurred with a token after it.

    `update(tokens)` takes the list again after it grew (a list that is not an extension of
    the one indexed is indexed from scratch); `draft(tokens, k)` proposes up to k tokens."""

    def __init__(self, ngram_min: int = 2, ngram_max: int = 4) -> None:
        if not 1 <= ngram_min <= ngram_max:
            raise ValueError(f"n-gram sizes {ngram_min}..{ngram_max} are not a range")
        self.sizes = range(ngram_max, ngram_min - 1, -1)  # the longest first
        self._at: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in self.sizes}
        self._seen: list[int] = []  # the indexed tokens (a copy, to notice a different list)
        self.matched = 0            # the n-gram size the last draft was found with (0: none)

    def update(self, tokens: Sequence[int]) -> None:
        seen = self._seen
        if len(tokens) < len(seen) or (seen and tokens[len(seen) - 1] != seen[-1]):
            for table in self._at.values():
                table.clear()
            seen.clear()
        start = len(seen)
        seen.extend(tokens[start:])
        # the n-gram ending before index `end` is followed by tokens[end]: end < len(tokens)
        for end in range(max(start, 1), len(seen)):
            for n, table in self._at.items():
                if end >= n:
                    table[tuple(seen[end - n:end])] = end

    def draft(self, tokens: Sequence[int], k: int) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of the longest suffix of
        tokens found (n-grams of ngram_max down to ngram_min); [] when none occurred."""
        self.matched = 0
        if k <= 0:
            return []
        self.update(tokens)
        for n in self.sizes:
            if len(tokens) < n:
                continue
            at = self._at[n].get(tuple(tokens[-n:]))
            if at is not None:
                self.matched = n
                return [int(t) for t in self._seen[at:at + k]]
        return []


# ---------------------------------------------------------------------------------------------
# When drafting pays

class CostModel:
    """What a call of r generated rows costs relative to one row, from calls timed on this model:
    a moving average of the seconds per row count, linear between the counts measured, and
    `row_cost` per row past the largest (so a longer draft is tried once before it is judged).
    The cost is not linear: the kernels take activation rows four at a time."""

    def __init__(self, row_cost: float = 0.15) -> None:
        self.prior = row_cost
        self.seconds: dict[int, float] = {}  # rows -> moving average

    def record(self, rows: int, seconds: float) -> None:
        old = self.seconds.get(rows)
        self.seconds[rows] = seconds if old is None else 0.8 * old + 0.2 * seconds

    def cost(self, rows: int) -> float:
        """Seconds of a call of `rows` rows over those of one row. A server busy with several
        requests may never time a call of one row: its cost is then inferred from the smallest
        call timed, at `row_cost` per row."""
        t = {r: v for r, v in self.seconds.items() if v > 0}
        if not t:
            return 1.0 + (rows - 1) * self.prior
        least = min(t)
        one = t[1] if 1 in t else t[least] / (1.0 + (least - 1) * self.prior)
        if rows in t:
            return t[rows] / one
        below = [r for r in t if r < rows]
        above = [r for r in t if r > rows]
        if not below:  # under the smallest call timed (> 1 row)
            return t[least] / one - (least - rows) * self.prior
        lo = max(below)
        if not above:
            return t[lo] / one + (rows - lo) * self.prior
        hi = min(above)
        return (t[lo] + (t[hi] - t[lo]) * (rows - lo) / (hi - lo)) / one

    def added(self, base: int, rows: int) -> float:
        """A call of `base` + `rows` rows over one of `base` rows: what `rows` more rows cost a call
        that already holds `base` (the server's step of several decoding requests)."""
        return self.cost(base + rows) / self.cost(base)


class DraftPolicy:
    """How many tokens to draft: the count k that makes the most tokens per unit of time, the
    expected tokens of a draft of k over the cost of a call of k + 1 rows.

    Drafts are kept in runs (a repeated sentence goes through, a new one fails at its first
    token), so the chance of keeping draft i is estimated per position, given the ones before it
    were kept: decaying counts of kept over tried at that position, each position's estimate
    starting from the one before it. A longer match predicts better: each matched n-gram size
    has its own counts, the first position's starting from PRIORS (so a 4-token match is tried
    even where rows are dear, and a 2-token one only where they are cheap)."""

    PRIORS = {1: 0.25, 2: 0.35, 3: 0.7}  # larger sizes: 0.9

    def __init__(self, params: SpecParams, cost: CostModel) -> None:
        self.params, self.cost = params, cost
        self._counts: dict[int, tuple[list[float], list[float]]] = {}  # n -> per position: kept, tried

    def _table(self, n: int) -> tuple[list[float], list[float]]:
        if n not in self._counts:
            self._counts[n] = ([0.0] * MAX_DRAFT, [0.0] * MAX_DRAFT)
        return self._counts[n]

    def rates(self, n: int) -> list[float]:
        """Per position i: the chance that draft i of an n-gram match is kept when the ones
        before it were."""
        out, prior = [], self.PRIORS.get(n, 0.9)
        for kept, tried in zip(*self._table(n)):
            prior = (kept + prior) / (tried + 1.0)
            out.append(prior)
        return out

    def size(self, room: int, n: int, base: int = 1) -> int:
        """Draft tokens of an n-gram match worth verifying now, at most `room` (0: none), in a call
        that holds `base` rows without them (this request's next token, and the rows of other
        requests decoding in the same step). The call makes about `base` tokens without drafts;
        drafts pay when the tokens they add beat that rate over the time they add: with several
        requests in a step, a draft row slows every one of them."""
        most = min(self.params.draft_max, MAX_DRAFT, room)
        if not self.params.adaptive:
            return max(0, most)
        base = max(1, base)
        best, best_rate, tokens, reach = 0, 1.0, float(base), 1.0
        for k, rate in enumerate(self.rates(n)[:most], start=1):
            reach *= rate          # the chance that drafts 1..k are all kept
            tokens += reach
            per_time = tokens / base / self.cost.added(base, k)
            if per_time > best_rate:
                best, best_rate = k, per_time
        return best

    def record(self, n: int, drafted: int, accepted: int) -> None:
        """A verified draft of an n-gram match: its first `accepted` of `drafted` tokens were kept."""
        kept, tried = self._table(n)
        for i in range(min(drafted, accepted + 1)):
            kept[i] = 0.8 * kept[i] + (i < accepted)
            tried[i] = 0.8 * tried[i] + 1.0

    def skipped(self, n: int) -> None:
        """A draft of an n-gram match was found but not tried: the evidence against it fades."""
        for counts in self._table(n):
            counts[:] = [0.95 * v for v in counts]


class Speculator:
    """One request's drafting: its n-gram index over the history and its policy."""

    def __init__(self, params: SpecParams, cost: CostModel) -> None:
        self.params = params
        self.index = NgramIndex(params.ngram_min, params.ngram_max)
        self.policy = DraftPolicy(params, cost)
        self._matched = 0  # the n-gram size of the draft being verified

    def draft(self, state: Decoding, room: int, base: int = 1) -> list[int]:
        """Draft tokens to follow state's history (its last token is the one about to run), at
        most `room` (the rows and positions left) and one less than the tokens still allowed;
        `base`: the rows the call holds without them (DraftPolicy.size)."""
        left = state.stopper.max_tokens - state.stopper.n_tokens if state.stopper.max_tokens >= 0 else room + 1
        room = min(room, left - 1)
        if room <= 0 or state.done:
            return []
        drafts = self.index.draft(state.history, min(room, self.params.draft_max, MAX_DRAFT))
        n = self._matched = self.index.matched
        if not drafts:
            return []
        k = self.policy.size(len(drafts), n, base)
        if k <= 0:
            self.policy.skipped(n)
            return []
        if k < max(1, self.params.draft_min):
            return []
        return drafts[:k]

    def record(self, state: Decoding, drafted: int, kept: int) -> None:
        if drafted:
            self.policy.record(self._matched, drafted, kept - 1)
            stats = state.stats
            stats.draft_tokens += drafted
            stats.draft_accepted += kept - 1


# ---------------------------------------------------------------------------------------------
# Verifying

def take_rows(state: Decoding, drafts: Sequence[int], logits: np.ndarray, n_past: int,
              check: Callable[[np.ndarray, int], None] = lambda row, pos: None
              ) -> tuple[list[Chunk], int, Optional[int]]:
    """Chooses and accepts tokens from the rows of a verification call: logits (len(drafts) + 1,
    n_vocab), row i after [token, d1 .. di] with the token at position n_past. Row i + 1 is used
    only when the token chosen from row i is d(i+1).

    Returns the chunks of the accepted tokens, how many of the fed rows the cache keeps (the
    token and the drafts that were chosen), and the token that runs next (None: generation ended).
    `check(row, position)` vets each row before it is used (non-finite logits)."""
    chunks: list[Chunk] = []
    for i in range(len(drafts) + 1):
        check(logits[i], n_past + i)
        tok = state.choose(logits[i])
        if tok is None:
            return chunks, i + 1, None
        chunks.append(state.accept(tok, n_past + 1 + i))
        if state.done:
            return chunks, i + 1, None
        if i == len(drafts) or tok != drafts[i]:
            return chunks, i + 1, tok
    raise AssertionError("unreachable")


def stats_line(stats) -> str:  # noqa: ANN001 - a decoding.Stats
    """' | draft tokens accepted n/m (p%)' for a timings line, '' when nothing was drafted."""
    if not getattr(stats, "draft_tokens", 0):
        return ""
    return (f" | draft tokens accepted {stats.draft_accepted}/{stats.draft_tokens} "
            f"({100.0 * stats.draft_accepted / stats.draft_tokens:.0f}%)")
