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

import re

from .tokenizer_cache import WordCache, merge_pairs

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
        """Join pairs by score: highest first, leftmost on ties."""
        vocab, scores = self.token_to_id, self.scores

        def rank(a: str, b: str) -> float | None:
            tid = vocab.get(a + b)
            return None if tid is None else -scores[tid]
        return merge_pairs(text, rank)
