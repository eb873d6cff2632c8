"""Vector fields f(y, u), u = (K, β), and their vector–Jacobian products, for a batch of samples.

Rows are samples: Y is (m, d), so K y + β reads ``Y @ K.T + beta``. Each field returns
F = f(Y) and Z = Y Kᵀ + β; :meth:`vjp` gives, for a batch of co-vectors M (m, d),

    Jᵀ M = (∂_y f)ᵀ M,   and the parameter products (∂_K f)ᵀ M, (∂_β f)ᵀ M summed over samples.

    SigmaField     f = σ(K y + β):        Jᵀμ = Kᵀ(σ' ⊙ μ);  ∂K = Σ_n (σ'⊙μ) yᵀ;  ∂β = Σ_n σ'⊙μ
    MonotoneField  f = −Kᵀσ(K y + β):     with q = σ' ⊙ (K μ):  Jᵀμ = −Kᵀ q;
                                          ∂K = −Σ_n (σ μᵀ + q yᵀ);  ∂β = −Σ_n q

Works for NumPy arrays and torch tensors alike (``xp`` from :mod:`ocdl.xp`).
"""

from __future__ import annotations

from ocdl.activations import Activation


class SigmaField:
    """f(y, (K, β)) = σ(K y + β)."""

    def __init__(self, act: Activation, xp):
        self.act = act
        self.xp = xp

    def __call__(self, Y, K, beta):
        Z = Y @ K.T + beta
        return self.act.sigma(Z, self.xp), Z

    def vjp(self, Y, Z, K, M):
        """(Jᵀ M, ∂K, ∂β) at stage values Y with Z = Y Kᵀ + β."""
        G = self.act.dsigma(Z, self.xp) * M
        return G @ K, G.T @ Y, G.sum(0)


class MonotoneField:
    """f(y, (K, β)) = −Kᵀ σ(K y + β) (the monotone-σ flow of the stability estimate)."""

    def __init__(self, act: Activation, xp):
        self.act = act
        self.xp = xp

    def __call__(self, Y, K, beta):
        Z = Y @ K.T + beta
        return -(self.act.sigma(Z, self.xp) @ K), Z

    def vjp(self, Y, Z, K, M):
        Q = self.act.dsigma(Z, self.xp) * (M @ K.T)
        dK = -(self.act.sigma(Z, self.xp).T @ M) - Q.T @ Y
        return -(Q @ K), dK, -Q.sum(0)


def make(family: str, act: Activation, xp):
    """The vector field of a network family ('net' uses SigmaField as its layer map)."""
    return MonotoneField(act, xp) if family == "monotone" else SigmaField(act, xp)
