"""Train one problem with the engine it names (:func:`ocdl.solve`), and write its run directory.

The final figures of metrics.json (``objective`` E, ``gradient_norm`` ‖∇E‖₂ over the trained
parameters, ``train_accuracy``, ``test_accuracy``) are the evaluation at the returned parameters
by the engine that solved, or by ``evaluator``; ``evaluator`` names the engine that computed them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from ocdl import api, rundir
from ocdl.engine import base as engines
from ocdl.engine.base import RunContext
from ocdl.errors import OcdlError
from ocdl.result import SolveResult


def setup(problem, init=None):
    """(train, test, d, params0): data, width and validated initial parameters."""
    _, (train, test), params0 = api.prepare(problem, init)
    return train, test, int(params0["W"].shape[0]), params0


def final_metrics(problem, params, train, test, engine: str = "torch") -> dict:
    """Objective, gradient norm and accuracies at ``params``, by ``engine``."""
    return engines.get(engine).evaluate(problem, params, (train, test)).metrics()


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

    Returns (Result, metrics dict). Raises OcdlError on bad input before anything is written.
    ``evaluator``: the engine that computes the final figures (default: the one that solved).
    """
    log = None if quiet else (log or print)
    t0 = time.perf_counter()
    state = history = None
    if resume is not None:
        problem_saved, params_saved, metrics_saved = rundir.load(resume)
        if problem is None:
            problem = problem_saved
        out = Path(out or resume)
        state = _read_state(Path(resume))
        history = metrics_saved.get("history")
        init = params_saved
        if not engines.get(problem.solver.backend).resumable:
            raise OcdlError(f"--resume continues runs of resumable engines (torch); for "
                            f"{problem.solver.backend} use --init DIR")
    engine, data, params0 = api.prepare(problem, init)
    train_set, test_set = data
    if evaluator is not None:
        engines.get(evaluator)
    if out is not None:
        out = rundir.prepare(out, force=force, resume=resume is not None)
    results = []

    def write(res: SolveResult, final: bool):
        result = api.finish(problem, engine, res, data, time.perf_counter() - t0, evaluator)
        results.append(result)
        metrics = {**result.evaluation.metrics(), **res.metrics}
        metrics.update({
            "status": "interrupted" if res.interrupted else ("ok" if res.success else "failed"),
            "message": res.message,
            "iterations": int(res.metrics.get("iterations", 0)),
            "wall_time_s": time.perf_counter() - t0 + (json_prev_wall if resume else 0.0),
            "engine": problem.solver.backend,
            "solver": problem.solver.name,
            "evaluator": result.evaluation.engine,
            "history": res.history,
        })
        if out is not None:
            rundir.create(out)
            rundir.write_config(out / "config.toml", problem)
            rundir.write_npz(out / "params.npz", res.params)
            if res.costates:
                rundir.write_npz(out / "costates.npz", res.costates)
            st = {k: v for k, v in (res.state or {}).items() if k != "torch_optimizer"}
            rundir.write_json(out / "state.json", st)
            if res.state and "torch_optimizer" in res.state:
                import io

                import torch

                buf = io.BytesIO()
                torch.save(res.state["torch_optimizer"], buf)
                rundir.atomic_write(out / "optimizer.pt", buf.getvalue())
            if final and figures:
                metrics["figures"] = __import__("ocdl.plots", fromlist=["x"]).write_figures(
                    out, problem, res.params, res.history, train_set, test_set)
            rundir.write_json(out / "metrics.json", metrics)
        return metrics

    json_prev_wall = 0.0
    if resume is not None:
        json_prev_wall = float(json.loads((Path(resume) / "metrics.json").read_text()).get("wall_time_s", 0.0))
        if state is not None and (Path(resume) / "optimizer.pt").is_file():
            import torch

            state["torch_optimizer"] = torch.load(Path(resume) / "optimizer.pt", weights_only=False)

    run = RunContext(log=log, state=state, history=history,
                     checkpoint=(lambda r: write(r, final=False)) if out is not None else None)
    res = engine.solve(problem, data, params0, run)
    metrics = write(res, final=True)
    result = results[-1]
    if log:
        log(
            f"{metrics['status']}: E = {metrics['objective']:.10e}, |grad E| = {metrics['gradient_norm']:.3e}, "
            f"accuracy train {metrics['train_accuracy']:.3f} / test {metrics['test_accuracy']:.3f}, "
            f"{metrics['iterations']} iterations"
            + (f" (after {metrics['start']['iterations']} of the {metrics['start']['formulation']} start)"
               if "start" in metrics else "")
            + f", {metrics['wall_time_s']:.1f} s" + (f" -> {out}" if out is not None else "")
        )
        if result.interrupted:
            log("interrupted: the run directory holds the last iterate (continue with --resume, or --init for CasADi)")
        elif not result.success:
            log(f"solver failed: {result.message}")
    return result, metrics


def _read_state(run: Path) -> dict:
    p = run / "state.json"
    if not p.is_file():
        raise OcdlError(f"{str(run)!r} has no state.json to resume from")
    return json.loads(p.read_text())
