"""ocdl — deep learning as discrete optimal control.

A residual network is a Runge–Kutta discretisation of y' = f(y, u); training it is a discrete
optimal control problem. Pose one in Python and solve it in either engine::

    import numpy as np, ocdl
    tab = ocdl.Tableau([[0, 0], [2/3, 0]], [1/4, 3/4], name="ralston2")
    prob = ocdl.Problem.from_arrays(X, c, network={"family": "rk", "tableau": tab, "layers": 8, "h": 0.1},
                                    objective={"tikhonov": 1e-3, "smooth": 1e-3})
    r1 = ocdl.solve(prob, engine="torch", solver="gd-armijo", iterations=200)
    r2 = ocdl.solve(prob, engine="casadi", solver="ipopt", tol=1e-10, init=r1.params)
    ev = ocdl.evaluate(prob, r2.params, engine="torch")

Names (imported on first use, so that ``import ocdl`` stays light):

    Problem, DataSpec, NetworkSpec, ClassifierSpec, ObjectiveSpec, InitSpec, SolverSpec
    Tableau, tableau (the registry: ``ocdl.tableau.get("rk4")``), Dataset, datasets (``make``),
    images (digits, MNIST), lifting (features → y^[0]), fields, tanh (the tanh kernel: ``ocdl.tanh.kernel()``)
    solve, evaluate, states, engines, Result, Evaluation, Engine, OcdlError, load_problem, load_run
"""

from __future__ import annotations

import importlib

from ocdl.errors import OcdlError

__version__ = "0.1.0"

_NAMES = {
    "Problem": ("ocdl.problem", "Problem"),
    "DataSpec": ("ocdl.problem", "DataSpec"),
    "NetworkSpec": ("ocdl.problem", "NetworkSpec"),
    "ClassifierSpec": ("ocdl.problem", "ClassifierSpec"),
    "ObjectiveSpec": ("ocdl.problem", "ObjectiveSpec"),
    "InitSpec": ("ocdl.problem", "InitSpec"),
    "SolverSpec": ("ocdl.problem", "SolverSpec"),
    "Tableau": ("ocdl.tableau", "Tableau"),
    "Dataset": ("ocdl.data", "Dataset"),
    "solve": ("ocdl.api", "solve"),
    "evaluate": ("ocdl.api", "evaluate"),
    "states": ("ocdl.api", "states"),
    "engines": ("ocdl.api", "engines"),
    "Result": ("ocdl.result", "Result"),
    "Evaluation": ("ocdl.result", "Evaluation"),
    "Engine": ("ocdl.engine.base", "Engine"),
    "load_problem": ("ocdl.catalogue", "load"),
    "load_run": ("ocdl.rundir", "load"),
}
_MODULES = {"tableau": "ocdl.tableau", "datasets": "ocdl.data", "fields": "ocdl.fields", "images": "ocdl.images",
            "lifting": "ocdl.lifting", "tanh": "ocdl.tanh"}

__all__ = sorted([*_NAMES, *_MODULES, "OcdlError", "__version__"])


def __getattr__(name):
    if name in _NAMES:
        mod, attr = _NAMES[name]
        value = getattr(importlib.import_module(mod), attr)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    else:
        raise AttributeError(f"module 'ocdl' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__
