"""Trained networks checked against the monotone-σ estimate.

For the discrete flow x ↦ y_j(x) of a trained network (layers j = 0…N, inputs lifted to width d)
we measure two empirical Lipschitz constants:

    over the data:       max_{pairs n≠k} ‖y_j(x_n) − y_j(x_k)‖ / ‖x_n − x_k‖   (random pairs)
    local (inputs):      max_n ‖∂y_j/∂x (x_n)‖₂   (Jacobian by central differences, h_fd = 1e-5)

(the second is the largest growth of a small input perturbation, over every direction). They are
set beside

    the estimate: a monotone network (f = −Kᵀσ(Ky+β)) with forward-Euler layers is non-expansive,
        Lipschitz ≤ 1, whenever h_j L ‖K_j‖² ≤ 2 in every layer (other tableaux: the measured
        limits of :mod:`.discrete`; the guarantee here is Euler's);
    an a-priori bound for any family: Π_j ℓ_j with ℓ_j = 1 + Σ_{k=1}^{s} (h_j M_j)^k |b|ᵀ|A|^{k−1} 1,
        M_j = L‖K_j‖ (σ(Ky+β)) or L‖K_j‖² (monotone) the Lipschitz constant of f (net: ℓ_j = L‖K_j‖).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ocdl import data as data_mod, fields, rundir
from ocdl.problem import Problem

FD_STEP = 1e-5


def load_run(run_dir: str | Path):
    """(problem, params, train set) of a run directory (via :func:`ocdl.rundir.load`); parameters
    that do not fit the run's own problem are refused with one line naming params.npz."""
    from ocdl.problem import check_params

    problem, params, _ = rundir.load(run_dir)
    train, _ = data_mod.make(problem.data)
    params = check_params(problem, params, problem.width(train.dim), source=f"{str(Path(run_dir) / 'params.npz')!r}")
    return problem, params, train


def states(problem: Problem, params, X: np.ndarray, engine: str = "torch") -> np.ndarray:
    """y_j(x_n) for every layer and sample: (N+1, m, d), by ``engine``'s forward sweep."""
    from ocdl import api

    return api.states(problem, params, X, engine)


def local_lipschitz(problem: Problem, params, X: np.ndarray, h_fd: float = FD_STEP) -> np.ndarray:
    """‖∂y_j/∂x (x_n)‖₂ for every layer and sample, (N+1, m): central differences along each
    input coordinate (x ∈ R^dim, lifted), then the spectral norm of each d×dim Jacobian."""
    m, dim = X.shape
    cols = []
    for k in range(dim):
        e = np.zeros(dim)
        e[k] = h_fd
        cols.append((states(problem, params, X + e) - states(problem, params, X - e)) / (2 * h_fd))
    J = np.stack(cols, axis=-1)  # (N+1, m, d, dim)
    return np.linalg.norm(J, ord=2, axis=(2, 3))


def pairwise_lipschitz(problem: Problem, params, X: np.ndarray, pairs: int = 4000, seed: int = 0) -> np.ndarray:
    """max over random pairs of ‖y_j(x_n) − y_j(x_k)‖ / ‖x_n − x_k‖ for every layer: (N+1,)."""
    rng = np.random.default_rng(seed)
    m = X.shape[0]
    a, b = rng.integers(0, m, pairs), rng.integers(0, m, pairs)
    keep = np.linalg.norm(X[a] - X[b], axis=1) > 1e-12
    a, b = a[keep], b[keep]
    Y = states(problem, params, X)
    return (np.linalg.norm(Y[:, a] - Y[:, b], axis=2) / np.linalg.norm(X[a] - X[b], axis=1)).max(axis=1)


def layer_bounds(problem: Problem, params, d: int) -> dict:
    """Per layer: h_j, ‖K_j‖₂ (max over stages), x_j = h_j ‖K_j‖², the Euler condition
    h_j L‖K_j‖² ≤ 2, and the a-priori Lipschitz bound ℓ_j of the layer."""
    from ocdl.problem import check_params

    prm = check_params(problem, params, d)
    act = problem.activation
    L = act.L
    K = prm["K"]
    normK = np.linalg.norm(K, ord=2, axis=(-2, -1))
    if normK.ndim == 2:  # per-stage controls
        normK = normK.max(axis=1)
    h = prm["h"]
    tab = problem.tableau
    M = fields.FIELDS[problem.field].lipschitz(L, normK)  # ‖∂_y f‖₂ ≤ M_j
    if not problem.has_skip:
        ell = M
    else:
        absA, absb = np.abs(tab.A), np.abs(tab.b)
        terms, v = [], np.ones(tab.s)
        for k in range(1, tab.s + 1):
            terms.append(absb @ v)
            v = absA @ v
        ell = 1.0 + sum(c * (h * M) ** k for k, c in enumerate(terms, start=1))
    return {"h": h, "normK": normK, "x": h * normK**2, "euler_condition": h * L * normK**2 <= 2.0, "ell": ell}


def check(problem: Problem, params, X: np.ndarray, pairs: int = 4000, seed: int = 0) -> dict:
    """Everything of the module docstring for one trained network on the points X."""
    if problem.dtype != "float64":
        problem = problem.replace(dtype="float64")
    d = problem.width(X.shape[1])
    lb = layer_bounds(problem, params, d)
    local = local_lipschitz(problem, params, X)
    pair = pairwise_lipschitz(problem, params, X, pairs, seed)
    monotone = problem.field == "monotone" and problem.has_skip
    euler = problem.tableau.name == "euler"
    guaranteed = bool(monotone and euler and problem.activation.monotone and lb["euler_condition"].all())
    if not monotone:
        why = f"family {problem.family!r}: the estimate is for the monotone family only"
    elif not problem.activation.monotone:
        why = f"σ = {problem.activation.name!r} is not monotone"
    elif not euler:
        why = f"tableau {problem.tableau.name!r}: proven step condition only for Euler (see `ocdl stability discrete`)"
    elif not lb["euler_condition"].all():
        j = int(np.argmax(lb["x"]))
        why = f"layer {j}: h L‖K‖² = {lb['x'][j] * problem.activation.L:.3g} > 2"
    else:
        why = "monotone σ, Euler layers with h L‖K‖² ≤ 2 in every layer"
    return {
        "family": problem.family,
        "tableau": problem.tableau.name,
        "sigma": problem.activation.name,
        "layers": problem.N,
        "width": d,
        "points": int(X.shape[0]),
        "lipschitz_local": float(local[-1].max()),
        "lipschitz_local_all_layers": float(local.max()),
        "lipschitz_pairs": float(pair[-1]),
        "estimate": 1.0 if guaranteed else None,
        "estimate_holds": guaranteed,
        "estimate_note": why,
        "estimate_violated": bool(guaranteed and local.max() > 1.0 + 1e-6),
        "a_priori_bound": float(np.prod(lb["ell"])),
        "max_h_L_normK2": float((lb["x"] * problem.activation.L).max()),
        "layer_x_L": lb["x"] * problem.activation.L,
        "growth_per_layer": local.max(axis=1),
        "pairs_per_layer": pair,
    }


def json_view(result: dict) -> dict:
    out = dict(result)
    for k in ("growth_per_layer", "pairs_per_layer", "layer_x_L"):
        out[k] = [float(x) for x in result[k]]
    return out


def pair_problem(base: Problem | None = None, iterations: int = 400) -> tuple[Problem, Problem]:
    """The ResNet (y ← y + hσ(Ky+β)) and its monotone variant (y ← y − hKᵀσ(Ky+β)) trained for
    the comparison: spiral (200 points), 10 Euler layers, h = 0.1, width 2, tanh, small Tikhonov
    terms, gradient descent with Armijo steps, the same seeded initial parameters."""
    from ocdl.problem import from_dict

    if base is None:
        base = from_dict({
            "data": {"name": "spiral", "n": 200, "seed": 0},
            "network": {"family": "rk", "tableau": "euler", "layers": 10, "h": 0.1, "width": 2, "activation": "tanh"},
            "objective": {"tikhonov": {"K": 1e-3, "beta": 1e-3, "W": 1e-3, "mu": 1e-3}},
            "solver": {"name": "gd-armijo", "iterations": iterations},
        })
    return base.replace(network__family="rk"), base.replace(network__family="monotone")


def train_pair(iterations: int = 400) -> list[dict]:
    """Train both networks of :func:`pair_problem` (:func:`ocdl.training.train`, no run directory)
    and check each on its training points. Returns [resnet check, monotone check] with the
    final objective and accuracies added."""
    from ocdl import training

    out = []
    for prob in pair_problem(iterations=iterations):
        res, metrics = training.train(prob, out=None, quiet=True)
        train, _ = data_mod.make(prob.data)
        r = check(prob, res.params, train.X)
        r.update({k: metrics[k] for k in ("objective", "train_accuracy", "test_accuracy")})
        r["iterations"] = iterations
        out.append(r)
    return out
