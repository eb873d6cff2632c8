"""The relative difference used to compare results (engines, gradients, costates)."""

from __future__ import annotations

import numpy as np


def rel_diff(a, b) -> float:
    """max |a − b| / max |b| over all entries, in float64: the difference of ``a`` relative to the
    reference ``b`` in the max-norm; the absolute difference max |a − b| where b = 0 (and 0.0 for
    empty arrays)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    num = float(np.max(np.abs(a - b), initial=0.0))
    den = float(np.max(np.abs(b), initial=0.0))
    return num / den if den > 0 else num
