"""solver.options.ipopt (extra IPOPT options of the CasADi engine) is checked against IPOPT's own
option list before anything is written: a misspelt name is one line with a "did you mean", a
value of the wrong type, out of range or not one of a string option's values is one line too
(issue 19). The list (ocdl/engine/casadi/ipopt_options.py) is IPOPT's own documentation, parsed;
the first test regenerates it from the installed IPOPT and compares."""

from __future__ import annotations

import math

import pytest

from ocdl.cli import main

ca = pytest.importorskip("casadi")
from ocdl.engine.casadi import ipopt, ipopt_options  # noqa: E402

PROBLEM = "problems/highacc/spiral-euler.toml"


def test_table_is_the_installed_ipopts():
    """The vendored table equals what the installed IPOPT documents (else: regenerate it with
    `python -m ocdl.engine.casadi.ipopt_options`)."""
    from importlib.metadata import version

    assert ipopt_options.CASADI_VERSION == version("casadi")
    live = ipopt_options.query()
    assert len(live) >= 250
    assert live == ipopt_options.OPTIONS


def test_parse_types_ranges_values():
    t = ipopt_options.OPTIONS
    assert t["tol"] == ("real", 0.0, True, None, False, None)
    assert t["max_iter"] == ("integer", 0.0, False, None, False, None)
    assert t["print_level"][:5] == ("integer", 0.0, False, 12.0, False)
    assert t["mu_strategy"][-1] == ("monotone", "adaptive")
    assert t["hessian_approximation"][-1] == ("exact", "limited-memory")
    assert t["output_file"] == ("string", None, False, None, False, None)  # any file name


def test_what_ocdl_sets_itself_passes():
    opts = ipopt.options(1e-10, 3000, "lbfgs")["ipopt"]
    assert ipopt_options.check(opts) is None


@pytest.mark.parametrize("opts, words", [
    ({"mu_strategi": "adaptive"}, "'mu_strategi' is not an IPOPT option (did you mean 'mu_strategy'?)"),
    ({"tol_x": 1e-8}, "did you mean 'tol'?"),
    ({"mu_strategy": "adaptiv"}, "expected one of monotone, adaptive (did you mean 'adaptive'?)"),
    ({"max_iter": 1.5}, "'max_iter' takes an integer"),
    ({"max_iter": True}, "'max_iter' takes an integer"),
    ({"tol": "small"}, "'tol' takes a number"),
    ({"tol": -1}, "'tol' = -1: expected > 0"),
    ({"tol": 0.0}, "'tol' = 0.0: expected > 0"),
    ({"tol": math.nan}, "'tol' = nan"),
    ({"print_level": 13}, "'print_level' = 13: expected ≤ 12"),
    ({"bound_frac": 0.6}, "'bound_frac' = 0.6: expected ≤ 0.5"),
    ({"honor_original_bounds": 1}, "'honor_original_bounds' takes a string (yes, no)"),
])
def test_refused(opts, words):
    why = ipopt_options.check(opts)
    assert why is not None and words in why, why


@pytest.mark.parametrize("opts", [{"tol": 1}, {"max_iter": 5.0}, {"mu_strategy": "ADAPTIVE"},
                                  {"output_file": "x.txt"}, {"print_level": 12}, {"sb": "yes"},
                                  {"linear_solver": "mumps", "bound_frac": 0.5}])
def test_accepted(opts):
    assert ipopt_options.check(opts) is None


@pytest.mark.parametrize("setting, words", [
    ('solver.options.ipopt.mu_strategi="adaptive"', "did you mean 'mu_strategy'?"),
    ("solver.options.ipopt.tol=-1", "'tol' = -1: expected > 0"),
    ('solver.options.ipopt.hessian_approximation="lbfgs"', "expected one of exact, limited-memory"),
])
def test_cli_one_line_nothing_written(tmp_path, capsys, setting, words):
    out = tmp_path / "run"
    assert main(["run", PROBLEM, "--quick", "--out", str(out), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ocdl: error: solver.options.ipopt: ") and err.count("\n") == 1 and words in err, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_valid_option_reaches_ipopt(tmp_path, capsys):
    """A correct option passes the check and IPOPT uses it (max_iter = 2 stops the solve there)."""
    out = tmp_path / "run"
    rc = main(["run", PROBLEM, "--quick", "--out", str(out), "--set", "solver.options.ipopt.max_iter=2", "--quiet"])
    import json

    m = json.loads((out / "metrics.json").read_text())
    assert rc == 1 and m["iterations"] == 2 and m["solver_status"] == "Maximum_Iterations_Exceeded"
