"""Tableaux: validation, partner, orders (exact rational arithmetic), user files."""

import json
from fractions import Fraction

import numpy as np
import pytest

from ocdl import tableau as T
from ocdl.errors import OcdlError

EXPECTED = {"euler": (1, 1), "heun": (2, 2), "kutta3": (3, 3), "rk4": (4, 4), "rk38": (4, 4), "ssprk3": (3, 2),
            "midpoint": (2, None), "ralston2": (2, 2), "ralston3": (3, 2)}


@pytest.mark.parametrize("name", T.names())
def test_orders(name):
    t = T.get(name)
    assert (t.ode_order, t.oc_order) == EXPECTED[name]
    assert t.exact is not None  # registry entries are rational: orders in exact arithmetic


@pytest.mark.parametrize("name", T.names())
def test_partner_condition(name):
    t = T.get(name)
    if not t.has_partner:
        assert t.partner_A is None
        return
    At = t.partner_A
    b, A = t.b, t.A
    res = b[:, None] * At + b[None, :] * A.T - b[:, None] * b[None, :]
    assert np.max(np.abs(res)) <= 1e-15
    assert t.partner_residual() <= 1e-15


def test_ssprk3_extra_condition_is_the_failing_one():
    """Σ d²/b = 5/6 ≠ 1/3 for SSPRK3 (order 2 in optimal control, Hager 2000): exactly, in rationals."""
    t = T.get("ssprk3")
    A, b, _ = t.exact
    d = [sum(b[i] * A[i][j] for i in range(3)) for j in range(3)]
    assert sum(d[j] ** 2 / b[j] for j in range(3)) == Fraction(5, 6)


def test_immutable():
    t = T.get("rk4")
    with pytest.raises(ValueError):
        t.A[0, 0] = 1.0
    with pytest.raises(Exception):
        t.name = "x"


@pytest.mark.parametrize(
    "A,b,c,msg",
    [
        ([[0, 0], [1]], [0.5, 0.5], None, "must be square"),
        ([[0, 0], [1, 0]], [1.0], None, r"len\(b\) = 1"),
        ([[0, 0], [float("nan"), 0]], [0.5, 0.5], None, "finite"),
        ([[0, 0], [1, 0]], [0.5, 0.5], [0, 0.9], "row 2 of A sums to"),
        ([[0, 0], [1, 0]], [0.5, 0.5], [0], r"len\(c\) = 1"),
        ([[0, 0], ["x", 0]], [0.5, 0.5], None, "not a number"),
        ([], [], None, "empty"),
    ],
)
def test_malformed_refused(A, b, c, msg):
    with pytest.raises(OcdlError, match=msg):
        T.Tableau.from_entries("bad", A, b, c)


def test_user_file_toml_and_json(tmp_path):
    f = tmp_path / "k3.toml"
    f.write_text('name = "mine"\nA = [["0","0","0"],["1/2","0","0"],["-1","2","0"]]\nb = ["1/6","2/3","1/6"]\n')
    t = T.load(f)
    assert (t.name, t.ode_order, t.oc_order) == ("mine", 3, 3)
    g = tmp_path / "h.json"
    g.write_text(json.dumps({"A": [[0, 0], [1, 0]], "b": [0.5, 0.5], "c": [0, 1]}))
    assert T.load(g).ode_order == 2


def test_irrational_tableau_uses_float_conditions():
    """Gauss–Legendre 2 (implicit, irrational): ODE order ≥ 4 found in floating point."""
    r = np.sqrt(3) / 6
    t = T.Tableau.from_entries("gauss2", [[0.25, 0.25 - r], [0.25 + r, 0.25]], [0.5, 0.5])
    assert t.exact is None and not t.explicit and t.ode_order == 4 and t.oc_order == 4


def test_user_file_errors(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text('A = [[0]]\nb = [1]\nfoo = 1\n')
    with pytest.raises(OcdlError, match="unknown key"):
        T.load(f)
    f.write_text('A = [[0]]\n')
    with pytest.raises(OcdlError, match="missing key 'b'"):
        T.load(f)
    f.write_text('A = [[0]\n')
    with pytest.raises(OcdlError, match="cannot parse"):
        T.load(f)
    with pytest.raises(OcdlError, match="does not exist"):
        T.load(tmp_path / "nope.toml")
