"""argparse types shared by the commands: a bad value is one ``ocdl: error: …`` line, exit 2."""

from __future__ import annotations

import argparse
import math


def int_at_least(k: int):
    """The type of an integer option ≥ k."""

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            v = None
        if v is None or v < k:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ {k}, got {s!r}")
        return v

    parse.__name__ = f"integer ≥ {k}"
    return parse


def positive_float(s: str) -> float:
    """The type of a finite number > 0."""
    try:
        v = float(s)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {s!r}")
    return v
