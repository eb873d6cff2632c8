"""``ocdl verify commutation|order|all``: discretise-then-optimise versus optimise-then-discretise.

    ocdl verify commutation --tableau kutta3 --layers 15 --data spiral [--controls per-stage] [--json]
    ocdl verify commutation --tableau-file my_tableau.toml ...
    ocdl verify order --tableau rk4 [--json] [--out DIR]
    ocdl verify all --out runs/verify
"""

from __future__ import annotations

import time
from pathlib import Path

from ocdl.errors import OcdlError


def _tableau_args(p, default="rk4"):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tableau", default=None, help=f"registry tableau (default {default}; see `ocdl tableau --list`)")
    g.add_argument("--tableau-file", default=None, help="a user tableau, TOML or JSON with A, b (and c, name)")


def register(sub):
    p = sub.add_parser("verify", help="DTO vs OTD gradients, the bilinear invariant, convergence orders")
    vsub = p.add_subparsers(dest="check", metavar="CHECK")
    vsub.required = True

    c = vsub.add_parser("commutation", help="all gradients at the same seeded controls, against autograd")
    _tableau_args(c)
    c.add_argument("--problem", help="a problem file (TOML) to start from; the options below override it")
    c.add_argument("--family", choices=("rk", "resnet", "odenet", "odenet-simplex", "monotone"))
    c.add_argument("--layers", type=int, help="N (default 15)")
    c.add_argument("--h", type=float, help="step size (default 0.1)")
    c.add_argument("--data", choices=("donut1d", "donut2d", "spiral", "squares"), help="default spiral")
    c.add_argument("--n", type=int, help="number of samples (default 40)")
    c.add_argument("--controls", choices=("per-layer", "per-stage"), help="default per-layer")
    c.add_argument("--activation", help="default tanh")
    c.add_argument("--width", type=int, help="network width d (default: the data's dimension, 2)")
    c.add_argument("--seed", type=int, help="seeds the data and the controls (default 0)")
    c.add_argument("--no-casadi", action="store_true", help="skip the CasADi engine")
    c.add_argument("--allow-inconsistent", action="store_true",
                   help="accept a tableau with Σ b_i ≠ 1 (ODE order 0), refused otherwise: its discrete gradients "
                        "still commute, but the 'continuous' rows compare with an ODE it does not approximate")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=run_commutation)

    o = vsub.add_parser("order", help="convergence orders of state, costate, gradient and optimal control")
    _tableau_args(o)
    o.add_argument("--T", type=float, default=1.0, help="final time (default 1)")
    o.add_argument("--Ns", default="4,8,16,32,64,128,256", help="grid sizes N (default 4,8,…,256)")
    o.add_argument("--n", type=int, default=20, help="number of samples (default 20)")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--no-casadi", action="store_true", help="skip the optimal-control order (CasADi)")
    o.add_argument("--out", help="write the log-log figure order_<tableau>.png into this folder")
    o.add_argument("--json", action="store_true", help="print one JSON object")
    o.set_defaults(func=run_order)

    a = vsub.add_parser("all", help="every registry tableau: report.md, report.json and figures")
    a.add_argument("--out", required=True, help="output folder (created if missing)")
    a.add_argument("--n", type=int, default=40, help="number of samples (default 40)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--no-casadi", action="store_true", help="skip the CasADi engine")
    a.add_argument("--json", action="store_true", help="print report.json's content instead of the summary")
    a.set_defaults(func=run_all)


def _quiet_threads(m: int = 1, d: int = 2):
    """Torch CPU threads for these small batches (one thread; see ``configure_threads``)."""
    from ocdl.engine.torch.network import configure_threads

    configure_threads(m, d)


def _tableau(args):
    return args.tableau_file or args.tableau


def run_commutation(args) -> int:
    from ocdl.verify import commutation, instance, report

    base = None
    if args.problem:
        from ocdl import catalogue

        base = catalogue.load(Path(args.problem))
    for key in ("layers", "n", "width"):
        v = getattr(args, key)
        if v is not None and v < 1:
            raise OcdlError(f"--{key}: must be ≥ 1, got {v}")
    tab = _tableau(args) or (None if base is not None else "rk4")
    prob = instance.build_problem(
        base, tableau=tab, layers=args.layers, h=args.h, data=args.data, n=args.n, controls=args.controls,
        seed=args.seed, family=args.family, activation=args.activation, width=args.width,
        allow_inconsistent=args.allow_inconsistent,
    )
    inst = instance.Instance.make(prob)
    _quiet_threads(inst.m, inst.d)
    res = commutation.commutation(inst, casadi=not args.no_casadi)
    if args.json:
        print(report.dumps(res))
    else:
        print(report.format_commutation(res))
    return 0


def run_order(args) -> int:
    from ocdl.verify import order, report

    try:
        Ns = [int(x) for x in args.Ns.split(",") if x.strip()]
    except ValueError:
        raise OcdlError(f"--Ns: expected comma-separated integers, got {args.Ns!r}") from None
    if len(Ns) < 2 or any(N < 1 for N in Ns) or sorted(Ns) != Ns:
        raise OcdlError(f"--Ns: need at least two increasing grid sizes ≥ 1, got {args.Ns!r}")
    if not (args.T > 0 and args.T < float("inf")):
        raise OcdlError(f"--T: must be a finite number > 0, got {args.T}")
    if args.n < 1:
        raise OcdlError(f"--n: must be ≥ 1, got {args.n}")
    out = None
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise OcdlError(f"--out {str(out)!r} exists and is not a directory")
    _quiet_threads()
    res = order.order(_tableau(args) or "rk4", Ns, T=args.T, n=args.n, seed=args.seed, control=not args.no_casadi)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        report.order_figure(res, out / f"order_{res['tableau']}.png")
    if args.json:
        print(report.dumps(res))
    else:
        print(report.format_order(res))
        if out is not None:
            print(f"figure: {out / ('order_' + res['tableau'] + '.png')}")
    return 0


def run_all(args) -> int:
    from ocdl.verify import report

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise OcdlError(f"--out {str(out)!r} exists and is not a directory")
    if args.n < 2:
        raise OcdlError(f"--n: need at least 2 samples, got {args.n}")
    _quiet_threads()
    t0 = time.perf_counter()
    res = report.run_all(out, n=args.n, seed=args.seed, casadi=not args.no_casadi,
                         log=(lambda s: None) if args.json else print)
    if args.json:
        print(report.dumps(res))
        return 0 if res["passed"] else 1
    print("\n".join(report.summary_lines(res)))
    print(f"report: {out / 'report.md'}; ocdl verify all took {time.perf_counter() - t0:.1f} s")
    return 0 if res["passed"] else 1
