"""llamapack runtime: the launcher inside every packed file (GGUF reader, kernels, model, chat, server)."""

import os as _os

# The kernels run their own thread pool and numpy's BLAS is never called on the hot
# path; its worker threads would only compete for the same cores. Set before numpy
# is first imported (a caller's own setting wins).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

__version__ = "0.1.0"
