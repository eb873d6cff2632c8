"""The peers of ``ocdl bench gradient --peers``: the same network and objective (spiral, rk4,
per-layer controls, N layers of step h = 1.5/N, E = Σ ½(S(W y^[N] + μ) − c)², float64) written
with other libraries, each as its users write it, and ocdl's own paths.

Contenders (those whose library is missing are listed as skipped):
  ocdl                  ocdl's fastest gradient of this run (of the rows below that start ocdl-)
  ocdl-adjoint          the partner adjoint of the native engine (numba; O(N·m·d) memory)
  ocdl-native-autograd  the native engine's reverse mode with stored stages
  ocdl-native-flat      E and ∇E in one compiled call on the flat θ, as the native engine's optimisers
                        call them: the partner adjoint with the stages kept (where they fit)
  ocdl-native-flat-lean the same with ``keep_stages = false`` (O(N·m·d) memory, stages recomputed)
  ocdl-native-flat-autograd  reverse mode with stored stages on the flat θ
  ocdl-torch            the torch engine's partner adjoint (the default path before issue 18)
  ocdl-torch-autograd   the torch engine's autograd
  torch-loop            a plain PyTorch loop (torch.tanh, classic rk4) and autograd
  torchdiffeq           ``odeint(method="rk4")`` per layer (one fixed step), autograd through it;
                        torchdiffeq's rk4 is the 3/8 rule, so its gradient is compared with ocdl's
                        rk38 network
  torchdiffeq-adjoint   ``odeint_adjoint`` likewise (the continuous adjoint: not the discrete
                        gradient, the relative difference says how far)
  jax                   ``jit(value_and_grad)`` of the sweep (``lax.scan`` over the layers)
  diffrax               ``diffeqsolve`` of one classic-rk4 step (an ``AbstractERK`` tableau) per
                        layer in a ``lax.scan``, ``RecursiveCheckpointAdjoint``, under ``jit``
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np

RK4 = (np.array([[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1, 0]]), np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]))
RK38 = (np.array([[0, 0, 0, 0], [1 / 3, 0, 0, 0], [-1 / 3, 1, 0, 0], [1, -1, 1, 0]]), np.array([1 / 8, 3 / 8, 3 / 8, 1 / 8]))


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# ---------------------------------------------------------------------- torch
def torch_loop(prm, Y0, c, h):
    """E and ∇E over (K, β, W, μ) by a plain PyTorch loop (samples as rows) and autograd."""
    import torch

    leaves = [prm[k].detach().clone().requires_grad_(True) for k in ("K", "beta", "W", "mu")]
    E = torch_loop_forward(dict(zip(("K", "beta", "W", "mu"), leaves)), Y0, c, h)
    return E.detach(), torch.autograd.grad(E, leaves)


def torchdiffeq_grad(prm, Y0, c, h, adjoint: bool):
    import torch
    from torchdiffeq import odeint, odeint_adjoint

    leaves = [prm[k].detach().clone().requires_grad_(True) for k in ("K", "beta", "W", "mu")]
    K, beta, W, mu = leaves
    t = torch.tensor([0.0, h], dtype=torch.float64)
    y = Y0.T

    class Layer(torch.nn.Module):
        def __init__(self, K, b):
            super().__init__()
            self.K, self.b = K, b

        def forward(self, t, x):
            return torch.tanh(x @ self.K.T + self.b)

    for j in range(K.shape[0]):
        layer = Layer(K[j], beta[j])
        if adjoint:
            y = odeint_adjoint(layer, y, t, method="rk4", options={"step_size": h}, adjoint_params=(K, beta))[-1]
        else:
            y = odeint(layer, y, t, method="rk4", options={"step_size": h})[-1]
    E = 0.5 * ((torch.sigmoid(y @ W + mu) - c) ** 2).sum()
    return E.detach(), torch.autograd.grad(E, leaves)


# ---------------------------------------------------------------------- jax
def _jax(device: str = "cpu"):
    """JAX in float64 on the bench's device: 'cpu', or 'cuda' (any 'cuda:i') for JAX's GPU backend."""
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu" if str(device).startswith("cpu") else "cuda")
    return jax


def jax_value_and_grad(N: int, h: float, device: str = "cpu"):
    """jit(value_and_grad(E)) over (K, β, W, μ), the layers in a lax.scan (samples as rows)."""
    jax = _jax(device)
    import jax.numpy as jnp

    def E(theta, Y, c):
        K, beta, W, mu = theta

        def layer(y, u):
            Kj, bj = u
            f = lambda x: jnp.tanh(x @ Kj.T + bj)  # noqa: E731
            k1 = f(y)
            k2 = f(y + 0.5 * h * k1)
            k3 = f(y + 0.5 * h * k2)
            k4 = f(y + h * k3)
            return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

        y, _ = jax.lax.scan(layer, Y, (K, beta))
        return 0.5 * jnp.sum((jax.nn.sigmoid(y @ W + mu) - c) ** 2)

    return jax.jit(jax.value_and_grad(E)), jax.jit(E)


def _jax_objective(prob, X, c, params0, device: str = "cpu"):
    """(jax, E): E(θ) = loss + R on the flat θ of ``prob``'s trained (K, β, W, μ) in ocdl's layout,
    as a JAX user writes it — a two-class, per-layer-control network with any explicit tableau and
    fixed steps (the benchmark problems), samples as rows."""
    jax = _jax(device)
    import jax.numpy as jnp

    if tuple(prob.trainable()) != ("K", "beta", "W", "mu") or prob.per_stage:
        raise ValueError("the JAX objective covers the bench problem only (per-layer controls, K, β, W, μ trained)")
    A, b = np.asarray(prob.tableau.A), np.asarray(prob.tableau.b)
    s = len(b)
    h = jnp.asarray(np.asarray(params0["h"], dtype=np.float64))
    shapes = [(k, np.shape(params0[k])) for k in ("K", "beta", "W", "mu")]
    alpha, a_s, hbar = prob.tikhonov(), float(prob.objective.smooth), float(prob.h)
    Y, cc = jnp.asarray(X), jnp.asarray(np.asarray(c, dtype=np.float64))
    scale = 1.0 / X.shape[0] if prob.objective.mean else 1.0
    logistic = prob.objective.loss in ("logistic", "cross-entropy")

    def unflat(theta):
        out, i = {}, 0
        for k, shape in shapes:
            n = int(np.prod(shape))
            out[k] = theta[i:i + n].reshape(shape)
            i += n
        return out

    def E(theta):
        p = unflat(theta)

        def layer(y, u):
            Kj, bj, hj = u
            F = []
            for i in range(s):
                Yi = y + hj * sum(A[i, l] * F[l] for l in range(i) if A[i, l] != 0)
                F.append(jnp.tanh(Yi @ Kj.T + bj))
            return y + hj * sum(b[i] * F[i] for i in range(s) if b[i] != 0), None

        y, _ = jax.lax.scan(layer, Y, (p["K"], p["beta"], h))
        z = y @ p["W"] + p["mu"]
        loss = (jax.nn.softplus(z) - cc * z) if logistic else 0.5 * (jax.nn.sigmoid(z) - cc) ** 2
        R = sum(0.5 * alpha[k] * jnp.sum(p[k] ** 2) for k in p if alpha[k] > 0)
        if a_s > 0:
            R = R + sum(0.5 * a_s / hbar * jnp.sum((p[k][1:] - p[k][:-1]) ** 2) for k in ("K", "beta"))
        return scale * jnp.sum(loss) + R

    return jax, E


def jax_training_objective(prob, X, c, params0, device: str = "cpu"):
    """(fg, hessp) for scipy.optimize on :func:`_jax_objective`'s E: ``fg = jit(value_and_grad(E))``,
    ``hessp = jit(jvp of grad)`` (forward-over-reverse), on NumPy vectors."""
    jax, E = _jax_objective(prob, X, c, params0, device)
    import jax.numpy as jnp

    vg = jax.jit(jax.value_and_grad(E))
    hv = jax.jit(lambda x, v: jax.jvp(jax.grad(E), (x,), (v,))[1])

    def fg(x):
        e, g = vg(jnp.asarray(x))
        return float(e), np.asarray(g, dtype=np.float64)

    def hessp(x, v):
        return np.asarray(hv(jnp.asarray(x), jnp.asarray(v)), dtype=np.float64)

    return fg, hessp


def jax_armijo(prob, X, c, params0, theta0, iterations: int, o: dict, device: str = "cpu"):
    """``iterations`` steps of gd-armijo (the steps of :func:`ocdl.engine.torch.optim._armijo_step`)
    with the whole loop jitted (``lax.while_loop`` over iterations and backtracks) on
    :func:`_jax_objective`'s E: a function of θ₀ returning (θ, E, iterations done, objective
    evaluations, gradient evaluations), compiled ahead of time here. An accepted step evaluates E
    again with its gradient (``value_and_grad``), as a user writes it."""
    jax, E = _jax_objective(prob, X, c, params0, device)
    import jax.numpy as jnp

    vg = jax.value_and_grad(E)
    cA, rho, amax, bt = float(o["c"]), float(o["rho"]), float(o["alpha_max"]), int(o["max_backtracks"])

    def step(state):
        it, theta, e, g, alpha_prev, ev, gr, ok = state

        def try_(s):
            k, alpha, _, _, acc = s
            trial = theta - alpha * g
            e_new = E(trial)
            acc = e_new <= e + cA * jnp.dot(g, trial - theta)
            return k + 1, jnp.where(acc, alpha, alpha * rho), trial, e_new, acc

        k, alpha, trial, e_new, acc = jax.lax.while_loop(
            lambda s: (s[0] < bt) & ~s[4], try_,
            (0, jnp.minimum(amax, 2.0 * alpha_prev), theta, e, False))
        e2, g2 = vg(trial)
        return (it + acc.astype(it.dtype), jnp.where(acc, trial, theta), jnp.where(acc, e2, e),
                jnp.where(acc, g2, g), jnp.where(acc, alpha, alpha_prev), ev + k, gr + 1, acc)

    @jax.jit
    def loop(theta):
        e, g = vg(theta)
        state = (0, theta, e, g, jnp.asarray(float(o["alpha0"])), 0, 1, True)
        out = jax.lax.while_loop(lambda s: (s[0] < iterations) & s[7], step, state)
        return out[1], out[2], out[0], out[5], out[6]

    compiled = loop.lower(jnp.asarray(theta0)).compile()  # ahead of time: the caller times the run only

    def run(theta):
        th, e, it, ev, gr = compiled(jnp.asarray(theta))
        return np.asarray(th, dtype=np.float64), float(e), int(it), int(ev), int(gr)

    return run


def diffrax_value_and_grad(N: int, h: float, device: str = "cpu"):
    jax = _jax(device)
    import diffrax
    import jax.numpy as jnp

    class ClassicRK4(diffrax.AbstractERK):
        tableau = diffrax.ButcherTableau(c=np.array([0.5, 0.5, 1.0]), b_sol=RK4[1], b_error=np.zeros(4),
                                         a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])))
        interpolation_cls = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

        def order(self, terms):
            return 4

    term = diffrax.ODETerm(lambda t, y, u: jnp.tanh(y @ u[0].T + u[1]))
    solver = ClassicRK4()

    def E(theta, Y, c):
        K, beta, W, mu = theta

        def layer(y, u):
            sol = diffrax.diffeqsolve(term, solver, 0.0, h, h, y, args=u, saveat=diffrax.SaveAt(t1=True),
                                      stepsize_controller=diffrax.ConstantStepSize(),
                                      adjoint=diffrax.RecursiveCheckpointAdjoint(), max_steps=1)
            return sol.ys[-1], None

        y, _ = jax.lax.scan(layer, Y, (K, beta))
        return 0.5 * jnp.sum((jax.nn.sigmoid(y @ W + mu) - c) ** 2)

    return jax.jit(jax.value_and_grad(E)), jax.jit(E)


def jax_memory_kib(fn, *args) -> float | None:
    """XLA's compiled temporaries plus outputs (memory_analysis), KiB; None where not reported."""
    try:
        ma = fn.lower(*args).compile().memory_analysis()
        return (ma.temp_size_in_bytes + ma.output_size_in_bytes) / 1024
    except Exception:  # noqa: BLE001 - a backend without the analysis
        return None


def flat_grad(g) -> np.ndarray:
    return np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1) for x in g])


def default_repeats(repeats: int, m: int, N: int) -> int:
    """Fewer rounds for the larger sizes (the work of one round ∝ m·N): all at m·N ≤ 15 000."""
    return max(3, min(repeats, math.ceil(repeats * 15000 / (m * N))))


def torch_loop_forward(prm, Y0, c, h):
    """E alone by the plain PyTorch loop."""
    import torch

    K, beta, W, mu = (prm[k] for k in ("K", "beta", "W", "mu"))
    y = Y0.T
    for j in range(K.shape[0]):
        f = lambda x: torch.tanh(x @ K[j].T + beta[j])  # noqa: E731
        k1 = f(y)
        k2 = f(y + 0.5 * h * k1)
        k3 = f(y + 0.5 * h * k2)
        k4 = f(y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return 0.5 * ((torch.sigmoid(y @ W + mu) - c) ** 2).sum()
