"""The native engine's compiled sweeps (ocdl.engine.native): the tanh kernel against mpmath, E and
∇E against the torch engine's autograd and partner adjoint (≤ 1e-12 relative), thread- and
chunk-independence, the memory each gradient keeps, whole solves step for step, refusals."""

import subprocess
import sys

import numpy as np
import pytest

import ocdl
from ocdl import problem as problem_mod
from ocdl.errors import OcdlError

numba = pytest.importorskip("numba")
torch = pytest.importorskip("torch")

from ocdl.engine.native.compiled import Compiled  # noqa: E402
from ocdl.engine.torch.adjoint import grad_adjoint  # noqa: E402
from ocdl.engine.torch.network import TorchNetwork  # noqa: E402


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def test_tanh_kernel_is_within_one_ulp_of_the_correctly_rounded_value():
    mpmath = pytest.importorskip("mpmath")
    from ocdl.engine.native.kernels import tanh_array

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal(8000) * 2, rng.uniform(-25, 25, 4000), np.linspace(-0.7, 0.7, 4001),
                        10.0 ** rng.uniform(-300, 1.5, 2000), -(10.0 ** rng.uniform(-300, 1.5, 2000)),
                        [0.625, -0.625, np.nextafter(0.625, 0), 19.0, 19.1, 20.0, 1e300, 5e-324]])
    out = np.empty_like(x)
    tanh_array(x, out)
    with mpmath.workdps(40):
        ref = np.array([float(mpmath.tanh(mpmath.mpf(float(v)))) for v in x])
    ulps = np.abs(out - ref) / np.spacing(np.abs(ref))
    assert ulps.max() <= 1.0, x[np.argmax(ulps)]
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan])
    out = np.empty_like(special)
    tanh_array(special, out)
    assert out[0] == 0 and not np.signbit(out[0]) and out[1] == 0 and np.signbit(out[1])
    assert out[2] == 1.0 and out[3] == -1.0 and np.isnan(out[4])


CASES = [  # family, tableau, controls, time steps, loss, classes
    ("rk", "rk4", "per-layer", "fixed", "squared", 2),
    ("rk", "rk4", "per-stage", "learned", "logistic", 2),
    ("rk", "kutta3", "per-layer", "learned", "squared", 2),
    ("rk", "midpoint", "per-layer", "learned", "squared", 2),  # b_1 = 0: the unscaled form only
    ("rk", "heun", "per-stage", "fixed", "cross-entropy", 3),
    ("rk", "rk38", "per-layer", "fixed", "squared", 4),
    ("resnet", None, "per-layer", None, "squared", 2),
    ("odenet-simplex", None, "per-layer", None, "squared", 2),
    ("net", None, "per-layer", None, "logistic", 3),
]


def _instance(fam, tab, controls, ts, kind, K, m=300, dim=3, width=4, N=5, trained=True):
    rng = np.random.default_rng(11)
    X = rng.standard_normal((m, dim))
    c = np.arange(m) % K
    net = {"family": fam, "layers": N, "controls": controls, "width": width, "h": 0.3}
    if tab:
        net["tableau"] = tab
    if ts:
        net["time_steps"] = ts
    prob = ocdl.Problem.from_arrays(X, c, network=net, objective={"loss": kind, "tikhonov": 1e-3, "smooth": 1e-2},
                                    classifier={"trainable": trained})
    K_ = problem_mod.classes(prob, prob.data.train)
    params = problem_mod.init_params(prob, width, K_)
    params["h"] = params["h"] * (1 + 0.3 * rng.uniform(size=params["h"].shape))  # distinct steps
    tn = TorchNetwork(prob, width, classes=K_)
    return prob, tn, tn.to_torch(params), tn.inputs(X), tn.targets(c)


@pytest.mark.parametrize("fam,tab,controls,ts,kind,K", CASES)
def test_compiled_gradients_equal_autograd_and_the_partner_adjoint(fam, tab, controls, ts, kind, K):
    prob, net, prm, Y0, c = _instance(fam, tab, controls, ts, kind, K)
    comp = Compiled(net, chunk=64)  # 300 samples: four full chunks and a partial one
    Ea, ga = net.grad_autograd(prm, Y0, c)
    Eb, gb = grad_adjoint(net, prm, Y0, c)
    assert abs(comp.objective(prm, Y0, c) - float(Ea)) <= 1e-13 * abs(float(Ea))
    for gradient, (Er, gr) in (("autograd", (Ea, ga)), ("adjoint", (Eb, gb))):
        E, g = comp.value_grad(prm, Y0, c, gradient=gradient)
        assert set(g) == set(gr) == set(prob.trainable())
        assert abs(float(E) - float(Er)) <= 1e-13 * abs(float(Er))
        for k in gr:
            assert g[k].shape == gr[k].shape, k
            assert _rel(g[k], gr[k]) <= 1e-12, (gradient, k, _rel(g[k], gr[k]))
    # the states of the forward sweep are the torch engine's
    states, stages = comp.forward(prm, Y0)
    with torch.no_grad():
        _, ys = net.forward(prm, Y0, keep_states=True)
    assert stages is None and states.shape == (prob.N + 1, 4, 300)
    assert _rel(states, torch.stack(ys)) <= 1e-13


def test_numbers_do_not_depend_on_threads_and_chunks_only_round_off():
    prob, net, prm, Y0, c = _instance("rk", "rk4", "per-stage", "learned", "squared", 2, m=1000)
    one = Compiled(net, threads=1, chunk=128).value_grad(prm, Y0, c)
    two = Compiled(net, threads=2, chunk=128).value_grad(prm, Y0, c)
    other = Compiled(net, threads=1, chunk=256).value_grad(prm, Y0, c)
    assert one[0] == two[0]
    for k in one[1]:
        assert torch.equal(one[1][k], two[1][k]), k  # partial sums added in chunk order
        assert _rel(other[1][k], one[1][k]) <= 1e-13, k


def test_the_lean_adjoint_keeps_the_layer_states_only_and_gives_the_same_bits():
    """keep_stages False: O(N·m·d), the stages recomputed; True or None (they fit): O(N·s·m·d), as
    autograd's saved stages; E and ∇E the same bits either way."""
    prob, net, prm, Y0, c = _instance("rk", "rk4", "per-layer", "fixed", "squared", 2, N=6)
    from ocdl.engine.native.objective import CompiledObjective

    out = {}
    for gradient, keep, stored in (("adjoint", False, False), ("adjoint", None, True), ("adjoint", True, True),
                                   ("autograd", False, True)):
        obj = CompiledObjective(net, prm, prob.trainable(), Y0, c, Y0, c, gradient=gradient)
        obj.keep_stages = keep
        assert obj.stores_stages() == stored
        theta = obj.flat(prm)
        obj.value(theta)
        work = obj.layout()[2]  # the compiled flat objective's arrays (ocdl.engine.native.loop)
        states, stages = work["states"], work["stages"]
        assert states.nbytes == (6 + 1) * 4 * 300 * 8  # O(N·m·d)
        assert (stages.size > 0) == stored
        if stored:  # chunk by chunk, the last chunk padded to CHUNK columns
            chunk = obj.compiled().chunk
            assert stages.shape == (-(-300 // chunk), 6, 4, 4, chunk)
        E, g = obj.value_grad(theta)  # the backward sweep on the kept states
        E2, g2 = Compiled(net).value_grad(prm, Y0, c, gradient=gradient, keep_stages=keep)
        assert E == float(E2) and torch.equal(g, obj.flat(g2))
        out[gradient, keep] = E, g
    for keep in (None, True):
        assert out["adjoint", keep][0] == out["adjoint", False][0]
        assert torch.equal(out["adjoint", keep][1], out["adjoint", False][1])
    assert not torch.equal(out["adjoint", False][1], out["autograd", False][1])  # the partner form differs


def test_keep_stages_option_of_the_native_engine():
    """The solver option: the same run bit for bit kept or not; a bad value is one line."""
    prob = _problem(n=120)
    runs = {keep: ocdl.solve(prob, engine="native", solver="gd-armijo", iterations=5, keep_stages=keep)
            for keep in ("auto", False, True)}
    for keep in (False, True):
        assert runs[keep].objective == runs["auto"].objective
        for k, v in runs["auto"].params.items():
            assert np.array_equal(np.asarray(runs[keep].params[k]), np.asarray(v)), k
    with pytest.raises(OcdlError, match="keep_stages.*'auto', true or false"):
        ocdl.solve(prob, engine="native", solver="gd-armijo", iterations=5, keep_stages="yes")


def _problem(n=200, **net):
    return ocdl.Problem(data=ocdl.problem.DataSpec("spiral", n=n),
                        network=ocdl.problem.NetworkSpec(**{"family": "rk", "tableau": "rk4", "layers": 8, "h": 0.1, **net}))


# round-off (1e-16 per gradient) grows along a trajectory: the bound 1e-12 for 100 gd-armijo
# iterations; 100 gd-lipschitz steps on the simplex ODENet reach 1.4e-12 in μ (measured), bound 1e-11
@pytest.mark.parametrize("solver,gradient,net,tol", [
    ("gd-armijo", "adjoint", {"n": 1000, "layers": 15}, 1e-12),  # the bench problem (ocdl bench train)
    ("gd-armijo", "autograd", {"time_steps": "learned"}, 1e-12),
    ("gd-lipschitz", "adjoint", {"family": "odenet-simplex", "tableau": None}, 1e-11),
    ("adam", "adjoint", {"controls": "per-stage"}, 1e-12),
])
def test_a_native_solve_takes_the_torch_engines_steps(solver, gradient, net, tol):
    net = {k: v for k, v in net.items() if v is not None}
    if net.get("family") == "odenet-simplex":
        net.pop("tableau", None)
        net["h"] = 0.1
    p = _problem(**net)
    opts = {"gradient": gradient}
    r0 = ocdl.solve(p, engine="torch", solver=solver, iterations=100, **opts)
    r1 = ocdl.solve(p, engine="native", solver=solver, iterations=100, **opts)
    assert r1.engine == "native" and r1.evaluation.engine == "native"
    for key in ("function_evaluations", "gradient_evaluations"):
        assert r1.metrics.get(key) == r0.metrics.get(key), key
    for k in r0.params:
        assert _rel(r1.params[k], r0.params[k]) <= tol, (k, _rel(r1.params[k], r0.params[k]))
    assert abs(r1.objective - r0.objective) <= tol * abs(r0.objective)
    assert _rel(r1.history["objective"], r0.history["objective"]) <= tol
    ev = ocdl.evaluate(p, r1.params, engine="torch")
    assert abs(r1.evaluation.objective - ev.objective) <= 1e-13 * abs(ev.objective)
    assert abs(r1.evaluation.test_objective - ev.test_objective) <= 1e-13 * abs(ev.test_objective)
    assert r1.evaluation.train_accuracy == ev.train_accuracy and r1.evaluation.test_accuracy == ev.test_accuracy
    for k in ev.gradient:
        assert _rel(r1.evaluation.gradient[k], ev.gradient[k]) <= 1e-12, k
    assert _rel(r1.evaluation.states, ev.states) <= 1e-13


@pytest.mark.parametrize("net,message", [
    ({"family": "monotone"}, "network.field 'monotone'"),
    ({"activation": "relu"}, "network.activation 'relu'"),
])
def test_what_the_compiled_sweeps_do_not_run_is_refused_in_one_line(net, message):
    p = _problem(**net)
    with pytest.raises(OcdlError, match=message):
        ocdl.solve(p, engine="native", iterations=2)


def test_float32_and_cuda_are_refused():
    p = _problem()
    with pytest.raises(OcdlError, match="dtype 'float32'"):
        ocdl.solve(p.replace(dtype="float32"), engine="native", iterations=2)
    with pytest.raises(OcdlError, match="runs on the CPU"):
        ocdl.solve(p.replace(device="cuda"), engine="native", iterations=2)


def test_without_numba_the_engine_says_which_extra_to_install():
    code = ("import sys; sys.modules['numba'] = None\n"
            "import ocdl\nfrom ocdl.problem import DataSpec, NetworkSpec, Problem\n"
            "p = Problem(data=DataSpec('spiral', n=20), network=NetworkSpec(layers=2))\n"
            "try:\n    ocdl.solve(p, engine='native', iterations=1)\n"
            "except ocdl.OcdlError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'ocdl[native]'" in out


def test_the_compiled_armijo_loop_does_not_depend_on_its_blocks():
    """The compiled gd-armijo loop runs blocks up to the next record with evaluation, progress line
    or checkpoint: other block boundaries, the same iterates and history bit for bit; a gtol stop
    at the torch engine's iteration."""
    p = _problem(n=200, layers=6)
    runs = [ocdl.solve(p, engine="native", solver="gd-armijo", iterations=300, eval_every=e, progress_every=q)
            for e, q in ((300, 300), (7, 3), (64, 13))]
    for r in runs[1:]:
        for k in r.params:
            assert np.array_equal(r.params[k], runs[0].params[k]), k
        assert r.history["objective"] == runs[0].history["objective"]
        assert r.history["step"] == runs[0].history["step"]
    assert len(runs[1].history["eval_iteration"]) == 300 // 7 + 2  # 0, 7, …, 294 and the last
    gtol = 0.5 * runs[0].history["gradient_norm"][150]
    r0 = ocdl.solve(p, engine="torch", solver="gd-armijo", iterations=300, gtol=gtol)
    r1 = ocdl.solve(p, engine="native", solver="gd-armijo", iterations=300, gtol=gtol)
    assert r0.iterations == r1.iterations < 300 and r1.metrics["solver_status"] == "ok"
