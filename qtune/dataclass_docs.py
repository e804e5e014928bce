"""Settings documented where they are declared: the string under each dataclass field (an
attribute docstring, as vLLM's configs write them) is its help, read with ``ast`` so that
``--help``, docs/configuration.md and the code say the same thing."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from functools import cache


@cache
def _own_docs(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined where no source is kept (a REPL)
        return {}
    body = ast.parse(source).body[0].body
    docs = {}
    for statement, following in zip(body, body[1:], strict=False):
        if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """Each dataclass field's docstring, a subclass's own winning over its bases'."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_docs(klass))
    return {f.name: docs.get(f.name, "") for f in dataclasses.fields(cls)}
