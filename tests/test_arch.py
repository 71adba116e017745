"""Architectures as data (runtime/arch.py): the float64 reference forward pass of every architecture
and flag against llama.cpp, the C forward pass on those the runtime runs, model_check's reading
of the tables, and its refusals of the rest.

The oracle: tests/fixtures/arch/llama_cpp_logits.json, llama.cpp's last-position logits for a tiny
random-weight F32 model per architecture and flag (tools/make_arch_fixtures.py). The models are
written again here from their recorded specs (tools/random_gguf.py is seeded; the SHA-256 proves
the bytes are the ones llama.cpp ran). The reference (tests/tiny_models.py) is what the C forward
pass will be held to, so it is held to llama.cpp first; each flag is shown to matter by turning it
off and seeing the reference move away from llama.cpp.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.arch import ARCHS, swa_layers
from runtime.gguf import GGUFFile
from runtime.model_check import C_FORWARD_FEATURES, ModelError, check_model, needed_features, read_model
from tests.cliutil import assert_one_line_error
from tests.tiny_models import TinySpec, reference_logits, write_tiny_llama

ROOT = Path(__file__).resolve().parent.parent
DOC = json.loads((ROOT / "tests/fixtures/arch/llama_cpp_logits.json").read_text())
NAMES = sorted(DOC["models"])
# float64 against llama.cpp's float32 with an F16 KV cache: measured 0.004-0.018% of the range
TOLERANCE = 0.001
# Turning a flag off must move the reference at least this far from llama.cpp
MATTERS = 0.01


def spec_of(name: str) -> TinySpec:
    return TinySpec(**{**DOC["base"], **DOC["models"][name]["spec"]})


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, TinySpec]]:
    d = tmp_path_factory.mktemp("arch")
    out = {}
    for name in NAMES:
        path = d / f"{name}.gguf"
        spec = write_tiny_llama(path, spec_of(name))
        assert hashlib.sha256(path.read_bytes()).hexdigest() == DOC["models"][name]["sha256"], \
            f"{name}: tools/random_gguf.py no longer writes the file llama.cpp ran"
        out[name] = (path, spec)
    return out


def _worst(spec: TinySpec, name: str, n_ctx: int | None = None) -> float:
    """The largest |reference - llama.cpp| over the recorded prompts, as a fraction of the range."""
    worst = 0.0
    for p in DOC["models"][name]["prompts"]:
        want = np.asarray(p["last_logits"])
        got = reference_logits(spec, p["tokens"], n_ctx)[-1]
        worst = max(worst, float(np.abs(got - want).max() / (want.max() - want.min())))
    return worst


@pytest.mark.parametrize("name", NAMES)
def test_reference_matches_llama_cpp(models, name: str) -> None:
    _, spec = models[name]
    assert _worst(spec, name) <= TOLERANCE


# name -> (what is turned off, the spec changes, n_ctx for the reference)
WITHOUT = {
    "llama-rope_freqs": [("rope_freqs factors", {"rope_freqs": False}, None)],
    "llama-yarn": [("YaRN (linear instead)", {"rope_yarn": None, "rope_linear": 4.0}, None)],
    "llama-bias-fused_qkv": [("q/k/v biases", {"qkv_bias": False}, None)],
    "qwen2": [("NEOX rope (llama's pairs)", {"arch": "llama"}, None), ("q/k/v biases", {"qkv_bias": False}, None)],
    "qwen3": [("q/k norms and NEOX rope", {"arch": "llama"}, None)],
    "qwen3moe": [("q/k norms and NEOX rope", {"arch": "llama"}, None)],
    "gemma3": [("the sliding window", {"n_swa": 0}, None), ("the final soft-cap", {"final_softcap": 0.0}, None),
               ("the sliding-window layers' rope base", {"rope_base_swa": 1e6}, None)],
    "gemma3-pattern2": [("the window pattern", {"swa_pattern": 6}, None)],
    "phi3-longrope": [("the long factors (short ones)", {}, 32), ("the attention factor", {"rope_attn_factor": None}, None)],
    "phi3-short": [("the short factors (long ones)", {}, 8192)],
}


@pytest.mark.parametrize("name,index", [(n, i) for n in NAMES for i in range(len(WITHOUT[n]))])
def test_each_flag_matters(models, name: str, index: int) -> None:
    """The fixtures exercise every flag: without it the reference is far from llama.cpp."""
    _, spec = models[name]
    what, changes, n_ctx = WITHOUT[name][index]
    off = dataclasses.replace(spec, **changes)
    off.weights.update(spec.weights)
    assert _worst(off, name, n_ctx) > MATTERS, f"{name} without {what} still matches llama.cpp"


def test_gemma3_architecture_differs_in_every_gemma_flag(models) -> None:
    """Gemma 3 read as llama (no NEOX, norms, GELU, embedding scale): far from llama.cpp."""
    _, spec = models["gemma3"]
    arch = ARCHS["gemma3"]
    assert (arch.rope_neox, arch.qk_norm, arch.post_norms, arch.activation, arch.embd_scale) == (
        True, True, True, "gelu_tanh", True)
    for field, value in (("rope_neox", False), ("qk_norm", False), ("activation", "silu"), ("embd_scale", False)):
        ARCHS["gemma3-test"] = dataclasses.replace(arch, name="gemma3-test", **{field: value})
        try:
            off = dataclasses.replace(spec, arch="gemma3-test")
            off.weights.update(spec.weights)
            assert _worst(off, "gemma3") > MATTERS, field
        finally:
            del ARCHS["gemma3-test"]


# --- model_check reads the tables --------------------------------------------------------------

EXPECTED_FEATURES = {
    "llama-rope_freqs": ["rope frequency factors (rope_freqs.weight)"],
    "llama-yarn": ["YaRN rope scaling"],
    "llama-bias-fused_qkv": ["q/k/v biases", "a fused attn_qkv tensor", "a fused attn_qkv.bias"],
    "qwen2": ["NEOX rope", "q/k/v biases"],
    "qwen3": ["NEOX rope", "q/k RMS norms"],
    "qwen3moe": ["NEOX rope", "q/k RMS norms"],
    "gemma3": ["NEOX rope", "q/k RMS norms", "post-attention/post-FFN norms", "gelu_tanh activation",
               "an embedding scale", "sliding-window attention", "final logit soft-capping"],
    "gemma3-pattern2": ["NEOX rope", "q/k RMS norms", "post-attention/post-FFN norms", "gelu_tanh activation",
                        "an embedding scale", "sliding-window attention"],
    "phi3-longrope": ["NEOX rope", "LongRoPE factors (rope_factors_long/short)", "a rope attention factor",
                      "a fused attn_qkv tensor", "a fused gate/up ffn_up tensor"],
    "phi3-short": ["NEOX rope", "LongRoPE factors (rope_factors_long/short)", "a fused gate/up ffn_up tensor"],
}


@pytest.mark.parametrize("name", NAMES)
def test_read_model_gives_the_flags(models, name: str) -> None:
    path, spec = models[name]
    with GGUFFile(path) as f:
        cfg = read_model(f)
        assert check_model(f) == cfg  # the C forward pass has every feature these need
    assert cfg.arch == spec.arch and cfg.head_dim == spec.head_dim and cfg.n_ff == spec.n_ff
    assert needed_features(cfg) == EXPECTED_FEATURES[name]


def test_check_model_refuses_what_c_lacks(models, monkeypatch: pytest.MonkeyPatch) -> None:
    """A feature the C forward pass lacks (here: as if NEOX rope and the q/k norms were not there
    yet) is refused in one line naming exactly the missing ones."""
    from runtime import model_check

    monkeypatch.setattr(model_check, "C_FORWARD_FEATURES", C_FORWARD_FEATURES - {"NEOX rope", "q/k RMS norms"})
    path, _ = models["qwen3"]
    with GGUFFile(path) as f, pytest.raises(ModelError) as e:
        check_model(f)
    assert str(e.value) == ("model: this qwen3 model needs NEOX rope, q/k RMS norms, which this runtime's forward "
                            "pass does not implement yet")


@pytest.mark.parametrize("name", NAMES)
def test_c_forward_matches_llama_cpp(models, name: str) -> None:
    """The C forward pass with the architecture's flags, on the F32 tiny models: llama.cpp's logits
    within 0.1% of the range (measured 0.004-0.014%), as the reference."""
    from runtime.model import Model

    path, spec = models[name]
    with GGUFFile(path) as f:
        model = Model(f, n_ctx=spec.n_ctx, n_threads=2)
        for p in DOC["models"][name]["prompts"]:
            want = np.asarray(p["last_logits"])
            got = model.forward(p["tokens"], 0)
            assert np.abs(got - want).max() <= TOLERANCE * (want.max() - want.min()), f"{name}: {len(p['tokens'])} tokens"


def test_sliding_window_layers_as_llama_cpp() -> None:
    """Gemma 3: five local layers, then a global one (llama.cpp's set_swa_pattern(6))."""
    assert swa_layers(6, 12) == (True,) * 5 + (False,) + (True,) * 5 + (False,)
    assert swa_layers(2, 4) == (True, False, True, False)
    assert swa_layers(1, 3) == (False,) * 3 and swa_layers(0, 2) == (True, True)


def test_real_qwen2(qwen25_coder_path: Path) -> None:
    with GGUFFile(qwen25_coder_path) as f:
        cfg = read_model(f)
        assert check_model(f) == cfg
    assert (cfg.arch, cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_head_kv, cfg.head_dim) == ("qwen2", 24, 896, 14, 2, 64)
    assert (cfg.rope_neox, cfg.qkv_bias, cfg.rope_base, cfg.qk_norm, cfg.n_swa) == (True, True, 1e6, False, 0)


def test_real_gemma3(gemma3_path: Path) -> None:
    with GGUFFile(gemma3_path) as f:
        cfg = read_model(f)
        assert check_model(f) == cfg
    assert (cfg.arch, cfg.n_layer, cfg.n_embd, cfg.head_dim, cfg.q_dim, cfg.n_vocab) == ("gemma3", 18, 640, 256, 1024, 262144)
    assert (cfg.n_swa, cfg.rope_base, cfg.rope_base_swa, cfg.activation) == (512, 1e6, 10000.0, "gelu_tanh")
    assert cfg.swa_layers == swa_layers(6, 18) and cfg.embd_scale == pytest.approx(640 ** 0.5)
    assert cfg.attn_scale == 1 / 16 and cfg.final_softcap == 0.0


def test_packer_build_refuses_at_build_time(models, tmp_path: Path) -> None:
    """`packer build` refuses, in one line, a tensor the architecture's table does not know (it would
    be ignored), before writing anything (the model is checked before the runtime is read: any
    existing file stands in for it here)."""
    from tests.tiny_models import rewrite_gguf

    path = rewrite_gguf(models["phi3-short"][0], tmp_path / "phi3.gguf", tensors={"output.bias": np.zeros(512, np.float32)})
    out = tmp_path / "phi3.llamafile"
    stand_in = tmp_path / "runtime"
    stand_in.write_bytes(b"\0")
    r = subprocess.run([sys.executable, "-m", "packer.cli", "build", str(path), "-o", str(out), "--runtime", str(stand_in)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode != 0 and not out.exists()
    assert_one_line_error(r, "tensor output.bias is not used by this runtime's phi3 forward pass")
