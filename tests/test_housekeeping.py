"""What a test run leaves on the disk, and what it says when the disk is too small.

A CI run failed with "No space left on device" (2026-12-06): `.ci/run` left its 2.5 GB virtual
environment behind on every run, pytest kept the last three runs' temporary folders with the
de-quantized real models in them, and every fresh nox session kept its environment.
A fresh-clone run's `latest` session failed on pip's own "[notice]" line (2026-12-07).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


@functools.cache  # nox registers each session once; a second import warns
def _noxfile() -> ModuleType:
    spec = importlib.util.spec_from_file_location("liref_noxfile", ROOT / "noxfile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("command, status", [("true", 0), ("echo broken >&2; false", 1)])
def test_ci_run_leaves_no_temporary_folder(tmp_path: Path, command: str, status: int) -> None:
    # .ci/run on a repository whose README's test command is `command`, with its own TMPDIR
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    fence = "```"
    (repo / "README.md").write_text(f"<!-- test-command -->\n{fence}bash\n{command}\n{fence}\n")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    # a stand-in `chromium` on the PATH, so that the script does not apt-get the real one
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "chromium").write_text("#!/bin/sh\n")
    (stub / "chromium").chmod(0o755)
    env = {**os.environ, "TMPDIR": str(scratch), "PATH": f"{stub}:{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    run = subprocess.run(
        ["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == status, run.stderr
    assert list(scratch.iterdir()) == [], "the CI script left its virtual environment behind"


@pytest.mark.parametrize("outcome, kept", [("pass", False), ("fail", True)])
def test_a_passing_run_removes_its_temporary_folders(
    tmp_path: Path, outcome: str, kept: bool
) -> None:
    # the project's own pytest settings (pyproject.toml), a test that writes into a session
    # folder as the real-model fixtures do; a failing run keeps its folders to look into
    (tmp_path / "test_probe.py").write_text(
        "def test_probe(tmp_path_factory):\n"
        "    (tmp_path_factory.mktemp('model') / 'weights.bin').write_bytes(b'0' * 1024)\n"
        f"    assert {outcome!r} == 'pass'\n"
    )
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
         str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), "-o", "addopts=",
         str(tmp_path / "test_probe.py")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == (0 if outcome == "pass" else 1), run.stdout + run.stderr
    left = list(scratch.rglob("weights.bin"))
    assert bool(left) == kept, left


def test_nox_says_in_one_line_when_the_disk_is_too_small(tmp_path: Path) -> None:
    noxfile = _noxfile()
    free = shutil.disk_usage(tmp_path).free / 1e9
    assert noxfile.disk_shortfall({str(tmp_path): free / 4}) is None
    # two folders on one disk add up: each fits alone, together they do not
    other = tmp_path / "other"
    other.mkdir()
    complaint = noxfile.disk_shortfall({str(tmp_path): free * 0.6, str(other): free * 0.6})
    assert complaint is not None and "\n" not in complaint
    assert str(tmp_path) in complaint and str(other) in complaint
    said = float(re.search(r"([0-9.]+) GB free", complaint).group(1))  # type: ignore[union-attr]
    assert abs(said - free) < 1, (said, free)
    assert "nox -s check" in complaint


def test_every_nox_session_checks_the_disk_and_fresh_ones_drop_their_environment() -> None:
    noxfile = _noxfile()
    source = (ROOT / "noxfile.py").read_text()
    assert set(noxfile.DISK_GB) == set(noxfile.nox.options.sessions)
    for name in noxfile.nox.options.sessions:
        body = source.split(f"def {name}(session: nox.Session) -> None:")[1].split("\n\n\n")[0]
        assert "_check_disk(session)" in body, name
        if name != "check":  # check runs in the current environment
            assert body.rstrip().endswith("_drop_venv(session)"), name


class _Session:
    """What `installed_versions` uses of a nox session, running the real interpreter: the
    output comes back as nox's ``silent=True`` gives it, stdout and stderr together, with the
    notice pip printed in a fresh-clone run's `latest` session (2026-12-07)."""

    NOTICE = "\n[notice] A new release of pip is available: 23.2.1 -> 26.1\n"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.outputs: list[str] = []

    def create_tmp(self) -> str:
        return str(self.tmp)

    def run(self, program: str, *args: str, silent: bool) -> str:
        assert program == "python" and silent
        done = subprocess.run(
            [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert done.returncode == 0, done.stdout
        self.outputs.append(done.stdout + self.NOTICE)
        return self.outputs[-1]


def test_latest_reads_the_installed_versions_whatever_pip_prints(tmp_path: Path) -> None:
    noxfile = _noxfile()
    session = _Session(tmp_path)
    got = noxfile.installed_versions(session)
    # the independent listing: pip's own, stdout alone, without its version check
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    want = {canonicalize_name(d["name"]): d["version"] for d in json.loads(listed)}
    assert got == want
    assert got["pytest"] == pytest.__version__ and "torch" in got
    # the control: the output the session hands back is not JSON on its last line
    with pytest.raises(json.JSONDecodeError):
        json.loads(session.outputs[-1].strip().splitlines()[-1])
    # a second call in the same session does not read the first one's file
    (tmp_path / "installed.json").write_text("{}")
    assert noxfile.installed_versions(session) == want
