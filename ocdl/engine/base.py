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
import difflib
import math
import os
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
        unknown = sorted(set(given) - set(declared), key=str)
        if unknown:
            hints = [f"{k!r}: did you mean {close!r}?" for k in unknown if (close := did_you_mean(k, declared))]
            raise OcdlError(f"solver.options: {', '.join(map(repr, unknown))} unknown for {self.name} solver "
                            f"{solver!r}" + (f" ({'; '.join(hints)})" if hints else "")
                            + f"; known: {', '.join(declared)}")
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

    def memory_estimate(self, problem, d: int, m: int) -> tuple[int, str] | None:
        """(bytes, what): the peak memory a solve of ``problem`` on m samples of width d is expected
        to need, and what needs it (a few words). The default counts the parameter arrays only;
        engines add what their solve holds (states, derivatives, factorisations)."""
        n = parameter_count(problem, d)
        return 3 * 8 * n, f"{n:.3g} parameters"

    def memory_hint(self, problem, d: int, m: int, limit: int) -> str:
        """What to use instead when :meth:`memory_estimate` exceeds ``limit`` bytes."""
        return "use fewer layers (--layers) or a smaller width (--width)"

    def check_memory(self, problem, d: int, m: int) -> None:
        """Refuse, with one line naming the estimate and what to use instead, a problem whose
        :meth:`memory_estimate` exceeds the memory available (:func:`memory_limit`)."""
        est = self.memory_estimate(problem, d, m)
        lim = memory_limit() if est is not None else None
        if lim is None or est[0] <= lim[0]:
            return
        (need, what), (limit, source) = est, lim
        raise OcdlError(f"{self.name} engine: this problem would need about {format_bytes(need)} of memory "
                        f"({what}; m = {m} samples, N = {problem.N} layers, width {d}), {format_bytes(limit)} "
                        f"{source}: {self.memory_hint(problem, d, m, limit)}")

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


def did_you_mean(name, known) -> str | None:
    """The known name closest to a misspelt ``name`` (difflib), or one that starts it or that it
    starts ('tolerance' → 'tol'); None when nothing is close."""
    name, known = str(name), [str(k) for k in known]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return close[0]
    low = name.lower()
    pre = [k for k in known if min(len(k), len(low)) >= 3 and (low.startswith(k.lower()) or k.lower().startswith(low))]
    return max(pre, key=len) if pre else None


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
    """One of ``allowed``, of the same type (so that 1 is not true and 0.0 not false)."""
    def check(v):
        ok = any(type(v) is type(a) and v == a for a in allowed)
        return None if ok else f"is not one of {', '.join(map(str, allowed))}"
    return check


# ---------------------------------------------------------------------- memory
def parameter_count(problem, d: int) -> int:
    """The number of entries of the parameter arrays K, β, W, μ, h of ``problem`` at width d."""
    return sum(math.prod(shape) for shape in problem.param_shapes(d).values())


_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def _parse_bytes(text: str) -> int:
    s = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = s[-1:] if s[-1:] in _UNITS else ""
    try:
        v = float(s[: len(s) - len(unit)])
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise OcdlError(f"OCDL_MEMORY_LIMIT: expected a size such as 8G, 512M or 1e9 (bytes), got {text!r}")
    return int(v * _UNITS[unit])


def memory_limit() -> tuple[int, str] | None:
    """(bytes, where from) that a solve may use: ``$OCDL_MEMORY_LIMIT`` (8G, 512M, 1e9) if set,
    else the memory the system reports available (MemAvailable of /proc/meminfo, else the free
    physical pages); None where neither is known (then nothing is refused)."""
    env = os.environ.get("OCDL_MEMORY_LIMIT")
    if env:
        return _parse_bytes(env), "allowed by OCDL_MEMORY_LIMIT"
    source = "available (OCDL_MEMORY_LIMIT=SIZE overrides)"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, source
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE")), source
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``n`` bytes as '1.5 GB' (powers of 1024)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PB"  # pragma: no cover


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
