"""Log-probabilities, logit_bias and assistant prefill on the OpenAI routes, through the official
`openai` client, against llama.cpp's own numbers.

The oracle, tests/fixtures/server/logprobs.json (tools/make_logprob_fixtures.py): llama.cpp's greedy
runs on SmolLM2-135M-Instruct with each step's log-softmax (llama-cpp-python's
`logits_to_logprobs`) and top 20 tokens, the OpenAI completions answer llama-cpp-python gives for
`logprobs=5`, and one step's whole float32 logits row (logits0.npy).

Two engines' logits differ by more than float noise (8-bit activation rounding: the fidelity
tests allow SmolLM2 3% of the logit range), so the server's logprobs are compared with llama.cpp's
within that, step by step until llama.cpp's first near-tie (the fidelity tests' rule) or its
first step whose token is not the exact forward pass's (the fixture's exact_token: on the first
prompt, llama.cpp's 6th token is 0.33 logits ahead of the one a float64 forward pass of the same
weights puts 0.22 ahead, which this engine picks); the log-softmax itself is compared with
llama.cpp's within float noise on llama.cpp's own logits.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openai
import pytest
import requests
from serverutil import ServerThread
from test_fidelity import MARGIN_EXACT, SMOLLM2_LOGITS_REL
from test_server import client, engine, server  # noqa: F401 - the SmolLM2 server, its engine, an openai client

from runtime.decoding import log_softmax, top_logprobs
from runtime.engine import Engine

FIXTURES = Path(__file__).parent / "fixtures" / "server"
REF = json.loads((FIXTURES / "logprobs.json").read_text())


def _comparable(steps: list[dict]) -> int:
    """Steps before llama.cpp's first near-tie or first token that is not the judge's (the top
    token of a float64 forward pass of the same weights, `exact_token`): past either, a correct
    engine may take another path than llama.cpp's."""
    for i, s in enumerate(steps):
        if s["margin"] < MARGIN_EXACT or s["token"] != s["exact_token"]:
            return i
    return len(steps)


def test_tokens_go_out_with_their_text(engine: Engine) -> None:
    """A character split over byte tokens goes out whole, with all of its tokens; the tokens of a
    stop string never do. Driven token by token through a Decoding with a scripted sampler."""
    script = engine.tokenize("Hi \U0001F999 there. Bye", add_special=False)  # the llama: 3 byte tokens
    assert len(script) == 8
    feed = iter(script)
    state = engine.decoding([1, 2], max_tokens=20, stop=["."], sampler=lambda logits: next(feed))
    state.logprobs = 2
    logits = np.linspace(0.0, 1.0, engine.model.config.n_vocab, dtype=np.float32)
    chunks = []
    while not state.done:
        chunks.append(state.accept(state.choose(logits)))
    chunks.append(state.finish())
    assert "".join(c.text for c in chunks) == "Hi \U0001F999 there"
    assert [t for c in chunks for t in c.tokens] == script[:5]  # not ".", which stopped it
    # "Hi" | " " (the first byte token: its text starts here) | "" | the llama, with its last two
    # byte tokens | " there" | "." stops: no text, no token | the end
    assert [(c.text, c.tokens) for c in chunks] == [
        ("Hi", script[:1]), (" ", script[1:2]), ("", []), ("\U0001F999", script[2:4]), (" there", script[4:5]),
        ("", []), ("", [])]
    assert all([lp.token for lp in c.logprobs] == c.tokens for c in chunks)
    lp = chunks[0].logprobs[0]
    want = log_softmax(logits)
    assert lp.logprob == want[script[0]] and lp.top == top_logprobs(want, 2)


def test_log_softmax_matches_llama_cpp_on_its_own_logits() -> None:
    logits = np.load(FIXTURES / "logits0.npy")
    step = REF["items"][0]["steps"][0]
    lp = log_softmax(logits)
    top = top_logprobs(lp, 20)
    assert [t for t, _ in top] == step["top_ids"]
    np.testing.assert_allclose([v for _, v in top], step["top_logprobs"], rtol=1e-5, atol=2e-6)
    assert abs(np.exp(lp).sum() - 1.0) < 1e-12


@pytest.mark.parametrize("index", range(len(REF["items"])))
def test_completion_logprobs_match_llama_cpp(client: openai.OpenAI, index: int) -> None:
    item = REF["items"][index]
    n = _comparable(item["steps"])
    assert n >= 3, "the fixture's prompt should give a few steps before a near-tie"
    r = client.completions.create(model="m", prompt=item["tokens"], max_tokens=n, temperature=0, logprobs=5)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n
    for i, step in enumerate(item["steps"][:n]):
        tol = SMOLLM2_LOGITS_REL * step["logit_span"]
        assert abs(lp.token_logprobs[i] - step["logprob"]) <= tol, f"step {i}"
        ref = dict(zip(step["top_ids"], step["top_logprobs"]))
        assert len(lp.top_logprobs[i]) >= 5
        for text, value in lp.top_logprobs[i].items():
            # each of ours is among llama.cpp's top 20 with its value, unless llama.cpp has it lower
            want = [ref[t] for t in ref if _text(t) == text]
            assert want, f"step {i}: {text!r} is not in llama.cpp's top 20"
            assert min(abs(value - w) for w in want) <= tol, f"step {i}: {text!r}"
    # text offsets: where each token's text starts in the returned text
    text = r.choices[0].text
    for tok, off in zip(lp.tokens, lp.text_offset):
        assert text[off:off + len(tok)] == tok


_PIECES: dict[int, str] = {}


def _text(token: int) -> str:
    return _PIECES[token]


@pytest.fixture(scope="module", autouse=True)
def _pieces(engine: Engine) -> None:
    for item in REF["items"]:
        for step in item["steps"]:
            for t in step["top_ids"]:
                _PIECES[t] = engine.tokenizer.token_to_piece(t, False).decode("utf-8", "ignore")


def test_completion_shape_matches_llama_cpp_python(client: openai.OpenAI) -> None:
    """The same answer llama-cpp-python's create_completion(logprobs=5) gave: tokens and values."""
    ref = REF["completion"]
    want = ref["logprobs"]
    r = client.completions.create(model="m", prompt=ref["tokens"], max_tokens=len(want["tokens"]),
                                  temperature=0, logprobs=5)
    got = r.choices[0].logprobs
    assert r.choices[0].text == ref["text"]
    assert got.tokens == want["tokens"]
    np.testing.assert_allclose(got.token_logprobs, want["token_logprobs"], atol=0.15)
    assert got.text_offset == [o - want["text_offset"][0] for o in want["text_offset"]]


def test_chat_logprobs_with_the_openai_client(client: openai.OpenAI, engine: Engine) -> None:
    messages = [{"role": "user", "content": "Name a color."}]
    r = client.chat.completions.create(model="m", messages=messages, max_tokens=6, temperature=0,
                                       logprobs=True, top_logprobs=5)
    content = r.choices[0].logprobs.content
    assert "".join(c.token for c in content) == r.choices[0].message.content
    for c in content:
        assert bytes(c.bytes).decode("utf-8", "ignore") == c.token
        assert len(c.top_logprobs) == 5
        values = [t.logprob for t in c.top_logprobs]
        assert values == sorted(values, reverse=True) and values[0] <= 0
        # greedy: the chosen token is the most likely, with the same logprob
        assert c.token == c.top_logprobs[0].token and c.logprob == pytest.approx(values[0], abs=1e-9)
    # streamed: the same tokens, spread over the chunks (the values within the noise of a prompt
    # found in the cache: its last row is computed alone, by the row dots, not in the prompt's
    # batched product, and the two round activations to 8 bits apart: measured up to 0.12; the
    # fidelity tests allow two engines 3% of the logit range, about 1 here)
    stream = client.chat.completions.create(model="m", messages=messages, max_tokens=6, temperature=0,
                                            logprobs=True, top_logprobs=5, stream=True)
    streamed = [c for chunk in stream for ch in chunk.choices if ch.logprobs for c in ch.logprobs.content]
    assert [c.token for c in streamed] == [c.token for c in content]
    np.testing.assert_allclose([c.logprob for c in streamed], [c.logprob for c in content], atol=0.25)
    # n choices: each its own list
    two = client.chat.completions.create(model="m", messages=messages, max_tokens=6, temperature=0, n=2,
                                         logprobs=True, top_logprobs=2)
    for choice in two.choices:
        assert "".join(c.token for c in choice.logprobs.content) == choice.message.content
        assert all(len(c.top_logprobs) == 2 for c in choice.logprobs.content)


def test_chosen_token_logprob_even_outside_top_k(client: openai.OpenAI) -> None:
    """A sampled token far down the list still has its own logprob; top_logprobs=0 gives none."""
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=8,
                                       temperature=5.0, top_p=1.0, seed=3, extra_body={"top_k": 0, "min_p": 0.0},
                                       logprobs=True, top_logprobs=0)
    content = r.choices[0].logprobs.content
    assert content and all(c.top_logprobs == [] for c in content)
    assert any(c.logprob < -5 for c in content)  # temperature 5 over the whole vocabulary


def test_a_stop_strings_tokens_are_not_listed(client: openai.OpenAI, engine: Engine) -> None:
    """The listed tokens are those whose text is in the answer: " Paris" but not the "." that stops
    it, nor an end-of-generation token (forced here by logit_bias)."""
    item = REF["items"][0]
    r = client.completions.create(model="m", prompt=item["tokens"], max_tokens=4, temperature=0, logprobs=1,
                                  stop=["."])
    assert r.choices[0].text == " Paris" and r.choices[0].logprobs.tokens == [" Paris"]
    eos = engine.tokenizer.eos_id
    chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Say OK."}],
                                          max_tokens=8, logprobs=True, logit_bias={str(eos): 100})
    assert chat.choices[0].finish_reason == "stop" and chat.choices[0].message.content == ""
    assert chat.choices[0].logprobs.content == []


def test_logit_bias_forces_and_bans(client: openai.OpenAI, engine: Engine) -> None:
    prompt = REF["items"][0]["tokens"]
    paris = REF["items"][0]["steps"][0]["token"]  # llama.cpp's greedy first token (" Paris")
    banned = client.completions.create(model="m", prompt=prompt, max_tokens=1, temperature=0, logprobs=1,
                                       logit_bias={str(paris): -100})
    assert banned.choices[0].logprobs.tokens[0] != _text(paris)
    # the reported logprobs are the model's, not the biased ones (OpenAI and llama.cpp alike)
    assert banned.choices[0].logprobs.top_logprobs[0][_text(paris)] == pytest.approx(
        REF["items"][0]["steps"][0]["logprob"], abs=0.5)
    forced_id = engine.tokenize(" banana", add_special=False)[0]
    forced = client.completions.create(model="m", prompt=prompt, max_tokens=3, temperature=0,
                                       logit_bias={str(forced_id): 100})
    assert forced.choices[0].text == engine.detokenize([forced_id] * 3)
    # llama.cpp's forms: [[text, false]] bans the text's tokens
    r = requests.post(client.base_url.__str__().rstrip("/") + "/completions", timeout=60, json={
        "prompt": prompt, "max_tokens": 1, "temperature": 0, "logit_bias": [[" Paris", False]]})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] != " Paris"


def test_assistant_prefill_continues_the_message(client: openai.OpenAI, engine: Engine) -> None:
    messages = [{"role": "user", "content": "Count from 1 to 9."},
                {"role": "assistant", "content": "1, 2, 3, 4,"}]
    r = client.chat.completions.create(model="m", messages=messages, max_tokens=6, temperature=0)
    text = r.choices[0].message.content
    assert text.startswith(" 5"), text
    head = engine.template.prompt(messages[:1], add_bos=engine.tokenizer.add_bos)
    # the prompt is the conversation before it with the generation prompt, then the message, unclosed
    want = len(engine.tokenize(head + "1, 2, 3, 4,", add_special=True, parse_special=True))
    assert r.usage.prompt_tokens == want
    # continue_final_message: false closes it instead; both set true is refused
    closed = client.chat.completions.create(model="m", messages=messages, max_tokens=1, temperature=0,
                                            extra_body={"continue_final_message": False})
    assert closed.usage.prompt_tokens > want
    with pytest.raises(openai.BadRequestError, match="add_generation_prompt"):
        client.chat.completions.create(model="m", messages=messages, max_tokens=1, extra_body={
            "continue_final_message": True, "add_generation_prompt": True})


@pytest.mark.parametrize("body, field", [
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"logit_bias": {"7": 101}}, "logit_bias"),
    ({"logit_bias": {"99999999": 1}}, "logit_bias"),
    ({"logit_bias": {"7": "x"}}, "logit_bias"),
    ({"logit_bias": [1, 2]}, "logit_bias"),
    ({"continue_final_message": True}, "continue_final_message"),
])
def test_bad_fields_are_400s_naming_them(server: ServerThread, body: dict, field: str) -> None:
    r = requests.post(server.url + "/v1/chat/completions", timeout=30,
                      json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field
    r = requests.post(server.url + "/v1/completions", timeout=30,
                      json={"prompt": "Hi", "max_tokens": 1, "logprobs": 21})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs"
