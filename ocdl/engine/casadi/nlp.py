"""Training as a nonlinear program: the full-space (simultaneous) and the reduced (single
shooting) NLP of a :class:`~ocdl.problem.Problem` on data (X, c).

Full space, stages eliminated (explicit tableaux, the default):

    x = (θ, Y^[1], …, Y^[N]),   Y^[j] ∈ R^{d×m} (samples as columns),
    g_j = Y^[j+1] − Ψ_j(Y^[j]; U_j, h_j) = 0,   j = 0, …, N−1  (Ψ_j: one RK step, all samples),
    f = Σ_n ℓ(W y_n^[N] + μ, c_n) [/m] + R(θ)

(two classes: W ∈ R^d, c_n ∈ {0, 1}; K ≥ 3: W ∈ R^{K×d}, μ ∈ R^K, the one-hot targets e_{c_n},
:mod:`.network`).

Full space with stage slopes as variables (implicit tableaux, or ``stages='variables'``):

    x = (θ, F_0, Y^[1], F_1, …, Y^[N]),  F_j = [F_{j,1} … F_{j,s}] per sample,
    g = (R_j(Y^[j], F_j) = 0 [the stage equations], Y^[j+1] − Y^[j] − h_j Σ_i b_i F_{j,i} = 0).

Reduced: x = θ, f(θ) = the same objective with Y^[N] from the forward sweep.
Learned steps h are part of θ; the simplex {h ≥ 0, Σh = T} is bounds on θ plus one linear
constraint (the last entry of g). Every sample's layer is one SX function, vectorised with
``Function.map`` over the m samples, so the graph size does not grow with m (with ``jit``, the
per-sample functions are compiled to machine code).
"""

from __future__ import annotations

import casadi as ca
import numpy as np

from ocdl.engine.casadi.network import CasadiNetwork, compiled
from ocdl.errors import OcdlError
from ocdl.problem import Problem, dims

FORMULATIONS = ("full", "reduced")
STAGES = ("auto", "eliminated", "variables")


class NetworkNLP:
    """The NLP of ``problem`` on lifted inputs Y0 (d×m) and labels c (m,: the class numbers).

    ``base`` supplies the untrained parameters (W, μ when the classifier is fixed; h when fixed)
    and the number of classes K (:func:`ocdl.problem.dims` of its W).
    Attributes: ``x, f, g`` (MX), ``lbx, ubx, lbg, ubg`` (NumPy), ``net`` (:class:`CasadiNetwork`),
    ``layout`` (θ's layout), ``blocks`` (where each layer's constraints and variables sit),
    ``labels`` (m,) and ``c`` the targets (1 × m labels, or the K × m one-hot matrix).
    """

    def __init__(self, problem: Problem, Y0: np.ndarray, c: np.ndarray, base: dict,
                 formulation: str = "full", stages: str = "auto", jit: bool = False):
        if formulation not in FORMULATIONS:
            raise OcdlError(f"formulation {formulation!r} is not one of {', '.join(FORMULATIONS)}")
        if stages not in STAGES:
            raise OcdlError(f"stages {stages!r} is not one of {', '.join(STAGES)}")
        self.problem, self.base, self.jit = problem, base, jit
        d, m = Y0.shape
        self.d, self.m = d, m
        self.Y0 = np.asarray(Y0, dtype=np.float64)
        self.K = dims(base)[1]
        self.net = net = CasadiNetwork(problem, d, self.K)
        self.labels = np.asarray(c, dtype=np.float64).reshape(m)
        self.c = net.targets(self.labels)
        self.layout = L = net.layout
        self.formulation = formulation
        explicit = not net.has_skip or net.scheme.explicit
        if stages == "auto":
            stages = "eliminated" if explicit else "variables"
        if stages == "eliminated" and not explicit:
            raise OcdlError(f"tableau {net.tableau.name!r} is implicit: its stages must be variables")
        if not net.has_skip:
            stages = "eliminated"
        self.stages = stages if formulation == "full" else "eliminated"
        N, s = problem.N, net.s
        self.theta = theta = ca.MX.sym("theta", L.size)
        self.h = [self._step(theta, j) for j in range(N)]
        self.t = [problem.h * j for j in range(N)]  # networks are autonomous: t is a label only
        self.U = [net.controls(theta, j) for j in range(N)]
        layer = (compiled(net.layer, jit) if explicit else net.layer).map(m)
        x_parts, g_parts = [theta], []
        self.blocks = []  # per layer: dict(y=slice in x of Y^[j+1], F=slice of F_j, gF, gy)
        off_x, off_g = L.size, 0
        Y = ca.DM(self.Y0)
        for j in range(N):
            blk = {}
            if formulation == "reduced":
                Y = layer(Y, self.U[j], self.h[j], self.t[j])
                self.blocks.append(blk)
                continue
            if self.stages == "variables":
                Fj = ca.MX.sym(f"F{j}", d, s * m)
                x_parts.append(ca.vec(Fj))
                blk["F"] = slice(off_x, off_x + d * s * m)
                off_x += d * s * m
                res = net.scheme.residual.map(m)(Y, Fj, self.U[j], self.h[j], self.t[j])
                g_parts.append(ca.vec(res))
                blk["gF"] = slice(off_g, off_g + d * s * m)
                off_g += d * s * m
                nxt = net.scheme.update.map(m)(Y, Fj, self.h[j])
            else:
                nxt = layer(Y, self.U[j], self.h[j], self.t[j])
            Yn = ca.MX.sym(f"Y{j + 1}", d, m)
            x_parts.append(ca.vec(Yn))
            blk["y"] = slice(off_x, off_x + d * m)
            off_x += d * m
            g_parts.append(ca.vec(Yn - nxt))
            blk["gy"] = slice(off_g, off_g + d * m)
            off_g += d * m
            self.blocks.append(blk)
            Y = Yn
        self.YN = Y
        W = net.fixed_or_trained(theta, "W", base)
        mu = net.fixed_or_trained(theta, "mu", base)
        loss = ca.sum2(compiled(net.loss, jit).map(m)(Y, W, mu, ca.DM(self.c)))
        if problem.objective.mean:
            loss = loss / m
        self.R = net.regulariser_function(base)
        self.f = loss + self.R(theta)
        lbx = np.full(off_x, -np.inf)
        ubx = np.full(off_x, np.inf)
        self.simplex = problem.time_steps == "simplex"
        if self.simplex:
            sl = L.slices["h"]
            lbx[sl] = 0.0
            g_parts.append(ca.sum1(theta[sl]) - problem.T)
        self.x = ca.vertcat(*x_parts)
        self.g = ca.vertcat(*g_parts) if g_parts else ca.MX(0, 1)
        self.lbx, self.ubx = lbx, ubx
        self.lbg = np.zeros(self.g.shape[0])
        self.ubg = np.zeros(self.g.shape[0])

    def _step(self, theta, j):
        if "h" in self.layout.keys:
            return theta[self.layout.slices["h"].start + j]
        return float(np.asarray(self.base["h"]).reshape(-1)[j])

    # ------------------------------------------------------------------ numbers
    def initial_guess(self, params) -> np.ndarray:
        """x0 from a forward simulation of the controls in ``params`` (states and stage slopes)."""
        theta0 = self.layout.pack(params)
        if self.formulation == "reduced":
            return theta0
        states, slopes = self.simulate(theta0)
        x0 = np.empty(self.x.shape[0])
        x0[: self.layout.size] = theta0
        for j, blk in enumerate(self.blocks):
            x0[blk["y"]] = states[j + 1].T.reshape(-1)
            if "F" in blk:
                x0[blk["F"]] = slopes[j].T.reshape(-1)
        return x0

    def simulate(self, theta):
        """States Y^[0..N] (each d×m) and stage slopes F_j (d × s·m; None for eliminated stages
        of plain layers) by the forward sweep at θ."""
        if not hasattr(self, "_sim"):
            net, m = self.net, self.m
            th = ca.MX.sym("theta", self.layout.size)
            Ys, Fs = [], []
            Y = ca.DM(self.Y0)
            for j in range(self.problem.N):
                U, h = net.controls(th, j), self._step(th, j)
                if net.has_skip and net.scheme.explicit:
                    Y_next, F = net.scheme.step.map(m)(Y, U, h, self.t[j], ca.DM.zeros(self.d, net.s))
                elif net.has_skip:
                    Y_next = net.layer.map(m)(Y, U, h, self.t[j])
                    F = net.stages.map(m)(Y, U, h, self.t[j])
                else:
                    Y_next, F = net.layer.map(m)(Y, U, h, self.t[j]), ca.MX(0, 0)
                Ys.append(Y_next)
                Fs.append(F)
                Y = Y_next
            self._sim = ca.Function("simulate", [th], Ys + Fs)
        out = self._sim(theta)
        N = self.problem.N
        states = [self.Y0] + [np.array(o) for o in out[:N]]
        slopes = [np.array(o) if o.numel() else None for o in out[N:]]
        return states, slopes

    def functions(self):
        """CasADi functions of the NLP at (x, λ_g, λ_x): objective, constraints and ∇_x L."""
        if not hasattr(self, "_fns"):
            lam_g = ca.MX.sym("lam_g", self.g.shape[0])
            lam_x = ca.MX.sym("lam_x", self.x.shape[0])
            grad_L = ca.gradient(self.f, self.x) + lam_x
            if self.g.shape[0]:
                grad_L = grad_L + ca.jtimes(self.g, self.x, lam_g, True)
            self._fns = {
                "f": ca.Function("f", [self.x], [self.f]),
                "g": ca.Function("g", [self.x], [self.g]),
                "grad_L": ca.Function("grad_L", [self.x, lam_g, lam_x], [grad_L]),
            }
        return self._fns

    def kkt(self, x, lam_g, lam_x) -> tuple[float, float]:
        """(‖∇_x L‖_∞, constraint violation incl. bounds), unscaled, at (x, λ_g, λ_x)."""
        fns = self.functions()
        gL = np.array(fns["grad_L"](x, lam_g, lam_x)).reshape(-1)
        g = np.array(fns["g"](x)).reshape(-1)
        viol = 0.0
        if g.size:
            viol = float(np.max(np.maximum(self.lbg - g, 0) + np.maximum(g - self.ubg, 0)))
        xv = np.asarray(x).reshape(-1)
        viol = max(viol, float(np.max(np.maximum(self.lbx - xv, 0) + np.maximum(xv - self.ubx, 0), initial=0.0)))
        return float(np.max(np.abs(gL))), viol
