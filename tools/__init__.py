"""Developer tools: benchmarks and fixture generators, run from the repository root as modules
(`python -m tools.bench`, `python -m tools.make_model_fixtures`, ...), so they import each other and
the project's packages without editing sys.path.

random_gguf.py writes the random-weight llama GGUFs of the tests, the fixtures and the benchmark.
This package is not part of the distribution (pyproject.toml lists runtime and packer only): nothing
here ships in a wheel or a packed file.
"""

# The runtime package limits numpy's BLAS to one thread before numpy first loads (see
# runtime/__init__.py). The tools import numpy themselves, often before the runtime: without
# this, OpenBLAS's idle worker threads spin on the cores the engines under test are timed on.
import runtime  # noqa: E402,F401
