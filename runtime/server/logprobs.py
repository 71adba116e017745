"""Token log-probabilities (runtime/decoding.py's TokenLogprob) in the APIs' shapes.

- OpenAI chat: `{"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}],
  "refusal": null}`.
- OpenAI completions: `{tokens, token_logprobs, top_logprobs: [{text: logprob}], text_offset}`;
  a step's dict holds the chosen token too, as OpenAI's does ("up to logprobs + 1 elements").
- llama.cpp's /completion `completion_probabilities`: `[{id, token, bytes, logprob,
  top_logprobs: [{id, token, bytes, logprob}]}]`.

A token's text is the piece it writes into the output (control tokens write none, as in
llama.cpp's server), cut to whole UTF-8 characters; `bytes` has all of its bytes.
"""
from __future__ import annotations

from typing import Any

from runtime.decoding import Chunk, TokenLogprob
from runtime.tokenizer import Tokenizer


def by_choice(chunks: list[Chunk], n: int) -> list[list[TokenLogprob]]:
    """Each choice's token log-probabilities, in order."""
    out: list[list[TokenLogprob]] = [[] for _ in range(n)]
    for c in chunks:
        out[c.index] += c.logprobs or []
    return out


class LogprobFormat:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    def piece(self, token: int) -> tuple[str, list[int]]:
        raw = self.tokenizer.token_to_piece(token, False)
        return raw.decode("utf-8", "ignore"), list(raw)

    def _openai_entry(self, token: int, logprob: float) -> dict[str, Any]:
        text, raw = self.piece(token)
        return {"token": text, "logprob": logprob, "bytes": raw}

    def chat(self, entries: list[TokenLogprob]) -> dict[str, Any]:
        return {"content": [{**self._openai_entry(e.token, e.logprob),
                             "top_logprobs": [self._openai_entry(t, lp) for t, lp in e.top]}
                            for e in entries],
                "refusal": None}

    def completion(self, entries: list[TokenLogprob], base_offset: int = 0) -> dict[str, Any]:
        """`base_offset`: characters of the returned text before the generated text (echo)."""
        tops = []
        for e in entries:
            top = {self.piece(t)[0]: lp for t, lp in e.top}
            top.setdefault(self.piece(e.token)[0], e.logprob)
            tops.append(top)
        return {"tokens": [self.piece(e.token)[0] for e in entries],
                "token_logprobs": [e.logprob for e in entries],
                "top_logprobs": tops,
                "text_offset": [base_offset + e.offset for e in entries]}

    def _llama_entry(self, token: int, logprob: float) -> dict[str, Any]:
        text, raw = self.piece(token)
        return {"id": token, "token": text, "bytes": raw, "logprob": logprob}

    def llama(self, entries: list[TokenLogprob]) -> list[dict[str, Any]]:
        return [{**self._llama_entry(e.token, e.logprob),
                 "top_logprobs": [self._llama_entry(t, lp) for t, lp in e.top]} for e in entries]
