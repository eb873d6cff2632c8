"""One Runge–Kutta step of y' = f(y, u, t) as CasADi functions, for any f (network or general OCP).

With a tableau (A, b, c), step h, stage controls U = [u_1 … u_s] (one column per stage):

    F_i = f(Y_i, u_i, t + c_i h),   Y_i = y + h Σ_l a_il F_l,   y⁺ = y + h Σ_i b_i F_i.

Functions built here (all SX, one trajectory; callers ``map`` them over samples):

    step(y, U, h, t, E) -> (y⁺, F)      explicit tableaux: the stages are eliminated. E (nx×s) is a
                                        perturbation added to the slopes, F_i ← F_i + E_i; at E = 0,
                                        ∂(p⁺ᵀ y⁺)/∂E_i = h μ_i with μ_i = b_i P_i the stage costate.
    residual(y, F, U, h, t) -> R        R_i = F_i − f(y + h Σ_l a_il F_l, u_i, t + c_i h) (any tableau)
    update(y, F, h) -> y⁺               y + h Σ_i b_i F_i
    costate(y, p⁺, U, h, t) -> (p, P, gU, gh)
                                        the backward step of the symplectic partner (Ã, b),
                                        ã_il = b_l − b_l a_li / b_i, for p' = −∂_y H, H = pᵀ f:
                                            P_i = p⁺ + h Σ_l (b_l − ã_il) ∂_y H(Y_l, P_l, u_l),
                                            p   = p⁺ + h Σ_i b_i ∂_y H(Y_i, P_i, u_i),
                                        gU_i = h b_i ∂_u H(Y_i, P_i, u_i), gh = Σ_i b_i ⟨P_i, F_i⟩.
                                        Where some b_i = 0, the unscaled form in μ_i = b_i P_i:
                                            μ_i = b_i p⁺ + h Σ_l a_li ∂_y H(Y_l, μ_l, u_l),
                                            p   = p⁺ + h Σ_i ∂_y H(Y_i, μ_i, u_i),
                                        and P holds μ (the convention of the PyTorch adjoint).
"""

from __future__ import annotations

import casadi as ca
import numpy as np

from ocdl.tableau import Tableau


def lincomb(coefs, vecs):
    """Σ_k coefs[k] vecs[k], skipping zero coefficients (0 if there is none)."""
    out = 0
    for a, v in zip(coefs, vecs):
        if a != 0.0:
            out = out + float(a) * v
    return out


class RKScheme:
    """The step functions of one tableau for one vector field f: (y[nx], u[nu], t) -> ẏ[nx]."""

    def __init__(self, f: ca.Function, tableau: Tableau, nx: int, nu: int):
        self.f, self.tableau, self.nx, self.nu = f, tableau, nx, nu
        self.s = s = tableau.s
        self.explicit = tableau.explicit
        A, b, c = tableau.A, tableau.b, tableau.c
        y, h, t = ca.SX.sym("y", nx), ca.SX.sym("h"), ca.SX.sym("t")
        U = ca.SX.sym("U", nu, s)
        F = ca.SX.sym("F", nx, s)
        R = [F[:, i] - f(y + h * lincomb(A[i], [F[:, l] for l in range(s)]), U[:, i], t + c[i] * h) for i in range(s)]
        self.residual = ca.Function("rk_residual", [y, F, U, h, t], [ca.horzcat(*R)], ["y", "F", "U", "h", "t"], ["R"])
        self.update = ca.Function(
            "rk_update", [y, F, h], [y + h * lincomb(b, [F[:, i] for i in range(s)])], ["y", "F", "h"], ["y_next"]
        )
        self.step = self.costate = None
        if not self.explicit:
            return
        E = ca.SX.sym("E", nx, s)
        Ys, Fs = self._stages(y, U, h, t, E)
        self.step = ca.Function(
            "rk_step", [y, U, h, t, E], [y + h * lincomb(b, Fs), ca.horzcat(*Fs)],
            ["y", "U", "h", "t", "E"], ["y_next", "F"],
        )
        Ys, Fs = self._stages(y, U, h, t, None)
        self.costate = self._costate(y, U, h, t, Ys, Fs)

    def _stages(self, y, U, h, t, E):
        """Stage values Y_i and slopes F_i of an explicit step (slopes perturbed by E if given)."""
        A, c = self.tableau.A, self.tableau.c
        Ys, Fs = [], []
        for i in range(self.s):
            Yi = y + h * lincomb(A[i][:i], Fs)
            Fi = self.f(Yi, U[:, i], t + c[i] * h)
            Ys.append(Yi)
            Fs.append(Fi if E is None else Fi + E[:, i])
        return Ys, Fs

    def _costate(self, y, U, h, t, Ys, Fs):
        """The backward step with the symplectic partner (explicit tableaux), see the module doc."""
        nx, nu, s = self.nx, self.nu, self.s
        A, b, c = self.tableau.A, self.tableau.b, self.tableau.c
        yy, pp, uu, tt = ca.SX.sym("y", nx), ca.SX.sym("p", nx), ca.SX.sym("u", nu), ca.SX.sym("t")
        H = ca.dot(pp, self.f(yy, uu, tt))
        Hy = ca.Function("H_y", [yy, pp, uu, tt], [ca.gradient(H, yy)])
        Hu = ca.Function("H_u", [yy, pp, uu, tt], [ca.gradient(H, uu)])
        p_next = ca.SX.sym("p_next", nx)
        At = self.tableau.partner_A
        P, HyP = [None] * s, [None] * s
        for i in range(s - 1, -1, -1):
            if At is not None:  # b_l − ã_il = b_l a_li / b_i vanishes unless l > i
                P[i] = p_next + h * lincomb([b[l] - At[i, l] for l in range(i + 1, s)], HyP[i + 1:])
            else:
                P[i] = b[i] * p_next + h * lincomb([A[l, i] for l in range(i + 1, s)], HyP[i + 1:])
            HyP[i] = Hy(Ys[i], P[i], U[:, i], t + c[i] * h)
        w = b if At is not None else np.ones(s)
        p = p_next + h * lincomb(w, HyP)
        gU = ca.horzcat(*[h * w[i] * Hu(Ys[i], P[i], U[:, i], t + c[i] * h) for i in range(s)])
        gh = lincomb(w, [ca.dot(P[i], Fs[i]) for i in range(s)])
        return ca.Function(
            "rk_costate", [y, p_next, U, h, t], [p, ca.horzcat(*P), gU, gh],
            ["y", "p_next", "U", "h", "t"], ["p", "P", "gU", "gh"],
        )
