"""The compiled second-order sweeps of the native engine (numba): the tangent sweep and the
second-order adjoint sweep that give exact Hessian–vector products ∇²E·v of a Runge–Kutta network
with the σ = tanh field, per chunk of samples, in the layout of :mod:`.kernels`.

For a direction v = (K̇, β̇, ḣ) of the controls, the **tangent sweep** (forward, ẏ^[0] = 0)
differentiates the forward sweep of layer j:

    Ẏ_i = ẏ + ḣ Σ_{l<i} a_il F_l + h Σ_{l<i} a_il Ḟ_l,
    Ḟ_i = (1 − F_i²) ⊙ (K̇_u Y_i + K_u Ẏ_i + β̇_u),
    ẏ⁺  = ẏ + ḣ Σ_i b_i F_i + h Σ_i b_i Ḟ_i;

the **second-order adjoint sweep** (backward, from p^[N] and ṗ^[N], the loss' gradient and its
tangent) runs the first-order costate sweep of :mod:`.kernels` (coefficients c0, coef, w: the
partner or the unscaled form) together with its tangent:

    P_i = c0_i p⁺ + h Σ_{l>i} coef_il K_lᵀ D_l,          D_i = (1 − F_i²) ⊙ P_i,
    Ṗ_i = c0_i ṗ⁺ + Σ_{l>i} coef_il (ḣ K_lᵀ D_l + h K̇_lᵀ D_l + h K_lᵀ Ḋ_l),
    Ḋ_i = (1 − F_i²) ⊙ Ṗ_i − 2 F_i ⊙ Ḟ_i ⊙ P_i,
    (∇²E v)_{K_u} += w_i (ḣ D_i Y_iᵀ + h Ḋ_i Y_iᵀ + h D_i Ẏ_iᵀ),
    (∇²E v)_{β_u} += w_i (ḣ D_i + h Ḋ_i) 1,
    (∇²E v)_{h_j} += w_i (⟨Ṗ_i, F_i⟩ + ⟨P_i, Ḟ_i⟩),
    p = p⁺ + h Σ_i w_i K_uᵀ D_i,
    ṗ = ṗ⁺ + Σ_i w_i (ḣ K_uᵀ D_i + h K̇_uᵀ D_i + h K_uᵀ Ḋ_i)

— the derivative of the gradient map θ ↦ ∇E(θ) of :mod:`.kernels` in the direction v, term by
term, and so exact as that gradient is (for the partner form too: it is the exact gradient of the
discrete objective). Plain layers (y⁺ = tanh(K y + β)): Ḟ = (1 − F²)(K̇ y + K ẏ + β̇),
D = (1 − F²) p⁺, Ḋ = (1 − F²) ṗ⁺ − 2 F Ḟ p⁺, (∇²E v)_K += Ḋ yᵀ + D ẏᵀ, (∇²E v)_β += Ḋ 1,
p = Kᵀ D, ṗ = K̇ᵀ D + Kᵀ Ḋ.

Memory: the layer states y^[j] and the tangent states ẏ^[j] ((N+1)·d·m each, what the adjoint
keeps); the stage values F_i are read from the forward sweep's store or recomputed (one tanh per
stage value per product). The sums over the samples are per chunk and added in chunk order, as in
:mod:`.kernels`.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from ocdl.engine.native.kernels import _JIT, _dot, _stage_input, _stage_value, _sum, stage_store, wide


@nb.njit(inline="always", **_JIT)
def _tangent_stage(dK, dbeta, Y, K, dY, F, dF, d, n):
    """Ḟ = (1 − F²) ⊙ (K̇ Y + K Ẏ + β̇ 1ᵀ) over the n columns."""
    for k in range(d):
        bk = dbeta[k]
        for c in range(n):
            dF[k, c] = bk
        for l in range(d):
            dkl, kl = dK[k, l], K[k, l]
            for c in range(n):
                dF[k, c] += dkl * Y[l, c] + kl * dY[l, c]
        for c in range(n):
            dF[k, c] *= 1.0 - F[k, c] * F[k, c]


@nb.njit(inline="always", **_JIT)
def _stage_tangent_input(dy, Fs, dFs, A, i, hj, dhj, dYi, d, n):
    """Ẏ_i = ẏ + Σ_{l<i} a_il (ḣ F_l + h Ḟ_l)."""
    for k in range(d):
        for c in range(n):
            dYi[k, c] = dy[k, c]
    for l in range(i):
        a = A[i, l]
        if a != 0.0:
            ca, cb = dhj * a, hj * a
            for k in range(d):
                for c in range(n):
                    dYi[k, c] += ca * Fs[l, k, c] + cb * dFs[l, k, c]


@nb.njit(inline="always", **_JIT)
def _layer_stages(states, stages, stored, dstates, K, beta, h, dK, dbeta, dh, A, su, s, j, c0, n,
                  y, dy, Ys, dYs, Z, Fs, dFs):
    """Layer j's Y_i, F_i (stored or recomputed) and Ẏ_i, Ḟ_i from y^[j] and ẏ^[j]."""
    d = y.shape[0]
    hj, dhj = h[j], dh[j]
    for k in range(d):
        for c in range(n):
            y[k, c] = states[j, k, c0 + c]
            dy[k, c] = dstates[j, k, c0 + c]
    for i in range(s):
        u = i if su > 1 else 0
        _stage_input(y, Fs, A, i, hj, Ys[i], d, n)
        _stage_tangent_input(dy, Fs, dFs, A, i, hj, dhj, dYs[i], d, n)
        _stage_value(stages, stored, j, i, K[j, u], beta[j, u], Ys[i], Z, Fs[i], c0, d, n)
        _tangent_stage(dK[j, u], dbeta[j, u], Ys[i], K[j, u], dYs[i], Fs[i], dFs[i], d, n)


@nb.njit(inline="always", **_JIT)
def _plain_stage(states, stages, stored, K, beta, dK, dbeta, j, c0, n, y, dy, Z, Fs, dFs):
    """A plain layer j (y⁺ = tanh(K y + β)): y = y^[j], F and Ḟ = (1 − F²)(K̇ y + K ẏ + β̇) for the
    given ẏ."""
    d = y.shape[0]
    for k in range(d):
        for c in range(n):
            y[k, c] = states[j, k, c0 + c]
    _stage_value(stages, stored, j, 0, K[j, 0], beta[j, 0], y, Z, Fs[0], c0, d, n)
    _tangent_stage(dK[j, 0], dbeta[j, 0], y, K[j, 0], dy, Fs[0], dFs[0], d, n)


@nb.njit(**_JIT)
def _tangent_chunk(states, stages, stored, K, beta, h, dK, dbeta, dh, A, b, skip, dstates, c0, n):
    """The tangent sweep of columns c0 … c0+n−1: dstates[j] = ẏ^[j], ẏ^[0] = 0."""
    wide()
    N, su, d = K.shape[0], K.shape[1], K.shape[2]
    s = b.shape[0] if skip else 1
    y, dy, Z = np.empty((d, n)), np.zeros((d, n)), np.empty((d, n))
    Ys, dYs = np.empty((s, d, n)), np.empty((s, d, n))
    Fs, dFs = np.empty((s, d, n)), np.empty((s, d, n))
    for k in range(d):
        for c in range(n):
            dstates[0, k, c0 + c] = 0.0
    for j in range(N):
        if not skip:
            _plain_stage(states, stages, stored, K, beta, dK, dbeta, j, c0, n, y, dy, Z, Fs, dFs)
            for k in range(d):
                for c in range(n):
                    dy[k, c] = dFs[0, k, c]
        else:
            _layer_stages(states, stages, stored, dstates, K, beta, h, dK, dbeta, dh, A, su, s, j, c0, n,
                          y, dy, Ys, dYs, Z, Fs, dFs)
            hj, dhj = h[j], dh[j]
            for i in range(s):
                if b[i] != 0.0:
                    ca, cb = dhj * b[i], hj * b[i]
                    for k in range(d):
                        for c in range(n):
                            dy[k, c] += ca * Fs[i, k, c] + cb * dFs[i, k, c]
        for k in range(d):
            for c in range(n):
                dstates[j + 1, k, c0 + c] = dy[k, c]


@nb.njit(inline="always", **_JIT)
def _add_KT(M, X, cf, out, d, n):
    """out += cf · Mᵀ X."""
    for k in range(d):
        for r in range(d):
            mr = cf * M[r, k]
            if mr != 0.0:
                for c in range(n):
                    out[k, c] += mr * X[r, c]


@nb.njit(**_JIT)
def _second_chunk(states, stages, stored, dstates, K, beta, h, dK, dbeta, dh, A, c0s, coef, w, skip,
                  pN, dpN, hK, hb, hh, c0, n):
    """The second-order adjoint sweep of columns c0 … c0+n−1 from p^[N], ṗ^[N]; adds this chunk's
    (∇²E v) of K, β, h into hK, hb, hh (zeroed by the caller, one row per chunk)."""
    wide()
    N, su, d = K.shape[0], K.shape[1], K.shape[2]
    s = w.shape[0] if skip else 1
    p, dp = np.empty((d, n)), np.empty((d, n))
    y, dy, Z = np.empty((d, n)), np.empty((d, n)), np.empty((d, n))
    Ys, dYs = np.empty((s, d, n)), np.empty((s, d, n))
    Fs, dFs = np.empty((s, d, n)), np.empty((s, d, n))
    Ps, dPs = np.empty((s, d, n)), np.empty((s, d, n))
    Ds, dDs = np.empty((s, d, n)), np.empty((s, d, n))
    for k in range(d):
        for c in range(n):
            p[k, c] = pN[k, c0 + c]
            dp[k, c] = dpN[k, c0 + c]
    for j in range(N - 1, -1, -1):
        if not skip:
            for k in range(d):
                for c in range(n):
                    dy[k, c] = dstates[j, k, c0 + c]
            _plain_stage(states, stages, stored, K, beta, dK, dbeta, j, c0, n, y, dy, Z, Fs, dFs)
            for k in range(d):
                for c in range(n):
                    f = Fs[0, k, c]
                    q = 1.0 - f * f
                    Ds[0, k, c] = q * p[k, c]
                    dDs[0, k, c] = q * dp[k, c] - 2.0 * f * dFs[0, k, c] * p[k, c]
            for k in range(d):
                for l in range(d):
                    hK[j, 0, k, l] += _dot(dDs[0, k], y[l], n) + _dot(Ds[0, k], dy[l], n)
                hb[j, 0, k] += _sum(dDs[0, k], n)
            for k in range(d):
                for c in range(n):
                    p[k, c] = 0.0
                    dp[k, c] = 0.0
            _add_KT(K[j, 0], Ds[0], 1.0, p, d, n)
            _add_KT(dK[j, 0], Ds[0], 1.0, dp, d, n)
            _add_KT(K[j, 0], dDs[0], 1.0, dp, d, n)
            continue
        _layer_stages(states, stages, stored, dstates, K, beta, h, dK, dbeta, dh, A, su, s, j, c0, n,
                      y, dy, Ys, dYs, Z, Fs, dFs)
        hj, dhj = h[j], dh[j]
        for i in range(s - 1, -1, -1):
            ci = c0s[i]
            for k in range(d):
                for c in range(n):
                    Ps[i, k, c] = ci * p[k, c]
                    dPs[i, k, c] = ci * dp[k, c]
            for l in range(i + 1, s):
                cf = coef[i, l]
                if cf != 0.0:
                    ul = l if su > 1 else 0
                    _add_KT(K[j, ul], Ds[l], hj * cf, Ps[i], d, n)
                    _add_KT(K[j, ul], Ds[l], dhj * cf, dPs[i], d, n)
                    _add_KT(dK[j, ul], Ds[l], hj * cf, dPs[i], d, n)
                    _add_KT(K[j, ul], dDs[l], hj * cf, dPs[i], d, n)
            for k in range(d):
                for c in range(n):
                    f = Fs[i, k, c]
                    q = 1.0 - f * f
                    Ds[i, k, c] = q * Ps[i, k, c]
                    dDs[i, k, c] = q * dPs[i, k, c] - 2.0 * f * dFs[i, k, c] * Ps[i, k, c]
        acc_h = 0.0  # (p, ṗ updated in place: the D_i, Ḋ_i are all formed)
        for i in range(s):
            u = i if su > 1 else 0
            hw, dhw = hj * w[i], dhj * w[i]
            for k in range(d):
                for l in range(d):
                    hK[j, u, k, l] += dhw * _dot(Ds[i, k], Ys[i, l], n) + hw * (
                        _dot(dDs[i, k], Ys[i, l], n) + _dot(Ds[i, k], dYs[i, l], n))
                hb[j, u, k] += dhw * _sum(Ds[i, k], n) + hw * _sum(dDs[i, k], n)
                acc_h += w[i] * (_dot(dPs[i, k], Fs[i, k], n) + _dot(Ps[i, k], dFs[i, k], n))
            _add_KT(K[j, u], Ds[i], hw, p, d, n)
            _add_KT(K[j, u], Ds[i], dhw, dp, d, n)
            _add_KT(dK[j, u], Ds[i], hw, dp, d, n)
            _add_KT(K[j, u], dDs[i], hw, dp, d, n)
        hh[j] += acc_h


@nb.njit(**_JIT)
def tangent(states, stages, stored, K, beta, h, dK, dbeta, dh, A, b, skip, dstates, chunk):
    """The tangent sweep over all columns (chunk by chunk)."""
    wide()
    m = states.shape[2]
    for q in range((m + chunk - 1) // chunk):
        c0 = q * chunk
        _tangent_chunk(states, stages, stored, K, beta, h, dK, dbeta, dh, A, b, skip, dstates, c0,
                       min(chunk, m - c0))


@nb.njit(parallel=True, **_JIT)
def tangent_parallel(states, stages, stored, K, beta, h, dK, dbeta, dh, A, b, skip, dstates, chunk):
    wide()
    m = states.shape[2]
    for q in prange((m + chunk - 1) // chunk):
        c0 = q * chunk
        _tangent_chunk(states, stages, stored, K, beta, h, dK, dbeta, dh, A, b, skip, dstates, c0,
                       min(chunk, m - c0))


@nb.njit(**_JIT)
def second(states, stages, stored, dstates, K, beta, h, dK, dbeta, dh, A, c0s, coef, w, skip, pN, dpN,
           hK, hb, hh, chunk):
    """The second-order adjoint sweep over all columns; hK, hb, hh: (chunks, …) zeroed."""
    wide()
    m = pN.shape[1]
    for q in range((m + chunk - 1) // chunk):
        c0 = q * chunk
        _second_chunk(states, stages, stored, dstates, K, beta, h, dK, dbeta, dh, A, c0s, coef, w, skip,
                      pN, dpN, hK[q], hb[q], hh[q], c0, min(chunk, m - c0))


@nb.njit(parallel=True, **_JIT)
def second_parallel(states, stages, stored, dstates, K, beta, h, dK, dbeta, dh, A, c0s, coef, w, skip, pN,
                    dpN, hK, hb, hh, chunk):
    wide()
    m = pN.shape[1]
    for q in prange((m + chunk - 1) // chunk):
        c0 = q * chunk
        _second_chunk(states, stages, stored, dstates, K, beta, h, dK, dbeta, dh, A, c0s, coef, w, skip,
                      pN, dpN, hK[q], hb[q], hh[q], c0, min(chunk, m - c0))


def warm_up(parallel: bool = False) -> None:
    """Compile (or load from numba's cache) the kernels at the engine's one signature (the caller
    holds the lock of :func:`ocdl.engine.native.compiled.kernels`)."""
    d, m, N, s = 2, 3, 2, 2
    states, stages = np.zeros((N + 1, d, m)), stage_store(N, s, d, m, 256)
    K, beta, h = np.zeros((N, 1, d, d)), np.zeros((N, 1, d)), np.full(N, 0.1)
    A, b = np.zeros((s, s)), np.full(s, 0.5)
    hK, hb, hh = np.zeros((1, N, 1, d, d)), np.zeros((1, N, 1, d)), np.zeros((1, N))
    tan, sec = (tangent_parallel, second_parallel) if parallel else (tangent, second)
    tan(states, stages, True, K, beta, h, K, beta, h, A, b, True, states.copy(), 256)
    pN = np.zeros((d, m))
    sec(states, stages, True, states.copy(), K, beta, h, K, beta, h, A, b, A, b, True, pN, pN, hK, hb, hh, 256)
