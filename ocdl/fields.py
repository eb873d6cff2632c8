"""Vector fields f(y, u), u = (K, β), and their vector–Jacobian products, for a batch of samples.

Column convention: a batch is Y ∈ R^{d×m} (samples are columns), so Z = K Y + β 1ᵀ.
Each field returns (F, Z, S) with F = f(Y), S = σ(Z); :meth:`vjp` gives, for co-vectors
M ∈ R^{d×m},

    Jᵀ M = (∂_y f)ᵀ M  (column by column),  and (∂_K f)ᵀ M, (∂_β f)ᵀ M summed over samples:

    SigmaField     f = σ(K y + β):      G = σ'(Z) ⊙ M;  JᵀM = Kᵀ G;  ∂K = G Yᵀ;  ∂β = G 1
    MonotoneField  f = −Kᵀσ(K y + β):   Q = σ'(Z) ⊙ (K M);  JᵀM = −Kᵀ Q;
                                        ∂K = −(S Mᵀ + Q Yᵀ);  ∂β = −Q 1

Works for NumPy arrays and torch tensors alike (``xp`` from :mod:`ocdl.xp`).
"""

from __future__ import annotations

from ocdl.activations import Activation
from ocdl.errors import OcdlError


class _Field:
    def __init__(self, act: Activation, xp):
        self.act = act
        self.xp = xp

    def _pre(self, Y, K, beta):
        if Y.shape[0] != K.shape[1]:
            raise OcdlError(f"vector field: batch must be d×m (samples as columns), got {tuple(Y.shape)} for d = {K.shape[1]}")
        Z = self.xp.affine(K, Y, beta)
        return Z, self.act.sigma(Z, self.xp)

    def dsigma_mul(self, Z, S, M):
        """σ'(Z) ⊙ M (S = σ(Z) lets the namespace use a cheaper or fused formula)."""
        return self.xp.dsigma_mul(self.act, Z, S, M)


class SigmaField(_Field):
    """f(y, (K, β)) = σ(K y + β)."""

    def __call__(self, Y, K, beta):
        Z, S = self._pre(Y, K, beta)
        return S, Z, S

    def vjp(self, Y, Z, S, K, M):
        """(Jᵀ M, ∂K, ∂β) at stage values Y with Z = K Y + β, S = σ(Z)."""
        G = self.dsigma_mul(Z, S, M)
        return K.T @ G, G @ Y.T, G.sum(1)


class MonotoneField(_Field):
    """f(y, (K, β)) = −Kᵀ σ(K y + β) (the monotone-σ flow of the stability estimate)."""

    def __call__(self, Y, K, beta):
        Z, S = self._pre(Y, K, beta)
        return -(K.T @ S), Z, S

    def vjp(self, Y, Z, S, K, M):
        Q = self.dsigma_mul(Z, S, K @ M)
        return -(K.T @ Q), -(S @ M.T) - Q @ Y.T, -Q.sum(1)


def make(family: str, act: Activation, xp):
    """The vector field of a network family ('net' uses SigmaField as its layer map)."""
    return MonotoneField(act, xp) if family == "monotone" else SigmaField(act, xp)
