"""llama.cpp's native routes: POST /completion (plain, streamed, n_probs, grammar, json_schema),
POST /apply-template, GET /slots, POST /infill, and the server's command-line defaults on them.

Oracles: llama.cpp's greedy tokens and logprobs on SmolLM2 (tests/fixtures/server/logprobs.json,
tools/make_logprob_fixtures.py), the `jsonschema` package, the tokens the GGUF names for
fill-in-the-middle (read with the `gguf` package), and the llama.cpp field names and shapes
(server README / server-task.cpp of llama-cpp-python 0.3.36).
"""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import requests
from serverutil import ServerThread
from test_fidelity import SMOLLM2_LOGITS_REL
from test_logprobs import _comparable  # llama.cpp's greedy steps that a correct engine must repeat
from test_server_defaults import start

from runtime.engine import Engine
from runtime.gguf import GGUFFile

REF = json.loads((Path(__file__).parent / "fixtures/server/logprobs.json").read_text())
TIMINGS = {"prompt_n", "prompt_ms", "prompt_per_token_ms", "prompt_per_second", "predicted_n", "predicted_ms",
           "predicted_per_token_ms", "predicted_per_second"}


@pytest.fixture(scope="module")
def smol(smollm2_path: Path) -> ServerThread:
    eng = Engine.load(smollm2_path, n_ctx=512)
    with ServerThread(eng, parallel=2) as srv:
        yield srv
    eng.close()


def post(srv: ServerThread, route: str, body: dict, status: int = 200) -> dict:
    r = requests.post(srv.url + route, json=body, timeout=120)
    assert r.status_code == status, r.text
    return r.json()


def events(srv: ServerThread, route: str, body: dict) -> list[dict]:
    r = requests.post(srv.url + route, json={**body, "stream": True}, timeout=120)
    assert r.status_code == 200, r.text
    lines = [line for line in r.text.splitlines() if line.startswith("data:")]
    assert "[DONE]" not in lines[-1]  # llama.cpp's own stream has no [DONE]
    return [json.loads(line[5:]) for line in lines]




def test_completion_gives_llama_cpps_greedy_tokens_and_fields(smol: ServerThread) -> None:
    item = REF["items"][0]
    n = _comparable(item["steps"])
    want = [s["token"] for s in item["steps"][:n]]
    r = post(smol, "/completion", {"prompt": item["tokens"], "n_predict": n, "temperature": 0,
                                   "return_tokens": True, "cache_prompt": True})
    assert r["tokens"] == want
    assert r["stop"] is True and r["stop_type"] == "limit" and r["stopping_word"] == ""
    assert r["tokens_predicted"] == n and r["tokens_evaluated"] == len(item["tokens"])
    assert r["truncated"] is False and r["tokens_cached"] == len(item["tokens"]) + n - 1
    assert TIMINGS <= set(r["timings"]) and r["timings"]["predicted_n"] == n
    g = r["generation_settings"]
    assert g["temperature"] == 0 and g["n_predict"] == n and g["top_k"] == 40  # llama.cpp's default
    # the same prompt as text; a stop word ends it as llama.cpp reports it
    r = post(smol, "/completion", {"prompt": item["text"], "n_predict": 8, "temperature": 0, "stop": ["\n"]})
    assert r["content"] == " Paris." and r["stop_type"] == "word" and r["stopping_word"] == "\n"


def test_completion_streams_as_llama_cpp(smol: ServerThread) -> None:
    item = REF["items"][2]
    n = _comparable(item["steps"])
    plain = post(smol, "/completion", {"prompt": item["text"], "n_predict": n, "temperature": 0})
    got = events(smol, "/completion", {"prompt": item["text"], "n_predict": n, "temperature": 0})
    assert all(e["stop"] is False and "content" in e for e in got[:-1])
    assert [t for e in got[:-1] for t in e["tokens"]] == [s["token"] for s in item["steps"][:n]]
    assert "".join(e["content"] for e in got) == plain["content"]
    last = got[-1]
    assert last["stop"] is True and last["stop_type"] == "limit" and TIMINGS <= set(last["timings"])


def test_n_probs_match_llama_cpp(smol: ServerThread) -> None:
    item = REF["items"][1]
    n = _comparable(item["steps"])
    r = post(smol, "/completion", {"prompt": item["tokens"], "n_predict": n, "temperature": 0, "n_probs": 3})
    probs = r["completion_probabilities"]
    assert len(probs) == n
    for step, p in zip(item["steps"], probs):
        tol = SMOLLM2_LOGITS_REL * step["logit_span"]
        assert p["id"] == step["token"] and p["top_logprobs"][0]["id"] == step["token"]
        assert abs(p["logprob"] - step["logprob"]) <= tol
        assert len(p["top_logprobs"]) == 3
        ref = dict(zip(step["top_ids"], step["top_logprobs"]))
        for t in p["top_logprobs"]:
            assert t["id"] in ref and abs(t["logprob"] - ref[t["id"]]) <= tol
            assert bytes(t["bytes"]).decode("utf-8", "ignore") == t["token"]
    streamed = events(smol, "/completion", {"prompt": item["tokens"], "n_predict": n, "temperature": 0,
                                            "n_probs": 3})
    assert [p["id"] for e in streamed[:-1] for p in e["completion_probabilities"]] == [p["id"] for p in probs]


def test_grammar_and_json_schema(smol: ServerThread) -> None:
    r = post(smol, "/completion", {"prompt": "Is the sky blue? Answer:", "n_predict": 8,
                                   "grammar": 'root ::= " yes" | " no"'})
    assert r["content"] in (" yes", " no") and r["stop_type"] == "eos"
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 150}},
              "required": ["name", "age"], "additionalProperties": False}
    r = post(smol, "/completion", {"prompt": "A person as JSON:", "n_predict": 64, "json_schema": schema,
                                   "seed": 1})
    jsonschema.validate(json.loads(r["content"]), schema)


def test_logit_bias_and_ignore_eos(smol: ServerThread) -> None:
    item = REF["items"][0]
    first = item["steps"][0]["token"]
    r = post(smol, "/completion", {"prompt": item["tokens"], "n_predict": 1, "temperature": 0,
                                   "return_tokens": True, "logit_bias": [[first, False]]})
    assert r["tokens"] != [first]
    # a chat prompt answered in a few tokens ends at end-of-turn; ignore_eos goes on to the limit
    chat = post(smol, "/apply-template", {"messages": [{"role": "user", "content": "Say OK."}]})["prompt"]
    free = post(smol, "/completion", {"prompt": chat, "n_predict": 64, "temperature": 0})
    assert free["stop_type"] == "eos" and free["tokens_predicted"] < 64
    forced = post(smol, "/completion", {"prompt": chat, "n_predict": 64, "temperature": 0, "ignore_eos": True})
    assert forced["stop_type"] == "limit" and forced["tokens_predicted"] == 64


def test_a_bias_that_bans_every_token_ends_the_answer(smol: ServerThread) -> None:
    """No token is allowed: the answer ends there, empty, as when a grammar allows nothing (a
    sampler reading all -inf as "nothing to prefer" drew random banned tokens to the limit)."""
    every = [[i, False] for i in range(smol.app.state.engine.model.config.n_vocab)]
    for temperature in (0.0, 1.0):
        r = post(smol, "/completion", {"prompt": "Once upon a time", "n_predict": 5, "temperature": temperature,
                                       "seed": 3, "ignore_eos": True, "logit_bias": every})
        assert (r["content"], r["tokens_predicted"], r["stop_type"]) == ("", 0, "eos"), r
    the = post(smol, "/tokenize", {"content": " the"})["tokens"]
    assert len(the) == 1
    r = post(smol, "/completion", {"prompt": "Once upon a time", "n_predict": 3, "temperature": 1.0,
                                   "logit_bias": [b for b in every if b[0] != the[0]]})
    assert (r["content"], r["stop_type"]) == (" the the the", "limit"), r  # one token left: taken


def test_llama_cpp_fields_on_the_openai_routes_and_n_predict_0(smol: ServerThread) -> None:
    """llama.cpp's server reads its own fields on its OpenAI routes: n_predict (over max_tokens) and
    ignore_eos were ignored there. n_predict 0 reads the prompt into the cache and generates
    nothing (a 400 before), as llama.cpp documents. Up to 128 stop strings (16 before)."""
    chat = [{"role": "user", "content": "Say OK."}]
    r = post(smol, "/v1/chat/completions", {"messages": chat, "temperature": 0, "max_tokens": 50, "n_predict": 3,
                                            "ignore_eos": True})
    assert (r["usage"]["completion_tokens"], r["choices"][0]["finish_reason"]) == (3, "length")
    r = post(smol, "/v1/completions", {"prompt": "Hi", "temperature": 0, "max_tokens": 40, "ignore_eos": True,
                                       "stop": [f"\nUser{i}:" for i in range(40)]})
    assert (r["usage"]["completion_tokens"], r["choices"][0]["finish_reason"]) == (40, "length")
    prompt = "A prompt to keep in the cache for a later request, read once"
    warm = post(smol, "/completion", {"prompt": prompt, "n_predict": 0})
    assert (warm["content"], warm["tokens_predicted"]) == ("", 0)
    later = post(smol, "/completion", {"prompt": prompt + " and then", "n_predict": 2, "temperature": 0})
    assert later["timings"]["cache_n"] >= warm["tokens_evaluated"] - 1


def test_apply_template(smol: ServerThread) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompt = post(smol, "/apply-template", {"messages": messages})["prompt"]
    # SmolLM2's template is ChatML
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                      "<|im_start|>assistant\n")
    prefill = post(smol, "/apply-template", {"messages": messages + [{"role": "assistant", "content": "Hel"}]})
    assert prefill["prompt"] == prompt + "Hel"
    closed = post(smol, "/apply-template", {"messages": messages + [{"role": "assistant", "content": "Hello"}],
                                            "continue_final_message": False, "add_generation_prompt": False})
    assert closed["prompt"] == prompt + "Hello<|im_end|>\n"


def test_slots(smol: ServerThread) -> None:
    slots = requests.get(smol.url + "/slots", timeout=10).json()
    assert [s["id"] for s in slots] == [0, 1]
    for s in slots:
        assert s["n_ctx"] == 512 and s["is_processing"] is False and s["speculative"] is False
        assert s["params"]["temperature"] == 0.8 and s["next_token"][0]["n_decoded"] == 0


@pytest.mark.parametrize("route, body, field", [
    ("/completion", {}, "prompt"),
    ("/completion", {"prompt": [1, "x", 99999999]}, "prompt"),
    ("/completion", {"prompt": ["a", "b"]}, "prompt"),
    ("/completion", {"prompt": "x", "n_probs": 21}, "n_probs"),
    ("/completion", {"prompt": "x", "n_predict": -2}, "n_predict"),
    ("/v1/completions", {"prompt": "x", "mirostat": 2}, "mirostat"),  # llama.cpp's fields on OpenAI routes too
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "typical_p": 0.5}, "typical_p"),
    ("/completion", {"prompt": "x", "temperature": "hot"}, "temperature"),
    ("/completion", {"prompt": "x", "typical_p": 0.5}, "typical_p"),
    ("/completion", {"prompt": "x", "mirostat": 2}, "mirostat"),
    ("/completion", {"prompt": "x", "grammar": "root ::= ("}, "grammar"),
    ("/completion", {"prompt": "x", "json_schema": {"type": "object", "patternProperties": {}}}, "json_schema"),
    ("/completion", {"prompt": "x", "logit_bias": {"5": 1000}}, "logit_bias"),
    ("/apply-template", {"messages": []}, "messages"),
    ("/infill", {"input_prefix": "a", "input_suffix": "b"}, None),  # SmolLM2 has no FIM tokens
])
def test_bad_requests_are_400s_naming_the_field(smol: ServerThread, route: str, body: dict, field: str | None) -> None:
    err = post(smol, route, body, status=400)["error"]
    if field is not None:
        assert err["param"] == field, err
    else:
        assert "fill in the middle" in err["message"] and "prefix" in err["message"]
    assert post(smol, "/completion", {"prompt": "Hi", "n_predict": 1})["stop"] is True  # still serving


# -- /infill on a code model ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def coder(qwen25_coder_path: Path) -> ServerThread:
    # a context over llama.cpp's 2048-token batch: /infill then has room for input_extra
    eng = Engine.load(qwen25_coder_path, n_ctx=2304)
    with ServerThread(eng) as srv:
        yield srv
    eng.close()


def _fim_tokens(path: Path) -> dict[str, str]:
    """The FIM token texts of the GGUF, by its keys or (llama.cpp's fallback) the token names. Read
    with the runtime's reader: the gguf package's takes 18 s over this vocabulary's 151k strings,
    and test_gguf.py checks the two readers agree."""
    with GGUFFile(path) as f:
        meta = dict(f.metadata)
    tokens = meta["tokenizer.ggml.tokens"]
    out = {}
    for key, name in (("fim_pre", "<|fim_prefix|>"), ("fim_suf", "<|fim_suffix|>"), ("fim_mid", "<|fim_middle|>"),
                      ("fim_rep", "<|repo_name|>"), ("fim_sep", "<|file_sep|>")):
        token_id = meta.get(f"tokenizer.ggml.{key}_token_id")
        out[key] = tokens[token_id] if token_id is not None else name
        assert out[key] in tokens
    return out


def test_infill_fills_the_middle(coder: ServerThread, qwen25_coder_path: Path) -> None:
    t = _fim_tokens(qwen25_coder_path)
    body = {"input_prefix": "def add(a, b):\n    ", "input_suffix": "\n\nprint(add(2, 3))\n", "n_predict": 8,
            "temperature": 0, "input_extra": [{"filename": "util.py", "text": "X = 1\n"}]}
    r = post(coder, "/infill", body)
    assert r["prompt"] == (f"{t['fim_rep']}myproject\n{t['fim_sep']}util.py\nX = 1\n{t['fim_sep']}filename\n"
                           f"{t['fim_pre']}def add(a, b):\n    {t['fim_suf']}\n\nprint(add(2, 3))\n{t['fim_mid']}")
    assert r["content"].startswith("return a + b"), r["content"]
    streamed = events(coder, "/infill", {**body, "n_predict": 4})
    assert "".join(e["content"] for e in streamed).startswith("return")
    assert post(coder, "/infill", {"input_prefix": "x"}, status=400)["error"]["param"] == "input_suffix"


# -- the command line's defaults -------------------------------------------------------------------

@pytest.fixture(scope="module")
def greedy():
    """The tiny model with `--temp 0 --seed 5 -n 7 --top-k 3 --repeat-last-n 8` (test_server_defaults)."""
    yield from start(["--temp", "0", "--seed", "5", "-n", "7", "--top-k", "3", "--repeat-last-n", "8"])


def test_command_line_defaults_reach_completion_and_slots(greedy: ServerThread) -> None:
    r = post(greedy, "/completion", {"prompt": "Once upon a time", "return_tokens": True})
    g = r["generation_settings"]
    assert r["tokens_predicted"] == 7 and (g["temperature"], g["top_k"], g["seed"], g["repeat_last_n"]) == (0, 3, 5, 8)
    again = post(greedy, "/completion", {"prompt": "Once upon a time", "return_tokens": True, "temperature": 0,
                                         "n_predict": 7})
    assert again["tokens"] == r["tokens"]  # greedy: the command line's temperature applied
    assert post(greedy, "/completion", {"prompt": "Once upon a time", "n_predict": 2})["tokens_predicted"] == 2
    props = requests.get(greedy.url + "/props", timeout=10).json()["default_generation_settings"]["params"]
    slots = requests.get(greedy.url + "/slots", timeout=10).json()
    for params in (props, slots[0]["params"]):
        assert (params["temperature"], params["top_k"], params["n_predict"], params["seed"]) == (0, 3, 7, 5)
    np.testing.assert_equal(props["samplers"], g["samplers"])


def test_logit_bias_keys_are_read_as_llama_cpp_reads_them() -> None:
    """OpenAI's object form: a numeric key is a token id. llama.cpp's array form: a string is a text,
    "788" too (it was read as token 788)."""
    from runtime.server.params import Fields, logit_bias

    texts = []
    tokenize = lambda text: texts.append(text) or [7, 8]  # noqa: E731
    assert logit_bias(Fields({"logit_bias": {"788": 5}}), 1000, tokenize) == ((788, 5.0),)
    assert logit_bias(Fields({"logit_bias": [["788", 5]]}), 1000, tokenize) == ((7, 5.0), (8, 5.0)) and texts == ["788"]
    assert logit_bias(Fields({"logit_bias": [[788, 5]]}), 1000, tokenize) == ((788, 5.0),)
