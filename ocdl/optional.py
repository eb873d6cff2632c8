"""Parts of the toolkit that a caller may find missing (the CasADi engine), looked up in one place."""

from __future__ import annotations

import importlib


def casadi_feature(name: str):
    """``ocdl.casadi_backend.<name>``, or a one-line reason (a ``str``) why it is not available."""
    try:
        mod = importlib.import_module("ocdl.casadi_backend")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("ocdl.casadi_backend"):
            return "the CasADi engine (ocdl.casadi_backend) is not installed in this version"
        return f"the CasADi engine cannot be imported: {e}"
    except ImportError as e:
        return f"the CasADi engine cannot be imported: {e}"
    try:
        return getattr(mod, name)
    except AttributeError:
        return f"ocdl.casadi_backend has no {name}()"
