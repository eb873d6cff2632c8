"""Solver ``newton``: trust-region Newton–CG (Steihaug–Toint) with exact Hessian–vector products.

Per iteration at θ_k (E, g = ∇E by the partner adjoint; H·v by the objective's ``curvature(θ)``
— :class:`~.hessian.Curvature` in the torch engine, the compiled second-order sweeps of
:mod:`ocdl.engine.native.curvature` in the native engine — or the Gauss–Newton G·v with
``hessian = 'gauss-newton'``), the model
m(s) = E + ⟨g, s⟩ + ½ ⟨s, H s⟩ is minimised over ‖s‖ ≤ Δ by truncated conjugate gradients
(Steihaug 1983, Toint 1981), started at s = 0:

* stop at ‖r‖ ≤ η ‖g‖, η = min(forcing, √‖g‖) (superlinear near a minimiser), or after
  ``cg_max`` iterations (0: n_θ);
* a direction p with ⟨p, H p⟩ ≤ 0 (negative curvature) or a step leaving the region: go to the
  boundary along p and stop (the Steihaug exit; counted as ``negative_curvature`` in the history).

ρ = (E(θ) − E(θ + s)) / (m(0) − m(s)); accept θ + s when ρ > ``eta``; Δ ← Δ/4 when ρ < 1/4,
Δ ← min(2Δ, ``radius_max``) when ρ > 3/4 and the step reached the boundary. Where the decrease is
at the round-off of E (|E − E⁺| ≤ 10³ u |E|) the actual decrease is taken as −½⟨g + g⁺, s⟩
instead (exact to O(‖s‖³), free of the cancellation), so that the quadratic phase is not stopped
by noise. An iteration is one trial (accepted or not).

Simplex time steps (h ∈ Δ_T = {h ≥ 0, Σh = T}): the model is minimised on the current face —
the steps h_j = 0 whose multiplier estimate g_j − λ (λ the mean of g over the free steps) is ≥ 0
stay at 0, the others are free with Σ_free s_j = 0 — by CG on Z H Z with Z the orthogonal projector
onto that face's directions; a step that would make a free h_j negative is cut where the first
one reaches 0 (that step is then set to 0 exactly and joins the active set). The stationarity
measure is ‖Z g‖ (the KKT residual, with λ and the active steps' multipliers eliminated).

Stopping: ‖∇E‖ ≤ tol · max(1, |E|) (‖Z∇E‖ for simplex steps), or ‖∇E‖ ≤ gtol; the divergence of
the parameters (a problem without a minimiser, e.g. no regulariser and separable data, where
E → inf E along a ray, so that ∇E vanishes without the steps doing so): ‖θ‖ > ``max_norm`` ·
max(1, ‖θ₀‖), or the tolerance met right after an accepted step longer than
√tol · max(1, ‖θ‖) (near a non-degenerate minimiser Newton's last steps shrink with the gradient,
quadratically) — either ended as 'diverged' in one line.

Ctrl-C and resume as :func:`ocdl.engine.torch.optim.optimise`: a trial is computed without touching
the run's state (θ, Δ, the iteration count, the history) and committed with Ctrl-C held back; a
resumed run recomputes E, g and the curvature at the saved θ, the same numbers, and so repeats the
uninterrupted run bit for bit. Runs on the device of the objective's tensors (CPU or GPU).
"""

from __future__ import annotations

import math
import time

import torch

from ocdl.interrupt import DeferSigint

_ROUNDOFF = 1e3 * 2.0**-52


class Face:
    """The simplex face of the current iterate (or nothing, without simplex steps): Z v the
    projection of a direction v onto it, ``gradient`` the reduced gradient Z g, ``cut`` the step
    length that keeps h ≥ 0."""

    def __init__(self, project, theta, g):
        self.sl = project.slice
        if self.sl is None:
            return
        h, gh = theta[self.sl], g[self.sl]
        free = h > 0
        lam = gh[free].mean()
        # at h_j = 0: free again if it pays to move mass there (g_j < λ)
        self.free = free | (gh - lam < 0)
        self.n_free = int(self.free.sum())

    def release(self, j) -> bool:
        """Fix the step h_j (at 0) on the face again; False where it is the last free one."""
        if self.n_free <= 1 or not bool(self.free[j]):
            return False
        self.free = self.free.clone()
        self.free[j] = False
        self.n_free -= 1
        return True

    def __call__(self, v):
        if self.sl is None:
            return v
        v = v.clone()
        vh = v[self.sl]
        vh[~self.free] = 0.0
        vh[self.free] -= vh[self.free].sum() / self.n_free
        return v

    def cut(self, theta, s):
        """(α ≤ 1 with h + α s_h ≥ 0, the index of the step that reaches 0 or None)."""
        if self.sl is None:
            return 1.0, None
        h, sh = theta[self.sl], s[self.sl]
        neg = sh < 0
        if not bool(neg.any()):
            return 1.0, None
        ratios = torch.where(neg, -h / torch.where(neg, sh, -1.0), torch.full_like(h, math.inf))
        j = int(torch.argmin(ratios))
        a = float(ratios[j])
        return (1.0, None) if a >= 1.0 else (a, j)


def steihaug(hv, g, radius, rtol, max_iter):
    """Truncated CG on min ⟨g, s⟩ + ½⟨s, H s⟩, ‖s‖ ≤ Δ: (s, H s, iterations, exit) with exit
    'converged', 'boundary', 'negative curvature' or 'max iterations'."""
    s, Hs = torch.zeros_like(g), torch.zeros_like(g)
    r = g.clone()  # the model's gradient g + H s
    p = -r
    rr = float(r @ r)
    tol2 = (rtol * math.sqrt(rr)) ** 2
    if rr == 0.0:
        return s, Hs, 0, "converged"
    for k in range(1, max_iter + 1):
        Hp = hv(p)
        pHp = float(p @ Hp)
        if pHp <= 0.0:
            tau = _to_boundary(s, p, radius)
            return s + tau * p, Hs + tau * Hp, k, "negative curvature"
        alpha = rr / pHp
        s_new = s + alpha * p
        if float(torch.linalg.vector_norm(s_new)) >= radius:
            tau = _to_boundary(s, p, radius)
            return s + tau * p, Hs + tau * Hp, k, "boundary"
        s, Hs = s_new, Hs + alpha * Hp
        r = r + alpha * Hp
        rr_new = float(r @ r)
        if rr_new <= tol2:
            return s, Hs, k, "converged"
        p = -r + (rr_new / rr) * p
        rr = rr_new
    return s, Hs, max_iter, "max iterations"


def _to_boundary(s, p, radius):
    """τ ≥ 0 with ‖s + τ p‖ = Δ."""
    pp, sp, ss = float(p @ p), float(s @ p), float(s @ s)
    disc = max(sp * sp + pp * (radius * radius - ss), 0.0)
    return (-sp + math.sqrt(disc)) / pp


def stationarity(project, theta, g) -> float:
    """‖g‖, or ‖Z g‖ on the simplex face of θ."""
    return float(torch.linalg.vector_norm(Face(project, theta, g)(g)))


def trial_step(obj, project, theta, E, g, cur, radius, opts):
    """One trust-region trial from θ (nothing of the run changed): a dict with the trial θ⁺, E⁺,
    g⁺, accepted, the new radius, the step length, CG iterations and exit, ρ."""
    face = Face(project, theta, g)
    before, k_all = cur.products, 0
    while True:
        gz = face(g)
        cg_max = int(opts["cg_max"]) or int(gz.numel())
        gnorm = float(torch.linalg.vector_norm(gz))
        rtol = min(float(opts["forcing"]), math.sqrt(gnorm))
        s, Hs, k, how = steihaug(lambda v: face(cur(face(v))), gz, radius, rtol, cg_max)
        k_all += k
        alpha, blocked = face.cut(theta, s)
        if blocked is None or alpha > 0.0 or not face.release(blocked):
            break
        # a step at 0 released by its multiplier estimate but pushed below 0 by the model: fixed at 0 again
    k = k_all
    if alpha < 1.0:
        s, Hs = alpha * s, alpha * Hs
    trial = theta + s
    if blocked is not None:
        trial[project.slice.start + blocked] = 0.0
    if project.slice is not None:  # Σ h = T kept to round-off at every step (no drift over the iterations)
        h = trial[project.slice]
        pos = h > 0
        h[pos] += (project.T - float(h.sum())) / int(pos.sum())
    s = trial - theta
    pred = -(float(g @ s) + 0.5 * float(s @ Hs))
    E_new, g_new = obj.value_grad(trial)
    length = float(torch.linalg.vector_norm(s))
    if not math.isfinite(E_new) or not bool(torch.isfinite(g_new).all()):
        rho, actual = -math.inf, -math.inf
    else:
        actual = E - E_new
        if abs(actual) <= _ROUNDOFF * max(abs(E), abs(E_new)):
            actual = -0.5 * float((g + g_new) @ s)
        rho = actual / pred if pred > 0 else (1.0 if actual >= 0 and length == 0.0 else -math.inf)
    boundary = how in ("boundary", "negative curvature") or alpha < 1.0
    if rho < 0.25:
        new_radius = 0.25 * (length if length > 0 else radius)
    elif rho > 0.75 and boundary and how != "converged":
        new_radius = min(2.0 * radius, float(opts["radius_max"]))
    else:
        new_radius = radius
    return {"trial": trial, "E": E_new, "g": g_new, "accepted": rho > float(opts["eta"]), "radius": new_radius,
            "step": length, "cg": k, "exit": how, "rho": rho, "products": cur.products - before,
            "pred": pred, "actual": actual, "cut": alpha < 1.0}


def newton_cg(obj, problem, theta0, iterations, opts, *, state=None, history=None, log=print, checkpoint=None):
    """Trust-region Newton–CG from θ₀ until ``iterations`` trials in total, the tolerance, or
    divergence (module docstring); returns a :class:`~ocdl.result.SolveResult` as
    :func:`~ocdl.engine.torch.optim.optimise`."""
    from ocdl.engine.torch.optim import Projection, _clock, _result

    obj.gradient = opts["gradient"]
    project = Projection(obj, problem)
    state = dict(state or {})
    it0 = int(state.get("iteration", 0))
    history = {k: list(v) for k, v in (history or {}).items()}
    for key in ("iteration", "objective", "gradient_norm", "step", "radius", "cg_iterations", "hv_products",
                "negative_curvature", "accepted", "eval_iteration", "train_accuracy", "test_accuracy",
                "test_objective"):
        history.setdefault(key, [])
    eval_every = int(opts["eval_every"]) or max(1, iterations // 200)
    progress_every = int(opts["progress_every"]) or 1
    every, seconds = int(opts["checkpoint_every"]), float(opts.get("checkpoint_seconds", 0.0))
    gauss_newton = opts["hessian"] == "gauss-newton"
    theta = project(theta0.clone())
    if "theta0_norm" not in state:
        state["theta0_norm"] = float(torch.linalg.vector_norm(theta))
    state.setdefault("radius", float(opts["radius0"]))
    t_start = time.perf_counter()
    last_checkpoint = _clock()
    it = it0
    message, success, interrupted, diverged = "iteration limit reached", True, False, False
    negative, gn = 0, math.nan

    def record(it, E, gn, step, radius, cg, products, neg, accepted, how=None, rho=None):
        history["iteration"].append(it)
        history["objective"].append(E)
        history["gradient_norm"].append(gn)
        history["step"].append(step)
        history["radius"].append(radius)
        history["cg_iterations"].append(cg)
        history["hv_products"].append(products)
        history["negative_curvature"].append(int(neg))  # 1: the Steihaug exit on negative curvature
        history["accepted"].append(int(accepted))
        if it % eval_every == 0 or it == iterations:
            m = obj.monitor(theta)
            history["eval_iteration"].append(it)
            for k, v in m.items():
                history[k].append(v)
        if log and (it % progress_every == 0 or it == iterations):
            extra = "" if how is None else f"  cg {cg:>4d} ({how})  rho {rho:.3g}" + ("" if accepted else " rejected")
            log(f"it {it:>6d}  E {E:.10e}  |g| {gn:.3e}  radius {radius:.3e}  step {step:.3e}{extra}  "
                f"({time.perf_counter() - t_start:.1f}s)")

    cur = None
    try:
        E, g = obj.value_grad(theta)
        gn = stationarity(project, theta, g)
        if not history["iteration"]:
            with DeferSigint():
                record(it, E, gn, 0.0, state["radius"], 0, 0, False, True)
        while it < iterations:
            if not math.isfinite(E):
                success, message = False, "objective is not finite"
                break
            tol = float(opts["tol"])
            if tol > 0 and gn <= tol * max(1.0, abs(E)):
                last = float(state.get("last_step", 0.0))
                norm = float(torch.linalg.vector_norm(theta))
                if last > math.sqrt(tol) * max(1.0, norm):
                    success, diverged = False, True
                    message = (f"diverged: ‖∇E‖ = {gn:.3e} vanishes but the steps do not (last {last:.3e}, ‖θ‖ = "
                               f"{norm:.3e}): E decreases along a ray, the objective has no minimiser here "
                               "(no regulariser, separable data?)")
                    break
                message = f"gradient norm {gn:.3e} ≤ tol·max(1, |E|) = {tol * max(1.0, abs(E)):.3e}"
                break
            if float(opts["gtol"]) > 0 and gn <= float(opts["gtol"]):
                message = f"gradient norm ≤ gtol = {opts['gtol']}"
                break
            why = _diverging(theta, state, opts)
            if why:
                success, diverged, message = False, True, why
                break
            if cur is None or cur.theta_of is not theta:
                cur = obj.curvature(theta, gauss_newton)
                cur.theta_of = theta
            t = trial_step(obj, project, theta, E, g, cur, state["radius"], opts)
            with DeferSigint():  # the commit: all of it, or (Ctrl-C before it) none of it
                neg = t["exit"] == "negative curvature"
                negative += neg
                if t["accepted"]:
                    state["last_step"] = t["step"]
                    theta, E, g = t["trial"], t["E"], t["g"]
                    gn = stationarity(project, theta, g)
                state["radius"] = t["radius"]
                state["hv_products"] = int(state.get("hv_products", 0)) + t["products"]
                state["cg_iterations"] = int(state.get("cg_iterations", 0)) + t["cg"]
                state["negative_curvature"] = int(state.get("negative_curvature", 0)) + int(neg)
                it += 1
                state["iteration"] = it
                record(it, E, gn, t["step"] if t["accepted"] else 0.0, state["radius"], t["cg"], t["products"], neg,
                       t["accepted"], t["exit"], t["rho"])
                if neg and log:
                    log(f"it {it:>6d}  negative curvature: Steihaug exit to the trust boundary (radius "
                        f"{t['radius']:.3e})")
            if state["radius"] < 1e-300 or (not t["accepted"] and t["step"] == 0.0 and t["cg"] == 0):
                success, message = False, f"trust region collapsed at iteration {it}"
                break
            if checkpoint and ((every and it % every == 0) or (seconds and _clock() - last_checkpoint >= seconds)):
                checkpoint(_result(obj, theta, history, state, None, True, "checkpoint", False))
                last_checkpoint = _clock()
    except KeyboardInterrupt:
        interrupted = True
    with DeferSigint(deliver=False) as late:
        state["iteration"] = it
        res = _result(obj, theta, history, state, None, success, message, interrupted)
        res.metrics.update({"function_evaluations": obj.evals, "gradient_evaluations": obj.grads,
                            "hv_products": int(state.get("hv_products", 0)),
                            "cg_iterations": int(state.get("cg_iterations", 0)),
                            "negative_curvature_steps": int(state.get("negative_curvature", 0)),
                            "stationarity": gn,
                            "hessian": opts["hessian"]})
    if diverged:
        res.metrics["solver_status"] = "diverged"
        if log:
            log(f"ocdl: {message}")
    if interrupted or late.pending:
        res.interrupted, res.message = True, f"interrupted at iteration {it}"
        res.metrics["solver_status"] = "interrupted"
    return res


def _diverging(theta, state, opts) -> str | None:
    """Why the parameters are diverging (module docstring), or None."""
    norm = float(torch.linalg.vector_norm(theta))
    limit = float(opts["max_norm"]) * max(1.0, float(state["theta0_norm"]))
    if norm > limit:
        return (f"diverged: ‖θ‖ = {norm:.3e} > max_norm·max(1, ‖θ₀‖) = {limit:.3e}; the objective has no "
                "minimiser here (no regulariser, separable data?)")
    return None
