"""Figures of a run: prediction over the plane, transformed points, objective/accuracy curves,
learned time steps. Each ``draw_*`` function draws on a given Axes (so that multi-panel figures
of ``ocdl reproduce`` reuse them); :func:`write_figures` saves the per-run PNGs atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ocdl.rundir import save_figure  # noqa: E402

CMAP = "coolwarm"


def evaluate(problem, params, X, keep_states=False, engine: str | None = None):
    """Network outputs for points X (m, dim): (probabilities S(z), y^[N] (m, d)[, all states]),
    z = W y^[N] + μ, by ``engine`` (default: the one the problem names)."""
    from ocdl import api, loss as loss_mod, xp as xp_mod

    Y = api.states(problem, params, X, engine)
    yN = Y[-1]
    prob = loss_mod.sigmoid(yN @ np.asarray(params["W"]) + float(params["mu"]), xp_mod.NUMPY)
    out = (prob, yN)
    if keep_states:
        out += (list(Y),)
    return out


def _scatter(ax, P, c, s=6):
    ax.scatter(P[:, 0], P[:, 1], c=c, cmap=CMAP, vmin=0, vmax=1, s=s, edgecolors="k", linewidths=0.2)


def draw_prediction(ax, problem, params, data, resolution=150):
    """S(W y^[N](x) + μ) over a grid of the input plane, with the points coloured by label."""
    lo = data.X.min(0) - 0.2
    hi = data.X.max(0) + 0.2
    if data.dim != 2:
        ax.text(0.5, 0.5, f"{data.dim}-D input", ha="center")
        return
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    prob, _ = evaluate(problem, params, np.stack([gx.ravel(), gy.ravel()], 1))
    ax.contourf(gx, gy, prob.reshape(gx.shape), levels=np.linspace(0, 1, 21), cmap=CMAP, alpha=0.6)
    ax.contour(gx, gy, prob.reshape(gx.shape), levels=[0.5], colors="k", linewidths=1)
    _scatter(ax, data.X, data.c)
    ax.set_aspect("equal", adjustable="box")


def draw_points(ax, P, c, W, mu):
    """Points P (m, d) in their first two coordinates with the classifier line W·y + μ = 0
    (for d > 2: coordinates along W/‖W‖ and the leading orthogonal principal direction)."""
    W = np.asarray(W, dtype=float)
    if P.shape[1] == 2:
        Q = P
        w2, off = W, float(mu)
    else:
        e1 = W / max(np.linalg.norm(W), 1e-300)
        R = P - np.outer(P @ e1, e1)
        _, _, Vt = np.linalg.svd(R - R.mean(0), full_matrices=False)
        Q = np.stack([P @ e1, P @ Vt[0]], 1)
        w2, off = np.array([np.linalg.norm(W), 0.0]), float(mu)
    _scatter(ax, Q, c)
    lo, hi = Q.min(0), Q.max(0)
    pad = 0.1 * (hi - lo + 1e-12)
    lo, hi = lo - pad, hi + pad
    if abs(w2[1]) > abs(w2[0]) * 1e-12:
        xs = np.array([lo[0], hi[0]])
        ax.plot(xs, -(off + w2[0] * xs) / w2[1], "k-", lw=1)
    elif abs(w2[0]) > 0:
        ax.axvline(-off / w2[0], color="k", lw=1)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])


def draw_transformed(ax, problem, params, data):
    """The points after the last layer, y^[N], with the linear classifier's line."""
    _, yN = evaluate(problem, params, data.X)
    draw_points(ax, yN, data.c, params["W"], params["mu"])


def _values(history, key):
    """history[key] as floats (a null of a strict metrics.json: NaN, not drawn)."""
    return np.array([np.nan if v is None else v for v in history.get(key) or []], dtype=float)


def has_accuracy(history) -> bool:
    return bool(history.get("eval_iteration")) and bool(history.get("train_accuracy"))


def draw_curves(ax_obj, ax_acc, history, label=None, color=None):
    """Objective (log scale) and accuracy against iterations: train solid, test dashed — each only
    where the history holds it (a CasADi run records the objective alone); ``ax_acc`` may be None."""
    it = np.asarray(history.get("iteration", []))
    E = _values(history, "objective")
    ev = np.asarray(history.get("eval_iteration", []))
    kw = {"color": color} if color else {}
    if len(it):
        ax_obj.plot(it, E, "-", label=label, **kw)
    if len(ev) and history.get("test_objective"):
        ax_obj.plot(ev, _values(history, "test_objective"), "--", **kw)
    if ax_acc is not None and has_accuracy(history):
        ax_acc.plot(ev, _values(history, "train_accuracy"), "-", label=label, **kw)
        if history.get("test_accuracy"):
            ax_acc.plot(ev, _values(history, "test_accuracy"), "--", **kw)
    if len(E) and np.any(np.isfinite(E)) and np.all(E[np.isfinite(E)] > 0):
        ax_obj.set_yscale("log")
    ax_obj.set_xlabel("iteration")
    ax_obj.set_ylabel("objective")
    if ax_acc is not None:
        ax_acc.set_xlabel("iteration")
        ax_acc.set_ylabel("accuracy")


def draw_infeasibility(ax, history):
    """IPOPT's primal and dual infeasibility per iteration (log scale)."""
    it = np.asarray(history.get("iteration", []))
    for key, style, name in (("inf_pr", "-", "primal infeasibility"), ("inf_du", "--", "dual infeasibility")):
        v = _values(history, key)
        v[~(v > 0)] = np.nan  # log scale: a 0 (IPOPT's inf_pr at a feasible start) is not drawn
        if len(v) == len(it) and len(v):
            ax.plot(it, v, style, color="k", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("infeasibility")
    ax.legend(loc="best", fontsize=8)


def _class_legend(ax, extra=()):
    """A legend of the two classes' markers (the colour map's ends) and ``extra`` (handle, label)."""
    from matplotlib.lines import Line2D

    cmap = plt.get_cmap(CMAP)
    handles = [Line2D([], [], ls="", marker="o", markersize=5, markerfacecolor=cmap(float(k)), markeredgecolor="k",
                      markeredgewidth=0.3, label=f"class {k} (train)") for k in (0, 1)]
    handles += [Line2D([], [], **kw, label=name) for kw, name in extra]
    ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.8)


def draw_timesteps(ax, h, label=None):
    """Bar chart of the time steps h_j per layer."""
    ax.bar(np.arange(1, len(h) + 1), h, label=label)
    ax.set_xlabel("layer j")
    ax.set_ylabel("h_j")


def write_figures(out: Path, problem, params, history, train, test) -> list[str]:
    """prediction.png, transformed.png, objective.png and (learned h) timesteps.png."""
    out = Path(out)
    written = []

    def save(fig, name):
        fig.tight_layout()
        save_figure(fig, out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    fig, ax = plt.subplots(figsize=(5, 5))
    draw_prediction(ax, problem, params, train)
    if train.dim == 2:
        ax.set_xlabel("feature 1, $x_1$")
        ax.set_ylabel("feature 2, $x_2$")
        _class_legend(ax, [({"color": "k", "lw": 1}, "decision boundary S = 1/2")])
    ax.set_title(f"prediction S(x) on the training set ({problem.data.name}, {problem.family})", fontsize=10)
    save(fig, "prediction.png")

    fig, ax = plt.subplots(figsize=(5, 5))
    draw_transformed(ax, problem, params, train)
    if np.asarray(params["W"]).shape[0] == 2:
        ax.set_xlabel("$y^{[N]}_1$")
        ax.set_ylabel("$y^{[N]}_2$")
    else:
        ax.set_xlabel(r"$y^{[N]}$ along $W/\|W\|$")
        ax.set_ylabel(r"$y^{[N]}$, leading orthogonal principal direction")
    _class_legend(ax, [({"color": "k", "lw": 1}, r"classifier $W\cdot y + \mu = 0$")])
    ax.set_title("training points after the last layer, $y^{[N]}$", fontsize=10)
    save(fig, "transformed.png")
    _write_common(problem, params, history, save)
    return written


def _write_common(problem, params, history, save) -> None:
    """objective.png (the curves the history holds: the objective, and the accuracies where the
    engine records them, else IPOPT's infeasibilities; titles that say which) and, for learned
    steps, timesteps.png."""
    history = history or {}
    test_obj = bool(history.get("eval_iteration")) and bool(history.get("test_objective"))
    second = "accuracy" if has_accuracy(history) else ("infeasibility" if history.get("inf_pr") else None)
    fig, axes = plt.subplots(1, 2 if second else 1, figsize=(10, 4) if second else (5.5, 4), squeeze=False)
    a1 = axes[0, 0]
    a2 = axes[0, 1] if second else None
    draw_curves(a1, a2 if second == "accuracy" else None, history)
    a1.set_title("objective E (train solid, test dashed)" if test_obj else "objective E (training set)")
    if second == "accuracy":
        a2.set_title("accuracy (train solid, test dashed)" if history.get("test_accuracy") else "accuracy (train)")
    elif second == "infeasibility":
        draw_infeasibility(a2, history)
        a2.set_title("IPOPT infeasibility")
    save(fig, "objective.png")

    if problem.time_steps != "fixed" and problem.has_skip:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        draw_timesteps(ax, params["h"])
        ax.set_title(f"learned time steps ({problem.time_steps}); Σh = {float(np.sum(params['h'])):.4g}")
        save(fig, "timesteps.png")
