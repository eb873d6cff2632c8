"""A :class:`~ocdl.problem.Problem`'s network as CasADi functions of ONE sample, and the layout of
the trained parameters in a flat vector θ.

Per sample (column convention, y ∈ R^d), with u = (vec_row(K), β) ∈ R^{d²+d}:

    field(y, u, t)      f(y, u) of the family (:mod:`ocdl.fields`, the same formula as PyTorch)
    layer(y, U, h, t)   one layer Ψ: an RK step of f (:mod:`.discretisation`), or for family 'net'
                        Ψ(y) = σ(K y + β) (no skip, no h)
    loss(y, W, μ, c)    ℓ(W·y + μ, c) (:mod:`ocdl.loss`); divided by m for a mean loss
    dloss(y, W, μ, c)   ∂ℓ/∂z (the terminal costate is p^[N] = Wᵀ ∂ℓ/∂z)

Two classes: W ∈ R^d, μ and the label c ∈ {0, 1} scalars, z = W·y + μ. K ≥ 3 classes: W the
K×d matrix flattened row-major (C order, as θ holds it: entry k·d + i is W_{k,i}), μ ∈ R^K, c the
one-hot target e_c ∈ R^K, z = W y + μ ∈ R^K and ∂ℓ/∂z ∈ R^K.

θ holds the trained keys of ``problem.trainable()`` in that order, each flattened in C order
(K row-major, as in NumPy); untrained keys stay constants taken from the given parameters.
The regulariser is :func:`ocdl.regulariser.value` evaluated on CasADi scalars.
"""

from __future__ import annotations

import casadi as ca
import numpy as np

from ocdl import fields, loss as loss_mod, regulariser, xp as xp_mod
from ocdl.engine.casadi.discretisation import RKScheme
from ocdl.errors import OcdlError
from ocdl.problem import PARAM_KEYS, Problem


class _CasadiXP:
    """``ocdl.xp.casadi()`` plus ``affine`` for one sample (K y + β), which the fields need."""

    def __init__(self):
        self._base = xp_mod.casadi()

    def __getattr__(self, name):
        return getattr(self._base, name)

    @staticmethod
    def affine(K, Y, beta):
        return ca.mtimes(K, Y) + ca.repmat(beta, 1, Y.shape[1])


def casadi_xp():
    base = xp_mod.casadi()
    return base if hasattr(base, "affine") else _CasadiXP()


class ParamLayout:
    """Offsets of the trained keys in θ, and the packing/unpacking of NumPy parameter dicts."""

    def __init__(self, problem: Problem, d: int, classes: int = 2):
        self.problem, self.d, self.K = problem, d, int(classes)
        self.keys = problem.trainable()
        self.shapes = problem.param_shapes(d, self.K)
        self.slices, off = {}, 0
        for k in self.keys:
            n = int(np.prod(self.shapes[k], dtype=int))
            self.slices[k] = slice(off, off + n)
            off += n
        self.size = off

    def pack(self, params) -> np.ndarray:
        return np.concatenate([np.asarray(params[k], dtype=np.float64).reshape(-1) for k in self.keys])

    def unpack(self, theta, base=None) -> dict:
        """A full parameter dict: trained keys from θ, the others copied from ``base``."""
        theta = np.asarray(theta, dtype=np.float64).reshape(-1)
        out = {k: np.array(base[k], dtype=np.float64) for k in PARAM_KEYS if base is not None and k not in self.keys}
        for k in self.keys:
            out[k] = theta[self.slices[k]].reshape(self.shapes[k]).copy()
        return out

    def symbolic(self, theta, base) -> dict:
        """Per key, a NumPy object array of CasADi scalars (trained, from θ) or floats (fixed).
        ``mu`` of two classes is given shape (1,) so that ``.sum()`` works on it."""
        out = {}
        for k in PARAM_KEYS:
            shape = self.shapes[k] if k != "mu" or self.K != 2 else (1,)
            arr = np.empty(int(np.prod(shape, dtype=int)), dtype=object)
            if k in self.keys:
                sl = self.slices[k]
                for i in range(arr.size):
                    arr[i] = theta[sl.start + i]
            else:
                arr[:] = np.asarray(base[k], dtype=np.float64).reshape(-1)
            out[k] = arr.reshape(shape)
        return out


class CasadiNetwork:
    """The per-sample CasADi functions of a problem's network (see the module docstring)."""

    def __init__(self, problem: Problem, d: int, classes: int = 2):
        self.problem, self.d, self.K = problem, d, int(classes)
        self.layout = ParamLayout(problem, d, self.K)
        self.has_skip = problem.has_skip
        self.N = problem.N
        self.tableau = problem.tableau
        self.s = self.tableau.s if self.has_skip else 1
        self.per_stage = problem.per_stage and self.has_skip
        self.nu = d * d + d
        xp = casadi_xp()
        fld = fields.make(problem.field, problem.activation, xp)
        y, u, t = ca.SX.sym("y", d), ca.SX.sym("u", self.nu), ca.SX.sym("t")
        K, beta = self.K_beta(u)
        self.field = ca.Function("field", [y, u, t], [fld(y, K, beta)[0]], ["y", "u", "t"], ["f"])
        if not self.has_skip:
            self.scheme = None
            U, h = ca.SX.sym("U", self.nu, 1), ca.SX.sym("h")
            Ku, bu = self.K_beta(U[:, 0])
            self.layer = ca.Function("layer", [y, U, h, t], [fld(y, Ku, bu)[0]], ["y", "U", "h", "t"], ["y_next"])
        else:
            self.scheme = RKScheme(self.field, self.tableau, d, self.nu)
            if self.scheme.explicit:
                U, h, E = ca.SX.sym("U", self.nu, self.s), ca.SX.sym("h"), ca.SX.zeros(d, self.s)
                self.layer = ca.Function(
                    "layer", [y, U, h, t], [self.scheme.step(y, U, h, t, E)[0]], ["y", "U", "h", "t"], ["y_next"]
                )
            else:
                self.stages = implicit_stages(self.scheme)
                yy, UU, hh, tt = ca.MX.sym("y", d), ca.MX.sym("U", self.nu, self.s), ca.MX.sym("h"), ca.MX.sym("t")
                y_next = self.scheme.update(yy, self.stages(yy, UU, hh, tt), hh)
                self.layer = ca.Function("layer", [yy, UU, hh, tt], [y_next], ["y", "U", "h", "t"], ["y_next"])
        K = self.K
        if K == 2:
            W, mu, c = ca.SX.sym("W", d), ca.SX.sym("mu"), ca.SX.sym("c")
            z = ca.dot(W, y) + mu
        else:  # W row-major in θ: reshape (column-major) to d×K gives Wᵀ
            W, mu, c = ca.SX.sym("W", K * d), ca.SX.sym("mu", K), ca.SX.sym("c", K)
            z = ca.mtimes(ca.reshape(W, d, K).T, y) + mu
        kind = problem.objective.loss
        self.loss = ca.Function("loss", [y, W, mu, c], [loss_mod.pointwise(kind, z, c, xp, K)], ["y", "W", "mu", "c"], ["l"])
        self.dloss = ca.Function("dloss", [y, W, mu, c], [loss_mod.dpointwise(kind, z, c, xp, K)], ["y", "W", "mu", "c"], ["dl"])

    # ------------------------------------------------------------------ labels
    def targets(self, c) -> np.ndarray:
        """The labels as the loss takes them, one column per sample: c (1 × m) for two classes,
        the one-hot e_c (K × m) for K; labels outside 0 … K−1 are refused with one line."""
        c = np.asarray(c, dtype=np.float64).reshape(-1)
        if self.K == 2:
            return c.reshape(1, -1)
        idx = c.astype(np.int64)
        if not (np.all(idx == c) and np.all((idx >= 0) & (idx < self.K))):
            bad = c[(idx != c) | (idx < 0) | (idx >= self.K)][0]
            raise OcdlError(f"data: label {bad:g} is not a class number 0 … {self.K - 1}")
        return np.eye(self.K)[:, idx]

    def terminal_costate(self, W, dl) -> np.ndarray:
        """p^[N] = Wᵀ ∂ℓ/∂z per sample (m × d) from W (θ's entries, flat) and ∂ℓ/∂z (nc × m)."""
        W, dl = np.asarray(W, dtype=np.float64).reshape(-1), np.asarray(dl, dtype=np.float64)
        if self.K == 2:
            return dl.reshape(-1)[:, None] * W[None, :]
        return dl.T @ W.reshape(self.K, self.d)

    # ------------------------------------------------------------------ parameters in θ
    def K_beta(self, u):
        """(K, β) from u = (vec_row(K), β)."""
        d = self.d
        return ca.reshape(u[: d * d], d, d).T, u[d * d:]

    def controls(self, theta, j: int):
        """U_j (nu × s) of layer j as slices of θ (K and β are always trained); per-layer
        controls are one column, which ``map`` and the step functions repeat for every stage."""
        L, d = self.layout, self.d
        oK, ob = L.slices["K"].start, L.slices["beta"].start
        if self.per_stage:
            s = self.s
            cols = [ca.vertcat(theta[oK + (j * s + i) * d * d: oK + (j * s + i + 1) * d * d],
                               theta[ob + (j * s + i) * d: ob + (j * s + i + 1) * d]) for i in range(s)]
            return ca.horzcat(*cols)
        u = ca.vertcat(theta[oK + j * d * d: oK + (j + 1) * d * d], theta[ob + j * d: ob + (j + 1) * d])
        return ca.repmat(u, 1, self.s)

    def fixed_or_trained(self, theta, key, base):
        """The CasADi entries of ``key`` (from θ if trained, else the constants of ``base``)."""
        if key in self.layout.keys:
            sl = self.layout.slices[key]
            return theta[sl]
        return ca.DM(np.asarray(base[key], dtype=np.float64).reshape(-1))

    def regulariser_function(self, base) -> ca.Function:
        """R(θ) (SX), :func:`ocdl.regulariser.value` evaluated on CasADi scalars."""
        th = ca.SX.sym("theta", self.layout.size)
        R = regulariser.value(self.problem, self.layout.symbolic(th, base))
        return ca.Function("R", [th], [ca.SX(0) + R], ["theta"], ["R"])

    def regulariser_gradient_function(self, base) -> ca.Function:
        """∇R(θ) in θ's layout (SX), :func:`ocdl.regulariser.gradient` on CasADi scalars."""
        th = ca.SX.sym("theta", self.layout.size)
        g = regulariser.gradient(self.problem, self.layout.symbolic(th, base))
        parts = [ca.vertcat(*[ca.SX(0) + x for x in np.asarray(g[k]).reshape(-1)]) for k in self.layout.keys]
        return ca.Function("gradR", [th], [ca.vertcat(*parts)], ["theta"], ["gR"])


def implicit_stages(scheme: RKScheme) -> ca.Function:
    """(y, U, h, t) -> F: the stage slopes of an implicit step, the stage equations solved by
    Newton's method from F_i = f(y) (derivatives by the implicit function theorem)."""
    nx, nu, s = scheme.nx, scheme.nu, scheme.s
    y, U, h, t = ca.SX.sym("y", nx), ca.SX.sym("U", nu, s), ca.SX.sym("h"), ca.SX.sym("t")
    F = ca.SX.sym("F", nx * s)
    res = ca.Function("g", [F, ca.vertcat(y, ca.vec(U), h, t)], [ca.vec(scheme.residual(y, ca.reshape(F, nx, s), U, h, t))])
    rf = ca.rootfinder("stages", "newton", res, {"abstol": 1e-15, "max_iter": 50, "error_on_fail": True})
    yy, UU, hh, tt = ca.MX.sym("y", nx), ca.MX.sym("U", nu, s), ca.MX.sym("h"), ca.MX.sym("t")
    Fs = rf(ca.repmat(scheme.f(yy, UU[:, 0], tt), s, 1), ca.vertcat(yy, ca.vec(UU), hh, tt))
    return ca.Function("stages", [yy, UU, hh, tt], [ca.reshape(Fs, nx, s)], ["y", "U", "h", "t"], ["F"])


def compiled(fn: ca.Function, jit: bool) -> ca.Function:
    """``fn`` (an SX function), compiled to machine code by CasADi's JIT with the system C compiler
    when ``jit`` (the same function, evaluated ~5× faster than by CasADi's virtual machine)."""
    if not jit:
        return fn
    # Sources and objects go to a private temporary folder (never the user's working directory),
    # removed as a whole at exit (a loaded .so may be unlinked on POSIX).
    opts = {"jit": True, "compiler": "shell", "jit_cleanup": False,
            "jit_options": {"flags": ["-O1"], "verbose": False, "directory": _jit_directory() + "/", "cleanup": False}}
    return ca.Function(fn.name(), fn.sx_in(), fn.call(fn.sx_in()), fn.name_in(), fn.name_out(), opts)


_JIT_DIR: list = []


def _jit_directory() -> str:
    if not _JIT_DIR:
        import atexit
        import shutil
        import tempfile

        d = tempfile.mkdtemp(prefix="ocdl-jit-")
        atexit.register(shutil.rmtree, d, ignore_errors=True)
        _JIT_DIR.append(d)
    return _JIT_DIR[0]


def jit_available() -> bool:
    import shutil

    return shutil.which("cc") is not None or shutil.which("gcc") is not None
