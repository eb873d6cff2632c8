"""Optimise-then-discretise (OTD): the continuous adjoint equation, discretised three ways.

The continuous optimality system of min Φ(y(T)) s.t. y' = f(y, u) is (H = pᵀ f)

    y' = f(y, u),   p' = −∂_y f(y, u)ᵀ p,   p(T) = ∂Φ/∂y(T),   ∂E/∂u = ∫ ∂_u f(y, u)ᵀ p dt,

with ∂E/∂h_j = (1/h_j) ∫_{layer j} ⟨p, f⟩ dt for a learned layer length h_j. Three
discretisations of it (NumPy, column batches d×m, J = ∂_y f):

``partner`` — the adjoint equation with the symplectic partner (Ã, b), ã_il = b_l − b_l a_li/b_i,
on the forward stages Y_i of the network, written as the partitioned RK step forward in time

    P_i = p^[j] − h Σ_l ã_il J_lᵀ P_l,      p^[j+1] = p^[j] − h Σ_i b_i J_iᵀ P_i,

and solved for (p^[j], P_1, …, P_s) given p^[j+1] as one dense linear system per sample (no
hand elimination, so it is an independent check of the engine's backward sweep); gradient from
∂_u H at the stages: ∂E/∂u_{j,i} = h b_i ∂_u f(Y_i, u_{j,i})ᵀ P_i, ∂E/∂h_j = Σ_i b_i ⟨P_i, F_i⟩.

``same_tableau`` — what a generic ODE library does (torchdiffeq ``odeint_adjoint``, diffrax
``BacksolveAdjoint``): the augmented system (y, p) is integrated backwards in time from
(y^[N], p^[N]) with the *forward* tableau (A, b), one step of −h_j per layer; the states at the
stages are *recomputed backwards* (not stored), and the gradient is the same quadrature (b, c):
∂E/∂u_j ≈ h_j Σ_i b_i ∂_u f(Ỹ_i, u_j)ᵀ P̃_i.

``continuous`` — forward and adjoint solved by scipy ``solve_ivp`` (DOP853, rtol 1e-12) on each
interval where the control is smooth, the gradient integrals carried along: the gradient of the
continuous problem. Backwards, y is re-integrated from the state stored at the interval's end
(accurate, since each interval is short).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.integrate import solve_ivp

from ocdl.errors import OcdlError

RTOL = 1e-12
ATOL = 1e-14


@dataclass
class AdjointResult:
    """Gradient over the trained keys, the costates p at the layer times (N+1, d, m) and E."""

    grads: dict
    p: np.ndarray
    E: float


def jacobian_T(field, Y, Z, S, K, d: int) -> np.ndarray:
    """J_nᵀ for every sample n, (m, d, d), from d vector–Jacobian products with unit co-vectors."""
    cols = []
    for k in range(d):
        E = np.zeros_like(Y)
        E[k] = 1.0
        cols.append(field.vjp(Y, Z, S, K, E)[0])  # column n is J_nᵀ e_k
    return np.stack(cols, axis=-1).transpose(1, 0, 2)


# ---------------------------------------------------------------------------- partner
def partner(inst) -> AdjointResult:
    """The partner discretisation (Ã, b) of the adjoint on the forward stages (see the module)."""
    tab = inst.tableau
    At = tab.partner_A
    if At is None:
        raise OcdlError(f"tableau {tab.name!r} has some b_i = 0: the partner form does not exist")
    b, s, d, m, N = tab.b, tab.s, inst.d, inst.m, inst.N
    hs = inst.params["h"]
    fld = inst.field
    states, layers = inst.forward_stages()
    E, p, classifier = inst.terminal(states[N])
    gK, gb, gh = np.zeros_like(inst.params["K"]), np.zeros_like(inst.params["beta"]), np.zeros(N)
    p_grid = [None] * (N + 1)
    p_grid[N] = p
    S_ = (s + 1) * d
    I = np.eye(d)

    def blk(r):  # block r of the unknowns: 0 = p^[j], 1 + i = P_i
        return slice(r * d, (r + 1) * d)

    for j in range(N - 1, -1, -1):
        h = hs[j]
        Ys, Fs, Zs, Ss = layers[j]
        us = [inst.control(j, i) for i in range(s)]
        JT = [jacobian_T(fld, Ys[i], Zs[i], Ss[i], us[i][0], d) for i in range(s)]
        M = np.zeros((m, S_, S_))
        M[:, blk(0), blk(0)] = I
        for i in range(s):
            M[:, blk(0), blk(1 + i)] = -h * b[i] * JT[i]
            M[:, blk(1 + i), blk(0)] = -I
            M[:, blk(1 + i), blk(1 + i)] += I
            for l in range(s):
                if At[i, l] != 0.0:
                    M[:, blk(1 + i), blk(1 + l)] += h * At[i, l] * JT[l]
        rhs = np.zeros((m, S_))
        rhs[:, blk(0)] = p.T
        x = np.linalg.solve(M, rhs[:, :, None])[:, :, 0]
        p = np.ascontiguousarray(x[:, blk(0)].T)
        for i in range(s):
            Pi = np.ascontiguousarray(x[:, blk(1 + i)].T)
            _, dK, db = fld.vjp(Ys[i], Zs[i], Ss[i], us[i][0], Pi)
            _add_stage(inst, gK, gb, j, i, h * b[i] * dK, h * b[i] * db)
            gh[j] += b[i] * float(np.vdot(Pi, Fs[i]))
        p_grid[j] = p
    return AdjointResult(inst.assemble(gK, gb, gh, classifier), np.stack(p_grid), E)


def _add_stage(inst, gK, gb, j, i, dK, db):
    """Add a stage's control gradient to u_{j,i} (per-stage) or to u_j (per-layer)."""
    if inst.problem.per_stage:
        gK[j, i] += dK
        gb[j, i] += db
    else:
        gK[j] += dK
        gb[j] += db


# ---------------------------------------------------------------------------- same tableau
PER_STAGE_REASON = (
    "per-stage controls u_{j,i} are not a function of time (stages with equal c_i carry different "
    "controls), so there is no ODE y' = f(y, u(t)) for a generic ODE solver to integrate"
)


def same_tableau(inst) -> AdjointResult:
    """Backwards integration of (y, p) with the forward tableau (A, b), states recomputed
    backwards from y^[N] (see the module docstring). Per-layer controls only."""
    if inst.problem.per_stage:
        raise OcdlError(PER_STAGE_REASON)
    tab = inst.tableau
    A, b, s, N = tab.A, tab.b, tab.s, inst.N
    hs = inst.params["h"]
    fld = inst.field
    states, _ = inst.forward_stages()
    E, p, classifier = inst.terminal(states[N])
    y = states[N]
    gK, gb, gh = np.zeros_like(inst.params["K"]), np.zeros_like(inst.params["beta"]), np.zeros(N)
    p_grid = [None] * (N + 1)
    p_grid[N] = p
    for j in range(N - 1, -1, -1):
        h = hs[j]
        K, beta = inst.control(j)
        Fy, Fp = [], []  # slopes of y' = f and p' = −Jᵀ p at the backward stages
        for i in range(s):
            Yi, Pi = y, p
            for l in range(i):
                if A[i, l] != 0.0:
                    Yi = Yi - h * A[i, l] * Fy[l]
                    Pi = Pi - h * A[i, l] * Fp[l]
            F, Z, S = fld(Yi, K, beta)
            JtP, dK, db = fld.vjp(Yi, Z, S, K, Pi)
            Fy.append(F)
            Fp.append(-JtP)
            gK[j] += h * b[i] * dK
            gb[j] += h * b[i] * db
            gh[j] += b[i] * float(np.vdot(Pi, F))
        y = y - h * sum(b[i] * Fy[i] for i in range(s))
        p = p - h * sum(b[i] * Fp[i] for i in range(s))
        p_grid[j] = p
    return AdjointResult(inst.assemble(gK, gb, gh, classifier), np.stack(p_grid), E)


# ---------------------------------------------------------------------------- continuous
@dataclass
class Piece:
    """An interval [t0, t1] on which the control u(t) = Σ_k φ_k(t) θ_k is smooth.

    ``control(t)`` gives (K(t), β(t)); ``weights(t)`` gives φ_k(t) for the coefficients listed in
    ``slots`` (indices into the coefficient arrays θ), so that ∂E/∂θ_k = ∫ φ_k ∂_u fᵀ p dt."""

    t0: float
    t1: float
    control: Callable
    weights: Callable
    slots: np.ndarray


@dataclass
class ContinuousResult:
    yT: np.ndarray  # y(T), d×m
    E: float  # the loss at y(T)
    p: np.ndarray  # p at the piece boundaries, (n_pieces+1, d, m)
    gK: np.ndarray  # ∂E/∂θ_K, (n_coef, d, d)
    gb: np.ndarray  # ∂E/∂θ_β, (n_coef, d)
    gH: np.ndarray  # ∫_piece ⟨p, f⟩ dt, (n_pieces,)
    classifier: dict  # ∂E/∂W, ∂E/∂μ at y(T)


def continuous(field, pieces: list[Piece], Y0: np.ndarray, terminal, n_coef: int,
               rtol: float = RTOL, atol: float = ATOL) -> ContinuousResult:
    """Forward y' = f and backward (y, p, ∫φ ∂_u fᵀ p, ∫⟨p, f⟩) by ``solve_ivp`` (DOP853) on every
    piece; ``terminal(yT) -> (E, p(T), classifier grads)``."""
    d, m = Y0.shape
    dm = d * m

    def solve(rhs, t0, t1, x0):
        sol = solve_ivp(rhs, (t0, t1), x0, method="DOP853", rtol=rtol, atol=atol)
        if not sol.success:
            raise OcdlError(f"continuous reference: solve_ivp failed on [{t0:g}, {t1:g}]: {sol.message}")
        return sol.y[:, -1]

    y_at = [Y0]
    for pc in pieces:
        def rhs_f(t, x, pc=pc):
            K, beta = pc.control(t)
            return field(x.reshape(d, m), K, beta)[0].ravel()

        y_at.append(solve(rhs_f, pc.t0, pc.t1, y_at[-1].ravel()).reshape(d, m))
    E, p, classifier = terminal(y_at[-1])
    gK = np.zeros((n_coef, d, d))
    gb = np.zeros((n_coef, d))
    gH = np.zeros(len(pieces))
    p_at = [None] * (len(pieces) + 1)
    p_at[-1] = p
    for k in range(len(pieces) - 1, -1, -1):
        pc = pieces[k]
        nk = len(pc.slots)

        def rhs_b(t, x, pc=pc, nk=nk):
            Y = x[:dm].reshape(d, m)
            P = x[dm:2 * dm].reshape(d, m)
            K, beta = pc.control(t)
            F, Z, S = field(Y, K, beta)
            JtP, dK, db = field.vjp(Y, Z, S, K, P)
            w = pc.weights(t)
            return np.concatenate([F.ravel(), -JtP.ravel(), -np.multiply.outer(w, dK).ravel(),
                                   -np.multiply.outer(w, db).ravel(), [-np.vdot(P, F)]])

        x0 = np.concatenate([y_at[k + 1].ravel(), p.ravel(), np.zeros(nk * d * d + nk * d + 1)])
        x = solve(rhs_b, pc.t1, pc.t0, x0)
        p = x[dm:2 * dm].reshape(d, m)
        o = 2 * dm
        np.add.at(gK, pc.slots, x[o:o + nk * d * d].reshape(nk, d, d))
        o += nk * d * d
        np.add.at(gb, pc.slots, x[o:o + nk * d].reshape(nk, d))
        gH[k] = x[-1]
        p_at[k] = p
    return ContinuousResult(y_at[-1], E, np.stack(p_at), gK, gb, gH, classifier)


def continuous_network(inst) -> AdjointResult:
    """The gradient of the continuous problem for per-layer (piecewise constant) controls:
    u(t) = u_j on [t_j, t_j + h_j]."""
    if inst.problem.per_stage:
        raise OcdlError(
            "per-stage controls u_{j,i} define no control function u(t) (stages with equal c_i carry "
            "different controls), so the continuous problem is not defined for them"
        )
    t = inst.times()
    one = np.ones(1)
    pieces = [
        Piece(t[j], t[j + 1], (lambda tt, j=j: inst.control(j)), (lambda tt: one), np.array([j]))
        for j in range(inst.N)
    ]
    res = continuous(inst.field, pieces, inst.Y0, inst.terminal, inst.N)
    gh = res.gH / inst.params["h"]
    return AdjointResult(inst.assemble(res.gK, res.gb, gh, res.classifier), res.p, res.E)
