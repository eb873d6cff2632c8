"""Data sets, problem description, simplex projection."""


import numpy as np
import pytest
from scipy.optimize import minimize

from ocdl import data, problem as P, simplex
from ocdl.errors import OcdlError


@pytest.mark.parametrize("name", ["donut1d", "donut2d", "spiral", "squares"])
def test_datasets_seeded_and_independent(name):
    spec = P.DataSpec(name, n=300, seed=7)
    tr1, te1 = data.make(spec)
    tr2, _ = data.make(spec)
    assert np.array_equal(tr1.X, tr2.X) and np.array_equal(tr1.c, tr2.c)
    assert tr1.X.shape == (300, 2) and set(np.unique(tr1.c)) == {0.0, 1.0}
    assert not np.array_equal(tr1.X, te1.X)  # independent draws
    tr3, _ = data.make(P.DataSpec(name, n=300, seed=8))
    assert not np.array_equal(tr1.X, tr3.X)


def test_dataset_class_sizes():
    assert data.generate("donut1d", 300).c.sum() == 100  # a third in class 1
    assert data.generate("donut2d", 300).c.sum() == 150
    assert data.generate("spiral", 300).c.sum() == 150
    # the paper's generators: ceil(n/3) resp. ceil(n/2) points in class 1
    assert [data.generate("donut1d", n).c.sum() for n in (1000, 200, 301)] == [334, 67, 101]
    assert data.generate("donut2d", 301).c.sum() == 151 and data.generate("spiral", 301).c.sum() == 151
    d1 = data.generate("donut1d", 3000, noise=0.0)
    assert np.all(d1.X[:, 1] == 0.0) and np.all(np.abs(d1.X[:, 0]) <= 1.0)
    # class 1 concentrates at 0, class 0 near |x| = 0.5
    assert np.mean(np.abs(d1.X[d1.c == 1, 0])) < 0.15 < np.mean(np.abs(d1.X[d1.c == 0, 0]))


def test_squares_labels_before_noise():
    d = data.generate("squares", 2000, noise=0.0)
    assert np.array_equal(d.c, (d.X[:, 0] * d.X[:, 1] > 0).astype(float))


def test_user_files(tmp_path):
    X = np.random.default_rng(0).standard_normal((20, 3))
    c = (X[:, 0] > 0).astype(float)
    np.savez(tmp_path / "d.npz", X=X, c=c)
    ds = data.load_file(tmp_path / "d.npz")
    assert ds.X.shape == (20, 3)
    (tmp_path / "d.csv").write_text("x1,x2,label\n" + "\n".join(f"{a},{b},{int(l)}" for (a, b, _), l in zip(X, c)))
    assert data.load_file(tmp_path / "d.csv").X.shape == (20, 2)
    np.savez(tmp_path / "bad.npz", X=X, c=c - 2)
    with pytest.raises(OcdlError, match="labels must be the class numbers"):
        data.load_file(tmp_path / "bad.npz")
    Xn = X.copy()
    Xn[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", X=Xn, c=c)
    with pytest.raises(OcdlError, match="NaN"):
        data.load_file(tmp_path / "nan.npz")
    np.savez(tmp_path / "short.npz", X=X, c=c[:5])
    with pytest.raises(OcdlError, match="20 samples but labels"):
        data.load_file(tmp_path / "short.npz")


def test_problem_roundtrip_and_validation():
    p = P.Problem(network=P.NetworkSpec(family="odenet-simplex", layers=20, T=1.0))
    assert p.time_steps == "simplex" and p.tableau.name == "euler" and p.trainable()[-1] == "h"
    q = P.from_dict(p.to_dict())
    assert q == p
    with pytest.raises(OcdlError, match="network.bogus: unknown key"):
        P.from_dict({"network": {"bogus": 1}})
    with pytest.raises(OcdlError, match="network.layers: expected int"):
        P.from_dict({"network": {"layers": "x"}})
    with pytest.raises(OcdlError, match="needs time_steps 'simplex'"):
        P.Problem(network=P.NetworkSpec(family="odenet-simplex", time_steps="fixed"))
    with pytest.raises(OcdlError, match="disagree"):
        P.Problem(network=P.NetworkSpec(h=0.1, T=2.0, layers=15))
    with pytest.raises(OcdlError, match="solver.name"):
        P.Problem(solver=P.SolverSpec(backend="torch", name="ipopt"))
    with pytest.raises(OcdlError, match="unknown activation"):
        P.Problem(network=P.NetworkSpec(activation="swish"))


def test_init_params_shapes_and_seed():
    p = P.Problem(network=P.NetworkSpec(tableau="kutta3", controls="per-stage", layers=5, h=0.1))
    a = P.init_params(p, 2)
    b = P.init_params(p, 2)
    assert a["K"].shape == (5, 3, 2, 2) and a["beta"].shape == (5, 3, 2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(OcdlError, match="K has shape"):
        P.check_params(p, {**a, "K": a["K"][:, 0]}, 2)


def test_simplex_projection_is_euclidean():
    rng = np.random.default_rng(0)
    cons = ({"type": "eq", "fun": lambda h: h.sum() - 1.5},)
    for _ in range(20):
        x = rng.normal(scale=2.0, size=6)
        p = simplex.project(x, 1.5)
        assert np.all(p >= 0) and abs(p.sum() - 1.5) < 1e-12
        qp = minimize(lambda h: 0.5 * np.sum((h - x) ** 2), np.full(6, 0.25), jac=lambda h: h - x,
                      bounds=[(0, None)] * 6, constraints=cons, method="SLSQP", options={"ftol": 1e-14})
        assert np.max(np.abs(p - qp.x)) < 1e-7
        # variational inequality: <x − P(x), z − P(x)> ≤ 0 for simplex vertices z
        for i in range(6):
            z = np.zeros(6)
            z[i] = 1.5
            assert np.dot(x - p, z - p) <= 1e-12


def test_simplex_projection_torch_matches_numpy():
    import torch

    x = np.random.default_rng(1).normal(size=9)
    assert np.allclose(simplex.project(torch.tensor(x), 1.0).numpy(), simplex.project(x, 1.0), atol=1e-15)
