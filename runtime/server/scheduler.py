"""Generation slots and the one worker thread that runs them.

The engine keeps one KV cache and its forward pass is not re-entrant (the C thread pool
runs one job at a time), so every model call happens on a single worker thread:

    request handler (event loop) --submit(Job)--> waiting queue (FIFO)
    worker thread: admit waiting jobs into free slots, then step every busy slot by one
                   piece of output in turn (round robin), until no slot is busy
    worker --Job._put(item)--> the handler's asyncio queue --> SSE / JSON response

A slot is an Engine with its own KV cache. `parallel=N` gives N slots: slot 0 is the
engine the server was given, the others share its mapped weights, tokenizer and chat
template and add a KV cache each. N clients then stream at the same time, interleaved
token by token (one forward call each per round: decoding is not batched, so the total
throughput is that of one stream; what N slots buy is fairness and per-client caches).
A job is admitted into the free slot whose cache holds the longest prefix of its prompt,
so a follow-up chat turn finds its conversation still cached and only evaluates the new
tokens. A cancelled job (its client went away) is dropped before its next step, i.e.
within one token. A job that fails (any exception of the engine) ends with that error for its
client alone; its slot's cache is emptied (it may hold what the failed step wrote) and the
worker goes on with the next job.

Tokenizing and chat-template rendering, which take seconds on megabytes of text, run on a
second thread (`off_loop`), so neither the event loop (/health, the streams) nor the engine
worker waits for them.
"""
from __future__ import annotations

import asyncio
import collections
import contextvars
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar

from runtime.engine import Engine
from runtime.model import Model
from runtime.server.errors import APIError

_DONE = object()
T = TypeVar("T")

# The log record of the HTTP request being served (app.py sets it): a job notes its token
# counts there for the request's log line.
request_record: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "llamapack_request_record", default=None)


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Job:
    """One piece of work for an engine: `work(engine)` is an iterator run on the worker thread;
    its items reach the asyncio side through `async for item in job`. Create it on the event loop."""

    def __init__(self, work: Callable[[Engine], Iterator[Any]], prompt: Sequence[int] = ()) -> None:
        self.work = work
        self.prompt = list(prompt)  # for slot choice: the prefix the slot's cache should hold
        self.loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = False
        self.slot: int | None = None
        self.submitted = time.monotonic()
        self.record = request_record.get()

    def cancel(self) -> None:
        """Stops the work before its next step (safe from any thread, and after the end)."""
        self.cancelled = True

    def _put(self, item: Any) -> None:  # worker thread
        try:
            self.loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone: nobody is listening
            self.cancelled = True

    async def __aiter__(self) -> AsyncIterator[Any]:
        while True:
            item = await self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            stats = getattr(item, "stats", None)
            if stats is not None and self.record is not None:
                self.record["stats"] = stats
            yield item


class TextThread:
    """One daemon thread running calls in order (concurrent.futures' pool threads are joined at
    exit, so Ctrl+C would wait for a tokenize of megabytes to finish)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, call: Callable[[], None]) -> None:
        self._calls.put(call)

    def close(self) -> None:
        self._calls.put(None)

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            call()


class Slot:
    def __init__(self, index: int, engine: Engine) -> None:
        self.index = index
        self.engine = engine
        self.job: Job | None = None
        self.steps: Iterator[Any] | None = None
        self.last_used = 0.0

    def common_prefix(self, ids: Sequence[int]) -> int:
        n = 0
        for a, b in zip(self.engine.tokens, ids):
            if a != b:
                break
            n += 1
        return n


def clone_engine(engine: Engine) -> Engine:
    """Another engine on the same mapped weights, tokenizer and template, with its own KV cache."""
    model = Model(engine.gguf, n_ctx=engine.n_ctx, n_threads=engine.model.n_threads)
    return Engine(engine.gguf, model, engine.tokenizer, engine.template)


class Scheduler:
    def __init__(self, engine: Engine, parallel: int = 1, max_waiting: int | None = None) -> None:
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, got {parallel}")
        self.engine = engine
        self.slots = [Slot(0, engine)] + [Slot(i, clone_engine(engine)) for i in range(1, parallel)]
        self.max_waiting = max_waiting if max_waiting is not None else 64 * parallel
        self._waiting: collections.deque[Job] = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="llamapack-engine", daemon=True)
        self._thread.start()
        self._text = TextThread("llamapack-text")
        self._text_waiting: set[asyncio.Future[Any]] = set()  # event-loop side only

    # -- event-loop side --------------------------------------------------------

    def submit(self, job: Job) -> Job:
        with self._cv:
            if self._closed:
                raise APIError(503, "the server is shutting down", code="unavailable")
            if len(self._waiting) >= self.max_waiting:
                raise APIError(503, f"the server is busy: {len(self._waiting)} requests are waiting",
                               code="server_busy")
            self._waiting.append(job)
            self._cv.notify()
        return job

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the text thread (tokenizing, detokenizing, template rendering), in order;
        503 when `max_waiting` calls already wait there, or when the server stops meanwhile."""
        if self._closed:
            raise APIError(503, "the server is shutting down", code="unavailable")
        if len(self._text_waiting) >= self.max_waiting:
            raise APIError(503, f"the server is busy: {len(self._text_waiting)} requests are being tokenized",
                           code="server_busy")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:  # event loop
            if not answer.done():
                answer.set_result(value) if ok else answer.set_exception(value)

        def call() -> None:  # text thread
            if answer.done():  # abandoned while it waited
                return
            try:
                outcome = (True, fn(*args))
            except BaseException as exc:  # noqa: BLE001 - raised by the caller, on the event loop
                outcome = (False, exc)
            try:
                loop.call_soon_threadsafe(settle, *outcome)
            except RuntimeError:  # the event loop is gone
                pass

        self._text_waiting.add(answer)
        try:
            self._text.submit(call)
            return await answer
        finally:
            self._text_waiting.discard(answer)

    def status(self) -> dict[str, Any]:
        with self._cv:
            busy = sum(1 for s in self.slots if s.job is not None)
            return {"slots_idle": len(self.slots) - busy, "slots_processing": busy,
                    "requests_waiting": len(self._waiting)}

    def slot_info(self) -> list[dict[str, Any]]:
        with self._cv:
            return [{"id": s.index, "is_processing": s.job is not None, "n_ctx": s.engine.n_ctx,
                     "n_cached": s.engine.n_past} for s in self.slots]

    def stop(self) -> None:
        """Ends every job after its current step: waiting and running ones fail with 503, and so
        do the calls waiting for the text thread. Call it on the event loop."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        for answer in self._text_waiting:
            if not answer.done():
                answer.set_exception(APIError(503, "the server is shutting down", code="unavailable"))

    def close(self) -> None:
        self.stop()
        self._text.close()
        self._thread.join(timeout=30)

    # -- worker thread ------------------------------------------------------------

    def _admit(self) -> None:
        """FIFO: the oldest waiting job takes the free slot caching most of its prompt."""
        while self._waiting:
            free = [s for s in self.slots if s.job is None]
            if not free:
                return
            job = self._waiting.popleft()
            if job.cancelled:
                job._put(_DONE)
                continue
            slot = max(free, key=lambda s: (s.common_prefix(job.prompt), -s.last_used))
            slot.job, job.slot = job, slot.index
            slot.steps = None  # started on the worker, outside the lock

    def _release(self, slot: Slot, final: Any) -> None:
        job, steps = slot.job, slot.steps
        if steps is not None and hasattr(steps, "close"):
            try:
                steps.close()  # type: ignore[attr-defined]
            except Exception:
                pass
        with self._cv:
            slot.job, slot.steps = None, None
            slot.last_used = time.monotonic()
        if job is not None:
            job._put(final)

    def _step(self, slot: Slot) -> None:
        job = slot.job
        assert job is not None
        if job.cancelled:
            self._release(slot, _DONE)
            return
        try:
            if slot.steps is None:
                slot.steps = iter(job.work(slot.engine))
            item = next(slot.steps)
        except StopIteration:
            self._release(slot, _DONE)
            return
        except Exception as exc:  # the job's error goes to its client; the worker carries on
            slot.engine.reset()  # the cache may hold what the failed step wrote: start afresh
            self._release(slot, _Failure(exc))
            return
        job._put(item)

    def _run(self) -> None:
        while True:
            with self._cv:
                self._admit()
                while not self._closed and not any(s.job for s in self.slots):
                    self._cv.wait()
                    self._admit()
                if self._closed:
                    break
                busy = [s for s in self.slots if s.job is not None]
            for slot in busy:
                self._step(slot)
        with self._cv:  # shutting down: nobody waits forever
            for job in self._waiting:
                job._put(_Failure(APIError(503, "the server is shutting down", code="unavailable")))
            self._waiting.clear()
        for slot in self.slots:
            if slot.job is not None:
                self._release(slot, _Failure(APIError(503, "the server is shutting down", code="unavailable")))
