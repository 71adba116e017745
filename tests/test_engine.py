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


def test_a_full_context_ends_generation(smollm2_path) -> None:
    """The token sampled when the cache holds n_ctx positions is the last: finish_reason "length"."""
    eng = Engine.load(smollm2_path, n_ctx=24, n_threads=2)
    ids = eng.tokenize("Once upon a time", add_special=True)
    chunks = list(eng.stream_generate(ids, params=GREEDY))
    assert chunks[-1].finish_reason == "length" and chunks[-1].stop_string is None
    assert chunks[-1].stats.generated_tokens == eng.n_ctx - len(ids) + 1
    assert eng.n_past == eng.n_ctx
    eng.close()


def _json_object(engine: Engine):  # noqa: ANN202
    from runtime.grammar import GrammarConstraint
    from runtime.grammar.request import JSON_OBJECT_GBNF
    return GrammarConstraint(JSON_OBJECT_GBNF, engine.tokenizer)


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def test_json_mode_stops_where_the_stop_checker_says(engine: Engine) -> None:
    """JSON mode (the grammar of any JSON object): its budget, stop strings and whole object end it
    as plain generation's do."""

    def stream_json(ids, **kw):
        return engine.stream_generate(ids, constraint=_json_object(engine), **kw)

    ids = engine.chat_prompt([{"role": "user", "content": "Describe a cat as JSON with the keys name and age."}])
    whole = list(stream_json(ids, max_tokens=200, params=GREEDY))
    text = "".join(c.text for c in whole)
    assert whole[-1].finish_reason == "stop" and _is_object(text)
    assert whole[-1].stats.generated_tokens < 200
    short = list(stream_json(ids, max_tokens=3, params=GREEDY))
    assert short[-1].finish_reason == "length" and short[-1].stats.generated_tokens == 3
    assert text.startswith("".join(c.text for c in short))
    cut = text[len(text) // 2:][:3]
    stopped = list(stream_json(ids, max_tokens=200, stop=[cut], params=GREEDY))
    assert "".join(c.text for c in stopped) == text[:text.index(cut)]
    assert stopped[-1].finish_reason == "stop" and stopped[-1].stop_string == cut


@pytest.mark.parametrize("seed", [3, 4])
def test_sampled_json_mode_gives_an_object(engine: Engine, seed: int) -> None:
    """Sampling under the JSON-object grammar gives one JSON object, or stops at the budget."""
    params = SamplingParams(temp=0.7, top_k=8, seed=seed)
    ids = engine.chat_prompt([{"role": "user", "content": "Give me a JSON object with a key x."}])
    chunks = list(engine.stream_generate(ids, max_tokens=120, params=params, constraint=_json_object(engine)))
    text = "".join(c.text for c in chunks)
    if chunks[-1].finish_reason == "stop":
        assert _is_object(text), text
    else:
        assert chunks[-1].finish_reason == "length" and chunks[-1].stats.generated_tokens == 120


def test_check_finite_names_the_first_bad_position() -> None:
    from runtime.engine import NonFiniteError, check_finite

    rows = np.zeros((5, 3), np.float32)
    check_finite(rows, 10)
    rows[3, 1], rows[4, 0] = np.inf, np.nan
    with pytest.raises(NonFiniteError, match=r"non-finite hidden states \(NaN/inf\) at position 13:"):
        check_finite(rows, 10, "hidden states")
    with pytest.raises(NonFiniteError, match="logits .* at position 7:"):
        check_finite(np.array([0.0, np.nan], np.float32), 7)


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


# ---------------------------------------------------------------------------
# Damaged weights: NaN or overflowing activations end as one error for the request


def _damaged_copy(tmp_path: Path, fixture: str, tensor: str, edit) -> Path:
    """A copy of a fixture model with the F32 tensor `tensor` changed in place by edit(values)."""
    import gguf

    src, dst = FIXTURES / f"{fixture}.gguf", tmp_path / f"{fixture}-damaged.gguf"
    dst.write_bytes(src.read_bytes())
    t = next(t for t in gguf.GGUFReader(src).tensors if t.name == tensor)
    assert t.tensor_type == gguf.GGMLQuantizationType.F32
    data = np.memmap(dst, dtype=np.uint8, mode="r+")
    edit(data[t.data_offset:t.data_offset + t.n_bytes].view(np.float32))
    data.flush()
    del data
    return dst


def _set_nan(v: np.ndarray) -> None:
    v[3] = np.nan


def _set_huge(v: np.ndarray) -> None:
    v[:] = 1e30  # finite, but the activations' fp16 block scales overflow to inf


DAMAGED = [
    ("dense-Q4_K_M", "blk.0.attn_norm.weight", _set_nan),  # NaN into the Q8_K quantizer (it crashed)
    ("moe-Q4_K_M", "blk.0.ffn_norm.weight", _set_nan),     # NaN router probabilities
    ("dense-Q8_0", "blk.0.attn_norm.weight", _set_huge),
]


@pytest.mark.parametrize("fixture, tensor, edit", DAMAGED)
def test_damaged_weights_raise_a_model_error(tmp_path: Path, fixture: str, tensor: str, edit) -> None:
    from runtime.engine import NonFiniteError

    assert issubclass(NonFiniteError, ModelError)  # a user error: one line in the CLI, 4xx in the server
    eng = Engine.load(_damaged_copy(tmp_path, fixture, tensor, edit), n_ctx=64, n_threads=2)
    ids = eng.tokenize("Hello there")
    message = rf"non-finite logits \(NaN/inf\) at position {len(ids) - 1}: the weights or metadata are damaged"
    with pytest.raises(NonFiniteError, match=message):
        list(eng.generate("Hello there", max_tokens=4, temp=0))
    assert eng.n_past == 0  # the failed positions do not count as cached
    with pytest.raises(NonFiniteError, match=r"non-finite hidden states \(NaN/inf\) at position 0"):
        eng.embed(ids)
    # the engine is still there for the next request (which fails the same way, sampling or not)
    with pytest.raises(NonFiniteError):
        list(eng.generate("again", max_tokens=2, seed=1))
    eng.close()


def test_damaged_weights_are_one_line_in_the_cli(tmp_path: Path) -> None:
    """The model's load line, then one error line (no traceback), exit status 1."""
    import subprocess
    import sys

    path = _damaged_copy(tmp_path, "dense-Q4_K_M", "blk.0.attn_norm.weight", _set_nan)
    r = subprocess.run([sys.executable, "-m", "runtime", "-m", str(path), "-p", "hi", "-n", "4", "-t", "2"],
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "non-finite logits" in errors[0], r.stderr
    assert r.stderr.rstrip("\n").splitlines()[-1] == errors[0], r.stderr
