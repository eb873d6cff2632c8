"""The forward sweep of a Runge–Kutta network in PyTorch, the objective, and autograd gradients.

One layer j (explicit tableau, step h_j, controls u_{j,i} = (K_{j,i}, β_{j,i}); per-layer
controls use the same u_j for every stage):

    F_i = f(Y_i, u_{j,i}),   Y_i = y^[j] + h_j Σ_{l<i} a_il F_l,   y^[j+1] = y^[j] + h_j Σ_i b_i F_i.

Family 'net' has no skip connection: y^[j+1] = σ(K_j y^[j] + β_j).
E(θ) = Σ_n ℓ(W y_n^[N] + μ, c_n) [/ n] + R(θ) (see :mod:`ocdl.loss`, :mod:`ocdl.regulariser`).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from ocdl import fields, loss as loss_mod, regulariser, xp as xp_mod
from ocdl.data import lift
from ocdl.errors import OcdlError
from ocdl.problem import PARAM_KEYS, Problem

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def resolve_device(device: str) -> torch.device:
    """A torch device; 'cuda' without a GPU is refused with one clear line."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise OcdlError(f"device {device!r} requested but CUDA is not available on this machine")
    return torch.device(device)


class TorchNetwork:
    """A :class:`~ocdl.problem.Problem`'s network and objective on a torch device.

    Parameters are dicts of tensors with the keys and shapes of :mod:`ocdl.problem`.
    """

    def __init__(self, problem: Problem, d: int, device: str | None = None, dtype: str | None = None):
        self.problem = problem
        self.d = d
        self.device = resolve_device(device or problem.device)
        self.dtype = DTYPES[dtype or problem.dtype]
        tab = problem.tableau
        if problem.family != "net" and not tab.explicit:
            raise OcdlError(
                f"tableau {tab.name!r} is implicit; the PyTorch engine runs explicit tableaux only "
                "(use --backend casadi)"
            )
        self.tableau = tab
        self.s = tab.s
        # Coefficients as Python floats; zero entries are skipped in the sweeps.
        self.a = [[float(x) for x in row] for row in tab.A]
        self.b = [float(x) for x in tab.b]
        At = tab.partner_A
        # Partner coefficients for the backward sweep: P_i = p^[j+1] + h Σ_l (b_l − ã_il) J_lᵀ P_l.
        self.partner_coef = None if At is None else [[float(tab.b[l] - At[i, l]) for l in range(self.s)] for i in range(self.s)]
        self.xp = xp_mod.torch()
        self.field = fields.make(problem.family, problem.activation, self.xp)
        self.per_stage = problem.per_stage and problem.family != "net"

    # ------------------------------------------------------------------ conversion
    def tensor(self, x) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)

    def to_torch(self, params: Mapping) -> dict[str, torch.Tensor]:
        return {k: self.tensor(params[k]) for k in PARAM_KEYS}

    @staticmethod
    def to_numpy(params: Mapping) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().astype(np.float64) for k, v in params.items()}

    def inputs(self, X: np.ndarray) -> torch.Tensor:
        """Lift the data to width d and move it to the device."""
        if not np.all(np.isfinite(X)):
            raise OcdlError("data: features contain NaN or inf")
        return self.tensor(lift(np.asarray(X, dtype=np.float64), self.d))

    # ------------------------------------------------------------------ forward
    def controls(self, params, j: int, i: int):
        """(K, β) used by stage i of layer j."""
        if self.per_stage:
            return params["K"][j, i], params["beta"][j, i]
        return params["K"][j], params["beta"][j]

    def stages(self, params, j: int, y: torch.Tensor, h):
        """Stage values and slopes of layer j: lists Y_i, F_i, Z_i (explicit tableau)."""
        Ys, Fs, Zs = [], [], []
        for i in range(self.s):
            Yi = y
            for l in range(i):
                if self.a[i][l] != 0.0:
                    Yi = Yi + (h * self.a[i][l]) * Fs[l]
            K, beta = self.controls(params, j, i)
            Fi, Zi = self.field(Yi, K, beta)
            Ys.append(Yi)
            Fs.append(Fi)
            Zs.append(Zi)
        return Ys, Fs, Zs

    def step(self, params, j: int, y: torch.Tensor) -> torch.Tensor:
        """y^[j+1] from y^[j]."""
        if self.problem.family == "net":
            return self.problem.activation.sigma(y @ params["K"][j].T + params["beta"][j], self.xp)
        h = params["h"][j]
        _, Fs, _ = self.stages(params, j, y, h)
        incr = None
        for i in range(self.s):
            if self.b[i] != 0.0:
                term = self.b[i] * Fs[i]
                incr = term if incr is None else incr + term
        return y + h * incr

    def forward(self, params, Y0: torch.Tensor, keep_states: bool = False):
        """y^[N] (and, with ``keep_states``, the list y^[0], …, y^[N])."""
        y = Y0
        states = [y] if keep_states else None
        for j in range(self.problem.N):
            y = self.step(params, j, y)
            if keep_states:
                states.append(y)
        return (y, states) if keep_states else y

    # ------------------------------------------------------------------ objective
    def logits(self, params, yN):
        return yN @ params["W"] + params["mu"]

    def data_loss(self, params, yN, c):
        z = self.logits(params, yN)
        E = loss_mod.pointwise(self.problem.objective.loss, z, c, self.xp).sum()
        if self.problem.objective.mean:
            E = E / yN.shape[0]
        return E

    def objective(self, params, Y0, c) -> torch.Tensor:
        """E = loss + R (a scalar tensor; differentiable if the params require grad)."""
        yN = self.forward(params, Y0)
        return self.data_loss(params, yN, c) + regulariser.value(self.problem, params)

    def grad_autograd(self, params, Y0, c):
        """(E, ∇E over the trained keys) by reverse-mode autograd through the forward sweep."""
        keys = self.problem.trainable()
        leaves = {k: (v.detach().clone().requires_grad_(k in keys)) for k, v in params.items()}
        E = self.objective(leaves, Y0, c)
        grads = torch.autograd.grad(E, [leaves[k] for k in keys])
        return E.detach(), dict(zip(keys, grads))

    def accuracy(self, params, Y0, c) -> float:
        """Fraction of samples with [W y^[N] + μ > 0] = c."""
        with torch.no_grad():
            z = self.logits(params, self.forward(params, Y0))
            return float(((z > 0).to(c.dtype) == c).to(torch.float64).mean())

    def predict(self, params, Y0) -> torch.Tensor:
        """S(W y^[N] + μ), the predicted probability of class 1."""
        with torch.no_grad():
            return loss_mod.sigmoid(self.logits(params, self.forward(params, Y0)), self.xp)
