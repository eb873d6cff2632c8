"""The experiments of a reproduction target: problem files of the catalogue and their roles.

A target is a folder of the catalogue (:mod:`ocdl.catalogue`): ``paper`` = ``problems/paper``,
``highacc`` = ``problems/highacc``, ``seed`` = ``problems/seed``. Each problem file ``<group>/<data>-<variant>.toml`` under it
is one experiment, for instance ``paper/rk/spiral-kutta4.toml``: group ``rk``, data ``spiral``,
variant ``kutta4``. The groups of ``paper``:

    lts                 learned time steps: Net, ResNet, ODENet, ODENet+simplex × 4 data sets
    rk                  Runge–Kutta networks: Euler, Improved Euler, Kutta(3), Kutta(4) × 4 data sets
    init2               the learned-time-step networks on spiral from a second initialisation
    trained-classifier  the learned-time-step networks on donut2d with W, μ trained

The groups of ``seed`` (the talk's image experiment, "ODENet for MNIST"; docs/seed.md):

    digits  Net, ResNet, ODENet, ODENet+simplex, 20 layers, on scikit-learn's bundled 8×8 digits
    mnist   the same on MNIST100 (the user's IDX files: ``data_path``; without one the group is
            skipped, see :func:`select`)

``--quick`` (:func:`quick`) divides the iteration count by 40 (at least 50) and uses at most 200
samples (the image data sets: at most 20 training images a class and 200 test images), for
CI-sized runs; the paper's figures and the table are drawn the same way (the run
directories then skip their own per-run figures).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ocdl import catalogue, problem as problem_mod
from ocdl.errors import OcdlError

TARGETS = ("paper", "highacc", "seed")
LABELS = {
    "net": "Net", "resnet": "ResNet", "odenet": "ODENet", "odenet-simplex": "ODENet+simplex",
    "euler": "Euler", "improved-euler": "Improved Euler", "kutta3": "Kutta(3)", "kutta4": "Kutta(4)",
}
GROUP_TITLES = {
    "lts": "learned time steps (classifier fixed at W = [10, 10], μ = 0)",
    "rk": "Runge–Kutta networks (15 layers, h = 0.1)",
    "init2": "learned time steps, second initialisation",
    "trained-classifier": "learned time steps, classifier trained",
    "highacc": "well-posed (regularised) problems, CasADi/IPOPT to KKT 1e-10",
    "digits": "the image experiment on digits (8×8, 10 classes; 20 layers, width 64, classifier trained)",
    "mnist": "the image experiment on MNIST100 (28×28, 10 classes; 20 layers, width 784, classifier trained)",
}
#: The data sets of images: their sizes are data.n_per_class and data.n_test (data.n is unused).
IMAGE_DATA = ("digits", "mnist")
QUICK_DIVISOR = 40
QUICK_MIN_ITERATIONS = 50
QUICK_MAX_SAMPLES = 200
QUICK_PER_CLASS = 20  # the image data sets: 20 training images a class (200 for ten classes)


@dataclass(frozen=True)
class Experiment:
    """One problem file in its role: ``name`` = ``<group>/<data>-<variant>``."""

    name: str
    group: str
    data: str
    variant: str
    path: Path
    problem: problem_mod.Problem

    @property
    def label(self) -> str:
        return LABELS.get(self.variant, self.variant)

    @property
    def key(self) -> str:
        """The cache key: a hash of the problem's plain data (any change reruns it)."""
        blob = json.dumps(self.problem.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def cost(self) -> float:
        """A relative cost (iterations × samples × stages), to start the longest first."""
        p = self.problem
        stages = p.n_stages if p.has_skip else 1
        return float(p.solver.iterations) * p.data.n * p.N * stages


def quick(problem: problem_mod.Problem) -> problem_mod.Problem:
    """The --quick variant: iterations / 40 (≥ 50), at most 200 samples (the image data sets: at
    most 20 training images a class and 200 test images); the progress and evaluation intervals
    are scaled with the iteration count."""
    it = max(QUICK_MIN_ITERATIONS, problem.solver.iterations // QUICK_DIVISOR)
    opts = dict(problem.solver.options)
    for key in ("eval_every", "progress_every", "checkpoint_every"):
        if opts.get(key):
            opts[key] = max(1, int(opts[key]) * it // max(1, problem.solver.iterations))
    if problem.solver.backend != "torch":
        it = problem.solver.iterations  # IPOPT's iteration limit is a safeguard, not the budget
    if problem.data.name in IMAGE_DATA:
        per, nt = problem.data.n_per_class, problem.data.n_test
        problem = problem.replace(
            data__n_per_class=QUICK_PER_CLASS if per is None else min(per, QUICK_PER_CLASS),
            data__n_test=QUICK_MAX_SAMPLES if nt is None else min(nt, QUICK_MAX_SAMPLES),
        )
    return problem.replace(
        data__n=min(problem.data.n, QUICK_MAX_SAMPLES),
        data__n_test=None if problem.data.n_test is None else min(problem.data.n_test, QUICK_MAX_SAMPLES),
        solver__iterations=it,
        solver__options=opts,
    )


_GROUP_ORDER = ("lts", "rk", "init2", "trained-classifier", "digits", "mnist")
_DATA_ORDER = ("donut1d", "donut2d", "spiral", "squares", "digits", "mnist")


def _order(e: "Experiment"):
    """Paper order: group, data set, then network / method as in :data:`LABELS`."""
    def pos(seq, x):
        return seq.index(x) if x in seq else len(seq)

    return (pos(_GROUP_ORDER, e.group), e.group, pos(_DATA_ORDER, e.data), e.data,
            pos(tuple(LABELS), e.variant), e.variant)


def _parse_name(rel: Path, target: str) -> tuple[str, str, str]:
    group = rel.parent.as_posix()
    group = target if group in ("", ".") else group
    stem = rel.stem
    if "-" not in stem:
        raise OcdlError(f"problem file {rel}: expected a name <data>-<variant>.toml")
    data, variant = stem.split("-", 1)
    return group, data, variant


def select(
    target: str = "paper",
    data: list[str] | None = None,
    groups: list[str] | None = None,
    only: list[str] | None = None,
    quick_mode: bool = False,
    folder: str | Path | None = None,
    data_path: str | Path | None = None,
    skipped: list | None = None,
) -> list[Experiment]:
    """The experiments of ``target`` (a catalogue folder), filtered by data set, group and
    ``only`` (glob patterns on the experiment name), each validated (errors name file and line).

    ``data_path``: the folder of MNIST's four IDX files, set as ``data.path`` of every experiment
    on ``mnist`` (an absolute path; checked here: a missing folder or file is one line naming
    it). Without it those experiments are left out and their names appended to ``skipped``;
    if nothing else is left, the error says that they need the folder.
    """
    if target not in TARGETS:
        raise OcdlError(f"unknown reproduction target {target!r}; known: {', '.join(TARGETS)}")
    base = Path(folder) if folder is not None else catalogue.root() / target
    files = catalogue.discover(base)
    if data_path is not None:
        from ocdl import images

        data_path = os.path.abspath(os.path.expanduser(str(data_path)))
        images.find_mnist_files(data_path)  # the one-line refusal of a wrong folder
    out, left_out = [], []
    for path in files:
        rel = path.relative_to(base)
        group, d, variant = _parse_name(rel, target)
        name = f"{group}/{d}-{variant}"
        if data and d not in data:
            continue
        if groups and group not in groups:
            continue
        if only and not any(fnmatch.fnmatch(name, pat) or fnmatch.fnmatch(f"{d}-{variant}", pat) for pat in only):
            continue
        prob = catalogue.load(path)
        if prob.data.name != d:
            raise OcdlError(f"{path}: file name says data set {d!r} but data.name = {prob.data.name!r}")
        if prob.data.name == "mnist":
            if data_path is None:
                left_out.append(Experiment(name, group, d, variant, path, prob))
                continue
            prob = prob.replace(data__path=data_path)
        if quick_mode:
            prob = quick(prob)
        out.append(Experiment(name, group, d, variant, path, prob))
    out.sort(key=_order)
    if skipped is not None:
        skipped.extend(e.name for e in sorted(left_out, key=_order))
    if not out and left_out:
        raise OcdlError(f"the mnist experiments of target {target!r} need --data-path DIR, the folder of "
                        "MNIST's four IDX files (downloaded by you; ocdl downloads nothing)")
    if not out:
        raise OcdlError(
            f"no experiment of target {target!r} matches"
            + (f" --data {','.join(data)}" if data else "")
            + (f" --group {','.join(groups)}" if groups else "")
            + (f" --only {','.join(only)}" if only else "")
        )
    return out
