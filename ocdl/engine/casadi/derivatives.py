"""Exact first and second derivatives of the full-space NLP (stages eliminated), assembled from
per-sample blocks instead of CasADi's generic sparse AD of the whole graph.

Per layer j and sample n, with the layer's parameters w_j (its controls and, if trained, h_j —
entries of θ at known positions) and the constraint g_{j,n} = y_{j+1,n} − Ψ(y_{j,n}, w_j):

    ∂g/∂y_{j+1} = I,   ∂g/∂y_j = −∂Ψ/∂y,   ∂g/∂w_j = −∂Ψ/∂w                    (d×d, d×n_w)
    ∇²(λᵀg) = −∇²_{(y,w)}(λ_{j,n}ᵀ Ψ)                                         ((d+n_w)² per sample)
    ∇²f:  per sample ∇²_{(y_N, W, μ)} ℓ(W·y_N + μ, c_n) [/m], and the constant ∇²R.

Each block is one small SX function mapped over the m samples; a constant sparse matrix adds every
block entry into its place in the global (upper-triangular) matrix, summing the entries that
meet there (the θ–θ blocks of all samples and ∇²R). This is the same matrix CasADi would build;
it is faster to construct (no sparsity detection on the whole graph) and to evaluate.
"""

from __future__ import annotations

import casadi as ca
import numpy as np

from ocdl.engine.casadi.network import compiled


class _Assembler:
    """Collect (values, rows, cols) sources; build the sparse MX Σ sources at their places."""

    def __init__(self, nrow, ncol, upper=False):
        self.nrow, self.ncol, self.upper = nrow, ncol, upper
        self.values, self.rows, self.cols = [], [], []

    def add(self, values, rows, cols, keep=None):
        """``values``: an MX/DM column (length L); rows, cols: (L,) global indices; ``keep``: mask."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        cols = np.asarray(cols, dtype=np.int64).reshape(-1)
        if keep is None:
            keep = np.ones(rows.size, dtype=bool)
        if self.upper:
            rows, cols = np.minimum(rows, cols), np.maximum(rows, cols)
        self.values.append((values, np.flatnonzero(keep), rows[keep], cols[keep]))

    def build(self):
        V, tr, tc, src = [], [], [], []
        off = 0
        for values, sel, r, c in self.values:
            n = values.shape[0]
            V.append(values)
            src.append(off + sel)
            tr.append(r)
            tc.append(c)
            off += n
        src, tr, tc = np.concatenate(src), np.concatenate(tr), np.concatenate(tc)
        key = tc * self.nrow + tr  # column-major = CCS order
        ukey, target = np.unique(key, return_inverse=True)
        rows, cols = ukey % self.nrow, ukey // self.nrow
        colind = np.searchsorted(cols, np.arange(self.ncol + 1))
        sp = ca.Sparsity(self.nrow, self.ncol, colind.tolist(), rows.tolist())
        M = _sparse_dm(len(ukey), off, target, src)
        nz = ca.mtimes(M, ca.vertcat(*V))
        return ca.MX(sp, nz)


def _sparse_dm(nrow, ncol, rows, cols):
    """The 0/1 matrix with ones at (rows, cols) (duplicates are summed)."""
    order = np.lexsort((rows, cols))
    rows, cols = rows[order], cols[order]
    colind = np.searchsorted(cols, np.arange(ncol + 1))
    sp = ca.Sparsity(int(nrow), int(ncol), colind.tolist(), rows.tolist())
    return ca.DM(sp, np.ones(len(rows)))


def _nonzeros(M):
    """(the structural nonzeros of an SX matrix as a column, their rows, their columns)."""
    sp = M.sparsity()
    return M.nz[:], np.array(sp.row(), dtype=np.int64), np.array(sp.get_col(), dtype=np.int64)


def _block_index(rows, cols, m):
    """(row, col, sample) of the entries of a mapped nonzeros output (nnz × m), in vec order."""
    nnz = rows.size
    return np.tile(rows, m), np.tile(cols, m), np.repeat(np.arange(m), nnz)


def layer_symbols(nlp) -> dict:
    """One sample's layer as SX: y, w (layer j's entries of θ: controls, and h_j if trained), h (the
    fixed step, a symbol), Psi = Ψ(y, w; h); n_w; and w_index(j), the θ positions of w_j."""
    net, L, d = nlp.net, nlp.layout, nlp.d
    s = net.s
    ncol = s if net.per_stage else 1
    h_trained = "h" in L.keys
    nw = net.nu * ncol + (1 if h_trained else 0)
    y, w, hc = ca.SX.sym("y", d), ca.SX.sym("w", nw), ca.SX.sym("h")
    U = ca.reshape(w[: net.nu * ncol], net.nu, ncol)
    U = U if ncol == s else ca.repmat(U, 1, s)
    h = w[-1] if h_trained else hc
    oK, ob = L.slices["K"].start, L.slices["beta"].start

    def w_index(j):
        idx = []
        for i in range(ncol):
            q = j * ncol + i
            idx += list(range(oK + q * d * d, oK + (q + 1) * d * d)) + list(range(ob + q * d, ob + (q + 1) * d))
        if h_trained:
            idx.append(L.slices["h"].start + j)
        return np.array(idx, dtype=np.int64)

    return {"y": y, "w": w, "h": hc, "Psi": net.layer(y, U, h, 0.0), "nw": nw, "w_index": w_index}


def loss_symbols(nlp) -> dict:
    """One sample's loss term as SX: ℓ(W·y + μ, c) [/m] in y, W, μ, c (K classes: W flat in θ's
    row-major order, μ and the one-hot c K-vectors); ζ = (y, the trained ones of W, μ); cidx, the
    θ positions of those trained classifier entries."""
    net, L, d, m = nlp.net, nlp.layout, nlp.d, nlp.m
    cls = [k for k in ("W", "mu") if k in L.keys]
    cidx = (np.concatenate([np.arange(L.slices[k].start, L.slices[k].stop) for k in cls]) if cls
            else np.zeros(0, dtype=np.int64))
    nW, nmu = (d, 1) if net.K == 2 else (net.K * d, net.K)  # W flat in θ's order, μ, the target
    yv, cv = ca.SX.sym("y", d), ca.SX.sym("c", nmu)
    Wv = ca.SX.sym("W", nW) if "W" in L.keys else ca.SX.sym("W_fixed", nW)
    muv = ca.SX.sym("mu", nmu) if "mu" in L.keys else ca.SX.sym("mu_fixed", nmu)
    zeta = ca.vertcat(yv, *([Wv] if "W" in L.keys else []), *([muv] if "mu" in L.keys else []))
    scale = 1.0 / m if nlp.problem.objective.mean else 1.0
    return {"y": yv, "W": Wv, "mu": muv, "c": cv, "zeta": zeta, "cidx": cidx,
            "loss": scale * net.loss(yv, Wv, muv, cv)}


def structured_derivatives(nlp) -> dict:
    """nlpsol options {'jac_g': …, 'hess_lag': …} for a full-space NLP with eliminated stages."""
    net, L = nlp.net, nlp.layout
    d, m, N = nlp.d, nlp.m, nlp.problem.N
    nth = L.size
    h_trained = "h" in L.keys
    sym = layer_symbols(nlp)
    y, w, hc, Psi, w_index = sym["y"], sym["w"], sym["h"], sym["Psi"], sym["w_index"]
    lam = ca.SX.sym("lam", d)
    yw = ca.vertcat(y, w)
    A_nz, rA0, cA0 = _nonzeros(ca.jacobian(Psi, y))
    B_nz, rB0, cB0 = _nonzeros(ca.jacobian(Psi, w))
    Q_nz, rQ0, cQ0 = _nonzeros(ca.hessian(-ca.dot(lam, Psi), yw)[0])
    jac_m = compiled(ca.Function("psi_jac", [y, w, hc], [A_nz, B_nz]), nlp.jit).map(m)
    hess_m = compiled(ca.Function("psi_hess", [y, w, hc, lam], [Q_nz]), nlp.jit).map(m)

    def y_index(j):  # (d, m) array of x indices of Y^[j], j ≥ 1
        return nth + (j - 1) * d * m + np.arange(d * m).reshape(m, d).T

    x, ng = nlp.x, nlp.g.shape[0]
    lam_f, lam_g = ca.MX.sym("lam_f"), ca.MX.sym("lam_g", ng)
    p = ca.MX.sym("p", 0)
    J = _Assembler(ng, x.shape[0])
    H = _Assembler(x.shape[0], x.shape[0], upper=True)
    rA, cA, nA = _block_index(rA0, cA0, m)
    rB, cB, nB = _block_index(rB0, cB0, m)
    rQ, cQ, nQ = _block_index(rQ0, cQ0, m)
    for j in range(N):
        widx = w_index(j)
        wsym = x[widx.tolist()] if len(widx) else ca.MX(0, 1)
        hval = nlp.h[j] if not h_trained else 0.0
        Yj = ca.DM(nlp.Y0) if j == 0 else ca.reshape(x[y_index(j).T.reshape(-1).tolist()], d, m)
        lam_j = ca.reshape(lam_g[nlp.blocks[j]["gy"]], d, m)
        A, B = jac_m(Yj, wsym, hval)
        Qm = hess_m(Yj, wsym, hval, lam_j)
        grow = nlp.blocks[j]["gy"].start + np.arange(d * m).reshape(m, d).T  # (d, m) constraint rows
        # ∂g/∂y_{j+1} = I
        J.add(ca.DM.ones(d * m), grow.T.reshape(-1), y_index(j + 1).T.reshape(-1))
        # ∂g/∂θ = −∂Ψ/∂w
        J.add(-ca.vec(B), grow[rB, nB], widx[cB])
        # Hessian: w–w (summed over samples), y–w and y–y (layers j ≥ 1)
        zi = np.concatenate([np.full(d, -1), widx])  # index into x of the (y, w) block (−1: y, filled below)
        isw_r, isw_c = rQ >= d, cQ >= d
        sel = isw_r & isw_c
        H.add(ca.vec(Qm), np.where(sel, zi[rQ], 0), np.where(sel, zi[cQ], 0), keep=sel & (zi[rQ] <= zi[cQ]))
        if j >= 1:
            yi = y_index(j)
            J.add(-ca.vec(A), grow[rA, nA], yi[cA, nA])
            rows_y = np.where(rQ < d, yi[np.minimum(rQ, d - 1), nQ], 0)
            cols_y = np.where(cQ < d, yi[np.minimum(cQ, d - 1), nQ], 0)
            yy = (rQ < d) & (cQ < d)
            H.add(ca.vec(Qm), rows_y, cols_y, keep=yy & (rQ <= cQ))
            yw = (rQ < d) & (cQ >= d)
            H.add(ca.vec(Qm), rows_y, np.where(cQ >= d, zi[cQ], 0), keep=yw)
    if nlp.simplex:
        hs = L.slices["h"]
        J.add(ca.DM.ones(N), np.full(N, ng - 1), np.arange(hs.start, hs.stop))
    # objective: per-sample loss over (y_N, W, μ), and ∇²R
    ls = loss_symbols(nlp)
    cidx = ls["cidx"]
    Hl, rL0, cL0 = _nonzeros(ca.hessian(ls["loss"], ls["zeta"])[0])
    loss_h = compiled(ca.Function("loss_hess", [ls["y"], ls["W"], ls["mu"], ls["c"]], [Hl]), nlp.jit).map(m)
    YN = ca.reshape(x[y_index(N).T.reshape(-1).tolist()], d, m)
    W = net.fixed_or_trained(nlp.theta, "W", nlp.base)
    mu = net.fixed_or_trained(nlp.theta, "mu", nlp.base)
    Hlm = loss_h(YN, W, mu, ca.DM(nlp.c)) * lam_f
    rL, cL, nL = _block_index(rL0, cL0, m)
    yN = y_index(N)
    zi = np.concatenate([np.full(d, -1), cidx])
    gr = np.where(rL < d, yN[np.minimum(rL, d - 1), nL], zi[rL])
    gc = np.where(cL < d, yN[np.minimum(cL, d - 1), nL], zi[cL])
    keep = ((rL < d) & (cL < d) & (rL <= cL)) | ((rL < d) & (cL >= d)) | ((rL >= d) & (cL >= d) & (gr <= gc))
    H.add(ca.vec(Hlm), gr, gc, keep=keep)
    # R is quadratic: ∇²R is constant
    ts = ca.SX.sym("theta", nth)
    HR = ca.evalf(ca.substitute(ca.hessian(net.regulariser_function(nlp.base)(ts), ts)[0], ts, ca.DM.zeros(nth)))
    HR = ca.sparsify(ca.DM(HR))
    if HR.nnz():
        rr = np.array(HR.sparsity().row())
        cc = np.repeat(np.arange(nth), np.diff(np.array(HR.sparsity().colind())))
        H.add(lam_f * ca.DM(HR.nonzeros()), rr, cc, keep=rr <= cc)
    Jm, Hm = J.build(), H.build()
    return {
        "jac_g": ca.Function("jac_g", [x, p], [nlp.g, Jm], ["x", "p"], ["g", "jac_g_x"]),
        "hess_lag": ca.Function("hess_lag", [x, p, lam_f, lam_g], [Hm], ["x", "p", "lam_f", "lam_g"], ["triu_hess_gamma_x_x"]),
    }
