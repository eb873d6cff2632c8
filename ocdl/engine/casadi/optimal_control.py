"""A general OCP (:mod:`ocdl.ocp`) discretised by a Runge–Kutta tableau and solved by IPOPT.

The running cost is a quadrature state q' = ℓ(y, u, t), q(0) = 0, integrated by the same
tableau, so the discrete problem is min Φ(y_N) + q_N over the stage controls subject to one RK
step per interval (h = T/N; Hager 2000). Full space: x = (y_0, U_0, y_1, …, U_{N−1}, y_N) with
y_0 − y0 = 0 as a constraint, so every grid costate is a multiplier: p_j = −λ_{j−1} (p_0 = −λ
of the initial condition). The grid control is recovered from the minimum principle at the
discrete (y_j, p_j): u_j = argmin_u H(y_j, p_j, u, t_j) (closed form if the OCP gives one).
"""

from __future__ import annotations

from dataclasses import dataclass

import casadi as ca
import numpy as np

from ocdl import tableau as tableau_mod
from ocdl.engine.casadi import ipopt
from ocdl.engine.casadi.discretisation import RKScheme
from ocdl.errors import OcdlError
from ocdl.ocp import OCP, hager


@dataclass
class OCPSolution:
    """Grid t_j, states y (N+1, nx), costates p (N+1, nx), stage controls U (N, s, nu), grid
    controls u (N+1, nu) from the minimum principle, objective, IPOPT status and KKT residual."""

    t: np.ndarray
    y: np.ndarray
    p: np.ndarray
    U: np.ndarray
    u: np.ndarray
    objective: float
    status: str
    success: bool
    kkt_residual: float


def _functions(ocp: OCP):
    y, u, t = ca.SX.sym("y", ocp.nx), ca.SX.sym("u", ocp.nu), ca.SX.sym("t")
    f = ca.vertcat(ocp.f(y, u, t))
    ell = ca.SX(0) + (ocp.running(y, u, t) if ocp.running is not None else 0.0)
    q = ca.SX.sym("q")
    fa = ca.Function("f_aug", [ca.vertcat(y, q), u, t], [ca.vertcat(f, ell)])
    phi = ca.Function("Phi", [y], [ca.SX(0) + (ocp.terminal(y) if ocp.terminal is not None else 0.0)])
    p = ca.SX.sym("p", ocp.nx)
    H = ell + ca.dot(p, f)
    Hu = ca.Function("H_u", [y, p, u, t], [ca.gradient(H, u)])
    return fa, phi, Hu


def solve_ocp(ocp: OCP, tableau, N: int, controls: str = "per-stage", tol: float = 1e-12) -> OCPSolution:
    """Discretise ``ocp`` with ``tableau`` (name or Tableau) on N steps and solve with IPOPT."""
    tab = tableau_mod.get(tableau)
    if N < 1:
        raise OcdlError(f"solve_ocp: N must be ≥ 1, got {N}")
    if controls not in ("per-stage", "per-layer"):
        raise OcdlError(f"solve_ocp: controls {controls!r} is not 'per-stage' or 'per-layer'")
    fa, phi, Hu = _functions(ocp)
    nx, nu, s = ocp.nx + 1, ocp.nu, tab.s
    scheme = RKScheme(fa, tab, nx, nu)
    h = ocp.T / N
    ncol = s if controls == "per-stage" else 1
    y0 = ca.MX.sym("y0", nx)
    xs, gs = [y0], [y0 - ca.DM(list(ocp.y0) + [0.0])]
    Us, idx_y, idx_U, g_y = [], [slice(0, nx)], [], []
    off_x, off_g = nx, nx
    y = y0
    for j in range(N):
        Uj = ca.MX.sym(f"U{j}", nu, ncol)
        xs.append(ca.vec(Uj))
        idx_U.append(slice(off_x, off_x + nu * ncol))
        off_x += nu * ncol
        U = Uj if ncol == s else ca.repmat(Uj, 1, s)
        t = j * h
        if scheme.explicit:
            nxt = scheme.step(y, U, h, t, ca.DM.zeros(nx, s))[0]
        else:
            F = ca.MX.sym(f"F{j}", nx, s)
            xs.append(ca.vec(F))
            off_x += nx * s
            gs.append(ca.vec(scheme.residual(y, F, U, h, t)))
            off_g += nx * s
            nxt = scheme.update(y, F, h)
        yn = ca.MX.sym(f"y{j + 1}", nx)
        xs.append(yn)
        idx_y.append(slice(off_x, off_x + nx))
        off_x += nx
        gs.append(yn - nxt)
        g_y.append(slice(off_g, off_g + nx))
        off_g += nx
        Us.append(Uj)
        y = yn
    x, g = ca.vertcat(*xs), ca.vertcat(*gs)
    f = phi(y[: ocp.nx]) + y[ocp.nx]
    x0 = np.zeros(x.shape[0])
    for sl in idx_y:
        x0[sl] = list(ocp.y0) + [0.0]
    out, _ = ipopt.solve({"x": x, "f": f, "g": g}, x0, -np.inf, np.inf, 0.0, 0.0,
                         ipopt.options(tol, 200, "exact"), quiet=True)
    xv, lam = out.x, out.lam_g
    Y = np.array([xv[sl] for sl in idx_y])
    P = np.empty_like(Y)
    P[0] = -lam[:nx]
    for j, sl in enumerate(g_y):
        P[j + 1] = -lam[sl]
    Uv = np.array([xv[sl].reshape(ncol, nu) for sl in idx_U])  # vec of nu×ncol: column-major
    if ncol == 1:
        Uv = np.repeat(Uv, s, axis=1)
    tgrid = np.arange(N + 1) * h
    ygrid, pgrid = Y[:, : ocp.nx], P[:, : ocp.nx]
    ugrid = _grid_control(ocp, Hu, ygrid, pgrid, tgrid, Uv)
    lam_g = ca.MX.sym("lam", g.shape[0])
    gradL = ca.Function("gL", [x, lam_g], [ca.gradient(f, x) + ca.jtimes(g, x, lam_g, True)])
    kkt = float(np.max(np.abs(np.array(gradL(xv, lam)))))
    return OCPSolution(tgrid, ygrid, pgrid, Uv, ugrid, out.f, out.status, out.success, kkt)


def _grid_control(ocp, Hu, Y, P, t, U):
    """u_j = argmin_u H(y_j, p_j, u, t_j): closed form, or Newton on ∂_u H = 0."""
    if ocp.control is not None:
        y, p, tt = ca.SX.sym("y", ocp.nx), ca.SX.sym("p", ocp.nx), ca.SX.sym("t")
        fn = ca.Function("u_of", [y, p, tt], [ca.vertcat(ocp.control(y, p, tt))])
        return np.array([np.array(fn(Y[j], P[j], t[j])).reshape(-1) for j in range(len(t))])
    u = ca.SX.sym("u", ocp.nu)
    y, p, tt = ca.SX.sym("y", ocp.nx), ca.SX.sym("p", ocp.nx), ca.SX.sym("t")
    rf = ca.rootfinder("argmin_H", "newton", ca.Function("g", [u, ca.vertcat(y, p, tt)], [Hu(y, p, u, tt)]))
    guess = np.vstack([U.mean(axis=1), U[-1].mean(axis=0, keepdims=True)])
    return np.array([np.array(rf(guess[j], np.concatenate([Y[j], P[j], [t[j]]]))).reshape(-1) for j in range(len(t))])


def hager_errors(tableau, Ns) -> dict:
    """Max errors over the grid of the discrete state, costate and grid control (u_j = −p_j)
    against Hager's exact solution, per N: {'N', 'state', 'costate', 'control', 'stage_control'}."""
    ocp = hager()
    tab = tableau_mod.get(tableau)
    out = {"N": [], "state": [], "costate": [], "control": [], "stage_control": []}
    for N in Ns:
        sol = solve_ocp(ocp, tab, int(N))
        if not sol.success:
            raise OcdlError(f"hager_errors: IPOPT failed for {tab.name}, N = {N}: {sol.status}")
        tc = sol.t[:-1, None] + tab.c[None, :] * (ocp.T / N)
        out["N"].append(int(N))
        out["state"].append(float(np.max(np.abs(sol.y - ocp.exact_y(sol.t)))))
        out["costate"].append(float(np.max(np.abs(sol.p - ocp.exact_p(sol.t)))))
        out["control"].append(float(np.max(np.abs(sol.u - ocp.exact_u(sol.t)))))
        out["stage_control"].append(float(np.max(np.abs(sol.U - ocp.exact_u(tc)))))
    return out
