"""Tests for runtime.json_object: the JSON automaton and the JsonObject constraint.

Validity is checked against Python's `json` module (the oracle); the constraint's mask on a toy
vocabulary, then JSON mode on the real SmolLM2 through Engine.stream_generate.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from test_decoding import ToyTokenizer

from runtime.decoding import Decoding
from runtime.engine import Engine
from runtime.json_object import MAX_WS_RUN, START, JsonObject, advance, candidates, is_valid_object
from runtime.sampling import SamplingParams, make_sampler

VOCAB = ["<eos>", "{", "}", '"a"', ":", "1", " ", ",", "[", "]", "\xff", "x"]
EOS = 0


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def test_json_automaton_agrees_with_the_json_module() -> None:
    good = ['{}', '{"a": 1}', '{"a": [1, 2.5e-3, -0, true, null, "x\\n\\u00e9"], "b": {"c": {}}}', ' { } ']
    bad = ['[]', '{"a" 1}', '{"a": 01}', '{"a": tru}', '{,}', '{"a": 1,}', '"x"', '{"a": 1}}', '{"a": 1e}',
           '{"a": "\\q"}', '{"a": -}', '{"a": [1 2]}']
    for text in good + bad:
        assert is_valid_object(text) == _is_object(text), text
    assert advance(START, '{"key": "unfinished') is not None  # a valid prefix
    assert advance(START, '{"key": "x\x01') is None             # control characters break strings


def toy() -> ToyTokenizer:
    return ToyTokenizer(VOCAB)


def test_mask_keeps_the_k_best_valid_tokens_by_descending_logit() -> None:
    c = JsonObject(toy(), k=2)
    logits = np.array([9, 1, 8, 7, 6, 5, 4, 3, 2, 1, 9, 9], np.float32)
    masked = c.mask(logits.copy())
    # EOS, "}" (nothing open), "\xff" (partial UTF-8) and "x" rank high but cannot start the output
    assert set(np.flatnonzero(np.isfinite(masked))) == {1, 6}  # "{" and " ", the two valid ones
    c.advance(1)
    masked = c.mask(logits.copy())
    assert list(np.flatnonzero(np.isfinite(masked))) == [2, 3]   # "}" (8) and '"a"' (7) beat " " (4)
    np.testing.assert_array_equal(masked[[2, 3]], logits[[2, 3]])  # the kept logits are unchanged
    assert not c.done


def test_eog_is_masked_until_the_object_is_complete() -> None:
    c = JsonObject(toy(), k=len(VOCAB))
    for tok in (1, 3, 4, 5):  # {"a":1
        assert not np.isfinite(c.mask(np.zeros(len(VOCAB), np.float32))[EOS])
        c.advance(tok)
    c.advance(2)
    assert c.done
    assert not np.isfinite(c.mask(np.zeros(len(VOCAB), np.float32))).any()  # nothing may follow
    with pytest.raises(ValueError):
        c.advance(7)


def test_whitespace_runs_are_capped() -> None:
    c = JsonObject(toy(), k=len(VOCAB))
    c.advance(1)
    row = np.zeros(len(VOCAB), np.float32)
    for _ in range(MAX_WS_RUN):
        assert np.isfinite(c.mask(row.copy())[6])
        c.advance(6)
    assert not np.isfinite(c.mask(row.copy())[6])  # one more space: refused
    assert np.isfinite(c.mask(row.copy())[3])


def test_candidates_follow_the_sampling_params() -> None:
    assert candidates(SamplingParams(temp=0.0)) == 1
    assert candidates(SamplingParams(temp=0.7, top_k=5)) == 5
    assert candidates(SamplingParams(temp=0.7, top_k=0)) == 64


def test_a_decoding_with_the_constraint_ends_at_the_closing_brace() -> None:
    """Even when the model would rather go on: the object's end is the generation's end."""
    s = Decoding([1], make_sampler(temp=0.0), constraint=JsonObject(toy(), k=1),
                 tokenizer=toy(), max_tokens=50)
    prefs = [11, 3, 4, 5, 2, 7]  # the token each step's logits favour ("x" cannot start the output)
    text = ""
    for fav in prefs:
        logits = np.zeros(len(VOCAB), np.float32)
        logits[EOS], logits[fav] = 50.0, 100.0  # the model would like to stop at every step
        tok = s.choose(logits)
        text += s.accept(tok).text
        if s.done:
            break
    text += s.finish().text
    assert text == '{"a":1}' and _is_object(text)
    assert s.finish().finish_reason == "stop" and s.stats.generated_tokens == 5


# -- on the real model -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine(smollm2_path):
    eng = Engine.load(smollm2_path, n_ctx=512, n_threads=2)
    yield eng
    eng.close()


@pytest.mark.parametrize("seed", [3, 4])
def test_sampled_json_mode_gives_an_object(engine: Engine, seed: int) -> None:
    """Sampling among the top_k valid tokens still gives one JSON object (or stops at the budget)."""
    params = SamplingParams(temp=0.7, top_k=8, seed=seed)
    ids = engine.chat_prompt([{"role": "user", "content": "Give me a JSON object with a key x."}])
    chunks = list(engine.stream_generate(ids, max_tokens=120, params=params,
                                         constraint=JsonObject.factory(params)(engine.tokenizer)))
    text = "".join(c.text for c in chunks)
    if chunks[-1].finish_reason == "stop":
        assert _is_object(text), text
    else:
        assert chunks[-1].finish_reason == "length" and chunks[-1].stats.generated_tokens == 120
        assert advance(START, text) is not None, text
