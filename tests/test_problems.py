"""The problem catalogue: every file loads and encodes the paper's settings; broken files give
one clear line naming file, line and key; ``ocdl run`` trains a problem file."""

import json

import numpy as np
import pytest

from ocdl import catalogue
from ocdl.cli import main
from ocdl.errors import OcdlError
from ocdl.reproduce import experiments

ROOT = catalogue.root()
FILES = catalogue.discover(ROOT)
LTS_ITERATIONS = {"donut1d": 5000, "donut2d": 8000, "spiral": 20000, "squares": 8000}
RK_TABLEAU = {"euler": "euler", "improved-euler": "heun", "kutta3": "kutta3", "kutta4": "rk4"}


def test_catalogue_has_the_paper():
    names = {catalogue.name_of(p) for p in FILES}
    for d in LTS_ITERATIONS:
        for net in ("net", "resnet", "odenet", "odenet-simplex"):
            assert f"paper/lts/{d}-{net}" in names
        for m in RK_TABLEAU:
            assert f"paper/rk/{d}-{m}" in names
    assert "paper/rk/spiral-kutta4" in names  # the example path
    assert len(experiments.select("paper", groups=["lts", "rk"])) == 32
    assert any(n.startswith("highacc/") for n in names)


@pytest.mark.parametrize("path", FILES, ids=[catalogue.name_of(p) for p in FILES])
def test_every_problem_file_loads(path):
    problem = catalogue.load(path)
    assert problem.dtype == "float64"
    assert catalogue.describe(path), "a problem file starts with a comment block describing it"
    data, variant = path.stem.split("-", 1)
    assert problem.data.name == data
    # The file is complete: every section written out, nothing left to defaults.
    raw, _ = catalogue.read(path)
    assert set(raw) >= {"data", "network", "classifier", "objective", "init", "solver"}
    assert {"seed", "n"} <= set(raw["data"]) and "seed" in raw["init"]
    assert {"iterations", "name", "backend"} <= set(raw["solver"])


def _group(path):
    return path.relative_to(ROOT).parts[:2]


@pytest.mark.parametrize("path", [p for p in FILES if _group(p)[0] == "paper"],
                         ids=lambda p: catalogue.name_of(p))
def test_paper_settings(path):
    """The paper's settings (docs/reproduction.md), file by file."""
    p = catalogue.load(path)
    group = _group(path)[1]
    data, variant = path.stem.split("-", 1)
    assert p.width(2) == 2 and p.network.activation == "tanh" and p.objective.loss == "squared"
    assert not p.is_well_posed() and all(v == 0 for v in p.tikhonov().values()) and p.objective.smooth == 0
    assert p.solver.backend == "torch"
    if group == "rk":
        assert p.family == "rk" and p.tableau.name == RK_TABLEAU[variant]
        assert (p.N, p.h, p.data.n, p.solver.iterations) == (15, 0.1, 1000, 10000)
        assert p.classifier.trainable and not p.objective.mean and not p.per_stage
        assert (p.init.K, p.init.beta, p.init.W, p.init.mu) == ("normal", "normal", "normal", "uniform")
        assert p.solver.name == "gd-armijo"
    else:
        assert p.family == variant and p.N == 20 and p.T == 1.0 and p.h == 1 / 20
        assert p.objective.mean and (p.init.K, p.init.beta) == ("normal", "zero")
        assert p.classifier.W == (10.0, 10.0) and p.classifier.mu == 0.0
        assert p.classifier.trainable == (group == "trained-classifier")
        assert p.solver.name == "gd-lipschitz" and p.solver.iterations == LTS_ITERATIONS[data]
        assert p.data.n == (500 if data == "donut1d" else 1000)
        assert p.init.seed == (1 if group == "init2" else 0)


def test_same_initial_K_for_the_four_nets():
    from ocdl.problem import init_params

    Ks = [init_params(catalogue.load(ROOT / f"paper/lts/spiral-{n}.toml"), 2)["K"]
          for n in ("net", "resnet", "odenet", "odenet-simplex")]
    assert all(np.array_equal(Ks[0], K) for K in Ks[1:])


@pytest.mark.parametrize("path", [p for p in FILES if _group(p)[0] == "highacc"], ids=lambda p: catalogue.name_of(p))
def test_highacc_problems_are_well_posed(path):
    p = catalogue.load(path)
    assert p.is_well_posed() and p.objective.smooth > 0
    assert p.solver.backend == "casadi" and float(p.solver.options["tol"]) <= 1e-10


GOOD = (ROOT / "paper/rk/spiral-kutta4.toml").read_text()


def _line_of(text, needle):
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(needle))


@pytest.mark.parametrize("old,new,expected,at", [
    ("\nlayers = 15", "\nlayerz = 15", "network.layerz: unknown key", "layerz"),
    ("\nlayers = 15", '\nlayers = "15"', "network.layers: expected int, got str '15'", "layers"),
    ('\ntableau = "rk4"', '\ntableau = "rk5"', "network.tableau: unknown tableau 'rk5'", "tableau"),
    ('\nname = "gd-armijo"', '\nname = "ipopt"', "solver.name (backend 'torch'): 'ipopt' is not one of", 'name = "ipopt"'),
    ("\nh = 0.1", "\nh = 0.1\nT = 2.0", "network: h = 0.1 and T = 2.0 disagree for 15 layers", "[network]"),
    ("\nmean = false", "\nmean = false\nfoo = 1", "objective.foo: unknown key", "foo"),
    ("tikhonov = { K = 0.0,", "tikhonov = { Q = 0.0, K = 0.0,", "objective.tikhonov.Q: unknown key", "tikhonov"),
    ('\nmu = "uniform"', '\nmu = "beta"', "init.mu: 'beta' is not one of", 'mu = "beta"'),
])
def test_broken_file_message_names_file_line_and_key(tmp_path, old, new, expected, at):
    assert GOOD.count(old) == 1
    text = GOOD.replace(old, new)
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(OcdlError) as e:
        catalogue.load(path)
    msg = str(e.value)
    assert "\n" not in msg and expected in msg
    assert msg.startswith(f"{path}:{_line_of(text, at)}: "), msg


def test_toml_syntax_error_names_line_and_column(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace("[network]", "[network", 1))
    with pytest.raises(OcdlError, match=rf"^{path}:{_line_of(GOOD, '[network]')}:\d+: invalid TOML"):
        catalogue.load(path)


def test_missing_file_and_unknown_name():
    with pytest.raises(OcdlError, match="does not exist"):
        catalogue.load("no/such/file.toml")
    with pytest.raises(OcdlError, match="no problem file or catalogue entry"):
        catalogue.load("nosuch")


def test_overrides_change_one_thing():
    p = catalogue.load("paper/rk/spiral-kutta4", ["network.tableau=kutta3", "network.layers=30", "objective.mean=true"])
    assert (p.tableau.name, p.N, p.objective.mean) == ("kutta3", 30, True)
    with pytest.raises(OcdlError, match=r"with --set network.layers=x: network.layers: expected int"):
        catalogue.load("paper/rk/spiral-kutta4", ["network.layers=x"])
    with pytest.raises(OcdlError, match="expected section.key=value"):
        catalogue.load("paper/rk/spiral-kutta4", ["network.layers"])


def test_run_cli_trains_a_problem_file(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "paper/lts/spiral-odenet-simplex", "--out", str(out), "--quiet",
               "--set", "solver.iterations=6", "--set", "data.n=40"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["iterations"] == 6 and m["status"] == "ok"
    h = np.load(out / "params.npz")["h"]
    assert h.shape == (20,) and abs(h.sum() - 1.0) < 1e-12 and h.min() >= 0
    cfg = catalogue.load(out / "config.toml")  # the run's config is itself a valid problem file
    assert cfg.solver.iterations == 6 and cfg.family == "odenet-simplex"


def test_run_cli_refuses_bad_input_without_writing(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("layers = 15", "layers = -1"))
    out = tmp_path / "run"
    rc = main(["run", str(bad), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert err.count("\n") == 1 and err.startswith(f"ocdl: error: {bad}:{_line_of(GOOD, 'layers')}: network.layers")


def test_run_cli_show_and_list(capsys):
    assert main(["run", "paper/rk/spiral-kutta4", "--show", "--quick"]) == 0
    shown = capsys.readouterr().out
    assert "iterations = 250" in shown and "n = 200" in shown  # 10000 / 40, ≤ 200 samples
    assert main(["run", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "paper/rk/spiral-kutta4" in listed and len(listed.splitlines()) == len(FILES) + 1
