"""The CasADi engine: training as a discrete optimal control NLP solved by IPOPT (or by a
trust-region SQP with condensed steps), its costates from the multipliers, and the Hamiltonian
boundary value problem solved by Newton's method.

    CasadiEngine().solve(problem, (train, test), params0, run) -> SolveResult
    CasadiEngine().evaluate(problem, params, (train, test)) -> Evaluation
    gradient(problem, params, X, c) -> (E, grads)
    solve_ocp(ocp, tableau, N, controls='per-stage', tol=1e-12) -> OCPSolution
    hager_errors(tableau, Ns) -> {'N', 'state', 'costate', 'control'}

Modules, one per mathematical object: :mod:`.discretisation` (the RK step of any f and its
partner costate step), :mod:`.network` (a Problem's network per sample), :mod:`.nlp` (full-space
and reduced NLP), :mod:`.costates` (multipliers → costates, and the numeric adjoint sweep),
:mod:`.ipopt` (the solver run), :mod:`.derivatives` (the full-space Jacobian and Hessian from
per-sample blocks), :mod:`.condensed` (the reduced Hessian by Riccati sweeps), :mod:`.lifted` (the
SQP with condensed steps), :mod:`.bvp` (Newton on the discrete Hamiltonian system),
:mod:`.optimal_control` (general OCPs). Importing this package does not import casadi.
"""

from __future__ import annotations

import importlib

from ocdl.engine.base import Engine, Option, RunContext, count, one_of, positive, register


def _table(v):
    return None if isinstance(v, dict) else "must be a table of IPOPT options"


_NLP_OPTIONS = {
    "tol": Option(1e-10, "KKT tolerance (IPOPT's tol; the SQP's and Newton's stopping test)", positive),
    "hessian": Option("exact", "Hessian of the Lagrangian: 'exact' or IPOPT's 'lbfgs'", one_of("exact", "lbfgs")),
    "formulation": Option("full", "'full' (states as variables, costates = multipliers) or 'reduced' "
                                  "(states eliminated)", one_of("full", "reduced")),
    "stages": Option("auto", "full space: stage slopes 'eliminated' or 'variables' ('auto': by the tableau)",
                     one_of("auto", "eliminated", "variables")),
    "max_iter": Option(None, "iteration limit (default: solver.iterations if > 0, else 3000)", count),
    "derivatives": Option("structured", "'structured' (per-sample blocks, Riccati sweeps) or 'casadi' "
                                        "(CasADi's AD of the whole graph)", one_of("structured", "casadi")),
    "jit": Option("auto", "compile the per-sample functions with the C compiler: 'auto', true, false",
                  one_of("auto", True, False)),
    "ipopt": Option({}, "extra IPOPT options (a table)", _table),
    "start": Option("initial", "'initial', or 'reduced': solve the reduced NLP first (full-space ipopt)",
                    one_of("initial", "reduced")),
}


class CasadiEngine(Engine):
    """The full-space (or reduced) NLP in CasADi; its KKT system is the discrete Hamiltonian BVP."""

    name = "casadi"
    solvers = {
        "ipopt": "IPOPT (MUMPS) on the full-space or reduced NLP, exact Hessian",
        "sqp": "trust-region SQP whose KKT systems are solved by condensing (lifted Newton)",
        "bvp": "Newton's method on the discrete Hamiltonian boundary value problem",
    }
    options = {name: dict(_NLP_OPTIONS) for name in solvers}
    default_solver = "ipopt"

    def check(self, problem, d: int) -> None:
        from ocdl.engine.casadi.engine import engine_options

        self.check_options(problem)
        engine_options(problem)

    def solve(self, problem, data, params0, run: RunContext):
        from ocdl.engine.casadi.engine import solve

        train, test = data
        return solve(problem, train, test, params0, log=run.log or (lambda s: None), quiet=run.log is None)

    def evaluate(self, problem, params, data):
        from ocdl.engine.casadi.engine import evaluate

        return evaluate(problem, params, *data)

    def states(self, problem, params, X):
        from ocdl.engine.casadi.engine import states

        return states(problem, params, X)


ENGINE = register(CasadiEngine())

_LAZY = {"solve": "engine", "gradient": "engine", "evaluate": "engine", "solve_ocp": "optimal_control",
         "hager_errors": "optimal_control", "OCPSolution": "optimal_control"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"ocdl.engine.casadi.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ocdl.engine.casadi' has no attribute {name!r}")


__all__ = ["CasadiEngine", "ENGINE", "solve", "gradient", "evaluate", "solve_ocp", "hager_errors", "OCPSolution"]
