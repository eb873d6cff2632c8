"""The Python code on the documentation pages and in the README runs as written (each page's blocks in order, in
one namespace), in a scratch directory."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["docs/python-api.md", "docs/extending.md", "README.md"]


def blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)


@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs(page, tmp_path, monkeypatch, capsys):
    code = blocks(page)
    assert code, f"{page} has no python blocks"
    monkeypatch.chdir(tmp_path)
    # the pages register fields, losses and engines at run time: restore the tables afterwards
    from ocdl import fields, loss
    from ocdl.engine import base

    base.names()
    saved = [(t, dict(t)) for t in (fields.FIELDS, loss.LOSSES, base._REGISTRY)]
    ns: dict = {"__name__": "__docs__"}
    try:
        for i, src in enumerate(code):
            exec(compile(src, f"{page}[block {i}]", "exec"), ns)
    finally:
        for table, old in saved:
            table.clear()
            table.update(old)
