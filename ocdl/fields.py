"""Vector fields f(y, u), u = (K, β), and their vector–Jacobian products, for a batch of samples.

Column convention: a batch is Y ∈ R^{d×m} (samples are columns), so Z = K Y + β 1ᵀ.
Each field returns (F, Z, S) with F = f(Y), S = σ(Z); :meth:`vjp` gives, for co-vectors
M ∈ R^{d×m},

    Jᵀ M = (∂_y f)ᵀ M  (column by column),  and (∂_K f)ᵀ M, (∂_β f)ᵀ M summed over samples.

It is split in two so that a Runge–Kutta layer can sum the parameter products of its stages
in one matrix product: ``vjp_state`` returns Jᵀ M and an intermediate, ``vjp_params`` turns the
intermediates of several stages into Σ_i w_i (∂_u f(Y_i))ᵀ M_i.

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
        dK, dbeta = self.vjp_params([Y], [aux], [1.0])
        return JtM, dK, dbeta

    def _weighted(self, arrays, weights):
        """The d×(s·m) matrix [w_1 A_1, …, w_s A_s] (one stack and one broadcast product)."""
        A = self.xp.stack(arrays, 1)  # d × s × m
        w = self.xp.asarray(weights, like=A)[None, :, None]
        return (A * w).reshape(A.shape[0], -1)

    def _cat(self, arrays):
        return self.xp.stack(arrays, 1).reshape(arrays[0].shape[0], -1)


class SigmaField(_Field):
    """f(y, (K, β)) = σ(K y + β)."""

    def __call__(self, Y, K, beta):
        Z, S = self._pre(Y, K, beta)
        return S, Z, S

    def vjp_state(self, Y, Z, S, K, M):
        """(Jᵀ M, G) with G = σ'(Z) ⊙ M."""
        G = self.dsigma_mul(Z, S, M)
        return K.T @ G, G

    def vjp_params(self, Ys, Gs, weights):
        """Σ_i w_i (G_i Y_iᵀ, G_i 1)."""
        if len(Ys) == 1:
            G = Gs[0] * weights[0] if weights[0] != 1.0 else Gs[0]
            return G @ Ys[0].T, G.sum(1)
        G = self._weighted(Gs, weights)
        return G @ self._cat(Ys).T, G.sum(1)


class MonotoneField(_Field):
    """f(y, (K, β)) = −Kᵀ σ(K y + β) (the monotone-σ flow of the stability estimate)."""

    def __call__(self, Y, K, beta):
        Z, S = self._pre(Y, K, beta)
        return -(K.T @ S), Z, S

    def vjp_state(self, Y, Z, S, K, M):
        """(Jᵀ M, (Q, S, M)) with Q = σ'(Z) ⊙ (K M)."""
        Q = self.dsigma_mul(Z, S, K @ M)
        return -(K.T @ Q), (Q, S, M)

    def vjp_params(self, Ys, auxs, weights):
        """Σ_i w_i (−(S_i M_iᵀ + Q_i Y_iᵀ), −Q_i 1)."""
        Q = self._weighted([a[0] for a in auxs], weights)
        S = self._cat([a[1] for a in auxs])
        M = self._weighted([a[2] for a in auxs], weights)
        return -(S @ M.T) - Q @ self._cat(Ys).T, -Q.sum(1)


def make(family: str, act: Activation, xp):
    """The vector field of a network family ('net' uses SigmaField as its layer map)."""
    return MonotoneField(act, xp) if family == "monotone" else SigmaField(act, xp)
