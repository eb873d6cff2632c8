"""The PyTorch engine: the forward sweep, autograd and the hand-written partner adjoint, and
first-order optimisers, on CPU or GPU (``problem.device``), float64 by default.

Modules: :mod:`.network` (the forward sweep and the objective), :mod:`.adjoint` (the backward
sweep with the symplectic partner method), :mod:`.optim` (the optimisers on the flat θ).
Importing this package does not import torch; :class:`TorchEngine` does when it computes.
"""

from __future__ import annotations

import math

from ocdl.engine.base import Engine, Option, RunContext, count, nonnegative, one_of, positive, register


def _fraction(v):
    """A number in (0, 1)."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1
    return None if ok else "must be a number in (0, 1)"


def _above_one(v):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 1 and v < float("inf")
    return None if ok else "must be a finite number > 1"


def _at_least_one(v):
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1
    return None if ok else "must be an integer ≥ 1"


def _shrink(v):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1
    return None if ok else "must be a number in (0, 1]"


def _momentum(v):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1
    return None if ok else "must be a number in [0, 1)"


def _flag(v):
    return None if isinstance(v, bool) else "must be true or false"


_FLOAT32_MAX = 3.4028234663852886e38

COMMON = {
    "gradient": Option("adjoint", "gradient used by the optimiser: 'adjoint' (partner sweep) or 'autograd'",
                       one_of("adjoint", "autograd")),
    "eval_every": Option(0, "record test objective and accuracies every k iterations (0: iterations/200)", count),
    "progress_every": Option(0, "one progress line every k iterations (0: iterations/20)", count),
    "checkpoint_every": Option(0, "write a snapshot of the run directory every k iterations (0: by time only)", count),
    "checkpoint_seconds": Option(30.0, "write a snapshot of the run directory when this many seconds have passed "
                                       "since the last (0: by iterations only); a killed run loses at most this much",
                                 nonnegative),
    "gtol": Option(0.0, "stop when ‖∇E‖₂ ≤ gtol", nonnegative),
    "threads": Option(0, "torch CPU threads (0: 1 for small batches, else torch's default)", count),
}
SOLVER_OPTIONS = {
    "gd-armijo": {
        "c": Option(0.4, "Armijo constant: accept when E(θ⁺) ≤ E(θ) + c ⟨g, θ⁺ − θ⟩", _fraction),
        "rho": Option(0.5, "backtracking factor α ← ρ α", _fraction),
        "alpha_max": Option(10.0, "largest trial step", positive),
        "alpha0": Option(0.05, "α_prev before the first iteration (first trial 2 α₀)", positive),
        "max_backtracks": Option(60, "trials per iteration", _at_least_one),
    },
    "gd-lipschitz": {
        "L0": Option(0.1, "initial Lipschitz estimate (step 1/L)", positive),
        "grow": Option(1.5, "L ← grow·L on a rejected trial", _above_one),
        "shrink": Option(0.99, "L ← shrink·L after an accepted step", _shrink),
        "max_trials": Option(200, "trials per iteration", _at_least_one),
    },
    "lbfgs": {
        "lr": Option(1.0, "torch.optim.LBFGS learning rate", positive),
        "history_size": Option(20, "curvature pairs kept", _at_least_one),
    },
    "sgd": {
        "lr": Option(1e-2, "step length (torch.optim.SGD learning rate)", positive),
        "momentum": Option(0.9, "heavy-ball momentum μ: b ← μ b + g, θ ← θ − lr b (0: plain SGD)", _momentum),
        "nesterov": Option(False, "Nesterov momentum: θ ← θ − lr (g + μ b) (needs momentum > 0)", _flag),
    },
    "adam": {"lr": Option(1e-2, "torch.optim.Adam learning rate", positive)},
    # trust-region Newton–CG (ocdl.engine.torch.newton) with exact H·v (ocdl.engine.torch.hessian)
    "newton": {
        "tol": Option(1e-10, "stop when ‖∇E‖₂ ≤ tol·max(1, |E|) (‖Z∇E‖ on the simplex face; 0: never)",
                      nonnegative),
        "hessian": Option("exact", "curvature products: 'exact' (∇²E·v) or 'gauss-newton' (J_zᵀ H_z J_z v + ∇²R v, "
                                   "positive semidefinite)", one_of("exact", "gauss-newton")),
        "radius0": Option(1.0, "initial trust radius Δ₀", positive),
        "radius_max": Option(1e3, "largest trust radius", positive),
        "eta": Option(1e-4, "accept a trial when ρ = actual/predicted decrease > eta", _fraction),
        "forcing": Option(0.5, "CG stops at ‖r‖ ≤ min(forcing, √‖g‖)·‖g‖", _fraction),
        "cg_max": Option(0, "CG iterations per trial (0: the number of parameters)", count),
        "max_norm": Option(1e6, "report divergence when ‖θ‖ > max_norm·max(1, ‖θ₀‖)", positive),
    },
}
# the minibatch solvers' own options (ocdl.engine.torch.optim: minibatches, epochs, shuffling)
MINIBATCH = {
    "batch_size": Option(0, "samples per step (0, or ≥ the training samples m: the full batch, no shuffling)", count),
    "epochs": Option(0, "train this many epochs of ⌈m/batch_size⌉ steps (0: solver.iterations steps; > 0 takes "
                        "precedence over solver.iterations)", count),
    "seed": Option(None, "seed of the shuffling: epoch e visits the samples in the order "
                         "numpy.random.default_rng([seed, e]).permutation(m) (default: init.seed)", count),
    "eval_every": Option(0, "record the full objective, test objective and accuracies every k epochs (an epoch is "
                            "⌈m/batch_size⌉ iterations, one for the full batch; 0: about 200 records per run, at "
                            "least one per epoch)", count),
    "progress_every": Option(0, "one progress line every k iterations (0: iterations/20); with batch_size > 0 "
                                "also one at every record of the full objective", count),
}


class TorchEngine(Engine):
    """Solvers on the flat vector θ of the trained parameters (see :mod:`.optim`); the gradient
    by the partner adjoint (default) or autograd; evaluation by the adjoint sweep."""

    name = "torch"
    solvers = {
        "gd-armijo": "steepest descent with Armijo backtracking (the paper's RK-network runs)",
        "gd-lipschitz": "steepest descent with a Lipschitz estimate (the paper's learned-step runs)",
        "lbfgs": "torch.optim.LBFGS with a strong-Wolfe search",
        "adam": "torch.optim.Adam (projected for simplex steps); minibatches with batch_size > 0",
        "sgd": "stochastic gradient descent with momentum (optionally Nesterov), minibatches with batch_size > 0",
        "newton": "trust-region Newton–CG (Steihaug–Toint) with exact Hessian–vector products",
    }
    options = {name: {**opts, **COMMON, **(MINIBATCH if name in ("sgd", "adam") else {})}
               for name, opts in SOLVER_OPTIONS.items()}
    default_solver = "gd-armijo"
    resumable = True

    def check(self, problem, d: int) -> None:
        from ocdl.errors import OcdlError

        tab = problem.tableau
        if problem.has_skip and not tab.explicit:
            raise OcdlError(f"tableau {tab.name!r} is implicit; the PyTorch engine runs explicit tableaux only "
                            "(use --backend casadi)")
        opts = self.check_options(problem)
        name = problem.solver.name
        if name == "sgd" and opts["nesterov"] and opts["momentum"] == 0:
            raise OcdlError("solver.options.nesterov: Nesterov momentum needs momentum > 0")
        if opts.get("batch_size", 0) > 0 and opts["gtol"] > 0:
            raise OcdlError("solver.options.gtol: not used with minibatches (batch_size > 0): a batch gradient's "
                            "norm does not measure stationarity; use batch_size = 0 for gtol")
        if "lr" in opts and problem.dtype == "float32" and opts["lr"] > _FLOAT32_MAX:
            raise OcdlError(f"solver.options.lr: {opts['lr']!r} overflows float32 (largest {_FLOAT32_MAX:.4g}); "
                            "use a smaller lr or dtype float64")
        if name == "lbfgs" and problem.time_steps == "simplex" and "h" in problem.trainable():
            raise OcdlError("solver 'lbfgs' cannot keep h on the simplex; use gd-armijo, gd-lipschitz or adam")

    def memory_estimate(self, problem, d: int, m: int):
        """(bytes, what): 250 MB for torch itself, the parameters with the optimiser's copies of
        them (eight, plus two per L-BFGS curvature pair) and, on the CPU, the layer states that the
        gradient keeps: (N+1) m d numbers, s + 3 times (the partner adjoint) or 3(s + 1) times
        (autograd, or lbfgs). Measured (ru_maxrss, spiral, rk4, N = 15, width 2, float64,
        gd-armijo): m = 100: 237 MB, 20000: 266 MB, 80000: 352 MB (autograd 489 MB); m = 20000,
        lbfgs: 336 MB; m = 100, N = 20000: 397 MB, N = 80000: 874 MB; the formula is within −4 % … +30 % of these.
        Minibatches (sgd, adam with batch_size B in (0, m)) keep the states of B samples; the
        final evaluation runs in float64 over chunks of states ≤ 128 MiB; where either is below m,
        the inputs and y^[N] of all m samples (three m·d arrays) are added."""
        opts = dict(problem.solver.options) if problem.solver.backend == self.name else {}
        n_theta = sum(math.prod(v) for v in problem.param_shapes(d).values())
        copies = 8 + (2 * opts.get("history_size", 20) if problem.solver.name == "lbfgs" else 0)
        need, what = 250 * 2**20 + 8 * copies * n_theta, f"{n_theta:.3g} parameters"
        if not str(problem.device).startswith("cuda"):
            s = problem.n_stages if problem.has_skip else 1
            lean = opts.get("gradient", "adjoint") == "adjoint" and problem.solver.name != "lbfgs"
            per = s + 3 if lean else 3 * (s + 1)
            if problem.solver.name == "newton":  # the recorded sweep and its recorded gradient (ocdl.engine.torch.hessian)
                per = 6 * (s + 1)
            size = 4 if problem.dtype == "float32" else 8
            B = int(opts.get("batch_size", 0) or 0) if problem.solver.name in ("sgd", "adam") else 0
            cols = B if 0 < B < m else m  # the samples of one gradient
            # the final evaluation (float64) by chunks (ocdl.engine.torch.optim.eval_chunk)
            from ocdl.engine.torch.optim import eval_chunk

            ev = eval_chunk(problem.N, d, m)
            need += (problem.N + 1) * d * max(cols * size, ev * 8) * per
            if cols < m or ev < m:  # the data (train and test inputs) and y^[N] beside the sweeps' states
                need += 3 * m * d * 8
            what += " and the layer states"
        return int(need), what

    def memory_hint(self, problem, d: int, m: int, limit: int) -> str:
        return "use fewer layers (--layers), fewer samples (--n) or a smaller width (--width)"

    def solve(self, problem, data, params0, run: RunContext):
        from ocdl.engine.torch.network import TorchNetwork, configure_threads
        from ocdl.engine.torch.optim import Objective, optimise

        from ocdl.problem import dims

        train, test = data
        d, K = dims(params0)
        opts = self.check_options(problem)
        configure_threads(train.n, d, int(opts["threads"]))
        net = TorchNetwork(problem, d, classes=K)
        base = net.to_torch(params0)
        obj = Objective(net, base, problem.trainable(), net.inputs(train.X), net.targets(train.c),
                        net.inputs(test.X), net.targets(test.c))
        return optimise(obj, problem, obj.flat(base), _iterations(problem, opts, train.n, run.log), opts,
                        state=run.state, history=run.history, log=run.log, checkpoint=run.checkpoint)

    def evaluate(self, problem, params, data, device: str = "cpu", dtype: str = "float64"):
        """E by the forward sweep, ∇E by the partner adjoint, on ``device`` in ``dtype``
        (float64 on the CPU unless told otherwise, whatever the problem trains in)."""
        import torch

        from ocdl.engine.torch.adjoint import grad_adjoint
        from ocdl.engine.torch.network import TorchNetwork
        from ocdl.engine.torch.optim import eval_chunk
        from ocdl.problem import dims

        train, test = data
        d, K = dims(params)
        net = TorchNetwork(problem, d, device=device, dtype=dtype, classes=K)
        prm = net.to_torch(params)
        Y0, c = net.inputs(train.X), net.targets(train.c)
        Y0_test, c_test = net.inputs(test.X), net.targets(test.c)
        chunk = eval_chunk(problem.N, d, Y0.shape[1])
        if chunk < Y0.shape[1]:
            return self._evaluate_chunked(net, prm, Y0, c, Y0_test, c_test, chunk)
        E, g = grad_adjoint(net, prm, Y0, c)
        with torch.no_grad():
            E_test = float(net.objective(prm, Y0_test, c_test))
            yN = net.forward(prm, Y0)
        return evaluation_of(E, g, E_test, net.accuracy(prm, Y0, c), net.accuracy(prm, Y0_test, c_test), yN,
                             self.name)

    def _evaluate_chunked(self, net, prm, Y0, c, Y0_test, c_test, chunk):
        """:meth:`evaluate` over ``chunk`` columns at a time (:func:`~ocdl.engine.torch.optim.chunked_gradient`):
        the memory of the sweeps O(chunk·N·d), for training sets whose layer states exceed 128 MiB."""
        from ocdl.engine.torch.optim import chunked_gradient, chunked_objective

        E, g = chunked_gradient(net, prm, Y0, c, chunk)
        _, acc, yN = chunked_objective(net, prm, Y0, c, chunk, keep_states=True)
        E_test, acc_test, _ = chunked_objective(net, prm, Y0_test, c_test, chunk)
        return evaluation_of(E, g, E_test, acc, acc_test, yN, self.name)

    def states(self, problem, params, X, device: str = "cpu", dtype: str = "float64"):
        import numpy as np
        import torch

        from ocdl.engine.torch.network import TorchNetwork

        from ocdl.problem import dims

        d, K = dims(params)
        net = TorchNetwork(problem, d, device=device, dtype=dtype, classes=K)
        with torch.no_grad():
            _, ys = net.forward(net.to_torch(params), net.inputs(X), keep_states=True)
        return np.stack([y.cpu().numpy().T for y in ys])


def _iterations(problem, opts: dict, m: int, log=None) -> int:
    """The iteration limit: ``epochs`` · ⌈m/B⌉ where the solver has epochs > 0 (B = batch_size, m
    where 0 or ≥ m), else ``solver.iterations``."""
    epochs, B = int(opts.get("epochs", 0)), int(opts.get("batch_size", 0))
    if not epochs:
        return problem.solver.iterations
    n = epochs * -(-m // (B if 0 < B < m else m))
    if log and n != problem.solver.iterations:
        log(f"epochs = {epochs}: {n} iterations (solver.iterations = {problem.solver.iterations} is not used)")
    return n


def evaluation_of(E, g, E_test, train_accuracy, test_accuracy, yN, engine: str):
    """The :class:`~ocdl.result.Evaluation` of a torch-side evaluation: E and ∇E (a dict of
    tensors over the trained keys, given as float64 arrays with ‖∇E‖₂ and ‖∇E‖∞), the test
    objective, the accuracies and the final states y^[N] (a tensor or an array, d × n)."""
    import numpy as np
    import torch

    from ocdl.result import Evaluation

    gflat = torch.cat([v.reshape(-1) for v in g.values()])
    states = yN.detach().cpu().numpy().astype("float64") if torch.is_tensor(yN) else np.ascontiguousarray(yN)
    return Evaluation(
        objective=float(E),
        test_objective=E_test,
        gradient={k: v.detach().cpu().numpy().astype("float64") for k, v in g.items()},
        gradient_norm=float(torch.linalg.vector_norm(gflat)),
        gradient_norm_inf=float(gflat.abs().max()),
        train_accuracy=train_accuracy,
        test_accuracy=test_accuracy,
        states=states,
        engine=engine,
    )


ENGINE = register(TorchEngine())
