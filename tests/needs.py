"""What some tests need that a user's clone may lack, and how the run deals with it.

The full benchmark files (CI keeps them in ``../shared/data``) and Chromium (for the report's
rendering test) are not part of a clone. Where one is missing, the tests that need it are
deselected (root ``conftest.py``) and the run's last lines say which and how to run them.
``LIREF_LENS_REQUIRE=data,browser`` (set by ``.ci/run``) runs them anyway, so they fail where
CI lacks what it should have.

A test needs ``data`` when it uses the ``shared`` fixture (tests/test_tasks_data.py) or is
marked ``@pytest.mark.data``; it needs ``browser`` when marked ``@pytest.mark.browser``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

_ROOT = Path(__file__).parents[1]
_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def data_dir() -> Path:
    """The folder with the full benchmark files: ``$LIREF_LENS_DATA`` or ``../shared/data``."""
    return Path(os.environ.get("LIREF_LENS_DATA") or _ROOT.parent / "shared" / "data")


def browser() -> str | None:
    """A Chromium (or Chrome) on the PATH, if any."""
    return next((b for b in _BROWSERS if shutil.which(b)), None)


#: name -> (is it here?, what to do when it is not)
NEEDS: dict[str, tuple[Callable[[], bool], Callable[[], str]]] = {
    "data": (
        lambda: (data_dir() / "README.md").is_file(),
        lambda: (
            f"the full benchmark files are not in {data_dir()}; put them there (or point "
            "LIREF_LENS_DATA at them) to run these tests"
        ),
    ),
    "browser": (
        lambda: browser() is not None,
        lambda: (
            "no Chromium on the PATH; install it (Debian/Ubuntu: apt-get install chromium) "
            "to run this test"
        ),
    ),
}


def needs(item: pytest.Item) -> list[str]:
    """What a collected test needs of `NEEDS`."""
    out = [m.name for m in item.iter_markers() if m.name in NEEDS]
    if "shared" in getattr(item, "fixturenames", ()):
        out.append("data")
    return out


def missing() -> set[str]:
    """What of `NEEDS` is missing here and not required by ``LIREF_LENS_REQUIRE``."""
    required = {x.strip() for x in os.environ.get("LIREF_LENS_REQUIRE", "").split(",")}
    return {name for name, (here, _) in NEEDS.items() if name not in required and not here()}
