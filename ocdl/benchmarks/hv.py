"""``ocdl bench hv``: the cost of one exact Hessian–vector product ∇²E·v against one gradient.

Problem (defaults): the ``bench solve`` problem — spiral, m = 1000, N = 15, h = 0.1, rk4,
per-layer controls, width 2, Tikhonov 1e-3 on every parameter, smoothness 1e-3, the seeded
initialisation — or ``--width d`` (the inputs padded), ``--tableau``, ``--layers``, ``--n``; with
``--data digits`` the bundled 8×8 digits (10 classes, width 64, cross-entropy; ``--n`` ignored).
Per engine (torch: reverse-over-reverse AD, :mod:`ocdl.engine.torch.hessian`; native, where numba
is installed: the compiled tangent and second-order adjoint sweeps, :mod:`ocdl.engine.native.curvature`),
interleaved over ``--repeats`` rounds, medians of: the gradient (partner adjoint) E, ∇E; the
curvature's setup at θ (once per Newton iteration); one product H·v; their ratios to the gradient
(the issue's budget is H·v ≤ 4 gradients), and the largest relative difference of the engines'
products. Figures only: nothing is asserted about speed.
"""

from __future__ import annotations

import json
import statistics
import time

from ocdl.commands._args import int_at_least, positive_float


def register(bsub):
    p = bsub.add_parser("hv", help="one exact Hessian–vector product against one gradient (torch, native)")
    p.add_argument("--data", default="spiral", choices=("spiral", "digits"), help="spiral (default) or digits")
    p.add_argument("--n", type=int_at_least(2), default=1000, help="samples m of the spiral (default 1000)")
    p.add_argument("--layers", type=int_at_least(1), default=15, help="layers N (default 15)")
    p.add_argument("--h", type=positive_float, default=0.1, help="step size (default 0.1)")
    p.add_argument("--tableau", default="rk4", help="registry tableau (default rk4)")
    p.add_argument("--width", type=int_at_least(1), help="state width d (default: the data's dimension)")
    p.add_argument("--repeats", type=int_at_least(1), default=21, help="interleaved rounds (default 21)")
    p.add_argument("--engines", default=None, help="comma-separated of torch, native (default: every installed one)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _problem(a):
    from ocdl.benchmarks.solve import ALL
    from ocdl.problem import DataSpec, NetworkSpec, ObjectiveSpec, Problem

    if a.data == "digits":
        return Problem(data=DataSpec("digits"),
                       network=NetworkSpec(family="rk", tableau=a.tableau, layers=a.layers, h=a.h, width=a.width),
                       objective=ObjectiveSpec(loss="cross-entropy", mean=True, tikhonov=dict(ALL), smooth=1e-3))
    return Problem(data=DataSpec("spiral", n=a.n),
                   network=NetworkSpec(family="rk", tableau=a.tableau, layers=a.layers, h=a.h, width=a.width),
                   objective=ObjectiveSpec(tikhonov=dict(ALL), smooth=1e-3))


def _time(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def run(a) -> int:
    import numpy as np
    import torch

    from ocdl.benchmarks.solve import native_available
    from ocdl.errors import OcdlError

    engines = [e.strip() for e in (a.engines or "torch,native").split(",") if e.strip()]
    bad = [e for e in engines if e not in ("torch", "native")]
    if bad:
        raise OcdlError(f"--engines: {bad[0]!r} is not one of torch, native")
    if "native" in engines and not native_available():
        if a.engines:
            raise OcdlError("--engines native: numba is not installed (pip install 'ocdl[native]')")
        engines.remove("native")
    prob = _problem(a)
    from ocdl.benchmarks import start_objective

    objs = {e: start_objective(prob, e, threads=1)[:2] for e in engines}
    theta = next(iter(objs.values()))[0].flat(next(iter(objs.values()))[1])
    v = torch.tensor(np.random.default_rng(0).standard_normal(theta.numel()))
    times = {e: {"gradient": [], "setup": [], "hv": []} for e in engines}
    products = {}
    for e, (obj, _) in objs.items():  # warm-up: compiles, caches, first calls
        obj.value_grad(theta)
        products[e] = obj.curvature(theta)(v)
    for _ in range(a.repeats):
        for e, (obj, _) in objs.items():
            times[e]["gradient"].append(_time(lambda: obj.value_grad(theta)))
            holder = {}
            times[e]["setup"].append(_time(lambda: holder.setdefault("c", obj.curvature(theta))))
            cur = holder["c"]
            times[e]["hv"].append(_time(lambda: cur(v)))
    out = {"problem": {"data": a.data, "m": int(next(iter(objs.values()))[0].Y0.shape[1]), "N": prob.N,
                       "tableau": a.tableau, "width": int(next(iter(objs.values()))[0].Y0.shape[0]),
                       "n_theta": int(theta.numel()), "repeats": a.repeats}, "rows": []}
    for e in engines:
        med = {k: statistics.median(x) for k, x in times[e].items()}
        out["rows"].append({"engine": e, "gradient_s": med["gradient"], "setup_s": med["setup"], "hv_s": med["hv"],
                            "hv_over_gradient": med["hv"] / med["gradient"],
                            "setup_over_gradient": med["setup"] / med["gradient"]})
    if len(engines) == 2:
        a_, b_ = products["torch"], products["native"]
        out["rel_diff"] = float((a_ - b_).abs().max() / a_.abs().max())
        out["torch_hv_over_native_hv"] = out["rows"][0]["hv_s"] / out["rows"][1]["hv_s"]
    if a.json:
        print(json.dumps(out))
        return 0
    p = out["problem"]
    print(f"H·v against the gradient: {p['data']}, m = {p['m']}, N = {p['N']}, {p['tableau']}, width {p['width']}, "
          f"n_θ = {p['n_theta']}, medians of {p['repeats']} interleaved rounds")
    print(f"{'engine':<8} {'gradient ms':>12} {'setup ms':>9} {'H·v ms':>8} {'H·v/grad':>9} {'setup/grad':>11}")
    for r in out["rows"]:
        print(f"{r['engine']:<8} {r['gradient_s'] * 1e3:>12.3f} {r['setup_s'] * 1e3:>9.3f} {r['hv_s'] * 1e3:>8.3f} "
              f"{r['hv_over_gradient']:>9.2f} {r['setup_over_gradient']:>11.2f}")
    if "rel_diff" in out:
        print(f"torch H·v / native H·v: {out['torch_hv_over_native_hv']:.2f}; the two products differ by "
              f"{out['rel_diff']:.1e} relative")
    return 0
