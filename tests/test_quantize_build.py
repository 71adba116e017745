"""`packer build MODEL --quantize MIX`: the packed file holds, as its aligned GGUF entry, the file
llama.cpp's quantizer wrote for the same input (SHA-256 recorded in tests/fixtures/quant), `packer
verify` passes, `packer inspect` shows the new types, the packed model runs; user errors are one
line; a refusal leaves nothing behind. The runtime is built once (conftest's runtime_exe)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from packer.build import PackError, build
from tests.cliutil import assert_one_line_error
from tools.make_quant_fixtures import model_spec
from tools.random_gguf import write_model

ROOT = Path(__file__).resolve().parent.parent
FIX = json.loads((Path(__file__).resolve().parent / "fixtures" / "quant" / "models.json").read_text())


def packer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "packer.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("qbuild") / "dense-F16.gguf"
    write_model(path, model_spec("dense", "F16"))
    return path


def entry_sha(packed: Path) -> tuple[str, str]:
    with zipfile.ZipFile(packed) as z:
        name = next(n for n in z.namelist() if n.endswith(".gguf"))
        return name, hashlib.sha256(z.read(name)).hexdigest()


@pytest.mark.parametrize("mix", ["Q4_K_M", "Q3_K_S", "Q8_0"])
def test_packed_entry_is_llama_cpps_file(runtime_exe, dense, tmp_path, mix: str) -> None:
    out = tmp_path / "m.llamafile"
    r = build(dense, out, runtime_exe, progress=False, quantize=mix, threads=2)
    assert r.model_entry == f"dense-F16.{mix}.gguf" and r.model_offset % 65536 == 0
    assert entry_sha(out) == (r.model_entry, FIX["dense-F16"]["mixes"][mix]["sha256"])
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file (nor a GGUF) left beside it


def test_cli_quantize_verify_inspect_and_run(runtime_exe, dense, tmp_path) -> None:
    out = tmp_path / "q.llamafile"
    r = packer("build", str(dense), "-o", str(out), "--runtime", str(runtime_exe), "--quantize", "q4_k_m",
               "--progress", "-t", "2")
    assert r.returncode == 0, r.stderr
    assert "tensors 75/75" in r.stderr and "MB/s" in r.stderr  # the progress line's quantizer part
    v = packer("verify", str(out))
    assert v.returncode == 0 and v.stdout.strip().endswith("verified"), v.stdout
    i = packer("inspect", str(out))
    assert i.returncode == 0 and "Q4_K" in i.stdout and "Q6_K" in i.stdout, i.stdout
    run = subprocess.run([str(out), "--version"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    # the packed weights, mapped in place by the engine, against the F16 input's logits
    from runtime.engine import Engine

    from runtime.payload import read_payload

    gguf_at = read_payload(str(out)).gguf.data_offset
    logits = []
    for path, at in ((out, gguf_at), (dense, 0)):
        e = Engine.load(path, offset=at, n_ctx=64, n_threads=2)
        logits.append(np.array(e.eval([1, 5, 6, 7]), np.float64).ravel())
        e.close()
    assert logits[0].shape == logits[1].shape == (96,) and np.isfinite(logits[0]).all(), logits
    assert np.corrcoef(logits[0], logits[1])[0, 1] > 0.95


def test_user_errors(runtime_exe, dense, tmp_path) -> None:
    rt = ["--runtime", str(runtime_exe)]
    out = str(tmp_path / "x.llamafile")
    e = packer("build", str(dense), "-o", out, *rt, "--quantize", "Q4_K_X")
    assert_one_line_error(e, "unknown quantization type 'Q4_K_X': one of Q2_K, Q3_K_S, Q3_K_M")
    q8 = tmp_path / "odd-Q8_0.gguf"
    write_model(q8, model_spec("odd", "Q8_0"))
    e = packer("build", str(q8), "-o", out, *rt, "--quantize", "Q4_K_M")
    assert_one_line_error(e, "already quantized (Q8_0): requantizing loses quality; give --allow-requantize")
    assert not list(tmp_path.glob("*.llamafile")) and not list(tmp_path.glob(".*.tmp"))
    ok = packer("build", str(q8), "-o", out, *rt, "--quantize", "Q4_K_M", "--allow-requantize")
    assert ok.returncode == 0, ok.stderr
    assert entry_sha(Path(out))[1] == FIX["odd-Q8_0"]["mixes"]["Q4_K_M"]["sha256"]


def test_allow_requantize_alone_is_refused(runtime_exe, tmp_path) -> None:
    """--allow-requantize only widens what --quantize accepts: given alone it was ignored, and the
    model packed as it is."""
    q8 = tmp_path / "odd-Q8_0.gguf"
    write_model(q8, model_spec("odd", "Q8_0"))
    e = packer("build", str(q8), "-o", str(tmp_path / "x.llamafile"), "--runtime", str(runtime_exe),
               "--allow-requantize")
    assert e.returncode == 2
    assert_one_line_error(e, "--allow-requantize goes with --quantize TYPE: alone it does nothing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd-Q8_0.gguf"]


def test_nan_refusal_leaves_nothing(runtime_exe, dense, tmp_path) -> None:
    import numpy as np

    from runtime.gguf import GGUFFile
    from tools.random_gguf import rewrite_gguf

    with GGUFFile(dense) as f:
        w = f.tensors["blk.7.ffn_down.weight"]
        values = np.frombuffer(w.data.tobytes(), np.float16).astype(np.float32).reshape(w.shape)
    values[-1, -1] = np.inf
    bad = rewrite_gguf(dense, tmp_path / "bad.gguf", tensors={"blk.7.ffn_down.weight": values})
    with pytest.raises(PackError, match=r"tensor 'blk.7.ffn_down.weight' holds NaN or inf \(row 255\)"):
        build(bad, tmp_path / "b.llamafile", runtime_exe, progress=False, quantize="Q4_0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]
