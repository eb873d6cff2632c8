"""Exact Hessian–vector products ∇²E(θ)·v (and Gauss–Newton products) by the compiled
second-order sweeps of :mod:`.hv_kernels`: the native engine's :class:`Curvature`.

Per θ (once): the forward sweep, keeping the layer states y^[j] and the stage values F_i; the
logits z = W y^[N] + μ and g = ∂ℓ/∂z (scaled by 1/m for a mean loss), p^[N] = Wᵀ g. Per product
v = (K̇, β̇, ḣ, Ẇ, μ̇):

    ẏ^[N]                     the tangent sweep (:func:`.hv_kernels.tangent`),
    ż = Ẇ y^[N] + W ẏ^[N] + μ̇,   ġ = ∇²_z ℓ · ż  (:func:`ocdl.loss.d2pointwise`, scaled),
    ṗ^[N] = Wᵀ ġ + Ẇᵀ g,  (∇²E v)_W = ġ y^[N]ᵀ + g ẏ^[N]ᵀ,  (∇²E v)_μ = Σ_n ġ_n,
    (∇²E v)_{K, β, h}         the second-order adjoint sweep (:func:`.hv_kernels.second`) from
                              p^[N] and ṗ^[N],
    + ∇²R v = ∇R(v)           (R is quadratic: its gradient is linear, with no constant term).

The costate form is the gradient's (the partner form where it exists, unless the objective's
gradient is 'autograd'). Gauss–Newton (``gauss_newton=True``): G v = J_zᵀ H_z J_z v + ∇²R v with
J_z v = ż from the tangent sweep, H_z as :func:`ocdl.engine.torch.hessian._loss_gn`, and J_zᵀ w by
the first-order backward sweep (:func:`.kernels.backward`) from p^[N] = Wᵀ w. Memory: y^[j] and
ẏ^[j], O(N·m·d) as the adjoint, and the stage values F_i of the forward sweep, O(s·N·m·d), where
they fit in :data:`~ocdl.engine.native.compiled.KEEP_STAGES_BYTES` (``keep_stages``: always / never); without them every product
recomputes them (one tanh per stage value) — the same numbers, bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from ocdl import loss as loss_mod, regulariser
from ocdl.engine.native.compiled import classifier_back, keeps_stages
from ocdl.engine.torch.hessian import _loss_gn


class Curvature:
    """v ↦ ∇²E(θ) v (or G v) at one θ of a :class:`~ocdl.engine.native.objective.CompiledObjective`,
    flat vectors in its layout; ``products`` counts the products formed."""

    def __init__(self, obj, theta: torch.Tensor, gauss_newton: bool = False, keep_stages: bool | None = None):
        from ocdl.engine.native import hv_kernels
        from ocdl.engine.native.compiled import kernels

        self.obj, self.gauss_newton, self.products = obj, bool(gauss_newton), 0
        comp = self.comp = obj.compiled()
        kernels(parallel=comp.threads > 1, second_order=True)
        self.hk = hv_kernels
        net, prob = comp.net, comp.net.problem
        self.params = params = obj.unflat(theta.detach())
        N, (d, m) = prob.N, obj.Y0.shape
        self.stored = keeps_stages(N, comp.s, d, m, keep_stages)
        self.states, self.stages = comp.forward(params, obj.Y0, store=self.stored)
        if not self.stored:
            self.stages = comp._none
        self.K, self.beta, self.h = comp.controls(params)
        form = "partner" if obj.gradient != "autograd" and "partner" in comp.forms else "unscaled"
        self.c0s, self.coef, self.w = comp.forms[form]
        self.kind, self.scale = prob.objective.loss, 1.0 / obj.Y0.shape[1] if prob.objective.mean else 1.0
        with torch.inference_mode():
            self.yN = torch.from_numpy(self.states[-1])
            self.z = net.logits(params, self.yN)
            self.g = loss_mod.dpointwise(self.kind, self.z, obj.c, net.xp, net.K) * self.scale
            self.pN = np.ascontiguousarray(classifier_back(params["W"], self.yN, self.g)[0].numpy())

    def _directions(self, v):
        """A parameter dict of v (zero where not trained) and its controls' (K̇, β̇, ḣ) arrays."""
        obj = self.obj
        vd = {k: torch.zeros_like(x) if torch.is_tensor(x) else x for k, x in self.params.items()}
        vd.update({k: x for k, x in obj.unflat(v).items() if k in obj.keys})
        return (vd,) + self.comp.controls(vd)

    def _sums(self):
        m, N, su, d = self.states.shape[2], self.K.shape[0], self.K.shape[1], self.K.shape[2]
        nq = (m + self.comp.chunk - 1) // self.comp.chunk
        return np.zeros((nq, N, su, d, d)), np.zeros((nq, N, su, d)), np.zeros((nq, N))

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """∇²E(θ) v (Gauss–Newton: G v), a flat vector."""
        self.products += 1
        comp, net = self.comp, self.comp.net
        vd, dK, dbeta, dh = self._directions(v.detach())
        dstates = np.empty_like(self.states)
        comp._set_threads()
        par = comp.threads > 1
        (self.hk.tangent_parallel if par else self.hk.tangent)(
            self.states, self.stages, self.stored, self.K, self.beta, self.h, dK, dbeta, dh, comp.A, comp.b,
            comp.skip, dstates, comp.chunk)
        W = self.params["W"]
        with torch.inference_mode():
            dyN = torch.from_numpy(dstates[-1])
            dz = net.logits(vd, self.yN) + W @ dyN  # J_z v
            hK, hb, hh = self._sums()
            if self.gauss_newton:
                wz = _loss_gn(self.kind, self.z, dz, net.K) * self.scale
                pN, gW, gmu = classifier_back(W, self.yN, wz)
                (comp.k.backward_parallel if par else comp.k.backward)(
                    self.states, self.stages, self.stored, self.K, self.beta, self.h, comp.A, self.c0s, self.coef,
                    self.w, comp.skip, np.ascontiguousarray(pN.numpy()), hK, hb, hh, comp.chunk)
            else:
                dg = loss_mod.d2pointwise(self.kind, self.z, self.obj.c, dz, net.xp, net.K) * self.scale
                a, b = classifier_back(W, self.yN, dg), classifier_back(vd["W"], dyN, self.g)
                dpN, gW, gmu = a[0] + b[0], a[1] + b[1], a[2]  # b = (Ẇᵀ g, g ẏ^[N]ᵀ, ·)
                (self.hk.second_parallel if par else self.hk.second)(
                    self.states, self.stages, self.stored, dstates, self.K, self.beta, self.h, dK, dbeta, dh, comp.A,
                    self.c0s, self.coef, self.w, comp.skip, self.pN, np.ascontiguousarray(dpN.numpy()), hK, hb, hh,
                    comp.chunk)
            k = comp.k
            part = {"K": k.chunk_sum(hK), "beta": k.chunk_sum(hb), "h": k.chunk_sum(hh)}
            return self._assemble(part, {"W": gW, "mu": gmu}, vd)

    def _assemble(self, net_part, cls, vd):
        """The flat product: the network's and the classifier's parts plus ∇²R v = ∇R(v)."""
        obj = self.obj
        hR = regulariser.gradient(self.comp.net.problem, vd)
        parts = {}
        for key in obj.keys:
            x = cls[key] if key in cls else torch.from_numpy(net_part[key]).reshape(self.params[key].shape)
            parts[key] = x + hR[key]
        return obj.flat(parts)
