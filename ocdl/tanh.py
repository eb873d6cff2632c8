"""The tanh kernel: one elementwise tanh for every array path, chosen by measurement.

tanh is most of the arithmetic of a sweep of the σ = tanh field, and which float64 kernel is
fastest depends on the CPU and the libraries' builds: NumPy's SIMD loop, torch's vectorised
kernel, or ocdl's own branch-free kernel (:func:`ocdl.engine.native.kernels.tanh`, compiled by
numba; the one the native engine fuses into its sweeps). All three are within 1 ulp of the
correctly rounded value but differ from each other by an ulp here and there, so a program must
use **one** of them in every path — the forward sweep, autograd, the partner adjoint, the
Hessian-vector products, the NumPy reference code — or the gradients of its paths differentiate
different rounded maps.

:func:`kernel` names that one kernel for a dtype. It is, in this order:

1. the one set by :func:`use` in this process (a resumed run sets the kernel it was run with);
2. ``$OCDL_TANH`` (``numpy``, ``torch`` or ``ocdl``);
3. the machine's measured choice, read from the cache file ``tanh-<key>.json`` in
   ``$OCDL_CACHE_DIR`` (default ``$XDG_CACHE_HOME/ocdl`` or ``~/.cache/ocdl``), the key naming the
   CPU and the library versions;
4. else measured now (:func:`measure`: the median time per value of each available kernel at
   2·10³, 2·10⁴ and 2·10⁵ values, interleaved; the least sum wins) and written to that file.
   The file is created once (exclusively): a process that loses the race to write it adopts the
   winner's choice, so every process on one machine uses the same kernel.

:func:`into` evaluates out = tanh x with the kernel of x's dtype (NumPy arrays);
:mod:`ocdl.xp` routes the NumPy and PyTorch (CPU) namespaces through it. CUDA tensors use
torch.tanh. ``ocdl bench tanh`` prints the measurement and the choice.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from ocdl.errors import OcdlError

NAMES = ("numpy", "torch", "ocdl")
SIZES = (2_000, 20_000, 200_000)

_forced: dict = {}  # dtype name → kernel set by use()
_chosen: dict = {}  # dtype name → kernel decided in this process
_ocdl_kernel = None


def _dtype_name(dtype) -> str:
    name = np.dtype(dtype).name
    if name not in ("float64", "float32"):
        raise OcdlError(f"tanh kernels are float64 or float32, not {name}")
    return name


def available(dtype=np.float64) -> tuple[str, ...]:
    """The kernels that can run ``dtype`` here: numpy and torch always; ocdl for float64 where
    numba is installed."""
    names = ["numpy", "torch"]
    if _dtype_name(dtype) == "float64":
        if importlib.util.find_spec("numba") is not None:
            names.append("ocdl")
    return tuple(names)


def _ocdl():
    global _ocdl_kernel
    if _ocdl_kernel is None:
        from ocdl.engine.native.compiled import kernels

        _ocdl_kernel = kernels().tanh_array
    return _ocdl_kernel


def _function(name: str):
    """(x, out) ↦ out = tanh x on contiguous NumPy arrays, for kernel ``name``."""
    if name == "numpy":
        return lambda x, out: np.tanh(x, out=out)
    if name == "torch":
        import torch

        return lambda x, out: torch.tanh(torch.from_numpy(x), out=torch.from_numpy(out))
    if name == "ocdl":
        f = _ocdl()
        return lambda x, out: f(x.reshape(-1), out.reshape(-1))
    raise OcdlError(f"unknown tanh kernel {name!r} (choose from {', '.join(NAMES)})")


def measure(dtype=np.float64, sizes=SIZES, rounds: int = 11) -> dict:
    """{kernel: {size: median seconds per value}} for every available kernel, each timed through the
    PyTorch namespace's tanh (:mod:`ocdl.xp`, a CPU tensor in, a tensor out: the call the sweeps
    make, conversions included) on seeded N(0, 4) arguments, interleaved (each round runs every
    kernel in turn)."""
    import torch

    from ocdl import xp as xp_mod

    tanh_t = xp_mod.torch().tanh
    names = available(dtype)
    rng = np.random.default_rng(0)
    out = {name: {} for name in names}
    with torch.inference_mode():
        for n in sizes:
            x = torch.from_numpy((2.0 * rng.standard_normal(n)).astype(dtype))
            calls = max(1, 20_000 // n) * 2
            times = {name: [] for name in names}
            for _ in range(rounds):
                for name in names:
                    with using({_dtype_name(dtype): name}):
                        tanh_t(x)  # first-call costs out of the timing
                        t0 = time.perf_counter()
                        for _ in range(calls):
                            tanh_t(x)
                        times[name].append((time.perf_counter() - t0) / (calls * n))
            for name in names:
                out[name][n] = float(np.median(times[name]))
    return out


def fastest(timings: dict) -> str:
    """The kernel with the least sum over the sizes of its time per value (ties: the order of NAMES)."""
    return min(timings, key=lambda name: (sum(timings[name].values()), NAMES.index(name)))


def cache_dir() -> Path:
    env = os.environ.get("OCDL_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ocdl"


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_key(dtype_name: str) -> dict:
    from importlib import metadata

    from ocdl import __version__

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"cpu": _cpu(), "machine": platform.machine(), "dtype": dtype_name, "numpy": np.__version__,
            "torch": version("torch"), "numba": version("numba"), "ocdl": __version__}


def cache_file(dtype=np.float64) -> Path:
    """The file that holds this machine's measured choice for ``dtype``."""
    key = _cache_key(_dtype_name(dtype))
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"tanh-{digest}.json"


def _read(path: Path, names) -> str | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    name = rec.get("kernel") if isinstance(rec, dict) else None
    return name if name in names else None


def _decide(dtype_name: str) -> str:
    names = available(dtype_name)
    env = os.environ.get("OCDL_TANH")
    if env:
        if env not in NAMES:
            raise OcdlError(f"OCDL_TANH={env!r}: choose from {', '.join(NAMES)}")
        if env not in names:
            raise OcdlError(f"OCDL_TANH={env!r}: the {env} kernel cannot run {dtype_name} here "
                            f"(available: {', '.join(names)}; ocdl needs numba and float64)")
        return env
    path = cache_file(dtype_name)
    name = _read(path, names)
    if name is not None:
        return name
    timings = measure(dtype_name)
    name = fastest(timings)
    rec = {"kernel": name, "key": _cache_key(dtype_name), "sizes": list(SIZES),
           "seconds_per_value": {k: [v[n] for n in SIZES] for k, v in timings.items()},
           "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rec, indent=1) + "\n")
        try:
            os.link(tmp, path)  # exclusive: the first writer's choice stands
        finally:
            tmp.unlink()
    except OSError:
        pass  # not writable, or another process wrote first: read what stands
    return _read(path, names) or name


_BY_KEY: dict = {}  # any dtype object (NumPy's, torch's) → kernel, cleared by _forget_lookups()


def kernel(dtype=np.float64) -> str:
    """The name of the tanh kernel for ``dtype`` (a NumPy or torch float dtype, or its name) in this
    process (see the module docstring)."""
    name = _BY_KEY.get(dtype)
    if name is None:
        dn = _dtype_name(str(dtype).removeprefix("torch.") if type(dtype).__module__ == "torch" else dtype)
        if dn in _forced:
            name = _forced[dn]
        else:
            if dn not in _chosen:
                _chosen[dn] = _decide(dn)
            name = _chosen[dn]
        _BY_KEY[dtype] = name
    return name


def decided() -> dict:
    """{dtype: kernel} for the dtypes whose kernel this process has used or set (for a run's record)."""
    return {**_chosen, **_forced}


def _forget_lookups() -> None:
    """Drop the per-dtype lookups of :func:`kernel` and :func:`into` (after a setting changed)."""
    _FUNCTIONS.clear()
    _BY_KEY.clear()


def use(name: str | None, dtype=np.float64) -> None:
    """Set this process's kernel for ``dtype`` (``None``: back to the measured choice). Unknown or
    unavailable kernels are one line."""
    dn = _dtype_name(dtype)
    if name is None:
        _forced.pop(dn, None)
    else:
        if name not in NAMES:
            raise OcdlError(f"unknown tanh kernel {name!r} (choose from {', '.join(NAMES)})")
        if name not in available(dn):
            raise OcdlError(f"the {name} tanh kernel cannot run {dn} here (available: {', '.join(available(dn))})")
        _forced[dn] = name
    _forget_lookups()


def reset() -> None:
    """Forget this process's decisions and settings: the next :func:`kernel` decides again (cache file,
    ``$OCDL_TANH``, measurement)."""
    _forced.clear()
    _chosen.clear()
    _forget_lookups()


@contextlib.contextmanager
def using(kernels: dict):
    """Within the block, the kernels {dtype: name} (a run's record, :func:`decided`) as by :func:`use`;
    the process's settings are restored after it."""
    saved = dict(_forced)
    try:
        for dn, name in kernels.items():
            use(name, dn)
        yield
    finally:
        _forced.clear()
        _forced.update(saved)
        _forget_lookups()


_FUNCTIONS: dict = {}


def into(x: np.ndarray, out: np.ndarray) -> None:
    """out = tanh x by the kernel of x's dtype (x and out C-contiguous, the same shape and dtype)."""
    f = _FUNCTIONS.get(x.dtype)  # keyed by the dtype object: dtype.name costs ≈ 2 µs a call
    if f is None:
        f = _FUNCTIONS[x.dtype] = _function(kernel(x.dtype))
    f(x, out)
