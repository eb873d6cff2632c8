"""Tiny array namespaces so that one formula serves NumPy, PyTorch and CasADi.

Only the primitives the activations and losses need: tanh, exp, log1p, abs, sin, cos,
relu = max(x, 0), step = [x > 0] (as a float), clip, affine(K, Y, β) = K Y + β 1ᵀ, stack, asarray,
zeros_like, axpy(y, a, x) = y + a x, and the in-place accumulations addmm_(C, A, B, w): C += w A B and
add_rowsum_(c, A, w): c += w A 1 (the vector–Jacobian products of :mod:`ocdl.fields`).
"""

from __future__ import annotations

import numpy as np


class _Numpy:
    tanh = staticmethod(np.tanh)
    exp = staticmethod(np.exp)
    log1p = staticmethod(np.log1p)
    abs = staticmethod(np.abs)
    sin = staticmethod(np.sin)
    cos = staticmethod(np.cos)

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


class _Torch:
    def __init__(self):
        import torch

        self.t = torch
        self.exp = torch.exp
        self.log1p = torch.log1p
        self.abs = torch.abs
        self.sin = torch.sin
        self.cos = torch.cos
        self.relu = torch.relu
        self._ones = {}
        # σ'(Z) ⊙ M as one kernel, from S = σ(Z) (see dsigma_mul_fn): (M, S) ↦ M ⊙ (1 − S²), M ⊙ S(1 − S)
        self.fused_dsigma = {"tanh": torch.ops.aten.tanh_backward.default,
                             "sigmoid": torch.ops.aten.sigmoid_backward.default}

    def step(self, x):
        return (x > 0).to(x.dtype)

    def tanh(self, x):
        """tanh x. On the CPU outside autograd by NumPy's SIMD kernel (within 1 ulp, as torch's;
        6.0 vs 10.8 µs for 2 000 float64 values here, and tanh is most of a sweep's arithmetic);
        on other devices, in autograd and for other dtypes torch.tanh."""
        if x.requires_grad or x.device.type != "cpu" or x.dtype not in (self.t.float64, self.t.float32):
            return self.t.tanh(x)
        out = self.t.empty_like(x)
        np.tanh(x.numpy(), out=out.numpy())
        return out

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

    def step(self, x):
        return x > 0  # CasADi comparisons evaluate to 1.0 / 0.0

    def clip(self, x, lo, hi):
        return self.ca.fmin(self.ca.fmax(x, lo), hi)


def dsigma_mul_fn(act, xp):
    """The map (Z, S, M) ↦ σ'(Z) ⊙ M in namespace ``xp``, given S = σ(Z): one fused kernel where
    the namespace has one, else σ' written through S where cheaper (tanh, sigmoid), else σ'(Z)."""
    fused = getattr(xp, "fused_dsigma", {}).get(act.name)
    if fused is not None:
        return lambda Z, S, M: fused(M, S)
    if act.dsigma_s is not None:
        return lambda Z, S, M: act.dsigma_s(S) * M
    return lambda Z, S, M: act.dsigma(Z, xp) * M


NUMPY = _Numpy()
_cache: dict = {}


def torch():
    """The PyTorch namespace (imported lazily)."""
    if "torch" not in _cache:
        _cache["torch"] = _Torch()
    return _cache["torch"]


def casadi():
    """The CasADi namespace (imported lazily)."""
    if "casadi" not in _cache:
        _cache["casadi"] = _Casadi()
    return _cache["casadi"]
