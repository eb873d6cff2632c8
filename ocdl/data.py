"""Seeded two-class data sets of the paper, images (:mod:`ocdl.images`), and loading a user's CSV/NPZ.

Labels are the class numbers 0, …, K−1 (float64); K = 2 for the paper's data sets.

Labels are fixed first, then Gaussian noise is added to the points. Train and test sets are two
independent draws (seeds spawned from one ``numpy.random.SeedSequence``).

    donut1d  100-point grid of [−1, 1] (second coordinate 0); class 1 (⌈n/3⌉ points) ∝ exp(−x²/0.02),
             class 0 ∝ exp(−(|x| − 0.5)²/0.02); noise 0.1
    donut2d  100×100 grid of [−1, 1]²; class 1 (⌈n/2⌉) ∝ exp(−r²/0.02),
             class 0 ∝ exp(−(r − 0.5)²/0.02); noise 0.1
    spiral   two one-turn spirals, radius linspace(0.1, 1), angle linspace(0.1, 2π),
             class 1 (⌈n/2⌉) shifted by π; noise 0.05
    squares  uniform on [−0.7, 0.7]², label 1 where x₁x₂ > 0; noise 0.1
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ocdl.errors import OcdlError, read_text

__all__ = ["Dataset", "make", "generate", "load_file", "from_arrays", "DEFAULT_NOISE", "GENERATORS"]

DEFAULT_NOISE = {"donut1d": 0.1, "donut2d": 0.1, "spiral": 0.05, "squares": 0.1}


@dataclass(frozen=True, eq=False)
class Dataset:
    """Points ``X`` (n, dim) and labels ``c`` (n,) in {0, …, K−1}, float64; equal when the arrays are."""

    X: np.ndarray
    c: np.ndarray

    def __eq__(self, other) -> bool:
        if not isinstance(other, Dataset):
            return NotImplemented
        return np.array_equal(self.X, other.X) and np.array_equal(self.c, other.c)

    __hash__ = None

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def dim(self) -> int:
        return self.X.shape[1]

    @property
    def classes(self) -> int:
        """K = 1 + the largest label (at least 2)."""
        return max(2, int(self.c.max()) + 1) if self.c.size else 2


def _draw_weighted(rng, points, weights, k):
    p = weights / weights.sum()
    return points[rng.choice(len(points), size=k, replace=True, p=p)]


def _donut1d(rng, n):
    grid = np.linspace(-1.0, 1.0, 100)
    n1 = -(-n // 3)  # ceil(n/3), as the paper's generator
    x1 = _draw_weighted(rng, grid, np.exp(-grid**2 / 0.02), n1)
    x0 = _draw_weighted(rng, grid, np.exp(-((np.abs(grid) - 0.5) ** 2) / 0.02), n - n1)
    x = np.concatenate([x1, x0])
    X = np.stack([x, np.zeros_like(x)], axis=1)
    c = np.concatenate([np.ones(n1), np.zeros(n - n1)])
    return X, c


def _donut2d(rng, n):
    g = np.linspace(-1.0, 1.0, 100)
    G = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
    r = np.linalg.norm(G, axis=1)
    n1 = -(-n // 2)  # ceil(n/2), as the paper's generator
    X1 = _draw_weighted(rng, G, np.exp(-(r**2) / 0.02), n1)
    X0 = _draw_weighted(rng, G, np.exp(-((r - 0.5) ** 2) / 0.02), n - n1)
    c = np.concatenate([np.ones(n1), np.zeros(n - n1)])
    return np.concatenate([X1, X0]), c


def _spiral(rng, n):
    n1 = -(-n // 2)  # ceil(n/2), as the paper's generator
    n0 = n - n1

    def arm(k, shift):
        r = np.linspace(0.1, 1.0, k)
        a = np.linspace(0.1, 2 * np.pi, k) + shift
        return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)

    X = np.concatenate([arm(n0, 0.0), arm(n1, np.pi)])
    c = np.concatenate([np.zeros(n0), np.ones(n1)])
    return X, c


def _squares(rng, n):
    X = rng.uniform(-0.7, 0.7, size=(n, 2))
    c = (X[:, 0] * X[:, 1] > 0).astype(np.float64)
    return X, c


GENERATORS = {"donut1d": _donut1d, "donut2d": _donut2d, "spiral": _spiral, "squares": _squares}


def generate(name: str, n: int, noise: float | None = None, rng: np.random.Generator | None = None) -> Dataset:
    """One draw of ``n`` points of data set ``name`` (noise added after the labels)."""
    if name not in GENERATORS:
        raise OcdlError(f"unknown data set {name!r}; known: {', '.join(GENERATORS)}, file")
    if n < 2:
        raise OcdlError(f"data set {name!r}: need n ≥ 2, got {n}")
    rng = rng if rng is not None else np.random.default_rng(0)
    X, c = GENERATORS[name](rng, n)
    sd = DEFAULT_NOISE[name] if noise is None else noise
    X = X + sd * rng.standard_normal(X.shape)
    return Dataset(np.ascontiguousarray(X, dtype=np.float64), c.astype(np.float64))


def _validate(X, c, source):
    X = np.asarray(X)
    c = np.asarray(c)
    if X.dtype.kind not in "biuf" or c.dtype.kind not in "biuf":
        raise OcdlError(f"{source}: features and labels must be numeric, got dtypes {X.dtype} and {c.dtype}")
    if X.ndim != 2:
        raise OcdlError(f"{source}: features must be a 2-D array (samples × features), got shape {X.shape}")
    if c.ndim != 1 or c.shape[0] != X.shape[0]:
        raise OcdlError(f"{source}: {X.shape[0]} samples but labels of shape {c.shape}")
    if X.shape[0] < 1:
        raise OcdlError(f"{source}: no samples")
    if X.shape[1] < 1:
        raise OcdlError(f"{source}: no features (need at least one column besides the label)")
    X = X.astype(np.float64)
    c = c.astype(np.float64)
    if not np.all(np.isfinite(X)):
        raise OcdlError(f"{source}: features contain NaN or inf")
    bad = ~((c >= 0) & (c == np.round(c)) & np.isfinite(c))
    if np.any(bad):
        raise OcdlError(f"{source}: labels must be the class numbers 0, 1, …, K−1, found {float(c[bad][0])!r}")
    return Dataset(np.ascontiguousarray(X), c)


_NPZ_KEYS = (("X", "c"), ("x", "y"), ("X", "y"), ("features", "labels"))


def load_file(path: str | Path) -> Dataset:
    """Load features and labels 0 … K−1 from a user's file (the format of ``docs/commands/train.md``):

    ``.npz``  arrays ``X`` (n × dim) and ``c`` (n,), or ``x``/``y``, ``X``/``y``,
              ``features``/``labels``; no pickled objects
    ``.csv``  comma-separated numbers, one sample a line, the last column the label (0 … K−1); one
              header line (the first, not numeric) is skipped; blank lines are ignored

    Every fault (missing, unreadable or binary file, bad rows, NaN, labels other than 0 … K−1) raises
    :class:`OcdlError` naming the file."""
    p = Path(path)
    where = f"data file {str(p)!r}"
    if p.is_dir():
        raise OcdlError(f"{where} is a directory")
    if not p.is_file():
        raise OcdlError(f"{where} does not exist")
    if p.suffix.lower() == ".npz":
        try:
            z = np.load(p, allow_pickle=False)
        except Exception as e:  # numpy and zipfile raise several types for a corrupt file
            raise OcdlError(f"{where}: cannot read: {_first_line(e)}") from None
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise OcdlError(f"{where}: not an .npz archive (a single .npy array?); save it with numpy.savez(X=…, c=…)")
        with z:
            keys = next(((kx, kc) for kx, kc in _NPZ_KEYS if kx in z.files and kc in z.files), None)
            if keys is None:
                raise OcdlError(f"{where}: needs arrays 'X' and 'c' (found {', '.join(z.files) or 'none'})")
            try:
                X, c = z[keys[0]], z[keys[1]]
            except Exception as e:  # a member that is not an .npy array, a pickled object, a bad CRC
                raise OcdlError(f"{where}: cannot read arrays {keys[0]!r}, {keys[1]!r}: {_first_line(e)}") from None
        return _validate(X, c, where)
    if p.suffix.lower() == ".csv":
        text = read_text(p, where)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            raise OcdlError(f"{where}: empty")
        rows = []
        for i, ln in enumerate(lines):
            parts = [x.strip() for x in ln.split(",")]
            try:
                rows.append([float(x) for x in parts])
            except ValueError:
                if i == 0:
                    continue  # header
                raise OcdlError(f"{where}: line {i + 1} is not numeric: {ln[:60]!r}") from None
        if not rows or len({len(r) for r in rows}) != 1 or len(rows[0]) < 2:
            raise OcdlError(f"{where}: need rows of equal length with ≥ 1 feature and a label")
        A = np.array(rows)
        return _validate(A[:, :-1], A[:, -1], where)
    raise OcdlError(f"{where}: unsupported format {p.suffix!r} (use .csv or .npz)")


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200] or type(e).__name__


def make(spec) -> tuple[Dataset, Dataset]:
    """Train and test sets for a :class:`ocdl.problem.DataSpec`: independent seeded draws of a
    generated data set; the images ``digits`` and ``mnist`` split and subset as
    :mod:`ocdl.images` says; a user's file or in-memory arrays."""
    if spec.name in ("digits", "mnist"):
        from ocdl import images

        return images.make(spec)
    if spec.name == "arrays":
        return spec.train, spec.test if spec.test is not None else spec.train
    if spec.name == "file":
        train = load_file(spec.path)
        test = load_file(spec.test_path) if spec.test_path else train
        if test.dim != train.dim:
            raise OcdlError(f"data: train has {train.dim} features but test has {test.dim}")
        return train, test
    ss = np.random.SeedSequence(spec.seed)
    r_train, r_test = (np.random.default_rng(s) for s in ss.spawn(2))
    train = generate(spec.name, spec.n, spec.noise, r_train)
    test = generate(spec.name, spec.n_test or spec.n, spec.noise, r_test)
    return train, test


def lift(X: np.ndarray, d: int) -> np.ndarray:
    """Zero-pad points from their dimension to the network width d (:func:`ocdl.lifting.pad`)."""
    from ocdl.lifting import pad

    return pad(X, d)


def from_arrays(X, c, source: str = "data") -> Dataset:
    """A :class:`Dataset` from a user's arrays, checked as a data file is: X (n × dim) finite
    numbers, c (n,) labels 0 … K−1."""
    try:
        X, c = np.array(X), np.array(c)
    except (TypeError, ValueError) as e:
        raise OcdlError(f"{source}: not arrays: {e}") from None
    return _validate(X, c, source)
