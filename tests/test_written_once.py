"""The shared helpers: the reference Runge–Kutta step (ocdl.rk) and the relative difference
(ocdl.metrics), against hand-computed cases."""

import numpy as np
import pytest

from ocdl import metrics, rk, tableau as tableau_mod
from ocdl.errors import OcdlError


# ---------------------------------------------------------------------------- rk_step
def test_rk_step_heun_on_a_linear_field_by_hand():
    """y' = λ y, Heun (A = [[0, 0], [1, 0]], b = (½, ½)): F_1 = λ y, Y_2 = y + h λ y,
    F_2 = λ (1 + hλ) y, y⁺ = y + h (½ F_1 + ½ F_2) = (1 + hλ + (hλ)²/2) y."""
    lam, h = -0.75, 0.5
    y = np.array([[1.0, -2.0], [0.5, 4.0]])
    out = rk.rk_step(lambda Y: lam * Y, y, h, tableau_mod.get("heun"))
    F1 = lam * y
    F2 = lam * (y + h * F1)
    assert np.array_equal(out, y + h * (0.5 * F1 + 0.5 * F2))
    np.testing.assert_allclose(out, (1 + h * lam + (h * lam) ** 2 / 2) * y, rtol=1e-15)


def test_rk_step_rk4_is_the_taylor_polynomial_for_a_linear_field():
    """For y' = λ y, any explicit tableau gives y⁺ = R(hλ) y with R the stability function; for
    RK4 R(z) = 1 + z + z²/2 + z³/6 + z⁴/24."""
    lam, h, y = 1.3, 0.2, np.array([2.0, -1.0, 0.25])
    z = h * lam
    out = rk.rk_step(lambda Y: lam * Y, y, h, tableau_mod.get("rk4"))
    np.testing.assert_allclose(out, (1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24) * y, rtol=1e-15)


def test_rk_step_midpoint_nonlinear_by_hand_and_a_step_per_row():
    """Explicit midpoint (b = (0, 1)) on y' = −y²: y⁺ = y + h f(y + h/2 f(y)); h may be a column."""
    y = np.array([[1.0, 2.0], [-0.5, 3.0]])
    h = np.array([[0.1], [0.3]])

    def f(Y):
        return -Y * Y

    out = rk.rk_step(f, y, h, tableau_mod.get("midpoint"))
    assert np.array_equal(out, y + h * (1.0 * f(y + (h * 0.5) * f(y))))
    np.testing.assert_allclose(out, y + h * f(y + 0.5 * h * f(y)), rtol=1e-15)


def test_rk_step_refuses_implicit_tableaux():
    gauss1 = tableau_mod.Tableau([[0.5]], [1.0], [0.5], name="gauss1")  # implicit midpoint
    with pytest.raises(OcdlError, match="implicit"):
        rk.rk_step(lambda Y: Y, np.ones(2), 0.1, gauss1)


# ---------------------------------------------------------------------------- rel_diff
def test_rel_diff_by_hand():
    """max |a − b| / max |b|: |(1.5, −2) − (1, −4)| = (0.5, 2), max |b| = 4."""
    assert metrics.rel_diff([1.5, -2.0], [1.0, -4.0]) == 0.5
    assert metrics.rel_diff(np.array([[3.0]]), np.array([[2.0]])) == 0.5
    assert metrics.rel_diff(2.0, 2.0) == 0.0
    # relative to the second argument only (not symmetric)
    assert metrics.rel_diff([4.0], [2.0]) == 1.0 and metrics.rel_diff([2.0], [4.0]) == 0.5


def test_rel_diff_absolute_where_the_reference_vanishes_and_for_empty_arrays():
    assert metrics.rel_diff([0.25, -0.5], [0.0, 0.0]) == 0.5
    assert metrics.rel_diff(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0


def test_rel_diff_computes_in_float64():
    a = np.array([1.0 + 2.0**-30], dtype=np.float64)
    b = np.array([1.0], dtype=np.float32)
    assert metrics.rel_diff(a, b) == 2.0**-30
    assert isinstance(metrics.rel_diff(np.float32(1.0), np.float32(2.0)), float)
