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


def start_objective(problem, engine: str = "torch", threads: int = 0):
    """(objective, its parameters as tensors, as NumPy arrays): the torch engine's
    :class:`~ocdl.engine.torch.optim.Objective` (``engine = 'native'``: the compiled
    :class:`~ocdl.engine.native.objective.CompiledObjective`) of ``problem`` at its seeded start,
    on its (lifted) training and test data, with torch's CPU threads set by
    :func:`~ocdl.engine.torch.network.configure_threads` (``threads`` 0: by the problem's size)."""
    from ocdl import api
    from ocdl.engine.torch.network import TorchNetwork, configure_threads
    from ocdl.engine.torch.optim import Objective
    from ocdl.problem import classes, init_params

    train, test = api.lifted_data(problem)
    d, K = problem.width(train.dim), classes(problem, train)
    configure_threads(train.n, d, threads)
    net = TorchNetwork(problem, d, classes=K)
    params0 = init_params(problem, d, K)
    base = net.to_torch(params0)
    args = (net, base, problem.trainable(), net.inputs(train.X), net.targets(train.c), net.inputs(test.X),
            net.targets(test.c))
    if engine == "native":
        from ocdl.engine.native.objective import CompiledObjective

        return CompiledObjective(*args), base, params0
    return Objective(*args), base, params0
