"""The trust-region SQP with condensed steps (:mod:`ocdl.engine.casadi.lifted`): its trust-region
subproblem, its step against a dense solve of the full-space KKT system built by CasADi's AD, and
its solutions against IPOPT's and the PyTorch partner adjoint."""

import math

import casadi as ca
import numpy as np
import pytest

from ocdl import data
from ocdl.engine.casadi import solve
from ocdl.engine.casadi.lifted import LiftedSQP, trust_region_step
from ocdl.engine.casadi.nlp import NetworkNLP
from ocdl.data import lift
from ocdl.errors import OcdlError
from ocdl.problem import ClassifierSpec, SolverSpec, init_params
from tests.conftest import small_problem
from tests.test_casadi_engine import _rel, _torch_costates
from tests.test_casadi_ocp import GAUSS2

TOL = 1e-10


# ---------------------------------------------------------------------------- the subproblem
def _subproblem(kind, n=12, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = {"convex": rng.uniform(1, 10, n), "indefinite": rng.uniform(-5, 5, n),
           "hard": np.r_[-3.0, rng.uniform(-1, 5, n - 1)]}[kind]
    H = Q @ np.diag(lam) @ Q.T
    b = rng.standard_normal(n)
    if kind == "hard":  # b ⊥ the eigenvector of λ_min: the boundary solution needs that direction
        b -= (Q[:, 0] @ b) * Q[:, 0]
    return 0.5 * (H + H.T), b


@pytest.mark.parametrize("kind,radius", [("convex", 100.0), ("convex", 0.05), ("indefinite", 1.0),
                                         ("indefinite", 1e-3), ("hard", 10.0), ("hard", 0.1)])
def test_trust_region_step_satisfies_the_optimality_conditions(kind, radius):
    """(H + τI)s = −b, H + τI ⪰ 0, τ ≥ 0, ‖s‖ ≤ Δ, τ(Δ − ‖s‖) = 0 (Moré–Sorensen), and no feasible
    sample has a lower model value."""
    H, b = _subproblem(kind)
    s, tau, boundary, lmin = trust_region_step(H, b, radius)
    n = b.size
    ns = np.linalg.norm(s)
    assert tau >= 0 and ns <= radius * (1 + 1e-10)
    assert np.linalg.norm((H + tau * np.eye(n)) @ s + b) <= 1e-9 * max(1.0, np.linalg.norm(b))
    assert np.linalg.eigvalsh(H + tau * np.eye(n))[0] >= -1e-9
    assert tau * (radius - ns) <= 1e-9 * max(1.0, tau * radius)
    assert abs(lmin - np.linalg.eigvalsh(H)[0]) <= 1e-10 * max(1.0, abs(lmin))
    model = lambda v: b @ v + 0.5 * v @ H @ v  # noqa: E731
    rng = np.random.default_rng(1)
    for _ in range(2000):
        v = rng.standard_normal(n)
        v *= radius * rng.uniform() ** (1 / n) / np.linalg.norm(v)
        assert model(v) >= model(s) - 1e-10 * max(1.0, abs(model(s)))
    if kind == "convex" and radius == 100.0:
        assert tau == 0 and not boundary and np.allclose(s, -np.linalg.solve(H, b), rtol=1e-10, atol=1e-12)
    if kind == "hard":
        assert boundary and math.isclose(ns, radius, rel_tol=1e-9)


# ---------------------------------------------------------------------------- the condensed step
def _nlp(prob):
    tr, _ = data.make(prob.data)
    d = prob.width(tr.dim)
    p0 = init_params(prob, d)
    return NetworkNLP(prob, lift(tr.X, d).T.copy(), tr.c, p0, "full"), p0


STEP_CASES = [
    dict(tableau="euler"),
    dict(tableau="rk4"),
    dict(tableau="kutta3", controls="per-stage"),
    dict(tableau="heun", time_steps="learned"),
    dict(tableau="rk38", loss="logistic", mean=True),
    dict(family="net", tableau="euler"),
    dict(family="monotone", tableau="heun", activation="softplus"),
]


def _infeasible_point(nlp, p0, seed=0):
    """θ perturbed, states of the forward sweep perturbed (g ≠ 0), costates arbitrary."""
    rng = np.random.default_rng(seed)
    theta = nlp.layout.pack(p0) + 0.2 * rng.standard_normal(nlp.layout.size)
    if "h" in nlp.layout.keys:
        sl = nlp.layout.slices["h"]
        theta[sl] = np.abs(theta[sl]) + 0.05
    sqp = LiftedSQP(nlp)
    states = sqp.rh.simulate(theta)
    states = [states[0]] + [y + 1e-2 * rng.standard_normal(y.shape) for y in states[1:]]
    p = [rng.standard_normal((nlp.m, nlp.d)) for _ in range(nlp.problem.N)]
    return sqp, theta, states, p


def _dense_kkt_step(nlp, theta, states, p):
    """By CasADi's AD of the whole NLP at x = (θ, Y), λ = −p: (dx, λ⁺) solving
    [∇²L Jᵀ; J 0](dx, λ⁺) = −(∇f, g), the model value ∇fᵀdx + ½dxᵀ∇²L dx, g and ∇_x L."""
    x = np.concatenate([theta] + [y.reshape(-1) for y in states[1:]])
    lam = np.concatenate([-q.reshape(-1) for q in p])
    lam_s = ca.MX.sym("lam", nlp.g.shape[0])
    Lag = nlp.f + ca.dot(lam_s, nlp.g)
    fn = ca.Function("kkt", [nlp.x, lam_s], [ca.hessian(Lag, nlp.x)[0], ca.jacobian(nlp.g, nlp.x),
                                             ca.gradient(nlp.f, nlp.x), nlp.g, ca.gradient(Lag, nlp.x)])
    HL, J, gf, g, gL = (np.array(v) for v in fn(x, lam))
    nx, ng = x.size, g.size
    K = np.block([[HL, J.T], [J, np.zeros((ng, ng))]])
    sol = np.linalg.solve(K, -np.concatenate([gf.ravel(), g.ravel()]))
    dx = sol[:nx]
    return dx, sol[nx:], gf.ravel() @ dx + 0.5 * dx @ HL @ dx, g.ravel(), gL.ravel()


def _condensed_step(sqp, theta, states, p):
    """The same by the condensed sweeps: (dx, λ⁺, model value, g, (‖∇L‖_∞, ‖g‖_∞))."""
    _, defects = sqp.merit_terms(theta, states)
    sw, _ = sqp.sweep(theta, states, p)
    b, const = sqp.qp(sw, defects)
    dtheta = np.linalg.solve(sw.H, -b)
    dY = sqp.states_step(sw, dtheta, defects)
    p_new = sqp.multipliers(sw, dtheta, dY)
    dx = np.concatenate([dtheta] + [y.reshape(-1) for y in dY[1:]])
    m_f = const + b @ dtheta + 0.5 * dtheta @ sw.H @ dtheta
    return (dx, np.concatenate([-q.reshape(-1) for q in p_new]), m_f,
            np.concatenate([d.ravel() for d in defects]), sqp.kkt(sw, p, defects))


@pytest.mark.parametrize("case", STEP_CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_condensed_step_solves_the_full_space_kkt_system(case):
    """At an infeasible point with arbitrary multipliers: the Newton step (dθ, dY) and the new
    multipliers from condensing equal the solution of the whole KKT system
    [∇²L Jᵀ; J 0](dx, λ⁺) = −(∇f, g) built with CasADi's AD, and so do the model value and ∇L."""
    nlp, p0 = _nlp(small_problem(n=12, layers=3, **case))
    sqp, theta, states, p = _infeasible_point(nlp, p0)
    dx_ref, lam_ref, m_ref, g, gL = _dense_kkt_step(nlp, theta, states, p)
    dx, lam, m_f, defects, (kkt, viol) = _condensed_step(sqp, theta, states, p)
    assert np.max(np.abs(defects - g)) <= 1e-14
    assert math.isclose(kkt, float(np.max(np.abs(gL))), rel_tol=1e-12)
    assert math.isclose(viol, float(np.max(np.abs(g))), rel_tol=1e-12)
    assert _rel(dx, dx_ref) <= 1e-9
    assert _rel(lam, lam_ref) <= 1e-9
    assert math.isclose(m_f, m_ref, rel_tol=1e-9, abs_tol=1e-12)


def test_condensed_step_with_a_fixed_classifier():
    prob = small_problem(n=12, layers=3, tableau="rk4").replace(
        classifier=ClassifierSpec(trainable=False, W=(10.0, 10.0, 0.0), mu=0.0))
    nlp, p0 = _nlp(prob)
    sqp, theta, states, p = _infeasible_point(nlp, p0, seed=3)
    dx_ref, lam_ref, _, _, _ = _dense_kkt_step(nlp, theta, states, p)
    dx, lam, _, _, _ = _condensed_step(sqp, theta, states, p)
    assert _rel(dx, dx_ref) <= 1e-9 and _rel(lam, lam_ref) <= 1e-9


def test_a_wrong_multiplier_in_the_hessian_is_detected():
    """The comparison can fail: with the forward-swept costates in Q_j instead of the iterate's
    multipliers (the reduced Hessian at the lifted point), the step is off far above 1e-9."""
    nlp, p0 = _nlp(small_problem(n=12, layers=3, tableau="rk4"))
    sqp, theta, states, p = _infeasible_point(nlp, p0)
    _, defects = sqp.merit_terms(theta, states)
    sw, _ = sqp.sweep(theta, states, p)
    sw_wrong, _ = sqp.sweep(theta, states, None)
    b = sqp.qp(sw, defects)[0]
    assert _rel(np.linalg.solve(sw_wrong.H, -b), np.linalg.solve(sw.H, -b)) > 1e-3


# ---------------------------------------------------------------------------- solutions
def _sqp(prob, **options):
    prob = prob.replace(solver=SolverSpec(backend="casadi", name="sqp", options={"tol": TOL, **options}))
    tr, te = data.make(prob.data)
    lines = []
    res = solve(prob, tr, te, init_params(prob, prob.width(tr.dim)), log=lines.append)
    return prob, tr, res, lines


SOLVE_CASES = [dict(tableau="rk4"), dict(tableau="kutta3", controls="per-stage"), dict(family="net", n=30),
               dict(tableau="heun", time_steps="learned")]


@pytest.mark.parametrize("case", SOLVE_CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_sqp_solution_is_a_kkt_point_with_the_partner_adjoint_costates(case):
    """Full space: KKT residual ≤ 1e-10 by CasADi's ∇L (not the method's own), multipliers =
    PyTorch partner-adjoint costates ≤ 1e-8, reduced gradient ≤ 1e-8, a progress line per
    iteration, and the local quadratic convergence of Newton's method in its log."""
    prob = small_problem(**{"n": 40, "layers": 3, **case})
    _, tr, res, lines = _sqp(prob)
    m = res.metrics
    assert res.success, res.message
    assert m["solver_status"] == "Solve_Succeeded" and m["solver"] == "sqp" and m["formulation"] == "full"
    assert m["kkt_residual"] <= TOL and m["constraint_violation"] <= TOL
    assert sum(line.startswith("sqp ") for line in lines) == m["iterations"] + 1
    assert len(res.history["inf_du"]) == m["iterations"] + 1
    _, gnorm, cs = _torch_costates(prob, tr, res.params)
    assert gnorm <= 1e-8
    for k in cs:
        assert _rel(res.costates[k], cs[k]) <= 1e-8, k
    # quadratic convergence: the last step squares the KKT residual (up to a constant)
    r = [max(a, b) for a, b in zip(res.history["inf_du"], res.history["inf_pr"])]
    assert r[-2] <= 1e-4 and r[-1] <= 1e2 * r[-2] ** 2 + 1e-13


def test_sqp_and_ipopt_find_the_same_minimiser_from_the_same_start():
    """On this seeded problem both methods reach the same local minimiser (the problem is not
    convex: on others, e.g. family 'net' here, they reach different ones from the same start)."""
    prob = small_problem(n=40, layers=3, tableau="rk4")
    _, tr, res, _ = _sqp(prob)
    ip = solve(prob.replace(solver=SolverSpec(backend="casadi", name="ipopt", options={"tol": TOL})), tr, None,
               init_params(prob, prob.width(tr.dim)), log=None)
    assert res.success and ip.success
    _same_minimiser(prob, tr, res, ip)


@pytest.mark.parametrize("case", [dict(tableau="kutta3", controls="per-stage"), dict(tableau="heun", time_steps="learned"),
                                  dict(family="net", n=30)],
                         ids=lambda c: "-".join(str(v) for v in c.values()))
def test_sqp_returns_to_the_ipopt_solution_from_a_perturbation(case):
    prob = small_problem(**{"n": 40, "layers": 3, **case})
    tr, te = data.make(prob.data)
    ip = solve(prob.replace(solver=SolverSpec(backend="casadi", name="ipopt", options={"tol": TOL})), tr, te,
               init_params(prob, prob.width(tr.dim)), log=None)
    assert ip.success
    rng = np.random.default_rng(7)
    start = {k: np.array(v) + (1e-3 * rng.standard_normal(np.shape(v)) if k in prob.trainable() else 0)
             for k, v in ip.params.items()}
    res = solve(prob.replace(solver=SolverSpec(backend="casadi", name="sqp", options={"tol": TOL})), tr, te,
                start, log=None)
    assert res.success and res.metrics["iterations"] <= 10
    _same_minimiser(prob, tr, res, ip)


def _same_minimiser(prob, tr, a, b):
    """Two solutions with KKT residuals r_a, r_b are the same strict local minimiser when they differ
    by no more than (r_a + r_b)/λ_min(∇²E) (here λ_min ≈ the Tikhonov weight): checked with a
    factor 10 of slack; another minimiser of this non-convex problem would be O(1) away."""
    d = prob.width(tr.dim)
    nlp = NetworkNLP(prob, lift(tr.X, d).T.copy(), tr.c, a.params, "reduced")
    rh = LiftedSQP(nlp).rh
    lam_min = float(np.linalg.eigvalsh(rh.hessian(nlp.layout.pack(a.params)))[0])
    assert lam_min > 0
    bound = 10 * (a.metrics["kkt_residual"] + b.metrics["kkt_residual"]) / lam_min
    assert float(np.max(np.abs(nlp.layout.pack(a.params) - nlp.layout.pack(b.params)))) <= bound


def test_reduced_sqp_reaches_the_same_point():
    prob = small_problem(n=40, layers=3, tableau="rk4")
    _, tr, full, _ = _sqp(prob)
    _, _, red, lines = _sqp(prob, formulation="reduced")
    assert red.success and red.metrics["formulation"] == "reduced"
    assert red.metrics["kkt_residual"] <= TOL
    _same_minimiser(prob, tr, red, full)


def test_sqp_not_converged_is_reported():
    _, _, res, _ = _sqp(small_problem(n=30, layers=3), max_iter=2)
    assert not res.success and res.metrics["solver_status"] == "Maximum_Iterations_Exceeded"
    assert "SQP did not converge" in res.message and np.all(np.isfinite(res.params["K"]))


def test_sqp_stops_on_request(monkeypatch):
    from ocdl.interrupt import StopOnSigint

    monkeypatch.setattr(StopOnSigint, "__enter__", lambda self: (setattr(self, "requested", True), self)[1])
    _, _, res, _ = _sqp(small_problem(n=30, layers=3))
    assert res.interrupted and res.metrics["iterations"] == 0 and res.message == "interrupted"


@pytest.mark.parametrize("prob_kw,opts,match", [
    (dict(tableau="gauss2"), {}, "implicit"),  # written to a tableau file below
    (dict(family="odenet-simplex", tableau="euler"), {}, "simplex"),
    (dict(), {"hessian": "lbfgs"}, "exact Hessian"),
    (dict(), {"stages": "variables"}, "eliminates the stages"),
    (dict(), {"ipopt": {"mu_init": 0.1}}, "IPOPT options"),
    (dict(), {"start": "reduced"}, "solver ipopt"),
])
def test_sqp_bad_options(prob_kw, opts, match, tmp_path):
    if prob_kw.get("tableau") == "gauss2":
        path = tmp_path / "gauss2.toml"
        path.write_text(GAUSS2)
        prob_kw = {"tableau": str(path)}
    prob = small_problem(n=20, layers=2, **prob_kw).replace(
        solver=SolverSpec(backend="casadi", name="sqp", options=opts))
    tr, te = data.make(prob.data)
    with pytest.raises(OcdlError, match=match):
        solve(prob, tr, te, init_params(prob, prob.width(tr.dim)), log=None)


def test_collapsed_trust_region_restores_feasibility_and_goes_on(monkeypatch):
    """Every trial point made to look worse for a while (f + 1): the radius collapses at an
    infeasible iterate, the states are re-simulated at the current controls, and the solve still
    converges to a KKT point."""
    real, calls = LiftedSQP.merit_terms, {"n": 0}

    def sabotaged(self, theta, states):
        calls["n"] += 1
        f, g = real(self, theta, states)
        return (f + 1.0 if 4 <= calls["n"] <= 70 else f), g

    monkeypatch.setattr(LiftedSQP, "merit_terms", sabotaged)
    _, tr, res, lines = _sqp(small_problem(n=40, layers=3, tableau="rk4"))
    assert res.success and res.metrics["restorations"] >= 1
    assert res.metrics["kkt_residual"] <= TOL
    assert any("states re-simulated" in line for line in lines)
    k = res.history["restored"].index(True)
    assert res.history["inf_pr"][k] == 0.0 and res.history["inf_pr"][k - 1] > 0.0
