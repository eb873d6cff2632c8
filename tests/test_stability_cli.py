"""``ocdl stability``: JSON shapes, trained networks from a run directory, the report, refused input."""

import json

import numpy as np
import pytest

from ocdl import training
from ocdl.cli import main
from ocdl.problem import from_dict
from ocdl.stability import monotone, network


def run_cli(args, capsys):
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_monotone_json_shape(capsys):
    for flow, sigma in (("monotone", "tanh"), ("plain", "tanh")):
        rc, out, _ = run_cli(["stability", "monotone", "--sigma", sigma, "--flow", flow, "--dim", "2", "--cases", "40",
                              "--json"], capsys)
        d = json.loads(out)
        assert rc == 0
        assert {"sigma", "flow", "cases", "max_ratio", "violations"} <= set(d)
        assert (d["sigma"], d["flow"], d["cases"]) == (sigma, flow, 40)
        if flow == "monotone":
            assert d["violations"] == 0 and d["max_ratio"] <= 1 + monotone.TOL
        else:
            assert d["violations"] > 0


def test_monotone_sin_finds_violations(capsys):
    rc, out, _ = run_cli(["stability", "monotone", "--sigma", "sin", "--dim", "2", "--cases", "40", "--json"], capsys)
    d = json.loads(out)
    assert rc == 0 and d["violations"] > 0 and d["max_ratio"] > 1.0


def test_inverse_json_shape(capsys, tmp_path):
    rc, out, _ = run_cli(["stability", "inverse", "--lam", "1.0", "--delta", "1e-3", "--cases", "8", "--json"], capsys)
    d = json.loads(out)
    assert rc == 0
    for key in ("a", "b", "d"):
        assert d[key]["max_ratio"] <= 1 + monotone.TOL
    assert isinstance(d["c"]["rate"], float) and len(d["c"]["errors"]) == 5
    rc, out, _ = run_cli(["stability", "inverse", "--A", "identity", "--cases", "4"], capsys)
    assert rc == 0 and "(a) data perturbation" in out and "rate" in out


def test_discrete_json_and_figure(capsys, tmp_path):
    rc, out, _ = run_cli(["stability", "discrete", "--tableau", "heun", "--sigma", "tanh", "--cases", "20",
                          "--layers", "3", "--json", "--out", str(tmp_path)], capsys)
    d = json.loads(out)
    assert rc == 0 and d["tableau"] == "heun" and d["euler_bound"] == 2.0
    assert d["one_layer"]["x_star"] >= 2.0 and d["n_layers"]["violations_up_to_euler_bound"] == 0
    assert (tmp_path / "discrete-heun.png").stat().st_size > 1000


def _run_dir(tmp_path, family, scale_K):
    prob = from_dict({
        "data": {"name": "spiral", "n": 60, "seed": 0},
        "network": {"family": family, "tableau": "euler", "layers": 4, "h": 0.1, "width": 3, "activation": "tanh"},
        "init": {"scale_K": scale_K},
        "solver": {"name": "gd-armijo", "iterations": 5},
    })
    out = tmp_path / family
    training.train(prob, out=out, quiet=True, figures=False)
    return out


def test_network_monotone_run_satisfies_estimate(tmp_path, capsys):
    """A monotone Euler network with h L‖K_j‖² ≤ 2 in every layer: measured Lipschitz ≤ 1."""
    run = _run_dir(tmp_path, "monotone", 0.5)
    rc, out, _ = run_cli(["stability", "network", str(run), "--json"], capsys)
    d = json.loads(out)
    assert rc == 0 and d["family"] == "monotone"
    assert d["estimate_holds"] and d["max_h_L_normK2"] <= 2.0
    assert d["lipschitz_local_all_layers"] <= 1.0 + 1e-6 and not d["estimate_violated"]
    assert d["lipschitz_pairs"] <= 1.0 + 1e-9
    assert len(d["growth_per_layer"]) == 5


def test_network_resnet_run(tmp_path, capsys):
    run = _run_dir(tmp_path, "rk", 2.0)
    rc, out, _ = run_cli(["stability", "network", str(run)], capsys)
    assert rc == 0 and "no guarantee" in out and "family 'rk'" in out
    prob, params, train = network.load_run(run)
    r = network.check(prob, params, train.X)
    # the a-priori bound is a bound: it dominates the measured constants
    assert r["lipschitz_local_all_layers"] <= r["a_priori_bound"]
    assert r["lipschitz_pairs"] <= r["a_priori_bound"]


def test_local_lipschitz_of_linear_layer_is_exact():
    """σ = identity, one Euler layer of the monotone family: y⁺ = (I − hKᵀK) y − hKᵀβ, whose
    Jacobian (restricted to the data's 2 input coordinates) is known in closed form."""
    prob = from_dict({"data": {"name": "spiral", "n": 10}, "network": {
        "family": "monotone", "tableau": "euler", "layers": 1, "h": 0.3, "width": 3, "activation": "identity"}})
    rng = np.random.default_rng(0)
    K = rng.standard_normal((1, 3, 3))
    params = {"K": K, "beta": rng.standard_normal((1, 3)), "W": np.ones(3), "mu": np.array(0.0), "h": np.array([0.3])}
    X = rng.standard_normal((10, 2))
    J = (np.eye(3) - 0.3 * K[0].T @ K[0])[:, :2]
    got = network.local_lipschitz(prob, params, X)
    np.testing.assert_allclose(got[-1], np.linalg.norm(J, 2), rtol=1e-8)


@pytest.mark.parametrize("args,msg", [
    (["stability", "monotone", "--sigma", "nope"], "unknown activation"),
    (["stability", "monotone", "--dim", "0"], "widths must lie in"),
    (["stability", "discrete", "--sigma", "sin"], "not monotone"),
    (["stability", "discrete", "--tableau", "nope"], "unknown tableau"),
    (["stability", "inverse", "--A", "/no/such/file.npy"], "--A"),
    (["stability", "inverse", "--sigma", "xtanh"], "not monotone"),
    (["stability", "inverse", "--delta", "-1"], "--delta"),
    (["stability", "network", "/no/such/run"], "does not exist"),
])
def test_refused_input(args, msg, capsys):
    with pytest.raises(SystemExit) as e:
        rc = main(args)
        raise SystemExit(rc)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("ocdl: error:") and msg in err and err.count("\n") == 1


def test_all_refuses_file_as_out(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("keep")
    rc, _, err = run_cli(["stability", "all", "--out", str(f), "--quick"], capsys)
    assert rc == 2 and "not a folder" in err and f.read_text() == "keep"


@pytest.mark.slow
def test_all_quick_writes_report(tmp_path, capsys):
    out = tmp_path / "stab"
    docs = tmp_path / "docs" / "stability.md"
    rc, stdout, _ = run_cli(["stability", "all", "--out", str(out), "--quick", "--docs", str(docs)], capsys)
    assert rc == 0 and "ocdl stability all:" in stdout
    md = (out / "report.md").read_text()
    for head in ("## 1. Monotone flow", "## 2. Discrete flows", "## 3. Inverse problem", "## 4. Trained networks"):
        assert head in md
    for name in ("monotone.png", "discrete-rk4.png", "inverse.png", "inverse-c.png", "network.png"):
        assert (out / name).stat().st_size > 1000
    rep = json.loads((out / "report.json").read_text())
    assert all(r["violations"] == 0 for r in rep["monotone"] if r["flow"] == "monotone" and r["monotone"])
    page = docs.read_text()
    assert "](../stab/monotone.png)" in page
    assert not list(out.glob("*.tmp"))
