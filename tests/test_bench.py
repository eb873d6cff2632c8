"""Benchmarks print figures; here only that they run and report every figure (no timing asserts)."""

import json

import pytest

from ocdl.cli import main


def test_bench_gradient_reports(capsys):
    rc = main(["bench", "gradient", "--n", "50", "--layers", "3", "--repeats", "2", "--train-iterations", "3", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    g = out["gradient"]
    for k in ("forward_s", "autograd_s", "autograd_torch_s", "adjoint_s", "adjoint_over_forward", "adjoint_over_autograd",
              "autograd_saved_bytes", "autograd_torch_saved_bytes", "adjoint_states_bytes", "autograd_torch_peak_bytes"):
        assert g[k] > 0
    # the adjoint is compared with the faster of the two autograd variants
    assert g["adjoint_over_autograd"] == g["adjoint_s"] / min(g["autograd_s"], g["autograd_torch_s"])
    # both autograd variants keep the same tensors (the kernel Function saves its output, as torch.tanh)
    assert g["autograd_torch_saved_bytes"] == g["autograd_saved_bytes"]
    # the adjoint keeps the N+1 layer states only: (N+1)·d·m float64 values
    assert g["adjoint_states_bytes"] == 4 * 2 * 50 * 8
    # peak memory during a gradient: at least what is kept between the sweeps, and the forward
    # sweep at least its states' worth of one layer
    assert g["autograd_peak_bytes"] >= g["autograd_saved_bytes"]
    assert g["adjoint_peak_bytes"] >= g["adjoint_states_bytes"]
    assert g["forward_peak_bytes"] >= 2 * 50 * 8
    for r in out["memory_scaling"]:
        assert r["autograd_peak_bytes"] > 0 and r["adjoint_peak_bytes"] > 0
    assert [r["N"] for r in out["memory_scaling"]] == [3, 6, 12]
    assert out["training"]["iterations"] == 3


def _scaling_args(protocol):
    import argparse

    return argparse.Namespace(n=1000, layers=15, h=0.1, controls="per-layer", data="spiral", tol=1e-10,
                              max_iter=100, tableaux="euler,rk4", protocol=protocol)


def test_scaling_refine_protocol_discretises_one_continuous_problem():
    import numpy as np

    from ocdl.benchmarks.solve import constant_in_time, problem, scaling_problem
    from ocdl.problem import init_params

    args = _scaling_args("refine")
    ref = problem(1000, 15, 0.1, "euler", max_iter=100)
    # at (m0, N0) it is the benchmark problem
    at_ref, _ = scaling_problem(args, "N", 15, "full", 0)
    assert at_ref == ref
    assert scaling_problem(args, "m", 1000, "full", 0)[0] == ref
    # in N: T = N h fixed, K and β weights ∝ 1/N (a Riemann sum of ∫‖u‖²), others and smoothness fixed
    p60, const = scaling_problem(args, "N", 60, "reduced", 2)
    assert const and p60.N == 60 and abs(p60.N * p60.h - 1.5) < 1e-14 and p60.init.seed == 2
    tik, tik0 = p60.tikhonov(), ref.tikhonov()
    assert tik["K"] == tik["beta"] == tik0["K"] / 4 and tik["W"] == tik0["W"] and tik["h"] == tik0["h"]
    assert p60.objective.smooth == ref.objective.smooth
    # in m: every weight ∝ m (the loss is a sum over samples)
    p4k, const = scaling_problem(args, "m", 4000, "reduced", 0)
    assert not const and p4k.data.n == 4000 and p4k.N == 15 and p4k.h == 0.1
    assert all(v == 4 * tik0[k] for k, v in p4k.tikhonov().items()) and p4k.objective.smooth == 4e-3
    # the constant-in-time start: layer 0's controls in every layer, the classifier untouched
    p0 = init_params(p60, 2)
    c = constant_in_time(p0)
    assert np.array_equal(c["K"], np.repeat(p0["K"][:1], 60, axis=0)) and np.array_equal(c["W"], p0["W"])
    assert np.array_equal(c["beta"], np.repeat(p0["beta"][:1], 60, axis=0))


def test_scaling_literal_protocol_keeps_the_benchmark_settings():
    from ocdl.benchmarks.solve import problem, scaling_problem

    args = _scaling_args("literal")
    p, const = scaling_problem(args, "N", 80, "reduced", 0)
    assert not const and p == problem(1000, 80, 0.1, "euler", formulation="reduced", max_iter=100)
    p, const = scaling_problem(args, "m", 250, "reduced", 0)
    assert not const and p == problem(250, 15, 0.1, "euler", formulation="reduced", max_iter=100)


def test_bench_solve_reports_the_full_space_from_the_reduced_start(capsys):
    rc = main(["bench", "solve", "--n", "30", "--layers", "2", "--tableaux", "euler", "--no-torch", "--no-bvp", "--json"])
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rc == 0
    by = {r["formulation"]: r for r in rows}
    assert set(by) == {"full", "reduced", "full-from-reduced", "full-sqp", "reduced-sqp"}
    fr, red = by["full-from-reduced"], by["reduced"]
    assert all(r["status"] == "Solve_Succeeded" and r["kkt"] <= 1e-10 for r in rows)
    # both phases counted: the reduced solve's iterations and time are part of the row
    assert fr["iterations"] >= red["iterations"] and fr["solve_s"] > 0
    assert abs(fr["objective"] - red["objective"]) <= 1e-12 * abs(red["objective"])


def test_bench_solve_sqp_rows(capsys):
    """The SQP rows are --solver sqp on the full-space and reduced NLP, each to a KKT point (the
    problem is not convex: the rows may reach different local minimisers)."""
    rc = main(["bench", "solve", "--n", "30", "--layers", "2", "--tableaux", "rk4", "--no-torch", "--no-bvp", "--json",
               "--formulations", "full-sqp,reduced-sqp"])
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rc == 0 and [r["formulation"] for r in rows] == ["full-sqp", "reduced-sqp"]
    assert all(r["status"] == "Solve_Succeeded" and r["kkt"] <= 1e-10 and r["grad_norm"] <= 1e-9 for r in rows)


def test_bench_solve_rejects_an_unknown_row(capsys):
    rc = main(["bench", "solve", "--n", "30", "--layers", "2", "--formulations", "full,shooting", "--no-torch"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "shooting" in err[0] and err[0].startswith("ocdl: error:")


def test_bench_solve_newton_and_scipy_rows(capsys):
    """The Newton–CG rows (torch; native where numba is installed) and the scipy trust-ncg rows on
    every installed H·v source, each to the tolerance, and their distance to the nearest CasADi
    solution (a figure: the problem is not convex, and here Newton and the SQP part ways)."""
    from ocdl.benchmarks.solve import hv_sources, native_available

    rc = main(["bench", "solve", "--n", "30", "--layers", "2", "--tableaux", "rk4", "--no-bvp", "--json",
               "--formulations", "reduced-sqp", "--scipy", "--torch-iterations", "5"])
    rows = json.loads(capsys.readouterr().out)["rows"]
    engines = [r["engine"] for r in rows]
    want = ["torch-newton"] + (["native-newton"] if native_available() else [])
    want += ["scipy-trust-ncg" + ("" if hv == "torch" else f"-{hv}") for hv in hv_sources()]
    assert rc == 0 and engines == ["casadi"] + want + ["torch-lbfgs"]
    for r in rows[1:-1]:
        assert r["grad_norm"] <= 1e-10 * max(1.0, abs(r["objective"])) and r["hv_products"] > 0, r["engine"]
        assert r["nearest_row"] == "reduced-sqp" and 0.0 <= r["nearest_diff"] < float("inf"), r["engine"]


def test_bench_solve_hv_sources_are_checked(capsys):
    rc = main(["bench", "solve", "--n", "30", "--layers", "2", "--formulations", "reduced", "--no-bvp", "--scipy",
               "--hv", "torch,tensorflow"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "'tensorflow' is not one of torch, native, jax" in err[0]


def test_bench_hv_reports_the_cost_of_a_product_against_a_gradient(capsys):
    from ocdl.benchmarks.solve import native_available

    rc = main(["bench", "hv", "--n", "30", "--layers", "2", "--repeats", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["problem"]["n_theta"] == 2 * 6 + 3
    assert [r["engine"] for r in out["rows"]] == ["torch"] + (["native"] if native_available() else [])
    for r in out["rows"]:
        assert r["gradient_s"] > 0 and r["hv_s"] > 0 and r["hv_over_gradient"] == r["hv_s"] / r["gradient_s"]
    if native_available():
        assert out["rel_diff"] <= 1e-12
    rc = main(["bench", "hv", "--engines", "jax"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "'jax' is not one of torch, native" in err[0]


def test_bench_tanh_reports_every_kernel_and_the_choice(capsys):
    from ocdl import tanh

    rc = main(["bench", "tanh", "--sizes", "100,1000", "--rounds", "2", "--n", "30", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["sizes"] == [100, 1000]
    assert set(out["seconds_per_value"]) == set(tanh.available()) == set(out["gradient_s"])
    assert all(len(v) == 2 and min(v) > 0 for v in out["seconds_per_value"].values())
    assert out["fastest_now"] in out["seconds_per_value"] and out["choice"] == tanh.kernel()
    assert out["cache_file"] == str(tanh.cache_file())
    rc = main(["bench", "tanh", "--dtype", "float32", "--sizes", "100", "--rounds", "1", "--n", "0", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and set(out["seconds_per_value"]) == {"numpy", "torch"} and out["gradient_s"] == {}
    with pytest.raises(SystemExit) as e:
        main(["bench", "tanh", "--sizes", "0,5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "expected comma-separated positive integers" in err[0]
