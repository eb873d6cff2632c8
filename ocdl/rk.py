"""The reference Runge–Kutta step in NumPy (the engines have their own: fused PyTorch kernels in
:mod:`ocdl.engine.torch.network`, CasADi symbols in :mod:`ocdl.engine.casadi.discretisation`)."""

from __future__ import annotations

from ocdl.errors import OcdlError


def rk_step(f, y, h, tableau):
    """One step of the explicit tableau (A, b) for y' = f(y):

        F_i = f(Y_i),   Y_i = y + h Σ_{l<i} a_il F_l   (i = 1, …, s),   y⁺ = y + h Σ_i b_i F_i.

    In this order of operations: Y_i = (…(y + (h a_i1) F_1) + …) + (h a_i,i−1) F_{i−1} over the
    a_il ≠ 0, and y⁺ = y + h (b_1 F_1 + … + b_s F_s) over the b_i ≠ 0. ``y`` is an array (any
    shape f accepts, e.g. d×m with a sample per column), ``h`` a scalar or an array broadcasting
    against it (e.g. a step per row)."""
    if not tableau.explicit:
        raise OcdlError(f"tableau {tableau.name!r} is implicit; only explicit tableaux are stepped here")
    A, b = tableau.A, tableau.b
    Fs = []
    for i in range(tableau.s):
        Yi = y
        for l in range(i):
            if A[i, l] != 0.0:
                Yi = Yi + (h * A[i, l]) * Fs[l]
        Fs.append(f(Yi))
    return y + h * sum(b[i] * Fs[i] for i in range(tableau.s) if b[i] != 0.0)
