"""The reduced Hessian by the second-order adjoint (:mod:`ocdl.engine.casadi.condensed`) against
CasADi's own exact Hessian of the reduced objective, and the reduced IPOPT solve that uses it."""

import casadi as ca
import numpy as np
import pytest

from ocdl import data
from ocdl.engine.casadi import solve
from ocdl.engine.casadi.condensed import ReducedHessian
from ocdl.engine.casadi.nlp import NetworkNLP
from ocdl.data import lift
from ocdl.problem import ClassifierSpec, init_params
from tests.conftest import small_problem


def _reduced_nlp(prob):
    """(the reduced NLP of ``prob`` on its training data, the seeded initial parameters)."""
    tr, _ = data.make(prob.data)
    d = prob.width(tr.dim)
    p0 = init_params(prob, d)
    return NetworkNLP(prob, lift(tr.X, d).T.copy(), tr.c, p0, "reduced"), p0


def _hessians(prob, seed=0, scale=0.3):
    nlp, p0 = _reduced_nlp(prob)
    theta = nlp.layout.pack(p0) + scale * np.random.default_rng(seed).standard_normal(nlp.layout.size)
    if "h" in nlp.layout.keys:  # keep the steps positive
        sl = nlp.layout.slices["h"]
        theta[sl] = np.abs(theta[sl]) + 0.05
    exact = np.array(ca.Function("H", [nlp.theta], [ca.hessian(nlp.f, nlp.theta)[0]])(theta))
    return ReducedHessian(nlp).hessian(theta), exact


def _objective_and_gradient(prob, seed=0, scale=0.3):
    """((E, ∇E) from the Hessian's sweeps, (E, ∇E) by CasADi's AD of the reduced NLP)."""
    nlp, p0 = _reduced_nlp(prob)
    theta = nlp.layout.pack(p0) + scale * np.random.default_rng(seed).standard_normal(nlp.layout.size)
    if "h" in nlp.layout.keys:
        sl = nlp.layout.slices["h"]
        theta[sl] = np.abs(theta[sl]) + 0.05
    f, g = ca.Function("fg", [nlp.theta], [nlp.f, ca.gradient(nlp.f, nlp.theta)])(theta)
    return ReducedHessian(nlp).objective_and_gradient(theta), (float(f), np.array(g).reshape(-1))


@pytest.mark.parametrize(
    "kw",
    [
        {"tableau": "euler"},
        {"tableau": "rk4"},
        {"tableau": "heun", "layers": 13, "width": 2},
        {"tableau": "kutta3", "controls": "per-stage"},
        {"tableau": "heun", "time_steps": "learned"},
        {"tableau": "rk38", "loss": "logistic", "mean": True},
        {"tableau": "ssprk3", "activation": "softplus", "width": 2},
        {"family": "net", "tableau": "euler"},
        {"family": "odenet-simplex", "tableau": "euler"},
        {"family": "monotone", "tableau": "heun", "activation": "sigmoid"},
    ],
)
def test_second_order_adjoint_equals_casadi_hessian(kw):
    H, exact = _hessians(small_problem(**kw))
    assert H.shape == exact.shape
    assert np.array_equal(H, H.T)
    assert np.max(np.abs(H - exact)) <= 1e-12 * np.max(np.abs(exact))
    # the objective and gradient that come with the same sweeps (IPOPT's grad_f)
    (E, g), (E_ad, g_ad) = _objective_and_gradient(small_problem(**kw))
    assert abs(E - E_ad) <= 1e-14 * abs(E_ad)
    assert np.max(np.abs(g - g_ad)) <= 1e-12 * np.max(np.abs(g_ad))


def test_second_order_adjoint_with_a_fixed_classifier():
    prob = small_problem(tableau="rk4").replace(classifier=ClassifierSpec(trainable=False, W=(10.0, 10.0, 0.0), mu=0.0))
    H, exact = _hessians(prob)
    assert np.max(np.abs(H - exact)) <= 1e-12 * np.max(np.abs(exact))


def test_second_order_adjoint_is_wrong_when_a_term_is_dropped():
    """The comparison can fail: dropping the second-order costate terms (a Gauss–Newton-like
    approximation) is detected far above the tolerance."""
    prob = small_problem(tableau="heun")
    nlp, p0 = _reduced_nlp(prob)
    rh = ReducedHessian(nlp)
    theta = nlp.layout.pack(p0)
    H = rh.hessian(theta)
    evaluate = rh.loss_derivs._eval
    # p^[N] = 0, so every p^[j] = 0 and Q_j = ∇²(p^[j+1]ᵀ Ψ_j) = 0: no curvature of the layers
    rh.loss_derivs._eval = lambda: (evaluate(), rh.loss_derivs.res[0].fill(0.0))
    rh._last = None  # evaluate again (not the Hessian cached for this θ)
    H_gn = rh.hessian(theta)
    assert np.max(np.abs(H - H_gn)) > 1e-6 * np.max(np.abs(H))


def test_reduced_solve_reaches_a_strict_local_minimiser():
    """IPOPT on the reduced NLP with this Hessian: KKT ≤ 1e-9, the PyTorch adjoint gradient vanishes
    there, and the Hessian is positive definite (second-order sufficient conditions)."""
    from ocdl.engine.torch.adjoint import grad_adjoint
    from ocdl.engine.torch.network import TorchNetwork

    prob = small_problem(tableau="rk4", n=60).replace(
        solver__backend="casadi", solver__name="ipopt", solver__options={"tol": 1e-10, "formulation": "reduced"})
    tr, te = data.make(prob.data)
    d = prob.width(tr.dim)
    res = solve(prob, tr, te, init_params(prob, d), log=None, quiet=True)
    assert res.success and res.metrics["kkt_residual"] <= 1e-9
    net = TorchNetwork(prob, d)
    _, g = grad_adjoint(net, net.to_torch(res.params), net.inputs(tr.X), net.tensor(tr.c))
    assert max(float(v.abs().max()) for v in g.values()) <= 1e-8
    nlp = NetworkNLP(prob, lift(tr.X, d).T.copy(), tr.c, res.params, "reduced")
    eig = np.linalg.eigvalsh(ReducedHessian(nlp).hessian(nlp.layout.pack(res.params)))
    assert eig[0] > 0


def test_hess_lag_callback_is_the_scaled_upper_triangle():
    """IPOPT's ``hess_lag`` (evaluated in place on CasADi's buffers): λ_f ∇²E, upper triangle."""
    prob = small_problem(tableau="kutta3")
    nlp, p0 = _reduced_nlp(prob)
    rh = ReducedHessian(nlp)
    theta = nlp.layout.pack(p0)
    out = rh.callback()(ca.DM(theta), ca.DM(0, 1), 0.7, ca.DM.zeros(nlp.g.shape[0]))
    assert out.sparsity() == ca.Sparsity.upper(theta.size)
    assert np.array_equal(np.array(out), np.triu(0.7 * rh.hessian(theta)))


def test_grad_f_callback_gives_E_and_its_gradient_and_keeps_the_hessian():
    """IPOPT's ``grad_f`` (in place): (E, ∇E) from the Hessian's sweeps; the Hessian at the same
    θ is then not recomputed."""
    prob = small_problem(tableau="rk4", time_steps="learned")
    nlp, p0 = _reduced_nlp(prob)
    rh = ReducedHessian(nlp)
    theta = nlp.layout.pack(p0)
    f, g = rh.gradient_callback()(ca.DM(theta), ca.DM(0, 1))
    E, grad = rh.objective_and_gradient(theta)
    assert float(f) == E and np.array_equal(np.array(g).reshape(-1), grad)
    H = rh.hessian(theta)
    assert rh.hessian(theta) is H  # cached for the same θ
    assert rh.hessian(theta + 1e-3) is not H
