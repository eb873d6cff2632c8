"""The compiled sweeps of the native engine (numba): the forward sweep and the backward (costate)
sweep of a Runge–Kutta network with the σ = tanh field, per chunk of samples, fused.

Layout: a batch is d×m (samples as columns, as in :mod:`ocdl.fields`); the sweeps work on chunks
of ``CHUNK`` columns at a time, the whole depth of the network per chunk, so that a chunk's stage
values stay in the first-level caches (kept stage values are stored chunk by chunk,
:func:`stage_store`, and written and read in place); every loop over the samples of a chunk is
innermost and is vectorised by LLVM (8-wide where the CPU has AVX-512, :func:`wide`), tanh included: :func:`tanh` is written out (Cephes' rational
form for |x| < 0.625, (1 − e)/(1 + e) with e = e^{−2|x|} from a Cody–Waite reduction and a
degree-13 Taylor polynomial above), ≤ 1 ulp from the correctly rounded value on the tests'
sample of 2·10⁴ points, branch-free and so vectorisable — libm's scalar tanh costs ≈ 10× more per
value here, and numba's SVML path needs an SVML-patched LLVM that the PyPI llvmlite is not.

Sums over the samples (∂E/∂K, ∂E/∂β, ∂E/∂h) are accumulated per chunk and the chunks' partial
sums added in chunk order: the same numbers for any number of threads (the parallel variant
runs chunks on numba's threads, each into its own row of partial sums).

Coefficients (one kernel for both backward forms, see :mod:`ocdl.engine.torch.adjoint`):
``c0[i]``, ``coef[i, l]`` (l > i) give P_i = c0_i p^[j+1] + h Σ_l coef_il K_lᵀ D_l with
D_l = (1 − S_l²) ⊙ P_l, and ``w[i]`` the weights μ_i = w_i P_i: partner c0 = 1, coef = b_l − ã_il,
w = b; unscaled (reverse mode of the forward sweep, what autograd computes) c0 = b,
coef_il = a_li, w = 1. Then ∂E/∂K_{j,u(i)} += h w_i D_i Y_iᵀ, ∂E/∂β_{j,u(i)} += h w_i D_i 1,
∂E/∂h_j += w_i ⟨P_i, F_i⟩, p^[j] = p^[j+1] + h Σ_i w_i K_{u(i)}ᵀ D_i. Plain layers
(y⁺ = tanh(K y + β)): D = (1 − S²) ⊙ p⁺, ∂K += D yᵀ, ∂β += D 1, p = Kᵀ D.

Controls are passed as K (N, s_u, d, d), β (N, s_u, d) with s_u = s (per-stage) or 1 (per-layer,
stage i uses u(i) = 0).
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

CHUNK = 256  # columns per chunk (a chunk's s stages of width 2 are 16 KiB)

# error_model="numpy": no ZeroDivisionError checks (they kept LLVM from vectorising); "contract": a·b + c
# may be one fused multiply-add (AVX-512 here): 20 % off the sweeps, tanh still ≤ 1 ulp (tested)
_JIT = dict(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
# reductions only: reassociation lets LLVM vectorise the sums over the samples
_JIT_SUM = dict(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc", "nsz", "contract"})


@intrinsic
def wide(typingctx):
    """Lets LLVM vectorise the calling kernel with 512-bit vectors where the CPU has them (the
    function attribute ``"prefer-vector-width"="512"``; LLVM's tuning for Intel's AVX-512 cores
    otherwise stops at 256 bits). Measured here (``ocdl bench gradient``, m = 1000, N = 15): tanh
    1.54 → 1.28 ns per value, the forward sweep with its stages stored 355 → 255 µs; a CPU without
    AVX-512 ignores it. Called first in every non-inlined kernel (an inlined one runs in its caller)."""
    sig = types.none()

    def codegen(context, builder, signature, args):
        # llvmlite's attribute set admits named attributes only; a "key"="value" one is written as is
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _f2i(typingctx, x):
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def _i2f(typingctx, x):
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


_P0, _P1, _P2 = -9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3
_Q0, _Q1, _Q2 = 1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3
_LN2HI, _LN2LO, _INVLN2 = 6.93147180369123816490e-01, 1.90821492927058770002e-10, 1.44269504088896338700e00
_SHIFT = 6755399441055744.0  # 1.5·2^52: x + SHIFT − SHIFT rounds x to an integer, whose bits it holds


@nb.njit(inline="always", **_JIT)
def tanh(x):
    """tanh x to ≤ 1 ulp (see the module docstring), branch-free. NaN in, NaN out."""
    a = abs(x)
    z = x * x
    small = a < 0.625
    t = -2.0 * min(max(a, 0.625), 20.0)  # tanh = 1 in double beyond |x| ≈ 19.06
    kd = t * _INVLN2 + _SHIFT
    k = kd - _SHIFT
    r = (t - k * _LN2HI) - k * _LN2LO  # |r| ≤ ln2/2
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    e = p * _i2f((_f2i(kd) + 1023) << 52)  # e^t = e^r 2^k, k ∈ [−58, −1]
    # one division for both branches: P(x²)/Q(x²) (small) or (1 − e)/(1 + e) (large)
    num = ((_P0 * z + _P1) * z + _P2) if small else 1.0 - e
    den = ((((z + _Q0) * z + _Q1) * z + _Q2)) if small else 1.0 + e
    q = num / den
    out = (x + x * z * q) if small else (q if x >= 0.0 else -q)
    out = x if a < 3.725290298461914e-09 else out  # |x| < 2^-28: tanh x = x rounded (and ±0 kept)
    return out if a == a else x


@nb.njit(**_JIT)
def tanh_array(x, out):
    """out = tanh(x) elementwise (1-D arrays): the kernel of the sweeps, for tests and benchmarks."""
    wide()
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])


@nb.njit(**_JIT_SUM)
def _dot(x, y, n):
    wide()
    acc = 0.0
    for i in range(n):
        acc += x[i] * y[i]
    return acc


@nb.njit(**_JIT_SUM)
def _sum(x, n):
    wide()
    acc = 0.0
    for i in range(n):
        acc += x[i]
    return acc


@nb.njit(inline="always", **_JIT)
def _affine_tanh(K, beta, Y, Z, S, d, n):
    """Z = K Y + β 1ᵀ, S = tanh Z over the n columns of the d×· blocks."""
    for k in range(d):
        bk = beta[k]
        for c in range(n):
            Z[k, c] = bk
        for l in range(d):
            kl = K[k, l]
            for c in range(n):
                Z[k, c] += kl * Y[l, c]
        for c in range(n):
            S[k, c] = tanh(Z[k, c])


@nb.njit(inline="always", **_JIT)
def _stage_value(stages, stored, j, i, K, beta, Y, Z, F, c0, d, n):
    """F = the stage value S_i of layer j: read from ``stages`` (kept by the forward sweep, in the
    layout of :func:`stage_store`) or recomputed, F = tanh(K Y + β 1ᵀ)."""
    if stored:
        St = stages[c0 // stages.shape[4], j, i]
        for k in range(d):
            for c in range(n):
                F[k, c] = St[k, c]
    else:
        _affine_tanh(K, beta, Y, Z, F, d, n)


@nb.njit(inline="always", **_JIT)
def _stage_input(y, Fs, A, i, hj, Yi, d, n):
    """Y_i = y + h Σ_{l<i} a_il F_l."""
    for k in range(d):
        for c in range(n):
            Yi[k, c] = y[k, c]
    for l in range(i):
        cf = hj * A[i, l]
        if cf != 0.0:
            for k in range(d):
                for c in range(n):
                    Yi[k, c] += cf * Fs[l, k, c]


@nb.njit(**_JIT)
def _forward_chunk(Y0, K, beta, h, A, b, skip, states, stages, store, c0, n):
    """The forward sweep of columns c0 … c0+n−1: states[j] (j = 0 … N) and, with ``store``, the
    stage values S_i = F_i of every layer, computed in place in the chunk's block of ``stages``."""
    wide()
    N, su, d = K.shape[0], K.shape[1], K.shape[2]
    s = b.shape[0]
    y = np.empty((d, n))
    Yi = np.empty((d, n))
    Z = np.empty((d, n))
    Fbuf = np.empty((s, d, n))
    for k in range(d):
        for c in range(n):
            y[k, c] = Y0[k, c0 + c]
            states[0, k, c0 + c] = y[k, c]
    for j in range(N):
        hj = h[j]
        Fs = stages[c0 // stages.shape[4], j] if store else Fbuf
        if not skip:
            _affine_tanh(K[j, 0], beta[j, 0], y, Z, Fs[0], d, n)
            for k in range(d):
                for c in range(n):
                    y[k, c] = Fs[0, k, c]
        else:
            for i in range(s):
                u = i if su > 1 else 0
                _stage_input(y, Fs, A, i, hj, Yi, d, n)
                _affine_tanh(K[j, u], beta[j, u], Yi, Z, Fs[i], d, n)
            for i in range(s):
                cf = hj * b[i]
                if cf != 0.0:
                    for k in range(d):
                        for c in range(n):
                            y[k, c] += cf * Fs[i, k, c]
        for k in range(d):
            for c in range(n):
                states[j + 1, k, c0 + c] = y[k, c]


@nb.njit(**_JIT)
def _backward_chunk(states, stages, stored, K, beta, h, A, c0s, coef, w, skip, pN, gK, gb, gh, c0, n):
    """The backward sweep of columns c0 … c0+n−1 from p^[N] = pN[:, cols]; adds this chunk's
    ∂E/∂K, ∂E/∂β, ∂E/∂h into gK, gb, gh (which the caller gives zeroed, one row per chunk)."""
    wide()
    N, su, d = K.shape[0], K.shape[1], K.shape[2]
    s = w.shape[0]
    p = np.empty((d, n))
    y = np.empty((d, n))
    Ys = np.empty((s, d, n))
    Z = np.empty((d, n))
    Fbuf = np.empty((s, d, n))
    Ps = np.empty((s, d, n))
    Ds = np.empty((s, d, n))
    for k in range(d):
        for c in range(n):
            p[k, c] = pN[k, c0 + c]
    for j in range(N - 1, -1, -1):
        hj = h[j]
        for k in range(d):
            for c in range(n):
                y[k, c] = states[j, k, c0 + c]
        Fs = stages[c0 // stages.shape[4], j] if stored else Fbuf  # stored: read in place
        if not skip:
            if not stored:
                _affine_tanh(K[j, 0], beta[j, 0], y, Z, Fs[0], d, n)
            Kj = K[j, 0]
            for k in range(d):
                for c in range(n):
                    Ds[0, k, c] = (1.0 - Fs[0, k, c] * Fs[0, k, c]) * p[k, c]
            for k in range(d):
                for l in range(d):
                    gK[j, 0, k, l] += _dot(Ds[0, k], y[l], n)
                gb[j, 0, k] += _sum(Ds[0, k], n)
            for k in range(d):  # p = Kᵀ D
                for c in range(n):
                    p[k, c] = 0.0
                for l in range(d):
                    kl = Kj[l, k]
                    for c in range(n):
                        p[k, c] += kl * Ds[0, l, c]
            continue
        # the stage values of layer j: recomputed from y^[j], or read back (the Y_i are formed
        # again from the F_l either way: no tanh)
        for i in range(s):
            u = i if su > 1 else 0
            _stage_input(y, Fs, A, i, hj, Ys[i], d, n)
            if not stored:
                _affine_tanh(K[j, u], beta[j, u], Ys[i], Z, Fs[i], d, n)
        for i in range(s - 1, -1, -1):
            ci = c0s[i]
            for k in range(d):
                for c in range(n):
                    Ps[i, k, c] = ci * p[k, c]
            for l in range(i + 1, s):
                cf = hj * coef[i, l]
                if cf != 0.0:
                    Kl = K[j, l if su > 1 else 0]
                    for k in range(d):  # P_i += h coef_il K_lᵀ D_l
                        for r in range(d):
                            kr = cf * Kl[r, k]
                            for c in range(n):
                                Ps[i, k, c] += kr * Ds[l, r, c]
            for k in range(d):
                for c in range(n):
                    Ds[i, k, c] = (1.0 - Fs[i, k, c] * Fs[i, k, c]) * Ps[i, k, c]
        acc_h = 0.0
        for i in range(s):
            u = i if su > 1 else 0
            hw = hj * w[i]
            for k in range(d):
                for l in range(d):
                    gK[j, u, k, l] += hw * _dot(Ds[i, k], Ys[i, l], n)
                gb[j, u, k] += hw * _sum(Ds[i, k], n)
                acc_h += w[i] * _dot(Ps[i, k], Fs[i, k], n)
            Ku = K[j, u]
            for k in range(d):  # p += h w_i K_uᵀ D_i
                for r in range(d):
                    kr = hw * Ku[r, k]
                    for c in range(n):
                        p[k, c] += kr * Ds[i, r, c]
        gh[j] += acc_h


def _chunks(m: int, chunk: int):
    return (m + chunk - 1) // chunk


def stage_store(N: int, s: int, d: int, m: int, chunk: int = CHUNK) -> np.ndarray:
    """The array for the stage values S_i of every layer, chunk by chunk: (chunks, N, s, d, chunk),
    S_i of layer j for the columns c0 + c of chunk q = c0 / chunk at [q, j, i, :, c] (a chunk's
    block contiguous, so that the sweeps write and read it in place)."""
    return np.empty((_chunks(m, chunk), N, s, d, chunk))


NO_STAGES = np.zeros((0, 0, 0, 0, 0))  # the ``stages`` argument where none are kept


@nb.njit(**_JIT)
def forward(Y0, K, beta, h, A, b, skip, states, stages, store, chunk):
    wide()
    m = Y0.shape[1]
    for q in range((m + chunk - 1) // chunk):
        c0 = q * chunk
        _forward_chunk(Y0, K, beta, h, A, b, skip, states, stages, store, c0, min(chunk, m - c0))


@nb.njit(parallel=True, **_JIT)
def forward_parallel(Y0, K, beta, h, A, b, skip, states, stages, store, chunk):
    wide()
    m = Y0.shape[1]
    for q in prange((m + chunk - 1) // chunk):
        c0 = q * chunk
        _forward_chunk(Y0, K, beta, h, A, b, skip, states, stages, store, c0, min(chunk, m - c0))


@nb.njit(**_JIT)
def backward(states, stages, stored, K, beta, h, A, c0s, coef, w, skip, pN, gK, gb, gh, chunk):
    """gK, gb, gh: (chunks, …) zeroed; row q gets chunk q's sums."""
    wide()
    m = pN.shape[1]
    for q in range((m + chunk - 1) // chunk):
        c0 = q * chunk
        _backward_chunk(states, stages, stored, K, beta, h, A, c0s, coef, w, skip, pN, gK[q], gb[q], gh[q],
                        c0, min(chunk, m - c0))


@nb.njit(parallel=True, **_JIT)
def backward_parallel(states, stages, stored, K, beta, h, A, c0s, coef, w, skip, pN, gK, gb, gh, chunk):
    wide()
    m = pN.shape[1]
    for q in prange((m + chunk - 1) // chunk):
        c0 = q * chunk
        _backward_chunk(states, stages, stored, K, beta, h, A, c0s, coef, w, skip, pN, gK[q], gb[q], gh[q],
                        c0, min(chunk, m - c0))


@nb.njit(**_JIT)
def chunk_sum(x):
    """Σ_q x[q] in chunk order (the same numbers for any thread count)."""
    wide()
    out = x[0].copy()
    for q in range(1, x.shape[0]):
        out += x[q]
    return out


LOSS_CODES = {"squared": 0, "logistic": 1, "cross-entropy": 1}


@nb.njit(**_JIT)
def loss2(code, yN, W, mu, c, scale, want_grad, p, gW):
    """Two classes: z_n = W·y_n^[N] + μ and Σ_n ℓ(z_n, c_n) · scale, written as :mod:`ocdl.loss`
    (u = e^{−|z|}, S = p/(1 + u), 1 − S = q/(1 + u)): code 0 the squared loss ½(S − c)², 1 the
    logistic log(1 + e^z) − c z. With ``want_grad``: g_n = ℓ'(z_n) · scale, p = W gᵀ (p^[N], d×m),
    gW = y^[N] g; returns (E_loss, Σ g)."""
    wide()
    d, m = yN.shape
    E = 0.0
    gmu = 0.0
    if want_grad:
        for k in range(d):
            gW[k] = 0.0
    for n in range(m):
        zz = 0.0
        for k in range(d):
            zz += W[k] * yN[k, n]
        z = zz + mu
        pos = z >= 0.0
        u = np.exp(-z if pos else z)
        pp = 1.0 if pos else u
        qq = u if pos else 1.0
        dd = 1.0 + u
        cn = c[n]
        r = ((1.0 - cn) * pp - cn * qq) / dd
        if code == 0:
            E += 0.5 * r * r
            g = r * (u / (dd * dd))
        else:
            mm = z if pos else 0.0
            nn = 0.0 if pos else -z
            E += ((1.0 - cn) * mm + cn * nn) + np.log1p(u)
            g = r
        if want_grad:
            g *= scale
            gmu += g
            for k in range(d):
                p[k, n] = W[k] * g
                gW[k] += yN[k, n] * g
    return E * scale, gmu


def warm_up(parallel: bool = False) -> None:
    """Compile (or load from numba's cache) every kernel at the one signature the engine calls it
    with, on tiny arrays. The caller holds a lock (:func:`ocdl.engine.native.compiled.kernels`):
    processes that start together would otherwise write and read the same cache files at once."""
    d, m, N, s = 2, 3, 2, 2
    Y0 = np.zeros((d, m))
    K, beta, h = np.zeros((N, 1, d, d)), np.zeros((N, 1, d)), np.full(N, 0.1)
    A, b = np.zeros((s, s)), np.full(s, 0.5)
    states, stages = np.zeros((N + 1, d, m)), stage_store(N, s, d, m)
    gK, gb, gh = np.zeros((1, N, 1, d, d)), np.zeros((1, N, 1, d)), np.zeros((1, N))
    fwd, bwd = (forward_parallel, backward_parallel) if parallel else (forward, backward)
    fwd(Y0, K, beta, h, A, b, True, states, stages, True, CHUNK)
    bwd(states, stages, True, K, beta, h, A, b, A, b, True, Y0, gK, gb, gh, CHUNK)
    if not parallel:
        chunk_sum(gK)
        chunk_sum(gb)
        chunk_sum(gh)
        loss2(0, Y0, np.zeros(d), 0.0, np.zeros(m), 1.0, True, np.zeros((d, m)), np.zeros(d))
        tanh_array(np.zeros(1), np.zeros(1))
