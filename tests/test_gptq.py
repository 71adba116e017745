"""GPTQ checkpoints (packer/hf/gptq.py) against llama.cpp's converter, which dequantizes GPTQ
(its dequant_gptq, after GPTQModel's), the gguf package's Q4_1 dequantizer and transformers'
forward pass over the dequantized float weights (tests/fixtures/hf, tools/make_hf_fixtures.py):

- gptq-mixtral: 4 bits, group 64, no act-order, original format (stored zero = zero - 1), Mixtral
  experts: kept as Q4_1 blocks, which dequantize exactly to llama.cpp's float32 dequantization
  (its scales have 5 significant bits, so -scale*zero is exact in fp16);
- gptq-mistral: 8 bits, group 32, act-order, gptq_v2: dequantized, byte for byte llama.cpp's
  conversion, and with --quantize llama_model_quantize's file;
- gptq-gptqmodel: the `mistral` checkpoint quantized by a real GPTQ implementation, GPTQModel
  7.7.0 on this CPU (4 bits, group 64, original format): llama.cpp's dequantization, GPTQModel's
  own dequantizer (float16) and GPTQModel's logits;
- a layer with arbitrary fp16 scales: Q4_1 within the fp16 rounding of -scale*zero.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest

from packer.build import build
from packer.cli import main as packer_main
from packer.hf.convert import HFCheckpoint
from packer.hf.entry import as_converted
from packer.hf.gptq import GPTQConfig, GPTQWeight
from packer.hf.safetensors import read_header
from packer.quantize import write
from tests.test_hf_import import FIX, _engine_logits, _same_value, entry_sha, write_gguf
from tools.make_hf_fixtures import gptq_quantize

GPTQ = ("gptq-mixtral", "gptq-mistral", "gptq-gptqmodel")
QUANTIZED_LAYERS = {"gptq-mixtral": 7, "gptq-mistral": 7, "gptq-gptqmodel": 14}


def llama_cpp(name: str) -> dict:
    return json.loads((FIX / f"{name}.llama_cpp.json").read_text())


@pytest.mark.parametrize("name", GPTQ)
def test_dequantized_conversion_is_llama_cpps(name: str) -> None:
    """Dequantized (as for act-order or 8 bits), the conversion is llama.cpp's: keys, tensor bytes
    (F16) and the whole file; the float32 values before F16 are llama.cpp's --outtype f32 ones."""
    ref = llama_cpp(name)
    ckpt = HFCheckpoint(FIX / name, gptq_lossless=False)
    assert list(ckpt.metadata) == list(ref["keys"])
    for key, r in ref["keys"].items():
        assert _same_value(ckpt.metadata[key], r["value"], r["type"]), key
    assert [t["name"] for t in ref["tensors"]] == list(ckpt.tensors)
    for r in ref["tensors"]:
        assert hashlib.sha256(ckpt.tensors[r["name"]].data.tobytes()).hexdigest() == r["sha256"], r["name"]
    f32 = {t["name"]: t["sha256"] for t in ref["f32_tensors"]}
    dequantized = [t for t in ckpt.tensors.values() if t.sources[0].dtype == "F32"]
    assert len(dequantized) == QUANTIZED_LAYERS[name]
    for t in dequantized:
        assert hashlib.sha256(np.ascontiguousarray(t.make(), "<f4").tobytes()).hexdigest() == f32[t.name], t.name
    plan = as_converted(ckpt)
    blob = bytearray(plan.size)
    write(plan, lambda d, pos: blob.__setitem__(slice(pos, pos + memoryview(d).nbytes), memoryview(d).cast("B")), 2)
    assert (len(blob), hashlib.sha256(blob).hexdigest()) == (ref["file_size"], ref["file_sha256"])


def test_4bit_layers_are_q4_1_blocks_of_the_same_weights() -> None:
    ref = {t["name"]: t["sha256"] for t in llama_cpp("gptq-mixtral")["f32_tensors"]}
    ckpt = HFCheckpoint(FIX / "gptq-mixtral")
    kept = sorted(ckpt.kept_q4_1)
    assert kept == sorted(f"blk.0.{n}.weight" for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate_exps",
                                                          "ffn_up_exps", "ffn_down_exps"))
    assert ckpt.metadata["general.file_type"] == 3 and "kept losslessly as Q4_1" in ckpt.notes[0]
    for name in kept:
        t = ckpt.tensors[name]
        values = gguf.quants.dequantize(t.data, gguf.GGMLQuantizationType.Q4_1).reshape(t.shape)
        assert hashlib.sha256(values.astype("<f4").tobytes()).hexdigest() == ref[name], name


def test_arbitrary_scales_within_fp16_rounding_of_the_minimum(tmp_path) -> None:
    """Scales with all 11 bits: d and the codes are the checkpoint's, m = -scale*zero rounds to fp16."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    qweight, qzeros, scales, g_idx, reference = gptq_quantize(w, 4, 128, False, False, True, rng)
    path = tmp_path / "layer.safetensors"
    _write_safetensors(path, {"l.qweight": qweight, "l.qzeros": qzeros, "l.scales": scales, "l.g_idx": g_idx})
    parts = {n.split(".")[1]: t for n, t in read_header(path, ("I32", "F16")).items()}
    cfg = GPTQConfig(4, 128, False, True, path)
    exact = GPTQWeight("l.weight", parts, cfg, (64, 256), "F32").read()
    assert np.array_equal(exact, reference)  # the format read back as the dev script packed it
    layer = GPTQWeight("l.weight", parts, cfg, (64, 256), "Q4_1")
    got = gguf.quants.dequantize(layer.read().reshape(-1), gguf.GGMLQuantizationType.Q4_1).reshape(64, 256)
    _, zeros, _, _ = layer.codes()
    bound = np.abs(scales[g_idx].astype(np.float32) * zeros[g_idx]).T * 2.0 ** -11
    assert np.all(np.abs(got - reference) <= bound + 1e-7)
    assert not np.array_equal(got, reference)  # the rounding is real with such scales


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file by its format (8-byte header length, JSON header, data)."""
    names = {np.dtype("<i4"): "I32", np.dtype("<f2"): "F16"}
    header, blobs, at = {}, [], 0
    for name, a in tensors.items():
        data = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": names[np.dtype(a.dtype).newbyteorder("<")], "shape": list(a.shape),
                        "data_offsets": [at, at + len(data)]}
        blobs.append(data)
        at += len(data)
    head = json.dumps(header).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))


def test_gptqmodel_dequantizes_the_same_weights() -> None:
    """GPTQModel's own dequantizer (its torch kernel, float16) gives this converter's float32
    dequantization rounded to float16, layer for layer; the Q4_1 blocks kept for them are within
    the fp16 rounding of each group's -scale*zero of it."""
    ref = llama_cpp("gptq-gptqmodel")["gptqmodel_fp16_weights"]
    ckpt = HFCheckpoint(FIX / "gptq-gptqmodel")
    layers = {s.name: s for t in ckpt.tensors.values() for s in t.sources if isinstance(s, GPTQWeight)}
    assert sorted(layers) == sorted(ref) and len(ref) == 14
    for name, sha in ref.items():
        w = layers[name]
        exact = GPTQWeight(w.name, w.parts, w.config, w.shape, "F32").read()
        assert hashlib.sha256(exact.astype(np.float16).tobytes()).hexdigest() == sha, name
        got = gguf.quants.dequantize(w.read().reshape(-1), gguf.GGMLQuantizationType.Q4_1).reshape(w.shape)
        _, zeros, scales, g_idx = w.codes()
        bound = np.abs(scales[g_idx].astype(np.float32) * zeros[g_idx]).T * 2.0 ** -11
        assert np.all(np.abs(got - exact) <= bound + 1e-7), name


@pytest.mark.parametrize("name", GPTQ)
def test_logits_match_the_gptq_model(tmp_path, name: str) -> None:
    """The converted model (Q4_1 layers, or dequantized F16) in the engine against the GPTQ model:
    transformers' float32 forward pass over the dequantized weights, or GPTQModel's own quantized
    model (float16): top token equal, top-20 within 1% of the range."""
    oracle = "gptqmodel" if name == "gptq-gptqmodel" else "transformers"
    ref = json.loads((FIX / f"{name}.{oracle}.json").read_text())
    path = write_gguf(FIX / name, None, tmp_path / "m.gguf")
    for prompt, want in zip(ref["prompts"], ref["logits"]):
        got, want = _engine_logits(path, prompt), np.asarray(want, np.float64)
        top = np.argsort(-want)[:20]
        assert int(np.argmax(got)) == int(top[0]), prompt
        assert np.abs(got[top] - want[top]).max() <= 0.01 * (want.max() - want.min()), prompt


def test_build_quantize_keeps_q4_1_layers(runtime_exe, tmp_path, capsys) -> None:
    out = tmp_path / "g.llamafile"
    rc = packer_main(["build", str(FIX / "gptq-mixtral"), "-o", str(out), "--runtime", str(runtime_exe),
                      "--quantize", "Q4_K_M", "--no-progress", "-t", "2"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "note: GPTQ 4-bit, group size 64, no act-order: 28 layers kept losslessly as Q4_1 blocks" in err
    with zipfile.ZipFile(out) as z:
        name = next(n for n in z.namelist() if n.endswith(".gguf"))
        (tmp_path / "e.gguf").write_bytes(z.read(name))
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "e.gguf").tensors}
    assert {n for n, t in types.items() if t == "Q4_1"} == HFCheckpoint(FIX / "gptq-mixtral").kept_q4_1
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q4_K"
    # the Q4_1 layers are the ones the plain conversion holds, byte for byte
    ckpt = HFCheckpoint(FIX / "gptq-mixtral")
    r = gguf.GGUFReader(tmp_path / "e.gguf")
    for t in r.tensors:
        if t.tensor_type.name == "Q4_1":
            assert bytes(t.data) == ckpt.tensors[t.name].data.tobytes(), t.name


def test_build_act_order_is_llama_cpps_quantization(runtime_exe, tmp_path, capsys) -> None:
    out = tmp_path / "g.llamafile"
    r = build(FIX / "gptq-mistral", out, runtime_exe, progress=False, quantize="Q4_K_M", threads=2)
    assert "8-bit, group size 32, act-order: 7 layers dequantized to float" in capsys.readouterr().err
    want = llama_cpp("gptq-mistral")["quantized"]["Q4_K_M"]
    assert entry_sha(out) == (r.model_entry, want["file_sha256"])


def test_other_quantization_methods_are_refused(runtime_exe, tmp_path, capsys) -> None:
    folder = Path(shutil.copytree(FIX / "gptq-mistral", tmp_path / "awq"))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"]["quant_method"] = "awq"
    (folder / "config.json").write_text(json.dumps(cfg))
    rc = packer_main(["build", str(folder), "-o", str(tmp_path / "x.llamafile"), "--runtime", str(runtime_exe)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 1 and len(err) == 1 and f"{folder}/config.json: quantization method 'awq' is not supported" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["awq"]


@pytest.mark.parametrize("content", ["[]", "null", "7"])
def test_a_quantize_config_that_is_no_object_is_one_line(runtime_exe, tmp_path, capsys, content: str) -> None:
    folder = Path(shutil.copytree(FIX / "gptq-mistral", tmp_path / "g"))
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("quantization_config")
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "quantize_config.json").write_text(content)
    rc = packer_main(["build", str(folder), "-o", str(tmp_path / "x.llamafile"), "--runtime", str(runtime_exe)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 1 and err == [f"error: {folder}/quantize_config.json: not a JSON object"], err


@pytest.mark.parametrize("mix", [None, "Q4_K_M"])
def test_an_infinite_scale_is_refused(runtime_exe, tmp_path, capsys, mix) -> None:
    """A GPTQ scale of inf: the kept Q4_1 layers carried it into a file whose every answer was NaN."""
    folder = Path(shutil.copytree(FIX / "gptq-mistral", tmp_path / "g"))
    shard = next(folder.glob("*.safetensors"))
    blob = bytearray(shard.read_bytes())
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    name = next(k for k in sorted(header) if k.endswith(".scales"))
    lo = header[name]["data_offsets"][0]
    blob[8 + n + lo:8 + n + lo + 2] = np.float16(np.inf).tobytes()
    shard.write_bytes(bytes(blob))
    rc = packer_main(["build", str(folder), "-o", str(tmp_path / "x.llamafile"), "--runtime", str(runtime_exe),
                      "--no-progress", *(["--quantize", mix] if mix else [])])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert rc == 1 and err == [f"error: {shard}: tensor {name[:-7]}.scales holds NaN or inf: the checkpoint is "
                               "damaged"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


def test_a_float_weight_beside_a_gptq_layer_is_refused(runtime_exe, tmp_path, capsys) -> None:
    """X.weight in float and X.qweight/qzeros/scales: one of the two was silently dropped."""
    folder = Path(shutil.copytree(FIX / "gptq-mistral", tmp_path / "g"))
    shard = folder / "model.safetensors"
    blob = shard.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header, data = json.loads(blob[8:8 + n]), blob[8 + n:]
    base = next(k for k in sorted(header) if k.endswith(".qweight"))[:-len(".qweight")]
    rows, cols = header[base + ".scales"]["shape"][1], header[base + ".qweight"]["shape"][0] * 32 // 8
    extra = np.zeros((rows, cols), np.float16).tobytes()
    header[base + ".weight"] = {"dtype": "F16", "shape": [rows, cols], "data_offsets": [len(data), len(data) + len(extra)]}
    head = json.dumps(header).encode()
    shard.write_bytes(len(head).to_bytes(8, "little") + head + data + extra)
    rc = packer_main(["build", str(folder), "-o", str(tmp_path / "x.llamafile"), "--runtime", str(runtime_exe),
                      "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert rc == 1 and len(err) == 1 and f"layer {base!r} has both a float {base + '.weight'!r} and GPTQ" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


@pytest.mark.parametrize("group", [0, -2, 64.5, "abc", True])
def test_a_group_size_that_is_not_a_size_is_refused(runtime_exe, tmp_path, capsys, group) -> None:
    """0 divided by zero, 64.5 was cut to 64, "abc" a traceback: refused in one line."""
    folder = Path(shutil.copytree(FIX / "gptq-mistral", tmp_path / "g"))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"]["group_size"] = group
    (folder / "config.json").write_text(json.dumps(cfg))
    rc = packer_main(["build", str(folder), "-o", str(tmp_path / "x.llamafile"), "--runtime", str(runtime_exe)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 1 and len(err) == 1 and f"GPTQ group_size={group!r} is not supported" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


def _pack_3bit(codes: np.ndarray) -> np.ndarray:
    """AutoGPTQ's 3-bit packing, word by word as its pack() lays it out: per 32 codes along axis 0,
    three int32 words; codes 10 and 21 straddle two words."""
    rows, cols = codes.shape
    c = codes.astype(np.uint64)
    out = np.zeros((rows // 32 * 3, cols), np.uint64)
    for blk in range(rows // 32):
        v, w = c[blk * 32:(blk + 1) * 32], out[blk * 3:(blk + 1) * 3]
        for j in range(10):
            w[0] |= v[j] << (3 * j)
        w[0] |= (v[10] << 30) & 0xFFFFFFFF
        w[1] |= (v[10] >> 2) & 1
        for j in range(10):
            w[1] |= v[11 + j] << (3 * j + 1)
        w[1] |= (v[21] << 31) & 0xFFFFFFFF
        w[2] |= (v[21] >> 1) & 3
        for j in range(10):
            w[2] |= v[22 + j] << (3 * j + 2)
    return out.astype(np.uint32).view(np.int32)


def test_3bit_act_order_dequantizes_by_the_format(tmp_path) -> None:
    """3-bit codes (AutoGPTQ's straddling layout, zeros packed the same way along the outputs),
    act-order g_idx, original format: the weights are scale * (q - (stored zero + 1))."""
    rng = np.random.default_rng(9)
    k, n, g = 128, 64, 32
    q = rng.integers(0, 8, (k, n))
    zeros = rng.integers(1, 8, (k // g, n))               # true zeros; stored as zero - 1
    scales = (rng.random((k // g, n)) * 0.1 + 0.01).astype(np.float16)
    g_idx = rng.permutation(np.arange(k) // g).astype(np.int32)
    path = tmp_path / "layer.safetensors"
    _write_safetensors(path, {"l.qweight": _pack_3bit(q), "l.qzeros": _pack_3bit((zeros - 1).T).T.copy(),
                              "l.scales": scales, "l.g_idx": g_idx})
    parts = {name.split(".")[1]: t for name, t in read_header(path, ("I32", "F16")).items()}
    got = GPTQWeight("l.weight", parts, GPTQConfig(3, g, True, True, path), (n, k), "F32").read()
    want = (scales[g_idx].astype(np.float32) * (q - zeros[g_idx]).astype(np.float32)).T
    assert np.array_equal(got, want)
