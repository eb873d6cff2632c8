"""The discrete optimal control problem of training, described once as plain data.

Every engine (PyTorch, CasADi) reads the same :class:`Problem`. With samples x_n ∈ R^d
(zero-padded from the data's dimension to the width d), the network is

    y_n^[0] = x_n,   y_n^[j+1] = Ψ_j(y_n^[j]; u_j, h_j),   j = 0, …, N−1,

where Ψ_j is one step of size h_j of the Runge–Kutta method (A, b, c) applied to y' = f(y, u):

    family "rk", "resnet", "odenet", "odenet-simplex":  f(y, (K, β)) = σ(K y + β)
    family "monotone":                                  f(y, (K, β)) = −Kᵀ σ(K y + β)
    family "net" (no skip connection):                  Ψ_j(y) = σ(K_j y + β_j)

Controls u are (K, β) per layer (shared by the stages) or per stage. The objective is

    E = Σ_n loss(W y_n^[N] + μ, c_n) [/ n if mean] + R,
    squared:  loss(z, c) = ½ (S(z) − c)²,   S(z) = 1/(1+e^{−z}) (the logistic hypothesis)
    logistic: loss(z, c) = log(1 + e^z) − c z   (cross-entropy, computed stably)
    R = Σ_{θ∈{K,β,W,μ,h}} (α_θ/2) ‖θ‖² + (α_s/2) Σ_j ‖u_{j+1} − u_j‖² / h̄,   h̄ = T/N.

Parameter arrays (column convention y ← y + h σ(K y + β)): ``K`` (N, d, d) or (N, s, d, d),
``beta`` (N, d) or (N, s, d), ``W`` (d,), ``mu`` (), ``h`` (N,).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ocdl import activations, tableau as tableau_mod
from ocdl.errors import OcdlError

FAMILIES = ("net", "resnet", "rk", "odenet", "odenet-simplex", "monotone")
CONTROLS = ("per-layer", "per-stage")
TIME_STEPS = ("fixed", "learned", "simplex")
LOSSES = ("squared", "logistic")
PARAM_KEYS = ("K", "beta", "W", "mu", "h")
BACKENDS = ("torch", "casadi")
SOLVERS = {"torch": ("gd-armijo", "gd-lipschitz", "lbfgs", "adam"), "casadi": ("ipopt", "sqp", "bvp")}
DATASETS = ("donut1d", "donut2d", "spiral", "squares", "file")

# family -> (forced tableau or None, default time steps)
_FAMILY_DEFAULTS = {
    "net": ("euler", "fixed"),
    "resnet": ("euler", "fixed"),
    "rk": (None, "fixed"),
    "odenet": ("euler", "learned"),
    "odenet-simplex": ("euler", "simplex"),
    "monotone": (None, "fixed"),
}


@dataclass(frozen=True)
class DataSpec:
    """A data set: one of :data:`DATASETS`; ``n`` training and ``n_test`` test samples (two
    independent draws), Gaussian ``noise`` (None: the data set's default), ``seed``; for
    ``name = "file"`` a CSV/NPZ ``path`` (and optional ``test_path``)."""

    name: str = "spiral"
    n: int = 1000
    n_test: int | None = None
    noise: float | None = None
    seed: int = 0
    path: str | None = None
    test_path: str | None = None


@dataclass(frozen=True)
class NetworkSpec:
    """The network: family, tableau (registry name or file path), N layers, step h or final
    time T (T = N h), width d (None: the data's dimension), activation, control layout and
    time-step treatment (None: the family's default)."""

    family: str = "rk"
    tableau: str = "rk4"
    layers: int = 15
    h: float | None = None
    T: float | None = None
    width: int | None = None
    activation: str = "tanh"
    controls: str = "per-layer"
    time_steps: str | None = None


@dataclass(frozen=True)
class ClassifierSpec:
    """Classifier W, μ. ``trainable = False`` fixes them; ``W``/``mu`` set their (initial)
    values (None: drawn by the init rule)."""

    trainable: bool = True
    W: tuple | None = None
    mu: float | None = None


@dataclass(frozen=True)
class ObjectiveSpec:
    """Loss and regulariser weights (see the module docstring)."""

    loss: str = "squared"
    mean: bool = False
    tikhonov: Mapping = field(default_factory=lambda: {k: 0.0 for k in PARAM_KEYS})
    smooth: float = 0.0


@dataclass(frozen=True)
class InitSpec:
    """Initial parameters: K ~ scale_K·N(0,1); β ~ N(0,1) ("normal") or 0 ("zero");
    W ~ N(0,1); μ ~ U(0,1) ("uniform") or 0 ("zero"); h = T/N. All drawn from ``seed``."""

    K: str = "normal"
    scale_K: float = 1.0
    beta: str = "normal"
    W: str = "normal"
    mu: str = "uniform"
    seed: int = 0


@dataclass(frozen=True)
class SolverSpec:
    """Engine and optimiser; ``options`` holds solver-specific settings (tol, lr, …)."""

    backend: str = "torch"
    name: str = "gd-armijo"
    iterations: int = 1000
    options: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """One training problem: data, network, classifier, objective, init and solver."""

    data: DataSpec = field(default_factory=DataSpec)
    network: NetworkSpec = field(default_factory=NetworkSpec)
    classifier: ClassifierSpec = field(default_factory=ClassifierSpec)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    init: InitSpec = field(default_factory=InitSpec)
    solver: SolverSpec = field(default_factory=SolverSpec)
    dtype: str = "float64"
    device: str = "cpu"

    def __post_init__(self):
        validate(self)

    # ------------------------------------------------------------ derived quantities
    @property
    def family(self) -> str:
        return self.network.family

    @property
    def tableau(self) -> tableau_mod.Tableau:
        forced, _ = _FAMILY_DEFAULTS[self.network.family]
        name = forced or self.network.tableau
        return _tableau_from(name)

    @property
    def activation(self) -> activations.Activation:
        return activations.get(self.network.activation)

    @property
    def time_steps(self) -> str:
        return self.network.time_steps or _FAMILY_DEFAULTS[self.network.family][1]

    @property
    def N(self) -> int:
        return self.network.layers

    @property
    def T(self) -> float:
        net = self.network
        if net.T is not None:
            return float(net.T)
        h = net.h if net.h is not None else _default_h(net)
        return float(h * net.layers)

    @property
    def h(self) -> float:
        """The nominal (initial, or fixed) step h̄ = T/N."""
        return self.T / self.N

    @property
    def per_stage(self) -> bool:
        return self.network.controls == "per-stage"

    @property
    def n_stages(self) -> int:
        return self.tableau.s

    def width(self, input_dim: int = 2) -> int:
        return int(self.network.width or input_dim)

    def trainable(self) -> tuple[str, ...]:
        """The trained parameter keys, in the canonical order K, beta, W, mu, h."""
        keys = ["K", "beta"]
        if self.classifier.trainable:
            keys += ["W", "mu"]
        if self.time_steps != "fixed" and self.family != "net":
            keys.append("h")
        return tuple(keys)

    def param_shapes(self, d: int) -> dict[str, tuple]:
        N, s = self.N, self.n_stages
        if self.per_stage and self.family != "net":
            return {"K": (N, s, d, d), "beta": (N, s, d), "W": (d,), "mu": (), "h": (N,)}
        return {"K": (N, d, d), "beta": (N, d), "W": (d,), "mu": (), "h": (N,)}

    def tikhonov(self) -> dict[str, float]:
        w = {k: 0.0 for k in PARAM_KEYS}
        w.update({k: float(v) for k, v in dict(self.objective.tikhonov).items()})
        return w

    def is_well_posed(self) -> bool:
        """True when every trained parameter carries a positive Tikhonov weight."""
        w = self.tikhonov()
        return all(w[k] > 0 for k in self.trainable())

    def replace(self, **sections) -> "Problem":
        """A copy with whole sections or ``section__field`` entries replaced."""
        out: dict[str, Any] = {}
        for key, val in sections.items():
            if "__" in key:
                sec, fld = key.split("__", 1)
                base = out.get(sec, getattr(self, sec))
                out[sec] = dataclasses.replace(base, **{fld: val})
            else:
                out[key] = val
        return dataclasses.replace(self, **out)

    # ------------------------------------------------------------ plain data
    def to_dict(self) -> dict:
        """A TOML-ready dict (None entries dropped) that :func:`from_dict` reads back."""

        def clean(x):
            if dataclasses.is_dataclass(x):
                return {k: clean(v) for k, v in dataclasses.asdict(x).items() if v is not None}
            if isinstance(x, Mapping):
                return {k: clean(v) for k, v in x.items() if v is not None}
            if isinstance(x, tuple):
                return list(x)
            return x

        return {
            "dtype": self.dtype,
            "device": self.device,
            **{name: clean(getattr(self, name)) for name in _SECTIONS},
        }


_SECTIONS = {
    "data": DataSpec,
    "network": NetworkSpec,
    "classifier": ClassifierSpec,
    "objective": ObjectiveSpec,
    "init": InitSpec,
    "solver": SolverSpec,
}


def _default_h(net: NetworkSpec) -> float:
    return 0.1 if net.family in ("rk", "monotone") else 1.0 / net.layers


def _tableau_from(name: str) -> tableau_mod.Tableau:
    if name.endswith((".toml", ".json")):
        return tableau_mod.load(name)
    return tableau_mod.get(name)


def _where(source: str | None, key: str) -> str:
    return f"{source}: {key}" if source else key


def _check_type(val, typ, key, source):
    ok = {
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        bool: lambda v: isinstance(v, bool),
        dict: lambda v: isinstance(v, Mapping),
        tuple: lambda v: isinstance(v, (list, tuple)),
    }[typ]
    if not ok(val):
        raise OcdlError(f"{_where(source, key)}: expected {typ.__name__}, got {type(val).__name__} {val!r}")
    if typ is float:
        return float(val)
    if typ is tuple:
        return tuple(val)
    return val


_FIELD_TYPES = {
    "data": {"name": str, "n": int, "n_test": int, "noise": float, "seed": int, "path": str, "test_path": str},
    "network": {
        "family": str, "tableau": str, "layers": int, "h": float, "T": float, "width": int,
        "activation": str, "controls": str, "time_steps": str,
    },
    "classifier": {"trainable": bool, "W": tuple, "mu": float},
    "objective": {"loss": str, "mean": bool, "tikhonov": dict, "smooth": float},
    "init": {"K": str, "scale_K": float, "beta": str, "W": str, "mu": str, "seed": int},
    "solver": {"backend": str, "name": str, "iterations": int, "options": dict},
}


def from_dict(d: Mapping, source: str | None = None) -> Problem:
    """Build and validate a Problem from plain data (a parsed TOML file or ``to_dict`` output).

    Unknown keys, wrong types and impossible combinations raise :class:`OcdlError` naming the
    key (prefixed by ``source``, e.g. the file name)."""
    if not isinstance(d, Mapping):
        raise OcdlError(f"{source or 'problem'}: expected a table")
    top_allowed = set(_SECTIONS) | {"dtype", "device"}
    for key in d:
        if key not in top_allowed:
            raise OcdlError(f"{_where(source, key)}: unknown key; allowed: {', '.join(sorted(top_allowed))}")
    kwargs: dict[str, Any] = {}
    for sec, cls in _SECTIONS.items():
        raw = d.get(sec, {})
        if not isinstance(raw, Mapping):
            raise OcdlError(f"{_where(source, sec)}: expected a table [{sec}]")
        types = _FIELD_TYPES[sec]
        vals = {}
        for key, val in raw.items():
            if key not in types:
                raise OcdlError(
                    f"{_where(source, f'{sec}.{key}')}: unknown key; allowed: {', '.join(types)}"
                )
            vals[key] = _check_type(val, types[key], f"{sec}.{key}", source)
        if sec == "objective" and "tikhonov" in vals:
            tk = {}
            for k, v in vals["tikhonov"].items():
                if k not in PARAM_KEYS:
                    raise OcdlError(
                        f"{_where(source, f'objective.tikhonov.{k}')}: unknown key; allowed: {', '.join(PARAM_KEYS)}"
                    )
                tk[k] = _check_type(v, float, f"objective.tikhonov.{k}", source)
            vals["tikhonov"] = tk
        if sec == "classifier" and "W" in vals:
            vals["W"] = tuple(_check_type(v, float, "classifier.W[]", source) for v in vals["W"])
        kwargs[sec] = cls(**vals)
    for key in ("dtype", "device"):
        if key in d:
            kwargs[key] = _check_type(d[key], str, key, source)
    try:
        return Problem(**kwargs)
    except OcdlError as e:
        if source and not str(e).startswith(source):
            raise OcdlError(f"{source}: {e}") from None
        raise


def _choice(val, allowed, key):
    if val not in allowed:
        raise OcdlError(f"{key}: {val!r} is not one of {', '.join(map(str, allowed))}")


def validate(p: Problem) -> None:
    """Raise OcdlError for a value out of range or an impossible combination."""
    data, net, obj, sol = p.data, p.network, p.objective, p.solver
    _choice(data.name, DATASETS, "data.name")
    if data.n < 2:
        raise OcdlError(f"data.n: need at least 2 samples, got {data.n}")
    if data.n_test is not None and data.n_test < 1:
        raise OcdlError(f"data.n_test: must be positive, got {data.n_test}")
    if data.noise is not None and not (np.isfinite(data.noise) and data.noise >= 0):
        raise OcdlError(f"data.noise: must be a finite number ≥ 0, got {data.noise}")
    if data.name == "file" and not data.path:
        raise OcdlError("data.path: required when data.name = 'file'")
    _choice(net.family, FAMILIES, "network.family")
    _choice(net.controls, CONTROLS, "network.controls")
    if net.time_steps is not None:
        _choice(net.time_steps, TIME_STEPS, "network.time_steps")
    activations.get(net.activation)
    if net.layers < 1:
        raise OcdlError(f"network.layers: must be ≥ 1, got {net.layers}")
    for key in ("h", "T"):
        v = getattr(net, key)
        if v is not None and not (np.isfinite(v) and v > 0):
            raise OcdlError(f"network.{key}: must be a finite number > 0, got {v}")
    if net.h is not None and net.T is not None and abs(net.h * net.layers - net.T) > 1e-12 * net.T:
        raise OcdlError(f"network: h = {net.h} and T = {net.T} disagree for {net.layers} layers (T = N h)")
    if net.width is not None and net.width < 1:
        raise OcdlError(f"network.width: must be ≥ 1, got {net.width}")
    forced, default_ts = _FAMILY_DEFAULTS[net.family]
    ts = net.time_steps or default_ts
    if net.family == "odenet-simplex" and ts != "simplex":
        raise OcdlError(f"network: family 'odenet-simplex' needs time_steps 'simplex', got {ts!r}")
    if net.family == "odenet" and ts == "fixed":
        raise OcdlError("network: family 'odenet' learns its time steps; use 'resnet' for fixed steps")
    if net.family in ("resnet",) and ts != "fixed":
        raise OcdlError("network: family 'resnet' has fixed steps; use 'odenet' for learned ones")
    if net.family == "net" and ts != "fixed":
        raise OcdlError("network: family 'net' has no time steps to learn")
    tab = _tableau_from(forced or net.tableau)
    if ts == "simplex" and net.family not in ("odenet-simplex", "rk", "monotone"):
        raise OcdlError(f"network: time_steps 'simplex' is not available for family {net.family!r}")
    if net.family == "net" and net.controls == "per-stage":
        raise OcdlError("network: family 'net' has no stages; use controls 'per-layer'")
    del tab
    _choice(obj.loss, LOSSES, "objective.loss")
    for k, v in dict(obj.tikhonov).items():
        if k not in PARAM_KEYS:
            raise OcdlError(f"objective.tikhonov.{k}: unknown parameter; allowed: {', '.join(PARAM_KEYS)}")
        if not (np.isfinite(v) and v >= 0):
            raise OcdlError(f"objective.tikhonov.{k}: must be a finite number ≥ 0, got {v}")
    if not (np.isfinite(obj.smooth) and obj.smooth >= 0):
        raise OcdlError(f"objective.smooth: must be a finite number ≥ 0, got {obj.smooth}")
    init = p.init
    _choice(init.K, ("normal", "zero"), "init.K")
    _choice(init.beta, ("normal", "zero"), "init.beta")
    _choice(init.W, ("normal", "zero"), "init.W")
    _choice(init.mu, ("uniform", "normal", "zero"), "init.mu")
    if not (np.isfinite(init.scale_K) and init.scale_K >= 0):
        raise OcdlError(f"init.scale_K: must be a finite number ≥ 0, got {init.scale_K}")
    cl = p.classifier
    if cl.W is not None and not all(np.isfinite(cl.W)):
        raise OcdlError("classifier.W: entries must be finite")
    if cl.W is not None and net.width is not None and len(cl.W) != net.width:
        raise OcdlError(f"classifier.W: has {len(cl.W)} entries but the width is {net.width}")
    if cl.mu is not None and not np.isfinite(cl.mu):
        raise OcdlError("classifier.mu: must be finite")
    _choice(sol.backend, BACKENDS, "solver.backend")
    _choice(sol.name, SOLVERS[sol.backend], f"solver.name (backend {sol.backend!r})")
    if sol.iterations < 0:
        raise OcdlError(f"solver.iterations: must be ≥ 0, got {sol.iterations}")
    _choice(p.dtype, ("float64", "float32"), "dtype")
    if not (p.device == "cpu" or p.device.startswith("cuda")):
        raise OcdlError(f"device: {p.device!r} is not 'cpu' or 'cuda[:i]'")


def init_params(problem: Problem, d: int) -> dict[str, np.ndarray]:
    """Seeded initial parameters (float64 NumPy arrays) — the same numbers for every engine.

    Draw order (fixed): K, β, W, μ from ``numpy.random.default_rng(init.seed)``."""
    rng = np.random.default_rng(problem.init.seed)
    shapes = problem.param_shapes(d)
    ini = problem.init
    K = rng.standard_normal(shapes["K"]) * ini.scale_K if ini.K == "normal" else np.zeros(shapes["K"])
    beta = rng.standard_normal(shapes["beta"]) if ini.beta == "normal" else np.zeros(shapes["beta"])
    W = rng.standard_normal(d) if ini.W == "normal" else np.zeros(d)
    if ini.mu == "uniform":
        mu = np.array(rng.uniform(0.0, 1.0))
    elif ini.mu == "normal":
        mu = np.array(rng.standard_normal())
    else:
        mu = np.array(0.0)
    cl = problem.classifier
    if cl.W is not None:
        if len(cl.W) != d:
            raise OcdlError(f"classifier.W: has {len(cl.W)} entries but the width is {d}")
        W = np.array(cl.W, dtype=np.float64)
    if cl.mu is not None:
        mu = np.array(float(cl.mu))
    h = np.full(problem.N, problem.h)
    return {"K": K, "beta": beta, "W": W, "mu": mu, "h": h}


def check_params(problem: Problem, params: Mapping[str, np.ndarray], d: int, source: str = "parameters") -> dict:
    """Validate shapes and finiteness of a parameter set; returns float64 copies."""
    shapes = problem.param_shapes(d)
    out = {}
    for key in PARAM_KEYS:
        if key not in params:
            raise OcdlError(f"{source}: missing key {key!r} (need {', '.join(PARAM_KEYS)})")
        arr = np.asarray(params[key], dtype=np.float64)
        if arr.shape != shapes[key]:
            raise OcdlError(f"{source}: {key} has shape {arr.shape}, expected {shapes[key]}")
        if not np.all(np.isfinite(arr)):
            raise OcdlError(f"{source}: {key} contains NaN or inf")
        out[key] = arr.copy()
    if problem.time_steps == "simplex":
        h = out["h"]
        if np.any(h < -1e-12) or abs(h.sum() - problem.T) > 1e-8 * max(1.0, problem.T):
            raise OcdlError(f"{source}: h is not on the simplex {{h ≥ 0, Σh = {problem.T}}}")
    return out
