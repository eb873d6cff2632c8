"""Butcher tableaux: validation, the registry, the symplectic partner and order conditions.

A tableau (A, b, c) with s stages defines one step of size h of y' = f(y, u):

    Y_i = y + h Σ_l a_il f(Y_l, u_i),     y⁺ = y + h Σ_i b_i f(Y_i, u_i),     c = A·1.

The *symplectic partner* Ã used by the adjoint (costate) sweep is

    ã_il = b_l − b_l a_li / b_i          (needs every b_i ≠ 0),

so that b_i ã_il + b_l a_li − b_i b_l = 0 and the pair (A, b), (Ã, b) is a symplectic
partitioned Runge–Kutta method (Sanz-Serna 2016; Hager 2000).

Orders are computed from the order conditions up to order 4, in exact rational arithmetic when
every entry is rational (``fractions.Fraction``), otherwise in floating point to 1e-12.
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ocdl.errors import OcdlError, read_text

__all__ = ["Tableau", "get", "names", "load", "REGISTRY"]

_FLOAT_TOL = 1e-12
MAX_ORDER = 4


def _to_exact(x: Any) -> Fraction | None:
    """A rational value of ``x`` if it has one with a modest denominator, else None."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, bool):
        raise OcdlError(f"tableau entry {x!r} is not a number")
    if isinstance(x, int):
        return Fraction(x)
    if isinstance(x, str):
        exp = re.search(r"[eE]\s*[+-]?\s*(\d+)", x)
        if len(x) > 200 or (exp and len(exp.group(1).lstrip("0")) > 3):  # Fraction('1e99999999') takes minutes
            raise OcdlError(f"tableau entry {x[:40]!r}{'…' if len(x) > 40 else ''} is out of range")
        try:
            return Fraction(x.strip())
        except (ValueError, ZeroDivisionError):
            raise OcdlError(f"tableau entry {x!r} is not a number or a fraction like '1/3'") from None
    if isinstance(x, float):
        if not math.isfinite(x):
            return None
        fr = Fraction(x).limit_denominator(10**6)
        return fr if float(fr) == x else None
    raise OcdlError(f"tableau entry {x!r} is not a number")


def _to_float(x: Any) -> float:
    try:
        return float(_to_exact(x)) if isinstance(x, str) else float(x)
    except (TypeError, ValueError):
        raise OcdlError(f"tableau entry {x!r} is not a number") from None
    except OverflowError:
        raise OcdlError(f"tableau entry {str(x)[:40]!r} is out of range (not a finite float)") from None


def _as_list(v, key, name) -> list:
    if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
        raise OcdlError(f"tableau {name!r}: {key} must be a list of numbers, got {v!r}")
    return list(v)


def _validated(name, A, b, c):
    """(A, b, c, exact), checked: A square s×s, len(b) = s, finite entries, rows of A sum to c."""
    if not isinstance(name, str) or not name:
        raise OcdlError("tableau: a name (non-empty string) is required")
    try:
        rows = [list(r) for r in A]
    except TypeError:
        raise OcdlError(f"tableau {name!r}: A must be a list of rows") from None
    s = len(rows)
    if s == 0:
        raise OcdlError(f"tableau {name!r}: A is empty")
    if any(len(r) != s for r in rows):
        raise OcdlError(f"tableau {name!r}: A must be square, got rows of lengths {[len(r) for r in rows]}")
    b = _as_list(b, "b", name)
    if len(b) != s:
        raise OcdlError(f"tableau {name!r}: len(b) = {len(b)} but A has {s} stages")
    if c is not None:
        c = _as_list(c, "c", name)
        if len(c) != s:
            raise OcdlError(f"tableau {name!r}: len(c) = {len(c)} but A has {s} stages")
    Af = np.array([[_to_float(x) for x in r] for r in rows], dtype=np.float64)
    bf = np.array([_to_float(x) for x in b], dtype=np.float64)
    if not (np.all(np.isfinite(Af)) and np.all(np.isfinite(bf))):
        raise OcdlError(f"tableau {name!r}: entries must be finite (found NaN or inf)")
    exA = [[_to_exact(x) for x in r] for r in rows]
    exb = [_to_exact(x) for x in b]
    rational = all(x is not None for r in exA for x in r) and all(x is not None for x in exb)
    row_sums_exact = [sum(r, Fraction(0)) for r in exA] if rational else None
    if c is None:
        cf = Af.sum(axis=1)
        exc = row_sums_exact
    else:
        cf = np.array([_to_float(x) for x in c], dtype=np.float64)
        if not np.all(np.isfinite(cf)):
            raise OcdlError(f"tableau {name!r}: entries must be finite (found NaN or inf)")
        exc = [_to_exact(x) for x in c]
        if rational and all(x is not None for x in exc):
            bad = [i for i in range(s) if row_sums_exact[i] != exc[i]]
        else:
            exc = None
            bad = [i for i in range(s) if abs(Af[i].sum() - cf[i]) > 1e-12 * max(1.0, abs(cf[i]))]
        if bad:
            i = bad[0]
            raise OcdlError(
                f"tableau {name!r}: row {i + 1} of A sums to {Af[i].sum():.17g}, not c_{i + 1} = {cf[i]:.17g}"
            )
    for arr in (Af, bf, cf):
        arr.setflags(write=False)
    exact = (tuple(tuple(r) for r in exA), tuple(exb), tuple(exc)) if (rational and exc is not None) else None
    return Af, bf, cf, exact


def _partner(A: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """Ã with ã_il = b_l − b_l a_li / b_i, or None where some b_i = 0."""
    if not np.all(b != 0.0):
        return None
    with np.errstate(all="ignore"):  # extreme entries may overflow to inf
        At = b[None, :] - b[None, :] * A.T / b[:, None]
    At.setflags(write=False)
    return At


def _rebuild(name, entries):
    return Tableau(**entries, name=name)


class Tableau:
    """An immutable, validated Butcher tableau (A, b, c), hashable and comparable.

    ``Tableau(A, b, c=None, name="user")``: A square s×s, len(b) = s, finite entries, the rows of
    A summing to c (c = A·1 when omitted); entries are numbers or fraction strings like ``"1/3"``.
    ``A``, ``b``, ``c`` are read-only float64 arrays; ``exact`` holds the same entries as Fractions
    (A rows, then b, then c) when every entry is rational, else None. Two tableaux are equal when
    their coefficients are (the name is a label). The partner Ã is computed once.
    """

    __slots__ = ("name", "A", "b", "c", "exact", "_partner")

    def __init__(self, A: Sequence, b: Sequence, c: Sequence | None = None, *, name: str = "user"):
        A, b, c, exact = _validated(name, A, b, c)
        for key, val in (("name", name), ("A", A), ("b", b), ("c", c), ("exact", exact),
                         ("_partner", _partner(A, b))):
            object.__setattr__(self, key, val)

    def __setattr__(self, key, val):
        raise AttributeError(f"Tableau is immutable (cannot set {key!r})")

    def __eq__(self, other) -> bool:
        if not isinstance(other, Tableau):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple:
        return (self.A.tobytes(), self.b.tobytes(), self.c.tobytes())

    def __repr__(self) -> str:
        return f"Tableau({self.A.tolist()}, {self.b.tolist()}, name={self.name!r})"

    def __reduce__(self):
        return (_rebuild, (self.name, self.entries()))

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_entries(cls, name: str, A: Sequence, b: Sequence, c: Sequence | None = None) -> "Tableau":
        """``Tableau(A, b, c, name=name)``."""
        return cls(A, b, c, name=name)

    def entries(self) -> dict:
        """{"A", "b", "c"}: fraction strings where exact, else floats; ``Tableau(**entries)``
        reads them back to an equal tableau (how a run's config.toml holds a user tableau)."""
        if self.exact is not None:
            A, b, c = self.exact
            return {"A": [[str(x) for x in r] for r in A], "b": [str(x) for x in b], "c": [str(x) for x in c]}
        return {"A": self.A.tolist(), "b": self.b.tolist(), "c": self.c.tolist()}

    # ----------------------------------------------------------------- properties
    @property
    def s(self) -> int:
        """Number of stages."""
        return self.A.shape[0]

    @property
    def explicit(self) -> bool:
        """True when A is strictly lower triangular."""
        return bool(np.all(np.triu(self.A) == 0.0))

    @property
    def has_partner(self) -> bool:
        """The partner form exists iff every b_i ≠ 0."""
        return bool(np.all(self.b != 0.0))

    @property
    def partner_A(self) -> np.ndarray | None:
        """Ã with ã_il = b_l − b_l a_li / b_i, or None where some b_i = 0 (computed once)."""
        return self._partner

    def partner_residual(self) -> float:
        """max_il |b_i ã_il + b_l a_li − b_i b_l| (zero up to round-off for the partner)."""
        At = self.partner_A
        if At is None:
            return float("nan")
        b = self.b
        with np.errstate(all="ignore"):
            return float(np.max(np.abs(b[:, None] * At + b[None, :] * self.A.T - b[:, None] * b[None, :])))

    # ----------------------------------------------------------------- orders
    def _arith(self):
        """(A, b, c, eq) in exact arithmetic where possible, else floats with a tolerance."""
        if self.exact is not None:
            A, b, c = ([list(r) for r in self.exact[0]], list(self.exact[1]), list(self.exact[2]))
            return A, b, c, (lambda x, y: x == y), Fraction
        # NumPy scalars: an overflow or a division by an underflowed b_j² gives inf/nan (a failed
        # condition), not an exception
        A = [[np.float64(x) for x in r] for r in self.A]
        b = [np.float64(x) for x in self.b]
        c = [np.float64(x) for x in self.c]
        return A, b, c, (lambda x, y: bool(abs(x - y) <= _FLOAT_TOL * max(1.0, abs(y)))), np.float64

    def _conditions(self, oc: bool):
        """Order conditions grouped by order: list over orders 1..4 of lists of (lhs, rhs)."""
        A, b, c, eq, num = self._arith()
        s = self.s
        rng = range(s)
        one = num(1)

        def dot(u, v):
            return sum((u[i] * v[i] for i in rng), num(0))

        def Amul(v):
            return [dot(A[i], v) for i in rng]

        c2 = [x * x for x in c]
        c3 = [x * x * x for x in c]
        Ac = Amul(c)
        conds = [
            [(sum(b, num(0)), one)],
        ]
        if not oc:
            conds.append([(dot(b, c), one / 2)])
            conds.append([(dot(b, c2), one / 3), (dot(b, Ac), one / 6)])
            bc = [b[i] * c[i] for i in rng]
            conds.append([
                (dot(b, c3), one / 4),
                (dot(bc, Ac), one / 8),
                (dot(b, Amul(c2)), one / 12),
                (dot(b, Amul(Ac)), one / 24),
            ])
            return conds, eq
        # Hager (2000): d_j = Σ_i b_i a_ij, all b_i > 0.
        d = [sum((b[i] * A[i][j] for i in rng), num(0)) for j in rng]
        dd_b = [d[j] * d[j] / b[j] for j in rng]
        d_b = [d[j] / b[j] for j in rng]
        conds.append([(sum(d, num(0)), one / 2)])
        conds.append([
            (dot(c, d), one / 6),
            (dot(b, c2), one / 3),
            (sum(dd_b, num(0)), one / 3),
        ])
        bc = [b[i] * c[i] for i in rng]
        Ad_b = Amul(d_b)
        conds.append([
            (dot(b, c3), one / 4),
            (dot(bc, Ac), one / 8),
            (dot(d, c2), one / 12),
            (dot(d, Ac), one / 24),
            (dot(c, dd_b), one / 12),
            (sum((d[j] ** 3 / b[j] ** 2 for j in rng), num(0)), one / 4),
            (dot(bc, Ad_b), one * 5 / 24),
            (dot(d, Ad_b), one / 8),
        ])
        return conds, eq

    def _order(self, oc: bool) -> int:
        with np.errstate(all="ignore"):
            conds, eq = self._conditions(oc)
        p = 0
        for group in conds:
            if all(eq(lhs, rhs) for lhs, rhs in group):
                p += 1
            else:
                break
        return p

    @property
    def ode_order(self) -> int:
        """Classical order (conditions checked up to order 4, so 4 means 'at least 4')."""
        return self._order(oc=False)

    @property
    def b_sum(self) -> float:
        """Σ b_i (exact where the entries are rational)."""
        return float(sum(self.exact[1], Fraction(0))) if self.exact is not None else float(np.sum(self.b))

    @property
    def consistent(self) -> bool:
        """Σ b_i = 1 (the first order condition: ODE order ≥ 1), exactly where the entries are
        rational, else to 1e-12. An inconsistent tableau approximates no ODE; ``ocdl tableau`` shows
        it, training and ``ocdl verify`` refuse it unless allowed (``--allow-inconsistent``)."""
        return self._order(oc=False) >= 1

    @property
    def oc_order(self) -> int | None:
        """Order in optimal control after Hager (2000), up to 4; None unless every b_i > 0."""
        if not np.all(self.b > 0.0):
            return None
        return self._order(oc=True)

    # ----------------------------------------------------------------- output
    def to_dict(self) -> dict:
        """The JSON shape of ``ocdl tableau NAME --json``."""
        At = self.partner_A
        return {
            "name": self.name,
            "A": self.A.tolist(),
            "b": self.b.tolist(),
            "c": self.c.tolist(),
            "explicit": self.explicit,
            "partner_A": None if At is None else At.tolist(),
            "ode_order": self.ode_order,
            "oc_order": self.oc_order,
            "consistent": self.consistent,
        }

    def __str__(self) -> str:
        rows = [f"{self.c[i]:>9.6g} | " + " ".join(f"{x:>9.6g}" for x in self.A[i]) for i in range(self.s)]
        rows.append("-" * len(rows[0]))
        rows.append(" " * 9 + " | " + " ".join(f"{x:>9.6g}" for x in self.b))
        return "\n".join(rows)


def _F(x: str) -> Fraction:
    return Fraction(x)


def _make(name, A, b):
    return Tableau.from_entries(name, [[_F(x) for x in r] for r in A], [_F(x) for x in b])


REGISTRY: dict[str, Tableau] = {
    t.name: t
    for t in (
        _make("euler", [["0"]], ["1"]),
        _make("heun", [["0", "0"], ["1", "0"]], ["1/2", "1/2"]),
        _make("midpoint", [["0", "0"], ["1/2", "0"]], ["0", "1"]),
        _make("ralston2", [["0", "0"], ["2/3", "0"]], ["1/4", "3/4"]),
        _make("kutta3", [["0", "0", "0"], ["1/2", "0", "0"], ["-1", "2", "0"]], ["1/6", "2/3", "1/6"]),
        _make("ssprk3", [["0", "0", "0"], ["1", "0", "0"], ["1/4", "1/4", "0"]], ["1/6", "1/6", "2/3"]),
        _make("ralston3", [["0", "0", "0"], ["1/2", "0", "0"], ["0", "3/4", "0"]], ["2/9", "1/3", "4/9"]),
        _make(
            "rk4",
            [["0", "0", "0", "0"], ["1/2", "0", "0", "0"], ["0", "1/2", "0", "0"], ["0", "0", "1", "0"]],
            ["1/6", "1/3", "1/3", "1/6"],
        ),
        _make(
            "rk38",
            [["0", "0", "0", "0"], ["1/3", "0", "0", "0"], ["-1/3", "1", "0", "0"], ["1", "-1", "1", "0"]],
            ["1/8", "3/8", "3/8", "1/8"],
        ),
    )
}

_ALIASES = {
    "improved-euler": "heun",
    "improved_euler": "heun",
    "kutta4": "rk4",
    "resnet": "euler",
    "explicit-midpoint": "midpoint",
}


def names() -> list[str]:
    """Names of the registry tableaux, in registry order."""
    return list(REGISTRY)


def get(name: str | Tableau) -> Tableau:
    """A registry tableau by name (aliases: improved-euler → heun, kutta4 → rk4)."""
    if isinstance(name, Tableau):
        return name
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in REGISTRY:
        raise OcdlError(f"unknown tableau {name!r}; known: {', '.join(names())} (or give a file)")
    return REGISTRY[key]


def load(path: str | Path) -> Tableau:
    """A user tableau from a TOML or JSON file with keys ``name`` (optional), ``A``, ``b``, ``c``
    (optional). Entries are numbers or fraction strings like ``"1/3"``. Every fault (a missing,
    unreadable or binary file, bad syntax, wrong shapes or types) raises :class:`OcdlError` naming
    the file."""
    p = Path(path)
    where = f"tableau file {str(p)!r}"
    if p.is_dir():
        raise OcdlError(f"{where} is a directory, not a TOML or JSON file")
    if not p.is_file():
        raise OcdlError(f"{where} does not exist")
    text = read_text(p, where)
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        first = (str(e).splitlines() or ["nesting too deep" if isinstance(e, RecursionError) else type(e).__name__])[0]
        raise OcdlError(f"{where}: cannot parse as {'JSON' if p.suffix.lower() == '.json' else 'TOML'}: "
                        f"{first}") from None
    if not isinstance(data, dict):
        raise OcdlError(f"{where}: expected a table with keys A, b (and c, name), got {type(data).__name__}")
    unknown = set(data) - {"name", "A", "b", "c"}
    if unknown:
        raise OcdlError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: name, A, b, c")
    for key in ("A", "b"):
        if key not in data:
            raise OcdlError(f"{where}: missing key {key!r}")
    name = data.get("name", p.stem)
    if not isinstance(name, str) or not name:
        raise OcdlError(f"{where}: name must be a non-empty string, got {name!r}")
    try:
        return Tableau.from_entries(name, data["A"], data["b"], data.get("c"))
    except OcdlError as e:
        msg = str(e).removeprefix(f"tableau {name!r}: ")
        raise OcdlError(f"{where}: {msg}") from None
