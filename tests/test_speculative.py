"""Speculative decoding (runtime/speculative.py): n-gram drafts verified in one forward call.

The oracles: decoding token by token (the same engine with speculation off, and the forward pass
run one row at a time), and for sampling the exact distribution of a small Markov chain."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests
from serverutil import ServerThread

from runtime.decoding import Decoding
from runtime.engine import Engine
from runtime.sampling import SamplingParams, make_sampler
from runtime.speculative import CostModel, DraftPolicy, NgramIndex, SpecParams, take_rows

DOC = ("The old lighthouse stood at the edge of the cliff for more than a hundred years. Every night its keeper "
       "climbed the narrow stairs, trimmed the wick and watched the ships pass safely through the dark water.")
EDIT = [{"role": "user", "content": "Repeat the following text exactly, but change the word 'keeper' to "
                                    "'guardian':\n\n" + DOC}]
FIXED = SpecParams(adaptive=False)  # drafts whenever a match is found (not on timings: deterministic)
FREE = [{"role": "user", "content": "Write a short poem about autumn leaves and a quiet river."}]


@pytest.fixture(scope="module")
def engine(smollm2_path: Path) -> Engine:
    eng = Engine.load(smollm2_path, n_ctx=1024, n_threads=2)
    yield eng
    eng.close()


def run(eng: Engine, messages: list[dict[str, str]], spec: SpecParams | None, max_tokens: int,
        stop: list[str] | None = None, temp: float = 0.0, seed: int | None = None):
    """The reply's tokens, text and last chunk, with speculation `spec` (None: off)."""
    eng.speculation = spec
    eng.reset()
    ids = eng.chat_prompt(messages)
    chunks = list(eng.stream_generate(ids, max_tokens=max_tokens, stop=stop,
                                      params=SamplingParams(temp=temp, seed=seed)))
    text = "".join(c.text for c in chunks)
    return ids, text, chunks[-1]


# -- drafting -------------------------------------------------------------------------------

def test_the_draft_follows_the_latest_earlier_occurrence_of_the_longest_suffix() -> None:
    index = NgramIndex(ngram_min=2, ngram_max=3)
    #          0  1  2  3  4  5  6  7  8  9
    tokens = [5, 6, 7, 8, 9, 1, 6, 7, 2, 3]
    assert index.draft(tokens + [6, 7], 3) == [2, 3, 6]  # (6, 7) last seen at 6..7, followed by 2, 3, 6
    assert index.draft(tokens + [5, 6, 7], 2) == [8, 9]  # the 3-gram (5, 6, 7) wins over the later (6, 7)
    assert index.matched == 3
    assert index.draft(tokens + [4, 4], 3) == []         # no suffix of two tokens occurred
    assert index.draft([1, 2, 1, 2], 4) == [1, 2]        # a different list is indexed afresh; up to its end


def test_drafting_stops_when_rejected_resumes_later_and_grows_when_rows_are_cheap() -> None:
    cost = CostModel()
    cost.record(1, 0.010)
    cost.record(5, 0.018)  # 2 ms per further row: a fifth of a lone row
    assert abs(cost.cost(3) - 1.4) < 1e-9 and abs(cost.cost(7) - (1.8 + 2 * cost.prior)) < 1e-9
    policy = DraftPolicy(SpecParams(draft_max=15), cost)
    for _ in range(10):
        policy.record(3, 8, 8)  # every draft of a 3-gram match kept
    long = policy.size(15, 3)
    assert 4 <= long <= 15 and policy.size(2, 3) == 2  # bounded by the room
    for _ in range(30):
        policy.record(3, long, 0)  # every draft rejected
    assert policy.size(15, 3) == 0
    for _ in range(60):
        policy.skipped(3)  # matches found but not tried: the evidence fades
    assert policy.size(15, 3) >= 1
    # a 2-token match is a weaker guess than a 4-token one; cheap rows make drafts longer
    assert DraftPolicy(SpecParams(draft_max=15), cost).size(15, 2) < DraftPolicy(SpecParams(draft_max=15), cost).size(15, 4)
    cheap = CostModel()
    cheap.record(1, 0.010)
    cheap.record(5, 0.0104)  # multi-row kernels: a further row costs 1% of a lone one
    assert DraftPolicy(SpecParams(draft_max=15), cheap).size(15, 2) > DraftPolicy(SpecParams(draft_max=15), cost).size(15, 2)



def test_drafts_in_a_step_of_several_requests_pay_for_every_request_they_slow() -> None:
    """A step already holding other requests' rows makes about one token per row; a draft row
    slows all of them, so it must beat that rate, not a lone request's. With the multi-row
    kernels' costs (rows nearly free up to 4, then each costs half a lone row), a guess that
    pays alone is not worth a row next to three other requests."""
    cost = CostModel()
    cost.record(1, 0.010)
    cost.record(4, 0.014)
    cost.record(8, 0.034)
    assert abs(cost.added(4, 4) - 0.034 / 0.014) < 1e-9
    policy = DraftPolicy(SpecParams(draft_max=8), cost)
    for _ in range(10):
        policy.record(3, 4, 2)  # half of a 3-gram match's drafts kept
    alone, beside_three = policy.size(8, 3, base=1), policy.size(8, 3, base=4)
    assert alone >= 2 and beside_three == 0
    for _ in range(10):
        policy.record(3, 8, 8)  # a document repeated: every draft kept
    # alone, long drafts; beside three, where a further row costs half a lone one, none: even
    # a kept row is one token for half a lone row's time, against the step's 4 per 1.4
    assert policy.size(8, 3, base=1) >= 3 and policy.size(8, 3, base=4) == 0
    cheap = CostModel()  # rows that stay cheap past 4: then they pay beside three requests too
    for rows, seconds in ((1, 0.010), (4, 0.011), (8, 0.012), (12, 0.013)):
        cheap.record(rows, seconds)
    kept = DraftPolicy(SpecParams(draft_max=8), cheap)
    for _ in range(10):
        kept.record(3, 8, 8)
    assert kept.size(8, 3, base=4) >= 4


def test_a_busy_server_infers_a_lone_rows_cost_from_the_calls_it_timed() -> None:
    """A server that always runs several requests never times a call of one row; the costs
    relative to each other still come from the calls it did time."""
    cost = CostModel(row_cost=0.1)
    cost.record(4, 0.013)
    cost.record(6, 0.020)
    one = 0.013 / 1.3  # 4 rows are 1 + 3 * row_cost lone rows
    assert abs(cost.cost(4) - 1.3) < 1e-9 and abs(cost.cost(5) - 0.0165 / one) < 1e-9
    assert abs(cost.cost(2) - 1.1) < 1e-9 and abs(cost.cost(8) - (0.020 / one + 0.2)) < 1e-9
    assert abs(cost.added(4, 2) - 0.020 / 0.013) < 1e-9

# -- the forward pass --------------------------------------------------------------------------

def test_draft_rows_give_the_logits_of_decoding_one_token_at_a_time(engine: Engine) -> None:
    """Past 512 positions a lone generated row's attention is split into segments (SmolLM2's 3 kv
    heads, 2 threads); each draft row must get exactly those bits, not a prompt row's."""
    m = engine.model
    prompt = [int(t) for t in np.random.default_rng(1).integers(100, 20000, 530)]
    toks = [11, 2000, 345, 9876, 42]
    m.truncate(0, 0)
    m.forward(prompt, 0, prompt=True)
    one = np.stack([m.forward([t], len(prompt) + i, prompt=False) for i, t in enumerate(toks)])
    m.truncate(0, len(prompt))
    n = len(toks)
    rows = m.decode(toks, range(len(prompt), len(prompt) + n), [0] * n, [True] * n, prompt=[False] * n)
    assert m.seq_len(0) == len(prompt) + n
    assert np.array_equal(rows, one)


def test_rejected_drafts_leave_the_cache_as_if_never_fed(engine: Engine) -> None:
    m = engine.model
    prompt = engine.tokenize("Once upon a time, in a land far away, there lived")
    base = len(prompt)
    m.truncate(0, 0)
    m.forward(prompt, 0, prompt=True)
    # a token and three drafts; the token and the first draft are kept
    m.decode([300, 301, 302, 303], range(base, base + 4), [0] * 4, [True] * 4, prompt=[False] * 4)
    m.truncate(0, base + 2)
    assert m.seq_len(0) == base + 2
    after = m.forward([777], base + 2, prompt=False)
    # never fed: the same two tokens one at a time
    m.truncate(0, base)
    m.forward([300], base, prompt=False)
    m.forward([301], base + 1, prompt=False)
    assert np.array_equal(after, m.forward([777], base + 2, prompt=False))


# -- greedy output -------------------------------------------------------------------------------

@pytest.mark.parametrize("messages,accepted", [(EDIT, True), (FREE, False)])
def test_greedy_output_is_the_same_with_speculation(engine: Engine, messages, accepted: bool) -> None:
    _, want, last_off = run(engine, messages, None, 64)
    _, got, last_on = run(engine, messages, FIXED, 64)
    assert got == want
    assert last_on.finish_reason == last_off.finish_reason
    assert last_on.stats.generated_tokens == last_off.stats.generated_tokens
    assert last_off.stats.draft_tokens == 0
    if accepted:  # the edit repeats its prompt: most drafts are kept
        assert last_on.stats.draft_accepted >= 20
        assert last_on.stats.draft_accepted >= 0.7 * last_on.stats.draft_tokens


def test_a_seeded_sampled_reply_is_the_same_with_speculation(engine: Engine) -> None:
    """The sampler draws once per token with or without drafts: the same seed, the same text."""
    _, want, _ = run(engine, EDIT, None, 48, temp=0.7, seed=1234)
    _, got, last = run(engine, EDIT, FIXED, 48, temp=0.7, seed=1234)
    assert got == want
    assert last.stats.draft_tokens > 0


@pytest.mark.parametrize("stop,max_tokens", [(["narrow stairs"], 200), ([], 9)])
def test_stop_strings_and_max_tokens_inside_a_draft(engine: Engine, stop: list[str], max_tokens: int) -> None:
    _, want, off = run(engine, EDIT, None, max_tokens, stop=stop)
    ids, got, on = run(engine, EDIT, SpecParams(draft_max=15, adaptive=False), max_tokens, stop=stop)
    assert got == want
    assert (on.finish_reason, on.stop_string, on.stats.generated_tokens) == \
           (off.finish_reason, off.stop_string, off.stats.generated_tokens)
    assert on.stats.draft_accepted > 0
    # the cache holds the prompt and every generated token but the last (chosen, never run)
    assert engine.model.seq_len(0) == len(engine.tokens) == len(ids) + on.stats.generated_tokens - 1


# -- the accept/reject rule ---------------------------------------------------------------------

# a Markov chain on 3 tokens: the logits of the next token depend on the last one
CHAIN = np.log(np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.35, 0.4, 0.25]], dtype=np.float32))
CHI2_999_DF26 = 54.05  # the 0.999 quantile of chi-square with 26 degrees of freedom


def sample_chain(seed: int, drafts: list[int] | None, trust_drafts: bool = False) -> tuple[int, ...]:
    """Three tokens after token 0, sampled at temperature 1 with the drafts `drafts` verified each
    step (None: token by token). trust_drafts: keep every draft unchecked (a wrong rule)."""
    sampler = make_sampler(temp=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
    state = Decoding([0], sampler, max_tokens=3)
    tok = state.choose(CHAIN[0])
    state.accept(tok)
    while not state.done:
        d = drafts or []
        if trust_drafts:
            for t in d[:3 - len(state.generated)]:
                state.accept(t)
            tok = state.generated[-1]
            if state.done:
                break
            d = []
        rows = np.stack([CHAIN[t] for t in [tok] + d])  # row i: after [tok, d1 .. di]
        _, kept, tok = take_rows(state, d, rows, len(state.history) - 1)
        assert 1 <= kept <= len(d) + 1
        if tok is None:
            break
    return tuple(state.generated)


def chi_square(samples: list[tuple[int, ...]]) -> float:
    p = np.exp(CHAIN.astype(np.float64))
    p /= p.sum(axis=1, keepdims=True)
    counts: dict[tuple[int, ...], int] = {}
    for s in samples:
        counts[s] = counts.get(s, 0) + 1
    stat = 0.0
    for a in range(3):
        for b in range(3):
            for c in range(3):
                expected = len(samples) * p[0, a] * p[a, b] * p[b, c]
                stat += (counts.get((a, b, c), 0) - expected) ** 2 / expected
    return stat


def test_verified_drafts_keep_the_sampling_distribution() -> None:
    seeds = range(3000)
    plain = [sample_chain(s, None) for s in seeds]
    for drafts in ([1, 1], [2, 0, 1]):  # drafts the chain often rejects, and longer ones
        spec = [sample_chain(s, drafts) for s in seeds]
        assert spec == plain  # one draw per token either way: the same tokens for the same seed
        assert chi_square(spec) < CHI2_999_DF26
    # the test can fail: keeping drafts unchecked is far from the chain's distribution
    assert chi_square([sample_chain(s, [1, 1], trust_drafts=True) for s in range(500)]) > 10 * CHI2_999_DF26


def test_take_rows_stops_at_max_tokens_inside_the_draft() -> None:
    state = Decoding([0], make_sampler(temp=0.0), max_tokens=2)
    greedy = np.eye(3, dtype=np.float32)[[1, 2, 0]]  # after t comes (t + 1) % 3
    chunks, kept, tok = take_rows(state, [1, 2, 0, 1], greedy[[0, 1, 2, 0, 1]], 1)
    assert (len(chunks), kept, tok) == (2, 2, None)
    assert state.generated == [1, 2] and state.stopper.finish_reason == "length"


# -- the server ------------------------------------------------------------------------------------

def chat(url: str, messages: list[dict[str, str]], max_tokens: int) -> dict:
    r = requests.post(url + "/v1/chat/completions", timeout=300,
                      json={"messages": messages, "max_tokens": max_tokens, "temperature": 0})
    assert r.status_code == 200, r.text
    return json.loads(r.text)


def test_the_server_gives_the_same_greedy_text_with_drafts_in_its_steps(smollm2_path: Path, engine: Engine) -> None:
    want = [run(engine, m, None, 48)[1] for m in (EDIT, FREE)]
    served = Engine.load(smollm2_path, n_ctx=1024, n_threads=2, n_seq=2, max_batch=48)
    served.speculation = FIXED
    try:
        with ServerThread(served, parallel=2, ubatch=32) as srv:
            import threading
            out: list[dict] = [{}, {}]
            threads = [threading.Thread(target=lambda i=i, m=m: out.__setitem__(i, chat(srv.url, m, 48)))
                       for i, m in enumerate((EDIT, FREE))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert [o["choices"][0]["message"]["content"] for o in out] == want
            details = out[0]["usage"]["completion_tokens_details"]
            assert details["accepted_prediction_tokens"] >= 20
            assert srv.app.state.scheduler.most_sequences_in_a_step >= 2
    finally:
        served.close()


def test_greedy_output_past_context_shifts_is_the_same_with_speculation(smollm2_path: Path) -> None:
    """With --context-shift the drafts of a step stop where one token alone would leave the cache
    before it shifts: the shifts drop the same positions, so the text is the one decoding token
    by token gives (a step that ran past that point shifted later and dropped other positions:
    with these numbers the texts parted)."""
    eng = Engine.load(smollm2_path, n_ctx=128, n_threads=2)
    try:
        eng.context_shift, eng.n_keep = True, 0
        ids = eng.tokenize(DOC + " " + DOC + " ", add_special=True)  # a text that goes on repeating
        out = []
        for spec in (None, SpecParams(draft_max=15, adaptive=False)):
            eng.speculation = spec
            eng.reset()
            chunks = list(eng.stream_generate(ids, max_tokens=200, params=SamplingParams(temp=0.0)))
            out.append(("".join(c.text for c in chunks), chunks[-1].stats))
        (want, off), (got, on) = out
        assert got == want
        assert on.generated_tokens == off.generated_tokens == 200  # past the full context, shifted
        assert on.draft_accepted >= 50
    finally:
        eng.close()
