"""The inverse-problem flow y' = −K(t)ᵀσ(K(t)y + β(t)) − λAᵀ(Ay − f) and its estimates, measured.

With σ monotone (and the same K, β for both trajectories):

(a) data perturbation ‖f − f^δ‖ = δ, same start:      ‖y(t) − y^δ(t)‖ ≤ λ‖A‖ t δ;
(b) Ay† = f, C = sup_t ‖K(t)ᵀσ(K(t)y† + β(t))‖:       ‖y^δ(t) − y†‖ ≤ ‖y^δ(0) − y†‖ + (C + λδ‖A‖) t;
(c) A = I, y^δ(0) = f^δ, stopping time t* = τδ:        ‖y^δ(t*) − y†‖ ≤ δ + (C + λδ) τδ = O(δ);
(d) A of full column rank, s = σ_min(A), two starts and two data sets:
        ‖y(t) − y^δ(t)‖ ≤ e^{−λs²t} ‖y(0) − y^δ(0)‖ + (‖A‖δ/s²)(1 − e^{−λs²t})
    (d/dt ‖e‖ ≤ −λs²‖e‖ + λ‖A‖δ: the flow contracts at rate λs²).

Each estimate is checked on seeded random cases: measured / bound at every accepted step
t ∈ (0, T] of the integrator and at 3 dense-output points inside each step; its maximum over t and cases is ``max_ratio`` (≤ 1 + TOL: holds).
For (c) the error at t* is fitted against δ (log–log slope, the rate), beside the best error at
any single fixed time (the same t for every δ), which stops improving as δ → 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ocdl import activations, xp as xp_mod
from ocdl.errors import OcdlError
from ocdl.stability import flows
from ocdl.stability.monotone import INTERIOR, TOL

DELTAS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


def load_matrix(spec: str) -> np.ndarray | str:
    """``random``, ``identity`` or a file (.npy, or text/CSV readable by numpy.loadtxt) holding A."""
    if spec in ("random", "identity"):
        return spec
    p = Path(spec)
    if not p.is_file():
        raise OcdlError(f"--A: {spec!r} is not 'random', 'identity' or an existing file")
    try:
        A = np.load(p) if p.suffix == ".npy" else np.loadtxt(p, delimiter="," if p.suffix == ".csv" else None, ndmin=2)
    except Exception as e:  # numpy raises several types for unreadable files
        raise OcdlError(f"--A: cannot read {spec!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    A = np.asarray(A, dtype=np.float64)
    if A.ndim == 1:
        A = A[None, :]
    if A.ndim != 2 or A.size == 0 or not np.all(np.isfinite(A)):
        raise OcdlError(f"--A: {spec!r} must hold a finite, non-empty 2-D matrix, got shape {A.shape}")
    if A.shape[1] > 64:
        raise OcdlError(f"--A: {A.shape[1]} columns; at most 64 are supported")
    return A


def _matrices(rng, B, d, A_spec, full_rank: bool):
    """A for B cases of width d: (B, k, d)."""
    if isinstance(A_spec, np.ndarray):
        return np.broadcast_to(A_spec, (B,) + A_spec.shape).copy()
    if A_spec == "identity":
        return np.broadcast_to(np.eye(d), (B, d, d)).copy()
    k = int(rng.integers(d, 2 * d + 1)) if full_rank else int(rng.integers(1, 2 * d + 1))
    return rng.standard_normal((B, k, d)) / np.sqrt(k)


def _unit(rng, shape):
    v = rng.standard_normal(shape)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _norms(A):
    """(‖A‖₂, σ_min(A)) of each case (σ_min = 0 unless A has full column rank)."""
    s = np.linalg.svd(A, compute_uv=False)
    k, d = A.shape[1:]
    smin = s[:, -1] if k >= d else np.zeros(len(A))
    return s[:, 0], smin


def _C(controls: flows.Controls, act, ydag: np.ndarray) -> np.ndarray:
    """C = sup_t ‖K(t)ᵀσ(K(t)y† + β(t))‖ per case (exact for piecewise constant controls,
    a grid maximum for smooth ones)."""
    vals = []
    for t in controls.sample_times():
        K, beta = controls.at(t)
        S = act.sigma(np.einsum("bij,bj->bi", K, ydag) + beta, xp_mod.NUMPY)
        vals.append(np.linalg.norm(np.einsum("bji,bj->bi", K, S), axis=1))
    return np.max(vals, axis=0)


def _groups(cases: int, dims, seed: int):
    """(width, control kind, number of cases, rng) for each batch."""
    dims = tuple(int(d) for d in dims)
    root = np.random.SeedSequence(seed)
    keys = [(dims[i % len(dims)], ("piecewise", "smooth")[(i // len(dims)) % 2]) for i in range(cases)]
    uniq = sorted(set(keys))
    return [(d, kind, keys.count((d, kind)), np.random.default_rng(ss)) for (d, kind), ss in zip(uniq, root.spawn(len(uniq)))]


def estimate_a(sigma="tanh", lam=1.0, delta=1e-3, A="random", cases=50, dims=(1, 2, 4, 8), T=1.0, seed=0) -> dict:
    """(a): same start, data f and f^δ = f + δ v: ‖y − y^δ‖ against λ‖A‖tδ."""
    act = activations.get(sigma)
    ratios, worst = [], None
    for d, kind, B, rng in _groups(cases, _dims_for(A, dims), seed):
        controls = flows.random_controls(rng, B, d, kind, T=T)
        Am = _matrices(rng, B, d, A, full_rank=False)
        k = Am.shape[1]
        f = rng.standard_normal((B, k))
        fd = f + delta * _unit(rng, (B, k))
        y0 = rng.standard_normal((B, d))
        flow = flows.Flow("monotone", act, lam, Am, _data(f, fd))
        sol = flows.integrate(flow, controls, np.stack([y0, y0], axis=1), diff_scale=np.full(B, delta), interior=INTERIOR)
        nA, _ = _norms(Am)
        meas = np.linalg.norm(sol.D[1:, :, 0], axis=-1)
        bound = lam * nA[None, :] * sol.t[1:, None] * delta
        worst = _record(ratios, worst, sol.t, meas, bound, np.zeros(B))
    return _summary(np.concatenate(ratios), worst, lam=lam, delta=delta)


def estimate_b(sigma="tanh", lam=1.0, delta=1e-3, A="random", cases=50, dims=(1, 2, 4, 8), T=1.0, seed=1) -> dict:
    """(b): Ay† = f, data f^δ, start y^δ(0) = y† + w: ‖y^δ − y†‖ against
    ‖y^δ(0) − y†‖ + (C + λδ‖A‖)t."""
    act = activations.get(sigma)
    ratios, worst = [], None
    for d, kind, B, rng in _groups(cases, _dims_for(A, dims), seed):
        controls = flows.random_controls(rng, B, d, kind, T=T)
        Am = _matrices(rng, B, d, A, full_rank=False)
        k = Am.shape[1]
        ydag = rng.standard_normal((B, d))
        fd = np.einsum("bkd,bd->bk", Am, ydag) + delta * _unit(rng, (B, k))
        y0 = ydag + 0.5 * rng.standard_normal((B, d))
        flow = flows.Flow("monotone", act, lam, Am, fd.reshape(-1, 1))
        sol = flows.integrate(flow, controls, y0[:, None, :], interior=INTERIOR)
        nA, _ = _norms(Am)
        C = _C(controls, act, ydag)
        meas = np.linalg.norm(sol.Y[1:, :, 0] - ydag[None], axis=-1)
        e0 = np.linalg.norm(y0 - ydag, axis=1)
        bound = e0[None, :] + (C + lam * delta * nA)[None, :] * sol.t[1:, None]
        worst = _record(ratios, worst, sol.t, meas, bound, e0, C=C)
    return _summary(np.concatenate(ratios), worst, lam=lam, delta=delta)


def estimate_d(sigma="tanh", lam=1.0, delta=1e-3, A="random", cases=50, dims=(1, 2, 4, 8), T=1.0, seed=3) -> dict:
    """(d): A of full column rank, starts y(0), y^δ(0) = y(0) + ε w, data f, f^δ = f + δ v:
    ‖y − y^δ‖ against e^{−λs²t}ε + (‖A‖δ/s²)(1 − e^{−λs²t}), s = σ_min(A)."""
    act = activations.get(sigma)
    if isinstance(A, np.ndarray) and (A.shape[0] < A.shape[1] or np.linalg.svd(A, compute_uv=False)[-1] <= 1e-12 * np.linalg.norm(A, 2)):
        return {"max_ratio": None, "violations": None, "skipped": "A is not of full column rank"}
    ratios, worst = [], None
    for d, kind, B, rng in _groups(cases, _dims_for(A, dims), seed):
        controls = flows.random_controls(rng, B, d, kind, T=T)
        Am = _matrices(rng, B, d, A, full_rank=True)
        k = Am.shape[1]
        f = rng.standard_normal((B, k))
        fd = f + delta * _unit(rng, (B, k))
        y0 = rng.standard_normal((B, d))
        eps = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), B))
        yd0 = y0 + eps[:, None] * _unit(rng, (B, d))
        flow = flows.Flow("monotone", act, lam, Am, _data(f, fd))
        sol = flows.integrate(flow, controls, np.stack([y0, yd0], axis=1), interior=INTERIOR)
        nA, s = _norms(Am)
        rate = lam * s**2
        t = sol.t[1:, None]
        meas = np.linalg.norm(sol.D[1:, :, 0], axis=-1)
        bound = np.exp(-rate * t) * eps + (nA * delta / s**2) * (1.0 - np.exp(-rate * t))
        worst = _record(ratios, worst, sol.t, meas, bound, eps, rate=rate)
    return _summary(np.concatenate(ratios), worst, lam=lam, delta=delta)


def estimate_c(sigma="tanh", lam=1.0, tau=1.0, deltas=DELTAS, cases=20, d=4, T=1.0, seed=2, fixed=25) -> dict:
    """(c): A = I, y^δ(0) = f^δ = y† + δ v, stopped at t* = τδ. Returns the worst-case error at t*
    per δ, its fitted rate (slope of log error against log δ), the bound δ + (C + λδ)τδ, and the
    errors at the best single fixed time t_f, one t_f for every δ, chosen among ``fixed``
    log-spaced times in [τδ_max, T] (the stopping time of the noisiest data and later) to
    minimise Σ_δ log error, with their fitted rate: they level off at ‖y(t_f) − y†‖ > 0."""
    act = activations.get(sigma)
    deltas = np.asarray(sorted(deltas, reverse=True), dtype=np.float64)
    if np.any(deltas <= 0) or len(deltas) < 2:
        raise OcdlError("inverse (c): need at least two positive δ")
    if tau * deltas.max() > T:
        raise OcdlError(f"inverse (c): τ δ_max = {tau * deltas.max():g} exceeds T = {T:g}")
    rng = np.random.default_rng(seed)
    B = cases
    controls = flows.random_controls(rng, B, d, "smooth", T=T)
    ydag = rng.standard_normal((B, d))
    v = _unit(rng, (B, d))
    C = _C(controls, act, ydag)
    fixed_t = np.geomspace(tau * deltas.max(), T, fixed)
    err_star, bound, err_fixed = [], [], []
    for delta in deltas:
        fd = ydag + delta * v
        flow = flows.Flow("monotone", act, lam, np.broadcast_to(np.eye(d), (B, d, d)), fd.reshape(-1, 1))
        tstar = tau * delta
        sol = flows.integrate(flow, controls, fd[:, None, :], stops=(tstar, *fixed_t))
        err = np.linalg.norm(sol.Y[:, :, 0] - ydag[None], axis=-1)  # (n_t, B)
        err_star.append(err[sol.at(tstar)].max())
        bound.append(float((delta + (C + lam * delta) * tstar).max()))
        err_fixed.append([err[sol.at(t)].max() for t in fixed_t])
    err_star = np.array(err_star)
    err_fixed = np.array(err_fixed)  # (n_δ, fixed)
    best = int(np.argmin(np.log(err_fixed).sum(axis=0)))
    return {
        "rate": _slope(deltas, err_star),
        "errors": err_star.tolist(),
        "deltas": deltas.tolist(),
        "bounds": bound,
        "max_ratio": float(np.max(err_star / np.array(bound))),
        "tau": tau,
        "fixed_time": float(fixed_t[best]),
        "fixed_errors": err_fixed[:, best].tolist(),
        "fixed_rate": _slope(deltas, err_fixed[:, best]),
    }


def _slope(deltas, errors) -> float:
    """Least-squares slope of log(error) against log(δ)."""
    return float(np.polyfit(np.log(deltas), np.log(errors), 1)[0])


def _data(f, fd):
    """Data per trajectory, stacked as the flow expects: (B·k, 2)."""
    return np.stack([f, fd], axis=-1).reshape(-1, 2)


def _dims_for(A, dims):
    return (A.shape[1],) if isinstance(A, np.ndarray) else tuple(dims)


def _record(ratios, worst, t, meas, bound, start, **per_case):
    """Append the per-case max of measured/bound (rows: times t[1:], columns: cases) to ``ratios``
    and return the worse of ``worst`` and this group's worst case (curves from t = 0, where both
    equal ``start``; ``per_case`` arrays give extra values of that case)."""
    r = meas / bound
    ratios.append(r.max(axis=0))
    if worst is not None and r.max() <= worst["ratio"]:
        return worst
    b = int(np.argmax(r.max(axis=0)))
    return {"ratio": float(r.max()), "t": t, "measured": np.r_[start[b], meas[:, b]],
            "bound": np.r_[start[b], bound[:, b]], **{k: float(v[b]) for k, v in per_case.items()}}


def _summary(ratios, worst, **extra) -> dict:
    return {"max_ratio": float(ratios.max()), "violations": int(np.sum(ratios > 1.0 + TOL)),
            "cases": int(len(ratios)), **extra, "worst": worst}


def measure(sigma="tanh", lam=1.0, delta=1e-3, A="random", tau=1.0, cases=50, T=1.0, seed=0) -> dict:
    """All four estimates; the JSON object of ``ocdl stability inverse``."""
    act = activations.get(sigma)
    if not act.monotone:
        raise OcdlError(f"inverse: σ = {act.name!r} is not monotone; the estimates assume it is")
    if not (lam > 0 and np.isfinite(lam)):
        raise OcdlError(f"inverse: λ must be a finite number > 0, got {lam}")
    if not (0 < delta < np.inf):
        raise OcdlError(f"inverse: δ must be a finite number > 0, got {delta}")
    A = load_matrix(A) if isinstance(A, str) else A
    kw = dict(sigma=act, lam=lam, delta=delta, A=A, cases=cases, T=T)
    return {
        "sigma": act.name, "lam": lam, "delta": delta,
        "A": A if isinstance(A, str) else f"file {A.shape[0]}×{A.shape[1]}",
        "a": estimate_a(**kw, seed=seed),
        "b": estimate_b(**kw, seed=seed + 1),
        "c": estimate_c(act, lam, tau, cases=max(4, cases // 2), T=T, seed=seed + 2),
        "d": estimate_d(**kw, seed=seed + 3),
    }


def json_view(result: dict) -> dict:
    """The result without its arrays (what ``--json`` prints)."""
    out = dict(result)
    for key in ("a", "b", "d"):
        out[key] = {k: v for k, v in result[key].items() if k != "worst"}
        if result[key].get("worst"):
            out[key]["worst_case_ratio"] = result[key]["worst"]["ratio"]
    return out
