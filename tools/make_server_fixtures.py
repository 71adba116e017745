"""Regenerate tests/fixtures/server/embeddings.json from llama-cpp-python (dev only; CI never runs it).

llama.cpp's sentence embeddings for SmolLM2-135M-Instruct Q4_1: `Llama(embedding=True,
pooling_type=MEAN)`, `embed(text, normalize=True)` — the mean over positions of the final-norm
hidden states, L2-normalised. The server's /v1/embeddings must point the same way.

Usage (a Python with llama-cpp-python installed, e.g. the project's venv after `make bench`):
    python -m tools.make_server_fixtures --gguf PATH/SmolLM2-135M-Instruct.Q4_1.gguf   # from the repository root
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "server" / "embeddings.json"
TEXTS = ["Hello world", "The quick brown fox jumps over the lazy dog.", "llamafile ships a model as one file."]


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.make_server_fixtures", description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", required=True, type=Path)
    args = ap.parse_args()
    import llama_cpp

    llm = llama_cpp.Llama(str(args.gguf), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                          n_ctx=512, verbose=False)
    data = {
        "model": args.gguf.name,
        "source": f"llama-cpp-python {llama_cpp.__version__}: Llama(embedding=True, pooling_type=MEAN), "
                  "embed(text, normalize=True)",
        "items": [{"text": t, "embedding": [round(float(x), 7) for x in llm.embed(t, normalize=True)]}
                  for t in TEXTS],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
