"""The sigmoid activation σ = S and its derivative (:mod:`ocdl.activations`) against mpmath at 50
digits, x ∈ [−745, 745] (and ±0, subnormal, huge): accurate *relatively* to a few units of
round-off u = 2⁻⁵³ in NumPy and torch float64, the same expressions in CasADi, and autograd and
CasADi's AD consistent at the split x = 0. softplus' σ' is the same S; tanh is untouched.
The grid and bounds follow tests/test_loss_accuracy.py (S and its derivative are the same
formulas as the loss's S and S(1 − S)); the form ½(1 + tanh(x/2)) replaced here fails them
(relative error 9e-9 at x = −20, 1 below x = −38)."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

from ocdl import activations, xp

U = 2.0**-53
TINY = 2.0**-1022
SUB = 2.0**-1074
BOUND = {"sigma": 4, "dsigma": 8}  # in u


def _grid():
    rng = np.random.default_rng(6)
    return np.concatenate([
        np.linspace(-745.0, 745.0, 2981),
        rng.uniform(-745.0, 745.0, 600),
        np.linspace(-40.0, 40.0, 1601),
        np.geomspace(1e-300, 700.0, 300), -np.geomspace(1e-300, 700.0, 300),
        [0.0, -0.0, SUB, -SUB, 1e-310, -1e-310, 1e-20, -1e-20, 1e300, -1e300, 1.7e308, -1.7e308],
    ])


def _exact(x: float):
    with mp.workdps(50):
        m = mp.mpf(x)
        S, T = 1 / (1 + mp.exp(-m)), 1 / (1 + mp.exp(m))
        return {"sigma": S, "dsigma": S * T, "1-S": T}


@pytest.fixture(scope="module")
def reference():
    x = _grid()
    ex = [_exact(float(v)) for v in x]
    return x, {k: [e[k] for e in ex] for k in ex[0]}


def _errors(got, exact):
    rel, sub = [], []
    for g, e in zip(np.asarray(got, dtype=np.float64), exact):
        assert np.isfinite(g), (g, e)
        d = abs(mp.mpf(float(g)) - e)
        if abs(e) >= TINY:
            rel.append(float(d / abs(e)))
        else:
            sub.append(float(d / mp.mpf(SUB)))
    return np.array(rel), np.array(sub)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_sigmoid_relative_accuracy_against_mpmath(reference, engine):
    x, exact = reference
    a = activations.get("sigmoid")
    if engine == "numpy":
        ns, arg, back = xp.NUMPY, x, np.asarray
    else:
        import torch

        ns, arg, back = xp.torch(), torch.tensor(x, dtype=torch.float64), lambda t: t.numpy()
    got = {"sigma": back(a.sigma(arg, ns)), "dsigma": back(a.dsigma(arg, ns)), "1-S": back(a.sigma(-arg, ns))}
    for key in ("sigma", "dsigma", "1-S"):
        rel, sub = _errors(got[key], exact[key])
        bound = BOUND.get(key, 4) * U
        assert rel.max() <= bound, f"{engine} {key}: relative error {rel.max():.3e} > {bound:.3e}"
        assert sub.size == 0 or sub.max() <= 2.0, f"{engine} {key}: {sub.max()} units of 2^-1074"
    # softplus' derivative is the same S
    np.testing.assert_array_equal(back(activations.get("softplus").dsigma(arg, ns)), got["sigma"])


def test_former_failures_fixed():
    """S(−20), S(−30), S(−37), S(−40), S(−300): ½(1 + tanh(x/2)) gave 9e-9, 1.7e-4, 0.35, 1, 1."""
    a = activations.get("sigmoid")
    for x in (-20.0, -30.0, -37.0, -40.0, -300.0):
        ex = _exact(x)
        assert abs(float(a.sigma(np.float64(x), xp.NUMPY)) / float(ex["sigma"]) - 1) <= 4 * U
        assert abs(float(a.dsigma(np.float64(x), xp.NUMPY)) / float(ex["dsigma"]) - 1) <= 8 * U


def test_dsigma_through_s(reference):
    """σ' through s = S(x), s(1 − s): relatively accurate for x ≤ 0; for x > 0 within round-off of
    1 absolutely (1 − s cancels), which is what it promises."""
    x, exact = reference
    a = activations.get("sigmoid")
    got = a.dsigma_s(a.sigma(x, xp.NUMPY))
    neg = x <= 0
    rel, sub = _errors(got[neg], [e for e, n in zip(exact["dsigma"], neg) if n])
    assert rel.max() <= 8 * U and (sub.size == 0 or sub.max() <= 2.0)
    err = np.array([abs(float(mp.mpf(float(g)) - e)) for g, e, n in zip(got, exact["dsigma"], neg) if not n])
    assert err.max() <= 2 * U


def test_casadi_equals_numpy():
    ca = pytest.importorskip("casadi")
    C = xp.casadi()
    a = activations.get("sigmoid")
    s = ca.SX.sym("x")
    f = ca.Function("f", [s], [a.sigma(s, C), a.dsigma(s, C)])
    for x in (-745.0, -700.0, -40.0, -20.0, -3.5, -1e-20, -0.0, 0.0, 1e-20, 0.7, 20.0, 40.0, 700.0, 745.0):
        got = [float(v) for v in f(x)]
        ref = [float(a.sigma(np.float64(x), xp.NUMPY)), float(a.dsigma(np.float64(x), xp.NUMPY))]
        for g, r in zip(got, ref):
            assert abs(g - r) <= 8 * U * abs(r) + 2 * SUB, (x, g, r)


def test_derivatives_consistent_at_the_split():
    """dσ/dx by torch autograd and by CasADi's AD of σ equal ``dsigma``, x = 0 included (S'(0) = ¼;
    max and |·| differentiated separately would give 0 there)."""
    import torch

    ca = pytest.importorskip("casadi")
    a = activations.get("sigmoid")
    pts = np.array([0.0, -0.0, 1e-300, -1e-300, 1e-8, -1e-8, 0.3, -2.0, 15.0, -60.0, 800.0, -800.0])
    z = torch.tensor(pts, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(a.sigma(z, xp.torch()).sum(), z)
    d = a.dsigma(pts, xp.NUMPY)
    np.testing.assert_allclose(g.numpy(), d, rtol=8 * U, atol=0.0)
    assert g[0].item() == 0.25 and g[1].item() == 0.25
    s = ca.SX.sym("x")
    fn = ca.Function("f", [s], [ca.gradient(a.sigma(s, xp.casadi()), s)])
    for p, di in zip(pts, d):
        assert abs(float(fn(p)) - di) <= 8 * U * abs(di), p


def test_tanh_untouched():
    """σ = tanh is the process's tanh kernel unmodified (ocdl.tanh), σ' = 1 − tanh²."""
    from ocdl import tanh

    a = activations.get("tanh")
    x = np.linspace(-30, 30, 1201)
    ref = np.empty_like(x)
    tanh.into(x, ref)
    np.testing.assert_array_equal(a.sigma(x, xp.NUMPY), ref)
    np.testing.assert_array_equal(a.dsigma(x, xp.NUMPY), 1.0 - ref ** 2)


def test_float32_finite():
    import torch

    a = activations.get("sigmoid")
    t = torch.tensor(np.concatenate([np.linspace(-100.0, 100.0, 801), [0.0, 3e38, -3e38]]), dtype=torch.float32)
    for f in (a.sigma, a.dsigma):
        got = f(t, xp.torch()).double().numpy()
        ref = f(t.double(), xp.torch()).numpy()
        assert np.all(np.isfinite(got))
        normal = np.abs(ref) >= 2.0**-126
        assert np.all(np.abs(got - ref)[normal] <= 10 * 2.0**-24 * np.abs(ref)[normal])
