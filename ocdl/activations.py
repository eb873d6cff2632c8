"""Activation functions σ and their derivatives σ', written once for every array library.

Each formula is written against a small namespace ``xp`` (see :mod:`ocdl.xp`) so that NumPy,
PyTorch and CasADi evaluate the *same* expression. ``monotone`` says whether σ is non-decreasing
(the hypothesis of the stability estimate) and ``L`` is sup σ' (used by h ≤ 2/(L‖K‖²)).

    tanh        σ = tanh x                      σ' = 1 − tanh² x
    relu        σ = max(x, 0)                   σ' = [x > 0]
    leaky-relu  σ = max(x, 0) + 0.01 min(x, 0)  σ' = 0.01 + 0.99 [x > 0]
    softplus    σ = max(x, 0) + log1p(e^{−|x|}) σ' = S(x)            (stable for all x)
    sigmoid     σ = S(x) = 1/(1 + e^{−x})       σ' = S(x)(1 − S(x))  (relatively accurate for all x)
    hardtanh    σ = min(max(x, −1), 1)          σ' = [|x| < 1]
    identity    σ = x                           σ' = 1
    sin         σ = sin x                       σ' = cos x           (not monotone)
    xtanh       σ = x tanh x                    σ' = tanh x + x(1 − tanh² x)  (not monotone)

The logistic S (the sigmoid σ, and softplus' σ') is computed as in :mod:`ocdl.loss`, relatively
accurate for all x: with u = e^{−|x|} ∈ (0, 1], S(x) = 1/(1 + u) for x ≥ 0 and u/(1 + u) for x < 0,
and σ'(x) = S(1 − S) = u/(1 + u)² (no cancellation, no overflow; ½(1 + tanh(x/2)) had only
absolute accuracy: S(−20) to 9e-9 relatively, S = 0 below x = −38). The split at x = 0 is one
``xp.where`` per quantity, so that autograd and CasADi's AD differentiate one smooth branch there.
``dsigma_s`` (σ' through s = S(x), used where cheaper) is s(1 − s): relatively accurate for x ≤ 0,
absolutely (to round-off of 1) for x > 0, where 1 − s cancels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ocdl.errors import OcdlError

__all__ = ["Activation", "get", "names", "ACTIVATIONS"]


@dataclass(frozen=True)
class Activation:
    name: str
    sigma: Callable  # (x, xp) -> σ(x)
    dsigma: Callable  # (x, xp) -> σ'(x)
    monotone: bool
    L: float  # sup σ'
    dsigma_s: Callable | None = None  # σ' written through s = σ(x), where cheaper (tanh, sigmoid)


def _sig_parts(x, xp):
    """(u, p): u = e^{−|x|} ∈ (0, 1] and p = 1 (x ≥ 0) or u (x < 0), so that S(x) = p/(1 + u)."""
    pos = x >= 0
    u = xp.exp(xp.where(pos, -x, x))
    return u, xp.where(pos, 1.0, u)


def _sig(x, xp):
    """S(x) = 1/(1 + e^{−x}) = e^{−max(−x, 0)}/(1 + e^{−|x|}), relatively accurate for all x."""
    u, p = _sig_parts(x, xp)
    return p / (1.0 + u)


def _dsig(x, xp):
    """S'(x) = S(x)(1 − S(x)) = e^{−|x|}/(1 + e^{−|x|})², relatively accurate for all x."""
    u, _ = _sig_parts(x, xp)
    d = 1.0 + u
    return u / (d * d)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation(
            "tanh", lambda x, xp: xp.tanh(x), lambda x, xp: 1.0 - xp.tanh(x) ** 2, True, 1.0, lambda s: 1.0 - s * s
        ),
        Activation("relu", lambda x, xp: xp.relu(x), lambda x, xp: xp.step(x), True, 1.0),
        Activation(
            "leaky-relu",
            lambda x, xp: xp.relu(x) - 0.01 * xp.relu(-x),
            lambda x, xp: 0.01 + 0.99 * xp.step(x),
            True,
            1.0,
        ),
        Activation(
            "softplus",
            lambda x, xp: xp.relu(x) + xp.log1p(xp.exp(-xp.abs(x))),
            _sig,
            True,
            1.0,
        ),
        Activation("sigmoid", _sig, _dsig, True, 0.25, lambda s: s * (1.0 - s)),
        Activation(
            "hardtanh",
            lambda x, xp: xp.clip(x, -1.0, 1.0),
            lambda x, xp: xp.step(x + 1.0) * xp.step(1.0 - x),
            True,
            1.0,
        ),
        Activation("identity", lambda x, xp: x, lambda x, xp: 0.0 * x + 1.0, True, 1.0),
        Activation("sin", lambda x, xp: xp.sin(x), lambda x, xp: xp.cos(x), False, 1.0),
        Activation(
            "xtanh",
            lambda x, xp: x * xp.tanh(x),
            lambda x, xp: xp.tanh(x) + x * (1.0 - xp.tanh(x) ** 2),
            False,
            float("inf"),
        ),
    )
}


def names() -> list[str]:
    return list(ACTIVATIONS)


def get(name: str | Activation) -> Activation:
    if isinstance(name, Activation):
        return name
    if name not in ACTIVATIONS:
        raise OcdlError(f"unknown activation {name!r}; known: {', '.join(names())}")
    return ACTIVATIONS[name]
