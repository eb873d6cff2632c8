"""``ocdl reproduce``: a quick reproduction of one data set end to end (figures, summary), the
cache (a rerun trains nothing), resume after an interrupted experiment or a Ctrl-C, and the same
experiments sent to an existing Dask cluster on loopback."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ocdl.cli import main
from ocdl.reproduce import experiments

QUICK_SPIRAL = ["reproduce", "paper", "--quick", "--data", "spiral", "--group", "lts,rk", "--jobs", "2"]
NAMES = [f"lts/spiral-{n}" for n in ("net", "resnet", "odenet", "odenet-simplex")] + \
        [f"rk/spiral-{m}" for m in ("euler", "improved-euler", "kutta3", "kutta4")]
FIGURES = ["datasets", "lts-spiral", "lts-spiral-curves", "lts-timesteps", "rk-spiral", "rk-spiral-curves"]


def _mtimes(out):
    return {n: (out / n / "params.npz").stat().st_mtime_ns for n in NAMES}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "paper"
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    t0 = time.perf_counter()
    with redirect_stdout(buf):
        rc = main([*QUICK_SPIRAL, "--out", str(out)])
    return rc, out, buf.getvalue(), time.perf_counter() - t0


def test_quick_reproduction_end_to_end(quick_run):
    rc, out, log, wall = quick_run
    assert rc == 0, log[-2000:]
    for name in NAMES:
        d = out / name
        for f in ("config.toml", "metrics.json", "params.npz", "done.json"):
            assert (d / f).is_file(), (name, f)
        done = json.loads((d / "done.json").read_text())
        assert done["quick"] is True and done["status"] == "ok"
    for fig in FIGURES:
        for fmt in ("png", "pdf"):
            assert (out / "figures" / f"{fig}.{fmt}").stat().st_size > 1000, fig
    # progress: the bar over experiments and forwarded per-experiment lines
    assert re.search(r"\[#+\.*\] \d+/8 experiments", log) and "8/8 experiments" in log
    assert re.search(r"  lts/spiral-resnet: it +\d+ +E ", log)
    print(f"quick spiral reproduction (8 experiments, 2 workers): {wall:.1f} s")


def test_summary_matches_run_directories(quick_run):
    rc, out, _, _ = quick_run
    rows = {r["name"]: r for r in json.loads((out / "summary.json").read_text())}
    assert set(rows) == set(NAMES)
    md = (out / "summary.md").read_text()
    for name in NAMES:
        m = json.loads((out / name / "metrics.json").read_text())
        r = rows[name]
        assert r["objective"] == m["objective"] and r["test_accuracy"] == m["test_accuracy"]
        assert r["iterations"] == m["iterations"] == (500 if name.startswith("lts") else 250)
        hist = m["history"]["objective"]
        assert hist[-1] < hist[0], f"{name}: the objective did not decrease"
        assert f"{m['objective']:.4e}" in md
    h = np.load(out / "lts/spiral-odenet-simplex/params.npz")["h"]
    assert rows["lts/spiral-odenet-simplex"]["nonzero_steps"] == int(np.sum(h > 1e-8)) < 20
    h = np.load(out / "lts/spiral-odenet/params.npz")["h"]
    assert rows["lts/spiral-odenet"]["nonzero_steps"] == int(np.sum(np.abs(h) > 1e-8))
    assert rows["lts/spiral-resnet"]["nonzero_steps"] is None
    # the quick runs learn (regression guard: deterministic, seeded runs)
    for name in NAMES:
        if not name.endswith("-net"):
            assert rows[name]["train_accuracy"] >= 0.9, (name, rows[name])


def test_rerun_is_cached_and_resumes_an_interrupted_experiment(quick_run, capsys):
    rc, out, _, _ = quick_run
    before = _mtimes(out)
    params_before = dict(np.load(out / "lts/spiral-net/params.npz"))
    # 1) a rerun trains nothing
    assert main([*QUICK_SPIRAL, "--out", str(out), "--no-figures"]) == 0
    log = capsys.readouterr().out
    assert _mtimes(out) == before
    assert all(f"{n}: cached" in log for n in NAMES) and "experiment(s) on" not in log
    # 2) an experiment interrupted mid-way (no done.json, partial files) is redone, alone
    victim = out / "lts/spiral-net"
    (victim / "done.json").unlink()
    (victim / "params.npz").write_bytes(b"partial")
    assert main([*QUICK_SPIRAL, "--out", str(out), "--no-figures"]) == 0
    log = capsys.readouterr().out
    assert "running 1 experiment(s)" in log and "done lts/spiral-net" in log
    after = _mtimes(out)
    assert all(after[n] == before[n] for n in NAMES if n != "lts/spiral-net")
    assert (victim / "done.json").is_file()
    params_after = np.load(victim / "params.npz")
    assert all(np.array_equal(params_before[k], params_after[k]) for k in params_before)  # bit-identical rerun


def test_full_mode_refuses_to_replace_quick_results(quick_run, capsys):
    rc, out, _, _ = quick_run
    before = _mtimes(out)
    assert main(["reproduce", "paper", "--data", "spiral", "--group", "lts", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds a --quick result" in err and err.count("\n") == 1
    assert _mtimes(out) == before


def test_list_and_bad_input(tmp_path, capsys):
    assert main(["reproduce", "paper", "--list", "--quick", "--data", "spiral", "--out", str(tmp_path / "x")]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 12 and all(line.rstrip().endswith("missing") for line in listed)
    assert main(["reproduce", "paper", "--data", "nosuch", "--out", str(tmp_path / "y")]) == 2
    assert "no experiment of target 'paper' matches --data nosuch" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    with pytest.raises(SystemExit):
        main(["reproduce", "paper", "--jobs", "0", "--out", str(tmp_path / "z")])


def test_quick_variant():
    full = {e.name: e.problem for e in experiments.select("paper", data=["donut1d"], groups=["lts", "rk"])}
    quick = {e.name: e.problem for e in experiments.select("paper", data=["donut1d"], groups=["lts", "rk"], quick_mode=True)}
    for name, p in full.items():
        q = quick[name]
        assert q.solver.iterations == max(50, p.solver.iterations // 40)
        assert q.data.n == min(200, p.data.n)
        assert q.replace(data=p.data, solver=p.solver) == p  # nothing else changes


def _env():
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.slow
def test_ctrl_c_then_resume(tmp_path):
    """SIGINT while the second of two experiments runs: the first stays cached, the second reruns."""
    out = tmp_path / "paper"
    pair = ("lts/donut1d-resnet", "lts/donut1d-odenet")
    args = [sys.executable, "-m", "ocdl", "reproduce", "paper", "--quick", "--only", *pair,
            "--jobs", "1", "--no-figures", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                            start_new_session=True)
    lines = []
    try:
        deadline = time.time() + 120
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("done "):
                os.killpg(proc.pid, signal.SIGINT)  # like Ctrl-C in a terminal: the whole process group
                break
            assert time.time() < deadline, "".join(lines)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the session started above
    lines.append(rest)
    log = "".join(lines)
    assert proc.returncode == 130, log
    assert "rerun the same command to resume" in log and "Traceback" not in log
    finished = [n for n in pair if (out / n / "done.json").is_file()]
    assert len(finished) == 1, log
    assert not any(p.name.endswith(".tmp") for p in (out / "lts").iterdir())
    mtime = (out / finished[0] / "params.npz").stat().st_mtime_ns
    res = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{finished[0]}: cached" in res.stdout and "running 1 experiment(s)" in res.stdout
    assert (out / finished[0] / "params.npz").stat().st_mtime_ns == mtime
    assert all((out / n / "done.json").is_file() for n in pair)


@pytest.mark.slow
def test_existing_dask_cluster_on_loopback(tmp_path, capsys):
    """`--scheduler ADDRESS`: a `dask scheduler` and a `dask worker` started as separate processes
    (`python -m dask` of the running interpreter, so that the venv's bin need not be on PATH)."""
    sched_file = tmp_path / "scheduler.json"
    procs = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(sched_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()))
        deadline = time.time() + 60
        while not sched_file.is_file():
            assert time.time() < deadline, "the dask scheduler did not start"
            time.sleep(0.2)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
             "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()))
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        from distributed import Client

        with Client(address, timeout="30s") as c:
            c.wait_for_workers(1, timeout=60)
        out = tmp_path / "paper"
        rc = main(["reproduce", "paper", "--quick", "--only", "lts/donut1d-resnet", "--scheduler", address,
                   "--no-figures", "--out", str(out)])
        log = capsys.readouterr().out
        assert rc == 0, log
        assert f"the Dask scheduler {address}" in log and "done lts/donut1d-resnet" in log
        assert json.loads((out / "lts/donut1d-resnet/done.json").read_text())["status"] == "ok"
        assert main(["reproduce", "paper", "--jobs", "2", "--scheduler", address, "--out", str(out)]) == 2
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
