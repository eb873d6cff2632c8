"""The forward sweep of a Runge–Kutta network in PyTorch, the objective, and autograd gradients.

One layer j (explicit tableau, step h_j, controls u_{j,i} = (K_{j,i}, β_{j,i}); per-layer
controls use the same u_j for every stage):

    F_i = f(Y_i, u_{j,i}),   Y_i = y^[j] + h_j Σ_{l<i} a_il F_l,   y^[j+1] = y^[j] + h_j Σ_i b_i F_i.

Plain layers have no skip connection: y^[j+1] = f(y^[j], u_j), e.g. σ(K_j y^[j] + β_j).
E(θ) = Σ_n ℓ(W y_n^[N] + μ, c_n) [/ n] + R(θ) (see :mod:`ocdl.loss`, :mod:`ocdl.regulariser`);
for K ≥ 3 classes z = W y^[N] + μ 1ᵀ is K×m and the labels are one-hot columns (:meth:`targets`).

Batches follow the column convention of :mod:`ocdl.fields`: Y ∈ R^{d×m}, samples are columns
(``inputs(X)`` turns an (m, 2) data array into the lifted d×m tensor).
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

    Parameters are dicts of tensors with the keys and shapes of :mod:`ocdl.problem`; states are
    d×m tensors (samples as columns). On the CPU, tanh runs the process's kernel (:mod:`ocdl.tanh`) in every path, autograd
    included (:mod:`ocdl.xp`); ``chosen_tanh=False`` runs torch.tanh instead.
    """

    def __init__(self, problem: Problem, d: int, device: str | None = None, dtype: str | None = None,
                 chosen_tanh: bool = True, classes: int = 2):
        self.problem = problem
        self.d = d
        self.K = int(classes)
        self.device = resolve_device(device or problem.device)
        self.dtype = DTYPES[dtype or problem.dtype]
        tab = problem.tableau
        if problem.has_skip and not tab.explicit:
            raise OcdlError(
                f"tableau {tab.name!r} is implicit; the PyTorch engine runs explicit tableaux only "
                "(use --backend casadi)"
            )
        self.tableau = tab
        self.s = tab.s
        # Coefficients as Python floats; zero entries are skipped in the sweeps.
        self.a = [[float(x) for x in row] for row in tab.A]
        self.b = [float(x) for x in tab.b]
        # per stage i, the (l, a_il) with a_il ≠ 0 (l < i): the terms of Y_i
        self.a_nz = [[(l, self.a[i][l]) for l in range(i) if self.a[i][l] != 0.0] for i in range(tab.s)]
        At = tab.partner_A
        # Partner coefficients for the backward sweep: P_i = p^[j+1] + h Σ_l (b_l − ã_il) J_lᵀ P_l.
        self.partner_coef = None if At is None else [[float(tab.b[l] - At[i, l]) for l in range(self.s)] for i in range(self.s)]
        self.xp = xp_mod.torch(chosen_tanh)  # chosen_tanh=False: torch.tanh (see ocdl.xp)
        self.field = fields.make(problem.field, problem.activation, self.xp)
        self.per_stage = problem.per_stage and problem.has_skip

    # ------------------------------------------------------------------ conversion
    def tensor(self, x) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)

    def to_torch(self, params: Mapping) -> dict[str, torch.Tensor]:
        return {k: self.tensor(params[k]) for k in PARAM_KEYS}

    @staticmethod
    def to_numpy(params: Mapping) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().astype(np.float64) for k, v in params.items()}

    def inputs(self, X: np.ndarray) -> torch.Tensor:
        """The d×m batch Y^[0]: data (m, dim) lifted to width d, transposed, on the device."""
        if not np.all(np.isfinite(X)):
            raise OcdlError("data: features contain NaN or inf")
        return self.tensor(np.ascontiguousarray(lift(np.asarray(X, dtype=np.float64), self.d).T))

    def targets(self, c) -> torch.Tensor:
        """The labels as the loss takes them: c (m,) for two classes, the one-hot e_c (K × m) for K."""
        c = np.asarray(c, dtype=np.float64)
        if self.K == 2:
            return self.tensor(c)
        return self.tensor(np.eye(self.K)[:, c.astype(np.int64)])

    @staticmethod
    def steps(params):
        """The step sizes h_j: Python floats (fast path) unless h is being differentiated."""
        h = params["h"]
        return list(h.unbind()) if h.requires_grad else h.tolist()

    # ------------------------------------------------------------------ forward
    def controls(self, params):
        """u[j][i] = (K, β) used by stage i of layer j (views, split once per sweep; β as a d×1
        column, ready to be broadcast over the samples)."""
        Ks, betas = params["K"].unbind(0), params["beta"].unsqueeze(-1).unbind(0)
        if self.per_stage:
            return [list(zip(K.unbind(0), b.unbind(0))) for K, b in zip(Ks, betas)]
        return [[(K, b)] * self.s for K, b in zip(Ks, betas)]

    def stages(self, u, y: torch.Tensor, h, want_Y: bool = True):
        """Stage values of one layer with controls u[i] (explicit tableau): lists Y_i, F_i, Z_i,
        S_i = σ(Z_i). With one (K, β) for every stage (per-layer controls) the pre-activations are
        formed without Y_i, Z_i = Z_1 + h Σ_l a_il K F_l (Z_1 = K y + β), one product per term;
        Y_i = y + h Σ_l a_il F_l is then formed only if ``want_Y`` (else Ys is None)."""
        if self.per_stage:
            Ys, Fs, Zs, Ss = [], [], [], []
            for ui, terms in zip(u, self.a_nz):
                Yi = y
                for l, a in terms:
                    Yi = _axpy(Yi, h * a, Fs[l])
                Fi, Zi, Si = self.field(Yi, *ui)
                Ys.append(Yi)
                Fs.append(Fi)
                Zs.append(Zi)
                Ss.append(Si)
            return Ys, Fs, Zs, Ss
        K, beta = u[0]
        field = self.field
        F0, Z0, S0 = field(y, K, beta)
        Fs, Zs, Ss = [F0], [Z0], [S0]
        for terms in self.a_nz[1:]:
            Zi = Z0
            for l, a in terms:
                Zi = _addmm(Zi, K, Fs[l], h * a)
            Fi, Si = field.at(Zi, K)
            Fs.append(Fi)
            Zs.append(Zi)
            Ss.append(Si)
        Ys = None
        if want_Y:
            Ys = [y]
            for terms in self.a_nz[1:]:
                Yi = y
                for l, a in terms:
                    Yi = _axpy(Yi, h * a, Fs[l])
                Ys.append(Yi)
        return Ys, Fs, Zs, Ss

    def step(self, u, y: torch.Tensor, h) -> torch.Tensor:
        """y^[j+1] from y^[j] with controls u = u[j] and step h = h_j."""
        if not self.problem.has_skip:
            return self.field(y, *u[0])[0]
        return self.update(y, h, self.stages(u, y, h, want_Y=False)[1])

    def update(self, y, h, Fs) -> torch.Tensor:
        """y + h Σ_i b_i F_i."""
        for i in range(self.s):
            if self.b[i] != 0.0:
                y = _axpy(y, h * self.b[i], Fs[i])
        return y

    def forward(self, params, Y0: torch.Tensor, keep_states: bool = False):
        """y^[N] (and, with ``keep_states``, the list y^[0], …, y^[N])."""
        y = Y0
        states = [y] if keep_states else None
        for u, h in zip(self.controls(params), self.steps(params)):
            y = self.step(u, y, h)
            if keep_states:
                states.append(y)
        return (y, states) if keep_states else y

    def sweep(self, params, Y0: torch.Tensor):
        """The layer states y^[0], …, y^[N] and the stage values (Y_i, F_i, Z_i, S_i) of the last
        layer (None for plain layers): what the adjoint sweep needs from the forward sweep."""
        states, last = [Y0], None
        u, hs = self.controls(params), self.steps(params)
        for j, (uj, h) in enumerate(zip(u, hs)):
            y = states[-1]
            if not self.problem.has_skip or j < len(u) - 1:
                states.append(self.step(uj, y, h))
            else:
                last = self.stages(uj, y, h, want_Y=False)
                states.append(self.update(y, h, last[1]))
        return states, last

    # ------------------------------------------------------------------ objective
    def logits(self, params, yN):
        """z = W y^[N] + μ for every sample (length m; K × m for K classes)."""
        if self.K == 2:
            return params["W"] @ yN + params["mu"]
        return torch.addmm(params["mu"][:, None], params["W"], yN)

    def data_loss(self, params, yN, c):
        z = self.logits(params, yN)
        E = loss_mod.pointwise(self.problem.objective.loss, z, c, self.xp, self.K).sum()
        if self.problem.objective.mean:
            E = E / yN.shape[1]
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
        """Fraction of samples classified right: [z > 0] = c for two classes, argmax_k z_k = c for K
        (``c`` as :meth:`targets` gives it)."""
        with torch.no_grad():
            z = self.logits(params, self.forward(params, Y0))
            if self.K == 2:
                return float(((z > 0).to(c.dtype) == c).to(torch.float64).mean())
            return float((z.argmax(0) == c.argmax(0)).to(torch.float64).mean())

    def predict(self, params, Y0) -> torch.Tensor:
        """The hypothesis at z = W y^[N] + μ: S(z), the probability of class 1 (m,), or softmax(z)
        (K × m)."""
        with torch.no_grad():
            return loss_mod.hypothesis(self.logits(params, self.forward(params, Y0)), self.xp, self.K)


def _addmm(Z, K, F, coef):
    """Z + coef·K F (one fused op when coef is a Python float)."""
    if isinstance(coef, float):
        return torch.addmm(Z, K, F, alpha=coef)
    return Z + coef * (K @ F)


def _axpy(y, coef, F):
    """y + coef·F (one fused op when coef is a Python float)."""
    if isinstance(coef, float):
        return torch.add(y, F, alpha=coef)
    return y + coef * F


def configure_threads(m: int, d: int, threads: int = 0) -> int:
    """Set torch's CPU threads: ``threads`` if > 0, else 1 for small batches (m·d ≤ 2·10⁵),
    where thread start-up and spin-waiting cost more than they give. Returns the number set."""
    n = threads if threads > 0 else (1 if m * d <= 200_000 else torch.get_num_threads())
    torch.set_num_threads(n)
    return n
