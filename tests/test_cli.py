"""`python -m runtime` one-shot mode: stdout is only the generated text, logs and
timings on stderr, user errors one line and a non-zero exit, never a traceback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from tests.cliutil import assert_one_line_error

ROOT = Path(__file__).resolve().parent.parent
REF = json.loads((ROOT / "tests/fixtures/models/reference.json").read_text())


def run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_oneshot_prints_only_the_greedy_text(smollm2_path) -> None:
    chat = REF["smollm2"]["prompts"][0]
    r = run("-m", str(smollm2_path), "-p", chat["text"], "-n", "32", "--temp", "0", "-t", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == chat["greedy"]["text"] + "\n"
    assert "tok/s" in r.stderr and "prompt 16 tokens" in r.stderr


def test_n_predict_limits_the_output(smollm2_path) -> None:
    r = run("-m", str(smollm2_path), "-p", "Once upon a time", "-n", "5", "--temp", "0", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert "generation 5 tokens" in r.stderr and "stop: length" in r.stderr


def test_missing_model(tmp_path: Path) -> None:
    assert_one_line_error(run("-m", str(tmp_path / "nope.gguf"), "-p", "hi"), "not found")


def test_not_a_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 60)
    assert_one_line_error(run("-m", str(bad), "-p", "hi"), "offset")


def test_truncated_model(tmp_path: Path, smollm2_path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(Path(smollm2_path).read_bytes()[: 50 << 20])
    assert_one_line_error(run("-m", str(cut), "-p", "hi"), "gguf")


def test_unsupported_architecture(tmp_path: Path) -> None:
    path = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert_one_line_error(run("-m", str(path), "-p", "hi"), "architecture 'gpt2'")


def test_unsupported_tensor_type(tmp_path: Path) -> None:
    """A model whose weights use a type the kernels lack (IQ4_NL) names the tensor."""
    src = ROOT / "tests/fixtures/models/dense-tied-Q8_0.gguf"
    reader = gguf.GGUFReader(src)
    path = tmp_path / "iq.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = field.contents()
        vtype = field.types[0]
        w.add_key_value(field.name, value, vtype, sub_type=field.types[-1] if vtype == gguf.GGUFValueType.ARRAY
                        else None)
    for t in reader.tensors:
        data, qtype = np.array(t.data), t.tensor_type
        if t.name == "blk.0.attn_q.weight":  # same byte size per 32 values as Q4_0: 18
            qtype = gguf.GGMLQuantizationType.IQ4_NL
            data = np.zeros((int(t.shape[1]), int(t.shape[0]) // 32 * 18), np.uint8)
        w.add_tensor(t.name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert_one_line_error(run("-m", str(path), "-p", "hi"), "blk.0.attn_q.weight")


def test_no_prompt(smollm2_path) -> None:
    assert_one_line_error(run("-m", str(smollm2_path)), "prompt")


@pytest.mark.parametrize("flag", ["--version"])
def test_version(flag: str) -> None:
    r = run(flag)
    assert r.returncode == 0 and r.stdout.startswith("llamapack ")
