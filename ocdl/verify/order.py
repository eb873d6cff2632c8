"""Convergence orders of the discrete state, costate and gradient, and of the optimal control.

Setting. T fixed, smooth controls K(t) = K₀ + sin(ωt) K₁ + cos(ωt) K₂, β(t) likewise, ω = 2π/T,
with seeded N(0, 1) coefficients θ = (K₀, K₁, K₂, β₀, β₁, β₂). The network with N layers,
h = T/N, uses *per-stage* controls sampled at the stage times, u_{j,i} = u(t_j + c_i h): that is
the consistent discretisation of y' = f(y, u(t)) (per-layer controls u_j = u(t_j) would cap every
method at order 1, since the stages would see the control frozen over the step).

Quantities, each compared with the continuous reference (``solve_ivp`` DOP853, rtol 1e-13) in the
relative max-norm:

    state     y^[N] against y(T);
    costate   p^[0] = ∂E/∂y^[0] (the discrete adjoint) against p(0);
    gradient  ∂E/∂θ: the discrete Σ_{j,i} φ(t_j + c_i h) ∂E/∂u_{j,i} against ∫ φ(t) ∂_u fᵀ p dt
              (the gradient with respect to the fixed coefficients θ, comparable across N);
    control   on Hager's problem (:func:`ocdl.ocp.hager`) with optimised discrete controls: the grid control
              u_j = −p_j against u*(t_j), from ``ocdl.engine.casadi.hager_errors`` where it exists.

State, costate and gradient converge at the tableau's ODE order p (p^[0] and ∂E/∂θ are derivatives
of the discrete objective, whose error is a smooth O(h^p) function of (y^[0], θ)); the optimal
control converges at the order in optimal control (Hager 2000), e.g. 2 for ssprk3.

Slopes are least-squares fits of log(error) against log(h) on the asymptotic range: the finest
grids (N ≥ 8) whose error lies above the reference's accuracy floor (1e-10; the reference itself
agrees with a looser solve to ~1e-13), the last three of them. On the default instance the
coarse grids (N ≤ 32) are pre-asymptotic for the order-3 and order-4 tableaux.
"""

from __future__ import annotations

import numpy as np

from ocdl import problem as problem_mod
from ocdl.errors import OcdlError
from ocdl.verify import adjoints
from ocdl.verify.commutation import rel_diff
from ocdl.verify.instance import Instance, build_problem

NS = (4, 8, 16, 32, 64, 128, 256)
RTOL_REF = 1e-13
ATOL_REF = 1e-15
FLOOR = 1e-10  # errors below this are at the reference's accuracy, not on the asymptotic line
N_MIN_FIT = 8
MAX_FIT_POINTS = 3
REF_PIECES = 16


class SmoothControls:
    """K(t) = Σ_k φ_k(t) K_k, β(t) = Σ_k φ_k(t) β_k with φ = (1, sin ωt, cos ωt), ω = 2π/T."""

    def __init__(self, K: np.ndarray, beta: np.ndarray, T: float):
        self.K, self.beta, self.T = K, beta, T
        self.omega = 2.0 * np.pi / T

    @classmethod
    def random(cls, rng: np.random.Generator, d: int, T: float) -> "SmoothControls":
        return cls(rng.standard_normal((3, d, d)), rng.standard_normal((3, d)), T)

    def phi(self, t):
        t = np.asarray(t, dtype=np.float64)
        return np.stack([np.ones_like(t), np.sin(self.omega * t), np.cos(self.omega * t)])

    def __call__(self, t: float):
        w = self.phi(t)
        return np.tensordot(w, self.K, 1), np.tensordot(w, self.beta, 1)

    def sampled(self, tableau, N: int):
        """Per-stage controls u_{j,i} = u(t_j + c_i h), h = T/N: K (N, s, d, d), β (N, s, d)."""
        h = self.T / N
        t = (np.arange(N)[:, None] + tableau.c[None, :]) * h  # (N, s)
        w = self.phi(t)  # (3, N, s)
        return np.einsum("kns,kab->nsab", w, self.K), np.einsum("kns,ka->nsa", w, self.beta), w


def order_problem(tableau: str, N: int, T: float = 1.0, n: int = 20, seed: int = 0, data: str = "spiral"):
    return build_problem(tableau=tableau, layers=N, T=T, n=n, seed=seed, data=data, controls="per-stage")


def reference(inst: Instance, ctl: SmoothControls):
    """(y(T), p(0), ∂E/∂θ) of the continuous problem."""
    t = np.linspace(0.0, ctl.T, REF_PIECES + 1)
    slots = np.arange(3)
    pieces = [adjoints.Piece(t[k], t[k + 1], ctl, ctl.phi, slots) for k in range(REF_PIECES)]
    res = adjoints.continuous(inst.field, pieces, inst.Y0, inst.terminal, 3, rtol=RTOL_REF, atol=ATOL_REF)
    return res.yT, res.p[0], {"K": res.gK, "beta": res.gb}


def discrete(inst: Instance, w: np.ndarray):
    """(y^[N], p^[0], ∂E/∂θ) of the discrete problem, by the engine's adjoint sweep."""
    from ocdl.engine.torch.adjoint import grad_adjoint

    net = inst.net
    params, Y0, c = inst.torch_args()
    _, grads, cost = grad_adjoint(net, params, Y0, c, return_costates=True)
    yN = net.forward(params, Y0).numpy()
    p0 = cost["p"][0].numpy().T
    gK, gb = grads["K"].numpy(), grads["beta"].numpy()
    return yN, p0, {"K": np.einsum("kns,nsab->kab", w, gK), "beta": np.einsum("kns,nsa->ka", w, gb)}


def _rel(a, ref) -> float:
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def errors(tableau: str, Ns=NS, T: float = 1.0, n: int = 20, seed: int = 0) -> dict:
    """Relative errors of state, costate and gradient against the continuous reference, per N."""
    base = order_problem(tableau, Ns[0], T, n, seed)
    inst0 = Instance.make(base)
    ctl = SmoothControls.random(np.random.default_rng([seed, 1]), inst0.d, T)
    yT, p0, g = reference(inst0, ctl)
    out = {"N": list(Ns), "state": [], "costate": [], "gradient": []}
    for N in Ns:
        prob = order_problem(tableau, N, T, n, seed)
        params = problem_mod.init_params(prob, inst0.d, inst0.K)
        params["W"], params["mu"] = inst0.params["W"], inst0.params["mu"]  # the same classifier for every N
        params["K"], params["beta"], w = ctl.sampled(prob.tableau, N)
        inst = Instance(prob, inst0.Y0, inst0.c, params)
        yN, pd0, gd = discrete(inst, w)
        out["state"].append(_rel(yN, yT))
        out["costate"].append(_rel(pd0, p0))
        out["gradient"].append(rel_diff(gd, g))
    return out


def fit_slope(Ns, errs, floor: float = FLOOR, n_min: int = N_MIN_FIT, max_points: int = MAX_FIT_POINTS):
    """(slope, [N used]) of log(error) against log(1/N) on the asymptotic range, or (None, [])
    when fewer than two points qualify."""
    pts = [(N, e) for N, e in zip(Ns, errs) if e is not None and N >= n_min and e > floor]
    pts = pts[-max_points:]  # the asymptotic range: the finest qualifying grids
    if len(pts) < 2:
        return None, []
    N = np.array([p[0] for p in pts], dtype=np.float64)
    e = np.array([p[1] for p in pts])
    return float(-np.polyfit(np.log(N), np.log(e), 1)[0]), [int(x) for x in N]


def order(tableau: str, Ns=NS, T: float = 1.0, n: int = 20, seed: int = 0, control: bool = True) -> dict:
    """The JSON of ``ocdl verify order``: orders, per-N errors and fitted slopes."""
    tab = order_problem(tableau, Ns[0], T, n, seed).tableau
    if len(Ns) < 2 or any(N < 1 for N in Ns):
        raise OcdlError("order: need at least two grid sizes N ≥ 1")
    err = errors(tableau, Ns, T, n, seed)
    slopes, ranges = {}, {}
    for key in ("state", "costate", "gradient"):
        slopes[key], ranges[key] = fit_slope(err["N"], err[key])
    result = {
        "tableau": tab.name,
        "ode_order": tab.ode_order,
        "oc_order": tab.oc_order,
        "T": T,
        "errors": err,
        "slopes": slopes,
        "fit_N": ranges,
    }
    reason = None
    if not control:
        reason = "not requested"
    elif tab.oc_order is None:
        reason = "the order in optimal control needs every b_i > 0"
    else:
        from ocdl.engine.casadi import hager_errors

        err["control"] = [float(x) for x in _control_errors(hager_errors(tab, list(Ns)))]
        slopes["control"], ranges["control"] = fit_slope(err["N"], err["control"])
    if reason is not None:
        slopes["control"] = None
        result["control_reason"] = reason
    return result


def _control_errors(h) -> list:
    """The per-N grid-control errors from ``hager_errors``'s answer: a dict with a ``control``
    list, a list of per-N dicts, or an object with a ``control`` attribute."""
    if isinstance(h, dict):
        return list(h["control"])
    if isinstance(h, (list, tuple)) and h and isinstance(h[0], dict):
        return [row["control"] for row in h]
    return list(h.control)
