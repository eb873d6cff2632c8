"""The command line: outputs, determinism, resume, interruption, and refused input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ocdl.cli import main

SMALL = ["--data", "spiral", "--n", "60", "--layers", "4", "--tableau", "rk4", "--quiet"]


def run_cli(args, capsys):
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_tableau_json(capsys):
    rc, out, _ = run_cli(["tableau", "kutta3", "--json"], capsys)
    d = json.loads(out)
    assert rc == 0
    assert set(d) >= {"name", "A", "b", "c", "explicit", "partner_A", "ode_order", "oc_order"}
    assert (d["ode_order"], d["oc_order"], d["explicit"]) == (3, 3, True)
    rc, out, _ = run_cli(["tableau", "midpoint", "--json"], capsys)
    assert json.loads(out)["partner_A"] is None


def test_train_writes_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, _ = run_cli(["train", *SMALL, "--net", "odenet", "--solver", "gd-armijo", "--iterations", "15", "--out", str(out)], capsys)
    assert rc == 0
    for f in ("config.toml", "metrics.json", "params.npz", "prediction.png", "transformed.png", "objective.png", "timesteps.png"):
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    for k in ("objective", "gradient_norm", "train_accuracy", "test_accuracy", "iterations", "wall_time_s", "history"):
        assert k in m
    assert m["iterations"] == 15 and len(m["history"]["objective"]) == 16
    assert m["history"]["objective"][-1] < m["history"]["objective"][0]
    z = np.load(out / "params.npz")
    assert z["K"].shape == (4, 2, 2) and z["h"].shape == (4,)


def test_determinism_bit_identical(tmp_path, capsys):
    metrics = []
    for name in ("a", "b"):
        rc, _, _ = run_cli(["train", *SMALL, "--iterations", "10", "--out", str(tmp_path / name)], capsys)
        assert rc == 0
        m = json.loads((tmp_path / name / "metrics.json").read_text())
        m.pop("wall_time_s")
        metrics.append(m)
    assert metrics[0] == metrics[1]
    pa, pb = np.load(tmp_path / "a" / "params.npz"), np.load(tmp_path / "b" / "params.npz")
    assert all(np.array_equal(pa[k], pb[k]) for k in pa.files)


def test_iterations_zero_evaluates_and_init_roundtrip(tmp_path, capsys):
    rc, _, _ = run_cli(["train", *SMALL, "--iterations", "5", "--out", str(tmp_path / "a")], capsys)
    rc, _, _ = run_cli(["train", *SMALL, "--iterations", "0", "--init", str(tmp_path / "a"), "--out", str(tmp_path / "b")], capsys)
    assert rc == 0
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert mb["iterations"] == 0 and mb["objective"] == ma["objective"]


@pytest.mark.parametrize("solver", ["gd-lipschitz", "lbfgs", "adam"])
def test_other_solvers_decrease(tmp_path, capsys, solver):
    rc, _, _ = run_cli(["train", *SMALL, "--solver", solver, "--iterations", "20", "--out", str(tmp_path / solver)], capsys)
    m = json.loads((tmp_path / solver / "metrics.json").read_text())
    assert rc == 0 and m["objective"] < m["history"]["objective"][0]


def test_simplex_constraint_kept(tmp_path, capsys):
    rc, _, _ = run_cli(["train", "--data", "donut1d", "--n", "60", "--net", "odenet-simplex", "--layers", "6",
                        "--solver", "gd-lipschitz", "--iterations", "30", "--quiet", "--out", str(tmp_path / "s")], capsys)
    h = np.load(tmp_path / "s" / "params.npz")["h"]
    assert rc == 0 and np.all(h >= 0) and abs(h.sum() - 1.0) < 1e-12


BAD = [
    (["train", "--tableau", "nope"], "unknown tableau 'nope'"),
    (["train", "--layers", "0"], "network.layers: must be ≥ 1"),
    (["train", "--h", "-0.1"], "network.h: must be a finite number > 0"),
    (["train", "--h", "nan"], "network.h: must be a finite number > 0"),
    (["train", "--net", "odenet-simplex", "--time-steps", "fixed"], "needs time_steps 'simplex'"),
    (["train", "--solver", "ipopt"], "solver.name"),
    (["train", "--net", "odenet-simplex", "--solver", "lbfgs"], "cannot keep h on the simplex"),
    (["train", "--W", "1", "2", "3"], "classifier.W: has 3 entries but the width is 2"),
    (["train", "--activation", "swish"], "unknown activation"),
    (["train", "--device", "cuda"], "CUDA is not available"),
    (["train", "--device", "tpu"], "device: 'tpu'"),
    (["train", "--width", "1"], "smaller than the data dimension"),
    (["train", "--data", "missing.csv"], "does not exist"),
    (["train", "--tableau-file", "missing.toml"], "does not exist"),
    (["train", "--iterations", "-3"], "solver.iterations: must be ≥ 0"),
    (["train", "--init", "missing_dir"], "no such run directory"),
    (["tableau"], "exactly one"),
    (["train", "--net", "resnet-ish"], "invalid choice"),
    (["train", "--backend", "casadi", "--formulation", "reduced", "--start", "reduced"], "needs --solver ipopt --formulation full"),
    (["train", "--backend", "casadi", "--solver", "bvp", "--start", "reduced"], "needs --solver ipopt --formulation full"),
]


@pytest.mark.parametrize("args,msg", BAD)
def test_bad_input_one_line_nonzero_no_output(tmp_path, capsys, args, msg):
    out = tmp_path / "out"
    if args[0] == "train":
        args = ["train", "--n", "20", "--iterations", "1", "--quiet", "--out", str(out)] + args[1:]
    with pytest.raises(SystemExit) if msg == "invalid choice" else _nullcontext():
        rc = main(args)
        assert rc == 2
    err = capsys.readouterr().err
    assert msg in err
    assert err.count("\n") == 1 and err.startswith("ocdl: error:")
    assert not out.exists()


def test_bad_init_file_shape(tmp_path, capsys):
    p = tmp_path / "init.npz"
    np.savez(p, K=np.zeros((3, 2, 2)), beta=np.zeros((4, 2)), W=np.zeros(2), mu=np.zeros(()), h=np.full(4, 0.1))
    rc, _, err = run_cli(["train", *SMALL, "--init", str(p), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "K has shape (3, 2, 2), expected (4, 2, 2)" in err and not (tmp_path / "o").exists()
    np.savez(p, K=np.full((4, 2, 2), np.nan), beta=np.zeros((4, 2)), W=np.zeros(2), mu=np.zeros(()), h=np.full(4, 0.1))
    rc, _, err = run_cli(["train", *SMALL, "--init", str(p), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "NaN" in err


def test_bad_labels_file(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("1.0,2.0,0\n0.5,0.1,2.5\n")
    rc, _, err = run_cli(["train", "--data", str(f), "--quiet", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "labels must be the class numbers 0, 1, …, K−1, found 2.5" in err and not (tmp_path / "o").exists()
    f.write_text("1.0,2.0,0\n0.5,0.1,2\n0.3,0.2,2\n")  # no sample of class 1
    rc, _, err = run_cli(["train", "--data", str(f), "--quiet", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "no sample of class 1" in err and not (tmp_path / "o").exists()


def test_refuses_non_empty_out(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x").write_text("keep")
    rc, _, err = run_cli(["train", *SMALL, "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "not empty" in err and (tmp_path / "o" / "x").read_text() == "keep"


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _sigint_when(proc, ready):
    """Wait with ``ready(proc)``, send SIGINT (Ctrl-C), wait for the exit; never leave ``proc`` running."""
    try:
        ready(proc)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_interrupt_then_resume(tmp_path):
    """SIGINT (Ctrl-C) leaves a valid run directory; --resume continues from its iteration."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ocdl", "train", *SMALL, "--iterations", "100000", "--checkpoint-every", "20",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def first_checkpoint(proc):
        deadline = time.time() + 120
        while not (out / "metrics.json").exists():
            assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "timeout"
            time.sleep(0.2)
        time.sleep(0.5)

    _sigint_when(proc, first_checkpoint)
    assert proc.returncode == 130
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "interrupted"
    it_stop = m["iterations"]
    assert 0 < it_stop < 100000 and len(m["history"]["objective"]) == it_stop + 1
    rc = subprocess.run([sys.executable, "-m", "ocdl", "train", "--resume", str(out), "--iterations", str(it_stop + 10), "--quiet"],
                        capture_output=True, text=True, timeout=120)
    assert rc.returncode == 0, rc.stderr
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["status"] == "ok" and m2["iterations"] == it_stop + 10
    assert m2["history"]["iteration"][: it_stop + 1] == m["history"]["iteration"]
    assert m2["history"]["iteration"][-1] == it_stop + 10


@pytest.mark.slow
def test_interrupt_ipopt_then_continue_with_init(tmp_path):
    """SIGINT during an IPOPT solve: IPOPT stops after the iteration (User_Requested_Stop), the run
    directory is valid and marked interrupted (exit 130), and --init continues from it to KKT 1e-10."""
    out, more = tmp_path / "ip", tmp_path / "ip2"
    args = ["train", "--data", "spiral", "--n", "400", "--layers", "10", "--h", "0.1", "--tableau", "rk4",
            "--reg-tikhonov", "1e-3", "--reg-smooth", "1e-3", "--backend", "casadi", "--solver", "ipopt", "--tol", "1e-10"]
    proc = subprocess.Popen([sys.executable, "-m", "ocdl", *args, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def third_iteration(proc):
        for line in proc.stdout:
            if line.startswith("ipopt     2 "):
                break

    _sigint_when(proc, third_iteration)
    assert proc.returncode == 130
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["solver_status"] == "User_Requested_Stop"
    assert 2 <= m["iterations"] < 20 and (out / "params.npz").is_file() and (out / "costates.npz").is_file()
    rc = subprocess.run([sys.executable, "-m", "ocdl", *args, "--init", str(out), "--out", str(more), "--quiet"],
                        capture_output=True, text=True, timeout=300)
    assert rc.returncode == 0, rc.stderr
    m2 = json.loads((more / "metrics.json").read_text())
    assert m2["status"] == "ok" and m2["kkt_residual"] <= 1e-10


def test_resume_equals_uninterrupted(tmp_path, capsys):
    """Stopping after k iterations and resuming gives the same iterate as one run of k + l."""
    run_cli(["train", *SMALL, "--iterations", "12", "--out", str(tmp_path / "full")], capsys)
    run_cli(["train", *SMALL, "--iterations", "5", "--out", str(tmp_path / "part")], capsys)
    rc, _, err = run_cli(["train", "--resume", str(tmp_path / "part"), "--iterations", "12", "--quiet"], capsys)
    assert rc == 0, err
    a, b = np.load(tmp_path / "full" / "params.npz"), np.load(tmp_path / "part" / "params.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_lbfgs_converges_instead_of_freezing():
    """torch.optim.LBFGS with max_iter=1 defaults to max_eval=1, which leaves the strong-Wolfe search
    no evaluation after its first trial: the iterate froze at ‖∇E‖ ≈ 0.3 on this problem. With the
    line-search budget given, L-BFGS converges (a Tikhonov-regularised problem has a minimiser)."""
    from ocdl import training
    from ocdl.problem import DataSpec, NetworkSpec, ObjectiveSpec, Problem, SolverSpec

    prob = Problem(data=DataSpec("spiral", n=200), network=NetworkSpec(family="rk", tableau="euler", layers=15, h=0.1),
                   objective=ObjectiveSpec(tikhonov={k: 1e-3 for k in ("K", "beta", "W", "mu", "h")}, smooth=1e-3),
                   solver=SolverSpec(backend="torch", name="lbfgs", iterations=400))
    _, m = training.train(prob, out=None, quiet=True, figures=False)
    assert m["gradient_norm"] <= 1e-3
    steps = m["history"]["step"][1:]
    assert sum(s == 0.0 for s in steps) <= 5  # no run of rejected steps


@pytest.mark.parametrize("args,msg", [
    (["bench", "solve", "--scaling", "m", "--values", "abc"], "--values: expected comma-separated integers"),
    (["bench", "solve", "--scaling", "N", "--values", "5"], "need at least two integers"),
    (["bench", "solve", "--repeats", "0"], "argument --repeats: expected an integer ≥ 1"),
    (["bench", "solve", "--scaling", "N", "--seeds", "0"], "argument --seeds: expected an integer ≥ 1"),
    (["bench", "solve", "--scaling", "N", "--protocol", "fixed"], "argument --protocol: invalid choice"),
    (["bench", "gradient", "--repeats", "0"], "argument --repeats: expected an integer ≥ 1"),
    (["bench", "gradient", "--train-iterations", "-1"], "argument --train-iterations: expected an integer ≥ 0"),
])
def test_bench_bad_options_one_line(capsys, args, msg):
    try:
        rc = main(args)
    except SystemExit as e:  # argparse type errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and msg in err
    assert err.count("\n") == 1 and err.startswith("ocdl: error:")
