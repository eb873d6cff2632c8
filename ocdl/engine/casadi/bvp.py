"""The discretised Hamiltonian boundary value problem, solved as one nonlinear system by Newton.

Unknowns z = (θ, Y^[1..N], p^[1..N] [, ν]). With H(y, p, u) = pᵀ f(y, u) and the stage values of
the forward step, the equations are (all samples, explicit tableaux):

    Y^[j+1] − Ψ_j(Y^[j]; u_j, h_j) = 0                              forward sweep, (A, b)
    p^[N] − Wᵀ ℓ'(W y^[N] + μ, c) [/m] = 0                          terminal condition
    p^[j] − p^[j+1] − h_j Σ_i b_i ∂_y H(Y_i, P_i, u_{j,i}) = 0     backward sweep with the partner
        P_i = p^[j+1] + h_j Σ_l (b_l − ã_il) ∂_y H(Y_l, P_l, u_{j,l})     (Ã, b), j = 1 … N−1
    Σ_n h_j Σ_i b_i ∂_u H(Y_i, P_i, u_{j,i}) + ∂R/∂u_j = 0          stationarity in K, β
    Σ_n ℓ'(z_n) y_n^[N]ᵀ [/m] + ∂R/∂W = 0,  Σ_n ℓ'(z_n) [/m] + ∂R/∂μ = 0   (ℓ' ∈ R^K for K classes)
    Σ_n Σ_i b_i ⟨P_i, F_i⟩ + ∂R/∂h_j (+ ν) = 0,  (Σ_j h_j − T = 0)    learned steps (simplex)

(:meth:`.discretisation.RKScheme.costate`; the unscaled form where some b_i = 0; family 'net' uses
the discrete map's transpose Jacobian). Newton's method with a backtracking line search on
½‖G‖²; the sparse Jacobian comes from CasADi AD by blocks (θ | states and costates, sweeps |
stationarity: linear in m, where the Jacobian of the whole residual at once needs one directional
derivative per unknown), the linear systems from SuperLU in a sample-major order.
The simplex variant assumes every h_j > 0 (inactive bounds).
"""

from __future__ import annotations

import time

import casadi as ca
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ocdl.engine.casadi.costates import backward_sweep
from ocdl.engine.casadi.nlp import NetworkNLP
from ocdl.errors import OcdlError
from ocdl.interrupt import StopOnSigint
from ocdl.result import SolveResult


def hamiltonian_step(net) -> ca.Function:
    """(y, p⁺, U, h, t) -> (p, P, gU, gh) for one sample: the partner costate step of the RK
    scheme, or for family 'net' p = (∂Ψ/∂y)ᵀ p⁺ and gU = (∂Ψ/∂u)ᵀ p⁺."""
    if net.has_skip:
        return net.scheme.costate
    d = net.d
    y, pn, U, h, t = ca.SX.sym("y", d), ca.SX.sym("p", d), ca.SX.sym("U", net.nu, 1), ca.SX.sym("h"), ca.SX.sym("t")
    lam = ca.dot(pn, net.layer(y, U, h, t))
    return ca.Function("net_costate", [y, pn, U, h, t], [ca.gradient(lam, y), ca.SX(d, 0), ca.gradient(lam, U), ca.SX(0)],
                       ["y", "p_next", "U", "h", "t"], ["p", "P", "gU", "gh"])


class HamiltonianBVP:
    """The residual G(z) and its Jacobian for a Problem on (Y0, c); see the module docstring."""

    def __init__(self, problem, Y0, c, base):
        if problem.has_skip and not problem.tableau.explicit:
            raise OcdlError(f"--solver bvp needs an explicit tableau; {problem.tableau.name!r} is implicit (use ipopt)")
        self.nlp = nlp = NetworkNLP(problem, Y0, c, base, "full", "eliminated")
        self.problem, self.base = problem, base
        net, L = nlp.net, nlp.layout
        d, m, N, s = nlp.d, nlp.m, problem.N, net.s
        self.d, self.m, self.N = d, m, N
        step = hamiltonian_step(net)
        self.step = step
        ham = step.map("ham", "serial", m, [], [2, 3])  # sum gU and gh over the samples
        theta = nlp.theta
        Ys = [ca.DM(nlp.Y0)] + [ca.MX.sym(f"Y{j}", d, m) for j in range(1, N + 1)]
        ps = [None] + [ca.MX.sym(f"p{j}", d, m) for j in range(1, N + 1)]
        self.simplex = nlp.simplex
        nu_ = ca.MX.sym("nu") if self.simplex else None
        layer = net.layer.map(m)
        fwd = [ca.vec(Ys[j + 1] - layer(Ys[j], nlp.U[j], nlp.h[j], nlp.t[j])) for j in range(N)]
        W = net.fixed_or_trained(theta, "W", base)
        mu = net.fixed_or_trained(theta, "mu", base)
        scale = 1.0 / m if problem.objective.mean else 1.0
        dl = net.dloss.map(m)(Ys[N], W, mu, ca.DM(nlp.c)) * scale  # 1 × m (K × m for K classes)
        two = net.K == 2
        Wt = W if two else ca.reshape(W, d, net.K)  # Wᵀ (W is row-major in θ)
        bwd = [ca.vec(ps[N] - ca.mtimes(Wt, dl))]
        gK, gb, gh = [], [], []
        for j in range(N - 1, -1, -1):
            pj, _, gU, ghj = ham(Ys[j], ps[j + 1], nlp.U[j], nlp.h[j], nlp.t[j])
            if j > 0:
                bwd.append(ca.vec(ps[j] - pj))
            cols = [gU[:, i] for i in range(s)] if net.per_stage else [ca.sum2(gU)]
            gK.insert(0, ca.vertcat(*[col[: d * d] for col in cols]))
            gb.insert(0, ca.vertcat(*[col[d * d:] for col in cols]))
            gh.insert(0, ghj)
        grad = {"K": ca.vertcat(*gK), "beta": ca.vertcat(*gb), "W": ca.vec(ca.mtimes(Ys[N], dl.T)), "mu": ca.sum2(dl),
                "h": ca.vertcat(*gh)}
        if self.simplex:
            grad["h"] = grad["h"] + nu_
        stat = ca.vertcat(*[grad[k] for k in L.keys]) + net.regulariser_gradient_function(base)(theta)
        parts = [theta] + [ca.vec(Y) for Y in Ys[1:]] + [ca.vec(p) for p in ps[1:]] + ([nu_] if self.simplex else [])
        self.z = ca.vertcat(*parts)
        eqs = fwd + bwd + [stat] + ([ca.sum1(theta[L.slices["h"]]) - problem.T] if self.simplex else [])
        self.G = ca.vertcat(*eqs)
        self.n_state = N * d * m
        self.n_stat = L.size
        self.G_fn = ca.Function("G", [self.z], [self.G])
        self.J_fn = ca.Function("J", [self.z], [self._jacobian(theta, ca.vertcat(*parts[1:]))])
        self._perm = self._sample_major()
        self.E_fn = nlp.functions()["f"]

    def _jacobian(self, theta, x):
        """∂G/∂z by blocks. The controls θ enter every equation and the stationarity rows depend
        on every state and costate, so no colouring of the whole Jacobian separates them (one
        directional derivative per unknown: O(m²) work). By blocks, [[∂G_sweep/∂θ, ∂G_sweep/∂x],
        [∂G_stat/∂θ, ∂G_stat/∂x]] with x = (Y, p[, ν]), each block has a cheap colouring: n_θ
        forward directions, per-sample bands, and n_θ (+1) reverse directions — O(m) work."""
        n_sweep = 2 * self.n_state
        G_sweep, G_rest = self.G[:n_sweep], self.G[n_sweep:]
        return ca.blockcat([[ca.jacobian(G_sweep, theta), ca.jacobian(G_sweep, x)],
                            [ca.jacobian(G_rest, theta), ca.jacobian(G_rest, x)]])

    # ------------------------------------------------------------------ numbers
    def start(self, params) -> np.ndarray:
        """z0: states by the forward sweep, costates by the partner backward sweep, at ``params``."""
        nlp = self.nlp
        theta = nlp.layout.pack(params)
        states, _ = nlp.simulate(theta)
        p = backward_sweep(nlp, theta, states, self.step)["p"]
        parts = [theta] + [states[j].T.reshape(-1) for j in range(1, self.N + 1)]
        parts += [p[j].reshape(-1) for j in range(1, self.N + 1)]
        if self.simplex:
            parts.append(np.zeros(1))
        z0 = np.concatenate(parts)
        if self.simplex:  # the multiplier ν that best fits stationarity in h
            G = np.array(self.G_fn(z0)).reshape(-1)
            sl = nlp.layout.slices["h"]
            z0[-1] = -np.mean(G[2 * self.n_state + sl.start: 2 * self.n_state + sl.stop])
        return z0

    def split(self, z):
        """(θ, states Y^[0..N] (d×m), costates p^[1..N] (m×d), ν or None)."""
        nlp, d, m, N = self.nlp, self.d, self.m, self.N
        z = np.asarray(z).reshape(-1)
        nth = nlp.layout.size
        theta = z[:nth]
        Y = [nlp.Y0] + [z[nth + j * d * m: nth + (j + 1) * d * m].reshape(m, d).T for j in range(N)]
        off = nth + N * d * m
        p = [z[off + j * d * m: off + (j + 1) * d * m].reshape(m, d) for j in range(N)]
        return theta, Y, p, (z[-1] if self.simplex else None)

    def _sample_major(self):
        """Row and column permutations that group each sample's states and costates (all
        layers), the θ (and ν) columns and stationarity rows last: Jacobian blocks per sample
        bordered by θ, which SuperLU factorises in this natural order with little fill."""
        nth, d, m, N, n_state = self.nlp.layout.size, self.d, self.m, self.N, self.n_state
        n = self.z.shape[0]
        per_sample = np.arange(N * d * m).reshape(N, m, d).transpose(1, 0, 2).reshape(m, N * d)
        local = np.concatenate([per_sample, n_state + per_sample], axis=1).reshape(-1)
        cols = np.concatenate([nth + local, np.arange(nth), np.arange(nth + 2 * n_state, n)])
        rows = np.concatenate([local, np.arange(2 * n_state, n)])
        return rows, cols

    def newton_direction(self, z, G) -> np.ndarray:
        """dz with J(z) dz = −G (sparse LU with partial pivoting in the sample-major order)."""
        rows, cols = self._perm
        J = self.jacobian(z)[rows][:, cols].tocsc()
        x = spla.splu(J, permc_spec="NATURAL").solve(-G[rows])
        dz = np.empty_like(x)
        dz[cols] = x
        return dz

    def residual(self, z) -> np.ndarray:
        return np.array(self.G_fn(z)).reshape(-1)

    def jacobian(self, z):
        J = self.J_fn(z)
        return _to_scipy(J)

    def norms(self, G):
        """(inf_pr, inf_du): max |forward/backward residual|, max |stationarity residual|."""
        n2 = 2 * self.n_state
        pr = np.abs(G[:n2]).max(initial=0.0)
        if self.simplex:
            pr = max(pr, abs(G[-1]))
        du = np.abs(G[n2: n2 + self.n_stat]).max(initial=0.0)
        return float(pr), float(du)


def _to_scipy(J: ca.DM) -> sp.csc_matrix:
    spars = J.sparsity()
    colind = np.array(spars.colind())
    row = np.array(spars.row())
    return sp.csc_matrix((np.array(J.nonzeros()), row, colind), shape=J.shape)


def newton(bvp: HamiltonianBVP, z0, tol: float, max_iter: int, log, quiet):
    """Newton's method with backtracking on φ = ½‖G‖²; returns (z, status, history). Ctrl-C stops it
    before the next step (status 'interrupted')."""
    z = np.array(z0, dtype=np.float64)
    G = bvp.residual(z)
    hist = {"iteration": [], "objective": [], "inf_pr": [], "inf_du": [], "residual": [], "step": [], "alpha": []}

    def record(k, G, step, alpha):
        pr, du = bvp.norms(G)
        E = float(bvp.E_fn(_nlp_x(bvp, z)))
        r = float(np.abs(G).max())
        for key, v in zip(hist, (k, E, pr, du, r, step, alpha)):
            hist[key].append(v)
        if not quiet:
            log(f"bvp   {k:3d}  E = {E:.12e}  |G| = {r:.3e}  inf_pr = {pr:.2e}  inf_du = {du:.2e}  "
                f"|dz| = {step:.2e}  alpha = {alpha:.3g}")

    record(0, G, 0.0, 0.0)
    status = "max_iter"
    with StopOnSigint() as stop:  # Ctrl-C: stop before the next step, keep the iterate
        for k in range(1, max_iter + 1):
            if stop.requested:
                status = "interrupted"
                break
            if not np.all(np.isfinite(G)):
                status = "nan"
                break
            if np.abs(G).max() <= tol:
                status = "converged"
                break
            try:
                with np.errstate(all="ignore"):
                    dz = bvp.newton_direction(z, G)
            except RuntimeError:
                status = "singular_jacobian"
                break
            if not np.all(np.isfinite(dz)):
                status = "singular_jacobian"
                break
            phi = 0.5 * float(G @ G)
            alpha = 1.0
            while True:
                zt = z + alpha * dz
                Gt = bvp.residual(zt)
                if np.all(np.isfinite(Gt)) and 0.5 * float(Gt @ Gt) <= (1.0 - 1e-4 * alpha) * phi:
                    break
                alpha *= 0.5
                if alpha < 1e-10:
                    break
            if alpha < 1e-10:
                status = "line_search_failed"
                break
            z, G = zt, Gt
            record(k, G, float(np.abs(alpha * dz).max()), alpha)
        else:
            if np.abs(G).max() <= tol:
                status = "converged"
    return z, status, hist


def _nlp_x(bvp, z):
    """The full-space NLP's x = (θ, Y^[1..N]) from z."""
    return np.asarray(z).reshape(-1)[: bvp.nlp.layout.size + bvp.n_state]


def solve(problem, Y0, c, params0, opts, log=print, quiet=False, t_start=None) -> SolveResult:
    """Newton on the Hamiltonian BVP from ``params0`` (a point near a solution); at most
    ``solver.options.max_iter`` steps (default min(100, the engine's max_iter))."""
    t0 = t_start if t_start is not None else time.perf_counter()
    bvp = HamiltonianBVP(problem, Y0, c, params0)
    z0 = bvp.start(params0)
    build = time.perf_counter() - t0
    max_iter = opts["max_iter"] if "max_iter" in problem.solver.options else min(100, opts["max_iter"])
    if not quiet:
        log(f"casadi: Hamiltonian BVP, {z0.size} unknowns, Newton to |G| ≤ {opts['tol']:g}")
    t1 = time.perf_counter()
    z, status, hist = newton(bvp, z0, opts["tol"], max_iter, log, quiet)
    solve_time = time.perf_counter() - t1
    nlp = bvp.nlp
    theta, states, p, nu = bvp.split(z)
    finite = bool(np.all(np.isfinite(z)))
    params = nlp.layout.unpack(theta, base=params0) if finite else {k: np.array(v) for k, v in params0.items()}
    kkt = viol = float("nan")
    cost = None
    if finite:
        cost = backward_sweep(nlp, theta, states, bvp.step)
        lam_g = np.zeros(nlp.g.shape[0])
        for j, blk in enumerate(nlp.blocks):
            lam_g[blk["gy"]] = -cost["p"][j + 1].reshape(-1)
        if bvp.simplex:
            lam_g[-1] = nu
        kkt, viol = nlp.kkt(_nlp_x(bvp, z), lam_g, np.zeros(nlp.x.shape[0]))
    success = status == "converged"
    metrics = {
        "solver_status": status,
        "kkt_residual": kkt,
        "constraint_violation": viol,
        "iterations": len(hist["iteration"]) - 1,
        "build_time_s": build,
        "solve_time_s": solve_time,
        "wall_time_s": time.perf_counter() - t0,
        "bvp_residual": hist["residual"][-1],
        "tol": opts["tol"],
        "n_unknowns": int(z.size),
    }
    if bvp.simplex and finite and np.any(params["h"] <= 0):
        success = False
        status = metrics["solver_status"] = "inactive_bounds_violated"
    msg = "" if success else f"Newton on the Hamiltonian BVP did not converge: {status}"
    if not quiet:
        log(f"casadi: bvp {status} after {metrics['iterations']} Newton steps, |G| = {metrics['bvp_residual']:.2e}, "
            f"KKT residual of the NLP {kkt:.2e}")
    if status == "interrupted":
        msg = "interrupted"
    return SolveResult(params=params, history=hist, metrics=metrics, costates=cost, success=success, message=msg,
                       interrupted=status == "interrupted")
