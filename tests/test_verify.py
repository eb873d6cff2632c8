"""ocdl verify: DTO = OTD with the partner, the gap of other OTD discretisations, the bilinear
invariant, convergence orders, and the command line."""

import json

import numpy as np
import pytest

from ocdl import tableau as tableau_mod
from ocdl.cli import main
from ocdl.errors import OcdlError
from ocdl.verify import adjoints, commutation as cm, order as order_mod
from ocdl.verify.instance import Instance, build_problem

PARTNER_TABLEAUX = [t for t in tableau_mod.names() if tableau_mod.get(t).has_partner]
ROUND_OFF = 1e-12


def instance(**kw):
    return Instance.make(build_problem(**kw))


# ---------------------------------------------------------------------------- DTO = OTD (partner)
@pytest.mark.parametrize("controls", ["per-layer", "per-stage"])
@pytest.mark.parametrize("tab", PARTNER_TABLEAUX)
def test_partner_equals_autograd(tab, controls):
    inst = instance(tableau=tab, controls=controls)
    _, g_ref = cm.dto_autograd(inst)
    res = adjoints.partner(inst)
    assert set(res.grads) == set(g_ref) == {"K", "beta", "W", "mu"}
    assert cm.rel_diff(res.grads, g_ref) <= ROUND_OFF


@pytest.mark.parametrize("family,tab", [("monotone", "kutta3"), ("odenet", "euler"), ("rk", "rk38")])
def test_partner_other_families_and_learned_h(family, tab):
    prob = build_problem(tableau=tab, family=family, layers=6, width=3,
                         h=None if family == "odenet" else 0.1)
    inst = Instance.make(prob)
    if family == "odenet":  # unequal steps, so that ∂E/∂h is not tested on a uniform grid only
        inst.params["h"] = inst.params["h"] * np.linspace(0.5, 1.5, prob.N)
    _, g_ref = cm.dto_autograd(inst)
    g = adjoints.partner(inst).grads
    assert ("h" in g) == (family == "odenet")
    assert cm.rel_diff(g, g_ref) <= ROUND_OFF


def test_partner_equals_the_engines_adjoint_costates():
    """The NumPy OTD partner (linear solve per layer) and the engine's backward sweep give the
    same costates p^[j] at every layer."""
    from ocdl.engine.torch.adjoint import grad_adjoint

    inst = instance(tableau="ssprk3", controls="per-stage")
    params, Y0, c = inst.torch_args()
    _, _, cost = grad_adjoint(inst.net, params, Y0, c, return_costates=True, form="partner")
    p_engine = cost["p"].numpy().transpose(0, 2, 1)
    p = adjoints.partner(inst).p
    assert np.max(np.abs(p - p_engine)) <= ROUND_OFF * np.max(np.abs(p_engine))


def test_no_partner_for_zero_weight_unscaled_adjoint_instead():
    inst = instance(tableau="midpoint")
    with pytest.raises(OcdlError, match="b_i = 0"):
        adjoints.partner(inst)
    res = cm.commutation(inst, casadi=False)
    assert res["partner_exists"] is False
    assert res["methods"]["otd_partner"]["rel_diff"] is None
    assert "does not exist" in res["methods"]["otd_partner"]["reason"]
    assert res["methods"][cm.UNSCALED]["rel_diff"] <= ROUND_OFF
    assert res["invariant_variation"]["unscaled"] <= ROUND_OFF


# ---------------------------------------------------------------------------- the gap
def test_same_tableau_differs_visibly_for_rk4_and_the_gap_shrinks_at_order_4():
    inst = instance(tableau="rk4", h=0.1)
    _, g_ref = cm.dto_autograd(inst)
    gap = cm.rel_diff(adjoints.same_tableau(inst).grads, g_ref)
    assert gap > 1e-6  # the gap is real: not round-off
    ref = cm.refinement(inst, factors=(1, 2, 4), methods=("otd_same_tableau",))
    gaps = ref["gaps"]["otd_same_tableau"]
    assert gaps[0] == pytest.approx(gap, rel=1e-9)
    assert gaps[0] > gaps[1] > gaps[2]
    assert abs(ref["slopes"]["otd_same_tableau"] - 4) <= 0.3


def test_continuous_gap_shrinks_at_the_ode_order():
    inst = instance(tableau="kutta3", h=0.1)
    ref = cm.refinement(inst, factors=(1, 2, 4), methods=("otd_continuous",))
    assert ref["gaps"]["otd_continuous"][0] > 1e-6
    assert abs(ref["slopes"]["otd_continuous"] - 3) <= 0.3


def test_continuous_costate_is_the_derivative_of_the_continuous_objective():
    """⟨p(0), v⟩ against a central difference of the continuous objective (solve_ivp forward)."""
    inst = instance(tableau="rk4", layers=5, n=8)
    res = adjoints.continuous_network(inst)
    v = np.random.default_rng(3).standard_normal(inst.Y0.shape)
    t = inst.times()
    one = np.ones(1)
    pieces = [adjoints.Piece(t[j], t[j + 1], (lambda tt, j=j: inst.control(j)), (lambda tt: one), np.array([j]))
              for j in range(inst.N)]

    def E(Y0):
        return adjoints.continuous(inst.field, pieces, Y0, inst.terminal, inst.N).E

    eps = 1e-4
    fd = (E(inst.Y0 + eps * v) - E(inst.Y0 - eps * v)) / (2 * eps)
    assert np.vdot(res.p[0], v) == pytest.approx(fd, rel=1e-6)


# ---------------------------------------------------------------------------- the invariant
@pytest.mark.parametrize("tab", ["euler", "heun", "kutta3", "ssprk3", "rk4", "rk38"])
def test_invariant_constant_for_partner_drifting_otherwise(tab):
    res = cm.commutation(instance(tableau=tab), casadi=False)
    inv = res["invariant_variation"]
    assert inv["partner"] <= ROUND_OFF
    assert inv["same_tableau"] > 1e-8
    I = np.array(res["invariant"]["partner"])
    assert np.all(np.isfinite(I)) and np.max(np.abs(I)) > 0


def test_invariant_per_stage_partner():
    res = cm.commutation(instance(tableau="kutta3", controls="per-stage"), casadi=False)
    assert res["invariant_variation"]["partner"] <= ROUND_OFF
    assert res["methods"]["otd_same_tableau"]["rel_diff"] is None
    assert "reason" in res["methods"]["otd_same_tableau"]


# ---------------------------------------------------------------------------- orders
@pytest.mark.parametrize("tab", ["euler", "heun", "kutta3", "rk4"])
def test_fitted_slopes_match_the_ode_order(tab):
    res = order_mod.order(tab, control=False)
    p = tableau_mod.get(tab).ode_order
    for key in ("state", "costate", "gradient"):
        assert res["slopes"][key] is not None, key
        assert abs(res["slopes"][key] - p) <= 0.3, (key, res["slopes"][key], res["errors"][key])
    assert res["slopes"]["control"] is None and res["control_reason"] == "not requested"


def test_ssprk3_state_order_3_and_control_order_2():
    res = order_mod.order("ssprk3")
    assert abs(res["slopes"]["state"] - 3) <= 0.3
    assert abs(res["slopes"]["control"] - 2) <= 0.3


def test_fit_slope_range_rule():
    """Points below the floor or with N < 8 are left out; the last three that remain are fitted."""
    Ns = [4, 8, 16, 32, 64, 128]
    errs = [5.0, 2.0 ** -3, 2.0 ** -6, 2.0 ** -9, 2.0 ** -12, 1e-14]  # N = 4 wild, N = 128 at round-off
    s, used = order_mod.fit_slope(Ns, errs)
    assert used == [16, 32, 64] and s == pytest.approx(3.0)
    assert order_mod.fit_slope([4, 8], [1e-14, 1e-15]) == (None, [])


# ---------------------------------------------------------------------------- CasADi engine
def test_dto_casadi_equals_autograd():
    res = cm.commutation(instance(tableau="kutta3"))
    assert res["methods"]["dto_casadi"]["rel_diff"] <= ROUND_OFF


# ---------------------------------------------------------------------------- command line
def run_cli(args, capsys):
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_commutation_json(capsys):
    rc, out, _ = run_cli(["verify", "commutation", "--tableau", "kutta3", "--layers", "6", "--n", "20",
                          "--no-casadi", "--json"], capsys)
    assert rc == 0
    d = json.loads(out)
    assert d["tableau"] == "kutta3"
    assert set(d["methods"]) == set(cm.METHODS)
    assert d["methods"]["dto_autograd"]["rel_diff"] == 0.0
    assert d["methods"]["otd_partner"]["rel_diff"] <= ROUND_OFF
    assert d["methods"]["otd_same_tableau"]["rel_diff"] > 1e-6
    assert d["methods"]["dto_casadi"]["rel_diff"] is None and d["methods"]["dto_casadi"]["reason"]
    assert set(d["invariant_variation"]) >= {"partner", "same_tableau"}
    assert d["problem"]["layers"] == 6 and d["problem"]["n"] == 20


def test_cli_commutation_table_and_tableau_file(tmp_path, capsys):
    f = tmp_path / "myheun.toml"
    f.write_text('name = "myheun"\nA = [[0, 0], [1, 0]]\nb = ["1/2", "1/2"]\n')
    rc, out, _ = run_cli(["verify", "commutation", "--tableau-file", str(f), "--layers", "5", "--n", "10",
                          "--no-casadi", "--json"], capsys)
    assert rc == 0
    from_file = json.loads(out)
    rc, out, _ = run_cli(["verify", "commutation", "--tableau", "heun", "--layers", "5", "--n", "10",
                          "--no-casadi", "--json"], capsys)
    from_reg = json.loads(out)
    assert from_file["tableau"] == "myheun"
    for m in ("otd_same_tableau", "otd_continuous"):
        assert from_file["methods"][m]["rel_diff"] == from_reg["methods"][m]["rel_diff"]
    rc, out, _ = run_cli(["verify", "commutation", "--tableau", "midpoint", "--layers", "4", "--n", "10",
                          "--no-casadi"], capsys)
    assert rc == 0
    assert "partner form does not exist" in out and "discrete_adjoint_unscaled" in out


@pytest.mark.parametrize("args,msg", [
    (["--tableau", "nope"], "unknown tableau"),
    (["--tableau-file", "missing.toml"], "does not exist"),
    (["--layers", "0"], "--layers"),
    (["--tableau", "rk4", "--family", "net"], None),  # argparse: invalid choice
])
def test_cli_commutation_refuses_bad_input(args, msg, capsys):
    try:
        rc = main(["verify", "commutation", *args, "--no-casadi"])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("ocdl: error:") and err.count("\n") == 1
    if msg:
        assert msg in err


def test_cli_refuses_implicit_tableau(tmp_path, capsys):
    f = tmp_path / "implicit_midpoint.json"
    f.write_text(json.dumps({"A": [["1/2"]], "b": [1]}))
    rc, _, err = run_cli(["verify", "commutation", "--tableau-file", str(f), "--no-casadi"], capsys)
    assert rc == 2 and "implicit" in err and err.count("\n") == 1


def test_cli_order_json_and_figure(tmp_path, capsys):
    rc, out, _ = run_cli(["verify", "order", "--tableau", "heun", "--Ns", "8,16,32,64", "--n", "10",
                          "--no-casadi", "--json", "--out", str(tmp_path)], capsys)
    assert rc == 0
    d = json.loads(out)
    assert (d["tableau"], d["ode_order"], d["oc_order"]) == ("heun", 2, 2)
    assert set(d["slopes"]) == {"state", "costate", "gradient", "control"}
    assert d["slopes"]["control"] is None
    assert abs(d["slopes"]["state"] - 2) <= 0.3
    assert (tmp_path / "order_heun.png").stat().st_size > 0
    rc, _, err = run_cli(["verify", "order", "--Ns", "8", "--no-casadi"], capsys)
    assert rc == 2 and "--Ns" in err


@pytest.mark.slow
def test_cli_verify_all_writes_report(tmp_path, capsys):
    out = tmp_path / "verify"
    # the CasADi parts (dto_casadi, Hager's control order) are tested above; left out here for time
    rc, stdout, _ = run_cli(["verify", "all", "--out", str(out), "--n", "20", "--no-casadi"], capsys)
    report = (out / "report.md").read_text()
    data = json.loads((out / "report.json").read_text())
    assert data["passed"], [c for group in data["checks"].values() for c in group if not c[1]]
    assert rc == 0
    for name in tableau_mod.names():
        assert f"| {name} |" in report
        assert (out / f"order_{name}.png").is_file()
    assert (out / "invariant_rk4.png").is_file()
    assert "ocdl verify all took" in stdout
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
