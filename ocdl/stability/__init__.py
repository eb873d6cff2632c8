"""The stability estimates of the seed, measured (``ocdl stability``).

One module per estimate: :mod:`.flows` (the continuous flows and an accurate integrator),
:mod:`.monotone` (non-expansiveness of y' = −Kᵀσ(Ky+β) for monotone σ), :mod:`.discrete` (the
same for Runge–Kutta layers, against h ≤ 2/(L‖K‖²)), :mod:`.inverse` (the reaction term
−λAᵀ(Ay − f)), :mod:`.network` (trained networks), :mod:`.report` (report.md and figures).
"""
