"""The engines behind one interface (:class:`~ocdl.engine.base.Engine`) and their registry.

    get("torch")      the engine object (``.solvers``, ``.options``, ``.solve``, ``.evaluate``)
    names()           ("torch", "casadi")
    engines()         {"torch": ("gd-armijo", …), "casadi": ("ipopt", "sqp", "bvp")}

Each engine is a sub-package (:mod:`ocdl.engine.torch`, :mod:`ocdl.engine.casadi`) whose
``__init__`` declares it without importing its library.
"""

from ocdl.engine.base import Engine, Option, RunContext, engines, get, names, register

__all__ = ["Engine", "Option", "RunContext", "engines", "get", "names", "register"]
