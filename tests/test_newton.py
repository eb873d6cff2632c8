"""The torch engine's trust-region Newton–CG (:mod:`ocdl.engine.torch.newton`): convergence to
‖∇E‖ ≤ 1e-10·max(1, |E|), the same minimiser as IPOPT on the reduced NLP from the same start,
simplex steps, Gauss–Newton products, the Steihaug exit on negative curvature, divergence on a
problem without a minimiser, and the option and CLI refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ocdl
from ocdl.cli import main
from ocdl.engine.torch.newton import steihaug
from tests.conftest import small_problem


def _diff(a, b, keys):
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in keys)


@pytest.mark.parametrize("kw", [{"tableau": "rk4", "width": 2},
                                {"tableau": "heun", "time_steps": "learned", "loss": "logistic", "mean": True},
                                {"family": "odenet-simplex", "tableau": "euler", "width": 2}])
def test_newton_reaches_1e_10_at_ipopts_minimiser(kw):
    """From the same start as IPOPT (reduced NLP); for simplex steps, where the two go to different
    local minimisers from the seeded start, from IPOPT's solution perturbed by 1e-3 (projected on
    the simplex), so that the face with h_j = 0 must be found again."""
    prob = small_problem(**kw)
    ip = ocdl.solve(prob, engine="casadi", solver="ipopt", formulation="reduced", tol=1e-12)
    assert ip.metrics["solver_status"] == "Solve_Succeeded"
    init = None
    if prob.time_steps == "simplex":
        from ocdl import simplex

        rng = np.random.default_rng(2)
        init = {k: np.array(v) + (1e-3 * rng.standard_normal(np.shape(v)) if k in prob.trainable() else 0.0)
                for k, v in ip.params.items()}
        init["h"] = simplex.project(init["h"], prob.T)
        assert (ip.params["h"] == 0).any()  # an active face to find
    lines = []
    r = ocdl.solve(prob, engine="torch", solver="newton", iterations=200, log=lines.append, init=init)
    assert r.metrics["solver_status"] == "ok", r.message
    assert r.metrics["stationarity"] <= 1e-10 * max(1.0, abs(r.objective))
    if prob.time_steps != "simplex":
        assert r.gradient_norm <= 1e-10 * max(1.0, abs(r.objective))
    else:  # on the simplex: Σ h = T, h ≥ 0
        h = r.params["h"]
        assert h.min() >= 0 and abs(h.sum() - prob.T) <= 1e-13
    assert any(line.startswith("it ") and "radius" in line and "cg" in line for line in lines)
    assert _diff(r.params, ip.params, prob.trainable()) <= 1e-8


def test_gauss_newton_products_converge_without_negative_curvature():
    prob = small_problem(tableau="rk4", width=2)
    r = ocdl.solve(prob, engine="torch", solver="newton", iterations=400, hessian="gauss-newton")
    assert r.metrics["hessian"] == "gauss-newton" and r.metrics["negative_curvature_steps"] == 0
    exact = ocdl.solve(prob, engine="torch", solver="newton", iterations=200)
    assert r.objective <= exact.objective * (1 + 1e-6) or r.metrics["iterations"] == 400


def test_steihaug_exits_on_negative_curvature_and_at_the_boundary():
    H = torch.diag(torch.tensor([2.0, -1.0], dtype=torch.float64))
    g = torch.tensor([1.0, 1.0], dtype=torch.float64)
    s, Hs, k, how = steihaug(lambda v: H @ v, g, 3.0, 1e-10, 10)
    assert how == "negative curvature" and abs(float(torch.linalg.vector_norm(s)) - 3.0) <= 1e-14
    assert torch.allclose(Hs, H @ s, rtol=0, atol=1e-14)
    H = torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64))
    s, _, _, how = steihaug(lambda v: H @ v, g, 0.1, 1e-10, 10)
    assert how == "boundary" and abs(float(torch.linalg.vector_norm(s)) - 0.1) <= 1e-15
    s, _, k, how = steihaug(lambda v: H @ v, g, 10.0, 1e-12, 10)
    assert how == "converged" and float((H @ s + g).abs().max()) <= 1e-12 and k <= 2


def test_negative_curvature_is_reported():
    """Far from a minimiser of the weakly regularised spiral the Hessian is indefinite: some trials
    take the Steihaug exit, counted in the metrics and said in a progress line."""
    prob = small_problem(tableau="rk4", n=60, reg={k: 1e-6 for k in ("K", "beta", "W", "mu", "h")}, smooth=0.0)
    lines = []
    r = ocdl.solve(prob, engine="torch", solver="newton", iterations=60, log=lines.append, tol=0.0)
    assert r.metrics["negative_curvature_steps"] >= 1
    assert sum(r.history["negative_curvature"]) == r.metrics["negative_curvature_steps"]
    assert any("negative curvature: Steihaug exit" in line for line in lines)


def _separable():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2))
    c = (X[:, 0] + 0.3 * X[:, 1] > 0).astype(int)
    X[:, 0] += np.where(c == 1, 0.5, -0.5)
    return X, c


@pytest.mark.parametrize("loss", ["logistic", "squared"])
def test_no_minimiser_is_reported_as_divergence(loss):
    X, c = _separable()
    prob = ocdl.Problem.from_arrays(X, c, network={"family": "rk", "tableau": "rk4", "layers": 3, "width": 2},
                                    objective={"loss": loss, "tikhonov": 0.0, "smooth": 0.0})
    r = ocdl.solve(prob, engine="torch", solver="newton", iterations=300)
    assert r.metrics["solver_status"] == "diverged"
    assert "no minimiser" in r.message and "\n" not in r.message
    # the same data with a regulariser has a minimiser, and Newton finds it
    reg = prob.replace(objective__tikhonov={k: 1e-3 for k in ("K", "beta", "W", "mu")})
    ok = ocdl.solve(reg, engine="torch", solver="newton", iterations=300)
    assert ok.metrics["solver_status"] == "ok" and ok.gradient_norm <= 1e-10 * max(1.0, abs(ok.objective))


@pytest.mark.parametrize("args,match", [
    (["--tol", "-1"], "solver.options.tol"),
    (["--lr", "0.1"], "'lr' unknown for torch solver 'newton'"),
])
def test_bad_options_one_line_nothing_written(args, match, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--n", "20", "--layers", "2", "--solver", "newton", *args, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("ocdl: error:") and match in err[0], err
    assert not out.exists()


def test_cli_run_records_gradient_norm_and_products(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--n", "40", "--layers", "3", "--width", "2", "--reg-K", "1e-2", "--solver", "newton",
                 "--iterations", "200", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["gradient_norm"] <= 1e-10 * max(1.0, abs(m["objective"]))
    assert m["hv_products"] >= m["cg_iterations"] >= 1


def test_cli_gauss_newton_products_and_a_casadi_value_refused(tmp_path, capsys):
    out = tmp_path / "gn"
    assert main(["train", "--n", "40", "--layers", "3", "--solver", "newton", "--hessian", "gauss-newton",
                 "--iterations", "20", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["hessian"] == "gauss-newton" and m["negative_curvature_steps"] == 0
    bad = tmp_path / "bad"
    assert main(["train", "--solver", "newton", "--hessian", "lbfgs", "--iterations", "2", "--out", str(bad)]) == 2
    assert "solver.options.hessian: is not one of exact, gauss-newton" in capsys.readouterr().err
    assert not bad.exists()
