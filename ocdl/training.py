"""Train one problem with the engine it names, and write its run directory.

The final figures of metrics.json are computed the same way for every engine (PyTorch,
float64, at the returned parameters): ``objective`` E, ``gradient_norm`` ‖∇E‖₂ over the trained
parameters (hand-written adjoint), ``train_accuracy``, ``test_accuracy``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch

from ocdl import data as data_mod, problem as problem_mod, rundir
from ocdl.errors import OcdlError
from ocdl.result import SolveResult


def setup(problem, init=None):
    """(train, test, d, params0): data, width and validated initial parameters."""
    train, test = data_mod.make(problem.data)
    d = problem.width(train.dim)
    if d < train.dim:
        raise OcdlError(f"network.width {d} is smaller than the data dimension {train.dim}")
    if init is None:
        params0 = problem_mod.init_params(problem, d)
    else:
        from_file = isinstance(init, (str, Path))
        raw = rundir.load_params(init) if from_file else dict(init)
        params0 = problem_mod.check_params(problem, raw, d, source=f"initial parameters {init}" if from_file else "initial parameters")
    # A fixed classifier keeps the values the problem prescribes.
    if not problem.classifier.trainable:
        ref = problem_mod.init_params(problem, d)
        params0["W"], params0["mu"] = ref["W"], ref["mu"]
    return train, test, d, params0


def final_metrics(problem, params, train, test) -> dict:
    """Objective, gradient norm and accuracies at ``params`` (PyTorch engine, float64, CPU)."""
    from ocdl.torch_backend.adjoint import grad_adjoint
    from ocdl.torch_backend.network import TorchNetwork

    d = params["W"].shape[0]
    net = TorchNetwork(problem, d, device="cpu", dtype="float64")
    prm = net.to_torch(params)
    Y0, c = net.inputs(train.X), net.tensor(train.c)
    E, g = grad_adjoint(net, prm, Y0, c)
    gflat = torch.cat([v.reshape(-1) for v in g.values()])
    with torch.no_grad():
        E_test = float(net.objective(prm, net.inputs(test.X), net.tensor(test.c)))
    return {
        "objective": float(E),
        "test_objective": E_test,
        "gradient_norm": float(torch.linalg.vector_norm(gflat)),
        "gradient_norm_inf": float(gflat.abs().max()),
        "train_accuracy": net.accuracy(prm, Y0, c),
        "test_accuracy": net.accuracy(prm, net.inputs(test.X), net.tensor(test.c)),
    }


def _solve_torch(problem, train, test, d, params0, log, state=None, history=None, checkpoint=None):
    from ocdl.torch_backend.network import TorchNetwork, configure_threads
    from ocdl.torch_backend.optim import Objective, optimise

    configure_threads(train.n, d, int(problem.solver.options.get("threads", 0)))
    net = TorchNetwork(problem, d)
    base = net.to_torch(params0)
    obj = Objective(net, base, problem.trainable(), net.inputs(train.X), net.tensor(train.c),
                    net.inputs(test.X), net.tensor(test.c))
    theta0 = obj.flat(base)
    return optimise(obj, problem, theta0, problem.solver.iterations, state=state, history=history,
                    log=log, checkpoint=checkpoint)


def train(
    problem,
    out: str | Path | None = None,
    init=None,
    resume: str | Path | None = None,
    quiet: bool = False,
    force: bool = False,
    log: Callable[[str], None] | None = None,
    figures: bool = True,
):
    """Solve ``problem`` (or continue the run in ``resume``); write the run directory ``out``.

    Returns (SolveResult, metrics dict). Raises OcdlError on bad input before anything is written.
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
        if problem.solver.backend != "torch":
            raise OcdlError("--resume continues PyTorch-engine runs; for CasADi use --init DIR")
    train_set, test_set, d, params0 = setup(problem, init)
    if out is not None:
        out = rundir.prepare(out, force=force, resume=resume is not None)

    def write(res: SolveResult, final: bool):
        metrics = {**final_metrics(problem, res.params, train_set, test_set), **res.metrics}
        metrics.update({
            "status": "interrupted" if res.interrupted else ("ok" if res.success else "failed"),
            "message": res.message,
            "iterations": int(res.metrics.get("iterations", 0)),
            "wall_time_s": time.perf_counter() - t0 + (json_prev_wall if resume else 0.0),
            "engine": problem.solver.backend,
            "solver": problem.solver.name,
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
            state["torch_optimizer"] = torch.load(Path(resume) / "optimizer.pt", weights_only=False)

    if problem.solver.backend == "torch":
        res = _solve_torch(problem, train_set, test_set, d, params0, log, state=state, history=history,
                           checkpoint=(lambda r: write(r, final=False)) if out is not None else None)
    else:
        from ocdl import casadi_backend

        res = casadi_backend.solve(problem, train_set, test_set, params0, log=log or (lambda s: None), quiet=quiet)
    metrics = write(res, final=True)
    if log:
        log(
            f"{metrics['status']}: E = {metrics['objective']:.10e}, |grad E| = {metrics['gradient_norm']:.3e}, "
            f"accuracy train {metrics['train_accuracy']:.3f} / test {metrics['test_accuracy']:.3f}, "
            f"{metrics['iterations']} iterations"
            + (f" (after {metrics['start']['iterations']} of the {metrics['start']['formulation']} start)"
               if "start" in metrics else "")
            + f", {metrics['wall_time_s']:.1f} s" + (f" -> {out}" if out is not None else "")
        )
        if res.interrupted:
            log("interrupted: the run directory holds the last iterate (continue with --resume, or --init for CasADi)")
        elif not res.success:
            log(f"solver failed: {res.message}")
    return res, metrics


def _read_state(run: Path) -> dict:
    p = run / "state.json"
    if not p.is_file():
        raise OcdlError(f"{str(run)!r} has no state.json to resume from")
    return json.loads(p.read_text())
