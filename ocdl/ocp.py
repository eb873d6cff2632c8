"""A general optimal control problem (not only a network), and Hager's test problem.

    min_u  Φ(y(T)) + ∫_0^T ℓ(y, u, t) dt    subject to   y' = f(y, u, t),  y(0) = y0.

With p = ∂J/∂y (the gradient convention of the whole toolkit) the first-order conditions are

    H(y, p, u, t) = ℓ(y, u, t) + pᵀ f(y, u, t),   y' = ∂_p H,   p' = −∂_y H,   p(T) = ∇Φ(y(T)),
    0 = ∂_u H (the minimum principle: u minimises H).

``f``, ``running`` (ℓ) and ``terminal`` (Φ) are Python callables on CasADi symbols (y an nx-vector,
u an nu-vector, t a scalar). ``control(y, p, t)`` optionally gives argmin_u H in closed form, and
``exact_y``, ``exact_u``, ``exact_p`` (NumPy callables of t) the exact solution where one is known.

Hager (2000): min ½∫₀¹ (u² + 2y²) dt, y' = y/2 + u, y(0) = 1. Then u = −p and

    y*(t) = (2e^{3t} + e³) / (e^{3t/2}(2 + e³)),   u*(t) = 2(e^{3t} − e³) / (e^{3t/2}(2 + e³)),
    p*(t) = −u*(t).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ocdl.errors import OcdlError


@dataclass(frozen=True)
class OCP:
    """A general OCP; see the module docstring."""

    name: str
    nx: int
    nu: int
    f: Callable
    y0: tuple
    T: float
    running: Callable | None = None
    terminal: Callable | None = None
    control: Callable | None = None
    exact_y: Callable | None = None
    exact_u: Callable | None = None
    exact_p: Callable | None = None

    def __post_init__(self):
        if self.nx < 1 or self.nu < 1:
            raise OcdlError(f"OCP {self.name!r}: need nx ≥ 1 and nu ≥ 1")
        if len(self.y0) != self.nx:
            raise OcdlError(f"OCP {self.name!r}: y0 has {len(self.y0)} entries but nx = {self.nx}")
        if not (np.isfinite(self.T) and self.T > 0):
            raise OcdlError(f"OCP {self.name!r}: T must be a finite number > 0")
        if self.running is None and self.terminal is None:
            raise OcdlError(f"OCP {self.name!r}: needs a running cost, a terminal cost or both")


def _hager_u(t):
    e3 = np.exp(3.0)
    return 2.0 * (np.exp(3.0 * t) - e3) / (np.exp(1.5 * t) * (2.0 + e3))


def _hager_y(t):
    e3 = np.exp(3.0)
    return (2.0 * np.exp(3.0 * t) + e3) / (np.exp(1.5 * t) * (2.0 + e3))


def hager() -> OCP:
    """Hager's (2000) test problem with its exact solution (see the module docstring)."""
    return OCP(
        name="hager",
        nx=1,
        nu=1,
        f=lambda y, u, t: 0.5 * y + u,
        running=lambda y, u, t: 0.5 * (u * u + 2.0 * y * y),
        y0=(1.0,),
        T=1.0,
        control=lambda y, p, t: -p,
        exact_y=lambda t: _hager_y(np.asarray(t, dtype=np.float64))[..., None],
        exact_u=lambda t: _hager_u(np.asarray(t, dtype=np.float64))[..., None],
        exact_p=lambda t: -_hager_u(np.asarray(t, dtype=np.float64))[..., None],
    )
