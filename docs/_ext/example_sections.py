"""Griffe extension for the docs build: read a Google-style ``Example:`` section as examples.

The package's docstrings follow the Google style with a singular ``Example:`` heading (as
Napoleon accepts). Griffe only knows the plural ``Examples:``; a singular heading becomes an
admonition whose ``>>>`` lines render as nested block quotes. This rewrites the heading before
the docstring is parsed, so doctest blocks render as highlighted Python sessions. It changes
nothing in the package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename top-level ``Example:`` docstring sections to ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is not None and "Example:" in docstring.value:
            docstring.value = _HEADING.sub("Examples:", docstring.value)
