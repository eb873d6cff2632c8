"""Packaging: the problem catalogue (the repository's ``problems/``) ships inside the package as
``ocdl/problems`` (pyproject.toml's [tool.setuptools] sections), and :func:`ocdl.catalogue.root`
finds it there in an installed copy, with no checkout beside it. The cheap tests read the
configuration and run a copy laid out as a wheel installs it; the slow one builds the sdist and
the wheel (without network) and lists what they hold."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import pytest

from ocdl import catalogue

REPO = Path(__file__).resolve().parent.parent
PROBLEMS = REPO / "problems"


def _setuptools_config():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def _problem_files():
    """Every file of the catalogue, relative to problems/ (posix)."""
    return sorted(p.relative_to(PROBLEMS).as_posix() for p in PROBLEMS.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


def _matches(rel, patterns):
    # setuptools' package-data globs: '**/' matches zero or more folders
    return any(fnmatch(rel, pat) or (pat.startswith("**/") and fnmatch(rel, pat[3:])) for pat in patterns)


def test_every_package_under_ocdl_is_listed():
    """The packages are listed in pyproject.toml (find cannot map problems/ into ocdl/): a new
    subpackage must be added there, or the wheel would leave it out."""
    listed = set(_setuptools_config()["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "ocdl").rglob("__init__.py")}
    assert found | {"ocdl.problems"} == listed


def test_package_data_covers_the_whole_catalogue_and_py_typed():
    cfg = _setuptools_config()
    assert cfg["package-dir"]["ocdl.problems"] == "problems"
    patterns = cfg["package-data"]["ocdl.problems"]
    files = _problem_files()
    assert sum(f.endswith(".toml") for f in files) >= 40
    assert [f for f in files if not _matches(f, patterns)] == []
    assert "py.typed" in cfg["package-data"]["ocdl"] and (REPO / "ocdl" / "py.typed").is_file()


def test_checkout_root_without_packaged_catalogue(monkeypatch):
    """In the checkout (an editable install) there is no ocdl/problems: root() is problems/."""
    monkeypatch.delenv("OCDL_PROBLEMS", raising=False)
    assert not (REPO / "ocdl" / "problems").exists()
    assert catalogue.root() == PROBLEMS


def test_installed_layout_finds_every_problem_file(tmp_path):
    """A copy laid out as the wheel installs it (site/ocdl with site/ocdl/problems), imported from
    an unrelated folder with no checkout beside it: the catalogue is found via importlib.resources."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "ocdl", site / "ocdl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(PROBLEMS, site / "ocdl" / "problems", ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "OCDL_PROBLEMS"}
    env["PYTHONPATH"] = str(site)
    code = ("import json, ocdl, ocdl.catalogue as c; r = c.root(); "
            "print(json.dumps({'module': ocdl.__file__, 'root': str(r), "
            "'files': [p.relative_to(r).as_posix() for p in c.discover()], "
            "'resolved': str(c.resolve('paper/rk/spiral-kutta4')), "
            "'loaded': type(c.load('paper/rk/spiral-kutta4')).__name__}))")
    res = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert Path(got["module"]).parent == site / "ocdl"
    assert Path(got["root"]) == site / "ocdl" / "problems"
    assert got["files"] == [f for f in _problem_files() if f.endswith(".toml")]
    assert Path(got["resolved"]) == site / "ocdl" / "problems" / "paper" / "rk" / "spiral-kutta4.toml"
    assert got["loaded"] == "Problem"


@pytest.mark.slow
def test_sdist_and_wheel_ship_the_catalogue(tmp_path):
    """Build the sdist from a copy of the sources, then the wheel from the unpacked sdist (as
    `python -m build` does), with the installed setuptools and no network; list both."""
    pytest.importorskip("setuptools", minversion="68")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("ocdl", "problems"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path / "dist"
    out.mkdir()

    def backend(cwd, call):
        res = subprocess.run([sys.executable, "-c", f"from setuptools import build_meta as b; print(b.{call})"],
                             cwd=cwd, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        return out / res.stdout.strip().splitlines()[-1]

    sdist = backend(src, f"build_sdist({str(out)!r})")
    with tarfile.open(sdist) as tar:
        members = [m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()]
        tar.extractall(tmp_path / "unpacked", filter="data")
    files = _problem_files()
    assert {f"problems/{f}" for f in files} <= set(members)
    assert "ocdl/py.typed" in members and "pyproject.toml" in members

    top = next((tmp_path / "unpacked").iterdir())
    wheel = backend(top, f"build_wheel({str(out)!r})")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"ocdl/problems/{f}" for f in files} <= set(names)
    assert "ocdl/py.typed" in names and "ocdl/catalogue.py" in names
    assert {n.split("/")[0] for n in names} == {"ocdl", wheel.name.split("-py3")[0] + ".dist-info"}
    py = {p.relative_to(REPO).as_posix() for p in (REPO / "ocdl").rglob("*.py") if "__pycache__" not in p.parts}
    assert py <= set(names)
