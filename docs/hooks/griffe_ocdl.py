"""A griffe extension for the API reference: ocdl's docstrings are plain text with Unicode
formulas and reST roles; render them faithfully as Markdown.

* ``:class:`~ocdl.problem.Problem``` and friends become code spans (`Problem`);
* ``a[j][i]``, ``p^[1..N] [, ν]`` and ``y^[N](x)`` are no Markdown links: ``][``, ``] [`` and
  ``](`` are escaped outside indented blocks (which Markdown shows verbatim).
"""

import re

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`~?([^`]+)`")
_LINKISH = re.compile(r"\]([ \t]?)([\[(])")  # "[a] [b]" is a reference link too


def plain(text: str) -> str:
    text = _ROLE.sub(lambda m: f"`{m.group(1).split('.')[-1] if m.group(0).count('~') else m.group(1)}`", text)
    lines = [line if line.startswith("    ") else _LINKISH.sub(r"]\1\\\2", line) for line in text.split("\n")]
    return "\n".join(lines)


class OcdlDocstrings(griffe.Extension):
    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
