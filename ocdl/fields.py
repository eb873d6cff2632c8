"""Vector fields f(y, u), u = (K, β), and their vector–Jacobian products, for a batch of samples.

Column convention: a batch is Y ∈ R^{d×m} (samples are columns), so Z = K Y + β 1ᵀ.
Each field returns (F, Z, S) with F = f(Y), S = σ(Z); :meth:`vjp` gives, for co-vectors
M ∈ R^{d×m},

    Jᵀ M = (∂_y f)ᵀ M  (column by column),  and (∂_K f)ᵀ M, (∂_β f)ᵀ M summed over samples.

It is split in two so that a Runge–Kutta layer can accumulate the parameter products of its
stages: ``vjp_state`` returns Jᵀ M and an intermediate, ``vjp_params_add`` adds
w (∂_u f(Y))ᵀ M to gradient accumulators in place (one fused multiply-add per product).

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


    def vjp(self, Y, Z, S, K, M):
        """(Jᵀ M, ∂K, ∂β) at stage values Y with Z = K Y + β, S = σ(Z)."""
        JtM, aux = self.vjp_state(Y, Z, S, K, M)
        dK, dbeta = self.xp.zeros_like(K), self.xp.zeros_like(K[:, 0])
        self.vjp_params_add(dK, dbeta, Y, aux, 1.0)
        return JtM, dK, dbeta


class SigmaField(_Field):
    """f(y, (K, β)) = σ(K y + β)."""

    def __call__(self, Y, K, beta):
        Z, S = self._pre(Y, K, beta)
        return S, Z, S

    def vjp_state(self, Y, Z, S, K, M, KT=None):
        """(Jᵀ M, G) with G = σ'(Z) ⊙ M, Jᵀ M = Kᵀ G (``KT``: Kᵀ, if at hand)."""
        G = self.dsigma_mul(Z, S, M)
        return (K.T if KT is None else KT) @ G, G

    def vjp_params_add(self, dK, dbeta, Y, G, w):
        """dK += w G Yᵀ,  dβ += w G 1  (in place)."""
        self.xp.addmm_(dK, G, Y.T, w)
        self.xp.add_rowsum_(dbeta, G, w)


class MonotoneField(_Field):
    """f(y, (K, β)) = −Kᵀ σ(K y + β) (the monotone-σ flow of the stability estimate)."""

    def __call__(self, Y, K, beta):
        Z, S = self._pre(Y, K, beta)
        return -(K.T @ S), Z, S

    def vjp_state(self, Y, Z, S, K, M, KT=None):
        """(Jᵀ M, (Q, S, M)) with Q = σ'(Z) ⊙ (K M), Jᵀ M = −Kᵀ Q."""
        Q = self.dsigma_mul(Z, S, K @ M)
        return -((K.T if KT is None else KT) @ Q), (Q, S, M)

    def vjp_params_add(self, dK, dbeta, Y, aux, w):
        """dK −= w (S Mᵀ + Q Yᵀ),  dβ −= w Q 1  (in place)."""
        Q, S, M = aux
        self.xp.addmm_(dK, S, M.T, -w)
        self.xp.addmm_(dK, Q, Y.T, -w)
        self.xp.add_rowsum_(dbeta, Q, -w)


def make(family: str, act: Activation, xp):
    """The vector field of a network family ('net' uses SigmaField as its layer map)."""
    return MonotoneField(act, xp) if family == "monotone" else SigmaField(act, xp)
