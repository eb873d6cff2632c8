"""The monotone-σ estimate for discrete flows: Runge–Kutta layers of y' = −Kᵀσ(Ky + β).

One layer is one step of an explicit tableau (A, b) (rows of Y are units, columns samples):

    Y_i = y + h Σ_l a_il F_l,   F_i = −Kᵀσ(K Y_i + β),   y⁺ = y + h Σ_i b_i F_i.

With σ' ∈ [0, L], one forward-Euler layer is non-expansive iff h L ‖K‖² ≤ 2 (the secant of σ
gives y⁺ − y^δ⁺ = (I − h Kᵀ D K)(y − y^δ), D diagonal in [0, L]). For every registry tableau we
measure, over seeded random cases and as a function of x = h‖K‖²,

    max over cases of ‖Ψ(y) − Ψ(y^δ)‖ / ‖y − y^δ‖            (one layer)
    max over cases and layers j ≤ N of ‖y_j − y_j^δ‖ / ‖y_0 − y_0^δ‖   (N layers, x = h max_j ‖K_j‖²)

and locate x* = the largest x up to which no case exceeds 1 + TOL (grid, then bisection), beside
the Euler bound 2/L and the tableau's linear limit r/L, where r = sup{r : |R(−x)| ≤ 1 on [0, r]}
for the stability function R(z) = 1 + z bᵀ(I − zA)⁻¹ 1 (the limit for σ affine with slope L).
"""

from __future__ import annotations

import numpy as np

from ocdl import activations, fields, rk, tableau as tableau_mod, xp as xp_mod
from ocdl.errors import OcdlError
from ocdl.stability.flows import BlockDiagonal
from ocdl.stability.monotone import TOL


def rk_step(tab: tableau_mod.Tableau, field, Y: np.ndarray, K, beta: np.ndarray, h) -> np.ndarray:
    """One layer: :func:`ocdl.rk.rk_step` for F = field(·, K, β)[0], a field of :mod:`ocdl.fields`
    (NumPy, Y (d, m)); ``h`` is a scalar or an array broadcasting against Y (a step per unit row)."""
    return rk.rk_step(lambda Yi: field(Yi, K, beta)[0], Y, h, tab)


def stability_function(tab: tableau_mod.Tableau, z: np.ndarray) -> np.ndarray:
    """R(z) = 1 + z bᵀ(I − zA)⁻¹ 1 at real points z; for explicit A (nilpotent) the polynomial
    1 + Σ_{k=1}^{s} z^k bᵀA^{k−1} 1."""
    z = np.atleast_1d(np.asarray(z, dtype=np.float64))
    s = tab.s
    if tab.explicit:
        R, v = np.ones_like(z), np.ones(s)
        for k in range(1, s + 1):
            R = R + z**k * (tab.b @ v)
            v = tab.A @ v
        return R
    return np.array([1.0 + zz * tab.b @ np.linalg.solve(np.eye(s) - zz * tab.A, np.ones(s)) for zz in z])


def linear_limit(tab: tableau_mod.Tableau, x_max: float = 10.0) -> float:
    """r = sup{r : |R(−x)| ≤ 1 for all x ∈ [0, r]} (grid of 10⁴ points, then bisection)."""
    xs = np.linspace(0.0, x_max, 10001)
    bad = np.abs(stability_function(tab, -xs)) > 1.0 + 1e-12
    if not bad.any():
        return float("inf")
    k = int(np.argmax(bad))
    lo, hi = xs[k - 1], xs[k]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if abs(stability_function(tab, [-mid])[0]) > 1.0 + 1e-12:
            hi = mid
        else:
            lo = mid
    return float(lo)


def draw_cases(cases: int, d: int, layers: int, seed: int = 0, eps: tuple = (1e-4, 1e-1)):
    """Seeded cases for the scan: K_j = κ G/√d (κ ~ U(0.5, 2)), states y ~ N(0, I), and β_j chosen
    so that z = K_j y + β_j lies near 0 (a third: where σ' peaks for tanh, sigmoid), spread as
    2 N(0,1) (a third) or at 3 + |N(0,1)| (a third: where σ' → L for relu, softplus). The
    perturbation is ε v with ε log-uniform in ``eps`` and v the top eigenvector of K_0ᵀK_0 (half)
    or a random unit vector (half). Returns K (B, N, d, d), β (B, N, d), y (B, d), y^δ (B, d)."""
    if cases < 1 or d < 1 or layers < 1:
        raise OcdlError(f"discrete: need cases, width and layers ≥ 1, got {cases}, {d}, {layers}")
    rng = np.random.default_rng(seed)
    B, N = cases, layers
    K = rng.uniform(0.5, 2.0, size=(B, 1, 1, 1)) * rng.standard_normal((B, N, d, d)) / np.sqrt(d)
    y = rng.standard_normal((B, d))
    mode = np.arange(B) % 3
    z0 = np.where(mode[:, None, None] == 0, 0.1 * rng.standard_normal((B, N, d)),
                  np.where(mode[:, None, None] == 1, 2.0 * rng.standard_normal((B, N, d)),
                           3.0 + np.abs(rng.standard_normal((B, N, d)))))
    beta = z0 - np.einsum("bnij,bj->bni", K, y)
    v = rng.standard_normal((B, d))
    top = np.linalg.eigh(np.einsum("bji,bjk->bik", K[:, 0], K[:, 0]))[1][:, :, -1]
    v = np.where((np.arange(B) % 2 == 0)[:, None], top, v)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    e = np.exp(rng.uniform(np.log(eps[0]), np.log(eps[1]), B))
    return K, beta, y, y + e[:, None] * v


def growth(tab, sigma, K, beta, y, yd, x) -> np.ndarray:
    """max_{j ≤ N} ‖y_j − y_j^δ‖ / ‖y_0 − y_0^δ‖ of every case (B,) at every x (n_x,): (n_x, B),
    with h = x / max_j ‖K_j‖² per case. All (x, case) pairs run as one block-diagonal batch."""
    act = activations.get(sigma)
    field = fields.MonotoneField(act, xp_mod.NUMPY)
    B, N, d, _ = K.shape
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    nx = len(x)
    normK2 = np.max(np.linalg.norm(K, ord=2, axis=(2, 3)) ** 2, axis=1)  # (B,)
    h = (x[:, None] / normK2[None, :]).reshape(-1)  # (n_x·B,)
    hrow = np.repeat(h, d)[:, None]
    Y = np.stack([np.tile(y, (nx, 1)), np.tile(yd, (nx, 1))], axis=-1).reshape(nx * B * d, 2)
    e0 = np.linalg.norm(yd - y, axis=1)
    worst = np.zeros(nx * B)
    for j in range(N):
        Kj = BlockDiagonal(np.tile(K[:, j], (nx, 1, 1)))
        Y = rk_step(tab, field, Y, Kj, np.tile(beta[:, j], (nx, 1)).ravel(), hrow)
        diff = (Y[:, 1] - Y[:, 0]).reshape(nx * B, d)
        worst = np.maximum(worst, np.linalg.norm(diff, axis=1) / np.tile(e0, nx))
    return worst.reshape(nx, B)


def largest_stable(tab, sigma, K, beta, y, yd, x_grid) -> tuple[float, np.ndarray]:
    """(x*, ratios (n_x, B) on the grid): x* is the largest x with no case above 1 + TOL on
    [0, x] (grid, then 40 bisection steps on the first violating interval; +inf if none)."""
    G = growth(tab, sigma, K, beta, y, yd, x_grid)
    bad = G.max(axis=1) > 1.0 + TOL
    if not bad.any():
        return float("inf"), G
    k = int(np.argmax(bad))
    if k == 0:
        return float(x_grid[0]), G
    lo, hi = x_grid[k - 1], x_grid[k]
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if growth(tab, sigma, K, beta, y, yd, [mid]).max() > 1.0 + TOL:
            hi = mid
        else:
            lo = mid
    return float(lo), G


def measure(tableau: str = "rk4", sigma: str = "tanh", cases: int = 200, d: int = 2, layers: int = 10,
            seed: int = 0, points: int = 241) -> dict:
    """The scan of one tableau: x* for one layer and for N layers, beside 2/L and r/L.

    Returns a JSON-ready dict (with the grid and curves under ``x``, ``one_layer.curve``,
    ``n_layers.curve``)."""
    tab = tableau_mod.get(tableau) if isinstance(tableau, str) else tableau
    act = activations.get(sigma)
    if not act.monotone or not np.isfinite(act.L) or act.L <= 0:
        raise OcdlError(f"discrete: σ = {act.name!r} is not monotone with finite sup σ' (the estimate needs both)")
    r = linear_limit(tab)
    euler = 2.0 / act.L
    x_max = 1.6 * max(euler, r / act.L)
    x = np.linspace(0.0, x_max, points)[1:]
    out = {"tableau": tab.name, "sigma": act.name, "L": act.L, "euler_bound": euler, "linear_limit": r / act.L,
           "cases": int(cases), "width": int(d), "layers": int(layers), "tol": TOL, "x": x}
    for key, N in (("one_layer", 1), ("n_layers", layers)):
        K, beta, y, yd = draw_cases(cases, d, N, seed)
        xs, G = largest_stable(tab, act, K, beta, y, yd, x)
        below = x <= euler
        out[key] = {
            "x_star": xs,
            "max_ratio_up_to_euler_bound": float(G[below].max()),
            "violations_up_to_euler_bound": int(np.sum(G[below] > 1.0 + TOL)),
            "curve": G.max(axis=1),
        }
    return out


def json_view(result: dict) -> dict:
    """The result without its arrays (what ``--json`` prints)."""
    out = {k: v for k, v in result.items() if k != "x"}
    for key in ("one_layer", "n_layers"):
        out[key] = {k: v for k, v in result[key].items() if k != "curve"}
    return out
