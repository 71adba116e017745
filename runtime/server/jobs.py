"""The server's jobs: a piece of work for the engine worker (runtime/server/scheduler.py), and the
way its items reach the request handler on the event loop. The worker puts a job's items
(generated chunks, DONE, a Failure) in the scheduler's Outbox during a step; at the step's end
one wake-up of the loop delivers them all to each job's asyncio queue, which the handler reads
with `async for item in job`.
"""
from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.engine import Engine
    from runtime.server.scheduler import Slot

DONE = object()

# The log record of the HTTP request being served (app.py sets it): a job notes its token
# counts there for the request's log line.
request_record: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "llamapack_request_record", default=None)


class Failure:
    """A job's error, raised to its client by `async for item in job`."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Job:
    """One piece of work for an engine: a generation, batched with the others, or `work(engine)`, an
    iterator run on the worker thread; the items (a generation's Chunks) reach the asyncio side
    through `async for item in job`. Create it on the event loop."""

    def __init__(self, work: Callable[[Engine], Iterator[Any]], prompt: Sequence[int] = (),
                 generation: Any = None) -> None:
        self.work = work
        self.prompt = list(prompt)  # for slot choice: the prefix the slot's cache should hold
        # a generation (server/generation.py: `decoding(engine)` gives its Decoding) is batched with
        # the others; a job without one runs `work` on its slot's engine
        self.generation = generation
        self.n = max(1, getattr(generation, "n", 1))  # choices: a slot each, the first (leader) reads the prompt
        self.slots: list[Slot] = []  # the slots working for it (worker thread)
        self.loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = False
        self.slot: int | None = None
        self.submitted = time.monotonic()
        self.record = request_record.get()
        self.outbox: Outbox | None = None  # the scheduler's, once submitted

    def cancel(self) -> None:
        """Stops the work before its next step (safe from any thread, and after the end)."""
        self.cancelled = True

    def _put(self, item: Any) -> None:  # worker thread
        if self.outbox is not None:
            self.outbox.items.append((self, item))
        else:
            Outbox.send(self.loop, [(self, item)])

    async def __aiter__(self) -> AsyncIterator[Any]:
        while True:
            item = await self._queue.get()
            if item is DONE:
                return
            if isinstance(item, Failure):
                raise item.exc
            stats = getattr(item, "stats", None)  # the first choice's: it read the prompt
            if stats is not None and self.record is not None and getattr(item, "index", 0) == 0:
                self.record["stats"] = stats
            yield item


class Outbox:
    """What the worker hands to the event loop during one step, delivered at its end by one
    wake-up of the loop: waking it once per item (a write to its self-pipe each, and its callbacks
    holding the GIL while the worker waits for it to go on) cost 6% of a step of 4 streams."""

    def __init__(self) -> None:
        self.items: list[tuple[Job, Any]] = []  # worker thread only

    def flush(self) -> None:
        items, self.items = self.items, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Any]]] = {}
        for job, item in items:
            by_loop.setdefault(job.loop, []).append((job, item))
        for loop, batch in by_loop.items():
            Outbox.send(loop, batch)

    @staticmethod
    def send(loop: asyncio.AbstractEventLoop, batch: list[tuple[Job, Any]]) -> None:
        try:
            loop.call_soon_threadsafe(Outbox._deliver, batch)
        except RuntimeError:  # the event loop is gone: nobody is listening
            for job, _ in batch:
                job.cancelled = True

    @staticmethod
    def _deliver(batch: list[tuple[Job, Any]]) -> None:  # event loop
        for job, item in batch:
            job._queue.put_nowait(item)
