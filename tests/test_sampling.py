"""Tests for runtime.sampling: llama.cpp's sampler chain, penalties and stop handling.

`LLAMA_CPP_REFERENCE` holds the tokens llama.cpp's own sampler chain (llama-cpp-python 0.3.36:
penalties, top_k, top_p, min_p, temp_ext, dist(seed)) picked on the same logits. Regenerate it
with `python tests/test_sampling.py` in a Python that has llama_cpp installed (dev only).
"""

from __future__ import annotations

import ctypes
import time

import numpy as np
import pytest

from runtime.sampling import (
    COMPLETE,
    CONTEXT_FULL,
    EOG,
    MAX_TOKENS,
    STOP_STRING,
    SamplingParams,
    StdMT19937,
    StopChecker,
    apply_penalties,
    finite_logits,
    make_logits_processors,
    make_sampler,
    resolve_seed,
)

# n_vocab, temp, top_k, top_p, min_p, seed, logit scale, penalties (last_n, repeat, freq, present)
REFERENCE_CONFIGS = [
    (49152, 0.8, 40, 0.95, 0.05, 1, 4.0, None),
    (32000, 0.8, 40, 0.95, 0.05, 7, 2.0, None),
    (3000, 1.0, 0, 1.0, 0.0, 42, 2.5, None),
    (3000, 1.5, 0, 0.9, 0.0, 3, 2.5, None),
    (3000, 0.7, 0, 1.0, 0.1, 5, 2.5, None),
    (200, 2.0, 100, 0.5, 0.02, 11, 1.0, None),
    (200, 0.0, 40, 0.95, 0.05, 13, 1.0, None),
    (64, 1.0, 0, 1.0, 0.0, 17, 1.0, (8, 1.3, 0.2, 0.5)),
]
REFERENCE_STEPS = 24
LLAMA_CPP_REFERENCE: list[list[int]] = [
    [19998, 7894, 38634, 43983, 45871, 47448, 28795, 44609, 39908, 36810, 16408, 28865, 22671, 10906, 32992, 18259, 48722, 21938, 23907, 33513, 39891, 11580, 25581, 39627],
    [15950, 4244, 6981, 14572, 15620, 18131, 1827, 5506, 2382, 31580, 1743, 28194, 18588, 9803, 20109, 8761, 3102, 16310, 12712, 27219, 6987, 2698, 8115, 13458],
    [2405, 551, 2121, 2269, 1396, 309, 1008, 493, 543, 1575, 171, 1980, 2879, 7, 2999, 1846, 2221, 30, 81, 1381, 219, 155, 2906, 945],
    [1455, 197, 2090, 2072, 1750, 836, 1728, 327, 2772, 1296, 1055, 2661, 1201, 751, 1958, 2711, 217, 401, 415, 2660, 1669, 2587, 1516, 2327],
    [819, 1779, 2397, 2864, 580, 793, 2223, 1600, 2977, 2660, 2477, 1572, 2439, 2448, 356, 688, 215, 2761, 2182, 926, 1936, 183, 358, 2124],
    [94, 175, 157, 78, 55, 141, 109, 179, 135, 144, 93, 85, 140, 114, 3, 144, 47, 120, 45, 57, 169, 87, 83, 4],
    [87, 76, 17, 190, 25, 145, 110, 115, 68, 193, 156, 134, 121, 42, 90, 50, 182, 166, 144, 73, 99, 154, 178, 48],
    [9, 50, 58, 53, 25, 11, 17, 40, 53, 1, 43, 43, 0, 12, 36, 15, 12, 24, 25, 0, 35, 39, 3, 17],
]


def reference_logits(case: int) -> np.ndarray:
    """(steps, n_vocab) float32 logits; RandomState's stream is frozen across numpy versions."""
    n_vocab, scale = REFERENCE_CONFIGS[case][0], REFERENCE_CONFIGS[case][6]
    rs = np.random.RandomState(1000 + case)
    return (rs.randn(REFERENCE_STEPS, n_vocab) * scale).astype(np.float32)


def run_ours(case: int) -> list[int]:
    """Our chain over the case's logits; the history feeds the penalties."""
    _, temp, k, p, mp, seed, _, pen = REFERENCE_CONFIGS[case]
    sampler = make_sampler(temp=temp, top_k=k, top_p=p, min_p=mp, seed=seed)
    procs = []
    if pen:
        procs = make_logits_processors(repeat_penalty=pen[1], repeat_last_n=pen[0],
                                       frequency_penalty=pen[2], presence_penalty=pen[3])
    history: list[int] = []
    for logits in reference_logits(case):
        for proc in procs:
            logits = proc(history, logits)
        history.append(sampler(logits))
    return history


def run_llama_cpp(case: int) -> list[int]:
    """llama.cpp's chain over the case's logits (needs llama_cpp; dev only)."""
    import llama_cpp as L

    n, temp, k, p, mp, seed, _, pen = REFERENCE_CONFIGS[case]
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    if pen:
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_penalties(n, pen[0], pen[1], pen[2], pen[3]))
    for smpl in (L.llama_sampler_init_top_k(k), L.llama_sampler_init_top_p(p, 0),
                 L.llama_sampler_init_min_p(mp, 0), L.llama_sampler_init_temp_ext(temp, 0.0, 1.0),
                 L.llama_sampler_init_dist(seed)):
        L.llama_sampler_chain_add(chain, smpl)
    tokens = []
    for logits in reference_logits(case):
        data = (L.llama_token_data * n)()
        for i in range(n):
            data[i].id, data[i].logit, data[i].p = i, float(logits[i]), 0.0
        arr = L.llama_token_data_array(data=data, size=n, selected=-1, sorted=False)
        L.llama_sampler_apply(chain, ctypes.byref(arr))
        token = data[arr.selected].id
        L.llama_sampler_accept(chain, token)
        tokens.append(token)
    L.llama_sampler_free(chain)
    return tokens


# ------------------------------------------------------------------------------ llama.cpp parity

@pytest.mark.parametrize("case", range(len(REFERENCE_CONFIGS)))
def test_matches_llama_cpp_chain(case):
    assert run_ours(case) == LLAMA_CPP_REFERENCE[case]


def test_std_mt19937_stream():
    # std::mt19937(5489) starts 3499211612, 581869302, 3890346734 (C++ standard's default seed);
    # std::uniform_real_distribution<double>(0, 1) over std::mt19937(42), from g++/libstdc++.
    rng = StdMT19937(5489)
    assert list(rng._bits.random_raw(3)) == [3499211612, 581869302, 3890346734]
    rng = StdMT19937(42)
    assert rng.uniform() == 0.796542984287846
    assert rng.uniform() == 0.18343478789336848


def test_defaults_are_llama_cpp():
    p = SamplingParams()
    assert (p.temp, p.top_k, p.top_p, p.min_p) == (0.8, 40, 0.95, 0.05)
    assert (p.repeat_penalty, p.repeat_last_n, p.presence_penalty, p.frequency_penalty) == (1.0, 64, 0.0, 0.0)
    assert make_logits_processors() == []  # penalties are off by default, as in llama.cpp


def test_random_seed_when_unset():
    assert 0 <= resolve_seed(None) < 0xFFFFFFFF
    assert resolve_seed(-1) != 0xFFFFFFFF
    assert resolve_seed(1234) == 1234
    assert make_sampler(seed=99).seed == 99


# --------------------------------------------------------------------------------------- greedy

def test_greedy_is_argmax_first_max():
    logits = np.array([0.1, 3.0, -2.0, 3.0, 1.0], dtype=np.float32)
    for seed in range(5):
        assert make_sampler(temp=0.0, seed=seed)(logits) == 1
        assert make_sampler(temp=-1.0, seed=seed)(logits) == 1


def test_top_k_1_is_greedy():
    rs = np.random.RandomState(0)
    for seed in range(20):
        logits = rs.randn(1000).astype(np.float32)
        sampler = make_sampler(temp=1.5, top_k=1, top_p=1.0, min_p=0.0, seed=seed)
        assert sampler(logits) == int(np.argmax(logits))


def test_sampler_does_not_modify_logits():
    logits = np.random.RandomState(1).randn(500).astype(np.float32)
    copy = logits.copy()
    make_sampler(seed=1)(logits)
    np.testing.assert_array_equal(logits, copy)


# --------------------------------------------------------------------------------------- seeds

def _draws(seed: int, n: int = 64) -> list[int]:
    logits = np.random.RandomState(3).randn(n, 300).astype(np.float32)
    sampler = make_sampler(temp=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
    return [sampler(row) for row in logits]


def test_same_seed_same_tokens():
    assert _draws(123) == _draws(123)


def test_different_seed_different_tokens():
    assert _draws(123) != _draws(124)


# --------------------------------------------------------------------------------- distribution

def test_empirical_distribution_matches_softmax():
    logits = np.array([1.0, 0.2, -0.5, 2.0, 0.0, -1.5], dtype=np.float32)
    temp, draws = 0.7, 30000
    sampler = make_sampler(temp=temp, top_k=0, top_p=1.0, min_p=0.0, seed=2024)
    counts = np.bincount([sampler(logits) for _ in range(draws)], minlength=logits.size)
    z = logits.astype(np.float64) / temp
    expected = np.exp(z - z.max())
    expected = expected / expected.sum() * draws
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 25.7, (chi2, counts, expected)  # df=5: P(chi2 > 25.7) ~ 1e-4


def _support(logits: np.ndarray, top_k: int, top_p: float, min_p: float) -> set[int]:
    """The candidate set, computed independently in float64."""
    ids = np.argsort(-logits.astype(np.float64), kind="stable")
    if top_k > 0:
        ids = ids[:top_k]
    if top_p < 1.0:
        z = logits[ids].astype(np.float64)
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        cum = np.cumsum(probs)
        last = int(np.argmax(cum >= top_p))
        # no boundary case, so float32 (the sampler, like llama.cpp) and float64 agree
        assert abs(cum[last] - top_p) > 1e-5 and (last == 0 or abs(cum[last - 1] - top_p) > 1e-5)
        ids = ids[: last + 1]
    if min_p > 0.0:
        z = logits[ids].astype(np.float64)
        probs = np.exp(z - z.max())
        keep = probs >= min_p * probs.max()
        ids = ids[keep]
    return set(int(i) for i in ids)


@pytest.mark.parametrize("top_k, top_p, min_p", [
    (40, 1.0, 0.0), (0, 0.9, 0.0), (0, 1.0, 0.05), (40, 0.95, 0.05), (5, 0.5, 0.0),
    (0, 0.3, 0.2), (100, 0.99, 0.01),
])
def test_filters_keep_exactly_the_independent_support(top_k, top_p, min_p):
    rs = np.random.RandomState(top_k * 7 + int(top_p * 100))
    for n in (50, 2000, 49152):
        logits = (rs.randn(n) * (3 if n < 10000 else 8)).astype(np.float32)
        sampler = make_sampler(top_k=top_k, top_p=top_p, min_p=min_p, seed=0)
        ids, kept = sampler.candidates(logits)
        assert set(ids.tolist()) == _support(logits, top_k, top_p, min_p)
        np.testing.assert_array_equal(kept, logits[ids])


def test_samples_stay_in_support_and_cover_it():
    logits = (np.random.RandomState(9).randn(400) * 2).astype(np.float32)
    support = _support(logits, 40, 0.9, 0.05)
    sampler = make_sampler(temp=3.0, top_k=40, top_p=0.9, min_p=0.05, seed=5)
    seen = {sampler(logits) for _ in range(4000)}
    assert seen == support


# -------------------------------------------------------------------------------------- penalties

def test_penalties_numeric_example():
    logits = np.array([2.0, -1.0, 0.5, 3.0, 0.0], dtype=np.float32)
    history = [0, 1, 1, 3, 3, 3, 4]
    out = apply_penalties(logits, history, repeat_penalty=2.0, repeat_last_n=64,
                          presence_penalty=0.5, frequency_penalty=0.1)
    # 0: 2/2 - (0.1 + 0.5); 1: -1*2 - (0.2 + 0.5); 2: unseen; 3: 3/2 - (0.3 + 0.5); 4: 0*2 - 0.6
    np.testing.assert_allclose(out, [0.4, -2.7, 0.5, 0.7, -0.6], rtol=1e-6)
    np.testing.assert_array_equal(logits, [2.0, -1.0, 0.5, 3.0, 0.0])  # input untouched


def test_penalties_window():
    logits = np.array([2.0, 2.0, 2.0], dtype=np.float32)
    history = [0, 0, 1, 2]
    np.testing.assert_allclose(apply_penalties(logits, history, 2.0, repeat_last_n=2), [2.0, 1.0, 1.0])
    np.testing.assert_allclose(apply_penalties(logits, history, 2.0, repeat_last_n=-1), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(apply_penalties(logits, history, 2.0, repeat_last_n=0), logits)
    np.testing.assert_array_equal(apply_penalties(logits, [], 2.0), logits)


def test_processors_logit_bias_then_penalty():
    procs = make_logits_processors(repeat_penalty=2.0, logit_bias={1: 5.0, 2: -np.inf})
    logits = np.array([1.0, 1.0, 1.0], dtype=np.float32)
    for proc in procs:
        logits = proc([1], logits)
    np.testing.assert_allclose(logits, [1.0, 3.0, -np.inf])


# ------------------------------------------------------------------------------------ performance

@pytest.mark.parametrize("n_vocab", [32000, 49152])
def test_sampler_speed(n_vocab):
    logits = (np.random.RandomState(0).randn(n_vocab) * 4).astype(np.float32)
    sampler = make_sampler(seed=1)
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        sampler(logits)
        times.append(time.perf_counter() - t0)
    # typically ~0.1-0.2 ms; the bound leaves room for a loaded CI machine
    assert float(np.median(times)) < 2e-3


# ------------------------------------------------------------------------------------------- stop

def _text(piece: str):
    """A decode function for StopChecker.push that gives `piece` whatever the token."""
    return lambda token: piece


def _stream(checker: StopChecker, pieces: list[str]) -> str:
    out = []
    for token, piece in enumerate(pieces):
        out.append(checker.push(token, _text(piece)))
        if checker.done:
            break
    out.append(checker.flush())
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Non-finite logits: never an exception or a numpy warning; NaN never drawn, +inf always

_NONFINITE_CONFIGS = [
    dict(temp=0.0), dict(), dict(top_k=0), dict(top_k=0, top_p=1.0, min_p=0.0), dict(top_k=0, top_p=0.5),
    dict(temp=1e-40), dict(temp=1e30, top_k=0), dict(temp=float("nan")), dict(temp=float("inf")),
]


def _nonfinite_cases(n: int) -> dict[str, np.ndarray]:
    base = np.random.default_rng(3).standard_normal(n).astype(np.float32)
    cases = {"all NaN": np.full(n, np.nan, np.float32), "all -inf": np.full(n, -np.inf, np.float32)}
    for name, where, value in [("some NaN", slice(0, None, 7), np.nan), ("one +inf", [5], np.inf),
                               ("two +inf", [5, 9], np.inf), ("half -inf", slice(0, n // 2), -np.inf),
                               ("huge", slice(0, None, 3), 3e38), ("NaN, inf, -inf", [1, 2, 3], None)]:
        x = base.copy()
        if value is None:
            x[where] = [np.nan, np.inf, -np.inf]
        else:
            x[where] = value
        cases[name] = x
    return cases


@pytest.mark.parametrize("config", _NONFINITE_CONFIGS, ids=str)
def test_nonfinite_logits_never_raise_or_warn(config) -> None:
    import warnings

    n = 1000
    for name, logits in _nonfinite_cases(n).items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a numpy RuntimeWarning would print on the CLI's stderr
            for seed in range(3):
                sampler = make_sampler(seed=seed, **config)
                tok = sampler(logits)
                ids, kept = sampler.candidates(logits)
        assert 0 <= tok < n, name
        assert not np.isnan(kept).any(), name
        if np.isfinite(logits).any() or np.isposinf(logits).any():  # a real candidate exists: it is drawn
            assert not np.isnan(logits[tok]) and logits[tok] != -np.inf, (name, tok, logits[tok])
        if np.isposinf(logits).any():
            assert logits[tok] == np.inf, name
        if name == "huge" and config.get("temp", 0.8) == 1e-40:  # a tiny temperature picks a maximum
            assert logits[tok] == np.float32(3e38)


def test_greedy_takes_the_cleaned_logits_maximum() -> None:
    """Greedy skips the cleaning pass when the plain maximum is finite: the same token either way."""
    cases = _nonfinite_cases(1000)
    cases["+inf after NaN"] = np.array([0.5, np.nan, 2.0, np.inf, 1.0], np.float32)
    cases["-inf first"] = np.array([-np.inf, 0.5, 2.0, 2.0], np.float32)
    for name, logits in cases.items():
        assert make_sampler(temp=0.0)(logits) == int(np.argmax(finite_logits(logits))), name


def test_nonfinite_penalties_and_biases_do_not_warn() -> None:
    import warnings

    logits = np.array([3e38, -3e38, 1.0, np.inf, -np.inf, 0.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = apply_penalties(logits, [0, 1, 2, 3, 4], repeat_penalty=0.5, frequency_penalty=3e38)
        for proc in make_logits_processors(logit_bias={3: -np.inf, 4: np.inf, 0: 1e38}, repeat_penalty=1e-30):
            out = proc([0, 1, 2], out)
        tok = make_sampler(seed=0)(out)
    assert 0 <= tok < logits.size and not np.isnan(out[tok])


def test_stop_string_split_across_pieces():
    checker = StopChecker(stop=["</answer>"])
    assert checker.push(0, _text("The answer is 4<")) == "The answer is 4"  # "<" held back
    assert checker.push(1, _text("/ans")) == ""
    assert checker.push(2, _text("wer> trailing")) == ""
    assert checker.done and checker.finish_reason == "stop" and checker.stop_string == "</answer>"
    assert checker.reason == STOP_STRING and checker.flush("more") == ""  # nothing after a stop string


def test_held_text_released_when_not_a_stop():
    checker = StopChecker(stop=["User:"])
    assert checker.push(0, _text("Hello Us")) == "Hello "
    assert checker.push(1, _text("ually")) == "Usually"
    assert not checker.done and checker.finish_reason is None


def test_earliest_stop_wins():
    checker = StopChecker(stop=["world", "lo w"])
    assert _stream(checker, ["hel", "lo wor", "ld!"]) == "hel"
    assert checker.stop_string == "lo w"


def test_stop_inside_one_piece_and_flush():
    assert _stream(StopChecker(stop=["\n\n"]), ["a\n", "\nb"]) == "a"
    assert _stream(StopChecker(stop=["###"]), ["x#", "#"]) == "x##"  # ended without a stop


def test_max_tokens_and_eog():
    checker = StopChecker(max_tokens=2, is_eog=lambda t: t == 2)
    assert checker.push(5, _text("a")) == "a" and not checker.done
    assert checker.push(6, _text("b")) == "b" and checker.reason == MAX_TOKENS
    assert checker.finish_reason == "length"
    decoded = []
    checker = StopChecker(stop=["xyz"], max_tokens=10, is_eog=lambda t: t == 2)
    assert checker.push(0, _text("abcx")) == "abc"
    assert checker.push(2, decoded.append) == "" and decoded == []  # an EOG token's text is not asked for
    assert checker.reason == EOG and checker.finish_reason == "stop"
    assert checker.flush() == "x"


def test_context_full():
    """The token sampled when the cache holds n_ctx positions cannot run: generation ends there."""
    checker = StopChecker(n_ctx=8)
    assert checker.push(0, _text("a"), n_past=7) == "a" and not checker.done
    assert checker.push(1, _text("b"), n_past=8) == "b"
    assert checker.reason == CONTEXT_FULL and checker.finish_reason == "length"


def test_reasons_are_checked_in_order():
    """One token can end generation for several reasons; the first of EOG, stop string, complete,
    token budget, full context is the one reported (the engine's order before StopChecker did it)."""
    def one(is_eog=False, stop=False, complete=False, budget=False, full=False) -> str:
        checker = StopChecker(stop=["S"] if stop else [], max_tokens=1 if budget else -1,
                              is_eog=lambda t: is_eog, n_ctx=4)
        checker.push(0, _text("xS"), n_past=4 if full else 0, complete=complete)
        return checker.reason

    assert one(is_eog=True, stop=True, complete=True, budget=True, full=True) == EOG
    assert one(stop=True, complete=True, budget=True, full=True) == STOP_STRING
    assert one(complete=True, budget=True, full=True) == COMPLETE
    assert one(budget=True, full=True) == MAX_TOKENS
    assert one(full=True) == CONTEXT_FULL
    assert one() is None


def test_end_and_complete_are_a_stop():
    checker = StopChecker()
    checker.end(COMPLETE)
    assert checker.done and checker.finish_reason == "stop"
    checker = StopChecker(max_tokens=1)
    assert checker.push(0, _text("}"), complete=True) == "}" and checker.finish_reason == "stop"


def test_flush_with_tail():
    checker = StopChecker(stop=["</s>"])
    assert checker.push(0, _text("ok </")) == "ok "
    assert checker.flush("s> more") == "" and checker.stop_string == "</s>" and checker.reason == STOP_STRING
    checker = StopChecker(stop=["</s>"])
    assert checker.push(0, _text("a<")) == "a"
    assert checker.flush("b") == "<b" and not checker.done


def test_flush_after_another_reason_keeps_it():
    """A stop string completed by the tail still cuts the text; the reason that ended generation stays."""
    checker = StopChecker(stop=["</s>"], max_tokens=1)
    assert checker.push(0, _text("ok </")) == "ok " and checker.reason == MAX_TOKENS
    assert checker.flush("s> more") == "" and checker.stop_string == "</s>"
    assert checker.reason == MAX_TOKENS and checker.finish_reason == "length"


def test_held_text_is_released_at_a_limit():
    checker = StopChecker(stop=["STOP"], max_tokens=1)
    assert checker.push(0, _text("go ST")) == "go " and checker.finish_reason == "length"
    assert checker.flush() == "ST"


if __name__ == "__main__":
    print("LLAMA_CPP_REFERENCE: list[list[int]] = [")
    for i in range(len(REFERENCE_CONFIGS)):
        print(f"    {run_llama_cpp(i)},")
    print("]")
