"""Discrete costates from the multipliers of the full-space NLP.

IPOPT's Lagrangian is L = f + Σ_j λ_jᵀ (Y^[j+1] − Ψ_j(Y^[j])). Stationarity in Y^[N] gives
λ_{N−1} = −∂f/∂Y^[N], and in Y^[j] (0 < j < N) gives λ_{j−1} = (∂Ψ_j/∂y)ᵀ λ_j, so

    p^[j] = −λ_{j−1}   (j = 1, …, N),    p^[0] = (∂Ψ_0/∂y)ᵀ p^[1]

are the costates p = ∂E/∂y of :func:`ocdl.engine.torch.adjoint.grad_adjoint`. Stage costates:

  * stage slopes as variables, multipliers κ_i of F_i − f(Y_i) = 0:  κ_i = −h μ_i;
  * stages eliminated: h μ_i = ∂(p^[j+1]ᵀ Ψ_j)/∂E_i, the derivative of the step with respect to a
    perturbation E_i of the slope F_i (see :mod:`.discretisation`);

and P_i = μ_i / b_i (partner form, every b_i ≠ 0) or P_i = μ_i (unscaled form), as in PyTorch.
"""

from __future__ import annotations

import casadi as ca
import numpy as np


def layer_adjoint(net) -> ca.Function:
    """(y, U, h, t, p⁺) -> (p, P): the costate p = (∂Ψ/∂y)ᵀ p⁺ of one sample and the stage
    costates P (d × s; empty for plain layers and implicit tableaux), by reverse-mode AD."""
    if hasattr(net, "_adjoint"):
        return net._adjoint
    d, s = net.d, net.s
    if not net.has_skip or not net.scheme.explicit:
        Sym = ca.SX if not net.has_skip else ca.MX
        y, U, h, t, pn = Sym.sym("y", d), Sym.sym("U", net.nu, s), Sym.sym("h"), Sym.sym("t"), Sym.sym("p", d)
        lam = ca.dot(pn, net.layer(y, U, h, t))
        out = [ca.gradient(lam, y), Sym(0, 0)]
    else:
        y, U, h, t, pn = ca.SX.sym("y", d), ca.SX.sym("U", net.nu, s), ca.SX.sym("h"), ca.SX.sym("t"), ca.SX.sym("p", d)
        E = ca.SX.sym("E", d, s)
        lam = ca.dot(pn, net.scheme.step(y, U, h, t, E)[0])
        mu = ca.substitute(ca.jacobian(lam, ca.vec(E)).T, E, ca.SX.zeros(d, s)) / h
        p = ca.substitute(ca.gradient(lam, y), E, ca.SX.zeros(d, s))
        b = net.tableau.b
        scale = 1.0 / b if net.tableau.has_partner else np.ones(s)
        P = ca.reshape(mu, d, s) @ ca.diag(ca.DM(scale))
        out = [p, P]
    net._adjoint = ca.Function("layer_adjoint", [y, U, h, t, pn], out, ["y", "U", "h", "t", "p_next"], ["p", "P"])
    return net._adjoint


def from_multipliers(nlp, x, lam_g) -> dict:
    """{'p': (N+1, m, d), 'P': (N, s, m, d)} from a full-space solution (x, λ_g)."""
    d, m, N, s = nlp.d, nlp.m, nlp.problem.N, nlp.net.s
    x = np.asarray(x).reshape(-1)
    lam_g = np.asarray(lam_g).reshape(-1)
    theta = x[: nlp.layout.size]
    p = np.empty((N + 1, m, d))
    for j, blk in enumerate(nlp.blocks):
        p[j + 1] = -lam_g[blk["gy"]].reshape(m, d)
    states = [nlp.Y0] + [x[blk["y"]].reshape(m, d).T for blk in nlp.blocks]
    adj = layer_adjoint(nlp.net).map(m)
    U0, h0 = _numeric_controls(nlp, theta, 0)
    p0, _ = adj(states[0], U0, h0, nlp.t[0], p[1].T)
    p[0] = np.array(p0).T
    out = {"p": p}
    if not nlp.net.has_skip:
        return out
    P = np.empty((N, s, m, d))
    b = nlp.net.tableau.b
    scale = 1.0 / b if nlp.net.tableau.has_partner else np.ones(s)
    for j, blk in enumerate(nlp.blocks):
        U, h = _numeric_controls(nlp, theta, j)
        if "gF" in blk:  # κ_i = −h μ_i
            kappa = lam_g[blk["gF"]].reshape(m, s, d).transpose(1, 0, 2)
            P[j] = -kappa / h * scale[:, None, None]
        else:
            _, Pj = adj(states[j], U, h, nlp.t[j], p[j + 1].T)
            P[j] = _stage_rows(Pj, m, s, d)
    out["P"] = P
    return out


def terminal_costate(nlp, theta, yN) -> np.ndarray:
    """p^[N] = Wᵀ ℓ'(z) with z = W y^[N] + μ (÷ m for the mean loss), one row per sample (m × d),
    in numbers (ℓ'(z) ∈ R^K for K classes). (The Hamiltonian BVP states the same condition as an
    equation in CasADi symbols.)"""
    net, m = nlp.net, nlp.m
    th = ca.DM(theta)
    W = np.array(ca.DM(net.fixed_or_trained(th, "W", nlp.base))).reshape(-1)
    mu = np.array(ca.DM(net.fixed_or_trained(th, "mu", nlp.base))).reshape(-1)
    mu = float(mu[0]) if net.K == 2 else mu
    g = np.array(net.dloss.map(m)(yN, W, mu, nlp.c))
    if net.K == 2:
        g = g.reshape(-1)
    if nlp.problem.objective.mean:
        g = g / m
    return net.terminal_costate(W, g)


def backward_sweep(nlp, theta, states=None, adjoint=None) -> dict:
    """The costates by the sweep p^[j] = (∂Ψ_j/∂y)ᵀ p^[j+1] from p^[N] = ∂f/∂Y^[N] (for the
    reduced formulation, which has no state multipliers, and for the Hamiltonian BVP), in numbers:
    {'p': (N+1, m, d)[, 'P': (N, s, m, d)]}.

    ``states``: Y^[0..N] (each d×m), by the forward sweep at θ if not given. ``adjoint``: the
    one-sample step back, a CasADi Function with inputs y, U, h, t, p_next and outputs p, P (more
    are ignored): :func:`layer_adjoint` (reverse-mode AD of the layer) if not given, the partner
    costate step for the BVP."""
    d, m, N, s = nlp.d, nlp.m, nlp.problem.N, nlp.net.s
    theta = np.asarray(theta).reshape(-1)
    if states is None:
        states, _ = nlp.simulate(theta)
    net = nlp.net
    p = np.empty((N + 1, m, d))
    p[N] = terminal_costate(nlp, theta, states[N])
    adj = (adjoint if adjoint is not None else layer_adjoint(net)).map(m)
    P = np.empty((N, s, m, d))
    has_P = net.has_skip and net.scheme.explicit
    for j in range(N - 1, -1, -1):
        U, h = _numeric_controls(nlp, theta, j)
        out = adj(y=states[j], U=U, h=h, t=nlp.t[j], p_next=p[j + 1].T)
        p[j] = np.array(out["p"]).T
        if has_P:
            P[j] = _stage_rows(out["P"], m, s, d)
    return {"p": p, "P": P} if has_P else {"p": p}


def _stage_rows(P, m, s, d) -> np.ndarray:
    """The stage costates (d × s·m, sample-major) of a mapped step as (s, m, d)."""
    return np.array(P).T.reshape(m, s, d).transpose(1, 0, 2)


def _numeric_controls(nlp, theta, j):
    th = ca.DM(theta)
    U = np.array(ca.evalf(nlp.net.controls(th, j)))
    h = nlp._step(th, j)
    return U, float(h) if not isinstance(h, float) else h
