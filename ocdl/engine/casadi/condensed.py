"""Exact Hessian of the reduced NLP by the second-order adjoint in Riccati form, batched over the samples.

The reduced objective E(θ) = Σ_n ℓ(W·y_n^[N] + μ, c_n) [/m] + R(θ), y_n^[j+1] = Ψ_j(y_n^[j], w_j),
where w_j ⊂ θ are layer j's parameters (controls, and h_j if learned). Per layer and sample

    A_j = ∂Ψ_j/∂y (d×d),  B_j = ∂Ψ_j/∂w (d×n_w),  Q_j = ∇²_{(y,w)} (p^[j+1]ᵀ Ψ_j)  ((d+n_w)²),

with the costates p^[N] = ∂ℓ/∂y^[N], p^[j] = A_jᵀ p^[j+1]. The second-order adjoint of a direction
with tangents Ṡ^[j] = ∂y^[j]/∂θ (Ṡ^[0] = 0, Ṡ^[j+1] = A_j Ṡ^[j] + B_j E_j) is
Ṗ^[j] = A_jᵀ Ṗ^[j+1] + Q_yy Ṡ^[j] + Q_yw E_j, Ṗ^[N] = L_yy Ṡ^[N] + L_yc E_c, and the Hessian's rows
are H_{w_j} = B_jᵀ Ṗ^[j+1] + Q_wy Ṡ^[j] + Q_ww E_j. For the columns of an earlier layer
(w_i, i < j) the direction enters layer j through Ṡ^[j] alone, so Ṗ^[j] = M^[j] Ṡ^[j] with the
per-sample d×d Riccati matrices

    M^[N] = L_yy,   M^[j] = A_jᵀ M^[j+1] A_j + Q_yy,

and the block lower triangle of H is

    H_{w_j w_j} = Σ_n B_jᵀ M^[j+1] B_j + Q_ww,     H_{w_j w_i} = Σ_n V_j Ṡ^[j]  (i < j),
    V_j = B_jᵀ M^[j+1] A_j + Q_wy,                 H_{c w} = Σ_n L_cy Ṡ^[N],   H_{cc} = Σ_n L_cc,

(E_j, E_c select w_j and the trained classifier entries c ⊂ (W, μ); L is the per-sample Hessian of
ℓ in (y^[N], c)), plus ∇²R. One backward sweep gives p, M, V (O(m N) small products); one forward
sweep of the tangents gives the off-diagonal blocks as (n_w × m·d)·(m·d × j·n_w) products, each
tangent used once and dropped: O(m N² n_w d (d + n_w)) time, O(m N n_w d) memory (two tangent
buffers, plus A, B, V per layer), and nothing larger than n_θ × n_θ factorised — instead of the
full-space KKT factorisation, whose fill grows with every sample's dense (N·n_w)² coupling to the
shared controls. The per-sample blocks come from the same SX layer as the NLP (:mod:`.derivatives`).
"""

from __future__ import annotations

from dataclasses import dataclass

import casadi as ca
import numpy as np
from threadpoolctl import threadpool_limits

from ocdl.engine.casadi.derivatives import layer_symbols, loss_symbols
from ocdl.engine.casadi.network import compiled


class _InPlace:
    """A CasADi function mapped over the m samples, evaluated in place on NumPy buffers (no DM
    conversion). Inputs and outputs are flat arrays in CasADi's column-major order, i.e. C-ordered
    (m, cols, rows) for a per-sample rows × cols matrix; the inputs listed in ``shared`` are the same
    for every sample; the outputs listed in ``summed`` are summed over the samples. Outputs are
    overwritten by each call."""

    def __init__(self, fn: ca.Function, m: int, shared=(), summed=()):
        f = fn.map(fn.name() + "_map", "serial", m, list(shared), list(summed))
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
    """∇²E(θ) of a reduced :class:`~ocdl.engine.casadi.nlp.NetworkNLP` (explicit tableaux and
    family 'net'), and the IPOPT ``hess_lag`` callback built on it."""

    def __init__(self, nlp):
        self.nlp = nlp
        net, m, d = nlp.net, nlp.m, nlp.d
        L = self.layout = nlp.layout
        sym = layer_symbols(nlp)
        y, w, hc, Psi, self.nw, self.w_index = sym["y"], sym["w"], sym["h"], sym["Psi"], sym["nw"], sym["w_index"]
        p, Mn = ca.SX.sym("p", d), ca.SX.sym("M", d, d)
        A = ca.densify(ca.jacobian(Psi, y))
        B = ca.densify(ca.jacobian(Psi, w))
        Q = ca.densify(ca.hessian(ca.dot(p, Psi), ca.vertcat(y, w))[0])
        MB = ca.mtimes(Mn, B)
        # one backward Riccati step per sample, compiled: (p^[j], M^[j], V_j, A_jᵀ, B_jᵀ, and the
        # diagonal block B_jᵀ M^[j+1] B_j + Q_ww summed over the samples) from (y^[j], w_j, p^[j+1], M^[j+1])
        # (and Q_yy, Q_ywᵀ for the lifted Newton step, :mod:`.lifted`)
        riccati = ca.Function("riccati", [y, w, hc, p, Mn], [
            ca.mtimes(A.T, p),
            ca.mtimes(A.T, ca.mtimes(Mn, A)) + Q[:d, :d],
            ca.mtimes(MB.T, A) + Q[d:, :d],
            A.T, B.T,
            ca.mtimes(B.T, MB) + Q[d:, d:],
            Q[:d, :d], Q[:d, d:].T])
        jit = nlp.jit
        self.step = _InPlace(compiled(ca.Function("psi", [y, w, hc], [Psi]), jit), m, shared=(1, 2))
        self.riccati = _InPlace(compiled(riccati, jit), m, shared=(1, 2), summed=(5,))
        ls = loss_symbols(nlp)
        zeta = ls["zeta"]
        self.cidx = ls["cidx"]
        self.nz = zeta.shape[0]
        # per sample: ∂ℓ/∂y, ∇²_ζ ℓ; summed over the samples: ℓ and ∂ℓ/∂(trained W, μ)
        self.loss_derivs = _InPlace(compiled(ca.Function(
            "loss_dH", [ls["y"], ls["W"], ls["mu"], ls["c"]],
            [ca.gradient(ls["loss"], ls["y"]), ca.densify(ca.hessian(ls["loss"], zeta)[0]), ls["loss"],
             ca.densify(ca.gradient(ls["loss"], zeta)[d:])]), jit), m, shared=(1, 2), summed=(2, 3))
        th = ca.SX.sym("theta", L.size)
        self.R = net.regulariser_function(nlp.base)
        self.gradR = net.regulariser_gradient_function(nlp.base)
        self.HR = np.array(ca.evalf(ca.substitute(ca.hessian(self.R(th), th)[0], th, ca.DM.zeros(L.size))))
        # two tangent buffers Ṡ^[j] (m × d × j·n_w), allocated once: the sweep runs at every IPOPT iteration
        N = nlp.problem.N
        self._buffers = [np.zeros(m * d * N * self.nw), np.zeros(m * d * N * self.nw)]
        self.order = np.concatenate([self.w_index(j) for j in range(nlp.problem.N)] + [self.cidx])
        assert np.array_equal(np.sort(self.order), np.arange(L.size)), "θ is not covered by the layers and classifier"
        self._callback = self._grad_callback = None
        self._last = None  # (θ as bytes, E, ∇E, ∇²E) of the last evaluation

    def layer_w(self, theta, j):
        """w_j: layer j's entries of a θ-vector (its controls, and h_j if trained)."""
        idx = self.w_index(j)
        return theta[idx] if len(idx) else np.zeros(0)

    def layer_h(self, theta, j):
        """The fixed step h_j (0 when h is trained: it is then part of w_j)."""
        return 0.0 if "h" in self.layout.keys else float(self.nlp.h[j])

    def hessian(self, theta) -> np.ndarray:
        """∇²E(θ) (n_θ × n_θ, symmetric), block lower triangle by the Riccati form of the
        second-order adjoint (module docstring), then mirrored."""
        return self.evaluate(theta)[2]

    def objective_and_gradient(self, theta):
        """(E(θ), ∇E(θ)), from the same sweeps as the Hessian (which is kept for the next call)."""
        E, g, _ = self.evaluate(theta)
        return E, g

    def evaluate(self, theta):
        """(E, ∇E, ∇²E) at θ, the last one cached: IPOPT asks for ∇E and then ∇²E at each iterate.

        The gradient comes with the Hessian's sweeps: ∇_{w_j} E = Σ_n B_jᵀ p^[j+1] (the costates
        of the backward sweep), ∇_c E = Σ_n ∂ℓ/∂c, plus ∇R. Internally θ is ordered layer by layer,
        (w_0, …, w_{N−1}, c), so that Ṡ^[j] has nonzero columns only for w_0 … w_{j−1} and is kept
        j·n_w wide."""
        theta = np.asarray(theta, dtype=np.float64).reshape(-1)
        key = theta.tobytes()
        if self._last is None or self._last[0] != key:
            self._last = (key, *self._evaluate(theta))
        return self._last[1:]

    def _evaluate(self, theta):
        sw = self.sweep(theta)
        return sw.E, sw.g, sw.H

    def classifier(self, theta):
        """(W, μ) at θ: the trained entries from θ, the fixed ones from the NLP's base (W flat;
        μ a float for two classes, a K-vector for K)."""
        L, nlp = self.layout, self.nlp
        W = theta[L.slices["W"]] if "W" in L.keys else np.asarray(nlp.base["W"], dtype=np.float64).reshape(-1)
        mu = theta[L.slices["mu"]] if "mu" in L.keys else np.asarray(nlp.base["mu"], dtype=np.float64).reshape(-1)
        return W, (float(mu[0]) if nlp.K == 2 else mu)

    def simulate(self, theta):
        """The states y^[0..N] of the forward sweep at θ, each (m, d)."""
        y = self.nlp.Y0.T.copy()  # samples as rows: CasADi's column-major d×m
        states = [y]
        for j in range(self.nlp.problem.N):
            y = self.step(y, self.layer_w(theta, j), self.layer_h(theta, j))[0].reshape(self.nlp.m, self.nlp.d).copy()
            states.append(y)
        return states

    def sweep(self, theta, states=None, p=None, keep_q=False) -> "Sweep":
        """The Riccati sweeps at θ.

        By default the states come from the forward sweep and the costates from the backward
        one, p^[j] = A_jᵀ p^[j+1]: then ``H`` is ∇²E(θ) and ``g`` is ∇E(θ). Given ``states``
        (y^[0..N], each (m, d)) and ``p`` (p^[1..N], each (m, d); ``p[j]`` is p^[j+1] and enters
        layer j's Q_j = ∇²(p^[j+1]ᵀ Ψ_j)), the same formulas give the condensed Hessian Zᵀ ∇²L Z
        of the full-space Lagrangian at (x, λ = −p), Z = [I; S] the null space of the linearised
        layer equations (:mod:`.lifted`), and ``g`` = ∇R + Σ_n B_jᵀ p^[j+1] (+ ∂ℓ/∂c), its
        θ-part of ∇_x L. ``keep_q`` keeps Q_yy and Q_yw per layer and sample."""
        nlp, m, d, N = self.nlp, self.nlp.m, self.nlp.d, self.nlp.problem.N
        nth, nw, nc = theta.size, self.nw, self.cidx.size
        states = self.simulate(theta) if states is None else states
        W, mu = self.classifier(theta)
        self.loss_derivs(states[N], W, mu, nlp.c.T)  # samples as rows, like the states
        dldy = self.loss_derivs.res[0].reshape(m, d).copy()  # ∂ℓ/∂y^[N] (scaled like the objective)
        Lz = self.loss_derivs.matrices(1, self.nz, self.nz)
        loss = float(self.loss_derivs.res[2][0])
        R = float(self.R(theta))
        G = np.zeros(nth)  # ∇E in the layer order
        dldc = self.loss_derivs.res[3].copy()  # ∂ℓ/∂c (the trained entries of W, μ), summed
        G[N * nw:] = dldc
        H = np.zeros((nth, nth))  # in the layer order
        # backward sweep (per sample, compiled): p^[j] = A_jᵀ p^[j+1], M^[N] = L_yy,
        # M^[j] = A_jᵀ M^[j+1] A_j + Q_yy, V_j = B_jᵀ M^[j+1] A_j + Q_wy, and the diagonal blocks
        M = Lz[:, :d, :d].copy()
        Vt, AB, Atp, Qs = [None] * N, [None] * N, [None] * N, [None] * N
        pk = dldy
        for j in range(N - 1, -1, -1):
            p_next = pk if p is None else p[j]
            pj, M, V, At, Bt, Hjj, Qyy, Qyw = self.riccati(states[j], self.layer_w(theta, j), self.layer_h(theta, j),
                                                          p_next, M)
            pk, M = pj.reshape(m, d).copy(), M.copy()
            Atp[j] = pk  # A_jᵀ p^[j+1]
            Vt[j] = V.reshape(m * d, nw).copy()  # row n·d + k: V_j[:, k] of sample n
            AB[j] = (At.reshape(m, d, d).copy(), Bt.reshape(m, d, nw).copy())  # A_j, B_j, C-ordered
            if keep_q:
                Qs[j] = (Qyy.reshape(m, d, d).copy(), Qyw.reshape(m, d, nw).copy())
            r = slice(j * nw, (j + 1) * nw)
            G[r] = np.einsum("nkw,nk->w", AB[j][1], p_next)  # Σ_n B_jᵀ p^[j+1]
            H[r, r] = Hjj.reshape(nw, nw)
        # forward tangents Ṡ^[j] (two buffers, each tangent contiguous): rows w_j = V_j Ṡ^[j]
        bufs = self._buffers
        S = bufs[0][:0].reshape(m, d, 0)
        for j in range(N):
            if j:
                H[j * nw:(j + 1) * nw, :j * nw] = Vt[j].T @ S.reshape(m * d, j * nw)
            A, B = AB[j]
            S_next = bufs[(j + 1) % 2][:m * d * (j + 1) * nw].reshape(m, d, (j + 1) * nw)
            np.matmul(A, S, out=S_next[:, :, :j * nw])
            S_next[:, :, j * nw:] = B
            S = S_next
        if nc:  # rows c: L_cy Ṡ^[N] and L_cc
            H[N * nw:, :N * nw] = np.einsum("nkb,nbt->kt", Lz[:, d:, :d], S)
            H[N * nw:, N * nw:] = Lz[:, d:, d:].sum(0)
        H = np.tril(H)  # the diagonal blocks were formed whole: keep their lower triangles
        H += np.tril(H, -1).T
        out = self.HR.copy()
        out[np.ix_(self.order, self.order)] += H
        g = np.array(self.gradR(theta)).reshape(-1)
        g[self.order] += G
        return Sweep(theta=theta, E=loss + R, loss=loss, R=R, g=g, H=out, states=states, dldy=dldy, dldc=dldc, Lz=Lz,
                     A=[a for a, _ in AB], B=[b for _, b in AB], Atp=Atp, Q=Qs)

    def gradient_callback(self) -> ca.Function:
        """IPOPT's ``grad_f``: x -> (E, ∇E), evaluated with the Hessian at the same x."""
        if self._grad_callback is None:
            self._grad_callback = _GradF(self, self.layout.size)
        return self._grad_callback

    def callback(self) -> ca.Function:
        """IPOPT's ``hess_lag``: (x, p, λ_f, λ_g) -> the upper triangle of λ_f ∇²E (the
        constraints of the reduced NLP are linear, so λ_g does not enter)."""
        if self._callback is None:
            self._callback = _HessLag(self, self.layout.size, self.nlp.g.shape[0])
        return self._callback


@dataclass
class Sweep:
    """What one :meth:`ReducedHessian.sweep` computes (per-sample arrays have m rows):
    E = loss + R at θ; g (θ order); H (θ order, n_θ × n_θ); states y^[0..N]; dldy = ∂ℓ/∂y^[N];
    dldc = Σ_n ∂ℓ/∂c; Lz = ∇²_ζ ℓ; A[j] = ∂Ψ_j/∂y, B[j] = ∂Ψ_j/∂w_j; Atp[j] = A_jᵀ p^[j+1]; Q[j] = (Q_yy, Q_yw) or None."""
    theta: np.ndarray
    E: float
    loss: float
    R: float
    g: np.ndarray
    H: np.ndarray
    states: list
    dldy: np.ndarray
    dldc: np.ndarray
    Lz: np.ndarray
    A: list
    B: list
    Atp: list
    Q: list


class _BufferCallback(ca.Callback):
    """An IPOPT callback evaluated on CasADi's buffers in place (no DM conversion), with named,
    fixed-sparsity inputs and outputs, its BLAS on one thread: the products are small (threads
    cost more than they give) and the result must not depend on the machine's thread count (the
    problem is non-convex). Subclasses implement ``evaluate(arg, res)`` on the raw buffers."""

    def __init__(self, name: str, inputs: dict, outputs: dict):
        ca.Callback.__init__(self)
        self._in, self._out = list(inputs.items()), list(outputs.items())
        self.construct(name, {})

    def get_n_in(self):
        return len(self._in)

    def get_n_out(self):
        return len(self._out)

    def get_name_in(self, i):
        return self._in[i][0]

    def get_name_out(self, i):
        return self._out[i][0]

    def get_sparsity_in(self, i):
        return self._in[i][1]

    def get_sparsity_out(self, i):
        return self._out[i][1]

    def has_eval_buffer(self):
        return True

    def eval_buffer(self, arg, res):
        with threadpool_limits(limits=1, user_api="blas"):
            self.evaluate(arg, res)
        return 0


class _GradF(_BufferCallback):
    def __init__(self, rh: ReducedHessian, nx: int):
        self.rh = rh
        super().__init__("grad_f_reduced", {"x": ca.Sparsity.dense(nx), "p": ca.Sparsity(0, 1)},
                         {"f": ca.Sparsity.scalar(), "grad_f": ca.Sparsity.dense(nx)})

    def evaluate(self, arg, res):
        E, g = self.rh.objective_and_gradient(np.frombuffer(arg[0], dtype=np.float64))
        if res[0] is not None:  # outputs the caller did not ask for come as NULL
            np.frombuffer(res[0], dtype=np.float64)[0] = E
        if res[1] is not None:
            np.frombuffer(res[1], dtype=np.float64)[:] = g


class _HessLag(_BufferCallback):
    def __init__(self, rh: ReducedHessian, nx: int, ng: int):
        self.rh = rh
        self._tril = np.tril_indices(nx)
        super().__init__("hess_lag_reduced",
                         {"x": ca.Sparsity.dense(nx), "p": ca.Sparsity(0, 1), "lam_f": ca.Sparsity.scalar(),
                          "lam_g": ca.Sparsity.dense(ng)},
                         {"triu_hess_gamma_x_x": ca.Sparsity.upper(nx)})

    def evaluate(self, arg, res):
        H = self.rh.hessian(np.frombuffer(arg[0], dtype=np.float64))
        lam_f = float(np.frombuffer(arg[2], dtype=np.float64)[0])
        # the upper triangle in column-major (CCS) order is H's lower triangle in row-major order
        np.multiply(H[self._tril], lam_f, out=np.frombuffer(res[0], dtype=np.float64))
