"""The server's slots and the one worker thread that runs every model call: continuous batching.

The forward pass is not re-entrant (the C thread pool runs one job at a time), so every model
call happens on a single worker thread:

    request handler (event loop) --submit(Job)--> waiting queue (FIFO)
    worker thread, each step: admit waiting jobs into free slots, then ONE forward call over
        one decoding row of every generating slot (and the draft tokens that follow it, see
        below), plus prompt chunks of the slots still in prompt processing (the shortest
        prompts first, up to `ubatch` rows in all; while slots decode, chunks costing no more
        than `ubatch` rows at a sequence's start, Model.prompt_cost);
        each slot's row of logits goes to its request's `Decoding`, which picks the token
    worker --Job._put(item)--> the step's Outbox (jobs.py) --one wake-up of the loop per step-->
        each handler's asyncio queue --> SSE / JSON response

A slot is one sequence of the model's KV cache (`parallel` slots, `-c` positions each). N
clients then decode in one batch: the weights are read once per step for all of them. A long
prompt is processed `ubatch` tokens at a time between the other slots' tokens, so it delays
them by one chunk per step rather than by the whole prompt, and a short new prompt goes first.
A job is admitted into the free slot whose cache holds the longest prefix of its prompt; if
another slot (busy or not) holds a longer one, that prefix is copied into the new slot's
sequence instead of recomputed (a shared system prompt is processed once). A cancelled job
(its client went away) leaves before the next step. A job that fails (any exception of the
engine) ends with that error for its client alone; its slot's sequence is cleared and the
worker goes on.

Speculative decoding (runtime/speculative.py, the engine's `speculation`): a generating slot's
decoding row may bring draft tokens from n-gram matches in its own history, as more generated
rows of its sequence in the same call; its request keeps the drafts its own sampler chooses and
the rest leave its sequence. Every row is computed as a lone generated row, so neither the other
requests' rows nor the request's own text change (at temperature 0, or with a seed).

Jobs that are not generations (embeddings) run their own `work(engine)` iterator on a free
slot's engine, one item per step, between the batched steps.

Tokenizing and chat-template rendering, which take seconds on megabytes of text, run on a
second thread (`off_loop`), so neither the event loop (/health, the streams) nor the engine
worker waits for them; so does writing a big JSON answer (millions of ids, thousands of
embeddings, every token's log-probabilities: jsonout.py `json_response`, params.py `RouteGroup.answer`).
"""
from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from runtime.decoding import Decoding
from runtime.engine import Engine, check_finite
from runtime.kernels import lib
from runtime.model import Model, ModelError
from runtime.server.errors import APIError, shutting_down
from runtime.server.jobs import DONE, Failure, Job, Outbox
from runtime.speculative import CostModel, Speculator, take_rows

T = TypeVar("T")


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
    """One sequence of the model's KV cache and the job using it. `engine` is an Engine on that
    sequence: its `tokens` are what the sequence holds, position by position."""

    def __init__(self, index: int, engine: Engine) -> None:
        self.index = index
        self.engine = engine
        self.job: Job | None = None
        self.steps: Iterator[Any] | None = None  # a job's own work
        self.state: Decoding | None = None        # a generation's state
        self.pending: list[int] = []              # prompt tokens still to run
        self.next_token: int | None = None        # the chosen token that runs next
        self.drafts: list[int] = []               # draft tokens that run after it this step
        self.spec: Speculator | None = None       # the generation's drafting
        self.choice = 0                           # which of its job's choices this slot makes
        self.followers: list[Slot] = []           # a leader's other choices, waiting for its prompt
        self.postponed = False                    # its prompt chunk waited last step (Scheduler._batch)
        self.last_used = 0.0

    @property
    def tokens(self) -> list[int]:
        return self.engine.tokens

    def common_prefix(self, ids: Sequence[int]) -> int:
        n = 0
        for a, b in zip(self.tokens, ids):
            if a != b:
                break
            n += 1
        return n


def _can_warm(model: Model) -> bool:
    """Whether the server makes its whole cache resident while idle (Scheduler._warm): when it
    takes at most half the memory the system has available (Linux's MemAvailable); never where
    that is unknown. A cache sized far beyond what the requests use stays lazily faulted in."""
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return False
    return model.kv_bytes <= avail // 2


def batch_rows(parallel: int, ubatch: int) -> int:
    """Rows a step may hold: a decoding row per slot and a prompt chunk (at least LP_BATCHED_MIN)."""
    return parallel + max(ubatch, int(lib.LP_BATCHED_MIN))


def slot_engines(engine: Engine, parallel: int, ubatch: int) -> list[Engine]:
    """An engine per slot, each on its own sequence of one model: `engine`'s own model when it has
    the sequences (the prompt chunks then fit its batch room), else a new one on the same mapped
    weights."""
    model = engine.model
    if model.n_seq < parallel or model.max_batch < batch_rows(parallel, 1):
        model = Model(engine.gguf, n_ctx=engine.n_ctx, n_threads=model.n_threads, n_seq=parallel,
                      max_batch=batch_rows(parallel, ubatch))
    first = engine if model is engine.model else Engine(engine.gguf, model, engine.tokenizer, engine.template)
    engines = [first] + [Engine(engine.gguf, model, engine.tokenizer, engine.template, seq=i)
                         for i in range(1, parallel)]
    for e in engines:  # what a full context does (--context-shift, --keep)
        e.context_shift, e.n_keep = engine.context_shift, engine.n_keep
    return engines


class Scheduler:
    def __init__(self, engine: Engine, parallel: int = 1, max_waiting: int | None = None, ubatch: int = 512) -> None:
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, got {parallel}")
        if ubatch < 1:
            raise ValueError(f"ubatch must be at least 1, got {ubatch}")
        self.engine = engine
        self.slots = [Slot(i, e) for i, e in enumerate(slot_engines(engine, parallel, ubatch))]
        self.model = self.slots[0].engine.model
        # rows per step, decoding rows included; what the model's scratch holds at most
        self.ubatch = max(1, min(ubatch, self.model.max_batch - parallel))
        # (prompt chunks take at least LP_BATCHED_MIN rows: see _batch)
        self.most_sequences_in_a_step = 0  # the largest number of requests one forward call served
        self.speculation = engine.speculation if engine.speculation and engine.speculation.enabled else None
        self.draft_cost = CostModel(engine.draft_cost.prior)  # timed on the steps of decoding rows only
        self.max_waiting = max_waiting if max_waiting is not None else 64 * parallel
        self._waiting: collections.deque[Job] = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self._outbox = Outbox()  # the worker's; flushed after every step
        # (sequence, layer) of the cache still to make resident while the worker is idle, the
        # last first (see _warm)
        self._cold = [(s.index, layer) for s in reversed(self.slots)
                      for layer in reversed(range(self.model.config.n_layer))] if _can_warm(self.model) else []
        self._thread = threading.Thread(target=self._run, name="llamapack-engine", daemon=True)
        self._thread.start()
        self._text = TextThread("llamapack-text")
        self._text_waiting: set[asyncio.Future[Any]] = set()  # event-loop side only
        self.stopping: set[asyncio.Future[Any]] = set()  # (event loop) failed with a 503 by stop()

    # -- event-loop side --------------------------------------------------------

    def submit(self, job: Job) -> Job:
        with self._cv:
            if self._closed:
                raise shutting_down()
            self._drop_cancelled()
            if len(self._waiting) >= self.max_waiting:
                raise APIError(503, f"the server is busy: {len(self._waiting)} requests are waiting",
                               code="server_busy")
            job.outbox = self._outbox
            self._waiting.append(job)
            self._cv.notify()
        return job

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the text thread (tokenizing, detokenizing, template rendering), in order;
        503 when `max_waiting` calls already wait there, or when the server stops meanwhile."""
        if self._closed:
            raise shutting_down()
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

    def _drop_cancelled(self) -> None:
        """Waiting jobs whose clients left go (under the lock): they count against no limit and in
        no status (the worker would drop them only once they reach the queue's head)."""
        if any(job.cancelled for job in self._waiting):
            gone = [job for job in self._waiting if job.cancelled]
            self._waiting = collections.deque(job for job in self._waiting if not job.cancelled)
            for job in gone:
                Outbox.send(job.loop, [(job, DONE)])

    def status(self) -> dict[str, Any]:
        with self._cv:
            self._drop_cancelled()
            busy = sum(1 for s in self.slots if s.job is not None)
            return {"slots_idle": len(self.slots) - busy, "slots_processing": busy,
                    "requests_waiting": len(self._waiting)}

    def slot_info(self) -> list[dict[str, Any]]:
        with self._cv:
            return [{"id": s.index, "is_processing": s.job is not None, "n_ctx": s.engine.n_ctx,
                     "n_cached": s.engine.n_past} for s in self.slots]

    def slot_work(self) -> list[tuple[Any, int]]:
        """Each slot's generation request (None when idle, or not generating) and the tokens it
        generated so far (its Decoding is the worker's: these counts are read as they are)."""
        with self._cv:
            return [(getattr(s.job, "generation", None), s.state.stats.generated_tokens if s.state else 0)
                    for s in self.slots]

    @property
    def closed(self) -> bool:
        return self._closed

    def stop(self) -> None:
        """Ends every job after its current step: waiting and running ones fail with 503, and so
        do the calls waiting for the text thread and the futures in `stopping` (request bodies
        still arriving: params.read_json). Call it on the event loop."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        for answer in (*self._text_waiting, *self.stopping):
            if not answer.done():
                answer.set_exception(shutting_down())

    def close(self) -> None:
        self.stop()
        self._text.close()
        self._thread.join(timeout=30)

    # -- worker thread ------------------------------------------------------------

    def _admit(self) -> None:
        """FIFO: the oldest waiting job takes the free slot caching most of its prompt (and, for n
        choices, n - 1 more: it waits until that many are free)."""
        while self._waiting:
            free = [s for s in self.slots if s.job is None]
            job = self._waiting[0]
            if job.cancelled:
                self._waiting.popleft()
                job._put(DONE)
                continue
            if len(free) < job.n:
                return
            self._waiting.popleft()
            lead = max(free, key=lambda s: (s.common_prefix(job.prompt), -s.last_used))
            others = sorted((s for s in free if s is not lead), key=lambda s: s.last_used)[:job.n - 1]
            for i, slot in enumerate([lead] + others):
                slot.job, slot.choice = job, i
                slot.steps, slot.state, slot.followers = None, None, []  # started on the worker
            lead.followers = others
            job.slots, job.slot = [lead] + others, lead.index

    def _free(self, slot: Slot) -> None:
        steps = slot.steps
        if steps is not None and hasattr(steps, "close"):
            try:
                steps.close()  # type: ignore[attr-defined]
            except Exception:
                pass
        with self._cv:
            slot.job, slot.steps, slot.state, slot.followers = None, None, None, []
            slot.pending, slot.next_token, slot.drafts, slot.spec = [], None, [], None
            slot.last_used = time.monotonic()

    @staticmethod
    def _held(slot: Slot) -> list[Slot]:
        """The slots still working for slot's job (slot itself when it has none)."""
        job = slot.job
        return [s for s in job.slots if s.job is job] if job is not None else [slot]

    def _release(self, slot: Slot, final: Any) -> None:
        """Ends the slot's job with `final` (DONE or a failure): every slot it holds is freed."""
        job = slot.job
        for s in self._held(slot):
            self._free(s)
        if job is not None:
            job._put(final)

    def _choice_done(self, slot: Slot) -> None:
        """One choice ended (its last chunk is out): its slot is free; the job ends with its last."""
        job = slot.job
        assert job is not None
        self._free(slot)
        if not any(s.job is job for s in job.slots):
            job._put(DONE)

    def _fail(self, slot: Slot, exc: BaseException) -> None:
        """The job's error goes to its client; its sequences may hold what the failed step wrote."""
        for s in self._held(slot):
            s.engine.reset()
        self._release(slot, Failure(exc))

    def _step_work(self, slot: Slot) -> None:
        """One item of a job that is not a generation (its own iterator on the slot's engine)."""
        job = slot.job
        assert job is not None
        try:
            if slot.steps is None:
                slot.steps = iter(job.work(slot.engine))
            item = next(slot.steps)
        except StopIteration:
            self._release(slot, DONE)
            return
        except Exception as exc:  # the job's error goes to its client; the worker carries on
            self._fail(slot, exc)
            return
        job._put(item)

    def _start(self, slot: Slot) -> bool:
        """A generation's first step: its state, and its sequence holding the longest cached prefix
        of its prompt (copied from another slot when one holds more). False if it failed."""
        job = slot.job
        assert job is not None
        try:
            state = job.generation.decoding(slot.engine)
            ids = job.prompt
            if not ids or len(ids) >= self.model.n_ctx:
                raise ModelError(f"the prompt has {len(ids)} tokens; the context holds {self.model.n_ctx}")
            own = slot.common_prefix(ids)
            donor = max(self.slots, key=lambda s: s.common_prefix(ids))
            shared = donor.common_prefix(ids)
            if shared > own:  # another slot holds more of the prompt: copy it
                own = shared
                self.model.copy_prefix(donor.index, slot.index, own)
                slot.tokens[:] = donor.tokens[:own]
            reuse = min(own, len(ids) - 1)  # at least one token runs, for its logits
            self.model.truncate(slot.index, reuse)
            del slot.tokens[reuse:]
            slot.engine.last_reused = reuse
            state.begin(reuse)
            for f in slot.followers:  # their states now; their caches when the prompt is read
                f.state = job.generation.decoding(f.engine, f.choice)
        except Exception as exc:
            self._fail(slot, exc)
            return False
        slot.state, slot.pending, slot.postponed = state, list(ids[reuse:]), False
        return True

    def _batch(self, slots: list[Slot]) -> list[tuple[Slot, list[int], bool]]:
        """This step's rows: (slot, tokens, whether its last row gives logits). Every decoding slot's
        next token, then prompt chunks, the shortest remaining prompts first, up to ubatch rows;
        while slots decode, also up to the cost of ubatch rows at a sequence's start (prompt_cost).

        A prompt is cut only into chunks of at least LP_BATCHED_MIN rows (its short rest, and a
        short prompt, go whole): the forward pass computes a chunk that long by the batched
        product and a shorter one by row dot products, so this keeps a prompt's rows computed as
        they are when the request runs alone, in one call.

        When short prompts end in this step (a quarter of ubatch rows at most), the chunks of
        longer prompts wait for the next one: the step then costs the short prompts' rows, not a
        whole chunk, so a new chat message's first token waits for the chunk already running
        and no other (a long prompt being read meanwhile doubled it). A chunk waits at most one
        step in a row, so short requests arriving every step cannot hold a long prompt back."""
        least = int(lib.LP_BATCHED_MIN)
        rows: list[tuple[Slot, list[int], bool]] = []
        decoding = [s for s in slots if s.next_token is not None]
        # draft rows: what the call holds beyond a row per decoding slot and a prompt chunk
        spare = self.model.max_batch - len(decoding) - (least if any(s.pending for s in slots) else 0)
        base = len(decoding)  # the rows of the call without drafts; each draft granted adds to it
        for slot in decoding:
            slot.drafts = self._drafts(slot, spare, base)
            spare -= len(slot.drafts)
            base += len(slot.drafts)
            rows.append((slot, [slot.next_token] + slot.drafts, True))  # type: ignore[list-item]
        used = sum(len(ids) for _, ids, _ in rows)
        room = min(max(least, self.ubatch - used), self.model.max_batch - used)
        # while other requests decode, a chunk costs at most what those rows cost at a sequence's
        # start: a chunk's rows attend to every earlier position, so far into a long prompt it takes
        # fewer rows and the streams' pause stays that of the first chunk (alone, a prompt takes
        # whole chunks: fewer, larger steps read it faster)
        budget = self.model.prompt_cost(0, room) if decoding else float("inf")
        ending = 0  # rows of the prompts that end in this step
        first = True  # no prompt rows in the step yet
        for slot in sorted((s for s in slots if s.pending), key=lambda s: len(s.pending)):
            pending, start = len(slot.pending), len(slot.tokens)
            fit = self._rows_within(start, min(pending, room), budget)
            if first:  # every step that has prompts moves one on by a whole chunk at least
                fit = max(fit, min(pending, least, room))
            if pending <= fit:
                k = pending
            elif fit < least:
                continue  # no room for a chunk this step
            elif pending - fit >= least:
                k = fit
            elif pending - least >= least:
                k = pending - least  # leave a whole chunk for the next step
            else:
                k = fit  # (a short rest follows: only when the room is under twice the least chunk)
            if k < pending and 0 < ending <= self.ubatch // 4 and not slot.postponed:
                slot.postponed = True  # short prompts end in this step: their first tokens go first
                continue
            slot.postponed = False
            rows.append((slot, slot.pending[:k], k == pending))
            ending += k if k == pending else 0
            room -= k
            budget -= self.model.prompt_cost(start, k)
            first = False
            if room <= 0 or budget <= 0:
                break
        return rows

    def _rows_within(self, start: int, most: int, budget: float) -> int:
        """The most prompt rows (up to `most`) from position `start` whose cost is within budget."""
        if self.model.prompt_cost(start, most) <= budget:  # (all of them: always, with nobody waiting)
            return most
        lo, hi = 0, most
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.model.prompt_cost(start, mid) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _drafts(self, slot: Slot, spare: int, base: int) -> list[int]:
        """Draft tokens to follow the slot's next token this step (at most `spare`), in a call of
        `base` rows without them."""
        if self.speculation is None or slot.state is None or spare <= 0:
            return []
        if slot.spec is None:
            slot.spec = Speculator(self.speculation, self.draft_cost)
        return slot.spec.draft(slot.state, min(spare, slot.engine.draft_room(len(slot.tokens))), base)

    def _step_generations(self, slots: list[Slot]) -> None:
        """One forward call for every generating slot; each marked row's logits to its request."""
        for slot in slots:  # a new job's leader reads the prompt; its followers wait for it
            if slot.state is None and slot.job is not None and slot.choice == 0:
                self._start(slot)
        slots = [s for s in slots if s.state is not None and s.job is not None]
        rows = self._batch(slots)
        if not rows:
            return
        self.most_sequences_in_a_step = max(self.most_sequences_in_a_step, len(rows))
        tokens, positions, seqs, marks, prompt = [], [], [], [], []
        for slot, ids, out in rows:
            n = len(slot.tokens)
            tokens += ids
            positions += range(n, n + len(ids))
            seqs += [slot.index] * len(ids)
            # a prompt chunk (its last row's logits, if it is the prompt's end), or the generated
            # token and its drafts (every row's)
            marks += [False] * (len(ids) - 1) + [out] if slot.pending else [True] * len(ids)
            prompt += [bool(slot.pending)] * len(ids)
        timed = not any(prompt)  # decoding rows only (one per slot, and drafts): time the call's cost
        try:
            # each row computed as when its request runs alone (Model.decode's kinds)
            start = time.perf_counter()
            logits = self.model.decode(tokens, positions, seqs, marks, prompt=prompt)
            if timed:
                self.draft_cost.record(len(tokens), time.perf_counter() - start)
        except Exception as exc:  # every request in the batch fails; the worker carries on
            for slot, _, _ in rows:
                self._fail(slot, exc)
            return
        i = 0
        for slot, ids, out in rows:
            n_out = len(ids) if not slot.pending else int(out)
            if slot.job is None:  # its job failed meanwhile (a sibling choice's error): nothing to keep
                i += n_out
                continue
            slot.tokens.extend(ids)
            drafts = []
            if slot.pending:  # a prompt chunk
                del slot.pending[:len(ids)]
            else:             # the decoding row and its drafts
                slot.next_token, drafts, slot.drafts = None, slot.drafts, []
            if out:
                if slot.followers and not slot.pending:  # the prompt is read: each choice starts from it
                    self._branch(slot, logits[i])
                self._advance(slot, logits[i:i + n_out], drafts)
            i += n_out

    def _branch(self, lead: Slot, logits: Any) -> None:
        """The other choices of lead's job: a copy of its cache, the same first logits."""
        for f in lead.followers:
            if f.job is not lead.job or f.state is None:
                continue
            try:
                self.model.copy_prefix(lead.index, f.index, len(lead.tokens))
                f.tokens[:] = lead.tokens
                f.state.begin(len(lead.tokens))
            except Exception as exc:
                self._fail(lead, exc)
                return
            self._advance(f, logits[None].copy())
        lead.followers = []

    def _advance(self, slot: Slot, logits: Any, drafts: Sequence[int] = ()) -> None:
        """The slot's next tokens from its rows of logits (the last fed token's, then one per
        draft: runtime/speculative.py's take_rows); the rejected drafts leave its sequence; the
        chunks to the client; the end if done."""
        state, job = slot.state, slot.job
        assert state is not None and job is not None
        try:
            base = len(slot.tokens) - len(drafts) - 1  # the position of the first row
            chunks, kept, tok = take_rows(state, drafts, logits, base, check_finite)
            if kept < len(drafts) + 1:
                self.model.truncate(slot.index, base + kept)
                del slot.tokens[base + kept:]
            if slot.spec is not None:
                slot.spec.record(state, len(drafts), kept)
            for chunk in chunks:
                if chunk.text:
                    chunk.index = slot.choice
                    job._put(chunk)
            if tok is None:
                final = state.finish()
                final.index = slot.choice
                job._put(final)
                self._choice_done(slot)
                return
            if slot.engine.make_room(state.n_prompt):  # room for tok: a full sequence may drop older cells
                state.stats.truncated = True
        except Exception as exc:
            self._fail(slot, exc)
            return
        slot.next_token = tok

    def _warm(self) -> None:
        """Makes one layer of an idle sequence's cache resident. The first write to a page of
        the fresh cache faults it in, and with transparent huge pages a write zeroes 2 MiB: a
        slot's first request stalled every stream for 0.2 s (SmolLM2, -c 4096, on a VM whose
        page clearing is slow). Warmed one layer at a time between requests, so a request
        arriving meanwhile waits for one layer at most."""
        seq, layer = self._cold.pop()
        try:
            self.model.warm(seq, layer)
        except Exception:  # not worth failing over: that memory is faulted in on first use
            self._cold.clear()

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._outbox.flush()

    def _serve(self) -> None:
        while True:
            self._outbox.flush()  # the last step's chunks, before the worker waits or goes on
            with self._cv:
                self._admit()
                while not self._closed and not any(s.job for s in self.slots) and not self._cold:
                    self._cv.wait()
                    self._admit()
                if self._closed:
                    break
                busy = [s for s in self.slots if s.job is not None]
            if not busy:  # idle, with cache memory still cold
                self._warm()
                continue
            for slot in busy:  # a client that went away leaves now
                if slot.job is not None and slot.job.cancelled:
                    self._release(slot, DONE)
            busy = [s for s in busy if s.job is not None]
            for slot in busy:
                if slot.job is not None and slot.job.generation is None:
                    self._step_work(slot)
            self._step_generations([s for s in busy if s.job is not None and s.job.generation is not None])
        with self._cv:  # shutting down: nobody waits forever
            for job in self._waiting:
                job._put(Failure(shutting_down()))
            self._waiting.clear()
        for slot in self.slots:
            if slot.job is not None:
                self._release(slot, Failure(shutting_down()))
