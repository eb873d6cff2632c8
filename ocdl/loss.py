"""Losses on the classifier output z = W y^[N] + μ, with the logistic hypothesis S.

    S(z)      = 1/(1 + e^{−z}) = e^{−max(−z, 0)} / (1 + e^{−|z|})
    1 − S(z)  = S(−z) = e^{−max(z, 0)} / (1 + e^{−|z|}),   S(1 − S) = e^{−|z|} / (1 + e^{−|z|})²
    squared:  ℓ(z, c) = ½ r²,                ∂ℓ/∂z = r S(1 − S),   r = S − c = (1 − c) S − c (1 − S)
    logistic: ℓ(z, c) = log(1 + e^z) − c z,  ∂ℓ/∂z = r
              with log(1 + e^z) − c z = ((1 − c) max(z, 0) + c max(−z, 0)) + log1p(e^{−|z|})

Every quantity is accurate *relatively* for all z (a few units of round-off, measured against
mpmath in tests/test_loss_accuracy.py), not only absolutely: u = e^{−|z|} ∈ (0, 1] never overflows,
the only sums are of terms of one sign, and for labels c ∈ {0, 1} the residual r is S or −(1 − S),
each from its own formula (½(1 + tanh(z/2)) would give 1 − S, and S for z ≪ 0, only to 1e-16
absolutely: S(−20) to 9e-9 relatively, S(z) = 0 below z = −38). The formulas are split at z = 0
by ``xp.where`` — each piece from the branch z ≥ 0 or z < 0 as a whole — so that autograd and
CasADi's AD differentiate one branch there (max and |·| separately would give ∂/∂z = 0 at z = 0).

E_loss = Σ_n ℓ(z_n, c_n), divided by n when ``mean``. Written once against an array namespace
``xp`` (:mod:`ocdl.xp`) so that every engine evaluates the same expression.
"""

from __future__ import annotations


def _parts(z, xp):
    """(m, u, p, q, d): m = max(z, 0), u = e^{−|z|} ∈ (0, 1], d = 1 + u, and S(z) = p/d,
    1 − S(z) = q/d with (p, q) = (1, u) for z ≥ 0 and (u, 1) for z < 0 (so p q = u exactly)."""
    pos = z >= 0
    m = xp.where(pos, z, 0.0)
    u = xp.exp(xp.where(pos, -z, z))
    p = xp.where(pos, 1.0, u)
    q = xp.where(pos, u, 1.0)
    return m, u, p, q, 1.0 + u


def sigmoid(z, xp):
    """S(z) = 1/(1 + e^{−z}) = e^{−max(−z, 0)} / (1 + e^{−|z|}), relatively accurate for all z."""
    _, _, p, _, d = _parts(z, xp)
    return p / d


def softplus(z, xp):
    """log(1 + e^z) = max(z, 0) + log1p(e^{−|z|}), relatively accurate for all z."""
    m, u, _, _, _ = _parts(z, xp)
    return m + xp.log1p(u)


def _residual(z, c, xp):
    """(r, u, d): r = S(z) − c = ((1 − c) p − c q)/d (for c ∈ {0, 1}: S, resp. −(1 − S))."""
    _, u, p, q, d = _parts(z, xp)
    return ((1.0 - c) * p - c * q) / d, u, d


def _squared(z, c, xp):
    """½ (S(z) − c)²."""
    r, _, _ = _residual(z, c, xp)
    return 0.5 * r * r


def _dsquared(z, c, xp):
    """(S(z) − c) S(z)(1 − S(z)), with S(1 − S) = e^{−|z|}/(1 + e^{−|z|})²."""
    r, u, d = _residual(z, c, xp)
    return r * (u / (d * d))


def _logistic(z, c, xp):
    """log(1 + e^z) − c z = ((1 − c) max(z, 0) + c max(−z, 0)) + log1p(e^{−|z|}) (for c = 1 no
    cancellation of z − z, in the value or in autograd's derivative)."""
    m, u, _, _, _ = _parts(z, xp)
    n = xp.where(z >= 0, 0.0, -z)
    return ((1.0 - c) * m + c * n) + xp.log1p(u)


def _dlogistic(z, c, xp):
    """S(z) − c."""
    return _residual(z, c, xp)[0]


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
