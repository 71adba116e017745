"""tools/ab_kernels.py: two kernel libraries in one process, their outputs compared bit for bit.
Nothing here judges a speed: the products are timed, but only their outputs and the report are checked."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime import _kernels, kernels
from runtime.gguf import GGUFFile
from tools import ab_kernels

LIB = Path(_kernels.__file__)


def test_the_same_library_twice_is_two_modules_with_the_same_bits(smollm2_path, capsys):
    rc = ab_kernels.main([str(LIB), str(LIB.parent.parent), str(smollm2_path), "--tensors",
                          "blk.0.attn_k.weight,token_embd.weight", "--rows", "1,4,16", "--turns", "1"])
    assert rc == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if " rows " in ln]
    assert len(lines) == 6
    assert all(ln.endswith("same bits") for ln in lines)
    assert "Q4_1 192x576" in lines[0] and "Q8_0 49152x576" in lines[3]


def test_outputs_that_differ_are_reported(smollm2_path, tmp_path):
    # The copies are separate libraries: a second dlopen of one file would share its state.
    a = ab_kernels.load_library(LIB, "t_a", tmp_path)
    b = ab_kernels.load_library(LIB, "t_b", tmp_path)
    assert a is not b and a.lib is not b.lib
    t = GGUFFile(smollm2_path).tensors["blk.0.attn_k.weight"]
    _, data, _ = kernels._tensor_bytes(t)
    rows, cols = (int(d) for d in t.shape)
    x = np.random.default_rng(0).standard_normal((4, cols)).astype(np.float32)
    same = ab_kernels.compare(ab_kernels.Product(a, t.type, data, rows, cols, x, 1, True),
                              ab_kernels.Product(b, t.type, data, rows, cols, x, 1, True), rows * cols * 4, 1)
    assert same["same"] and same["a"] > 0 and same["b"] > 0
    other = ab_kernels.compare(ab_kernels.Product(a, t.type, data, rows, cols, x, 1, True),
                               ab_kernels.Product(b, t.type, data, rows, cols, x * 2, 1, True), rows * cols * 4, 1)
    assert not other["same"]


def test_a_tree_without_a_library_is_a_one_line_error(tmp_path, smollm2_path):
    (tmp_path / "runtime").mkdir()
    with pytest.raises(SystemExit, match=r"no runtime/_kernels\*\.so in"):
        ab_kernels.main([str(tmp_path), str(LIB), str(smollm2_path)])
    with pytest.raises(SystemExit, match="no tensor 'nope'"):
        ab_kernels.main([str(LIB), str(LIB), str(smollm2_path), "--tensors", "nope"])
    with pytest.raises(SystemExit, match="instruction set 'nope' is not available here"):
        ab_kernels.main([str(LIB), str(LIB), str(smollm2_path), "--isa", "nope"])
