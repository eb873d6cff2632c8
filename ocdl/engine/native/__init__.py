"""The native engine: the torch engine's solvers with E and ∇E computed by compiled sweeps.

The forward sweep and the backward (costate) sweep of the whole network run as compiled loops
(numba, :mod:`.kernels`), fused per chunk of samples, with a vectorised tanh of its own; the
classifier, the loss and R are the torch engine's code on the m logits, and the optimisers are the
torch engine's (:mod:`ocdl.engine.torch.optim`), so that a run takes the same steps as the torch
engine's to round-off. ``gradient = "adjoint"`` (the default) is the partner adjoint; it keeps
the stage values of the forward sweep (O(N·s·m·d)) where they fit in 256 MiB, else, or with the
solver option ``keep_stages = false``, only the layer states (O(N·m·d)) and recomputes the stages
(the same numbers, bit for bit). ``"autograd"`` is reverse mode of the forward sweep with the
stages kept, as autograd. The ``newton`` solver's H·v are the compiled tangent and
second-order adjoint sweeps (:mod:`.hv_kernels`, :mod:`.curvature`). Runs the σ = tanh field on explicit tableaux (rk, resnet,
odenet, plain net layers), per-layer or per-stage controls, fixed, learned or simplex steps, any
loss and class count, on the CPU in float64; anything else is refused with one line. Needs numba
(``pip install 'ocdl[native]'``). Why numba: see docs/torch-engine.md ("The compiled path").

Importing this package imports neither torch nor numba.
"""

from __future__ import annotations

from ocdl.engine.base import Option, register
from ocdl.engine.torch import TorchEngine


_SOLVERS = ("gd-armijo", "gd-lipschitz", "lbfgs", "adam", "sgd", "newton")  # newton: H·v by .curvature


def _keep(v):
    return None if isinstance(v, bool) or v == "auto" else "must be 'auto', true or false"


KEEP_STAGES = Option("auto", "keep every layer's stage values between the sweeps, O(N·s·m·d) memory: true, false "
                             "(the layer states only, O(N·m·d); the stages recomputed, one more tanh each) or "
                             "'auto' (kept where they fit in 256 MiB); the same numbers either way", _keep)


class NativeEngine(TorchEngine):
    """:class:`~ocdl.engine.torch.TorchEngine` with compiled E and ∇E (see the module docstring)."""

    name = "native"
    solvers = {k: v for k, v in TorchEngine.solvers.items() if k in _SOLVERS}
    options = {k: {**v, "keep_stages": KEEP_STAGES} for k, v in TorchEngine.options.items() if k in _SOLVERS}
    default_solver = "gd-armijo"
    resumable = True

    def check(self, problem, d: int) -> None:
        from ocdl.engine.native.compiled import unsupported
        from ocdl.errors import OcdlError

        why = unsupported(problem, str(problem.device), problem.dtype)
        if why:
            raise OcdlError(why)
        super().check(problem, d)

    def solve(self, problem, data, params0, run):
        from ocdl.engine.native.objective import CompiledObjective
        from ocdl.engine.torch import _iterations
        from ocdl.engine.torch.network import TorchNetwork, configure_threads
        from ocdl.engine.torch.optim import optimise
        from ocdl.problem import dims

        self.check(problem, dims(params0)[0])
        train, test = data
        d, K = dims(params0)
        opts = self.check_options(problem)
        threads = configure_threads(train.n, d, int(opts["threads"]))
        net = TorchNetwork(problem, d, classes=K)
        base = net.to_torch(params0)
        obj = CompiledObjective(net, base, problem.trainable(), net.inputs(train.X), net.targets(train.c),
                                net.inputs(test.X), net.targets(test.c))
        obj.threads = threads
        obj.keep_stages = None if opts["keep_stages"] == "auto" else opts["keep_stages"]
        return optimise(obj, problem, obj.flat(base), _iterations(problem, opts, train.n, run.log), opts,
                        state=run.state, history=run.history, log=run.log, checkpoint=run.checkpoint)

    def evaluate(self, problem, params, data, device: str = "cpu", dtype: str = "float64"):
        """E and the test objective by the compiled forward sweep, ∇E by the compiled partner
        adjoint (float64, CPU); the accuracies and y^[N] from the same sweeps."""
        from ocdl.engine.native.compiled import Compiled, unsupported
        from ocdl.engine.torch import evaluation_of
        from ocdl.engine.torch.network import TorchNetwork
        from ocdl.errors import OcdlError
        from ocdl.problem import dims

        why = unsupported(problem, device, dtype)
        if why:
            raise OcdlError(why)
        train, test = data
        d, K = dims(params)
        net = TorchNetwork(problem, d, device=device, dtype=dtype, classes=K)
        comp = Compiled(net)
        prm = net.to_torch(params)
        Y0, c = net.inputs(train.X), net.targets(train.c)
        Y0_test, c_test = net.inputs(test.X), net.targets(test.c)
        states, _ = comp.forward(prm, Y0)
        E, g = comp.value_grad(prm, Y0, c, states=states)
        states_test, _ = comp.forward(prm, Y0_test)
        E_test = comp.finish(prm, states_test, c_test, Y0_test.shape[1])[0]
        return evaluation_of(E, g, E_test, comp.accuracy(prm, states, c), comp.accuracy(prm, states_test, c_test),
                             states[-1], self.name)


ENGINE = register(NativeEngine())
