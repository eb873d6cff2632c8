"""``ocdl demo`` end to end on a small instance: the cross-engine numbers meet the thresholds of the
CasADi engine (costates ≤ 1e-8 relative, reduced gradient ≤ 1e-8, …); without the CasADi engine
the demo says so and exits non-zero instead of faking them. Also: the documentation builds."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ocdl import catalogue, demo
from ocdl.cli import COMMANDS, main

REPO = Path(__file__).resolve().parent.parent


def test_embedded_problem_is_the_catalogue_high_accuracy_problem():
    """One source of truth in spirit: the demo's problem is problems/highacc/spiral-kutta4.toml
    except for the number of samples."""
    emb = demo.default_problem()
    cat = catalogue.load("highacc/spiral-kutta4")
    assert emb.replace(data=cat.data) == cat
    assert emb.is_well_posed() and emb.solver.backend == "casadi" and emb.solver.options["tol"] == 1e-10


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--quick"])
    log = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").is_file() and (out / "checks.png").is_file()
    assert (out / "run" / "params.npz").is_file()
    checks = {r["check"].split(":")[0]: r for r in report["checks"]}
    # The commutation at the solution holds in every case (PyTorch engine).
    for name in ("commutation", "bilinear invariant ⟨p_j, v_j⟩, max rel variation (partner)"):
        assert checks[name]["passed"] is True, checks[name]
    assert rc == 0, log
    xc = report["cross_check"]
    assert report["solve"]["status"] == "ok" and report["solve"]["engine"] == "casadi"
    assert xc["costates_rel_diff"] <= 1e-8
    assert xc["gradient_norm_torch"] <= 1e-8
    assert xc["objective_rel_diff"] <= 1e-12
    assert all(r["passed"] is True for r in report["checks"]), report["checks"]


def test_demo_refuses_bad_input(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--set", "network.layers=0"]) == 2
    assert "network.layers" in capsys.readouterr().err and not (tmp_path / "d").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "full"), "--quick"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_every_command_has_a_docs_page():
    for name in COMMANDS:
        assert (REPO / "docs" / "commands" / f"{name}.md").is_file(), name


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                    reason="mkdocs/mkdocstrings are not installed (pip install -e '.[docs]')")
def test_docs_build_strict(tmp_path):
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    assert (tmp_path / "site" / "reproduction" / "index.html").is_file()
