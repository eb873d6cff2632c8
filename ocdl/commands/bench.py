"""``ocdl bench KIND``: benchmarks that print figures (never pass/fail). Each kind lives in
``ocdl/benchmarks/<kind>.py`` with ``register(subparsers)``."""

from __future__ import annotations

import importlib

KINDS = ("gradient", "solve", "hv", "epoch", "train", "tanh")


def register(sub):
    p = sub.add_parser("bench", help="benchmarks: print timing and memory figures")
    bsub = p.add_subparsers(dest="kind", metavar="KIND")
    bsub.required = True
    for kind in KINDS:
        try:
            mod = importlib.import_module(f"ocdl.benchmarks.{kind}")
        except ModuleNotFoundError as e:
            if e.name == f"ocdl.benchmarks.{kind}":
                continue
            raise
        mod.register(bsub)
