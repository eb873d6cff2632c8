"""``ocdl bench solve``: the CasADi engine (IPOPT, full-space and reduced NLP; the trust-region
SQP with condensed steps, :mod:`ocdl.engine.casadi.lifted`, on the same two NLPs; Newton on the
Hamiltonian BVP from a 1e-3 perturbation of the first row's solution) against the PyTorch engine
(L-BFGS to the same gradient norm) on one training problem, and the scaling of solve time and time
per iteration in the number of samples m or layers N. The row ``full-from-reduced`` is the
full-space NLP started at the reduced NLP's solution (``--start reduced``): build, solve time and
iterations of both phases together, KKT residual and objective of the full-space NLP. The rows
``full-sqp`` and ``reduced-sqp`` are ``--solver sqp`` with ``--formulation full`` / ``reduced``.

Problem (defaults): spiral, m = 1000, N = 15, h = 0.1, tanh, Tikhonov 1e-3 on every parameter,
smoothness 1e-3, per-layer controls, the seeded default initialisation; tableaux euler and rk4.
Per configuration: build time (NLP and solver construction), solve time, wall and process CPU
time, iterations, time per iteration, final KKT residual (‖∇_x L‖_∞, unscaled), objective
and the reduced gradient norm ‖∇E‖ at the result. Times are medians over ``--repeats`` runs.
The scaling fits are the least-squares slopes of log(solve time) and log(time per iteration)
against log(m) or log(N); iteration counts are reported beside them. Figures, not pass/fail.

Scaling protocols (``--protocol``):

* ``refine`` (default): every m or N discretises the *same* continuous problem, so that the fit
  measures the cost of resolution and not a change of problem. In N: final time T = N₀h fixed,
  h = T/N; the Tikhonov weights of K and β scaled by N₀/N (Σ_j ‖u_j‖² is a Riemann sum of
  ∫‖u‖² dt / h, the smoothness term already divides by h); the initial controls constant in time
  (layer 0 of the seeded initialisation, for every layer), the same initial guess at every N.
  In m: the loss is a sum over the m samples, so every regulariser weight is scaled by m/m₀
  (the minimiser is that of the mean loss; the initialisation does not depend on m).
  At (m₀, N₀) = (--n, --layers) this is the benchmark problem (for N: from the constant start).
* ``literal``: h, the weights and the per-layer random initialisation held as in the benchmark
  problem: a deeper network (T = N h) for larger N, a relatively weaker regulariser for larger m.

``--seeds k`` solves every configuration from k initialisation seeds and reports medians (the
iteration count of a non-convex solve depends on the start; one seed makes the fit noisy).
"""

from __future__ import annotations

import json
import math
import statistics
import time

import numpy as np

from ocdl import data as data_mod
from ocdl.benchmarks import tableau_file
from ocdl.commands._args import int_at_least, positive_float
from ocdl.errors import OcdlError
from ocdl.problem import DataSpec, InitSpec, NetworkSpec, ObjectiveSpec, Problem, SolverSpec, init_params

ALL = {k: 1e-3 for k in ("K", "beta", "W", "mu", "h")}
FROM_REDUCED = "full-from-reduced"  # the full-space NLP started at the reduced NLP's solution (start = 'reduced')
# the rows: (solver, its options) per name
ROWS = {
    "full": ("ipopt", {"formulation": "full"}),
    "reduced": ("ipopt", {"formulation": "reduced"}),
    FROM_REDUCED: ("ipopt", {"formulation": "full", "start": "reduced"}),
    "full-sqp": ("sqp", {"formulation": "full"}),
    "reduced-sqp": ("sqp", {"formulation": "reduced"}),
}
DEFAULT_ROWS = f"full,reduced,{FROM_REDUCED},full-sqp,reduced-sqp"


def register(bsub):
    p = bsub.add_parser("solve", help="CasADi/IPOPT (full-space, reduced) vs PyTorch L-BFGS: time, iterations, KKT")
    p.add_argument("--data", default="spiral", choices=tuple(data_mod.GENERATORS),
                   help="generated data set (default spiral)")
    p.add_argument("--n", type=int_at_least(2), default=1000, help="training samples m (default 1000)")
    p.add_argument("--layers", type=int_at_least(1), default=15, help="layers N (default 15)")
    p.add_argument("--h", type=positive_float, default=0.1, help="step size (default 0.1)")
    tab = p.add_mutually_exclusive_group()
    tab.add_argument("--tableaux", default="euler,rk4", help="comma-separated registry tableaux (default euler,rk4)")
    tab.add_argument("--tableau-file", dest="tableaux", type=tableau_file, metavar="FILE",
                     help="a user tableau (TOML/JSON with A, b, optional c and name) instead")
    p.add_argument("--formulations", default=None,
                   help=f"comma-separated rows: full, reduced (IPOPT), {FROM_REDUCED} (IPOPT on the full-space NLP "
                        f"started at the reduced NLP's solution), full-sqp, reduced-sqp (the trust-region SQP with "
                        f"condensed steps); default: all five; with --scaling: reduced")
    p.add_argument("--controls", default="per-layer", choices=("per-layer", "per-stage"),
                   help="one (K, β) per layer (default) or per stage")
    p.add_argument("--tol", type=positive_float, default=1e-10, help="KKT tolerance of the CasADi solves (default 1e-10)")
    p.add_argument("--max-iter", type=int_at_least(0), default=3000,
                   help="iteration limit of the CasADi solves (default 3000)")
    p.add_argument("--repeats", type=int_at_least(1), default=1, help="runs per configuration (medians are reported)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows (L-BFGS and Newton–CG)")
    p.add_argument("--no-bvp", action="store_true",
                   help="skip Newton on the Hamiltonian BVP from a 1e-3 perturbation of the first formulation's solution")
    p.add_argument("--torch-iterations", type=int_at_least(1), default=5000,
                   help="L-BFGS iteration budget of the PyTorch comparison (default 5000)")
    p.add_argument("--no-newton", action="store_true",
                   help="skip the Newton–CG rows (torch-newton; native-newton where numba is installed)")
    p.add_argument("--scipy", action="store_true",
                   help="add rows of scipy trust-ncg fed by exact H·v (the user's alternative): ocdl's torch H·v, "
                        "ocdl's compiled H·v (numba installed) and a jitted JAX H·v (jax installed), or those of --hv")
    p.add_argument("--hv", default=None,
                   help=f"comma-separated H·v sources of the scipy trust-ncg rows, of {', '.join(HV_SOURCES)} "
                        "(default: every installed one)")
    p.add_argument("--no-scipy", action="store_true", help="--scaling d: skip the scipy trust-ncg rows")
    p.add_argument("--ipopt-max-width", type=int_at_least(0), default=16,
                   help="--scaling d: the largest width that IPOPT (reduced, dense exact Hessian) is run at (default 16)")
    p.add_argument("--scaling", choices=("m", "N", "d"),
                   help="instead: solve time and time per iteration against m or N (first tableau, each formulation); "
                        "d: time to tol against the width (torch-newton, scipy trust-ncg, IPOPT reduced; default "
                        "d = 2, 8, 16, 32, 64 or --values, at m = --n and N = --layers, e.g. --n 200 --layers 20)")
    p.add_argument("--values", help="comma-separated m or N values (default 250..4000 or 5..80)")
    p.add_argument("--protocol", choices=("refine", "literal"), default="refine",
                   help="scaling: the same continuous problem at every m or N (refine, default) or the "
                        "benchmark's h and weights held fixed (literal); see the module docstring")
    p.add_argument("--seeds", type=int_at_least(1), default=1,
                   help="scaling: initialisation seeds per configuration (medians are reported)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def problem(m, N, h, tableau, controls="per-layer", data="spiral", formulation="full", tol=1e-10, max_iter=3000,
            weight_data=1.0, weight_layers=1.0, seed=0):
    """The benchmark problem; every regulariser weight × ``weight_data``, those of K and β also ×
    ``weight_layers`` (the refinement protocol), initialisation seed ``seed``."""
    tik = {k: v * weight_data * (weight_layers if k in ("K", "beta") else 1.0) for k, v in ALL.items()}
    solver, options = ROWS[formulation]
    options = {"tol": tol, **options}
    return Problem(
        data=DataSpec(name=data, n=m),
        network=NetworkSpec(family="rk", tableau=tableau, layers=N, h=h, controls=controls),
        objective=ObjectiveSpec(tikhonov=tik, smooth=1e-3 * weight_data),
        init=InitSpec(seed=seed),
        solver=SolverSpec(backend="casadi", name=solver, iterations=max_iter, options=options),
    )


def scaling_problem(args, variable, v, formulation, seed):
    """(problem, constant_init) at m = v or N = v under ``args.protocol`` (module docstring)."""
    m0, N0 = args.n, args.layers
    m, N = (v, N0) if variable == "m" else (m0, v)
    common = dict(controls=args.controls, data=args.data, formulation=formulation, tol=args.tol,
                  max_iter=args.max_iter, seed=seed)
    tab = args.tableaux.split(",")[0]
    if args.protocol == "literal":
        return problem(m, N, args.h, tab, **common), False
    if variable == "m":
        return problem(m, N, args.h, tab, weight_data=m / m0, **common), False
    return problem(m, N, args.h * (N0 / N), tab, weight_layers=N0 / N, **common), True


def constant_in_time(params):
    """Initial controls constant in time: layer 0's (K, β) in every layer."""
    out = dict(params)
    out["K"] = np.broadcast_to(params["K"][:1], params["K"].shape).copy()
    out["beta"] = np.broadcast_to(params["beta"][:1], params["beta"].shape).copy()
    return out


def _objective_gradient_norm(prob, params, train) -> tuple[float, float]:
    """(E, ‖∇E‖) of the reduced objective at ``params``."""
    from ocdl.engine.casadi import gradient

    E, g = gradient(prob, params, train.X, train.c)
    return float(E), math.sqrt(sum(float((v * v).sum()) for v in g.values()))


def _gradient_norm(prob, params, train) -> float:
    return _objective_gradient_norm(prob, params, train)[1]


def run_casadi(prob, constant_init=False, keep=None):
    """One IPOPT solve: a dict of figures (``keep``: a dict that receives the solution's params)."""
    from ocdl.engine.casadi import solve

    train, test = data_mod.make(prob.data)
    p0 = init_params(prob, prob.width(train.dim))
    if constant_init:
        p0 = constant_in_time(p0)
    c0, t0 = time.process_time(), time.perf_counter()
    res = solve(prob, train, test, p0, log=None, quiet=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if keep is not None:
        keep["params"] = res.params
    m = res.metrics
    # with a reduced start: both phases in build, solve and iterations
    pre = m.get("start", {"build_time_s": 0.0, "solve_time_s": 0.0, "iterations": 0})
    iterations = int(m["iterations"]) + int(pre["iterations"])
    solve_s = m["solve_time_s"] + pre["solve_time_s"]
    return {
        "engine": "casadi", "formulation": (FROM_REDUCED if "start" in m else m["formulation"])
        + ("-sqp" if m["solver"] == "sqp" else ""),
        "tableau": prob.network.tableau,
        "m": prob.data.n, "N": prob.N, "status": m["solver_status"], "iterations": iterations,
        "build_s": m["build_time_s"] + pre["build_time_s"], "solve_s": solve_s, "wall_s": wall, "cpu_s": cpu,
        "s_per_iter": solve_s / max(iterations, 1), "kkt": m["kkt_residual"], "objective": m["nlp_objective"],
        "grad_norm": _gradient_norm(prob, res.params, train),
        "restorations": int(m.get("restorations", 0)),  # --solver sqp: feasibility restorations
    }


def run_bvp(prob, solution, perturbation=1e-3, seed=7):
    """Newton on the Hamiltonian BVP from an IPOPT ``solution`` with every trained parameter
    perturbed by ``perturbation``·N(0, 1); ``controls_diff`` is max |θ_bvp − θ_ipopt|."""
    from ocdl.engine.casadi import solve

    train, test = data_mod.make(prob.data)
    rng = np.random.default_rng(seed)
    start = {k: np.array(v, dtype=np.float64) for k, v in solution.items()}
    for k in prob.trainable():
        start[k] = start[k] + perturbation * rng.standard_normal(start[k].shape)
    bp = prob.replace(solver=SolverSpec(backend="casadi", name="bvp", iterations=prob.solver.iterations,
                                        options={"tol": prob.solver.options["tol"]}))
    c0, t0 = time.process_time(), time.perf_counter()
    res = solve(bp, train, test, start, log=None, quiet=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    m = res.metrics
    E, gn = _objective_gradient_norm(prob, res.params, train)
    return {
        "engine": "casadi", "formulation": "bvp", "tableau": prob.network.tableau, "m": prob.data.n, "N": prob.N,
        "status": m["solver_status"], "iterations": int(m["iterations"]), "build_s": m["build_time_s"],
        "solve_s": m["solve_time_s"], "wall_s": wall, "cpu_s": cpu,
        "s_per_iter": m["solve_time_s"] / max(int(m["iterations"]), 1), "kkt": m["kkt_residual"],
        "objective": E, "grad_norm": gn, "perturbation": perturbation,
        "controls_diff": max(float(np.max(np.abs(res.params[k] - solution[k]))) for k in prob.trainable()),
    }


def run_torch(prob, gtol, iterations):
    """PyTorch L-BFGS (hand-written adjoint) until ‖∇E‖ ≤ gtol or ``iterations``."""
    from ocdl import training

    tp = prob.replace(solver=SolverSpec(backend="torch", name="lbfgs", iterations=iterations,
                                        options={"gtol": float(gtol)}))
    c0, t0 = time.process_time(), time.perf_counter()
    res, met = training.train(tp, out=None, quiet=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    it = max(int(met["iterations"]), 1)
    return {
        "engine": "torch-lbfgs", "formulation": "-", "tableau": prob.network.tableau, "m": prob.data.n, "N": prob.N,
        "status": "gtol reached" if met["gradient_norm"] <= gtol else "gtol not reached", "iterations": it,
        "build_s": 0.0, "solve_s": wall, "wall_s": wall, "cpu_s": cpu, "s_per_iter": wall / it, "kkt": float("nan"),
        "objective": met["objective"], "grad_norm": met["gradient_norm"], "gtol": gtol,
    }


def run_torch_newton(prob, tol, iterations=3000, init=None, label=None, engine="torch"):
    """Trust-region Newton–CG of the torch engine (exact H·v by reverse-over-reverse AD) or of the
    native engine (``engine = 'native'``: the compiled second-order sweeps) until
    ‖∇E‖ ≤ tol·max(1, |E|); the status is the solver's message where it stopped short of that."""
    from ocdl import api

    c0, t0 = time.process_time(), time.perf_counter()
    res = api.solve(prob, engine=engine, solver="newton", iterations=iterations, tol=float(tol), init=init)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    it = max(int(res.metrics["iterations"]), 1)
    return {
        "engine": label or f"{engine}-newton", "formulation": "-", "tableau": prob.network.tableau, "m": prob.data.n,
        "N": prob.N, "status": res.metrics["solver_status"] if res.message.startswith("gradient norm") else res.message,
        "iterations": it, "build_s": 0.0, "solve_s": wall,
        "wall_s": wall, "cpu_s": cpu, "s_per_iter": wall / it, "kkt": float("nan"), "objective": res.objective,
        "grad_norm": res.gradient_norm, "hv_products": int(res.metrics["hv_products"]), "params": res.params,
    }


def native_available() -> bool:
    """The native engine's numba is installed (the ``native-newton`` rows)."""
    from ocdl.benchmarks.peers import installed

    return installed("numba")


def _warm_up(prob, engines=("torch",)):
    """One untimed Newton solve of a tiny copy of ``prob`` per engine (first calls: imports, kernels)."""
    for engine in engines:
        run_torch_newton(prob.replace(data__n=20, network__layers=2), 1e-6, iterations=5, engine=engine)


HV_SOURCES = ("torch", "native", "jax")


def hv_sources(names=None) -> list:
    """The scipy rows' H·v sources: ``names`` (comma-separated), or every installed one."""
    from ocdl.benchmarks.peers import installed

    module = {"torch": "torch", "native": "numba", "jax": "jax"}
    if not names:
        return [n for n in HV_SOURCES if installed(module[n])]
    out = [n.strip() for n in names.split(",") if n.strip()]
    bad = [n for n in out if n not in HV_SOURCES]
    if bad:
        raise OcdlError(f"--hv: {bad[0]!r} is not one of {', '.join(HV_SOURCES)}")
    missing = [n for n in out if not installed(module[n])]
    if missing:
        raise OcdlError(f"--hv {missing[0]}: not installed (pip install 'ocdl[{'native' if missing[0] == 'native' else 'peers'}]')")
    return out


def run_scipy_trust_ncg(prob, tol, iterations=2000, hv="torch"):
    """scipy.optimize.minimize(method='trust-ncg') on E, ∇E and exact H·v — the user's own
    alternative — from ``hv``: 'torch' (the partner adjoint and
    :class:`ocdl.engine.torch.hessian.Curvature`, one per θ), 'native' (the compiled gradient and
    :class:`ocdl.engine.native.curvature.Curvature`) or 'jax' (jit(value_and_grad) and a jitted
    forward-over-reverse H·v of the same objective, :func:`ocdl.benchmarks.peers.jax_training_objective`)."""
    import scipy.optimize as so
    import torch

    from ocdl.benchmarks import start_objective

    obj, base, params0 = start_objective(prob, "native" if hv == "native" else "torch")
    x0 = obj.flat(base).numpy().copy()
    cache, count = {}, [0]
    if hv == "jax":
        from ocdl.benchmarks.peers import jax_training_objective

        fg, hessp0 = jax_training_objective(prob, obj.Y0.T.numpy(), obj.c.numpy(), params0)  # the (lifted) inputs as rows
        fg(x0), hessp0(x0, x0)  # compile outside the timing

        def hessp(x, p):
            count[0] += 1
            return hessp0(x, p)
    else:
        def fg(x):
            E, g = obj.value_grad(torch.from_numpy(x))
            return E, g.numpy()

        def hessp(x, p):
            key = x.tobytes()
            if key not in cache:
                cache.clear()
                cache[key] = obj.curvature(torch.from_numpy(x.copy()))
            count[0] += 1
            return cache[key](torch.from_numpy(p)).numpy()

    c0, t0 = time.process_time(), time.perf_counter()
    r = so.minimize(fg, x0, jac=True, hessp=hessp, method="trust-ncg",
                    options={"gtol": float(tol), "maxiter": iterations})
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    it = max(int(r.nit), 1)
    return {
        "engine": "scipy-trust-ncg" + ("" if hv == "torch" else f"-{hv}"), "formulation": "-",
        "tableau": prob.network.tableau, "m": prob.data.n,
        "N": prob.N, "status": "ok" if r.success else str(r.message)[:40], "iterations": it, "build_s": 0.0,
        "solve_s": wall, "wall_s": wall, "cpu_s": cpu, "s_per_iter": wall / it, "kkt": float("nan"),
        "objective": float(r.fun), "grad_norm": float(np.linalg.norm(r.jac)), "hv_products": count[0],
        "params": {k: v.numpy().copy() for k, v in obj.unflat(torch.from_numpy(r.x)).items() if k in obj.keys},
    }


def width_problem(d, N=20, m=200, tableau="rk4", data="spiral", seed=0):
    """The width-scaling problem: the regularised benchmark problem (Tikhonov 1e-3, smoothness
    1e-3, h = 0.1) at width d, N layers, m samples."""
    return Problem(
        data=DataSpec(name=data, n=m),
        network=NetworkSpec(family="rk", tableau=tableau, layers=N, h=0.1, width=d),
        objective=ObjectiveSpec(tikhonov=dict(ALL), smooth=1e-3),
        init=InitSpec(seed=seed),
        solver=SolverSpec(backend="casadi", name="ipopt", iterations=3000,
                          options={"tol": 1e-10, "formulation": "reduced"}),
    )


def run_width_scaling(args) -> list:
    """Time to ‖∇E‖ ≤ tol·max(1, |E|) against the width d at N = --layers: torch-newton and
    native-newton (H·v count), scipy trust-ncg on the H·v of --hv, and IPOPT on the reduced NLP
    (exact dense Hessian) up to --ipopt-max-width."""
    rows = []
    widths = _values(args.values) if args.values else [2, 8, 16, 32, 64]
    engines = ("torch", "native") if native_available() else ("torch",)
    sources = [] if args.no_scipy else hv_sources(args.hv)
    for d in widths:
        prob = width_problem(d, args.layers, args.n, args.tableaux.split(",")[0], args.data)
        if d == widths[0]:
            _warm_up(prob, engines)
        n_theta = sum(math.prod(v) for v in prob.param_shapes(d).values())
        out = [run_torch_newton(prob, args.tol, engine=e) for e in engines]
        out += [run_scipy_trust_ncg(prob, args.tol, hv=hv) for hv in sources]
        if d <= args.ipopt_max_width:
            out.append(run_casadi(prob))
        for r in out:
            r.pop("params", None)
            r["d"], r["n_theta"] = d, n_theta
            rows.append(r)
            if not args.json:
                _print_width_row(r, header=len(rows) == 1)
    return rows


def _print_width_row(r, header):
    if header:
        print(f"{'engine':<16} {'d':>3} {'n_θ':>7} {'m':>5} {'N':>3} {'solve s':>8} {'iter':>5} {'H·v':>6} "
              f"{'|grad E|':>9} {'objective':>14}  status")
    print(f"{r['engine'] + ('-' + r['formulation'] if r['engine'] == 'casadi' else ''):<16} {r['d']:>3} "
          f"{r['n_theta']:>7} {r['m']:>5} {r['N']:>3} {r['solve_s']:>8.2f} {r['iterations']:>5} "
          f"{r.get('hv_products', '-'):>6} {r['grad_norm']:>9.1e} {r['objective']:>14.8e}  {r['status']}", flush=True)


def _median(rows, keys=("build_s", "solve_s", "wall_s", "cpu_s", "s_per_iter")):
    out = dict(rows[0])
    for k in keys:
        out[k] = statistics.median(r[k] for r in rows)
    out["repeats"] = len(rows)
    return out


def _over_seeds(rows):
    """Medians over initialisation seeds (time and iterations; worst KKT; the statuses)."""
    out = _median(rows, ("build_s", "solve_s", "wall_s", "cpu_s", "s_per_iter", "iterations"))
    out["iterations_per_seed"] = [r["iterations"] for r in rows]
    out["kkt"] = max(r["kkt"] for r in rows)
    out["status"] = ",".join(sorted({r["status"] for r in rows}))
    out["restorations"] = sum(r.get("restorations", 0) for r in rows)
    out["seeds"] = len(rows)
    return out


def _values(text):
    """--values: comma-separated positive integers, at least two (a slope needs two points)."""
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        raise OcdlError(f"--values: expected comma-separated integers, got {text!r}") from None
    if len(vals) < 2 or min(vals) < 1:
        raise OcdlError(f"--values: need at least two integers ≥ 1, got {text!r}")
    return vals


def _rows(text):
    """--formulations: comma-separated names of :data:`ROWS`."""
    rows = text.split(",")
    bad = [r for r in rows if r not in ROWS]
    if bad:
        raise OcdlError(f"--formulations: {', '.join(map(repr, bad))} not among {', '.join(ROWS)}")
    return rows


def _fit(x, y):
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def run(args) -> int:
    rows = []
    if args.scaling == "d":
        rows = run_width_scaling(args)
        if args.json:
            print(json.dumps({"rows": rows}))
        return 0
    if args.scaling:
        vals = _values(args.values) if args.values else (
            [250, 500, 1000, 2000, 4000] if args.scaling == "m" else [5, 10, 20, 40, 80])
        tab = args.tableaux.split(",")[0]
        fits = []
        for form in _rows(args.formulations or "reduced"):
            frows = []
            for v in vals:
                per_seed = []
                for seed in range(args.seeds):
                    prob, const = scaling_problem(args, args.scaling, v, form, seed)
                    per_seed.append(_median([run_casadi(prob, const) for _ in range(args.repeats)]))
                frows.append(_over_seeds(per_seed))
                if not args.json:
                    _print_row(frows[-1], header=not rows and len(frows) == 1)
            rows += frows
            x = [r[args.scaling] for r in frows]
            fit = {"variable": args.scaling, "formulation": form, "tableau": tab, "values": x,
                   "protocol": args.protocol, "seeds": args.seeds,
                   "exponent_s_per_iter": _fit(x, [r["s_per_iter"] for r in frows]),
                   "exponent_solve_s": _fit(x, [r["solve_s"] for r in frows]),
                   "iterations": [r["iterations"] for r in frows]}
            fits.append(fit)
            if not args.json:
                print(f"{form} ({args.protocol}, {args.seeds} seed(s)): time per iteration ∝ "
                      f"{args.scaling}^{fit['exponent_s_per_iter']:.2f}; solve time ∝ "
                      f"{args.scaling}^{fit['exponent_solve_s']:.2f}; iterations {fit['iterations']}")
        if args.json:
            print(json.dumps({"rows": rows, "fits": fits}))
        return 0
    for tab in args.tableaux.split(","):
        first, solution, solutions = None, {}, {}
        for form in _rows(args.formulations or DEFAULT_ROWS):
            prob = problem(args.n, args.layers, args.h, tab, args.controls, args.data, form, args.tol, args.max_iter)
            rows.append(_median([run_casadi(prob, keep=solution) for _ in range(args.repeats)]))
            solutions[form] = solution["params"]
            if first is None:
                first, first_solution = rows[-1], dict(solution)
            if not args.json:
                _print_row(rows[-1], header=len(rows) == 1)
        if not args.no_bvp:
            prob = problem(args.n, args.layers, args.h, tab, args.controls, args.data, "full", args.tol, args.max_iter)
            rows.append(_median([run_bvp(prob, first_solution["params"]) for _ in range(args.repeats)]))
            if not args.json:
                _print_row(rows[-1], header=False)
        prob = problem(args.n, args.layers, args.h, tab, args.controls, args.data)
        runs = []  # the same start as the rows above, to the same tolerance
        if not (args.no_newton or args.no_torch):
            engines = ("torch", "native") if native_available() else ("torch",)
            _warm_up(prob, engines)
            runs += [lambda e=e: run_torch_newton(prob, args.tol, engine=e) for e in engines]
        if args.scipy:
            runs += [lambda hv=hv: run_scipy_trust_ncg(prob, args.tol, hv=hv) for hv in hv_sources(args.hv)]
        for run_one in runs:
            rows.append(_median([run_one() for _ in range(args.repeats)]))
            params = rows[-1].pop("params")
            diffs = {form: max(float(np.max(np.abs(params[k] - sol[k]))) for k in prob.trainable())
                     for form, sol in solutions.items()}
            if diffs:  # the first row's solution, and the nearest CasADi solution (a non-convex problem has several)
                rows[-1]["controls_diff"] = next(iter(diffs.values()))
                rows[-1]["nearest_row"] = min(diffs, key=diffs.get)
                rows[-1]["nearest_diff"] = diffs[rows[-1]["nearest_row"]]
            if not args.json:
                _print_row(rows[-1], header=False)
        if not args.no_torch:
            gtol = max(first["grad_norm"], 1e-12)
            prob = problem(args.n, args.layers, args.h, tab, args.controls, args.data)
            rows.append(_median([run_torch(prob, gtol, args.torch_iterations) for _ in range(args.repeats)]))
            if not args.json:
                _print_row(rows[-1], header=False)
    if args.json:
        print(json.dumps({"rows": rows}))
    return 0


def _print_row(r, header):
    if header:
        print(f"{'engine':<22} {'form':<17} {'tableau':<8} {'m':>5} {'N':>3} {'build s':>8} {'solve s':>8} {'wall s':>8} "
              f"{'cpu s':>8} {'iter':>6} {'s/iter':>8} {'KKT':>9} {'|grad E|':>9} {'objective':>14}  status")
    print(f"{r['engine']:<22} {r['formulation']:<17} {r['tableau']:<8} {r['m']:>5} {r['N']:>3} {r['build_s']:>8.2f} "
          f"{r['solve_s']:>8.2f} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} {r['iterations']:>6} {r['s_per_iter']:>8.4f} "
          f"{r['kkt']:>9.1e} {r['grad_norm']:>9.1e} {r['objective']:>14.8e}  {r['status']}"
          + (f" ({r['restorations']} restoration(s))" if r.get("restorations") else "")
          + (f" ({r['hv_products']} H·v)" if "hv_products" in r else "")
          + (f", max |Δθ| to the first row {r['controls_diff']:.1e}" if "controls_diff" in r and r["engine"] != "casadi"
             else "")
          + (f", to the nearest ({r['nearest_row']}) {r['nearest_diff']:.1e}" if "nearest_row" in r else ""),
          flush=True)
