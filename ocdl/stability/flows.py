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


class BlockDiagonal:
    """diag(K_1, …, K_B) as one (B·p)×(B·q) matrix, stored as its blocks (B, p, q).

    The B cases of a batch are one flow on R^{B·d} with a block-diagonal K (the flow structure,
    e.g. −Kᵀσ(Ky + β), is preserved exactly), so the one-matrix formulas of :mod:`ocdl.fields`
    apply unchanged; only ``@``, ``.T`` and ``.shape`` are needed."""

    __array_ufunc__ = None  # make ``ndarray @ BlockDiagonal`` defer to __rmatmul__

    def __init__(self, blocks: np.ndarray):
        self.blocks = np.asarray(blocks, dtype=np.float64)

    @property
    def shape(self) -> tuple[int, int]:
        B, p, q = self.blocks.shape
        return (B * p, B * q)

    @property
    def T(self) -> "BlockDiagonal":
        return BlockDiagonal(np.swapaxes(self.blocks, 1, 2))

    def __matmul__(self, Y):
        B, p, q = self.blocks.shape
        Y = np.asarray(Y)
        return (self.blocks @ Y.reshape(B, q, -1)).reshape((B * p,) + Y.shape[1:])

    def __rmatmul__(self, Y):
        return (self.T @ np.asarray(Y).T).T


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
    """The right-hand side of one of the flows above for a batch of B cases and m trajectories.

    ``flow(Y, K, beta)``: Y (B·d, m) — column r is trajectory r of all cases stacked —,
    K (B, d, d), β (B, d); returns F (B·d, m). With ``A`` (B, k, d) and ``f`` (B·k, m) (one data
    vector per trajectory) it adds the reaction term −λ Aᵀ(A y − f)."""

    def __init__(self, kind: str, sigma: str | activations.Activation, lam: float = 0.0,
                 A: np.ndarray | None = None, f: np.ndarray | None = None):
        if kind not in FLOWS:
            raise OcdlError(f"flow {kind!r} is not one of {', '.join(FLOWS)}")
        self.kind = kind
        self.act = activations.get(sigma)
        self.field = fields.make("monotone" if kind == "monotone" else "rk", self.act, xp_mod.NUMPY)
        self.lam = float(lam)
        self.A = None if A is None else BlockDiagonal(A)
        self.f = None if f is None else np.asarray(f, dtype=np.float64)

    def __call__(self, Y, K, beta):
        F = self.field(Y, BlockDiagonal(K), np.ravel(beta))[0]
        if self.A is not None and self.lam != 0.0:
            F = F - self.lam * (self.A.T @ (self.A @ Y - self.f))
        return F


def integrate(flow: Flow, controls: Controls, Y0: np.ndarray, t_eval: np.ndarray,
              diff_scale: np.ndarray | None = None, rtol: float = RTOL, atol: float = ATOL):
    """Solve the flow for every case and trajectory; returns (Y, D) at ``t_eval``:
    Y (n_t, B, m, d) the trajectories (Y0 is (B, m, d)), D (n_t, B, m−1, d) the differences
    y_r − y_0, accurate to the integrator's tolerance relative to ``diff_scale`` (B,) (default
    ‖D(0)‖ per case). ``t_eval`` must be sorted and lie in [0, T]."""
    Y0 = np.asarray(Y0, dtype=np.float64)
    B, m, d = Y0.shape
    t_eval = np.asarray(t_eval, dtype=np.float64)
    if np.any(np.diff(t_eval) < 0) or t_eval[0] < 0 or t_eval[-1] > controls.T * (1 + 1e-14):
        raise OcdlError("integrate: t_eval must be sorted and lie in [0, T]")
    cols = np.transpose(Y0, (0, 2, 1)).reshape(B * d, m)  # (B·d, m)
    D0 = cols[:, 1:] - cols[:, :1]
    if diff_scale is None:
        diff_scale = np.linalg.norm((Y0[:, 1:] - Y0[:, :1]).reshape(B, -1), axis=1)
    diff_scale = np.where(np.asarray(diff_scale) > 0, diff_scale, 1.0)
    atol_vec = np.concatenate([np.full(B * d, atol),
                               np.repeat(atol * diff_scale, d * (m - 1))])
    n0 = B * d

    def rhs_for(piece):
        def rhs(t, z):
            y = z[:n0, None]
            K, beta = controls.at(t, piece)
            F = flow(np.concatenate([y, y + z[n0:].reshape(n0, m - 1)], axis=1), K, beta)
            return np.concatenate([F[:, 0], (F[:, 1:] - F[:, :1]).ravel()])
        return rhs

    z = np.concatenate([cols[:, 0], D0.ravel()])
    out = np.empty((len(t_eval), z.size))
    pieces = controls.pieces()
    for k, (a, b) in enumerate(pieces):
        last = k == len(pieces) - 1
        sel = (t_eval >= a) & ((t_eval <= b) if last else (t_eval < b))
        at_start = sel & (t_eval == a)
        out[at_start] = z
        inner = sel & ~at_start
        sol = solve_ivp(rhs_for(k if controls.kind == "piecewise" else None), (a, b), z, method="DOP853",
                        t_eval=np.append(t_eval[inner & (t_eval < b)], b), rtol=rtol, atol=atol_vec)
        if sol.status != 0:
            raise OcdlError(f"integrate: the integrator failed on [{a:g}, {b:g}]: {sol.message}")
        z = sol.y[:, -1]
        out[inner & (t_eval < b)] = sol.y[:, :-1].T
        out[inner & (t_eval == b)] = z
    nt = len(t_eval)
    y = out[:, :n0].reshape(nt, B, d, 1)
    D = out[:, n0:].reshape(nt, B, d, m - 1)
    Y = np.concatenate([y, y + D], axis=3)
    return np.transpose(Y, (0, 1, 3, 2)), np.transpose(D, (0, 1, 3, 2))
