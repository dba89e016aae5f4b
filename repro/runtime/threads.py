"""Thread counts, pinned: float results are bit-exact only at the same thread count (a reduction split over more
threads adds in another order), so the driver fixes one count and hands the same to every worker it starts
(Ray workers included; Ray would otherwise give a 1-CPU task one thread). See docs/methods-and-decisions.md, "Reproducibility"."""
from __future__ import annotations

import os

THREADS_ENV = "S3FT_THREADS"


def pin_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads (and OMP/MKL's, for child processes) to `n`, else $S3FT_THREADS, else torch's
    default for this machine; returns the count."""
    import torch  # noqa: PLC0415

    n = n or int(os.environ.get(THREADS_ENV) or 0) or torch.get_num_threads()
    torch.set_num_threads(n)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", THREADS_ENV):
        os.environ[var] = str(n)
    return n
