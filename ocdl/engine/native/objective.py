"""The torch engine's :class:`~ocdl.engine.torch.optim.Objective` with compiled E and ∇E: what
the optimisers of :mod:`ocdl.engine.torch.optim` call, unchanged, for the native engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ocdl import regulariser
from ocdl.engine.native.compiled import Compiled, keeps_stages
from ocdl.engine.torch.optim import Objective


@dataclass
class CompiledObjective(Objective):
    """E(θ), ∇E(θ) by :class:`~ocdl.engine.native.compiled.Compiled`; ``value`` keeps the layer
    states (and, for ``gradient = 'autograd'``, the stages) so that a following ``value_grad`` at
    the same θ runs the backward sweep only."""

    threads: int = 1
    keep_stages: bool | None = None  # for 'adjoint': keep the stage values (None: where they fit)

    def stores_stages(self) -> bool:
        """Whether the sweeps keep every layer's stage values: always for 'autograd'; for 'adjoint'
        by :attr:`keep_stages` (:func:`~ocdl.engine.native.compiled.keeps_stages`). Kept or
        recomputed, they are the same numbers: E and ∇E do not depend on it, bit for bit."""
        if self.gradient == "autograd":
            return True
        d, m = self.Y0.shape
        return keeps_stages(self.net.problem.N, self.compiled().s, d, m, self.keep_stages)

    def compiled(self, data: bool = False) -> Compiled:
        key = "_compiled_data" if data else "_compiled"
        if getattr(self, key, None) is None or self.__dict__[key].threads != self.threads:
            setattr(self, key, Compiled(self.data_net() if data else self.net, threads=self.threads))
        return getattr(self, key)

    def layout(self):
        """The problem tuple of :mod:`ocdl.engine.native.loop` with its work arrays, or None where
        the compiled flat objective does not cover the problem (K classes, a loss without a
        compiled form, more than one thread): then E and ∇E go through :class:`Compiled`."""
        if getattr(self, "_layout", False) is not False and self._layout_threads == self.threads:
            return self._layout
        self._layout, self._layout_threads = None, self.threads
        comp, net, prob = self.compiled(), self.net, self.net.problem
        code = comp.k.LOSS_CODES.get(prob.objective.loss)
        if net.K != 2 or code is None or self.threads > 1 or not set(self.keys) >= {"K", "beta"}:
            return None
        from ocdl.engine.native import loop

        offs, i = {}, 0
        for k, _, n in self._shapes:
            offs[k] = i
            i += n
        N, d, m = prob.N, net.d, self.Y0.shape[1]
        su = -(-int(self.base["K"].numel()) // (N * d * d))
        store = self.stores_stages()
        form = "unscaled" if self.gradient == "autograd" or "partner" not in comp.forms else "partner"
        c0s, coef, w = comp.forms[form]
        alpha = prob.tikhonov()
        base = {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in self.base.items()}
        P = (N, su, d, code, 1.0 / m if prob.objective.mean else 1.0, comp.A, comp.b, comp.skip, c0s, coef, w, store,
             comp.chunk, offs["K"], offs["beta"], offs.get("W", -1), offs.get("mu", -1), offs.get("h", -1),
             base["h"].reshape(N), base["W"].reshape(d), float(base["mu"].reshape(-1)[0]),
             np.array([alpha[k] if k in self.keys else 0.0 for k in ("K", "beta", "W", "mu", "h")]),
             prob.objective.smooth / prob.h)
        nq = (m + comp.chunk - 1) // comp.chunk
        work = dict(Y0=np.ascontiguousarray(self.Y0.numpy()), c=np.ascontiguousarray(self.c.numpy()),
                    states=np.empty((N + 1, d, m)), stages=comp.k.stage_store(N, comp.s, d, m, comp.chunk) if store else comp._none,
                    pN=np.empty((d, m)), gW=np.empty(d), gK=np.zeros((nq, N, su, d, d)), gb=np.zeros((nq, N, su, d)),
                    gh=np.zeros((nq, N)), g=np.empty(i))
        self._layout = (loop, P, work)
        from ocdl.engine.native.compiled import _lock

        with _lock():  # compiled (or loaded from numba's cache) at the engine's signature, under the file lock
            theta = self.flat(self.base)
            E, g = float(self._flat(theta, True, True)), torch.from_numpy(work["g"].copy())
            self.compiled_armijo({"gtol": 0.0, "c": 1e-4, "rho": 0.5, "alpha_max": 1.0, "max_backtracks": 1})(
                theta, E, g, 1.0, 0)
        return self._layout

    def _flat(self, theta, want_grad, fresh):
        loop, P, w = self._layout
        th = np.ascontiguousarray(theta.detach().numpy())
        return loop.value_grad(th, want_grad, fresh, P, w["Y0"], w["c"], w["states"], w["stages"], w["pN"], w["gW"],
                               w["gK"], w["gb"], w["gh"], w["g"])

    def compiled_armijo(self, opts):
        """The compiled gd-armijo block of :func:`ocdl.engine.native.loop.armijo` for
        :func:`~ocdl.engine.torch.optim.optimise`, or None (no compiled flat objective here):
        ``block(θ, E, g, α_prev, n)`` → (θ, E, g, α_prev, done, status, E's, ‖g‖'s, steps,
        objective evaluations, gradient evaluations), nothing of the run changed."""
        if self.layout() is None:
            return None
        loop, P, w = self._layout
        args = (float(opts["gtol"]), float(opts["c"]), float(opts["rho"]), float(opts["alpha_max"]),
                int(opts["max_backtracks"]))

        def block(theta, E, g, alpha_prev, n):
            th, gg = theta.detach().numpy().copy(), g.detach().numpy().copy()
            hist = np.empty((3, n))
            out = loop.armijo(th, float(E), gg, float(alpha_prev), int(n), *args, P, w["Y0"], w["c"], w["states"],
                              w["stages"], w["pN"], w["gW"], w["gK"], w["gb"], w["gh"], np.empty_like(th),
                              np.empty_like(th), hist[0], hist[1], hist[2])
            E_, alpha, done, status, evals, grads = out
            return (torch.from_numpy(th), float(E_), torch.from_numpy(gg), float(alpha), int(done), int(status),
                    hist[:, :done], int(evals), int(grads))

        return block

    def value(self, theta) -> float:
        if self.layout() is not None:
            self.evals += 1
            E = self._flat(theta, False, True)
            self._last = (theta, None, None)
            return float(E)
        self.evals += 1
        params = self.unflat(theta)
        comp = self.compiled()
        states, stages = comp.forward(params, self.Y0, store=self.stores_stages())
        self._last = (theta, states, stages)
        return comp.finish(params, states, self.c, self.Y0.shape[1])[0]

    def value_grad(self, theta):
        if self.layout() is not None:
            self.grads += 1
            last = getattr(self, "_last", None)
            E = self._flat(theta, True, not (last is not None and last[0] is theta))
            self._last = None
            return float(E), torch.from_numpy(self._layout[2]["g"].copy())
        self.grads += 1
        params = self.unflat(theta)
        last = getattr(self, "_last", None)
        states, stages = (last[1], last[2]) if last is not None and last[0] is theta else (None, None)
        E, g = self.compiled().value_grad(params, self.Y0, self.c, self.gradient, states=states, stages=stages,
                                          keep_stages=self.stores_stages())
        self._last = None
        return float(E), self.flat(g)

    def curvature(self, theta, gauss_newton: bool = False):
        """v ↦ ∇²E(θ) v (or G v) by the compiled second-order sweeps
        (:class:`ocdl.engine.native.curvature.Curvature`)."""
        from ocdl.engine.native.curvature import Curvature

        return Curvature(self, theta, gauss_newton, keep_stages=self.keep_stages)

    def batch_value_grad(self, theta, idx):
        if idx is None:
            return self.value_grad(theta)
        self.grads += 1
        params = self.unflat(theta)
        prob = self.net.problem
        Yb, cb = self.Y0[:, idx], self.c[..., idx]
        L, g = self.compiled(data=True).value_grad(params, Yb, cb, self.gradient, keep_stages=self.stores_stages())
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
