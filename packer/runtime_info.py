"""What a runtime executable is: its platform tag and the facts recorded inside it."""
from __future__ import annotations

import platform
import sys

_MACHINES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


def platform_tag() -> str:
    """`linux-x86_64`, `darwin-aarch64`, `windows-x86_64`: the runtime's file name suffix."""
    system = {"win32": "windows", "cygwin": "windows"}.get(sys.platform, sys.platform)
    system = "linux" if system.startswith("linux") else system
    machine = platform.machine().lower()
    return f"{system}-{_MACHINES.get(machine, machine)}"


def runtime_info() -> dict[str, str]:
    """Written into the runtime at build time (llamapack-runtime.json), read by `packer inspect`."""
    from runtime import __version__

    import PyInstaller

    return {"version": __version__, "platform": platform_tag(),
            "python": platform.python_version(), "pyinstaller": PyInstaller.__version__}
