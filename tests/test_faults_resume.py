"""Faults while a run writes its directory: Ctrl-C and SIGKILL at random moments, a second Ctrl-C,
two runs into one directory, output paths that cannot be created, damaged run directories.

The slow tests run real ``ocdl train`` processes and interrupt them at moments drawn from
``numpy.random.default_rng(seed)`` (fractions of the uninterrupted run's training time); every
interrupted run is continued with ``--resume`` and must end with the uninterrupted run's
parameters, history and optimiser state, bit for bit. They print their schedule and outcomes
(``pytest -s``)."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from ocdl import rundir, training
from ocdl.cli import main as _main
from ocdl.errors import OcdlError
from ocdl.interrupt import DeferSigint, StopOnSigint

SMALL = ["--data", "spiral", "--n", "60", "--layers", "4", "--tableau", "rk4"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def main(args) -> int:
    return _main([str(a) for a in args])


def ocdl(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "ocdl", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def contents(folder) -> dict:
    """{relative path: bytes} of every file under ``folder`` (and the folders, as None)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        out[p.relative_to(folder).as_posix()] = p.read_bytes() if p.is_file() else None
    return out


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ocdl: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------ Ctrl-C held back
def test_defer_sigint_holds_a_ctrl_c_to_the_end_of_the_block():
    reached = False
    with pytest.raises(KeyboardInterrupt):
        with DeferSigint() as d:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            reached = True
            assert d.pending
    assert reached and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with DeferSigint(deliver=False) as d:  # only recorded
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
    assert d.pending
    with DeferSigint() as d:
        pass
    assert not d.pending


def test_a_ctrl_c_while_a_figure_is_drawn_stays_an_interrupt(tmp_path, monkeypatch):
    """A SIGINT that lands in Python code called from matplotlib's compiled renderer (here
    Bbox.__array__) is caught there and reported as "ValueError: Invalid bounding box"; drawn by
    save_figure it ends as KeyboardInterrupt and writes nothing. Under StopOnSigint (a flag only)
    the figure is written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.transforms as mtransforms

    original = mtransforms.BboxBase.__array__
    calls = []

    def array(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)
        return original(self, *args, **kwargs)

    def figure():
        calls.clear()
        fig, ax = plt.subplots()
        x = np.linspace(-1, 1, 20)
        ax.contourf(x, x, np.outer(x, x))
        return fig

    monkeypatch.setattr(mtransforms.BboxBase, "__array__", array)
    with pytest.raises(KeyboardInterrupt):
        rundir.save_figure(figure(), tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists() and calls
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with StopOnSigint() as stop:
        rundir.save_figure(figure(), tmp_path / "b.png")
    assert stop.requested and (tmp_path / "b.png").stat().st_size > 0
    plt.close("all")


def test_an_interrupted_iteration_is_discarded_whole(monkeypatch):
    """A Ctrl-C inside the step computation of iteration k+1 (after the optimiser's state moved):
    the result is iteration k, whole: parameters, α_prev/L or the torch state, history — equal to
    a run of k iterations; resuming from it equals the uninterrupted run."""
    import ocdl
    from ocdl.engine.torch import optim

    prob = ocdl.Problem(data=ocdl.problem.DataSpec("spiral", n=40),
                        network=ocdl.problem.NetworkSpec(family="odenet", tableau="rk4", layers=3))
    for solver, step in (("gd-armijo", "_armijo_step"), ("gd-lipschitz", "_lipschitz_step"),
                         ("adam", "_torch_step"), ("lbfgs", "_torch_step")):
        p = prob.replace(solver__name=solver, solver__iterations=9)
        full, _ = training.train(p, quiet=True)
        ref, _ = training.train(p.replace(solver__iterations=6), quiet=True)
        real = getattr(optim, step)
        calls = {"n": 0}

        def broken(*a, real=real, calls=calls):
            calls["n"] += 1
            out = real(*a)  # the step is done (state mutated where the optimiser does it) ...
            if calls["n"] == 7:
                raise KeyboardInterrupt  # ... and Ctrl-C lands before its commit
            return out

        monkeypatch.setattr(optim, step, broken)
        cut, _ = training.train(p, quiet=True)
        monkeypatch.setattr(optim, step, real)
        assert cut.interrupted and cut.iterations == 6, solver
        for k in ref.params:
            assert np.array_equal(cut.params[k], ref.params[k]), (solver, k)
        assert cut.history == ref.history, solver
        assert same_tree(cut.state, ref.state), solver  # α_prev / L, the iteration, the torch state
        res = optim_resume(p, cut)
        for k in full.params:
            assert np.array_equal(res.params[k], full.params[k]), (solver, k)
        assert res.history == full.history, solver


def same_tree(a, b) -> bool:
    """Equal nested dicts/lists of numbers and tensors (tensors bit for bit)."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_tree(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_tree(x, y) for x, y in zip(a, b))
    return a == b


def optim_resume(problem, cut):
    from ocdl import api
    from ocdl.engine.base import RunContext

    engine, data, params0 = api.prepare(problem, cut.params)
    state = dict(cut.state)
    if "torch_optimizer" in state:  # as written to optimizer.pt and read back
        import io

        import torch

        buf = io.BytesIO()
        torch.save(state["torch_optimizer"], buf)
        state["torch_optimizer"] = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    return engine.solve(problem, data, params0, RunContext(state=state, history=cut.history))


# ------------------------------------------------------------------ snapshots
def test_a_snapshot_killed_after_its_commit_is_read_whole_and_completed(tmp_path, capsys):
    """Killed between the commit (rename of the staging folder) and the last move into place: the
    directory holds a mix of old and new files, yet every reader sees the new snapshot, and the next
    writer completes it; resuming from it equals the uninterrupted run."""
    out, newer, full = tmp_path / "run", tmp_path / "newer", tmp_path / "full"
    assert main(["train", *SMALL, "--solver", "adam", "--iterations", "4", "--out", out, "--quiet"]) == 0
    assert main(["train", *SMALL, "--solver", "adam", "--iterations", "7", "--out", newer, "--quiet"]) == 0
    assert main(["train", *SMALL, "--solver", "adam", "--iterations", "12", "--out", full, "--quiet"]) == 0
    capsys.readouterr()
    commit = out / rundir.COMMIT
    commit.mkdir()
    names = ["config.toml", "metrics.json", "optimizer.pt", "params.npz", "state.json"]
    for name in names:
        shutil.copy(newer / name, commit / name)
    (commit / rundir.MANIFEST).write_text(json.dumps({"files": names, "remove": ["costates.npz"]}))
    for name in ("params.npz", "optimizer.pt"):  # these two were moved into place before the kill
        os.replace(commit / name, out / name)
    problem, params, metrics = rundir.load(out)
    assert metrics == json.loads((newer / "metrics.json").read_text()) and metrics["iterations"] == 7
    assert rundir.load_state(out) == json.loads((newer / "state.json").read_text())
    with np.load(newer / "params.npz") as z:
        assert all(np.array_equal(params[k], z[k]) for k in z.files)
    assert main(["train", "--resume", out, "--iterations", "12", "--quiet"]) == 0
    assert not commit.exists() and not (out / rundir.LOCK).exists()
    assert not any(p.name.startswith(rundir.STAGE_PREFIX) for p in out.iterdir())
    assert_same_run(out, full)


def test_a_snapshot_interrupted_before_its_commit_leaves_the_previous(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--iterations", "4", "--out", out, "--quiet"]) == 0
    before = contents(out)
    with rundir.RunLock(out):
        with pytest.raises(KeyboardInterrupt):
            with rundir.snapshot(out) as stage:
                (stage / "params.npz").write_bytes(b"half")
                raise KeyboardInterrupt
    assert contents(out) == before


def assert_same_run(a, b):
    """Parameters, optimiser state, iteration count and history of two run directories: equal, bit for bit."""
    with np.load(a / "params.npz") as za, np.load(b / "params.npz") as zb:
        assert za.files == zb.files
        diff = max(float(np.max(np.abs(za[k] - zb[k]))) for k in za.files)
        same = all(np.array_equal(za[k], zb[k]) for k in za.files)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert same, f"max |Δ| = {diff:.3e}"
    assert ma["iterations"] == mb["iterations"] and ma["status"] == mb["status"] == "ok"
    assert ma["history"] == mb["history"]
    assert json.loads((a / "state.json").read_text()) == json.loads((b / "state.json").read_text())
    return diff


def test_checkpoints_by_time_are_on_by_default():
    from ocdl.engine import base as engines

    for opts in engines.get("torch").options.values():
        assert opts["checkpoint_seconds"].default == 30.0 and opts["checkpoint_every"].default == 0


def test_checkpoint_by_time_writes_a_snapshot_while_the_run_goes_on(tmp_path, capsys, monkeypatch):
    """checkpoint_seconds: the first snapshot is written once that much time has passed (a fake
    clock here: 1 s per iteration), marked 'unfinished', and holds one iteration whole."""
    from ocdl.engine.torch import optim

    seen = []
    clock = {"t": 0.0}  # one second per reading: read once per iteration and once after a snapshot

    def monotonic():
        clock["t"] += 1.0
        return clock["t"]

    monkeypatch.setattr(optim, "_clock", monotonic)
    real = rundir.snapshot

    @contextlib.contextmanager
    def watching(out, **kw):
        with real(out, **kw) as stage:
            yield stage
        m = json.loads((out / "metrics.json").read_text())
        seen.append((m["status"], m["iterations"], json.loads((out / "state.json").read_text())["iteration"],
                     m["history"]["iteration"][-1]))

    monkeypatch.setattr(rundir, "snapshot", watching)
    assert main(["train", *SMALL, "--iterations", "10", "--checkpoint-seconds", "3.5", "--out", tmp_path / "r",
                 "--quiet"]) == 0
    ckpts = [s for s in seen if s[0] == "unfinished" and s[1] < 10]
    assert [s[1] for s in ckpts] == [4, 8] and all(s[1] == s[2] == s[3] for s in ckpts), seen
    assert seen[-1][0] == "ok" and seen[-2][0] == "unfinished" and seen[-2][1] == 10  # the fast one, then the full


# ------------------------------------------------------------------ the lock
def test_a_second_run_into_a_locked_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with rundir.RunLock(out) as lock:
        assert rundir.lock_holder(out) == f"pid {os.getpid()}"
        for args in (["--out", out], ["--out", out, "--force"]):
            rc = main(["train", *SMALL, "--iterations", "3", "--quiet", *args])
            err = one_line(capsys.readouterr().err)
            assert rc == 2 and f"is in use by another ocdl process (pid {os.getpid()})" in err
        with pytest.raises(OcdlError, match="in use"):
            rundir.RunLock(out).acquire()
        assert lock.fd is not None
    assert not (out / rundir.LOCK).exists() and rundir.lock_holder(out) is None
    assert main(["train", *SMALL, "--iterations", "3", "--quiet", "--out", out]) == 0


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / rundir.LOCK).write_text(json.dumps({"pid": dead.pid}) + "\n")
    assert rundir.lock_holder(out) is None
    lines = []
    res, _ = training.train(training_problem(3), out=out, log=lines.append, figures=False)
    assert res.success and any(f"took over the lock left by pid {dead.pid}" in s for s in lines)
    assert not (out / rundir.LOCK).exists() and (out / "params.npz").is_file()


def test_without_flock_the_lock_is_an_exclusive_file_with_a_pid(tmp_path, monkeypatch):
    """Where fcntl is missing: the lock file is created with O_EXCL; a live pid in it refuses, a
    dead one's is taken over."""
    monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl → ImportError
    out = tmp_path / "run"
    out.mkdir()
    with rundir.RunLock(out):
        assert rundir.lock_holder(out) == f"pid {os.getpid()}"
        with pytest.raises(OcdlError, match=f"in use by another ocdl process \\(pid {os.getpid()}\\)"):
            rundir.RunLock(out).acquire()
    assert not (out / rundir.LOCK).exists() and rundir.lock_holder(out) is None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / rundir.LOCK).write_text(json.dumps({"pid": dead.pid}))
    assert rundir.lock_holder(out) is None
    with rundir.RunLock(out) as lock:
        assert lock.stale == f"pid {dead.pid}"
        assert json.loads((out / rundir.LOCK).read_text()) == {"pid": os.getpid()}
    assert not (out / rundir.LOCK).exists()


def training_problem(iterations, solver="gd-armijo"):
    from ocdl.problem import DataSpec, NetworkSpec, Problem, SolverSpec

    return Problem(data=DataSpec("spiral", n=60), network=NetworkSpec(family="rk", tableau="rk4", layers=4),
                   solver=SolverSpec(name=solver, iterations=iterations))


def test_a_run_that_fails_before_writing_leaves_nothing(tmp_path, capsys, monkeypatch):
    """An error inside the solve before the first snapshot: the folders made for the run and
    the lock are removed again."""
    from ocdl.engine.torch import TorchEngine

    def fail(*a, **k):
        raise OcdlError("no such device")

    monkeypatch.setattr(TorchEngine, "solve", fail)
    rc = main(["train", *SMALL, "--iterations", "3", "--quiet", "--out", tmp_path / "a" / "b"])
    assert rc == 2 and "no such device" in one_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_two_processes_into_one_directory(tmp_path):
    """Two real `ocdl train` into one --out at once: the second is refused with one line (also with
    --force or --resume) while the first runs; the first ends normally and removes its lock; a run
    killed with SIGKILL leaves a stale lock, which the next run takes over."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "ocdl", "train", *SMALL, "--iterations", "1000000", "--out",
                              str(out), "--checkpoint-seconds", "0.2"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        wait_for(lambda: (out / "metrics.json").exists(), first)
        for extra in ([], ["--force"]):
            r = ocdl("train", *SMALL, "--iterations", "5", "--out", out, *extra)
            assert r.returncode == 2 and f"in use by another ocdl process (pid {first.pid})" in one_line(r.stderr)
        r = ocdl("train", "--resume", out)
        assert r.returncode == 2 and f"in use by another ocdl process (pid {first.pid})" in one_line(r.stderr)
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130 and not (out / rundir.LOCK).exists()
    # SIGKILL: the lock file stays, and is stale
    killed = subprocess.Popen([sys.executable, "-m", "ocdl", "train", "--resume", str(out), "--iterations", "1000000"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        wait_for(lambda: rundir.lock_holder(out) == f"pid {killed.pid}", killed)
        killed.kill()
        killed.wait(timeout=60)
    finally:
        if killed.poll() is None:
            killed.kill()
    assert (out / rundir.LOCK).exists() and rundir.lock_holder(out) is None
    r = ocdl("train", "--resume", out, "--iterations", str(json.loads((out / "metrics.json").read_text())["iterations"] + 3))
    assert r.returncode == 0, r.stderr
    assert f"took over the lock left by pid {killed.pid}" in r.stdout and not (out / rundir.LOCK).exists()


def wait_for(cond, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timeout"
        time.sleep(0.05)


# ------------------------------------------------------------------ --out checked before any work
def bad_outs(tmp_path):
    (tmp_path / "afile").write_text("x")
    return [("/proc/ocdl-x", "cannot create it in '/proc'"), (tmp_path / "afile" / "sub", "is not a directory"),
            (tmp_path / ("n" * 300), "is 300 bytes; the file system allows 255"),
            (tmp_path / "new" / ("m" * 256) / "deeper", "is 256 bytes")]


@pytest.mark.parametrize("command", ["train", "run", "demo"])
def test_an_output_path_that_cannot_be_created_is_refused_before_any_work(tmp_path, capsys, monkeypatch, command):
    from ocdl.engine.casadi import CasadiEngine
    from ocdl.engine.torch import TorchEngine

    def no_work(*a, **k):
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(TorchEngine, "solve", no_work)
    monkeypatch.setattr(CasadiEngine, "solve", no_work)
    args = {"train": ["train", *SMALL, "--iterations", "5"], "run": ["run", "paper/rk/spiral-kutta4", "--quick"],
            "demo": ["demo", "--quick"]}[command]
    for out, message in bad_outs(tmp_path):
        before = sorted(p.name for p in tmp_path.iterdir())
        rc = main([*args, "--out", str(out), "--quiet"] if command != "demo" else [*args, "--out", str(out), "--quiet"])
        err = one_line(capsys.readouterr().err)
        assert rc == 2 and message in err, err
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not os.path.exists("/proc/ocdl-x")


# ------------------------------------------------------------------ damaged run directories
@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("good")
    out = base / "run"
    assert main(["train", *SMALL, "--solver", "adam", "--iterations", "6", "--out", str(out), "--quiet"]) == 0
    return out


def _npz_bytes(**arrays):
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _torch_bytes(obj):
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class Evil:  # a pickled class: torch.load(weights_only=True) refuses it
    pass


def damages(good):
    """(file, description, bytes) of damaged files, from the good run's own."""
    import torch

    m = json.loads((good / "metrics.json").read_text())
    with np.load(good / "params.npz") as z:
        params = {k: z[k] for k in z.files}
    opt_big = torch.load(good / "optimizer.pt", weights_only=True)
    opt_big["state"][0]["exp_avg"] = torch.zeros(7, dtype=torch.float64)
    out = []
    for name in ("metrics.json", "params.npz", "state.json", "optimizer.pt"):
        raw = (good / name).read_bytes()
        out += [(name, "truncated", raw[: len(raw) // 2]), (name, "empty", b"")]
    out += [
        ("metrics.json", "a list", b"[1, 2]\n"),
        ("metrics.json", "binary", bytes(range(256))),
        ("metrics.json", "objective a string", json.dumps({**m, "objective": "low"}).encode()),
        ("metrics.json", "history not lists", json.dumps({**m, "history": {"objective": 3}}).encode()),
        ("metrics.json", "iterations a float", json.dumps({**m, "iterations": 6.5}).encode()),
        ("params.npz", "a string array", _npz_bytes(**{**params, "K": np.array(["a", "b"])})),
        ("params.npz", "no K", _npz_bytes(**{k: v for k, v in params.items() if k != "K"})),
        ("params.npz", "an .npy", _npy_bytes(params["K"])),
        ("params.npz", "K of another shape", _npz_bytes(**{**params, "K": np.zeros(3)})),
        ("state.json", "a list", b"[]"),
        ("state.json", "iteration a string", b'{"iteration": "6"}'),
        ("state.json", "iteration negative", b'{"iteration": -1}'),
        ("state.json", "another iteration", b'{"iteration": 3}'),
        ("optimizer.pt", "a list", _torch_bytes([1, 2, 3])),
        ("optimizer.pt", "a pickled class", _pickle_bytes(Evil())),
        ("optimizer.pt", "a tensor of another size", _torch_bytes(opt_big)),
        ("optimizer.pt", "another optimiser", _torch_bytes({"state": {}, "param_groups": [{"lr": 1.0, "params": [0]}]})),
    ]
    return out


def _npy_bytes(a):
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _pickle_bytes(obj):
    import pickle

    return pickle.dumps(obj)


def test_damaged_run_directories_are_refused_with_one_line_and_left_untouched(good_run, tmp_path, capsys):
    """train --resume, compare and stability network, each file truncated, empty or of the wrong
    type: exit 2, one line naming the file, every byte of the directory as it was."""
    cases = 0
    for name, what, raw in damages(good_run):
        d = tmp_path / f"{name}-{what.replace(' ', '_')}"
        shutil.copytree(good_run, d)
        (d / name).write_bytes(raw)
        before = contents(d)
        commands = [["train", "--resume", str(d), "--quiet"]]
        if name in ("metrics.json", "params.npz"):
            commands += [["compare", str(d), str(good_run)], ["stability", "network", str(d), "--pairs", "10"]]
        for cmd in commands:
            if name == "params.npz" and what == "K of another shape" and cmd[0] == "compare":
                continue  # compare's business is other runs' shapes (a separate message below)
            rc = main(cmd)
            err = one_line(capsys.readouterr().err)
            assert rc == 2 and name in err, (name, what, cmd, err)
            assert contents(d) == before, (name, what, cmd)
            cases += 1
    rc = main(["compare", str(tmp_path / "params.npz-K_of_another_shape"), str(good_run)])
    assert rc == 2 and "not comparable: parameter K" in one_line(capsys.readouterr().err)
    assert cases >= 40


def test_a_damaged_costates_file_is_refused_by_compare(good_run, tmp_path, capsys):
    d = tmp_path / "c"
    shutil.copytree(good_run, d)
    (d / "costates.npz").write_bytes(b"PK\x03\x04 truncated")
    assert main(["compare", str(d), str(good_run)]) == 2
    assert "costates.npz" in one_line(capsys.readouterr().err)


# ------------------------------------------------------------------ Ctrl-C and SIGKILL at random moments
# (iterations, extra flags): each run trains about 1–2 s on an idle machine
RUNS = {
    "gd-armijo": (1000, []),
    "gd-lipschitz": (1000, ["--net", "odenet"]),
    "lbfgs": (300, []),
    "adam": (500, []),
    # minibatches: 60 samples in batches of 16, 4 steps an epoch; a case name 'solver+what'
    "sgd+batch": (1500, ["--batch-size", "16", "--lr", "0.05", "--nesterov"]),
    "adam+batch": (1500, ["--batch-size", "16"]),
    "newton": (60, ["--tol", "0"]),
    # the native engine: its compiled gd-armijo loop (blocks committed whole) and its compiled H·v
    "gd-armijo+native": (4000, ["--backend", "native"]),
    "newton+native": (60, ["--backend", "native", "--tol", "0"]),
}
SEEDS = {"gd-armijo": 11, "gd-lipschitz": 12, "lbfgs": 13, "adam": 14, "sgd+batch": 15, "adam+batch": 16, "newton": 17,
         "gd-armijo+native": 18, "newton+native": 19}
# snapshots often (each one evaluation and a few fsyncs), so that signals land inside them too
SNAPSHOTS = ["--checkpoint-every", "40", "--checkpoint-seconds", "0.25"]


def start(out, args):
    """Start `ocdl train`; return when its first progress line (iteration 0) is out. Its stdout
    lines are collected with their arrival times, its stderr apart (both by threads)."""
    proc = subprocess.Popen([sys.executable, "-m", "ocdl", "train", *map(str, args), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    lines, errs = [], []
    started = threading.Event()

    def read_out():
        for line in proc.stdout:
            lines.append((time.monotonic(), line))
            if line.startswith("it "):
                started.set()
        started.set()

    readers = [threading.Thread(target=read_out, daemon=True),
               threading.Thread(target=lambda: errs.append(proc.stderr.read()), daemon=True)]
    for t in readers:
        t.start()
    if not started.wait(120) or proc.poll() is not None and not lines:
        proc.kill()
        raise AssertionError("no progress line")
    return proc, time.monotonic(), lines, (readers, errs)


def finish(proc, readers, timeout=300):
    """Wait for the exit (kill after ``timeout``); (exit code, stderr)."""
    threads, errs = readers
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for t in threads:
        t.join(30)
    return proc.returncode, "".join(errs)


@pytest.mark.slow
@pytest.mark.parametrize("solver", list(RUNS))
def test_signals_at_random_moments_then_resume_bit_for_bit(solver, tmp_path, capsys):
    """An uninterrupted run, then runs stopped at seeded random moments (fractions u of the
    uninterrupted run's training time, from its first progress line to its last): two single Ctrl-C, one
    double Ctrl-C (the second 0.3 s after the first, inside the final evaluation or figures) and
    one SIGKILL (after the first snapshots); each continued with --resume to the end. The final
    parameters, history and state equal the uninterrupted run's, bit for bit."""
    iterations, extra = RUNS[solver]
    if "native" in solver:
        pytest.importorskip("numba")
    args = [*SMALL, "--solver", solver.split("+")[0], "--iterations", iterations, *extra, *SNAPSHOTS]
    ref = tmp_path / "ref"
    proc, t0, lines, reader = start(ref, args)
    rc, err = finish(proc, reader)
    assert rc == 0, err
    # the training loop's time: first progress line (iteration 0) → the last (iteration `iterations`)
    duration = next(t for t, line in lines if line.split()[:2] == ["it", str(iterations)]) - t0
    rng = np.random.default_rng(SEEDS[solver])
    schedule = [("SIGINT", u) for u in rng.uniform(0.02, 1.0, 2)] + [("SIGINT×2", rng.uniform(0.02, 1.0)),
                                                                      ("SIGKILL", rng.uniform(0.3, 1.0))]
    report = [f"{solver}: uninterrupted {iterations} iterations, {duration:.2f} s from the first progress line "
              "to the last"]
    stopped = []
    for i, (kind, u) in enumerate(schedule):
        out = tmp_path / f"cut{i}"
        proc, t0, _, reader = start(out, args)
        time.sleep(max(0.0, t0 + u * duration - time.monotonic()))
        at = time.monotonic() - t0
        if kind == "SIGKILL":
            proc.kill()
        else:
            proc.send_signal(signal.SIGINT)
            if kind == "SIGINT×2":
                time.sleep(0.3)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
        rc, err = finish(proc, reader)
        assert "Traceback" not in err, err
        m = json.loads((out / "metrics.json").read_text())
        stopped.append((out, kind, u, at, rc, m["status"], m["iterations"]))
        # 130: stopped by Ctrl-C; 0: the run had ended; -2: a Ctrl-C while the interpreter exits
        assert rc in ((-9,) if kind == "SIGKILL" else (130, 0, -2)), (kind, u, stopped[-1], err)
    for out, kind, u, at, rc, status, it in stopped:
        # `ocdl train --resume` in this process (no timing here; spares a start of Python and torch)
        assert main(["train", "--resume", out, "--quiet"]) == 0, (kind, u, rc, status, it)
        diff = assert_same_run(out, ref)
        report.append(f"  {kind:8s} at u = {u:.3f} ({at:.2f} s): exit {rc}, status {status!r} at iteration {it}; "
                      f"resumed: max |Δ params| = {diff:g}, history and state equal")
    with capsys.disabled():
        print("\n" + "\n".join(report))
