"""Text tables, checks against the expectations, figures, and the report of ``ocdl verify all``.

Expectations (the pass/fail of the report):

    commutation  the discrete adjoint — partner form where every b_i ≠ 0, else the unscaled form —
                 equals autograd: rel_diff ≤ 1e-12, and its bilinear invariant is constant to
                 ≤ 1e-12; CasADi AD equals autograd to ≤ 1e-12 where the engine exists;
                 the same-tableau and continuous OTD gradients differ visibly: rel_diff > 1e-6,
                 and the invariant drifts (> 1e-8) for the same-tableau costates.
    refinement   the gap of those two shrinks as h → 0 at least at the ODE order p (slope ≥ p − 0.3;
                 the difference of two order-p approximations is O(h^p), and can be smaller:
                 heun's same-tableau gap is measured at order 3).
    order        state, costate and gradient slopes within ±0.3 of the ODE order; the optimal
                 control's slope within ±0.3 of the order in optimal control (Hager).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ocdl import tableau as tableau_mod
from ocdl.verify import commutation as comm_mod, order as order_mod
from ocdl.verify.instance import Instance, build_problem

ROUND_OFF = 1e-12
VISIBLE = 1e-6
DRIFT = 1e-8
SLOPE_TOL = 0.3
LAYOUTS = ("per-layer", "per-stage")


def _f(x, fmt="{:.1e}") -> str:
    return "—" if x is None else fmt.format(x)


# ---------------------------------------------------------------------------- checks
def commutation_checks(res: dict) -> list[tuple[str, bool]]:
    """(description, passed) for one commutation result."""
    m, inv = res["methods"], res["invariant_variation"]
    out = []
    if res["partner_exists"]:
        out.append(("partner = autograd (≤ 1e-12)", m["otd_partner"]["rel_diff"] <= ROUND_OFF))
        out.append(("partner invariant constant (≤ 1e-12)", inv["partner"] <= ROUND_OFF))
    else:
        u = m[comm_mod.UNSCALED]["rel_diff"]
        out.append(("unscaled discrete adjoint = autograd (≤ 1e-12)", u <= ROUND_OFF))
        out.append(("unscaled invariant constant (≤ 1e-12)", inv["unscaled"] <= ROUND_OFF))
    if m["dto_casadi"]["rel_diff"] is not None:
        out.append(("CasADi AD = autograd (≤ 1e-12)", m["dto_casadi"]["rel_diff"] <= ROUND_OFF))
    for name in ("otd_same_tableau", "otd_continuous"):
        if m[name]["rel_diff"] is not None:
            out.append((f"{name} visibly different (> 1e-6)", m[name]["rel_diff"] > VISIBLE))
    if inv.get("same_tableau") is not None:
        out.append(("same-tableau invariant drifts (> 1e-8)", inv["same_tableau"] > DRIFT))
    return out


def order_checks(res: dict) -> list[tuple[str, bool]]:
    out = []
    for key in ("state", "costate", "gradient"):
        s = res["slopes"][key]
        out.append((f"{key} slope {_f(s, '{:.2f}')} ≈ {res['ode_order']}", s is not None and abs(s - res["ode_order"]) <= SLOPE_TOL))
    if res["slopes"].get("control") is not None:
        s = res["slopes"]["control"]
        out.append((f"control slope {s:.2f} ≈ {res['oc_order']}", abs(s - res["oc_order"]) <= SLOPE_TOL))
    return out


def refinement_checks(res: dict, ode_order: int) -> list[tuple[str, bool]]:
    return [(f"{m} gap slope {s:.2f} ≥ {ode_order}", s >= ode_order - SLOPE_TOL) for m, s in res["slopes"].items()]


# ---------------------------------------------------------------------------- text
def format_commutation(res: dict) -> str:
    """The table printed by ``ocdl verify commutation``."""
    p = res["problem"]
    oc = res["oc_order"] if res["oc_order"] is not None else "n/a"
    orders = f" ({res['stages']} stages, ODE order {res['ode_order']}, OC order {oc})"
    lines = [
        f"commutation: tableau {res['tableau']}{orders}; family {p['family']}, {p['layers']} layers, "
        f"h = {p['h']:g} (T = {p['T']:g}), {p['controls']} controls, {p['activation']}, "
        f"{p['data']} (n = {p['n']}{', %d classes' % p['classes'] if p.get('classes', 2) != 2 else ''}), seed {p['seed']}",
        "gradient of E at the same seeded controls; rel. diff = max over parameter blocks θ of "
        "‖g_θ − g_θ(autograd)‖∞ / ‖g_θ(autograd)‖∞",
        "",
        f"{'method':<27} {'rel. diff':>9}  what",
    ]
    for name, r in res["methods"].items():
        what = comm_mod.DESCRIPTIONS[name]
        if r["rel_diff"] is None:
            what = f"n/a: {r['reason']}"
        val = "—" if r["rel_diff"] is None else ("0" if r["rel_diff"] == 0 else f"{r['rel_diff']:.2e}")
        lines.append(f"{name:<27} {val:>9}  {what}")
    if not res["partner_exists"]:
        lines += ["", "the partner form does not exist for this tableau (some b_i = 0): the discrete "
                  "adjoint is not an RK discretisation (Ã, b) of the adjoint ODE; shown in unscaled "
                  "stage variables μ_i = b_i P_i instead."]
    lines += ["", "bilinear invariant ⟨p^[j], v^[j]⟩ across the layers (max relative variation):"]
    for k, v in res["invariant_variation"].items():
        lines.append(f"  {k:<14} {_f(v, '{:.2e}')}")
    return "\n".join(lines)


def format_order(res: dict) -> str:
    """The table printed by ``ocdl verify order``."""
    e = res["errors"]
    keys = [k for k in ("state", "costate", "gradient", "control") if k in e]
    lines = [
        f"order: tableau {res['tableau']}, ODE order {res['ode_order']}, "
        f"OC order {res['oc_order'] if res['oc_order'] is not None else 'n/a'}; T = {res['T']:g}, "
        "smooth controls sampled at the stage times; relative max-norm errors",
        "",
        f"{'N':>5} " + " ".join(f"{k:>10}" for k in keys),
    ]
    for i, N in enumerate(e["N"]):
        lines.append(f"{N:>5} " + " ".join(f"{e[k][i]:>10.2e}" for k in keys))
    lines.append("")
    for k in ("state", "costate", "gradient", "control"):
        s = res["slopes"].get(k)
        exp = res["oc_order"] if k == "control" else res["ode_order"]
        if s is None:
            why = res.get("control_reason", "too few points above the floor") if k == "control" else "too few points"
            lines.append(f"slope {k:<9} —     (expected {exp if exp is not None else 'n/a'}; {why})")
        else:
            lines.append(f"slope {k:<9} {s:5.2f} (expected {exp}; fitted over N = {', '.join(map(str, res['fit_N'][k]))})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- figures
def order_figure(res: dict, path: Path) -> None:
    """Log-log errors against N with the expected slopes, saved atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ocdl.rundir import save_figure

    e = res["errors"]
    N = np.array(e["N"], dtype=float)
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    for key, mk in (("state", "o"), ("costate", "s"), ("gradient", "^"), ("control", "d")):
        if key in e:
            ax.loglog(N, e[key], mk + "-", label=key, ms=4)
    for p, ls in ((res["ode_order"], ":"), (res["oc_order"], "--")):
        if p:
            ref = e["state"][-1] * (N / N[-1]) ** (-p)
            ax.loglog(N, ref, "k" + ls, lw=0.8, label=f"slope −{p}")
    ax.set_xlabel("N (layers), h = T/N")
    ax.set_ylabel("relative error")
    ax.set_title(f"{res['tableau']}: ODE order {res['ode_order']}, OC order {res['oc_order']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def invariant_figure(res: dict, path: Path) -> None:
    """|I_j − I_N| / max|I| across the layers for each costate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ocdl.rundir import save_figure

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for k, I in res["invariant"].items():
        I = np.asarray(I)
        dev = np.abs(I - I[-1]) / np.max(np.abs(I))
        ax.semilogy(np.arange(len(I)), np.maximum(dev, 1e-18), "o-", ms=3, label=k)
    ax.set_xlabel("layer j")
    ax.set_ylabel("|I_j − I_N| / max |I|")
    ax.set_title(f"bilinear invariant ⟨p^[j], v^[j]⟩, {res['tableau']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- verify all
def run_all(out: str | Path, n: int = 40, seed: int = 0, casadi: bool = True, log=print) -> dict:
    """Every registry tableau: commutation (both control layouts), refinement (per-layer) and
    order; writes report.md, report.json and the figures into ``out``; returns the JSON."""
    from ocdl.rundir import write_json, write_text

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"commutation": {}, "refinement": {}, "order": {}, "checks": {}}
    for name in tableau_mod.names():
        tab = tableau_mod.get(name)
        for layout in LAYOUTS:
            inst = Instance.make(build_problem(tableau=name, controls=layout, n=n, seed=seed))
            res = comm_mod.commutation(inst, casadi=casadi)
            results["commutation"][f"{name}/{layout}"] = res
            results["checks"][f"commutation {name}/{layout}"] = commutation_checks(res)
            if name == "rk4" and layout == "per-layer":
                invariant_figure(res, out / "invariant_rk4.png")
        inst = Instance.make(build_problem(tableau=name, n=n, seed=seed))
        ref = comm_mod.refinement(inst)
        results["refinement"][name] = ref
        results["checks"][f"refinement {name}"] = refinement_checks(ref, tab.ode_order)
        res = order_mod.order(name, seed=seed, control=casadi)
        results["order"][name] = res
        results["checks"][f"order {name}"] = order_checks(res)
        order_figure(res, out / f"order_{name}.png")
        log(f"  {name}: done ({time.perf_counter() - t0:.1f} s)")
    results["seconds"] = time.perf_counter() - t0
    results["passed"] = all(ok for checks in results["checks"].values() for _, ok in checks)
    write_text(out / "report.md", markdown(results))
    write_json(out / "report.json", results)
    return results


def _pf(checks) -> str:
    bad = [d for d, ok in checks if not ok]
    return "pass" if not bad else "FAIL: " + "; ".join(bad)


def markdown(results: dict) -> str:
    """report.md: the tables of every registry tableau with pass/fail against the expectations."""
    L = ["# ocdl verify all", ""]
    some = next(iter(results["commutation"].values()))["problem"]
    L += [
        f"Problem: family {some['family']}, {some['layers']} layers, h = {some['h']:g}, {some['activation']}, "
        f"{some['data']} with n = {some['n']} points, {some['loss']} loss, seeded controls (seed {some['seed']}).",
        "rel. diff = max over parameter blocks θ ∈ {K, β, W, μ} of ‖g_θ − g_θ(autograd)‖∞ / ‖g_θ(autograd)‖∞; "
        "invariant = max_j |⟨p^[j], v^[j]⟩ − ⟨p^[N], v^[N]⟩| / max_j |⟨p^[j], v^[j]⟩|.",
        "",
        "## Commutation: gradients at the same controls, relative to autograd",
        "",
        "| tableau | controls | CasADi AD | OTD partner | OTD same tableau | OTD continuous | invariant partner | invariant same tableau | check |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results["commutation"].items():
        name, layout = key.split("/")
        m, inv = r["methods"], r["invariant_variation"]
        if r["partner_exists"]:
            partner, ipartner = _f(m["otd_partner"]["rel_diff"]), _f(inv["partner"])
        else:
            partner = f"n/a (b_i = 0); unscaled {_f(m[comm_mod.UNSCALED]['rel_diff'])}"
            ipartner = f"unscaled {_f(inv['unscaled'])}"
        L.append(
            f"| {name} | {layout} | {_f(m['dto_casadi']['rel_diff'])} | {partner} | {_f(m['otd_same_tableau']['rel_diff'])} "
            f"| {_f(m['otd_continuous']['rel_diff'])} | {ipartner} | {_f(inv.get('same_tableau'))} "
            f"| {_pf(results['checks'][f'commutation {key}'])} |"
        )
    reasons = {r["methods"][k]["reason"] for r in results["commutation"].values() for k in r["methods"]
               if r["methods"][k].get("reason") and not k == "otd_partner"}
    if reasons:
        L += ["", "— not computed: " + " / ".join(sorted(reasons))]
    L += [
        "",
        "## Refinement: the OTD gap as h → 0 (per-layer controls, T fixed, each layer split in r)",
        "",
        "The gradient compared is the one with respect to the coarse controls (sum over the r copies of a "
        "layer), a quantity independent of h. Expected: slope ≥ the ODE order.",
        "",
        "| tableau | ODE order | same tableau: h = 0.1, 0.05, 0.025 | slope | continuous: h = 0.1, 0.05, 0.025 | slope | check |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["refinement"].items():
        g = r["gaps"]
        L.append(
            f"| {name} | {tableau_mod.get(name).ode_order} | {', '.join(_f(x) for x in g['otd_same_tableau'])} "
            f"| {r['slopes']['otd_same_tableau']:.2f} | {', '.join(_f(x) for x in g['otd_continuous'])} "
            f"| {r['slopes']['otd_continuous']:.2f} | {_pf(results['checks'][f'refinement {name}'])} |"
        )
    L += [
        "",
        "## Orders: slopes of the error against h = T/N, N = 4…256 (T = 1, smooth controls at the stage times)",
        "",
        "| tableau | ODE order | OC order | state | costate | gradient | control (Hager) | figure | check |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["order"].items():
        s = r["slopes"]
        L.append(
            f"| {name} | {r['ode_order']} | {r['oc_order'] if r['oc_order'] is not None else 'n/a'} "
            f"| {_f(s['state'], '{:.2f}')} | {_f(s['costate'], '{:.2f}')} | {_f(s['gradient'], '{:.2f}')} "
            f"| {_f(s.get('control'), '{:.2f}')} | ![](order_{name}.png) | {_pf(results['checks'][f'order {name}'])} |"
        )
    creasons = {r.get("control_reason") for r in results["order"].values() if r.get("control_reason")}
    if creasons:
        L += ["", "control slope not computed: " + " / ".join(sorted(creasons))]
    L += [
        "",
        "Bilinear invariant across the layers for rk4 (per-layer): ![](invariant_rk4.png)",
        "",
        f"Overall: {'all checks pass' if results['passed'] else 'SOME CHECKS FAIL'}; "
        f"time {results['seconds']:.1f} s.",
        "",
    ]
    return "\n".join(L)


def summary_lines(results: dict) -> list[str]:
    """One line per check group for the terminal."""
    return [f"{k:<34} {_pf(v)}" for k, v in results["checks"].items()]


def dumps(obj) -> str:
    return json.dumps(obj, default=lambda x: x.item() if hasattr(x, "item") else str(x))
