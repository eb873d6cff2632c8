"""The CasADi engine against the PyTorch engine: gradients at random controls, costates from the
multipliers at an IPOPT solution, and Newton on the Hamiltonian BVP back to the IPOPT solution."""

import math

import numpy as np
import pytest

from ocdl import data, tableau
from ocdl.engine.casadi import gradient, solve
from ocdl.errors import OcdlError
from ocdl.problem import SolverSpec, init_params
from ocdl.engine.torch.adjoint import grad_adjoint
from ocdl.engine.torch.network import TorchNetwork
from tests.conftest import setup_net, small_problem

TOL = 1e-10


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _numpy_params(prm):
    return {k: v.detach().numpy().copy() for k, v in prm.items()}


# ---------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("controls", ["per-layer", "per-stage"])
@pytest.mark.parametrize("name", tableau.names())
def test_casadi_gradient_equals_autograd_and_adjoint(name, controls):
    prob = small_problem(tableau=name, controls=controls, time_steps="learned")
    net, prm, Y0, c = setup_net(prob)
    E1, g1 = net.grad_autograd(prm, Y0, c)
    E2, g2 = grad_adjoint(net, prm, Y0, c)
    tr, _ = data.make(prob.data)
    E3, g3 = gradient(prob, _numpy_params(prm), tr.X, tr.c)
    assert set(g3) == set(prob.trainable())
    assert abs(E3 - float(E1)) <= 1e-13 * abs(float(E1))
    for k in g3:
        assert g3[k].shape == tuple(g1[k].shape)
        assert _rel(g3[k], g1[k].numpy()) <= 1e-12, k
        assert _rel(g3[k], g2[k].numpy()) <= 1e-12, k


@pytest.mark.parametrize(
    "family,kw",
    [
        ("net", {}),
        ("resnet", {}),
        ("odenet", {}),
        ("odenet-simplex", {}),
        ("monotone", {"tableau": "heun", "activation": "softplus"}),
        ("rk", {"loss": "logistic", "mean": True, "tableau": "kutta3"}),
        ("rk", {"activation": "sigmoid", "width": 2, "tableau": "rk38"}),
    ],
)
def test_casadi_gradient_every_family(family, kw):
    prob = small_problem(family=family, **kw)
    net, prm, Y0, c = setup_net(prob)
    E1, g1 = net.grad_autograd(prm, Y0, c)
    tr, _ = data.make(prob.data)
    E3, g3 = gradient(prob, _numpy_params(prm), tr.X, tr.c)
    assert abs(E3 - float(E1)) <= 1e-13 * abs(float(E1))
    assert max(_rel(g3[k], g1[k].numpy()) for k in g3) <= 1e-12


# ---------------------------------------------------------------------------- IPOPT solutions
def _solve(prob, **options):
    prob = prob.replace(solver=SolverSpec(backend="casadi", name="ipopt", options={"tol": TOL, **options}))
    tr, te = data.make(prob.data)
    d = prob.width(tr.dim)
    lines = []
    res = solve(prob, tr, te, init_params(prob, d), log=lines.append)
    return prob, tr, res, lines


def _torch_costates(prob, tr, params):
    d = params["W"].shape[0]
    net = TorchNetwork(prob, d)
    E, g, cs = grad_adjoint(net, net.to_torch(params), net.inputs(tr.X), net.tensor(tr.c), return_costates=True)
    gnorm = math.sqrt(sum(float((v**2).sum()) for v in g.values()))
    return float(E), gnorm, {k: v.numpy() for k, v in cs.items()}


CASES = [
    dict(tableau="rk4"),
    dict(tableau="rk4", controls="per-stage"),
    dict(tableau="heun", family="odenet", n=30),
    dict(tableau="midpoint"),  # b_1 = 0: unscaled stage costates
    dict(family="net", n=30),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_multipliers_are_the_partner_adjoint_costates(case):
    prob = small_problem(**{"n": 40, "layers": 3, **case})
    prob, tr, res, lines = _solve(prob)
    m = res.metrics
    assert res.success, res.message
    assert m["solver_status"] == "Solve_Succeeded"
    assert m["kkt_residual"] <= 1e-8 and m["constraint_violation"] <= 1e-9
    for key in ("iterations", "build_time_s", "solve_time_s"):
        assert key in m
    assert len(res.history["objective"]) == m["iterations"] + 1
    assert sum(line.startswith("ipopt") for line in lines) == m["iterations"] + 1
    E, gnorm, cs = _torch_costates(prob, tr, res.params)
    assert gnorm <= 1e-8  # the reduced gradient at the solution
    assert set(res.costates) == set(cs)
    for k in cs:
        assert res.costates[k].shape == cs[k].shape
        assert _rel(res.costates[k], cs[k]) <= 1e-8, k


def test_stage_variables_give_the_same_solution_and_costates():
    prob = small_problem(n=30, layers=3, tableau="kutta3", controls="per-stage")
    _, tr, r1, _ = _solve(prob, stages="eliminated")
    _, _, r2, _ = _solve(prob, stages="variables")
    assert r1.success and r2.success
    assert r2.metrics["n_variables"] > r1.metrics["n_variables"]
    _, _, cs = _torch_costates(prob.replace(solver=SolverSpec()), tr, r2.params)
    for k in cs:
        assert _rel(r2.costates[k], cs[k]) <= 1e-8


def test_reduced_formulation_stays_at_the_full_space_solution():
    prob = small_problem(n=30, layers=3, tableau="heun")
    prob_s, tr, r1, _ = _solve(prob)
    red = prob_s.replace(solver__options={"tol": TOL, "formulation": "reduced"})
    r2 = solve(red, tr, None, r1.params, log=None)
    assert r2.success and r2.metrics["formulation"] == "reduced"
    assert r2.metrics["n_variables"] == sum(r1.params[k].size for k in prob.trainable())
    assert max(_rel(r2.params[k], r1.params[k]) for k in prob.trainable()) <= 1e-8
    assert _rel(r2.costates["p"], r1.costates["p"]) <= 1e-8


def test_simplex_steps_stay_on_the_simplex():
    prob = small_problem(family="odenet-simplex", n=30, layers=4)
    prob, tr, res, _ = _solve(prob)
    assert res.success
    h = res.params["h"]
    assert np.all(h >= 0) and abs(h.sum() - prob.T) <= 1e-9


# ---------------------------------------------------------------------------- BVP
@pytest.mark.parametrize("case", [dict(tableau="rk4"), dict(tableau="kutta3", controls="per-stage"),
                                  dict(tableau="heun", family="odenet", n=30), dict(tableau="midpoint")],
                         ids=lambda c: "-".join(str(v) for v in c.values()))
def test_bvp_newton_returns_to_the_ipopt_solution_quadratically(case):
    prob = small_problem(**{"n": 40, "layers": 3, **case})
    prob, tr, r_ip, _ = _solve(prob)
    assert r_ip.success
    rng = np.random.default_rng(7)
    start = {k: v.copy() for k, v in r_ip.params.items()}
    for k in prob.trainable():
        start[k] = start[k] + 1e-3 * rng.standard_normal(start[k].shape)
    lines = []
    r_bvp = solve(prob.replace(solver__name="bvp"), tr, None, start, log=lines.append)
    assert r_bvp.success, r_bvp.message
    assert max(float(np.max(np.abs(r_bvp.params[k] - r_ip.params[k]))) for k in prob.trainable()) <= 1e-9
    assert r_bvp.metrics["kkt_residual"] <= 1e-8
    for k in r_ip.costates:
        assert _rel(r_bvp.costates[k], r_ip.costates[k]) <= 1e-8
    # quadratic convergence in the log: once |G| ≤ 1e-3, every step has r_{k+1} ≤ C r_k² (C = 1e3,
    # above round-off), and at least one step gains more than three orders of magnitude
    r = r_bvp.history["residual"]
    assert sum(line.startswith("bvp") for line in lines) == len(r)
    steps = [(r[k], r[k + 1]) for k in range(len(r) - 1) if r[k] <= 1e-3]
    assert steps, r
    assert all(b <= 1e3 * a * a + 1e-13 for a, b in steps), r
    assert any(b < 1e-3 * a for a, b in steps), r


@pytest.mark.parametrize("case", [dict(tableau="rk4"), dict(tableau="kutta3", controls="per-stage"),
                                  dict(tableau="heun", family="odenet-simplex"), dict(family="net", tableau="euler"),
                                  dict(tableau="midpoint", time_steps="learned")],
                         ids=lambda c: "-".join(str(v) for v in c.values()))
def test_bvp_block_jacobian_equals_the_whole_graph_jacobian(case):
    """The Jacobian assembled by blocks (θ | states and costates, sweeps | stationarity) is
    CasADi's Jacobian of the whole residual, entry by entry, with the same sparsity."""
    import casadi as ca

    from ocdl.engine.casadi.bvp import HamiltonianBVP, _to_scipy
    from ocdl.data import lift

    prob = small_problem(**{"n": 12, "layers": 3, **case})
    tr, _ = data.make(prob.data)
    d = prob.width(tr.dim)
    p0 = init_params(prob, d)
    bvp = HamiltonianBVP(prob, lift(tr.X, d).T.copy(), tr.c, p0)
    z = bvp.start(p0) + 0.1 * np.random.default_rng(3).standard_normal(bvp.z.shape[0])
    whole = ca.Function("J", [bvp.z], [ca.jacobian(bvp.G, bvp.z)])
    J1, J0 = _to_scipy(bvp.J_fn(z)), _to_scipy(whole(z))
    assert J1.shape == J0.shape and J1.nnz == J0.nnz
    assert abs(J1 - J0).max() <= 1e-14 * max(1.0, abs(J0).max())
    # the Newton direction (sample-major sparse LU) solves J dz = −G
    G = bvp.residual(z)
    dz = bvp.newton_direction(z, G)
    assert np.abs(J0 @ dz + G).max() <= 1e-10 * max(1.0, np.abs(G).max())


# ---------------------------------------------------------------------------- failures, options
def test_not_converged_is_reported():
    prob = small_problem(n=30, layers=3)
    _, _, res, lines = _solve(prob, max_iter=2)
    assert not res.success
    assert res.metrics["solver_status"] == "Maximum_Iterations_Exceeded"
    assert "Maximum_Iterations_Exceeded" in res.message
    assert res.costates is not None and np.all(np.isfinite(res.params["K"]))


def test_bvp_far_from_a_solution_fails_cleanly():
    prob = small_problem(n=30, layers=3)
    prob = prob.replace(solver=SolverSpec(backend="casadi", name="bvp", options={"max_iter": 3}))
    tr, te = data.make(prob.data)
    res = solve(prob, tr, te, init_params(prob, 3), log=None)
    assert not res.success and res.metrics["solver_status"] != "converged"
    assert "did not converge" in res.message


def test_well_posedness_warning():
    prob = small_problem(n=20, layers=2, reg={"K": 1e-3}, smooth=0.0)
    lines = []
    prob = prob.replace(solver=SolverSpec(backend="casadi", name="ipopt", options={"tol": 1e-8, "max_iter": 1}))
    tr, te = data.make(prob.data)
    solve(prob, tr, te, init_params(prob, 3), log=lines.append)
    warn = [line for line in lines if line.startswith("warning:")]
    assert len(warn) == 1 and "beta" in warn[0] and "W" in warn[0]
    lines.clear()
    solve(prob.replace(solver__options={"tol": 1e-5, "max_iter": 1}), tr, te, init_params(prob, 3), log=lines.append)
    assert not [line for line in lines if line.startswith("warning:")]


def test_full_space_started_at_the_reduced_solution():
    """start = 'reduced': the reduced NLP first, then the full-space NLP at its solution — a
    full-space KKT point (multipliers = partner-adjoint costates) at the reduced solution."""
    prob = small_problem(n=40, layers=3, tableau="rk4")
    _, tr, r_red, _ = _solve(prob, formulation="reduced")
    prob_s, _, res, lines = _solve(prob, formulation="full", start="reduced")
    m = res.metrics
    assert res.success and m["formulation"] == "full" and m["n_constraints"] > 0
    assert m["start"]["formulation"] == "reduced" and m["start"]["iterations"] == r_red.metrics["iterations"]
    assert m["start"]["solver_status"] == "Solve_Succeeded"
    assert m["wall_time_s"] >= m["start"]["wall_time_s"]
    assert m["kkt_residual"] <= 1e-10 and m["constraint_violation"] <= 1e-12
    assert m["iterations"] <= 3  # started at a KKT point of the same problem
    assert max(_rel(res.params[k], r_red.params[k]) for k in prob.trainable()) <= 1e-9
    _, gnorm, cs = _torch_costates(prob, tr, res.params)
    assert gnorm <= 1e-8
    for k in cs:  # the full-space multipliers, not the reduced run's sweep
        assert _rel(res.costates[k], cs[k]) <= 1e-8, k
    assert any("solving the reduced NLP first" in line for line in lines)


@pytest.mark.parametrize("opts,match", [({"hessian": "bfgs"}, "hessian"), ({"tol": -1.0}, "tol"),
                                        ({"formulation": "multiple"}, "formulation"), ({"max_iter": 1.5}, "max_iter"),
                                        ({"start": "warm"}, "start"),
                                        ({"start": "reduced", "formulation": "reduced"}, "formulation full")])
def test_bad_options(opts, match):
    prob = small_problem(n=20, layers=2).replace(solver=SolverSpec(backend="casadi", name="ipopt", options=opts))
    tr, te = data.make(prob.data)
    with pytest.raises(OcdlError, match=match):
        solve(prob, tr, te, init_params(prob, 3), log=None)


def test_lbfgs_hessian_runs():
    prob = small_problem(n=20, layers=2)
    _, _, res, _ = _solve(prob, hessian="lbfgs", formulation="reduced", tol=1e-6, max_iter=500)
    assert res.metrics["hessian"] == "lbfgs"
    assert res.success and res.metrics["kkt_residual"] <= 1e-4


def test_ipopt_factorises_on_one_blas_thread(monkeypatch):
    """MUMPS's BLAS (CasADi's bundled OpenBLAS) runs on one thread after a solve, so that the
    iteration path does not depend on the machine's core count."""
    from ocdl.engine.casadi import ipopt

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    prob = small_problem(n=20, layers=2)
    _solve(prob, formulation="full", tol=1e-6, max_iter=50)
    threads = ipopt.single_threaded_blas()
    if threads is None:
        pytest.skip("this CasADi build has no bundled OpenBLAS")
    assert threads == 1


def test_sigint_becomes_a_stop_request_and_the_handler_is_restored():
    import os
    import signal

    from ocdl.interrupt import StopOnSigint

    before = signal.getsignal(signal.SIGINT)
    with StopOnSigint() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt inside the block
        assert stop.requested
    assert signal.getsignal(signal.SIGINT) is before


def test_bvp_stops_on_request_with_a_valid_result(monkeypatch):
    """Ctrl-C during the BVP Newton iteration (simulated: the stop is requested after the first step)
    ends it with status 'interrupted' and the current iterate, marked interrupted."""
    from ocdl.engine.casadi import bvp as bvp_mod
    from ocdl.interrupt import StopOnSigint

    class StopAfterOneStep(StopOnSigint):
        calls = 0

        @property
        def requested(self):
            StopAfterOneStep.calls += 1
            return StopAfterOneStep.calls > 1

        @requested.setter
        def requested(self, value):
            pass

    monkeypatch.setattr(bvp_mod, "StopOnSigint", StopAfterOneStep)
    prob = small_problem(n=40, layers=3, tableau="rk4")
    tr, _ = data.make(prob.data)
    p0 = init_params(prob, prob.width(tr.dim))
    res = solve(prob.replace(solver=SolverSpec(backend="casadi", name="bvp", options={"tol": TOL})), tr, None, p0,
                log=None, quiet=True)
    assert res.interrupted and not res.success and res.metrics["solver_status"] == "interrupted"
    assert res.metrics["iterations"] == 1 and np.isfinite(res.metrics["bvp_residual"])
