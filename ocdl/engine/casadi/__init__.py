"""The CasADi engine: training as a discrete optimal control NLP solved by IPOPT (or by a
trust-region SQP with condensed steps), its costates from the multipliers, and the Hamiltonian
boundary value problem solved by Newton's method.

    CasadiEngine().solve(problem, (train, test), params0, run) -> SolveResult
    CasadiEngine().evaluate(problem, params, (train, test)) -> Evaluation
    gradient(problem, params, X, c) -> (E, grads)
    solve_ocp(ocp, tableau, N, controls='per-stage', tol=1e-12) -> OCPSolution
    hager_errors(tableau, Ns) -> {'N', 'state', 'costate', 'control'}

Modules, one per mathematical object: :mod:`.discretisation` (the RK step of any f and its
partner costate step), :mod:`.network` (a Problem's network per sample), :mod:`.nlp` (full-space
and reduced NLP), :mod:`.costates` (multipliers → costates, and the numeric adjoint sweep),
:mod:`.ipopt` (the solver run), :mod:`.derivatives` (the full-space Jacobian and Hessian from
per-sample blocks), :mod:`.condensed` (the reduced Hessian by Riccati sweeps), :mod:`.lifted` (the
SQP with condensed steps), :mod:`.bvp` (Newton on the discrete Hamiltonian system),
:mod:`.optimal_control` (general OCPs). Importing this package does not import casadi.
"""

from __future__ import annotations

import importlib
import math

from ocdl.engine.base import Engine, Option, RunContext, count, format_bytes, one_of, positive, register


def _table(v):
    """A table of IPOPT options: names, types, ranges and string values checked against IPOPT's own
    list (:mod:`.ipopt_options`), so that a typo is refused before anything is written (IPOPT
    would only fail when the solve starts)."""
    if not isinstance(v, dict):
        return "must be a table of IPOPT options"
    from ocdl.engine.casadi.ipopt_options import check

    return check(v)


_NLP_OPTIONS = {
    "tol": Option(1e-10, "KKT tolerance (IPOPT's tol; the SQP's and Newton's stopping test)", positive),
    "hessian": Option("exact", "Hessian of the Lagrangian: 'exact' or IPOPT's 'lbfgs'", one_of("exact", "lbfgs")),
    "formulation": Option("full", "'full' (states as variables, costates = multipliers) or 'reduced' "
                                  "(states eliminated)", one_of("full", "reduced")),
    "stages": Option("auto", "full space: stage slopes 'eliminated' or 'variables' ('auto': by the tableau)",
                     one_of("auto", "eliminated", "variables")),
    "max_iter": Option(None, "iteration limit (default: solver.iterations if > 0, else 3000)", count),
    "derivatives": Option("structured", "'structured' (per-sample blocks, Riccati sweeps) or 'casadi' "
                                        "(CasADi's AD of the whole graph)", one_of("structured", "casadi")),
    "jit": Option("auto", "compile the per-sample functions with the C compiler: 'auto', true, false",
                  one_of("auto", True, False)),
    "ipopt": Option({}, "extra IPOPT options (a table)", _table),
    "start": Option("initial", "'initial', or 'reduced': solve the reduced NLP first (full-space ipopt)",
                    one_of("initial", "reduced")),
}


class CasadiEngine(Engine):
    """The full-space (or reduced) NLP in CasADi; its KKT system is the discrete Hamiltonian BVP."""

    name = "casadi"
    solvers = {
        "ipopt": "IPOPT (MUMPS) on the full-space or reduced NLP, exact Hessian",
        "sqp": "trust-region SQP whose KKT systems are solved by condensing (lifted Newton)",
        "bvp": "Newton's method on the discrete Hamiltonian boundary value problem",
    }
    options = {name: dict(_NLP_OPTIONS) for name in solvers}
    default_solver = "ipopt"

    def check(self, problem, d: int) -> None:
        from ocdl.engine.casadi.engine import engine_options

        engine_options(problem)  # the declared options' checks, then the rules between them

    def memory_estimate(self, problem, d: int, m: int, formulation: str | None = None):
        """(bytes, what) at the solve's peak: :func:`nlp_bytes` for the problem's formulation (or
        ``formulation``, 'full' | 'reduced')."""
        kind = _kind(problem, formulation)
        n = n_theta(problem, d)
        return nlp_bytes(problem, d, m, kind), (f"{_KIND_WORDS[kind]}, n_θ = {n} parameters, whose dense Hessian "
                                                f"alone takes n_θ² × 8 bytes = {format_bytes(8.0 * n * n)}")

    def memory_hint(self, problem, d: int, m: int, limit: int) -> str:
        kind = _kind(problem)
        if 8.0 * n_theta(problem, d) ** 2 > limit / _HESSIAN_COPIES["condensed"]:  # no formulation fits
            return _too_many_parameters(problem, d, m, limit)
        out = []
        if kind != "condensed":
            red = nlp_bytes(problem, d, m, "condensed")
            if red <= limit:
                out.append(f"--formulation reduced (about {format_bytes(red)})")
        from ocdl.engine import base

        torch_est = base.get("torch").memory_estimate(problem, d, m) if "torch" in base.names() else None
        if torch_est is not None and torch_est[0] <= limit:
            out.append(f"the PyTorch engine, --backend torch (about {format_bytes(torch_est[0])})")
        per = nlp_bytes(problem, d, 1, kind) - nlp_bytes(problem, d, 0, kind)
        m_fit = int((limit - nlp_bytes(problem, d, 0, kind)) // per) if per > 0 else 0
        if m_fit >= 2:
            out.append(f"at most about {m_fit} samples (--n)")
        return "use " + ", or ".join(out) if out else "use fewer samples or layers"

    def solve(self, problem, data, params0, run: RunContext):
        from ocdl.engine.casadi.engine import solve

        train, test = data
        return solve(problem, train, test, params0, log=run.log or (lambda s: None), quiet=run.log is None)

    def evaluate(self, problem, params, data):
        from ocdl.engine.casadi.engine import evaluate

        return evaluate(problem, params, *data)

    def states(self, problem, params, X):
        from ocdl.engine.casadi.engine import states

        return states(problem, params, X)


# ---------------------------------------------------------------------- memory
# Peak resident memory of a CasADi solve (ru_maxrss of the process, IPOPT with MUMPS, casadi 3.x),
# measured on spiral with N = 15 unless said (MB): full space, rk4, width 2, per-layer controls:
# m = 200: 125, 1000: 358, 2000: 614, 4000: 1167; m = 1000: N = 5: 155, N = 30: 699; euler 298;
# kutta3 362; width 4: 2422; per-stage controls: 2650; stages as variables: m = 500: 385,
# m = 1000: 711; hessian lbfgs: 354; bvp: m = 1000: 290, 4000: 909. Condensed solves (IPOPT on the
# reduced NLP, the SQP): reduced m = 1000: 80, 4000: 122, 16000: 286; width 4 (m = 4000): 343;
# per-stage (m = 4000): 242; sqp full m = 1000: 78, 4000: 137; sqp reduced m = 4000: 122,
# 16000: 319. The full space grows like the square of the local block L = (the sample's variables
# of a layer: d, or d (1 + s/2) with stage variables) + (the layer's controls p): per sample and
# layer 265 L² + 130 L bytes, × (N/15)^0.23, above 100 MB; the condensed solves like d (d + p):
# 60 d (d + p) bytes per sample and layer above 70 MB. The estimates are within −6 % … +24 % of
# the full-space measurements above and −9 % … +17 % of the condensed ones.
# Wide networks (many parameters n_θ) add the dense n_θ × n_θ Hessian, counted as a lower bound:
# the condensed solves hold it three times (∇²E assembled in the layer order, the copy in θ's
# order, IPOPT's triangle with MUMPS' dense factor), the full space once (the θ–θ block, which the
# factorisation makes dense). Measured peaks are higher still (condensed, K = 3, m = 20: width 16,
# N = 10, n_θ = 2771: 1114 MB; width 20, N = 10, n_θ = 4263: 2330 MB — the SX graphs of the
# second-order sweep), so a refusal on this count is certain, not a fit.
_HESSIAN_COPIES = {"condensed": 3, "full": 1}
_BASE_BYTES = 100 * 2**20
_BASE_BYTES_CONDENSED = 70 * 2**20
_KIND_WORDS = {"full": "the full-space NLP, factorised by MUMPS",
               "condensed": "the condensed NLP (states eliminated)"}


def _kind(problem, formulation: str | None = None) -> str:
    if problem.solver.name == "bvp":
        return "full"
    form = formulation or dict(problem.solver.options).get("formulation", "full")
    return "condensed" if problem.solver.name == "sqp" or form == "reduced" else "full"


def nlp_bytes(problem, d: int, m: int, kind: str = "full") -> int:
    """The estimated peak memory (bytes) of a CasADi solve of ``problem`` on m samples at width d:
    ``kind`` 'full' (the full-space NLP: IPOPT, the BVP's Newton) or 'condensed' (IPOPT on the
    reduced NLP, the SQP); a fit to measurements (see the comment above)."""
    N, s = problem.N, problem.n_stages if problem.has_skip else 1
    p = (d * d + d) * (s if problem.per_stage and problem.has_skip else 1) + ("h" in problem.trainable())
    n_all = sum(math.prod(v) for v in problem.param_shapes(d, classes_of(problem)).values())
    dense = _HESSIAN_COPIES[kind] * 8.0 * n_theta(problem, d) ** 2
    if kind == "condensed":
        return int(_BASE_BYTES_CONDENSED + 64 * n_all + dense + m * N * 60.0 * d * (d + p))
    else:
        stages = dict(problem.solver.options).get("stages", "auto")
        variables = problem.has_skip and (stages == "variables" or stages == "auto" and not problem.tableau.explicit)
        L = d * (1 + s / 2) + p if variables else d + p
        per = (265.0 * L * L + 130.0 * L) * (N / 15.0) ** 0.23
    return int(_BASE_BYTES + 64 * n_all + dense + m * N * per)


def classes_of(problem) -> int:
    """K for the estimate before the labels are read: ``classifier.classes``, else the in-memory
    data's, 10 for the image sets (digits, mnist), else 2 (the generated sets; a data file's
    classes are not read here: W is a small part of n_θ)."""
    if problem.classifier.classes:
        return int(problem.classifier.classes)
    if problem.data.name == "arrays" and problem.data.train is not None:
        return max(2, int(problem.data.train.classes))
    if problem.data.name in ("digits", "mnist"):
        from ocdl.images import MNIST_CLASSES

        return MNIST_CLASSES
    return 2


def n_theta(problem, d: int, K: int | None = None) -> int:
    """The number of entries of θ (the trained parameter arrays of K, β, W, μ, h) at width d and
    K classes (default :func:`classes_of`)."""
    K = classes_of(problem) if K is None else K
    shapes = problem.param_shapes(d, K)
    return sum(math.prod(shapes[k]) for k in problem.trainable())


def _too_many_parameters(problem, d: int, m: int, limit: int) -> str:
    """The hint when the dense Hessian alone does not fit: the PyTorch engine, or a narrower width."""
    from ocdl.engine import base

    out = []
    torch_est = base.get("torch").memory_estimate(problem, d, m) if "torch" in base.names() else None
    out.append("the PyTorch engine, --backend torch" + (f" (about {format_bytes(torch_est[0])})"
                                                         if torch_est is not None else ""))
    fits = [w for w in range(1, d) if nlp_bytes(problem, w, m, "condensed") <= limit]
    if fits:
        out.append(f"a lifting to a width ≤ {fits[-1]} (network.width = {fits[-1]} with network.lift = 'pca' or "
                   f"'random'; n_θ = {n_theta(problem, fits[-1])}) with --formulation reduced")
    return "the CasADi engine's Newton-type solvers need the dense Hessian; use " + ", or ".join(out)


ENGINE = register(CasadiEngine())

_LAZY = {"solve": "engine", "gradient": "engine", "evaluate": "engine", "solve_ocp": "optimal_control",
         "hager_errors": "optimal_control", "OCPSolution": "optimal_control"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"ocdl.engine.casadi.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ocdl.engine.casadi' has no attribute {name!r}")


__all__ = ["CasadiEngine", "ENGINE", "solve", "gradient", "evaluate", "solve_ocp", "hager_errors", "OCPSolution"]
