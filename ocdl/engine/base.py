"""The engine interface: what every engine (PyTorch, CasADi, …) provides, and the registry.

An engine is one package under :mod:`ocdl.engine` whose ``__init__`` defines a subclass of
:class:`Engine` (cheap to import: the engine's own library is imported only when it computes) and
registers it with :func:`register`. It declares its solvers and their options, and implements

    solve(problem, data, params0, run) -> SolveResult      train from params0
    evaluate(problem, params, data)    -> Evaluation       E, ∇E, accuracies, y^[N] at params
    states(problem, params, X)         -> (N+1, m, d)      the forward sweep of any points

The model is scipy's ``OdeSolver`` / diffrax's ``AbstractSolver``: callers (``ocdl.solve``, the
command line, verify, stability) hold an engine object and never branch on its name.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from ocdl.errors import OcdlError
from ocdl.result import Evaluation, SolveResult


@dataclass(frozen=True)
class Option:
    """A solver option: its ``default`` and a one-line ``doc``; ``check(value)`` returns an error
    message (or None) for a value that is out of range."""

    default: Any
    doc: str = ""
    check: Callable[[Any], str | None] | None = field(default=None, repr=False, compare=False)


@dataclass
class RunContext:
    """How a solve reports and continues: ``log`` (progress lines, or None for quiet), ``state``
    and ``history`` of a resumed run, ``checkpoint`` (called with a :class:`SolveResult` every
    ``checkpoint_every`` iterations by engines that support it)."""

    log: Callable[[str], None] | None = None
    state: dict | None = None
    history: dict | None = None
    checkpoint: Callable[[SolveResult], None] | None = None


class Engine(abc.ABC):
    """One engine: its ``name``, its ``solvers`` (name → one-line description), the ``options``
    each solver reads (solver name → {option: :class:`Option`}), and solve / evaluate."""

    name: ClassVar[str]
    solvers: ClassVar[Mapping[str, str]]
    options: ClassVar[Mapping[str, Mapping[str, Option]]]
    default_solver: ClassVar[str]
    resumable: ClassVar[bool] = False  # whether ``solve`` continues from RunContext.state

    # ------------------------------------------------------------------ checks
    def check_solver(self, solver: str) -> None:
        if solver not in self.solvers:
            raise OcdlError(f"solver.name (backend {self.name!r}): {solver!r} is not one of {', '.join(self.solvers)}")

    def check_options(self, problem) -> dict:
        """``problem.solver.options`` with the defaults filled in; unknown names and values out of
        range raise OcdlError (before anything is written)."""
        solver = problem.solver.name
        self.check_solver(solver)
        declared = self.options[solver]
        given = dict(problem.solver.options)
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise OcdlError(f"solver.options: {', '.join(map(repr, unknown))} unknown for {self.name} solver "
                            f"{solver!r}; known: {', '.join(declared)}")
        out = {}
        for key, opt in declared.items():
            val = given.get(key, opt.default)
            if key in given and opt.check is not None:
                why = opt.check(val)
                if why:
                    raise OcdlError(f"solver.options.{key}: {why}, got {val!r}")
            out[key] = val
        return out

    def check(self, problem, d: int) -> None:
        """Refuse a problem this engine cannot solve (tableau, dtype, device, …) with one line."""

    # ------------------------------------------------------------------ work
    @abc.abstractmethod
    def solve(self, problem, data, params0: Mapping[str, np.ndarray], run: RunContext) -> SolveResult:
        """Train ``problem`` on ``data`` = (train, test) from ``params0``."""

    @abc.abstractmethod
    def evaluate(self, problem, params: Mapping[str, np.ndarray], data) -> Evaluation:
        """E, ∇E, accuracies and y^[N] at ``params`` on ``data`` = (train, test)."""

    @abc.abstractmethod
    def states(self, problem, params: Mapping[str, np.ndarray], X: np.ndarray) -> np.ndarray:
        """The layer states y^[0], …, y^[N] of the points X (m × dim, lifted to the width d) by the
        forward sweep at ``params``: an array (N+1, m, d)."""


# ---------------------------------------------------------------------- option checks
def positive(v) -> str | None:
    """A finite number > 0."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    return None if ok else "must be a finite number > 0"


def nonnegative(v) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
    return None if ok else "must be a finite number ≥ 0"


def count(v) -> str | None:
    """An integer ≥ 0."""
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
    return None if ok else "must be an integer ≥ 0"


def one_of(*allowed) -> Callable[[Any], str | None]:
    def check(v):
        return None if v in allowed else f"is not one of {', '.join(map(str, allowed))}"
    return check


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, Engine] = {}
_FIRST = ("torch", "casadi")  # listed first; every other sub-package of ocdl.engine follows


def register(engine: Engine) -> Engine:
    """Add ``engine`` (an instance) to the registry under ``engine.name``."""
    _REGISTRY[engine.name] = engine
    return engine


def _load_builtin() -> None:
    """Import every engine package under ocdl/engine/ (each registers itself), once."""
    global _LOADED
    if _LOADED:
        return
    import importlib
    import pkgutil

    import ocdl.engine

    found = [m.name for m in pkgutil.iter_modules(ocdl.engine.__path__) if m.ispkg]
    for name in [*[n for n in _FIRST if n in found], *sorted(set(found) - set(_FIRST))]:
        importlib.import_module(f"ocdl.engine.{name}")
    _LOADED = True


_LOADED = False


def get(engine: str | Engine) -> Engine:
    """The engine registered as ``engine`` (or ``engine`` itself)."""
    if isinstance(engine, Engine):
        return engine
    _load_builtin()
    if engine not in _REGISTRY:
        raise OcdlError(f"engine {engine!r} is not one of {', '.join(_REGISTRY)}")
    return _REGISTRY[engine]


def names() -> tuple[str, ...]:
    _load_builtin()
    return tuple(_REGISTRY)


def engines() -> dict[str, tuple[str, ...]]:
    """{engine name: its solver names}."""
    _load_builtin()
    return {name: tuple(e.solvers) for name, e in _REGISTRY.items()}
