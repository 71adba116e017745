"""The server's continuous batching on SmolLM2: concurrent requests decode in one forward call
per step, a long prompt is processed in chunks between the other requests' tokens, a new request
reuses a prefix another slot holds, and a client that leaves frees its slot."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests
from serverutil import ServerThread

from runtime.engine import Engine
from runtime.sampling import SamplingParams
from runtime.server.scheduler import Scheduler

N_CTX = 4096
# four prompts with nothing in common, each one chunk of 16+ rows (the batched product), as alone
PROMPTS = ["The three longest rivers in Europe are the Volga, the Danube and the Ural. The Volga flows",
           "To make pancakes for four people you need flour, milk, eggs, a pinch of salt and some butter. First,",
           "Rain fell on the old tin roof all night long, and in the morning the garden smelled of wet earth and",
           "A spider has eight legs, two body parts and no antennae; most spiders also have eight eyes. They"]


@pytest.fixture(scope="module")
def engine(smollm2_path: Path) -> Engine:
    eng = Engine.load(smollm2_path, n_ctx=N_CTX, n_seq=4, max_batch=64 + 4)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def reference(smollm2_path: Path) -> Engine:
    eng = Engine.load(smollm2_path, n_ctx=N_CTX)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def server(engine: Engine) -> ServerThread:
    with ServerThread(engine, parallel=4, ubatch=64) as srv:
        yield srv


def alone(eng: Engine, messages: list[dict[str, str]], max_tokens: int) -> str:
    eng.reset()
    return "".join(c.text for c in eng.stream_chat(messages, max_tokens=max_tokens, params=SamplingParams(temp=0)))


def stream_chat(url: str, messages: list[dict[str, str]] | str, max_tokens: int,
                arrivals: list[float] | None = None) -> dict[str, object]:
    """A streamed chat completion (or completion, for a prompt string): its text, usage and each
    piece's arrival time."""
    body = {"stream": True, "max_tokens": max_tokens, "temperature": 0, "stream_options": {"include_usage": True}}
    route = "/v1/completions" if isinstance(messages, str) else "/v1/chat/completions"
    body["prompt" if isinstance(messages, str) else "messages"] = messages
    text, usage = [], {}
    with requests.post(url + route, json=body, stream=True, timeout=300) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines(decode_unicode=True):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices", []):
                piece = choice["delta"].get("content") if "delta" in choice else choice.get("text")
                if piece:
                    text.append(piece)
                    if arrivals is not None:
                        arrivals.append(time.monotonic())
    return {"text": "".join(text), "usage": usage}


def concurrently(*calls):  # type: ignore[no-untyped-def]
    out = [None] * len(calls)

    def run(i: int) -> None:
        out[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_four_concurrent_greedy_requests_each_give_their_text_alone(server: ServerThread, reference: Engine) -> None:
    """Decoded in one batch, each request's greedy text is exactly the one it gets on its own: the
    forward pass computes a row the same way whatever else shares the call (lp_decode), and the
    scheduler cuts prompts only into chunks computed as the whole prompt is."""
    want = []
    for p in PROMPTS:
        reference.reset()
        want.append("".join(reference.generate(p, max_tokens=48, temp=0)))
    got = concurrently(*[lambda p=p: stream_chat(server.url, p, 48) for p in PROMPTS])
    assert [g["text"] for g in got] == want
    # they ran together: the server's steps carried several sequences' rows
    assert server.app.state.scheduler.most_sequences_in_a_step >= 2


def test_a_long_prompt_is_processed_in_chunks_between_the_streams_tokens(server: ServerThread) -> None:
    """With --ubatch 64, a ~2,000-token prompt takes ~30 steps; the three streams that were running
    keep getting a token per step during them, instead of waiting for the whole prompt."""
    arrivals: list[list[float]] = [[], [], []]
    long_text = " ".join(f"Item {i}: the quick brown fox jumps over the lazy dog." for i in range(150))
    marks: dict[str, float] = {}

    def background(i: int) -> dict[str, object]:
        count = ", ".join(str(k) for k in range(100 * i, 100 * i + 8)) + ","  # the model goes on counting
        out = stream_chat(server.url, count, 300, arrivals[i])
        assert out["usage"]["completion_tokens"] == 300  # type: ignore[index]
        return out

    def long_request() -> dict[str, object]:
        while min(len(a) for a in arrivals) < 3:  # the three are generating
            time.sleep(0.01)
        marks["sent"] = time.monotonic()
        first: list[float] = []
        out = stream_chat(server.url, [{"role": "user", "content": long_text + "\nSummarise."}], 2, first)
        marks["first"] = first[0] if first else time.monotonic()
        return out

    results = concurrently(lambda: background(0), lambda: background(1), lambda: background(2), long_request)
    prompt_tokens = results[3]["usage"]["prompt_tokens"]  # type: ignore[index]
    assert prompt_tokens > 1900
    for i in range(3):
        during = [t for t in arrivals[i] if marks["sent"] < t < marks["first"]]
        # ~32 chunks of 61 rows next to the three decoding rows: a token per step for each stream
        # (a few steps fall outside the window: before the prompt is admitted, after its last chunk)
        assert len(during) >= 20, f"stream {i} got {len(during)} tokens while the long prompt ran"


def test_a_short_prompt_does_not_wait_for_a_long_prompts_next_chunk(server: ServerThread) -> None:
    """A short request arriving while a long prompt is read in chunks runs its prompt in a step of
    its own: its first token waits for the chunk already running, not for one more. The long
    prompt's next chunk follows in the step after."""
    model = server.app.state.scheduler.model
    calls: list[dict[int, int]] = []  # per forward call: prompt rows per sequence
    real = model.decode

    def recorded(tokens, positions, seqs, marks, prompt=None, **kw):  # type: ignore[no-untyped-def]
        rows: dict[int, int] = {}
        for q, p in zip(seqs, prompt or [False] * len(seqs)):
            rows[q] = rows.get(q, 0) + int(p)
        calls.append(rows)
        return real(tokens, positions, seqs, marks, prompt=prompt, **kw)

    long_text = " ".join(f"Line {i}: a long document that is read in many chunks." for i in range(120))
    model.decode = recorded
    try:
        long_t = threading.Thread(target=lambda: stream_chat(server.url, long_text, 1))
        long_t.start()
        while sum(1 for c in calls if max(c.values(), default=0) >= 40) < 3:  # chunks are running
            time.sleep(0.005)
        short = stream_chat(server.url, "The capital of France is", 2)
        long_t.join()
    finally:
        del model.decode  # the instance attribute goes: the method again
    assert short["usage"]["prompt_tokens"] <= 16  # type: ignore[index]
    # the call that read the short prompt had no chunk of the long one; the next call had
    long_seq = next(q for q, n in calls[0].items() if n >= 40)
    at = next(i for i, c in enumerate(calls) if any(n and q != long_seq for q, n in c.items()))
    assert calls[at].get(long_seq, 0) == 0, calls[at - 1:at + 2]
    assert calls[at + 1].get(long_seq, 0) >= 40, calls[at - 1:at + 2]


def test_a_long_prompts_chunk_waits_at_most_one_step_in_a_row() -> None:
    """Short prompts arriving every step: the long prompt's chunk runs every other step."""
    from types import SimpleNamespace

    from runtime.server.scheduler import Scheduler, Slot

    sched = Scheduler.__new__(Scheduler)  # _batch only: no model, no worker
    # every row costs the same (see the next tests for the model's own cost)
    sched.model = SimpleNamespace(max_batch=68, prompt_cost=lambda start, rows: float(rows))
    sched.ubatch, sched.speculation = 64, None
    slots = [Slot(i, SimpleNamespace(tokens=[])) for i in range(3)]  # type: ignore[arg-type]
    slots[0].next_token = 7              # a stream decoding
    slots[1].pending = list(range(2000))  # a long prompt
    ran = []
    for _ in range(6):
        slots[2].pending = [1] * 10      # a new short prompt each step
        rows = {slot.index: len(ids) for slot, ids, _ in sched._batch(slots)}
        assert rows[0] == 1 and rows[2] == 10
        ran.append(rows.get(1, 0))
        del slots[1].pending[:ran[-1]]
    assert ran == [0, 53, 0, 53, 0, 53]  # 64 rows less the decoding row and the short prompt
    slots[2].pending = []
    assert {slot.index: len(ids) for slot, ids, _ in sched._batch(slots)} == {0: 1, 1: 63}


def _scheduler(model: object, ubatch: int) -> Scheduler:
    sched = Scheduler.__new__(Scheduler)  # _batch only: no worker
    sched.model, sched.ubatch, sched.speculation = model, ubatch, None
    return sched


def test_a_long_prompts_chunks_cost_what_ubatch_rows_cost_at_its_start(smollm2_path: Path) -> None:
    """While a stream decodes, --ubatch bounds what a chunk costs, not only its rows: a chunk's rows
    attend to every earlier position, so a ~2,000-token prompt is cut into chunks that each cost at
    most what 63 rows (64 less the stream's) cost at position 0, in SmolLM2's own
    Model.prompt_cost: the further in, the shorter, and never under LP_BATCHED_MIN rows. With no
    stream waiting, the chunks are --ubatch rows."""
    from types import SimpleNamespace

    from runtime.gguf import GGUFFile
    from runtime.kernels import lib
    from runtime.model import Model
    from runtime.server.scheduler import Slot

    model = Model(GGUFFile(smollm2_path), n_ctx=2048, max_batch=68)
    sched = _scheduler(model, 64)
    slots = [Slot(i, SimpleNamespace(tokens=[])) for i in range(2)]  # type: ignore[arg-type]
    slots[0].next_token = 7
    slots[1].pending = list(range(2000))
    chunks = []  # (start, rows)
    while slots[1].pending:
        rows = {slot.index: len(ids) for slot, ids, _ in sched._batch(slots)}
        assert rows[0] == 1
        chunks.append((len(slots[1].tokens), rows[1]))
        slots[1].tokens.extend(slots[1].pending[:rows[1]])
        del slots[1].pending[:rows[1]]
    budget = model.prompt_cost(0, 63)
    assert chunks[0] == (0, 63)
    for start, k in chunks[:-1]:  # (the last is the rest)
        assert int(lib.LP_BATCHED_MIN) <= k <= 63
        assert model.prompt_cost(start, k) <= budget  # within the first chunk's cost
        assert model.prompt_cost(start, k + 1) > budget or k == 63  # and as long as that allows
    sizes = [k for _, k in chunks]
    assert all(a >= b for a, b in zip(sizes, sizes[1:-1]))  # shorter further in (the rest aside)
    assert sizes[-2] < 40  # SmolLM2's attention at ~1,900 positions: the row's cost ~2.7 times
    # with no stream decoding, nobody waits on the chunks: whole ones, as many rows as --ubatch
    slots[0].next_token = None
    slots[1].tokens.clear()
    slots[1].pending = list(range(2000))
    assert [len(ids) for _, ids, _ in sched._batch(slots)] == [64]
    slots[1].tokens.extend([0] * 1900)
    assert [len(ids) for _, ids, _ in sched._batch(slots)] == [64]
    # a chunk deep into a very long prompt still moves it on by LP_BATCHED_MIN rows a step
    slots[0].next_token = 7
    slots[1].tokens.clear()
    slots[1].tokens.extend([0] * 40000)
    slots[1].pending = list(range(100))
    assert {s.index: len(ids) for s, ids, _ in sched._batch(slots)}[1] == int(lib.LP_BATCHED_MIN)


def test_a_second_prompt_gets_no_chunk_under_the_least_rows() -> None:
    """The step's rows left after one prompt's chunk are fewer than LP_BATCHED_MIN: the next prompt
    waits for a step with room, rather than run a chunk the batched product would not compute as
    it computes the prompt alone."""
    from types import SimpleNamespace

    from runtime.kernels import lib
    from runtime.server.scheduler import Slot

    least = int(lib.LP_BATCHED_MIN)
    sched = _scheduler(SimpleNamespace(max_batch=68, prompt_cost=lambda start, rows: float(rows)), 64)
    slots = [Slot(i, SimpleNamespace(tokens=[])) for i in range(2)]  # type: ignore[arg-type]
    slots[0].pending = list(range(64 + least - 10))  # leaves a whole chunk: takes 64 - 10
    slots[1].pending = list(range(100))
    rows = {slot.index: len(ids) for slot, ids, _ in sched._batch(slots)}
    assert rows == {0: 64 - 10}


def test_a_new_request_copies_the_prefix_another_slot_holds(server: ServerThread, reference: Engine) -> None:
    """A second conversation with the same long system prompt, arriving while the first one still
    streams in its slot, starts from a copy of that slot's cached prefix and answers as it does alone
    after the first conversation's prompt (its cached prefix computed the same way)."""
    system = {"role": "system", "content": "You are a helpful assistant. " * 40}
    first = [system, {"role": "user", "content": "Count from 1 to 100."}]
    second = [system, {"role": "user", "content": "What is 2 + 2?"}]
    arrivals: list[float] = []
    results: dict[str, dict[str, object]] = {}

    def later() -> None:
        while len(arrivals) < 3:
            time.sleep(0.01)
        results["second"] = stream_chat(server.url, second, 24)

    t = threading.Thread(target=later)
    t.start()
    results["first"] = stream_chat(server.url, first, 120, arrivals)
    t.join()
    usage = results["second"]["usage"]
    n_system = len(reference.chat_prompt([system], add_generation_prompt=False))
    assert usage["prompt_tokens_details"]["cached_tokens"] >= n_system - 4  # type: ignore[index]
    # alone, the same way: the first conversation's prompt cached, the second's rest computed after it
    reference.reset()
    reference.prefill(reference.chat_prompt(first))
    want = "".join(c.text for c in reference.stream_chat(second, max_tokens=24, params=SamplingParams(temp=0)))
    assert results["second"]["text"] == want


def test_a_client_that_leaves_frees_its_slot(server: ServerThread) -> None:
    scheduler = server.app.state.scheduler
    body = {"messages": [{"role": "user", "content": "Tell me a very long story."}], "stream": True,
            "max_tokens": 1000, "temperature": 0}
    with requests.post(server.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i >= 6:
                # while the client still reads (leaving the loop closes requests' connection,
                # and the server may see that before a check after it)
                assert scheduler.status()["slots_processing"] == 1
                break
    deadline = time.monotonic() + 10
    while scheduler.status()["slots_processing"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert scheduler.status()["slots_processing"] == 0


def test_n_choices_share_the_prompt_and_draw_with_their_own_seeds(server: ServerThread, reference: Engine) -> None:
    """OpenAI's `n`: the prompt is read once (the other choices start from a copy of its cache) and
    choice i draws with seed + i, so it is the reply the prompt gets alone with that seed (a prompt
    nothing else shares, so the server reads all of it, as the lone run does)."""
    prompt = "Seven unusual facts about the deep sea, written for curious children who love octopuses:"
    sampling = {"temperature": 1.0, "top_k": 40, "top_p": 0.95, "min_p": 0.05}

    def lone(seed: int, max_tokens: int) -> tuple[str, int]:
        reference.reset()
        chunks = list(reference.stream_generate(prompt, max_tokens=max_tokens, params=SamplingParams(
            temp=1.0, top_k=40, top_p=0.95, min_p=0.05, seed=seed)))
        return "".join(c.text for c in chunks), chunks[-1].stats.generated_tokens

    many = requests.post(server.url + "/v1/completions", timeout=120,
                         json={"prompt": prompt, "max_tokens": 24, "seed": 40, "n": 3, **sampling}).json()
    choices = sorted(many["choices"], key=lambda c: c["index"])
    assert [c["index"] for c in choices] == [0, 1, 2]
    texts = [c["text"] for c in choices]
    want = [lone(40 + i, 24) for i in range(3)]
    assert texts == [text for text, _ in want]
    assert len(set(texts)) > 1
    # the prompt was read once, by the first choice; the usage counts every choice's tokens
    assert many["usage"]["prompt_tokens_details"]["cached_tokens"] < many["usage"]["prompt_tokens"]
    assert many["usage"]["completion_tokens"] == sum(n for _, n in want)
    # streamed (chat, with usage): each choice's pieces under its index; the prompt read once
    pieces: dict[int, list[str]] = {}
    usage: dict[str, object] = {}
    with requests.post(server.url + "/v1/chat/completions", stream=True, timeout=120, json={
            "messages": [{"role": "user", "content": "Name a fruit that grows on trees in cold places."}],
            "max_tokens": 16, "seed": 5, "n": 2, "stream": True, "stream_options": {"include_usage": True},
            **sampling}) as r:
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                for c in event["choices"]:
                    pieces.setdefault(c["index"], []).append(c["delta"].get("content") or "")
                if event.get("usage") and not event["choices"]:
                    usage = event["usage"]
    assert sorted(pieces) == [0, 1] and all("".join(p) for p in pieces.values())
    assert usage["prompt_tokens_details"]["cached_tokens"] < usage["prompt_tokens"]  # type: ignore[index]
    # streamed completions, with usage: a last event with no choices counts both choices' tokens,
    # and only it has a usage (OpenAI's stream_options: a client that adds up every usage it sees
    # counted the tokens twice); each choice's finish event has its llama.cpp timings
    own: dict[int, int] = {}
    last: dict = {}
    with requests.post(server.url + "/v1/completions", stream=True, timeout=120, json={
            "prompt": "Once upon a time", "max_tokens": 6, "seed": 5, "n": 2, "stream": True,
            "stream_options": {"include_usage": True}, **sampling}) as r:
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("data: {"):
                last = json.loads(line[6:])
                assert not last["choices"] or "usage" not in last
                for c in last["choices"]:
                    if c["finish_reason"]:
                        own[c["index"]] = last["timings"]["predicted_n"]
    assert sorted(own) == [0, 1] and last["choices"] == [] and last["object"] == "text_completion"
    assert last["usage"]["completion_tokens"] == own[0] + own[1] == 12


def test_n_beyond_the_slots_is_refused(server: ServerThread) -> None:
    r = requests.post(server.url + "/v1/chat/completions", timeout=60,
                      json={"messages": [{"role": "user", "content": "hi"}], "n": 5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    assert "between 1 and 4" in r.json()["error"]["message"]


def test_an_idle_server_warms_every_slots_cache(smollm2_path: Path) -> None:
    """Between requests the worker makes the whole cache resident, a layer of a slot at a time
    (a slot's first request then faults nothing in), and serves a request arriving meanwhile."""
    from runtime.server.scheduler import _can_warm

    eng = Engine.load(smollm2_path, n_ctx=N_CTX, n_seq=4, max_batch=64 + 4)
    if not _can_warm(eng.model):
        pytest.fail("this machine cannot hold the test's cache twice")
    warmed: list[tuple[int, int]] = []
    warm = eng.model.warm
    eng.model.warm = lambda seq, layer: (warmed.append((seq, layer)), warm(seq, layer))[1]  # type: ignore[method-assign]
    try:
        with ServerThread(eng, parallel=4, ubatch=64) as srv:
            scheduler = srv.app.state.scheduler
            out = stream_chat(srv.url, "The quick brown fox", 4)
            assert out["usage"]["completion_tokens"] == 4
            deadline = time.monotonic() + 60
            while scheduler._cold and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not scheduler._cold
            assert sorted(warmed) == [(q, layer) for q in range(4) for layer in range(eng.model.config.n_layer)]
            assert stream_chat(srv.url, "The quick brown fox", 4)["text"] == out["text"]
    finally:
        eng.close()


def test_the_outbox_delivers_a_steps_items_in_order_in_one_wake_up() -> None:
    """What the worker puts during a step reaches each job's queue, in order, when the step ends;
    a job whose event loop is gone is cancelled instead (the worker then drops it)."""
    import asyncio

    from runtime.server.jobs import DONE, Job, Outbox

    async def scenario() -> tuple[list[list[object]], int]:
        loop = asyncio.get_running_loop()
        outbox = Outbox()
        jobs = [Job(lambda engine: iter(())) for _ in range(2)]
        for job in jobs:
            job.outbox = outbox
        wakeups = 0
        real = loop.call_soon_threadsafe

        def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal wakeups
            wakeups += 1
            return real(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]

        def worker() -> None:
            for i in range(3):
                for j, job in enumerate(jobs):
                    job._put(f"{j}:{i}")
            assert all(job._queue.empty() for job in jobs)  # nothing before the step ends
            for job in jobs:
                job._put(DONE)
            outbox.flush()

        thread = threading.Thread(target=worker)
        thread.start()
        got = [[item async for item in job] for job in jobs]
        thread.join()
        return got, wakeups

    got, wakeups = asyncio.run(scenario())
    assert got == [["0:0", "0:1", "0:2"], ["1:0", "1:1", "1:2"]]
    assert wakeups == 1

    async def make_job() -> Job:
        return Job(lambda engine: iter(()))

    loop = asyncio.new_event_loop()
    gone = loop.run_until_complete(make_job())
    loop.close()
    outbox = Outbox()
    gone.outbox = outbox
    gone._put("late")
    outbox.flush()
    assert gone.cancelled
