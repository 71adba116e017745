"""Big JSON answers leave the event loop free: /v1/embeddings of thousands of inputs is megabytes of
floats, built and written on the text thread in steps (server/jsonout.py json_response) and sent in
pieces, while /health keeps answering; and the bytes are still exactly what Starlette's
JSONResponse (one json.dumps) wrote, which the `openai` client parses."""
from __future__ import annotations

import base64
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import requests
from serverutil import ServerThread, in_thread
from starlette.responses import JSONResponse

from runtime.engine import Engine
from runtime.server.jsonout import json_response

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "fixtures" / "models" / "dense-Q8_0.gguf"  # n_embd 256: quick vectors
HEALTH_BOUND = 1.0  # seconds; one json.dumps of the answer below held the loop ~2 s here


def test_health_answers_during_a_big_embeddings_answer() -> None:
    eng = Engine.load(TINY, n_ctx=64)
    inputs = [[1 + i % 500] for i in range(8000)]  # 8000 vectors of 256 floats: ~40 MB of JSON
    try:
        with ServerThread(eng) as srv:
            t, out = in_thread(lambda: requests.post(srv.url + "/v1/embeddings", json={"input": inputs},
                                                     timeout=120))
            polls, worst = 0, 0.0
            while t.is_alive():
                t0 = time.monotonic()
                r = requests.get(srv.url + "/health", timeout=10)
                worst = max(worst, time.monotonic() - t0)
                assert r.status_code == 200 and r.json()["status"] == "ok"
                polls += t.is_alive()
                time.sleep(0.02)
            t.join()
            assert worst < HEALTH_BOUND, f"/health took {worst:.2f} s while the answer was made"
            assert polls >= 5, f"the request ended after {polls} /health answers: too quick to tell"
            r = out["response"]
            assert r.status_code == 200
            assert r.headers["content-length"] == str(len(r.content)) and len(r.content) > 20 << 20
            data = r.json()["data"]
            assert [d["index"] for d in data] == list(range(len(inputs)))
            assert all(len(d["embedding"]) == 256 for d in data)
    finally:
        eng.close()


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path) -> Engine:
    eng = Engine.load(smollm2_path, n_ctx=256)
    yield eng
    eng.close()


def test_big_embeddings_answer_is_one_json_dumps_and_openai_parses_it(smollm2_path: Path, smollm2: Engine) -> None:
    rng = random.Random(5)
    words = ["cat", "river", "blue", "seven", "quantum", "bread", "Paris", "slowly", "é", "日本"]
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 6))) for _ in range(150)]
    vectors = [smollm2.embed(smollm2.tokenize(t, add_special=True, parse_special=True)) for t in texts]
    server_engine = Engine.load(smollm2_path, n_ctx=256)
    try:
        with ServerThread(server_engine) as srv:
            r = requests.post(srv.url + "/v1/embeddings", json={"input": texts, "model": "m",
                                                                "encoding_format": "float"}, timeout=60)
            assert r.status_code == 200
            # the bytes the route wrote before: JSONResponse of floats of the engine's vectors
            n = sum(len(smollm2.tokenize(t, add_special=True, parse_special=True)) for t in texts)
            model_id = r.json()["model"]
            old = {"object": "list",
                   "data": [{"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
                            for i, v in enumerate(vectors)],
                   "model": model_id, "usage": {"prompt_tokens": n, "total_tokens": n}}
            assert r.content == JSONResponse(old).body
            assert r.content == json.dumps(r.json(), ensure_ascii=False, allow_nan=False,
                                           separators=(",", ":")).encode()
            assert len(r.content) > 1 << 20  # several steps and several pieces
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)
            for fmt in ("float", "base64"):  # (without one, the client asks for base64 and decodes it)
                got = client.embeddings.create(model="m", input=texts, encoding_format=fmt)
                assert [d.index for d in got.data] == list(range(len(texts)))
                assert got.usage.prompt_tokens == n
                for d, v in zip(got.data, vectors):
                    emb = d.embedding
                    if isinstance(emb, str):  # the client leaves base64 as it came when asked for it
                        emb = np.frombuffer(base64.b64decode(emb), "<f4").tolist()
                    assert emb == [float(x) for x in v]
            default = client.embeddings.create(model="m", input=texts[:3])
            assert [d.embedding for d in default.data] == [[float(x) for x in v] for v in vectors[:3]]
    finally:
        server_engine.close()


def _shapes() -> dict[str, Any]:
    rng = random.Random(3)
    lp = {"token": "ab", "logprob": -0.5, "bytes": [97, 98],
          "top_logprobs": [{"token": "x\"", "logprob": -1.25, "bytes": [120, 34]}] * 20}
    return {
        "ids": {"tokens": list(range(100_000))},
        "pieces": {"tokens": [{"id": i, "piece": "é" if i % 7 else [226, 130]} for i in range(50_000)]},
        "embeddings": {"object": "list", "data": [{"object": "embedding", "index": i,
                                                   "embedding": [rng.random() for _ in range(300)]}
                                                  for i in range(200)], "model": "m"},
        "logprobs": {"choices": [{"index": i, "logprobs": {"content": [lp] * 3000, "refusal": None}}
                                 for i in range(3)]},
        "mixed": [[], {}, "", [[1, 2.5], (3, None)], {"a": list(range(20_000)), "b": [True] * 3},
                  [{"x": [0.1] * 9000}] * 3, {"1": "\n\u2028\x00😀"}, [[1] * 20_000] * 3, 1e300, -0.0],
        "long string": {"content": "a\"\\\n\x01é😀\u2028" * 200_000},
        "small": {"prompt": "hi"},
    }


@pytest.mark.parametrize("name", list(_shapes()))
def test_json_response_writes_what_json_response_of_starlette_writes(name: str) -> None:
    value = _shapes()[name]
    out = json_response(value)
    assert b"".join(out.pieces) == JSONResponse(value).body
    assert out.raw_headers == JSONResponse(value).raw_headers


def test_json_response_refuses_what_starlette_refuses() -> None:
    for bad in ({"a": float("nan")}, [float("inf")] * 10_000):
        with pytest.raises(ValueError):
            json_response(bad)
    with pytest.raises(UnicodeEncodeError):
        json_response({"s": "\ud800"})
