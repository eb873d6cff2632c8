"""``ocdl train --backend casadi`` end to end (ipopt, bvp --init, reduced) and ``ocdl compare``."""

import json

import numpy as np
import pytest

from ocdl.cli import main

COMMON = ["--data", "spiral", "--n", "40", "--net", "rk", "--tableau", "heun", "--layers", "3", "--h", "0.1",
          "--reg-tikhonov", "1e-3", "--reg-smooth", "1e-3", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    ip, bvp, torch_run = root / "ip", root / "bvp", root / "torch"
    assert main(["train", *COMMON, "--backend", "casadi", "--solver", "ipopt", "--tol", "1e-10", "--out", str(ip)]) == 0
    assert main(["train", *COMMON, "--backend", "casadi", "--solver", "bvp", "--init", str(ip), "--out", str(bvp)]) == 0
    assert main(["train", *COMMON, "--solver", "gd-armijo", "--iterations", "5", "--out", str(torch_run)]) == 0
    return ip, bvp, torch_run


def test_run_directory_of_a_casadi_solve(runs):
    ip, _, _ = runs
    m = json.loads((ip / "metrics.json").read_text())
    for key in ("solver_status", "kkt_residual", "constraint_violation", "iterations", "build_time_s",
                "solve_time_s", "wall_time_s"):
        assert key in m, key
    assert m["solver_status"] == "Solve_Succeeded" and m["kkt_residual"] <= 1e-8
    with np.load(ip / "costates.npz") as z:
        assert z["p"].shape == (4, 40, 2) and z["P"].shape == (3, 2, 40, 2)


def test_compare_ipopt_and_bvp(runs, capsys):
    ip, bvp, _ = runs
    assert main(["compare", str(ip), str(bvp), "--json", "--tol", "1e-9"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["params"]) == {"K", "beta", "W", "mu", "h"}
    assert set(out["costates"]) == {"p", "P"}
    assert out["max_rel"] <= 1e-9
    assert out["objective"]["objective"]["rel"] <= 1e-12
    assert main(["compare", str(ip), str(bvp)]) == 0
    text = capsys.readouterr().out
    assert "parameters" in text and "costates" in text and "largest relative difference" in text


def test_compare_different_engines_fails_the_tolerance(runs, capsys):
    ip, _, torch_run = runs
    assert main(["compare", str(ip), str(torch_run), "--tol", "1e-6"]) == 1
    text = capsys.readouterr().out
    assert "(casadi)" in text and "(torch)" in text


def test_compare_bad_input(runs, tmp_path, capsys):
    ip, _, _ = runs
    assert main(["compare", str(ip), str(tmp_path / "missing")]) == 2
    assert "ocdl: error:" in capsys.readouterr().err
    other = tmp_path / "wide"
    assert main(["train", *COMMON, "--width", "3", "--backend", "casadi", "--solver", "ipopt", "--tol", "1e-6",
                 "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["compare", str(ip), str(other)]) == 2
    assert "not comparable" in capsys.readouterr().err


def test_failed_solve_exits_nonzero_with_run_directory(tmp_path, capsys):
    out = tmp_path / "fail"
    rc = main(["train", *COMMON[:-1], "--backend", "casadi", "--solver", "ipopt", "--tol", "1e-10",
               "--iterations", "2", "--out", str(out)])
    assert rc != 0
    cap = capsys.readouterr()
    assert "Maximum_Iterations_Exceeded" in cap.out + cap.err
    m = json.loads((out / "metrics.json").read_text())
    assert m["solver_status"] == "Maximum_Iterations_Exceeded" and m["status"] == "failed"


def test_bench_solve_smoke(capsys):
    assert main(["bench", "solve", "--n", "30", "--layers", "2", "--tableaux", "euler", "--no-torch", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["formulation"] for r in rows] == ["full", "reduced", "full-from-reduced", "full-sqp", "reduced-sqp", "bvp"]
    for r in rows[:5]:
        assert r["status"] == "Solve_Succeeded" and r["kkt"] <= 1e-8 and r["grad_norm"] <= 1e-7
        assert r["iterations"] > 0 and r["solve_s"] > 0 and r["build_s"] > 0
    bvp = rows[5]  # Newton from a 1e-3 perturbation of the full-space solution returns to it
    assert bvp["status"] == "converged" and bvp["iterations"] > 0 and bvp["kkt"] <= 1e-8
    assert bvp["controls_diff"] <= 1e-8 and abs(bvp["objective"] - rows[0]["objective"]) <= 1e-10
    assert main(["bench", "solve", "--scaling", "m", "--values", "20,40", "--layers", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (fit,) = out["fits"]
    assert fit["formulation"] == "reduced" and fit["values"] == [20, 40]
    assert isinstance(fit["exponent_s_per_iter"], float) and isinstance(fit["exponent_solve_s"], float)
