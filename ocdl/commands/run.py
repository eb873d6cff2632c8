"""``ocdl run FILE --out DIR``: train the problem of a problem file (or catalogue name).

    ocdl run problems/paper/rk/spiral-kutta4.toml --out runs/x
    ocdl run paper/rk/spiral-kutta4 --out runs/x --set network.layers=30 --set network.tableau=kutta3
    ocdl run paper/lts/spiral-odenet --out runs/q --quick
    ocdl run --list                         # the catalogue, one line per file
    ocdl run paper/rk/spiral-kutta4 --show  # the validated problem as TOML; runs nothing

The file is validated first (errors name the file, the line and the key); nothing is written on
bad input. The run directory is that of ``ocdl train`` (see :mod:`ocdl.rundir`).
"""

from __future__ import annotations

from pathlib import Path

from ocdl.errors import OcdlError


def register(sub):
    p = sub.add_parser("run", help="train the problem of a problem file (TOML) into a run directory")
    p.add_argument("file", nargs="?", help="a problem file, or a catalogue name such as paper/rk/spiral-kutta4 (not with --resume)")
    p.add_argument("--out", help="run directory to write")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change one setting (TOML value), e.g. --set network.layers=30; repeatable")
    p.add_argument("--quick", action="store_true", help="the reproduction's quick variant: iterations/40, ≤ 200 samples")
    p.add_argument("--init", help="initial parameters: a run directory or .npz (K, beta, W, mu, h)")
    p.add_argument("--resume", action="store_true", help="continue the stopped run in --out (PyTorch engine)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    p.add_argument("--show", action="store_true", help="print the validated problem as TOML and exit")
    p.add_argument("--list", action="store_true", help="list the catalogue's problem files and exit")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def _list() -> int:
    from ocdl import catalogue

    base = catalogue.root()
    print(f"problem catalogue: {base}")
    for path in catalogue.discover(base):
        first = (catalogue.describe(path).splitlines() or [""])[0]
        print(f"  {catalogue.name_of(path):42s} {first}")
    return 0


def run(a) -> int:
    from ocdl import catalogue, training

    if a.list:
        return _list()
    if a.resume:
        if not a.out:
            raise OcdlError("run: --resume needs --out DIR (the run to continue)")
        if a.overrides or a.quick or a.init:
            raise OcdlError("run: --resume continues the run in --out as it was; it takes no --set/--quick/--init")
        res, _ = training.train(None, out=a.out, resume=Path(a.out), quiet=a.quiet)
        return _exit_code(res)
    if not a.file:
        raise OcdlError("run: give a problem file (or --list)")
    problem = catalogue.load(a.file)
    if a.quick:
        from ocdl.reproduce.experiments import quick

        problem = quick(problem)
    problem = catalogue.override(problem, a.overrides, str(catalogue.resolve(a.file)))  # --set wins over --quick
    if a.show:
        import tomli_w

        print(tomli_w.dumps(problem.to_dict()), end="")
        return 0
    if not a.out:
        raise OcdlError("run: --out DIR is required (or --show / --list)")
    res, _ = training.train(problem, out=a.out, init=a.init, quiet=a.quiet, force=a.force)
    return _exit_code(res)


def _exit_code(res) -> int:
    if res.interrupted:
        return 130
    return 0 if res.success else 1
