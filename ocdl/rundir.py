"""The run directory: everything needed to inspect, rerun and resume a training run.

    config.toml    the Problem (``Problem.to_dict``), enough to rerun
    metrics.json   objective, gradient_norm, accuracies, iterations, wall_time_s, status, history, …
    params.npz     K, beta, W, mu, h (column convention y ← y + h σ(K y + β))
    costates.npz   p (N+1, m, d) and stage costates P (N, s, m, d), where the engine gives them
    state.json     optimiser state for ``--resume`` (iteration, step-size memory)
    optimizer.pt   torch optimiser state (lbfgs, adam), where used
    *.png          figures (see :mod:`ocdl.plots`)

Every file is written atomically (temporary file + ``os.replace``), so an interrupted or failed
run leaves the previous complete version of each file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ocdl import problem as problem_mod
from ocdl.errors import OcdlError

RUN_FILES = ("config.toml", "metrics.json", "params.npz")
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode())


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1, default=_json_default) + "\n")


def write_npz(path: Path, arrays: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write(path, buf.getvalue())


def save_figure(fig, path: Path, **kw) -> None:
    """Save a matplotlib figure atomically (format from the suffix)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kw)
    atomic_write(path, buf.getvalue())


def write_config(path: Path, problem) -> None:
    """config.toml of ``problem``. In-memory data (``Problem.from_arrays``) is written beside it as
    data.npz (and data_test.npz), which the config names by relative path: the folder reruns
    anywhere."""
    import tomli_w

    path = Path(path)
    if problem.data.name == "arrays":
        d = problem.data
        write_npz(path.parent / "data.npz", {"X": d.train.X, "c": d.train.c})
        test = None
        if d.test is not None and d.test is not d.train:
            write_npz(path.parent / "data_test.npz", {"X": d.test.X, "c": d.test.c})
            test = "data_test.npz"
        problem = problem.replace(data=problem_mod.DataSpec(name="file", n=d.n, seed=d.seed, path="data.npz",
                                                            test_path=test))
    elif problem.data.name == "file":  # data files inside the run folder are named relative to it
        rep = {f"data__{k}": Path(p).name for k in ("path", "test_path")
               if (p := getattr(problem.data, k)) and Path(p).resolve().parent == path.parent.resolve()}
        problem = problem.replace(**rep) if rep else problem
    write_text(path, tomli_w.dumps(problem.to_dict()))


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def prepare(out: str | Path, force: bool = False, resume: bool = False) -> Path:
    """Check that ``out`` may receive a run (new, empty, or — with ``force``/``resume`` — an
    existing run directory). Creates nothing; call :func:`create` once inputs are validated."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OcdlError(f"output {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (force or resume):
        raise OcdlError(f"output directory {str(out)!r} is not empty (use --force to overwrite, --resume to continue)")
    return out


def create(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return out


def read_config(path: Path):
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise OcdlError(f"{str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise OcdlError(f"{str(path)!r}: invalid TOML: {e}") from None
    return _beside(problem_mod.from_dict(data, source=str(path)), path.parent)


def _beside(problem, folder: Path):
    """Data files named by a relative path that exists next to the config are read from there."""
    d = problem.data
    if d.name != "file":
        return problem
    rep = {}
    for key in ("path", "test_path"):
        p = getattr(d, key)
        if p and not Path(p).is_absolute() and not Path(p).is_file() and (folder / p).is_file():
            rep[f"data__{key}"] = str(folder / p)
    return problem.replace(**rep) if rep else problem


def load(run_dir: str | Path):
    """(problem, params, metrics) of a run directory."""
    run = Path(run_dir)
    if not run.is_dir():
        raise OcdlError(f"run directory {str(run)!r} does not exist")
    for name in RUN_FILES:
        if not (run / name).is_file():
            raise OcdlError(f"{str(run)!r} is not a run directory (missing {name})")
    problem = read_config(run / "config.toml")
    with np.load(run / "params.npz") as z:
        params = {k: z[k] for k in z.files}
    metrics = json.loads((run / "metrics.json").read_text())
    return problem, params, metrics


def load_params(source: str | Path) -> dict:
    """Parameters from a run directory (its params.npz) or any .npz with the keys K, beta, W,
    mu, h (shapes are checked later against the problem)."""
    p = Path(source)
    if p.is_dir():
        p = p / "params.npz"
    if not p.is_file():
        raise OcdlError(f"initial parameters {str(source)!r}: no such run directory or .npz file")
    try:
        with np.load(p) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # numpy raises several types for a corrupt file
        raise OcdlError(f"initial parameters {str(p)!r}: cannot read: {e}") from None


def load_costates(run_dir: str | Path) -> dict | None:
    p = Path(run_dir) / "costates.npz"
    if not p.is_file():
        return None
    with np.load(p) as z:
        return {k: z[k] for k in z.files}
