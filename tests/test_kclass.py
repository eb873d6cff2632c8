"""K ≥ 3 classes (issue 16).

CasADi engine and verification (this group): on small random K-class instances (m = 30, width 5
≥ the input dimension 4, N = 3, every kind of tableau, per-stage controls, learned and simplex
steps, both losses) the CasADi objective and gradient equal PyTorch's autograd and its partner
adjoint; the reduced IPOPT solve reaches KKT 1e-10 where PyTorch's gradient vanishes, and the
full-space multipliers at that point are PyTorch's partner costates; the SQP and the Hamiltonian
BVP; ``ocdl verify``, ``ocdl compare`` and ``ocdl stability network`` on a K-class problem file;
the CasADi engine's refusal of a full-size problem.
"""

import json
import math

import casadi as ca
import numpy as np
import pytest

from ocdl import data, problem as problem_mod
from ocdl.data import lift
from ocdl.errors import OcdlError
from ocdl.problem import Problem, SolverSpec

# ============================================================================ CasADi engine and verify
REG = {"K": 1e-2, "beta": 1e-3, "W": 1e-3, "mu": 1e-3, "h": 1e-2}
TOL = 1e-10


def _arrays(K=3, m=30, dim=4, seed=0):
    """m points in R^dim, labels 0 … K−1 in turn, each class around its own random centre."""
    rng = np.random.default_rng(seed)
    c = np.arange(m) % K
    X = rng.standard_normal((m, dim)) + 1.5 * rng.standard_normal((K, dim))[c]
    return X, c


def kproblem(K=3, tableau="rk4", controls="per-layer", time_steps=None, loss="cross-entropy", family="rk",
             layers=3, width=5, mean=False, seed=0):
    X, c = _arrays(K, seed=seed)
    net = {"family": family, "layers": layers, "width": width}
    if family in ("rk", "monotone"):
        net.update(tableau=tableau, controls=controls)
    if time_steps is not None:
        net["time_steps"] = time_steps
    net.update({"T": 0.3} if time_steps == "simplex" or family == "odenet-simplex" else
               ({"h": 0.1} if family != "net" else {}))
    return Problem.from_arrays(X, c, network=net, objective={"loss": loss, "mean": mean, "tikhonov": REG,
                                                             "smooth": 1e-2})


def _setup(prob, seed_shift=0):
    """(train, test, K, d, seeded initial parameters with unequal steps where they are learned)."""
    tr, te = data.make(prob.data)
    K = problem_mod.classes(prob, tr)
    d = prob.width(tr.dim)
    p0 = problem_mod.init_params(prob, d, K)
    if prob.time_steps != "fixed" and prob.has_skip:
        h = p0["h"] * (0.5 + np.random.default_rng(1 + seed_shift).uniform(size=p0["h"].shape))
        p0["h"] = h / h.sum() * prob.T if prob.time_steps == "simplex" else h
    return tr, te, K, d, p0


def _torch(prob, K, d, params, tr):
    """(E, ∇E by autograd, ∇E and costates by the partner adjoint) of the PyTorch engine (NumPy)."""
    from ocdl.engine.torch.adjoint import grad_adjoint
    from ocdl.engine.torch.network import TorchNetwork

    net = TorchNetwork(prob, d, classes=K)
    prm, Y0, c = net.to_torch(params), net.inputs(tr.X), net.targets(tr.c)
    E1, g1 = net.grad_autograd(prm, Y0, c)
    E2, g2, cs = grad_adjoint(net, prm, Y0, c, return_costates=True)
    assert abs(float(E2) - float(E1)) <= 1e-14 * abs(float(E1))
    npy = lambda g: {k: v.detach().numpy().copy() for k, v in g.items()}  # noqa: E731
    return float(E1), npy(g1), npy(g2), npy(cs)


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-300))


def _solve(prob, p0, tr, te, name="ipopt", **options):
    from ocdl.engine.casadi import solve

    prob = prob.replace(solver=SolverSpec(backend="casadi", name=name, options={"tol": TOL, **options}))
    return solve(prob, tr, te, p0, log=None)


GRADIENT_CASES = [
    dict(tableau="euler", loss="squared"),
    dict(tableau="rk4", controls="per-stage", time_steps="learned"),
    dict(tableau="kutta3", loss="squared", mean=True),
    dict(tableau="midpoint", time_steps="learned"),  # b_1 = 0: the unscaled adjoint
    dict(tableau="heun", time_steps="simplex", loss="squared"),
    dict(family="net"),
    dict(family="monotone", tableau="rk38", controls="per-stage"),
    dict(K=10, tableau="rk4"),
    dict(K=10, tableau="ssprk3", loss="squared", time_steps="learned"),
]


def _ids(case):
    return "-".join(f"{v}" for v in case.values())


@pytest.mark.parametrize("case", GRADIENT_CASES, ids=_ids)
def test_kclass_casadi_objective_and_gradient_equal_torch_autograd_and_adjoint(case):
    from ocdl.engine.casadi import gradient

    prob = kproblem(**case)
    tr, _, K, d, p0 = _setup(prob)
    assert K == case.get("K", 3) and p0["W"].shape == (K, d) and p0["mu"].shape == (K,)
    E1, g_auto, g_adj, _ = _torch(prob, K, d, p0, tr)
    E3, g3 = gradient(prob, p0, tr.X, tr.c)
    assert set(g3) == set(prob.trainable())
    assert abs(E3 - E1) <= 1e-12 * abs(E1)
    for k in g3:
        assert g3[k].shape == g_auto[k].shape, k
        assert _rel(g3[k], g_auto[k]) <= 1e-12, k
        assert _rel(g_adj[k], g_auto[k]) <= 1e-12, k


def test_kclass_casadi_evaluate_and_states_equal_torch():
    from ocdl.engine.casadi import engine as cas
    from ocdl.engine.torch import TorchEngine

    prob = kproblem(tableau="kutta3", controls="per-stage")
    tr, te, K, d, p0 = _setup(prob)
    e_c = cas.evaluate(prob, p0, tr, te)
    e_t = TorchEngine().evaluate(prob, p0, (tr, te))
    assert abs(e_c.objective - e_t.objective) <= 1e-12 * abs(e_t.objective)
    assert abs(e_c.gradient_norm - e_t.gradient_norm) <= 1e-12 * e_t.gradient_norm
    assert e_c.train_accuracy == e_t.train_accuracy and e_c.test_accuracy == e_t.test_accuracy
    assert 0 < e_c.train_accuracy < 1  # the argmax, not an all-or-nothing accident
    S_c, S_t = cas.states(prob, p0, tr.X), TorchEngine().states(prob, p0, tr.X)
    assert S_c.shape == (prob.N + 1, tr.n, d) and _rel(S_c, S_t) <= 1e-13
    # the argmax accuracy by hand from the final states
    z = p0["W"] @ S_c[-1].T + p0["mu"][:, None]
    assert e_c.train_accuracy == float(np.mean(np.argmax(z, 0) == tr.c))


SOLVE_CASES = [
    dict(tableau="rk4"),
    dict(tableau="euler", loss="squared"),
    dict(tableau="heun", loss="squared", time_steps="learned"),
    dict(tableau="midpoint"),  # b_1 = 0: unscaled stage costates
    dict(tableau="kutta3", controls="per-stage", layers=2),
    dict(family="net"),
    dict(K=10, tableau="rk4", loss="squared"),
]


@pytest.mark.parametrize("case", SOLVE_CASES, ids=_ids)
def test_kclass_reduced_ipopt_kkt_and_multipliers_are_the_partner_costates(case):
    prob = kproblem(**case)
    tr, te, K, d, p0 = _setup(prob)
    red = _solve(prob, p0, tr, te, formulation="reduced")
    assert red.success, red.message
    assert red.metrics["solver_status"] == "Solve_Succeeded"
    assert red.metrics["kkt_residual"] <= 1e-10
    E, g_auto, g_adj, cs = _torch(prob, K, d, red.params, tr)
    # PyTorch's gradient vanishes at IPOPT's solution
    assert max(float(np.max(np.abs(v))) for v in g_auto.values()) <= 1e-9
    assert math.sqrt(sum(float((v**2).sum()) for v in g_adj.values())) <= 1e-8
    assert abs(red.metrics["nlp_objective"] - E) <= 1e-12 * abs(E)
    for k in cs:  # the reduced solve's costates (the backward sweep)
        assert _rel(red.costates[k], cs[k]) <= 1e-8, k
    # the full-space NLP at that point: its state multipliers are the partner costates
    full = _solve(prob, red.params, tr, te, formulation="full")
    assert full.success and full.metrics["kkt_residual"] <= 1e-8
    assert max(_rel(full.params[k], red.params[k]) for k in prob.trainable()) <= 1e-8
    assert set(full.costates) == set(cs)
    for k in cs:
        assert full.costates[k].shape == cs[k].shape
        assert _rel(full.costates[k], cs[k]) <= 1e-8, k


@pytest.mark.slow
def test_kclass_full_space_from_the_start_and_stage_variables():
    prob = kproblem(tableau="heun", loss="squared")
    tr, te, K, d, p0 = _setup(prob)
    r1 = _solve(prob, p0, tr, te)
    r2 = _solve(prob, p0, tr, te, stages="variables")  # multipliers of the stage equations
    r3 = _solve(prob, p0, tr, te, derivatives="casadi")
    for r in (r1, r2, r3):
        assert r.success and r.metrics["kkt_residual"] <= 1e-8
    assert r2.metrics["n_variables"] > r1.metrics["n_variables"]
    # the structured derivatives are CasADi's: the same iterates to the same point
    assert r3.metrics["iterations"] == r1.metrics["iterations"]
    assert max(_rel(r3.params[k], r1.params[k]) for k in prob.trainable()) <= 1e-8
    for r in (r1, r2):
        _, g, _, cs = _torch(prob, K, d, r.params, tr)
        assert max(float(np.max(np.abs(v))) for v in g.values()) <= 1e-8
        for k in cs:
            assert _rel(r.costates[k], cs[k]) <= 1e-8, k


def test_kclass_simplex_steps_stay_on_the_simplex():
    prob = kproblem(tableau="heun", time_steps="simplex", loss="squared")
    tr, te, K, d, p0 = _setup(prob)
    res = _solve(prob, p0, tr, te, formulation="reduced")
    assert res.success, res.message
    h = res.params["h"]
    assert np.all(h >= 0) and abs(h.sum() - prob.T) <= 1e-9
    # stationarity on the simplex in PyTorch's gradient: ∂E/∂h_j = −ν where h_j > 0, ≥ −ν at h_j = 0
    _, g, _, _ = _torch(prob, K, d, res.params, tr)
    inner = h > 1e-6
    gh = g["h"]
    assert inner.any() and np.ptp(gh[inner]) <= 1e-7 * max(1.0, np.max(np.abs(gh)))
    assert np.all(gh[~inner] >= gh[inner].mean() - 1e-7)
    for k in ("K", "beta", "W", "mu"):
        assert float(np.max(np.abs(g[k]))) <= 1e-7, k


@pytest.mark.parametrize("case", [dict(tableau="rk4"),
                                  pytest.param(dict(tableau="heun", controls="per-stage", loss="squared"),
                                               marks=pytest.mark.slow),
                                  pytest.param(dict(family="net", K=10), marks=pytest.mark.slow)], ids=_ids)
def test_kclass_sqp_and_bvp_reach_the_ipopt_point(case):
    prob = kproblem(**case)
    tr, te, K, d, p0 = _setup(prob)
    ip = _solve(prob, p0, tr, te)
    assert ip.success
    _, _, _, cs = _torch(prob, K, d, ip.params, tr)
    sqp = _solve(prob, p0, tr, te, name="sqp")
    assert sqp.success and sqp.metrics["kkt_residual"] <= 1e-9
    _, g, _, cs_sqp = _torch(prob, K, d, sqp.params, tr)
    assert max(float(np.max(np.abs(v))) for v in g.values()) <= 1e-9
    for k in cs_sqp:
        assert _rel(sqp.costates[k], cs_sqp[k]) <= 1e-8, k
    bvp = _solve(prob, ip.params, tr, te, name="bvp", tol=1e-11)
    assert bvp.success and bvp.metrics["bvp_residual"] <= 1e-11
    assert max(_rel(bvp.params[k], ip.params[k]) for k in prob.trainable()) <= 1e-8
    for k in cs:
        assert _rel(bvp.costates[k], cs[k]) <= 1e-8, k


@pytest.mark.parametrize("case", [dict(tableau="rk4", time_steps="learned"),
                                  dict(tableau="kutta3", controls="per-stage", loss="squared", mean=True),
                                  dict(family="net", K=10)], ids=_ids)
def test_kclass_second_order_adjoint_equals_casadi_hessian(case):
    from ocdl.engine.casadi.condensed import ReducedHessian
    from ocdl.engine.casadi.nlp import NetworkNLP

    prob = kproblem(**case)
    tr, _, K, d, p0 = _setup(prob)
    nlp = NetworkNLP(prob, lift(tr.X, d).T.copy(), tr.c, p0, "reduced")
    theta = nlp.layout.pack(p0) + 0.3 * np.random.default_rng(2).standard_normal(nlp.layout.size)
    if "h" in nlp.layout.keys:
        sl = nlp.layout.slices["h"]
        theta[sl] = np.abs(theta[sl]) + 0.05
    H_ad = np.array(ca.Function("H", [nlp.theta], [ca.hessian(nlp.f, nlp.theta)[0]])(theta))
    f, g = ca.Function("fg", [nlp.theta], [nlp.f, ca.gradient(nlp.f, nlp.theta)])(theta)
    rh = ReducedHessian(nlp)
    E, gs = rh.objective_and_gradient(theta)
    assert abs(E - float(f)) <= 1e-14 * abs(float(f))
    assert _rel(gs, np.array(g).reshape(-1)) <= 1e-12
    assert _rel(rh.hessian(theta), H_ad) <= 1e-12
    # the classifier block is there: the Hessian couples W, μ of different classes (softmax)
    W = nlp.layout.slices["W"]
    assert np.count_nonzero(H_ad[W, W]) > 0


@pytest.mark.slow
def test_kclass_jit_gives_the_same_solve():
    from ocdl.engine.casadi.network import jit_available

    if not jit_available():
        pytest.skip("no C compiler")
    prob = kproblem(tableau="rk4")
    tr, te, K, d, p0 = _setup(prob)
    r0 = _solve(prob, p0, tr, te, formulation="reduced", jit=False)
    r1 = _solve(prob, p0, tr, te, formulation="reduced", jit=True)
    assert r1.metrics["jit"] and r0.success and r1.success
    assert max(_rel(r1.params[k], r0.params[k]) for k in prob.trainable()) <= 1e-8


def test_kclass_targets_one_hot_and_labels_refused():
    from ocdl.engine.casadi.network import CasadiNetwork

    prob = kproblem()
    net = CasadiNetwork(prob, 5, 3)
    T = net.targets(np.array([0.0, 2.0, 1.0]))
    assert np.array_equal(T, np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=float))
    for bad in ([0.0, 3.0], [0.0, 1.5], [-1.0, 0.0]):
        with pytest.raises(OcdlError, match=r"label .* is not a class number 0 … 2"):
            net.targets(np.array(bad))
    two = CasadiNetwork(prob, 5, 2)
    assert np.array_equal(two.targets([0.0, 1.0, 1.0]), np.array([[0.0, 1.0, 1.0]]))


# ---------------------------------------------------------------- commands on a K-class problem file
def _problem_file(folder, tableau="rk4", extra=""):
    X, c = _arrays(3)
    np.savetxt(folder / "train.csv", np.column_stack([X, c]), delimiter=",", header="x1,x2,x3,x4,c", comments="")
    path = folder / "k3.toml"
    path.write_text(f"""
[data]
name = "file"
path = "train.csv"

[network]
family = "rk"
tableau = "{tableau}"
layers = 3
h = 0.1
width = 5

[objective]
loss = "cross-entropy"
tikhonov = {{ K = 1e-2, beta = 1e-3, W = 1e-3, mu = 1e-3 }}
smooth = 1e-2
{extra}
""")
    return path


@pytest.mark.parametrize("tableau", ["rk4", "midpoint"])
def test_kclass_verify_commutation_on_a_problem_file(tableau, tmp_path, capsys):
    from ocdl.cli import main

    path = _problem_file(tmp_path, tableau)
    assert main(["verify", "commutation", "--problem", str(path), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["problem"]["classes"] == 3 and res["problem"]["n"] == 30
    meth = res["methods"]
    assert meth["dto_casadi"]["rel_diff"] <= 1e-12
    if tableau == "rk4":
        assert meth["otd_partner"]["rel_diff"] <= 1e-12
        assert res["invariant_variation"]["partner"] <= 1e-12
    else:  # b_1 = 0: no partner; the unscaled discrete adjoint instead
        assert meth["otd_partner"]["rel_diff"] is None
        assert meth["discrete_adjoint_unscaled"]["rel_diff"] <= 1e-12
        assert res["invariant_variation"]["unscaled"] <= 1e-12
    # the continuous adjoint is a different (h-dependent) gradient: visibly not equal
    assert meth["otd_continuous"]["rel_diff"] > 1e-8
    assert main(["verify", "commutation", "--problem", str(path)]) == 0
    assert "(n = 30, 3 classes)" in capsys.readouterr().out


def test_kclass_compare_and_stability_network(tmp_path, capsys):
    from ocdl import catalogue, training
    from ocdl.cli import main

    path = _problem_file(tmp_path, "rk4", extra='\n[solver]\nbackend = "casadi"\nname = "ipopt"\n'
                                              'options = { tol = 1e-10 }\n')
    prob = catalogue.load(path)
    ip, bvp, red = tmp_path / "ip", tmp_path / "bvp", tmp_path / "red"
    r_ip, m_ip = training.train(prob, out=ip, quiet=True, figures=False)
    assert r_ip.success and m_ip["kkt_residual"] <= 1e-8
    assert np.load(ip / "params.npz")["W"].shape == (3, 5)
    assert 0 < m_ip["train_accuracy"] <= 1
    r_b, _ = training.train(prob.replace(solver__name="bvp", solver__options={"tol": 1e-11}), out=bvp, init=ip,
                            quiet=True, figures=False)
    assert r_b.success
    r_r, _ = training.train(prob.replace(solver__options={"tol": 1e-10, "formulation": "reduced"}), out=red, init=ip,
                            quiet=True, figures=False)
    assert r_r.success
    capsys.readouterr()
    assert main(["compare", str(ip), str(bvp), "--json", "--tol", "1e-8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["params"]) == {"K", "beta", "W", "mu", "h"} and set(out["costates"]) == {"p", "P"}
    assert out["max_rel"] <= 1e-8 and out["objective"]["objective"]["rel"] <= 1e-12
    assert main(["compare", str(ip), str(red), "--json", "--tol", "1e-8"]) == 0
    capsys.readouterr()
    assert main(["stability", "network", str(ip), "--json", "--pairs", "200"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["width"] == 5 and st["layers"] == 3 and st["points"] == 30
    assert st["lipschitz_local"] > 0 and st["lipschitz_pairs"] > 0
    assert st["a_priori_bound"] >= st["lipschitz_local"]


# ---------------------------------------------------------------- full-size problems: the CasADi engine refuses
def _wide(width, layers=20, form="reduced", m=200, K=10, dim=64):
    X, c = _arrays(K, m=m, dim=dim)
    return Problem.from_arrays(X, c, network={"family": "resnet", "layers": layers, "width": width},
                               solver={"backend": "casadi", "name": "ipopt", "options": {"formulation": form}})


@pytest.mark.parametrize("form", ["reduced", "full"])
def test_kclass_casadi_refuses_a_full_size_problem_naming_the_dense_hessian(form, monkeypatch, tmp_path):
    from ocdl import api
    from ocdl.engine import base

    monkeypatch.setenv("OCDL_MEMORY_LIMIT", "8G")
    cas = base.get("casadi")
    prob = _wide(64, form=form)  # digits-sized: d = 64, N = 20, K = 10
    n = 20 * (64 * 64 + 64) + 10 * 64 + 10  # the trained K, β, W, μ (h is fixed)
    need, what = cas.memory_estimate(prob, 64, 200)
    assert need >= 8 * n * n  # at least the dense Hessian
    with pytest.raises(OcdlError) as e:
        api.prepare(prob)
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("casadi engine", f"n_θ = {n} parameters", "dense Hessian", "n_θ² × 8 bytes = 52.4 GB",
                 "allowed by OCDL_MEMORY_LIMIT", "--backend torch", "network.lift", "network.width = "):
        assert part in msg, part
    w = int(msg.split("network.width = ")[1].split()[0])
    assert 2 <= w < 64 and cas.memory_estimate(_wide(w, form="reduced"), w, 200)[0] <= 8 * 2**30
    assert cas.memory_estimate(_wide(w + 1, form="reduced"), w + 1, 200)[0] > 8 * 2**30
    # the advice holds: the same problem at that width, and the PyTorch engine at full width, pass
    cas.check_memory(_wide(w, form="reduced"), w, 200)
    base.get("torch").check_memory(prob, 64, 200)
    # a small lifted instance (issue 16: width 8–16, N = 5) is not refused
    cas.check_memory(_wide(12, layers=5, form=form), 12, 200)


def test_kclass_train_refuses_before_writing(monkeypatch, tmp_path, capsys):
    from ocdl.cli import main

    X, c = _arrays(10, m=200, dim=64)
    np.savetxt(tmp_path / "d.csv", np.column_stack([X, c]), delimiter=",")
    monkeypatch.setenv("OCDL_MEMORY_LIMIT", "8G")
    out = tmp_path / "run"
    rc = main(["train", "--data", str(tmp_path / "d.csv"), "--net", "resnet", "--layers", "20",
               "--backend", "casadi", "--formulation", "reduced", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "dense Hessian" in err and "--backend torch" in err and err.count("\n") == 1
    assert not out.exists()
