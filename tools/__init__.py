"""Developer tools: benchmarks and fixture generators, run from the repository root as modules
(`python -m tools.bench`, `python -m tools.make_model_fixtures`, ...), so they import each other and
the project's packages without editing sys.path.

random_gguf.py writes the random-weight llama GGUFs of the tests, the fixtures and the benchmark.
This package is not part of the distribution (pyproject.toml lists runtime and packer only): nothing
here ships in a wheel or a packed file.
"""
