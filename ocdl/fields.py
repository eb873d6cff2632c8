"""Vector fields f(y, u), u = (K, β), and their vector–Jacobian products, for a batch of samples.

Column convention: a batch is Y ∈ R^{d×m} (samples are columns), so Z = K Y + β 1ᵀ.
Each field returns (F, Z, S) with F = f(Y), S = σ(Z); :meth:`vjp` gives, for co-vectors
M ∈ R^{d×m},

    Jᵀ M = (∂_y f)ᵀ M  (column by column),  and (∂_K f)ᵀ M, (∂_β f)ᵀ M summed over samples.

Both fields write them through one cotangent D ∈ R^{d×m} of the pre-activation side:

    SigmaField     f = σ(K y + β):      D = σ'(Z) ⊙ M;          JᵀM = Kᵀ D;  ∂K = D Yᵀ;          ∂β = D 1
    MonotoneField  f = −Kᵀσ(K y + β):   D = −σ'(Z) ⊙ (K M);     JᵀM = Kᵀ D;  ∂K = D Yᵀ − S Mᵀ;   ∂β = D 1

so that a Runge–Kutta layer with one (K, β) for all stages (per-layer controls) needs Kᵀ only
once, Jᵀ-summed over the stages: Σ_i w_i J_iᵀ M_i = Kᵀ Σ_i w_i D_i, and ∂β likewise from
Σ_i w_i D_i (see :mod:`ocdl.engine.torch.adjoint`). ``at`` gives (F, S) from Z alone;
``vjp_state`` returns (Jᵀ M, D); ``vjp_params_add`` adds w (∂_u f(Y))ᵀ M of one stage to
gradient accumulators in place, ``vjp_K_extra_`` its part not of the form w D Yᵀ.

Works for NumPy arrays and torch tensors alike (``xp`` from :mod:`ocdl.xp`).
"""

from __future__ import annotations

from functools import partial

from ocdl.activations import Activation
from ocdl.errors import OcdlError
from ocdl.xp import dsigma_mul_fn


class Field:
    """Shared by the fields: the VJPs written through the cotangent D (see the module docstring).
    A field defines ``at(Z, K) -> (F, S)``, ``cotangent(Z, S, K, M) -> D`` and
    ``lipschitz(L_σ, ‖K‖₂)``."""

    has_K_extra = False  # whether (∂_K f)ᵀ M has a part besides D Yᵀ (see vjp_K_extra_)

    def __init__(self, act: Activation, xp):
        self.act = act
        self.xp = xp
        # σ and (Z, S, M) ↦ σ'(Z) ⊙ M bound once for this namespace (the sweeps call them per
        # stage); tanh is the namespace's own xp.tanh
        self.sigma = xp.tanh if act.name == "tanh" else partial(act.sigma, xp=xp)
        self.dsigma_mul = dsigma_mul_fn(act, xp)

    def __call__(self, Y, K, beta):
        """(F, Z, S): F = f(Y, (K, β)), Z = K Y + β 1ᵀ, S = σ(Z)."""
        if Y.shape[0] != K.shape[1]:
            raise OcdlError(f"vector field: batch must be d×m (samples as columns), got {tuple(Y.shape)} for d = {K.shape[1]}")
        Z = self.xp.affine(K, Y, beta)
        F, S = self.at(Z, K)
        return F, Z, S

    def vjp_state(self, Y, Z, S, K, M, KT=None):
        """(Jᵀ M, D) with Jᵀ M = Kᵀ D (``KT``: Kᵀ, if at hand)."""
        D = self.cotangent(Z, S, K, M)
        return (K.T if KT is None else KT) @ D, D

    def vjp(self, Y, Z, S, K, M):
        """(Jᵀ M, ∂K, ∂β) at stage values Y with Z = K Y + β, S = σ(Z)."""
        JtM, D = self.vjp_state(Y, Z, S, K, M)
        dK, dbeta = self.xp.zeros_like(K), self.xp.zeros_like(K[:, 0])
        self.vjp_params_add(dK, dbeta, Y, S, M, D, 1.0)
        return JtM, dK, dbeta

    def vjp_params_add(self, dK, dbeta, Y, S, M, D, w):
        """dK += w ∂K,  dβ += w D 1  (in place) for one stage (dβ skipped if None)."""
        self.xp.addmm_(dK, D, Y.T, w)
        self.vjp_K_extra_(dK, S, M, w)
        if dbeta is not None:
            self.xp.add_rowsum_(dbeta, D, w)

    def vjp_K_extra_(self, dK, S, M, w):
        """The part of w (∂_K f)ᵀ M not of the form w D Yᵀ, added to dK in place (none here)."""


class SigmaField(Field):
    """f(y, (K, β)) = σ(K y + β)."""

    @staticmethod
    def lipschitz(L_sigma: float, norm_K: float) -> float:
        """A bound on ‖∂_y f‖₂: L_σ ‖K‖₂."""
        return L_sigma * norm_K

    def at(self, Z, K):
        """(F, S) from the pre-activation Z: S = σ(Z), F = S."""
        S = self.sigma(Z)
        return S, S

    def cotangent(self, Z, S, K, M):
        """D = σ'(Z) ⊙ M."""
        return self.dsigma_mul(Z, S, M)


class MonotoneField(Field):
    """f(y, (K, β)) = −Kᵀ σ(K y + β) (the monotone-σ flow of the stability estimate)."""

    has_K_extra = True

    @staticmethod
    def lipschitz(L_sigma: float, norm_K: float) -> float:
        """A bound on ‖∂_y f‖₂: L_σ ‖K‖₂²."""
        return L_sigma * norm_K**2

    def at(self, Z, K):
        """(F, S) from the pre-activation Z: S = σ(Z), F = −Kᵀ S."""
        S = self.sigma(Z)
        return -(K.T @ S), S

    def cotangent(self, Z, S, K, M):
        """D = −σ'(Z) ⊙ (K M)."""
        return -self.dsigma_mul(Z, S, K @ M)

    def vjp_K_extra_(self, dK, S, M, w):
        """dK −= w S Mᵀ (in place): the part of (∂_K f)ᵀ M from the factor Kᵀ."""
        self.xp.addmm_(dK, S, M.T, -w)


FIELDS = {"sigma": SigmaField, "monotone": MonotoneField}
"""The vector fields by name (``network.field``); a new field is a class here with ``at``,
``cotangent`` (and ``vjp_K_extra_`` when ∂_K f has a part besides D Yᵀ) and ``lipschitz``, and
its entry in this table."""


def make(name: str, act: Activation, xp):
    """The vector field ``name`` (:data:`FIELDS`) with activation ``act`` in namespace ``xp``."""
    if name not in FIELDS:
        raise OcdlError(f"unknown vector field {name!r}; known: {', '.join(FIELDS)}")
    return FIELDS[name](act, xp)
