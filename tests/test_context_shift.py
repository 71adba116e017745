"""Context shift (csrc/engine/kv_shift.c, Model.shift, Engine.context_shift) against llama.cpp.

The fixture (tools/make_shift_fixtures.py) fills llama.cpp's cache with a text, applies its
server's shift (drop the positions after the first, half of the rest; the later ones move down
and their keys are rotated), and records the logits of greedy steps after it. The engine does
the same shift on the same tokens; its logits must stay as close to llama.cpp's as the fidelity
tests ask of SmolLM2 (3% of the logit range), with the same top token wherever llama.cpp's own
top-2 margin is clear. Qwen2.5-Coder checks the NEOX rope's rotation; SmolLM2 the
adjacent-pair one.

"Clear" is wider here than the fidelity tests' 0.2%: after a shift both engines hold keys
rounded to fp16 twice, and on Qwen2.5-Coder the two then sit up to 1.6% of the range apart
(0.4-0.8% on the same tokens without a shift), so one step whose margin is 1% parts. That the
engine's rotation itself is exact is tested apart, against a float64 rotation of the cache.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.engine import Engine
from runtime.gguf import GGUFFile
from runtime.kernels import ffi
from runtime.model import Model, ModelError
from runtime.sampling import SamplingParams
from tests.test_fidelity import SMOLLM2_LOGITS_REL

MARGIN_CLEAR = 0.02  # llama.cpp's top-2 margin, as a fraction of the logit range
REF = json.loads((Path(__file__).parent / "fixtures" / "shift" / "llama_cpp_shift.json").read_text())


def _record(name: str) -> dict:
    return next(m for m in REF["models"] if m["model"] == name)


def _check_after_shift(path: Path, rec: dict) -> None:
    with GGUFFile(path) as f:
        model = Model(f, n_ctx=rec["n_ctx"], n_threads=2)
        toks = rec["tokens"]
        model.forward(toks, 0)
        model.shift(0, rec["keep"], rec["discard"])
        assert model.seq_len(0) == len(toks) - rec["discard"]
        pos = model.seq_len(0)
        for i, step in enumerate(rec["steps"]):
            got = model.forward([step["token"]], pos, prompt=False)
            pos += 1
            span = step["logit_max"] - step["logit_min"]
            diff = np.abs(got[step["top_ids"]] - np.asarray(step["top_logits"]))
            assert diff.max() <= SMOLLM2_LOGITS_REL * span, \
                f"step {i} after the shift: top-20 logits off by {diff.max() / span:.2%} of the range"
            if step["margin"] >= MARGIN_CLEAR:
                assert int(np.argmax(got)) == step["top_ids"][0], f"step {i} after the shift: top token differs"


def test_shift_matches_llama_cpp_adjacent_pair_rope(smollm2_path) -> None:
    _check_after_shift(smollm2_path, _record("smollm2"))


def test_shift_matches_llama_cpp_neox_rope(qwen25_coder_path) -> None:
    _check_after_shift(qwen25_coder_path, _record("qwen25_coder"))


def _keys(model: Model, seq: int, layer: int, head: int, n: int) -> np.ndarray:
    """Sequence seq's cached keys (n positions, head_dim) of one layer and kv head, read from
    the cache's blocks of 16 positions (api.h: lp_kv, lp_kv_index)."""
    kv, hd = model._kv, model.config.head_dim
    cache = np.frombuffer(ffi.buffer(kv.k, kv.n_seq * kv.n_layer * kv.n_head_kv * kv.ctx_blocks * hd * 2),
                          dtype=np.float16).reshape(kv.n_seq, kv.n_layer, kv.n_head_kv, -1, hd, 16)
    return cache[seq, layer, head].transpose(0, 2, 1).reshape(-1, hd)[:n].astype(np.float64)


def _rotate(k: np.ndarray, delta: int, base: float, n_rot: int, neox: bool) -> np.ndarray:
    """Keys k (n, head_dim) turned by the rope angle of position delta, in float64."""
    out = k.copy()
    half = n_rot // 2
    ang = delta * base ** (-2.0 * np.arange(half) / n_rot)
    a, b = (np.arange(half), np.arange(half) + half) if neox else (np.arange(0, n_rot, 2), np.arange(1, n_rot, 2))
    out[:, a] = k[:, a] * np.cos(ang) - k[:, b] * np.sin(ang)
    out[:, b] = k[:, a] * np.sin(ang) + k[:, b] * np.cos(ang)
    return out


@pytest.mark.parametrize("which", ["smollm2", "qwen25_coder"])
def test_shifted_keys_are_the_exact_rotation(which: str, request) -> None:
    """Every moved key equals its old value turned by the angle of -discard (float64), to the
    fp16 cache's rounding; v and the kept keys do not change."""
    path = request.getfixturevalue(f"{which}_path")
    with GGUFFile(path) as f:
        model = Model(f, n_ctx=96, n_threads=2)
        toks = _record(which)["tokens"]
        keep, discard, n = 3, 30, len(toks)
        model.forward(toks, 0)
        cfg = model.config
        layers = (0, cfg.n_layer - 1)
        before = {l: _keys(model, 0, l, cfg.n_head_kv - 1, n) for l in layers}
        model.shift(0, keep, discard)
        neox = bool(model._w.rope_neox)
        for l in layers:
            after = _keys(model, 0, l, cfg.n_head_kv - 1, n - discard)
            np.testing.assert_array_equal(after[:keep], before[l][:keep])
            want = _rotate(before[l][keep + discard:], -discard, cfg.rope_base, cfg.n_rot, neox)
            err = np.abs(after[keep:] - want)
            assert (err <= 2.0 ** -10 * np.abs(want) + 1e-6).all(), f"layer {l}: off by {err.max():.3g}"


def test_shift_without_rotation_would_be_wrong(smollm2_path) -> None:
    """The oracle sees the rotation: dropping the cells without rotating the keys (a plain copy
    of the later positions) moves the logits far further from llama.cpp's."""
    rec = _record("smollm2")
    toks, keep, discard = rec["tokens"], rec["keep"], rec["discard"]
    with GGUFFile(smollm2_path) as f:
        model = Model(f, n_ctx=rec["n_ctx"], n_threads=2)
        model.forward(toks, 0)
        model.shift(0, keep, discard)
        step = rec["steps"][0]
        shifted = model.forward([step["token"]], len(toks) - discard, prompt=False)
        model.clear(0)  # the same tokens recomputed at their new positions: no shift at all
        model.forward(toks[:keep] + toks[keep + discard:], 0)
        fresh = model.forward([step["token"]], len(toks) - discard, prompt=False)
    want = np.asarray(step["top_logits"])
    off = lambda got: float(np.abs(got[step["top_ids"]] - want).max())  # noqa: E731
    assert off(shifted) < off(fresh), "recomputing without the dropped text is not what llama.cpp's shift does"


def test_shift_checks_its_range_and_leaves_other_sequences(smollm2_path) -> None:
    with GGUFFile(smollm2_path) as f:
        model = Model(f, n_ctx=64, n_threads=2, n_seq=2)
        ids = list(range(100, 140))
        model.forward(ids, 0, seq=0)
        model.forward(ids, 0, seq=1)
        before = model.forward([7], 40, seq=1, prompt=False)
        model.truncate(1, 40)
        with pytest.raises(ModelError, match="cannot drop"):
            model.shift(0, 30, 11)
        with pytest.raises(ModelError, match="cannot drop"):
            model.shift(0, -1, 2)
        with pytest.raises(ModelError, match="does not exist"):
            model.shift(2, 1, 2)
        assert model.seq_len(0) == 40
        model.shift(0, 4, 20)
        assert (model.seq_len(0), model.seq_len(1)) == (20, 40)
        after = model.forward([7], 40, seq=1, prompt=False)
        np.testing.assert_array_equal(before, after)


def test_generation_goes_past_a_full_context_with_the_shift(smollm2_path) -> None:
    eng = Engine.load(smollm2_path, n_ctx=32, n_threads=2)
    try:
        eng.context_shift, eng.n_keep = True, -1  # keep the whole prompt
        ids = eng.tokenize("Once upon a time", add_special=True)
        chunks = list(eng.stream_generate(ids, max_tokens=80, params=SamplingParams(temp=0.0)))
        assert chunks[-1].finish_reason == "length"
        assert chunks[-1].stats.generated_tokens == 80
        assert eng.n_past < eng.n_ctx
        assert eng.tokens[:len(ids)] == ids
    finally:
        eng.close()


def test_the_server_shifts_each_slots_context(smollm2_path) -> None:
    """--context-shift in the server: two concurrent requests each go past the full context, and
    each gives the text the engine gives alone with the same shift (greedy; no drafts, so both
    shift at the same token)."""
    import requests

    from tests.serverutil import ServerThread

    def setup(eng: Engine) -> Engine:
        eng.context_shift, eng.n_keep, eng.speculation = True, -1, None
        return eng

    prompts = ["Once upon a time", "The capital of France is"]
    alone = setup(Engine.load(smollm2_path, n_ctx=40, n_threads=2))
    never = sorted(alone.tokenizer.eog_ids)  # the text runs on to max_tokens
    try:
        params = SamplingParams(temp=0.0, logit_bias=tuple((t, -float("inf")) for t in never))
        want = ["".join(c.text for c in alone.stream_generate(p, max_tokens=90, params=params)) for p in prompts]
    finally:
        alone.close()
    eng = setup(Engine.load(smollm2_path, n_ctx=40, n_threads=2))
    try:
        with ServerThread(eng, parallel=2) as srv:
            from concurrent.futures import ThreadPoolExecutor

            def ask(prompt: str) -> dict:
                r = requests.post(srv.url + "/v1/completions", timeout=120,
                                  json={"prompt": prompt, "max_tokens": 90, "temperature": 0,
                                        "logit_bias": {str(t): -100 for t in never}})
                assert r.status_code == 200, r.text
                return r.json()

            with ThreadPoolExecutor(2) as pool:
                got = list(pool.map(ask, prompts))
            # llama.cpp's /completion says the context was shifted on the way (`truncated`)
            native = [requests.post(srv.url + "/completion", timeout=120, json={
                "prompt": prompts[0], "n_predict": n, "temperature": 0, "ignore_eos": True}).json() for n in (90, 8)]
            assert [r["truncated"] for r in native] == [True, False]
    finally:
        eng.close()
    for g, w in zip(got, want):
        assert (g["usage"]["completion_tokens"], g["choices"][0]["finish_reason"]) == (90, "length"), g
        assert g["choices"][0]["text"] == w
