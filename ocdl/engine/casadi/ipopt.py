"""IPOPT through CasADi: options, one progress line per iteration, and the solver's outcome.

IPOPT's own output is silenced (print_level 0); a CasADi iteration callback reads the solver's
statistics after every iteration and prints ``it, objective, inf_pr, inf_du`` through ``log``.
The 'acceptable' termination heuristic is switched off (acceptable_iter = 0) so that a run stops
only at ``tol`` (or fails with IPOPT's status).
"""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import casadi as ca
import numpy as np

from ocdl.interrupt import StopOnSigint

SUCCESS = ("Solve_Succeeded",)


@dataclass
class Outcome:
    x: np.ndarray
    f: float
    lam_g: np.ndarray
    lam_x: np.ndarray
    status: str
    success: bool
    iterations: int
    solve_time_s: float
    history: dict = field(default_factory=dict)
    interrupted: bool = False


class _Progress(ca.Callback):
    """Called by IPOPT after each iteration; prints the last entry of the solver's statistics."""

    def __init__(self, nx, ng, log, quiet):
        ca.Callback.__init__(self)
        self.nx, self.ng, self.log, self.quiet = nx, ng, log, quiet
        self.solver = None
        self.stop = StopOnSigint()
        self.construct("ocdl_progress", {})

    def get_n_in(self):
        return ca.nlpsol_n_out()

    def get_n_out(self):
        return 1

    def get_name_in(self, i):
        return ca.nlpsol_out(i)

    def get_name_out(self, i):
        return "ret"

    def get_sparsity_in(self, i):
        name = ca.nlpsol_out(i)
        if name == "f":
            return ca.Sparsity.scalar()
        if name in ("x", "lam_x"):
            return ca.Sparsity.dense(self.nx)
        if name in ("g", "lam_g"):
            return ca.Sparsity.dense(self.ng)
        return ca.Sparsity(0, 0)

    def has_eval_buffer(self):
        return True

    def eval_buffer(self, arg, res):
        """Evaluated on CasADi's buffers (the iterate is not converted); returns 1 to stop IPOPT."""
        if not self.quiet and self.solver is not None and not self.stop.requested:
            it = self.solver.stats().get("iterations", {})
            if it.get("obj"):
                k = len(it["obj"]) - 1
                self.log(
                    f"ipopt {k:5d}  E = {it['obj'][k]:.12e}  inf_pr = {it['inf_pr'][k]:.2e}  "
                    f"inf_du = {it['inf_du'][k]:.2e}  alpha = {it['alpha_pr'][k]:.2e}"
                )
        np.frombuffer(res[0], dtype=np.float64)[0] = 1.0 if self.stop.requested else 0.0
        return 0


def options(tol: float, max_iter: int, hessian: str, extra: dict | None = None) -> dict:
    """CasADi nlpsol options for IPOPT."""
    ip = {
        "tol": tol,
        "acceptable_iter": 0,
        "constr_viol_tol": min(1e-4, max(tol, 1e-14)),
        "max_iter": int(max_iter),
        "mu_strategy": "adaptive",
        "linear_solver": "mumps",
        "honor_original_bounds": "yes",  # e.g. h ≥ 0 exactly on the simplex
        "print_level": 0,
        "sb": "yes",
    }
    if hessian == "lbfgs":
        ip["hessian_approximation"] = "limited-memory"
    ip.update(extra or {})
    return {"ipopt": ip, "print_time": False, "error_on_fail": False}


_BLAS_THREADS_SET = False


def single_threaded_blas() -> int | None:
    """Run the BLAS under CasADi's IPOPT/MUMPS — CasADi's bundled OpenBLAS, which starts one thread
    per core and which threadpoolctl does not see — on one thread; returns the thread count then
    in force (None where the library is not found, e.g. another CasADi build).

    MUMPS's fronts are small here: on the full-space euler bench two threads gave the same time
    per iteration as one (0.297 against 0.306 s) at twice the CPU time, and a different iteration
    path (85 against 93 iterations to the same minimiser) — a result that depended on the
    machine's core count. One thread makes it the same on every machine. An explicit
    ``OPENBLAS_NUM_THREADS`` in the environment is left as the user set it."""
    global _BLAS_THREADS_SET
    libs = sorted(Path(ca.__file__).parent.glob("libcasadi-tp-openblas*"))
    if not libs:
        return None
    try:
        lib = ctypes.CDLL(str(libs[0]))  # the copy IPOPT's plugin links (same soname: loaded once)
        if not _BLAS_THREADS_SET and "OPENBLAS_NUM_THREADS" not in os.environ:
            lib.openblas_set_num_threads(1)
            _BLAS_THREADS_SET = True
        return int(lib.openblas_get_num_threads())
    except (OSError, AttributeError):
        return None


def solve(nlp: dict, x0, lbx, ubx, lbg, ubg, opts: dict, log=print, quiet=False, nlp_opts: dict | None = None):
    """Run IPOPT; returns (Outcome, build_time_s)."""
    single_threaded_blas()
    t0 = time.perf_counter()
    nx, ng = nlp["x"].shape[0], nlp["g"].shape[0]
    cb = _Progress(nx, ng, log, quiet)
    solver = ca.nlpsol("ocdl_ipopt", "ipopt", nlp, {**opts, **(nlp_opts or {}), "iteration_callback": cb})
    cb.solver = solver
    build = time.perf_counter() - t0
    t1 = time.perf_counter()
    with StopOnSigint() as cb.stop:
        sol = solver(x0=x0, lbx=lbx, ubx=ubx, lbg=lbg, ubg=ubg)
    solve_time = time.perf_counter() - t1
    st = solver.stats()
    it = st.get("iterations", {})
    n = len(it.get("obj", []))
    history = {
        "iteration": list(range(n)),
        "objective": [float(v) for v in it.get("obj", [])],
        "inf_pr": [float(v) for v in it.get("inf_pr", [])],
        "inf_du": [float(v) for v in it.get("inf_du", [])],
    }
    status = str(st.get("return_status", "unknown"))
    out = Outcome(
        x=np.array(sol["x"]).reshape(-1),
        f=float(sol["f"]),
        lam_g=np.array(sol["lam_g"]).reshape(-1),
        lam_x=np.array(sol["lam_x"]).reshape(-1),
        status=status,
        success=status in SUCCESS and bool(np.isfinite(float(sol["f"]))),
        iterations=int(st.get("iter_count", max(n - 1, 0))),
        solve_time_s=solve_time,
        history=history,
        interrupted=cb.stop.requested,
    )
    return out, build
