"""One engine on one model in a process of its own, for tools/bench.py: the worker (this module run
as `python -m tools.bench_worker ENGINE MODEL THREADS N_CTX FLASH_ATTN`) and the parent's handle
on it (Worker, Pair).

Each engine runs in its own worker, so a crash in one is reported and the other's numbers still
print, and its resident memory is its own. Both are driven the same way from Python: a prompt in
one call, then one token per call with argmax of the last logits. What kernels a worker uses comes
from its environment: LLAMAPACK_ISA for llamapack, and for llama.cpp which llama_cpp package is
first on sys.path (PYTHONPATH: the AVX2-only build in build/llama-cpp-avx2).
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# numpy's BLAS threads (as many as cores) would spin during the first runs and take CPU from
# either engine's threads; neither engine calls BLAS. The packed runtime sets the same
# (runtime/__init__.py), but this module imports numpy before runtime. (Not OMP_NUM_THREADS:
# llama.cpp's OpenMP threads.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "build" / "bench-logs"
PP, TG, TG_PROMPT = 512, 128, 16
TIMEOUT = 900.0  # seconds one worker request may take
ENGINES = ("llamapack", "llama.cpp")


# ================================================================= worker (one engine, one model)

class OursW:
    def __init__(self, path: str, threads: int, n_ctx: int, flash_attn: bool) -> None:
        from runtime import kernels
        from runtime.gguf import GGUFFile
        from runtime.model import Model
        self.model = Model(GGUFFile(path), n_ctx=n_ctx, n_threads=threads, max_batch=PP)
        self.n_vocab = self.model.config.n_vocab
        self.system = f"llamapack kernels: {kernels.get_isa()}" + (
            " (prompts: AMX tiles; the int8 column is against VPDPBUSD's peak)"
            if kernels.get_isa() == "avx512" and kernels.amx() else "")

    def eval(self, ids: list[int], pos: int) -> np.ndarray:
        """Runs ids at positions pos.. (what the cache holds past pos is dropped); last logits."""
        return self.model.forward(ids, pos)


def refuse_amx_tiles() -> bool:
    """On a CPU with AMX, has the kernel refuse this process the AMX tile state; before llama.cpp
    loads. llama-cpp-python 0.3.36 built natively on such a CPU (Intel Xeon 4th gen on) takes its
    AMX matrix product, which crashes (SIGSEGV in ggml_backend_amx_mul_mat) on the first prompt of
    any model here. Its AMX set-up asks the kernel for the tile state (arch_prctl
    ARCH_REQ_XCOMP_PERM), which Linux refuses while a thread's signal stack is too small for the
    larger signal frame: with a 4 KiB one installed first, llama.cpp says "AMX is not ready to be
    used!" and runs its AVX-512 VNNI kernels. True if it did so (the CPU has AMX)."""
    import ctypes
    try:
        with open("/proc/cpuinfo") as f:
            if "amx_int8" not in f.read():
                return False
    except OSError:
        return False

    class StackT(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    global _SMALL_STACK
    _SMALL_STACK = ctypes.create_string_buffer(4096)  # kept alive: the kernel points at it
    st = StackT(ctypes.cast(_SMALL_STACK, ctypes.c_void_p), 0, 4096)
    return ctypes.CDLL(None).sigaltstack(ctypes.byref(st), None) == 0


_SMALL_STACK = None


class LlamaCppW:
    def __init__(self, path: str, threads: int, n_ctx: int, flash_attn: bool) -> None:
        amx_refused = refuse_amx_tiles()
        import llama_cpp
        self._lc = llama_cpp
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                   n_batch=PP, n_ubatch=PP, flash_attn=flash_attn, verbose=False)
        self.n_vocab = self.llm.n_vocab()
        self.system = f"llama.cpp from {Path(llama_cpp.__file__).parent}: " + \
            llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip() + \
            (" (AMX refused: its AMX product crashes here, tools/bench_worker.py refuse_amx_tiles)"
             if amx_refused else "")

    def eval(self, ids: list[int], pos: int) -> np.ndarray:
        self.llm.n_tokens = pos          # Llama.eval drops the cache from n_tokens on
        self.llm.eval(ids)
        ptr = self._lc.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))


def _mem() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(val.split()[0]) * 1024
    return out


def _serve(eng: OursW | LlamaCppW, n_ctx: int, reply) -> None:  # type: ignore[no-untyped-def]
    ids = [int(i) for i in np.random.default_rng(0).integers(300, eng.n_vocab, max(n_ctx, PP))]
    filled = 0
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        try:
            if op == "quit":
                return
            if op == "mem":
                reply(mem=_mem())
            elif op == "pp":
                t0 = time.perf_counter()
                eng.eval(ids[:req["n"]], 0)
                reply(s=time.perf_counter() - t0)
                filled = req["n"]
            elif op in ("tg", "steps"):
                pos = req["at"] if op == "steps" else TG_PROMPT
                if op == "tg":  # the short prompt, untimed
                    tok = int(np.argmax(eng.eval(ids[:TG_PROMPT], 0)))
                else:
                    tok = ids[pos]
                out, t0 = [], time.perf_counter()
                for i in range(req["n"]):
                    tok = int(np.argmax(eng.eval([tok], pos + i)))
                    out.append(tok)
                reply(s=time.perf_counter() - t0, tokens=out)
                filled = pos  # the steps' own tokens are dropped by the next request
            elif op == "fill":  # extend the cache to req["to"] tokens of the id list
                t0 = time.perf_counter()
                eng.eval(ids[filled:req["to"]], filled)
                filled = req["to"]
                reply(s=time.perf_counter() - t0)
            else:
                reply(error=f"unknown op {op!r}")
        except Exception as e:  # noqa: BLE001 - reported to the parent, which prints it
            reply(error=f"{type(e).__name__}: {e}")


def worker(engine: str, path: str, threads: int, n_ctx: int, flash_attn: bool) -> None:
    """Answers JSON requests, one per line, on the original stdout (fd 1 goes to stderr)."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(**kw: object) -> None:
        proto.write(json.dumps(kw) + "\n")
        proto.flush()

    try:
        if engine == "llama.cpp":  # the libraries' own pages are not the model's: load them before the baseline
            import llama_cpp  # noqa: F401
        else:
            import runtime.model  # noqa: F401
        base = _mem()
        t0 = time.perf_counter()
        eng = (OursW if engine == "llamapack" else LlamaCppW)(path, threads, n_ctx, flash_attn)
        load_s = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001
        reply(error=f"{type(e).__name__}: {e}")
        return
    reply(ok=True, load_s=load_s, mem_base=base, system=eng.system)
    _serve(eng, n_ctx, reply)


# ================================================================= parent side

class WorkerError(RuntimeError):
    pass


@dataclass(frozen=True)
class Engine:
    """One of the two engines as one table runs it: `name` is llamapack or llama.cpp, `env` what its
    worker's environment adds (the ISA, the llama.cpp build), `tag` names the log files."""
    name: str
    env: tuple[tuple[str, str], ...] = ()
    tag: str = ""


class Worker:
    """One engine on one model, in a child process; `call` sends a request, returns the reply."""

    def __init__(self, engine: Engine, model: str, path: Path, threads: int, n_ctx: int, flash_attn: bool) -> None:
        self.engine, self.model = engine.name, model
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{model}.{engine.name}{engine.tag}.t{threads}.c{n_ctx}.log"
        self._log = open(self.log_path, "wb")
        env = {**os.environ, **dict(engine.env)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.bench_worker", engine.name, str(path), str(threads), str(n_ctx),
             str(int(flash_attn))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=ROOT,
            env=env)
        self._buf = b""
        self.hello = self._read()

    def _read(self) -> dict:
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        deadline = time.monotonic() + TIMEOUT
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.close()
                raise WorkerError(f"{self.engine} on {self.model}: no answer in {TIMEOUT:.0f} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                rc = self.proc.wait()
                tail = self.log_path.read_bytes().decode("utf-8", "replace").strip().splitlines()[-8:]
                self.close()
                why = f"signal {-rc}" if rc < 0 else f"exit status {rc}"
                raise WorkerError(f"{self.engine} on {self.model}: worker died ({why})"
                                  + ("; its stderr ends:\n      " + "\n      ".join(tail) if tail else ""))
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        if "error" in msg:
            raise WorkerError(f"{self.engine} on {self.model}: {msg['error']}")
        return msg

    def call(self, op: str, **kw: object) -> dict:
        self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"op": "quit"}\n')  # type: ignore[union-attr]
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@dataclass
class Pair:
    """The workers of both engines (either may be missing: not installed, or failed)."""
    workers: dict[str, Worker] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def alternate(self, run: int) -> list[Worker]:
        ws = [self.workers[e] for e in ENGINES if e in self.workers]
        return ws if run % 2 == 0 else ws[::-1]

    def call(self, w: Worker, op: str, **kw: object) -> dict | None:
        try:
            return w.call(op, **kw)
        except WorkerError as e:
            self.errors[w.engine] = str(e)
            self.workers.pop(w.engine, None)
            return None

    def close(self) -> None:
        for w in self.workers.values():
            w.close()


def start(name: str, path: Path, engines: list[Engine], threads: int, n_ctx: int, flash_attn: bool) -> Pair:
    pair = Pair()
    for e in engines:
        try:
            pair.workers[e.name] = Worker(e, name, path, threads, n_ctx, flash_attn)
        except WorkerError as err:
            pair.errors[e.name] = str(err)
    return pair


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit("usage: python -m tools.bench_worker ENGINE MODEL THREADS N_CTX FLASH_ATTN (started by tools.bench)")
    worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1")
