"""The `arch` part of tools/make_hf_fixtures.py: tiny checkpoints of the architectures beyond the
llama family (dev only, run in the torch venv described there).

Each model (all: vocabulary of Mistral's SentencePiece model cut to 512 pieces, n_embd 64, head
dim 32, 2 heads / 1 KV head, n_ff 128, 2 layers, random weights as _randomize makes them):
- `llama3`: LlamaForCausalLM, BF16, rope_scaling llama3 (theta 500000, factor 8, low/high
  frequency factors 1/4, original context 8192), tied embeddings;
- `qwen3`: Qwen3ForCausalLM, F16, q/k norms, tied embeddings;
- `gemma3`: Gemma3ForCausalLM (gemma3_text), BF16, post norms, final logit soft-capping 30;
- `phi3`: Phi3ForCausalLM, F16, fused qkv and gate_up projections, LongRoPE (original context 256,
  context 1024), 2 KV heads.
Recorded as the llama-family fixtures are: the folder, `<name>.llama_cpp.json` (llama.cpp's
conversion described, and the Q4_K_M quantization's hash), `<name>.transformers.json` (float32
logits). `llama3.llama_cpp.json` also keeps `rope_freqs_grid`: for the rope settings of
LLAMA3_GRID, the converter's rope_freqs and the torch float32 inverse frequencies it starts from
(its pow is a vectorized approximation: this tells its last bits apart from the factor formula).
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}


def arch_models():
    from transformers import Gemma3TextConfig, LlamaConfig, Phi3Config, Qwen3Config

    common = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
    yield ("llama3", "LlamaForCausalLM",
           LlamaConfig(max_position_embeddings=131072, tie_word_embeddings=True, head_dim=32,
                       rope_scaling={**LLAMA3_ROPE, "rope_theta": 500000.0}, rope_theta=500000.0, **common),
           "bfloat16", 11)
    yield ("qwen3", "Qwen3ForCausalLM",
           Qwen3Config(max_position_embeddings=512, tie_word_embeddings=True, head_dim=32, rope_theta=1e6,
                       use_sliding_window=False, **common), "float16", 12)
    yield ("gemma3", "Gemma3ForCausalLM",
           Gemma3TextConfig(max_position_embeddings=512, head_dim=32, query_pre_attn_scalar=32, sliding_window=8,
                            final_logit_softcapping=30.0, rope_theta=1e6, rope_local_base_freq=10000.0,
                            pad_token_id=0, **common), "bfloat16", 13)
    n_half = 16   # head_dim / 2 frequencies
    phi = dict(common, num_key_value_heads=2)
    yield ("phi3", "Phi3ForCausalLM",
           Phi3Config(max_position_embeddings=1024, original_max_position_embeddings=256, tie_word_embeddings=False,
                      rope_theta=10000.0, pad_token_id=0,
                      rope_scaling={"type": "longrope", "rope_type": "longrope",
                                    "long_factor": [1.0 + 0.25 * i for i in range(n_half)],
                                    "short_factor": [1.0 + 0.01 * i for i in range(n_half)]},
                      **phi), "float16", 14)


def torch_llama3_freqs(base: float, dim: int) -> list[float]:
    """The inverse frequencies llama.cpp's converter computes (torch float32 pow), as floats."""
    import torch

    return (1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))).tolist()


#: Llama 3 rope settings: (head dim, theta, factor, low, high, original context). The first two are
#: Llama 3.1 8B/70B/405B's and Llama 3.2 1B/3B's; the rest spread the frequencies about.
LLAMA3_GRID = [(128, 500000.0, 8.0, 1.0, 4.0, 8192), (64, 500000.0, 32.0, 1.0, 4.0, 8192),
               (128, 500000.0, 32.0, 1.0, 4.0, 8192)] + [
    (dim, base, 16.0, 2.0, 8.0, 4096) for dim in (64, 96, 128, 256) for base in (10000.0, 50000.0, 1e6, 8e6)]


def llama3_grid(llama_cpp: Path) -> list[dict]:
    """llama.cpp's converter's own rope_freqs (its LlamaModel.generate_extra_tensors, on a bare
    instance) for each LLAMA3_GRID setting, and the torch float32 inverse frequencies it starts
    from: float32 bit patterns."""
    import numpy as np

    sys.path.insert(0, str(llama_cpp))
    from conversion.llama import LlamaModel

    out = []
    for dim, base, factor, low, high, old in LLAMA3_GRID:
        m = LlamaModel.__new__(LlamaModel)
        m.hparams = {"head_dim": dim, "hidden_size": dim * 4, "num_attention_heads": 4}
        rp = {"rope_type": "llama3", "rope_theta": base, "factor": factor, "low_freq_factor": low,
              "high_freq_factor": high, "original_max_position_embeddings": old}
        m.rope_parameters = rp
        (name, t), = list(m.generate_extra_tensors())
        assert name == "rope_freqs.weight"
        freqs = np.asarray(torch_llama3_freqs(base, dim), np.float32)
        out.append({"head_dim": dim, "rope": rp, "rope_freqs_bits": t.numpy().view(np.uint32).tolist(),
                    "torch_freqs_bits": freqs.view(np.uint32).tolist()})
    return out


def arch_fixtures(args, out: Path, only: str | None) -> None:
    from tools.make_hf_fixtures import MIXES, _convert, _describe, _quantized, _randomize, _tokenizer_files

    for name, arch, config, dtype, seed in arch_models():
        if only and name != only:
            continue
        d = out / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        _save_arch(name, arch, config, dtype, seed, d, out, _randomize, _tokenizer_files)
        with tempfile.TemporaryDirectory() as tmp:
            g = Path(tmp) / "model.gguf"
            _convert(d, args.llama_cpp, g)
            desc = _describe(g)
            desc["quantized"] = {mix: _quantized(g, args.llama_python, mix) for mix in MIXES[:1]}
        if name == "llama3":
            desc["rope_freqs_grid"] = llama3_grid(args.llama_cpp)
        (out / f"{name}.llama_cpp.json").write_text(json.dumps(desc, indent=1))
        print(f"{name}: {sum(f.stat().st_size for f in d.iterdir()) / 1e6:.2f} MB", file=sys.stderr)


def _save_arch(name, arch, config, dtype, seed, d: Path, out: Path, randomize, tokenizer_files) -> None:
    import numpy as np
    import torch
    import transformers
    from sentencepiece import SentencePieceProcessor

    from tools.make_hf_fixtures import PROMPTS

    torch.manual_seed(0)
    model = getattr(transformers, arch)(config)
    randomize(model, seed=seed)
    model = model.to(getattr(torch, dtype))
    model.save_pretrained(d)
    tokenizer_files(d)
    sp = SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    prompts = [[1] + sp.encode(p) for p in PROMPTS]
    model = model.float().eval()
    with torch.no_grad():
        logits = [model(torch.tensor([ids])).logits[0, -1].numpy().astype(np.float32).tolist() for ids in prompts]
    (out / f"{name}.transformers.json").write_text(json.dumps({
        "prompts": prompts, "logits": logits, "transformers": transformers.__version__, "torch": torch.__version__}))
    assert math.isfinite(sum(logits[0]))
