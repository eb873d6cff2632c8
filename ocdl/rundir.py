"""The run directory: everything needed to inspect, rerun and resume a training run.

    config.toml    the Problem (``Problem.to_dict``), enough to rerun
    metrics.json   objective, gradient_norm, accuracies, iterations, wall_time_s, status, history, …
                   (strict JSON: a non-finite figure is null, and listed in ``nonfinite``)
    params.npz     K, beta, W, mu, h (column convention y ← y + h σ(K y + β))
    costates.npz   p (N+1, m, d) and stage costates P (N, s, m, d), where the engine gives them
    state.json     optimiser state for ``--resume`` (iteration, step-size memory)
    optimizer.pt   torch optimiser state (lbfgs, adam), where used
    *.png          figures (see :mod:`ocdl.plots`)

A run writes its directory as snapshots (:func:`snapshot`): every file of one snapshot goes into a
private staging folder ``.ocdl-stage-*`` and is fsync'ed; renaming that folder to ``.ocdl-commit``
is the commit, after which its files are moved into place and the folder removed. A snapshot
killed before the rename leaves the previous one; one killed after it is completed by the next
writer, and readers (:func:`load`, :func:`load_params`, …) read a committed snapshot's files from
``.ocdl-commit`` meanwhile. So params.npz, state.json, optimizer.pt and metrics.json always
belong to one iteration. While a run writes, ``.ocdl.lock`` (holding its pid, locked with
``flock``) keeps a second ``ocdl`` out of the directory; the kernel drops the lock when the process
dies, so a lock left by a killed run is taken over. Single files outside a run directory (reports,
figures) are written atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ocdl import problem as problem_mod
from ocdl.errors import OcdlError, read_bytes

RUN_FILES = ("config.toml", "metrics.json", "params.npz")
LOCK = ".ocdl.lock"
COMMIT = ".ocdl-commit"
STAGE_PREFIX = ".ocdl-stage-"
MANIFEST = "MANIFEST.json"
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
    """Strict JSON (RFC 8259): a non-finite float (NaN, ±inf), which ``json.dumps`` would write as
    the non-standard tokens NaN/Infinity, becomes null; NumPy scalars and arrays become numbers
    and lists. A metrics.json says which of its figures were non-finite (:func:`mark_nonfinite`)."""
    write_text(path, dumps(obj) + "\n")


def dumps(obj, indent: int | None = 1) -> str:
    """``obj`` as strict JSON text (see :func:`write_json`)."""
    return json.dumps(strict(obj), indent=indent, allow_nan=False, default=_json_default)


def strict(obj):
    """``obj`` with every non-finite float replaced by None (recursively through dicts, lists,
    tuples and NumPy arrays); NumPy scalars become Python numbers."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return strict(obj.tolist())
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


NONFINITE = "nonfinite"


def _nonfinite_word(v: float) -> str:
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def mark_nonfinite(metrics: dict) -> dict:
    """``metrics`` with ``nonfinite`` = {name: 'nan' | 'inf' | '-inf'} for each top-level figure
    that is not a finite number (written as null in the strict JSON); absent when all are finite.
    :func:`load` gives such a figure back as that float, so a reader sees what it saw before."""
    bad = {k: _nonfinite_word(float(v)) for k, v in metrics.items()
           if isinstance(v, (float, np.floating)) and not math.isfinite(float(v))}
    out = {k: v for k, v in metrics.items() if k != NONFINITE}
    if bad:
        out[NONFINITE] = bad
    return out


def write_npz(path: Path, arrays: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write(path, buf.getvalue())


def save_figure(fig, path: Path, **kw) -> None:
    """Save a matplotlib figure atomically (format from the suffix); a Ctrl-C while it is drawn
    stays a KeyboardInterrupt (matplotlib's renderer can turn it into a ValueError)."""
    from .interrupt import SigintWins

    buf = io.BytesIO()
    with SigintWins():
        fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kw)
    atomic_write(path, buf.getvalue())


def write_config(path: Path, problem, folder: str | Path | None = None) -> None:
    """config.toml of ``problem``. In-memory data (``Problem.from_arrays``) is written beside it as
    data.npz (and data_test.npz), which the config names by relative path: the folder reruns
    anywhere. ``folder``: the run directory the file is for (default: its own folder; a snapshot
    writes into a staging folder first)."""
    import tomli_w

    path = Path(path)
    folder = Path(folder) if folder is not None else path.parent
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
               if (p := getattr(problem.data, k)) and Path(p).resolve().parent == folder.resolve()}
        problem = problem.replace(**rep) if rep else problem
    write_text(path, tomli_w.dumps(problem.to_dict()))


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


_HOUSEKEEPING = (LOCK,)


def _is_housekeeping(name: str) -> bool:
    """The lock file and staging folders (not a committed snapshot: that is a run)."""
    return name in _HOUSEKEEPING or name.startswith(STAGE_PREFIX)


# ---------------------------------------------------------------------- the output path
def check_creatable(out: str | Path, what: str = "output directory") -> None:
    """Refuse, with one line and before any work, a path that cannot become a directory: a file
    on the way, a name longer than the file system allows, a folder where nothing can be created
    (a read-only or virtual file system such as /proc). Creates nothing (a probe folder made to
    find out is removed at once)."""
    out = Path(out)
    try:
        parts = out.absolute().parts
    except OSError as e:  # the working directory is gone
        raise OcdlError(f"{what} {str(out)!r}: {e.strerror or e}") from None
    base = Path(parts[0])
    missing: list[str] = []
    for i in range(1, len(parts)):
        p = base.joinpath(*parts[1 : i + 1])
        if missing:
            missing.append(parts[i])
            continue
        try:
            st = p.stat()
        except OSError as e:
            if isinstance(e, FileNotFoundError) or e.errno == errno.ENAMETOOLONG:  # cannot exist: judged below
                missing.append(parts[i])
                continue
            raise OcdlError(f"{what} {str(out)!r}: {e.strerror or e} ({str(p)!r})") from None  # EACCES, ELOOP
        if not _stat_is_dir(st):
            if i == len(parts) - 1:
                return  # an existing file: the caller says so
            raise OcdlError(f"{what} {str(out)!r}: {str(p)!r} is not a directory")
    existing = base.joinpath(*parts[1 : len(parts) - len(missing)])
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for name in missing:
        n = len(os.fsencode(name))
        if n > name_max:
            raise OcdlError(f"{what} {str(out)!r}: the name {name[:24]!r}… is {n} bytes; the file system allows "
                            f"{name_max}")
    if len(os.fsencode(str(out.absolute()))) >= 4096:
        raise OcdlError(f"{what} {str(out)!r}: the path is longer than 4095 bytes")
    if missing:
        try:
            probe = tempfile.mkdtemp(prefix=".ocdl-probe-", dir=existing)
            os.rmdir(probe)
        except OSError as e:
            raise OcdlError(f"{what} {str(out)!r}: cannot create it in {str(existing)!r}: {e.strerror or e}") from None
    elif not os.access(existing, os.W_OK | os.X_OK):
        raise OcdlError(f"{what} {str(out)!r}: not writable")


def _stat_is_dir(st) -> bool:
    import stat

    return stat.S_ISDIR(st.st_mode)


def prepare(out: str | Path, force: bool = False, resume: bool = False) -> Path:
    """Check that ``out`` may receive a run (new, empty, or — with ``force``/``resume`` — an
    existing run directory), that it can be created and that no other ``ocdl`` is writing into it.
    Creates nothing; call :func:`create` once inputs are validated."""
    out = Path(out)
    check_creatable(out)
    if out.exists() and not out.is_dir():
        raise OcdlError(f"output {str(out)!r} exists and is not a directory")
    if out.is_dir():
        holder = lock_holder(out)
        if holder is not None:
            raise OcdlError(f"output directory {str(out)!r} is in use by another ocdl process "
                            f"({holder}); wait for it to end, or stop it")
        if not (force or resume) and any(not _is_housekeeping(p.name) for p in out.iterdir()):
            raise OcdlError(f"output directory {str(out)!r} is not empty (use --force to overwrite, "
                            "--resume to continue)")
    return out


def create(out: Path) -> list[Path]:
    """Create ``out`` and its missing parents; returns the folders created (deepest last), which
    :class:`RunLock` removes again if the run writes nothing. One line on failure, nothing left."""
    out = Path(out)
    todo = []
    p = out.absolute()
    while not p.exists():
        todo.append(p)
        p = p.parent
    made: list[Path] = []
    try:
        for d in reversed(todo):
            d.mkdir()
            made.append(d)
    except FileExistsError:
        if not out.is_dir():
            _remove_empty(made)
            raise OcdlError(f"output {str(out)!r} exists and is not a directory") from None
    except OSError as e:
        _remove_empty(made)
        raise OcdlError(f"cannot create output directory {str(out)!r}: {e.strerror or e}") from None
    return made


def _remove_empty(folders) -> None:
    for d in reversed(list(folders)):
        try:
            d.rmdir()
        except OSError:
            break


# ---------------------------------------------------------------------- the lock
def _read_lock(fd_or_path) -> dict:
    try:
        if isinstance(fd_or_path, int):
            os.lseek(fd_or_path, 0, os.SEEK_SET)
            raw = os.read(fd_or_path, 4096)
        else:
            raw = Path(fd_or_path).read_bytes()
        info = json.loads(raw.decode())
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    pid = info.get("pid")
    return f"pid {pid}" if isinstance(pid, int) else "pid unknown"


def lock_holder(out: str | Path) -> str | None:
    """'pid N' of the process that holds ``out``'s lock, or None when it is free (no lock file,
    or one left by a process that has ended). Changes nothing."""
    path = Path(out) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe(_read_lock(fd))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except ImportError:  # no flock (not POSIX): the pid in the file decides
        return _describe(_read_lock(fd)) if _pid_alive(_read_lock(fd).get("pid")) else None
    finally:
        os.close(fd)


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``.ocdl.lock`` in a run directory: held (``flock``, exclusive) while a run writes there;
    the file holds the holder's pid. A second ``ocdl`` is refused with one line; a lock file left
    by a killed process is taken over (the kernel released its lock): ``stale`` is then the
    describing string of that process. :meth:`release` removes the file, and the folders
    :func:`create` made for this run if the run wrote nothing into them."""

    def __init__(self, out: str | Path, created: list[Path] | None = None):
        self.out = Path(out)
        self.path = self.out / LOCK
        self.created = list(created or [])
        self.fd: int | None = None
        self.stale: str | None = None

    def _in_use(self, info: dict) -> OcdlError:
        return OcdlError(f"output directory {str(self.out)!r} is in use by another ocdl process ({_describe(info)}); "
                         "wait for it to end, or stop it")

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # no flock (not POSIX): the file created with O_EXCL, a dead pid's taken over
            return self._acquire_exclusive()
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
            except OSError as e:
                raise OcdlError(f"cannot create the lock file {str(self.path)!r}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = _read_lock(fd)
                os.close(fd)
                raise self._in_use(info) from None
            try:  # the file locked must still be the one at the path (a releasing process unlinks it)
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            old = _read_lock(fd)
            if old.get("pid") not in (None, os.getpid()):
                self.stale = _describe(old)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps({"pid": os.getpid()}) + "\n").encode())
            self.fd = fd
            return self
        raise OcdlError(f"cannot lock {str(self.out)!r}: the lock file keeps changing")

    def _acquire_exclusive(self) -> "RunLock":
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666 & ~_UMASK)
            except FileExistsError:
                info = _read_lock(self.path)
                if _pid_alive(info.get("pid")) or not info:  # alive, or being written just now
                    raise self._in_use(info) from None
                self.stale = _describe(info)
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            except OSError as e:
                raise OcdlError(f"cannot create the lock file {str(self.path)!r}: {e.strerror or e}") from None
            os.write(fd, (json.dumps({"pid": os.getpid()}) + "\n").encode())
            self.fd = fd
            return self
        raise OcdlError(f"cannot lock {str(self.out)!r}: the lock file keeps changing")

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)
        for p in self.out.glob(STAGE_PREFIX + "*"):
            shutil.rmtree(p, ignore_errors=True)
        _remove_empty(self.created)

    def wrote(self) -> None:
        """The run has written a snapshot: its folders stay."""
        self.created = []

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


# ---------------------------------------------------------------------- snapshots
def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory
    finally:
        os.close(fd)


def _manifest(commit: Path) -> dict:
    try:
        m = json.loads((commit / MANIFEST).read_text())
        files, remove = m["files"], m.get("remove", [])
        if isinstance(files, list) and isinstance(remove, list):
            return {"files": [str(f) for f in files], "remove": [str(r) for r in remove]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return {"files": [], "remove": []}


def _apply(out: Path) -> None:
    """Move a committed snapshot's files into place and remove its folder (idempotent: completes
    an apply that a killed process left half done)."""
    commit = out / COMMIT
    m = _manifest(commit)
    for name in m["files"]:
        src = commit / name
        if src.exists():
            os.replace(src, out / name)
    for name in m["remove"]:
        if name not in m["files"]:
            try:
                (out / name).unlink()
            except FileNotFoundError:
                pass
    _fsync_path(out, directory=True)
    try:
        (commit / MANIFEST).unlink()
    except FileNotFoundError:
        pass
    shutil.rmtree(commit, ignore_errors=True)


def complete_pending(out: str | Path) -> None:
    """Finish a committed snapshot left by a killed writer and drop abandoned staging folders.
    Only under the directory's :class:`RunLock`."""
    out = Path(out)
    if (out / COMMIT).is_dir():
        _apply(out)
    for p in out.glob(STAGE_PREFIX + "*"):
        shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def snapshot(out: str | Path, remove: tuple[str, ...] = ()) -> Iterator[Path]:
    """``with snapshot(out) as stage:`` write a snapshot's files into the folder ``stage``; at the
    end of the block they are fsync'ed and committed together (see the module docstring), and the
    files named in ``remove`` that the snapshot does not hold are deleted with it. An exception
    (Ctrl-C included) inside the block leaves the previous snapshot. Only under the directory's
    :class:`RunLock`."""
    from ocdl.interrupt import DeferSigint

    out = Path(out)
    complete_pending(out)
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
    try:
        os.chmod(stage, 0o777 & ~_UMASK)
        yield stage
        names = sorted(p.name for p in stage.iterdir() if p.is_file())
        for name in names:
            _fsync_path(stage / name)
        manifest = {"files": names, "remove": [r for r in remove if r not in names]}
        with open(stage / MANIFEST, "w") as f:
            f.write(json.dumps(manifest) + "\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_path(stage, directory=True)
        with DeferSigint():  # the commit and the moves into place run whole
            os.rename(stage, out / COMMIT)
            _fsync_path(out, directory=True)
            _apply(out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def write_bytes(path: Path, data: bytes) -> None:
    """Plain write (for files inside a snapshot's private staging folder)."""
    with open(path, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------- reading
class _View:
    """The files of a run directory as its last committed snapshot has them (a snapshot's files
    still in ``.ocdl-commit`` take precedence; names it removes are absent)."""

    def __init__(self, run: Path):
        self.run = Path(run)
        commit = self.run / COMMIT
        self.pending = _manifest(commit) if commit.is_dir() else {"files": [], "remove": []}

    def path(self, name: str) -> Path | None:
        if name in self.pending["files"]:
            p = self.run / COMMIT / name
            if p.is_file():
                return p
        elif name in self.pending["remove"]:
            return None
        p = self.run / name
        return p if p.is_file() else None

    def read(self, name: str) -> bytes | None:
        """The bytes of ``name`` (None if absent); retried once if a writer moves it meanwhile."""
        for _ in range(2):
            p = self.path(name)
            if p is None:
                return None
            try:
                return p.read_bytes()
            except FileNotFoundError:
                self.__init__(self.run)
            except OSError as e:
                raise OcdlError(f"{str(self.run / name)!r}: cannot read: {e.strerror or e}") from None
        return None


def read_config(path: Path):
    path = Path(path)
    return _parse_config(_read_file(path, "problem file"), path, path.parent)


def _read_file(path: Path, what: str) -> bytes:
    return read_bytes(path, f"{what} {str(path)!r}")


def _parse_config(raw: bytes, path: Path, folder: Path, resolve: Callable[[str], Path | None] | None = None):
    import tomllib

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise OcdlError(f"{str(path)!r}: not a UTF-8 text file (byte {e.start}); expected TOML") from None
    except tomllib.TOMLDecodeError as e:
        raise OcdlError(f"{str(path)!r}: invalid TOML: {e}") from None
    return _beside(problem_mod.from_dict(data, source=str(path)), folder, resolve)


def _beside(problem, folder: Path, resolve: Callable[[str], Path | None] | None = None):
    """Data files named by a relative path that exists next to the config are read from there."""
    d = problem.data
    if d.name != "file":
        return problem
    rep = {}
    for key in ("path", "test_path"):
        p = getattr(d, key)
        if p and not Path(p).is_absolute() and not Path(p).is_file():
            q = resolve(p) if resolve is not None else (folder / p if (folder / p).is_file() else None)
            if q is not None:
                rep[f"data__{key}"] = str(q)
    return problem.replace(**rep) if rep else problem


def _bad(run: Path, name: str, why: str) -> OcdlError:
    return OcdlError(f"{str(Path(run) / name)!r} {why}")


def _npz(raw: bytes, run: Path, name: str) -> dict:
    try:
        z = np.load(io.BytesIO(raw), allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"a single {type(z).__name__}, not an .npz archive")
        with z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # numpy and zipfile raise many types for a damaged file
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _bad(run, name, f"cannot be read as .npz ({why})") from None
    for k, a in arrays.items():
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)) or a.dtype == bool:
            raise _bad(run, name, f"holds {k!r} of dtype {a.dtype}, expected numbers")
    return arrays


def _json(raw: bytes, run: Path, name: str):
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise _bad(run, name, f"is not UTF-8 text (byte {e.start}); expected JSON") from None
    except ValueError as e:
        raise _bad(run, name, f"is not valid JSON ({e})") from None


def _number(v, none: bool = True) -> bool:
    return (v is None and none) or (isinstance(v, (int, float)) and not isinstance(v, bool))


_METRIC_NUMBERS = ("objective", "test_objective", "gradient_norm", "gradient_norm_inf", "train_accuracy",
                   "test_accuracy", "wall_time_s", "kkt_residual", "constraint_violation", "run_objective",
                   "run_gradient_norm")


def check_metrics(metrics, run: Path, name: str = "metrics.json") -> dict:
    """A metrics.json as a run writes it: an object whose figures are numbers (or null), whose
    ``iterations`` is a count and whose ``history`` maps names to lists of numbers."""
    if not isinstance(metrics, dict):
        raise _bad(run, name, f"holds a JSON {type(metrics).__name__}, expected an object")
    for k in _METRIC_NUMBERS:
        if k in metrics and not _number(metrics[k]):
            raise _bad(run, name, f"has {k} = {metrics[k]!r}, expected a number")
    for k, none in (("iterations", False), ("run_iteration", True)):
        it = metrics.get(k, 0)
        if not ((it is None and none) or (isinstance(it, int) and not isinstance(it, bool) and it >= 0)):
            raise _bad(run, name, f"has {k} = {it!r}, expected a count")
    for k in ("status", "message", "engine", "solver", "dtype", "evaluation_dtype"):
        if k in metrics and not isinstance(metrics[k], str):
            raise _bad(run, name, f"has {k} = {metrics[k]!r}, expected a string")
    hist = metrics.get("history", {})
    if not isinstance(hist, dict):
        raise _bad(run, name, f"has a history of type {type(hist).__name__}, expected an object of lists")
    for k, v in hist.items():
        if not isinstance(v, list) or not all(_number(x) for x in v):
            raise _bad(run, name, f"has history[{k!r}] that is not a list of numbers")
    for k in ("iteration", "eval_iteration"):
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in hist.get(k, [])):
            raise _bad(run, name, f"has history[{k!r}] that is not a list of integers")
    bad = metrics.get(NONFINITE, {})
    if not (isinstance(bad, dict) and all(isinstance(k, str) and v in _NONFINITE_VALUES for k, v in bad.items())):
        raise _bad(run, name, f"has {NONFINITE} = {bad!r}, expected an object of 'nan' | 'inf' | '-inf'")
    for k in bad:
        if metrics.get(k) is not None:
            raise _bad(run, name, f"lists {k!r} as non-finite but holds {k} = {metrics[k]!r}")
    return metrics


_NONFINITE_VALUES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def restore_nonfinite(metrics: dict) -> dict:
    """The figures a metrics.json lists under ``nonfinite`` (null in the file) as the floats they
    were (NaN, ±inf); the rest as written (history entries that were non-finite stay None)."""
    bad = metrics.get(NONFINITE) or {}
    return {**metrics, **{k: _NONFINITE_VALUES[v] for k, v in bad.items()}} if bad else metrics


def load(run_dir: str | Path):
    """(problem, params, metrics) of a run directory, as its last committed snapshot has them.
    A missing, truncated or mistyped file is refused with one line naming it. The figures that
    metrics.json lists as ``nonfinite`` (null in the file) come back as NaN / ±inf."""
    run = Path(run_dir)
    if not run.is_dir():
        raise OcdlError(f"run directory {str(run)!r} does not exist")
    view = _View(run)
    raw = {}
    for name in RUN_FILES:
        raw[name] = view.read(name)
        if raw[name] is None:
            unfinished = (run / LOCK).exists() and not any(view.path(n) for n in RUN_FILES)
            raise OcdlError(f"{str(run)!r} is not a run directory (missing {name})"
                            + ("; the run there stopped before its first snapshot" if unfinished else ""))
    problem = _parse_config(raw["config.toml"], run / "config.toml", run, view.path)
    params = _npz(raw["params.npz"], run, "params.npz")
    for k in problem_mod.PARAM_KEYS:
        if k not in params:
            raise _bad(run, "params.npz", f"has no {k!r} (needs {', '.join(problem_mod.PARAM_KEYS)})")
    metrics = restore_nonfinite(check_metrics(_json(raw["metrics.json"], run, "metrics.json"), run))
    return problem, params, metrics


def load_state(run_dir: str | Path) -> dict:
    """state.json of a run directory (for ``--resume``): an object with ``iteration`` (a count)
    and finite numbers (the optimiser's step memory)."""
    run = Path(run_dir)
    raw = _View(run).read("state.json")
    if raw is None:
        raise OcdlError(f"{str(run)!r} has no state.json to resume from")
    st = _json(raw, run, "state.json")
    if not isinstance(st, dict):
        raise _bad(run, "state.json", f"holds a JSON {type(st).__name__}, expected an object")
    it = st.get("iteration")
    if not (isinstance(it, int) and not isinstance(it, bool) and it >= 0):
        raise _bad(run, "state.json", f"has iteration = {it!r}, expected a count")
    for k, v in st.items():
        if k != "iteration" and not (_number(v, none=False) and math.isfinite(v)):
            raise _bad(run, "state.json", f"has {k} = {v!r}, expected a finite number")
    return st


def load_optimizer(run_dir: str | Path, size: int | None = None):
    """optimizer.pt of a run directory (a torch optimiser's state_dict), or None where there is
    none. Read with ``weights_only`` (no code runs); every tensor in it must be a scalar or, with
    ``size``, have that many entries (the trained parameters)."""
    run = Path(run_dir)
    raw = _View(run).read("optimizer.pt")
    if raw is None:
        return None
    import torch

    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a foreign file
            warnings.simplefilter("ignore")
            sd = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, … for a damaged file
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _bad(run, "optimizer.pt", f"cannot be read as a torch optimiser state ({why[:200]})") from None
    if not (isinstance(sd, dict) and isinstance(sd.get("state"), dict) and isinstance(sd.get("param_groups"), list)):
        raise _bad(run, "optimizer.pt", "is not a torch optimiser state (a dict with 'state' and 'param_groups')")

    def tensors(x):
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, dict):
            for v in x.values():
                yield from tensors(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                yield from tensors(v)

    for t in tensors(sd["state"]):
        if t.is_complex() or not (t.is_floating_point() or t.numel() <= 1):
            raise _bad(run, "optimizer.pt", f"holds a tensor of dtype {t.dtype}, expected floating point")
        if size is not None and t.numel() > 1 and t.numel() != size:
            raise _bad(run, "optimizer.pt", f"holds a tensor of {t.numel()} entries; the run trains {size}")
    return sd


def load_params(source: str | Path) -> dict:
    """Parameters from a run directory (its params.npz) or any .npz with the keys K, beta, W,
    mu, h (shapes are checked later against the problem)."""
    p = Path(source)
    folder, name = (p, "params.npz") if p.is_dir() else (p.parent, p.name)
    raw = _View(folder).read(name) if folder.is_dir() else None
    if raw is None:
        raise OcdlError(f"initial parameters {str(source)!r}: " + ("no params.npz in that run directory" if p.is_dir()
                                                                   else "no such run directory or .npz file"))
    try:
        return _npz(raw, folder, name)
    except OcdlError as e:
        raise OcdlError(f"initial parameters: {e}") from None


def load_costates(run_dir: str | Path) -> dict | None:
    run = Path(run_dir)
    raw = _View(run).read("costates.npz")
    if raw is None:
        return None
    return _npz(raw, run, "costates.npz")
