"""Discretise-then-optimise (DTO) versus optimise-then-discretise (OTD) at the same controls.

DTO gradients are gradients of the discrete objective E(θ): PyTorch autograd (the reference) and
CasADi AD (where ``ocdl.engine.casadi.gradient`` exists). OTD gradients come from the continuous
adjoint equation discretised as in :mod:`ocdl.verify.adjoints`. Each is compared with the
reference in the max-norm, each trained parameter block θ ∈ {K, β, W, μ, h} relative to its own
size:

    rel_diff(g) = max_θ ‖g_θ − g_θ^ref‖_∞ / ‖g_θ^ref‖_∞.

The bilinear invariant: with v^[j] the discrete tangent-linear states for a seeded random
direction v^[0] of the initial states (forward-mode AD through the engine) and p^[j] a costate,
I_j = ⟨p^[j], v^[j]⟩ (summed over samples) is constant in j exactly when p is the discrete adjoint
of the forward scheme (then I_j = ∂E_loss/∂y^[0] · v^[0]); we report
max_j |I_j − I_N| / max_j |I_j|.
"""

from __future__ import annotations

import numpy as np

from ocdl import metrics
from ocdl.errors import OcdlError
from ocdl.verify import adjoints
from ocdl.verify.instance import Instance

METHODS = ("dto_autograd", "dto_casadi", "otd_partner", "otd_same_tableau", "otd_continuous")
UNSCALED = "discrete_adjoint_unscaled"
DESCRIPTIONS = {
    "dto_autograd": "PyTorch autograd of the discrete objective (reference)",
    "dto_casadi": "CasADi AD of the discrete objective",
    "otd_partner": "adjoint ODE with the partner (Ã, b) on the forward stages",
    "otd_same_tableau": "adjoint ODE with (A, b) backwards, states recomputed backwards",
    "otd_continuous": "continuous adjoint, solve_ivp DOP853 rtol 1e-12",
    UNSCALED: "discrete adjoint in unscaled stage variables μ_i = b_i P_i (engine)",
}


def rel_diff(g: dict, ref: dict) -> float:
    """max over the keys k of ‖g_k − ref_k‖_∞ / ‖ref_k‖_∞ (each parameter block relative to its
    own size, so that the large ∂E/∂μ = Σ_n ℓ'(z_n) does not mask errors in ∂E/∂K)."""
    return max(rel_diff_by_key(g, ref).values())


def rel_diff_global(g: dict, ref: dict) -> float:
    """‖g − ref‖_∞ / ‖ref‖_∞ with all parameters in one vector (dominated by the largest block,
    usually ∂E/∂μ; reported beside :func:`rel_diff`)."""
    def flat(x):
        return np.concatenate([np.asarray(x[k], dtype=np.float64).ravel() for k in ref])

    return metrics.rel_diff(flat(g), flat(ref))


def rel_diff_by_key(g: dict, ref: dict) -> dict:
    """:func:`ocdl.metrics.rel_diff` ‖g_k − ref_k‖_∞ / ‖ref_k‖_∞ for every key of ``ref`` (absolute
    where ref_k = 0)."""
    return {k: metrics.rel_diff(g[k], ref[k]) for k in ref}


def dto_autograd(inst: Instance):
    """(E, grads) of the discrete objective by PyTorch autograd."""
    params, Y0, c = inst.torch_args()
    E, grads = inst.net.grad_autograd(params, Y0, c)
    return float(E), {k: v.detach().numpy() for k, v in grads.items()}


def dto_casadi(inst: Instance):
    """(E, grads) by CasADi's reverse-mode AD of the reduced objective."""
    from ocdl.engine.casadi import gradient

    E, grads = gradient(inst.problem, inst.params, inst.Y0.T.copy(), inst.c)
    return float(E), {k: np.asarray(grads[k], dtype=np.float64) for k in inst.problem.trainable()}


def discrete_adjoint_unscaled(inst: Instance):
    """(E, grads, p (N+1, d, m)) from the engine's backward sweep in unscaled stage variables."""
    from ocdl.engine.torch.adjoint import grad_adjoint

    params, Y0, c = inst.torch_args()
    E, grads, cost = grad_adjoint(inst.net, params, Y0, c, return_costates=True, form="unscaled")
    p = cost["p"].numpy().transpose(0, 2, 1)  # engine returns (N+1, m, d)
    return float(E), {k: v.numpy() for k, v in grads.items()}, p


def tangent_linear(inst: Instance, seed: int = 0) -> np.ndarray:
    """v^[0..N] (N+1, d, m): the discrete forward sensitivity v^[j] = (∂y^[j]/∂y^[0]) v^[0] of the
    engine's states for a seeded standard normal direction v^[0], by the double-backward
    identity J v = ∂/∂w ⟨Jᵀ w, v⟩ (two reverse sweeps of autograd through the engine)."""
    import torch

    net = inst.net
    params, Y0, _ = inst.torch_args()
    V0 = net.tensor(np.random.default_rng(seed).standard_normal(inst.Y0.shape))
    Y0 = Y0.requires_grad_(True)
    states = torch.stack(net.forward(params, Y0, keep_states=True)[1])
    w = torch.zeros_like(states, requires_grad=True)
    (JTw,) = torch.autograd.grad((states * w).sum(), Y0, create_graph=True)
    (V,) = torch.autograd.grad((JTw * V0).sum(), w)
    return V.detach().numpy()


def invariant(p: np.ndarray, v: np.ndarray):
    """(I_j for j = 0..N, max_j |I_j − I_N| / max_j |I_j|) with I_j = ⟨p^[j], v^[j]⟩."""
    I = np.einsum("jdm,jdm->j", p, v)
    scale = float(np.max(np.abs(I)))
    return I, float(np.max(np.abs(I - I[-1]))) / scale if scale > 0 else 0.0


def commutation(inst: Instance, casadi: bool = True, invariant_seed: int = 0) -> dict:
    """All gradients at the instance's controls, their rel_diff to autograd, and the invariant.

    Returns a JSON-ready dict: ``tableau``, ``problem`` (summary), ``partner_exists``,
    ``methods`` {name: {"rel_diff": float | None, "reason"?: str}}, ``invariant_variation``
    {"partner", "same_tableau", "continuous"[, "unscaled"]} and ``invariant`` (the I_j lists)."""
    prob = inst.problem
    tab = inst.tableau
    E_ref, g_ref = dto_autograd(inst)
    methods: dict = {"dto_autograd": {"rel_diff": 0.0}}
    costates: dict = {}

    def record(name, fn):
        try:
            out = fn(inst)
        except OcdlError as e:
            methods[name] = {"rel_diff": None, "reason": str(e)}
            return
        if isinstance(out, adjoints.AdjointResult):
            g, p = out.grads, out.p
        else:
            g, p = out[1], (out[2] if len(out) > 2 else None)
        by_key = rel_diff_by_key(g, g_ref)
        methods[name] = {"rel_diff": max(by_key.values()), "rel_diff_by_key": by_key,
                         "rel_diff_global": rel_diff_global(g, g_ref)}
        if p is not None:
            costates[name] = p

    if casadi:
        record("dto_casadi", dto_casadi)
    else:
        methods["dto_casadi"] = {"rel_diff": None, "reason": "not requested"}
    record("otd_partner", adjoints.partner)
    if not tab.has_partner:
        methods["otd_partner"]["reason"] = (
            f"some b_i = 0 (b = ({', '.join(f'{x:g}' for x in tab.b)})): the partner Ã (ã_il = b_l − b_l a_li / b_i) does not "
            "exist; the discrete adjoint is shown in unscaled stage variables instead"
        )
        record(UNSCALED, discrete_adjoint_unscaled)
    record("otd_same_tableau", adjoints.same_tableau)
    record("otd_continuous", adjoints.continuous_network)

    v = tangent_linear(inst, invariant_seed)
    inv_lists, inv_var = {}, {}
    for key, name in (("partner", "otd_partner"), ("same_tableau", "otd_same_tableau"),
                      ("continuous", "otd_continuous"), ("unscaled", UNSCALED)):
        if name in costates:
            I, var = invariant(costates[name], v)
            inv_lists[key], inv_var[key] = I.tolist(), var
        elif key != "unscaled":
            inv_var[key] = None
    return {
        "tableau": tab.name,
        "stages": tab.s,
        "ode_order": tab.ode_order,
        "oc_order": tab.oc_order,
        "problem": {**summary(prob), "n": inst.m, "classes": inst.K},
        "partner_exists": tab.has_partner,
        "E": E_ref,
        "methods": {k: methods[k] for k in (*METHODS, UNSCALED) if k in methods},
        "invariant_variation": inv_var,
        "invariant": inv_lists,
    }


def summary(prob) -> dict:
    """The problem settings a verification result depends on."""
    return {
        "family": prob.family,
        "layers": prob.N,
        "h": prob.h,
        "T": prob.T,
        "controls": prob.network.controls,
        "activation": prob.network.activation,
        "data": prob.data.name,
        "n": prob.data.n,
        "seed": prob.init.seed,
        "loss": prob.objective.loss,
    }


# ---------------------------------------------------------------------------- refinement
def refine(inst: Instance, r: int) -> Instance:
    """The same continuous problem on a grid r times finer: each layer split into r layers of
    length h_j / r carrying the same (per-layer) control."""
    if inst.problem.per_stage:
        raise OcdlError("refinement needs per-layer controls")
    prob = inst.problem
    fine = prob.replace(network__layers=prob.N * r, network__h=None, network__T=prob.T)
    params = dict(inst.params)
    params["K"] = np.repeat(params["K"], r, axis=0)
    params["beta"] = np.repeat(params["beta"], r, axis=0)
    params["h"] = np.repeat(params["h"] / r, r)
    return Instance(fine, inst.Y0, inst.c, params)


def coarse(g: dict, N: int, r: int) -> dict:
    """The gradient with respect to the coarse parameters, by the chain rule through the
    refinement: K, β of a coarse layer feed r copies (sum); its step h_j feeds r steps h_j / r
    (mean)."""
    out = dict(g)
    for k in ("K", "beta", "h"):
        if k in out:
            a = np.asarray(out[k])
            out[k] = a.reshape(N, r, *a.shape[1:]).sum(1) / (r if k == "h" else 1)
    return out


def refinement(inst: Instance, factors=(1, 2, 4), methods=("otd_same_tableau", "otd_continuous")) -> dict:
    """rel_diff of OTD gradients to the DTO gradient as h → 0 at fixed T and fixed (piecewise
    constant) controls, on the coarse-control gradient, with the fitted slope of log(gap) against
    log(h)."""
    fn = {"otd_same_tableau": adjoints.same_tableau, "otd_continuous": adjoints.continuous_network,
          "otd_partner": adjoints.partner}
    h0 = inst.problem.h
    out = {"h": [h0 / r for r in factors], "gaps": {m: [] for m in methods}}
    for r in factors:
        fine = refine(inst, r)
        _, g_ref = dto_autograd(fine)
        g_ref = coarse(g_ref, inst.N, r)
        for m in methods:
            out["gaps"][m].append(rel_diff(coarse(fn[m](fine).grads, inst.N, r), g_ref))
    out["slopes"] = {m: _slope(out["h"], out["gaps"][m]) for m in methods}
    return out


def _slope(h, e) -> float:
    return float(np.polyfit(np.log(h), np.log(e), 1)[0])
