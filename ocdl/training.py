"""Train one problem with the engine it names (:func:`ocdl.solve`), and write its run directory.

The final figures of metrics.json (``objective`` E, ``gradient_norm`` ‖∇E‖₂ over the trained
parameters, ``train_accuracy``, ``test_accuracy``) are the evaluation at the returned parameters
by the engine that solved, or by ``evaluator``; ``evaluator`` names the engine that computed them.
Every engine evaluates in float64; a float32 run adds what it reached itself (:func:`run_precision`:
``dtype``, ``evaluation_dtype``, ``run_iteration``, ``run_objective``, ``run_gradient_norm``), and
its final line gives both, each named by its precision. A float64 run's line and metrics are its
evaluation's alone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ocdl import api, rundir
from ocdl.engine import base as engines
from ocdl.engine.base import RunContext
from ocdl.errors import OcdlError
from ocdl.interrupt import DeferSigint, SigintWins
from ocdl.result import SolveResult


def train(
    problem,
    out: str | Path | None = None,
    init=None,
    resume: str | Path | None = None,
    quiet: bool = False,
    force: bool = False,
    log: Callable[[str], None] | None = None,
    figures: bool = True,
    evaluator: str | None = None,
):
    """Solve ``problem`` (or continue the run in ``resume``); write the run directory ``out``.
    A resumed run uses the tanh kernels it recorded (metrics.json ``tanh_kernels``, :mod:`ocdl.tanh`).
    """
    from ocdl import tanh

    recorded = _recorded_tanh(resume, None if quiet else (log or print))
    with tanh.using(recorded):
        return _train(problem, out, init, resume, quiet, force, log, figures, evaluator)


def _recorded_tanh(resume, log) -> dict:
    """{dtype: kernel} recorded by the run in ``resume`` that this machine can run (a note for the others);
    {} without a readable record (the run's own checks report a bad directory)."""
    import json

    from ocdl import tanh

    if resume is None:
        return {}
    try:
        rec = json.loads((Path(resume) / "metrics.json").read_text()).get("tanh_kernels") or {}
        rec = {str(dn): str(name) for dn, name in rec.items()}
    except (OSError, ValueError, AttributeError):
        return {}
    out = {}
    for dn, name in rec.items():
        try:
            ok = name in tanh.available(dn)
        except OcdlError:
            ok = False
        if ok:
            out[dn] = name
        elif log:
            log(f"note: the run used the {name} tanh kernel for {dn}, which cannot run here; the resumed "
                "iterations use this machine's, so they differ from an uninterrupted run by rounding")
    return out


def _train(problem, out, init, resume, quiet, force, log, figures, evaluator):
    """:func:`train` within the run's tanh kernels.

    Returns (Result, metrics dict). Raises OcdlError on bad input before anything is written
    (``out`` is checked first, a ``resume`` directory is read and checked whole).
    ``evaluator``: the engine that computes the final figures (default: the one that solved).

    The directory is written in snapshots (:func:`ocdl.rundir.snapshot`), each one iteration's
    parameters, optimiser state and history: the solver's checkpoints (every
    ``checkpoint_every`` iterations and ``checkpoint_seconds``), then at the end one without the
    final evaluation (status 'unfinished'; a second Ctrl-C during the evaluation or the figures
    leaves it) and the complete one. ``out`` is locked (:class:`ocdl.rundir.RunLock`) meanwhile.
    """
    log = None if quiet else (log or print)
    t0 = time.perf_counter()
    state = history = None
    prev_wall = 0.0
    if resume is not None:
        resume = Path(resume)
        out = Path(out or resume)
    if out is not None:
        out = rundir.prepare(out, force=force, resume=resume is not None)
    if resume is not None:
        problem_saved, _, metrics_saved = rundir.load(resume)
        if problem is None:
            problem = problem_saved
        if not engines.get(problem.solver.backend).resumable:
            raise OcdlError(f"--resume continues runs of resumable engines (torch); for "
                            f"{problem.solver.backend} use --init DIR")
        state = rundir.load_state(resume)
        history = metrics_saved.get("history")
        _check_consistent(resume, state, metrics_saved)
        prev_wall = float(metrics_saved.get("wall_time_s") or 0.0)
        init = resume / "params.npz"  # read as the snapshot has it; its errors name the file
    engine, data, params0 = api.prepare(problem, init)
    train_set, test_set = data
    if evaluator is not None:
        engines.get(evaluator)
    if resume is not None:
        size = sum(int(params0[k].size) for k in problem.trainable())
        opt_state = rundir.load_optimizer(resume, size=size)
        if opt_state is not None:
            state["torch_optimizer"] = opt_state

    def wall() -> float:
        return time.perf_counter() - t0 + prev_wall

    def base_metrics(res: SolveResult, status: str, message: str, evaluated_by: str | None = None) -> dict:
        return {
            "status": status,
            "message": message,
            "iterations": int(res.metrics.get("iterations", 0)),
            "wall_time_s": wall(),
            "engine": problem.solver.backend,
            "solver": problem.solver.name,
            "evaluator": evaluated_by,
            "tanh_kernels": tanh_kernels(),
            "history": res.history,
        }

    def write(res: SolveResult, metrics: dict, with_figures: bool = False) -> None:
        """One snapshot of ``out``: config, parameters, costates, optimiser state, metrics (and figures)."""
        try:
            with rundir.snapshot(out, remove=("costates.npz", "state.json", "optimizer.pt")) as stage:
                rundir.write_config(stage / "config.toml", problem, folder=out)
                rundir.write_npz(stage / "params.npz", res.params)
                if res.costates:
                    rundir.write_npz(stage / "costates.npz", res.costates)
                st = {k: v for k, v in (res.state or {}).items() if k != "torch_optimizer"}
                rundir.write_json(stage / "state.json", st)
                if res.state and res.state.get("torch_optimizer") is not None:
                    import io

                    import torch

                    buf = io.BytesIO()
                    torch.save(res.state["torch_optimizer"], buf)
                    rundir.write_bytes(stage / "optimizer.pt", buf.getvalue())
                if with_figures:
                    metrics["figures"] = __import__("ocdl.plots", fromlist=["x"]).write_figures(
                        stage, problem, res.params, res.history, train_set, test_set)
                rundir.write_json(stage / "metrics.json", rundir.mark_nonfinite(metrics))
        except OSError as e:
            raise OcdlError(f"cannot write the run directory {str(out)!r}: {e.strerror or e}") from None
        lock.wrote()

    def full_metrics(res: SolveResult, result, status: str, message: str) -> dict:
        metrics = {**result.evaluation.metrics(), **res.metrics}
        metrics.update(base_metrics(res, status, message, result.evaluation.engine))
        metrics.update(run_precision(problem, res.history))
        return metrics

    def recorded_metrics(res: SolveResult, message: str) -> dict:
        """The metrics of an unfinished snapshot: the last recorded objective and gradient norm
        (no evaluation: a snapshot of a large run costs no more than writing it)."""
        hist = res.history or {}
        quick = {k: None for k in ("objective", "test_objective", "gradient_norm", "gradient_norm_inf",
                                   "train_accuracy", "test_accuracy")}
        for k in ("objective", "gradient_norm"):
            if hist.get(k):
                quick[k] = hist[k][-1]
        return {**quick, **res.metrics, **base_metrics(res, "unfinished", message), **run_precision(problem, hist)}

    def checkpoint(res: SolveResult) -> None:
        it = int(res.metrics.get("iterations", 0))
        write(res, recorded_metrics(
            res, f"checkpoint at iteration {it} of a run still going (continue a stopped run with --resume)"))

    lock = None
    if out is not None:
        lock = rundir.RunLock(out, rundir.create(out)).acquire()
        if lock.stale and log:
            log(f"note: {out}: took over the lock left by {lock.stale}, which has ended")
    try:
        run = RunContext(log=log, state=state, history=history, checkpoint=checkpoint if out is not None else None)
        res = engine.solve(problem, data, params0, run)
        status = "interrupted" if res.interrupted else ("ok" if res.success else "failed")
        if out is not None:
            with DeferSigint():  # parameters, state and history first, fast: a Ctrl-C now comes after it
                write(res, recorded_metrics(res, f"{status}: {res.message}; the final evaluation is not written "
                                                 "(ocdl train --resume completes it)"))
        try:
            with SigintWins():  # a Ctrl-C inside CasADi's or matplotlib's compiled code stays a Ctrl-C
                result = api.finish(problem, engine, res, data, time.perf_counter() - t0, evaluator)
                metrics = full_metrics(res, result, status, res.message)
                if out is not None:
                    write(res, metrics, with_figures=figures)
        except KeyboardInterrupt:
            if log and out is not None:
                log(f"interrupted: {out} holds iteration {res.metrics.get('iterations', 0)} without its final "
                    "evaluation (ocdl train --resume completes it)")
            raise
    finally:
        if lock is not None:
            lock.release()
    if log:
        own = ""
        if "run_objective" in metrics:  # a float32 run: its own last values, then the float64 evaluation
            own = (f"the {metrics['dtype']} run at iteration {_fmt(metrics['run_iteration'], 'd')}: "
                   f"E = {_fmt(metrics['run_objective'], '.8e')}, |grad E| = {_fmt(metrics['run_gradient_norm'], '.3e')}; "
                   f"{metrics['evaluation_dtype']} evaluation at its parameters: ")
        log(
            f"{metrics['status']}: {own}E = {metrics['objective']:.10e}, |grad E| = {metrics['gradient_norm']:.3e}, "
            f"accuracy train {metrics['train_accuracy']:.3f} / test {metrics['test_accuracy']:.3f}, "
            f"{metrics['iterations']} iterations"
            + (f" (after {metrics['start']['iterations']} of the {metrics['start']['formulation']} start)"
               if "start" in metrics else "")
            + f", {metrics['wall_time_s']:.1f} s" + (f" -> {out}" if out is not None else "")
        )
        if result.interrupted:
            log("interrupted: the run directory holds the last completed iteration (continue with --resume, "
                "or --init for CasADi)")
        elif not result.success:
            log(f"solver failed: {result.message}")
    return result, metrics


EVALUATION_DTYPE = "float64"  # every engine's evaluate (the final figures) computes in float64


def tanh_kernels() -> dict:
    """{dtype: tanh kernel} used by this process's array paths so far (:func:`ocdl.tanh.decided`)."""
    from ocdl import tanh

    return dict(sorted(tanh.decided().items()))


def run_precision(problem, history: dict | None) -> dict:
    """For a run that trains in another precision than the evaluation's (float32): ``dtype``,
    ``evaluation_dtype`` and the run's own last values from its history, ``run_iteration``,
    ``run_objective``, ``run_gradient_norm`` (in ``dtype``; NaN where the run's arithmetic
    overflowed, which the float64 evaluation at the same parameters may not show). Empty for a
    float64 run, whose metrics are its evaluation's."""
    if problem.dtype == EVALUATION_DTYPE:
        return {}
    hist = history or {}

    def last(key):
        v = hist.get(key) or []
        return v[-1] if v else None

    def num(v):
        return float("nan") if v is None else float(v)  # a strict metrics.json wrote NaN as null

    return {"dtype": problem.dtype, "evaluation_dtype": EVALUATION_DTYPE, "run_iteration": last("iteration"),
            "run_objective": num(last("objective")), "run_gradient_norm": num(last("gradient_norm"))}


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _check_consistent(run: Path, state: dict, metrics: dict) -> None:
    """state.json, metrics.json and its history of one iteration (a snapshot): else no bit-for-bit resume."""
    it = state["iteration"]
    hist = (metrics.get("history") or {}).get("iteration") or []
    m_it = metrics.get("iterations", it)
    if m_it != it or (hist and hist[-1] != it):
        raise OcdlError(f"run directory {str(run)!r} is inconsistent: state.json is at iteration {it}, metrics.json "
                        f"at {m_it} (history to {hist[-1] if hist else '—'}); continue from its parameters with --init")
