"""The regulariser R on the trained parameters.

    R = Σ_θ (α_θ/2) ‖θ‖²  +  (α_s/2) Σ_j ‖u_{j+1} − u_j‖² / h̄,    u_j = (K_j, β_j),  h̄ = T/N,

with θ over the trained keys among K, β, W, μ, h; for per-stage controls the smoothness term
compares the same stage of neighbouring layers. ∇R is given in closed form for the hand-written
adjoint; the array operations are the ones NumPy and PyTorch share.
"""

from __future__ import annotations


def _sumsq(x):
    return (x * x).sum()


def value(problem, params):
    """R(params) for a dict of NumPy arrays or torch tensors."""
    alpha = problem.tikhonov()
    R = 0.0
    for k in problem.trainable():
        if alpha[k] > 0:
            R = R + 0.5 * alpha[k] * _sumsq(params[k])
    a_s = problem.objective.smooth
    if a_s > 0 and problem.N > 1:
        for k in ("K", "beta"):
            D = params[k][1:] - params[k][:-1]
            R = R + 0.5 * a_s / problem.h * _sumsq(D)
    return R


def gradient(problem, params):
    """∇R as a dict over the trained keys (same array type as the input)."""
    alpha = problem.tikhonov()
    g = {k: alpha[k] * params[k] for k in problem.trainable()}
    a_s = problem.objective.smooth
    if a_s > 0 and problem.N > 1:
        for k in ("K", "beta"):
            D = (a_s / problem.h) * (params[k][1:] - params[k][:-1])
            g[k] = g[k] + 0.0  # a fresh array, never a view of params
            g[k][1:] += D
            g[k][:-1] -= D
    return g
