"""Discretise-then-optimise versus optimise-then-discretise, for any explicit Runge–Kutta tableau.

    instance     the problem instance (problem, data, seeded controls) a check runs on
    adjoints     OTD gradients: partner (Ã, b), same tableau backwards, continuous (solve_ivp)
    commutation  DTO vs OTD at the same controls, the bilinear invariant, refinement in h
    order        convergence orders of state, costate, gradient (and optimal control, CasADi)
    report       tables, checks, figures and ``ocdl verify all``'s report.md
"""

from ocdl.verify.instance import Instance, build_problem

__all__ = ["Instance", "build_problem"]
