"""Exact Hessian–vector products ∇²E(θ)·v of the training objective, and Gauss–Newton products.

Method (this version): reverse-over-reverse automatic differentiation through the forward sweep of
:class:`~ocdl.engine.torch.network.TorchNetwork` — the graph of E(θ) is recorded once at θ, its
gradient g(θ) = ∇E(θ) is formed by a backward sweep that is itself recorded (``create_graph``),
and every product is one more backward sweep through that graph:

    ∇²E(θ) v = ∇_θ ⟨g(θ), v⟩            (a vector–Jacobian product of the gradient map).

So one :class:`Curvature` at θ costs a forward sweep and a recorded backward sweep, and each
product then costs about one backward sweep of the doubled graph, whatever the number of products
(a Newton–CG iteration asks for many at the same θ). Exact in exact arithmetic, for every explicit
tableau, both control layouts, fixed, learned and simplex time steps, every field and activation,
both loss kinds and K classes — whatever the forward sweep computes. Memory: the recorded sweeps,
O(s·N·m·d) as autograd's gradient, about twice. The hand-written tangent sweep with a second-order
partner adjoint is the native engine's (:mod:`ocdl.engine.native.curvature`), tested against these
products; tests/test_hessian.py checks these against forward-over-reverse AD, CasADi's reduced
Hessian, central differences of the partner-adjoint gradient and symmetry.

Gauss–Newton (``gauss_newton=True``, positive semidefinite): with z = W y^[N] + μ (per sample)
and the loss ℓ(z) = φ(q(z)) written through the hypothesis q,

    G v = J_zᵀ H_z J_z v + ∇²R v,
    H_z = ∇²ℓ(z)                      for the logistic / cross-entropy loss (φ linear in log q: H_z =
                                      S(1 − S), resp. diag s − s sᵀ, positive semidefinite),
    H_z = J_qᵀ J_q                    for the squared loss ℓ = ½‖q(z) − c‖² (the residual's own
                                      Gauss–Newton: J_q = S(1 − S), resp. diag s − s sᵀ),

scaled by 1/m for a mean loss; J_z v by the double-vjp trick through the recorded forward sweep,
J_zᵀ w by one backward sweep. ∇²R is constant (R is quadratic) and exact in G.
"""

from __future__ import annotations

import torch

from ocdl import loss as loss_mod, regulariser


class Curvature:
    """E, ∇E and v ↦ ∇²E(θ) v (or the Gauss–Newton G v) at one θ of an
    :class:`~ocdl.engine.torch.optim.Objective` (flat vectors in its layout).

    ``products`` counts the products formed. The graph is kept until the object is dropped."""

    def __init__(self, obj, theta: torch.Tensor, gauss_newton: bool = False):
        self.obj, self.gauss_newton, self.products = obj, bool(gauss_newton), 0
        net, prob = obj.net, obj.net.problem
        with torch.enable_grad():
            th = theta.detach().clone().requires_grad_(True)
            params = obj.unflat(th)
            yN = net.forward(params, obj.Y0)
            R = regulariser.value(prob, params)
            E = net.data_loss(params, yN, obj.c) + R  # the formula of TorchNetwork.objective
            (g,) = torch.autograd.grad(E, th, create_graph=True)
        self.theta, self.E, self.g = th, float(E.detach()), g
        if self.gauss_newton:
            with torch.enable_grad():
                self._z = z = net.logits(params, yN)
            self._scale = 1.0 / obj.Y0.shape[1] if prob.objective.mean else 1.0
            with torch.enable_grad():
                self._Rg = None
                if isinstance(R, torch.Tensor) and R.requires_grad:
                    (self._Rg,) = torch.autograd.grad(R, th, create_graph=True)
                self._w = torch.zeros_like(z, requires_grad=True)  # the double-vjp trick's dummy cotangent
                (self._Jtw,) = torch.autograd.grad(z, th, self._w, create_graph=True)

    @property
    def gradient(self) -> torch.Tensor:
        return self.g.detach()

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """∇²E(θ) v (Gauss–Newton: G v), a flat vector."""
        self.products += 1
        if self.gauss_newton:
            return self._gauss_newton(v)
        with torch.enable_grad():
            (hv,) = torch.autograd.grad(self.g, self.theta, v, retain_graph=True)
        return hv.detach()

    def _gauss_newton(self, v):
        net, prob = self.obj.net, self.obj.net.problem
        with torch.enable_grad():
            (Jv,) = torch.autograd.grad(self._Jtw, self._w, v, retain_graph=True)  # J_z v
        z = self._z.detach()
        w = _loss_gn(prob.objective.loss, z, Jv, net.K) * self._scale
        with torch.enable_grad():
            (out,) = torch.autograd.grad(self._z, self.theta, w, retain_graph=True)  # J_zᵀ H_z J_z v
            if self._Rg is not None:
                (hr,) = torch.autograd.grad(self._Rg, self.theta, v, retain_graph=True, allow_unused=True)
                if hr is not None:
                    out = out + hr
        return out.detach()


def _loss_gn(kind: str, z, w, K: int):
    """H_z w per sample (see the module docstring): positive semidefinite, closed form."""
    xp = _xp()
    if K == 2:
        S = loss_mod.sigmoid(z, xp)
        d = S * (1.0 - S)
        return (d * d if kind == "squared" else d) * w
    s = loss_mod.softmax(z, xp)

    def Js(x):  # (diag s − s sᵀ) x, column by column
        return s * (x - (s * x).sum(0, keepdim=True))

    return Js(Js(w)) if kind == "squared" else Js(w)


def _xp():
    from ocdl import xp as xp_mod

    return xp_mod.torch()


def hvp(net, params, Y0, c, v: dict, gauss_newton: bool = False) -> dict:
    """∇²E·v over the trained keys for parameter dicts (``v`` a dict over the trained keys): the
    convenience form of :class:`Curvature` for one product."""
    from ocdl.engine.torch.optim import Objective

    obj = Objective(net, dict(params), net.problem.trainable(), Y0, c, Y0, c)
    theta = obj.flat(params)
    out = Curvature(obj, theta, gauss_newton)(obj.flat(v))
    return {k: out[sl].reshape(params[k].shape) for k, sl in _slices(obj).items()}


def _slices(obj) -> dict:
    out, i = {}, 0
    for k, _, n in obj._shapes:
        out[k] = slice(i, i + n)
        i += n
    return out
