"""The native engine's compiled objective on the flat θ and its compiled ``gd-armijo`` loop
(numba): E(θ), ∇E(θ) and blocks of steepest-descent iterations with Armijo backtracking, with no
Python between the sweeps.

``value_grad`` reads K, β (and h, W, μ where trained) as views of θ in the layout of
:class:`~ocdl.engine.torch.optim.Objective`, runs the forward sweep (:func:`.kernels.forward`), the
two-class loss (:func:`.kernels.loss2`) and R,

    R = Σ_θ (α_θ/2) ‖θ‖² + (α_s/2h̄) Σ_j ‖u_{j+1} − u_j‖²     (as :mod:`ocdl.regulariser`),

and with ``want_grad`` the backward sweep (:func:`.kernels.backward`) and
∇E = (network part) + ∇R, ∇R = α θ + the smoothness differences, the same elementwise operations as
the Python path (:meth:`ocdl.engine.native.compiled.Compiled.value_grad`); only the sums of R are
added in another order (round-off).

``armijo`` runs up to n iterations of :func:`ocdl.engine.torch.optim._armijo_step`, unchanged:
α = min(α_max, 2 α_prev); for at most ``max_backtracks`` trials θ⁺ = θ − α g, accept at
E(θ⁺) ≤ E + c ⟨g, θ⁺ − θ⟩ (then ∇E(θ⁺) from the kept states), else α ← ρ α; before each iteration
it stops where E is not finite or ‖g‖ ≤ gtol (gtol > 0). It returns the per-iteration objective,
gradient norm and step; the caller commits the block whole (:func:`ocdl.engine.torch.optim.optimise`).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ocdl.engine.native.kernels import _JIT, backward, chunk_sum, forward, loss2, wide

# status of a block
DONE, LINE_SEARCH_FAILED, NOT_FINITE, GTOL = 0, 1, 2, 3


@nb.njit(**_JIT)
def _sumsq(x, o, n):
    wide()
    acc = 0.0
    for i in range(o, o + n):
        acc += x[i] * x[i]
    return acc


@nb.njit(**_JIT)
def value_grad(theta, want_grad, fresh, P, Y0, c, states, stages, pN, gW, gK, gb, gh, g):
    """E(θ), and ∇E into g with ``want_grad``; ``fresh``: run the forward sweep (else the states
    (and stages) of the last sweep at this θ are used). ``P``: the problem's tuple of
    :meth:`ocdl.engine.native.objective.CompiledObjective.layout`."""
    wide()
    (N, su, d, code, scale, A, b, skip, c0s, coef, w, store, chunk, oK, ob, oW, omu, oh,
     h0, W0, mu0, alpha, smooth) = P
    nK, nb_ = N * su * d * d, N * su * d
    K = theta[oK:oK + nK].reshape((N, su, d, d))
    beta = theta[ob:ob + nb_].reshape((N, su, d))
    h = theta[oh:oh + N] if oh >= 0 else h0
    if fresh:
        forward(Y0, K, beta, h, A, b, skip, states, stages, store, chunk)
    W = theta[oW:oW + d] if oW >= 0 else W0
    mu = theta[omu] if omu >= 0 else mu0
    E, gmu = loss2(code, states[N], W, mu, c, scale, want_grad, pN, gW)
    R = 0.0
    offs = (oK, ob, oW, omu, oh)
    sizes = (nK, nb_, d, 1, N)
    for k in range(5):
        if offs[k] >= 0 and alpha[k] > 0.0:
            R += 0.5 * alpha[k] * _sumsq(theta, offs[k], sizes[k])
    if smooth > 0.0 and N > 1:
        for o, n in ((oK, nK), (ob, nb_)):
            per = n // N
            acc = 0.0
            for i in range(o, o + n - per):
                dd = theta[i + per] - theta[i]
                acc += dd * dd
            R += 0.5 * smooth * acc
    E = E + R
    if not want_grad:
        return E
    gK[:] = 0.0
    gb[:] = 0.0
    gh[:] = 0.0
    backward(states, stages, store, K, beta, h, A, c0s, coef, w, skip, pN, gK, gb, gh, chunk)
    sK, sb, sh = chunk_sum(gK).ravel(), chunk_sum(gb).ravel(), chunk_sum(gh)
    for k, (o, n) in enumerate(((oK, nK), (ob, nb_), (oW, d), (omu, 1), (oh, N))):
        if o < 0:
            continue
        for i in range(n):
            if k == 0:
                net = sK[i]
            elif k == 1:
                net = sb[i]
            elif k == 2:
                net = gW[i]
            elif k == 3:
                net = gmu
            else:
                net = sh[i]
            g[o + i] = net
        rg = np.empty(n)
        for i in range(n):
            rg[i] = alpha[k] * theta[o + i] + 0.0
        if smooth > 0.0 and N > 1 and k < 2:
            per = n // N
            for i in range(n - per):
                dd = smooth * (theta[o + i + per] - theta[o + i])
                rg[i + per] += dd
                rg[i] -= dd
        for i in range(n):
            g[o + i] = g[o + i] + rg[i]
    return E


@nb.njit(**_JIT)
def armijo(theta, E, g, alpha_prev, n, gtol, c_armijo, rho, alpha_max, max_backtracks, P, Y0, c, states, stages,
           pN, gW, gK, gb, gh, trial, g_new, hist_E, hist_gn, hist_step):
    """Up to n gd-armijo iterations from (θ, E, g) (updated in place): (E, α_prev, iterations
    done, status, objective evaluations, gradient evaluations)."""
    wide()
    done, status, evals, grads = 0, DONE, 0, 0
    nt = theta.shape[0]
    while done < n:
        if not np.isfinite(E):
            status = NOT_FINITE
            break
        if gtol > 0.0 and np.sqrt(np.dot(g, g)) <= gtol:
            status = GTOL
            break
        alpha = min(alpha_max, 2.0 * alpha_prev)
        ok = False
        for _ in range(max_backtracks):
            for i in range(nt):
                trial[i] = theta[i] - alpha * g[i]
            dg = 0.0
            for i in range(nt):
                dg += g[i] * (trial[i] - theta[i])
            E_new = value_grad(trial, False, True, P, Y0, c, states, stages, pN, gW, gK, gb, gh, g_new)
            evals += 1
            if E_new <= E + c_armijo * dg:
                E_new = value_grad(trial, True, False, P, Y0, c, states, stages, pN, gW, gK, gb, gh, g_new)
                grads += 1
                ok = True
                break
            alpha *= rho
        if not ok:
            status = LINE_SEARCH_FAILED
            break
        theta[:] = trial
        g[:] = g_new
        E, alpha_prev = E_new, alpha
        hist_E[done], hist_gn[done], hist_step[done] = E, np.sqrt(np.dot(g, g)), alpha
        done += 1
    return E, alpha_prev, done, status, evals, grads
