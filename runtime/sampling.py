"""Token sampling with llama.cpp's semantics, composed like mlx-lm's `make_sampler`.

llama.cpp's default chain (common/common.h, `common_params_sampling::samplers`) is

    logit_bias -> penalties -> dry -> top_n_sigma -> top_k -> typ_p -> top_p -> min_p -> xtc
    -> temperature -> dist

with dry, top_n_sigma, typ_p and xtc disabled by default. Here the chain is split the way mlx-lm
splits it: `make_logits_processors` builds the history-dependent steps (logit bias, penalties),
each `processor(history, logits) -> logits`; `make_sampler` builds the rest, `sampler(logits) ->
token id`; `make_sampling(params)` builds both from `SamplingParams`. The generation loop
(runtime/decoding.py) applies the processors in order, then a constraint's mask, then the sampler.

Each step reproduces llama-sampler.cpp: the candidate order (sorted by descending logit once top_k
or top_p has run, vocabulary order otherwise), float32 arithmetic, and the `dist` draw: a
`std::mt19937` seeded with `seed` and one `std::uniform_real_distribution<double>` value per token
(libstdc++: two 32-bit outputs). Note that temperature comes *after* top_p / min_p: those cut on the
untempered distribution. Temperature <= 0 is greedy: the first maximal logit (one draw is still
consumed, as llama.cpp does, so a seeded run stays aligned).

Non-finite logits never make a step fail (`finite_logits`): NaN is never drawn, +inf takes all
the probability, all -inf is uniform, and a temperature that overflows the logits is applied to
their distance from the maximum instead. (The engine refuses non-finite model output before it
gets here; logit biases and penalties can still produce inf.)

`StopChecker` is the one place that decides when a generation ends and why (an end-of-generation
token, a stop string, a token budget, a full context), holding back streamed text that might be
the start of a stop string.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

LLAMA_DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp's "pick a random seed" value (`--seed -1`)
_SORT_PREFIX = 256               # top_p on > 1024 unsorted candidates first sorts this many

LogitsProcessor = Callable[[Sequence[int], np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; the defaults are llama.cpp's (common/common.h)."""

    temp: float = 0.8
    top_k: int = 40              # <= 0: the whole vocabulary
    top_p: float = 0.95          # 1.0: disabled
    min_p: float = 0.05          # 0.0: disabled
    repeat_penalty: float = 1.0  # 1.0: disabled
    repeat_last_n: int = 64      # 0: disabled, -1: the whole history
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: Optional[int] = None   # None / -1 / 0xFFFFFFFF: random
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit; -inf: never)


# ---------------------------------------------------------------------------------------------
# Random numbers: std::mt19937 + std::uniform_real_distribution<double>(0, 1), as in llama.cpp.

def _mt19937_key(seed: int) -> np.ndarray:
    """The state `std::mt19937(seed)` starts from (init_genrand)."""
    key = [seed & 0xFFFFFFFF]
    for i in range(1, 624):
        prev = key[-1]
        key.append((1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF)
    return np.array(key, dtype=np.uint32)


class StdMT19937:
    """`std::mt19937` and libstdc++'s `generate_canonical<double, 53>` on numpy's MT19937."""

    def __init__(self, seed: int) -> None:
        self._bits = np.random.MT19937()
        state = {"key": _mt19937_key(seed), "pos": 624}  # pos 624: twist before the first output
        self._bits.state = {"bit_generator": "MT19937", "state": state}

    def uniform(self) -> float:
        """One double in [0, 1): (x0 + x1 * 2^32) / 2^64 from two 32-bit outputs."""
        x0, x1 = self._bits.random_raw(2)
        value = (float(x0) + float(x1) * 4294967296.0) / 18446744073709551616.0
        return value if value < 1.0 else math.nextafter(1.0, 0.0)


def resolve_seed(seed: Optional[int]) -> int:
    """The 32-bit seed to use: None, -1 and LLAMA_DEFAULT_SEED mean a random one."""
    if seed is None or seed == -1 or seed == LLAMA_DEFAULT_SEED:
        return secrets.randbits(32) % LLAMA_DEFAULT_SEED
    return seed & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Non-finite values

_NEG_INF = np.float32(-np.inf)


def finite_logits(logits: np.ndarray) -> np.ndarray:
    """Logits every step can take: finite values and -inf, at least one finite.

    The array itself when it already is (the usual case: one pass to check); otherwise NaN
    becomes -inf (never drawn), any +inf makes those tokens the only candidates (equally
    likely), and all -inf becomes all 0 (nothing to prefer: uniform).
    """
    finite = np.isfinite(logits)
    if finite.all():
        return logits
    plus = np.isposinf(logits)
    if plus.any():
        return np.where(plus, np.float32(0.0), _NEG_INF)
    if not finite.any():
        return np.zeros_like(logits)
    return np.where(finite, logits, _NEG_INF)


def apply_temperature(logits: np.ndarray, temp: float) -> np.ndarray:
    """logits / temp (llama.cpp's float32 division); where that overflows (a tiny temperature,
    huge logits), (logits - max) / temp: the same distribution, every value <= 0."""
    t = np.float32(temp)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = logits / t
        if np.isposinf(scaled).any() or np.isnan(scaled).any():
            scaled = (logits - logits.max()) / t
    return scaled


# ---------------------------------------------------------------------------------------------
# Chain steps. Candidates are (ids int64 (n,), logits float32 (n,), sorted flag); the logits
# are finite or -inf, at least one finite (finite_logits).

def _order_desc(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """`index` (int64, ascending) reordered by descending `values`, ties by ascending index.

    One sort of uint64 keys (order-preserving float bits above the index) is ~3x faster than a
    stable argsort of the floats.
    """
    bits = (values + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into +0.0
    ascending = np.where(bits & 0x80000000, ~bits, bits | 0x80000000)
    key = ((~ascending).astype(np.uint64) << np.uint64(32)) | index.astype(np.uint64)
    return (np.sort(key) & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _sort_desc(ids: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates by descending logit (ties: lower id first)."""
    order = _order_desc(logits, np.arange(logits.size))
    return ids[order], logits[order]


def _kth_largest_lower_bound(logits: np.ndarray, k: int) -> Optional[np.float32]:
    """A value <= the k-th largest logit, cheaply: the k-th largest of B >= k block maxima.

    The B block maxima are distinct elements, so at least k logits reach the bound. None when
    the vector is too short for the trick to pay.
    """
    blocks = max(k, 512)
    size = logits.size // blocks
    if size < 4:
        return None
    maxima = logits[: blocks * size].reshape(blocks, size).max(axis=1)
    return np.partition(maxima, blocks - k)[blocks - k]


def top_indices(logits: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m largest logits by descending logit (ties: lower index first).

    Avoids sorting (or even partitioning) the whole vocabulary: a cheap lower bound on the m-th
    largest value picks a small superset, and only that is sorted.
    """
    bound = _kth_largest_lower_bound(logits, m) if m < logits.size else None
    cand = np.arange(logits.size) if bound is None else np.flatnonzero(logits >= bound)
    if cand.size > 4 * m + 4096:  # a poor bound (adversarial input): partition first
        cand = np.sort(cand[np.argpartition(-logits[cand], m - 1)[:m]])
    return _order_desc(logits[cand], cand)[:m]


def top_k_step(ids: np.ndarray, logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest logits, sorted descending (llama.cpp sorts even when k >= n)."""
    keep = top_indices(logits, min(k, logits.size))
    return ids[keep], logits[keep]


def _softmax_f32(logits: np.ndarray) -> np.ndarray:
    """llama_sampler_softmax_impl: float32 exp, sequential float32 sum."""
    e = np.exp(logits - logits.max())
    return e / np.cumsum(e)[-1]


def top_p_step(ids: np.ndarray, logits: np.ndarray, is_sorted: bool, p: float,
               min_keep: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smallest prefix (by descending probability) whose float32 cumulative sum reaches p.

    Unsorted candidates are sorted only as far as needed: the top 256 first (as llama.cpp does
    above 1024 candidates), then 8x more at a time.
    """
    probs = _softmax_f32(logits)
    p32 = np.float32(p)
    n = logits.size
    order: Optional[np.ndarray] = None
    if not is_sorted:
        m = min(_SORT_PREFIX, n)
        while True:
            order = top_indices(logits, m)
            if m == n or (np.cumsum(probs[order])[-1] >= p32 and m >= min_keep):
                break
            m = min(8 * m, n)
    sorted_probs = probs if order is None else probs[order]
    cum = np.cumsum(sorted_probs)
    reached = int(np.searchsorted(cum, p32, side="left"))  # first i with cum[i] >= p
    last = min(max(reached + 1, min_keep), cum.size)
    if order is None:
        return ids[:last], logits[:last]
    keep = order[:last]
    return ids[keep], logits[keep]


def min_p_step(ids: np.ndarray, logits: np.ndarray, is_sorted: bool, p: float,
               min_keep: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Keep logits >= max + log(p), i.e. probability >= p * max probability (order preserved)."""
    max_logit = logits[0] if is_sorted else logits.max()
    min_logit = np.float32(max_logit + np.float32(math.log(p)))
    mask = logits >= min_logit
    n_kept = int(np.count_nonzero(mask))
    if n_kept > 0 and n_kept >= min_keep:
        return ids[mask], logits[mask]
    # llama.cpp's fallback: sort, keep the first max(1, n_kept, min_keep)
    ids, logits = (ids, logits) if is_sorted else _sort_desc(ids, logits)
    last = min(max(1, n_kept, min_keep), logits.size)
    return ids[:last], logits[:last]


def dist_step(logits: np.ndarray, rng: StdMT19937) -> int:
    """Index drawn from softmax(logits) by llama_sampler_dist_apply's cumulative-sum walk."""
    rnd = rng.uniform()
    if logits.size == 1:
        return 0
    probs = np.exp(logits - logits.max())           # float32, like expf
    cum = np.cumsum(probs, dtype=np.float64)        # double running sum of float terms
    index = int(np.searchsorted(cum, cum[-1] * rnd, side="left"))
    return min(index, logits.size - 1)


# ---------------------------------------------------------------------------------------------
# Composition

class Sampler:
    """top_k -> top_p -> min_p -> temperature -> dist over one logits vector; see module doc."""

    def __init__(self, temp: float = 0.8, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 seed: Optional[int] = None, min_keep: int = 0) -> None:
        self.temp, self.top_k, self.top_p, self.min_p = temp, top_k, top_p, min_p
        self.min_keep = min_keep
        self.seed = resolve_seed(seed)  # the seed actually used (log it to reproduce a run)
        self._rng = StdMT19937(self.seed)
        self._ids: Optional[np.ndarray] = None  # cached arange(n_vocab)

    def __call__(self, logits: np.ndarray) -> int:
        """Token id for `logits` (float32, (n_vocab,)); does not modify `logits`."""
        logits = np.asarray(logits, dtype=np.float32)
        if not self.temp > 0.0:  # (a NaN temperature too)
            self._rng.uniform()  # llama.cpp's dist still draws once
            # argmax finds the first NaN or +inf if there is one: a finite maximum means every
            # value is finite or -inf, and finite_logits (a second pass) would change nothing
            best = int(np.argmax(logits))
            return best if np.isfinite(logits[best]) else int(np.argmax(finite_logits(logits)))
        logits = finite_logits(logits)
        ids, logits, _ = self._filter(logits)
        return int(ids[dist_step(apply_temperature(logits, self.temp), self._rng)])

    def candidates(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, logits) left after top_k, top_p and min_p, before temperature."""
        ids, kept, _ = self._filter(finite_logits(np.asarray(logits, dtype=np.float32)))
        return ids, kept

    def _filter(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """top_k, top_p and min_p, in llama.cpp's order."""
        if self._ids is None or self._ids.size != logits.size:
            self._ids = np.arange(logits.size, dtype=np.int64)
        ids, is_sorted = self._ids, False
        if self.top_k > 0:
            ids, logits = top_k_step(ids, logits, self.top_k)
            is_sorted = True
        if self.top_p < 1.0:
            ids, logits = top_p_step(ids, logits, is_sorted, self.top_p, self.min_keep)
            is_sorted = True
        if self.min_p > 0.0:
            ids, logits = min_p_step(ids, logits, is_sorted, self.min_p, self.min_keep)
        return ids, logits, is_sorted


def make_sampler(temp: float = 0.8, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 seed: Optional[int] = None, min_keep: int = 0) -> Sampler:
    """A callable `sampler(logits) -> token id` with llama.cpp's chain and defaults."""
    return Sampler(temp=temp, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed, min_keep=min_keep)


def apply_penalties(logits: np.ndarray, history: Sequence[int], repeat_penalty: float = 1.0,
                    repeat_last_n: int = 64, presence_penalty: float = 0.0,
                    frequency_penalty: float = 0.0) -> np.ndarray:
    """llama_sampler_penalties_apply on a copy of `logits`.

    For each distinct token among the last `repeat_last_n` of `history` (-1: all of it), seen
    `count` times: logit <= 0 is multiplied by repeat_penalty, logit > 0 divided by it; then
    `count * frequency_penalty + presence_penalty` is subtracted. The history is what llama.cpp
    feeds its sampler: the prompt tokens followed by the generated ones.
    """
    out = np.array(logits, dtype=np.float32, copy=True)
    if repeat_last_n == 0 or len(history) == 0:
        return out
    recent = history if repeat_last_n < 0 else history[-repeat_last_n:]
    ids, counts = np.unique(np.asarray(recent, dtype=np.int64), return_counts=True)
    values = out[ids]
    penalty = np.float32(repeat_penalty)
    with np.errstate(all="ignore"):  # overflow (huge logits, odd penalties): the sampler copes with inf
        values = np.where(values <= 0, values * penalty, values / penalty)
        counts32 = counts.astype(np.float32)
        values -= counts32 * np.float32(frequency_penalty) + np.float32(presence_penalty)
    out[ids] = values
    return out


def make_logits_processors(repeat_penalty: float = 1.0, repeat_last_n: int = 64,
                           presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                           logit_bias: Optional[Mapping[int, float]] = None
                           ) -> list[LogitsProcessor]:
    """History-dependent steps, each `processor(history, logits) -> new logits`, in chain order.

    Empty when everything is disabled (llama.cpp's defaults), so the common case costs nothing.
    """
    processors: list[LogitsProcessor] = []
    if logit_bias:
        bias_ids = np.array(list(logit_bias.keys()), dtype=np.int64)
        bias_values = np.array(list(logit_bias.values()), dtype=np.float32)

        def add_bias(history: Sequence[int], logits: np.ndarray) -> np.ndarray:
            out = np.array(logits, dtype=np.float32, copy=True)
            with np.errstate(all="ignore"):  # -inf bans, inf forces: the sampler copes with them
                out[bias_ids] += bias_values
            return out

        processors.append(add_bias)
    enabled = repeat_penalty != 1.0 or presence_penalty != 0.0 or frequency_penalty != 0.0
    if repeat_last_n != 0 and enabled:

        def penalize(history: Sequence[int], logits: np.ndarray) -> np.ndarray:
            return apply_penalties(logits, history, repeat_penalty, repeat_last_n,
                                   presence_penalty, frequency_penalty)

        processors.append(penalize)
    return processors


def make_sampling(params: SamplingParams) -> tuple[Sampler, list[LogitsProcessor]]:
    """The sampler and the logits processors `params` describe."""
    sampler = make_sampler(temp=params.temp, top_k=params.top_k, top_p=params.top_p, min_p=params.min_p,
                           seed=params.seed)
    processors = make_logits_processors(repeat_penalty=params.repeat_penalty, repeat_last_n=params.repeat_last_n,
                                        presence_penalty=params.presence_penalty,
                                        frequency_penalty=params.frequency_penalty,
                                        logit_bias=dict(params.logit_bias))
    return sampler, processors


# ---------------------------------------------------------------------------------------------
# Stopping

# why generation ended, in the order StopChecker.push checks them
EOG = "eog"                    # an end-of-generation token (its text is not shown)
STOP_STRING = "stop_string"    # a stop string appeared (neither it nor what follows is shown)
COMPLETE = "complete"          # the caller's constraint ends it (JSON mode: the object is whole)
MAX_TOKENS = "max_tokens"      # the token budget is spent
CONTEXT_FULL = "context_full"  # the KV cache is full: the token cannot run
_FINISH = {EOG: "stop", STOP_STRING: "stop", COMPLETE: "stop", MAX_TOKENS: "length", CONTEXT_FULL: "length"}


class StopChecker:
    """Decides when generation ends, why, and what streamed text may be shown: the one place that
    does, for every request (runtime/decoding.py feeds it; a constraint's end comes in as `complete`).

    Per sampled token the caller calls `push(token, decode, n_past)`, which counts the token and
    returns the text safe to emit now; `done` then says whether generation ends with it, and
    `reason` why (EOG, STOP_STRING, COMPLETE, MAX_TOKENS or CONTEXT_FULL, checked in that order).
    Text that could be the beginning of a stop string is held back until it is decided; at the
    end `flush(tail)` returns it (nothing after a stop string). `finish_reason` is the API's name:
    "stop" (EOG token, stop string, complete) or "length" (token budget, full context).
    `keep_stop`: the text ends with the stop string that ended it (TGI's answers) instead of
    before it (OpenAI's, llama.cpp's).
    """

    def __init__(self, stop: Sequence[str] = (), max_tokens: int = -1,
                 is_eog: Optional[Callable[[int], bool]] = None, n_ctx: int = -1, keep_stop: bool = False) -> None:
        self.stop = [s for s in stop if s]
        self.keep_stop = keep_stop
        self.max_tokens = max_tokens        # < 0: no limit
        self.is_eog = is_eog
        self.n_ctx = n_ctx                  # < 0: no limit
        self.n_tokens = 0
        self.reason: Optional[str] = None
        self.stop_string: Optional[str] = None  # the stop string that matched
        self._held = ""
        if max_tokens == 0:  # nothing to generate: done before the first token
            self.reason = MAX_TOKENS

    @property
    def done(self) -> bool:
        return self.reason is not None

    @property
    def finish_reason(self) -> Optional[str]:
        return _FINISH.get(self.reason or "")

    def end(self, reason: str) -> None:
        """Ends generation for a reason the caller found (COMPLETE: the constraint allows no token)."""
        self.reason = reason

    def push(self, token: int, decode: Callable[[int], str], n_past: int = 0, complete: bool = False) -> str:
        """One generated token: the text safe to emit now (`decode(token)` is its text, asked for
        unless it is an end-of-generation token). `n_past`: the positions the KV cache holds
        before this token runs; `complete`: the caller's own end (after stop strings, before the
        limits)."""
        self.n_tokens += 1
        if self.is_eog is not None and self.is_eog(token):
            self.reason = EOG
            return ""
        text = self._feed(decode(token))
        if self.done:
            return text
        if complete:
            self.reason = COMPLETE
        elif 0 <= self.max_tokens <= self.n_tokens:
            self.reason = MAX_TOKENS
        elif 0 <= self.n_ctx <= n_past:
            self.reason = CONTEXT_FULL
        return text

    def flush(self, tail: str = "") -> str:
        """At the end of generation: the held-back text plus `tail` (e.g. the detokenizer's rest),
        cut before a stop string if one is completed there; nothing once a stop string was found."""
        if self.reason == STOP_STRING:
            return ""
        text, self._held = self._held + tail, ""
        cut = self._find_stop(text)
        if cut is None:
            return text
        if self.reason is None:
            self.reason = STOP_STRING
        return text[:self._end(cut)]

    def _feed(self, piece: str) -> str:
        """Add streamed text; returns the text safe to emit now (reason STOP_STRING on a stop string)."""
        text = self._held + piece
        self._held = ""
        cut = self._find_stop(text)
        if cut is not None:
            self.reason = STOP_STRING
            return text[:self._end(cut)]
        hold = self._partial_stop_length(text)
        if hold:
            self._held = text[-hold:]
            return text[:-hold]
        return text

    def _end(self, cut: int) -> int:
        """Where the text ends, given the stop string found at `cut`."""
        return cut + len(self.stop_string or "") if self.keep_stop else cut

    def _find_stop(self, text: str) -> Optional[int]:
        """Position of the earliest complete stop string in `text`."""
        best: Optional[int] = None
        for stop in self.stop:
            pos = text.find(stop)
            if pos >= 0 and (best is None or pos < best):
                best, self.stop_string = pos, stop
        return best

    def _partial_stop_length(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest
