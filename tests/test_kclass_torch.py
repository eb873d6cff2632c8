"""K classes in the core and the torch engine: the softmax losses against mpmath, autograd = the
partner adjoint for every network form, gradients against central differences, the label checks
(one line, exit 2, nothing written) and the unchanged two-class case."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
import torch

import ocdl
from ocdl import loss, problem as problem_mod, xp
from ocdl.cli import main
from ocdl.engine.torch.adjoint import grad_adjoint
from ocdl.engine.torch.network import TorchNetwork

U = 2.0**-53


def _mp_losses(z, c):
    """(cross-entropy, squared, softmax) of one sample at 60 digits."""
    with mp.workdps(60):
        zz = [mp.mpf(float(v)) for v in z]
        M = max(zz)
        top = zz.index(M)
        T = mp.fsum(mp.exp(v - M) for k, v in enumerate(zz) if k != top)  # Σ e^{z−M} − 1, exactly
        S = 1 + T
        s = [mp.exp(v - M) / S for v in zz]
        ce = mp.log1p(T) + (M - zz[c])  # log S + M − z_c, no cancellation at any precision
        # the residual of the right class as −Σ_{k≠c} s_k (s_c − 1 would round to 0 at any fixed
        # precision once the others' share is below it)
        r = [s[k] if k != c else -mp.fsum(s[l] for l in range(len(zz)) if l != c) for k in range(len(zz))]
        return ce, mp.fsum(v * v for v in r) / 2, r


@pytest.mark.parametrize("scale", [1.0, 30.0, 700.0])
def test_softmax_losses_are_relatively_accurate(scale):
    """−log softmax(z)_c, ½‖softmax(z) − e_c‖² and softmax − e_c, relative to mpmath, including a
    winning class far ahead (the loss ≈ e^{−gap}, far below round-off of 1): within a few units of
    round-off u times the conditioning of e^{z_k − max z} in z, 1 + max_k |z_k − max z| (the
    rounding of z_k − max z alone moves e^{z_k − max z} by that much relatively)."""
    rng = np.random.default_rng(int(scale))
    K, m = 7, 300
    z = rng.standard_normal((K, m)) * scale
    c = rng.integers(0, K, m)
    z[c[:50], np.arange(50)] += 60.0  # the right class far ahead: loss ≈ e^{−60}
    E = np.eye(K)[:, c]
    ce = loss.pointwise("cross-entropy", z, E, xp.NUMPY, K)
    sq = loss.pointwise("squared", z, E, xp.NUMPY, K)
    r = loss.dpointwise("cross-entropy", z, E, xp.NUMPY, K)
    worst = {"ce": 0.0, "r": 0.0, "sq": 0.0}  # relative error / (u · conditioning)
    for n in range(m):
        ref_ce, ref_sq, s = _mp_losses(z[:, n], c[n])
        cond = U * (1.0 + float(np.max(z[:, n]) - np.min(z[:, n])))
        if ref_ce > 1e-300:
            worst["ce"] = max(worst["ce"], float(abs((ce[n] - ref_ce) / ref_ce)) / cond)
        for k in range(K):
            if abs(s[k]) > 1e-300:
                worst["r"] = max(worst["r"], float(abs((r[k, n] - s[k]) / s[k])) / cond)
        if ref_sq > 1e-300:
            worst["sq"] = max(worst["sq"], float(abs((sq[n] - ref_sq) / ref_sq)) / cond)
    assert worst["ce"] < 4 and worst["r"] < 4 and worst["sq"] < 4, worst  # measured ≤ 0.53, 1.29, 1.27


def test_cross_entropy_derivative_is_right_at_ties():
    """z = 0 (W = 0, μ = 0 at the start): every class ties; autograd and ∂ℓ/∂z agree, = 1/K − e_c."""
    K = 4
    z = torch.zeros(K, 3, dtype=torch.float64, requires_grad=True)
    E = torch.eye(K, dtype=torch.float64)[:, [0, 1, 3]]
    for kind in ("cross-entropy", "squared"):
        (g,) = torch.autograd.grad(loss.pointwise(kind, z, E, xp.torch(), K).sum(), z)
        assert torch.allclose(g, loss.dpointwise(kind, z.detach(), E, xp.torch(), K), atol=1e-16, rtol=0)
    assert torch.allclose(loss.dpointwise("cross-entropy", z.detach(), E, xp.torch(), K),
                          1 / K - E, atol=1e-16, rtol=0)


CASES = [
    ("rk", "rk4", "per-layer", None, "cross-entropy"),
    ("rk", "kutta3", "per-stage", None, "squared"),
    ("rk", "midpoint", "per-layer", None, "cross-entropy"),  # b_1 = 0: the unscaled adjoint
    ("odenet", "euler", "per-layer", None, "squared"),
    ("odenet-simplex", "euler", "per-layer", None, "cross-entropy"),
    ("net", "euler", "per-layer", None, "cross-entropy"),
    ("monotone", "rk4", "per-layer", None, "squared"),
    ("rk", "rk4", "per-layer", "learned", "cross-entropy"),
]


def _instance(fam, tab, controls, ts, kind, K=4, m=40, dim=5, width=6, mean=True):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((m, dim))
    c = np.arange(m) % K
    net = {"family": fam, "layers": 3, "controls": controls, "width": width}
    if fam in ("rk", "monotone"):
        net["tableau"] = tab
    if ts:
        net["time_steps"] = ts
    prob = ocdl.Problem.from_arrays(X, c, network=net, objective={"loss": kind, "mean": mean, "tikhonov": 1e-3,
                                                                  "smooth": 1e-3})
    K_ = problem_mod.classes(prob, prob.data.train)
    params = problem_mod.init_params(prob, width, K_)
    tn = TorchNetwork(prob, width, classes=K_)
    return prob, tn, tn.to_torch(params), tn.inputs(X), tn.targets(c)


@pytest.mark.parametrize("fam,tab,controls,ts,kind", CASES)
def test_autograd_equals_the_adjoint_for_k_classes(fam, tab, controls, ts, kind):
    prob, net, prm, Y0, C = _instance(fam, tab, controls, ts, kind)
    assert prm["W"].shape == (4, 6) and prm["mu"].shape == (4,) and C.shape == (4, 40)
    E1, g1 = net.grad_autograd(prm, Y0, C)
    E2, g2 = grad_adjoint(net, prm, Y0, C)
    assert abs(float(E1 - E2)) <= 1e-14 * abs(float(E1))
    for k in g1:
        assert float((g1[k] - g2[k]).abs().max()) <= 1e-12 * max(1.0, float(g1[k].abs().max())), k


def test_gradient_equals_central_differences():
    prob, net, prm, Y0, C = _instance("rk", "rk4", "per-layer", "learned", "cross-entropy")
    _, g = grad_adjoint(net, prm, Y0, C)
    rng = np.random.default_rng(0)
    for key in ("K", "W", "mu", "h"):
        for _ in range(3):
            idx = tuple(int(rng.integers(0, n)) for n in prm[key].shape)
            eps = 1e-6
            plus = {k: v.clone() for k, v in prm.items()}
            minus = {k: v.clone() for k, v in prm.items()}
            plus[key][idx] += eps
            minus[key][idx] -= eps
            fd = (float(net.objective(plus, Y0, C)) - float(net.objective(minus, Y0, C))) / (2 * eps)
            assert abs(fd - float(g[key][idx])) <= 1e-7 * max(1.0, abs(fd)), (key, idx)


def test_two_classes_keep_their_form():
    """Labels 0/1: W ∈ R^d, μ scalar, the logistic — K = 2 is never the softmax."""
    rng = np.random.default_rng(2)
    X, c = rng.standard_normal((20, 2)), np.arange(20) % 2
    p = ocdl.Problem.from_arrays(X, c)
    params = problem_mod.init_params(p, 2, problem_mod.classes(p, p.data.train))
    assert params["W"].shape == (2,) and params["mu"].shape == ()
    assert problem_mod.dims(params) == (2, 2)
    # the same seeded draw as before K classes existed: K, β, W, μ in this order from one Generator
    rng = np.random.default_rng(0)
    K_ = rng.standard_normal((15, 2, 2))
    beta = rng.standard_normal((15, 2))
    W = rng.standard_normal(2)
    mu = rng.uniform(0.0, 1.0)
    assert np.array_equal(params["K"], K_) and np.array_equal(params["beta"], beta)
    assert np.array_equal(params["W"], W) and params["mu"] == mu


def test_k_class_solve_predicts_and_classifies():
    rng = np.random.default_rng(4)
    centres = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    c = np.arange(90) % 3
    X = centres[c] + 0.3 * rng.standard_normal((90, 2))
    p = ocdl.Problem.from_arrays(X, c, network={"family": "resnet", "layers": 3},
                                 objective={"loss": "cross-entropy", "mean": True, "tikhonov": 1e-4})
    r = ocdl.solve(p, engine="torch", iterations=200)
    assert r.evaluation.train_accuracy == 1.0 and r.params["W"].shape == (3, 2)
    net = TorchNetwork(p, 2, classes=3)
    P = net.predict(net.to_torch(r.params), net.inputs(X))
    assert P.shape == (3, 90) and torch.allclose(P.sum(0), torch.ones(90, dtype=torch.float64), atol=1e-15)
    assert np.array_equal(P.argmax(0).numpy(), c)


@pytest.mark.parametrize("args, message", [
    (["--data", "digits", "--classes", "12"], "K = 12 is larger than the 10 classes"),
    (["--data", "digits", "--classes", "3"], "label 9 is outside 0 … 2"),
    (["--data", "digits", "--classes", "1"], "K must be ≥ 2"),
])
def test_label_faults_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    rc = main(["train", *args, "--n-per-class", "3", "--layers", "2", "--iterations", "1", "--quiet",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("labels, message", [
    ([0, 1, 3, 3], "no sample of class 2"),
    ([0, 1, 2.5, 1], "labels must be the class numbers"),
    ([0, 0, 0, 0], "one class only"),
])
def test_label_faults_in_files(tmp_path, capsys, labels, message):
    f = tmp_path / "d.csv"
    f.write_text("".join(f"{i * 0.1},{i * 0.2},{lab}\n" for i, lab in enumerate(labels)))
    out = tmp_path / "run"
    rc = main(["train", "--data", str(f), "--iterations", "1", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("lift", ["pad", "pca"])
def test_a_digits_run_writes_the_class_figures(tmp_path, capsys, lift):
    out = tmp_path / "run"
    rc = main(["train", "--data", "digits", "--n-per-class", "4", "--width", "64" if lift == "pad" else "9",
               "--lift", lift, "--net", "odenet", "--layers", "2", "--loss", "cross-entropy", "--iterations", "3",
               "--quiet", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    import json

    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "ok" and {"features.png", "transformed.png", "objective.png", "timesteps.png"} <= set(m["figures"])
    assert "prediction.png" not in m["figures"]
    for name in m["figures"]:
        assert (out / name).stat().st_size > 1000
