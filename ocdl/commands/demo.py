"""``ocdl demo --out DIR``: the main job — a high-accuracy CasADi solve of the embedded problem,
cross-checked with the PyTorch engine, commutation and stability checks, a report.

    ocdl demo --out runs/demo
    ocdl demo --out runs/demo-small --n 100
    ocdl demo --out runs/demo-k3 --set network.tableau=kutta3
    ocdl demo --print-problem            # the embedded problem file
"""

from __future__ import annotations

from ocdl.commands._args import int_at_least
from ocdl.errors import OcdlError




def register(sub):
    p = sub.add_parser("demo", help="the main job: CasADi solve to KKT 1e-10, PyTorch cross-check, commutation, stability, report")
    what = p.add_mutually_exclusive_group(required=True)  # --out is required, unless --print-problem
    what.add_argument("--out", metavar="DIR", help="output folder (report.md, report.json, checks.png, run/); required")
    what.add_argument("--print-problem", action="store_true", help="print the embedded problem file and exit")
    p.add_argument("--n", type=int_at_least(2), help="training samples (default: the embedded problem's)")
    p.add_argument("--quick", action="store_true", help="a small instance (n = 40) for a smoke run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change one setting of the embedded problem (TOML value); repeatable")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(a) -> int:
    from ocdl import demo

    if a.print_problem:
        print(demo.PROBLEM_TOML, end="")
        return 0
    if not a.out:
        raise OcdlError("demo: --out DIR is required")
    report = demo.run(a.out, n=a.n, quick=a.quick, overrides=a.overrides, force=a.force,
                      log=None if a.quiet else print)
    return 0 if demo.passed(report) else 1
