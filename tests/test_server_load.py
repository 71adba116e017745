"""Load: 8 concurrent streaming clients x 20 requests each, through the official `openai` client.

Every request must complete with a finish reason and no error, the queue must drain, and the
process's resident memory must stay flat (measured after a warm-up round). A tiny random-weight
model keeps it quick; the point is the server, not the text.
"""
from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import openai
from serverutil import ServerThread

from runtime.engine import Engine

MODEL = Path(__file__).parent / "fixtures" / "models" / "dense-Q8_0.gguf"
CLIENTS, REQUESTS, MAX_TOKENS = 8, 20, 8
RSS_GROWTH_LIMIT = 32 << 20  # bytes


def rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_clients(url: str, n_clients: int, n_requests: int) -> tuple[list[str], list[BaseException]]:
    finishes: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        api = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        for j in range(n_requests):
            try:
                stream = api.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": f"client {i} request {j}: hello"}],
                    max_tokens=MAX_TOKENS, temperature=0.8, seed=i * 1000 + j, stream=True)
                finish = None
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].finish_reason:
                        finish = chunk.choices[0].finish_reason
                assert finish in ("stop", "length"), finish
                with lock:
                    finishes.append(finish)
            except BaseException as e:  # noqa: BLE001 - every failure is reported below
                with lock:
                    errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return finishes, errors


def test_concurrent_streaming_clients() -> None:
    eng = Engine.load(MODEL, n_ctx=512)
    try:
        with ServerThread(eng, parallel=8) as srv:  # all eight decode in one batch
            finishes, errors = run_clients(srv.url, CLIENTS, 2)  # warm-up: imports, buffers, caches
            assert not errors and len(finishes) == CLIENTS * 2
            before = rss()
            t0 = time.monotonic()
            finishes, errors = run_clients(srv.url, CLIENTS, REQUESTS)
            elapsed = time.monotonic() - t0
            after = rss()
            assert not errors, f"{len(errors)} requests failed, first: {errors[0]!r}"
            assert len(finishes) == CLIENTS * REQUESTS
            status = srv.app.state.scheduler.status()
            assert status == {"slots_idle": 8, "slots_processing": 0, "requests_waiting": 0}
            assert srv.app.state.scheduler.most_sequences_in_a_step >= 4
            assert after - before < RSS_GROWTH_LIMIT, f"RSS grew by {(after - before) >> 20} MiB"
            print(f"{len(finishes)} streamed requests in {elapsed:.1f} s; RSS {before >> 20} -> {after >> 20} MiB")
    finally:
        eng.close()
