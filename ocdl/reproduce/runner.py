"""Run experiments on a Dask cluster, cache finished ones, and resume an interrupted reproduction.

Each experiment is one task, :func:`run_experiment`: the worker trains the problem
(:func:`ocdl.training.train`) into a private temporary folder and returns the files of the run
directory; the client installs them under ``OUT/<group>/<data>-<variant>/`` atomically (a
temporary folder renamed into place) with ``done.json`` (cache key, status) written inside it
before the rename. So a run directory with ``done.json`` is complete, and one without it does not
exist: an interrupted reproduction reruns only the experiments that had not finished. Workers need
no shared file system, so ``--scheduler ADDRESS`` works with any Dask cluster whose workers can
import ocdl.

The cache key is a hash of the problem's plain data (:attr:`Experiment.key`): editing a problem
file reruns that experiment. Results of the other mode (``--quick`` against full) are never
replaced silently: that is refused unless ``force``.

Progress: a bar over experiments (done / total, running, elapsed) after each one finishes, and
the workers' per-iteration progress lines, forwarded through Dask's event log (topic
``ocdl-progress``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ocdl import rundir
from ocdl.errors import OcdlError
from ocdl.reproduce.experiments import Experiment

TOPIC = "ocdl-progress"
DONE = "done.json"


# ------------------------------------------------------------------------------ worker side
def run_experiment(name: str, problem_dict: dict, forward: bool = True, figures: bool = True) -> dict:
    """Train one experiment (on a Dask worker); return {'files': {relpath: bytes}, 'status', …}.
    ``figures``: the run directory's own figures (prediction.png, …; skipped by --quick)."""
    from ocdl import problem as problem_mod, training

    problem = problem_mod.from_dict(problem_dict, source=name)
    with tempfile.TemporaryDirectory(prefix="ocdl-experiment-") as tmp:
        out = Path(tmp) / "run"
        log = _forwarder(name, strip=f" -> {out}") if forward else None
        _, metrics = training.train(problem, out=out, log=log, quiet=log is None, figures=figures)
        files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    return {
        "name": name,
        "files": files,
        "status": metrics["status"],
        "message": metrics.get("message", ""),
        "wall_time_s": metrics["wall_time_s"],
        "objective": metrics["objective"],
        "train_accuracy": metrics["train_accuracy"],
        "test_accuracy": metrics["test_accuracy"],
    }


def _forwarder(name: str, strip: str = "") -> Callable[[str], None] | None:
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None

    def log(line: str) -> None:
        worker.log_event(TOPIC, {"name": name, "line": line.replace(strip, "") if strip else line})

    return log


# ------------------------------------------------------------------------------ cache
def run_dir(out: Path, exp: Experiment) -> Path:
    return Path(out) / exp.group / f"{exp.data}-{exp.variant}"


def cached(out: Path, exp: Experiment, quick_mode: bool) -> tuple[str, dict]:
    """('done' | 'missing' | 'changed' | 'other-mode', done.json content or {})."""
    import json

    p = run_dir(out, exp) / DONE
    if not p.is_file():
        return "missing", {}
    try:
        info = json.loads(p.read_text())
    except (OSError, ValueError):
        return "missing", {}
    if bool(info.get("quick")) != bool(quick_mode):
        return "other-mode", info
    if info.get("key") != exp.key:
        return "changed", info
    return "done", info


def install(target: Path, files: dict[str, bytes], done: dict) -> None:
    """Write a run directory atomically: files and done.json into a temporary sibling folder,
    then rename it into place (replacing an older version)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = None
    try:
        for rel, data in files.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        rundir.write_json(tmp / DONE, done)
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------ progress
@dataclass
class Progress:
    """A text progress bar over experiments plus forwarded per-experiment lines."""

    total: int
    log: Callable[[str], None]
    verbose: bool = True
    done: int = 0
    running: int = 0
    t0: float = field(default_factory=time.perf_counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bar(self, width: int = 24) -> str:
        k = int(round(width * self.done / max(1, self.total)))
        el = time.perf_counter() - self.t0
        return (f"[{'#' * k}{'.' * (width - k)}] {self.done}/{self.total} experiments, "
                f"{self.running} running, elapsed {int(el // 60):d}m{el % 60:04.1f}s")

    def line(self, text: str) -> None:
        with self.lock:
            self.log(text)

    def event(self, event) -> None:
        """Handler of the ``ocdl-progress`` topic: (timestamp, {'name', 'line'})."""
        if not self.verbose:
            return
        msg = event[1] if isinstance(event, tuple) else event
        if isinstance(msg, dict):
            self.line(f"  {msg.get('name')}: {msg.get('line')}")


# ------------------------------------------------------------------------------ client side
@contextlib.contextmanager
def client_for(jobs: int | None, scheduler: str | None, n_tasks: int):
    """A Dask client: ``Client(scheduler)`` for an existing cluster, else a LocalCluster of
    ``jobs`` single-threaded worker processes (default: the cores available, at most n_tasks)."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise OcdlError(f"cannot connect to the Dask scheduler {scheduler!r}: {e}") from None
        try:
            yield client
        finally:
            client.close()
        return
    if jobs is None:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = max(1, min(int(jobs), n_tasks))
    # No dashboard; the scheduler's HTTP server on a free port (not 8787, which may be taken).
    with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None,
                      scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"},
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        client.register_plugin(IgnoreSigint(), name="ocdl-ignore-sigint")
        yield client


def _worker_plugin_base():
    from distributed import WorkerPlugin

    return WorkerPlugin


class IgnoreSigint(_worker_plugin_base()):
    """Worker plugin for the local cluster: Ctrl-C reaches the whole process group, but only the
    client handles it (it cancels the tasks and closes the cluster, which ends the workers)."""

    def setup(self, worker):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def run(
    experiments: list[Experiment],
    out: str | Path,
    *,
    quick_mode: bool = False,
    jobs: int | None = None,
    scheduler: str | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
    verbose: bool = True,
) -> dict:
    """Run every experiment not cached in ``out``; returns {'ran', 'cached', 'failed': {name: msg},
    'interrupted', 'wall_time_s'}."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OcdlError(f"output {str(out)!r} exists and is not a directory")
    todo, cached_names = [], []
    for exp in experiments:
        state, info = cached(out, exp, quick_mode)
        if state == "other-mode" and not force:
            mode = "--quick" if info.get("quick") else "full"
            raise OcdlError(
                f"{run_dir(out, exp)} holds a {mode} result; use another --out, or --force to replace it"
            )
        if state == "done" and not force:
            cached_names.append(exp.name)
        else:
            if state == "changed":
                log(f"{exp.name}: problem changed since the cached run, recomputing")
            todo.append(exp)
    progress = Progress(total=len(experiments), log=log, verbose=verbose)
    progress.done = len(cached_names)
    for name in cached_names:
        log(f"{name}: cached (done.json), skipped")
    result = {"ran": [], "cached": cached_names, "failed": {}, "interrupted": False}
    if not todo:
        log(progress.bar())
        result["wall_time_s"] = time.perf_counter() - progress.t0
        return result
    todo.sort(key=lambda e: -e.cost())  # longest first: better packing on the workers
    from distributed import as_completed

    log(f"running {len(todo)} experiment(s) on "
        + (f"the Dask scheduler {scheduler}" if scheduler else "a local Dask cluster"))
    with client_for(jobs, scheduler, len(todo)) as client:
        client.subscribe_topic(TOPIC, progress.event)
        futures = {}
        for rank, exp in enumerate(todo):
            fut = client.submit(run_experiment, exp.name, exp.problem.to_dict(), verbose, not quick_mode,
                                key=f"ocdl-{exp.name.replace('/', '-')}-{exp.key}", pure=False,
                                priority=len(todo) - rank)
            futures[fut] = exp
        slots = max(1, sum(client.nthreads().values()))
        progress.running = min(len(todo), slots)
        log(progress.bar())
        try:
            for fut in as_completed(list(futures)):
                exp = futures[fut]
                progress.done += 1
                progress.running = min(sum(not f.done() for f in futures), slots)
                err = fut.exception()
                if err is None and fut.result()["status"] == "interrupted":
                    err = RuntimeError("the worker's run was interrupted; not cached")
                if err is not None:
                    msg = f"{type(err).__name__}: {err}".splitlines()[0]
                    result["failed"][exp.name] = msg
                    progress.line(f"FAILED {exp.name}: {msg}")
                else:
                    res = fut.result()
                    install(run_dir(out, exp), res["files"], {
                        "name": exp.name, "key": exp.key, "quick": bool(quick_mode),
                        "problem_file": str(exp.path), "status": res["status"],
                        "wall_time_s": res["wall_time_s"], "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    })
                    result["ran"].append(exp.name)
                    progress.line(
                        f"done {exp.name}: {res['status']}, E = {res['objective']:.4e}, accuracy "
                        f"{res['train_accuracy']:.3f}/{res['test_accuracy']:.3f}, {res['wall_time_s']:.1f} s"
                    )
                progress.line(progress.bar())
        except KeyboardInterrupt:
            result["interrupted"] = True
            for fut in futures:
                fut.cancel()
            progress.line(f"interrupted: {progress.done}/{progress.total} experiments finished; "
                          "rerun the same command to resume")
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(TOPIC)
    result["wall_time_s"] = time.perf_counter() - progress.t0
    sys.stdout.flush()
    return result
