"""The benchmarks of ``ocdl bench`` (one module per kind, each with ``register(subparsers)``)."""

from __future__ import annotations

import argparse


def tableau_file(path: str) -> str:
    """The argparse type of ``--tableau-file``: a user tableau file (TOML/JSON), read and checked
    when the command line is parsed (a bad file is one error line before any measurement); a
    benchmark runs consistent tableaux only (Σ b_i = 1). Returns the path, which a problem's
    ``network.tableau`` accepts."""
    from ocdl import tableau
    from ocdl.errors import OcdlError

    try:
        tab = tableau.load(path)
    except OcdlError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not tab.consistent:
        raise argparse.ArgumentTypeError(f"tableau file {path!r} is inconsistent (Σ b_i = {tab.b_sum:.12g}, not 1); "
                                         "benchmarks run consistent tableaux (study it with `ocdl tableau --file`)")
    if not path.lower().endswith((".toml", ".json")):
        raise argparse.ArgumentTypeError(f"tableau file {path!r}: the name must end in .toml or .json")
    return path
