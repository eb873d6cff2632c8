"""Property-based tests of the input validators (issue 19): random TOML/JSON/CSV/NPZ bytes, random
problem tables and random option values never produce a traceback (only :class:`OcdlError`, or
success) and, given to the command line, never a partial write (``--out`` absent after exit 2).

Deterministic: every test runs the same derandomised examples (``derandomize=True``); no deadline
(the machine is shared)."""

import contextlib
import io
import math
import shutil
import string
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from ocdl import catalogue, data, problem as problem_mod, rundir, tableau
from ocdl.cli import main
from ocdl.engine import base as engines
from ocdl.errors import OcdlError

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
FEW = settings(FUZZ, max_examples=40)

# ---------------------------------------------------------------------------------- strategies
numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, -1, 0.5, 1e-300, 1e300, 2**63]))
short_text = st.text(alphabet=string.printable + "αβσ½é\x00", max_size=12)
fraction_text = st.one_of(short_text, st.builds(lambda a, b: f"{a}/{b}", st.integers(-9, 9), st.integers(-9, 9)),
                          st.sampled_from(["1/3", "1e400", "1e99999999", "nan", "inf", " 1/2 ", "0x1"]))
scalars = st.one_of(st.none(), st.booleans(), numbers, short_text)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(short_text, inner, max_size=4)),
                           max_leaves=12)
# TOML has no null; its values are these
toml_scalars = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), short_text)
toml_values = st.recursive(toml_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(short_text, inner, max_size=3)),
                           max_leaves=10)
entry = st.one_of(numbers, fraction_text, st.booleans(), st.none(), st.lists(numbers, max_size=2))
tableau_tables_any = st.fixed_dictionaries(
    {"A": st.one_of(st.lists(st.lists(entry, max_size=3), max_size=3), entry)},
    optional={"b": st.one_of(st.lists(entry, max_size=3), entry), "c": st.one_of(st.lists(entry, max_size=3), entry),
              "name": st.one_of(short_text, numbers), "extra": scalars})


def _tableaux():
    return st.one_of(tableau_tables_any, shaped_tableaux())
@st.composite
def shaped_tableaux(draw):
    """Tables of the right shape (s×s A, b and c of length s) with random entries: they reach the
    order conditions and the partner (b_i = 0, huge or tiny entries, fractions)."""
    n = draw(st.integers(1, 4))
    cell = st.one_of(st.integers(-3, 3), st.sampled_from(["1/2", "1/3", "-2/3", "1/6", 0.5, 0.25, 1e300, 1e-300]),
                     st.floats(-2, 2, allow_nan=False))
    table = {"A": draw(st.lists(st.lists(cell, min_size=n, max_size=n), min_size=n, max_size=n)),
             "b": draw(st.lists(cell, min_size=n, max_size=n))}
    if draw(st.booleans()):
        table["c"] = draw(st.lists(cell, min_size=n, max_size=n))
    return table


junk_bytes = st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode),
                       st.sampled_from([b"", b"\xff\xfe", b"PK\x03\x04", b"\x93NUMPY", b"[" * 2000, b"A = [[0]]\nb = 1"]))


def _key_value(section_types):
    """(key, value) pairs of a problem section: known keys (values of the right type or not) and
    unknown ones."""
    known = st.sampled_from(sorted(section_types))
    return st.dictionaries(st.one_of(known, short_text), toml_values, max_size=4)


#: values close to the valid ones, per key: they reach the combination checks of validate()
PLAUSIBLE = {
    "data": {"name": st.sampled_from(["spiral", "donut1d", "squares", "file", "arrays", "nope"]),
             "n": st.sampled_from([-1, 0, 1, 2, 40, 10**12]), "n_test": st.sampled_from([0, 1, 5]),
             "noise": st.sampled_from([0.0, -1.0, float("nan"), 0.1]), "path": st.sampled_from(["x.csv", "", "/"])},
    "network": {"family": st.sampled_from(list(problem_mod.FAMILIES) + ["nope"]),
                "tableau": st.one_of(st.sampled_from(["rk4", "euler", "nope", "x.toml", "t.json"]), shaped_tableaux()),
                "layers": st.sampled_from([-1, 0, 1, 3, 10**9]), "h": st.sampled_from([0.1, 0.0, -1.0, float("inf")]),
                "T": st.sampled_from([1.0, 0.3, float("nan")]), "width": st.sampled_from([0, 1, 2, 3]),
                "activation": st.sampled_from(["tanh", "relu", "swish"]),
                "controls": st.sampled_from(list(problem_mod.CONTROLS) + ["x"]),
                "time_steps": st.sampled_from(list(problem_mod.TIME_STEPS) + ["x"]),
                "field": st.sampled_from(["sigma", "monotone", "x"]), "layer": st.sampled_from(["rk", "plain", "x"]),
                "allow_inconsistent": st.booleans()},
    "classifier": {"trainable": st.booleans(), "W": st.lists(st.sampled_from([1.0, float("nan")]), max_size=3),
                   "mu": st.sampled_from([0.0, float("inf")])},
    "objective": {"loss": st.sampled_from(["squared", "logistic", "x"]), "mean": st.booleans(),
                  "tikhonov": st.dictionaries(st.sampled_from(["K", "beta", "W", "mu", "h", "q"]),
                                              st.sampled_from([0.0, 1e-3, -1.0, float("nan")]), max_size=3),
                  "smooth": st.sampled_from([0.0, -1.0])},
    "solver": {"backend": st.sampled_from(["torch", "casadi", "jax"]),
               "name": st.sampled_from(["gd-armijo", "adam", "lbfgs", "ipopt", "sqp", "bvp", "x"]),
               "iterations": st.sampled_from([-1, 0, 5]),
               "options": st.dictionaries(st.sampled_from(["tol", "lr", "alpha_max", "jit", "formulation", "start",
                                                           "stages", "eval_every", "tolerance"]),
                                          st.sampled_from([1e-3, -1.0, float("nan"), 0, True, "reduced", "full",
                                                           "variables", "x"]), max_size=3)},
}
plausible_tables = st.fixed_dictionaries({}, optional={
    sec: st.fixed_dictionaries({}, optional=keys) for sec, keys in PLAUSIBLE.items()})

problem_tables_any = st.fixed_dictionaries({}, optional={
    sec: _key_value(types) for sec, types in problem_mod._FIELD_TYPES.items()
} | {"dtype": st.one_of(st.sampled_from(["float64", "float32"]), short_text),
     "device": st.one_of(st.just("cpu"), short_text)})
problem_tables = st.one_of(problem_tables_any, plausible_tables)

option_values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(short_text, scalars, max_size=2))


def _engine_problem(backend: str, solver: str, options: dict):
    return problem_mod.Problem(solver=problem_mod.SolverSpec(backend=backend, name=solver, options=options))


@st.composite
def solver_options(draw):
    backend = draw(st.sampled_from(["torch", "casadi"]))
    eng = engines.get(backend)
    solver = draw(st.sampled_from(sorted(eng.solvers)))
    keys = st.one_of(st.sampled_from(sorted(eng.options[solver])), short_text)
    return backend, solver, draw(st.dictionaries(keys, option_values, max_size=3))


csv_cells = st.one_of(st.sampled_from(["0", "1", "0.5", "nan", "inf", "-1e308", "x", "", " 1 ", "2"]),
                      st.floats(allow_nan=True).map(repr), short_text)
csv_text = st.lists(st.lists(csv_cells, min_size=1, max_size=4).map(",".join), max_size=12).map("\n".join)
array_dtypes = st.sampled_from(["f8", "f4", "i4", "u1", "?", "c16", "U3", "S2", "O"])


@st.composite
def npz_bytes(draw):
    """An .npz archive of random arrays under the keys load_file looks for (or not)."""
    arrays = {}
    for key in draw(st.lists(st.sampled_from(["X", "c", "x", "y", "features", "labels", "other"]), max_size=3,
                             unique=True)):
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        dtype = draw(array_dtypes)
        n = math.prod(shape)
        vals = draw(st.lists(st.sampled_from([0, 1, 2, -1, 0.5]) if dtype != "O" else st.just({}),
                             min_size=n, max_size=n))
        arrays[key] = np.array(vals, dtype=object if dtype == "O" else None).astype(dtype).reshape(shape)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    raw = buf.getvalue()
    if draw(st.booleans()) and raw:  # truncate or flip bytes: a corrupt archive
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=8))
    return raw


# ---------------------------------------------------------------------------------- helpers
class Scratch:
    """A fresh folder per example (hypothesis reuses a test's fixtures across its examples)."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="ocdl-fuzz-"))
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)


def only_ocdl_errors(f, *args, **kw):
    """f(*args, **kw), where an OcdlError (one line) is fine and anything else is a failure."""
    try:
        return f(*args, **kw)
    except OcdlError as e:
        assert "\n" not in str(e), repr(str(e))
        return None


def run_cli(args) -> tuple[int, str]:
    """(exit code, stderr) of ``ocdl ARGS`` in this process (stdout dropped)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            rc = e.code
    err = err.getvalue()
    if rc == 2:
        assert err.startswith("ocdl: error: ") and err.count("\n") == 1, err
    return rc, err


# ---------------------------------------------------------------------------------- validators
@FUZZ
@given(raw=junk_bytes, suffix=st.sampled_from([".toml", ".json"]))
def test_tableau_load_random_bytes(raw, suffix):
    with Scratch() as d:
        (d / f"t{suffix}").write_bytes(raw)
        only_ocdl_errors(tableau.load, d / f"t{suffix}")


@FUZZ
@given(table=st.deferred(_tableaux), as_json=st.booleans())
def test_tableau_load_random_tables(table, as_json):
    with Scratch() as d:
        if as_json:
            import json

            path = d / "t.json"
            path.write_text(json.dumps(table))
        else:
            path = d / "t.toml"
            try:
                path.write_text(tomli_w.dumps(_tomlable(table)))
            except (TypeError, ValueError):  # not representable in TOML
                return
        t = only_ocdl_errors(tableau.load, path)
        if t is not None:  # a tableau that loads answers every question without an error
            t.to_dict(), str(t), t.consistent, t.partner_residual()


def _tomlable(x):
    if isinstance(x, dict):
        return {str(k): _tomlable(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_tomlable(v) for v in x if v is not None]
    return x


@FUZZ
@given(raw=junk_bytes)
def test_catalogue_and_read_config_random_bytes(raw):
    with Scratch() as d:
        (d / "p.toml").write_bytes(raw)
        only_ocdl_errors(catalogue.load, d / "p.toml")
        only_ocdl_errors(rundir.read_config, d / "p.toml")


@FUZZ
@given(table=problem_tables)
def test_problem_from_random_tables(table):
    """from_dict, catalogue.load and read_config on random problem tables (known keys with values
    of any type, unknown keys): OcdlError or a valid Problem that round-trips."""
    p = only_ocdl_errors(problem_mod.from_dict, table, source="fuzz")
    if p is not None:
        assert problem_mod.from_dict(p.to_dict()) == p
    with Scratch() as d:
        try:
            text = tomli_w.dumps(table)
        except (TypeError, ValueError):
            return
        (d / "p.toml").write_text(text)
        only_ocdl_errors(catalogue.load, d / "p.toml")
        only_ocdl_errors(rundir.read_config, d / "p.toml")


@FUZZ
@given(spec=solver_options())
def test_check_options_random_values(spec):
    backend, solver, options = spec
    eng = engines.get(backend)
    p = only_ocdl_errors(_engine_problem, backend, solver, options)
    if p is None:
        return
    out = only_ocdl_errors(eng.check_options, p)
    if out is not None:
        assert set(out) == set(eng.options[solver])
        only_ocdl_errors(eng.check, p, 2)


@FUZZ
@given(text=csv_text)
def test_load_file_random_csv(text):
    with Scratch() as d:
        (d / "d.csv").write_text(text)
        ds = only_ocdl_errors(data.load_file, d / "d.csv")
        if ds is not None:
            assert ds.X.ndim == 2 and ds.X.shape[1] >= 1 and np.all(np.isfinite(ds.X))
            assert np.all((ds.c >= 0) & (ds.c == np.round(ds.c)))  # class numbers 0 … K−1


@FUZZ
@given(raw=st.one_of(npz_bytes(), junk_bytes), suffix=st.sampled_from([".npz", ".csv"]))
def test_load_file_random_bytes_and_archives(raw, suffix):
    with Scratch() as d:
        (d / f"d{suffix}").write_bytes(raw)
        ds = only_ocdl_errors(data.load_file, d / f"d{suffix}")
        if ds is not None:
            assert ds.X.dtype == np.float64 and ds.c.shape == (ds.n,) and np.all(np.isfinite(ds.X))


@FUZZ
@given(X=st.one_of(st.lists(st.lists(numbers, max_size=3), max_size=4), json_values),
       c=st.one_of(st.lists(numbers, max_size=4), json_values))
def test_from_arrays_random_values(X, c):
    ds = only_ocdl_errors(data.from_arrays, X, c)
    if ds is not None:
        assert ds.X.shape[0] == ds.c.shape[0] >= 1


# ---------------------------------------------------------------------------------- the command line
@FEW
@given(raw=junk_bytes, suffix=st.sampled_from([".toml", ".json"]))
def test_cli_tableau_random_file(raw, suffix):
    with Scratch() as d:
        (d / f"t{suffix}").write_bytes(raw)
        rc, _ = run_cli(["tableau", "--file", d / f"t{suffix}"])
        assert rc in (0, 2)


@FEW
@given(raw=junk_bytes, command=st.sampled_from(["run", "train", "verify"]))
def test_cli_random_problem_file_writes_nothing(raw, command):
    with Scratch() as d:
        f, out = d / "p.toml", d / "out"
        f.write_bytes(raw)
        assume(only_ocdl_errors(catalogue.load, f) is None)  # a valid problem (b"" is one) would train
        args = {"run": ["run", f, "--out", out, "--quiet"],
                "train": ["train", "--config", f, "--out", out, "--quiet"],
                "verify": ["verify", "commutation", "--problem", f, "--no-casadi", "--n", "4", "--layers", "1"]}[command]
        rc, _ = run_cli(args)
        assert rc == 2 and not out.exists()


@FEW
@given(table=problem_tables)
def test_cli_run_show_random_problem(table):
    with Scratch() as d:
        try:
            (d / "p.toml").write_text(tomli_w.dumps(table))
        except (TypeError, ValueError):
            return
        rc, _ = run_cli(["run", d / "p.toml", "--show"])
        assert rc in (0, 2)
        assert sorted(x.name for x in d.iterdir()) == ["p.toml"]


@FEW
@given(content=st.one_of(csv_text.map(str.encode), npz_bytes(), junk_bytes), suffix=st.sampled_from([".csv", ".npz"]),
       backend=st.sampled_from(["torch", "casadi"]))
def test_cli_train_random_data_file(content, suffix, backend):
    """A random data file: refused with one line and no --out, or (rarely) a valid file that
    trains: then the run directory is complete."""
    with Scratch() as d:
        f, out = d / f"d{suffix}", d / "out"
        f.write_bytes(content)
        rc, err = run_cli(["train", "--data", f, "--backend", backend, "--layers", "1", "--iterations", "0",
                           "--quiet", "--out", out])
        if rc == 2:
            assert not out.exists(), err
        else:
            assert rc in (0, 1) and all((out / name).is_file() for name in rundir.RUN_FILES)


@FEW
@given(spec=solver_options())
def test_cli_run_random_solver_options_writes_nothing_on_error(spec):
    backend, solver, options = spec
    table = {"data": {"n": 6}, "network": {"layers": 1}, "solver": {"backend": backend, "name": solver,
                                                                     "iterations": 0, "options": options}}
    with Scratch() as d:
        try:
            (d / "p.toml").write_text(tomli_w.dumps(_tomlable(table)))
        except (TypeError, ValueError):
            return
        out = d / "out"
        rc, err = run_cli(["run", d / "p.toml", "--out", out, "--quiet"])
        if rc == 2:
            assert not out.exists(), err
        else:
            assert rc in (0, 1) and (out / "metrics.json").is_file()


def test_fuzz_profile_is_deterministic():
    assert FUZZ.derandomize and FUZZ.deadline is None and FUZZ.max_examples <= 200


@pytest.mark.parametrize("raw", [b"\x00" * 10, "A = [[0]]\nb = [1]\nname = 3\n".encode(), b"[" * 5000])
def test_known_corner_cases(raw, tmp_path):
    (tmp_path / "t.toml").write_bytes(raw)
    with pytest.raises(OcdlError):
        tableau.load(tmp_path / "t.toml")
    (tmp_path / "p.toml").write_bytes(raw)
    with pytest.raises(OcdlError):
        catalogue.load(tmp_path / "p.toml")
    (tmp_path / "z.npz").write_bytes(zipfile.ZipFile.__name__.encode() + raw)
    with pytest.raises(OcdlError):
        data.load_file(tmp_path / "z.npz")
