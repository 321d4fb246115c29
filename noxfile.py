"""The project's checks. ``nox`` runs both sessions; ``nox -s check`` only the first.

- ``check``: ruff, mypy, the whole test suite (doctests of the package included), the tutorial
  notebooks in ``examples/`` (executed with nbmake) and a strict build of the documentation
  site, in the current environment (TransformerLens 4).
- ``legacy``: the test suite again in a fresh virtual environment with TransformerLens 3.9,
  the last release that has the legacy ``HookedTransformer``, restricted to that backend.
"""

from __future__ import annotations

import os
from importlib.metadata import version

import nox

nox.options.sessions = ["legacy", "check"]
nox.options.default_venv_backend = "venv"

LEGACY_TL = "transformer-lens==3.9.0"


@nox.session(venv_backend="none")
def check(session: nox.Session) -> None:
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("pytest", *session.posargs)
    # The tutorial notebooks, executed from scratch (they are stored without outputs;
    # tests/test_examples.py checks that).
    session.run("pytest", "--nbmake", "examples")
    site = os.path.join(session.create_tmp(), "site")
    session.run("mkdocs", "build", "--strict", "--site-dir", site, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def legacy(session: nox.Session) -> None:
    # The same torch release as the outer environment (on a CPU-only machine with the CPU
    # wheel available locally, pip picks that one again).
    torch_release = version("torch").split("+")[0]
    session.install(f"torch=={torch_release}")
    session.install("-e", ".[dev]", LEGACY_TL)
    session.run("pytest", *session.posargs, env={"LIREF_LENS_BACKENDS": "hooked_transformer"})
