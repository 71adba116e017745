"""The benchmark's pure parts (tools/bench_*.py): model specs, per-token work, full-depth estimates,
tables, and the int8-peak kernel's bookkeeping. No test here checks a speed."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import gguf
import numpy as np
import pytest

from runtime import kernels
from tools import bench_models, bench_report, bench_serving
from tools.bench_machine import huge_share, med, model_info, run_ratio, spread
from tools.bench_sections import run_pp_tg
from tools.bench_worker import PP, Pair
from tools.random_gguf import QT, ModelSpec, tensor_layout, write_model

FIXTURE_MOE = Path(__file__).resolve().parent / "fixtures/models/moe-Q4_0.gguf"

# Published parameter counts of the models the real-width benchmark models stand for.
MISTRAL_7B_PARAMS = 7_241_732_096
MIXTRAL_8X7B_PARAMS = 46_702_792_704


@pytest.mark.parametrize("family,params", [("mistral", MISTRAL_7B_PARAMS), ("mixtral", MIXTRAL_8X7B_PARAMS)])
def test_real_width_models_are_the_real_models_cut_short(family, params):
    syn = bench_models.SYNTHETIC[family]
    full = dataclasses.replace(syn.spec, n_layer=syn.full_layers)
    assert sum(math.prod(shape) for _, shape in tensor_layout(full)) == params
    assert syn.spec.n_layer < syn.full_layers and syn.spec.vocab == "mistral"
    k_block = gguf.GGML_QUANT_SIZES[QT.Q4_K][0]
    assert all(shape[-1] % k_block == 0 for _, shape in tensor_layout(syn.spec) if len(shape) > 1)
    assert all(f"{family}-{q}" in bench_models.ALL for q in syn.ftypes)
    # a new shape makes a new file: the width is in the name
    assert "4096" in bench_models.model_path(f"{family}-Q4_K_M").name


def test_seed_types_and_small_models_stay():
    assert set(bench_models.SYNTHETIC["mistral"].ftypes) == {"Q4_K_M", "Q4_0", "Q5_K_M", "Q6_K", "Q8_0", "Q2_K",
                                                             "Q3_K_M"}
    assert set(bench_models.SYNTHETIC["mixtral"].ftypes) == {"Q4_K_M", "Q2_K"}
    assert {"smollm2-Q4_1", "moe-Q4_K_M", "dense-Q4_K_M"} <= set(bench_models.ALL)
    assert bench_models.full_layers("mistral-Q8_0") == 32 and bench_models.full_layers("smollm2-Q4_1") is None


def _moe(tmp_path, n_layer):
    spec = ModelSpec(n_vocab=320, n_embd=256, n_ff=256, n_head=4, n_head_kv=2, n_layer=n_layer, n_expert=4,
                     n_expert_used=2, vocab="bytes", init="tiled", qtype=QT.F16)
    path = tmp_path / f"moe{n_layer}.gguf"
    write_model(path, spec)
    return model_info(f"moe{n_layer}", path), path


def test_model_info_counts_what_the_gguf_package_reads(tmp_path):
    info, path = _moe(tmp_path, 2)
    tensors = gguf.GGUFReader(path).tensors
    assert info.file_bytes == sum(int(t.n_bytes) for t in tensors)
    # multiply-adds per prompt token: every layer matrix, the experts at 2 of 4, the output for one token of PP
    expect = sum(int(t.n_elements) * (0.5 if "_exps" in t.name else 1.0)
                 for t in tensors if t.name.startswith("blk.") and len(t.shape) > 1)
    assert info.layer_macs == expect
    out = next(t for t in tensors if t.name == "output.weight")
    assert info.rest_macs == pytest.approx(int(out.n_elements) / PP)
    assert info.kv_bytes_per_ctx == 2 * 2 * 2 * 2 * 64  # layers x (K, V) x fp16 x kv heads x head_dim


def test_full_depth_estimate_matches_the_deeper_file(tmp_path):
    short, _ = _moe(tmp_path, 2)
    deep, _ = _moe(tmp_path, 6)
    read, macs = short.at_depth(6)
    assert read == pytest.approx(deep.token_bytes, abs=1)
    assert macs == pytest.approx(deep.macs)
    short.full_layers = 6
    pp, tg = short.full_depth(300.0, 90.0)
    assert pp == pytest.approx(300.0 * short.macs / deep.macs)
    assert tg == pytest.approx(90.0 * short.token_bytes / deep.token_bytes, rel=1e-6)
    assert pp < 300.0 / 2.5 and tg < 90.0  # three times the layers: over twice as slow, the rest is shared


def test_main_row_fractions_and_missing_engine(tmp_path):
    info, _ = _moe(tmp_path, 2)
    bw, peak = 20.0, 100.0
    res = {"llamapack": {"pp": peak * 1e9 / info.macs / 2, "tg": bw * 1e9 / info.token_bytes},
           "_bw": bw, "_peak": peak}
    assert bench_report.fractions(info, res, "llamapack") == pytest.approx((1.0, 0.5))
    text = bench_report.main_row_text(info, res)
    cells = [c.split() for c in text.split("|")]
    assert cells[3] == ["100%", "-", "20.0"] and cells[4] == ["50%", "-", "100"]
    assert cells[1][-1] == "-" and cells[2][-1] == "-"  # no llama.cpp: no ratio
    assert "layers" not in text
    info.full_layers = 32
    assert "x32 layers" in bench_report.main_row_text(info, res).splitlines()[1]


def test_ratios_pair_the_engines_run_by_run(tmp_path):
    # The machine halves its speed for the last two runs: both engines alike. The ratio of the
    # medians mixes a fast run of one with a slow run of the other; each run's own ratio does not.
    ours = {0: 200.0, 1: 210.0, 2: 100.0, 3: 105.0}
    theirs = {0: 100.0, 1: 105.0, 2: 50.0, 3: 52.5, 4: 60.0}  # (run 4: ours failed)
    assert run_ratio(ours, theirs) == pytest.approx(2.0)
    assert med(list(ours.values())) / med(list(theirs.values())) == pytest.approx(152.5 / 60)  # (2.54)
    assert math.isnan(run_ratio(ours, {}))
    info, _ = _moe(tmp_path, 2)
    res = {"llamapack": {"pp": 155.0, "tg": 40.0}, "llama.cpp": {"pp": 80.0, "tg": 20.0},
           "_ratio": {"pp": 2.0, "tg": float("nan")}, "_bw": 20.0, "_peak": 100.0}
    assert bench_report.run_ratio(res, "pp") == 2.0 and bench_report.run_ratio(res, "tg") == 2.0  # (no runs: medians)
    cells = [c.split() for c in bench_report.main_row_text(info, res).split("|")]
    assert cells[1] == ["155.0", "80.0", "2.00x"] and cells[2] == ["40.0", "20.0", "2.00x"]


class _DriftingPair(Pair):
    """Two fake engines on a machine that slows down by a factor exp(-drift) with every measurement;
    llamapack is `true` times as fast as llama.cpp at every moment. Records the calls."""

    def __init__(self, true: float, drift: float, fail: tuple[str, str, int] | None = None) -> None:
        worker = dataclasses.make_dataclass("W", ["engine"])
        super().__init__(workers={e: worker(e) for e in ("llamapack", "llama.cpp")})
        self.speed = {"llamapack": true * 100.0, "llama.cpp": 100.0}  # tokens per time unit, machine at 1
        self.drift, self.fail, self.calls = drift, fail, []

    def call(self, w, op, **kw):  # noqa: ANN001, ANN003, ANN201
        self.calls.append((w.engine, op))
        if self.fail and (w.engine, op, len(self.calls)) == self.fail:
            self.errors[w.engine] = "it died"
            self.workers.pop(w.engine)
            return None
        s = kw["n"] / (self.speed[w.engine] * math.exp(-self.drift * len(self.calls)))
        return {"s": s, "tokens": [1, 2]}


def test_run_pp_tg_measures_each_ratio_side_by_side():
    ys = dataclasses.make_dataclass("Y", [])()
    ys.sample = lambda threads: (20.0, 100.0)
    pair = _DriftingPair(true=2.0, drift=0.1)
    res = run_pp_tg(pair, 3, ys, 2)
    # each run: both prompts, then both generations in the other order (A pp, B pp, B tg, A tg)
    for run, calls in zip(range(-1, 3), [pair.calls[i:i + 4] for i in range(0, 16, 4)]):
        a, b = [w.engine for w in pair.alternate(run)]
        assert calls == [(a, "pp"), (b, "pp"), (b, "tg"), (a, "tg")]
    # the machine loses 10% a measurement: each ratio is off by one measurement's drift (a prompt
    # and a generation between its two sides made it two)
    for op in ("pp", "tg"):
        assert res["_ratio"][op] in (pytest.approx(2.0 * math.exp(0.1)), pytest.approx(2.0 * math.exp(-0.1)))
    assert len(res["llamapack"]["spread"]) == 2 and res["llamapack"]["tokens"] == [1, 2]
    # an engine that fails leaves: no more calls to it, the other goes on alone
    pair = _DriftingPair(true=2.0, drift=0.0, fail=("llama.cpp", "pp", 6))
    res = run_pp_tg(pair, 2, ys, 2)
    assert all(e == "llamapack" for e, _ in pair.calls[6:]) and pair.calls.count(("llamapack", "pp")) == 3
    assert res["llamapack"]["pp"] == pytest.approx(200.0) and "llama.cpp" not in res
    assert math.isnan(res["_ratio"]["pp"])  # (no run measured both)


def test_medians_and_spread():
    assert med([3.0, 1.0, 2.0]) == 2.0 and math.isnan(med([]))
    assert spread([9.0, 10.0, 11.0]) == pytest.approx(0.2) and math.isnan(spread([1.0]))
    assert bench_report.fmt(float("nan")) == "-" and bench_report.pct(0.456) == "46%"


def test_int8_peak_counts_its_multiply_adds():
    lib = kernels.lib
    assert lib.lp_int8_peak(kernels.ISAS["ref"], 10, 1) == lib.LP_EBAD_ISA
    x86 = [isa for isa in ("avx2", "avx512") if isa in kernels.available_isas()]
    for isa in x86:
        per_step = 64 if isa == "avx512" else 32  # bytes per register: 512 or 256 bits
        assert lib.lp_int8_peak(kernels.ISAS[isa], 1000, 2) == 1000 * 12 * per_step * 2
        assert lib.lp_int8_peak(kernels.ISAS[isa], 0, 1) == lib.LP_EBAD_SIZE
        assert lib.lp_int8_peak(kernels.ISAS[isa], 10, 0) == lib.LP_EBAD_SIZE
    if "avx2" in x86:  # the int16-sum loop: 12 steps of 32 a loop too
        assert lib.lp_int8_peak_i16(1000, 2) == 1000 * 12 * 32 * 2
        assert lib.lp_int8_peak_i16(0, 1) == lib.LP_EBAD_SIZE
    else:
        assert lib.lp_int8_peak_i16(10, 1) == lib.LP_EBAD_ISA


SMAPS = """7f0000000000-7f0000001000 rw-p 00000000 00:00 0
Size:                  4 kB
AnonHugePages:         0 kB

7f0000001000-7f0000401000 rw-p 00000000 00:00 0
Size:               4096 kB
AnonHugePages:      2048 kB
FilePmdMapped:         0 kB
7f0000401000-7f0000801000 r--p 00000000 08:01 12 /models/m.gguf
Size:               4096 kB
AnonHugePages:         0 kB
FilePmdMapped:      4096 kB
7f0000801000-7f0000c01000 rw-p 00000000 00:00 0
AnonHugePages:      4096 kB
"""


def test_huge_share_sums_the_mappings_over_the_range():
    """The share in 2 MiB pages of a range: the field summed over every mapping the range touches
    (a buffer's first page may sit in a mapping of its own), none outside it, at most 1."""
    base = 0x7F0000000000
    assert huge_share(base + 0x10, 0x401000 - 0x10, "AnonHugePages", SMAPS) == pytest.approx(2048 * 1024 / (0x401000 - 0x10))
    assert huge_share(base + 0x401000, 0x400000, "FilePmdMapped", SMAPS) == 1.0
    assert huge_share(base + 0x401000, 0x400000, "AnonHugePages", SMAPS) == 0.0
    assert huge_share(base, 0x1000, "AnonHugePages", SMAPS) == 0.0  # (the next mapping starts at its end)
    assert huge_share(base + 0x801000, 0x100000, "AnonHugePages", SMAPS) == 1.0  # capped


def test_full_depth_vs_one_scales_the_layers_and_keeps_the_rest():
    # a 4-layer file: one stream's step 10 ms of layers + 5 ms of output product, four streams' 16 + 5
    one, one_bare, four, four_bare = 1 / 0.015, 1 / 0.010, 4 / 0.021, 4 / 0.016  # tok/s
    measured = four / one
    assert measured == pytest.approx(4 * 15 / 21)
    # at 32 layers: 80 + 5 ms against 128 + 5 ms
    est = bench_serving.full_depth_vs_one(4, four, four_bare, one, one_bare, 4, 32)
    assert est == pytest.approx(4 * 85 / 133)
    assert est < measured  # the output product, as fast for four rows as for one, weighs less deeper
    # nothing outside the layers: the depth changes nothing
    assert bench_serving.full_depth_vs_one(4, four_bare, four_bare, one_bare, one_bare, 4, 32) == \
        pytest.approx(four_bare / one_bare)
    # a run without logits that came out slower (noise) counts no negative output cost: the layers alone
    step4, step1 = 4 / (four * 0.9) * 8, 1 / one * 8
    assert bench_serving.full_depth_vs_one(4, four, four * 0.9, one, one, 4, 32) == \
        pytest.approx((4 / step4) / (1 / step1))


def test_batched_worker_runs_with_and_without_logits():
    # the bench's own decoding loop, both ways, on a tiny model (the rates themselves are not checked)
    for logits_on in (True, False):
        assert bench_serving.ours_batched(str(FIXTURE_MOE), 1, 2, logits_on) > 0
    # what the run without logits stands on: steps with no row marked make no logits (no output product)
    from runtime.gguf import GGUFFile
    from runtime.model import Model
    model = Model(GGUFFile(FIXTURE_MOE), n_ctx=32, n_threads=1, n_seq=2, max_batch=8)
    assert model.decode([5, 6], [0, 0], [0, 1], [False, False]).shape[0] == 0
    assert model.decode([7, 8], [1, 1], [0, 1], [True, True]).shape[0] == 2
    # its tokens: each sequence's prompt again, in turn; with logits, each row's greedy token
    n = bench_serving.PROMPT
    prompts = [list(range(100, 100 + n)), list(range(200, 200 + n))]
    assert bench_serving._next_tokens(None, prompts, n + 3) == [103, 203]
    assert bench_serving._next_tokens(np.array([[0.0, 5.0, 1.0], [9.0, 0.0, 0.0]]), prompts, 0) == [1, 0]
