"""The native engine's compiled Hessian–vector products (ocdl.engine.native.curvature,
ocdl.engine.native.hv_kernels): equal to the torch engine's (reverse-over-reverse AD, itself tested
against forward-over-reverse AD and CasADi's reduced Hessian in test_hessian.py) ≤ 1e-12, to
central differences of the compiled gradient ≤ 1e-7, symmetric to round-off, independent of the
thread count; Gauss–Newton products likewise; the second-order loss terms against AD; Newton–CG
in the native engine lands where the torch engine's does."""

import numpy as np
import pytest

import ocdl
from ocdl import loss, xp as xp_mod

numba = pytest.importorskip("numba")
torch = pytest.importorskip("torch")

from ocdl.engine.native.curvature import Curvature  # noqa: E402
from ocdl.engine.native.objective import CompiledObjective  # noqa: E402
from ocdl.engine.torch.hessian import Curvature as TorchCurvature  # noqa: E402
from ocdl.engine.torch.optim import Objective  # noqa: E402
from tests.test_compiled import CASES as COMPILED_CASES, _instance as compiled_instance  # noqa: E402

# the compiled gradient's network forms (rk4, kutta3, midpoint, heun, rk38, ResNet, simplex, plain
# layers; per-layer and per-stage; fixed and learned steps; squared, logistic, cross-entropy; K = 2, 3, 4)
# and plain layers with the squared K-class loss
CASES = COMPILED_CASES + [("net", None, "per-layer", None, "squared", 3)]
IDS = ["-".join(str(v) for v in c if v) for c in CASES]


def _instance(*case, m=300, gradient="adjoint", trained=True):
    """The torch engine's and the native engine's objectives on test_compiled's instance."""
    prob, tn, prm, Y0, cc = compiled_instance(*case, m=m, trained=trained)
    keys = prob.trainable()
    return (Objective(tn, prm, keys, Y0, cc, Y0, cc, gradient=gradient),
            CompiledObjective(tn, prm, keys, Y0, cc, Y0, cc, gradient=gradient), prm)


def _rel(a, b):
    return float((a - b).abs().max()) / max(1e-300, float(b.abs().max()))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_compiled_hv_equals_the_torch_engines_and_is_symmetric(case):
    tobj, nobj, prm = _instance(*case)
    theta = tobj.flat(prm)
    rng = np.random.default_rng(2)
    u, v = (torch.tensor(rng.standard_normal(theta.numel())) for _ in range(2))
    for gn in (False, True):
        ref, cur = TorchCurvature(tobj, theta, gn), Curvature(nobj, theta, gn)
        Hv, Hu = cur(v), cur(u)
        assert Hv.shape == theta.shape and cur.products == 2
        assert _rel(Hv, ref(v)) <= 1e-12, (gn, _rel(Hv, ref(v)))
        uHv, vHu = float(u @ Hv), float(v @ Hu)
        assert abs(uHv - vHu) <= 1e-13 * (float(u.abs() @ Hv.abs()) + float(v.abs() @ Hu.abs())), (gn, uHv, vHu)


@pytest.mark.parametrize("gradient", ["adjoint", "autograd"])
def test_both_costate_forms_and_an_untrained_classifier(gradient):
    for case in (CASES[1], CASES[3], CASES[4]):
        tobj, nobj, prm = _instance(*case, gradient=gradient, trained=False)
        assert "W" not in nobj.keys
        theta = tobj.flat(prm)
        v = torch.tensor(np.random.default_rng(4).standard_normal(theta.numel()))
        assert _rel(Curvature(nobj, theta)(v), TorchCurvature(tobj, theta)(v)) <= 1e-12, case


def test_compiled_hv_equals_central_differences_of_the_compiled_gradient():
    _, nobj, prm = _instance("rk", "rk4", "per-stage", "learned", "cross-entropy", 3)
    theta = nobj.flat(prm)
    v = torch.tensor(np.random.default_rng(7).standard_normal(theta.numel()))
    v /= torch.linalg.vector_norm(v)
    eps = 1e-5
    fd = (nobj.value_grad(theta + eps * v)[1] - nobj.value_grad(theta - eps * v)[1]) / (2 * eps)
    assert _rel(Curvature(nobj, theta)(v), fd) <= 1e-7


def test_the_products_do_not_depend_on_the_thread_count():
    _, nobj, prm = _instance("rk", "rk4", "per-stage", "learned", "squared", 2, m=1000)
    theta = nobj.flat(prm)
    v = torch.tensor(np.random.default_rng(3).standard_normal(theta.numel()))
    one = Curvature(nobj, theta)(v)
    nobj.threads = 2
    two = Curvature(nobj, theta)(v)
    assert torch.equal(one, two)  # the chunks' partial sums added in chunk order


@pytest.mark.parametrize("K,kind", [(2, "squared"), (2, "logistic"), (4, "squared"), (4, "cross-entropy")])
def test_second_derivatives_of_the_losses_equal_ad(K, kind):
    xp = xp_mod.torch()
    rng = np.random.default_rng(0)
    if K == 2:
        z = torch.tensor(rng.standard_normal(60) * 6)
        c = torch.tensor((np.arange(60) % 2).astype(float))
        w = torch.tensor(rng.standard_normal(60))
    else:
        z = torch.tensor(rng.standard_normal((K, 60)) * 4)
        c = torch.nn.functional.one_hot(torch.tensor(np.arange(60) % K), K).T.double()
        w = torch.tensor(rng.standard_normal((K, 60)))
    _, ref = torch.func.jvp(torch.func.grad(lambda x: loss.pointwise(kind, x, c, xp, K).sum()), (z,), (w,))
    assert _rel(loss.d2pointwise(kind, z, c, w, xp, K), ref) <= 1e-14


def test_newton_in_the_native_engine_lands_where_the_torch_engines_does():
    p = ocdl.Problem(data=ocdl.problem.DataSpec("spiral", n=200),
                     network=ocdl.problem.NetworkSpec(family="rk", tableau="rk4", layers=6, h=0.2),
                     objective=ocdl.problem.ObjectiveSpec(tikhonov={k: 1e-3 for k in ("K", "beta", "W", "mu", "h")},
                                                          smooth=1e-3))
    assert "newton" in ocdl.engines()["native"]
    r0 = ocdl.solve(p, engine="torch", solver="newton", iterations=300, tol=1e-10)
    r1 = ocdl.solve(p, engine="native", solver="newton", iterations=300, tol=1e-10)
    assert r1.engine == "native" and r0.metrics["solver_status"] == r1.metrics["solver_status"] == "ok"
    assert r1.gradient_norm <= 1e-10 * max(1.0, abs(r1.objective))
    assert r1.metrics["hv_products"] > 0
    for k in r0.params:
        assert float(np.abs(r1.params[k] - r0.params[k]).max()) <= 1e-8, k


def test_without_the_stages_kept_the_products_are_the_same_bits():
    """keep_stages=False: the memory of the adjoint, O(N·m·d); the stages recomputed per product."""
    for case in (CASES[1], CASES[4], CASES[8]):
        _, nobj, prm = _instance(*case)
        theta = nobj.flat(prm)
        v = torch.tensor(np.random.default_rng(5).standard_normal(theta.numel()))
        for gn in (False, True):
            kept, lean = Curvature(nobj, theta, gn, keep_stages=True), Curvature(nobj, theta, gn, keep_stages=False)
            assert kept.stages.size > 0 and lean.stages.size == 0
            assert torch.equal(kept(v), lean(v)), (case, gn)
