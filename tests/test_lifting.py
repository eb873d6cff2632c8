"""The lifting x ↦ y^[0] (ocdl.lifting): zero-padding, a seeded random orthonormal map, PCA."""

import numpy as np
import pytest

import ocdl
from ocdl import lifting
from ocdl.errors import OcdlError


@pytest.fixture
def X():
    rng = np.random.default_rng(3)
    return rng.standard_normal((50, 6)) @ np.diag([5.0, 3.0, 2.0, 1.0, 0.5, 0.1]) + 1.0


def test_pad_is_zero_padding(X):
    L = lifting.make("pad", 9, X)
    Y = L(X)
    assert Y.shape == (50, 9) and np.array_equal(Y[:, :6], X) and not Y[:, 6:].any()
    with pytest.raises(OcdlError, match="smaller than the data dimension 6"):
        lifting.make("pad", 4, X)


@pytest.mark.parametrize("d", [3, 6, 10])
def test_random_is_orthonormal_and_seeded(X, d):
    L = lifting.make("random", d, X, seed=7)
    P = L.P
    assert P.shape == (d, 6)
    if d <= 6:
        assert np.allclose(P @ P.T, np.eye(d), atol=1e-14)  # a projection
    else:
        assert np.allclose(P.T @ P, np.eye(6), atol=1e-14)  # an isometric embedding: norms kept
        assert np.allclose(np.linalg.norm(L(X), axis=1), np.linalg.norm(X, axis=1), rtol=1e-13)
    assert np.array_equal(P, lifting.make("random", d, X[:5], seed=7).P)  # depends on the seed only
    assert not np.allclose(P, lifting.make("random", d, X, seed=8).P)


def test_pca_takes_the_leading_directions(X):
    L = lifting.make("pca", 2, X)
    Y = L(X)
    assert np.allclose(Y.mean(axis=0), 0, atol=1e-12)
    # the captured variance is the sum of the two largest eigenvalues of the sample covariance
    ev = np.sort(np.linalg.eigvalsh(np.cov(X.T, bias=True)))[::-1]
    assert np.isclose(Y.var(axis=0).sum(), ev[:2].sum(), rtol=1e-12)
    assert np.all(Y.var(axis=0)[:-1] >= Y.var(axis=0)[1:])
    with pytest.raises(OcdlError, match="exceeds the 6 features"):
        lifting.make("pca", 7, X)


def test_a_lifted_problem_solves_at_the_smaller_width(X):
    c = (X[:, 0] > 1.0).astype(float) + (X[:, 1] > 1.0)
    p = ocdl.Problem.from_arrays(X, c, network={"family": "resnet", "layers": 2, "width": 3, "lift": "pca"},
                                 objective={"loss": "cross-entropy", "tikhonov": 1e-3})
    r = ocdl.solve(p, engine="torch", iterations=5)
    assert r.params["K"].shape == (2, 3, 3) and r.params["W"].shape == (3, 3)
    states = ocdl.states(p, r.params, X[:4])
    assert np.allclose(states[0], lifting.make("pca", 3, X)(X[:4]))
    with pytest.raises(OcdlError, match="network.lift: 'svd' is not one of pad, random, pca"):
        ocdl.Problem.from_arrays(X, c, network={"lift": "svd"})
