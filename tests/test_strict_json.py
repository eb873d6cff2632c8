"""Strict JSON in a run directory, and the honest final line of a float32 run (issue 19).

Every JSON file a run writes parses with a strict parser (NaN/Infinity are not JSON): a
non-finite float is null, and metrics.json lists its non-finite figures under ``nonfinite``
({name: 'nan' | 'inf' | '-inf'}); the readers (load, resume, compare, the reproduction summary)
take such a file as they took the NaN before. A float32 run whose own arithmetic overflowed
(the history holds NaN) says so on its final line, next to the float64 evaluation at its
parameters, each named by its precision; a float64 run's line is unchanged."""

from __future__ import annotations

import json
import math
import re
import types
from pathlib import Path

import numpy as np
import pytest

from ocdl import rundir
from ocdl.cli import main
from ocdl.errors import OcdlError


def _strict_load(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def _all_json(run: Path) -> dict:
    """Every *.json of a run directory, parsed strictly."""
    files = sorted(run.glob("*.json"))
    assert files
    return {p.name: _strict_load(p.read_text()) for p in files}


def test_write_json_is_strict(tmp_path):
    obj = {"a": math.nan, "b": [1.0, math.inf, -math.inf, np.float32("nan"), np.float64(2.5)],
           "c": {"d": np.array([1.0, np.nan]), "e": np.int64(3)}, "f": None, "g": True, "h": "NaN"}
    rundir.write_json(tmp_path / "x.json", obj)
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text.replace('"NaN"', "") and "Infinity" not in text
    assert _strict_load(text) == {"a": None, "b": [1.0, None, None, None, 2.5], "c": {"d": [1.0, None], "e": 3},
                                  "f": None, "g": True, "h": "NaN"}


def test_mark_and_restore_nonfinite():
    m = rundir.mark_nonfinite({"objective": math.nan, "gradient_norm": math.inf, "test_objective": -math.inf,
                               "train_accuracy": 0.5, "kkt_residual": None, "status": "ok", "iterations": 3})
    assert m["nonfinite"] == {"objective": "nan", "gradient_norm": "inf", "test_objective": "-inf"}
    assert "nonfinite" not in rundir.mark_nonfinite({"objective": 1.0, "kkt_residual": None})
    back = rundir.restore_nonfinite(_strict_load(rundir.dumps(m)))
    assert math.isnan(back["objective"]) and back["gradient_norm"] == math.inf and back["test_objective"] == -math.inf
    assert back["kkt_residual"] is None and back["train_accuracy"] == 0.5  # a null not listed stays null


def _diverging_float32(tmp_path, name="f32", extra=()):
    """A float32 run whose own forward sweep overflows (identity σ, h = 10, 15 layers: ~10¹⁵ growth,
    squared in the loss): its history holds NaN; the float64 evaluation at the same parameters is finite."""
    out = tmp_path / name
    rc = main(["train", "--data", "spiral", "--n", "60", "--dtype", "float32", "--activation", "identity",
               "--h", "10", "--layers", "15", "--iterations", "3", "--progress-every", "1", "--out", str(out),
               *extra])
    return out, rc


def test_float32_overflow_run_is_strict_json_and_honest(tmp_path, capsys):
    out, rc = _diverging_float32(tmp_path)
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 1  # the solver failed (objective not finite)
    files = _all_json(out)
    m = files["metrics.json"]
    assert m["history"]["objective"][-1] is None  # NaN in the run: null in the file
    assert m["dtype"] == "float32" and m["evaluation_dtype"] == "float64"
    assert m["run_objective"] is None and m["run_gradient_norm"] is None
    assert m["nonfinite"] == {"run_objective": "nan", "run_gradient_norm": "nan"}
    assert math.isfinite(m["objective"])  # the float64 evaluation at the returned parameters
    final = next(line for line in lines if line.startswith("failed:"))
    assert re.match(r"failed: the float32 run at iteration 0: E = nan, \|grad E\| = nan; float64 evaluation at its "
                    r"parameters: E = \d\.\d{10}e[+-]\d+, \|grad E\| = ", final), final
    # the readers: load gives the NaN back, compare and resume accept the file
    _, _, loaded = rundir.load(out)
    assert math.isnan(loaded["run_objective"]) and loaded["history"]["objective"][-1] is None
    assert main(["compare", str(out), str(out), "--json"]) == 0
    res = _strict_load(capsys.readouterr().out)
    assert res["objective"]["objective"]["max_abs"] == 0.0
    assert main(["train", "--resume", str(out), "--iterations", "4", "--quiet"]) == 1
    assert _all_json(out)["metrics.json"]["nonfinite"] == {"run_objective": "nan", "run_gradient_norm": "nan"}


def test_float32_finite_run_reports_both_precisions(tmp_path, capsys):
    out = tmp_path / "ok32"
    assert main(["train", "--data", "spiral", "--n", "60", "--dtype", "float32", "--iterations", "5",
                 "--out", str(out)]) == 0
    final = capsys.readouterr().out.strip().splitlines()[-1]
    m = _all_json(out)["metrics.json"]
    assert "nonfinite" not in m and m["run_iteration"] == 5
    assert m["run_objective"] == m["history"]["objective"][-1]  # the run's own float32 value
    assert abs(m["run_objective"] - m["objective"]) <= 1e-5 * m["objective"]  # float32 against float64
    assert f"the float32 run at iteration 5: E = {m['run_objective']:.8e}" in final
    assert f"float64 evaluation at its parameters: E = {m['objective']:.10e}" in final


def test_float64_run_line_and_metrics_unchanged(tmp_path, capsys):
    out = tmp_path / "ok64"
    assert main(["train", "--data", "spiral", "--n", "60", "--iterations", "5", "--out", str(out)]) == 0
    final = capsys.readouterr().out.strip().splitlines()[-1]
    m = _all_json(out)["metrics.json"]
    assert not {"dtype", "evaluation_dtype", "run_objective", "run_gradient_norm", "run_iteration", "nonfinite"} & set(m)
    assert final == (f"ok: E = {m['objective']:.10e}, |grad E| = {m['gradient_norm']:.3e}, accuracy train "
                     f"{m['train_accuracy']:.3f} / test {m['test_accuracy']:.3f}, 5 iterations, "
                     f"{m['wall_time_s']:.1f} s -> {out}")


def _edit_metrics(run: Path, **changes):
    m = json.loads((run / "metrics.json").read_text())
    m.update(changes)
    (run / "metrics.json").write_text(json.dumps(m))


def test_readers_take_a_nonfinite_headline(tmp_path, capsys):
    """A headline figure written as null + nonfinite: load gives NaN / inf back; compare and the
    reproduction summary read it as they read the NaN before; a wrong ``nonfinite`` is one line."""
    from ocdl.reproduce import summary

    out = tmp_path / "r"
    assert main(["train", "--data", "spiral", "--n", "40", "--iterations", "2", "--out", str(out), "--quiet"]) == 0
    _edit_metrics(out, objective=None, gradient_norm=None, nonfinite={"objective": "nan", "gradient_norm": "inf"})
    problem, params, m = rundir.load(out)
    assert math.isnan(m["objective"]) and m["gradient_norm"] == math.inf
    assert main(["compare", str(out), str(out)]) == 0
    capsys.readouterr()
    exp = types.SimpleNamespace(name="r", group="g", data="spiral", label="rk")
    summary.write(tmp_path, [exp], "t", results={"r": (problem, params, m)})
    assert "| spiral | rk | nan | " in (tmp_path / "summary.md").read_text()
    assert _strict_load((tmp_path / "summary.json").read_text())[0]["objective"] is None
    for bad in ({"objective": "NaN!"}, ["objective"], {"train_accuracy": "nan"}):
        _edit_metrics(out, nonfinite=bad)
        with pytest.raises(OcdlError, match="metrics.json"):
            rundir.load(out)
    before = sorted(p.name for p in out.iterdir())
    assert main(["compare", str(out), str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == before
