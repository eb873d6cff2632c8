"""The CasADi engine: training as a discrete optimal control NLP solved by IPOPT (or by a
trust-region SQP with condensed steps), its costates from the multipliers, and the Hamiltonian
boundary value problem solved by Newton's method.

    solve(problem, train, test, params0, *, log=print, quiet=False) -> SolveResult
    gradient(problem, params, X, c) -> (E, grads)
    solve_ocp(ocp, tableau, N, controls='per-stage', tol=1e-12) -> OCPSolution
    hager_errors(tableau, Ns) -> {'N', 'state', 'costate', 'control'}

Modules, one per mathematical object: :mod:`.discretisation` (the RK step of any f and its
partner costate step), :mod:`.network` (a Problem's network per sample), :mod:`.nlp` (full-space
and reduced NLP), :mod:`.costates` (multipliers → costates), :mod:`.ipopt` (the solver run),
:mod:`.derivatives` (the full-space Jacobian and Hessian from per-sample blocks), :mod:`.condensed`
(the reduced Hessian by Riccati sweeps), :mod:`.lifted` (the SQP with condensed steps), :mod:`.bvp`
(Newton on the discrete Hamiltonian system), :mod:`.optimal_control` (general OCPs).
"""

from ocdl.casadi_backend.engine import gradient, solve
from ocdl.casadi_backend.optimal_control import OCPSolution, hager_errors, solve_ocp

__all__ = ["solve", "gradient", "solve_ocp", "hager_errors", "OCPSolution"]
