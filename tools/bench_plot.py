"""build/bench.png for tools/bench.py: the benchmark's numbers as a picture (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

FAMILY = {"smollm2": "SmolLM2", "moe": "MoE 8x2", "dense": "dense", "mistral": "Mistral w.", "mixtral": "Mixtral w."}


def _label(name: str) -> str:
    family, _, quant = name.partition("-")
    return f"{FAMILY.get(family, family)}\n{quant}"


def _headroom(ax, factor: float = 1.3) -> None:  # type: ignore[no-untyped-def]
    """Room above the bars for the legend and labels."""
    ax.set_ylim(0, ax.get_ylim()[1] * factor)


def plot(path: Path, rows: list, ctx: dict | None, thr: dict | None, moe: dict | None, title: str,
         engines: tuple[str, ...], pp: int, tg: int, ctx_model: str, threads_model: str) -> None:
    """Six panels: generation and prompt tok/s per model, ms/token vs context, threads, MoE vs dense, memory."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"llamapack": "#1f77b4", "llama.cpp": "#ff7f0e"}
    fig, axs = plt.subplots(2, 3, figsize=(20, 10.5))
    names = [info.name for info, _, _ in rows]
    x = np.arange(len(names))
    for ax, key, label in ((axs[0, 0], "tg", f"generation ({tg} tokens), tok/s"),
                           (axs[0, 1], "pp", f"prompt ({pp} tokens), tok/s")):
        for i, e in enumerate(engines):
            vals = [res.get(e, {}).get(key, np.nan) for _, res, _ in rows]
            bars = ax.bar(x + (i - 0.5) * 0.4, vals, 0.4, label=e, color=colors[e])
            if e == "llamapack":
                ref = [res.get("llama.cpp", {}).get(key, np.nan) for _, res, _ in rows]
                for b, v, r in zip(bars, vals, ref):
                    if v == v and r == r:
                        ax.annotate(f"{v / r:.2f}x", (b.get_x() + 0.4, max(v, r)), ha="center", va="bottom",
                                    fontsize=7)
        ax.set_xticks(x, [_label(n) for n in names], fontsize=7, rotation=90)
        ax.set_title(label + "  (numbers: ours / llama.cpp)", fontsize=10)
        ax.set_yscale("log")  # 135M-parameter models next to real-width ones
        ax.set_ylim(top=ax.get_ylim()[1] * 3)
        ax.legend(fontsize=8, ncol=2, loc="upper center")
        ax.grid(axis="y", alpha=0.3)
    ax = axs[0, 2]
    ctx = {e: pts for e, pts in (ctx or {}).items() if pts}
    if ctx:
        ks = sorted({k for pts in ctx.values() for k in pts})
        for e, pts in ctx.items():
            ax.plot(ks, [pts.get(k, np.nan) for k in ks], "o-", label=e, color=colors[e])
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_ylim(bottom=0)
        ax.set_ylabel("ms per token")
        ax.legend(fontsize=8)
    ax.set_title(f"{ctx_model}: generation ms/token vs context", fontsize=10)
    ax.set_xlabel("tokens already in the KV cache")
    ax.grid(alpha=0.3)
    ax = axs[1, 0]
    if thr:
        counts = sorted(thr)
        labels = [f"{k} {t}thr" for k in ("prompt", "gen") for t in counts]
        xx = np.arange(len(labels))
        for i, e in enumerate(engines):
            vals = [thr[t].get(e, {}).get(k, np.nan) for k in ("pp", "tg") for t in counts]
            ax.bar(xx + (i - 0.5) * 0.4, vals, 0.4, label=e, color=colors[e])
        ax.set_xticks(xx, labels, fontsize=8)
        _headroom(ax, 1.15)
        ax.legend(fontsize=8, ncol=2, loc="upper center")
    ax.set_title(f"{threads_model}: threads, tok/s", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax = axs[1, 1]
    if moe:
        for i, e in enumerate(engines):
            ax.bar(np.arange(2) + (i - 0.5) * 0.4, moe.get(e, (np.nan, np.nan)), 0.4, label=e, color=colors[e])
        ax.set_xticks(np.arange(2), ["MoE 2-of-8", "dense (same compute)"], fontsize=9)
        ax.legend(fontsize=8, loc="upper right")
        lines = ["MoE / dense time per token: " + ", ".join(
            f"{e} {moe[e][0] / moe[e][1]:.2f}x" for e in engines if e in moe)]
        lines.append(f"weights read per token {moe['_read']:.2f}x, weights present {moe['_present']:.2f}x")
        ax.text(0.02, 0.97, "\n".join(lines), transform=ax.transAxes, va="top", fontsize=8,
                bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
        _headroom(ax, 1.3)
    else:
        ax.text(0.5, 0.5, "not measured (needs moe-Q4_K_M and dense-Q4_K_M)", ha="center", transform=ax.transAxes)
    ax.set_title("generation ms/token: experts used, not present", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax = axs[1, 2]
    mem_names, mem_vals = [], {e: [] for e in engines}
    exp_vals = []
    for info, res, _ in rows:
        m = res.get("_mem", {})
        if not m:
            continue
        mem_names.append(_label(info.name))
        exp_vals.append(next(iter(m.values()))[2] / 2**20)
        for e in engines:
            mem_vals[e].append((m[e][1]["VmRSS"] - m[e][0]["VmRSS"]) / 2**20 if e in m else np.nan)
    xm = np.arange(len(mem_names))
    ax.bar(xm - 0.3, exp_vals, 0.3, label="weights + KV", color="#999999")
    for i, e in enumerate(engines):
        ax.bar(xm + i * 0.3, mem_vals[e], 0.3, label=f"{e} RSS", color=colors[e])
    ax.set_xticks(xm, mem_names, fontsize=7, rotation=90)
    ax.set_title("resident memory growth after load + runs, MiB (n_ctx 1024)", fontsize=10)
    _headroom(ax, 1.2)
    ax.legend(fontsize=8, ncol=3, loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
