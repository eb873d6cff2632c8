"""The public Python API: ocdl.Problem.from_arrays, ocdl.solve, ocdl.evaluate, ocdl.states,
ocdl.engines; one result type for every engine; the engine seam and the network as choices."""

import subprocess
import sys

import numpy as np
import pytest

import ocdl
from ocdl import data as data_mod, rundir, training
from ocdl.cli import main
from ocdl.engine import base


@pytest.fixture(scope="module")
def spiral():
    d = data_mod.generate("spiral", 40, rng=np.random.default_rng(3))
    return d.X, d.c


@pytest.fixture(scope="module")
def prob(spiral):
    X, c = spiral
    return ocdl.Problem.from_arrays(X, c, network={"tableau": "heun", "layers": 4, "h": 0.1},
                                    objective={"tikhonov": 1e-3})


def test_import_is_light_and_lists_its_names():
    code = "import sys, ocdl; ocdl.engines(); ocdl.Problem; print('torch' in sys.modules, 'casadi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    for name in ("Problem", "Tableau", "solve", "evaluate", "states", "engines", "Result", "Evaluation", "Engine",
                 "OcdlError", "load_problem", "load_run"):
        assert name in ocdl.__all__ and getattr(ocdl, name).__doc__, name


def test_engines_registry():
    assert ocdl.engines() == {"torch": ("gd-armijo", "gd-lipschitz", "lbfgs", "adam", "sgd", "newton"),
                              "casadi": ("ipopt", "sqp", "bvp"),
                              "native": ("gd-armijo", "gd-lipschitz", "lbfgs", "adam", "sgd", "newton")}
    for name in base.names():
        eng = base.get(name)
        assert isinstance(eng, base.Engine) and eng.default_solver in eng.solvers
        assert set(eng.options) == set(eng.solvers)
    with pytest.raises(ocdl.OcdlError, match="engine 'jax' is not one of ") as err:
        base.get("jax")
    # the order is that of registration (the native engine registers early where it is imported first)
    assert sorted(str(err.value).split(" one of ")[1].split(", ")) == ["casadi", "native", "torch"]


def test_one_result_type_for_both_engines(prob):
    r1 = ocdl.solve(prob, engine="torch", solver="gd-armijo", iterations=30)
    r2 = ocdl.solve(prob, engine="casadi", solver="ipopt", tol=1e-10, init=r1.params)
    for r, engine in ((r1, "torch"), (r2, "casadi")):
        assert type(r) is ocdl.Result and r.engine == engine and r.evaluation.engine == engine
        assert set(r.params) == {"K", "beta", "W", "mu", "h"}
        assert r.objective == r.evaluation.objective and r.gradient_norm == r.evaluation.gradient_norm
        assert r.status == "ok" and r.wall_time_s > 0 and r.history["objective"]
    assert r1.iterations == 30 and r1.kkt_residual is None and r1.costates is None
    assert r2.kkt_residual <= 1e-10 and r2.costates["p"].shape == (5, 40, 2) and r2.costates["P"].shape == (4, 2, 40, 2)
    assert r2.objective < r1.objective
    # the two engines evaluate the same problem to round-off
    ev_t = ocdl.evaluate(prob, r2.params, engine="torch")
    ev_c = ocdl.evaluate(prob, r2.params, engine="casadi")
    assert abs(ev_t.objective - ev_c.objective) <= 1e-13 * abs(ev_c.objective)
    assert abs(ev_t.test_objective - ev_c.test_objective) <= 1e-13 * abs(ev_c.test_objective)
    assert ev_t.train_accuracy == ev_c.train_accuracy and ev_t.test_accuracy == ev_c.test_accuracy
    np.testing.assert_allclose(ev_t.states, ev_c.states, rtol=0, atol=1e-14)
    for k in ev_t.gradient:
        np.testing.assert_allclose(ev_t.gradient[k], ev_c.gradient[k], rtol=0, atol=1e-12)
    Yt, Yc = ocdl.states(prob, r2.params, prob.data.train.X, engine="torch"), ocdl.states(prob, r2.params,
                                                                                            prob.data.train.X, engine="casadi")
    assert Yt.shape == (5, 40, 2)
    np.testing.assert_allclose(Yt, Yc, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(Yt[-1].T, ev_t.states)


def test_solve_equals_the_command_line(prob, tmp_path):
    """ocdl.solve and `ocdl train` run the same code: the same iterates, bit for bit."""
    r = ocdl.solve(prob, iterations=15)
    res, metrics = training.train(prob.replace(solver__iterations=15), out=tmp_path / "run", quiet=True, figures=False)
    for k in r.params:
        np.testing.assert_array_equal(r.params[k], res.params[k])
    assert metrics["objective"] == r.objective and metrics["evaluator"] == "torch"
    # an array problem's run directory holds its data and reruns from anywhere
    assert (tmp_path / "run" / "data.npz").is_file()
    moved = tmp_path / "moved"
    (tmp_path / "run").rename(moved)
    p2, params, _ = rundir.load(moved)
    again = ocdl.solve(p2, iterations=15)
    for k in r.params:
        np.testing.assert_array_equal(r.params[k], again.params[k])


def test_with_solver_semantics(prob):
    from ocdl.api import with_solver

    p = prob.replace(solver__options={"alpha0": 0.1})
    assert with_solver(p, iterations=5).solver.options == {"alpha0": 0.1}            # same solver: kept
    q = with_solver(p, engine="casadi", options={"tol": 1e-8})
    assert q.solver.backend == "casadi" and q.solver.name == "ipopt" and q.solver.options == {"tol": 1e-8}
    assert with_solver(p, solver="adam").solver.options == {}                         # another solver: its defaults


@pytest.mark.parametrize("call, message", [
    (lambda X, c: ocdl.Problem.from_arrays(X[:, :1].ravel(), c), "features must be a 2-D array"),
    (lambda X, c: ocdl.Problem.from_arrays(np.where(X > 0.5, np.nan, X), c), "features contain NaN or inf"),
    (lambda X, c: ocdl.Problem.from_arrays(X, c[:-1]), "40 samples but labels of shape (39,)"),
    (lambda X, c: ocdl.Problem.from_arrays(X, c + 0.5), "labels must be the class numbers 0, 1, …, K−1"),
    (lambda X, c: ocdl.Problem.from_arrays(X, c + 1), "no sample of class 0"),
    (lambda X, c: ocdl.Problem.from_arrays(X, c - 1), "labels must be the class numbers"),
    (lambda X, c: ocdl.Problem.from_arrays(X, c, classifier={"classes": 5}), "K = 5 is larger than the 2 classes"),
    (lambda X, c: ocdl.Problem.from_arrays(X, np.ones(40)), "one class only"),
    (lambda X, c: ocdl.Problem.from_arrays(X[:1], c[:1]), "need at least 2 samples"),
    (lambda X, c: ocdl.Problem.from_arrays(X, c, X_test=X), "give both or neither"),
    (lambda X, c: ocdl.Problem.from_arrays(X, c, X_test=X[:, :1], c_test=c), "has 1 features but X has 2"),
    (lambda X, c: ocdl.Problem.from_arrays(X.astype(str), c), "must be numeric"),
    (lambda X, c: ocdl.Problem.from_arrays(X, c, network={"layers": "8"}), "network.layers: expected int"),
    (lambda X, c: ocdl.Problem.from_arrays(X, c, network={"field": "curl"}), "network.field: 'curl' is not one of"),
    (lambda X, c: ocdl.Problem.from_arrays(X, c, network={"family": "monotone", "field": "sigma"}), "has field 'monotone'"),
    (lambda X, c: ocdl.Problem.from_arrays(X, c, network={"layer": "plain", "time_steps": "learned"}),
     "plain layers have no time steps"),
    (lambda X, c: ocdl.Problem.from_arrays(X, c, network={"tableau": {"A": [[0]], "b": [1, 2]}}), "len(b) = 2"),
    (lambda X, c: ocdl.Problem.from_arrays(X, c, solver={"backend": "jax"}), "engine 'jax' is not one of"),
    (lambda X, c: ocdl.solve(ocdl.Problem.from_arrays(X, c), engine="torch", solver="adam", lr=float("nan")),
     "solver.options.lr: must be a finite number > 0"),
    (lambda X, c: ocdl.solve(ocdl.Problem.from_arrays(X, c), engine="casadi", tolerance=1e-3),
     "'tolerance' unknown for casadi solver 'ipopt'"),
    (lambda X, c: ocdl.solve(ocdl.Problem.from_arrays(X, c), engine="torch", tol=1e-3), "'tol' unknown for torch"),
    (lambda X, c: ocdl.solve(ocdl.Problem.from_arrays(X, c), init={"K": np.zeros(3)}), "initial parameters: K has shape (3,), expected (15, 2, 2)"),
    (lambda X, c: ocdl.evaluate(ocdl.Problem.from_arrays(X, c), {"K": 1}), "parameters: K has shape (), expected (15, 2, 2)"),
    (lambda X, c: ocdl.solve("spiral"), "expected an ocdl.Problem"),
])
def test_bad_input_is_one_line(spiral, call, message):
    X, c = spiral
    with pytest.raises(ocdl.OcdlError) as e:
        call(X, c)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_presets_are_the_orthogonal_choices(spiral):
    X, c = spiral
    mk = lambda **net: ocdl.Problem.from_arrays(X, c, network=net)  # noqa: E731
    table = {"net": ("sigma", "plain", "fixed"), "resnet": ("sigma", "rk", "fixed"), "rk": ("sigma", "rk", "fixed"),
             "odenet": ("sigma", "rk", "learned"), "odenet-simplex": ("sigma", "rk", "simplex"),
             "monotone": ("monotone", "rk", "fixed")}
    for fam, (field, layer, ts) in table.items():
        p = mk(family=fam)
        assert (p.field, p.layer, p.time_steps) == (field, layer, ts), fam
    # the same network by its preset and by its choices gives the same numbers
    a = mk(family="monotone", tableau="kutta3", layers=3)
    b = mk(family="rk", field="monotone", tableau="kutta3", layers=3)
    ra, rb = ocdl.solve(a, iterations=5), ocdl.solve(b, iterations=5)
    for k in ra.params:
        np.testing.assert_array_equal(ra.params[k], rb.params[k])
    n1 = ocdl.solve(mk(family="net", layers=3), iterations=5)
    n2 = ocdl.solve(mk(family="rk", layer="plain", layers=3, h=1 / 3), iterations=5)
    for k in n1.params:
        np.testing.assert_array_equal(n1.params[k], n2.params[k])


def test_user_tableau_is_written_inline_and_reruns_without_its_file(tmp_path, capsys):
    f = tmp_path / "mine.toml"
    f.write_text('name = "mine"\nA = [["0", "0"], ["2/3", "0"]]\nb = ["1/4", "3/4"]\n')
    out = tmp_path / "run"
    args = ["train", "--data", "spiral", "--n", "30", "--layers", "3", "--tableau-file", str(f),
            "--iterations", "8", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    text = (out / "config.toml").read_text()
    assert str(f) not in text and "2/3" in text
    f.unlink()
    p, params, _ = rundir.load(out)
    assert p.tableau == ocdl.tableau.get("ralston2") and p.tableau.name == "mine"
    again = ocdl.solve(p)
    for k in params:
        np.testing.assert_array_equal(params[k], again.params[k])
    # and the Problem round-trips through its plain data
    assert ocdl.problem.from_dict(p.to_dict()).tableau == p.tableau


def test_evaluate_with_another_engine_in_the_run_directory(tmp_path):
    args = ["train", "--data", "spiral", "--n", "30", "--layers", "3", "--tableau", "heun", "--backend", "casadi",
            "--reg-tikhonov", "1e-3", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--evaluate-with", "torch", "--out", str(tmp_path / "b")]) == 0
    _, _, ma = rundir.load(tmp_path / "a")
    _, _, mb = rundir.load(tmp_path / "b")
    assert ma["evaluator"] == "casadi" and mb["evaluator"] == "torch"
    assert abs(ma["objective"] - mb["objective"]) <= 1e-13 * abs(mb["objective"])
    assert main([*args, "--evaluate-with", "jax", "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c").exists()


def test_command_line_parser_imports_neither_torch_nor_casadi():
    code = ("import sys; from ocdl.cli import build_parser; build_parser(); "
            "print('torch' in sys.modules, 'casadi' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("call, message", [
    (lambda p, r, X: ocdl.evaluate(p, None), "expected a dict of arrays"),
    (lambda p, r, X: ocdl.evaluate(p, {**r.params, "K": "abc"}), "K is not an array of numbers"),
    (lambda p, r, X: ocdl.solve(p, init=[1]), "initial parameters: expected a dict of arrays"),
    (lambda p, r, X: ocdl.solve(p, iterations="5"), "iterations: expected an integer"),
    (lambda p, r, X: ocdl.solve(p, iterations=1, log=5), "log: expected a function"),
    (lambda p, r, X: ocdl.states(p, r.params, 3.0), "features must be a 2-D array"),
    (lambda p, r, X: ocdl.states(p, r.params, [[1, 2], [3]]), "X: not arrays"),
    (lambda p, r, X: ocdl.states(p, r.params, np.full((2, 2), np.nan)), "features contain NaN or inf"),
    (lambda p, r, X: ocdl.states(p, "x", X), "expected a dict of arrays"),
    (lambda p, r, X: ocdl.Problem.from_arrays(X, np.ones(len(X)) - (X[:, 0] > 0), network="rk"),
     "network: expected a table"),
    (lambda p, r, X: ocdl.Problem.from_arrays(X, np.ones(len(X)) - (X[:, 0] > 0), objective="x"),
     "objective: expected a dict"),
])
def test_wrong_types_through_the_api_are_one_line(prob, call, message):
    r = ocdl.solve(prob, iterations=1)
    with pytest.raises(ocdl.OcdlError) as e:
        call(prob, r, prob.data.train.X)
    assert message in str(e.value) and "\n" not in str(e.value)
