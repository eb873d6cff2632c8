"""A griffe extension for the API reference: ocdl's docstrings are plain text with Unicode
formulas and reST roles; render them faithfully as Markdown.

* ``:class:`~ocdl.problem.Problem``` and friends become code spans (`Problem`);
* ``a[j][i]`` is not a Markdown reference link: the brackets are escaped.
"""

import re

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`~?([^`]+)`")
_REFLINK = re.compile(r"\]\[")


def plain(text: str) -> str:
    text = _ROLE.sub(lambda m: f"`{m.group(1).split('.')[-1] if m.group(0).count('~') else m.group(1)}`", text)
    return _REFLINK.sub(r"]\\[", text)


class OcdlDocstrings(griffe.Extension):
    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
