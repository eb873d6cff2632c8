"""What a solve and an evaluation return: engine-independent result types.

:class:`SolveResult` is what an engine's ``solve`` hands back; :class:`Evaluation` what its
``evaluate`` computes at one parameter set; :class:`Result` what :func:`ocdl.solve` returns (the
two together, with the run's figures as named fields).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SolveResult:
    """Result of one training solve, engine-independent.

    ``params``: final parameters (float64 NumPy arrays, keys of :mod:`ocdl.problem`).
    ``history``: per-iteration lists, at least ``iteration`` and ``objective`` (and, where the
    engine computes them, ``gradient_norm``, ``train_accuracy``, ``test_accuracy``, …).
    ``metrics``: engine-specific scalars merged into metrics.json (e.g. ``solver_status``,
    ``kkt_residual``, ``constraint_violation``, ``iterations``, ``build_time_s``, ``solve_time_s``).
    ``costates``: optional arrays for costates.npz (``p`` (N+1, m, d), ``P`` (N, s, m, d)).
    ``success``: False when the solver failed (the command exits non-zero, the run directory is
    still written); ``message`` says why. ``state``: optimiser state for ``--resume``.
    """

    params: dict
    history: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    costates: dict | None = None
    success: bool = True
    message: str = ""
    state: dict | None = None
    interrupted: bool = False


@dataclass
class Evaluation:
    """The training objective at one parameter set, as one engine computes it.

    ``objective`` E (training set, regulariser included) and ``test_objective`` (the same formula
    on the test set); ``gradient`` ∇E per trained key, ``gradient_norm`` ‖∇E‖₂ and
    ``gradient_norm_inf`` ‖∇E‖∞ over the trained parameters; ``train_accuracy``, ``test_accuracy``;
    ``states`` the final layer states y^[N] of the training set (d × n); ``engine`` its name."""

    objective: float
    test_objective: float
    gradient: dict
    gradient_norm: float
    gradient_norm_inf: float
    train_accuracy: float
    test_accuracy: float
    states: np.ndarray
    engine: str

    def metrics(self) -> dict:
        """The scalar figures, as a run's metrics.json holds them."""
        return {"objective": self.objective, "test_objective": self.test_objective,
                "gradient_norm": self.gradient_norm, "gradient_norm_inf": self.gradient_norm_inf,
                "train_accuracy": self.train_accuracy, "test_accuracy": self.test_accuracy}


@dataclass
class Result:
    """What :func:`ocdl.solve` returns, the same for every engine.

    ``params`` the final parameters (K, beta, W, mu, h as float64 arrays); ``objective`` E and
    ``gradient_norm`` ‖∇E‖₂ there (from ``evaluation``); ``kkt_residual`` (None where the engine
    has no KKT system); ``costates`` (``p``, ``P``; None where the engine has none); ``status``
    'ok' | 'failed' | 'interrupted' and ``message``; ``iterations``; ``history`` (per-iteration
    lists); ``wall_time_s``; ``engine``, ``solver``; ``metrics`` the engine's own figures;
    ``evaluation`` the full :class:`Evaluation`; ``state`` what a resumed solve continues from."""

    params: dict
    objective: float
    gradient_norm: float
    kkt_residual: float | None
    costates: dict | None
    status: str
    message: str
    iterations: int
    history: dict
    wall_time_s: float
    engine: str
    solver: str
    metrics: dict
    evaluation: Evaluation
    state: dict | None = None

    @property
    def success(self) -> bool:
        return self.status == "ok"

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"
