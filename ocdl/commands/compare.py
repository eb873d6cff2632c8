"""``ocdl compare RUN_A RUN_B [--json] [--tol T]``: differences of two runs' parameters,
objectives and costates (max abs and relative), e.g. the CasADi and the PyTorch engine on the
same problem. Relative differences are max|a − b| / max(max|a|, max|b|).

With ``--tol T`` the exit code is 1 when a relative difference of the parameters, the objective
or the costates exceeds T (so that a script can check two engines against each other)."""

from __future__ import annotations

import json

import numpy as np

from ocdl import rundir
from ocdl.errors import OcdlError
from ocdl.problem import PARAM_KEYS


def _tolerance(s: str) -> float:
    """--tol: a finite number ≥ 0."""
    import argparse
    import math

    try:
        v = float(s)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number ≥ 0, got {s!r}")
    return v


def register(sub):
    p = sub.add_parser("compare", help="differences of two run directories (parameters, objectives, costates)")
    p.add_argument("run_a", help="first run directory")
    p.add_argument("run_b", help="second run directory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--tol", type=_tolerance, default=None,
                   help="exit 1 if a relative difference exceeds TOL (a finite number ≥ 0)")
    p.set_defaults(func=run)


def difference(a, b) -> dict:
    """{'max_abs', 'rel'} of two arrays of one shape."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise OcdlError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return {"max_abs": 0.0, "rel": 0.0}
    d = float(np.max(np.abs(a - b)))
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))))
    return {"max_abs": d, "rel": d / scale if scale > 0 else (0.0 if d == 0 else float("inf"))}


def compare(run_a, run_b) -> dict:
    """The JSON of ``ocdl compare``."""
    pa, xa, ma = rundir.load(run_a)
    pb, xb, mb = rundir.load(run_b)
    out = {"run_a": str(run_a), "run_b": str(run_b), "params": {}, "objective": {}, "costates": {}, "notes": []}
    keys = [k for k in PARAM_KEYS if k in xa and k in xb]
    for k in keys:
        try:
            out["params"][k] = difference(xa[k], xb[k])
        except OcdlError as e:
            raise OcdlError(f"runs are not comparable: parameter {k}: {e}") from None
    for name in ("objective", "test_objective", "gradient_norm", "train_accuracy", "test_accuracy"):
        if name in ma and name in mb and ma[name] is not None and mb[name] is not None:
            va, vb = float(ma[name]), float(mb[name])
            out["objective"][name] = {"a": va, "b": vb, **difference(va, vb)}
    ca, cb = rundir.load_costates(run_a), rundir.load_costates(run_b)
    if ca is None or cb is None:
        out["notes"].append("costates: " + ("neither run" if ca is None and cb is None else
                                            f"only {run_b if ca is None else run_a}") + " has costates.npz")
    else:
        for k in sorted(set(ca) & set(cb)):
            try:
                out["costates"][k] = difference(ca[k], cb[k])
            except OcdlError as e:
                out["notes"].append(f"costates {k}: {e}")
    da, db = pa.to_dict(), pb.to_dict()
    for sec in ("data", "network", "classifier", "objective"):
        if da.get(sec) != db.get(sec):
            out["notes"].append(f"the runs' [{sec}] sections differ")
    out["engines"] = [ma.get("engine", pa.solver.backend), mb.get("engine", pb.solver.backend)]
    return out


def _rows(title, entries, cols):
    lines = [f"{title:<16}" + "".join(f"{c:>14}" for c in cols)]
    for k, v in entries.items():
        lines.append(f"  {k:<14}" + "".join(f"{v[c]:>14.4e}" if isinstance(v[c], float) else f"{v[c]!s:>14}" for c in cols))
    return lines


def run(args) -> int:
    res = compare(args.run_a, args.run_b)
    rels = [v["rel"] for v in res["params"].values()] + [v["rel"] for v in res["costates"].values()]
    if "objective" in res["objective"]:
        rels.append(res["objective"]["objective"]["rel"])
    worst = max(rels, default=0.0)
    res["max_rel"] = worst
    if args.json:
        print(json.dumps(res))
    else:
        print(f"A: {res['run_a']} ({res['engines'][0]})")
        print(f"B: {res['run_b']} ({res['engines'][1]})")
        out = _rows("parameters", res["params"], ["max_abs", "rel"])
        if res["objective"]:
            out += _rows("metrics", res["objective"], ["a", "b", "max_abs", "rel"])
        if res["costates"]:
            out += _rows("costates", res["costates"], ["max_abs", "rel"])
        print("\n".join(out))
        for note in res["notes"]:
            print(f"note: {note}")
        print(f"largest relative difference: {worst:.3e}")
    if args.tol is not None and not worst <= args.tol:
        return 1
    return 0
