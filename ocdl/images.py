"""The image data sets: ``digits`` (bundled with scikit-learn, no download) and ``mnist`` (the
user's IDX files). Both give (train, test) :class:`~ocdl.data.Dataset` s of flattened images,
float64, pixels scaled to [0, 1], labels the digits 0 … 9.

digits
    The 1797 8×8 handwritten digits that scikit-learn ships inside its wheel
    (``sklearn.datasets.load_digits``; pixels 0 … 16, divided by 16), 64 features. Split per class,
    seeded by ``DataSpec.seed``: each class's images are permuted by
    ``numpy.random.default_rng(seed)`` (classes 0 … 9 in turn) and the first ⌊n_c/4⌋ of them are the
    test set (a quarter: 445 images, 43–45 a class), the rest the training set (1352, 131–138 a
    class). A quarter keeps about 45 test images in each class (a per-class accuracy to about 2 %)
    and leaves three quarters for training; it is also scikit-learn's default test fraction.
    ``n_per_class = m`` keeps the first m training images of each class in that seeded order, so the
    subsets of one seed are nested (m = 5 ⊂ m = 10) and the test set does not change with m.
mnist
    The four IDX files of MNIST in the folder ``DataSpec.path`` (see :data:`MNIST_FILES`; raw or
    gzip-compressed, also the dotted names such as ``train-images.idx3-ubyte``): images of unsigned
    bytes (0 … 255, divided by 255), 28×28 in MNIST (any size the files agree on is read), labels
    0 … 9. Training set: the train files; ``n_per_class = m`` keeps the first m images of each class
    in file order ("MNIST100": m = 100, 1000 images). File order, not a seeded draw: the training
    file has no known order by writer or difficulty, and the first m a class are one fixed set that
    anyone can take from the same files without ocdl. Test set: the t10k files.

Both: ``n_test = t`` keeps a stratified subset of t images of the held-out set (the class
proportions of the held-out set, largest-remainder rounding), drawn by
``numpy.random.default_rng(seed)``, in file order; seeded and not the first t, because the first
5000 images of MNIST's t10k file are the cleaner half (NIST's SD-3 writers). ``n`` and ``noise`` of
the DataSpec belong to the generated data sets: ``n`` is not used here, a ``noise`` is refused.
Images are flattened row by row (pixel (i, j) is feature i·cols + j).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ocdl import idx
from ocdl.errors import OcdlError

__all__ = ["NAMES", "SHAPES", "MNIST_FILES", "TEST_FRACTION", "make", "digits", "mnist", "find_mnist_files"]

NAMES = ("digits", "mnist")
#: The image shape (rows, cols) of each data set (MNIST: that of its standard files).
SHAPES = {"digits": (8, 8), "mnist": (28, 28)}
#: The part of each digits class held out as the test set (⌊n_c · TEST_FRACTION⌋ images).
TEST_FRACTION = 0.25
#: The four MNIST files, by role.
MNIST_FILES = {
    "train images": "train-images-idx3-ubyte",
    "train labels": "train-labels-idx1-ubyte",
    "test images": "t10k-images-idx3-ubyte",
    "test labels": "t10k-labels-idx1-ubyte",
}
MNIST_CLASSES = 10
_IMAGES, _LABELS = (0x08, 3), (0x08, 1)  # IDX type (unsigned byte) and dimensions: magic 0x803, 0x801


def make(spec):
    """(train, test) of a :class:`~ocdl.problem.DataSpec` named ``digits`` or ``mnist``."""
    if spec.name not in NAMES:
        raise OcdlError(f"data.name: {spec.name!r} is not an image data set ({', '.join(NAMES)})")
    if spec.noise is not None:
        raise OcdlError(f"data.noise: applies to the generated data sets, not to {spec.name}'s images")
    if spec.test_path:
        raise OcdlError(f"data.test_path: not used by {spec.name} (the test set is "
                        f"{'held out of the bundled images' if spec.name == 'digits' else 'the t10k files of data.path'})")
    if spec.name == "digits":
        if spec.path:
            raise OcdlError("data.path: digits is bundled with scikit-learn and reads no file "
                            "(data.path names the folder of mnist's IDX files)")
        return digits(spec.seed, spec.n_per_class, spec.n_test)
    if not spec.path:
        raise OcdlError("data.path: required when data.name = 'mnist' (the folder of its four IDX files)")
    return mnist(spec.path, spec.seed, spec.n_per_class, spec.n_test)


# ---------------------------------------------------------------------- digits
@lru_cache(maxsize=1)
def _digits_raw():
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # a dependency of ocdl; missing only in a broken install
        raise OcdlError("data set digits: needs scikit-learn (pip install scikit-learn), which ships it") from None
    X, y = load_digits(return_X_y=True)
    X = np.asarray(X, dtype=np.float64)
    X.setflags(write=False)
    y = np.asarray(y, dtype=np.int64)
    y.setflags(write=False)
    return X, y


def digits(seed: int = 0, n_per_class: int | None = None, n_test: int | None = None):
    """(train, test) of scikit-learn's 8×8 digits: the seeded per-class split of the module's
    docstring, pixels / 16, features (n, 64) float64, labels 0 … 9."""
    from ocdl.data import Dataset

    X, y = _digits_raw()
    rng = np.random.default_rng(seed)
    train, test = [], []
    for k in range(MNIST_CLASSES):
        ix = rng.permutation(np.flatnonzero(y == k))
        n_te = int(len(ix) * TEST_FRACTION)
        test.append(ix[:n_te])
        train.append(ix[n_te:])
    train = _per_class(train, n_per_class, "digits' training part")
    test_ix = _stratified(test, n_test, "digits holds out", "(a quarter of each class)")
    tr, te = np.sort(np.concatenate(train)), np.sort(test_ix)
    return (Dataset(np.ascontiguousarray(X[tr] / 16.0), y[tr].astype(np.float64)),
            Dataset(np.ascontiguousarray(X[te] / 16.0), y[te].astype(np.float64)))


def _per_class(groups, n_per_class, where):
    """The first ``n_per_class`` indices of each group (class k = groups[k])."""
    if n_per_class is None:
        return groups
    if n_per_class < 1:
        raise OcdlError(f"data.n_per_class: must be ≥ 1, got {n_per_class}")
    short = [(k, len(g)) for k, g in enumerate(groups) if len(g) < n_per_class]
    if short:
        k, have = min(short, key=lambda s: s[1])
        raise OcdlError(f"data.n_per_class: {n_per_class} images per class asked, but class {k} has {have} in "
                        f"{where} (at most {min(len(g) for g in groups)})")
    return [g[:n_per_class] for g in groups]


def _stratified(groups, n, what, why=""):
    """``n`` indices taken from the groups (each already in its seeded order) in proportion to
    their sizes, largest remainder first (ties: the lower class); all when ``n`` is None."""
    total = sum(len(g) for g in groups)
    if n is None:
        return np.concatenate(groups)
    if n < 1:
        raise OcdlError(f"data.n_test: must be ≥ 1, got {n}")
    if n > total:
        raise OcdlError(f"data.n_test: {n} test images asked, but {what} {total}{' ' + why if why else ''}")
    sizes = np.array([len(g) for g in groups])
    q = n * sizes / total
    take = np.floor(q).astype(int)
    order = sorted(range(len(groups)), key=lambda k: (-(q[k] - take[k]), k))
    for k in order[: n - int(take.sum())]:
        take[k] += 1
    return np.concatenate([g[:t] for g, t in zip(groups, take)])


# ---------------------------------------------------------------------- mnist
def _variants(name: str):
    dotted = name.replace("-idx", ".idx")  # train-images.idx3-ubyte, as some copies name them
    return (name, name + ".gz", dotted, dotted + ".gz")


def _expected() -> str:
    return ", ".join(MNIST_FILES.values()) + " (raw or .gz)"


def find_mnist_files(folder: str | Path) -> dict[str, Path]:
    """The paths of the four MNIST files in ``folder`` by role (:data:`MNIST_FILES`); for each the
    first of NAME, NAME.gz, the dotted name (``train-images.idx3-ubyte``) and its .gz that exists."""
    f = Path(folder)
    where = f"MNIST folder {str(f)!r}"
    if not f.exists():
        raise OcdlError(f"{where} does not exist; it should hold the four IDX files {_expected()}, "
                        "downloaded by you (ocdl downloads nothing)")
    if not f.is_dir():
        raise OcdlError(f"{where} is not a folder; data.path names the folder of the four IDX files {_expected()}")
    found, missing = {}, []
    for role, name in MNIST_FILES.items():
        p = next((f / v for v in _variants(name) if (f / v).is_file()), None)
        if p is None:
            missing.append(name)
        else:
            found[role] = p
    if missing:
        raise OcdlError(f"{where}: no {', '.join(missing)}; it should hold the four IDX files {_expected()}, "
                        "downloaded by you (ocdl downloads nothing)")
    return found


def _read_pair(files, part):
    img = idx.read(files[f"{part} images"], code=_IMAGES[0], ndim=_IMAGES[1], what="MNIST file")
    lab = idx.read(files[f"{part} labels"], code=_LABELS[0], ndim=_LABELS[1], what="MNIST file")
    pi, pl = str(files[f"{part} images"]), str(files[f"{part} labels"])
    if img.shape[0] == 0:
        raise OcdlError(f"MNIST file {pi!r}: holds no images")
    if min(img.shape[1:]) == 0:
        raise OcdlError(f"MNIST file {pi!r}: images of size {img.shape[1]} × {img.shape[2]}")
    if img.shape[0] != lab.shape[0]:
        raise OcdlError(f"MNIST files {pi!r} and {pl!r}: {img.shape[0]} images but {lab.shape[0]} labels")
    bad = np.flatnonzero(lab >= MNIST_CLASSES)
    if bad.size:
        raise OcdlError(f"MNIST file {pl!r}: label {int(lab[bad[0]])} (item {int(bad[0])}) is outside MNIST's "
                        f"classes 0 … {MNIST_CLASSES - 1}")
    return img, lab.astype(np.int64)


def mnist(path: str | Path, seed: int = 0, n_per_class: int | None = None, n_test: int | None = None):
    """(train, test) of the MNIST IDX files in the folder ``path``: the subsets of the module's
    docstring, pixels / 255, features (n, rows·cols) float64, labels 0 … 9."""
    from ocdl.data import Dataset

    files = find_mnist_files(path)
    img_tr, lab_tr = _read_pair(files, "train")
    img_te, lab_te = _read_pair(files, "test")
    if img_tr.shape[1:] != img_te.shape[1:]:
        raise OcdlError(f"MNIST folder {str(path)!r}: images of mixed sizes: training "
                        f"{img_tr.shape[1]} × {img_tr.shape[2]} ({str(files['train images'])!r}), test "
                        f"{img_te.shape[1]} × {img_te.shape[2]} ({str(files['test images'])!r})")
    groups = [np.flatnonzero(lab_tr == k) for k in range(MNIST_CLASSES)]
    tr = np.sort(np.concatenate(_per_class(groups, n_per_class, f"{str(files['train labels'])!r}")))
    if n_test is None:
        te = np.arange(len(lab_te))
    else:
        rng = np.random.default_rng(seed)
        tgroups = [rng.permutation(np.flatnonzero(lab_te == k)) for k in range(MNIST_CLASSES)]
        te = np.sort(_stratified(tgroups, n_test, f"{str(files['test labels'])!r} holds"))

    def flat(img, ix):
        return np.ascontiguousarray(img[ix].reshape(len(ix), -1), dtype=np.float64) / 255.0

    return (Dataset(flat(img_tr, tr), lab_tr[tr].astype(np.float64)),
            Dataset(flat(img_te, te), lab_te[te].astype(np.float64)))
