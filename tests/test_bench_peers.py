"""``ocdl bench gradient --peers``: that it runs, reports every row in the issue's format, lists the
peers that are not installed, and that the installed ones compute ocdl's gradient (no timing asserts)."""

import json
import sys

import pytest

from ocdl.benchmarks import peers as P
from ocdl.benchmarks.peers import installed
from ocdl.cli import main

KEYS = {"contender", "m", "N", "kind", "median_s", "ratio_to_ocdl", "rel_diff", "peak_kib"}


def _run(capsys, *extra):
    rc = main(["bench", "gradient", "--peers", "--sizes", "60:3,40:2", "--repeats", "2", "--json", *extra])
    assert rc == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow  # ≈ 25 s with the peers installed (their jit compiles)
def test_peers_rows_in_the_issues_format(capsys):
    out = _run(capsys)
    rows = out["rows"]
    assert rows and all(KEYS <= set(r) for r in rows)
    assert {(r["m"], r["N"]) for r in rows} == {(60, 3), (40, 2)}
    names = {r["contender"] for r in rows}
    skipped = {s["contender"] for s in out["skipped"]}
    assert {"ocdl", "ocdl-torch", "torch-loop"} <= names
    for peer, module in (("jax", "jax"), ("diffrax", "diffrax"), ("torchdiffeq", "torchdiffeq"),
                         ("torchdiffeq-adjoint", "torchdiffeq")):
        assert (peer in names) == P.installed(module) and (peer in skipped) != P.installed(module), peer
    assert ("ocdl-adjoint" in names) == P.installed("numba")
    for size in ((60, 3), (40, 2)):
        g = [r for r in rows if (r["m"], r["N"]) == size and r["kind"] == "gradient"]
        best = [r for r in g if r["contender"] == "ocdl"]
        assert len(best) == 1 and best[0]["ratio_to_ocdl"] == 1.0
        # ocdl's row is its fastest path; the ratios are of the same run's medians
        assert best[0]["median_s"] == min(r["median_s"] for r in g if r["contender"].startswith("ocdl-"))
        for r in g:
            assert r["median_s"] > 0 and r["ratio_to_ocdl"] == pytest.approx(r["median_s"] / best[0]["median_s"], rel=1e-12)
            # the discrete gradient of the same network to round-off; torchdiffeq's odeint_adjoint is
            # the continuous adjoint: O(h⁴) away, not round-off
            tol = 1e-2 if r["contender"] == "torchdiffeq-adjoint" else 1e-12
            assert r["rel_diff"] <= tol, r
        f = [r for r in rows if (r["m"], r["N"]) == size and r["kind"] == "forward"]
        assert {"ocdl", "ocdl-torch", "torch-loop"} <= {r["contender"] for r in f}
    for r in rows:
        if r["contender"] in ("ocdl-torch", "ocdl-torch-autograd", "torch-loop") and r["kind"] == "gradient":
            assert r["peak_kib"] > 0
    assert len(out["load_average"]["before"]) == 3


def test_missing_peers_are_listed_as_skipped(capsys, monkeypatch):
    for mod in ("jax", "diffrax", "torchdiffeq"):
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.setattr(P, "installed", lambda name: name not in ("jax", "diffrax", "torchdiffeq"))
    out = _run(capsys)
    assert {s["contender"] for s in out["skipped"]} >= {"jax", "diffrax", "torchdiffeq", "torchdiffeq-adjoint"}
    assert not {"jax", "diffrax", "torchdiffeq"} & {r["contender"] for r in out["rows"]}


def test_the_text_table_names_the_load(capsys):
    rc = main(["bench", "gradient", "--peers", "--sizes", "30:2", "--repeats", "1"])
    text = capsys.readouterr().out
    assert rc == 0 and "load average" in text and "torch-loop" in text


@pytest.mark.parametrize("bad", ["1000", "a:b", "1:3", "100:0"])
def test_bad_sizes_are_one_line(bad, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "gradient", "--peers", "--sizes", bad])
    assert "--sizes" in capsys.readouterr().err


def test_bench_train_counts_evaluations_and_compares_the_iterates(capsys):
    pytest.importorskip("numba")
    rc = main(["bench", "train", "--n", "60", "--layers", "3", "--iterations", "20", "--json"])
    out = json.loads(capsys.readouterr().out)
    jax = installed("jax")
    assert rc == 0 and set(out["engines"]) == {"torch", "native"} | ({"jax"} if jax else set())
    t = out["engines"]["torch"]
    for e in out["engines"]:
        r = out["engines"][e]
        assert r["wall_s"] > 0 and r["iterations"] == 20 and r["gradient_evaluations"] >= 20
        if e != "torch":  # the same accepted steps: the same evaluation counts, the iterates to round-off
            assert (r["function_evaluations"], r["gradient_evaluations"]) == (t["function_evaluations"],
                                                                              t["gradient_evaluations"]), e
            assert r["max_rel_param_diff"] <= 1e-12, e
    assert out["max_rel_param_diff"] == out["engines"]["native"]["max_rel_param_diff"]
    assert out["native_first_solve_s"] > 0 and len(out["load_average"]["after"]) == 3
    if jax:
        assert out["jax_compile_s"] > 0
    rc = main(["bench", "train", "--engines", "torch,tensorflow"])
    assert rc == 2 and "'tensorflow' is not one of torch, native, jax" in capsys.readouterr().err
