"""The paper's figures, multi-panel, from the run directories of a reproduction (PNG and PDF).

    datasets                    the four data sets (training draws)
    <group>-<data>              learned-time-step networks: prediction over the plane (top) and the
                                transformed points y^[N] with the classifier's line (bottom), per net
    <group>-<data>-curves       objective and accuracy against iterations (train solid, test dashed)
    lts-timesteps               learned time steps h_j per layer, ODENet and ODENet+simplex
    rk-<data>                   the four RK methods side by side: prediction, then the points
                                layer by layer (y^[0], y^[N/3], y^[2N/3], y^[N])
    initialisations-<data>      two initialisations (lts vs init2): predictions and time steps
    fixed-classifier-<data>     transformed points with the classifier fixed (lts) and trained

The image experiment (target ``seed``, groups ``digits`` and ``mnist``):

    <group>-features            test images (two a class) and below them their features y^[N] as
                                images, one row per network (misclassified ones framed red)
    <group>-transformed         the test features y^[0] and y^[N] of each network in their two
                                leading principal coordinates, coloured by class
    <group>-curves              objective and accuracy against iterations (train solid, test dashed)
    <group>-timesteps           learned time steps h_j per layer, ODENet and ODENet+simplex

Panels are drawn with the Axes-level drawers of :mod:`ocdl.plots`; a missing experiment leaves
its panel empty with a note.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ocdl import data as data_mod, plots, rundir  # noqa: E402
from ocdl.reproduce import summary  # noqa: E402
from ocdl.reproduce.experiments import LABELS, Experiment  # noqa: E402

NETS = ("net", "resnet", "odenet", "odenet-simplex")
METHODS = ("euler", "improved-euler", "kutta3", "kutta4")
DATA_ORDER = ("donut1d", "donut2d", "spiral", "squares")
IMAGE_GROUPS = ("digits", "mnist")  # the groups of target seed (one data set each)
IMAGES_PER_CLASS = 2  # test images a class in <group>-features
FORMATS = ("png", "pdf")
COLORS = dict(zip(NETS + METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 2))


class Results:
    """{(group, data, variant): (problem, params, metrics)} with cached data sets."""

    def __init__(self, experiments: list[Experiment], loaded: dict):
        self.by_key = {}
        for e in experiments:
            if e.name in loaded:
                self.by_key[(e.group, e.data, e.variant)] = loaded[e.name]
        self._data = {}
        self._states = {}  # (test set, y^[0], y^[N], predictions) of the image experiment, by id(params)

    def get(self, group, data, variant):
        return self.by_key.get((group, data, variant))

    def datasets(self, problem):
        spec = problem.data
        if spec not in self._data:
            self._data[spec] = data_mod.make(spec)
        return self._data[spec]

    def data_names(self, group) -> list[str]:
        present = {d for (g, d, _) in self.by_key if g == group}
        return [d for d in DATA_ORDER if d in present] + sorted(present - set(DATA_ORDER))


def _missing(ax, text="not run"):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.5")
    ax.set_xticks([])
    ax.set_yticks([])


def _acc(m) -> str:
    return f"acc. {m['train_accuracy']:.3f} / {m['test_accuracy']:.3f}"


def _save(fig, out: Path, name: str, written: list) -> None:
    fig.tight_layout()
    for fmt in FORMATS:
        rundir.save_figure(fig, out / f"{name}.{fmt}", dpi=90)
    plt.close(fig)
    written.append(name)


def datasets_figure(res: Results, out: Path, written: list) -> None:
    specs = {}
    for (g, d, v), (problem, _, _) in sorted(res.by_key.items()):
        if g in IMAGE_GROUPS:  # images: their samples are the first row of <group>-features
            continue
        if d not in specs or problem.data.n > specs[d].data.n:
            specs[d] = problem
    names = [d for d in DATA_ORDER if d in specs] + sorted(set(specs) - set(DATA_ORDER))
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    for ax, d in zip(axes[0], names):
        train, _ = res.datasets(specs[d])
        plots.draw_points(ax, train.X, train.c, np.zeros(2), 0.0)
        ax.set_title(f"{d} (n = {train.n})")
        ax.set_aspect("equal", adjustable="box")
    _save(fig, out, "datasets", written)


def nets_figure(res: Results, group: str, data: str, out: Path, written: list) -> None:
    """Prediction (top) and transformed points (bottom) for the four learned-time-step nets."""
    fig, axes = plt.subplots(2, len(NETS), figsize=(3.2 * len(NETS), 6.4), squeeze=False)
    for k, net in enumerate(NETS):
        r = res.get(group, data, net)
        if r is None:
            _missing(axes[0, k])
            _missing(axes[1, k])
            axes[0, k].set_title(LABELS[net])
            continue
        problem, params, m = r
        train, _ = res.datasets(problem)
        plots.draw_prediction(axes[0, k], problem, params, train)
        axes[0, k].set_title(f"{LABELS[net]}\n{_acc(m)}", fontsize=9)
        plots.draw_transformed(axes[1, k], problem, params, train)
        axes[1, k].set_title("y^[N] and classifier", fontsize=9)
    fig.suptitle(f"{data}: {group}")
    _save(fig, out, f"{group}-{data}", written)


def curves_figure(res: Results, group: str, data: str, variants, out: Path, written: list,
                  name: str | None = None) -> None:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    any_ = False
    for v in variants:
        r = res.get(group, data, v)
        if r is None:
            continue
        any_ = True
        plots.draw_curves(a1, a2, r[2].get("history", {}), label=LABELS.get(v, v), color=COLORS.get(v))
    if not any_:
        plt.close(fig)
        return
    a1.set_title(f"{data}: objective (train solid, test dashed)", fontsize=9)
    a2.set_title(f"{data}: accuracy (train solid, test dashed)", fontsize=9)
    for ax in (a2, a1):  # the legend where the labelled lines are (CasADi runs record no accuracies)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
            break
    _save(fig, out, name or f"{group}-{data}-curves", written)


def timesteps_figure(res: Results, group: str, out: Path, written: list) -> None:
    names = res.data_names(group)
    variants = ("odenet", "odenet-simplex")
    if not names:
        return
    fig, axes = plt.subplots(len(names), 2, figsize=(9, 2.4 * len(names)), squeeze=False)
    for i, d in enumerate(names):
        for k, v in enumerate(variants):
            ax = axes[i, k]
            r = res.get(group, d, v)
            if r is None:
                _missing(ax)
                continue
            problem, params, _ = r
            plots.draw_timesteps(ax, params["h"])
            ax.axhline(problem.h, color="0.4", lw=0.8, ls=":")  # the ResNet's fixed step T/N
            nz = summary.nonzero_steps(problem, params)
            ax.set_title(f"{d}, {LABELS[v]}: {nz} non-zero, Σh = {params['h'].sum():.3g}", fontsize=9)
    _save(fig, out, f"{group}-timesteps", written)


def rk_figure(res: Results, data: str, out: Path, written: list, group: str = "rk") -> None:
    """The four RK methods side by side: prediction, then the points layer by layer."""
    some = next((res.get(group, data, m) for m in METHODS if res.get(group, data, m)), None)
    if some is None:
        return
    N = some[0].N
    layers = sorted({0, N // 3, (2 * N) // 3, N})
    # the paper's group shows all four methods (a missing one as an empty panel); others what they have
    methods = METHODS if group == "rk" else [m for m in METHODS if res.get(group, data, m)]
    fig, axes = plt.subplots(1 + len(layers), len(methods), figsize=(3.0 * len(methods), 3.0 * (1 + len(layers))),
                             squeeze=False)
    for k, meth in enumerate(methods):
        r = res.get(group, data, meth)
        if r is None:
            for ax in axes[:, k]:
                _missing(ax)
            axes[0, k].set_title(LABELS[meth])
            continue
        problem, params, m = r
        train, _ = res.datasets(problem)
        plots.draw_prediction(axes[0, k], problem, params, train)
        axes[0, k].set_title(f"{LABELS[meth]}\n{_acc(m)}", fontsize=9)
        _, _, states = plots.evaluate(problem, params, train.X, keep_states=True)
        for i, j in enumerate(layers, start=1):
            plots.draw_points(axes[i, k], states[j], train.c, params["W"], params["mu"])
            axes[i, k].set_title(f"y^[{j}]", fontsize=9)
    fig.suptitle(f"{data}: Runge–Kutta networks ({group}), layer by layer")
    _save(fig, out, f"{group}-{data}", written)


def initialisations_figure(res: Results, data: str, out: Path, written: list) -> None:
    groups = ("lts", "init2")
    if not any(res.get("init2", data, v) for v in NETS):
        return
    fig, axes = plt.subplots(3, len(NETS), figsize=(3.2 * len(NETS), 9.0), squeeze=False)
    for k, net in enumerate(NETS):
        for i, g in enumerate(groups):
            r = res.get(g, data, net)
            ax = axes[i, k]
            if r is None:
                _missing(ax)
                continue
            problem, params, m = r
            train, _ = res.datasets(problem)
            plots.draw_prediction(ax, problem, params, train)
            ax.set_title(f"{LABELS[net]}, init seed {problem.init.seed}\n{_acc(m)}", fontsize=9)
        ax = axes[2, k]
        hs = [(g, res.get(g, data, net)) for g in groups]
        hs = [(g, r) for g, r in hs if r is not None and r[0].time_steps != "fixed" and r[0].has_skip]
        if not hs:
            _missing(ax, "fixed steps" if net in ("resnet",) else "no time steps")
            continue
        width = 0.8 / len(hs)
        for i, (g, (problem, params, _)) in enumerate(hs):
            ax.bar(np.arange(1, problem.N + 1) + (i - (len(hs) - 1) / 2) * width, params["h"], width,
                   label=f"init seed {problem.init.seed}")
        ax.set_xlabel("layer j")
        ax.set_ylabel("h_j")
        ax.legend(fontsize=8)
    fig.suptitle(f"{data}: two initialisations")
    _save(fig, out, f"initialisations-{data}", written)


def classifier_figure(res: Results, data: str, out: Path, written: list) -> None:
    groups = (("lts", "classifier fixed"), ("trained-classifier", "classifier trained"))
    if not any(res.get("trained-classifier", data, v) for v in NETS):
        return
    fig, axes = plt.subplots(2, len(NETS), figsize=(3.2 * len(NETS), 6.4), squeeze=False)
    for k, net in enumerate(NETS):
        for i, (g, what) in enumerate(groups):
            r = res.get(g, data, net)
            ax = axes[i, k]
            if r is None:
                _missing(ax)
                continue
            problem, params, m = r
            train, _ = res.datasets(problem)
            plots.draw_transformed(ax, problem, params, train)
            W = params["W"]
            ax.set_title(f"{LABELS[net]}, {what}\nW = [{W[0]:.3g}, {W[1]:.3g}], {_acc(m)}", fontsize=8)
    fig.suptitle(f"{data}: transformed points y^[N] and the classifier's line")
    _save(fig, out, f"fixed-classifier-{data}", written)


# ------------------------------------------------------------------------------ the image experiment
def _test_states(res: Results, problem, params):
    """(test set, y^[0], y^[N], predicted classes) of the test images (the problem's lifting)."""
    from ocdl import api

    memo = res._states
    key = id(params)
    if key not in memo:
        _, test = res.datasets(problem)
        Y = api.states(problem, params, test.X)
        z = Y[-1] @ np.asarray(params["W"]).T + np.asarray(params["mu"])
        memo[key] = (test, Y[0], Y[-1], z.argmax(axis=1))
    return memo[key]


def features_figure(res: Results, group: str, data: str, out: Path, written: list) -> None:
    """Test images (two a class, top row) and their features y^[N] as images, one row per
    network; a misclassified image's column is framed red in that network's row."""
    present = [v for v in NETS if res.get(group, data, v)]
    if not present:
        return
    problem0, params0, _ = res.get(group, data, present[0])
    test, _, _, _ = _test_states(res, problem0, params0)
    K = np.asarray(params0["W"]).shape[0]
    idx = plots.sample_per_class(test.c, K, IMAGES_PER_CLASS)
    rows, titles, preds = [test.X[idx]], ["test images"], [None]
    for v in NETS:
        r = res.get(group, data, v)
        if r is None:
            rows.append(np.zeros((len(idx), rows[0].shape[1])))
            titles.append(f"{LABELS[v]}\n(not run)")
            preds.append(None)
            continue
        problem, params, m = r
        _, _, yN, pred = _test_states(res, problem, params)
        rows.append(yN[idx])
        titles.append(f"{LABELS[v]}\ntest {m['test_accuracy']:.3f}")
        preds.append(pred[idx])
    fig = plt.figure(figsize=(max(6.0, 0.5 * len(idx)) + 0.6, 0.8 * len(rows) + 0.9))
    axes = plots.draw_image_rows(fig, rows, test.c[idx], titles)
    for i, pred in enumerate(preds):
        if pred is None:
            continue
        for j in np.flatnonzero(pred != test.c[idx]):
            for spine in axes[i, j].spines.values():
                spine.set_color("red")
                spine.set_linewidth(1.5)
    fig.suptitle(f"{data}: test images and their features y^[N] ({problem0.N} layers, width "
                 f"{rows[-1].shape[1]}); red frame: misclassified by that network", fontsize=8)
    _save(fig, out, f"{group}-features", written)


def transformed_figure(res: Results, group: str, data: str, out: Path, written: list) -> None:
    """y^[0] (the same lifted images for all four networks) and each network's y^[N] of the
    test set in their two leading principal coordinates, coloured by class."""
    present = [v for v in NETS if res.get(group, data, v)]
    if not present:
        return
    fig, axes = plt.subplots(1, 1 + len(NETS), figsize=(3.1 * (1 + len(NETS)) + 0.8, 3.4), squeeze=False)
    axes = axes[0]
    problem0, params0, _ = res.get(group, data, present[0])
    test, y0, _, _ = _test_states(res, problem0, params0)
    K = np.asarray(params0["W"]).shape[0]
    plots.draw_classes_pca(axes[0], y0, test.c, K, "test features y^[0]")
    for ax, v in zip(axes[1:], NETS):
        r = res.get(group, data, v)
        if r is None:
            _missing(ax)
            ax.set_title(LABELS[v])
            continue
        problem, params, m = r
        _, _, yN, _ = _test_states(res, problem, params)
        plots.draw_classes_pca(ax, yN, test.c, K, f"{LABELS[v]}: y^[N]")
    for ax in axes:
        ax.title.set_fontsize(9)
        ax.xaxis.label.set_fontsize(8)
        ax.yaxis.label.set_fontsize(8)
    handles, labels = axes[0].get_legend_handles_labels()  # y^[0]'s panel is always drawn
    axes[-1].legend(handles, labels, title="class", fontsize=7, markerscale=2, loc="center left",
                    bbox_to_anchor=(1, 0.5))
    fig.suptitle(f"{data}: test features before (y^[0]) and after (y^[N]) the networks, principal coordinates",
                 fontsize=9)
    _save(fig, out, f"{group}-transformed", written)


def draw_all(out: str | Path, experiments: list[Experiment], loaded: dict) -> list[str]:
    """Draw every figure the finished experiments allow into ``out``/figures; returns names."""
    from ocdl.engine.torch.network import configure_threads

    configure_threads(150 * 150, 2)  # small batches (a 150² grid): one thread, as in training
    folder = Path(out) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    res = Results(experiments, loaded)
    written: list[str] = []
    datasets_figure(res, folder, written)
    for group in ("lts", "init2", "trained-classifier"):
        for d in res.data_names(group):
            nets_figure(res, group, d, folder, written)
            curves_figure(res, group, d, NETS, folder, written)
    if res.data_names("lts"):
        timesteps_figure(res, "lts", folder, written)
    for group in ("rk", "highacc"):
        for d in res.data_names(group):
            rk_figure(res, d, folder, written, group)
            curves_figure(res, group, d, METHODS, folder, written)
    for d in res.data_names("init2"):
        initialisations_figure(res, d, folder, written)
    for d in res.data_names("trained-classifier"):
        classifier_figure(res, d, folder, written)
    for group in IMAGE_GROUPS:
        for d in res.data_names(group):
            features_figure(res, group, d, folder, written)
            transformed_figure(res, group, d, folder, written)
            curves_figure(res, group, d, NETS, folder, written, name=f"{group}-curves")
        if res.data_names(group):
            timesteps_figure(res, group, folder, written)
    return written
