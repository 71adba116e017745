"""The `arch` part of tools/make_hf_fixtures.py: tiny checkpoints of the architectures beyond the
llama family (dev only, run in the torch venv described there).

Each model (all: vocabulary of Mistral's SentencePiece model cut to 512 pieces, n_embd 64, head
dim 32, 2 heads / 1 KV head, n_ff 128, 2 layers, random weights as _randomize makes them):
- `llama3`: LlamaForCausalLM, BF16, rope_scaling llama3 (theta 500000, factor 8, low/high
  frequency factors 1/4, original context 8192), tied embeddings;
- `qwen3`: Qwen3ForCausalLM, F16, q/k norms, tied embeddings;
- `gemma3`: Gemma3ForCausalLM (gemma3_text), BF16, post norms, final logit soft-capping 30;
- `gemma3-mm`: Gemma3ForConditionalGeneration (Gemma 3 4B+'s form: the text model under
  model.language_model, a tiny SigLIP vision tower and projector the text conversion leaves out),
  1 layer;
- `phi3`: Phi3ForCausalLM, F16, fused qkv and gate_up projections, LongRoPE (original context 256,
  context 1024), 2 KV heads, vocab_size 520: added tokens past the 512 pieces in
  tokenizer_config.json and tokenizer.json, the rest [PADi].
Recorded as the llama-family fixtures are: the folder, `<name>.llama_cpp.json` (llama.cpp's
conversion described, and the Q4_K_M quantization's hash), `<name>.transformers.json` (float32
logits). `llama3.llama_cpp.json` also keeps `rope_freqs_grid`: for the rope settings of
LLAMA3_GRID, the converter's rope_freqs and the torch float32 inverse frequencies it starts from
(its pow is a vectorized approximation: this tells its last bits apart from the factor formula).
`gemma3.llama_cpp.json` also has `legacy_config_file_sha256`: the converter's file from the same
checkpoint with a transformers 4 style config.json (gemma3_legacy_config).

The `moe` part, with SmolLM2's BPE tokenizer (1 layer, BF16, tied embeddings):
- `qwen3moe`: Qwen3MoeForCausalLM, 4 experts (2 used, n_ff 64, weights normalized): llama.cpp's
  converter takes no SentencePiece model for this class and needs a pre-tokenizer it knows;
- `llama3-bpe`: LlamaForCausalLM, rope llama3 as `llama3`, a byte-level BPE tokenizer.json (no
  real Llama 3 tokenizer is at hand offline; SmolLM2's is GPT-2 style, as Llama 3's is).
Their 49152 rows of embedding are not committed: the folders have config files and the layers'
shard; the tests rebuild tokenizer.json from the SmolLM2 GGUF and the embedding shard from
`bpe_embedding` (integers from PCG64's raw stream, exact in BF16). transformers.json keeps the
top 64 logits (ids, values) and each prompt's logit min and max; llama_cpp.json's key arrays are
SHA-256 of their JSON (with length and head).
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}


def arch_models():
    from transformers import Gemma3TextConfig, LlamaConfig, Phi3Config, Qwen3Config, Qwen3MoeConfig

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
    from transformers import Gemma3Config, SiglipVisionConfig

    # no soft-capping, as Gemma 3 4B+ (transformers' Gemma3ForConditionalGeneration would not apply it)
    text = Gemma3TextConfig(max_position_embeddings=512, head_dim=32, query_pre_attn_scalar=32, sliding_window=8,
                            final_logit_softcapping=None, rope_theta=1e6, rope_local_base_freq=10000.0,
                            pad_token_id=0, **dict(common, num_hidden_layers=1))
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    yield ("gemma3-mm", "Gemma3ForConditionalGeneration",
           Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4), "bfloat16", 18)
    n_half = 16   # head_dim / 2 frequencies
    phi = dict(common, num_key_value_heads=2, vocab_size=520)   # 8 ids past the SentencePiece model
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


def gemma3_legacy_config(folder: Path) -> None:
    """folder's Gemma 3 config.json rewritten as transformers 4 wrote it: rope_theta,
    rope_local_base_freq and sliding_window_pattern at the top, rope_scaling null."""
    cfg = json.loads((folder / "config.json").read_text())
    rp = cfg.pop("rope_parameters")
    for key in ("layer_types", "_sliding_window_pattern"):
        cfg.pop(key, None)
    cfg.update(rope_theta=rp["full_attention"]["rope_theta"],
               rope_local_base_freq=rp["sliding_attention"]["rope_theta"],
               rope_scaling=None, sliding_window_pattern=6)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))


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
            if name == "gemma3":   # the same checkpoint with a transformers 4 style config.json
                legacy = Path(tmp) / "gemma3-legacy"
                shutil.copytree(d, legacy)
                gemma3_legacy_config(legacy)
                _convert(legacy, args.llama_cpp, Path(tmp) / "legacy.gguf")
                desc["legacy_config_file_sha256"] = _describe(Path(tmp) / "legacy.gguf")["file_sha256"]
        if name == "llama3":
            desc["rope_freqs_grid"] = llama3_grid(args.llama_cpp)
        (out / f"{name}.llama_cpp.json").write_text(json.dumps(desc, indent=1))
        print(f"{name}: {sum(f.stat().st_size for f in d.iterdir()) / 1e6:.2f} MB", file=sys.stderr)


def _phi3_added_tokens(d: Path) -> None:
    """Phi-3's extra tokens past the SentencePiece model, as its releases have them: in
    tokenizer_config.json's added_tokens_decoder (one special, one not) and tokenizer.json's
    added_tokens (only that list: the converter reads nothing else of it for Phi-3)."""
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    entry = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    cfg["added_tokens_decoder"].update({"512": {"content": "<|assistant|>", **entry, "special": True},
                                        "513": {"content": "\u2581hello", **entry, "special": False}})
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    added = [{"id": int(i), **e} for i, e in cfg["added_tokens_decoder"].items()]
    added.append({"id": 514, "content": "<|end|>", **entry, "special": True})
    (d / "tokenizer.json").write_text(json.dumps({"version": "1.0", "added_tokens": added}, indent=2))


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
    if name == "phi3":
        _phi3_added_tokens(d)
    sp = SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    prompts = [[1] + sp.encode(p) for p in PROMPTS]
    model = model.float().eval()
    with torch.no_grad():
        logits = [model(torch.tensor([ids])).logits[0, -1].numpy().astype(np.float32).tolist() for ids in prompts]
    (out / f"{name}.transformers.json").write_text(json.dumps({
        "prompts": prompts, "logits": logits, "transformers": transformers.__version__, "torch": torch.__version__}))
    assert math.isfinite(sum(logits[0]))


# -- SmolLM2's BPE vocabulary: the embedding made at test time ----------------------------------

BPE_VOCAB, BPE_EMBD = 49152, 64
BPE_SEEDS = {"qwen3moe": 16, "llama3-bpe": 17}
EMBED_SHARD = "model-00002-of-00002.safetensors"


def bpe_models():
    """(name, transformers class, config) of the checkpoints with SmolLM2's tokenizer."""
    import transformers

    common = dict(vocab_size=BPE_VOCAB, hidden_size=BPE_EMBD, intermediate_size=128, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=32, rms_norm_eps=1e-5, bos_token_id=1,
                  eos_token_id=2, tie_word_embeddings=True)
    yield "qwen3moe", "Qwen3MoeForCausalLM", transformers.Qwen3MoeConfig(
        max_position_embeddings=512, rope_theta=1e6, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
        norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[], **common)
    yield "llama3-bpe", "LlamaForCausalLM", transformers.LlamaConfig(
        max_position_embeddings=131072, rope_scaling={**LLAMA3_ROPE, "rope_theta": 500000.0}, rope_theta=500000.0,
        **common)


def bpe_embedding(name: str) -> np.ndarray:
    """name's embedding: (k - 64) / 32 for k the top 7 bits of PCG64's raw outputs (a bit stream
    NumPy keeps stable), float32 values exact in BF16."""
    raw = np.random.PCG64(BPE_SEEDS[name]).random_raw(BPE_VOCAB * BPE_EMBD)
    k = (raw >> np.uint64(57)).astype(np.float32)
    return ((k - 64) / 32).reshape(BPE_VOCAB, BPE_EMBD)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """A safetensors file: name -> (dtype name, array of that dtype's bytes), in name order."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        dtype, arr = tensors[name]
        blob = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))


def write_embedding(folder: Path, name: str) -> None:
    """name's embedding shard (BF16: the top halves of the float32 values, exact)."""
    bits = (bpe_embedding(name).view(np.uint32) >> np.uint32(16)).astype(np.uint16)
    write_safetensors(folder / EMBED_SHARD, {"model.embed_tokens.weight": ("BF16", bits)})


def bpe_fixtures(args, out: Path, only: str | None) -> None:
    for name, arch, config in bpe_models():
        if not only or only == name:
            _bpe_fixture(args, out, name, arch, config)


def _bpe_fixture(args, out: Path, name: str, arch: str, config) -> None:
    import torch
    import transformers
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    from tools.make_hf_fixtures import (PROMPTS, _convert, _describe, _quantized, _randomize,
                                        smollm2_tokenizer_json)

    d = out / name
    shutil.rmtree(d, ignore_errors=True)
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config)
    _randomize(model, seed=BPE_SEEDS[name])
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.from_numpy(bpe_embedding(name)))
    model = model.to(torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / name
        model.save_pretrained(full)
        weights = load_file(str(full / "model.safetensors"))
        (full / "model.safetensors").unlink()
        layers = {k: ("BF16", v.view(torch.int16).numpy().view(np.uint16)) for k, v in weights.items()
                  if k != "model.embed_tokens.weight"}
        first = "model-00001-of-00002.safetensors"
        write_safetensors(full / first, layers)
        write_embedding(full, name)
        emb = load_file(str(full / EMBED_SHARD))["model.embed_tokens.weight"]
        assert torch.equal(emb.view(torch.int16), weights["model.embed_tokens.weight"].view(torch.int16))
        index = {"metadata": {"total_size": sum(v.numel() * 2 for v in weights.values())},
                 "weight_map": {k: (EMBED_SHARD if k == "model.embed_tokens.weight" else first)
                                for k in sorted(weights)}}
        (full / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        (full / "tokenizer.json").write_text(json.dumps(smollm2_tokenizer_json(args.smollm2)))
        shutil.copy(out / "bpe-smollm2" / "tokenizer_config.json", full / "tokenizer_config.json")
        d.mkdir()
        for f in ("config.json", "generation_config.json", "tokenizer_config.json", "model.safetensors.index.json",
                  first):
            shutil.copy(full / f, d / f)
        g = Path(tmp) / "model.gguf"
        _convert(full, args.llama_cpp, g)
        desc = _describe(g)
        desc["quantized"] = {"Q4_K_M": _quantized(g, args.llama_python, "Q4_K_M")}
        tok = Tokenizer.from_file(str(full / "tokenizer.json"))
        ref = getattr(transformers, arch).from_pretrained(full, dtype=torch.float32).eval()
    for v in desc["keys"].values():
        if v["type"][0] == "ARRAY":
            v["value"] = {"sha256": hashlib.sha256(json.dumps(v["value"]).encode()).hexdigest(),
                          "len": len(v["value"]), "head": v["value"][:20]}
    (out / f"{name}.llama_cpp.json").write_text(json.dumps(desc, indent=1))
    prompts = [tok.encode(p).ids for p in PROMPTS]
    record = {"prompts": prompts, "top_ids": [], "top_logits": [], "min": [], "max": [],
              "transformers": transformers.__version__, "torch": torch.__version__}
    with torch.no_grad():
        for ids in prompts:
            lg = ref(torch.tensor([ids])).logits[0, -1].numpy().astype(np.float32)
            top = np.argsort(-lg)[:64]
            record["top_ids"].append(top.tolist())
            record["top_logits"].append(lg[top].tolist())
            record["min"].append(float(lg.min()))
            record["max"].append(float(lg.max()))
    (out / f"{name}.transformers.json").write_text(json.dumps(record))
    print(f"{name}: {sum(f.stat().st_size for f in d.iterdir()) / 1e6:.2f} MB", file=sys.stderr)
