"""The linux-aarch64 runtime, cross-built on this x86-64 machine and run under qemu-user.

The runtime is the one `make` built into dist/ (packer/runtime_cross.py: Debian's arm64 packages
and PyPI's aarch64 wheels cached under build/aarch64, PyInstaller under qemu; ~3 minutes), built
again here only when its inputs changed since. Packed files run in a root holding only Debian's
arm64 libc6 and zlib1g, so everything else must come from the runtime itself; `-cpu max` has
the dot-product instructions, `-cpu cortex-a72` has not. tests/aarch64/qemu_exec.c lets the
one-file bootloader start its child under qemu too. Prompts and token counts stay small:
emulated, SmolLM2 makes about one token a second.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import openai
import pytest

from tests.cliutil import assert_one_line_error

from packer import runtime_cross
from packer.build import build
from packer.pyiarchive import INFO_NAME
from packer.verify import inspect, verify
from runtime import quant_types

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "out"
MOE = ROOT / "tests/fixtures/models/moe-Q4_0.gguf"
CPUS = ["max", "cortex-a72"]  # with dotprod and i8mm, with neither


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    found = {t: shutil.which(t) for t in ("qemu-aarch64", "aarch64-linux-gnu-gcc")}
    missing = [t for t, p in found.items() if not p]
    assert not missing, f"{', '.join(missing)} needed: run `make` (it installs them)"
    return found


@pytest.fixture(scope="module")
def arm_runtime(tools) -> Path:
    return runtime_cross.build_runtime_once()  # dist/, where `make` built it


@pytest.fixture(scope="module")
def bare(arm_runtime) -> Path:
    return runtime_cross.bare_root()


@pytest.fixture(scope="module")
def exec_shim(tools, tmp_path_factory) -> Path:
    so = tmp_path_factory.mktemp("shim") / "qemu_exec.so"
    subprocess.run([tools["aarch64-linux-gnu-gcc"], "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror",
                    str(ROOT / "tests/aarch64/qemu_exec.c"), "-o", str(so), "-ldl"], check=True)
    return so


@pytest.fixture(scope="module")
def packed(arm_runtime, runtime_exe, smollm2_path, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("arm")
    files = {}
    for name, model in (("smollm2", smollm2_path), ("moe", MOE)):
        for arch, rt in (("aarch64", arm_runtime), ("x86_64", runtime_exe)):
            files[f"{name}-{arch}"] = build(model, d / f"{name}-{arch}.llamafile", rt, progress=False).output
    return files


def arm_cmd(exe: Path, args: list[str], bare: Path, shim: Path, cpu: str) -> tuple[list[str], dict[str, str]]:
    """How an aarch64 machine with only libc and zlib would run exe, here."""
    env = dict(os.environ, QEMU_LD_PREFIX=str(bare), QEMU_CPU=cpu, LP_QEMU=shutil.which("qemu-aarch64"),
               LP_QEMU_EXEC_SO=str(shim))
    return ["qemu-aarch64", "-E", f"LD_PRELOAD={shim}", str(exe), *args], env


def run_arm(exe: Path, args: list[str], bare: Path, shim: Path, cpu: str = "max",
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd, env = arm_cmd(exe, args, bare, shim, cpu)
    return subprocess.run(cmd, env={**env, **(extra_env or {})}, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


# -- kernels: i8mm and dotprod where the CPU has them, NEON where it has not ---------------------------

def _cross_build(tools, main: str, out: Path) -> Path:
    """The library's C files and one of tests/neon's programs, statically linked for aarch64."""
    return runtime_cross.csrc_build().build_program(tools["aarch64-linux-gnu-gcc"], [main], out, ["-static"])


def test_dotprod_kernels_and_fallback_under_qemu(tools, tmp_path) -> None:
    """-cpu max has dotprod and i8mm (SMMLA), -cpu cortex-a72 neither. The harness checks each ISA's
    kernels against the reference, and the I8MM batched product against the row dots (to float
    rounding, 45 shapes and types; see tests/neon/harness.c)."""
    harness = _cross_build(tools, "harness.c", tmp_path / "harness")
    for cpu, best, checked in (("max", "I8MM", ["NEON", "DOTPROD"]), ("cortex-a72", "NEON", ["NEON"])):
        out = subprocess.run([tools["qemu-aarch64"], "-cpu", cpu, str(harness)], capture_output=True, text=True,
                             timeout=600).stdout
        assert f"best ISA: {best}\n" in out, out[-2000:]
        assert re.findall(r"^checking (\S+) kernels", out, re.M) == checked, out[-2000:]
        batched = re.findall(r"^ok +batched ", out, re.M)
        assert len(batched) == (45 if best == "I8MM" else 0), out[-2000:]
        m = re.search(r"^(\d+) passed, (\d+) failed$", out, re.M)
        assert m and m.group(2) == "0" and int(m.group(1)) >= 13 * 4 * len(checked) + len(batched), \
            "\n".join(line for line in out.splitlines() if line.startswith("FAIL"))


# (rows, cols, n): odd weight and activation row counts, partial tiles, cols a multiple of 256 and not
GEMM_SHAPES = [(37, 512, 16), (61, 768, 45), (5, 256, 33), (64, 1024, 67), (19, 416, 24)]
EXTREME_FILLS = [0x00, 0x7F, 0x80, 0xFF]  # every quant at an end of its range (Q8_0: -128, 127)


def _gemm_cases(rng: np.random.Generator):
    """(label, weights, x, random) for every type with to_s8: random blocks at GEMM_SHAPES, then
    weights of one repeated byte against activations of +-1 (the largest int32 sums)."""
    from runtime import kernels
    from tests.test_kernels import filled_tensor, weight_tensor

    for name in quant_types.QUANT_TYPES:
        qtype = kernels.WEIGHT_TYPES[name]
        info = kernels.type_info(qtype)
        for rows, cols, n in GEMM_SHAPES:
            if cols % info.block_size == 0:
                x = (rng.standard_normal((n, cols)) * rng.uniform(0.1, 10, (n, 1))).astype(np.float32)
                yield f"{name} {rows}x{cols} n={n}", weight_tensor(qtype, rows, cols, rng), x, True
        rows, cols, n = 37, 512, 33
        x = rng.choice([-1.0, 1.0], (n, cols)).astype(np.float32)
        x[0], x[1] = 1.0, -1.0
        for fill in EXTREME_FILLS:
            yield f"{name} fill {fill:#04x}", filled_tensor(qtype, rows, cols, fill, rng), x, False


def test_i8mm_batched_product_has_the_x86_batched_products_bits(tools, tmp_path) -> None:
    """The batched product of every type with to_s8, at several shapes and at the ends of the
    quant ranges: the same inputs through lp_matmul on this x86-64 machine (AVX-512 VNNI and AVX2
    batched products, tested against float64 and the row dots in test_kernels.py) and on aarch64
    under qemu (tests/neon/gemm_dump.c). With i8mm (-cpu max) the results are the x86 ones bit
    for bit (same integer sums, same float steps in the same order); without it (-cpu neoverse-n1:
    dotprod only) the dispatch falls back to the row dots, which agree to float rounding and,
    on random weights, not bit for bit."""
    from runtime import kernels

    x86_isas = [i for i in ("avx512", "avx2") if i in kernels.available_isas()]
    assert x86_isas, "this x86-64 machine has neither AVX2 nor AVX-512"
    cases = []  # (label, random, {x86 isa: y})
    with (tmp_path / "in").open("wb") as f:
        for label, t, x, random in _gemm_cases(np.random.default_rng(19)):
            f.write(np.array([t.type, *t.shape, len(x)], "<i4").tobytes() + t.data.tobytes() + x.tobytes())
            ref = {}
            try:
                for isa in x86_isas:
                    kernels.set_isa(isa)
                    ref[isa] = kernels.matmul(t, x, n_threads=2)
            finally:
                kernels.set_isa(kernels.best_isa())
            assert ref, label
            cases.append((label, random, ref))
    assert len(cases) == 45 + 10 * len(EXTREME_FILLS)
    dump = _cross_build(tools, "gemm_dump.c", tmp_path / "gemm_dump")
    for cpu, isa in (("max", "i8mm"), ("neoverse-n1", "dotprod")):
        r = subprocess.run([tools["qemu-aarch64"], "-cpu", cpu, str(dump), str(tmp_path / "in"), str(tmp_path / "out"),
                            "3"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and r.stdout == f"isa: {isa}\n", (cpu, r.stdout, r.stderr)
        got, off = np.fromfile(tmp_path / "out", np.float32), 0
        for label, random, ref in cases:
            first = next(iter(ref.values()))
            y = got[off:off + first.size].reshape(first.shape)
            off += first.size
            assert np.isfinite(y).all(), (cpu, label)
            for x86_isa, bits in ref.items():
                if isa == "i8mm":
                    np.testing.assert_array_equal(y, bits, err_msg=f"{label}: i8mm vs {x86_isa}")
                    continue
                tol = 1e-5 * np.abs(bits).max(axis=1, keepdims=True) + 1e-30
                assert (np.abs(y - bits) <= tol).all(), f"{label}: dotprod row dots vs {x86_isa}"
                assert not random or not np.array_equal(y, bits), f"{label}: the row dots gave the batched bits"
        assert off == got.size


# -- packing -----------------------------------------------------------------------------------------

def test_inspect_names_the_platform_and_verify_passes(packed) -> None:
    rows = dict(inspect(str(packed["smollm2-aarch64"])))
    assert re.search(r"llamapack \S+, linux-aarch64, Python 3\.\d+", rows["runtime"]), rows["runtime"]
    assert "linux-x86_64" in dict(inspect(str(packed["smollm2-x86_64"])))["runtime"]
    rep = verify(str(packed["smollm2-aarch64"]))
    assert rep.ok, [c for c in rep.checks if not c.ok]  # among them: the bootloader's scan stops at the tail


def test_build_refuses_a_program_that_is_not_a_llamapack_runtime(arm_runtime, tmp_path) -> None:
    """A PyInstaller program without the runtime's facts (here: the same file, the entry renamed)."""
    other = tmp_path / "other-program"
    data = arm_runtime.read_bytes()
    assert data.count(INFO_NAME.encode()) == 1
    other.write_bytes(data.replace(INFO_NAME.encode(), b"x" * len(INFO_NAME)))
    r = subprocess.run([sys.executable, "-m", "packer.cli", "build", str(MOE), "-o", str(tmp_path / "o.llamafile"),
                        "--runtime", str(other)], capture_output=True, text=True)
    assert_one_line_error(r, "is not a llamapack runtime")
    assert not (tmp_path / "o.llamafile").exists()


# -- running under emulation ---------------------------------------------------------------------------

def test_version(packed, bare, exec_shim) -> None:
    r = run_arm(packed["moe-aarch64"], ["--version"], bare, exec_shim)
    assert r.returncode == 0 and re.fullmatch(r"llamapack \S+\n", r.stdout), r.stderr


# Long enough (>= 16 tokens) for prompt processing to take the batched product: AVX-512 VNNI (or AVX2)
# on this machine, I8MM under -cpu max (its bits are x86's: see the test above), the row dots of
# NEON under -cpu cortex-a72. A prompt whose next tokens are clear: elsewhere the other kernels
# (the reference's row operations on ARM, AVX2's on x86) may turn a near tie (SmolLM2 after
# "Paris is known for the Eiffel Tower, the Louvre museum and its cafes. The capital of France is":
# " also" and " Paris", 0.04 apart) either way.
PROMPT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,"


@pytest.mark.parametrize("model", ["smollm2", "moe"])
def test_same_greedy_text_as_x86_64(packed, bare, exec_shim, model, smollm2_path) -> None:
    from runtime.engine import Engine

    eng = Engine.load(smollm2_path if model == "smollm2" else MOE, n_ctx=256)
    try:
        assert len(eng.tokenize(PROMPT)) >= 16
    finally:
        eng.close()
    args = ["-p", PROMPT, "-n", "6", "--temp", "0", "-c", "256"]
    x86 = subprocess.run([str(packed[f"{model}-x86_64"]), *args], capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert x86.returncode == 0 and x86.stdout.strip(), x86.stderr
    for cpu in CPUS:
        # asked for i8mm: taken under -cpu max (no complaint), refused for NEON under cortex-a72
        r = run_arm(packed[f"{model}-aarch64"], args, bare, exec_shim, cpu, {"LLAMAPACK_ISA": "i8mm"})
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout == x86.stdout, (cpu, r.stdout, x86.stdout)
        refused = re.search(r"LLAMAPACK_ISA: .*using (\w+)", r.stderr)
        assert (refused and refused.group(1)) == (None if cpu == "max" else "neon"), (cpu, r.stderr[-2000:])


def test_exec_format_error_on_this_machine(packed) -> None:
    """What an x86-64 user sees: the kernel's own refusal, not a launcher message."""
    exe = packed["moe-aarch64"]
    if _binfmt_aarch64():  # a machine with qemu-user registered runs it instead
        r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.startswith("llamapack"), r.stderr
        return
    with pytest.raises(OSError) as e:
        subprocess.run([str(exe), "--version"], capture_output=True)
    assert e.value.errno == errno.ENOEXEC
    r = subprocess.run(["bash", "-c", f"'{exe}' --version"], capture_output=True, text=True)
    assert r.returncode == 126 and "cannot execute binary file: Exec format error" in r.stderr, r.stderr


def _binfmt_aarch64() -> bool:
    d = Path("/proc/sys/fs/binfmt_misc")
    for f in d.glob("*aarch64*") if d.is_dir() else []:
        try:
            if f.read_text().startswith("enabled"):
                return True
        except OSError:
            pass
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _file_mapped(exe: Path, start: int, end: int) -> bool:
    """Some process maps bytes [start, end) of exe (qemu makes the guest's file mappings its own)."""
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            for line in maps.read_text().splitlines():
                parts = line.split(None, 5)
                if len(parts) < 6 or parts[5] != str(exe):
                    continue
                lo, hi = (int(a, 16) for a in parts[0].split("-"))
                if int(parts[2], 16) <= start and int(parts[2], 16) + (hi - lo) >= end:
                    return True
        except (OSError, ValueError):
            continue
    return False


def test_server_answers_the_openai_client_and_maps_the_weights(packed, bare, exec_shim, smollm2_path) -> None:
    from runtime.engine import Engine
    from runtime.launcher import read_payload
    from runtime.sampling import SamplingParams

    exe = packed["smollm2-aarch64"]
    port = _free_port()
    cmd, env = arm_cmd(exe, ["--server", "--nobrowser", "--port", str(port), "-c", "256"], bare, exec_shim, "max")
    OUT.mkdir(exist_ok=True)
    log = (OUT / "aarch64-server.log").open("w+")  # a file, not a pipe: the bootloader's child holds it too
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert p.poll() is None, f"exit {p.returncode}: {Path(log.name).read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the server did not answer /health"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        gguf = read_payload(str(exe)).gguf
        assert _file_mapped(exe, gguf.data_offset, gguf.data_offset + gguf.size)
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=240)
        r = client.chat.completions.create(model="any", messages=messages, temperature=0, max_tokens=6)
        eng = Engine.load(smollm2_path, n_ctx=256)
        try:
            want = "".join(c.text for c in eng.stream_chat(messages, max_tokens=6, params=SamplingParams(temp=0.0)))
        finally:
            eng.close()
        assert r.choices[0].message.content == want
        p.send_signal(signal.SIGINT)  # the bootloader passes it on to its child
        assert p.wait(timeout=60) != 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # the bootloader and its child
        p.wait()
        log.close()
