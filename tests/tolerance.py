"""Tolerances for floats that two engines or kernels compute (HF vs packed scoring, padded vs packed training, one
process vs several): they agree to rounding, and rounding grows with the magnitude.

A log-likelihood is a sum of negative per-token terms, each carrying fp32 rounding of the log-softmax over its
logits; the sum's error grows with its length and so with its magnitude. A fixed absolute tolerance that holds at
-10 fails at -1000 on another CPU's kernels (an AMD EPYC machine: |d| 1.4e-4 at -1038, relative 1.3e-7, against an
absolute 1e-4). So every such comparison is relative, with an absolute floor only for values near 0, where relative
error is meaningless.
"""
from __future__ import annotations

import numpy as np
import pytest

#: Relative tolerance of a log-likelihood (or loss) computed two ways in fp32: ~100x the largest seen (1.3e-7).
REL = 1e-5
#: Absolute floor for values near 0 (a one-token log-probability close to 0 still carries the rounding of its
#: log-sum-exp, whose terms are logits of order 10).
FLOOR = 1e-4


def approx(expected, rel: float = REL, floor: float = FLOOR):
    """``pytest.approx`` scaled to the magnitude of `expected`."""
    return pytest.approx(expected, rel=rel, abs=floor)


def assert_close(actual, desired, rel: float = REL, floor: float = FLOOR) -> None:
    """Element-wise ``|actual - desired| <= floor + rel * |desired|``."""
    np.testing.assert_allclose(actual, desired, rtol=rel, atol=floor)


def max_scaled_diff(a, b) -> float:
    """Largest |a - b| over two dicts of tensors, relative to the largest |b| (the tensors' own scale)."""
    scale = max(float(b[n].abs().max()) for n in b) or 1.0
    return max(float((a[n] - b[n]).abs().max()) for n in b) / scale
