"""The library's calls: solve a :class:`~ocdl.problem.Problem` in an engine, evaluate it at given
parameters, list the engines. The command line is a thin layer over these.

    result = solve(problem, engine="casadi", solver="ipopt", tol=1e-10, init=params)
    ev = evaluate(problem, params, engine="torch")
    engines()        # {"torch": ("gd-armijo", …), "casadi": ("ipopt", "sqp", "bvp")}
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ocdl import data as data_mod, problem as problem_mod
from ocdl.engine import base as engines_mod
from ocdl.engine.base import Engine, RunContext
from ocdl.errors import OcdlError
from ocdl.result import Evaluation, Result, SolveResult

__all__ = ["solve", "evaluate", "states", "engines", "prepare", "with_solver", "finish"]


def engines() -> dict[str, tuple[str, ...]]:
    """The registered engines and their solvers: {engine name: (solver names)}."""
    return engines_mod.engines()


def with_solver(problem, engine: str | None = None, solver: str | None = None,
                iterations: int | None = None, options: Mapping | None = None):
    """``problem`` with its solver section replaced where given. A change of engine or solver
    starts from that solver's defaults (the problem's options belong to its own solver); else
    ``options`` update the problem's."""
    _check_problem(problem)
    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int)):
        raise OcdlError(f"iterations: expected an integer, got {type(iterations).__name__} {iterations!r}")
    sol = problem.solver
    eng = engines_mod.get(engine if engine is not None else sol.backend)
    name = solver if solver is not None else (sol.name if eng.name == sol.backend else eng.default_solver)
    same = eng.name == sol.backend and name == sol.name
    opts = {**(dict(sol.options) if same else {}), **dict(options or {})}
    if same and iterations is None and not options:
        return problem
    return problem.replace(solver=problem_mod.SolverSpec(
        backend=eng.name, name=name, iterations=sol.iterations if iterations is None else int(iterations),
        options=opts))


def prepare(problem, init=None):
    """(engine, (train, test), params0): the engine, the data and validated initial parameters,
    every check done that can be done before a solve (tableau, width, data, labels, options,
    memory). An inconsistent tableau (Σ b_i ≠ 1) is refused unless the problem's
    ``network.allow_inconsistent``."""
    _check_problem(problem)
    engine = engines_mod.get(problem.solver.backend)
    problem_mod.check_consistent(problem)
    if problem.data.name in data_mod.GENERATORS:  # the size is known before the draw: check it first
        engine.check(problem, problem.width(2))
        engine.check_memory(problem, problem.width(2), problem.data.n)
    train, test = lifted_data(problem)
    d = problem.width(train.dim)
    if train.n < 2:
        raise OcdlError(f"data: the training set holds {train.n} sample; training needs at least 2, of at least "
                        "two classes")
    K = problem_mod.classes(problem, train)
    if test.n and test.classes > K:
        raise OcdlError(f"data: test label {test.classes - 1} is outside the training classes 0 … {K - 1}")
    engine.check(problem, d)
    engine.check_memory(problem, d, train.n)
    params0 = initial_params(problem, d, init, K)
    return engine, (train, test), params0


def lifted_data(problem):
    """(train, test) of ``problem``, with the features mapped to the width d by the problem's
    lifting where it is not zero-padding (which the engines apply themselves)."""
    train, test = data_mod.make(problem.data)
    L = lifting_of(problem, train)
    if L.kind == "pad":
        return train, test
    return data_mod.Dataset(L(train.X), train.c), data_mod.Dataset(L(test.X), test.c)


def lifting_of(problem, train=None):
    """The problem's :class:`ocdl.lifting.Lifting`, built from its training features ``train``
    (default: the problem's data)."""
    from ocdl import lifting

    if train is None:
        train, _ = data_mod.make(problem.data)
    net = problem.network
    return lifting.make(net.lift or "pad", problem.width(train.dim), train.X, net.lift_seed or 0)


def initial_params(problem, d: int, init=None, K: int = 2) -> dict:
    """The seeded initial parameters for width d and K classes, or ``init`` (a dict of arrays, a
    run directory, a .npz) checked against the problem's shapes; a fixed classifier keeps the
    problem's W, μ."""
    from ocdl import rundir

    if init is None:
        params0 = problem_mod.init_params(problem, d, K)
    else:
        from_file = isinstance(init, (str, Path))
        raw = rundir.load_params(init) if from_file else init
        params0 = problem_mod.check_params(problem, raw, d, source=f"initial parameters {init}" if from_file
                                           else "initial parameters", K=K)
    if not problem.classifier.trainable:
        ref = problem_mod.init_params(problem, d, K)
        params0["W"], params0["mu"] = ref["W"], ref["mu"]
    return params0


def finish(problem, engine: Engine, out: SolveResult, data, wall_time_s: float,
           evaluator: str | Engine | None = None) -> Result:
    """The :class:`Result` of a solve: ``out`` with the evaluation at its parameters by
    ``evaluator`` (default: the engine that solved)."""
    ev = engines_mod.get(evaluator or engine).evaluate(problem, out.params, data)
    status = "interrupted" if out.interrupted else ("ok" if out.success else "failed")
    kkt = out.metrics.get("kkt_residual")
    return Result(
        params=out.params, objective=ev.objective, gradient_norm=ev.gradient_norm,
        kkt_residual=None if kkt is None else float(kkt), costates=out.costates, status=status,
        message=out.message, iterations=int(out.metrics.get("iterations", 0)), history=out.history,
        wall_time_s=wall_time_s, engine=engine.name, solver=problem.solver.name, metrics=dict(out.metrics),
        evaluation=ev, state=out.state,
    )


def solve(problem, engine: str | None = None, solver: str | None = None, *, init=None,
          iterations: int | None = None, log: Callable[[str], None] | None = None,
          evaluator: str | None = None, allow_inconsistent: bool = False, **options) -> Result:
    """Solve ``problem`` and return its :class:`~ocdl.result.Result`.

    ``engine`` and ``solver`` (default: the problem's ``[solver]``), ``iterations`` and solver
    ``options`` (``tol=1e-10``, ``lr=…``; see ``ocdl.engine.get(name).options``) replace the
    problem's; ``init`` the initial parameters (a dict such as ``result.params``, a run directory
    or .npz; default: the problem's seeded draw); ``log`` receives progress lines (default: none).
    The result is evaluated by the engine that solved it, or by ``evaluator``. A tableau with
    Σ b_i ≠ 1 (inconsistent: ODE order 0) is refused unless ``allow_inconsistent=True`` (or the
    problem's ``network.allow_inconsistent``). Bad input, or a problem whose estimated memory
    exceeds what is available, raises :class:`~ocdl.errors.OcdlError` before any work."""
    t0 = time.perf_counter()
    if log is not None and not callable(log):
        raise OcdlError(f"log: expected a function of one string (e.g. print), got {type(log).__name__}")
    problem = with_solver(problem, engine, solver, iterations, options)
    if allow_inconsistent:
        problem = problem.replace(network__allow_inconsistent=True)
    eng, data, params0 = prepare(problem, init)
    out = eng.solve(problem, data, params0, RunContext(log=log))
    return finish(problem, eng, out, data, time.perf_counter() - t0, evaluator)


def evaluate(problem, params: Mapping[str, np.ndarray], engine: str | None = None) -> Evaluation:
    """The objective E, its gradient, the accuracies and the final states y^[N] of ``problem``
    at ``params`` (dict of arrays), computed by ``engine`` (default: the problem's)."""
    _check_problem(problem)
    eng = engines_mod.get(engine or problem.solver.backend)
    train, test = lifted_data(problem)
    d = problem.width(train.dim)
    prm = problem_mod.check_params(problem, params, d, K=problem_mod.classes(problem, train))
    return eng.evaluate(problem, prm, (train, test))


def states(problem, params: Mapping[str, np.ndarray], X, engine: str | None = None,
           lifted: bool = False) -> np.ndarray:
    """The layer states y^[0], …, y^[N] of the points ``X`` (m × dim) at ``params``, by ``engine``
    (default: the problem's): an array (N+1, m, d). ``lifted``: X are already mapped by the
    problem's lifting (the features of the data sets a solve sees), else it is applied here."""
    _check_problem(problem)
    eng = engines_mod.get(engine or problem.solver.backend)
    try:
        n = np.shape(X)[0] if np.ndim(X) else 0
    except (TypeError, ValueError):  # ragged
        n = 0
    X = data_mod.from_arrays(X, np.zeros(n), "X").X
    if not lifted and problem.network.lift not in (None, "pad"):
        X = lifting_of(problem)(X)
    d = problem.width(X.shape[1])
    return eng.states(problem, problem_mod.check_params(problem, params, d), X)


def _check_problem(problem) -> None:
    if not isinstance(problem, problem_mod.Problem):
        raise OcdlError(f"expected an ocdl.Problem, got {type(problem).__name__}")
