"""The HTTP server against the real client packages: `openai`, `huggingface_hub`, and raw HTTP
for errors, limits, the API key, disconnects and the llama.cpp utility routes.

The server runs in-process (uvicorn in a thread, 127.0.0.1, a free port) on SmolLM2-135M.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import openai
import pytest
import requests
from huggingface_hub import InferenceClient
from huggingface_hub.errors import ValidationError
from serverutil import ServerThread

from runtime.engine import Engine
from runtime.gguf import GGUFFile
from runtime.sampling import SamplingParams

FIXTURES = Path(__file__).parent / "fixtures"
N_CTX = 1024


@pytest.fixture(scope="module")
def engine(smollm2_path: Path) -> Engine:
    eng = Engine.load(smollm2_path, n_ctx=N_CTX)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def reference(smollm2_path: Path) -> Engine:
    """A second engine on the same file, for what the server should answer."""
    eng = Engine.load(smollm2_path, n_ctx=N_CTX)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def server(engine: Engine) -> ServerThread:
    with ServerThread(engine, parallel=2) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def greedy_chat(eng: Engine, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, str]:
    chunks = list(eng.stream_chat(messages, max_tokens=max_tokens, params=SamplingParams(temp=0.0)))
    return "".join(c.text for c in chunks), chunks[-1].finish_reason


def wait_idle(srv: ServerThread, seconds: float = 5.0) -> float:
    """Seconds until no slot is busy (fails after `seconds`)."""
    t0 = time.monotonic()
    while srv.app.state.scheduler.status()["slots_processing"]:
        assert time.monotonic() - t0 < seconds, "a generation kept running"
        time.sleep(0.01)
    return time.monotonic() - t0


CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You answer in one short sentence."},
     {"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Blue."},
     {"role": "user", "content": "Name another one."}],
]


# -- OpenAI: models, chat, completions ------------------------------------------------------------

def test_models(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert len(models) == 1
    assert models[0].id and models[0].object == "model" and models[0].owned_by == "llamapack"
    assert client.models.retrieve(models[0].id).id == models[0].id  # GET /v1/models/{id}
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-4o")
    assert err.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_chat_greedy_equals_engine(client: openai.OpenAI, reference: Engine, messages: list) -> None:
    r = client.chat.completions.create(model="any", messages=messages, temperature=0, max_tokens=24)
    text, finish = greedy_chat(reference, messages, 24)
    assert r.choices[0].message.content == text
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == finish
    assert r.usage.prompt_tokens == len(reference.chat_prompt(messages))
    assert 0 < r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    timings = r.model_extra["timings"]
    assert timings["predicted_n"] == r.usage.completion_tokens and timings["predicted_per_second"] > 0


def test_chat_stream(client: openai.OpenAI, reference: Engine) -> None:
    messages = CONVERSATIONS[0]
    stream = client.chat.completions.create(model="any", messages=messages, temperature=0, max_tokens=20,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text, finish = greedy_chat(reference, messages, 20)
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 3  # streamed piece by piece
    assert "".join(content) == text
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == finish
    assert finals[0].model_extra["timings"]["prompt_n"] + finals[0].model_extra["timings"]["cache_n"] \
        == len(reference.chat_prompt(messages))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 20
    assert all(c.usage is None for c in chunks[:-1])  # only the last: a sum over chunks counts once
    assert len({c.id for c in chunks}) == 1


def test_chat_stop_seed_penalties(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Count from one to ten in words."}]
    full = client.chat.completions.create(model="m", messages=messages, temperature=0, max_tokens=30)
    text = full.choices[0].message.content
    cut = text[len(text) // 2:len(text) // 2 + 3]
    assert cut.strip()
    r = client.chat.completions.create(model="m", messages=messages, temperature=0, max_tokens=30, stop=[cut])
    assert r.choices[0].finish_reason == "stop"
    assert text.startswith(r.choices[0].message.content) and cut not in r.choices[0].message.content
    kw = dict(model="m", messages=messages, temperature=1.0, top_p=0.9, max_tokens=12, seed=1234,
              presence_penalty=0.5, frequency_penalty=0.5)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_followup_turn_reuses_the_cache(client: openai.OpenAI, engine: Engine) -> None:
    first = [{"role": "user", "content": "Tell me a fact about owls."}]
    r1 = client.chat.completions.create(model="m", messages=first, temperature=0, max_tokens=16)
    second = first + [{"role": "assistant", "content": r1.choices[0].message.content},
                      {"role": "user", "content": "And one about cats?"}]
    r2 = client.chat.completions.create(model="m", messages=second, temperature=0, max_tokens=8)
    t = r2.model_extra["timings"]
    n_prompt = len(engine.chat_prompt(second))
    assert t["cache_n"] + t["prompt_n"] == n_prompt
    assert t["cache_n"] >= len(engine.chat_prompt(first))  # the whole first turn came from the cache
    assert t["prompt_n"] < 25                               # only the new turn was evaluated


def test_completions(client: openai.OpenAI, reference: Engine) -> None:
    prompt = "The three primary colours are"
    r = client.completions.create(model="m", prompt=prompt, temperature=0)  # OpenAI's default max_tokens: 16
    chunks = list(reference.stream_generate(prompt, max_tokens=16, params=SamplingParams(temp=0.0)))
    assert r.choices[0].text == "".join(c.text for c in chunks)
    assert r.usage.prompt_tokens == len(reference.tokenize(prompt)) and r.usage.completion_tokens <= 16
    streamed = client.completions.create(model="m", prompt=prompt, temperature=0, max_tokens=16, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == r.choices[0].text
    echo = client.completions.create(model="m", prompt=prompt, temperature=0, max_tokens=4, echo=True)
    assert echo.choices[0].text.startswith(prompt)
    ids = reference.tokenize(prompt)
    by_ids = client.completions.create(model="m", prompt=ids, temperature=0, max_tokens=16)
    assert by_ids.choices[0].text == r.choices[0].text


# -- embeddings ------------------------------------------------------------------------------

def test_embeddings_match_llama_cpp(client: openai.OpenAI, server: ServerThread) -> None:
    fixture = json.loads((FIXTURES / "server" / "embeddings.json").read_text())
    texts = [item["text"] for item in fixture["items"]]
    r = client.embeddings.create(model="m", input=texts)  # the client asks for base64
    assert [d.index for d in r.data] == list(range(len(texts)))
    for item, d in zip(fixture["items"], r.data):
        got, want = np.array(d.embedding), np.array(item["embedding"])
        assert got.shape == want.shape
        assert abs(np.linalg.norm(got) - 1) < 1e-4
        assert float(got @ want) > 0.999, item["text"]
    raw = requests.post(server.url + "/v1/embeddings", json={"input": texts[0], "encoding_format": "float"}).json()
    assert np.allclose(raw["data"][0]["embedding"], r.data[0].embedding, atol=1e-6)
    assert raw["usage"]["prompt_tokens"] > 0


# -- JSON mode -------------------------------------------------------------------------------

def test_json_mode(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="m", temperature=0, max_tokens=200, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Describe a cat as JSON with the keys name and age."}])
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


# -- llama.cpp utility routes ------------------------------------------------------------------

def test_tokenize_detokenize(server: ServerThread, engine: Engine) -> None:
    text = "Hello <|im_start|> world"
    r = requests.post(server.url + "/tokenize", json={"content": text}).json()
    assert r["tokens"] == engine.tokenize(text, add_special=False, parse_special=True)
    r2 = requests.post(server.url + "/tokenize", json={"content": text, "add_special": True, "parse_special": False})
    assert r2.json()["tokens"] == engine.tokenize(text, add_special=True, parse_special=False)
    pieces = requests.post(server.url + "/tokenize", json={"content": "Hi there", "with_pieces": True}).json()
    assert "".join(p["piece"] for p in pieces["tokens"]) == "Hi there"
    back = requests.post(server.url + "/detokenize", json={"tokens": r["tokens"]}).json()
    assert back["content"] == text
    bad = requests.post(server.url + "/detokenize", json={"tokens": [10 ** 9]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"


def test_health_and_props(server: ServerThread, smollm2_path: Path) -> None:
    h = requests.get(server.url + "/health").json()
    assert h["status"] == "ok" and h["slots_idle"] + h["slots_processing"] == 2
    p = requests.get(server.url + "/props").json()
    assert p["n_ctx"] == N_CTX and p["total_slots"] == 2 and p["model_alias"]
    # the template's Jinja source, as llama.cpp's /props gives it (clients render with it)
    with GGUFFile(smollm2_path) as f:  # (SmolLM2 has its own)
        assert p["chat_template"] == f.metadata["tokenizer.chat_template"] and p["chat_template_name"] == "gguf"


def test_web_ui_is_served(server: ServerThread) -> None:
    page = requests.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text.replace("http://www.w3.org", "")  # no CDN: every file is local
    for path in ("/static/app.js", "/static/markdown.js", "/static/style.css"):
        assert requests.get(server.url + path).status_code == 200, path


# -- TGI -------------------------------------------------------------------------------------

CARD = dict(max_new_tokens=128, do_sample=True, temperature=0.7, top_p=0.95, top_k=40, repetition_penalty=1.1)


def test_tgi_inference_client(server: ServerThread) -> None:
    hub = InferenceClient(server.url)
    prompt = "Tell me about AI"
    text = hub.text_generation(prompt, seed=11, **CARD)
    assert isinstance(text, str) and text.strip()
    # Sampling is random unless seeded (a reply may be one token then EOS), so the stream is checked
    # against the same seeded request: one event per generated token, the pieces joining to the text.
    events = list(hub.text_generation(prompt, stream=True, details=True, seed=11, **CARD))
    assert all(isinstance(e.token.text, str) for e in events)
    assert events[-1].details is not None and len(events) == events[-1].details.generated_tokens
    assert "".join(e.token.text for e in events if not e.token.special) == text
    assert events[-1].generated_text == text
    details = hub.text_generation(prompt, max_new_tokens=8, details=True, seed=7)
    assert details.details.finish_reason in ("length", "eos_token") and details.details.generated_tokens <= 8
    again = hub.text_generation(prompt, max_new_tokens=8)  # do_sample unset: greedy, like TGI
    assert again == details.generated_text
    # sampling without a seed: details.seed says which was drawn, as TGI's does; it gives the text again
    drawn = hub.text_generation(prompt, max_new_tokens=8, details=True, do_sample=True, temperature=1.0)
    assert isinstance(drawn.details.seed, int)
    assert hub.text_generation(prompt, max_new_tokens=8, do_sample=True, temperature=1.0,
                               seed=drawn.details.seed) == drawn.generated_text
    with pytest.raises(ValidationError):
        hub.text_generation(prompt, max_new_tokens=-3)


def test_tgi_generate_routes(server: ServerThread, reference: Engine) -> None:
    prompt = "The sky is"
    r = requests.post(server.url + "/generate", json={"inputs": prompt, "parameters": {"max_new_tokens": 10}})
    want = "".join(c.text for c in reference.stream_generate(prompt, max_tokens=10, params=SamplingParams(temp=0)))
    assert r.status_code == 200 and r.json()["generated_text"] == want
    full = requests.post(server.url + "/generate",
                      json={"inputs": prompt, "parameters": {"max_new_tokens": 10, "return_full_text": True}})
    assert full.json()["generated_text"] == prompt + want
    events = []
    with requests.post(server.url + "/generate_stream", json={"inputs": prompt, "parameters": {"max_new_tokens": 10}},
                       stream=True) as s:
        for line in s.iter_lines(decode_unicode=True):
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    assert "".join(e["token"]["text"] for e in events) == want
    assert events[-1]["generated_text"] == want and events[-1]["details"]["finish_reason"] == "length"
    assert all(e["generated_text"] is None for e in events[:-1])
    bad = requests.post(server.url + "/generate", json={"inputs": 5})
    assert bad.status_code == 422 and bad.json()["error_type"] == "validation"


def test_tgi_lists_every_generated_token(server: ServerThread, reference: Engine) -> None:
    """One entry / event per generated token, with its id and log-probability, also where several
    tokens make one character (the emoji here take three or four byte tokens): the character comes
    with its last token, the others have "", and the texts join to the generated text."""
    prompt, n = "🍣🍣🍣", 12
    want_ids = [t for t, _ in zip(reference.generate_step(reference.tokenize(prompt, add_special=True),
                                                          lambda logits: int(np.argmax(logits))), range(n))]
    body = {"inputs": prompt, "parameters": {"max_new_tokens": n, "details": True}}
    out = requests.post(server.url + "/generate", json=body, timeout=120).json()
    tokens = out["details"]["tokens"]
    assert out["details"]["generated_tokens"] == n and [t["id"] for t in tokens] == want_ids
    assert "".join(t["text"] for t in tokens) == out["generated_text"]
    assert any(t["text"] == "" for t in tokens) and "🍣" in out["generated_text"]  # a character split
    assert all(t["logprob"] <= 0 and not t["special"] for t in tokens)
    events = []
    with requests.post(server.url + "/generate_stream", json=body, stream=True, timeout=120) as s:
        events = [json.loads(line[5:]) for line in s.iter_lines(decode_unicode=True) if line.startswith("data:")]
    assert [e["token"] for e in events] == tokens and [e["index"] for e in events] == list(range(1, n + 1))
    assert events[-1]["generated_text"] == out["generated_text"]


def test_tgi_keeps_the_stop_sequence_that_ended_the_text(server: ServerThread, reference: Engine) -> None:
    """TGI's answers end with the stop sequence (InferenceClient's own example: stop=["Republic"]
    gives "... the French Republic"); the OpenAI routes end before it."""
    prompt = "The sky is"
    want = "".join(c.text for c in reference.stream_generate(prompt, max_tokens=16, params=SamplingParams(temp=0)))
    words = want.split()
    assert len(words) >= 3, want
    stop = words[2][:3]  # inside a word: within a token, or across two
    at = want.index(stop)
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 16, "stop": [stop], "details": True}}
    out = requests.post(server.url + "/generate", json=body, timeout=60).json()
    assert out["generated_text"] == want[:at + len(stop)]
    assert out["details"]["finish_reason"] == "stop_sequence"
    assert "".join(t["text"] for t in out["details"]["tokens"]) == out["generated_text"]
    with requests.post(server.url + "/generate_stream", json=body, stream=True, timeout=60) as s:
        events = [json.loads(line[5:]) for line in s.iter_lines(decode_unicode=True) if line.startswith("data:")]
    assert "".join(e["token"]["text"] for e in events) == events[-1]["generated_text"] == want[:at + len(stop)]
    assert events[-1]["details"]["finish_reason"] == "stop_sequence"
    hub = InferenceClient(server.url)
    assert hub.text_generation(prompt, max_new_tokens=16, stop=[stop]) == want[:at + len(stop)]
    plain = requests.post(server.url + "/v1/completions", json={"prompt": prompt, "max_tokens": 16, "stop": [stop],
                                                                "temperature": 0}, timeout=60).json()
    assert plain["choices"][0]["text"] == want[:at]


# -- errors and limits -----------------------------------------------------------------------

def _error(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    return body


def test_errors_are_openai_shaped(server: ServerThread, client: openai.OpenAI) -> None:
    url = server.url
    _error(requests.post(url + "/v1/chat/completions", data=b"{not json",
                      headers={"content-type": "application/json"}), 400)
    _error(requests.post(url + "/v1/chat/completions", json=[1, 2]), 400)
    e = _error(requests.post(url + "/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}), 400)
    assert e["param"] == "temperature"
    e = _error(requests.post(url + "/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "x"}]}), 400)
    assert e["param"] == "messages[0].role"
    e = _error(requests.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                              "max_tokens": 1.5}), 400)
    assert e["param"] == "max_tokens"
    assert _error(requests.get(url + "/v1/nowhere"), 404)["type"] == "not_found_error"
    _error(requests.get(url + "/v1/chat/completions"), 405)
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "word " * 2000}])
    assert exc.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.post("/nowhere", cast_to=object, body={})
    _error(requests.post(url + "/v1/completions", data=b"x" * (9 << 20)), 413)
    _error(requests.post(url + "/v1/completions", json={"prompt": ["a", "b"]}), 400)
    _error(requests.post(url + "/tokenize", json={"content": 7}), 400)
    # the server keeps serving
    r = client.chat.completions.create(model="m", messages=CONVERSATIONS[0], max_tokens=2)
    assert r.choices[0].finish_reason in ("length", "stop")


def test_body_limit_while_streaming_in(server: ServerThread) -> None:
    """A body without Content-Length is counted as it arrives."""
    def chunks():
        for _ in range(10):
            yield b"x" * (1 << 20)
    _error(requests.post(server.url + "/v1/completions", data=chunks()), 413)


def test_api_key(engine: Engine, server: ServerThread) -> None:
    # a second app on the same engine would race it: wait until the shared server is idle
    wait_idle(server)
    with ServerThread(engine, api_key="s3cret") as srv:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            e = _error(requests.post(srv.url + "/v1/chat/completions", headers=headers,
                                  json={"messages": [{"role": "user", "content": "hi"}]}), 401)
            assert e["code"] == "invalid_api_key"
        _error(requests.get(srv.url + "/v1/models"), 401)
        _error(requests.post(srv.url + "/tokenize", json={"content": "x"}), 401)
        _error(requests.post(srv.url + "/", json={"inputs": "x"}), 401)
        assert requests.get(srv.url + "/").status_code == 200          # the page itself is public
        assert requests.get(srv.url + "/health").status_code == 200
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url + "/v1", api_key="nope", max_retries=0).models.list()
        good = openai.OpenAI(base_url=srv.url + "/v1", api_key="s3cret", max_retries=0)
        assert good.models.list().data
        r = requests.post(srv.url + "/tokenize", json={"content": "x"}, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200


def test_template_runs_in_the_sandbox() -> None:
    path = FIXTURES / "models" / "dense-Q8_0.gguf"
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    eng = Engine.load(path, n_ctx=128, chat_template=evil)
    try:
        with ServerThread(eng) as srv:
            e = _error(requests.post(srv.url + "/v1/chat/completions",
                                  json={"messages": [{"role": "user", "content": "hi"}]}), 400)
            assert "template" in e["message"]
            assert requests.get(srv.url + "/health").json()["status"] == "ok"
    finally:
        eng.close()


# -- disconnects and concurrency -------------------------------------------------------------

def test_disconnect_stops_a_stream(server: ServerThread) -> None:
    body = {"messages": [{"role": "user", "content": "Write a long story about a dragon."}], "stream": True,
            "max_tokens": 600, "temperature": 0.8, "seed": 5}
    seen = 0
    with requests.post(server.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as s:
        for line in s.iter_lines(decode_unicode=True):
            if line.startswith("data:"):
                seen += 1
            if seen >= 5:
                break
    assert seen >= 5  # the disconnect happened mid-reply
    assert wait_idle(server) < 2.0


def test_disconnect_stops_a_plain_request(server: ServerThread) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "Write a long story about a dragon."}],
                       "max_tokens": 600}).encode()
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        t0 = time.monotonic()
        while not server.app.state.scheduler.status()["slots_processing"]:
            assert time.monotonic() - t0 < 10
            time.sleep(0.01)
        time.sleep(0.3)
    assert wait_idle(server) < 2.0


def test_parallel_slots_interleave(server: ServerThread) -> None:
    """Two streams at once: both produce tokens before either finishes (2 slots, round robin)."""
    arrivals: dict[int, list[float]] = {0: [], 1: []}

    def run(i: int) -> None:
        body = {"messages": [{"role": "user", "content": f"List {i + 3} fruits."}], "stream": True,
                "max_tokens": 40, "temperature": 0}
        with requests.post(server.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as s:
            for line in s.iter_lines(decode_unicode=True):
                if line.startswith("data:") and '"content":"' in line.replace(" ", ""):
                    arrivals[i].append(time.monotonic())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert arrivals[0] and arrivals[1]
    assert arrivals[0][0] < arrivals[1][-1] and arrivals[1][0] < arrivals[0][-1]
