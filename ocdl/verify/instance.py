"""The problem instance a verification runs on: a Problem, its data batch and seeded controls.

States follow the column convention of :mod:`ocdl.fields`: a batch is Y ∈ R^{d×m} (samples are
columns). The classifier and loss are those of :mod:`ocdl.problem`:

    E = Σ_n ℓ(z_n, c_n) [/ m] + R,   z = W y^[N] + μ,   p^[N] = ∂E/∂y^[N] = Wᵀ ℓ'(z) [/ m]

(two classes: W ∈ R^d, z_n and ℓ'(z_n) scalars; K ≥ 3 classes: W ∈ R^{K×d}, z_n, ℓ'(z_n) ∈ R^K
against the one-hot targets e_{c_n}).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ocdl import data as data_mod, fields, loss as loss_mod, problem as problem_mod, regulariser, xp as xp_mod
from ocdl.errors import OcdlError
from ocdl.problem import Problem

#: Families whose layers are Runge–Kutta steps of an ODE y' = f(y, u) (everything but 'net').
ODE_FAMILIES = tuple(k for k, v in problem_mod.PRESETS.items() if v.layer == "rk")


def build_problem(base: Problem | None = None, *, tableau: str | None = None, layers: int | None = None,
                  h: float | None = None, T: float | None = None, data: str | None = None,
                  n: int | None = None, controls: str | None = None, seed: int | None = None,
                  family: str | None = None, activation: str | None = None,
                  width: int | None = None, allow_inconsistent: bool = False) -> Problem:
    """A verification problem: ``base`` (default: family rk, rk4, 15 layers, h = 0.1, spiral with
    40 points, tanh, squared loss, no regulariser) with the given entries replaced. ``seed`` seeds
    both the data and the controls. ``tableau`` is a registry name or a .toml/.json file. An
    inconsistent tableau (Σ b_i ≠ 1: ODE order 0, no continuous problem to compare with) is refused
    unless ``allow_inconsistent`` or the base problem's ``network.allow_inconsistent``."""
    if base is None:
        base = Problem(
            data=problem_mod.DataSpec(name="spiral", n=40),
            network=problem_mod.NetworkSpec(family="rk", tableau="rk4", layers=15, h=0.1),
        )
    if tableau is not None and Path(tableau).suffix.lower() in (".toml", ".json"):
        if not Path(tableau).is_file():
            raise OcdlError(f"tableau file {tableau!r} does not exist")
    rep = {}
    for key, val in (("tableau", tableau), ("layers", layers), ("controls", controls),
                     ("family", family), ("activation", activation), ("width", width)):
        if val is not None:
            rep[f"network__{key}"] = val
    if h is not None and T is not None:
        raise OcdlError("give the step h or the final time T, not both")
    if h is not None:
        rep["network__h"], rep["network__T"] = float(h), None
    elif T is not None:
        rep["network__T"], rep["network__h"] = float(T), None
    if data is not None:
        rep["data__name"] = data
    if n is not None:
        rep["data__n"] = int(n)
    if seed is not None:
        rep["data__seed"] = int(seed)
        rep["init__seed"] = int(seed)
    prob = base.replace(**rep) if rep else base
    if not prob.has_skip:
        raise OcdlError(f"verify: family {prob.family!r} has no ODE (no skip connection); use one of {', '.join(ODE_FAMILIES)}")
    if not prob.tableau.explicit:
        raise OcdlError(f"verify: tableau {prob.tableau.name!r} is implicit; verify runs explicit tableaux only")
    try:
        problem_mod.check_consistent(prob, allow_inconsistent, hint="`ocdl verify commutation --allow-inconsistent` "
                                                                    "checks its gradients anyway")
    except OcdlError as e:
        raise OcdlError(f"verify: {e}") from None
    return prob


@dataclass
class Instance:
    """A problem at fixed parameters: Y0 (d×m), labels c (m,: class numbers 0 … K−1), float64
    parameters (NumPy; K = 2 classes when W is a vector, :func:`ocdl.problem.dims`)."""

    problem: Problem
    Y0: np.ndarray
    c: np.ndarray
    params: dict
    _net: object = field(default=None, repr=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def make(cls, problem: Problem, params: dict | None = None) -> "Instance":
        """The problem's training set (mapped to the width by the problem's lifting, as a solve
        sees it) and (unless given) its seeded initial parameters."""
        from ocdl import api

        train, _ = api.lifted_data(problem)
        d = problem.width(train.dim)
        Y0 = np.ascontiguousarray(data_mod.lift(train.X, d).T)
        K = problem_mod.classes(problem, train)
        if params is None:
            params = problem_mod.init_params(problem, d, K)
        params = problem_mod.check_params(problem, params, d, K=K)
        return cls(problem, Y0, train.c.copy(), params)

    # ------------------------------------------------------------------ shapes and data
    @property
    def d(self) -> int:
        return self.Y0.shape[0]

    @property
    def m(self) -> int:
        return self.Y0.shape[1]

    @property
    def K(self) -> int:
        """The number of classes (2: the logistic hypothesis, W a vector)."""
        return problem_mod.dims(self.params)[1]

    @property
    def N(self) -> int:
        return self.problem.N

    @property
    def tableau(self):
        return self.problem.tableau

    @property
    def field(self):
        """The vector field f(y, u) evaluated with NumPy."""
        return fields.make(self.problem.field, self.problem.activation, xp_mod.NUMPY)

    def times(self) -> np.ndarray:
        """Layer times t_0 = 0, t_{j+1} = t_j + h_j."""
        return np.concatenate([[0.0], np.cumsum(self.params["h"])])

    def control(self, j: int, i: int = 0):
        """(K, β) of stage i of layer j (per-layer controls: the same for every stage)."""
        K, beta = self.params["K"][j], self.params["beta"][j]
        if self.problem.per_stage:
            return K[i], beta[i]
        return K, beta

    # ------------------------------------------------------------------ the PyTorch engine
    @property
    def net(self):
        """The :class:`~ocdl.engine.torch.network.TorchNetwork` of the problem (CPU, float64)."""
        if self._net is None:
            from ocdl.engine.torch.network import TorchNetwork

            self._net = TorchNetwork(self.problem, self.d, device="cpu", dtype="float64", classes=self.K)
        return self._net

    def torch_args(self):
        """(params, Y0, c) as torch tensors for the engine (c as the loss takes it: the labels, or
        the one-hot K × m targets)."""
        net = self.net
        return net.to_torch(self.params), net.tensor(self.Y0), net.targets(self.c)

    def forward_stages(self):
        """The discrete forward sweep of the engine: states y^[0..N] and, per layer, the stage
        values (Y_i, F_i, Z_i, S_i) — all NumPy d×m arrays."""
        import torch

        net = self.net
        params, Y0, _ = self.torch_args()
        states, layers = [self.Y0], []
        y = Y0
        with torch.no_grad():
            for u, h in zip(net.controls(params), net.steps(params)):
                Ys, Fs, Zs, Ss = net.stages(u, y, h)
                layers.append(tuple([t.numpy() for t in lst] for lst in (Ys, Fs, Zs, Ss)))
                y = net.step(u, y, h)
                states.append(y.numpy())
        return states, layers

    # ------------------------------------------------------------------ objective pieces
    def terminal(self, yN: np.ndarray):
        """(E_loss, p^[N], {∂E/∂W, ∂E/∂μ}) at the final states yN (d×m)."""
        prob = self.problem
        W, mu = self.params["W"], self.params["mu"]
        kind = prob.objective.loss
        scale = 1.0 / self.m if prob.objective.mean else 1.0
        K = self.K
        if K == 2:
            z = W @ yN + mu
            E = float(loss_mod.pointwise(kind, z, self.c, xp_mod.NUMPY).sum() * scale)
            g = loss_mod.dpointwise(kind, z, self.c, xp_mod.NUMPY) * scale
            return E, np.outer(W, g), {"W": yN @ g, "mu": np.array(g.sum())}
        z = W @ yN + mu[:, None]  # K × m
        e = np.eye(K)[:, self.c.astype(np.int64)]  # the one-hot targets
        E = float(loss_mod.pointwise(kind, z, e, xp_mod.NUMPY, K).sum() * scale)
        g = loss_mod.dpointwise(kind, z, e, xp_mod.NUMPY, K) * scale  # ∂E/∂z, K × m
        return E, W.T @ g, {"W": g @ yN.T, "mu": g.sum(1)}

    def assemble(self, gK, gb, gh, classifier: dict) -> dict:
        """The gradient over the trained keys: the control parts, the classifier part and ∇R."""
        grads = {"K": gK, "beta": gb, "h": gh, **classifier}
        out = {k: np.asarray(grads[k], dtype=np.float64) for k in self.problem.trainable()}
        for k, v in regulariser.gradient(self.problem, self.params).items():
            out[k] = out[k] + v
        return out
