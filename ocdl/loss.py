"""Losses on the classifier output z = W y^[N] + μ: the logistic hypothesis S for two classes,
the softmax for K ≥ 3.

Two classes (z ∈ R per sample, label c ∈ {0, 1}):

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

K ≥ 3 classes (z ∈ R^K per sample, the label as its one-hot vector e = e_c), with k* the first
index of max z, a = z − z_{k*} ≤ 0 and t = Σ_{k ≠ k*} e^{a_k} ≥ 0 (so Σ_k e^{a_k} = 1 + t exactly):

    softmax(z) = s = e^a / (1 + t),    logsumexp(z) = z_{k*} + log1p(t)
    cross-entropy: ℓ(z, e) = −log s_c = log1p(t) − ⟨e, a⟩,   ∂ℓ/∂z = r = s − e = ((e^a − e) − e t)/(1 + t)
    squared:       ℓ(z, e) = ½ ‖s − e‖² = ½ ‖r‖²,            ∂ℓ/∂z = s ⊙ (r − ⟨s, r⟩)

(the stable log-softmax: no exponential overflows, and log1p(t) and the residual r of the winning
class, −t/(1 + t), keep their relative accuracy when t is below round-off). "logistic" and
"cross-entropy" name the same loss (the two-class cross-entropy is the logistic loss).

E_loss = Σ_n ℓ(z_n, c_n), divided by n when ``mean``. Written once against an array namespace
``xp`` (:mod:`ocdl.xp`) so that every engine evaluates the same expression; for K classes the
samples are the columns of z (K × m) and of the one-hot targets (axis 0 the classes).
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


def _softmax_parts(z, xp):
    """(a, t): a = z − z_{k*} ≤ 0 (k* the first maximum along axis 0, a_{k*} = 0 exactly) and
    t = Σ_{k ≠ k*} e^{a_k}, so that Σ_k e^{a_k} = 1 + t."""
    mask = xp.argmax_mask(z)
    a = z - xp.sum0(mask * z)
    return a, xp.sum0((1.0 - mask) * xp.exp(a))


def softmax(z, xp):
    """softmax(z) = e^a / (1 + t) along axis 0 (the classes)."""
    a, t = _softmax_parts(z, xp)
    return xp.exp(a) / (1.0 + t)


def _residual_k(z, e, xp):
    """(r, s): r = softmax(z) − e = ((e^a − e) − e t)/(1 + t), s = softmax(z)."""
    a, t = _softmax_parts(z, xp)
    ea, d = xp.exp(a), 1.0 + t
    return ((ea - e) - e * t) / d, ea / d


def _cross_entropy_k(z, e, xp):
    """−log softmax(z)_c = log1p(t) − ⟨e, a⟩ (per sample)."""
    a, t = _softmax_parts(z, xp)
    return xp.log1p(t) - xp.sum0(e * a)


def _dcross_entropy_k(z, e, xp):
    """softmax(z) − e."""
    return _residual_k(z, e, xp)[0]


def _squared_k(z, e, xp):
    """½ ‖softmax(z) − e‖² (per sample)."""
    r, _ = _residual_k(z, e, xp)
    return 0.5 * xp.sum0(r * r)


def _dsquared_k(z, e, xp):
    """s ⊙ (r − ⟨s, r⟩), r = s − e: the softmax Jacobian (diag s − s sᵀ) applied to r."""
    r, s = _residual_k(z, e, xp)
    return s * (r - xp.sum0(s * r))


def _d2squared(z, c, w, xp):
    """ℓ'' w with ℓ'' = S'(S' + r (1 − 2S)), S' = S(1 − S) = u/d², 1 − 2S = (q − p)/d."""
    r, u, d = _residual(z, c, xp)
    _, _, p, q, _ = _parts(z, xp)
    ds = u / (d * d)
    return ds * (ds + r * ((q - p) / d)) * w


def _d2logistic(z, c, w, xp):
    """ℓ'' w = S(1 − S) w."""
    _, u, _, _, d = _parts(z, xp)
    return (u / (d * d)) * w


def _d2cross_entropy_k(z, e, w, xp):
    """∇²ℓ w = (diag s − s sᵀ) w = s ⊙ (w − ⟨s, w⟩)."""
    s = softmax(z, xp)
    return s * (w - xp.sum0(s * w))


def _d2squared_k(z, e, w, xp):
    """∇²ℓ w = J(J w) + ṡ ⊙ (r − ⟨s, r⟩) − s ⟨ṡ, r⟩ with J = diag s − s sᵀ, ṡ = J w, r = s − e
    (the derivative of ∇ℓ = J r in the direction w: J ṙ with ṙ = ṡ, and J's own derivative)."""
    r, s = _residual_k(z, e, xp)
    sd = s * (w - xp.sum0(s * w))
    return s * (sd - xp.sum0(s * sd)) + sd * (r - xp.sum0(s * r)) - s * xp.sum0(sd * r)


LOSSES = {"squared": (_squared, _dsquared), "logistic": (_logistic, _dlogistic),
          "cross-entropy": (_logistic, _dlogistic)}
"""The two-class losses by name (``objective.loss``): (ℓ(z, c, xp), ∂ℓ/∂z(z, c, xp)),
elementwise, written against an array namespace so that every engine evaluates the same
expression."""

LOSSES_K = {"squared": (_squared_k, _dsquared_k), "logistic": (_cross_entropy_k, _dcross_entropy_k),
            "cross-entropy": (_cross_entropy_k, _dcross_entropy_k)}
"""The same losses for K ≥ 3 classes, on z and one-hot targets with the classes along axis 0:
(ℓ per sample, ∂ℓ/∂z of z's shape)."""


def _get(kind: str, classes: int = 2):
    if kind not in LOSSES:
        from ocdl.errors import OcdlError

        raise OcdlError(f"objective.loss: {kind!r} is not one of {', '.join(LOSSES)}")
    return (LOSSES if classes == 2 else LOSSES_K)[kind]


def pointwise(kind: str, z, c, xp, classes: int = 2):
    """ℓ(z, c) per sample: elementwise for two classes; for K ≥ 3, z and the one-hot c with the
    classes along axis 0."""
    return _get(kind, classes)[0](z, c, xp)


def dpointwise(kind: str, z, c, xp, classes: int = 2):
    """∂ℓ/∂z (z's shape)."""
    return _get(kind, classes)[1](z, c, xp)


_SECOND = {2: {"squared": _d2squared, "logistic": _d2logistic, "cross-entropy": _d2logistic},
           "K": {"squared": _d2squared_k, "logistic": _d2cross_entropy_k, "cross-entropy": _d2cross_entropy_k}}


def d2pointwise(kind: str, z, c, w, xp, classes: int = 2):
    """∇²_z ℓ(z, c) · w per sample (z's shape): ℓ'' w elementwise for two classes, the K × K
    Hessian of each column applied to the column of w for K ≥ 3."""
    _get(kind, classes)
    return _SECOND[2 if classes == 2 else "K"][kind](z, c, w, xp)


def hypothesis(z, xp, classes: int = 2):
    """The predicted class probabilities: S(z) (of class 1) for two classes, softmax(z) for K."""
    return sigmoid(z, xp) if classes == 2 else softmax(z, xp)
