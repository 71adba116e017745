"""SentencePiece by scores: llama.cpp's `llama` vocabulary type (llm_tokenizer_spm).

One raw fragment (spaces already replaced by "▁", the prefix space already added) -> ids:
  1. one symbol per character;
  2. repeatedly join the adjacent pair whose concatenation is a token with the highest score,
     leftmost first on equal scores (llama.cpp's bigram priority queue; any token counts, whatever
     its type);
  3. each final symbol is its token, or, when it is not one (a character missing from the
     vocabulary), its UTF-8 bytes as byte tokens "<0xXX>".

Speed: in SentencePiece vocabularies trained with whitespace splitting no token has a "▁" after
another character, so no pair can ever join across the start of a "▁" run: the fragment is cut
into words `▁*[^▁]*`, each encoded on its own (with the same result) and cached. A vocabulary
without that property is encoded in one piece.
"""

from __future__ import annotations

import heapq
import re

from .tokenizer_cache import WordCache

SPACE = "\u2581"  # "▁", SentencePiece's visible space
_WORDS = re.compile(f"{SPACE}*[^{SPACE}]+|{SPACE}+")


class SPM:
    """Fragment -> ids for one vocabulary: token scores, byte fallback, a per-word cache."""

    def __init__(self, token_to_id: dict[str, int], scores: list[float],
                 byte_ids: list[int | None]) -> None:
        self.token_to_id = token_to_id
        self.scores = scores
        self.byte_ids = byte_ids  # byte -> id of "<0xXX>" (or of the one-byte token) or None
        self.split_words = not any(SPACE in text.lstrip(SPACE) for text in token_to_id)
        self._words = WordCache(self._encode_word)

    def encode(self, text: str) -> list[int]:
        if not self.split_words:
            return self._encode_word(text)
        return self._words.encode(_WORDS.findall(text))

    def _encode_word(self, word: str) -> list[int]:
        vocab = self.token_to_id
        ids: list[int] = []
        for sym in self._merge(word):
            tid = vocab.get(sym)
            if tid is not None:
                ids.append(tid)
                continue
            for b in sym.encode("utf-8"):
                tid = self.byte_ids[b]
                if tid is None:
                    raise KeyError(f"no byte token for 0x{b:02X}")
                ids.append(tid)
        return ids

    def _merge(self, text: str) -> list[str]:
        """Join pairs by score: highest first, leftmost on ties (a max-heap on (score, -left))."""
        n = len(text)
        if n < 2:
            return [text] if n else []
        vocab, scores = self.token_to_id, self.scores
        sym = list(text)  # symbol text at its first character's index; "" once merged away
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap = []
        for i in range(n - 1):
            joined = sym[i] + sym[i + 1]
            tid = vocab.get(joined)
            if tid is not None:
                heap.append((-scores[tid], i, i + 1, len(joined)))
        if not heap:
            return sym
        heapq.heapify(heap)
        push, pop = heapq.heappush, heapq.heappop
        while heap:
            _, left, right, size = pop(heap)
            a, b = sym[left], sym[right]
            if not a or not b or len(a) + len(b) != size:
                continue  # outdated: one side has been merged since
            joined = sym[left] = a + b
            sym[right] = ""
            after = nxt[right]
            nxt[left] = after
            if after >= 0:
                prv[after] = left
            before = prv[left]
            if before >= 0:
                pair = sym[before] + joined
                tid = vocab.get(pair)
                if tid is not None:
                    push(heap, (-scores[tid], before, left, len(pair)))
            if after >= 0:
                pair = joined + sym[after]
                tid = vocab.get(pair)
                if tid is not None:
                    push(heap, (-scores[tid], left, after, len(pair)))
        return [s for s in sym if s]
