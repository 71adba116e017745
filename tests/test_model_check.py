"""check_model: a broken GGUF is refused at load with one line naming the key or tensor.

Each case is a tiny model (tests/tiny_models.py) with one key or tensor changed as a hostile or
damaged file would have it. Before these checks, wrong key types were converted or crashed
(int("2") of a string block_count worked; a list head_count raised TypeError), huge counts reached
numpy allocations (MemoryError), bad rope/epsilon values reached the kernels as NaN, and a
token_embd of the wrong row count was only found when a token id ran past it.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.gguf import GGUFError, GGUFFile
from runtime.model import Model, ModelError, check_model
from runtime.tokenizer import TokenizerError
from tests.cliutil import assert_one_line_error
from tests.tiny_models import QT, VT, TinySpec, rewrite_gguf, write_tiny_llama

ROOT = Path(__file__).resolve().parent.parent
DENSE = TinySpec()                              # 96 tokens, embd 64, 2 layers, 4 heads / 2 kv, ff 96
MOE = TinySpec(n_expert=4, n_expert_used=2)
USER_ERRORS = (ModelError, GGUFError, TokenizerError)
U32, I32, F32, F64, STR, ARR, BOOL, U8 = (VT.UINT32, VT.INT32, VT.FLOAT32, VT.FLOAT64, VT.STRING,
                                          VT.ARRAY, VT.BOOL, VT.UINT8)


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bases")
    out = {"dense": d / "dense.gguf", "moe": d / "moe.gguf"}
    write_tiny_llama(out["dense"], DENSE)
    write_tiny_llama(out["moe"], MOE)
    return out


def _broken(bases: dict[str, Path], tmp_path: Path, base: str = "dense", **changes) -> Path:
    return rewrite_gguf(bases[base], tmp_path / "broken.gguf", **changes)


def _refused(path: Path, *needles: str) -> str:
    with GGUFFile(path) as f, pytest.raises(USER_ERRORS) as e:
        check_model(f)
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    return msg


# --- key types: exactly what llama.cpp's loader accepts ------------------------------------------

TYPE_CASES = {
    "block_count-string": ({"llama.block_count": ("2", STR)}, ["llama.block_count", "STRING", "UINT32"]),
    "block_count-float": ({"llama.block_count": (2.0, F32)}, ["llama.block_count", "FLOAT32", "UINT32"]),
    "block_count-int32": ({"llama.block_count": (2, I32)}, ["llama.block_count", "INT32", "UINT32"]),
    "head_count-per-layer-array": ({"llama.attention.head_count": ([4, 4], ARR, U32)},
                                   ["llama.attention.head_count", "ARRAY of UINT32"]),
    "context_length-bool": ({"llama.context_length": (True, BOOL)}, ["llama.context_length", "BOOL"]),
    "freq_base-string": ({"llama.rope.freq_base": ("1e4", STR)}, ["llama.rope.freq_base", "FLOAT32"]),
    "freq_base-float64": ({"llama.rope.freq_base": (1e4, F64)}, ["llama.rope.freq_base", "FLOAT64"]),
    "rms_eps-int": ({"llama.attention.layer_norm_rms_epsilon": (0, U32)}, ["layer_norm_rms_epsilon"]),
    "architecture-int": ({"general.architecture": (7, U32)}, ["general.architecture", "STRING"]),
    "tokens-int-array": ({"tokenizer.ggml.tokens": (list(range(96)), ARR, I32)},
                         ["tokenizer.ggml.tokens", "ARRAY of INT32", "ARRAY of STRING"]),
    "tokens-string": ({"tokenizer.ggml.tokens": ("abc", STR)}, ["tokenizer.ggml.tokens", "STRING"]),
    "scores-int-array": ({"tokenizer.ggml.scores": ([0] * 96, ARR, I32)},
                         ["tokenizer.ggml.scores", "ARRAY of FLOAT32"]),
    "scores-float64-array": ({"tokenizer.ggml.scores": ([0.0] * 96, ARR, F64)}, ["tokenizer.ggml.scores"]),
    "token_type-float-array": ({"tokenizer.ggml.token_type": ([1.0] * 96, ARR, F32)},
                               ["tokenizer.ggml.token_type", "ARRAY of INT32"]),
    "merges-int-array": ({"tokenizer.ggml.merges": ([1, 2], ARR, I32)}, ["tokenizer.ggml.merges"]),
    "model-int": ({"tokenizer.ggml.model": (1, U32)}, ["tokenizer.ggml.model", "STRING"]),
    "bos-string": ({"tokenizer.ggml.bos_token_id": ("1", STR)}, ["tokenizer.ggml.bos_token_id"]),
    "add_bos-uint8": ({"tokenizer.ggml.add_bos_token": (1, U8)}, ["tokenizer.ggml.add_bos_token", "BOOL"]),
    "chat_template-array": ({"tokenizer.chat_template": (["{{ x }}"], ARR, STR)}, ["tokenizer.chat_template"]),
}


@pytest.mark.parametrize("case", TYPE_CASES, ids=list(TYPE_CASES))
def test_wrong_key_type_is_refused(bases: dict[str, Path], tmp_path: Path, case: str) -> None:
    keys, needles = TYPE_CASES[case]
    msg = _refused(_broken(bases, tmp_path, keys=keys), *needles)
    assert "expected" in msg


# --- ranges: refused by key before anything is sized by them ---------------------------------------

NAN, INF = math.nan, math.inf
RANGE_CASES = {
    "block_count-2^31": ({"llama.block_count": (2**31, U32)}, "dense", ["llama.block_count", "2147483648"]),
    "block_count-more-than-tensors": ({"llama.block_count": (3, U32)}, "dense", ["llama.block_count", "2 layers"]),
    "block_count-fewer-than-tensors": ({"llama.block_count": (1, U32)}, "dense", ["llama.block_count", "2 layers"]),
    "block_count-0": ({"llama.block_count": (0, U32)}, "dense", ["llama.block_count", "= 0"]),
    "embedding_length-huge": ({"llama.embedding_length": (2**32 - 1, U32)}, "dense", ["llama.embedding_length"]),
    "context_length-0": ({"llama.context_length": (0, U32)}, "dense", ["llama.context_length"]),
    "context_length-huge": ({"llama.context_length": (2**32 - 1, U32)}, "dense", ["llama.context_length"]),
    "head_count-0": ({"llama.attention.head_count": (0, U32)}, "dense", ["llama.attention.head_count ="]),
    "head_count-huge": ({"llama.attention.head_count": (2**32 - 1, U32)}, "dense", ["llama.attention.head_count"]),
    "head_dim-not-whole": ({"llama.attention.head_count": (3, U32), "llama.attention.head_count_kv": (3, U32)},
                           "dense", ["llama.embedding_length", "not a multiple", "head_count = 3"]),
    "kv_heads-not-dividing": ({"llama.attention.head_count_kv": (3, U32)}, "dense",
                              ["llama.attention.head_count_kv = 3", "does not divide"]),
    "kv_heads-0": ({"llama.attention.head_count_kv": (0, U32)}, "dense", ["llama.attention.head_count_kv = 0"]),
    "kv_heads-above-heads": ({"llama.attention.head_count_kv": (8, U32)}, "dense", ["head_count_kv = 8"]),
    "key_length-0": ({"llama.attention.key_length": (0, U32)}, "dense", ["llama.attention.key_length = 0"]),
    "value_length-differs": ({"llama.attention.value_length": (8, U32)}, "dense", ["llama.attention.value_length"]),
    "rope_dims-odd": ({"llama.rope.dimension_count": (15, U32)}, "dense", ["llama.rope.dimension_count", "odd"]),
    "rope_dims-above-head": ({"llama.rope.dimension_count": (32, U32)}, "dense", ["llama.rope.dimension_count"]),
    "freq_base-0": ({"llama.rope.freq_base": (0.0, F32)}, "dense", ["llama.rope.freq_base"]),
    "freq_base-negative": ({"llama.rope.freq_base": (-1e4, F32)}, "dense", ["llama.rope.freq_base"]),
    "freq_base-nan": ({"llama.rope.freq_base": (NAN, F32)}, "dense", ["llama.rope.freq_base", "nan"]),
    "freq_base-inf": ({"llama.rope.freq_base": (INF, F32)}, "dense", ["llama.rope.freq_base", "inf"]),
    "freq_base-1e-45": ({"llama.rope.freq_base": (1e-45, F32)}, "dense", ["llama.rope.freq_base"]),
    "scaling_factor-1e-45": ({"llama.rope.scaling.type": ("linear", STR),
                              "llama.rope.scaling.factor": (1e-45, F32)}, "dense", ["llama.rope.scaling.factor"]),
    "scaling_factor-1e-45-no-type": ({"llama.rope.scaling.factor": (1e-45, F32)}, "dense",
                                     ["llama.rope.scaling.factor"]),
    "scaling_factor-nan": ({"llama.rope.scaling.factor": (NAN, F32)}, "dense", ["llama.rope.scaling.factor"]),
    "scaling_factor-negative": ({"llama.rope.scaling.factor": (-2.0, F32)}, "dense", ["llama.rope.scaling.factor"]),
    "scaling-unknown": ({"llama.rope.scaling.type": ("ntk", STR)}, "dense", ["'ntk'", "llama.rope.scaling.type"]),
    "orig_ctx-0": ({"llama.rope.scaling.original_context_length": (0, U32)}, "dense",
                   ["llama.rope.scaling.original_context_length = 0"]),
    "attn_factor-0": ({"llama.rope.scaling.attn_factor": (0.0, F32)}, "dense", ["llama.rope.scaling.attn_factor"]),
    "rms_eps-nan": ({"llama.attention.layer_norm_rms_epsilon": (NAN, F32)}, "dense", ["layer_norm_rms_epsilon"]),
    "rms_eps-negative": ({"llama.attention.layer_norm_rms_epsilon": (-1e-5, F32)}, "dense",
                         ["layer_norm_rms_epsilon"]),
    "rms_eps-0": ({"llama.attention.layer_norm_rms_epsilon": (0.0, F32)}, "dense", ["layer_norm_rms_epsilon"]),
    "experts-used-above-count": ({"llama.expert_used_count": (5, U32)}, "moe", ["llama.expert_used_count = 5"]),
    "experts-used-0": ({"llama.expert_used_count": (0, U32)}, "moe", ["llama.expert_used_count = 0"]),
    "experts-huge": ({"llama.expert_count": (2**20, U32)}, "moe", ["llama.expert_count"]),
}


@pytest.mark.parametrize("case", RANGE_CASES, ids=list(RANGE_CASES))
def test_out_of_range_hyperparameter_is_refused(bases: dict[str, Path], tmp_path: Path, case: str) -> None:
    keys, base, needles = RANGE_CASES[case]
    _refused(_broken(bases, tmp_path, base, keys=keys), *needles)


def test_missing_required_key(bases: dict[str, Path], tmp_path: Path) -> None:
    _refused(_broken(bases, tmp_path, drop=("llama.embedding_length",)), "lacks", "llama.embedding_length")
    _refused(_broken(bases, tmp_path, "moe", drop=("llama.expert_used_count",)), "llama.expert_used_count")


def test_huge_block_count_does_not_reach_an_allocation(bases: dict[str, Path], tmp_path: Path) -> None:
    """Model() checks first: the one-line error, not a MemoryError from sizing the KV cache."""
    path = _broken(bases, tmp_path, keys={"llama.block_count": (2**31, U32)})
    with GGUFFile(path) as f, pytest.raises(ModelError, match="llama.block_count"):
        Model(f)


def test_rope_scaling_factor_without_type_is_linear(bases: dict[str, Path], tmp_path: Path) -> None:
    """As llama.cpp reads it: no scaling type means linear; type "none" ignores the factor."""
    with GGUFFile(_broken(bases, tmp_path, keys={"llama.rope.scaling.factor": (4.0, F32)})) as f:
        assert check_model(f).rope_freq_scale == 0.25
    path = _broken(bases, tmp_path, keys={"llama.rope.scaling.factor": (4.0, F32),
                                          "llama.rope.scaling.type": ("none", STR)})
    with GGUFFile(path) as f:
        assert check_model(f).rope_freq_scale == 1.0


# --- vocabulary ----------------------------------------------------------------------------------

def test_embedding_rows_must_match_the_vocabulary(bases: dict[str, Path], tmp_path: Path) -> None:
    """97 tokens for a 96-row embedding table: refused at load (llama.cpp sizes token_embd by
    the token count too), not when token 96 is first looked up."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(3, 97)]
    path = _broken(bases, tmp_path, keys={"tokenizer.ggml.tokens": (tokens, ARR, STR),
                                          "tokenizer.ggml.scores": ([0.0] * 97, ARR, F32),
                                          "tokenizer.ggml.token_type": ([1] * 97, ARR, I32)})
    _refused(path, "token_embd.weight", "(96, 64)", "(97, 64)", "vocabulary")
    with GGUFFile(path) as f, pytest.raises(ModelError, match="token_embd.weight"):
        Model(f)


@pytest.mark.parametrize("key", ["tokenizer.ggml.scores", "tokenizer.ggml.token_type"])
def test_per_token_arrays_must_have_one_entry_per_token(bases: dict[str, Path], tmp_path: Path, key: str) -> None:
    value = ([0.0] * 95, ARR, F32) if key.endswith("scores") else ([1] * 95, ARR, I32)
    _refused(_broken(bases, tmp_path, keys={key: value}), key, "95 entries", "96 tokens")


def test_no_vocabulary(bases: dict[str, Path], tmp_path: Path) -> None:
    _refused(_broken(bases, tmp_path, drop=("tokenizer.ggml.tokens",)), "tokenizer.ggml.tokens")


# --- tensors -------------------------------------------------------------------------------------

def _zeros(*shape: int) -> np.ndarray:
    return np.zeros(shape, np.float32)


DENSE_LAYER = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
               "ffn_down")
TENSOR_CASES = {
    "output-rows": ({"output.weight": _zeros(95, 64)}, "dense", ["output.weight", "(95, 64)", "(96, 64)"]),
    "attn_k-shape": ({"blk.1.attn_k.weight": _zeros(64, 64)}, "dense", ["blk.1.attn_k.weight", "(32, 64)"]),
    "attn_q-shape": ({"blk.0.attn_q.weight": _zeros(64, 32)}, "dense", ["blk.0.attn_q.weight"]),
    "attn_output-shape": ({"blk.0.attn_output.weight": _zeros(64, 32)}, "dense", ["blk.0.attn_output.weight"]),
    "ffn_down-shape": ({"blk.1.ffn_down.weight": _zeros(96, 64)}, "dense", ["blk.1.ffn_down.weight"]),
    "norm-shape": ({"output_norm.weight": _zeros(32)}, "dense", ["output_norm.weight", "(64,)"]),
    "ffn_norm-2d": ({"blk.0.ffn_norm.weight": _zeros(1, 64)}, "dense", ["blk.0.ffn_norm.weight"]),
    "missing-ffn_up": ({"blk.0.ffn_up.weight": None}, "dense", ["lacks", "blk.0.ffn_up.weight"]),
    "missing-embd": ({"token_embd.weight": None}, "dense", ["lacks", "token_embd.weight"]),
    "extra-bias": ({"blk.0.attn_q.bias": _zeros(64)}, "dense", ["blk.0.attn_q/k/v.bias", "all three or none"]),
    "fused-qkv-shape": ({**{f"blk.{i}.attn_{x}.weight": None for i in (0, 1) for x in "qkv"},
                        **{f"blk.{i}.attn_qkv.weight": _zeros(96, 64) for i in (0, 1)}},
                       "dense", ["blk.0.attn_qkv.weight", "(96, 64)", "(128, 64)"]),
    "longrope-half": ({"rope_factors_long.weight": np.ones(8, np.float32)}, "dense", ["rope_factors_long.weight"]),
    "rope_freqs-shape": ({"rope_freqs.weight": np.ones(16, np.float32)}, "dense", ["rope_freqs.weight", "(8,)"]),
    "unknown-global": ({"output.bias": _zeros(96)}, "dense", ["output.bias", "not used"]),
    "qkv-fused-and-separate": ({"blk.0.attn_qkv.weight": _zeros(128, 64)}, "dense", ["attn_qkv", "both"]),
    "extra-layer": ({"blk.2.attn_norm.weight": _zeros(64)}, "dense", ["llama.block_count", "3 layers"]),
    "gap-in-layers": ({**{f"blk.1.{n}.weight": None for n in DENSE_LAYER}, "blk.2.attn_norm.weight": _zeros(64)},
                      "dense", ["llama.block_count", "no blk.1.* tensors"]),
    "experts-count": ({"blk.0.ffn_up_exps.weight": _zeros(3, 96, 64)}, "moe", ["blk.0.ffn_up_exps.weight"]),
    "router-shape": ({"blk.0.ffn_gate_inp.weight": _zeros(5, 64)}, "moe", ["blk.0.ffn_gate_inp.weight"]),
    "dense-ffn-in-moe": ({"blk.0.ffn_gate.weight": _zeros(96, 64)}, "moe", ["blk.0.ffn_gate.weight", "not used"]),
    "type-IQ4_NL": ({"blk.0.attn_v.weight": (np.zeros((32, 2 * 18), np.uint8), QT.IQ4_NL)}, "dense",
                    ["blk.0.attn_v.weight", "IQ4_NL", "cannot compute"]),
    "type-I32-norm": ({"blk.1.attn_norm.weight": (np.zeros(64, np.int32), QT.I32)}, "dense",
                      ["blk.1.attn_norm.weight", "I32"]),
}


@pytest.mark.parametrize("case", TENSOR_CASES, ids=list(TENSOR_CASES))
def test_bad_tensor_is_refused(bases: dict[str, Path], tmp_path: Path, case: str) -> None:
    tensors, base, needles = TENSOR_CASES[case]
    _refused(_broken(bases, tmp_path, base, tensors=tensors), *needles)


def test_unsupported_architecture(bases: dict[str, Path], tmp_path: Path) -> None:
    _refused(_broken(bases, tmp_path, keys={"general.architecture": ("gpt2", STR)}), "architecture 'gpt2'")


def test_llama_with_biases_runs_them(bases: dict[str, Path], tmp_path: Path) -> None:
    """q/k/v biases (optional in every architecture, as llama.cpp loads them) are bound and applied:
    a bias on v of 1 everywhere adds v's bias through attention (weights sum to 1) to the output."""
    from runtime.model import Model

    biases = {f"blk.{i}.attn_{x}.bias": _zeros(64 if x == "q" else 32) for i in (0, 1) for x in "qkv"}
    zero = _broken(bases, tmp_path, tensors=biases)
    with GGUFFile(zero) as f:
        assert check_model(f).qkv_bias
        with_zero = Model(f, n_ctx=16, n_threads=1).forward([1, 5, 9], 0)
    with GGUFFile(bases["dense"]) as f:
        plain = Model(f, n_ctx=16, n_threads=1).forward([1, 5, 9], 0)
    np.testing.assert_array_equal(with_zero, plain)  # zero biases change nothing
    ones = rewrite_gguf(bases["dense"], tmp_path / "ones.gguf", tensors={**biases, **{
        f"blk.{i}.attn_v.bias": np.ones(32, np.float32) for i in (0, 1)}})
    with GGUFFile(ones) as f:
        assert not np.allclose(Model(f, n_ctx=16, n_threads=1).forward([1, 5, 9], 0), plain, atol=1e-3)


def test_good_models_pass(bases: dict[str, Path]) -> None:
    for name, spec in (("dense", DENSE), ("moe", MOE)):
        with GGUFFile(bases[name]) as f:
            cfg = check_model(f)
        assert (cfg.n_vocab, cfg.n_layer, cfg.n_expert, cfg.head_dim) == (96, 2, spec.n_expert, 16)


# --- what packer build relies on -------------------------------------------------------------------

def test_check_model_needs_no_kernels(bases: dict[str, Path]) -> None:
    """check_model runs with the C kernels unimportable (the packer calls it at build time)."""
    code = ("import sys; sys.modules['runtime._kernels'] = None; sys.modules['cffi'] = None\n"
            "from runtime.model_check import check_model\nfrom runtime.gguf import GGUFFile\n"
            f"print(check_model(GGUFFile({str(bases['moe'])!r})).n_expert)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "4", r.stderr


def test_runtime_tensor_types_are_the_kernels_weight_types() -> None:
    from runtime import kernels
    from runtime.constants import RUNTIME_TENSOR_TYPES
    assert {int(t) for t in RUNTIME_TENSOR_TYPES} == set(kernels.WEIGHT_TYPES.values())


# --- the command line ----------------------------------------------------------------------------

CLI_CASES = {
    "block_count-string": ({"keys": {"llama.block_count": ("2", STR)}}, "llama.block_count"),
    "block_count-2^31": ({"keys": {"llama.block_count": (2**31, U32)}}, "llama.block_count"),
    "freq_base-1e-45": ({"keys": {"llama.rope.freq_base": (1e-45, F32)}}, "llama.rope.freq_base"),
    "scores-int-array": ({"keys": {"tokenizer.ggml.scores": ([0] * 96, ARR, I32)}}, "tokenizer.ggml.scores"),
    "embd-rows": ({"tensors": {"token_embd.weight": _zeros(90, 64)}}, "token_embd.weight"),
}


@pytest.mark.parametrize("case", CLI_CASES, ids=list(CLI_CASES))
def test_cli_one_line_error(bases: dict[str, Path], tmp_path: Path, case: str) -> None:
    changes, needle = CLI_CASES[case]
    path = _broken(bases, tmp_path, **changes)
    r = subprocess.run([sys.executable, "-m", "runtime", "-m", str(path), "-p", "hi", "-n", "2"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1, r.stderr
    assert_one_line_error(r, needle)
