"""What both tokenizers share (tokenizer_bpe, tokenizer_spm):

- WordCache: a word (a pre-tokenizer word, or a "▁"-led one) always encodes to the same ids, and
  natural text repeats its words, so each distinct word is encoded once.
- merge_pairs: the pair-merging loop of a word, given how to rank a pair of neighbours (BPE: the
  merge's rank; SentencePiece: the joined piece's score).
"""

from __future__ import annotations

import heapq
from typing import Callable, Iterable


class WordCache:
    """Words -> ids, each word encoded by `encode_word` the first time it is seen."""

    LIMIT = 1 << 16  # words; the cache is dropped whole when it grows past this

    def __init__(self, encode_word: Callable[[str], list[int]]) -> None:
        self.encode_word = encode_word
        self._cache: dict[str, list[int]] = {}

    def encode(self, words: Iterable[str]) -> list[int]:
        """The ids of `words`, concatenated."""
        ids: list[int] = []
        cache = self._cache
        for word in words:
            hit = cache.get(word)
            if hit is None:
                if len(cache) >= self.LIMIT:
                    cache.clear()
                hit = cache[word] = self.encode_word(word)
            ids += hit
        return ids


def merge_pairs(text: str, rank: Callable[[str, str], float | None]) -> list[str]:
    """The symbols of `text` (its characters at first) after joining neighbours until no pair
    ranks: the lowest rank(left, right) first, the leftmost on ties; None: never joined.

    A doubly linked list of symbols, each kept at its first character's index ("" once merged
    into its left neighbour), and a heap of candidate pairs. A symbol only ever grows by taking
    in its right neighbour, so a pair whose two symbols are both still there with the lengths
    they had when it was pushed is still the same pair; any other is stale and skipped."""
    n = len(text)
    if n < 2:
        return [text] if n else []
    sym = list(text)
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prv = list(range(-1, n - 1))
    heap = []
    for i in range(n - 1):
        r = rank(sym[i], sym[i + 1])
        if r is not None:
            heap.append((r, i, i + 1, 2))
    if not heap:
        return sym
    heapq.heapify(heap)
    push, pop = heapq.heappush, heapq.heappop
    while heap:
        _, left, right, size = pop(heap)
        a, b = sym[left], sym[right]
        if not a or not b or len(a) + len(b) != size:
            continue  # stale: one side has been merged since
        joined = sym[left] = a + b
        sym[right] = ""
        after = nxt[right]
        nxt[left] = after
        if after >= 0:
            prv[after] = left
        before = prv[left]
        if before >= 0:
            r = rank(sym[before], joined)
            if r is not None:
                push(heap, (r, before, left, len(sym[before]) + size))
        if after >= 0:
            r = rank(joined, sym[after])
            if r is not None:
                push(heap, (r, left, after, size + len(sym[after])))
    return [s for s in sym if s]
