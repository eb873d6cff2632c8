"""The monotone-σ estimate, measured: for y' = −K(t)ᵀσ(K(t)y + β(t)) with σ non-decreasing,

    ‖y(t) − y^δ(t)‖ ≤ ‖y(0) − y^δ(0)‖   for all t ≥ 0

(d/dt ½‖e‖² = −⟨σ(Ky+β) − σ(Ky^δ+β), K e⟩ ≤ 0). For seeded random cases (K, β piecewise
constant or smooth, widths d from ``dims``) two nearby initial values are integrated accurately
(:func:`ocdl.stability.flows.integrate`) and each case records

    ratio = max_{t ∈ (0, T]} ‖y(t) − y^δ(t)‖ / ‖y(0) − y^δ(0)‖

(max over the accepted steps and :data:`INTERIOR` points inside each step).

A ratio above 1 + :data:`TOL` is a violation. The same measurement of the unmodified flow
y' = σ(Ky + β) (``flow='plain'``) or of a non-monotone σ (sin, xtanh) must find violations.
"""

from __future__ import annotations

import numpy as np

from ocdl import activations
from ocdl.errors import OcdlError
from ocdl.stability import flows

# A ratio above 1 + TOL counts as a violation. The integrator's error in a ratio is ~1e-12
# (DOP853, rtol 1e-11, kinks located exactly; :func:`integrator_error` measures it), so TOL is
# round-off with four orders of margin, far below any real expansion.
TOL = 1e-8
MONOTONE = ("tanh", "relu", "leaky-relu", "softplus", "sigmoid", "hardtanh")
NON_MONOTONE = ("sin", "xtanh")
DIMS = tuple(range(1, 17))
INTERIOR = 3  # dense-output points inside each integrator step where the ratio is also taken
KINDS = ("piecewise", "smooth")


def draw_cases(n: int, dims=DIMS, seed: int = 0, T: float = 1.0, batch: int = 50,
               eps: tuple = (1e-3, 1e-1)):
    """Seeded random cases, grouped in batches of one width and control kind.

    Case i has width dims[i mod len(dims)] and kind KINDS[(i // len(dims)) mod 2]. Each batch is
    (controls, Y0 (B, 2, d), eps (B,)): y(0) ~ N(0, I), y^δ(0) = y(0) + ε v, v a random unit
    vector, ε log-uniform in ``eps``. Returns a list of (case indices, batch)."""
    if n < 1:
        raise OcdlError(f"cases: need at least 1, got {n}")
    dims = tuple(int(d) for d in dims)
    if not dims or min(dims) < 1:
        raise OcdlError(f"dims: need widths ≥ 1, got {dims}")
    groups: dict = {}
    for i in range(n):
        key = (dims[i % len(dims)], KINDS[(i // len(dims)) % 2])
        groups.setdefault(key, []).append(i)
    out = []
    root = np.random.SeedSequence(seed)
    keys = sorted(groups)
    for key, ss in zip(keys, root.spawn(len(keys))):
        d, kind = key
        idx = groups[key]
        for start, s2 in zip(range(0, len(idx), batch), ss.spawn((len(idx) + batch - 1) // batch)):
            part = idx[start:start + batch]
            rng = np.random.default_rng(s2)
            B = len(part)
            controls = flows.random_controls(rng, B, d, kind, T=T)
            y0 = rng.standard_normal((B, d))
            v = rng.standard_normal((B, d))
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            e = np.exp(rng.uniform(np.log(eps[0]), np.log(eps[1]), B))
            out.append((part, (controls, np.stack([y0, y0 + e[:, None] * v], axis=1), e)))
    return out


def ratios(sol: flows.Solution, eps: np.ndarray) -> np.ndarray:
    """‖y(t) − y^δ(t)‖ / ‖y(0) − y^δ(0)‖ at every output time: (n_t, B)."""
    return np.linalg.norm(sol.D[:, :, 0], axis=-1) / eps


def measure(sigma: str, flow: str = "monotone", cases: int = 200, dims=DIMS, seed: int = 0, T: float = 1.0,
            batch: int = 50, curves: int = 8, rtol: float = flows.RTOL, atol: float = flows.ATOL) -> dict:
    """Measure max_t ratio over ``cases`` random cases. Returns the JSON object of
    ``ocdl stability monotone`` ({sigma, flow, cases, max_ratio, violations} and extras:
    tol, monotone, dims, per-case ``ratios``, ``final_ratios`` (t = T), and ``curves``: a few
    (t, ratio(t)) pairs for the figures)."""
    act = activations.get(sigma)
    per_case = np.empty(cases)
    final = np.empty(cases)
    sample = []
    for idx, (controls, Y0, eps) in draw_cases(cases, dims, seed, T, batch):
        sol = flows.integrate(flows.Flow(flow, act), controls, Y0, rtol=rtol, atol=atol, interior=INTERIOR)
        r = ratios(sol, eps)
        per_case[idx] = r[1:].max(axis=0)
        final[idx] = r[-1]
        for b in range(min(len(idx), max(0, curves - len(sample)))):
            sample.append((sol.t, r[:, b]))
    return {
        "sigma": act.name,
        "flow": flow,
        "cases": int(cases),
        "max_ratio": float(per_case.max()),
        "violations": int(np.sum(per_case > 1.0 + TOL)),
        "tol": TOL,
        "monotone": act.monotone,
        "dims": [int(min(dims)), int(max(dims))],
        "median_final_ratio": float(np.median(final)),
        "ratios": per_case,
        "final_ratios": final,
        "curves": sample,
    }


def integrator_error(sigma: str, flow: str = "monotone", cases: int = 32, dims=DIMS, seed: int = 0,
                     factor: float = 100.0) -> float:
    """max |ratio_T(rtol, atol) − ratio_T(rtol/factor, atol/factor)| over a few cases, with
    ratio_T the ratio at t = T (a common time of both runs): an estimate of the integrator's
    error in the measured ratios, to compare with :data:`TOL`."""
    a = measure(sigma, flow, cases, dims, seed, curves=0)
    b = measure(sigma, flow, cases, dims, seed, curves=0, rtol=flows.RTOL / factor, atol=flows.ATOL / factor)
    return float(np.max(np.abs(a["final_ratios"] - b["final_ratios"])))


def json_view(result: dict) -> dict:
    """The result without its arrays (what ``--json`` prints)."""
    return {k: v for k, v in result.items() if k not in ("ratios", "final_ratios", "curves")}
