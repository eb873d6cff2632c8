"""Exact Hessian–vector products of the torch engine (:mod:`ocdl.engine.torch.hessian`) against
forward-over-reverse AD (torch.func, an independent mode of differentiation, on torch's own tanh),
the CasADi reduced NLP's exact Hessian times v, central differences of the partner-adjoint
gradient, and symmetry; the Gauss–Newton products against J_zᵀ H_z J_z from explicit Jacobians."""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest
import torch

import ocdl
from ocdl import data, problem as problem_mod
from ocdl.data import lift
from ocdl.engine.casadi.nlp import NetworkNLP
from ocdl.engine.torch.hessian import Curvature, hvp
from ocdl.engine.torch.network import TorchNetwork
from ocdl.engine.torch.optim import Objective
from ocdl.problem import init_params
from tests.conftest import setup_net, small_problem

CASES = [
    {"tableau": "euler"},
    {"tableau": "rk4"},
    {"tableau": "heun", "loss": "logistic", "mean": True},
    {"tableau": "midpoint"},  # b₁ = 0: no partner form
    {"tableau": "kutta3", "controls": "per-stage"},
    {"tableau": "rk38", "controls": "per-stage", "time_steps": "learned"},
    {"tableau": "ssprk3", "activation": "softplus", "time_steps": "learned", "loss": "logistic"},
    {"family": "net", "tableau": "euler"},
    {"family": "odenet-simplex", "tableau": "euler"},
    {"family": "monotone", "tableau": "heun", "activation": "sigmoid"},
]
IDS = ["-".join(f"{v}" for v in kw.values()) for kw in CASES]
K_CASES = [("rk4", "per-layer", None, "cross-entropy"), ("heun", "per-stage", "learned", "squared"),
           ("euler", "per-layer", "simplex", "cross-entropy")]


def _instance(kw):
    prob = small_problem(**kw)
    net, p, Y0, c = setup_net(prob)
    return prob, net, p, Y0, c


def _k_instance(tab, controls, ts, kind, K=4, m=30, dim=5, width=6):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((m, dim))
    c = np.arange(m) % K
    net = {"family": "odenet-simplex" if ts == "simplex" else "rk", "layers": 3, "controls": controls,
           "width": width, "tableau": tab}
    if ts:
        net["time_steps"] = ts
    prob = ocdl.Problem.from_arrays(X, c, network=net, objective={"loss": kind, "mean": True, "tikhonov": 1e-3,
                                                                  "smooth": 1e-3})
    K_ = problem_mod.classes(prob, prob.data.train)
    params = problem_mod.init_params(prob, width, K_)
    tn = TorchNetwork(prob, width, classes=K_)
    return prob, tn, tn.to_torch(params), tn.inputs(X), tn.targets(c), X, c, params


def _vectors(n, seed=0):
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.standard_normal(n)), torch.tensor(rng.standard_normal(n))


def _forward_over_reverse(prob, d, p, Y0, c, v, K=2):
    """∇²E v = d/dε ∇E(θ + ε v) by forward-mode AD of reverse-mode AD (torch.func), on torch.tanh."""
    net2 = TorchNetwork(prob, d, chosen_tanh=False, classes=K)
    obj2 = Objective(net2, p, prob.trainable(), Y0, c, Y0, c)
    th = obj2.flat(p)
    _, out = torch.func.jvp(torch.func.grad(lambda t: net2.objective(obj2.unflat(t), Y0, c)), (th,), (v,))
    return out


def _rel(a, b):
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("kw", CASES, ids=IDS)
def test_hv_equals_forward_over_reverse_and_is_symmetric(kw):
    prob, net, p, Y0, c = _instance(kw)
    obj = Objective(net, p, prob.trainable(), Y0, c, Y0, c)
    th = obj.flat(p)
    u, v = _vectors(th.numel())
    C = Curvature(obj, th)
    Hv, Hu = C(v), C(u)
    assert _rel(Hv, _forward_over_reverse(prob, net.d, p, Y0, c, v)) <= 1e-12
    # symmetry to round-off: |⟨u, Hv⟩ − ⟨Hu, v⟩| against the size of the products' terms
    scale = float(u.abs() @ Hv.abs() + Hu.abs() @ v.abs())
    assert abs(float(u @ Hv - Hu @ v)) <= 1e-14 * scale
    assert C.products == 2 and abs(C.E - float(net.objective(p, Y0, c))) <= 1e-15 * abs(C.E)


@pytest.mark.parametrize("kw", CASES, ids=IDS)
def test_hv_equals_central_differences_of_the_adjoint_gradient(kw):
    prob, net, p, Y0, c = _instance(kw)
    obj = Objective(net, p, prob.trainable(), Y0, c, Y0, c)
    th = obj.flat(p)
    _, v = _vectors(th.numel(), seed=1)
    v = v / torch.linalg.vector_norm(v)
    Hv = Curvature(obj, th)(v)
    eps = 1e-5
    fd = (obj.value_grad(th + eps * v)[1] - obj.value_grad(th - eps * v)[1]) / (2 * eps)
    assert _rel(Hv, fd) <= 1e-7


def _casadi_hessian(prob, X, c, params, theta):
    d = params["K"].shape[-1]
    nlp = NetworkNLP(prob, lift(X, d).T.copy(), c, params, "reduced")
    assert nlp.layout.size == theta.size
    return np.array(ca.Function("H", [nlp.theta], [ca.hessian(nlp.f, nlp.theta)[0]])(theta))


@pytest.mark.parametrize("kw", CASES[:3] + CASES[4:7] + CASES[8:], ids=IDS[:3] + IDS[4:7] + IDS[8:])
def test_hv_equals_the_casadi_reduced_hessian_times_v(kw):
    prob = small_problem(**kw)
    tr, _ = data.make(prob.data)
    d = prob.width(tr.dim)
    p0 = init_params(prob, d)
    net = TorchNetwork(prob, d)
    # away from the initialisation (and, for learned steps, unequal positive steps)
    rng = np.random.default_rng(3)
    prm = {k: np.array(v, dtype=np.float64) for k, v in p0.items()}
    for k in prob.trainable():
        prm[k] = prm[k] + (0.2 * rng.standard_normal(prm[k].shape) if k != "h" else 0.0)
    if "h" in prob.trainable():
        h = prm["h"] * (0.5 + rng.uniform(size=prm["h"].shape))
        prm["h"] = h / h.sum() * prob.T if prob.time_steps == "simplex" else h
    p = net.to_torch(prm)
    Y0, c = net.inputs(tr.X), net.targets(tr.c)
    obj = Objective(net, p, prob.trainable(), Y0, c, Y0, c)
    th = obj.flat(p)
    H = _casadi_hessian(prob, tr.X, tr.c, prm, th.numpy())
    _, v = _vectors(th.numel(), seed=2)
    ref = torch.tensor(H @ v.numpy())
    assert _rel(Curvature(obj, th)(v), ref) <= 1e-12


@pytest.mark.parametrize("tab,controls,ts,kind", K_CASES)
def test_k_classes(tab, controls, ts, kind):
    """K = 4 classes (W ∈ R^{K×d}, softmax): forward-over-reverse, CasADi, central differences, symmetry."""
    prob, net, p, Y0, C, X, c, params = _k_instance(tab, controls, ts, kind)
    obj = Objective(net, p, prob.trainable(), Y0, C, Y0, C)
    th = obj.flat(p)
    u, v = _vectors(th.numel(), seed=4)
    cur = Curvature(obj, th)
    Hv, Hu = cur(v), cur(u)
    assert _rel(Hv, _forward_over_reverse(prob, net.d, p, Y0, C, v, K=4)) <= 1e-12
    H = _casadi_hessian(prob, X, c, params, th.numpy())
    assert _rel(Hv, torch.tensor(H @ v.numpy())) <= 1e-12
    w = v / torch.linalg.vector_norm(v)
    eps = 1e-5
    fd = (obj.value_grad(th + eps * w)[1] - obj.value_grad(th - eps * w)[1]) / (2 * eps)
    assert _rel(cur(w), fd) <= 1e-7
    assert abs(float(u @ Hv - Hu @ v)) <= 1e-14 * float(u.abs() @ Hv.abs() + Hu.abs() @ v.abs())


@pytest.mark.parametrize("kw,K", [({"tableau": "rk4"}, 2), ({"tableau": "heun", "loss": "logistic", "mean": True}, 2),
                                  (("rk4", "per-layer", None, "cross-entropy"), 4),
                                  (("heun", "per-layer", "learned", "squared"), 4)])
def test_gauss_newton_products(kw, K):
    """G v = J_zᵀ H_z J_z v + ∇²R v with J_z = ∂z/∂θ from an explicit Jacobian (torch.func.jacrev), H_z the
    loss Hessian (logistic, cross-entropy: autograd's) or the residual's J_qᵀ J_q (squared); G
    symmetric positive semidefinite."""
    if K == 2:
        prob, net, p, Y0, c = _instance(kw)
    else:
        prob, net, p, Y0, c, *_ = _k_instance(*kw)
    obj = Objective(net, p, prob.trainable(), Y0, c, Y0, c)
    th = obj.flat(p)
    u, v = _vectors(th.numel(), seed=5)
    G = Curvature(obj, th, gauss_newton=True)
    Gv = G(v)
    net2 = TorchNetwork(prob, net.d, chosen_tanh=False, classes=net.K)
    obj2 = Objective(net2, p, prob.trainable(), Y0, c, Y0, c)

    def z_of(t):
        prm = obj2.unflat(t)
        return net2.logits(prm, net2.forward(prm, Y0))

    J = torch.func.jacrev(z_of)(th).reshape(-1, th.numel())  # (z entries) × n_θ
    z = z_of(th).detach()
    scale = 1.0 / Y0.shape[1] if prob.objective.mean else 1.0
    zl = z.clone().requires_grad_(True)
    from ocdl import loss as L, regulariser, xp

    if prob.objective.loss == "squared":
        q = torch.func.jacrev(lambda t: L.hypothesis(t, xp.torch(False), net.K).reshape(-1))(zl).reshape(z.numel(), -1)
        Hz = q.T @ q
    else:
        Hz = torch.func.hessian(lambda t: L.pointwise(prob.objective.loss, t, c, xp.torch(False), net.K).sum())(zl)
        Hz = Hz.reshape(z.numel(), z.numel())
    HR = torch.func.hessian(lambda t: regulariser.value(prob, obj2.unflat(t)))(th)
    ref = (J.T @ (scale * Hz @ (J @ v)) + HR @ v).detach()
    assert _rel(Gv, ref) <= 1e-12
    Gu = G(u)
    assert abs(float(u @ Gv - Gu @ v)) <= 1e-14 * float(u.abs() @ Gv.abs() + Gu.abs() @ v.abs())
    assert float(v @ Gv) >= 0 and float(u @ Gu) >= 0
    assert float(torch.linalg.eigvalsh(J.T @ (scale * Hz) @ J + HR).min()) >= -1e-12


def test_hvp_on_parameter_dicts():
    prob, net, p, Y0, c = _instance({"tableau": "rk4", "time_steps": "learned"})
    obj = Objective(net, p, prob.trainable(), Y0, c, Y0, c)
    _, v = _vectors(obj.flat(p).numel())
    vd = obj.unflat(v)
    out = hvp(net, p, Y0, c, {k: vd[k] for k in prob.trainable()})
    assert set(out) == set(prob.trainable())
    assert torch.equal(obj.flat(out), Curvature(obj, obj.flat(p))(v))
