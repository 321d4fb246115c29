"""lm-evaluation-harness: a direction set as a ``steer_path`` file of ``lm_eval --model steered``.

lm-eval's ``steered`` model (``lm_eval/models/hf_steered.py``, lm-eval 0.4.13) loads a
Hugging Face checkpoint and a ``.pt`` file (``torch.save`` of a dict): per *hookpoint*, the
name of a module inside the model's ``base_model`` (``model.layers.3`` of a Llama is
``layers.3``), an entry ``{"steering_vector", "steering_coefficient", "action", "bias",
"head_index"}``. It registers a forward hook on that module that edits its output (the first
element of a tuple output) at every position: ``add`` adds ``coefficient * vector``; ``clamp``
sets the component along the unit vector to ``coefficient``.

**Which module output is which site**: the output of decoder block ``N`` (the ``N``-th entry of
the model's decoder-layer list: ``layers.N`` for Llama, Mistral, Qwen2, Gemma; ``h.N`` for
GPT-2) is this toolkit's ``resid_post`` of layer ``N`` = ``resid_pre`` of layer ``N + 1``
(checked by tests/test_export.py with plain forward hooks and by tests/interop/test_lm_eval.py
with lm-eval itself). ``resid_pre`` of layer 0 is not exported: the embedding module's output
is not the residual stream in every architecture (GPT-2 adds position embeddings after it,
Gemma scales it).

`to_lm_eval` exports ``Add`` as ``add`` and `ProjectOut` as ``clamp`` to 0 (the same
``h - (h . r) r``); ``Scale`` / `paper_scale`, position-limited ops and other sites are refused
(lm-eval cannot express them: run them with `liref_lens.intervene`). `from_lm_eval` reads the
``add`` entries of such a file back as a `DirectionSet`.

Memory: the decoder-layer names are found on a copy of the model built on the ``meta`` device
(no weights) when a checkpoint path is given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write
from ..directions import DirectionSet
from ..interventions import Op
from ._plan import Edit, block_output, residual_edits

__all__ = ["decoder_layers_name", "from_lm_eval", "lm_eval_hookpoint", "to_lm_eval"]

TARGET = "lm-eval's steered model"
_ACTIONS = {"add": "add", "project_out": "clamp"}


def _hf_model(model: Any) -> Any:
    """A Hugging Face causal LM from a checkpoint folder (on the meta device), a `LensModel`
    (its bridge's ``original_model``) or a Hugging Face model."""
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(os.fspath(model))
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    inner = getattr(model, "model", None)
    hf = getattr(inner, "original_model", None)
    if hf is not None:
        return hf
    if hasattr(model, "base_model") and hasattr(model, "config"):
        return model
    raise TypeError(
        "pass the model lm-eval will load: its checkpoint folder, the Hugging Face model, or "
        f"a LensModel on the TransformerBridge backend (got {type(model).__name__})"
    )


def decoder_layers_name(model: Any) -> str:
    """The name, inside ``model.base_model``, of the list of the model's decoder blocks.

    Args:
        model: a checkpoint folder, a Hugging Face model, or a bridge `LensModel`.

    Example:
        >>> decoder_layers_name(lm)
        'layers'
    """
    hf = _hf_model(model)
    n_layers = getattr(hf.config, "num_hidden_layers", None)
    found = [
        name
        for name, module in hf.base_model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers
    ]
    if len(found) != 1:
        raise ValueError(
            f"cannot tell which module list of this {type(hf).__name__} holds its {n_layers} "
            f"decoder blocks (candidates: {found}); name the hookpoints by hand"
        )
    return found[0]


def lm_eval_hookpoint(layer: int, site: str, model: Any) -> str:
    """The lm-eval hookpoint (module name) whose output is ``site`` of ``layer``.

    Example:
        >>> lm_eval_hookpoint(2, "resid_pre", lm), lm_eval_hookpoint(2, "resid_post", lm)
        ('layers.1', 'layers.2')
    """
    return _hookpoint(Edit(layer, site, "add", torch.zeros(0)), decoder_layers_name(model))


def _hookpoint(edit: Edit, layers_name: str) -> str:
    block = block_output(edit)
    if block < 0:
        raise ValueError(
            f"{TARGET} has no hookpoint for resid_pre of layer 0 (the embedding output is not "
            "the residual stream in every architecture); export layers >= 1"
        )
    return f"{layers_name}.{block}"


def to_lm_eval(
    source: DirectionSet | Op,
    path: str | os.PathLike[str],
    *,
    model: Any,
    layers: Sequence[int] | None = None,
    strength: float = 1.0,
) -> Path:
    """Write ``source`` as a ``steer_path`` ``.pt`` file for ``lm_eval --model steered``.

    Args:
        source: a `DirectionSet` at ``resid_pre``/``resid_post`` (exported as
            ``Add(alpha=strength)`` at ``layers``), or `Add` / `ProjectOut` ops (a `Compose`).
        path: the ``.pt`` file to write (atomically).
        model: the model lm-eval will load (checkpoint folder, Hugging Face model or bridge
            `LensModel`), to name its modules.
        layers: the model layers to export (default: all of the set's layers).
        strength: the ``alpha`` of the exported `Add`.

    Then: ``lm_eval --model steered --model_args pretrained=FOLDER,steer_path=FILE.pt ...``.

    Example:
        >>> path = to_lm_eval(directions, tmp / "steer.pt", model=lm, layers=[2], strength=3.0)
        >>> entry = torch.load(path, weights_only=True)["layers.1"]
        >>> entry["action"], entry["steering_coefficient"]
        ('add', 1.0)
    """
    edits = residual_edits(
        source, target=TARGET, layers=layers, strength=strength, actions=tuple(_ACTIONS)
    )
    name = decoder_layers_name(model)
    config: dict[str, dict[str, Any]] = {}
    for edit in edits:
        hook = _hookpoint(edit, name)
        action = _ACTIONS[edit.action]
        if hook in config:
            if action != "add" or config[hook]["action"] != "add":
                raise ValueError(
                    f"two ops edit {hook} (the output of block {block_output(edit)}) and one of "
                    f"them is not an Add; {TARGET} takes one action per hookpoint"
                )
            config[hook]["steering_vector"] = config[hook]["steering_vector"] + edit.vector
            continue
        config[hook] = {
            "steering_vector": edit.vector.clone(),
            # add: the vector is already alpha * v; clamp: the projection is set to 0
            "steering_coefficient": 1.0 if action == "add" else 0.0,
            "action": action,
            "bias": None,
            "head_index": None,
        }
    return atomic_write(path, lambda tmp: torch.save(config, tmp))


def from_lm_eval(
    path: str | os.PathLike[str], *, model: Any, site: str = "resid_post"
) -> DirectionSet:
    """The ``add`` entries of a ``steer_path`` ``.pt`` file as a `DirectionSet`.

    Each vector is ``coefficient * steering_vector``; hookpoint ``<layers>.N`` becomes layer
    ``N`` at ``resid_post`` (or ``N + 1`` with ``site="resid_pre"``). Entries that clamp,
    use a head index or a bias, or hook other modules are refused.

    Example:
        >>> path = to_lm_eval(directions, tmp / "steer.pt", model=lm, strength=2.0)
        >>> back = from_lm_eval(path, model=lm, site="resid_pre")
        >>> back.layers, bool(torch.allclose(back.vectors, 2 * directions.vectors))
        ((1, 2), True)
    """
    if site not in ("resid_pre", "resid_post"):
        raise ValueError(f"site must be 'resid_pre' or 'resid_post', not {site!r}")
    config = torch.load(Path(path), weights_only=True)
    if not isinstance(config, dict) or not config:
        raise ValueError(f"{path} is not a steer_path file (a dict of hookpoint -> entry)")
    name = decoder_layers_name(model)
    rows: dict[int, torch.Tensor] = {}
    for hook, entry in config.items():
        prefix, _, index = str(hook).rpartition(".")
        if prefix != name or not index.isdigit():
            raise ValueError(f"{path}: hookpoint {hook!r} is not a decoder block ({name}.N)")
        if entry.get("action") != "add" or entry.get("bias") is not None:
            raise ValueError(f"{path}: {hook} is a {entry.get('action')!r} entry, not a plain add")
        if entry.get("head_index") is not None:
            raise ValueError(f"{path}: {hook} steers one attention head, not the residual stream")
        vec = entry["steering_vector"].to(torch.float64) * float(
            entry.get("steering_coefficient", 1.0)
        )
        rows[int(index) + (1 if site == "resid_pre" else 0)] = vec
    ordered = dict(sorted(rows.items()))
    return DirectionSet(
        vectors=torch.stack(list(ordered.values())),
        layers=tuple(ordered),
        site=site,
        method="lm_eval_steer",
        params={"imported_from": {"file": Path(path).name}},
    )
