"""``ocdl demo``: one well-posed training problem solved exactly, and every claim checked on it.

The embedded problem (:data:`PROBLEM_TOML`): spiral data, a 15-layer Kutta(4) network (h = 0.1,
width 2, tanh, per-layer controls), squared loss, Tikhonov 10⁻³ on K, β, W, μ and smoothness
10⁻³ — well posed, so a KKT tolerance of 10⁻¹⁰ is reachable. Steps:

1. solve it with CasADi/IPOPT (full-space NLP) to KKT 10⁻¹⁰: run directory ``OUT/run``;
2. cross-check with the PyTorch engine at the solution θ*:
   objective   |E_casadi − E_torch| / |E_torch|                       (threshold 10⁻¹²)
   gradient    ‖∇E(θ*)‖₂ by the partner adjoint (the reduced gradient) (threshold 10⁻⁸)
               and CasADi AD vs partner adjoint, max_k ‖g_k − g_k'‖_∞ / max_k ‖g_k'‖_∞ (10⁻⁸)
   costates    max |p_casadi − p_torch| / max |p_torch| over layers and samples, the multipliers
               of the dynamics mapped to costates against the partner sweep      (threshold 10⁻⁸)
3. ``verify commutation`` at θ*, on the gradient of the data term (the full gradient is 0 there):
   partner OTD = DTO (round-off), other adjoints O(h^p) away;
4. a stability check of the trained network (:func:`ocdl.stability.network.check`);
5. ``OUT/report.md`` (+ report.json, figures).

Where the CasADi engine is not installed, step 1 falls back to the PyTorch engine (gd-armijo) and
the cross-engine checks are reported as unavailable — never faked.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from ocdl import catalogue, data as data_mod, rundir
from ocdl.metrics import rel_diff

PROBLEM_TOML = """\
# ocdl demo: a well-posed Kutta(4) network on the spiral, solved to KKT 1e-10.
dtype = "float64"
device = "cpu"

[data]
name = "spiral"
n = 500
seed = 0

[network]
family = "rk"
tableau = "rk4"
layers = 15
h = 0.1
width = 2
activation = "tanh"
controls = "per-layer"

[classifier]
trainable = true

[objective]
loss = "squared"
mean = false
tikhonov = { K = 1e-3, beta = 1e-3, W = 1e-3, mu = 1e-3, h = 0.0 }
smooth = 1e-3

[init]
K = "normal"
beta = "normal"
W = "normal"
mu = "uniform"
seed = 0

[solver]
backend = "casadi"
name = "ipopt"
iterations = 500

[solver.options]
tol = 1e-10
"""

#: Agreement thresholds (those of the CasADi engine's tests).
THRESHOLDS = {"kkt_unscaled": 1e-8, "objective": 1e-12, "gradient_norm": 1e-8, "gradient_engines": 1e-8, "costates": 1e-8,
              "commutation_partner": 1e-12}
QUICK_N = 40


def default_problem(n: int | None = None, overrides=()):
    """The embedded problem (``n`` samples if given), with ``section.key=value`` overrides."""
    problem = catalogue.load_text(PROBLEM_TOML, "ocdl demo (embedded problem)", overrides)
    if n is not None:
        problem = problem.replace(data__n=int(n))
    return problem


def cross_check(problem, params, train, costates) -> dict:
    """The PyTorch engine at θ*: objective, reduced gradient, costates; against CasADi where given."""
    from ocdl.engine.torch.adjoint import grad_adjoint
    from ocdl.engine.torch.network import TorchNetwork

    d = params["W"].shape[0]
    net = TorchNetwork(problem, d, device="cpu", dtype="float64")
    prm = net.to_torch(params)
    Y0, c = net.inputs(train.X), net.tensor(train.c)
    E, g, co = grad_adjoint(net, prm, Y0, c, return_costates=True)
    g = {k: v.numpy() for k, v in g.items()}
    gflat = np.concatenate([v.reshape(-1) for v in g.values()])
    out = {
        "E_torch": float(E),
        "gradient_norm_torch": float(np.linalg.norm(gflat)),
        "gradient_norm_by_key": {k: float(np.linalg.norm(v)) for k, v in g.items()},
        "p_torch_max": float(co["p"].abs().max()),
    }
    from ocdl.engine.casadi import gradient

    E_c, g_c = gradient(problem, params, train.X, train.c)
    scale = max(float(np.max(np.abs(v), initial=0.0)) for v in g.values())
    out.update({
        "E_casadi": float(E_c),
        "objective_rel_diff": abs(float(E_c) - float(E)) / abs(float(E)),
        "gradient_norm_casadi": float(np.linalg.norm(np.concatenate([np.asarray(g_c[k]).reshape(-1) for k in g]))),
        # both gradients are ~0 at θ*: compare them on the scale of the larger entry
        "gradient_engines_diff": max(float(np.max(np.abs(np.asarray(g_c[k]) - g[k]), initial=0.0)) for k in g),
        "gradient_scale": scale,
    })
    if costates and "p" in costates:
        p_c = np.asarray(costates["p"])
        p_t = co["p"].numpy()
        if p_c.shape != p_t.shape:
            out["costates"] = f"shape {p_c.shape} from CasADi, {p_t.shape} from PyTorch"
        else:
            out["costates_rel_diff"] = rel_diff(p_c, p_t)
            out["costates_rel_diff_per_layer"] = [rel_diff(p_c[j], p_t[j]) for j in range(p_t.shape[0])]
            if "P" in costates and np.asarray(costates["P"]).shape == tuple(co["P"].shape):
                out["stage_costates_rel_diff"] = rel_diff(costates["P"], co["P"].numpy())
    else:
        out["costates"] = "the CasADi solve returned no costates"
    return out


def data_term(problem):
    """The problem without its regulariser. At θ* the full gradient vanishes (∇E_loss = −∇R), so
    gradients are compared on the data term, whose gradient there is −∇R(θ*) ≠ 0."""
    return problem.replace(objective__tikhonov={k: 0.0 for k in problem.tikhonov()}, objective__smooth=0.0)


def checks(solve: dict, xc: dict, comm: dict) -> list[dict]:
    """Each check: name, value, threshold, passed (None: unavailable, with the reason)."""
    rows = []

    def add(name, value, thr, reason=None):
        rows.append({"check": name, "value": value, "threshold": thr,
                     "passed": None if value is None else bool(value <= thr), "reason": reason})

    engine = solve.get("engine")
    cas = None if engine == "casadi" else (xc.get("casadi") or "the solve did not use CasADi")
    add("IPOPT KKT residual ‖∇ₓL‖_∞, unscaled (IPOPT's tol 1e-10 is on its scaled error)",
        solve.get("kkt_residual"), THRESHOLDS["kkt_unscaled"], cas)
    add("objective: |E_casadi − E_torch| / |E_torch|", xc.get("objective_rel_diff"), THRESHOLDS["objective"], cas)
    add("reduced gradient ‖∇E(θ*)‖₂ (partner adjoint)", xc.get("gradient_norm_torch") if cas is None else None,
        THRESHOLDS["gradient_norm"], cas)
    add("gradient: CasADi AD vs partner adjoint, max abs diff", xc.get("gradient_engines_diff"),
        THRESHOLDS["gradient_engines"], cas)
    add("costates: multipliers vs partner sweep, max rel diff", xc.get("costates_rel_diff"), THRESHOLDS["costates"],
        cas or xc.get("costates"))
    part = comm.get("methods", {}).get("otd_partner", {}).get("rel_diff")
    add("commutation: partner OTD vs autograd, max rel diff", part, THRESHOLDS["commutation_partner"])
    inv = comm.get("invariant_variation", {}).get("partner")
    add("bilinear invariant ⟨p_j, v_j⟩, max rel variation (partner)", inv, THRESHOLDS["commutation_partner"])
    return rows


def run(out: str | Path, n: int | None = None, quick: bool = False, overrides=(), force: bool = False,
        log: Callable[[str], None] | None = print) -> dict:
    """Run the demo into ``out``; returns the report dict (see :func:`checks` for 'checks')."""
    import torch

    from ocdl import training
    from ocdl.stability import network as stability_network
    from ocdl.verify.commutation import commutation
    from ocdl.verify.instance import Instance

    say = log or (lambda s: None)
    t0 = time.perf_counter()
    problem = default_problem(QUICK_N if quick and n is None else n, overrides)
    out = Path(out)
    rundir.prepare(out, force=force)
    torch.set_num_threads(1)
    train, test = data_mod.make(problem.data)
    say(f"[1/4] solving: {problem.data.name} (n = {problem.data.n}), {problem.tableau.name}, {problem.N} layers, "
        f"{problem.solver.backend}/{problem.solver.name}, tol {problem.solver.options.get('tol', '—')}")
    t = time.perf_counter()
    res, metrics = training.train(problem, out=out / "run", quiet=log is None, force=force,
                                  log=(lambda s: say("      " + s)) if log else None)
    solve = {
        "engine": problem.solver.backend, "solver": problem.solver.name, "status": metrics["status"],
        "message": res.message, "iterations": metrics["iterations"], "objective": metrics["objective"],
        "kkt_residual": metrics.get("kkt_residual"), "constraint_violation": metrics.get("constraint_violation"),
        "build_time_s": metrics.get("build_time_s"), "solve_time_s": metrics.get("solve_time_s"),
        "wall_time_s": time.perf_counter() - t, "train_accuracy": metrics["train_accuracy"],
        "test_accuracy": metrics["test_accuracy"],
    }
    say("[2/4] cross-check with the PyTorch engine at the solution")
    xc = cross_check(problem, res.params, train, res.costates)
    say("[3/4] verify commutation at the solution (gradient of the data term)")
    comm = commutation(Instance.make(data_term(problem), res.params), casadi=True)
    say("[4/4] stability check of the trained network")
    stab = stability_network.json_view(stability_network.check(problem, res.params, train.X))
    report = {
        "problem": problem.to_dict(),
        "solve": solve,
        "cross_check": xc,
        "commutation": {k: comm[k] for k in ("tableau", "methods", "invariant_variation", "E")},
        "stability": stab,
        "checks": checks(solve, xc, comm),
        "wall_time_s": time.perf_counter() - t0,
    }
    figures = _figures(out, problem, res, xc, comm, stab)
    rundir.write_json(out / "report.json", report)
    rundir.write_text(out / "report.md", markdown(report, figures))
    for line in summary_lines(report):
        say(line)
    say(f"report: {out / 'report.md'} ({report['wall_time_s']:.1f} s)")
    return report


def passed(report: dict) -> bool:
    """True when every check ran and passed."""
    return all(r["passed"] is True for r in report["checks"])


def _fmt(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return str(x)


def summary_lines(report: dict) -> list[str]:
    s = report["solve"]
    lines = [f"solve: {s['engine']}/{s['solver']} {s['status']} in {s['iterations']} iterations, "
             f"E = {s['objective']:.12e}, KKT {_fmt(s['kkt_residual'])}, {s['wall_time_s']:.1f} s; "
             f"accuracy {s['train_accuracy']:.3f} / {s['test_accuracy']:.3f}"]
    for r in report["checks"]:
        mark = {True: "ok  ", False: "FAIL", None: "n/a "}[r["passed"]]
        tail = f"  ({r['reason']})" if r["passed"] is None and r["reason"] else ""
        thr = "" if r["threshold"] in (None, np.inf) else f" ≤ {r['threshold']:.0e}"
        lines.append(f"  {mark} {r['check']}: {_fmt(r['value'])}{thr}{tail}")
    st = report["stability"]
    lines.append(f"  stability: Lipschitz constant of x ↦ y^[N] on the data {st['lipschitz_local']:.3g} "
                 f"(a-priori bound {st['a_priori_bound']:.3g}); {st['estimate_note']}")
    return lines


def _figures(out: Path, problem, res, xc, comm, stab) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ax = axes[0]
    if "costates_rel_diff_per_layer" in xc:
        ax.semilogy(np.maximum(xc["costates_rel_diff_per_layer"], 1e-17), "o-")
        ax.axhline(THRESHOLDS["costates"], color="r", ls="--", lw=0.8, label="threshold")
        ax.legend(fontsize=8)
        ax.set_title("costates: CasADi multipliers vs partner sweep", fontsize=9)
    else:
        ax.text(0.5, 0.5, "CasADi costates unavailable", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("costates", fontsize=9)
    ax.set_xlabel("layer j")
    ax.set_ylabel("max rel. difference")
    ax = axes[1]
    I = comm.get("invariant", {})
    for key, style in (("partner", "o-"), ("same_tableau", "s--"), ("continuous", "^:")):
        if key in I:
            v = np.asarray(I[key])
            ax.semilogy(np.maximum(np.abs(v - v[-1]) / np.max(np.abs(v)), 1e-17), style, label=key.replace("_", " "))
    ax.set_xlabel("layer j")
    ax.set_ylabel("|I_j − I_N| / max |I|")
    ax.set_title("bilinear invariant ⟨p_j, v_j⟩", fontsize=9)
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(stab["growth_per_layer"], "o-", label="max ‖∂y_j/∂x‖ (data)")
    ax.plot(stab["pairs_per_layer"], "s--", label="max pair ratio")
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_xlabel("layer j")
    ax.set_title("stability: growth of perturbations", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    rundir.save_figure(fig, out / "checks.png", dpi=100)
    plt.close(fig)
    figs["checks"] = "checks.png"
    for name in ("prediction.png", "transformed.png", "objective.png"):
        if (out / "run" / name).is_file():
            figs[name[:-4]] = f"run/{name}"
    return figs


def markdown(report: dict, figures: dict) -> str:
    p = report["problem"]
    s = report["solve"]
    lines = [
        "# ocdl demo",
        "",
        f"Problem: {p['data']['name']} data, n = {p['data']['n']} (test: an independent draw of the same size); "
        f"family {p['network']['family']}, tableau {p['network']['tableau']}, {p['network']['layers']} layers, "
        f"h = {p['network'].get('h')}; loss {p['objective']['loss']}; Tikhonov "
        + ", ".join(f"{k} {v:g}" for k, v in p["objective"]["tikhonov"].items())
        + f"; smoothness {p['objective']['smooth']:g}. The full problem is `run/config.toml`.",
        "",
        "## Solve",
        "",
        f"{s['engine']}/{s['solver']}: **{s['status']}**" + (f" ({s['message']})" if s["message"] else "")
        + f", {s['iterations']} iterations, "
        f"E = {s['objective']:.12e}, KKT residual {_fmt(s['kkt_residual'])}, constraint violation "
        f"{_fmt(s['constraint_violation'])}; build {_fmt(s['build_time_s'])} s, solve {_fmt(s['solve_time_s'])} s, "
        f"wall {s['wall_time_s']:.1f} s. Accuracy train {s['train_accuracy']:.3f}, test {s['test_accuracy']:.3f}.",
        "",
        "## Checks",
        "",
        "| check | value | threshold | result |",
        "|---|---:|---:|---|",
    ]
    for r in report["checks"]:
        res = {True: "pass", False: "**FAIL**", None: f"unavailable: {r['reason']}"}[r["passed"]]
        thr = "—" if r["threshold"] in (None, np.inf) else f"{r['threshold']:.0e}"
        name = r["check"].replace("|", "\\|")  # a Markdown table cell
        lines.append(f"| {name} | {_fmt(r['value'])} | {thr} | {res} |")
    comm = report["commutation"]
    lines += ["", "## Commutation at the solution (`ocdl verify commutation`)", "",
              "At θ* the gradient of E vanishes, so the gradients are compared on the data term "
              "(regulariser removed; its gradient at θ* is −∇R(θ*) ≠ 0). Each gradient against PyTorch "
              "autograd, max over the parameter blocks of the relative max-norm difference:", "",
              "| method | rel. difference |", "|---|---:|"]
    for k, v in comm["methods"].items():
        lines.append(f"| {k} | {_fmt(v.get('rel_diff')) if v.get('rel_diff') is not None else v.get('reason', '—')} |")
    lines += ["", "Variation of the bilinear invariant over the layers: "
              + ", ".join(f"{k} {_fmt(v)}" for k, v in comm["invariant_variation"].items()) + "."]
    st = report["stability"]
    lines += ["", "## Stability of the trained network (`ocdl stability network`)", "",
              f"Largest growth of an input perturbation through the network, over the training points: "
              f"{st['lipschitz_local']:.4g} (all layers: {st['lipschitz_local_all_layers']:.4g}); over random "
              f"pairs of points: {st['lipschitz_pairs']:.4g}; a-priori bound Π_j ℓ_j = {st['a_priori_bound']:.4g}. "
              f"Estimate: {st['estimate_note']}.", ""]
    lines += ["## Figures", ""]
    for name, rel in figures.items():
        lines.append(f"![{name}]({rel})")
        lines.append("")
    lines.append(f"Total wall time: {report['wall_time_s']:.1f} s.")
    return "\n".join(lines) + "\n"
