"""How far llama.cpp's and llamapack's last-position logits are from an exact float64 forward pass of
the same (dequantized) weights, on tiny random models of Mixtral's shape (8 experts, 2 used) or
Mistral's (dense), in several quant types. Dev only: needs llama-cpp-python (as
tools/make_model_fixtures.py, whose families, quantizer and oracle it uses).

    python -m tools.bench_fidelity                       # moe, 7 types, 64 prompts, top-20 metric
    python -m tools.bench_fidelity --kind dense --types Q4_0,Q8_0 --prompts 24 --metric rms

Per type: the median distance of each engine over the prompts (BOS + 6..39 random ids), the ratio
of the medians (llamapack / llama.cpp) and the median of the per-prompt ratios. Metrics: "top20",
the largest error on the reference's top 20 logits over their span (top 1 - top 20); "rms", the
RMS error of all logits over the full logit range. The models are written once into --work.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import gguf
import numpy as np

from runtime.gguf import GGUFFile
from runtime.model import Model
from tests.tiny_models import TinySpec, reference_logits
from tools import make_model_fixtures as mf

TYPES = ("Q4_0", "Q4_K_M", "Q8_0", "Q6_K", "Q5_K_M", "Q3_K_M", "Q2_K")


def family(kind: str, types: tuple[str, ...]) -> mf.Family:
    """The fixtures' families, the MoE one with n_ff 256 so that every K-quant applies to its experts."""
    if kind == "moe":
        return mf.family("moe", types, 2002, n_layer=1, n_ff=256, n_expert=8, n_expert_used=2)
    return mf.family("dense", types, 1007, n_layer=1)


def weights_of(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the file as float32, dequantized by the gguf package."""
    r = gguf.GGUFReader(str(path))
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32) for t in r.tensors}


def distance(got: np.ndarray, ref: np.ndarray, metric: str) -> float:
    if metric == "top20":
        top = np.argsort(-ref, kind="stable")[:20]
        return float(np.abs(got[top] - ref[top]).max() / (ref[top[0]] - ref[top[-1]]))
    return float(np.sqrt(np.mean((got - ref) ** 2)) / (ref.max() - ref.min()))


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.bench_fidelity", description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=("moe", "dense"), default="moe")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--metric", choices=("top20", "rms"), default="top20")
    ap.add_argument("--work", type=Path, default=Path("build/fidelity-models"))
    args = ap.parse_args()
    types = tuple(args.types.split(","))
    fam = family(args.kind, types)
    work = args.work / args.kind
    work.mkdir(parents=True, exist_ok=True)
    paths = {ft: work / f"{fam.name}-{ft}.gguf" for ft in types}
    if not all(p.exists() for p in paths.values()):
        mf.build_family(fam, fam.first_seed, work)
    rng = np.random.default_rng(5)
    prompts = [[1] + [int(t) for t in rng.integers(3, mf.N_VOCAB, int(rng.integers(6, 40)))]
               for _ in range(args.prompts)]
    base = TinySpec(**{f.name: getattr(fam.spec, f.name) for f in dataclasses.fields(fam.spec)})
    print(f"{args.kind}: {args.prompts} prompts, metric {args.metric}")
    for ft in types:
        spec = dataclasses.replace(base, seed=fam.first_seed)
        spec.weights.update(weights_of(paths[ft]))
        oracle = mf.Oracle(paths[ft])
        with GGUFFile(paths[ft]) as f:
            model = Model(f, n_ctx=512, n_threads=2)
            rows = []
            for p in prompts:
                ref = reference_logits(spec, p)[-1]
                rows.append([distance(oracle.last_logits(p), ref, args.metric),
                             distance(model.forward(p, 0), ref, args.metric)])
            d = np.array(rows)
        oracle.close()
        med = np.median(d, axis=0)
        print(f"{ft:7s} llama.cpp {med[0]:.4f}  llamapack {med[1]:.4f}  ratio of medians {med[1] / med[0]:.2f}  "
              f"median of ratios {np.median(d[:, 1] / d[:, 0]):.2f}", flush=True)


if __name__ == "__main__":
    main()
