"""The tanh kernel (ocdl.tanh): chosen by measurement once per machine, one kernel in every path,
each kernel within 1 ulp, a resumed run on the kernel it recorded."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import setup_net, small_problem
from ocdl import tanh
from ocdl import xp as xp_mod
from ocdl.errors import OcdlError

KERNELS = tanh.available(np.float64)
SMALL = ["--data", "spiral", "--n", "60", "--layers", "4", "--tableau", "rk4"]


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A process with no decision yet and an empty cache directory of its own."""
    monkeypatch.setenv("OCDL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OCDL_TANH", raising=False)
    saved = tanh.decided()
    tanh.reset()
    yield tmp_path / "cache"
    tanh.reset()
    for dn, name in saved.items():  # this process's earlier choice, as the rest of the suite saw it
        tanh._chosen[dn] = name


def timings(winner):
    """Synthetic measurements in which ``winner`` is fastest at every size."""
    return {name: {n: (1e-9 if name == winner else 2e-9) for n in tanh.SIZES} for name in KERNELS}


def no_measure(*a, **k):
    raise AssertionError("measured although a choice stands")


def test_fastest_is_the_least_sum_over_the_sizes():
    t = {"numpy": {1: 1.0, 2: 4.0}, "torch": {1: 2.0, 2: 2.0}, "ocdl": {1: 3.0, 2: 3.0}}
    assert tanh.fastest(t) == "torch"
    assert tanh.fastest({"torch": {1: 1.0}, "numpy": {1: 1.0}}) == "numpy"  # a tie goes by NAMES' order


def test_measure_times_every_available_kernel():
    t = tanh.measure(sizes=(64, 512), rounds=2)
    assert set(t) == set(KERNELS) and all(set(v) == {64, 512} for v in t.values())
    assert all(0.0 < s < 1e-5 for v in t.values() for s in v.values())
    assert set(tanh.measure(np.float32, sizes=(64,), rounds=1)) == {"numpy", "torch"}


def test_the_choice_is_measured_once_and_read_by_every_later_process(fresh, monkeypatch):
    winner = KERNELS[-1]
    monkeypatch.setattr(tanh, "measure", lambda dtype, *a, **k: timings(winner))
    assert tanh.kernel(np.float64) == winner and tanh.kernel(torch.float64) == winner
    files = list(fresh.glob("tanh-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["kernel"] == winner
    assert not list(fresh.glob("*.tmp"))
    tanh.reset()
    monkeypatch.setattr(tanh, "measure", no_measure)
    assert tanh.kernel("float64") == winner
    env = {**os.environ, "OCDL_CACHE_DIR": str(fresh)}
    got = subprocess.run([sys.executable, "-c", "from ocdl import tanh; print(tanh.kernel())"], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert got == winner
    assert tanh.decided() == {"float64": winner}


def test_a_process_that_loses_the_race_adopts_the_first_writers_choice(fresh, monkeypatch):
    def measure_while_another_writes(dtype, *a, **k):
        path = tanh.cache_file(dtype)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"kernel": "numpy"}))  # the other process, first
        return timings("torch")

    monkeypatch.setattr(tanh, "measure", measure_while_another_writes)
    assert tanh.kernel() == "numpy"


def test_an_unwritable_cache_still_gives_the_measured_choice(fresh, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("OCDL_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(tanh, "measure", lambda dtype, *a, **k: timings("torch"))
    assert tanh.kernel() == "torch"


def test_a_corrupt_cache_file_is_measured_again(fresh, monkeypatch):
    path = tanh.cache_file()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    monkeypatch.setattr(tanh, "measure", lambda dtype, *a, **k: timings("torch"))
    assert tanh.kernel() == "torch"


def test_OCDL_TANH_forces_a_kernel_and_bad_names_are_one_line(fresh, monkeypatch):
    monkeypatch.setattr(tanh, "measure", no_measure)
    monkeypatch.setenv("OCDL_TANH", "torch")
    assert tanh.kernel() == "torch"
    tanh.reset()
    monkeypatch.setenv("OCDL_TANH", "fast")
    with pytest.raises(OcdlError, match=r"OCDL_TANH='fast': choose from numpy, torch, ocdl"):
        tanh.kernel()
    monkeypatch.setenv("OCDL_TANH", "ocdl")
    with pytest.raises(OcdlError, match="cannot run float32"):
        tanh.kernel(np.float32)
    with pytest.raises(OcdlError, match="unknown tanh kernel 'fast'"):
        tanh.use("fast")
    with pytest.raises(OcdlError, match="float64 or float32"):
        tanh.kernel(np.float16)


def test_a_bad_OCDL_TANH_stops_a_run_with_one_line_and_writes_nothing(tmp_path):
    env = {**os.environ, "OCDL_TANH": "fast"}
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "ocdl", "train", *SMALL, "--iterations", "3", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "OCDL_TANH='fast'" in lines[0], p.stderr
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("name", KERNELS)
def test_every_kernel_is_within_one_ulp_and_serves_every_path(name):
    """With each kernel: tanh within 1 ulp of the correctly rounded value (mpmath, 120 bits), the same
    bits in the NumPy and torch namespaces, inside and outside autograd; first and second derivatives
    (gradcheck); the forward sweep, autograd and the partner adjoint evaluate the same E bit for bit
    and their gradients agree to round-off."""
    import mpmath

    from ocdl.engine.torch.adjoint import grad_adjoint

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(2000) * 3, rng.uniform(-25, 25, 500), 10.0 ** rng.uniform(-310, 0, 300),
                        [0.0, -0.0, 1e-300, 19.0, 40.0, -40.0, np.inf, -np.inf]])
    with mpmath.workprec(120):
        ref = np.array([float(mpmath.tanh(mpmath.mpf(v))) if np.isfinite(v) else np.sign(v) for v in x])
    ref = np.where(x == 0, x, ref)
    with tanh.using({"float64": name}):
        assert tanh.kernel(torch.float64) == name
        xp = xp_mod.torch()
        t = torch.tensor(x)
        with torch.inference_mode():
            got = xp.tanh(t).numpy()
        ulp = np.abs(got - ref) / np.spacing(np.abs(ref))
        assert ulp.max() <= 1.0 and np.array_equal(np.signbit(got), np.signbit(ref))
        np.testing.assert_array_equal(xp_mod.NUMPY.tanh(x), got)
        np.testing.assert_array_equal(xp_mod.NUMPY.tanh(x.reshape(4, -1)[:, ::2]), got.reshape(4, -1)[:, ::2])
        tg = torch.tensor(x[:64], requires_grad=True)
        assert torch.equal(xp.tanh(tg).detach(), xp.tanh(tg.detach()))
        s = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
        assert torch.autograd.gradcheck(xp.tanh, (s,)) and torch.autograd.gradgradcheck(xp.tanh, (s,))

        net, prm, Y0, c = setup_net(small_problem(tableau="rk4"))
        with torch.no_grad():
            E0 = net.objective(prm, Y0, c)
        E1, g1 = net.grad_autograd(prm, Y0, c)
        E2, g2 = grad_adjoint(net, prm, Y0, c, form="partner")
        assert float(E0) == float(E1) == float(E2)
        for k in g1:
            scale = float(g1[k].abs().max())
            assert float((g1[k] - g2[k]).abs().max()) <= 1e-12 * max(scale, 1e-300)
    assert tanh.kernel() == tanh.kernel(torch.float64)  # restored after the block


def test_the_kernels_are_not_all_the_same_function():
    """The choice matters: the available kernels differ somewhere in the last bit (else one kernel in
    every path would be vacuous)."""
    x = np.random.default_rng(1).standard_normal(200_000) * 3
    outs = []
    for name in KERNELS:
        out = np.empty_like(x)
        tanh._function(name)(x, out)
        outs.append(out)
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def _train(out, iterations, kernel, resume=False):
    env = {**os.environ, "OCDL_TANH": kernel}
    args = (["--resume", str(out)] if resume else [*SMALL, "--out", str(out)]) + ["--iterations", str(iterations),
                                                                                  "--quiet"]
    p = subprocess.run([sys.executable, "-m", "ocdl", "train", *args], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads((out / "metrics.json").read_text())


def test_a_run_records_its_kernel_and_a_resumed_run_uses_it(tmp_path):
    """A run made with one kernel and resumed in a process whose choice is another continues on the
    recorded kernel: bit for bit the uninterrupted run, which differs from the other kernel's run."""
    first, other = "torch", "numpy"
    full = _train(tmp_path / "full", 40, first)
    assert full["tanh_kernels"] == {"float64": first}
    _train(tmp_path / "part", 15, first)
    part = _train(tmp_path / "part", 40, other, resume=True)
    assert part["tanh_kernels"] == {"float64": first}
    _train(tmp_path / "plain", 40, other)
    a, b, o = (np.load(tmp_path / f / "params.npz") for f in ("full", "part", "plain"))
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    assert any(not np.array_equal(a[k], o[k]) for k in a.files)


def test_the_kernel_is_public_and_a_bad_OCDL_TANH_is_one_line_through_the_api(fresh, monkeypatch):
    import ocdl

    assert "tanh" in ocdl.__all__ and ocdl.tanh.kernel is tanh.kernel and ocdl.tanh.__doc__
    X = np.random.default_rng(0).standard_normal((30, 2))
    prob = ocdl.Problem.from_arrays(X, (X[:, 0] > 0).astype(float), network={"layers": 3, "h": 0.1})
    monkeypatch.setenv("OCDL_TANH", "fast")
    with pytest.raises(OcdlError) as e:
        ocdl.solve(prob, engine="torch", solver="gd-armijo", iterations=2)
    assert "\n" not in str(e.value) and "OCDL_TANH='fast'" in str(e.value)
