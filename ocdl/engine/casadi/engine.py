"""The CasADi engine's entry points: ``solve`` (IPOPT on the full-space or reduced NLP, or Newton
on the Hamiltonian BVP) and ``gradient`` (CasADi AD of the reduced objective)."""

from __future__ import annotations

import time

import casadi as ca
import numpy as np

from ocdl import problem as problem_mod
from ocdl.engine.casadi import costates as costates_mod, ipopt
from ocdl.engine.casadi.condensed import ReducedHessian
from ocdl.engine.casadi.derivatives import structured_derivatives
from ocdl.engine.casadi.lifted import LiftedSQP
from ocdl.engine.casadi.network import jit_available
from ocdl.engine.casadi.nlp import NetworkNLP
from ocdl.data import lift
from ocdl.errors import OcdlError
from ocdl.result import SolveResult



def engine_options(problem) -> dict:
    """The validated options of ``problem.solver.options`` that this engine reads:
    tol (1e-10), hessian ('exact' | 'lbfgs'), formulation ('full' | 'reduced'),
    stages ('auto' | 'eliminated' | 'variables'), max_iter (solver.iterations if > 0, else 3000),
    derivatives ('structured': the full-space derivatives assembled from per-sample blocks,
    :mod:`.derivatives`, and the reduced Hessian by the second-order adjoint, :mod:`.condensed`;
    'casadi': CasADi's own AD of the whole graph),
    jit (structured derivatives only; 'auto': compile the per-sample functions with the system C
    compiler when one exists and m·N ≥ 10⁴; true; false), ipopt (a dict of extra IPOPT options),
    start ('initial': IPOPT starts at the given parameters, states by forward simulation;
    'reduced', full-space IPOPT only: first solve the reduced NLP from them, then start the
    full-space NLP at its solution)."""
    from ocdl.engine.casadi import ENGINE

    o = ENGINE.check_options(problem)  # defaults filled in, each value checked
    if o["max_iter"] is None:
        o["max_iter"] = problem.solver.iterations if problem.solver.iterations > 0 else 3000
    if problem.solver.name == "sqp":
        _check_sqp(problem, o, o["hessian"], o["stages"], o["formulation"])
    if o["start"] == "reduced" and (problem.solver.name != "ipopt" or o["formulation"] != "full"):
        raise OcdlError("solver.options.start = 'reduced' starts the full-space IPOPT solve at the reduced NLP's "
                        "solution; it needs --solver ipopt --formulation full")
    return {**o, "tol": float(o["tol"]), "ipopt": dict(o["ipopt"])}


def _check_sqp(problem, o, hessian, stages, formulation):
    """What the trust-region SQP with condensed steps (:mod:`.lifted`) needs."""
    if problem.has_skip and not problem.tableau.explicit:
        raise OcdlError(f"--solver sqp needs an explicit tableau; {problem.tableau.name!r} is implicit (use ipopt)")
    if problem.time_steps == "simplex":
        raise OcdlError("--solver sqp does not handle the simplex constraint on learned step sizes (use ipopt)")
    if hessian != "exact":
        raise OcdlError("--solver sqp uses the exact Hessian; --hessian lbfgs is for ipopt")
    if formulation == "full" and stages == "variables":
        raise OcdlError("--solver sqp eliminates the stages; stages = 'variables' is for ipopt")
    if o.get("derivatives", "structured") != "structured":
        raise OcdlError("--solver sqp computes its derivatives by the Riccati sweeps; derivatives = 'casadi' is for ipopt")
    if o.get("ipopt"):
        raise OcdlError("solver.options.ipopt: IPOPT options given to --solver sqp")


def _inputs(problem, train, params0):
    if problem.solver.backend != "casadi":
        raise OcdlError(f"the CasADi engine was asked to solve a problem for backend {problem.solver.backend!r}")
    if problem.dtype != "float64":
        raise OcdlError("the CasADi engine computes in float64; set dtype = 'float64'")
    d, K = problem_mod.dims(params0)
    params0 = problem_mod.check_params(problem, params0, d, source="initial parameters", K=K)
    X = np.asarray(train.X, dtype=np.float64)
    if not np.all(np.isfinite(X)):
        raise OcdlError("data: features contain NaN or inf")
    return d, params0, lift(X, d).T.copy(), np.asarray(train.c, dtype=np.float64)


def warn_well_posed(problem, tol, log):
    if tol < 1e-6 and not problem.is_well_posed():
        missing = [k for k in problem.trainable() if problem.tikhonov()[k] <= 0]
        log(
            f"warning: tol = {tol:g} asks for a high-accuracy solve, but the trained parameter(s) "
            f"{', '.join(missing)} carry no Tikhonov term; without one the training problem may have no "
            "finite minimiser and the solver may not converge (add --reg-tikhonov)"
        )


def solve(problem, train, test, params0, *, log=print, quiet=False) -> SolveResult:
    """Train ``problem`` with IPOPT (``solver.name = 'ipopt'``), the trust-region SQP with condensed
    steps (``'sqp'``, :mod:`.lifted`) or Newton on the Hamiltonian BVP (``'bvp'``) from ``params0``;
    see :mod:`ocdl.engine.casadi`."""
    t_start = time.perf_counter()
    log = log or (lambda s: None)
    opts = engine_options(problem)
    d, params0, Y0, c = _inputs(problem, train, params0)
    warn_well_posed(problem, opts["tol"], log)
    if problem.solver.name == "bvp":
        from ocdl.engine.casadi import bvp

        return bvp.solve(problem, Y0, c, params0, opts, log=log, quiet=quiet, t_start=t_start)
    if problem.solver.name not in ("ipopt", "sqp"):
        raise OcdlError(f"the CasADi engine has no solver {problem.solver.name!r} (ipopt, sqp, bvp)")
    start, t_nlp = None, t_start
    if opts["start"] == "reduced":
        # the reduced NLP first (same tolerance and options), then the full-space NLP from its
        # solution: states by forward simulation, multipliers by IPOPT's least-squares estimate
        if not quiet:
            log("casadi: start = reduced: solving the reduced NLP first")
        pre = solve(problem.replace(solver__options={**problem.solver.options, "formulation": "reduced",
                                                     "start": "initial"}),
                    train, test, params0, log=log, quiet=quiet)
        if pre.interrupted:
            return pre
        start = {"formulation": "reduced", "solver_status": pre.metrics["solver_status"],
                 "iterations": pre.metrics["iterations"], "kkt_residual": pre.metrics["kkt_residual"],
                 "build_time_s": pre.metrics["build_time_s"], "solve_time_s": pre.metrics["solve_time_s"],
                 "wall_time_s": pre.metrics["wall_time_s"]}
        params0, t_nlp = pre.params, time.perf_counter()
    full = opts["formulation"] == "full"
    sqp = problem.solver.name == "sqp"
    structured = (opts["derivatives"] == "structured" and (not problem.has_skip or problem.tableau.explicit)
                  and (not full or opts["stages"] != "variables"))
    jit = structured and (opts["jit"] if opts["jit"] != "auto" else (jit_available() and Y0.shape[1] * problem.N >= 10_000))
    nlp = NetworkNLP(problem, Y0, c, params0, opts["formulation"], opts["stages"], jit=jit)
    nlp_opts = None
    if sqp:
        method = LiftedSQP(nlp, lifted=full)
    elif structured:
        if full:
            nlp_opts = structured_derivatives(nlp)
        elif opts["hessian"] == "exact":  # ∇E comes with the Hessian's sweeps (one pass per iterate)
            rh = ReducedHessian(nlp)
            nlp_opts = {"grad_f": rh.gradient_callback(), "hess_lag": rh.callback()}
    build_nlp = time.perf_counter() - t_nlp
    if not quiet:
        log(f"casadi: {opts['formulation']} NLP, {nlp.x.shape[0]} variables, {nlp.g.shape[0]} constraints, "
            f"stages {nlp.stages}, hessian {opts['hessian']}, tol {opts['tol']:g}, "
            f"{'trust-region SQP, condensed steps' if sqp else 'IPOPT'}")
    if sqp:
        out, build_solver = method.solve(nlp.layout.pack(params0), opts["tol"], opts["max_iter"], log=log, quiet=quiet), 0.0
    else:
        out, build_solver = ipopt.solve(
            {"x": nlp.x, "f": nlp.f, "g": nlp.g}, nlp.initial_guess(params0), nlp.lbx, nlp.ubx, nlp.lbg, nlp.ubg,
            ipopt.options(opts["tol"], opts["max_iter"], opts["hessian"], opts["ipopt"]), log=log, quiet=quiet,
            nlp_opts=nlp_opts if opts["hessian"] == "exact" else ({"jac_g": nlp_opts["jac_g"]} if full and nlp_opts else None),
        )
    theta = out.x[: nlp.layout.size]
    params = nlp.layout.unpack(theta, base=params0)
    finite = bool(np.all(np.isfinite(out.x)))
    kkt, viol = nlp.kkt(out.x, out.lam_g, out.lam_x) if finite else (float("nan"), float("nan"))
    costates = None
    if finite:
        costates = (costates_mod.from_multipliers(nlp, out.x, out.lam_g) if opts["formulation"] == "full"
                    else costates_mod.backward_sweep(nlp, theta))
    success = out.success and finite
    message = "" if success else f"{'SQP' if sqp else 'IPOPT'} did not converge: {out.status}"
    if out.interrupted:
        message = "interrupted"
    if not finite:
        params = {k: np.array(v) for k, v in params0.items()}
        message = f"{'SQP' if sqp else 'IPOPT'} returned non-finite values ({out.status}); parameters reset to the initial ones"
    metrics = {
        "solver_status": out.status,
        "kkt_residual": kkt,
        "constraint_violation": viol,
        "iterations": out.iterations,
        "build_time_s": build_nlp + build_solver,
        "solve_time_s": out.solve_time_s,
        "wall_time_s": time.perf_counter() - t_start,
        "nlp_objective": out.f,
        "formulation": opts["formulation"],
        "stages": nlp.stages,
        "hessian": opts["hessian"],
        "jit": bool(jit),
        "solver": problem.solver.name,
        "tol": opts["tol"],
        "n_variables": int(nlp.x.shape[0]),
        "n_constraints": int(nlp.g.shape[0]),
    }
    if start is not None:
        metrics["start"] = start
    if sqp:
        metrics["restorations"] = int(sum(out.history["restored"]))
    if not quiet:
        log(f"casadi: {out.status} after {out.iterations} iterations, E = {out.f:.12e}, "
            f"KKT residual {kkt:.2e}, constraint violation {viol:.2e}, "
            f"build {metrics['build_time_s']:.2f} s, solve {out.solve_time_s:.2f} s")
    return SolveResult(params=params, history=out.history, metrics=metrics, costates=costates,
                       success=success, message=message, interrupted=out.interrupted)


def _reduced_nlp(problem, params, X, c=None):
    """(the reduced NLP on the points X with labels c, θ of ``params``)."""
    d, K = problem_mod.dims(params)
    params = problem_mod.check_params(problem, params, d, K=K)
    Y0 = lift(np.asarray(X, dtype=np.float64), d).T.copy()
    c = np.zeros(Y0.shape[1]) if c is None else np.asarray(c, dtype=np.float64)
    nlp = NetworkNLP(problem, Y0, c, params, "reduced")
    return nlp, nlp.layout.pack(params)


def _value_gradient(nlp, theta):
    """(E, ∇E per trained key) of a reduced NLP by CasADi reverse-mode AD."""
    fg = ca.Function("fg", [nlp.theta], [nlp.f, ca.gradient(nlp.f, nlp.theta)])
    E, g = fg(theta)
    g = np.array(g).reshape(-1)
    return float(E), {k: g[nlp.layout.slices[k]].reshape(nlp.layout.shapes[k]).copy() for k in nlp.layout.keys}


def gradient(problem, params, X, c):
    """(E, ∇E over ``problem.trainable()``) by CasADi reverse-mode AD of the reduced objective at
    NumPy ``params``; X are data points (lifted to the width d of :func:`ocdl.problem.dims`),
    c their labels (class numbers; one-hot targets are built here for K ≥ 3 classes)."""
    return _value_gradient(*_reduced_nlp(problem, params, X, c))


def evaluate(problem, params, train, test):
    """:class:`~ocdl.result.Evaluation` at NumPy ``params`` by CasADi: E and ∇E by reverse-mode AD
    of the reduced objective, y^[N] by the forward sweep, E_test the same objective on the test
    set; accuracy the fraction of samples with [W y^[N] + μ > 0] = c (two classes), or with
    argmax_k (W y^[N] + μ)_k = c (K classes, the first maximum)."""
    from ocdl.result import Evaluation

    nlp, theta = _reduced_nlp(problem, params, train.X, train.c)
    nlp_test, _ = _reduced_nlp(problem, params, test.X, test.c)
    E, grads = _value_gradient(nlp, theta)
    gflat = np.concatenate([g.reshape(-1) for g in grads.values()])
    E_test = float(ca.Function("f", [nlp_test.theta], [nlp_test.f])(theta))
    W, mu = np.asarray(params["W"], dtype=np.float64), np.asarray(params["mu"], dtype=np.float64)
    two = problem_mod.dims(params)[1] == 2

    def accuracy(YN, c):
        c = np.asarray(c, dtype=np.float64)
        if two:
            z = W @ YN + float(mu)
            return float(np.mean((z > 0).astype(np.float64) == c))
        z = W @ YN + mu[:, None]
        return float(np.mean(np.argmax(z, 0) == c))

    YN, YN_test = nlp.simulate(theta)[0][-1], nlp_test.simulate(theta)[0][-1]
    return Evaluation(objective=E, test_objective=E_test, gradient=grads,
                      gradient_norm=float(np.linalg.norm(gflat)), gradient_norm_inf=float(np.max(np.abs(gflat))),
                      train_accuracy=accuracy(YN, train.c), test_accuracy=accuracy(YN_test, test.c),
                      states=np.asarray(YN), engine="casadi")


def states(problem, params, X) -> np.ndarray:
    """y^[0], …, y^[N] of the points X by the CasADi forward sweep: (N+1, m, d)."""
    nlp, theta = _reduced_nlp(problem, params, X)
    return np.stack([np.asarray(Y).T for Y in nlp.simulate(theta)[0]])
