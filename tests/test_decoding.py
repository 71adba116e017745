"""Tests for runtime.decoding: the per-request state a scheduler drives row by row.

Driven by hand with synthetic logits and a toy vocabulary, then on the real SmolLM2 against
llama.cpp's recorded greedy continuations (tests/fixtures/models/reference.json).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_fidelity import _comparable_steps  # the fidelity tests' near-tie rule

from runtime.decoding import Decoding
from runtime.engine import Engine
from runtime.sampling import COMPLETE, CONTEXT_FULL, EOG, MAX_TOKENS, STOP_STRING, SamplingParams, make_sampler

VOCAB = ["<eos>", "Hel", "lo", " W", "or", "ld", "!", "\u00e9"]
EOS = 0
GREEDY = make_sampler(temp=0.0)
REF = json.loads((Path(__file__).parent / "fixtures" / "models" / "reference.json").read_text())["smollm2"]


class ToyTokenizer:
    """A tokenizer whose tokens are the pieces of `vocab`, token 0 ending generation."""

    def __init__(self, vocab: list[str] = VOCAB) -> None:
        self.vocab = vocab

    def is_eog(self, token: int) -> bool:
        return token == EOS

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        # "\xff" stands for a byte-fallback piece: not UTF-8 on its own
        return b"\xff" if self.vocab[token] == "\xff" else self.vocab[token].encode()

    def decoder(self):
        vocab = self.vocab

        class Decoder:
            def feed(self, token: int) -> str:
                return vocab[token]

            def flush(self) -> str:
                return ""
        return Decoder()


class OnlyTokens:
    """A constraint allowing the tokens of `allowed` and done after `length` tokens."""

    def __init__(self, allowed: set[int], length: int = 10 ** 9) -> None:
        self.allowed, self.length, self.seen = allowed, length, []

    def mask(self, logits: np.ndarray) -> np.ndarray:
        logits[[t for t in range(logits.size) if t not in self.allowed]] = -np.inf
        return logits

    def advance(self, token: int) -> None:
        assert token in self.allowed
        self.seen.append(token)

    @property
    def done(self) -> bool:
        return len(self.seen) >= self.length


def favour(token: int) -> np.ndarray:
    """Logits whose greedy choice is `token`, with the others decreasing by id."""
    logits = -np.arange(len(VOCAB), dtype=np.float32)
    logits[token] = 10.0
    return logits


def state(**kw) -> Decoding:
    kw.setdefault("tokenizer", ToyTokenizer())
    return Decoding([1, 2], GREEDY, **kw)


def drive(s: Decoding, tokens: list[int]) -> str:
    """Feeds logits favouring each of tokens in turn until the state is done; the text shown."""
    text = ""
    for tok in tokens:
        chosen = s.choose(favour(tok))
        if chosen is None:
            break
        text += s.accept(chosen).text
        if s.done:
            break
    return text + s.finish().text


def test_choose_and_accept_stream_the_tokens_text() -> None:
    s = state()
    assert drive(s, [1, 2, 3, 4, 5]) == "Hello World"
    assert s.history == [1, 2, 1, 2, 3, 4, 5] and s.generated == [1, 2, 3, 4, 5]
    last = s.finish()
    assert last.finish_reason is None and last.token == 5  # nothing ended it: the caller stopped


def test_a_constraint_masks_before_the_sampler() -> None:
    c = OnlyTokens({3, 4})
    s = state(constraint=c)
    logits = favour(1)
    assert s.choose(logits) == 3          # the best token the constraint allows
    assert logits[1] == 10.0              # the caller's row is not written to
    s.accept(3)
    assert c.seen == [3]


def test_a_constraint_that_leaves_nothing_ends_complete() -> None:
    s = state(constraint=OnlyTokens(set()))
    assert s.choose(favour(1)) is None and s.done and s.stopper.reason == COMPLETE
    last = s.finish()
    assert last.finish_reason == "stop" and last.token is None and s.stats.generated_tokens == 0


def test_a_done_constraint_ends_complete_with_its_token() -> None:
    s = state(constraint=OnlyTokens({1, 2, 6}, length=3), max_tokens=10)
    assert drive(s, [1, 2, 6, 1]) == "Hello!"
    assert s.stopper.reason == COMPLETE and s.finish().finish_reason == "stop"
    assert s.stats.generated_tokens == 3


def test_stop_strings_across_tokens() -> None:
    s = state(stop=["o Wo"])
    chunks = []
    for tok in (1, 2, 3, 4, 5):
        chunks.append(s.accept(s.choose(favour(tok))).text)
        if s.done:
            break
    assert chunks == ["Hel", "l", "", ""]  # "o", then "o W", were held back: they may start the stop string
    assert s.stopper.reason == STOP_STRING
    last = s.finish()
    assert last.text == "" and last.finish_reason == "stop" and last.stop_string == "o Wo"


def test_held_back_text_ends_the_output_when_no_stop_string_follows() -> None:
    s = state(stop=["lo there"], max_tokens=2)
    assert drive(s, [1, 2, 3]) == "Hello"
    assert s.stopper.reason == MAX_TOKENS and s.finish().finish_reason == "length"


def test_max_tokens_eog_and_full_context() -> None:
    s = state(max_tokens=3)
    assert drive(s, [1, 2, 3, 4]) == "Hello W" and s.stats.generated_tokens == 3
    s = state()
    assert drive(s, [1, 2, EOS, 3]) == "Hello"  # the end-of-generation token shows no text
    assert s.stopper.reason == EOG and s.finish().finish_reason == "stop"
    s = state(n_ctx=4)  # the prompt holds 2 positions; the third token, chosen when 4 are held, is the last
    assert drive(s, [1, 2, 3, 4]) == "Hello W" and s.stats.generated_tokens == 3
    assert s.stopper.reason == CONTEXT_FULL and s.finish().finish_reason == "length"


def test_processors_see_the_whole_history() -> None:
    seen = []

    def ban_repeats(history, logits):
        seen.append(list(history))
        out = logits.copy()
        out[list(set(history))] = -np.inf
        return out

    s = state(processors=[ban_repeats], max_tokens=3)
    row = np.array([-9, 5, 4, 3, 2, 1, 0, -1], np.float32)  # 1 and 2 are in the prompt: banned at once
    text = "".join(s.accept(s.choose(row)).text for _ in range(3))
    assert text == " World" and s.done
    assert seen == [[1, 2], [1, 2, 3], [1, 2, 3, 4]]


def test_timing_hooks_fill_the_stats() -> None:
    s = state()
    s.begin(cached_tokens=1)
    drive(s, [1, 2])
    st = s.finish().stats
    assert (st.cached_tokens, st.prompt_tokens, st.generated_tokens) == (1, 1, 2)
    assert st.prompt_seconds > 0 and st.generation_seconds > 0


def test_without_a_tokenizer_there_is_no_text_and_no_eog() -> None:
    s = Decoding([1], GREEDY, max_tokens=2)
    assert drive(s, [EOS, 1]) == "" and s.generated == [EOS, 1]


# -- on the real model: the state driven by hand, and the engine's own loop over it ---------------

@pytest.fixture(scope="module")
def engine(smollm2_path):
    eng = Engine.load(smollm2_path, n_ctx=512, n_threads=2)
    yield eng
    eng.close()


def test_a_hand_driven_state_gives_llama_cpps_greedy_reply(engine: Engine) -> None:
    """The protocol a batching scheduler follows: one logits row per step, n_past from its cache."""
    prompt = REF["prompts"][0]
    s = engine.decoding(prompt["tokens"], max_tokens=64, params=SamplingParams(temp=0.0))
    engine.reset()
    s.begin(0)
    logits = engine.eval(prompt["tokens"])
    text = ""
    while not s.done:
        tok = s.choose(logits)
        text += s.accept(tok, n_past=engine.n_past).text
        if not s.done:
            logits = engine.eval([tok])
    text += s.finish().text
    assert text == prompt["greedy"]["text"]
    assert s.generated == prompt["greedy"]["tokens"][:prompt["greedy"]["eog_index"] + 1]


@pytest.mark.parametrize("i", range(1, 4))
def test_generate_step_yields_llama_cpps_greedy_tokens(engine: Engine, i: int) -> None:
    prompt, greedy = REF["prompts"][i], REF["prompts"][i]["greedy"]
    want = greedy["tokens"][:_comparable_steps(greedy["margins"], greedy["eog_index"])]
    assert len(want) >= 4
    got = []
    for tok in engine.generate_step(prompt["tokens"], make_sampler(temp=0.0)):
        got.append(tok)
        if len(got) == len(want):
            break
    assert got == want
