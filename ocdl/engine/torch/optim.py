"""Optimisers of the PyTorch engine, on the flat vector θ of the trained parameters.

``gd-armijo`` (the paper's Runge–Kutta-network experiments): steepest descent with Armijo
backtracking: trial step α = min(α_max, 2 α_prev) (α_prev starts at α₀), accept θ⁺ = P(θ − α g)
when E(θ⁺) ≤ E(θ) + c ⟨g, θ⁺ − θ⟩, else α ← ρ α; c = 0.4, ρ = 0.5, α_max = 10, α₀ = 0.05.

``gd-lipschitz`` (the paper's learned-time-step experiments): θ⁺ = P(θ − g / L), accepted when
E(θ⁺) ≤ E(θ) + ⟨g, Δ⟩ + (L/2)‖Δ‖² (the descent lemma), else L ← 1.5 L (≤ 200 trials); on accept
L ← 0.99 L; L starts at 0.1.

P is the identity, or for simplex time steps the Euclidean projection of h onto
{h ≥ 0, Σ h = T} (:mod:`ocdl.simplex`). ``lbfgs`` and ``adam`` are torch.optim's, with the
gradient from the hand-written adjoint (adam projects after each step; lbfgs refuses simplex).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ocdl import regulariser, simplex
from ocdl.errors import OcdlError
from ocdl.interrupt import DeferSigint
from ocdl.result import SolveResult
from ocdl.engine.torch.adjoint import grad_adjoint
from ocdl.engine.torch.network import TorchNetwork

_clock = time.monotonic  # the clock of checkpoint_seconds

@dataclass
class Objective:
    """E and ∇E on the training set, and monitoring on train/test, for flat θ."""

    net: TorchNetwork
    base: dict  # all parameters (tensors); trained entries are overwritten from θ
    keys: tuple
    Y0: torch.Tensor
    c: torch.Tensor
    Y0_test: torch.Tensor
    c_test: torch.Tensor
    gradient: str = "adjoint"
    evals: int = 0
    grads: int = 0
    _shapes: list = field(default_factory=list)

    def __post_init__(self):
        self._shapes = [(k, self.base[k].shape, self.base[k].numel()) for k in self.keys]

    def flat(self, params) -> torch.Tensor:
        return torch.cat([params[k].reshape(-1) for k in self.keys])

    def unflat(self, theta) -> dict:
        out = dict(self.base)
        i = 0
        for k, shape, n in self._shapes:
            out[k] = theta[i : i + n].reshape(shape)
            i += n
        return out

    def value(self, theta) -> float:
        """E(θ); the layer states are kept so that a following ``value_grad(θ)`` reuses them."""
        self.evals += 1
        params = self.unflat(theta)
        with torch.inference_mode():
            yN, states = self.net.forward(params, self.Y0, keep_states=True)
            E = float(self.net.data_loss(params, yN, self.c) + regulariser.value(self.net.problem, params))
        self._last = (theta, states)
        return E

    def value_grad(self, theta):
        self.grads += 1
        params = self.unflat(theta)
        if self.gradient == "autograd":
            E, g = self.net.grad_autograd(params, self.Y0, self.c)
        else:
            last = getattr(self, "_last", None)
            states = last[1] if last is not None and last[0] is theta else None
            E, g = grad_adjoint(self.net, params, self.Y0, self.c, states=states)
        self._last = None
        return float(E), self.flat(g)

    def monitor(self, theta) -> dict:
        """Objective and accuracy on train and test (E_test uses the same formula, R included)."""
        params = self.unflat(theta)
        with torch.no_grad():
            return {
                "train_accuracy": self.net.accuracy(params, self.Y0, self.c),
                "test_accuracy": self.net.accuracy(params, self.Y0_test, self.c_test),
                "test_objective": float(self.net.objective(params, self.Y0_test, self.c_test)),
            }


class Projection:
    """θ ↦ P(θ): the simplex projection of the h block, or the identity."""

    def __init__(self, obj: Objective, problem):
        self.slice = None
        if problem.time_steps == "simplex" and "h" in obj.keys:
            i = 0
            for k, _, n in obj._shapes:
                if k == "h":
                    self.slice = slice(i, i + n)
                i += n
        self.T = problem.T

    def __call__(self, theta):
        if self.slice is None:
            return theta
        theta = theta.clone()
        theta[self.slice] = simplex.project(theta[self.slice], self.T)
        return theta


def optimise(
    obj: Objective,
    problem,
    theta0: torch.Tensor,
    iterations: int,
    opts: dict,
    *,
    state: dict | None = None,
    history: dict | None = None,
    log: Callable[[str], None] | None = print,
    checkpoint: Callable[[SolveResult], None] | None = None,
) -> SolveResult:
    """Run ``problem.solver.name`` from θ₀ until ``iterations`` in total (``state['iteration']``
    counts those already done when resuming) with the checked options ``opts``
    (:meth:`ocdl.engine.torch.TorchEngine.check_options`). Ctrl-C returns the last completed
    iterate, interrupted.

    An iteration is completed or discarded whole: a step is computed without touching the run's
    state (θ, E, ∇E, the step memory α_prev or L, the iteration count, the history; the torch
    optimiser's state is copied before its step), then committed with Ctrl-C held back
    (:class:`ocdl.interrupt.DeferSigint`). A Ctrl-C during the computation discards it; the result
    (and every ``checkpoint``) holds parameters, state and history of one completed iteration, so
    that a resumed run repeats the uninterrupted one bit for bit. ``checkpoint`` is called after
    every ``checkpoint_every``-th iteration and whenever ``checkpoint_seconds`` have passed since
    the last one (0: never)."""
    name = problem.solver.name
    obj.gradient = opts["gradient"]
    project = Projection(obj, problem)
    state = dict(state or {})
    it0 = int(state.get("iteration", 0))
    history = {k: list(v) for k, v in (history or {}).items()}
    for key in ("iteration", "objective", "gradient_norm", "step"):
        history.setdefault(key, [])
    for key in ("eval_iteration", "train_accuracy", "test_accuracy", "test_objective"):
        history.setdefault(key, [])
    eval_every = int(opts["eval_every"]) or max(1, iterations // 200)
    progress_every = int(opts["progress_every"]) or max(1, iterations // 20)
    every, seconds = int(opts["checkpoint_every"]), float(opts.get("checkpoint_seconds", 0.0))
    theta = project(theta0.clone())
    torch_opt = _torch_optimiser(name, theta, opts, state)
    opt_before = None  # the torch optimiser's state before the step in progress (None: it is the committed one)
    t_start = time.perf_counter()
    last_checkpoint = _clock()
    it = it0
    message = "iteration limit reached"
    success = True
    interrupted = False

    def record(it, E, g, step):
        history["iteration"].append(it)
        history["objective"].append(E)
        history["gradient_norm"].append(float(torch.linalg.vector_norm(g)))
        history["step"].append(step)
        if it % eval_every == 0 or it == iterations:
            m = obj.monitor(theta)
            history["eval_iteration"].append(it)
            for k, v in m.items():
                history[k].append(v)
        if log and (it % progress_every == 0 or it == iterations):
            acc = history["train_accuracy"][-1] if history["train_accuracy"] else float("nan")
            tacc = history["test_accuracy"][-1] if history["test_accuracy"] else float("nan")
            log(
                f"it {it:>6d}  E {E:.10e}  |g| {history['gradient_norm'][-1]:.3e}  step {step:.3e}  "
                f"acc {acc:.3f}/{tacc:.3f}  ({time.perf_counter() - t_start:.1f}s)"
            )

    def committed_optimiser():
        return opt_before if opt_before is not None else (torch_opt.state_dict() if torch_opt is not None else None)

    try:
        E, g = obj.value_grad(theta)
        if not history["iteration"]:
            with DeferSigint():
                record(it, E, g, 0.0)
        while it < iterations:
            if not math.isfinite(E):
                success, message = False, "objective is not finite"
                break
            if opts["gtol"] > 0 and float(torch.linalg.vector_norm(g)) <= opts["gtol"]:
                message = f"gradient norm ≤ gtol = {opts['gtol']}"
                break
            if name == "gd-armijo":
                ok, trial, E_new, g_new, step, memory = _armijo_step(obj, project, theta, E, g, opts, state)
            elif name == "gd-lipschitz":
                ok, trial, E_new, g_new, step, memory = _lipschitz_step(obj, project, theta, E, g, opts, state)
            else:
                opt_before = _copy_state(torch_opt.state_dict())
                ok, trial, E_new, g_new, step = _torch_step(obj, project, torch_opt, theta, name)
                memory = {}
            with DeferSigint():  # the commit: all of it, or (Ctrl-C before it) none of it
                state.update(memory)
                if not ok:
                    success, message = False, f"line search failed at iteration {it + 1}"
                    break  # θ, E, g and the optimiser state stay those of the last completed iteration
                theta, E, g = trial, E_new, g_new
                it += 1
                state["iteration"] = it
                record(it, E, g, step)
                opt_before = None
            if checkpoint and ((every and it % every == 0) or (seconds and _clock() - last_checkpoint >= seconds)):
                checkpoint(_result(obj, theta, history, state, committed_optimiser(), True, "checkpoint", False))
                last_checkpoint = _clock()
    except KeyboardInterrupt:
        interrupted = True
    with DeferSigint(deliver=False) as late:  # a Ctrl-C while the result is built: it still is, marked interrupted
        state["iteration"] = it
        res = _result(obj, theta, history, state, committed_optimiser(), success, message, interrupted)
        res.metrics.update({"function_evaluations": obj.evals, "gradient_evaluations": obj.grads})
    if interrupted or late.pending:
        res.interrupted, res.message = True, f"interrupted at iteration {it}"
        res.metrics["solver_status"] = "interrupted"
    return res


def _copy_state(x):
    """A deep copy of a torch optimiser's state_dict (a step updates its tensors in place): the
    containers rebuilt, every tensor cloned (``copy.deepcopy`` is several times slower)."""
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, dict):
        return {k: _copy_state(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_copy_state(v) for v in x)
    return x


def _result(obj, theta, history, state, opt_state, success, message, interrupted) -> SolveResult:
    st = dict(state)
    if opt_state is not None:
        st["torch_optimizer"] = opt_state
    params = obj.net.to_numpy(obj.unflat(theta.detach()))
    return SolveResult(
        params=params,
        history={k: list(v) for k, v in history.items()},
        metrics={"solver_status": "interrupted" if interrupted else ("ok" if success else "failed"),
                 "iterations": int(state.get("iteration", 0))},
        success=success,
        message=message,
        state=st,
        interrupted=interrupted,
    )


def _armijo_step(obj, project, theta, E, g, o, state):
    """(ok, θ⁺, E⁺, ∇E⁺, α, memory): one Armijo step; ``state`` is read, not changed (the new
    α_prev is in ``memory``)."""
    alpha = min(o["alpha_max"], 2.0 * state.get("alpha_prev", o["alpha0"]))
    for _ in range(int(o["max_backtracks"])):
        trial = project(theta - alpha * g)
        delta = trial - theta
        E_new = obj.value(trial)
        if E_new <= E + o["c"] * float(torch.dot(g, delta)):
            E_new, g_new = obj.value_grad(trial)
            return True, trial, E_new, g_new, alpha, {"alpha_prev": alpha}
        alpha *= o["rho"]
    return False, theta, E, g, 0.0, {}


def _lipschitz_step(obj, project, theta, E, g, o, state):
    """(ok, θ⁺, E⁺, ∇E⁺, 1/L, memory): one step of the descent-lemma search; ``state`` is read,
    not changed (the new L is in ``memory``; after a failed search the grown L, as before)."""
    L = state.get("L", o["L0"])
    for _ in range(int(o["max_trials"])):
        trial = project(theta - g / L)
        delta = trial - theta
        E_new = obj.value(trial)
        if E_new <= E + float(torch.dot(g, delta)) + 0.5 * L * float(torch.dot(delta, delta)):
            E_new, g_new = obj.value_grad(trial)
            return True, trial, E_new, g_new, 1.0 / L, {"L": L * o["shrink"]}
        L *= o["grow"]
    return False, theta, E, g, 0.0, {"L": L}


def _torch_optimiser(name, theta, opts, state):
    """The torch optimiser of ``name`` on a copy of θ (its steps change their parameter in place;
    the run's θ is replaced only when a step is committed), with the saved state of a resumed run."""
    if name not in ("lbfgs", "adam"):
        return None
    theta = theta.detach().clone()
    if name == "lbfgs":
        # One quasi-Newton iteration per step. max_eval must be given: its default, max_iter·5//4 = 1,
        # leaves the strong-Wolfe search 0 evaluations after the first trial, so any step that does
        # not decrease E at once was rejected and the iterate froze (max_ls = max_eval − 1 = 25).
        opt = torch.optim.LBFGS([theta], lr=opts["lr"], max_iter=1, max_eval=26, history_size=int(opts["history_size"]),
                                line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
    else:
        opt = torch.optim.Adam([theta], lr=opts["lr"])
    if "torch_optimizer" in state:
        saved = state["torch_optimizer"]
        groups = saved.get("param_groups") if isinstance(saved, dict) else None
        # keys that tell the two optimisers apart and that every torch version has (newer versions
        # add others, which torch's load_state_dict fills in)
        required = {"lbfgs": {"lr", "max_iter", "history_size", "line_search_fn"}, "adam": {"lr", "betas", "eps"}}[name]
        if not (isinstance(groups, list) and len(groups) == 1 and isinstance(groups[0], dict)
                and required <= set(groups[0])):
            raise OcdlError(f"optimizer.pt: not the saved state of a torch {name} optimiser")
        try:
            opt.load_state_dict(saved)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise OcdlError(f"optimizer.pt: cannot restore the {name} optimiser state: {e}") from None
    return opt


def _torch_step(obj, project, opt, theta, name):
    p = opt.param_groups[0]["params"][0]
    p.data.copy_(theta)
    before = p.detach().clone()

    def closure():
        E, g = obj.value_grad(p.detach())
        p.grad = g.clone()
        return torch.tensor(E, dtype=p.dtype)

    opt.step(closure)
    if name == "lbfgs" and torch.equal(p.detach(), before):
        # The strong-Wolfe search failed along the quasi-Newton direction (stale curvature pairs
        # on a nonconvex objective): drop the memory and restart from steepest descent once.
        opt.state.clear()
        opt.step(closure)
    with torch.no_grad():
        p.data.copy_(project(p.detach()))
    new = p.detach().clone()
    E, g = obj.value_grad(new)
    return math.isfinite(E), new, E, g, float(torch.linalg.vector_norm(new - before))
