"""How a GGUF file becomes a float32 Hugging Face folder: transformers reads and de-quantizes
it; a file it cannot read because bytes are missing or wrong is reported in one line.

Memory: the float32 model is held once while it is saved (about 4 bytes per parameter).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import struct
import traceback
from pathlib import Path
from typing import Any

from ._gguf_models import DamagedFileError

__all__ = ["check_extras", "save_dequantized", "versions"]

_EXTRA_HINT = 'pip install "liref-lens[gguf]"'


def check_extras() -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"reading GGUF files needs the package(s) {', '.join(missing)}; install them with "
            f"`{_EXTRA_HINT}`"
        )


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _read_failed(err: BaseException) -> bool:
    """Whether ``err`` was raised by a GGUF reader running out of (or misreading) the file's
    bytes: a ``struct.error`` or ``ValueError`` whose innermost Python frame is in the ``gguf``
    package's reader or transformers' own GGUF metadata reader."""
    if not isinstance(err, (struct.error, ValueError, EOFError)):
        return False
    frames = list(traceback.walk_tb(err.__traceback__))
    if not frames:
        return False
    module = str(frames[-1][0].f_globals.get("__name__", ""))
    return module.startswith("gguf.") or module.endswith("gguf.reader")


def _damaged_gguf(path: Path, err: BaseException, fix: str) -> DamagedFileError:
    module = type(err).__module__
    kind = type(err).__name__ if module == "builtins" else f"{module}.{type(err).__name__}"
    message = " ".join(f"{kind}: {err}".split())
    return DamagedFileError(
        f"the GGUF file {path} ({path.stat().st_size} bytes) is truncated or damaged and "
        f"cannot be read ({message}); {fix}"
    )


def versions() -> dict[str, str | None]:
    """The versions of the packages that made a de-quantized folder (recorded in its manifest)."""
    return {package: _version(package) for package in ("transformers", "gguf", "tokenizers")}


def save_dequantized(path: Path, out: Path, fix: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as err:
        if _read_failed(err):
            raise _damaged_gguf(path, err, fix) from None
        raise
    _as_plain(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _as_plain(model: Any) -> None:
    """Drop the GGUF quantization record: the weights are float32 now and save as such."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, False if attr == "is_quantized" else None)
            except AttributeError:  # a read-only property derived from hf_quantizer
                pass
