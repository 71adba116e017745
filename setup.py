# The C kernels are a cffi extension module (runtime._kernels); setuptools builds it
# through the cffi_modules hook, which pyproject.toml cannot declare on its own.
from setuptools import setup

setup(cffi_modules=["csrc/build.py:ffibuilder"])
