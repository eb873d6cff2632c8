"""General OCPs: Hager's test problem converges at the order in optimal control of the tableau
(grid state, costate and the control recovered from the minimum principle, u_j = −p_j)."""

import math

import numpy as np
import pytest

from ocdl import data, tableau
from ocdl.engine.casadi import gradient, hager_errors, solve, solve_ocp
from ocdl.engine.casadi.costates import backward_sweep
from ocdl.engine.casadi.nlp import NetworkNLP
from ocdl.data import lift
from ocdl.errors import OcdlError
from ocdl.ocp import OCP, hager
from ocdl.problem import SolverSpec, init_params
from tests.conftest import small_problem

NS = [8, 16, 32, 64, 128]
GAUSS2 = """name = "gauss2"
A = [[0.25, -0.038675134594812866], [0.5386751345948129, 0.25]]
b = [0.5, 0.5]
"""


def slope(Ns, errs):
    return float(-np.polyfit(np.log(Ns), np.log(errs), 1)[0])


def test_hager_exact_solution_satisfies_the_optimality_system():
    """y' = y/2 + u, p' = −(2y + p/2), u = −p, y(0) = 1, p(1) = 0 (central differences)."""
    ocp = hager()
    t = np.linspace(0.05, 0.95, 19)
    e = 1e-5
    y, u, p = (fn(t)[:, 0] for fn in (ocp.exact_y, ocp.exact_u, ocp.exact_p))
    dy = (ocp.exact_y(t + e) - ocp.exact_y(t - e))[:, 0] / (2 * e)
    dp = (ocp.exact_p(t + e) - ocp.exact_p(t - e))[:, 0] / (2 * e)
    assert np.max(np.abs(dy - (y / 2 + u))) < 1e-8
    assert np.max(np.abs(dp + 2 * y + p / 2)) < 1e-8
    assert np.allclose(u, -p)
    assert abs(ocp.exact_y(0.0)[0] - 1) < 1e-15 and abs(ocp.exact_p(1.0)[0]) < 1e-15


@pytest.mark.parametrize("name,expected", [("euler", 1), ("heun", 2), ("kutta3", 3), ("ssprk3", 2), ("rk4", 4)])
def test_hager_orders(name, expected):
    assert tableau.get(name).oc_order == expected
    err = hager_errors(name, NS)
    assert err["N"] == NS
    for key in ("state", "costate", "control"):
        assert abs(slope(NS, err[key]) - expected) <= 0.3, (key, err[key])


def test_stage_controls_converge_only_at_stage_order():
    """rk4: the stage controls themselves are second order (Hager 2000), the grid control fourth."""
    err = hager_errors("rk4", [16, 32, 64])
    assert slope([16, 32, 64], err["stage_control"]) < 2.5
    assert slope([16, 32, 64], err["control"]) > 3.7


def test_minimum_principle_by_newton_equals_the_closed_form():
    """Without ``control`` the grid control solves ∂_u H = 0 numerically: the same numbers."""
    ocp = hager()
    general = OCP(name="hager-general", nx=1, nu=1, f=ocp.f, running=ocp.running, y0=ocp.y0, T=ocp.T)
    s1 = solve_ocp(ocp, "kutta3", 10)
    s2 = solve_ocp(general, "kutta3", 10)
    assert s1.success and s2.success and s1.kkt_residual < 1e-10
    assert np.max(np.abs(s1.u - s2.u)) < 1e-12
    assert np.max(np.abs(s1.u + s1.p)) < 1e-14


def test_nonlinear_ocp_with_terminal_cost_and_per_layer_controls():
    """min (y1(T) − 1)² + ∫ u²/10 dt, y1' = sin(y2) + u, y2' = −y1 u: the costates are multipliers,
    so p_N = ∇Φ(y_N) and the objective decreases along the grid refinement consistently."""
    import casadi as ca

    ocp = OCP(name="nl", nx=2, nu=1, f=lambda y, u, t: ca.vertcat(ca.sin(y[1]) + u, -y[0] * u),
              running=lambda y, u, t: 0.1 * u * u, terminal=lambda y: (y[0] - 1.0) ** 2, y0=(0.0, 0.5), T=1.0)
    s = solve_ocp(ocp, "rk4", 20, controls="per-layer")
    assert s.success and s.kkt_residual < 1e-9
    assert np.allclose(s.p[-1], [2 * (s.y[-1, 0] - 1.0), 0.0], atol=1e-12)
    assert np.ptp(s.U[:, :, 0], axis=1).max() == 0.0  # one control per layer, shared by its stages
    fine = solve_ocp(ocp, "rk4", 40, controls="per-layer")
    assert abs(fine.objective - s.objective) < 1e-4


def test_implicit_gauss_legendre(tmp_path):
    """An implicit tableau (2-stage Gauss, its own symplectic partner, OC order 4): stage slopes
    become NLP variables; Hager converges at order 4, and on a network the multiplier costates
    equal the reverse sweep through the implicit steps."""
    path = tmp_path / "gauss2.toml"
    path.write_text(GAUSS2)
    tab = tableau.load(path)
    assert not tab.explicit and tab.oc_order == 4
    err = hager_errors(tab, [4, 8, 16, 32])
    assert abs(slope([4, 8, 16, 32], err["state"]) - 4) <= 0.3
    assert abs(slope([4, 8, 16, 32], err["control"]) - 4) <= 0.3
    prob = small_problem(tableau=str(path), n=20, layers=2).replace(
        solver=SolverSpec(backend="casadi", name="ipopt", options={"tol": 1e-10}))
    tr, te = data.make(prob.data)
    res = solve(prob, tr, te, init_params(prob, 3), log=None)
    assert res.success and res.metrics["stages"] == "variables" and res.metrics["kkt_residual"] < 1e-8
    E, g = gradient(prob, res.params, tr.X, tr.c)
    assert math.sqrt(sum(float((v**2).sum()) for v in g.values())) < 1e-8
    nlp = NetworkNLP(prob, lift(tr.X, 3).T, tr.c, res.params, "reduced")
    sweep = backward_sweep(nlp, nlp.layout.pack(res.params))
    p = res.costates["p"]
    assert np.max(np.abs(p - sweep["p"])) <= 1e-8 * np.max(np.abs(p))
    with pytest.raises(OcdlError, match="explicit"):
        solve(prob.replace(solver__name="bvp"), tr, te, res.params, log=None)


def test_bad_ocp_input():
    with pytest.raises(OcdlError, match="y0"):
        OCP(name="bad", nx=2, nu=1, f=lambda y, u, t: y, running=lambda y, u, t: u * u, y0=(1.0,), T=1.0)
    with pytest.raises(OcdlError, match="N must be"):
        solve_ocp(hager(), "euler", 0)
