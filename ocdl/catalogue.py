"""The problem catalogue: the TOML problem files under ``problems/``, found, loaded, validated.

A problem file is :meth:`ocdl.problem.Problem.to_dict` as TOML (sections data, network,
classifier, objective, init, solver; top-level dtype, device), documented by ``#`` comments; its
first comment block is the file's description. :func:`load` validates it and reports the first
error as one line naming the file, the line and the key::

    problems/paper/rk/spiral-kutta4.toml:17: network.layers: expected int, got str '15'

Relative file paths inside a problem file (``data.path``, ``data.test_path``, a ``network.tableau``
file) are taken from the problem file's folder, wherever the command runs.

Problem files are looked up by path, or by name relative to the catalogue root
(``paper/rk/spiral-kutta4`` for ``problems/paper/rk/spiral-kutta4.toml``). The root is
``$OCDL_PROBLEMS`` if set, else the catalogue shipped in the installed package
(``ocdl/problems``, found with :mod:`importlib.resources`), else ``problems/`` of the source
checkout (an editable install), else ``./problems``.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping

from ocdl import problem as problem_mod
from ocdl.errors import OcdlError, read_text

__all__ = ["root", "discover", "resolve", "read", "load", "load_text", "describe", "key_lines",
           "apply_overrides", "parse_override", "override", "name_of", "beside"]


def root() -> Path:
    """The catalogue folder (see the module docstring)."""
    env = os.environ.get("OCDL_PROBLEMS")
    if env:
        return Path(env)
    packaged = _packaged()
    if packaged is not None:
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "problems"
    if checkout.is_dir():
        return checkout
    return Path.cwd() / "problems"


def _packaged() -> Path | None:
    """``ocdl/problems`` of an installed wheel or sdist (pyproject.toml maps the repository's
    ``problems/`` to it); None in a source checkout or an editable install, which have none."""
    try:
        folder = importlib.resources.files("ocdl") / "problems"
    except (ImportError, TypeError):  # pragma: no cover - ocdl not loaded from a package
        return None
    return folder if isinstance(folder, Path) and folder.is_dir() else None


def discover(folder: str | Path | None = None) -> list[Path]:
    """Every ``*.toml`` problem file under ``folder`` (default: :func:`root`), sorted."""
    base = Path(folder) if folder is not None else root()
    if not base.is_dir():
        raise OcdlError(f"problem catalogue {str(base)!r} does not exist")
    return sorted(p for p in base.rglob("*.toml") if p.is_file())


def resolve(name: str | Path) -> Path:
    """A problem file from a path, or a catalogue name such as ``paper/rk/spiral-kutta4``."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (root() / p, root() / p.with_suffix(".toml")):
        if cand.is_file():
            return cand
    if p.is_dir():
        raise OcdlError(f"problem file {str(name)!r} is a directory, not a TOML file")
    if p.suffix == ".toml" or p.parent != Path("."):
        raise OcdlError(f"problem file {str(name)!r} does not exist (nor under the catalogue {str(root())!r})")
    raise OcdlError(f"no problem file or catalogue entry {str(name)!r} (see `ocdl run --list`)")


# ---------------------------------------------------------------------------------- line numbers
_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+(?:\s*\.\s*[A-Za-z0-9_\-]+)*)\s*=")
_INLINE_KEY = re.compile(r"([A-Za-z0-9_\-]+)\s*=")


def key_lines(text: str) -> dict[str, int]:
    """Map dotted keys (``network.layers``, ``objective.tikhonov.K``, table names) to the
    1-based line where they are set. A small scanner for the subset of TOML problem files use
    (tables, bare and dotted keys, one-line inline tables); unknown forms are skipped."""
    out: dict[str, int] = {}
    table: list[str] = []
    for no, line in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(line)
        if m and not line.lstrip().startswith("[["):
            table = [part.strip().strip('"') for part in m.group(1).split(".")]
            for i in range(1, len(table) + 1):
                out.setdefault(".".join(table[:i]), no)
            continue
        m = _KEY.match(line)
        if m:
            parts = [x.strip() for x in m.group(1).split(".")]
            full = table + parts
            for i in range(1, len(full) + 1):
                out.setdefault(".".join(full[:i]), no)
            rest = line[m.end():]
            if rest.lstrip().startswith("{"):  # inline table: its keys are on this line
                for k in _INLINE_KEY.findall(rest):
                    out.setdefault(".".join(full + [k]), no)
    return out


def _line_of(key: str, lines: Mapping[str, int]) -> int | None:
    key = re.sub(r"\[\]$", "", key)
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        k = ".".join(parts[:i])
        if k in lines:
            return lines[k]
    return None


_ERR_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?:\[\])?)(?:\s*\(.*?\))?: ")


def _located(source: str, text: str, err: OcdlError) -> OcdlError:
    """``source:LINE: message`` for a validation error that starts with a key name."""
    msg = str(err)
    m = _ERR_KEY.match(msg)
    if m:
        key = m.group(1)
    else:  # errors of the registries (tableau, activation) name no key: add it
        key = next((k for word, k in _REGISTRY_KEYS.items() if word in msg), None)
        if key:
            msg = f"{key}: {msg}"
    line = _line_of(key, key_lines(text)) if key else None
    where = f"{source}:{line}" if line else source
    return OcdlError(f"{where}: {msg}")


_REGISTRY_KEYS = {"tableau": "network.tableau", "activation": "network.activation"}


# ---------------------------------------------------------------------------------- loading
def _parse(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise OcdlError(f"{source}: invalid TOML: nested too deeply") from None
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        where = f"{source}:{m.group(1)}:{m.group(2)}" if m else source
        raise OcdlError(f"{where}: invalid TOML: {reason}") from None


def read(path: str | Path) -> tuple[dict, str]:
    """(parsed TOML dict, text) of a problem file; TOML syntax errors name file and line."""
    path = Path(path)
    where = f"problem file {str(path)!r}"
    if path.is_dir():
        raise OcdlError(f"{where} is a directory, not a TOML file")
    text = read_text(path, where)
    return _parse(text, str(path)), text


#: The keys of a problem file that name files: relative paths are taken from the file's folder.
PATH_KEYS = (("data", "path"), ("data", "test_path"), ("network", "tableau"))


def beside(data: Mapping, folder: str | Path) -> dict:
    """``data`` (a parsed problem file) with the relative file paths of :data:`PATH_KEYS`
    (data.path, data.test_path, a network.tableau file .toml/.json) taken from ``folder``, the
    problem file's folder, not from the current directory."""
    out = dict(data)
    for sec, key in PATH_KEYS:
        table = out.get(sec)
        val = table.get(key) if isinstance(table, Mapping) else None
        if not isinstance(val, str) or not val or Path(val).is_absolute():
            continue
        if sec == "network" and not val.lower().endswith((".toml", ".json")):
            continue  # a registry name
        out[sec] = {**table, key: os.path.normpath(os.path.join(os.path.abspath(folder), val))}
    return out


def load_text(text: str, source: str = "<problem>", overrides: Iterable[str] = ()) -> problem_mod.Problem:
    """Validate problem-file text (see :func:`load`)."""
    return _build(_parse(text, source), text, source, overrides)


def load(path: str | Path, overrides: Iterable[str] = ()) -> problem_mod.Problem:
    """The validated :class:`~ocdl.problem.Problem` of a problem file (path or catalogue name).

    ``overrides`` are ``section.key=value`` strings (TOML values: ``network.layers=30``,
    ``network.tableau="kutta3"`` or ``network.tableau=kutta3``) applied before validation.
    Relative file paths in the file (data.path, data.test_path, a tableau file) are taken from the
    file's folder (:func:`beside`); those of ``overrides`` from the current directory.
    Any error raises :class:`OcdlError` naming the file, the line and the key."""
    path = resolve(path)
    data, text = read(path)
    return _build(beside(data, path.parent), text, str(path), overrides)


def _build(data: dict, text: str, source: str, overrides: Iterable[str]) -> problem_mod.Problem:
    try:
        problem = problem_mod.from_dict(data)
    except OcdlError as e:
        raise _located(source, text, e) from None
    return override(problem, overrides, source)


def override(problem: problem_mod.Problem, overrides: Iterable[str], source: str = "problem") -> problem_mod.Problem:
    """``problem`` with ``section.key=value`` overrides applied, validated again."""
    overrides = list(overrides)
    if not overrides:
        return problem
    data = apply_overrides(problem.to_dict(), overrides)
    try:
        return problem_mod.from_dict(data)
    except OcdlError as e:
        raise OcdlError(f"{source} with --set {' --set '.join(overrides)}: {e}") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``section.key=value`` → (["section", "key"], value); the value is read as TOML, or as
    a string when it is not valid TOML (``network.tableau=kutta3``)."""
    if "=" not in item:
        raise OcdlError(f"--set {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    parts = [p.strip() for p in key.strip().split(".")]
    if not all(parts) or not key.strip():
        raise OcdlError(f"--set {item!r}: expected section.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts, value


def apply_overrides(data: Mapping, overrides: Iterable[str]) -> dict:
    """A deep copy of ``data`` with each ``section.key=value`` override set."""
    import copy

    out = copy.deepcopy(dict(data))
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise OcdlError(f"--set {item!r}: {p!r} is not a table")
            node = nxt
        node[parts[-1]] = value
    return out


def describe(path: str | Path) -> str:
    """The first comment block of a problem file, without the ``#`` marks."""
    lines = []
    for line in Path(path).read_bytes().decode("utf-8", errors="replace").splitlines():
        s = line.strip()
        if s.startswith("#"):
            lines.append(s.lstrip("#").strip())
        elif s or lines:
            break
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def name_of(path: str | Path) -> str:
    """The catalogue name of a file under :func:`root` (its relative path without .toml)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(root().resolve()).with_suffix(""))
    except ValueError:
        return str(Path(path).with_suffix(""))
