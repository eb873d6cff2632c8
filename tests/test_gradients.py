"""Discretise-then-optimise gradients: autograd = hand-written partner adjoint = finite differences."""

import numpy as np
import pytest
import torch

from ocdl import tableau
from ocdl.engine.torch.adjoint import grad_adjoint
from tests.conftest import setup_net, small_problem

PARTNER_TABLEAUX = [n for n in tableau.names() if tableau.get(n).has_partner]


def rel_diff(g1, g2):
    """max over parameters of ‖g1 − g2‖_∞ / ‖g1‖_∞."""
    return max(float((g1[k] - g2[k]).abs().max() / g1[k].abs().max().clamp_min(1e-300)) for k in g1)


@pytest.mark.parametrize("controls", ["per-layer", "per-stage"])
@pytest.mark.parametrize("time_steps", ["fixed", "learned"])
@pytest.mark.parametrize("name", PARTNER_TABLEAUX)
def test_partner_adjoint_equals_autograd(name, controls, time_steps):
    prob = small_problem(tableau=name, controls=controls, time_steps=time_steps)
    net, prm, Y0, c = setup_net(prob)
    E1, g1 = net.grad_autograd(prm, Y0, c)
    E2, g2 = grad_adjoint(net, prm, Y0, c, form="partner")
    assert set(g1) == set(g2) == set(prob.trainable())
    assert abs(float(E1 - E2)) <= 1e-13 * abs(float(E1))
    assert rel_diff(g1, g2) <= 1e-12


@pytest.mark.parametrize("controls", ["per-layer", "per-stage"])
def test_unscaled_form_for_midpoint(controls):
    """b = (0, 1): no partner, but the unscaled discrete adjoint exists and is exact."""
    prob = small_problem(tableau="midpoint", controls=controls, time_steps="learned")
    net, prm, Y0, c = setup_net(prob)
    assert net.partner_coef is None
    _, g1 = net.grad_autograd(prm, Y0, c)
    _, g2 = grad_adjoint(net, prm, Y0, c)
    assert rel_diff(g1, g2) <= 1e-12
    from ocdl.errors import OcdlError

    with pytest.raises(OcdlError, match="partner form does not exist"):
        grad_adjoint(net, prm, Y0, c, form="partner")


@pytest.mark.parametrize("controls", ["per-layer", "per-stage"])
@pytest.mark.parametrize("name", ["rk4", "kutta3", "rk38"])
def test_unscaled_equals_partner_where_both_exist(name, controls):
    prob = small_problem(tableau=name, controls=controls, time_steps="learned")
    net, prm, Y0, c = setup_net(prob)
    _, g1 = grad_adjoint(net, prm, Y0, c, form="partner")
    _, g2 = grad_adjoint(net, prm, Y0, c, form="unscaled")
    assert rel_diff(g1, g2) <= 1e-12


@pytest.mark.parametrize(
    "family,kw",
    [
        ("net", {}),
        ("resnet", {}),
        ("odenet", {}),
        ("odenet-simplex", {}),
        ("monotone", {"tableau": "rk4"}),
        ("rk", {"loss": "logistic", "mean": True, "activation": "softplus"}),
        ("rk", {"activation": "sigmoid", "tableau": "heun"}),
        ("rk", {"activation": "relu", "tableau": "rk38"}),
    ],
)
def test_families_and_losses(family, kw):
    prob = small_problem(family=family, **kw)
    net, prm, Y0, c = setup_net(prob)
    _, g1 = net.grad_autograd(prm, Y0, c)
    _, g2 = grad_adjoint(net, prm, Y0, c)
    assert rel_diff(g1, g2) <= 1e-12


def _central_fd(net, prm, Y0, c, key, idx, eps):
    def E(delta):
        q = {k: v.clone() for k, v in prm.items()}
        q[key].view(-1)[idx] += delta
        with torch.no_grad():
            return float(net.objective(q, Y0, c))

    return (E(eps) - E(-eps)) / (2 * eps)


@pytest.mark.parametrize("name,controls", [("rk4", "per-layer"), ("kutta3", "per-stage"), ("midpoint", "per-layer")])
def test_adjoint_matches_finite_differences(name, controls):
    prob = small_problem(tableau=name, controls=controls, time_steps="learned")
    net, prm, Y0, c = setup_net(prob)
    _, g = grad_adjoint(net, prm, Y0, c)
    rng = np.random.default_rng(0)
    worst = 0.0
    for key in prob.trainable():
        n = prm[key].numel()
        for idx in rng.choice(n, size=min(n, 4), replace=False):
            fd = _central_fd(net, prm, Y0, c, key, int(idx), 1e-5)
            ad = float(g[key].reshape(-1)[int(idx)])
            worst = max(worst, abs(fd - ad) / max(abs(ad), 1e-3 * float(g[key].abs().max())))
    assert worst <= 1e-6


def test_costates_are_gradients_of_states():
    """p^[j] = ∂E/∂y^[j]: compare with autograd through the states."""
    prob = small_problem(tableau="kutta3", controls="per-stage")
    net, prm, Y0, c = setup_net(prob)
    _, _, cs = grad_adjoint(net, prm, Y0, c, return_costates=True)
    Y0g = Y0.clone().requires_grad_(True)
    yN, states = net.forward(prm, Y0g, keep_states=True)
    for s_ in states:
        s_.retain_grad()
    net.data_loss(prm, yN, c).backward()
    for j, s_ in enumerate(states):
        ref = s_.grad.T
        assert float((cs["p"][j] - ref).abs().max()) <= 1e-12 * float(ref.abs().max())
    assert cs["P"].shape == (prob.N, 3, Y0.shape[1], Y0.shape[0])


def test_float32_and_device_parameter():
    prob = small_problem(tableau="heun").replace(dtype="float32")
    net, prm, Y0, c = setup_net(prob)
    assert prm["K"].dtype == torch.float32 and prm["K"].device.type == "cpu"
    _, g1 = net.grad_autograd(prm, Y0, c)
    _, g2 = grad_adjoint(net, prm, Y0, c)
    assert rel_diff(g1, g2) <= 1e-5


@pytest.mark.parametrize("family", ["rk", "monotone"])
@pytest.mark.parametrize("name", ["rk4", "rk38", "kutta3", "ralston3"])
def test_per_layer_stages_without_Y_are_the_stage_equations(name, family):
    """Per-layer controls form Z_i = Z_1 + h Σ_l a_il K F_l; the Y_i of the stage equations
    Y_i = y + h Σ_l a_il F_l give the same Z_i = K Y_i + β and F_i = f(Y_i) to round-off."""
    prob = small_problem(family=family, tableau=name)
    net, prm, Y0, c = setup_net(prob)
    u, h = net.controls(prm)[1], float(prm["h"][1])
    Ys, Fs, Zs, Ss = net.stages(u, Y0, h)
    K, beta = u[0]
    for i in range(net.s):
        Yi = Y0 + h * sum(net.a[i][l] * Fs[l] for l in range(i))
        F, Z, S = net.field(Yi, K, beta)
        assert torch.allclose(Ys[i], Yi, rtol=0, atol=1e-15)
        assert float((Zs[i] - Z).abs().max()) <= 1e-14 * max(1.0, float(Z.abs().max()))
        assert float((Fs[i] - F).abs().max()) <= 1e-14 * max(1.0, float(F.abs().max()))
    assert net.stages(u, Y0, h, want_Y=False)[0] is None


def test_torch_namespace_tanh_is_correctly_rounded_to_one_ulp():
    """On the CPU outside autograd tanh runs the process's kernel (ocdl.tanh): within 1 ulp of the correctly rounded
    value (mpmath, 120 bits) over [−25, 25], tiny and subnormal arguments; inside autograd (and for
    dtypes NumPy lacks) it is torch.tanh, with its derivative."""
    import mpmath

    from ocdl import xp as xp_mod

    xp = xp_mod.torch()
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(3000) * 3, rng.uniform(-25, 25, 1000), 10.0 ** rng.uniform(-310, 0, 500),
                        [0.0, -0.0, 1e-300, 19.0, 40.0, -40.0, np.inf, -np.inf]])
    with mpmath.workprec(120):
        ref = np.array([float(mpmath.tanh(mpmath.mpf(v))) if np.isfinite(v) else np.sign(v) for v in x])
    ref = np.where(x == 0, x, ref)  # tanh(±0) = ±0
    t = torch.tensor(x, dtype=torch.float64)
    with torch.inference_mode():
        got = xp.tanh(t).numpy()
    ulp = np.abs(got - ref) / np.spacing(np.abs(ref))
    assert ulp.max() <= 1.0 and np.array_equal(np.signbit(got), np.signbit(ref))
    assert float((xp.tanh(t) - torch.tanh(t)).abs().max()) <= 2.3e-16
    t = torch.tensor(x[:50], requires_grad=True)
    (y,) = torch.autograd.grad(xp.tanh(t).sum(), t)
    assert torch.allclose(y, 1 - torch.tanh(t.detach()) ** 2, rtol=0, atol=1e-15)
    # in autograd the same kernel (an autograd Function), with first and second derivatives
    assert torch.equal(xp.tanh(t).detach(), xp.tanh(t.detach()))
    t = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.gradcheck(xp.tanh, (t,)) and torch.autograd.gradgradcheck(xp.tanh, (t,))
    assert xp.tanh(torch.tensor([0.5], dtype=torch.bfloat16)).dtype == torch.bfloat16
    assert torch.equal(xp_mod.torch(chosen_tanh=False).tanh(t.detach()), torch.tanh(t.detach()))


@pytest.mark.parametrize("controls", ["per-layer", "per-stage"])
@pytest.mark.parametrize("name", [n for n in tableau.names() if tableau.get(n).explicit])
def test_every_gradient_path_evaluates_the_same_objective_bit_for_bit(name, controls):
    """The forward sweep (inference), autograd's and the adjoint's run the same kernels in the same
    order: E is bit-identical, so the two gradients differentiate one rounded map."""
    prob = small_problem(tableau=name, controls=controls)
    net, prm, Y0, c = setup_net(prob)
    E1, _ = net.grad_autograd(prm, Y0, c)
    E2, _ = grad_adjoint(net, prm, Y0, c)
    with torch.inference_mode():
        E3 = net.objective(prm, Y0, c)
    assert float(E1) == float(E2) == float(E3)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu", "softplus", "sin"])
def test_dsigma_mul_maps_agree_across_namespaces(act):
    """σ'(Z) ⊙ M: torch's fused kernel (tanh, sigmoid), the formula through S = σ(Z), and σ'(Z)
    itself in NumPy give the same values."""
    from ocdl import activations, xp as xp_mod

    a = activations.get(act)
    rng = np.random.default_rng(1)
    Z, M = rng.standard_normal((2, 40)) * 2, rng.standard_normal((2, 40))
    S = a.sigma(Z, xp_mod.NUMPY)
    ref = a.dsigma(Z, xp_mod.NUMPY) * M
    got_np = xp_mod.dsigma_mul_fn(a, xp_mod.NUMPY)(Z, S, M)
    tz, ts, tm = (torch.tensor(v) for v in (Z, S, M))
    got_t = xp_mod.dsigma_mul_fn(a, xp_mod.torch())(tz, ts, tm).numpy()
    np.testing.assert_allclose(got_np, ref, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(got_t, ref, rtol=1e-13, atol=1e-15)
