"""runtime/server/sse.py: the streamed replies' server-sent events, driven as an ASGI app with
the messages uvicorn would exchange. The bytes are read back by the `openai` client's own SSE
decoder (the parser its streaming calls use): events, multi-line data, pings it skips; and the
iterator is closed however the stream ends (its `finally` is what cancels a generation)."""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from openai._streaming import SSEDecoder

from runtime.server.sse import EventStream


async def serve(stream: EventStream, disconnect_after: float | None = None) -> list[dict[str, Any]]:
    """The messages the response sends; the client disconnects after `disconnect_after` seconds."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        if disconnect_after is None:
            await asyncio.Event().wait()  # never
        await asyncio.sleep(disconnect_after)
        return {"type": "http.disconnect"}

    await asyncio.wait_for(stream({"type": "http"}, receive, send), timeout=10)
    return sent


def events(sent: list[dict[str, Any]]) -> list[str]:
    body = [m["body"] for m in sent if m["type"] == "http.response.body"]
    return [e.data for e in SSEDecoder().iter_bytes(iter(body))]


def test_each_item_is_one_event_that_a_real_client_reads() -> None:
    items = ['{"text": "caf\\u00e9"}', "two\nlines", "[DONE]", "é and 日本"]

    async def gen() -> AsyncIterator[str]:
        for item in items:
            yield item

    sent = asyncio.run(serve(EventStream(gen())))
    start = sent[0]
    assert start["type"] == "http.response.start" and start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"].startswith(b"text/event-stream")
    assert headers[b"cache-control"] == b"no-cache"
    assert events(sent) == items
    assert len(sent) == 2 + len(items)  # the start, one write per event, the end
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_a_quiet_stream_is_kept_open_by_pings_that_clients_skip() -> None:
    async def slow() -> AsyncIterator[str]:
        yield "first"
        await asyncio.sleep(0.35)
        yield "second"

    sent = asyncio.run(serve(EventStream(slow(), ping=0.1)))
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert sum(b.startswith(b":") for b in bodies) >= 2  # comment lines while the iterator waited
    assert events(sent) == ["first", "second"]


def test_a_client_that_leaves_closes_the_iterator() -> None:
    closed = asyncio.Event()
    produced = []

    async def endless() -> AsyncIterator[str]:
        try:
            for i in range(10**9):
                produced.append(i)
                yield str(i)
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    async def run() -> list[dict[str, Any]]:
        sent = await serve(EventStream(endless()), disconnect_after=0.2)
        assert closed.is_set()  # closed before the response returned
        return sent

    sent = asyncio.run(run())
    n = len(produced)
    assert 5 < n < 100
    assert not any(m.get("more_body") is False for m in sent)  # no end written to a gone client


def test_an_error_in_the_iterator_ends_the_response_and_closes_it() -> None:
    closed = []

    async def failing() -> AsyncIterator[str]:
        try:
            yield "ok"
            raise RuntimeError("broken")
        finally:
            closed.append(True)

    try:
        asyncio.run(serve(EventStream(failing())))
    except RuntimeError as e:
        assert str(e) == "broken"
    else:
        raise AssertionError("the iterator's error did not reach the server")
    assert closed == [True]
