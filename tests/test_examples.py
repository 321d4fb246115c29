"""The tutorial notebooks in ``examples/``: committed without outputs, and well formed.

The notebooks themselves are executed by ``nox -s check`` (``pytest --nbmake examples``); this
module only checks the stored files, so it is fast and needs no kernel. Policy: a notebook is
committed with its outputs stripped (no outputs, no execution counts); CI executes it fresh.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_the_seven_tutorials_exist() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert [n[:3] for n in names] == ["01_", "02_", "03_", "04_", "05_", "06_", "07_"], names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "a tutorial without code"
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count")]
    assert not dirty, (
        f"{path.name}: code cells {dirty} hold outputs or execution counts; strip them "
        "(e.g. `jupyter nbconvert --clear-output --inplace` or nbstripout) before committing"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_what_it_teaches_and_its_run_time(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown"
    assert "**What it teaches:**" in first and "**Run time:**" in first


def test_tutorials_page_lists_every_notebook() -> None:
    page = (EXAMPLES.parent / "docs" / "tutorials.md").read_text(encoding="utf-8")
    missing = [p.name for p in NOTEBOOKS if p.name not in page]
    assert not missing, f"docs/tutorials.md does not list {missing}"
