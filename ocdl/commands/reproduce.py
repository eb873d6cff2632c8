"""``ocdl reproduce paper|highacc|seed --out DIR``: run every experiment of a target, draw the figures.

    ocdl reproduce paper --out runs/paper                      # the paper: 40 experiments
    ocdl reproduce paper --out runs/quick --quick --data spiral  # CI-sized
    ocdl reproduce paper --out runs/paper --jobs 8
    ocdl reproduce paper --out runs/paper --scheduler tcp://10.0.0.5:8786
    ocdl reproduce highacc --out runs/highacc                  # CasADi/IPOPT, well-posed problems
    ocdl reproduce seed --out runs/seed                        # the image experiment on digits
    ocdl reproduce seed --out runs/seed --data-path ~/data/mnist  # … and on MNIST100

Finished experiments are cached in DIR (``done.json``); rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ocdl.errors import OcdlError


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _jobs(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def register(sub):
    p = sub.add_parser("reproduce", help="run the paper's experiments (cached, parallel) and draw its figures")
    p.add_argument("target", choices=("paper", "highacc", "seed"),
                   help="paper: problems/paper (PyTorch); highacc: problems/highacc (CasADi); "
                        "seed: problems/seed, the image experiment (digits, and MNIST100 with --data-path)")
    p.add_argument("--out", required=True, help="output folder (experiments cached here)")
    p.add_argument("--quick", action="store_true", help="iterations/40 (≥ 50), ≤ 200 samples: a CI-sized run")
    p.add_argument("--data", type=_csv, help="only these data sets (comma-separated)")
    p.add_argument("--group", type=_csv, help="only these groups: lts, rk, init2, trained-classifier (paper); "
                                              "digits, mnist (seed)")
    p.add_argument("--data-path", metavar="DIR",
                   help="seed: the folder of MNIST's four IDX files (without it the mnist group is skipped)")
    p.add_argument("--only", nargs="+", metavar="PATTERN", help="only experiments matching a glob, e.g. 'rk/spiral-*'")
    p.add_argument("--jobs", type=_jobs, help="local worker processes (default: the available cores)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing Dask cluster (e.g. tcp://host:8786)")
    p.add_argument("--force", action="store_true", help="recompute cached experiments")
    p.add_argument("--no-figures", action="store_true", help="skip the paper's figures")
    p.add_argument("--list", action="store_true", help="list the experiments and their cache state; run nothing")
    p.add_argument("--quiet", action="store_true", help="no per-iteration progress lines")
    p.set_defaults(func=run)


def run(a) -> int:
    from ocdl.reproduce import experiments, figures, runner, summary

    if a.jobs is not None and a.scheduler:
        raise OcdlError("--jobs sizes the local cluster; with --scheduler the cluster's workers are used")
    if a.data_path is not None and a.target != "seed":
        raise OcdlError(f"--data-path: target {a.target!r} has no mnist experiments (only seed has)")
    skipped: list[str] = []
    exps = experiments.select(a.target, data=a.data, groups=a.group, only=a.only, quick_mode=a.quick,
                              data_path=a.data_path, skipped=skipped)
    if skipped:
        print(f"skipped {len(skipped)} mnist experiment(s) ({', '.join(skipped)}): no --data-path DIR, "
              "the folder of MNIST's four IDX files (ocdl downloads nothing)")
    out = Path(a.out)
    if a.list:
        for e in exps:
            state, _ = runner.cached(out, e, a.quick)
            if e.data in experiments.IMAGE_DATA:  # their sizes: images a class (None: all), test images
                d = e.problem.data
                size = f"{'all' if d.n_per_class is None else d.n_per_class} a class, {d.n_test or 'all'} test"
                print(f"{e.name:40s} {e.problem.solver.iterations:>6d} it  {size}  {state}")
                continue
            print(f"{e.name:40s} {e.problem.solver.iterations:>6d} it  n = {e.problem.data.n:<5d} {state}")
        return 0
    t0 = time.perf_counter()
    res = runner.run(exps, out, quick_mode=a.quick, jobs=a.jobs, scheduler=a.scheduler, force=a.force,
                     verbose=not a.quiet)
    if res["interrupted"]:
        return 130  # finished experiments are cached; figures and summary come with the rerun
    loaded = summary.load_results(out, exps)
    written = []
    if loaded and not a.no_figures:
        print("drawing figures ...", flush=True)
        written = figures.draw_all(out, exps, loaded)
    mode = "quick" if a.quick else "full"
    wall = time.perf_counter() - t0
    note = (f"Mode: {mode}. {len(res['ran'])} experiment(s) run now, {len(res['cached'])} cached, "
            f"{len(res['failed'])} failed. Per-experiment wall time is that of the run itself "
            f"(one worker process each).")
    if skipped:  # only the seed target leaves experiments out (the mnist ones without --data-path)
        note += f" Skipped without --data-path (no MNIST folder): {', '.join(skipped)}."
    if loaded:
        summary.write(out, exps, f"ocdl reproduce {a.target} ({mode})", note, results=loaded)
    print(f"reproduce {a.target} ({mode}): {len(exps)} experiments — {len(res['ran'])} run, "
          f"{len(res['cached'])} cached, {len(res['failed'])} failed — wall time {wall:.1f} s")
    if loaded:
        figs = "skipped" if a.no_figures else f"{out / 'figures'} ({len(written)} figures, PNG and PDF)"
        print(f"summary: {out / 'summary.md'}; figures: {figs}")
    return 1 if res["failed"] else 0
