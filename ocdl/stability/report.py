"""``ocdl stability all``: every estimate measured, written as report.md + report.json + PNG figures.

:func:`measure_all` runs the measurements (sizes in :data:`SIZES`, or :data:`QUICK` for a smoke
run), :func:`figures` draws them, :func:`markdown` renders the tables, :func:`write` writes all
files atomically once everything has been computed (nothing is written if a step fails).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ocdl import rundir, tableau as tableau_mod  # noqa: E402
from ocdl.errors import OcdlError  # noqa: E402
from ocdl.stability import discrete, inverse, monotone, network  # noqa: E402

SIZES = {
    "mono_cases": 80, "mono_sigmas": monotone.MONOTONE, "plain_sigmas": ("tanh", "softplus", "sigmoid"),
    "check_cases": 8, "disc_cases": 120, "disc_sigmas": ("tanh", "relu"), "disc_layers": 10,
    "inv_cases": 40, "train_iterations": 500,
}
QUICK = {
    "mono_cases": 16, "mono_sigmas": ("tanh", "relu"), "plain_sigmas": ("tanh",),
    "check_cases": 4, "disc_cases": 12, "disc_sigmas": ("tanh",), "disc_layers": 3,
    "inv_cases": 6, "train_iterations": 20,
}


def measure_all(quick: bool = False, seed: int = 0, log=None) -> dict:
    """All measurements of the report (see the module docstring); ``log`` gets progress lines."""
    S = QUICK if quick else SIZES
    say = log or (lambda s: None)
    res: dict = {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in S.items()}, "seed": seed,
                 "times": {}}
    t0 = time.perf_counter()
    mono = []
    for sig in S["mono_sigmas"]:
        mono.append(monotone.measure(sig, "monotone", S["mono_cases"], seed=seed))
    for sig in S["plain_sigmas"]:
        mono.append(monotone.measure(sig, "plain", S["mono_cases"], seed=seed))
    for sig in monotone.NON_MONOTONE:
        mono.append(monotone.measure(sig, "monotone", S["mono_cases"], seed=seed))
    res["monotone"] = mono
    res["integrator_error"] = {sig: monotone.integrator_error(sig, cases=S["check_cases"], seed=seed)
                               for sig in ("tanh", "hardtanh")}
    res["times"]["monotone"] = time.perf_counter() - t0
    say(f"monotone flows: {res['times']['monotone']:.1f} s")

    t0 = time.perf_counter()
    res["discrete"] = {sig: [discrete.measure(name, sig, S["disc_cases"], 2, S["disc_layers"], seed)
                             for name in tableau_mod.names()] for sig in S["disc_sigmas"]}
    res["times"]["discrete"] = time.perf_counter() - t0
    say(f"discrete flows: {res['times']['discrete']:.1f} s")

    t0 = time.perf_counter()
    res["inverse"] = inverse.measure("tanh", 1.0, 1e-3, "random", 1.0, S["inv_cases"], seed=seed)
    res["times"]["inverse"] = time.perf_counter() - t0
    say(f"inverse problem: {res['times']['inverse']:.1f} s")

    t0 = time.perf_counter()
    res["network"] = network.train_pair(S["train_iterations"])
    res["times"]["network"] = time.perf_counter() - t0
    say(f"trained networks: {res['times']['network']:.1f} s")
    return res


# --------------------------------------------------------------------------- figures
def _fig_monotone(res):
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    pick = {("tanh", "monotone"): "C0", ("tanh", "plain"): "C1", ("sin", "monotone"): "C3"}
    for r in res["monotone"]:
        col = pick.get((r["sigma"], r["flow"]))
        if col is None:
            continue
        for k, (t, ratio) in enumerate(r["curves"]):
            a.plot(t, ratio, color=col, lw=1, alpha=0.7, label=f"{r['sigma']}, {r['flow']}" if k == 0 else None)
    a.axhline(1.0, color="k", lw=0.8, ls="--")
    a.set_yscale("log")
    a.set_xlabel("t")
    a.set_ylabel("‖y(t) − y^δ(t)‖ / ‖y(0) − y^δ(0)‖")
    a.set_title("perturbation growth along the flow")
    a.legend(fontsize=8)
    labels = []
    for i, r in enumerate(res["monotone"]):
        x = i + 0.15 * np.random.default_rng(i).standard_normal(len(r["ratios"]))
        b.scatter(x, r["ratios"], s=4, color="C0" if (r["flow"] == "monotone" and r["monotone"]) else "C3")
        labels.append(f"{r['sigma']}\n{r['flow']}")
    b.axhline(1.0, color="k", lw=0.8, ls="--")
    b.set_yscale("log")
    b.set_xticks(range(len(labels)), labels, fontsize=7, rotation=90)
    b.set_ylabel("max over t of the ratio, per case")
    b.set_title("blue: estimate applies (≤ 1); red: it does not")
    fig.tight_layout()
    return fig


def _fig_discrete(results_by_sigma, name):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for sig, style in zip(results_by_sigma, ("-", "--", ":")):
        r = next(x for x in results_by_sigma[sig] if x["tableau"] == name)
        ax.plot(r["x"], r["one_layer"]["curve"], "C0" + style, label=f"{sig}, one layer")
        ax.plot(r["x"], r["n_layers"]["curve"], "C1" + style, label=f"{sig}, {r['layers']} layers")
    r = next(x for x in next(iter(results_by_sigma.values())) if x["tableau"] == name)
    ax.axvline(r["euler_bound"], color="k", lw=0.8, ls="--", label=f"Euler bound 2/L = {r['euler_bound']:g}")
    ax.axvline(r["linear_limit"], color="C2", lw=0.8, ls="-.", label=f"linear limit r/L = {r['linear_limit']:.3f}")
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_yscale("log")
    ax.set_xlabel("x = h ‖K‖²")
    ax.set_ylabel("max over cases of the growth")
    ax.set_title(f"{name}: monotone layers y ← y − h Kᵀσ(Ky + β)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _fig_inverse(inv):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    titles = {"a": "(a) data perturbation, same start", "b": "(b) distance to y† (source condition)",
              "d": "(d) full column rank: contraction"}
    for ax, key in zip(axes, ("a", "b", "d")):
        w = inv[key].get("worst")
        if not w:
            ax.set_title(f"{titles[key]}: skipped")
            continue
        ax.plot(w["t"], w["measured"], label="measured (worst case)")
        ax.plot(w["t"], w["bound"], "--", label="bound")
        ax.set_xlabel("t")
        ax.set_title(f"{titles[key]}\nmax ratio {inv[key]['max_ratio']:.4f}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _fig_inverse_c(c):
    fig, ax = plt.subplots(figsize=(5.5, 4))
    d = np.array(c["deltas"])
    ax.loglog(d, c["errors"], "o-", label=f"t* = τδ: rate {c['rate']:.3f}")
    ax.loglog(d, c["bounds"], "k--", lw=0.8, label="bound δ + (C + λδ)τδ")
    ax.loglog(d, c["fixed_errors"], "s-", label=f"best fixed t = {c['fixed_time']:.3g}: rate {c['fixed_rate']:.3f}")
    ax.set_xlabel("δ")
    ax.set_ylabel("‖y^δ(t) − y†‖ (worst case)")
    ax.set_title("(c) A = I, y^δ(0) = f^δ")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _fig_network(nets):
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for r in nets:
        lab = f"{r['family']} ({r['tableau']})"
        a.plot(r["growth_per_layer"], "o-", label=lab + ": local")
        a.plot(r["pairs_per_layer"], "x--", label=lab + ": over data pairs")
    a.axhline(1.0, color="k", lw=0.8, ls="--")
    a.set_xlabel("layer j")
    a.set_ylabel("empirical Lipschitz constant of x ↦ y_j(x)")
    a.legend(fontsize=8)
    for r in nets:
        b.plot(r["layer_x_L"], "o-", label=f"{r['family']}")
    b.axhline(2.0, color="k", lw=0.8, ls="--", label="Euler condition h L‖K‖² ≤ 2")
    b.set_xlabel("layer j")
    b.set_ylabel("h_j L ‖K_j‖²")
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figures(res: dict) -> dict:
    """{file name: matplotlib Figure} for the report."""
    figs = {"monotone.png": _fig_monotone(res)}
    for name in tableau_mod.names():
        figs[f"discrete-{name}.png"] = _fig_discrete(res["discrete"], name)
    figs["inverse.png"] = _fig_inverse(res["inverse"])
    figs["inverse-c.png"] = _fig_inverse_c(res["inverse"]["c"])
    figs["network.png"] = _fig_network(res["network"])
    return figs


# --------------------------------------------------------------------------- markdown
def _f(x, nd=4):
    if x is None:
        return "–"
    if isinstance(x, float) and np.isinf(x):
        return "∞"
    return f"{x:.{nd}g}" if isinstance(x, float) else str(x)


def _x(x):
    return "∞ (none found)" if np.isinf(x) else f"{x:.4f}"


def tables(res: dict) -> str:
    """The measured tables (markdown)."""
    out = []
    tol = monotone.TOL
    out.append("## 1. Monotone flow y' = −K(t)ᵀσ(K(t)y + β(t))\n")
    out.append(f"Per case: max over t ∈ (0, T] of ‖y(t) − y^δ(t)‖ / ‖y(0) − y^δ(0)‖ (T = 1, widths 1…16, "
               f"K, β piecewise constant or smooth). Violation: ratio > 1 + {tol:g}. "
               "`plain` is the unmodified flow y' = σ(Ky + β).\n")
    out.append("| σ | monotone σ | flow | cases | max ratio | violations | median ratio at T |")
    out.append("|---|---|---|---:|---:|---:|---:|")
    for r in res["monotone"]:
        out.append(f"| {r['sigma']} | {'yes' if r['monotone'] else 'no'} | {r['flow']} | {r['cases']} | "
                   f"{r['max_ratio']:.12g} | {r['violations']} | {r['median_final_ratio']:.4g} |")
    ie = res["integrator_error"]
    out.append("\nIntegrator error in a ratio (|ratio at T, rtol 1e-11 − rtol 1e-13|, max over cases): "
               + ", ".join(f"{k} {v:.1e}" for k, v in ie.items()) + f" — far below the tolerance {tol:g}.\n")
    out.append("![monotone](monotone.png)\n")

    out.append("## 2. Discrete flows: Runge–Kutta layers of the monotone flow\n")
    out.append("x* = largest x = h‖K‖² with no case growing (> 1 + tol) on [0, x]; one layer, and N layers "
               "(x = h max_j‖K_j‖²). Euler bound 2/L; linear limit r/L from the stability function.\n")
    for sig, rows in res["discrete"].items():
        r0 = rows[0]
        out.append(f"σ = {sig} (L = {r0['L']:g}), {r0['cases']} cases, width {r0['width']}, N = {r0['layers']}:\n")
        out.append("| tableau | linear limit r/L | x* one layer | x* N layers | Euler bound 2/L | "
                   "violations for x ≤ 2/L (1 / N layers) |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for r in rows:
            out.append(f"| {r['tableau']} | {r['linear_limit']:.4f} | {_x(r['one_layer']['x_star'])} | "
                       f"{_x(r['n_layers']['x_star'])} | {r['euler_bound']:g} | "
                       f"{r['one_layer']['violations_up_to_euler_bound']} / {r['n_layers']['violations_up_to_euler_bound']} |")
        out.append("")
    out.append("Figures: " + ", ".join(f"[{n}](discrete-{n}.png)" for n in tableau_mod.names()) + "\n")
    out.append("![discrete-euler](discrete-euler.png)\n")

    inv = res["inverse"]
    out.append("## 3. Inverse problem y' = −Kᵀσ(Ky + β) − λAᵀ(Ay − f)\n")
    out.append(f"σ = {inv['sigma']}, λ = {inv['lam']:g}, δ = {inv['delta']:g}, A = {inv['A']}. "
               "Ratio = measured / bound at every step, maximised over t and cases (≤ 1: the estimate holds).\n")
    out.append("| estimate | bound | cases | max ratio | violations |")
    out.append("|---|---|---:|---:|---:|")
    names = {"a": ("(a) data perturbation", "λ‖A‖tδ"),
             "b": ("(b) source condition", "‖y^δ(0) − y†‖ + (C + λδ‖A‖)t"),
             "d": ("(d) full column rank", "e^{−λs²t}‖e(0)‖ + (‖A‖δ/s²)(1 − e^{−λs²t})")}
    for key in ("a", "b", "d"):
        r = inv[key]
        out.append(f"| {names[key][0]} | {names[key][1]} | {_f(r.get('cases'))} | {_f(r['max_ratio'], 8)} | "
                   f"{_f(r['violations'])} |")
    c = inv["c"]
    out.append(f"\n(c) A = I, y^δ(0) = f^δ, stopping time t* = τδ (τ = {c['tau']:g}); worst case over "
               "the cases; fixed time t_f: the best single time in [τδ_max, T] for all δ.\n")
    out.append("| δ | error at t* | bound δ + (C + λδ)τδ | error at t_f = " + f"{c['fixed_time']:.3g} |")
    out.append("|---:|---:|---:|---:|")
    for d_, e, b, ef in zip(c["deltas"], c["errors"], c["bounds"], c["fixed_errors"]):
        out.append(f"| {d_:g} | {e:.4g} | {b:.4g} | {ef:.4g} |")
    out.append(f"| rate | {c['rate']:.3f} | | {c['fixed_rate']:.3f} |\n")
    out.append("![inverse](inverse.png)\n\n![inverse-c](inverse-c.png)\n")

    out.append("## 4. Trained networks\n")
    out.append("Lipschitz constants of x ↦ y_N(x) on the training points: local = max ‖∂y_N/∂x‖₂ "
               "(central differences), pairs = max ‖y_N(x_n) − y_N(x_k)‖/‖x_n − x_k‖ over random pairs.\n")
    out.append("| network | iterations | objective | train / test acc. | local | local, max over layers | pairs | "
               "max_j h_j L‖K_j‖² | estimate | a-priori bound Π ℓ_j |")
    out.append("|---|---:|---:|---|---:|---:|---:|---:|---|---:|")
    for r in res["network"]:
        est = "≤ 1 (holds)" if r["estimate_holds"] else f"none: {r['estimate_note']}"
        out.append(f"| {r['family']} ({r['tableau']}, {r['sigma']}, N = {r['layers']}) | {r['iterations']} | "
                   f"{r['objective']:.4g} | {r['train_accuracy']:.3f} / {r['test_accuracy']:.3f} | "
                   f"{r['lipschitz_local']:.4g} | {r['lipschitz_local_all_layers']:.4g} | {r['lipschitz_pairs']:.4g} | "
                   f"{r['max_h_L_normK2']:.4g} | {est} | {r['a_priori_bound']:.4g} |")
    out.append("\n![network](network.png)\n")
    t = res["times"]
    out.append("Time per part: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()) + ".\n")
    return "\n".join(out)


def markdown(res: dict) -> str:
    """report.md."""
    head = ("# ocdl stability report\n\nThe estimates of Benning et al. (2019), measured by "
            f"`ocdl stability all` (seed {res['seed']}{', --quick' if res.get('quick') else ''}).\n")
    return head + "\n" + tables(res)


def json_report(res: dict) -> dict:
    """report.json: every number of the tables (arrays left out)."""
    return {
        "seed": res["seed"],
        "settings": res["settings"],
        "times": res["times"],
        "monotone": [monotone.json_view(r) for r in res["monotone"]],
        "integrator_error": res["integrator_error"],
        "discrete": {s: [discrete.json_view(r) for r in rows] for s, rows in res["discrete"].items()},
        "inverse": inverse.json_view(res["inverse"]),
        "network": [network.json_view(r) for r in res["network"]],
    }


def write(res: dict, out: str | Path, docs: str | Path | None = None, docs_intro: str = "") -> list[Path]:
    """Write report.md, report.json and the figures into ``out`` (each file atomically), and
    optionally a docs page (``docs_intro`` + the tables, figure links pointing into ``out``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OcdlError(f"--out {str(out)!r} exists and is not a folder")
    figs = figures(res)
    md = markdown(res)
    js = json.dumps(json_report(res), indent=1, default=float) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figs.items():
        rundir.save_figure(fig, out / name, dpi=90)
        plt.close(fig)
        paths.append(out / name)
    rundir.write_text(out / "report.json", js)
    rundir.write_text(out / "report.md", md)
    paths += [out / "report.json", out / "report.md"]
    if docs is not None:
        docs = Path(docs)
        docs.parent.mkdir(parents=True, exist_ok=True)
        body = tables(res)
        prefix = _relative(out, docs.parent)
        body = body.replace("](", f"]({prefix}/") if prefix not in ("", ".") else body
        rundir.write_text(docs, docs_intro + "\n" + body)
        paths.append(docs)
    return paths


def _relative(target: Path, start: Path) -> str:
    import os

    return os.path.relpath(Path(target).resolve(), Path(start).resolve())


DOCS_INTRO = r"""# `ocdl stability`: the stability estimates, measured

The last part of the seed (Benning, Celledoni, Ehrhardt, Owren, Schönlieb 2019) states regularity
estimates for ODE networks. `ocdl stability` checks each one numerically — on random and on trained
networks — and prints the measured quantity beside the bound, so that you can see where a
discretisation or a training run breaks an estimate.

```
ocdl stability monotone --sigma tanh --dim 2 --cases 1000 [--flow plain] [--json]
ocdl stability monotone --sigma sin ...          # non-monotone σ: violations are found
ocdl stability discrete --tableau rk4 --sigma tanh [--json] [--out DIR]
ocdl stability inverse --lam 1.0 --delta 1e-3 [--A random|identity|FILE] [--json]
ocdl stability network runs/spiral-rk4           # a trained network (run directory)
ocdl stability all --out runs/stab [--docs docs/stability.md]   # report.md, report.json, figures
```

## The estimates

* **Monotone flow.** For $y' = -K(t)^\top \sigma(K(t) y + \beta(t))$ with $\sigma$ non-decreasing,
  $\|y(t) - y^\delta(t)\| \le \|y(0) - y^\delta(0)\|$
  ($\frac{d}{dt} \tfrac{1}{2} \|e\|^2 = -\langle \sigma(Ky + \beta) - \sigma(Ky^\delta + \beta), K e \rangle \le 0$).
  The unmodified flow $y' = \sigma(Ky + \beta)$ and non-monotone $\sigma$ ($\sin$, $x \tanh x$) have
  no such estimate.
* **Discrete flows.** One forward-Euler layer $y \leftarrow y - h K^\top \sigma(Ky + \beta)$ with
  $\sigma' \in [0, L]$ is non-expansive iff $h L \|K\|^2 \le 2$ (the secant of $\sigma$ gives
  $(I - h K^\top D K) e$, $D$ diagonal in $[0, L]$). For other Runge–Kutta tableaux there is no such
  theorem; the linear limit $r/L$ ($r$ the real stability interval of the tableau's stability
  function) is what an affine $\sigma$ would allow.
* **Inverse problem.** With the reaction term,
  $y' = -K^\top \sigma(Ky + \beta) - \lambda A^\top (Ay - f)$:

    * (a) $\|f - f^\delta\| = \delta$, same start: $\|y(t) - y^\delta(t)\| \le \lambda \|A\| t \delta$;
    * (b) $A y^\dagger = f$, $C = \sup_t \|K(t)^\top \sigma(K(t) y^\dagger + \beta(t))\|$:
      $\|y^\delta(t) - y^\dagger\| \le \|y^\delta(0) - y^\dagger\| + (C + \lambda \delta \|A\|) t$;
    * (c) $A = I$, $y^\delta(0) = f^\delta$: at a stopping time $t^* = \tau \delta$ the error is $O(\delta)$;
    * (d) $A$ of full column rank, $s = \sigma_{\min}(A)$: the flow contracts at rate $\lambda s^2$,
      $\|y(t) - y^\delta(t)\| \le e^{-\lambda s^2 t} \|y(0) - y^\delta(0)\| + (\|A\| \delta / s^2)(1 - e^{-\lambda s^2 t})$.

## How it is measured

* $K(t)$, $\beta(t)$ are seeded random, piecewise constant (4 pieces of $[0, 1]$) or smooth
  ($K_0 + \sin(2\pi t) K_1 + \cos(2\pi t) K_2$), widths 1…16. All cases of one width are integrated as one
  block-diagonal system (the flow structure is preserved exactly) with scipy's DOP853,
  rtol 1e-11, atol 1e-13, restarting at the breakpoints of the controls. The trajectory $y$ and
  the difference $y^\delta - y$ are the integrated variables, so the difference is accurate relative
  to itself.
* relu, leaky-relu and hardtanh have kinks. The integrator freezes each unit's affine piece,
  locates the first kink crossing on the dense output (brentq) and restarts there; a cheap cubic
  screen inside every step catches units that cross and come back. Without this the error
  control has to step through every kink, ~10⁴× less accurately and many times slower.
* The ratio is taken at every accepted step and at 3 dense-output points inside it; a ratio
  above `1 + 1e-8` is a violation. The integrator's own error in a ratio (rtol 1e-11 against
  1e-13) is ~1e-12 (table below).
* Discrete scan: for every registry tableau, $x = h \|K\|^2$ on a grid (then bisection on the
  first violating interval); cases are drawn with $z = Ky + \beta$ near 0, spread, or deep in the
  positive range (where $\sigma' \approx L$ for tanh/sigmoid resp. relu/softplus), and half the
  perturbations along the top eigenvector of $K^\top K$. $x^*$ is the largest $x$ up to which no case
  grows; it is an *empirical* limit — a worse case may exist (for $N$ layers, $x$ uses
  $\max_j \|K_j\|^2$, and the cases are a different draw, so $x^*$ can exceed the one-layer value).
* Trained networks: the discrete flow $x \mapsto y_j(x)$ of a run directory, by the PyTorch engine;
  local Lipschitz constants $\max_n \|\partial y_j / \partial x (x_n)\|_2$ (central differences along
  the input coordinates) and over random pairs of training points. `all` trains a ResNet (Euler,
  $\sigma(Ky + \beta)$) and its monotone variant (Euler, $-K^\top \sigma(Ky + \beta)$) from the same
  seeded start.

## What the tables show

* Monotone $\sigma$: no violation in any case; the maximum ratio is 1 up to round-off (relu and
  hardtanh keep a perturbation unchanged while all units it touches are inactive). The
  unmodified flow and the non-monotone $\sin$, $x \tanh x$ expand in many cases (violations column).
* Forward Euler: no violation up to $2/L$, and expansion just above it (cases with
  $\sigma' \approx L$), so the bound is sharp. The other tableaux reach about their linear limit $r/L$
  for tanh — but with relu, **explicit midpoint** ($b = (0, 1)$) expands already below $2/L$, and
  the 3/8 rule below its linear limit: a smaller step than the linear theory suggests is needed
  there. Use Euler with $h L \|K\|^2 \le 2$, or check your tableau with `ocdl stability discrete`.
* Inverse problem: (a), (b), (d) hold in every case, with worst ratios close to 1 (the bounds
  are nearly attained at small $t$); (c) the error at $t^* = \tau \delta$ decreases like $\delta$
  (rate ≈ 1), while at any fixed time it levels off.
* Training does not keep the step condition: the trained monotone network has layers with
  $h L \|K_j\|^2 > 2$ and expands there (see the per-layer figure). The estimate survives training
  only if the condition is imposed (e.g. projecting each $K_j$ onto $\|K_j\|^2 \le 2/(hL)$); a
  Tikhonov term on $K$ alone did not achieve it at comparable accuracy in our trials.
"""
