"""Losses on the classifier output z = W y^[N] + μ, with the logistic hypothesis S.

    S(z)      = 1/(1 + e^{−z}) = ½(1 + tanh(z/2))                 (stable for all z)
    squared:  ℓ(z, c) = ½ (S(z) − c)²,       ∂ℓ/∂z = (S(z) − c) S(z)(1 − S(z))
    logistic: ℓ(z, c) = log(1 + e^z) − c z,  ∂ℓ/∂z = S(z) − c
              with log(1 + e^z) = max(z, 0) + log1p(e^{−|z|})        (stable for all z)

E_loss = Σ_n ℓ(z_n, c_n), divided by n when ``mean``. Written once against an array namespace
``xp`` (:mod:`ocdl.xp`) so that every engine evaluates the same expression.
"""

from __future__ import annotations


def sigmoid(z, xp):
    """S(z) = ½(1 + tanh(z/2))."""
    return 0.5 * (1.0 + xp.tanh(0.5 * z))


def softplus(z, xp):
    """log(1 + e^z), stably."""
    return xp.relu(z) + xp.log1p(xp.exp(-xp.abs(z)))


def _squared(z, c, xp):
    """½ (S(z) − c)²."""
    r = sigmoid(z, xp) - c
    return 0.5 * r * r


def _dsquared(z, c, xp):
    """(S(z) − c) S(z)(1 − S(z))."""
    S = sigmoid(z, xp)
    return (S - c) * S * (1.0 - S)


def _logistic(z, c, xp):
    """log(1 + e^z) − c z."""
    return softplus(z, xp) - c * z


def _dlogistic(z, c, xp):
    """S(z) − c."""
    return sigmoid(z, xp) - c


LOSSES = {"squared": (_squared, _dsquared), "logistic": (_logistic, _dlogistic)}
"""The losses by name (``objective.loss``): (ℓ(z, c, xp), ∂ℓ/∂z(z, c, xp)), elementwise, written
against an array namespace so that every engine evaluates the same expression."""


def _get(kind: str):
    if kind not in LOSSES:
        from ocdl.errors import OcdlError

        raise OcdlError(f"objective.loss: {kind!r} is not one of {', '.join(LOSSES)}")
    return LOSSES[kind]


def pointwise(kind: str, z, c, xp):
    """ℓ(z, c) elementwise."""
    return _get(kind)[0](z, c, xp)


def dpointwise(kind: str, z, c, xp):
    """∂ℓ/∂z elementwise."""
    return _get(kind)[1](z, c, xp)
