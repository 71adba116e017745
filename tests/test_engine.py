"""The engine end to end: tokenizer + model + sampling on the real SmolLM2 and on a
tiny Mixtral-shaped model, checked against llama.cpp's recorded outputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.engine import Engine
from runtime.model import ModelError
from runtime.sampling import SamplingParams

FIXTURES = Path(__file__).parent / "fixtures" / "models"
REF = json.loads((FIXTURES / "reference.json").read_text())
CHAT = REF["smollm2"]["prompts"][0]
GREEDY = SamplingParams(temp=0.0)


@pytest.fixture(scope="module")
def engine(smollm2_path):
    eng = Engine.load(smollm2_path, n_ctx=512, n_threads=2)
    yield eng
    eng.close()


def test_prompts_tokenize_as_llama_cpp(engine: Engine) -> None:
    for p in REF["smollm2"]["prompts"]:
        assert engine.tokenize(p["text"], add_special=True, parse_special=True) == p["tokens"], p["text"]


def test_chat_prompt_renders_the_models_template(engine: Engine) -> None:
    ids = engine.chat_prompt([{"role": "user", "content": "What is the capital of France?"}])
    text = engine.detokenize(ids, special=True)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in text
    assert text.rstrip().endswith("<|im_start|>assistant")


def test_greedy_reply_is_llama_cpps(engine: Engine) -> None:
    text = "".join(engine.generate(CHAT["text"], max_tokens=32, temp=0.0))
    assert text == CHAT["greedy"]["text"]


def test_stream_pieces_and_finish(engine: Engine) -> None:
    chunks = list(engine.stream_generate(CHAT["text"], max_tokens=32, params=GREEDY))
    assert chunks[-1].finish_reason == "stop"  # the end-of-turn token
    assert all(c.finish_reason is None for c in chunks[:-1])
    stats = chunks[-1].stats
    assert stats.generated_tokens == CHAT["greedy"]["eog_index"] + 1
    assert stats.prompt_tokens + stats.cached_tokens == len(CHAT["tokens"])
    assert stats.prompt_tps > 0 and stats.generation_tps > 0
    short = list(engine.stream_generate(CHAT["text"], max_tokens=3, params=GREEDY))
    assert short[-1].finish_reason == "length" and short[-1].stats.generated_tokens == 3


def test_stop_string_ends_the_text_before_it(engine: Engine) -> None:
    text = "".join(engine.generate(CHAT["text"], max_tokens=32, stop=[" Paris"], temp=0.0))
    assert text == CHAT["greedy"]["text"].split(" Paris")[0]


def test_follow_up_reuses_the_cached_prefix(engine: Engine) -> None:
    list(engine.stream_generate(CHAT["text"], max_tokens=4, params=GREEDY))
    first = list(engine.tokens)
    more = first + engine.tokenize(" And of Spain?", add_special=False)
    last = list(engine.stream_generate(more, max_tokens=2, params=GREEDY))[-1]
    assert last.stats.cached_tokens == len(first)
    assert last.stats.prompt_tokens == len(more) - len(first)


def test_seeded_sampling_is_repeatable(engine: Engine) -> None:
    def run(seed: int) -> str:
        return "".join(engine.generate("Once upon a time", max_tokens=24, temp=1.0, seed=seed))
    assert run(7) == run(7)
    assert len({run(s) for s in (1, 2, 3)}) > 1


def test_eval_appends_to_the_cache(engine: Engine) -> None:
    ids = REF["smollm2"]["prompts"][2]["tokens"]
    engine.reset()
    whole = engine.eval(ids)
    engine.reset()
    engine.eval(ids[:3])
    split = engine.eval(ids[3:])
    assert engine.n_past == len(ids)
    np.testing.assert_allclose(split, whole, atol=2e-3 * (whole.max() - whole.min()))


def test_prompt_longer_than_context_is_an_error(smollm2_path) -> None:
    eng = Engine.load(smollm2_path, n_ctx=16, n_threads=1)
    with pytest.raises(ModelError, match="context"):
        list(eng.stream_generate("word " * 40, max_tokens=4))
    eng.close()


def test_mixtral_shaped_model_chats_with_the_mistral_format() -> None:
    eng = Engine.load(FIXTURES / "moe-Q4_K_M.gguf", n_ctx=256, n_threads=2)
    assert eng.model.config.n_expert == 8 and eng.model.config.n_expert_used == 2
    ids = eng.chat_prompt([{"role": "user", "content": "hi"}])
    assert ids[0] == eng.tokenizer.bos_id and ids.count(eng.tokenizer.bos_id) == 1
    assert "[INST]" in eng.detokenize(ids, special=True)
    chunks = list(eng.stream_chat([{"role": "user", "content": "hi"}], max_tokens=8, params=GREEDY))
    assert chunks[-1].stats.generated_tokens >= 1
    eng.close()
