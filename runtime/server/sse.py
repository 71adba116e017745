"""Server-sent events: a streamed reply as an ASGI response, one `data:` event per string
an async iterator yields.

Every streamed token of every request passes through here, on the event loop that shares two
cores with the forward pass, so an event costs one formatted write and nothing else: no task
group or cancel scope per event. Per request there are two helper tasks: one notices the client
leaving (the stream stops within an event: closing the iterator runs its `finally`, which
cancels the job), one sends a comment line every `ping` seconds so proxies and clients keep a
quiet connection open (a long prompt can take minutes before its first token)."""
from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

from starlette.types import Message, Receive, Scope, Send

HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
           (b"x-accel-buffering", b"no")]
PING = b": ping\n\n"


def encode(data: str) -> bytes:
    """One event: a `data:` line per line of data, then the blank line that ends it."""
    if "\n" not in data and "\r" not in data:
        return b"data: " + data.encode("utf-8") + b"\n\n"
    return "".join(f"data: {line}\n" for line in data.splitlines()).encode("utf-8") + b"\n"


class EventStream:
    """`events` streamed as server-sent events (status 200); the iterator is closed however the
    response ends: finished, the client gone, or the server stopping."""

    def __init__(self, events: AsyncIterator[str], ping: float = 15.0) -> None:
        self.events = events
        self.ping = ping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        stream = asyncio.ensure_future(self._stream(send))
        gone = asyncio.ensure_future(self._gone(receive))
        pings = asyncio.ensure_future(self._pings(send))
        try:
            await asyncio.wait([stream, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stream, gone, pings):
                task.cancel()
            await asyncio.gather(stream, gone, pings, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.events.aclose()  # type: ignore[attr-defined]
        if stream.cancelled():
            return  # the client left: nothing more to send
        stream.result()  # an error in the stream itself (the iterators send theirs as events)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, send: Send) -> None:
        async for data in self.events:
            await send({"type": "http.response.body", "body": encode(data), "more_body": True})

    @staticmethod
    async def _gone(receive: Receive) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                return

    async def _pings(self, send: Send) -> None:
        while True:
            await asyncio.sleep(self.ping)
            await send({"type": "http.response.body", "body": PING, "more_body": True})
