"""``ocdl bench tanh``: the tanh kernels (:mod:`ocdl.tanh`) timed as the choice times them, and
the torch engine's gradient with each.

Prints, per available kernel (numpy, torch, ocdl), the median time per value at each of
``--sizes`` (interleaved rounds, seeded N(0, 4) arguments), their sum (the choice's criterion),
the kernel that wins now, the machine's recorded choice and its cache file; then the bench
problem's gradient (spiral, m = ``--n``, N = 15, rk4, partner adjoint, one thread) with each kernel,
interleaved medians, so that the choice can be checked where it matters. Figures only.
"""

from __future__ import annotations

import json
import os
import statistics
import time

from ocdl.commands._args import int_at_least


def _sizes(text: str) -> tuple[int, ...]:
    import argparse

    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return sizes


def register(bsub):
    from ocdl import tanh

    p = bsub.add_parser("tanh", help="the tanh kernels per value and in the torch engine's gradient")
    p.add_argument("--sizes", type=_sizes, default=tanh.SIZES,
                   help=f"values per call (default {','.join(map(str, tanh.SIZES))}, the choice's sizes)")
    p.add_argument("--rounds", type=int_at_least(1), default=21, help="interleaved rounds (default 21)")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--n", type=int_at_least(0), default=1000,
                   help="samples m of the gradient rows (default 1000; 0: no gradient rows)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(a) -> int:
    import torch

    from ocdl import tanh

    torch.set_num_threads(1)
    load0 = os.getloadavg()
    per_value = tanh.measure(a.dtype, sizes=a.sizes, rounds=a.rounds)
    winner = tanh.fastest(per_value)
    grad = _gradients(a, list(per_value)) if a.n and a.dtype == "float64" else {}
    load1 = os.getloadavg()
    out = {"dtype": a.dtype, "sizes": list(a.sizes), "rounds": a.rounds,
           "seconds_per_value": {k: [v[n] for n in a.sizes] for k, v in per_value.items()},
           "fastest_now": winner, "choice": tanh.kernel(a.dtype), "cache_file": str(tanh.cache_file(a.dtype)),
           "gradient_s": grad, "load_average": {"before": load0, "after": load1}, "cpus": os.cpu_count()}
    if a.json:
        print(json.dumps(out))
        return 0
    print(f"ocdl bench tanh: {a.dtype}, 1 thread, median of {a.rounds} interleaved rounds; load average "
          f"{load0[0]:.2f} before, {load1[0]:.2f} after, {os.cpu_count()} CPUs")
    print("kernel   " + "".join(f"{n:>12}" for n in a.sizes) + "         sum   (ns per value)")
    for k, v in per_value.items():
        print(f"{k:<9}" + "".join(f"{v[n] * 1e9:12.3f}" for n in a.sizes) + f"{sum(v.values()) * 1e9:12.3f}")
    print(f"fastest now: {winner}; this machine's choice: {out['choice']} ({out['cache_file']}"
          f"{', $OCDL_TANH' if os.environ.get('OCDL_TANH') else ''})")
    if grad:
        best = min(grad.values())
        print(f"gradient (spiral, m = {a.n}, N = 15, rk4, partner adjoint): "
              + ", ".join(f"{k} {t * 1e3:.3f} ms ({t / best:.2f})" for k, t in grad.items()))
    return 0


def _gradients(a, names) -> dict:
    """{kernel: median seconds of one partner-adjoint gradient} on the bench problem, interleaved."""
    from ocdl import tanh
    from ocdl.benchmarks import start_objective
    from ocdl.engine.torch.adjoint import grad_adjoint
    from ocdl.problem import DataSpec, NetworkSpec, Problem

    prob = Problem(data=DataSpec("spiral", n=a.n), network=NetworkSpec(family="rk", tableau="rk4", layers=15, h=0.1))
    obj, prm, _ = start_objective(prob, threads=1)
    net, Y0, c = obj.net, obj.Y0, obj.c
    times = {k: [] for k in names}
    for _ in range(a.rounds):
        for k in names:
            with tanh.using({"float64": k}):
                grad_adjoint(net, prm, Y0, c)  # the kernel's first call out of the timing
                t0 = time.perf_counter()
                grad_adjoint(net, prm, Y0, c)
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}
