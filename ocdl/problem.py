"""The discrete optimal control problem of training, described once as plain data.

Every engine (PyTorch, CasADi) reads the same :class:`Problem`. With samples x_n ∈ R^d
(zero-padded from the data's dimension to the width d), the network is

    y_n^[0] = x_n,   y_n^[j+1] = Ψ_j(y_n^[j]; u_j, h_j),   j = 0, …, N−1,

and the network is four independent choices (:class:`NetworkSpec`):

    field       the vector field f (:mod:`ocdl.fields`): "sigma"  f(y, (K, β)) = σ(K y + β),
                "monotone"  f(y, (K, β)) = −Kᵀ σ(K y + β)
    layer       "rk": Ψ_j is one step of size h_j of the Runge–Kutta method (A, b, c) for
                y' = f(y, u) (a skip connection); "plain": Ψ_j(y) = f(y, u_j) (none)
    time_steps  h_j "fixed" (= T/N), "learned", or learned on the "simplex" {h ≥ 0, Σ h = T}
    controls    u = (K, β) "per-layer" (shared by the stages) or "per-stage"

The paper's networks are presets of these (``family``):

    net             plain layer, σ field                     resnet   Euler, fixed steps
    rk              any tableau, fixed steps (the default)   odenet   Euler, learned steps
    odenet-simplex  Euler, simplex steps                     monotone the −Kᵀσ field, any tableau

The objective is E = Σ_n loss(W y_n^[N] + μ, c_n) [/ n if mean] + R (:mod:`ocdl.loss`). For two
classes (labels c ∈ {0, 1}) W ∈ R^d, μ ∈ R and the hypothesis is the logistic S(z) = 1/(1+e^{−z}):

    squared:  loss(z, c) = ½ (S(z) − c)²
    logistic (= cross-entropy): loss(z, c) = log(1 + e^z) − c z   (computed stably)

For K ≥ 3 classes (labels c ∈ {0, …, K−1}, one-hot e_c) W ∈ R^{K×d}, μ ∈ R^K and the hypothesis
is softmax(z)_k = e^{z_k} / Σ_l e^{z_l}:

    squared:  loss(z, c) = ½ ‖softmax(z) − e_c‖²
    logistic (= cross-entropy): loss(z, c) = −log softmax(z)_c = logsumexp(z) − z_c

    R = Σ_{θ∈{K,β,W,μ,h}} (α_θ/2) ‖θ‖² + (α_s/2) Σ_j ‖u_{j+1} − u_j‖² / h̄,   h̄ = T/N.

Parameter arrays (column convention y ← y + h σ(K y + β)): ``K`` (N, d, d) or (N, s, d, d),
``beta`` (N, d) or (N, s, d), ``W`` (d,) or (K, d), ``mu`` () or (K,), ``h`` (N,).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ocdl import activations, loss as loss_mod, tableau as tableau_mod
from ocdl.errors import OcdlError

CONTROLS = ("per-layer", "per-stage")
TIME_STEPS = ("fixed", "learned", "simplex")
LAYERS = ("rk", "plain")
LOSSES = tuple(loss_mod.LOSSES)  # the built-in losses (validation reads the live table)
PARAM_KEYS = ("K", "beta", "W", "mu", "h")
DATASETS = ("donut1d", "donut2d", "spiral", "squares", "digits", "mnist", "file", "arrays")


@dataclass(frozen=True)
class Preset:
    """A named network (``family``): its vector field and layer form, the tableau it forces
    (None: any), the time-step treatments it allows (the first is the default), whether the field
    and the layer form may be changed, and its default step h (None: 1/N)."""

    field: str
    layer: str
    tableau: str | None
    time_steps: tuple
    h: float | None
    open_field: bool = True
    open_layer: bool = False


PRESETS = {
    "net": Preset("sigma", "plain", "euler", ("fixed",), None),
    "resnet": Preset("sigma", "rk", "euler", ("fixed",), None),
    "rk": Preset("sigma", "rk", None, TIME_STEPS, 0.1, open_layer=True),
    "odenet": Preset("sigma", "rk", "euler", ("learned",), None),
    "odenet-simplex": Preset("sigma", "rk", "euler", ("simplex",), None),
    "monotone": Preset("monotone", "rk", None, TIME_STEPS, 0.1, open_field=False),
}
FAMILIES = tuple(PRESETS)


@dataclass(frozen=True)
class DataSpec:
    """A data set: one of :data:`DATASETS`; ``n`` training and ``n_test`` test samples (two
    independent draws), Gaussian ``noise`` (None: the data set's default), ``seed``; for
    ``name = "file"`` a CSV/NPZ ``path`` (and optional ``test_path``); for the images
    (``digits``, ``mnist``, :mod:`ocdl.images`) ``n_per_class`` training images per class (None:
    all), ``path`` the folder of MNIST's IDX files; for ``name = "arrays"`` the in-memory
    :class:`ocdl.data.Dataset` ``train`` (and ``test``) of :meth:`Problem.from_arrays`."""

    name: str = "spiral"
    n: int = 1000
    n_test: int | None = None
    noise: float | None = None
    seed: int = 0
    path: str | None = None
    test_path: str | None = None
    n_per_class: int | None = None
    train: Any = field(default=None, repr=False)
    test: Any = field(default=None, repr=False)


@dataclass(frozen=True)
class NetworkSpec:
    """The network: a preset ``family`` (:data:`PRESETS`), tableau (a registry name, a file path,
    a :class:`~ocdl.tableau.Tableau` or a table {name, A, b, c}), N layers, step h or final time T
    (T = N h), width d (None: the data's dimension), activation, control layout, and the choices
    the preset leaves open: time-step treatment, vector ``field`` and ``layer`` form (None: the
    preset's). ``allow_inconsistent`` lets a solve train a Runge–Kutta network whose tableau is
    inconsistent (Σ b_i ≠ 1, ODE order 0), which :func:`check_consistent` refuses otherwise.
    ``lift``: the fixed map from the features to y^[0] (:mod:`ocdl.lifting`: "pad", the default,
    "random" with ``lift_seed`` (default 0), "pca")."""

    family: str = "rk"
    tableau: Any = "rk4"
    layers: int = 15
    h: float | None = None
    T: float | None = None
    width: int | None = None
    activation: str = "tanh"
    controls: str = "per-layer"
    time_steps: str | None = None
    field: str | None = None
    layer: str | None = None
    allow_inconsistent: bool | None = None
    lift: str | None = None
    lift_seed: int | None = None


@dataclass(frozen=True)
class ClassifierSpec:
    """Classifier W, μ. ``classes``: K (None: the training labels', 1 + the largest); two classes
    have the logistic hypothesis (W ∈ R^d), more the softmax (W ∈ R^{K×d}). ``trainable = False``
    fixes W, μ; ``W``/``mu`` set their (initial) values for two classes (None: drawn by the init
    rule)."""

    trainable: bool = True
    W: tuple | None = None
    mu: float | None = None
    classes: int | None = None


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
    """Engine (``backend``: a name of :func:`ocdl.engine`) and its solver ``name``;
    ``options`` holds the solver's settings (tol, lr, …; the engine declares them)."""

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
    def preset(self) -> Preset:
        return PRESETS[self.network.family]

    @property
    def field(self) -> str:
        """The vector field's name (:data:`ocdl.fields.FIELDS`)."""
        return self.network.field or self.preset.field

    @property
    def layer(self) -> str:
        """'rk' (a Runge–Kutta step of the field: a skip connection) or 'plain' (y ← f(y, u))."""
        return self.network.layer or self.preset.layer

    @property
    def has_skip(self) -> bool:
        """True for Runge–Kutta layers (an ODE behind the network), False for plain layers."""
        return self.layer == "rk"

    @property
    def tableau(self) -> tableau_mod.Tableau:
        """The Runge–Kutta method of the layers (Euler, one stage, for plain layers)."""
        if not self.has_skip:
            return tableau_mod.get("euler")
        return _tableau_from(self.preset.tableau or self.network.tableau)

    @property
    def activation(self) -> activations.Activation:
        return activations.get(self.network.activation)

    @property
    def time_steps(self) -> str:
        return self.network.time_steps or self.preset.time_steps[0]

    @property
    def N(self) -> int:
        return self.network.layers

    @property
    def T(self) -> float:
        net = self.network
        if net.T is not None:
            return float(net.T)
        h = net.h if net.h is not None else (self.preset.h or 1.0 / net.layers)
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
        if self.time_steps != "fixed" and self.has_skip:
            keys.append("h")
        return tuple(keys)

    def param_shapes(self, d: int, K: int = 2) -> dict[str, tuple]:
        """The parameter shapes for width d and K classes (W (d,), μ () for two)."""
        N, s = self.N, self.n_stages
        W, mu = ((d,), ()) if K == 2 else ((K, d), (K,))
        if self.per_stage and self.has_skip:
            return {"K": (N, s, d, d), "beta": (N, s, d), "W": W, "mu": mu, "h": (N,)}
        return {"K": (N, d, d), "beta": (N, d), "W": W, "mu": mu, "h": (N,)}

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
                return {f.name: clean(getattr(x, f.name)) for f in dataclasses.fields(x)
                        if getattr(x, f.name) is not None and f.name not in ("train", "test")}
            if isinstance(x, Mapping):
                return {k: clean(v) for k, v in x.items() if v is not None}
            if isinstance(x, tuple):
                return list(x)
            return x

        out = {"dtype": self.dtype, "device": self.device,
               **{name: clean(getattr(self, name)) for name in _SECTIONS}}
        tab = self.network.tableau
        if not isinstance(tab, str) or tab.endswith((".toml", ".json")):
            t = _tableau_from(tab)  # a user tableau is written inline: the run directory reruns anywhere
            out["network"]["tableau"] = {"name": t.name, **t.entries()}
        return out

    # ------------------------------------------------------------ from arrays
    @classmethod
    def from_arrays(cls, X, c, X_test=None, c_test=None, *, network: Mapping | None = None,
                    objective: Mapping | None = None, classifier: Mapping | None = None,
                    init: Mapping | None = None, solver: Mapping | None = None,
                    dtype: str = "float64", device: str = "cpu") -> "Problem":
        """A problem on a user's own data: ``X`` (n×dim finite floats) and labels ``c`` (n, the
        class numbers 0 … K−1, each present), optional test arrays (default: the training set). The sections
        are plain dicts of the problem-file keys; ``network.tableau`` may be a
        :class:`~ocdl.tableau.Tableau`; ``objective.tikhonov`` a number (every parameter) or a
        dict. Bad input raises :class:`OcdlError` with one line."""
        from ocdl import data as data_mod

        train = data_mod.from_arrays(X, c, "X, c")
        if train.n < 2:
            raise OcdlError(f"X, c: need at least 2 samples, got {train.n}")
        if (X_test is None) != (c_test is None):
            raise OcdlError("X_test, c_test: give both or neither")
        test = train if X_test is None else data_mod.from_arrays(X_test, c_test, "X_test, c_test")
        if test.dim != train.dim:
            raise OcdlError(f"X_test: has {test.dim} features but X has {train.dim}")
        if not isinstance(objective or {}, Mapping):
            raise OcdlError(f"objective: expected a dict of problem-file keys, got {type(objective).__name__}")
        obj = dict(objective or {})
        if "tikhonov" in obj and not isinstance(obj["tikhonov"], Mapping):
            obj["tikhonov"] = {k: obj["tikhonov"] for k in PARAM_KEYS}
        raw = {"network": network or {}, "objective": obj, "classifier": classifier or {},
               "init": init or {}, "solver": solver or {}, "dtype": dtype, "device": device}
        base = from_dict(raw, source="problem")
        prob = base.replace(data=DataSpec(name="arrays", n=train.n, n_test=test.n, train=train, test=test))
        classes(prob, train)
        return prob


_SECTIONS = {
    "data": DataSpec,
    "network": NetworkSpec,
    "classifier": ClassifierSpec,
    "objective": ObjectiveSpec,
    "init": InitSpec,
    "solver": SolverSpec,
}


def _tableau_from(spec) -> tableau_mod.Tableau:
    """A Tableau from a registry name, a .toml/.json file path, a Tableau, or a table {name, A, b, c}."""
    if isinstance(spec, tableau_mod.Tableau):
        return spec
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"name", "A", "b", "c"}
        if unknown or "A" not in spec or "b" not in spec:
            raise OcdlError("network.tableau: an inline tableau is a table with keys A, b (and name, c)")
        return tableau_mod.Tableau(spec["A"], spec["b"], spec.get("c"), name=str(spec.get("name", "user")))
    if not isinstance(spec, str):
        raise OcdlError(f"network.tableau: expected a name, a file, a Tableau or a table, got {type(spec).__name__}")
    if spec.endswith((".toml", ".json")):
        return tableau_mod.load(spec)
    return tableau_mod.get(spec)


def _key(key) -> str:
    """A key as written in a message: bare when it is a TOML bare key, else quoted (one line)."""
    return key if isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_\-]+", key) else repr(key)


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
        "tableau": lambda v: isinstance(v, (str, Mapping, tableau_mod.Tableau)),
    }[typ]
    if typ == "tableau":
        if not ok(val):
            raise OcdlError(f"{_where(source, key)}: expected a tableau name, file or table {{A, b}}, "
                            f"got {type(val).__name__} {val!r}")
        return dict(val) if isinstance(val, Mapping) else val
    if not ok(val):
        raise OcdlError(f"{_where(source, key)}: expected {typ.__name__}, got {type(val).__name__} {val!r}")
    if typ is float:
        return float(val)
    if typ is tuple:
        return tuple(val)
    return val


_FIELD_TYPES = {
    "data": {"name": str, "n": int, "n_test": int, "noise": float, "seed": int, "path": str, "test_path": str,
             "n_per_class": int},
    "network": {
        "family": str, "tableau": "tableau", "layers": int, "h": float, "T": float, "width": int,
        "activation": str, "controls": str, "time_steps": str, "field": str, "layer": str,
        "allow_inconsistent": bool, "lift": str, "lift_seed": int,
    },
    "classifier": {"trainable": bool, "W": tuple, "mu": float, "classes": int},
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
            raise OcdlError(f"{_where(source, _key(key))}: unknown key; allowed: {', '.join(sorted(top_allowed))}")
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
                    f"{_where(source, f'{sec}.{_key(key)}')}: unknown key; allowed: {', '.join(types)}"
                )
            vals[key] = _check_type(val, types[key], f"{sec}.{key}", source)
        if sec == "objective" and "tikhonov" in vals:
            tk = {}
            for k, v in vals["tikhonov"].items():
                if k not in PARAM_KEYS:
                    raise OcdlError(
                        f"{_where(source, f'objective.tikhonov.{_key(k)}')}: unknown key; allowed: {', '.join(PARAM_KEYS)}"
                    )
                tk[k] = _check_type(v, float, f"objective.tikhonov.{k}", source)
            vals["tikhonov"] = tk
        if sec == "network" and isinstance(vals.get("tableau"), Mapping):
            try:
                vals["tableau"] = _tableau_from(vals["tableau"])
            except OcdlError as e:
                raise OcdlError(f"{_where(source, 'network.tableau')}: {e}") from None
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
    if data.name == "mnist" and not data.path:
        raise OcdlError("data.path: required when data.name = 'mnist' (the folder of its four IDX files)")
    if data.n_per_class is not None and data.n_per_class < 1:
        raise OcdlError(f"data.n_per_class: must be ≥ 1, got {data.n_per_class}")
    if data.n_per_class is not None and data.name not in ("digits", "mnist"):
        raise OcdlError(f"data.n_per_class: applies to the image data sets digits and mnist, not to {data.name!r}")
    if data.name == "arrays" and data.train is None:
        raise OcdlError("data: name 'arrays' holds in-memory data; build it with Problem.from_arrays")
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
    from ocdl import lifting

    if net.lift is not None:
        _choice(net.lift, lifting.KINDS, "network.lift")
    _check_network_choices(net)
    _choice(obj.loss, tuple(loss_mod.LOSSES), "objective.loss")
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
    if cl.classes is not None and cl.classes < 2:
        raise OcdlError(f"classifier.classes: K must be ≥ 2, got {cl.classes}")
    if cl.classes is not None and cl.classes > 2 and (cl.W is not None or cl.mu is not None):
        raise OcdlError("classifier.W, classifier.mu: set them for two classes only (K-class W, μ come from "
                        "the init rule or --init)")
    from ocdl.engine import base as engines  # light: the engines' declarations only

    engines.get(sol.backend).check_solver(sol.name)
    if sol.iterations < 0:
        raise OcdlError(f"solver.iterations: must be ≥ 0, got {sol.iterations}")
    _choice(p.dtype, ("float64", "float32"), "dtype")
    if not (p.device == "cpu" or p.device.startswith("cuda")):
        raise OcdlError(f"device: {p.device!r} is not 'cpu' or 'cuda[:i]'")


def check_consistent(p: Problem, allow: bool = False, hint: str | None = None) -> None:
    """Refuse a Runge–Kutta network whose tableau is inconsistent (Σ b_i ≠ 1, so ODE order 0: its
    layers approximate no ODE, and no order or convergence statement holds), unless ``allow`` or
    ``network.allow_inconsistent``. ``hint`` says how to allow it (default: for training)."""
    if allow or p.network.allow_inconsistent or not p.has_skip:
        return
    tab = p.tableau
    if tab.consistent:
        return
    hint = hint or ("to train it anyway: --allow-inconsistent (ocdl train), network.allow_inconsistent = true "
                    "(a problem file, --set), allow_inconsistent=True (ocdl.solve)")
    raise OcdlError(f"network.tableau: tableau {tab.name!r} is inconsistent: Σ b_i = {tab.b_sum:.12g}, not 1 "
                    f"(ODE order 0: the layers approximate no ODE); {hint}")


def _check_network_choices(net: NetworkSpec) -> None:
    """The preset's constraints on the field, the layer form, the time steps and the controls."""
    from ocdl import fields

    fam, pre = net.family, PRESETS[net.family]
    if net.field is not None:
        _choice(net.field, tuple(fields.FIELDS), "network.field")
        if not pre.open_field and net.field != pre.field:
            raise OcdlError(f"network: family {fam!r} has field {pre.field!r}, got field {net.field!r} (use family 'rk')")
    if net.layer is not None:
        _choice(net.layer, LAYERS, "network.layer")
        if not pre.open_layer and net.layer != pre.layer:
            raise OcdlError(f"network: family {fam!r} has {pre.layer!r} layers, got layer {net.layer!r} (use family 'rk')")
    layer = net.layer or pre.layer
    ts = net.time_steps or pre.time_steps[0]
    if layer == "plain" and ts != "fixed":
        raise OcdlError(f"network: family {fam!r} has no time steps to learn" if fam == "net"
                        else "network: plain layers have no time steps to learn")
    if fam == "odenet-simplex" and ts != "simplex":
        raise OcdlError(f"network: family 'odenet-simplex' needs time_steps 'simplex', got {ts!r}")
    if fam == "odenet" and ts == "fixed":
        raise OcdlError("network: family 'odenet' learns its time steps; use 'resnet' for fixed steps")
    if fam == "resnet" and ts != "fixed":
        raise OcdlError("network: family 'resnet' has fixed steps; use 'odenet' for learned ones")
    if ts not in pre.time_steps:
        raise OcdlError(f"network: time_steps {ts!r} is not available for family {fam!r}")
    if layer == "rk":
        _tableau_from(pre.tableau or net.tableau)
    if layer == "plain" and net.controls == "per-stage":
        raise OcdlError(f"network: family {fam!r} has no stages; use controls 'per-layer'" if fam == "net"
                        else "network: plain layers have no stages; use controls 'per-layer'")


def classes(problem: Problem, train) -> int:
    """K for ``problem`` on the training set ``train`` (a :class:`ocdl.data.Dataset`):
    ``classifier.classes``, else 1 + the largest label. Refused with one line: labels outside
    0 … K−1, K larger than the labels' classes, a class without training samples (one class only)."""
    labels = np.unique(train.c)
    K_data = train.classes
    K = problem.classifier.classes or K_data
    if K_data > K:
        raise OcdlError(f"data: label {K_data - 1:g} is outside 0 … {K - 1} (classifier.classes = {K})")
    if K > K_data:
        raise OcdlError(f"classifier.classes: K = {K} is larger than the {K_data} classes of the training labels "
                        f"(0 … {K_data - 1})")
    if len(labels) < 2:
        raise OcdlError(f"data: the training labels hold one class only ({train.c[0]:g}); training needs at least two")
    if len(labels) < K:
        missing = sorted(set(range(K)) - {int(v) for v in labels})
        raise OcdlError(f"data: the training labels have no sample of class {', '.join(map(str, missing[:5]))}"
                        f"{' …' if len(missing) > 5 else ''} (labels are 0 … {K - 1}; every class needs samples)")
    return K


def dims(params: Mapping) -> tuple[int, int]:
    """(d, K) of a parameter set: the width d and the number of classes K (2 when W is a vector)."""
    W = np.shape(params["W"])
    return (int(W[-1]), 2 if len(W) == 1 else int(W[0]))


def init_params(problem: Problem, d: int, K: int = 2) -> dict[str, np.ndarray]:
    """Seeded initial parameters (float64 NumPy arrays) — the same numbers for every engine.

    Draw order (fixed): K, β, W, μ from ``numpy.random.default_rng(init.seed)``; for K classes
    W ∈ R^{K×d} and μ ∈ R^K are drawn by the same rules."""
    rng = np.random.default_rng(problem.init.seed)
    shapes = problem.param_shapes(d, K)
    ini = problem.init
    K_ = rng.standard_normal(shapes["K"]) * ini.scale_K if ini.K == "normal" else np.zeros(shapes["K"])
    beta = rng.standard_normal(shapes["beta"]) if ini.beta == "normal" else np.zeros(shapes["beta"])
    W = rng.standard_normal(shapes["W"]) if ini.W == "normal" else np.zeros(shapes["W"])
    if ini.mu == "uniform":
        mu = np.array(rng.uniform(0.0, 1.0, shapes["mu"] or None))
    elif ini.mu == "normal":
        mu = np.array(rng.standard_normal(shapes["mu"] or None))
    else:
        mu = np.zeros(shapes["mu"])
    cl = problem.classifier
    if K != 2 and (cl.W is not None or cl.mu is not None):
        raise OcdlError(f"classifier.W, classifier.mu: set them for two classes only (the data have {K})")
    if cl.W is not None:
        if len(cl.W) != d:
            raise OcdlError(f"classifier.W: has {len(cl.W)} entries but the width is {d}")
        W = np.array(cl.W, dtype=np.float64)
    if cl.mu is not None:
        mu = np.array(float(cl.mu))
    h = np.full(problem.N, problem.h)
    return {"K": K_, "beta": beta, "W": W, "mu": mu, "h": h}


def check_params(problem: Problem, params: Mapping[str, np.ndarray], d: int, source: str = "parameters",
                 K: int | None = None) -> dict:
    """Validate shapes and finiteness of a parameter set for width d and K classes (None: those
    of the given W); returns float64 copies."""
    if not isinstance(params, Mapping):
        raise OcdlError(f"{source}: expected a dict of arrays {', '.join(PARAM_KEYS)}, got {type(params).__name__}")
    if K is None:
        K = 2 if "W" not in params or np.ndim(params["W"]) != 2 else max(2, int(np.shape(params["W"])[0]))
    shapes = problem.param_shapes(d, K)
    out = {}
    for key in PARAM_KEYS:
        if key not in params:
            raise OcdlError(f"{source}: missing key {key!r} (need {', '.join(PARAM_KEYS)})")
        try:
            arr = np.asarray(params[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise OcdlError(f"{source}: {key} is not an array of numbers") from None
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
