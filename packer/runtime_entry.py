"""Entry point of the one-file runtime that PyInstaller builds (packer/llamapack-runtime.spec).

The executable it makes is the front of every packed file: runtime/launcher.py finds the
weights appended to it and runs chat, one-shot or server mode.
"""
import sys

from runtime.launcher import entry

entry()
