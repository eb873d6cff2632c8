"""The continuous flows of the stability estimates, their controls, and an accurate integrator.

For B independent cases of the same width d (one batch), each with m trajectories:

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

For piecewise-linear σ (relu, leaky-relu, hardtanh: :data:`KINKS`) each unit's affine piece is
frozen (σ(z) = σ(r) + σ'(r)(z − r) with r inside the piece, exact there); after every step the
pieces of Z = K y + β are checked, the first crossing of a kink is located on the step's dense
output (brentq) and the integration restarts there with the new piece. Without this the error
control has to resolve every kink with tiny steps: slower, and in our measurements errors of
1e-9…1e-7 in a ratio at d = 16 (rtol 1e-11) instead of ~1e-12.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.integrate import DOP853
from scipy.optimize import brentq

from ocdl import activations, fields, xp as xp_mod
from ocdl.errors import OcdlError

RTOL = 1e-11
ATOL = 1e-13
FLOWS = ("monotone", "plain")
# Points where σ' jumps (σ is affine between them). The integrator locks the affine piece of
# every unit and restarts exactly where a unit crosses one, so DOP853 never steps over a kink.
KINKS = {"relu": (0.0,), "leaky-relu": (0.0,), "hardtanh": (-1.0, 1.0)}
MAX_RESTARTS = 200_000


class BlockDiagonal:
    """diag(K_1, …, K_B) as one (B·p)×(B·q) matrix, stored as its blocks (B, p, q).

    The B cases of a batch are one flow on R^{B·d} with a block-diagonal K (the flow structure,
    e.g. −Kᵀσ(Ky + β), is preserved exactly), so the one-matrix formulas of :mod:`ocdl.fields`
    apply unchanged; only ``@``, ``.T`` and ``.shape`` are needed."""

    __array_ufunc__ = None  # make ``ndarray @ BlockDiagonal`` defer to __rmatmul__

    def __init__(self, blocks: np.ndarray, _T: "BlockDiagonal | None" = None):
        self.blocks = np.ascontiguousarray(blocks, dtype=np.float64)
        self._T = _T

    @property
    def shape(self) -> tuple[int, int]:
        B, p, q = self.blocks.shape
        return (B * p, B * q)

    @property
    def T(self) -> "BlockDiagonal":
        if self._T is None:
            self._T = BlockDiagonal(np.swapaxes(self.blocks, 1, 2), _T=self)
        return self._T

    def __matmul__(self, Y):
        B, p, q = self.blocks.shape
        Y = np.asarray(Y)
        return (self.blocks @ Y.reshape(B, q, -1)).reshape((B * p,) + Y.shape[1:])

    def __rmatmul__(self, Y):
        return (self.T @ np.asarray(Y).T).T


@dataclass(frozen=True, eq=False)
class Controls:
    """K(t), β(t) of B cases on [0, T].

    ``kind = 'piecewise'``: ``K`` (B, M, d, d), ``beta`` (B, M, d) on M equal pieces of [0, T].
    ``kind = 'smooth'``: ``K`` (B, 3, d, d), ``beta`` (B, 3, d) are the coefficients of
    K₀ + sin(ωt) K₁ + cos(ωt) K₂ (ω = 2π/T)."""

    kind: str
    T: float
    K: np.ndarray
    beta: np.ndarray

    def __post_init__(self):
        # contiguous per-piece (or per-coefficient) arrays: K[:, k] slices are strided
        object.__setattr__(self, "_K", [np.ascontiguousarray(self.K[:, k]) for k in range(self.K.shape[1])])
        object.__setattr__(self, "_beta", [np.ascontiguousarray(self.beta[:, k]) for k in range(self.beta.shape[1])])
        object.__setattr__(self, "_ops", {})
        if self.kind == "smooth":  # coefficient matrices as rows: K(t) = (1, sin ωt, cos ωt) @ rows
            object.__setattr__(self, "_Krows", np.ascontiguousarray(np.moveaxis(self.K, 1, 0)).reshape(3, -1))
            object.__setattr__(self, "_brows", np.ascontiguousarray(np.moveaxis(self.beta, 1, 0)).reshape(3, -1))

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

    def piece_of(self, t: float) -> int:
        """Index of the piece containing t (piecewise constant controls)."""
        M = self.K.shape[1]
        return min(max(int(t / self.T * M), 0), M - 1)

    def at(self, t: float, piece: int | None = None):
        """(K(t), β(t)) of every case: (B, d, d), (B, d). ``piece`` selects a piece directly."""
        if self.kind == "piecewise":
            k = self.piece_of(t) if piece is None else piece
            return self._K[k], self._beta[k]
        w = 2.0 * np.pi / self.T
        coef = np.array([1.0, np.sin(w * t), np.cos(w * t)])
        B, d = self.B, self.d
        return (coef @ self._Krows).reshape(B, d, d), (coef @ self._brows).reshape(B, d)

    def row(self, t: float, b: int, i: int, piece: int | None = None):
        """(row i of K(t), β_i(t)) of case b."""
        if self.kind == "piecewise":
            k = self.piece_of(t) if piece is None else piece
            return self._K[k][b, i], self._beta[k][b, i]
        w = 2.0 * np.pi / self.T
        s, c = np.sin(w * t), np.cos(w * t)
        K, beta = self._K, self._beta
        return K[0][b, i] + s * K[1][b, i] + c * K[2][b, i], beta[0][b, i] + s * beta[1][b, i] + c * beta[2][b, i]

    def operator(self, t: float, piece: int | None = None):
        """(K(t) as a :class:`BlockDiagonal`, β(t) flattened to (B·d,)), cached per piece."""
        if self.kind == "piecewise":
            k = self.piece_of(t) if piece is None else piece
            if k not in self._ops:
                self._ops[k] = (BlockDiagonal(self._K[k]), self._beta[k].ravel())
            return self._ops[k]
        K, beta = self.at(t)
        return BlockDiagonal(K), beta.ravel()

    def sample_times(self, n: int = 257) -> np.ndarray:
        """Times at which sup_t quantities are evaluated: every piece (exact for piecewise
        constant controls) or an n-point grid (smooth controls; the sup is then a grid maximum)."""
        if self.kind == "piecewise":
            return np.array([0.5 * (a + b) for a, b in self.pieces()])
        return np.linspace(0.0, self.T, n)


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
    K a :class:`BlockDiagonal` (B·d × B·d), β (B·d,); returns F (B·d, m). With ``A`` (B, k, d) and ``f`` (B·k, m) (one data
    vector per trajectory) it adds the reaction term −λ Aᵀ(A y − f). ``regime`` (B·d, m) freezes
    the affine piece of σ of every unit (see :data:`KINKS`)."""

    def __init__(self, kind: str, sigma: str | activations.Activation, lam: float = 0.0,
                 A: np.ndarray | None = None, f: np.ndarray | None = None):
        if kind not in FLOWS:
            raise OcdlError(f"flow {kind!r} is not one of {', '.join(FLOWS)}")
        self.kind = kind
        self.act = activations.get(sigma)
        self.kinks = np.array(KINKS.get(self.act.name, ()), dtype=np.float64)
        self.lam = float(lam)
        self.A = None if A is None else BlockDiagonal(A)
        self.f = None if f is None else np.asarray(f, dtype=np.float64)
        self._field = self.field_for(None)

    def field_for(self, regime: np.ndarray | None):
        """The vector field of :mod:`ocdl.fields`, with σ frozen to the given affine pieces."""
        act = self.act
        if regime is not None and self.kinks.size:
            k = self.kinks
            refs = np.concatenate([[k[0] - 1.0], 0.5 * (k[:-1] + k[1:]), [k[-1] + 1.0]])[regime]
            s0 = act.sigma(refs, xp_mod.NUMPY)
            s1 = act.dsigma(refs, xp_mod.NUMPY)
            act = dataclasses.replace(act, sigma=lambda x, xp: s0 + s1 * (x - refs),
                                      dsigma=lambda x, xp: s1 + 0.0 * x)
        return fields.make("monotone" if self.kind == "monotone" else "sigma", act, xp_mod.NUMPY)

    def regime(self, Z: np.ndarray) -> np.ndarray | None:
        """The affine piece of σ each entry of Z lies in (None for smooth σ)."""
        return np.searchsorted(self.kinks, Z) if self.kinks.size else None

    def __call__(self, Y, K, beta, field=None):
        F = (field or self._field)(Y, K, beta)[0]
        if self.A is not None and self.lam != 0.0:
            F = F - self.lam * (self.A.T @ (self.A @ Y - self.f))
        return F


@dataclass(frozen=True)
class Solution:
    """Accepted step points of :func:`integrate`: t (n_t,), Y (n_t, B, m, d) the trajectories,
    D (n_t, B, m−1, d) the differences y_r − y_0."""

    t: np.ndarray
    Y: np.ndarray
    D: np.ndarray

    def at(self, t: float) -> int:
        """Index of the output time closest to t."""
        return int(np.argmin(np.abs(self.t - t)))


def integrate(flow: Flow, controls: Controls, Y0: np.ndarray, t_end: float | None = None,
              stops=(), diff_scale: np.ndarray | None = None, rtol: float = RTOL,
              atol: float = ATOL, interior: int = 0) -> Solution:
    """Solve the flow on [0, t_end] (default T) for every case and trajectory (Y0: (B, m, d)).

    Output at every accepted step, at every breakpoint of the controls and at ``stops`` (exact
    restarts there), and at ``interior`` equally spaced points inside each step (from DOP853's
    7th-order dense output), so that a maximum over t does not miss what happens between steps.
    D = y_r − y_0 is controlled to ``atol·diff_scale`` absolutely (diff_scale (B,), default
    ‖D(0)‖ per case) and ``rtol`` relatively."""
    Y0 = np.asarray(Y0, dtype=np.float64)
    B, m, d = Y0.shape
    T = controls.T if t_end is None else float(t_end)
    if not (0.0 < T <= controls.T * (1 + 1e-14)):
        raise OcdlError(f"integrate: t_end = {T} is not in (0, T = {controls.T}]")
    cols = np.transpose(Y0, (0, 2, 1)).reshape(B * d, m)  # (B·d, m)
    if diff_scale is None:
        diff_scale = np.linalg.norm((Y0[:, 1:] - Y0[:, :1]).reshape(B, -1), axis=1)
    diff_scale = np.where(np.asarray(diff_scale, dtype=np.float64) > 0, diff_scale, 1.0)
    atol_vec = np.concatenate([np.full(B * d, atol), np.repeat(atol * diff_scale, d * (m - 1))])
    n0 = B * d

    def full(z):
        y = z[:n0, None]
        return np.concatenate([y, y + z[n0:].reshape(n0, m - 1)], axis=1)

    def Zof(t, z, piece):
        K, beta = controls.operator(t, piece)
        return K @ full(z) + beta[:, None]

    def unit_Z(t, z, i, r, piece):
        """Z[i, r] alone: row i of K(t) times trajectory r of that case, plus β_i."""
        b, row = divmod(i, d)
        k_row, beta_i = controls.row(t, b, row, piece)
        y = z[b * d:(b + 1) * d]
        if r:
            y = y + z[n0 + (b * d + np.arange(d)) * (m - 1) + (r - 1)]
        return k_row @ y + beta_i

    def rhs_for(piece, field):
        def rhs(t, z):
            K, beta = controls.operator(t, piece)
            F = flow(full(z), K, beta, field)
            return np.concatenate([F[:, 0], (F[:, 1:] - F[:, :1]).ravel()])
        return rhs

    edges = sorted({0.0, T, *[b for _, b in controls.pieces() if b < T], *[s for s in stops if 0 < s < T]})
    z = np.concatenate([cols[:, 0], (cols[:, 1:] - cols[:, :1]).ravel()])
    ts, zs = [0.0], [z]
    restarts = 0
    h = None
    for a, b in zip(edges[:-1], edges[1:]):
        piece = controls.piece_of(0.5 * (a + b)) if controls.kind == "piecewise" else None
        t = a
        regime = flow.regime(Zof(t, z, piece))
        while t < b:
            solver = DOP853(rhs_for(piece, flow.field_for(regime)), t, z, b, rtol=rtol, atol=atol_vec,
                            first_step=None if h is None else min(h, b - t))
            crossed = False
            while solver.status == "running":
                if solver.step() is not None or solver.status == "failed":
                    raise OcdlError(f"integrate: DOP853 failed at t = {solver.t:g}")
                h = solver.step_size
                if regime is not None:
                    found = _first_crossing(solver, regime, flow, lambda tt, zz: Zof(tt, zz, piece),
                                            lambda tt, zz, i, r: unit_Z(tt, zz, i, r, piece))
                    if found is not None:
                        t, z, regime = found
                        crossed = True
                        break
                if interior:
                    tt = solver.t_old + (solver.t - solver.t_old) * np.arange(1, interior + 1) / (interior + 1)
                    ts.extend(tt)
                    zs.extend(solver.dense_output()(tt).T)
                ts.append(solver.t)
                zs.append(solver.y)
            if crossed:
                ts.append(t)
                zs.append(z)
                restarts += 1
                if restarts > MAX_RESTARTS:
                    raise OcdlError("integrate: too many kink crossings (sliding along a kink?)")
            else:
                t, z = b, solver.y
    nt = len(ts)
    out = np.array(zs)
    y = out[:, :n0].reshape(nt, B, d, 1)
    D = out[:, n0:].reshape(nt, B, d, m - 1)
    Y = np.concatenate([y, y + D], axis=3)
    return Solution(np.array(ts), np.transpose(Y, (0, 1, 3, 2)), np.transpose(D, (0, 1, 3, 2)))


def _first_crossing(solver, regime, flow: Flow, Zof, unit_Z, samples: int = 8):
    """The earliest kink crossing inside the last step, as (t*, z(t*), pieces after it), or None.

    Screen: the pieces of Z at 4 points of the step from the cubic Hermite interpolant of the
    step's end values and slopes (no extra evaluations; catches units that cross and come back).
    If any unit changed, the step's dense output is sampled at ``samples`` points; the units that
    change in the earliest sampled interval are located exactly (brentq on Z_unit(t) = kink) and
    the first one switches piece (the others are re-checked after the restart). A unit that
    leaves a kink at once back to its old side (sliding) cannot be bracketed; the step's end is
    then accepted with the pieces found there."""
    t0, t1 = solver.t_old, solver.t
    h = t1 - t0
    y0, y1, f0, f1 = solver.y_old, solver.y, solver.K[0], solver.f
    for th in (0.25, 0.5, 0.75, 1.0):
        yt = ((2 * th**3 - 3 * th**2 + 1) * y0 + (th**3 - 2 * th**2 + th) * h * f0
              + (3 * th**2 - 2 * th**3) * y1 + (th**3 - th**2) * h * f1)
        if np.any(flow.regime(Zof(t0 + th * h, yt)) != regime):
            break
    else:
        return None
    dense = solver.dense_output()
    grid = np.linspace(t0, t1, samples + 1)
    states = dense(grid)
    R = np.array([flow.regime(Zof(t, states[:, j])) for j, t in enumerate(grid)])  # (samples+1, B·d, m)
    off = R != regime
    off[0] = False  # at t0 a unit may sit on the kink it has just crossed
    units = np.argwhere(off.any(0))
    if units.size == 0:
        return None
    first = off.argmax(0)[units[:, 0], units[:, 1]]
    j = first.min()
    lo, hi = grid[j - 1], grid[j]
    best_t, best = t1, None
    for i, r in units[first == j]:
        up = R[j, i, r] > regime[i, r]
        kink = flow.kinks[regime[i, r]] if up else flow.kinks[regime[i, r] - 1]

        def g(t, i=i, r=r, kink=kink):
            return unit_Z(t, dense(t), i, r) - kink

        glo, ghi = g(lo), g(hi)
        if glo == 0.0 or np.sign(glo) == np.sign(ghi):
            tc = lo
        else:
            tc = brentq(g, lo, hi, xtol=1e-15 * max(1.0, abs(t1)), rtol=4 * np.finfo(float).eps)
        if tc < best_t:
            best_t, best = tc, (i, r, up)
    if best is None or best_t <= t0:
        return t1, y1, R[-1]  # sliding along a kink: no exact switching point
    i, r, up = best
    regime = regime.copy()
    regime[i, r] += 1 if up else -1  # one kink at a time
    return best_t, dense(best_t), regime
