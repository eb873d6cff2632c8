"""The per-run figures (ocdl/plots.py) draw what the run holds and say what they show (issue 19):
objective.png has an accuracy panel only where the history has accuracies (a CasADi run records
the objective and IPOPT's infeasibilities: those are drawn instead), titles promise a test curve
only where there is one; prediction.png and transformed.png have axis labels and a legend of the
classes and the boundary; the PNGs are byte-identical when drawn twice."""

from __future__ import annotations

import pytest

from ocdl import plots, rundir
from ocdl.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fig") / "run"
    assert main(["train", "--data", "spiral", "--n", "40", "--iterations", "6", "--eval-every", "2", "--out", str(out),
                 "--quiet"]) == 0
    return out


def _draw(monkeypatch, tmp_path, problem, params, history, train, test):
    """write_figures with each figure recorded before it is saved: {name: [(title, xlabel, ylabel,
    legend texts, number of lines) per axes]}."""
    seen = {}
    real = plots.save_figure

    def record(fig, path, **kw):
        seen[path.name] = [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel(),
                            [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [],
                            len(ax.get_lines())) for ax in fig.axes]
        real(fig, path, **kw)

    monkeypatch.setattr(plots, "save_figure", record)
    written = plots.write_figures(tmp_path, problem, params, history, train, test)
    assert sorted(written) == sorted(seen)
    return seen


def _data(problem):
    from ocdl import data

    return data.make(problem.data)


def test_torch_run_figures(monkeypatch, tmp_path, run):
    problem, params, m = rundir.load(run)
    train, test = _data(problem)
    seen = _draw(monkeypatch, tmp_path, problem, params, m["history"], train, test)
    (pred,) = seen["prediction.png"]
    assert pred[1:3] == ("feature 1, $x_1$", "feature 2, $x_2$")
    assert pred[3] == ["class 0 (train)", "class 1 (train)", "decision boundary S = 1/2"]
    assert "training set" in pred[0]
    (tr,) = seen["transformed.png"]
    assert tr[1:3] == ("$y^{[N]}_1$", "$y^{[N]}_2$") and tr[3][:2] == ["class 0 (train)", "class 1 (train)"]
    obj, acc = seen["objective.png"]
    assert obj[0] == "objective E (train solid, test dashed)" and obj[4] == 2  # train and test curves
    assert acc[0] == "accuracy (train solid, test dashed)" and acc[4] == 2


def test_casadi_history_has_no_empty_accuracy_panel(monkeypatch, tmp_path, run):
    """A CasADi run's history (iteration, objective, inf_pr, inf_du): the objective alone, titled
    without a test curve, and IPOPT's infeasibilities in the second panel; no accuracy panel."""
    problem, params, _ = rundir.load(run)
    train, test = _data(problem)
    hist = {"iteration": [0, 1, 2, 3], "objective": [2.0, 1.0, 0.5, 0.4], "inf_pr": [0.0, 1e-3, 1e-6, 1e-9],
            "inf_du": [1.0, 1e-2, 1e-5, 1e-10]}
    seen = _draw(monkeypatch, tmp_path, problem, params, hist, train, test)
    obj, inf = seen["objective.png"]
    assert obj[0] == "objective E (training set)" and obj[4] == 1
    assert inf[0] == "IPOPT infeasibility" and inf[3] == ["primal infeasibility", "dual infeasibility"]
    assert all("accuracy" not in a[0] and a[2] != "accuracy" for a in (obj, inf)) and inf[2] == "infeasibility"
    # a history with the objective only: one panel
    seen = _draw(monkeypatch, tmp_path, problem, params, {"iteration": [0, 1], "objective": [1.0, 0.5]}, train, test)
    assert [a[0] for a in seen["objective.png"]] == ["objective E (training set)"]


def test_accuracy_without_test_curve_says_train(monkeypatch, tmp_path, run):
    problem, params, _ = rundir.load(run)
    train, test = _data(problem)
    hist = {"iteration": [0, 1], "objective": [1.0, None], "eval_iteration": [0, 1], "train_accuracy": [0.5, 0.6]}
    seen = _draw(monkeypatch, tmp_path, problem, params, hist, train, test)
    obj, acc = seen["objective.png"]
    assert obj[0] == "objective E (training set)" and acc[0] == "accuracy (train)" and acc[4] == 1


def test_figures_are_deterministic(tmp_path, run):
    problem, params, m = rundir.load(run)
    train, test = _data(problem)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    names = plots.write_figures(a, problem, params, m["history"], train, test)
    assert names == plots.write_figures(b, problem, params, m["history"], train, test)
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n
