"""Trust-region SQP on the full-space NLP with the KKT systems solved by condensing ("lifted
Newton"): every iterate carries all layer states Y^[1..N] and multipliers λ_j = −p^[j+1], and each
step is the exact-Hessian SQP step of the full-space NLP (:mod:`.nlp`)

    min_x f(x)  s.t.  g_j(x) = Y^[j+1] − Ψ_j(Y^[j]; w_j) = 0,     L = f + Σ_j λ_jᵀ g_j,

computed without factorising the KKT matrix. The layer equations' Jacobian in Y is block
bidiagonal with identity diagonal, so the linearised equations give the states' step from the
controls' step, dY = a + S dθ, with

    a^[0] = 0,  a^[j+1] = A_j a^[j] − g_j        (the defects carried forward),
    S = [Ṡ^[j]]: Ṡ^[j+1] = A_j Ṡ^[j] + B_j E_j   (the tangents of :mod:`.condensed`),

and the QP  min ∇fᵀdx + ½ dxᵀ ∇²L dx  over dx = (dθ, a + S dθ) becomes the n_θ-dimensional

    min_dθ  bᵀ dθ + ½ dθᵀ H dθ,    H = Zᵀ ∇²L Z,   b = Zᵀ (∇f + ∇²L (0, a)),   Z = [I; S].

H is :meth:`.condensed.ReducedHessian.sweep` at the iterate's states and multipliers (Q_j with
p^[j+1] = −λ_j, not the forward-swept costates). b by one backward sweep,

    π^[N] = ∂ℓ/∂y^[N] + L_yy a^[N],   π^[j] = A_jᵀ π^[j+1] + Q_yy^(j) a^[j],
    b_{w_j} = Σ_n B_jᵀ π^[j+1] + Q_ywᵀ a^[j],   b_c = ∂ℓ/∂c + Σ_n L_cy a^[N]   (+ ∇R),

and the new multipliers by the adjoint of the step (stationarity of the QP in Y):

    p⁺^[N] = ∂ℓ/∂y^[N] + L_yy dy^[N] + L_yc dc,   p⁺^[j] = A_jᵀ p⁺^[j+1] + Q_yy dy^[j] + Q_yw dw_j.

Globalisation: the QP is solved in a trust region ‖dθ‖ ≤ Δ exactly (eigendecomposition of the
n_θ × n_θ matrix H, Moré–Sorensen), so a negative-curvature direction of the reduced problem is
used rather than regularised away, and the inertia of the full KKT matrix (correct iff H ≻ 0) is
known without a factorisation. Steps are accepted on the ℓ₁ merit φ = f + Σ_i ν_i|g_i| (one weight
per layer equation, ν_i > |λ⁺_i|, :meth:`LiftedSQP.weights`) by the ratio of actual to predicted
reduction; a rejected step is retried once with a second-order correction of the states,
dY ← dY + c, c^[j+1] = A_j c^[j] − g_j(x + dx) (the Maratos effect).
Should the trust region collapse at an infeasible iterate, the states are restored by the forward
sweep at the current controls (feasible by construction), the costates by the backward sweep, and
the iteration goes on (at most ``MAX_RESTORATIONS`` times; logged, counted in the history).

With ``formulation = 'reduced'`` the same method runs on E(θ) (single shooting): states re-simulated
and costates swept after every step, a = 0 and g = 0 (no merit weights) — a trust-region Newton
method with the exact Hessian ∇²E.

Converged when ‖∇_x L‖_∞ ≤ tol and ‖g‖_∞ ≤ tol (unscaled); per iteration one Riccati sweep
(O(m N² n_w d (d + n_w))) and one or two merit evaluations (O(m N)).
"""

from __future__ import annotations

import math
import time

import numpy as np
from threadpoolctl import threadpool_limits

from ocdl.engine.casadi.condensed import ReducedHessian
from ocdl.engine.casadi.ipopt import Outcome
from ocdl.interrupt import StopOnSigint

ETA = 1e-4  # accept a step when actual / predicted reduction > ETA
RADIUS0 = 1.0
RADIUS_MAX = 1e4
MAX_RESTORATIONS = 5
WEIGHT = 1.1  # κ: the ℓ₁ weights exceed the multipliers by 10 % (see LiftedSQP.weights)


def trust_region_step(H, b, radius):
    """argmin bᵀs + ½ sᵀHs subject to ‖s‖ ≤ radius (H symmetric, any inertia), exactly by the
    eigendecomposition H = V Λ Vᵀ: s = −V (Λ + τ)⁻¹ Vᵀ b with τ ≥ max(0, −λ_min) the root of
    ‖s(τ)‖ = radius when the Newton step is not inside (Moré and Sorensen 1983, incl. the hard case).
    Returns (s, τ, on_boundary, λ_min)."""
    lam, V = np.linalg.eigh(H)
    bt = V.T @ b
    lmin = float(lam[0])
    if lmin > 0:
        s = -bt / lam
        if np.linalg.norm(s) <= radius:
            return V @ s, 0.0, False, lmin
    lo = max(0.0, -lmin)
    scale = max(1.0, float(np.max(np.abs(lam))))
    low = lam <= lmin + 1e-12 * scale  # the eigenspace of λ_min
    bnorm = float(np.linalg.norm(bt))
    if lmin <= 0 and float(np.linalg.norm(bt[low])) <= 1e-12 * max(bnorm, 1e-300):
        # hard case: b has no component along λ_min's eigenspace; s(τ = −λ_min) may lie inside
        s = np.zeros_like(bt)
        s[~low] = -bt[~low] / (lam[~low] + lo)
        ns = float(np.linalg.norm(s))
        if ns <= radius:
            k = int(np.flatnonzero(low)[0])
            s[k] += math.sqrt(max(radius * radius - ns * ns, 0.0))
            return V @ s, lo, True, lmin
    hi = lo + bnorm / radius  # there ‖s‖ ≤ ‖b‖ / (τ − τ_lo) ≤ radius
    tau = hi
    for _ in range(200):
        d = lam + tau
        s = -bt / d
        ns = float(np.linalg.norm(s))
        if abs(ns - radius) <= 1e-12 * radius or hi - lo <= 1e-15 * max(1.0, hi):
            break
        if ns > radius:
            lo = tau
        else:
            hi = tau
        # Newton on 1/‖s(τ)‖ − 1/radius (nearly linear in τ), kept inside the bracket
        dpsi = float(np.sum(bt * bt / d ** 3)) / ns ** 3
        step = (1.0 / ns - 1.0 / radius) / dpsi if dpsi > 0 else 0.0
        tau = tau - step
        if not (lo < tau < hi):
            tau = 0.5 * (lo + hi)
    return V @ s, float(tau), True, lmin


class LiftedSQP:
    """The method of the module docstring on a full-space or reduced
    :class:`~ocdl.engine.casadi.nlp.NetworkNLP` (explicit tableaux, no simplex)."""

    def __init__(self, nlp, lifted: bool = True):
        self.nlp, self.lifted = nlp, lifted
        self.rh = ReducedHessian(nlp)
        self.N, self.m, self.d = nlp.problem.N, nlp.m, nlp.d

    # ------------------------------------------------------------------ pieces
    def layer_maps(self, theta, states):
        """Ψ_j(Y^[j]; w_j), j = 0 … N−1, each (m, d)."""
        rh = self.rh
        return [rh.step(states[j], rh.layer_w(theta, j), rh.layer_h(theta, j))[0].reshape(self.m, self.d).copy()
                for j in range(self.N)]

    def merit_terms(self, theta, states):
        """(f, the defects g_j = Y^[j+1] − Ψ_j(Y^[j]), each (m, d)) at x = (θ, Y)."""
        W, mu = self.rh.classifier(theta)
        self.rh.loss_derivs(states[self.N], W, mu, self.nlp.c.T)
        f = float(self.rh.loss_derivs.res[2][0]) + float(self.rh.R(theta))
        if not self.lifted:
            return f, [np.zeros((self.m, self.d))] * self.N
        psi = self.layer_maps(theta, states)
        return f, [states[j + 1] - psi[j] for j in range(self.N)]

    def kkt(self, sw, p, g):
        """(‖∇_x L‖_∞, ‖g‖_∞) at (x, λ = −p): ∇_θ L = sw.g, ∇_{Y^[j]} L = A_jᵀ p^[j+1] − p^[j]
        (j < N), ∇_{Y^[N]} L = ∂ℓ/∂y^[N] − p^[N]."""
        r = float(np.max(np.abs(sw.g)))
        if self.lifted:
            r = max(r, float(np.max(np.abs(sw.dldy - p[self.N - 1]))))
            for j in range(1, self.N):
                r = max(r, float(np.max(np.abs(sw.Atp[j] - p[j - 1]))))
        viol = max((float(np.max(np.abs(gj))) for gj in g), default=0.0)
        return r, viol

    def qp(self, sw, g):
        """(b, the model's constant ∇_Y fᵀa + ½ aᵀ∇²_YY L a) of the condensed QP (module docstring)."""
        N, d = self.N, self.d
        A, Q, Lz = sw.A, sw.Q, sw.Lz
        a = [np.zeros((self.m, d))]
        for j in range(N):
            a.append(np.einsum("nkl,nl->nk", A[j], a[j]) - g[j])
        Lyy = Lz[:, :d, :d]
        pi = sw.dldy + np.einsum("nkl,nl->nk", Lyy, a[N])
        const = float(np.sum(sw.dldy * a[N])) + 0.5 * float(np.einsum("nk,nkl,nl->", a[N], Lyy, a[N]))
        bl = np.zeros(self.rh.order.size)  # layer order
        nw = self.rh.nw
        for j in range(N - 1, -1, -1):
            Qyy, Qyw = Q[j]
            bl[j * nw:(j + 1) * nw] = np.einsum("nkw,nk->w", sw.B[j], pi) + np.einsum("nkw,nk->w", Qyw, a[j])
            const += 0.5 * float(np.einsum("nk,nkl,nl->", a[j], Qyy, a[j]))
            pi = np.einsum("nlk,nl->nk", A[j], pi) + np.einsum("nkl,nl->nk", Qyy, a[j])
        if self.rh.cidx.size:
            bl[N * nw:] = sw.dldc + np.einsum("nkb,nb->k", Lz[:, d:, :d], a[N])
        b = np.array(self.rh.gradR(sw.theta)).reshape(-1)
        b[self.rh.order] += bl
        return b, const

    def states_step(self, sw, dtheta, g):
        """dY^[0] = 0, dY^[j+1] = A_j dY^[j] + B_j dw_j − g_j."""
        dY = [np.zeros((self.m, self.d))]
        for j in range(self.N):
            dY.append(np.einsum("nkl,nl->nk", sw.A[j], dY[j]) + sw.B[j] @ self.rh.layer_w(dtheta, j) - g[j])
        return dY

    def multipliers(self, sw, dtheta, dY):
        """p⁺^[1..N] (list index j: p⁺^[j+1]) of the QP's solution, by the adjoint of the step."""
        N, d = self.N, self.d
        Lz = sw.Lz
        pk = sw.dldy + np.einsum("nkl,nl->nk", Lz[:, :d, :d], dY[N])
        if self.rh.cidx.size:
            pk = pk + Lz[:, :d, d:] @ dtheta[self.rh.cidx]
        p = [None] * N
        p[N - 1] = pk
        for j in range(N - 1, 0, -1):
            Qyy, Qyw = sw.Q[j]
            pk = (np.einsum("nlk,nl->nk", sw.A[j], pk) + np.einsum("nkl,nl->nk", Qyy, dY[j])
                  + Qyw @ self.rh.layer_w(dtheta, j))
            p[j - 1] = pk
        return p

    def sweep(self, theta, states, p):
        """The Riccati sweeps at x = (θ, Y) with multipliers −p (lifted), or at θ with the forward
        sweep's states and costates (reduced, or p = None); returns (sweep, p^[1..N])."""
        sw = self.rh.sweep(theta, states, p if self.lifted else None, keep_q=True)
        if p is None:  # consistent costates: p^[N] = ∂ℓ/∂y, p^[j] = A_jᵀ p^[j+1]
            p = [None] * self.N
            p[self.N - 1] = sw.dldy
            for j in range(self.N - 1, 0, -1):
                p[j - 1] = sw.Atp[j]
        return sw, p

    # ------------------------------------------------------------------ the iteration
    def solve(self, theta0, tol, max_iter, log=print, quiet=False) -> Outcome:
        with threadpool_limits(limits=1, user_api="blas"), StopOnSigint() as stop:
            return self._solve(np.array(theta0, dtype=np.float64), tol, max_iter, log, quiet, stop)

    def _solve(self, theta, tol, max_iter, log, quiet, stop):
        t0 = time.perf_counter()
        eps = np.finfo(float).eps
        states = self.rh.simulate(theta)
        f, g = self.merit_terms(theta, states)
        sw, p = self.sweep(theta, states, None)
        nu = [np.zeros_like(q) for q in p]  # ℓ₁ weights, one per layer equation
        radius = RADIUS0
        hist = {"iteration": [], "objective": [], "inf_pr": [], "inf_du": [], "radius": [], "shift": [], "restored": []}
        restored = False
        status, k, tau, restorations = "Maximum_Iterations_Exceeded", 0, 0.0, 0
        while True:
            kkt, viol = self.kkt(sw, p, g)
            for key, v in (("iteration", k), ("objective", f), ("inf_pr", viol), ("inf_du", kkt),
                           ("radius", radius), ("shift", tau), ("restored", restored)):
                hist[key].append(v)
            restored = False
            if not quiet and log:
                log(f"sqp {k:5d}  E = {f:.12e}  inf_pr = {viol:.2e}  inf_du = {kkt:.2e}  "
                    f"radius = {radius:.1e}  shift = {tau:.1e}")
            if not (math.isfinite(f) and math.isfinite(kkt) and math.isfinite(viol)):
                status = "Invalid_Number_Detected"
                break
            if kkt <= tol and viol <= tol:
                status = "Solve_Succeeded"
                break
            if stop.requested:
                status = "User_Requested_Stop"
                break
            if k >= max_iter:
                break
            b, const = self.qp(sw, g)
            while True:  # until a step is accepted (the sweep at x is reused)
                dtheta, tau, boundary, _ = trust_region_step(sw.H, b, radius)
                m_f = const + float(b @ dtheta) + 0.5 * float(dtheta @ sw.H @ dtheta)
                dY = p_new = nu_t = None
                if self.lifted:
                    dY = self.states_step(sw, dtheta, g)
                    p_new = self.multipliers(sw, dtheta, dY)
                    nu_t = self.weights(nu, p_new, g, m_f)
                pred = -m_f + self.weighted_norm(nu_t, g)
                phi = f + self.weighted_norm(nu_t, g)
                accepted, rho = False, -np.inf
                for soc in (False, True):
                    th_t = theta + dtheta
                    st_t = ([states[0]] + [states[j] + dY[j] for j in range(1, self.N + 1)] if self.lifted
                            else self.rh.simulate(th_t))
                    f_t, g_t = self.merit_terms(th_t, st_t)
                    ared = phi - (f_t + self.weighted_norm(nu_t, g_t))
                    noise = 1e3 * eps * max(1.0, abs(phi))  # reductions at rounding level
                    tiny = pred <= noise
                    rho = ared / pred if pred > 0 else -np.inf
                    if math.isfinite(f_t) and (rho > ETA or (tiny and ared >= -noise)):
                        accepted = True
                        break
                    if soc or not self.lifted or not math.isfinite(f_t):
                        break
                    # second-order correction: the states' step also absorbs the defects at x + dx
                    c = self.states_step(sw, np.zeros_like(dtheta), g_t)
                    dY = [dY[j] + c[j] for j in range(self.N + 1)]
                step_norm = float(np.linalg.norm(dtheta))
                if accepted:
                    if rho > 0.75 and boundary:
                        radius = min(2.0 * radius, RADIUS_MAX)
                    elif rho < 0.25 and not tiny:
                        radius = 0.25 * step_norm
                    break
                radius = 0.25 * step_norm
                if radius <= 1e-14 * max(1.0, float(np.linalg.norm(theta))):
                    status = "Search_Direction_Becomes_Too_Small"
                    break
            if not accepted:
                if not (self.lifted and viol > tol and restorations < MAX_RESTORATIONS):
                    break
                # restoration: the forward sweep at θ is feasible; costates by the backward sweep
                restorations += 1
                if not quiet and log:
                    log(f"sqp: trust region collapsed at inf_pr = {viol:.2e}: states re-simulated at the current "
                        f"controls ({restorations} of at most {MAX_RESTORATIONS})")
                states = self.rh.simulate(theta)
                f, g = self.merit_terms(theta, states)
                sw, p = self.sweep(theta, states, None)
                nu, radius, tau = [np.zeros_like(q) for q in p], RADIUS0, 0.0
                status, restored = "Maximum_Iterations_Exceeded", True
                k += 1
                continue
            theta, states, f, g = th_t, st_t, f_t, g_t
            if self.lifted:
                nu = nu_t
            sw, p = self.sweep(theta, states, p_new)
            k += 1
        x = np.concatenate([theta] + ([s.reshape(-1) for s in states[1:]] if self.lifted else []))
        lam_g = np.concatenate([-q.reshape(-1) for q in p]) if self.lifted else np.zeros(0)
        return Outcome(x=x, f=f, lam_g=lam_g, lam_x=np.zeros(x.size), status=status,
                       success=status == "Solve_Succeeded", iterations=k, solve_time_s=time.perf_counter() - t0,
                       history=hist, interrupted=stop.requested)

    @staticmethod
    def weighted_norm(nu, g):
        """Σ_i ν_i |g_i| (0 without weights: the reduced method has no layer equations)."""
        return 0.0 if nu is None else float(sum(np.sum(n * np.abs(gj)) for n, gj in zip(nu, g)))

    def weights(self, nu, p_new, g, m_f):
        """Powell's (1978) ℓ₁ weights with a margin, ν_i = max(κ|λ⁺_i|, ½(ν_i + κ|λ⁺_i|)), κ = 1.1
        (exact: ν_i > |λ*_i| near a solution; with κ = 1 the weights can sink to the exactness
        threshold and let the iterate drift infeasible), raised uniformly if needed so that the
        step predicts a reduction, −m_f + Σ ν_i|g_i| ≥ ½ Σ ν_i|g_i|."""
        lam = [WEIGHT * np.abs(q) for q in p_new]
        nu = [np.maximum(lq, 0.5 * (n + lq)) for n, lq in zip(nu, lam)]
        gw, g1 = self.weighted_norm(nu, g), self.weighted_norm([1.0] * len(g), g)
        if g1 > 0 and m_f > 0.5 * gw:
            raise_by = (2.0 * m_f - gw) / g1
            nu = [n + raise_by for n in nu]
        return nu
