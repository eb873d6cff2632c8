"""summary.md and summary.json of a reproduction: one row per experiment.

Columns: final objective E, train/test accuracy, the number of non-zero time steps (ODENet and
ODENet+simplex: |h_j| > 10⁻⁸·T; the simplex projection sets steps exactly to 0, ODENet's steps may
be negative), iterations, wall time and status, read from each run directory's metrics.json and
params.npz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ocdl import rundir
from ocdl.reproduce.experiments import GROUP_TITLES, Experiment
from ocdl.reproduce.runner import DONE, run_dir

NONZERO_REL = 1e-8


def nonzero_steps(problem, params) -> int | None:
    """#{j : |h_j| > 10⁻⁸ T} for learned time steps, None for fixed ones."""
    if problem.time_steps == "fixed" or not problem.has_skip:
        return None
    return int(np.sum(np.abs(np.asarray(params["h"])) > NONZERO_REL * problem.T))


def load_results(out: Path, experiments: list[Experiment]) -> dict[str, tuple]:
    """{name: (problem, params, metrics)} for the experiments with a finished run directory."""
    res = {}
    for exp in experiments:
        d = run_dir(out, exp)
        if (d / DONE).is_file():
            res[exp.name] = rundir.load(d)
    return res


def rows(out: Path, experiments: list[Experiment], results: dict | None = None) -> list[dict]:
    results = results if results is not None else load_results(out, experiments)
    table = []
    for exp in experiments:
        row = {"name": exp.name, "group": exp.group, "data": exp.data, "network": exp.label}
        if exp.name not in results:
            row["status"] = "missing"
            table.append(row)
            continue
        problem, params, m = results[exp.name]
        row.update({
            "objective": m["objective"],
            "train_accuracy": m["train_accuracy"],
            "test_accuracy": m["test_accuracy"],
            "nonzero_steps": nonzero_steps(problem, params),
            "layers": problem.N,
            "iterations": m["iterations"],
            "kkt_residual": m.get("kkt_residual"),
            "wall_time_s": m["wall_time_s"],
            "status": m["status"],
        })
        table.append(row)
    return table


def markdown(table: list[dict], title: str, note: str = "") -> str:
    lines = [f"# {title}", ""]
    if note:
        lines += [note, ""]
    for group in dict.fromkeys(r["group"] for r in table):
        rows_g = [r for r in table if r["group"] == group]
        kkt = any(r.get("kkt_residual") is not None for r in rows_g)  # CasADi runs
        lines += [f"## {group}: {GROUP_TITLES.get(group, group)}", "",
                  "| data | network | objective | train acc. | test acc. | non-zero h_j | iterations | "
                  + ("KKT residual | " if kkt else "") + "wall time (s) | status |",
                  "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if kkt else "") + "---:|---|"]
        for r in rows_g:
            if r["status"] == "missing":
                lines.append(f"| {r['data']} | {r['network']} | | | | | | " + ("| " if kkt else "") + "| missing |")
                continue
            nz = "—" if r["nonzero_steps"] is None else f"{r['nonzero_steps']} / {r['layers']}"
            k = ("— | " if r.get("kkt_residual") is None else f"{r['kkt_residual']:.1e} | ") if kkt else ""
            lines.append(
                f"| {r['data']} | {r['network']} | {r['objective']:.4e} | {r['train_accuracy']:.3f} | "
                f"{r['test_accuracy']:.3f} | {nz} | {r['iterations']} | {k}{r['wall_time_s']:.1f} | {r['status']} |"
            )
        lines.append("")
    return "\n".join(lines)


def write(out: Path, experiments: list[Experiment], title: str, note: str = "", results: dict | None = None) -> list[dict]:
    """Write summary.md and summary.json into ``out``; returns the rows."""
    table = rows(out, experiments, results)
    rundir.write_text(Path(out) / "summary.md", markdown(table, title, note) + "\n")
    rundir.write_json(Path(out) / "summary.json", table)
    return table
