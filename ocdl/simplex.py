"""Euclidean projection onto the scaled simplex Δ_T = {h ∈ R^N : h ≥ 0, Σ h = T}.

    P(x) = max(x − τ, 0)  with τ chosen so that Σ max(x − τ, 0) = T
    (sort-based, O(N log N); Held, Wolfe & Crowder 1974; Duchi et al. 2008).
"""

from __future__ import annotations

import numpy as np


def project(x, T: float = 1.0):
    """P_{Δ_T}(x) for a 1-D NumPy array or torch tensor (returns the same type)."""
    if T <= 0:
        raise ValueError("simplex total T must be positive")
    is_np = isinstance(x, np.ndarray)
    if is_np:
        u = np.sort(x)[::-1]
        css = np.cumsum(u) - T
        k = np.arange(1, x.shape[0] + 1)
        rho = np.nonzero(u - css / k > 0)[0][-1]
        tau = css[rho] / (rho + 1)
        return np.maximum(x - tau, 0.0)
    import torch

    u = torch.sort(x, descending=True).values
    css = torch.cumsum(u, 0) - T
    k = torch.arange(1, x.shape[0] + 1, dtype=x.dtype, device=x.device)
    rho = int(torch.nonzero(u - css / k > 0)[-1])
    tau = css[rho] / (rho + 1)
    return torch.clamp_min(x - tau, 0.0)
