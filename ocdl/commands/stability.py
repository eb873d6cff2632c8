"""``ocdl stability``: the seed's stability estimates, measured (see :mod:`ocdl.stability`).

    ocdl stability monotone --sigma tanh --dim 2 --cases 1000 [--flow plain] [--json]
    ocdl stability discrete --tableau rk4 --sigma tanh [--json] [--out DIR]
    ocdl stability inverse --lam 1.0 --delta 1e-3 [--A random|identity|FILE] [--json]
    ocdl stability network runs/spiral-rk4 [--json]
    ocdl stability all --out runs/stab [--docs docs/stability.md] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ocdl.commands._args import int_at_least, positive_float
from ocdl.errors import OcdlError


def _dims(s: str) -> tuple[int, ...]:
    """'2', '1-16' or '1,2,4' → widths."""
    try:
        if "-" in s:
            a, b = (int(x) for x in s.split("-", 1))
            dims = tuple(range(a, b + 1))
        else:
            dims = tuple(int(x) for x in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N, A-B or a comma list of widths, got {s!r}") from None
    if not dims or min(dims) < 1 or max(dims) > 64:
        raise argparse.ArgumentTypeError(f"widths must lie in 1…64, got {s!r}")
    return dims


def register(sub):
    p = sub.add_parser("stability", help="the monotone-σ and inverse-problem estimates, measured")
    ssub = p.add_subparsers(dest="kind", metavar="KIND")
    ssub.required = True

    m = ssub.add_parser("monotone", help="y' = −Kᵀσ(Ky+β): perturbation growth over random cases (≤ 1 for monotone σ)")
    m.add_argument("--sigma", default="tanh", help="activation (default tanh; sin, xtanh are not monotone)")
    m.add_argument("--flow", choices=("monotone", "plain"), default="monotone",
                   help="monotone: −Kᵀσ(Ky+β) (default); plain: the unmodified σ(Ky+β)")
    m.add_argument("--dim", type=_dims, default=tuple(range(1, 17)), help="width(s): N, A-B or a list (default 1-16)")
    m.add_argument("--cases", type=int_at_least(1), default=200, help="random cases (default 200)")
    m.add_argument("--T", type=positive_float, default=1.0, help="final time (default 1)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--json", action="store_true", help="print one JSON object")
    m.set_defaults(func=run_monotone)

    d = ssub.add_parser("discrete", help="Runge–Kutta layers of the monotone flow: largest stable h‖K‖²")
    d.add_argument("--tableau", default="rk4", help="registry tableau, or 'all' (default rk4)")
    d.add_argument("--tableau-file", help="a user tableau (TOML/JSON with A, b, optional c and name) instead")
    d.add_argument("--sigma", default="tanh", help="monotone activation (default tanh)")
    d.add_argument("--dim", type=int_at_least(1), default=2, help="width (default 2)")
    d.add_argument("--cases", type=int_at_least(1), default=200, help="random cases (default 200)")
    d.add_argument("--layers", type=int_at_least(1), default=10, help="N for the multi-layer scan (default 10)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", help="write the figure discrete-<tableau>.png into this folder")
    d.add_argument("--json", action="store_true", help="print one JSON object (a list for --tableau all)")
    d.set_defaults(func=run_discrete)

    i = ssub.add_parser("inverse", help="y' = −Kᵀσ(Ky+β) − λAᵀ(Ay − f): estimates (a)–(d)")
    i.add_argument("--lam", type=positive_float, default=1.0, help="λ (default 1)")
    i.add_argument("--delta", type=positive_float, default=1e-3, help="data perturbation δ (default 1e-3)")
    i.add_argument("--A", default="random", help="random (default), identity, or a matrix file (.npy, .csv, .txt)")
    i.add_argument("--sigma", default="tanh", help="monotone activation (default tanh)")
    i.add_argument("--tau", type=positive_float, default=1.0, help="stopping time t* = τδ in (c) (default 1)")
    i.add_argument("--cases", type=int_at_least(1), default=50, help="random cases per estimate (default 50)")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=run_inverse)

    n = ssub.add_parser("network", help="a trained network (run directory) against the estimate")
    n.add_argument("run_dir", help="a run directory of `ocdl train` / `ocdl run`")
    n.add_argument("--pairs", type=int_at_least(1), default=4000, help="random data pairs (default 4000)")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--json", action="store_true", help="print one JSON object")
    n.set_defaults(func=run_network)

    a = ssub.add_parser("all", help="everything: report.md, report.json and figures")
    a.add_argument("--out", required=True, help="output folder (created if missing)")
    a.add_argument("--docs", help="also write a docs page (tables, links to the figures in --out)")
    a.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run, not a measurement)")
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=run_all)


def run_monotone(args) -> int:
    from ocdl.stability import monotone

    r = monotone.measure(args.sigma, args.flow, args.cases, args.dim, args.seed, args.T)
    if args.json:
        print(json.dumps(monotone.json_view(r)))
        return 0
    dims = f"{min(args.dim)}…{max(args.dim)}" if len(args.dim) > 1 else str(args.dim[0])
    print(f"flow {r['flow']}, σ = {r['sigma']} ({'monotone' if r['monotone'] else 'not monotone'}), "
          f"{r['cases']} cases, widths {dims}, T = {args.T:g}")
    print(f"max over cases of max_t ‖y(t) − y^δ(t)‖/‖y(0) − y^δ(0)‖ = {r['max_ratio']:.12g}")
    print(f"violations (ratio > 1 + {r['tol']:g}): {r['violations']} of {r['cases']}")
    print(f"median ratio at t = T: {r['median_final_ratio']:.4g}")
    return 0


def run_discrete(args) -> int:
    from ocdl import tableau as tab
    from ocdl.stability import discrete

    names = ([tab.load(args.tableau_file)] if getattr(args, "tableau_file", None) else
             tab.names() if args.tableau == "all" else [tab.get(args.tableau).name])
    results = [discrete.measure(n, args.sigma, args.cases, args.dim, args.layers, args.seed) for n in names]
    if args.out:
        from ocdl import rundir
        from ocdl.stability import report

        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise OcdlError(f"--out {str(out)!r} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        for r in results:
            fig = report._fig_discrete({r["sigma"]: [r]}, r["tableau"])
            rundir.save_figure(fig, out / f"discrete-{r['tableau']}.png", dpi=110)
    if args.json:
        views = [discrete.json_view(r) for r in results]
        print(json.dumps(views[0] if len(views) == 1 else views))
        return 0
    r0 = results[0]
    print(f"monotone layers y ← y − h Kᵀσ(Ky+β), σ = {r0['sigma']} (L = {r0['L']:g}), {r0['cases']} cases, "
          f"width {r0['width']}, N = {r0['layers']}; Euler bound h‖K‖² ≤ 2/L = {r0['euler_bound']:g}")
    print(f"{'tableau':<10} {'r/L':>8} {'x* 1 layer':>11} {'x* N layers':>12}  violations x ≤ 2/L (1 / N)")
    for r in results:
        print(f"{r['tableau']:<10} {r['linear_limit']:>8.4f} {r['one_layer']['x_star']:>11.4f} "
              f"{r['n_layers']['x_star']:>12.4f}  {r['one_layer']['violations_up_to_euler_bound']} / "
              f"{r['n_layers']['violations_up_to_euler_bound']}")
    return 0


def run_inverse(args) -> int:
    from ocdl.stability import inverse

    r = inverse.measure(args.sigma, args.lam, args.delta, args.A, args.tau, args.cases, seed=args.seed)
    if args.json:
        print(json.dumps(inverse.json_view(r)))
        return 0
    print(f"y' = −Kᵀσ(Ky+β) − λAᵀ(Ay − f): σ = {r['sigma']}, λ = {r['lam']:g}, δ = {r['delta']:g}, A = {r['A']}")
    print("ratio = measured / bound, max over t and cases (≤ 1: the estimate holds)")
    for key, name in (("a", "(a) data perturbation ‖y − y^δ‖ ≤ λ‖A‖tδ"),
                      ("b", "(b) ‖y^δ − y†‖ ≤ ‖y^δ(0) − y†‖ + (C + λδ‖A‖)t"),
                      ("d", "(d) full column rank: contraction at rate λσ_min(A)²")):
        x = r[key]
        if x["max_ratio"] is None:
            print(f"{name}: skipped ({x['skipped']})")
        else:
            print(f"{name}: max ratio {x['max_ratio']:.6f}, violations {x['violations']} of {x['cases']}")
    c = r["c"]
    print(f"(c) A = I, stop at t* = {c['tau']:g}·δ: error rate in δ {c['rate']:.3f}; "
          f"best fixed time t = {c['fixed_time']:.3g}: rate {c['fixed_rate']:.3f}")
    for d, e, ef in zip(c["deltas"], c["errors"], c["fixed_errors"]):
        print(f"    δ = {d:8.1e}   error at t* {e:.4e}   at fixed t {ef:.4e}")
    return 0


def run_network(args) -> int:
    from ocdl.stability import network

    problem, params, train = network.load_run(args.run_dir)
    r = network.check(problem, params, train.X, args.pairs, args.seed)
    if args.json:
        print(json.dumps(network.json_view(r)))
        return 0
    print(f"{args.run_dir}: family {r['family']}, tableau {r['tableau']}, σ = {r['sigma']}, N = {r['layers']}, "
          f"width {r['width']}, {r['points']} training points")
    print(f"Lipschitz constant of x ↦ y_N(x): local {r['lipschitz_local']:.4g} (max over layers "
          f"{r['lipschitz_local_all_layers']:.4g}), over data pairs {r['lipschitz_pairs']:.4g}")
    print(f"max_j h_j L‖K_j‖² = {r['max_h_L_normK2']:.4g}; a-priori bound Π ℓ_j = {r['a_priori_bound']:.4g}")
    if r["estimate_holds"]:
        print(f"monotone estimate: Lipschitz ≤ 1 ({r['estimate_note']}): "
              + ("VIOLATED" if r["estimate_violated"] else "holds"))
    else:
        print(f"monotone estimate: no guarantee ({r['estimate_note']})")
    print("growth per layer: " + " ".join(f"{g:.3g}" for g in r["growth_per_layer"]))
    return 0


def run_all(args) -> int:
    from ocdl.stability import report

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise OcdlError(f"--out {str(out)!r} exists and is not a folder")
    if args.docs and Path(args.docs).is_dir():
        raise OcdlError(f"--docs {args.docs!r} is a folder; give the page's file name")
    t0 = time.perf_counter()
    res = report.measure_all(quick=args.quick, seed=args.seed, log=print)
    res["quick"] = args.quick
    intro = ""
    if args.docs:
        intro = report.DOCS_INTRO
    paths = report.write(res, out, docs=args.docs, docs_intro=intro)
    print(f"wrote {len(paths)} files to {out}" + (f" and {args.docs}" if args.docs else ""))
    print(f"ocdl stability all: {time.perf_counter() - t0:.1f} s")
    return 0
