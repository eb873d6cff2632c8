"""Exact Hessian of the reduced NLP by the second-order adjoint, batched over the samples.

The reduced objective E(θ) = Σ_n ℓ(W·y_n^[N] + μ, c_n) [/m] + R(θ), y_n^[j+1] = Ψ_j(y_n^[j], w_j),
where w_j ⊂ θ are layer j's parameters (controls, and h_j if learned). Per layer and sample

    A_j = ∂Ψ_j/∂y (d×d),  B_j = ∂Ψ_j/∂w (d×n_w),  Q_j = ∇²_{(y,w)} (p^[j+1]ᵀ Ψ_j)  ((d+n_w)²),

with the costates p^[N] = ∂ℓ/∂y^[N], p^[j] = A_jᵀ p^[j+1]. For all directions of θ at once:

    tangents        Ṡ^[0] = 0,   Ṡ^[j+1] = A_j Ṡ^[j] + B_j E_j              (Ṡ^[j] = ∂y^[j]/∂θ, d×n_θ)
    terminal        Ṗ^[N] = L_yy Ṡ^[N] + L_yc E_c,   H_c += L_cy Ṡ^[N] + L_cc E_c
    second-order    H_{w_j} += B_jᵀ Ṗ^[j+1] + Q_wy Ṡ^[j] + Q_ww E_j,
    costates        Ṗ^[j] = A_jᵀ Ṗ^[j+1] + Q_yy Ṡ^[j] + Q_yw E_j,

where E_j, E_c select w_j and the trained classifier entries c ⊂ (W, μ) in θ, L is the per-sample
Hessian of ℓ in (y^[N], c), and H += ∇²R. Each layer costs a few products of (m, d, ·) arrays and
one (n_w × m·d)·(m·d × n_θ) product: O(m·N·n_θ·d·(d + n_w)) per Hessian, i.e. O(m N²), with
nothing larger than n_θ × n_θ factorised — instead of the full-space KKT factorisation, whose
fill grows with every sample's dense (N·n_w)² coupling to the shared controls.
The per-sample blocks come from the same SX layer as the NLP (:mod:`.derivatives`).
"""

from __future__ import annotations

import casadi as ca
import numpy as np
from threadpoolctl import threadpool_limits

from ocdl.casadi_backend.derivatives import layer_symbols, loss_symbols
from ocdl.casadi_backend.network import compiled
from ocdl.errors import OcdlError


MAX_TANGENT_BYTES = 8 * 2**30  # the tangents Ṡ^[0..N] of one Hessian evaluation


class _InPlace:
    """A CasADi function mapped over the m samples, evaluated in place on NumPy buffers (no DM
    conversion). Inputs and outputs are flat arrays in CasADi's column-major order, i.e. C-ordered
    (m, cols, rows) for a per-sample rows × cols matrix; the inputs listed in ``shared`` are the same
    for every sample. Outputs are overwritten by each call."""

    def __init__(self, fn: ca.Function, m: int, shared=()):
        f = fn.map(fn.name() + "_map", "serial", m, list(shared), [])
        self.buf, self._eval = f.buffer()
        self.args = [np.zeros(f.nnz_in(i)) for i in range(f.n_in())]
        self.res = [np.zeros(f.nnz_out(i)) for i in range(f.n_out())]
        for i, a in enumerate(self.args):
            self.buf.set_arg(i, a)
        for i, r in enumerate(self.res):
            self.buf.set_res(i, r)
        self.m = m

    def __call__(self, *inputs):
        for a, x in zip(self.args, inputs):
            a[:] = np.ravel(x)
        self._eval()
        return self.res

    def matrices(self, k, rows, cols):
        """Output k as an (m, rows, cols) array (a copy)."""
        return self.res[k].reshape(self.m, cols, rows).transpose(0, 2, 1).copy()


class ReducedHessian:
    """∇²E(θ) of a reduced :class:`~ocdl.casadi_backend.nlp.NetworkNLP` (explicit tableaux and
    family 'net'), and the IPOPT ``hess_lag`` callback built on it."""

    def __init__(self, nlp):
        self.nlp = nlp
        net, m, d = nlp.net, nlp.m, nlp.d
        L = self.layout = nlp.layout
        sym = layer_symbols(nlp)
        y, w, hc, Psi, self.nw, self.w_index = sym["y"], sym["w"], sym["h"], sym["Psi"], sym["nw"], sym["w_index"]
        p = ca.SX.sym("p", d)
        yw = ca.vertcat(y, w)
        A = ca.densify(ca.jacobian(Psi, y))
        B = ca.densify(ca.jacobian(Psi, w))
        Q = ca.densify(ca.hessian(ca.dot(p, Psi), yw)[0])
        jit = nlp.jit
        self.step = _InPlace(compiled(ca.Function("psi", [y, w, hc], [Psi, A, B]), jit), m, shared=(1, 2))
        self.hess = _InPlace(compiled(ca.Function("psi_Q", [y, w, hc, p], [Q]), jit), m, shared=(1, 2))
        ls = loss_symbols(nlp)
        zeta = ls["zeta"]
        self.cidx = ls["cidx"]
        self.nz = zeta.shape[0]
        self.loss_derivs = _InPlace(compiled(ca.Function(
            "loss_dH", [ls["y"], ls["W"], ls["mu"], ls["c"]],
            [ca.gradient(ls["loss"], ls["y"]), ca.densify(ca.hessian(ls["loss"], zeta)[0])]), jit), m, shared=(1, 2))
        th = ca.SX.sym("theta", L.size)
        self.HR = np.array(ca.evalf(ca.substitute(
            ca.hessian(net.regulariser_function(nlp.base)(th), th)[0], th, ca.DM.zeros(L.size))))
        # Ṡ^[j] (m × d × j·n_w), allocated once: the sweep runs at every IPOPT iteration
        N = nlp.problem.N
        need = 8 * m * d * self.nw * N * (N + 1) // 2
        if need > MAX_TANGENT_BYTES:
            raise OcdlError(
                f"the reduced Hessian needs {need / 2**30:.1f} GiB for its tangents (m·d·n_w·N(N+1)/2 numbers, "
                f"m = {m}, N = {N}), more than {MAX_TANGENT_BYTES / 2**30:.0f} GiB; use --formulation full "
                "or --hessian lbfgs")
        self.tangents = [np.zeros((m, d, j * self.nw)) for j in range(N + 1)]
        self.order = np.concatenate([self.w_index(j) for j in range(nlp.problem.N)] + [self.cidx])
        assert np.array_equal(np.sort(self.order), np.arange(L.size)), "θ is not covered by the layers and classifier"
        self._callback = None

    def _w(self, theta, j):
        idx = self.w_index(j)
        return theta[idx] if len(idx) else np.zeros(0)

    def _h(self, theta, j):
        return 0.0 if "h" in self.layout.keys else float(self.nlp.h[j])

    def hessian(self, theta) -> np.ndarray:
        """∇²E(θ) (n_θ × n_θ, symmetric).

        Internally θ is reordered layer by layer, (w_0, …, w_{N−1}, c), so that Ṡ^[j] has
        nonzero columns only for w_0 … w_{j−1}: the tangents are kept j·n_w wide."""
        nlp, m, d, N = self.nlp, self.nlp.m, self.nlp.d, self.nlp.problem.N
        theta = np.asarray(theta, dtype=np.float64).reshape(-1)
        nth, nw, nc = theta.size, self.nw, self.cidx.size
        y = nlp.Y0.T.copy()  # samples as rows: CasADi's column-major d×m
        states = [y]
        S = self.tangents[0]  # Ṡ^[0] = 0: the inputs do not depend on θ
        AB = []
        for j in range(N):
            self.step(y, self._w(theta, j), self._h(theta, j))
            y = self.step.res[0].reshape(m, d).copy()
            A, B = self.step.matrices(1, d, d), self.step.matrices(2, d, nw)
            S_next = self.tangents[j + 1]  # Ṡ^[j+1] = A_j Ṡ^[j] + B_j E_j
            np.matmul(A, S, out=S_next[:, :, :j * nw])
            S_next[:, :, j * nw:] = B
            S = S_next
            states.append(y)
            AB.append((A, B))
        L = self.layout
        W = theta[L.slices["W"]] if "W" in L.keys else np.asarray(nlp.base["W"], dtype=np.float64).reshape(-1)
        mu = float(theta[L.slices["mu"]][0]) if "mu" in L.keys else float(np.asarray(nlp.base["mu"]).reshape(-1)[0])
        self.loss_derivs(states[N], W, mu, nlp.c)
        p = self.loss_derivs.res[0].reshape(m, d).copy()  # p^[N] = ∂ℓ/∂y^[N] (scaled like the objective)
        Lz = self.loss_derivs.matrices(1, self.nz, self.nz)
        # Only the block lower triangle is formed (rows w_j: columns w_0 … w_j; rows c: every
        # column), so Ṗ^[j+1] is needed for the columns w_0 … w_j only, and shrinks with j.
        H = np.zeros((nth, nth))  # in the layer order
        P = Lz[:, :d, :d] @ S  # Ṗ^[N] = L_yy Ṡ^[N] (the columns of w)
        if nc:
            H[N * nw:, :N * nw] = np.einsum("nkb,nbt->kt", Lz[:, d:, :d], S)
            H[N * nw:, N * nw:] = Lz[:, d:, d:].sum(0)
        for j in range(N - 1, -1, -1):
            A, B = AB[j]
            S = self.tangents[j]
            self.hess(states[j], self._w(theta, j), self._h(theta, j), p)
            Q = self.hess.res[0].reshape(m, d + nw, d + nw)  # symmetric: CasADi's column-major order is a view
            r = slice(j * nw, (j + 1) * nw)
            H[r, :(j + 1) * nw] += B.transpose(2, 0, 1).reshape(nw, m * d) @ P.reshape(m * d, (j + 1) * nw)
            H[r, :j * nw] += Q[:, d:, :d].transpose(1, 0, 2).reshape(nw, m * d) @ S.reshape(m * d, j * nw)
            H[r, r] += Q[:, d:, d:].sum(0)
            if j > 0:  # Ṗ^[j] = A_jᵀ Ṗ^[j+1] + Q_yy Ṡ^[j] (+ Q_yw E_j, in a column no longer needed)
                P = A.transpose(0, 2, 1) @ P[:, :, :j * nw]
                P += Q[:, :d, :d] @ S
                p = (A.transpose(0, 2, 1) @ p[:, :, None])[:, :, 0]
        H += H.T  # the diagonal blocks are now doubled (and symmetrised)
        for k in range(N):
            H[k * nw:(k + 1) * nw, k * nw:(k + 1) * nw] *= 0.5
        H[N * nw:, N * nw:] *= 0.5
        out = self.HR.copy()
        out[np.ix_(self.order, self.order)] += H
        return out

    def callback(self) -> ca.Function:
        """IPOPT's ``hess_lag``: (x, p, λ_f, λ_g) -> the upper triangle of λ_f ∇²E (the
        constraints of the reduced NLP are linear, so λ_g does not enter)."""
        if self._callback is None:
            self._callback = _HessLag(self, self.layout.size, self.nlp.g.shape[0])
        return self._callback


class _HessLag(ca.Callback):
    def __init__(self, rh: ReducedHessian, nx: int, ng: int):
        ca.Callback.__init__(self)
        self.rh, self.nx, self.ng = rh, nx, ng
        self.sp_out = ca.Sparsity.upper(nx)
        self.construct("hess_lag_reduced", {})

    def get_n_in(self):
        return 4

    def get_n_out(self):
        return 1

    def get_name_in(self, i):
        return ("x", "p", "lam_f", "lam_g")[i]

    def get_name_out(self, i):
        return "triu_hess_gamma_x_x"

    def get_sparsity_in(self, i):
        return (ca.Sparsity.dense(self.nx), ca.Sparsity(0, 1), ca.Sparsity.scalar(), ca.Sparsity.dense(self.ng))[i]

    def get_sparsity_out(self, i):
        return self.sp_out

    def eval(self, arg):
        # one BLAS thread: the products are small (threads cost more than they give) and the
        # result must not depend on the machine's thread count (the problem is non-convex)
        with threadpool_limits(limits=1, user_api="blas"):
            H = float(arg[2]) * self.rh.hessian(np.array(arg[0]).reshape(-1))
        return [ca.DM(self.sp_out, _triu_ccs(H))]


def _triu_ccs(H):
    """The entries of the upper triangle of H in column-major (CCS) order."""
    n = H.shape[0]
    return np.concatenate([H[: k + 1, k] for k in range(n)])
