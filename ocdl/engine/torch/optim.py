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

``sgd`` (torch.optim.SGD with momentum μ, optionally Nesterov) and ``adam`` with
``batch_size`` B > 0 train on minibatches (:func:`_first_order`): an epoch is ⌈m/B⌉ steps, epoch e
visits the m training samples in the order ``numpy.random.default_rng([seed, e]).permutation(m)``
in consecutive slices of B (the last one holds the rest), so the iteration count k alone fixes
every batch: it is the whole shuffling state of a snapshot. The minibatch objective of a batch 𝓑
of b samples is the problem's objective with the loss rescaled and R once,

    E_𝓑(θ) = (1/b) Σ_{n∈𝓑} ℓ_n(θ) + R(θ)      (objective.mean: the mean over the batch)
    E_𝓑(θ) = (m/b) Σ_{n∈𝓑} ℓ_n(θ) + R(θ)      (a sum loss),

so that for a batch drawn uniformly E[E_𝓑] = E and E[∇E_𝓑] = ∇E (each slice of a random
permutation is such a draw). Its gradient is the partner adjoint (or autograd) on the b columns
only: the sweep's memory is O(b·N·d) whatever m. B = 0 or B ≥ m is the full batch (no shuffling;
adam then runs exactly as before).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
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

    def curvature(self, theta, gauss_newton: bool = False):
        """v ↦ ∇²E(θ) v (or the Gauss–Newton G v) at θ: :class:`ocdl.engine.torch.hessian.Curvature`."""
        from ocdl.engine.torch.hessian import Curvature

        return Curvature(self, theta, gauss_newton)

    def batch_value_grad(self, theta, idx):
        """(E_𝓑(θ), ∇E_𝓑(θ)) of the minibatch of training columns ``idx`` (a tensor of indices; None:
        the full batch, :meth:`value_grad`): the loss summed over the batch by the sweep of a copy of
        the network without R, scaled by 1/b (objective.mean) or m/b (a sum loss), plus R and ∇R once
        (the formula in the module docstring)."""
        if idx is None:
            return self.value_grad(theta)
        self.grads += 1
        params = self.unflat(theta)
        net, prob = self.data_net(), self.net.problem
        Yb, cb = self.Y0[:, idx], self.c[..., idx]
        if self.gradient == "autograd":
            L, g = net.grad_autograd(params, Yb, cb)
        else:
            L, g = grad_adjoint(net, params, Yb, cb)
        b = int(idx.numel())
        scale = 1.0 / b if prob.objective.mean else self.Y0.shape[1] / b
        with torch.inference_mode():
            E = scale * float(L) + float(regulariser.value(prob, params))
            gR = regulariser.gradient(prob, params)
            return E, self.flat({k: scale * g[k] + gR[k] for k in self.keys})

    def data_net(self) -> TorchNetwork:
        if getattr(self, "_data_net", None) is None:
            self._data_net = data_network(self.net)
        return self._data_net

    def monitor_chunked(self, theta, chunk: int) -> dict:
        """The full objective E (R included) on the training set, the test objective and both
        accuracies, by forward sweeps over ``chunk`` columns at a time (memory O(chunk·d))."""
        params = self.unflat(theta)
        E, acc, _ = chunked_objective(self.net, params, self.Y0, self.c, chunk, self.data_net())
        E_test, acc_test, _ = chunked_objective(self.net, params, self.Y0_test, self.c_test, chunk, self.data_net())
        return {"train_objective": E, "train_accuracy": acc, "test_accuracy": acc_test, "test_objective": E_test}

    def monitor(self, theta) -> dict:
        """Objective and accuracy on train and test (E_test uses the same formula, R included)."""
        params = self.unflat(theta)
        with torch.no_grad():
            return {
                "train_accuracy": self.net.accuracy(params, self.Y0, self.c),
                "test_accuracy": self.net.accuracy(params, self.Y0_test, self.c_test),
                "test_objective": float(self.net.objective(params, self.Y0_test, self.c_test)),
            }


def data_network(net: TorchNetwork) -> TorchNetwork:
    """``net`` with the data loss only: a sum over the samples (objective.mean off) and R = 0."""
    from ocdl.problem import PARAM_KEYS

    out = copy.copy(net)
    out.problem = net.problem.replace(objective__mean=False, objective__smooth=0.0,
                                      objective__tikhonov={k: 0.0 for k in PARAM_KEYS})
    return out


def chunked_objective(net, params, Y0, c, chunk: int, data_net=None, keep_states: bool = False):
    """(E, accuracy, y^[N] or None) of the samples Y0 (d×m), c by forward sweeps over ``chunk``
    columns at a time: E = Σ_n ℓ_n [/ m] + R as :meth:`TorchNetwork.objective` (summed by chunk)."""
    data, prob = data_net or data_network(net), net.problem
    m = Y0.shape[1]
    loss, right, states = 0.0, 0, []
    with torch.inference_mode():
        for i in range(0, m, chunk):
            Yc, cc = Y0[:, i : i + chunk], c[..., i : i + chunk]
            yN = data.forward(params, Yc)
            loss += float(data.data_loss(params, yN, cc))
            right += _correct(data.logits(params, yN), cc)
            if keep_states:
                states.append(yN)
        R = float(regulariser.value(prob, params))
    E = (loss / m if prob.objective.mean else loss) + R
    return E, right / m, torch.cat(states, 1) if keep_states else None


def chunked_gradient(net, params, Y0, c, chunk: int, gradient: str = "adjoint"):
    """(E, ∇E over the trained keys) of all m samples by the partner adjoint (or autograd) over
    ``chunk`` columns at a time: ∇E = s Σ_chunks ∇L_chunk + ∇R, s = 1/m (objective.mean) or 1,
    L the summed loss; memory O(chunk·N·d)."""
    data, prob = data_network(net), net.problem
    m = Y0.shape[1]
    L, g = 0.0, None
    for i in range(0, m, chunk):
        Yc, cc = Y0[:, i : i + chunk], c[..., i : i + chunk]
        Li, gi = data.grad_autograd(params, Yc, cc) if gradient == "autograd" else grad_adjoint(data, params, Yc, cc)
        L += float(Li)
        g = dict(gi) if g is None else {k: g[k] + gi[k] for k in g}
    scale = 1.0 / m if prob.objective.mean else 1.0
    with torch.inference_mode():
        gR = regulariser.gradient(prob, params)
        return scale * L + float(regulariser.value(prob, params)), {k: scale * g[k] + gR[k] for k in g}


def eval_chunk(N: int, d: int, m: int, itemsize: int = 8, budget: int = 2**27) -> int:
    """The columns per chunk of a full evaluation: m where the N+1 layer states of all m samples
    fit in ``budget`` bytes (128 MiB), else as many as fit (at least 1)."""
    per = (N + 1) * d * itemsize
    return m if per * m <= budget else max(1, budget // per)


def _correct(z, c) -> int:
    """How many samples are classified right: [z > 0] = c for two classes (z, c of length m),
    argmax_k z_k = the label for K (z K × m; c one-hot K × m, or the labels)."""
    if z.dim() == 1:
        return int(((z > 0).to(c.dtype) == c).sum())
    label = c.argmax(0) if c.dim() == 2 else c.to(torch.int64)
    return int((z.argmax(0) == label).sum())


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
    the last one (0: never).

    ``gd-armijo`` on an objective with a compiled loop (the native engine's ``compiled_armijo``,
    :mod:`ocdl.engine.native.loop`) runs blocks of iterations in one compiled call, each up to the
    next record with evaluation, progress line or ``checkpoint_every`` (≤ :data:`BLOCK`), and
    commits a block whole as it would its iterations one by one.

    ``sgd``, and ``adam`` with minibatches (``batch_size`` in (0, m)), run :func:`_first_order`.
    A step of adam (or sgd) that makes the objective, its gradient or the step non-finite ends the
    run as diverged (``solver_status`` 'diverged') at the last finite iterate."""
    name = problem.solver.name
    if name == "newton":
        from ocdl.engine.torch.newton import newton_cg

        return newton_cg(obj, problem, theta0, iterations, opts, state=state, history=history, log=log,
                         checkpoint=checkpoint)
    if name == "sgd" or (name == "adam" and 0 < int(opts.get("batch_size", 0)) < obj.Y0.shape[1]):
        return _first_order(obj, problem, theta0, iterations, opts, state=state, history=history, log=log,
                            checkpoint=checkpoint)
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
    diverged = False

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

    # the native engine's compiled gd-armijo loop (ocdl.engine.native.loop): blocks of iterations
    # up to the next record with evaluation, progress line or checkpoint, each committed whole
    block = (obj.compiled_armijo(opts) if name == "gd-armijo" and project.slice is None
             and hasattr(obj, "compiled_armijo") else None)
    try:
        E, g = obj.value_grad(theta)
        if not history["iteration"]:
            with DeferSigint():
                record(it, E, g, 0.0)
        while it < iterations and block is not None:
            n = _block_length(it, iterations, eval_every, progress_every if log else 0, every)
            trial, E_new, g_new, alpha, done, status, hist, evals, grads = block(
                theta, E, g, state.get("alpha_prev", opts["alpha0"]), n)
            with DeferSigint():  # the commit of the block: all of it, or (Ctrl-C before it) none of it
                obj.evals += evals
                obj.grads += grads
                for k in range(done - 1):  # no record with evaluation or progress inside a block
                    history["iteration"].append(it + k + 1)
                    history["objective"].append(float(hist[0, k]))
                    history["gradient_norm"].append(float(hist[1, k]))
                    history["step"].append(float(hist[2, k]))
                if done:
                    theta, E, g = trial, E_new, g_new
                    state["alpha_prev"] = alpha
                    it += done
                    state["iteration"] = it
                    record(it, E, g, float(hist[2, done - 1]))
            if status:
                from ocdl.engine.native.loop import GTOL, NOT_FINITE

                success = status == GTOL
                message = ("objective is not finite" if status == NOT_FINITE else
                           f"gradient norm ≤ gtol = {opts['gtol']}" if status == GTOL else
                           f"line search failed at iteration {it + 1}")
                break
            if checkpoint and ((every and it % every == 0) or (seconds and _clock() - last_checkpoint >= seconds)):
                checkpoint(_result(obj, theta, history, state, None, True, "checkpoint", False))
                last_checkpoint = _clock()
        while it < iterations and block is None:
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
                try:
                    ok, trial, E_new, g_new, step = _torch_step(obj, project, torch_opt, theta, name)
                except RuntimeError as e:  # adam's step size beyond float32's range: torch refuses to convert it
                    if name != "adam" or "overflow" not in str(e):
                        raise
                    ok, trial, E_new, g_new, step = False, theta, E, g, math.inf
                memory = {}
                if name == "adam":  # no line search: a failed step is a diverged one
                    why = _divergence(E_new, g_new, step)
                    diverged = why is not None
                    ok = ok and not diverged
            with DeferSigint():  # the commit: all of it, or (Ctrl-C before it) none of it
                state.update(memory)
                if not ok:
                    success = False
                    message = (f"diverged at iteration {it + 1}: {why} (lr too large?)" if diverged
                               else f"line search failed at iteration {it + 1}")
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
    if diverged:
        res.metrics["solver_status"] = "diverged"
    if interrupted or late.pending:
        res.interrupted, res.message = True, f"interrupted at iteration {it}"
        res.metrics["solver_status"] = "interrupted"
    return res


BLOCK = 64  # the most iterations of a compiled block (a Ctrl-C waits for at most one block)


def _block_length(it, iterations, *every) -> int:
    """Iterations from ``it`` to the next multiple of any nonzero ``every`` or to ``iterations``,
    at most :data:`BLOCK`."""
    n = min(iterations - it, BLOCK)
    for e in every:
        if e:
            n = min(n, e - it % e)
    return max(n, 1)


def _divergence(E, g, step) -> str | None:
    """Why the iterate with objective E, gradient g, reached by a step of length ``step``, has
    diverged (None: it has not): the objective, the gradient or the step is not finite."""
    if not math.isfinite(E):
        return "the objective became non-finite"
    if not math.isfinite(step):
        return "the step length became non-finite"
    if not bool(torch.isfinite(g).all()):
        return "the gradient became non-finite"
    return None


class Batches:
    """The minibatches of a run on m samples with batch size B: step k + 1 (k steps done) of
    epoch e = k // ⌈m/B⌉ takes the slice i = k mod ⌈m/B⌉ of B columns of epoch e's order
    ``numpy.random.default_rng([seed, e]).permutation(m)`` (the last slice holds the m − (⌈m/B⌉−1)B
    left). B = 0 or B ≥ m: the full batch in the data's order (``indices`` is None)."""

    def __init__(self, m: int, batch_size: int, seed: int, device):
        self.m = m
        self.size = batch_size if 0 < batch_size < m else m
        self.full = self.size == m
        self.per_epoch = -(-m // self.size)
        self.seed, self.device = int(seed), device
        self._epoch, self._order = None, None

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.m)

    def indices(self, k: int):
        """The training columns of step k + 1 (a tensor on the device), or None (full batch)."""
        if self.full:
            return None
        epoch, i = divmod(k, self.per_epoch)
        if self._epoch != epoch:
            self._epoch, self._order = epoch, torch.from_numpy(self.order(epoch)).to(self.device)
        return self._order[i * self.size : (i + 1) * self.size]


def _first_order(obj, problem, theta0, iterations, opts, *, state=None, history=None, log=print, checkpoint=None):
    """sgd (full batch or minibatches) and adam on minibatches: as :func:`optimise` (an iteration
    completed or discarded whole, checkpoints, Ctrl-C), one gradient per step.

    Per iteration k the history holds ``objective`` and ``gradient_norm``: E_𝓑 and ‖∇E_𝓑‖ at θ_k on
    the batch of step k + 1 (the full E and ‖∇E‖ for the full batch), and ``step`` ‖θ_k − θ_{k−1}‖.
    Every ``eval_every`` epochs and at the end (and at k = 0) the full figures at θ_k are recorded
    under ``eval_iteration``: ``train_objective`` (E on all m samples, R included; minibatches
    only), ``test_objective``, ``train_accuracy``, ``test_accuracy``; by forward sweeps over
    column chunks of B·(N + 1), so that the memory stays O(B·N·d) besides the data."""
    name = problem.solver.name
    obj.gradient = opts["gradient"]
    project = Projection(obj, problem)
    state = dict(state or {})
    it0 = int(state.get("iteration", 0))
    m = int(obj.Y0.shape[1])
    seed = problem.init.seed if opts.get("seed") is None else opts["seed"]
    batches = Batches(m, int(opts.get("batch_size", 0)), seed, obj.Y0.device)
    mini, per_epoch = not batches.full, batches.per_epoch
    chunk = min(m, batches.size * (problem.N + 1))
    history = {k: list(v) for k, v in (history or {}).items()}
    for key in ("iteration", "objective", "gradient_norm", "step", "eval_iteration", "train_accuracy",
                "test_accuracy", "test_objective", *(("train_objective",) if mini else ())):
        history.setdefault(key, [])
    epochs_total = -(-iterations // per_epoch)
    eval_every = (int(opts["eval_every"]) or max(1, epochs_total // 200)) * per_epoch  # in iterations
    progress_every = int(opts["progress_every"]) or max(1, iterations // 20)
    every, seconds = int(opts["checkpoint_every"]), float(opts.get("checkpoint_seconds", 0.0))
    theta = project(theta0.clone())
    torch_opt = _torch_optimiser(name, theta, opts, state)
    opt_before = None
    t_start = time.perf_counter()
    last_checkpoint = _clock()
    it = it0
    message, success, interrupted, diverged = "iteration limit reached", True, False, False

    def record(it, E, g, step):
        history["iteration"].append(it)
        history["objective"].append(E)
        history["gradient_norm"].append(float(torch.linalg.vector_norm(g)))
        history["step"].append(step)
        evaluated = it % eval_every == 0 or it == iterations
        if evaluated:
            mon = obj.monitor_chunked(theta, chunk) if mini else obj.monitor(theta)
            history["eval_iteration"].append(it)
            for k, v in mon.items():
                history[k].append(v)
        if not log or not (evaluated and mini or it % progress_every == 0 or it == iterations):
            return
        t = f"({time.perf_counter() - t_start:.1f}s)"
        if not mini:
            log(f"it {it:>6d}  E {E:.10e}  |g| {history['gradient_norm'][-1]:.3e}  step {step:.3e}  "
                f"acc {history['train_accuracy'][-1]:.3f}/{history['test_accuracy'][-1]:.3f}  {t}")
            return
        head = f"it {it:>6d}  epoch {it / per_epoch:<7.6g}"
        batch = f"batch E {E:.4e}  |g| {history['gradient_norm'][-1]:.3e}  step {step:.3e}"
        if evaluated:
            log(f"{head}  E {history['train_objective'][-1]:.10e}  acc {history['train_accuracy'][-1]:.3f}/"
                f"{history['test_accuracy'][-1]:.3f}  {batch}  {t}")
        else:
            log(f"{head}  {batch}  {t}")

    def committed_optimiser():
        return opt_before if opt_before is not None else torch_opt.state_dict()

    try:
        E, g = obj.batch_value_grad(theta, batches.indices(it))
        if not history["iteration"]:
            with DeferSigint():
                record(it, E, g, 0.0)
        while it < iterations:
            if not math.isfinite(E):
                success, message = False, "objective is not finite"
                break
            if batches.full and opts["gtol"] > 0 and float(torch.linalg.vector_norm(g)) <= opts["gtol"]:
                message = f"gradient norm ≤ gtol = {opts['gtol']}"
                break
            opt_before = _copy_state(torch_opt.state_dict())
            trial, step, why = _gradient_step(torch_opt, project, theta, g)
            if why is None:
                E_new, g_new = obj.batch_value_grad(trial, batches.indices(it + 1))
                why = _divergence(E_new, g_new, step)
            with DeferSigint():  # the commit: all of it, or (Ctrl-C before it) none of it
                if why is not None:
                    success, diverged = False, True
                    message = f"diverged at iteration {it + 1}: {why} (lr too large?)"
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
    with DeferSigint(deliver=False) as late:
        state["iteration"] = it
        res = _result(obj, theta, history, state, committed_optimiser(), success, message, interrupted)
        res.metrics.update({"function_evaluations": obj.evals, "gradient_evaluations": obj.grads})
        if mini:
            res.metrics.update({"batch_size": batches.size, "steps_per_epoch": per_epoch,
                                "epochs": it / per_epoch})
    if diverged:
        res.metrics["solver_status"] = "diverged"
    if interrupted or late.pending:
        res.interrupted, res.message = True, f"interrupted at iteration {it}"
        res.metrics["solver_status"] = "interrupted"
    return res


def _gradient_step(opt, project, theta, g):
    """(θ⁺, ‖θ⁺ − θ‖, why): one step of the torch optimiser ``opt`` from θ with the gradient g,
    projected; ``why`` says why the step overflowed the dtype (else None)."""
    p = opt.param_groups[0]["params"][0]
    p.data.copy_(theta)
    p.grad = g.clone()
    try:
        opt.step()
    except RuntimeError as e:  # a step size beyond the dtype's range (float32): torch refuses to convert it
        if "overflow" not in str(e):
            raise
        return theta, math.inf, f"the step overflowed {str(theta.dtype).removeprefix('torch.')}"
    with torch.no_grad():
        new = project(p.detach()).clone()
    return new, float(torch.linalg.vector_norm(new - theta)), None


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
    if name not in ("lbfgs", "adam", "sgd"):
        return None
    theta = theta.detach().clone()
    if name == "lbfgs":
        # One quasi-Newton iteration per step. max_eval must be given: its default, max_iter·5//4 = 1,
        # leaves the strong-Wolfe search 0 evaluations after the first trial, so any step that does
        # not decrease E at once was rejected and the iterate froze (max_ls = max_eval − 1 = 25).
        opt = torch.optim.LBFGS([theta], lr=opts["lr"], max_iter=1, max_eval=26, history_size=int(opts["history_size"]),
                                line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
    elif name == "sgd":
        opt = torch.optim.SGD([theta], lr=opts["lr"], momentum=opts["momentum"], nesterov=opts["nesterov"])
    else:
        opt = torch.optim.Adam([theta], lr=opts["lr"])
    if "torch_optimizer" in state:
        saved = state["torch_optimizer"]
        groups = saved.get("param_groups") if isinstance(saved, dict) else None
        # keys that tell the two optimisers apart and that every torch version has (newer versions
        # add others, which torch's load_state_dict fills in)
        required = {"lbfgs": {"lr", "max_iter", "history_size", "line_search_fn"}, "adam": {"lr", "betas", "eps"},
                    "sgd": {"lr", "momentum", "dampening", "nesterov"}}[name]
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
