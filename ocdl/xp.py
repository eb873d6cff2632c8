"""Tiny array namespaces so that one formula serves NumPy, PyTorch and CasADi.

Only the primitives the activations and losses need: tanh, exp, log1p, abs, sin, cos,
relu = max(x, 0), step = [x > 0] (as a float), where(cond, a, b) (elementwise choice; the
derivative is the chosen branch's, so a formula split at a point differentiates consistently there),
clip, affine(K, Y, β) = K Y + β 1ᵀ, stack, asarray, sum0 (the sum along axis 0, the classes of
a K × m array), argmax_mask (the one-hot of the first maximum along axis 0),
zeros_like, axpy(y, a, x) = y + a x, and the in-place accumulations addmm_(C, A, B, w): C += w A B and
add_rowsum_(c, A, w): c += w A 1 (the vector–Jacobian products of :mod:`ocdl.fields`).
"""

from __future__ import annotations

import numpy as np

from ocdl import tanh as tanh_kernel


class _Numpy:
    @staticmethod
    def tanh(x):
        """tanh x by the process's kernel (:mod:`ocdl.tanh`) for float64 and float32 arrays."""
        if isinstance(x, np.ndarray) and x.dtype in _KERNEL_DTYPES:
            x = np.ascontiguousarray(x)
            out = np.empty_like(x)
            tanh_kernel.into(x, out)
            return out
        return np.tanh(x)

    exp = staticmethod(np.exp)
    log1p = staticmethod(np.log1p)
    abs = staticmethod(np.abs)
    sin = staticmethod(np.sin)
    cos = staticmethod(np.cos)
    where = staticmethod(np.where)

    @staticmethod
    def relu(x):
        return np.maximum(x, 0.0)

    @staticmethod
    def stack(arrays, axis):
        return np.stack(arrays, axis)

    @staticmethod
    def asarray(x, like):
        return np.asarray(x, dtype=like.dtype)

    @staticmethod
    def affine(K, Y, beta):
        """K Y + β 1ᵀ for a batch Y (d×m)."""
        return K @ Y + beta[:, None]

    @staticmethod
    def step(x):
        return (np.asarray(x) > 0).astype(np.float64)

    zeros_like = staticmethod(np.zeros_like)

    @staticmethod
    def axpy(y, a, x):
        return y + a * x

    @staticmethod
    def addmm_(C, A, B, w):
        C += w * (A @ B)

    @staticmethod
    def add_rowsum_(c, A, w):
        c += w * A.sum(1)

    @staticmethod
    def clip(x, lo, hi):
        return np.clip(x, lo, hi)

    @staticmethod
    def sum0(x):
        return x.sum(0)

    @staticmethod
    def argmax_mask(x):
        return (np.arange(x.shape[0])[:, None] == np.argmax(x, 0)[None, :]).astype(x.dtype)


class _Torch:
    def __init__(self, chosen_tanh: bool = True):
        import torch

        self.t = torch
        self.exp = torch.exp
        self.log1p = torch.log1p
        self.abs = torch.abs
        self.sin = torch.sin
        self.cos = torch.cos
        self.relu = torch.relu
        self.where = torch.where
        self._ones = {}
        self._array_tanh = _array_tanh_function(torch)
        self._kernel_dtypes = (torch.float64, torch.float32)
        if not chosen_tanh:  # plain torch kernels (the benchmark's reference for autograd)
            self.tanh = torch.tanh
        # σ'(Z) ⊙ M as one kernel, from S = σ(Z) (see dsigma_mul_fn): (M, S) ↦ M ⊙ (1 − S²), M ⊙ S(1 − S)
        self.fused_dsigma = {"tanh": torch.ops.aten.tanh_backward.default,
                             "sigmoid": torch.ops.aten.sigmoid_backward.default}

    def step(self, x):
        return (x > 0).to(x.dtype)

    def tanh(self, x):
        """tanh x. On the CPU (float64, float32) by the process's kernel (:mod:`ocdl.tanh`: NumPy's,
        torch's or ocdl's, chosen by measurement), in autograd too (:class:`_ArrayTanh`), so that
        every gradient path differentiates the same rounded forward map; elsewhere torch.tanh."""
        if x.is_cpu and x.dtype in self._kernel_dtypes:
            if tanh_kernel.kernel(x.dtype) != "torch":
                if x.requires_grad:
                    return self._array_tanh.apply(x)
                out = self.t.empty_like(x)
                tanh_kernel.into(x.contiguous().numpy(), out.numpy())
                return out
        return self.t.tanh(x)

    def zeros_like(self, x):
        return self.t.zeros_like(x)

    def axpy(self, y, a, x):
        """y + a x (one fused op)."""
        return self.t.add(y, x, alpha=a)

    @staticmethod
    def addmm_(C, A, B, w):
        C.addmm_(A, B, alpha=w)

    def ones(self, n, like):
        """A cached vector of n ones with the dtype and device of ``like`` (do not write to it)."""
        key = (n, like.dtype, like.device)
        ones = self._ones.get(key)
        if ones is None:
            ones = self._ones[key] = self.t.ones(n, dtype=like.dtype, device=like.device)
        return ones

    def add_rowsum_(self, c, A, w):
        """c += w A 1, as one matrix–vector product with a cached vector of ones."""
        c.addmv_(A, self.ones(A.shape[1], A), alpha=w)

    def stack(self, arrays, axis):
        return self.t.stack(arrays, axis)

    def asarray(self, x, like):
        return self.t.as_tensor(x, dtype=like.dtype, device=like.device)

    def affine(self, K, Y, beta):
        """K Y + β 1ᵀ (one fused addmm; β a vector or a d×1 column)."""
        return self.t.addmm(beta if beta.dim() == 2 else beta[:, None], K, Y)

    def clip(self, x, lo, hi):
        return self.t.clamp(x, lo, hi)

    @staticmethod
    def sum0(x):
        return x.sum(0)

    def argmax_mask(self, x):
        """One-hot (along axis 0) of the first maximum (torch.argmax returns the first)."""
        return self.t.nn.functional.one_hot(x.argmax(0), x.shape[0]).T.to(x.dtype)


class _Casadi:
    def __init__(self):
        import casadi

        self.ca = casadi
        self.tanh = casadi.tanh
        self.exp = casadi.exp
        self.log1p = casadi.log1p
        self.abs = casadi.fabs
        self.sin = casadi.sin
        self.cos = casadi.cos

    def relu(self, x):
        return self.ca.fmax(x, 0.0)

    def where(self, cond, a, b):
        return self.ca.if_else(cond, a, b)

    def step(self, x):
        return x > 0  # CasADi comparisons evaluate to 1.0 / 0.0

    def clip(self, x, lo, hi):
        return self.ca.fmin(self.ca.fmax(x, lo), hi)

    def sum0(self, x):
        return self.ca.sum1(x)

    def argmax_mask(self, x):
        """One-hot of the first maximum of a column x: x_k > x_l for l < k and x_k ≥ x_l for l > k
        (comparisons evaluate to 1.0 / 0.0; their derivative is 0)."""
        ca, n = self.ca, x.shape[0]
        rows = []
        for k in range(n):
            m = 1
            for l in range(n):
                if l != k:
                    m = m * ((x[k] > x[l]) if l < k else (x[k] >= x[l]))
            rows.append(m)
        return ca.vertcat(*rows)


def _array_tanh_function(torch):
    """tanh as a torch.autograd.Function on a NumPy-array kernel (:func:`ocdl.tanh.into`):
    S = tanh Z forward (into a torch-allocated tensor, which torch's memory accounting sees),
    Z̄ = S̄ ⊙ (1 − S²) backward by torch's fused tanh_backward (itself differentiable, so higher
    derivatives work) — the backward of torch.tanh, so the kernels differ only in S."""

    class _ArrayTanh(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            out = torch.empty_like(x)
            tanh_kernel.into(x.detach().contiguous().numpy(), out.numpy())
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, g):
            (out,) = ctx.saved_tensors
            return torch.ops.aten.tanh_backward(g, out)

    return _ArrayTanh


def dsigma_mul_fn(act, xp):
    """The map (Z, S, M) ↦ σ'(Z) ⊙ M in namespace ``xp``, given S = σ(Z): one fused kernel where
    the namespace has one, else σ' written through S where cheaper (tanh, sigmoid), else σ'(Z)."""
    fused = getattr(xp, "fused_dsigma", {}).get(act.name)
    if fused is not None:
        return lambda Z, S, M: fused(M, S)
    if act.dsigma_s is not None:
        return lambda Z, S, M: act.dsigma_s(S) * M
    return lambda Z, S, M: act.dsigma(Z, xp) * M


_KERNEL_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))
NUMPY = _Numpy()
_cache: dict = {}


def torch(chosen_tanh: bool = True):
    """The PyTorch namespace (imported lazily); ``chosen_tanh=False``: torch.tanh throughout,
    whatever :mod:`ocdl.tanh` chooses (the benchmarks' plain-PyTorch reference)."""
    key = "torch" if chosen_tanh else "torch-plain"
    if key not in _cache:
        _cache[key] = _Torch(chosen_tanh)
    return _cache[key]


def casadi():
    """The CasADi namespace (imported lazily)."""
    if "casadi" not in _cache:
        _cache["casadi"] = _Casadi()
    return _cache["casadi"]
