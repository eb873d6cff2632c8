"""``ocdl bench train``: ``gd-armijo`` iterations on the bench problem (spiral, m = 1000, N = 15,
rk4, h = 0.1, per-layer controls, float64, CPU) by the torch engine (the default path), by the
native engine (compiled E and ∇E and the compiled Armijo loop, :mod:`ocdl.engine.native`) and by
the JAX peer with the whole loop jitted (:func:`ocdl.benchmarks.peers.jax_armijo`, where jax is
installed), with the objective and gradient evaluations counted and the largest relative
parameter difference of each final iterate to the first engine's.

The runs alternate (torch, native, jax, torch, … for ``--rounds``) so that load from other
processes hits both alike; the figures are the medians of the rounds, wall and process CPU time.
The native engine's compile (or cache load) is done before the first round and JAX's ahead-of-time
compile before each of its runs, both reported apart.
Figures only: nothing is asserted about speed.
"""

from __future__ import annotations

import json
import os
import statistics
import time

from ocdl.commands._args import int_at_least


def register(bsub):
    p = bsub.add_parser("train", help="gd-armijo iterations: the torch engine against the native (compiled) engine")
    p.add_argument("--n", type=int_at_least(2), default=1000, help="samples m (default 1000)")
    p.add_argument("--layers", type=int_at_least(1), default=15, help="layers N (default 15)")
    p.add_argument("--iterations", type=int_at_least(1), default=10000, help="gd-armijo iterations (default 10000)")
    p.add_argument("--rounds", type=int_at_least(1), default=1, help="alternating rounds; medians reported (default 1)")
    p.add_argument("--engines", default=None,
                   help="comma-separated of torch, native, jax (the JAX peer: the whole loop jitted; default: every "
                        "installed one)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _problem(a, engine):
    from ocdl.problem import DataSpec, NetworkSpec, Problem, SolverSpec

    return Problem(data=DataSpec("spiral", n=a.n),
                   network=NetworkSpec(family="rk", tableau="rk4", layers=a.layers, h=0.1),
                   solver=SolverSpec(backend=engine, name="gd-armijo", iterations=a.iterations, options={}))


def one(problem):
    import ocdl

    t0, c0 = time.perf_counter(), time.process_time()
    r = ocdl.solve(problem)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "objective": r.objective,
            "train_accuracy": r.evaluation.train_accuracy, "iterations": r.iterations,
            "function_evaluations": r.metrics.get("function_evaluations"),
            "gradient_evaluations": r.metrics.get("gradient_evaluations"), "params": r.params}


def one_jax(problem, compile_times):
    """The JAX peer (:func:`ocdl.benchmarks.peers.jax_armijo`) from ocdl's seeded start; its
    ahead-of-time compile is timed apart (into ``compile_times``)."""
    import numpy as np

    from ocdl import api
    from ocdl.benchmarks.peers import jax_armijo
    from ocdl.engine.torch import TorchEngine
    from ocdl.problem import init_params

    train, _ = api.lifted_data(problem)
    params0 = init_params(problem, problem.width(train.dim))
    theta0 = np.concatenate([np.ravel(params0[k]) for k in ("K", "beta", "W", "mu")])
    o = {k: opt.default for k, opt in TorchEngine.options["gd-armijo"].items()}
    t0 = time.perf_counter()
    loop = jax_armijo(problem, train.X, train.c, params0, theta0, problem.solver.iterations, o)
    compile_times.append(time.perf_counter() - t0)
    t0, c0 = time.perf_counter(), time.process_time()
    theta, E, it, evals, grads = loop(theta0)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    i, params = 0, {}
    for k in ("K", "beta", "W", "mu"):
        n = int(np.size(params0[k]))
        params[k] = theta[i:i + n].reshape(np.shape(params0[k]))
        i += n
    acc = api.evaluate(problem, {**params0, **params}, engine="torch").train_accuracy
    return {"wall_s": wall, "cpu_s": cpu, "objective": E, "train_accuracy": acc, "iterations": it,
            "function_evaluations": evals, "gradient_evaluations": grads, "params": params}


def run(a) -> int:
    import numpy as np

    from ocdl.benchmarks.peers import installed
    from ocdl.engine.torch.network import configure_threads
    from ocdl.errors import OcdlError

    if a.engines:
        engines = [e.strip() for e in a.engines.split(",") if e.strip()]
        bad = [e for e in engines if e not in ("torch", "native", "jax")]
        if bad:
            raise OcdlError(f"--engines: {bad[0]!r} is not one of torch, native, jax")
    else:
        engines = ["torch"] + [e for e, mod in (("native", "numba"), ("jax", "jax")) if installed(mod)]
    threads = configure_threads(a.n, 2, 0)
    warm = {}
    if "native" in engines:  # compile (or load the cache) once, outside the timed runs
        t0 = time.perf_counter()
        one(_problem(a, "native").replace(solver__iterations=1))
        warm["native_first_solve_s"] = time.perf_counter() - t0
    load0 = os.getloadavg()
    runs = {e: [] for e in engines}
    jax_compile = []
    for _ in range(a.rounds):
        for e in engines:
            runs[e].append(one_jax(_problem(a, "torch"), jax_compile) if e == "jax" else one(_problem(a, e)))
    if jax_compile:
        warm["jax_compile_s"] = statistics.median(jax_compile)
    load1 = os.getloadavg()
    out = {"problem": {"data": "spiral", "m": a.n, "N": a.layers, "tableau": "rk4", "iterations": a.iterations,
                       "threads": threads, "rounds": a.rounds}, "load_average": {"before": load0, "after": load1},
           "engines": {}, **warm}
    for e, rs in runs.items():
        last = rs[-1]
        out["engines"][e] = {"wall_s": statistics.median(r["wall_s"] for r in rs),
                             "cpu_s": statistics.median(r["cpu_s"] for r in rs),
                             **{k: last[k] for k in ("objective", "train_accuracy", "iterations",
                                                     "function_evaluations", "gradient_evaluations")}}
    p0 = runs[engines[0]][-1]["params"]
    for e in engines[1:]:  # against the first engine's final iterate
        p1 = runs[e][-1]["params"]
        out["engines"][e]["max_rel_param_diff"] = max(
            float(np.abs(p1[k] - p0[k]).max() / max(np.abs(p0[k]).max(), 1e-300)) for k in p1 if k in p0)
    if len(engines) >= 2:
        out["max_rel_param_diff"] = out["engines"][engines[1]]["max_rel_param_diff"]
    if a.json:
        print(json.dumps(out))
        return 0
    print(f"ocdl bench train: spiral, m = {a.n}, N = {a.layers}, rk4, gd-armijo × {a.iterations}, float64, "
          f"{threads} thread(s), median of {a.rounds} alternating round(s); load average {load0[0]:.2f} before, "
          f"{load1[0]:.2f} after, {os.cpu_count()} CPUs")
    for e, r in out["engines"].items():
        print(f"{e:<8} {r['wall_s']:8.2f} s wall {r['cpu_s']:8.2f} s CPU  {r['wall_s'] / a.iterations * 1e3:6.3f} ms/it  "
              f"{r['function_evaluations']} objective, {r['gradient_evaluations']} gradient evaluations; "
              f"E = {r['objective']:.6g}, train accuracy {r['train_accuracy']:.3f}")
    for e in engines[1:]:
        print(f"final parameters, {e} against {engines[0]}: max relative difference "
              f"{out['engines'][e]['max_rel_param_diff']:.2e}")
    if "native_first_solve_s" in warm:
        print(f"native engine: first (1-iteration) solve, compile or cache load included: {warm['native_first_solve_s']:.2f} s")
    if "jax_compile_s" in warm:
        print(f"jax: the jitted loop's ahead-of-time compile (not in its time above): {warm['jax_compile_s']:.2f} s")
    return 0
