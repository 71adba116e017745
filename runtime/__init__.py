"""llamapack runtime: the launcher inside every packed file (GGUF reader, kernels, model, chat, server)."""

__version__ = "0.1.0"
