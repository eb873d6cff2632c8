"""The engines behind one interface (:class:`~ocdl.engines.base.Engine`) and their registry.

    get("torch")      the engine object (``.solvers``, ``.options``, ``.solve``, ``.evaluate``)
    names()           ("torch", "casadi")
    engines()         {"torch": ("gd-armijo", …), "casadi": ("ipopt", "sqp", "bvp")}

Each engine is a sub-package (:mod:`ocdl.engines.torch`, :mod:`ocdl.engines.casadi`) whose
``__init__`` declares it without importing its library.
"""

from ocdl.engines.base import Engine, Option, RunContext, engines, get, names, register

__all__ = ["Engine", "Option", "RunContext", "engines", "get", "names", "register"]
