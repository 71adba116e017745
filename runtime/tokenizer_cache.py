"""The per-word cache both tokenizers share (tokenizer_bpe's pre-tokenizer words, tokenizer_spm's
"▁"-led words): a word always encodes to the same ids, and natural text repeats its words, so each
distinct word is encoded once."""

from __future__ import annotations

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
