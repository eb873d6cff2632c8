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
    """Network outputs for the (lifted) points X (m, dim): (probabilities, y^[N] (m, d)[, all
    states]): S(z) of class 1 (m,) for two classes, softmax(z) (m, K) for K, z = W y^[N] + μ, by
    ``engine`` (default: the one the problem names)."""
    from ocdl import api, loss as loss_mod, xp as xp_mod

    Y = api.states(problem, params, X, engine, lifted=True)
    yN = Y[-1]
    W, mu = np.asarray(params["W"]), np.asarray(params["mu"])
    K = 2 if W.ndim == 1 else W.shape[0]
    prob = loss_mod.hypothesis((yN @ W.T + mu).T if K != 2 else yN @ W + float(mu), xp_mod.NUMPY, K)
    prob = prob.T if K != 2 else prob
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
    if data.dim != 2 or problem.network.lift not in (None, "pad"):
        ax.text(0.5, 0.5, f"{data.dim}-D input" if data.dim != 2 else f"input lifted ({problem.network.lift})",
                ha="center")
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


def _side(n: int) -> int | None:
    """The side of a square image of n pixels (None if n is not a square)."""
    r = int(round(np.sqrt(n)))
    return r if r * r == n else None


def class_colors(K: int):
    """One colour per class (matplotlib's tab10, tab20 beyond ten)."""
    return plt.get_cmap("tab10" if K <= 10 else "tab20")(np.arange(K) % (10 if K <= 10 else 20))


def pca2(P: np.ndarray) -> np.ndarray:
    """The points P (m, d) in their two leading principal coordinates (m, 2), signs fixed so that
    the largest entry of each direction is positive."""
    Pc = P - P.mean(0)
    _, _, Vt = np.linalg.svd(Pc, full_matrices=False)
    V = Vt[:2].T
    if V.shape[1] < 2:
        V = np.concatenate([V, np.zeros((V.shape[0], 2 - V.shape[1]))], 1)
    V = V * np.where(V[np.abs(V).argmax(0), np.arange(2)] < 0, -1.0, 1.0)
    return Pc @ V


def draw_classes_pca(ax, P, c, K: int, title: str):
    """The points P in their two leading principal coordinates, coloured by class."""
    Q, cols = pca2(np.asarray(P, dtype=float)), class_colors(K)
    for k in range(K):
        sel = c == k
        ax.scatter(Q[sel, 0], Q[sel, 1], s=6, color=cols[k], label=str(k), edgecolors="none")
    ax.set_xlabel("principal coordinate 1")
    ax.set_ylabel("principal coordinate 2")
    ax.set_title(title)


def sample_per_class(c, K: int, per: int) -> np.ndarray:
    """The indices of the first ``per`` samples of each class (class by class)."""
    return np.concatenate([np.flatnonzero(c == k)[:per] for k in range(K)]).astype(int)


def draw_image_rows(fig, rows, labels, titles, predicted=None):
    """One row of images per entry of ``rows`` (each an array (n, pixels) of square images, or
    of any width, drawn as a strip), the label above each column; columns whose prediction is
    wrong are marked red."""
    n = len(labels)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (V, title) in enumerate(zip(rows, titles)):
        side = _side(V.shape[1])
        for j in range(n):
            ax = axes[r, j]
            img = V[j].reshape(side, side) if side else V[j][None, :]
            ax.imshow(img, cmap="gray_r" if r == 0 else "coolwarm", interpolation="nearest",
                      aspect="equal" if side else "auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                wrong = predicted is not None and predicted[j] != labels[j]
                ax.set_title(f"{int(labels[j])}" + (f"→{int(predicted[j])}" if wrong else ""),
                             fontsize=7, color="red" if wrong else "black")
            if j == 0:
                ax.set_ylabel(title, fontsize=7)
    return axes


def write_class_figures(out: Path, problem, params, test, save) -> None:
    """For K ≥ 3 classes: features.png (test images, two per class, above their features y^[N])
    and transformed.png (y^[0] and y^[N] of the test set in principal coordinates by class)."""
    from ocdl import data as data_mod

    K = np.asarray(params["W"]).shape[0]
    idx = sample_per_class(test.c, K, 2)
    prob, yN, Y = evaluate(problem, params, test.X, keep_states=True)
    raw = test.X
    if problem.network.lift not in (None, "pad"):  # the images themselves, not their lifted features
        raw = data_mod.make(problem.data)[1].X
    fig = plt.figure(figsize=(max(6, 0.55 * len(idx)), 2.4))
    draw_image_rows(fig, [raw[idx], yN[idx]], test.c[idx], ["input", "y^[N]"], predicted=prob[idx].argmax(1))
    fig.suptitle(f"test samples and their features y^[N] ({problem.family}, {problem.N} layers); "
                 "red: misclassified (label→prediction)", fontsize=8)
    save(fig, "features.png")

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 4.5))
    draw_classes_pca(a0, Y[0], test.c, K, "test features y^[0]")
    draw_classes_pca(a1, yN, test.c, K, f"transformed y^[N] ({problem.family})")
    a1.legend(title="class", fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
    save(fig, "transformed.png")


def write_figures(out: Path, problem, params, history, train, test) -> list[str]:
    """prediction.png and transformed.png (two classes) or features.png and transformed.png
    (K classes), objective.png and (learned h) timesteps.png."""
    out = Path(out)
    written = []

    def save(fig, name):
        fig.tight_layout()
        save_figure(fig, out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    if np.ndim(params["W"]) == 2:
        write_class_figures(out, problem, params, test, save)
        _write_common(problem, params, history, save)
        return written
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
