"""The continuous flows of the stability estimates, their controls, and an accurate integrator.

For B independent cases of the same width d (one batch), each with m trajectories (rows):

    monotone   y' = −K(t)ᵀ σ(K(t) y + β(t))                          (fields.MonotoneField)
    plain      y' =  σ(K(t) y + β(t))                                (fields.SigmaField)
    inverse    y' = −K(t)ᵀ σ(K(t) y + β(t)) − λ Aᵀ(A y − f_r)        (data f_r per trajectory r)

Controls are piecewise constant (K_k, β_k on [t_k, t_{k+1}), M equal pieces of [0, T]) or smooth
(K(t) = K₀ + sin(ωt) K₁ + cos(ωt) K₂, likewise β, ω = 2π/T).

:func:`integrate` solves all cases as one system with scipy's DOP853 (rtol 1e-11, atol 1e-13 by
default), restarting at the breakpoints of piecewise constant controls. It integrates the first
trajectory y and the differences D_r = y_r − y (r ≥ 1) — the same ODE in other coordinates — with
the absolute tolerance of D scaled by its size, so ‖y_r − y‖ is accurate *relative to itself*
(integrating y and y_r separately would only make it accurate relative to ‖y‖).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

from ocdl import activations, fields, xp as xp_mod
from ocdl.errors import OcdlError

RTOL = 1e-11
ATOL = 1e-13
FLOWS = ("monotone", "plain")


class _MatrixStack(np.ndarray):
    """A stack of matrices (B, d, d) whose ``.T`` transposes each matrix, so that the one-matrix
    formulas of :mod:`ocdl.fields` (``Y @ K.T``, ``σ @ K``) apply to a batch of cases unchanged."""

    @property
    def T(self):
        return np.swapaxes(np.asarray(self), -1, -2)


def stack(K: np.ndarray) -> np.ndarray:
    """View a (B, d, d) array as a :class:`_MatrixStack` (for the vector fields)."""
    return np.asarray(K).view(_MatrixStack)


@dataclass(frozen=True)
class Controls:
    """K(t), β(t) of B cases on [0, T].

    ``kind = 'piecewise'``: ``K`` (B, M, d, d), ``beta`` (B, M, d) on M equal pieces of [0, T].
    ``kind = 'smooth'``: ``K`` (B, 3, d, d), ``beta`` (B, 3, d) are the coefficients of
    K₀ + sin(ωt) K₁ + cos(ωt) K₂ (ω = 2π/T)."""

    kind: str
    T: float
    K: np.ndarray
    beta: np.ndarray

    @property
    def B(self) -> int:
        return self.K.shape[0]

    @property
    def d(self) -> int:
        return self.K.shape[-1]

    def pieces(self) -> list[tuple[float, float]]:
        """Intervals on which K, β are smooth (the integrator restarts between them)."""
        if self.kind == "smooth":
            return [(0.0, self.T)]
        M = self.K.shape[1]
        edges = np.linspace(0.0, self.T, M + 1)
        return list(zip(edges[:-1], edges[1:]))

    def at(self, t: float, piece: int | None = None):
        """(K(t), β(t)) of every case: (B, d, d), (B, d). ``piece`` selects a piece directly."""
        if self.kind == "piecewise":
            k = piece if piece is not None else min(int(t / self.T * self.K.shape[1]), self.K.shape[1] - 1)
            return self.K[:, k], self.beta[:, k]
        w = 2.0 * np.pi / self.T
        s, c = np.sin(w * t), np.cos(w * t)
        return (self.K[:, 0] + s * self.K[:, 1] + c * self.K[:, 2],
                self.beta[:, 0] + s * self.beta[:, 1] + c * self.beta[:, 2])

    def sample_times(self, n: int = 257) -> np.ndarray:
        """Times at which sup_t quantities are evaluated: every piece (exact for piecewise
        constant controls) or an n-point grid (smooth controls; the sup is then a grid maximum)."""
        if self.kind == "piecewise":
            return np.array([0.5 * (a + b) for a, b in self.pieces()])
        return np.linspace(0.0, self.T, n)

    def sup_norm_K(self) -> np.ndarray:
        """sup_t ‖K(t)‖₂ of every case (B,)."""
        return np.max([np.linalg.norm(self.at(t)[0], ord=2, axis=(1, 2)) for t in self.sample_times()], axis=0)


def random_controls(rng: np.random.Generator, B: int, d: int, kind: str, T: float = 1.0, pieces: int = 4,
                    scale_K: tuple = (0.5, 2.0), scale_beta: tuple = (0.0, 2.0)) -> Controls:
    """Seeded random controls: K = κ G/√d with G ~ N(0,1) entries and κ ~ U(scale_K) per case,
    β = b g with g ~ N(0,1), b ~ U(scale_beta) per case (smooth: the same for K₀, K₁, K₂, with
    K₁, K₂ halved)."""
    if kind not in ("piecewise", "smooth"):
        raise OcdlError(f"controls: kind {kind!r} is not 'piecewise' or 'smooth'")
    M = pieces if kind == "piecewise" else 3
    kappa = rng.uniform(*scale_K, size=(B, 1, 1, 1))
    b = rng.uniform(*scale_beta, size=(B, 1, 1))
    K = kappa * rng.standard_normal((B, M, d, d)) / np.sqrt(d)
    beta = b * rng.standard_normal((B, M, d))
    if kind == "smooth":
        K[:, 1:] *= 0.5
        beta[:, 1:] *= 0.5
    return Controls(kind, float(T), K, beta)


class Flow:
    """The right-hand side of one of the flows above for a batch: ``flow(Y, K, beta)`` with Y
    (B, m, d), K (B, d, d), β (B, d) returns F (B, m, d).

    ``A`` (B, k, d) and ``f`` (B, m, k) (one data vector per trajectory) add −λ Aᵀ(A y − f)."""

    def __init__(self, kind: str, sigma: str | activations.Activation, lam: float = 0.0,
                 A: np.ndarray | None = None, f: np.ndarray | None = None):
        if kind not in FLOWS:
            raise OcdlError(f"flow {kind!r} is not one of {', '.join(FLOWS)}")
        self.kind = kind
        self.act = activations.get(sigma)
        self.field = fields.make("monotone" if kind == "monotone" else "rk", self.act, xp_mod.NUMPY)
        self.lam = float(lam)
        self.A = None if A is None else np.asarray(A, dtype=np.float64)
        self.f = None if f is None else np.asarray(f, dtype=np.float64)

    def __call__(self, Y, K, beta):
        F, _ = self.field(Y, stack(K), beta[:, None, :])
        F = np.asarray(F)
        if self.A is not None and self.lam != 0.0:
            At = np.swapaxes(self.A, -1, -2)
            F = F - self.lam * ((Y @ At - self.f) @ self.A)
        return F


def integrate(flow: Flow, controls: Controls, Y0: np.ndarray, t_eval: np.ndarray,
              diff_scale: np.ndarray | None = None, rtol: float = RTOL, atol: float = ATOL):
    """Solve the flow for every case and trajectory; returns (Y, D) at ``t_eval``:
    Y (n_t, B, m, d) the trajectories, D (n_t, B, m−1, d) the differences y_r − y_0, both accurate
    to the integrator's tolerance (D relative to ``diff_scale`` (B,), default ‖D(0)‖).

    ``t_eval`` must lie in [0, T] and be sorted."""
    Y0 = np.asarray(Y0, dtype=np.float64)
    B, m, d = Y0.shape
    t_eval = np.asarray(t_eval, dtype=np.float64)
    if np.any(np.diff(t_eval) < 0) or t_eval[0] < 0 or t_eval[-1] > controls.T * (1 + 1e-14):
        raise OcdlError("integrate: t_eval must be sorted and lie in [0, T]")
    D0 = Y0[:, 1:] - Y0[:, :1]
    if diff_scale is None:
        diff_scale = np.linalg.norm(D0.reshape(B, -1), axis=1)
    diff_scale = np.where(np.asarray(diff_scale) > 0, diff_scale, 1.0)
    atol_vec = np.concatenate([np.full(B * d, atol),
                               (atol * np.broadcast_to(diff_scale[:, None, None], (B, m - 1, d))).ravel()])
    n0 = B * d

    def unpack(z):
        y = z[:n0].reshape(B, 1, d)
        return np.concatenate([y, y + z[n0:].reshape(B, m - 1, d)], axis=1)

    def rhs_for(piece):
        def rhs(t, z):
            K, beta = controls.at(t, piece)
            F = flow(unpack(z), K, beta)
            return np.concatenate([F[:, 0].ravel(), (F[:, 1:] - F[:, :1]).ravel()])
        return rhs

    z = np.concatenate([Y0[:, 0].ravel(), D0.ravel()])
    out = np.empty((len(t_eval), z.size))
    pieces = controls.pieces()
    for k, (a, b) in enumerate(pieces):
        last = k == len(pieces) - 1
        sel = (t_eval >= a) & ((t_eval <= b) if last else (t_eval < b))
        at_start = sel & (t_eval == a)
        out[at_start] = z
        inner = sel & ~at_start
        sol = solve_ivp(rhs_for(k if controls.kind == "piecewise" else None), (a, b), z, method="DOP853",
                        t_eval=np.append(t_eval[inner], b), rtol=rtol, atol=atol_vec)
        if sol.status != 0:
            raise OcdlError(f"integrate: the integrator failed on [{a:g}, {b:g}]: {sol.message}")
        out[inner] = sol.y[:, :-1].T
        z = sol.y[:, -1]
    Y = np.concatenate([out[:, :n0].reshape(-1, B, 1, d),
                        out[:, :n0].reshape(-1, B, 1, d) + out[:, n0:].reshape(-1, B, m - 1, d)], axis=2)
    return Y, out[:, n0:].reshape(-1, B, m - 1, d)
