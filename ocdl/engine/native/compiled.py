"""E and ∇E of a :class:`~ocdl.engine.torch.network.TorchNetwork` by the compiled sweeps of
:mod:`.kernels` (numba): the layers' work fused per chunk of samples, the classifier, the loss and
R as the torch engine computes them (the same :mod:`ocdl.loss` code on the m logits).

Two gradients, as in the torch engine:
  ``adjoint``   the partner adjoint (unscaled form where some b_i = 0): the forward sweep keeps the
                layer states y^[0..N] (O(N·m·d)) and, with ``keep_stages``, the stage values S_i
                (O(N·s·m·d)); without them the backward sweep recomputes each layer's stages from
                y^[j] (one more tanh per stage value, the same numbers bit for bit);
  ``autograd``  reverse mode of the forward sweep (the unscaled costate form, which is what autograd
                computes), with the stage values S_i of every layer kept from the forward sweep
                (O(N·s·m·d), like autograd's saved tensors) and not recomputed.
Both agree with the torch engine's to round-off (tests: ≤ 1e-12 relative).
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np
import torch

from ocdl import loss as loss_mod, regulariser
from ocdl.errors import OcdlError


def unsupported(problem, device: str = "cpu", dtype: str = "float64") -> str | None:
    """Why the compiled sweeps cannot run ``problem`` (one line), or None."""
    if problem.field != "sigma":
        return f"network.field {problem.field!r}: the native engine runs the σ field f = σ(K y + β) only"
    if problem.network.activation != "tanh":
        return f"network.activation {problem.network.activation!r}: the native engine runs tanh only"
    if problem.has_skip and not problem.tableau.explicit:
        return f"tableau {problem.tableau.name!r} is implicit; the native engine runs explicit tableaux only"
    if not str(device).startswith("cpu"):
        return f"device {device!r}: the native engine runs on the CPU (use the torch engine on a GPU)"
    if dtype != "float64":
        return f"dtype {dtype!r}: the native engine computes in float64"
    return None


_WARM: set = set()

KEEP_STAGES_BYTES = 256 * 2**20  # the stage values are kept where they fit in this (keep_stages None)


def keeps_stages(N: int, s: int, d: int, m: int, keep: bool | None = None) -> bool:
    """Whether a sweep keeps every layer's stage values (N·s·d·m float64): ``keep`` where given,
    else where they fit in :data:`KEEP_STAGES_BYTES`."""
    return bool(keep) if keep is not None else N * s * d * m * 8 <= KEEP_STAGES_BYTES


def kernels(parallel: bool = False, second_order: bool = False):
    """The compiled kernels (:mod:`.kernels`), compiled or loaded from numba's on-disk cache once
    per process (``parallel``: the threaded variants too; ``second_order``: the sweeps of
    :mod:`.hv_kernels` too) under an exclusive file lock, so that
    processes starting together (parallel test runs) never write and read the cache at once (an
    unlocked race aborted the interpreter in llvmlite's bitcode reader here). numba missing is
    one line naming the extra."""
    try:
        from ocdl.engine.native import kernels as k
    except ModuleNotFoundError as e:
        if e.name in ("numba", "llvmlite"):
            raise OcdlError("the native engine needs numba: pip install 'ocdl[native]' (or pip install numba)") from None
        raise
    if parallel not in _WARM:
        with _lock():
            k.warm_up(parallel)
        _WARM.add(parallel)
    if second_order and ("second", parallel) not in _WARM:
        from ocdl.engine.native import hv_kernels

        with _lock():
            hv_kernels.warm_up(parallel)
        _WARM.add(("second", parallel))
    return k


@contextlib.contextmanager
def _lock():
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = os.path.join(tempfile.gettempdir(), f"ocdl-native-{os.getuid()}.lock")
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Compiled:
    """The compiled E and ∇E of ``net`` (a TorchNetwork on the CPU in float64).

    ``threads`` > 1 runs chunks of ``chunk`` samples on numba's threads; the partial sums are
    added in chunk order, so the numbers do not depend on the thread count."""

    def __init__(self, net, threads: int = 1, chunk: int | None = None):
        why = unsupported(net.problem, str(net.device), {torch.float64: "float64"}.get(net.dtype, str(net.dtype)))
        if why:
            raise OcdlError(why)
        self.k = kernels()
        self.net = net
        self.threads = int(threads)
        self.chunk = int(chunk or self.k.CHUNK)
        prob = net.problem
        self.skip = bool(prob.has_skip)
        s = net.s if self.skip else 1
        self.s = s
        self.A = np.ascontiguousarray(np.array(net.a, dtype=np.float64).reshape(net.s, net.s)[:s, :s])
        self.b = np.array(net.b[:s] if self.skip else [1.0], dtype=np.float64)
        # the two backward forms (ocdl.engine.torch.adjoint._backward_terms) as dense tables
        a = np.array(net.a, dtype=np.float64)
        self.forms = {"unscaled": (np.array(net.b, dtype=np.float64), np.ascontiguousarray(np.triu(a.T, 1)),
                                   np.ones(net.s))}
        if net.partner_coef is not None:
            pc = np.triu(np.array(net.partner_coef, dtype=np.float64), 1)
            self.forms["partner"] = (np.ones(net.s), np.ascontiguousarray(pc), np.array(net.b, dtype=np.float64))
        if not self.skip:  # plain layers: one stage, the coefficient tables unused
            self.forms = {f: (np.ones(1), np.zeros((1, 1)), np.ones(1)) for f in ("unscaled", "partner")}
        self._none = self.k.NO_STAGES
        self._p0, self._g0 = np.zeros((0, 0)), np.zeros(0)
        self.has_R = prob.objective.smooth > 0 or any(v > 0 for v in prob.tikhonov().values())

    # ------------------------------------------------------------------ arrays
    def controls(self, params):
        """K (N, s_u, d, d), β (N, s_u, d), h (N,) as contiguous float64 arrays."""
        N, d = self.net.problem.N, self.net.d
        K = _np(params["K"]).reshape(N, -1, d, d)
        beta = _np(params["beta"]).reshape(N, -1, d)
        return np.ascontiguousarray(K), np.ascontiguousarray(beta), np.ascontiguousarray(_np(params["h"]))

    def _set_threads(self):
        if self.threads > 1:
            import numba

            kernels(parallel=True)
            numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))

    # ------------------------------------------------------------------ sweeps
    def forward(self, params, Y0, store: bool = False):
        """(states (N+1, d, m), stages (N, s, d, m) or None): the layer states and, with
        ``store``, every layer's stage values S_i."""
        K, beta, h = self.controls(params)
        Y = np.ascontiguousarray(_np(Y0))
        d, m = Y.shape
        N = K.shape[0]
        states = np.empty((N + 1, d, m))
        stages = self.k.stage_store(N, self.s, d, m, self.chunk) if store else self._none
        self._set_threads()
        f = self.k.forward_parallel if self.threads > 1 else self.k.forward
        f(Y, K, beta, h, self.A, self.b, self.skip, states, stages, store, self.chunk)
        return states, (stages if store else None)

    def objective(self, params, Y0, c) -> float:
        states, _ = self.forward(params, Y0)
        return self.finish(params, states, c, Y0.shape[1])[0]

    def finish(self, params, states, c, m, want_grad: bool = False):
        """E (float) from the layer states, and with ``want_grad`` also (g = ∂E/∂z, p^[N], the
        classifier's gradients) as the torch engine forms them."""
        net, prob = self.net, self.net.problem
        yN = torch.from_numpy(states[-1])
        code = self.k.LOSS_CODES.get(prob.objective.loss) if net.K == 2 else None
        if code is not None:  # the two-class losses in one compiled loop (the torch ops cost ≈ 0.3 ms at m = 1000)
            yn = states[-1]
            d = yn.shape[0]
            pN, gW = (np.empty((d, m)), np.empty(d)) if want_grad else (self._p0, self._g0)
            Eloss, gmu = self.k.loss2(code, yn, np.ascontiguousarray(_np(params["W"])), float(params["mu"]),
                                      np.ascontiguousarray(_np(c)), 1.0 / m if prob.objective.mean else 1.0,
                                      want_grad, pN, gW)
            E = Eloss + float(regulariser.value(prob, params)) if self.has_R else Eloss
            if not want_grad:
                return E, None
            return E, (torch.from_numpy(pN), {"W": torch.from_numpy(gW), "mu": torch.tensor(gmu, dtype=torch.float64)})
        with torch.inference_mode():
            z = net.logits(params, yN)
            kind = prob.objective.loss
            scale = 1.0 / m if prob.objective.mean else 1.0
            E = loss_mod.pointwise(kind, z, c, net.xp, net.K).sum() * scale + regulariser.value(prob, params)
            if not want_grad:
                return float(E), None
            g = loss_mod.dpointwise(kind, z, c, net.xp, net.K) * scale
            p, gW, gmu = classifier_back(params["W"], yN, g)
        return E, (p, {"W": gW, "mu": gmu})

    def accuracy(self, params, states, c) -> float:
        """The fraction of samples classified right from the layer states (as
        :meth:`~ocdl.engine.torch.network.TorchNetwork.accuracy`)."""
        net = self.net
        with torch.inference_mode():
            z = net.logits(params, torch.from_numpy(states[-1]))
            if net.K == 2:
                return float(((z > 0).to(c.dtype) == c).to(torch.float64).mean())
            return float((z.argmax(0) == c.argmax(0)).to(torch.float64).mean())

    def value_grad(self, params, Y0, c, gradient: str = "adjoint", states=None, stages=None, keep_stages: bool = False):
        """(E, ∇E over the trained keys as torch tensors). ``gradient``: 'adjoint' (partner form
        where it exists; the stages recomputed, or with ``keep_stages`` stored) or 'autograd'
        (unscaled form, stages stored); ``states`` (and ``stages``) of a forward sweep at these
        params, if at hand."""
        prob = self.net.problem
        if gradient == "autograd":
            form, store = "unscaled", True
        elif gradient == "adjoint":
            form, store = ("partner" if "partner" in self.forms else "unscaled"), bool(keep_stages)
        else:
            raise OcdlError(f"gradient {gradient!r}: 'adjoint' or 'autograd'")
        if states is None or (store and stages is None):
            states, stages = self.forward(params, Y0, store=store)
        m = states.shape[2]
        E, (p, cls) = self.finish(params, states, c, m, want_grad=True)
        K, beta, h = self.controls(params)
        c0s, coef, w = self.forms[form]
        nq = (m + self.chunk - 1) // self.chunk
        N, su, d = K.shape[0], K.shape[1], K.shape[2]
        gK, gb, gh = np.zeros((nq, N, su, d, d)), np.zeros((nq, N, su, d)), np.zeros((nq, N))
        self._set_threads()
        f = self.k.backward_parallel if self.threads > 1 else self.k.backward
        f(states, stages if store else self._none, store, K, beta, h, self.A, c0s, coef, w, self.skip,
          np.ascontiguousarray(p.numpy()), gK, gb, gh, self.chunk)
        out = {"K": self.k.chunk_sum(gK).reshape(params["K"].shape), "beta": self.k.chunk_sum(gb).reshape(params["beta"].shape),
               "h": self.k.chunk_sum(gh)}
        grads = {}
        keys = prob.trainable()
        for key in keys:
            grads[key] = cls[key] if key in cls else torch.from_numpy(out[key])
        if self.has_R:  # (with every weight 0, ∇R = 0 and E + R = E exactly)
            with torch.inference_mode():
                for key, v in regulariser.gradient(prob, params).items():
                    grads[key] = grads[key] + v
        return E, grads


def classifier_back(W, yN, g):
    """(Wᵀ g, g y^[N]ᵀ, Σ_n g_n): the vector–Jacobian products of z = W y^[N] + μ with a
    cotangent g of z (m values for two classes, W ∈ R^d; K × m for K classes)."""
    if W.dim() == 1:
        return W[:, None] * g[None, :], yN @ g, g.sum()
    return W.T @ g, g @ yN.T, g.sum(1)


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy().astype(np.float64, copy=False)
    return np.asarray(x, dtype=np.float64)
