"""The lifting: the fixed linear map from the data's features x ∈ R^n to the first state
y^[0] ∈ R^d of the network (``network.lift``), applied once to the training and test sets.

    pad     y^[0] = (x, 0) ∈ R^d, d ≥ n (zero-padding; the default, and the paper's)
    random  y^[0] = P x, P ∈ R^{d×n} with orthonormal rows (d ≤ n: a projection, P Pᵀ = I) or
            orthonormal columns (d > n: an isometric embedding, Pᵀ P = I), the Q factor of a
            Gaussian matrix drawn from ``numpy.random.default_rng(network.lift_seed)``
    pca     y^[0] = Vᵀ (x − x̄), V ∈ R^{n×d} the d leading principal directions of the training
            features (x̄ their mean; d ≤ n), signs fixed so that the largest entry of each column
            is positive

None of them is trained: they are part of the data, not of the control. A smaller width d trades
capacity for cost: the controls K_j are d×d, so a network of N layers has N (d² + d) + K (d + 1)
parameters and a forward or adjoint sweep costs O(N s m d²) operations on O(N m d) stored
states (s stages, m samples). For the 8×8 digits (n = 64, K = 10) at N = 20: d = 64 gives
83 850 parameters, d = 16 gives 5 610; for MNIST (n = 784) d = 784 gives 12.3 million (98 MB per
copy in float64), d = 64 the same 83 850 as the digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ocdl.errors import OcdlError

KINDS = ("pad", "random", "pca")


@dataclass(frozen=True, eq=False)
class Lifting:
    """y^[0] = P (x − x̄) (``P`` None: zero-padding to ``d``)."""

    kind: str
    d: int
    P: np.ndarray | None = None
    shift: np.ndarray | None = None

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """The lifted points, (m, d), of the points X (m, n)."""
        X = np.asarray(X, dtype=np.float64)
        if self.P is None:
            return pad(X, self.d)
        if X.shape[1] != self.P.shape[1]:
            raise OcdlError(f"points have {X.shape[1]} features; the lifting maps {self.P.shape[1]} to {self.d}")
        Xc = X - self.shift if self.shift is not None else X
        return np.ascontiguousarray(Xc @ self.P.T)


def pad(X: np.ndarray, d: int) -> np.ndarray:
    """Zero-pad points from their dimension to the network width d."""
    if X.shape[1] > d:
        raise OcdlError(f"network width {d} is smaller than the data dimension {X.shape[1]} (zero-padding lifts "
                        "to a larger width only; network.lift = 'random' or 'pca' projects to a smaller one)")
    if X.shape[1] == d:
        return X
    return np.concatenate([X, np.zeros((X.shape[0], d - X.shape[1]))], axis=1)


def make(kind: str, d: int, X_train: np.ndarray, seed: int = 0) -> Lifting:
    """The lifting of kind ``kind`` to width d for the training features X_train (n_samples × n)."""
    n = X_train.shape[1]
    if kind == "pad":
        if d < n:
            pad(X_train[:1], d)  # the one-line refusal
        return Lifting("pad", d)
    if kind == "random":
        G = np.random.default_rng(seed).standard_normal((max(d, n), min(d, n)))
        Q, R = np.linalg.qr(G)
        Q = Q * np.sign(np.diag(R))  # the unique Q with a positive diagonal of R
        P = Q if d > n else Q.T  # d > n: Pᵀ P = I (d × n); d ≤ n: P Pᵀ = I
        return Lifting("random", d, np.ascontiguousarray(P))
    if kind == "pca":
        if d > n:
            raise OcdlError(f"network.lift 'pca': width {d} exceeds the {n} features (PCA projects to at most n)")
        shift = X_train.mean(axis=0)
        _, _, Vt = np.linalg.svd(X_train - shift, full_matrices=False)
        V = Vt[:d].T
        V = V * np.where(V[np.abs(V).argmax(axis=0), np.arange(d)] < 0, -1.0, 1.0)
        return Lifting("pca", d, np.ascontiguousarray(V.T), shift)
    raise OcdlError(f"network.lift: {kind!r} is not one of {', '.join(KINDS)}")
