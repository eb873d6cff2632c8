"""What an engine's solver hands back to the run directory writer."""

from __future__ import annotations

from dataclasses import dataclass, field


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
