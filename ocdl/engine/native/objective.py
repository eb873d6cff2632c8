"""The torch engine's :class:`~ocdl.engine.torch.optim.Objective` with compiled E and ∇E: what
the optimisers of :mod:`ocdl.engine.torch.optim` call, unchanged, for the native engine."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ocdl import regulariser
from ocdl.engine.native.compiled import Compiled
from ocdl.engine.torch.optim import Objective


@dataclass
class CompiledObjective(Objective):
    """E(θ), ∇E(θ) by :class:`~ocdl.engine.native.compiled.Compiled`; ``value`` keeps the layer
    states (and, for ``gradient = 'autograd'``, the stages) so that a following ``value_grad`` at
    the same θ runs the backward sweep only."""

    threads: int = 1

    def compiled(self, data: bool = False) -> Compiled:
        key = "_compiled_data" if data else "_compiled"
        if getattr(self, key, None) is None or self.__dict__[key].threads != self.threads:
            setattr(self, key, Compiled(self.data_net() if data else self.net, threads=self.threads))
        return getattr(self, key)

    def value(self, theta) -> float:
        self.evals += 1
        params = self.unflat(theta)
        comp = self.compiled()
        states, stages = comp.forward(params, self.Y0, store=self.gradient == "autograd")
        self._last = (theta, states, stages)
        return comp.finish(params, states, self.c, self.Y0.shape[1])[0]

    def value_grad(self, theta):
        self.grads += 1
        params = self.unflat(theta)
        last = getattr(self, "_last", None)
        states, stages = (last[1], last[2]) if last is not None and last[0] is theta else (None, None)
        E, g = self.compiled().value_grad(params, self.Y0, self.c, self.gradient, states=states, stages=stages)
        self._last = None
        return float(E), self.flat(g)

    def curvature(self, theta, gauss_newton: bool = False):
        """v ↦ ∇²E(θ) v (or G v) by the compiled second-order sweeps
        (:class:`ocdl.engine.native.curvature.Curvature`)."""
        from ocdl.engine.native.curvature import Curvature

        return Curvature(self, theta, gauss_newton)

    def batch_value_grad(self, theta, idx):
        if idx is None:
            return self.value_grad(theta)
        self.grads += 1
        params = self.unflat(theta)
        prob = self.net.problem
        Yb, cb = self.Y0[:, idx], self.c[..., idx]
        L, g = self.compiled(data=True).value_grad(params, Yb, cb, self.gradient)
        b = int(idx.numel())
        scale = 1.0 / b if prob.objective.mean else self.Y0.shape[1] / b
        with torch.inference_mode():
            E = scale * float(L) + float(regulariser.value(prob, params))
            gR = regulariser.gradient(prob, params)
            return E, self.flat({k: scale * g[k] + gR[k] for k in self.keys})

    def monitor(self, theta) -> dict:
        params = self.unflat(theta)
        comp = self.compiled()
        states, _ = comp.forward(params, self.Y0)
        states_test, _ = comp.forward(params, self.Y0_test)
        return {
            "train_accuracy": comp.accuracy(params, states, self.c),
            "test_accuracy": comp.accuracy(params, states_test, self.c_test),
            "test_objective": comp.finish(params, states_test, self.c_test, self.Y0_test.shape[1])[0],
        }
