"""The image data sets (ocdl.images) and the IDX reader (ocdl.idx).

digits is scikit-learn's bundled file; MNIST is tested on small IDX files written here byte by byte
(struct, not ocdl's code), raw and gzip-compressed. Nothing is downloaded."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ocdl import data, idx, images, problem as P
from ocdl.errors import OcdlError

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# ---------------------------------------------------------------------- writing IDX files by hand
def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file: 0x00 0x00 code ndim, the sizes (>u4), the data big-endian."""
    dt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + np.asarray(arr).astype(dt).tobytes()


def put(path: Path, payload: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(payload, mtime=0) if gz else payload)
    return path


def fake_mnist(rng, n, size=(4, 5), classes=10):
    """n images (0 … 255) and labels cycling through the classes, shuffled."""
    lab = rng.permutation(np.arange(n) % classes).astype(np.uint8)
    img = rng.integers(0, 256, size=(n, *size)).astype(np.uint8)
    return img, lab


def write_mnist(folder: Path, rng, n_train=60, n_test=30, gz=False, size=(4, 5), test_size=None, names=NAMES):
    folder.mkdir(parents=True, exist_ok=True)
    tr = fake_mnist(rng, n_train, size)
    te = fake_mnist(rng, n_test, test_size or size)
    sfx = ".gz" if gz else ""
    for name, arr in zip(names, (tr[0], tr[1], te[0], te[1])):
        put(folder / (name + sfx), idx_bytes(arr), gz)
    return tr, te


# ---------------------------------------------------------------------- digits
@pytest.fixture(scope="module")
def raw_digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X, y


def test_digits_shapes_scaling_and_classes(raw_digits):
    train, test = data.make(P.DataSpec(name="digits"))
    assert train.X.shape == (1352, 64) and test.X.shape == (445, 64)
    assert train.X.dtype == np.float64 and train.c.dtype == np.float64
    assert train.n + test.n == 1797
    assert train.classes == 10 and test.classes == 10
    assert set(np.unique(train.c)) == set(range(10)) == set(np.unique(test.c))
    assert train.X.min() == 0.0 and train.X.max() == 1.0
    # the two sets together are sklearn's images (divided by 16) with their labels, each once
    X, y = raw_digits
    both = np.concatenate([train.X, test.X]) * 16.0
    lab = np.concatenate([train.c, test.c])
    order = np.lexsort(np.column_stack([both, lab]).T)
    ref = np.lexsort(np.column_stack([X, y]).T)
    np.testing.assert_array_equal(both[order], X[ref])
    np.testing.assert_array_equal(lab[order], y[ref])


def test_digits_split_is_a_quarter_of_each_class(raw_digits):
    _, y = raw_digits
    train, test = images.digits(seed=3)
    n_c = np.bincount(y, minlength=10)
    np.testing.assert_array_equal(np.bincount(test.c.astype(int), minlength=10), n_c // 4)
    np.testing.assert_array_equal(np.bincount(train.c.astype(int), minlength=10), n_c - n_c // 4)


def test_digits_seeded():
    a = images.digits(seed=1)
    b = images.digits(seed=1)
    c = images.digits(seed=2)
    assert a[0] == b[0] and a[1] == b[1]
    assert not (a[1] == c[1])
    # the seed reaches it from the DataSpec
    assert data.make(P.DataSpec(name="digits", seed=2))[1] == c[1]


def test_digits_n_per_class_nested_and_test_unchanged():
    full_tr, full_te = images.digits(seed=0)
    tr5, te5 = images.digits(seed=0, n_per_class=5)
    tr10, te10 = images.digits(seed=0, n_per_class=10)
    assert tr5.n == 50 and tr10.n == 100
    np.testing.assert_array_equal(np.bincount(tr5.c.astype(int)), [5] * 10)
    assert te5 == full_te and te10 == full_te

    def keyset(d):
        return {(tuple(x), c) for x, c in zip(d.X, d.c)}

    assert keyset(tr5) <= keyset(tr10) <= keyset(full_tr)
    assert not keyset(tr10) & keyset(full_te)


def test_digits_n_test_stratified_subset():
    _, te = images.digits(seed=0)
    _, sub = images.digits(seed=0, n_test=100)
    assert sub.n == 100
    np.testing.assert_array_equal(np.bincount(sub.c.astype(int)), [10] * 10)
    full = {(tuple(x), c) for x, c in zip(te.X, te.c)}
    assert all((tuple(x), c) in full for x, c in zip(sub.X, sub.c))
    _, sub7 = images.digits(seed=0, n_test=7)  # largest remainder: seven classes get one
    assert sub7.n == 7 and np.bincount(sub7.c.astype(int), minlength=10).max() == 1


@pytest.mark.parametrize("kw, msg", [
    (dict(n_per_class=132), "class 8 has 131"),
    (dict(n_per_class=0), "must be ≥ 1"),
    (dict(n_test=446), "446 test images asked, but digits holds out 445"),
    (dict(n_test=0), "must be ≥ 1"),
])
def test_digits_refusals(kw, msg):
    with pytest.raises(OcdlError, match=msg):
        images.digits(**kw)


@pytest.mark.parametrize("spec, msg", [
    (dict(name="digits", noise=0.1), "data.noise: applies to the generated"),
    (dict(name="digits", path="x"), "data.path: digits is bundled"),
    (dict(name="digits", test_path="x.csv"), "data.test_path: not used by digits"),
])
def test_digits_spec_refusals(spec, msg):
    with pytest.raises(OcdlError, match=msg):
        data.make(P.DataSpec(**spec))


def test_problem_validate_image_lines():
    with pytest.raises(OcdlError, match="data.path: required when data.name = 'mnist'"):
        P.Problem(data=P.DataSpec(name="mnist"))
    with pytest.raises(OcdlError, match="n_per_class: applies to the image data sets"):
        P.Problem(data=P.DataSpec(name="spiral", n_per_class=5))
    P.Problem(data=P.DataSpec(name="digits", n_per_class=5))  # accepted


# ---------------------------------------------------------------------- the IDX reader
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("code, dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32),
                                         (0x0D, np.float32), (0x0E, np.float64)])
def test_idx_read_roundtrip(tmp_path, gz, code, dtype):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((3, 2, 5)) * 100).astype(dtype) if code >= 0x0B else rng.integers(
        0 if code == 0x08 else -128, 128, size=(3, 2, 5)).astype(dtype)
    p = put(tmp_path / "f", idx_bytes(a, code), gz)
    b = idx.read(p)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative and b.shape == (3, 2, 5)
    np.testing.assert_array_equal(a, b)


def test_idx_read_is_big_endian(tmp_path):
    p = put(tmp_path / "f", bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 2) + b"\x01\x02\xff\xfe")
    np.testing.assert_array_equal(idx.read(p), [258, -2])


@pytest.mark.parametrize("gz", [False, True])
def test_idx_faults(tmp_path, gz):
    good = idx_bytes(np.zeros((4, 3, 3), np.uint8))
    cases = {
        "short": (good[:3], "truncated: 3 bytes"),
        "header": (good[:9], "truncated: the header ends after 9 of 16 bytes"),
        "data": (good[:-1], "truncated: the header promises 36 bytes of data \\(shape 4 × 3 × 3\\), the file holds 35"),
        "extra": (good + b"\0", "more bytes than the header's shape 4 × 3 × 3"),
        "magic": (b"\x01\x02" + good[2:], "not an IDX file: magic number 0x0102"),
        "type": (bytes([0, 0, 0x07, 3]) + good[4:], "not an IDX file: magic number 0x00000703"),
        "ndim0": (bytes([0, 0, 0x08, 0]), "not an IDX file"),
    }
    for name, (payload, msg) in cases.items():
        p = put(tmp_path / name, payload, gz)
        with pytest.raises(OcdlError, match=msg) as e:
            idx.read(p)
        assert str(p) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(OcdlError, match="wrong magic number 0x00000803 .*expected 0x00000801"):
        idx.read(put(tmp_path / "ok", good, gz), code=0x08, ndim=1)


def test_idx_huge_claim_is_refused_without_reading(tmp_path):
    p = put(tmp_path / "f", bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 60000, 60000, 60000) + b"\0" * 10)
    with pytest.raises(OcdlError, match="truncated: the header promises 216000000000000 bytes"):
        idx.read(p)


def test_idx_corrupt_gzip(tmp_path):
    blob = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8).reshape(2, 10, 10)), mtime=0)
    p = put(tmp_path / "cut.gz", blob[: len(blob) // 2])
    with pytest.raises(OcdlError, match="truncated or corrupt gzip data") as e:
        idx.read(p)
    assert str(p) in str(e.value)
    bad = bytearray(blob)
    bad[20] ^= 0xFF
    with pytest.raises(OcdlError, match=f"{p.parent / 'bad.gz'}.*(corrupt gzip|truncated|IDX)"):
        idx.read(put(tmp_path / "bad.gz", bytes(bad)))


def test_idx_missing_and_directory(tmp_path):
    with pytest.raises(OcdlError, match="does not exist"):
        idx.read(tmp_path / "none")
    with pytest.raises(OcdlError, match="is a directory"):
        idx.read(tmp_path)


# ---------------------------------------------------------------------- mnist from IDX files
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_the_four_files(tmp_path, gz):
    rng = np.random.default_rng(5)
    (img_tr, lab_tr), (img_te, lab_te) = write_mnist(tmp_path / "m", rng, gz=gz)
    train, test = data.make(P.DataSpec(name="mnist", path=str(tmp_path / "m")))
    assert train.X.shape == (60, 20) and test.X.shape == (30, 20)
    assert train.X.dtype == np.float64 and train.c.dtype == np.float64
    np.testing.assert_array_equal(train.X, img_tr.reshape(60, 20) / 255.0)  # row-major, file order
    np.testing.assert_array_equal(train.c, lab_tr)
    np.testing.assert_array_equal(test.X, img_te.reshape(30, 20) / 255.0)
    np.testing.assert_array_equal(test.c, lab_te)
    assert train.X.max() <= 1.0 and train.X.min() >= 0.0


def test_mnist_dotted_names_and_mixed_compression(tmp_path):
    rng = np.random.default_rng(6)
    names = ("train-images.idx3-ubyte", "train-labels.idx1-ubyte", "t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte")
    tr, _ = write_mnist(tmp_path / "m", rng, names=names)
    raw = (tmp_path / "m" / names[1]).read_bytes()
    (tmp_path / "m" / names[1]).unlink()
    put(tmp_path / "m" / (names[1] + ".gz"), raw, gz=True)
    train, _ = images.mnist(tmp_path / "m")
    np.testing.assert_array_equal(train.c, tr[1])


def test_mnist_n_per_class_first_in_file_order(tmp_path):
    rng = np.random.default_rng(7)
    (img, lab), _ = write_mnist(tmp_path / "m", rng, n_train=80)
    train, test = images.mnist(tmp_path / "m", n_per_class=3)
    keep = np.sort(np.concatenate([np.flatnonzero(lab == k)[:3] for k in range(10)]))
    np.testing.assert_array_equal(train.X, img[keep].reshape(len(keep), -1) / 255.0)
    np.testing.assert_array_equal(train.c, lab[keep])
    assert test.n == 30  # the whole t10k set
    # the seed does not change the training subset (file order), only the test subset's draw
    assert images.mnist(tmp_path / "m", seed=9, n_per_class=3)[0] == train
    with pytest.raises(OcdlError, match="9 images per class asked, but class .* has 8"):
        images.mnist(tmp_path / "m", n_per_class=9)


def test_mnist_n_test_seeded_stratified(tmp_path):
    rng = np.random.default_rng(8)
    _, (img_te, lab_te) = write_mnist(tmp_path / "m", rng, n_test=50)
    _, a = images.mnist(tmp_path / "m", seed=0, n_test=20)
    _, b = images.mnist(tmp_path / "m", seed=0, n_test=20)
    _, c = images.mnist(tmp_path / "m", seed=1, n_test=20)
    assert a == b and not (a == c)
    np.testing.assert_array_equal(np.bincount(a.c.astype(int)), [2] * 10)
    rows = [tuple(r) for r in img_te.reshape(50, -1) / 255.0]
    pos = [rows.index(tuple(r)) for r in a.X]
    assert pos == sorted(pos)  # in file order
    with pytest.raises(OcdlError, match="51 test images asked, but .*t10k-labels-idx1-ubyte' holds 50"):
        images.mnist(tmp_path / "m", n_test=51)


def test_mnist_missing_files_one_line_naming_the_four(tmp_path):
    rng = np.random.default_rng(9)
    write_mnist(tmp_path / "m", rng)
    (tmp_path / "m" / NAMES[2]).unlink()
    for folder, what in ((tmp_path / "m", "no t10k-images-idx3-ubyte"), (tmp_path / "absent", "does not exist"),
                         (tmp_path / "m" / NAMES[0], "is not a folder")):
        with pytest.raises(OcdlError) as e:
            images.mnist(folder)
        msg = str(e.value)
        assert "\n" not in msg and str(folder) in msg and what in msg
        assert all(n in msg for n in NAMES)


def mnist_error(folder) -> str:
    with pytest.raises(OcdlError) as e:
        images.mnist(folder)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_malformed(tmp_path, gz):
    rng = np.random.default_rng(10)
    sfx = ".gz" if gz else ""

    def fresh(name, **kw):
        f = tmp_path / name
        write_mnist(f, rng, gz=gz, **kw)
        return f

    # wrong magic: the labels file where the images belong
    f = fresh("swap")
    lab = (f / (NAMES[1] + sfx)).read_bytes()
    (f / (NAMES[0] + sfx)).write_bytes(lab)
    m = mnist_error(f)
    assert NAMES[0] in m and "wrong magic number 0x00000801" in m and "expected 0x00000803" in m
    # truncated images
    f = fresh("cut")
    raw = idx_bytes(fake_mnist(rng, 60)[0])
    put(f / (NAMES[0] + sfx), raw[:-7], gz)
    m = mnist_error(f)
    assert NAMES[0] in m and "truncated" in m
    # mismatched counts
    f = fresh("count")
    put(f / (NAMES[3] + sfx), idx_bytes(np.zeros(29, np.uint8)), gz)
    m = mnist_error(f)
    assert "30 images but 29 labels" in m and NAMES[2] in m and NAMES[3] in m
    # images of mixed sizes between train and test
    m = mnist_error(fresh("sizes", test_size=(5, 5)))
    assert "mixed sizes" in m and "4 × 5" in m and "5 × 5" in m
    # labels out of range
    f = fresh("label")
    bad = np.arange(60, dtype=np.uint8) % 10
    bad[17] = 10
    put(f / (NAMES[1] + sfx), idx_bytes(bad), gz)
    m = mnist_error(f)
    assert "label 10 (item 17) is outside MNIST's classes 0 … 9" in m and NAMES[1] in m
    # float pixels (NaN possible) are not MNIST's bytes: refused by their magic number
    f = fresh("float")
    im = fake_mnist(rng, 60)[0].astype(np.float32)
    im[0, 0, 0] = np.nan
    put(f / (NAMES[0] + sfx), idx_bytes(im, 0x0D), gz)
    m = mnist_error(f)
    assert "wrong magic number 0x00000D03 (float32, 3-D)" in m
    # no images at all
    f = fresh("empty")
    put(f / (NAMES[0] + sfx), idx_bytes(np.zeros((0, 4, 5), np.uint8)), gz)
    put(f / (NAMES[1] + sfx), idx_bytes(np.zeros(0, np.uint8)), gz)
    assert "holds no images" in mnist_error(f)


# ---------------------------------------------------------------------- command line
def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ocdl.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def test_cli_mnist_bad_folder_one_line_nothing_written(tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--data", "mnist", "--data-path", tmp_path / "nothing", "--layers", "2", "--iterations", "1",
            "--quiet", "--out", out)
    assert r.returncode == 2 and not out.exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ocdl: error: MNIST folder") and all(n in lines[0] for n in NAMES)
    r = cli("train", "--data", "mnist", "--layers", "2", "--iterations", "1", "--quiet", "--out", out)
    assert r.returncode == 2 and "data.path: required" in r.stderr and not out.exists()
    r = cli("train", "--data", "digits", "--data-path", tmp_path, "--quiet", "--out", out)
    assert r.returncode == 2 and "--data-path goes with --data mnist" in r.stderr and not out.exists()
    r = cli("train", "--data", "spiral", "--n-per-class", "5", "--quiet", "--out", out)
    assert r.returncode == 2 and "n_per_class: applies to the image data sets" in r.stderr and not out.exists()


def test_cli_mnist_relative_path_recorded_absolute(tmp_path):
    rng = np.random.default_rng(11)
    write_mnist(tmp_path / "m", rng, n_train=40, n_test=20)
    from ocdl.commands import train as train_cmd
    import argparse

    ap = argparse.ArgumentParser()
    train_cmd.add_problem_arguments(ap)
    train_cmd.add_solver_arguments(ap)
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        prob = train_cmd.problem_from_args(ap.parse_args(["--data", "mnist", "--data-path", "m", "--n-per-class", "2"]))
    finally:
        os.chdir(cwd)
    assert prob.data.path == str(tmp_path / "m") and prob.data.n_per_class == 2
    assert data.make(prob.data)[0].n == 20


def test_problem_file_mnist_path_relative_to_the_file(tmp_path):
    from ocdl import catalogue

    rng = np.random.default_rng(12)
    write_mnist(tmp_path / "files" / "mnist", rng, n_train=40, n_test=20)
    f = tmp_path / "files" / "p.toml"
    f.write_text('[data]\nname = "mnist"\npath = "mnist"\nn_per_class = 3\n\n[network]\nlayers = 2\n')
    prob = catalogue.load(f)
    assert Path(prob.data.path) == tmp_path / "files" / "mnist"
    train, test = data.make(prob.data)
    assert train.n == 30 and test.n == 20


def test_cli_train_digits_end_to_end(tmp_path):
    import json

    out = tmp_path / "run"
    r = cli("train", "--data", "digits", "--n-per-class", "5", "--layers", "2", "--iterations", "3", "--quiet",
            "--out", out)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["iterations"] == 3
    assert np.shape(np.load(out / "params.npz")["W"]) == (10, 64)
    from ocdl import rundir

    back, _, _ = rundir.load(out)
    assert back.data.name == "digits" and back.data.n_per_class == 5


def test_train_digits_api(tmp_path):
    """Training on digits (K = 10, d = 64) through the torch engine, and the run directory reruns."""
    import json

    from ocdl import rundir, training

    prob = P.Problem(data=P.DataSpec(name="digits", n_per_class=5),
                     network=P.NetworkSpec(layers=2), solver=P.SolverSpec(iterations=3))
    out = tmp_path / "run"
    res, metrics = training.train(prob, out=out, quiet=True, figures=False)
    assert res.success
    back, _, _ = rundir.load(out)
    assert back.data.name == "digits" and back.data.n_per_class == 5
    assert data.make(back.data) == data.make(prob.data)
    assert np.shape(np.load(out / "params.npz")["W"]) == (10, 64)
    assert json.loads((out / "metrics.json").read_text())["iterations"] == 3
