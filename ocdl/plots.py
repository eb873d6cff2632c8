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


def draw_curves(ax_obj, ax_acc, history, label=None, color=None):
    """Objective (log scale) and accuracy against iterations: train solid, test dashed."""
    it = np.asarray(history.get("iteration", []))
    E = np.asarray(history.get("objective", []), dtype=float)
    ev = np.asarray(history.get("eval_iteration", []))
    kw = {"color": color} if color else {}
    if len(it):
        ax_obj.plot(it, E, "-", label=label, **kw)
    if len(ev) and history.get("test_objective"):
        ax_obj.plot(ev, history["test_objective"], "--", **kw)
    if len(ev) and history.get("train_accuracy"):
        ax_acc.plot(ev, history["train_accuracy"], "-", label=label, **kw)
        ax_acc.plot(ev, history["test_accuracy"], "--", **kw)
    if len(E) and np.all(E[np.isfinite(E)] > 0):
        ax_obj.set_yscale("log")
    ax_obj.set_xlabel("iteration")
    ax_obj.set_ylabel("objective")
    ax_acc.set_xlabel("iteration")
    ax_acc.set_ylabel("accuracy")


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
    ax.set_title(f"prediction ({problem.data.name}, {problem.family})")
    save(fig, "prediction.png")

    fig, ax = plt.subplots(figsize=(5, 5))
    draw_transformed(ax, problem, params, train)
    ax.set_title("transformed points y^[N] and classifier")
    save(fig, "transformed.png")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    draw_curves(a1, a2, history)
    a1.set_title("objective (train solid, test dashed)")
    a2.set_title("accuracy (train solid, test dashed)")
    save(fig, "objective.png")

    if problem.time_steps != "fixed" and problem.has_skip:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        draw_timesteps(ax, params["h"])
        ax.set_title(f"learned time steps ({problem.time_steps}); Σh = {float(np.sum(params['h'])):.4g}")
        save(fig, "timesteps.png")
    return written
