"""`packer build FOLDER` for the architectures beyond the llama layer, against llama.cpp's own
converter and `transformers` (tests/fixtures/hf, made by tools/make_hf_fixtures.py --part arch:
tiny random-weight checkpoints written by transformers, Mistral's SentencePiece model cut to 512
pieces as their tokenizer):

- llama3: LlamaForCausalLM with rope_scaling llama3 (the generated rope_freqs tensor), BF16;
- qwen3: Qwen3ForCausalLM (q/k norms), F16; gemma3: Gemma3ForCausalLM (norms stored as w - 1,
  post norms, soft-capping, sliding window), BF16; gemma3-mm: Gemma3ForConditionalGeneration (the
  text model under language_model, a vision tower and projector left out), BF16;
  phi3: Phi3ForCausalLM (fused qkv and gate_up, LongRoPE factors, added tokens), F16;
- with SmolLM2's BPE tokenizer.json, the 49152-row embedding rebuilt at test time: qwen3moe
  (Qwen3MoeForCausalLM, 4 experts), llama3-bpe (Llama 3 rope and a byte-level BPE vocabulary).

Each: the conversion's keys (types, values, order) and tensors (names, shapes, types, SHA-256) are
llama.cpp's convert_hf_to_gguf.py's; the packed entry is its file byte for byte, and with
--quantize Q4_K_M llama_model_quantize's file; the engine's logits on the conversion match
transformers' float32 forward pass.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from packer.build import build
from packer.cli import main as packer_main
from packer.hf.archs import llama3_factors_from_freqs, llama3_rope_factors
from tests.test_hf_import import (_copy, _engine_logits, _rewrite_header, _set_config, assert_conversion, entry_sha,
                                  llama_cpp, write_gguf)

FIX = Path(__file__).resolve().parent / "fixtures" / "hf"
MODELS = ("llama3", "qwen3", "gemma3", "gemma3-mm", "phi3")
LABEL = {"llama3": "BF16", "qwen3": "F16", "gemma3": "BF16", "gemma3-mm": "BF16", "phi3": "F16"}


@pytest.mark.parametrize("name", MODELS)
def test_conversion_is_llama_cpps(name: str) -> None:
    assert_conversion(name)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("mix", [None, "Q4_K_M"])
def test_packed_entry_is_llama_cpps_file(runtime_exe, tmp_path, name: str, mix: str | None) -> None:
    ref = llama_cpp(name)
    want = ref if mix is None else ref["quantized"][mix]
    out = tmp_path / "m.llamafile"
    r = build(FIX / name, out, runtime_exe, progress=False, quantize=mix, threads=2)
    assert r.model_entry == f"{name}.{mix or LABEL[name]}.gguf"
    assert entry_sha(out) == (r.model_entry, want["file_sha256"])


@pytest.mark.parametrize("name", MODELS)
def test_logits_match_transformers(tmp_path, name: str) -> None:
    """Top token equal, top-20 logits within 1% of the logit range (the fidelity acceptance)."""
    ref = json.loads((FIX / f"{name}.transformers.json").read_text())
    gguf = write_gguf(FIX / name, None, tmp_path / "m.gguf")
    for prompt, want in zip(ref["prompts"], ref["logits"]):
        got, want = _engine_logits(gguf, prompt), np.asarray(want, np.float64)
        top = np.argsort(-want)[:20]
        assert int(np.argmax(got)) == int(top[0]), prompt
        assert np.abs(got[top] - want[top]).max() <= 0.01 * (want.max() - want.min()), prompt


def test_gemma3_transformers4_config_is_llama_cpps_file(runtime_exe, tmp_path) -> None:
    """The same checkpoint with config.json as transformers 4 wrote it (rope_theta and
    rope_local_base_freq at the top level, no rope_parameters): llama.cpp's file from that."""
    import shutil

    from tools.hf_arch_fixtures import gemma3_legacy_config

    folder = Path(shutil.copytree(FIX / "gemma3", tmp_path / "gemma3-legacy"))
    gemma3_legacy_config(folder)
    out = tmp_path / "m.llamafile"
    r = build(folder, out, runtime_exe, progress=False, threads=2)
    assert entry_sha(out) == (r.model_entry, llama_cpp("gemma3")["legacy_config_file_sha256"])


def _bits(x: list[int]) -> np.ndarray:
    return np.asarray(x, np.uint32).view(np.float32)


def _grid():
    return llama_cpp("llama3")["rope_freqs_grid"]


def test_llama3_rope_factors_are_llama_cpps() -> None:
    """rope_freqs for Llama 3.1/3.2's rope settings and 16 others, against the converter's own
    generate_extra_tensors: the factor formula is exact given the converter's (torch) inverse
    frequencies; ours are float64 pow rounded to float32, within 1 ulp of torch's vectorized pow;
    on every recorded setting the factors come out byte-identical all the same."""
    for e in _grid():
        rp, ref, torch_freqs = e["rope"], _bits(e["rope_freqs_bits"]), _bits(e["torch_freqs_bits"])
        from_theirs = llama3_factors_from_freqs(torch_freqs, rp["factor"], rp["low_freq_factor"],
                                                rp["high_freq_factor"], rp["original_max_position_embeddings"])
        assert from_theirs.tobytes() == ref.tobytes(), rp
        dim = e["head_dim"]
        expo = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
        ours = np.float32(1) / (np.float64(rp["rope_theta"]) ** expo.astype(np.float64)).astype(np.float32)
        assert np.abs(ours.view(np.int32).astype(np.int64) - torch_freqs.view(np.int32)).max() <= 1, rp
        assert llama3_rope_factors(rp, dim).tobytes() == ref.tobytes(), rp


# -- user errors -------------------------------------------------------------------------------

def test_phi3_rope_factor_count_is_one_line_error(runtime_exe, tmp_path, capsys) -> None:
    folder = _copy("phi3", tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rope_parameters"]["long_factor"] = cfg["rope_parameters"]["long_factor"][:-1]
    _set_config(folder, rope_parameters=cfg["rope_parameters"])
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = packer_main(["build", str(folder), "-o", str(tmp_path / "x.llamafile"), "--runtime", str(runtime_exe),
                      "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc != 0 and len(err) == 1 and err[0].startswith("error: ") and "long_factor" in err[0], err
    assert str(folder) in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# -- SmolLM2's BPE vocabulary (Qwen3 MoE, Llama 3): the embedding rebuilt --------------------------

BPE_MODELS = ("qwen3moe", "llama3-bpe")


def bpe_checkpoint(name: str, dst: Path, smollm2_path: Path) -> Path:
    """The checkpoint whole in dst/name: the committed files, tokenizer.json rebuilt from the
    SmolLM2 GGUF and the embedding shard from its generator (tools/hf_arch_fixtures.py)."""
    import shutil

    from tools.hf_arch_fixtures import write_embedding
    from tools.make_hf_fixtures import smollm2_tokenizer_json

    folder = Path(shutil.copytree(FIX / name, dst / name))
    (folder / "tokenizer.json").write_text(json.dumps(smollm2_tokenizer_json(smollm2_path)))
    write_embedding(folder, name)
    return folder


@pytest.fixture(scope="module", params=BPE_MODELS)
def bpe_folder(request, smollm2_path, tmp_path_factory) -> Path:
    return bpe_checkpoint(request.param, tmp_path_factory.mktemp("bpe"), smollm2_path)


def test_bpe_model_conversion_is_llama_cpps(bpe_folder) -> None:
    assert_conversion(bpe_folder.name, bpe_folder)


@pytest.mark.parametrize("mix", [None, "Q4_K_M"])
def test_bpe_model_packed_entry_is_llama_cpps_file(runtime_exe, bpe_folder, tmp_path, mix) -> None:
    ref = llama_cpp(bpe_folder.name)
    want = ref if mix is None else ref["quantized"][mix]
    out = tmp_path / "m.llamafile"
    r = build(bpe_folder, out, runtime_exe, progress=False, quantize=mix, threads=2)
    assert entry_sha(out) == (r.model_entry, want["file_sha256"])


def test_bpe_model_logits_match_transformers(bpe_folder, tmp_path) -> None:
    """transformers' top 64 logits recorded: the engine's top token is theirs, its logits at their
    top 20 within 1% of their logit range."""
    ref = json.loads((FIX / f"{bpe_folder.name}.transformers.json").read_text())
    gguf = write_gguf(bpe_folder, None, tmp_path / "m.gguf")
    for i, prompt in enumerate(ref["prompts"]):
        got = _engine_logits(gguf, prompt)
        ids, want = np.asarray(ref["top_ids"][i][:20]), np.asarray(ref["top_logits"][i][:20], np.float64)
        assert int(np.argmax(got)) == int(ids[0]), prompt
        assert np.abs(got[ids] - want).max() <= 0.01 * (ref["max"][i] - ref["min"][i]), prompt


def test_qwen3moe_expert_missing_is_one_line_error(runtime_exe, smollm2_path, tmp_path, capsys) -> None:
    """Expert 3's up_proj renamed expert 9 (header and index): the layer's experts are incomplete."""
    folder = bpe_checkpoint("qwen3moe", tmp_path, smollm2_path)
    old, new = "model.layers.0.mlp.experts.3.up_proj.weight", "model.layers.0.mlp.experts.9.up_proj.weight"
    _rewrite_header(folder / "model-00001-of-00002.safetensors", lambda h: h.__setitem__(new, h.pop(old)))
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"][new] = index["weight_map"].pop(old)
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = packer_main(["build", str(folder), "-o", str(tmp_path / "x.llamafile"), "--runtime", str(runtime_exe),
                      "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc != 0 and len(err) == 1 and err[0].startswith("error: "), err
    assert "model-00001-of-00002.safetensors: layer 0 lacks up_proj" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
