"""steering-vectors: a direction set as a ``SteeringVector``, and one back as directions.

The steering-vectors package (``SteeringVector(layer_activations, layer_type)``, tested with
0.12.2) adds ``multiplier * layer_activations[N]`` to the output of the ``N``-th module of
``layer_type`` at every position (unless ``min_token_index`` / ``token_indices`` limit it).
For ``layer_type="decoder_block"`` the output of block ``N`` is this toolkit's ``resid_post``
of layer ``N`` = ``resid_pre`` of layer ``N + 1`` (tests/interop/test_steering_vectors.py
applies a converted vector with steering-vectors' own ``apply`` and compares it with `Add`).
Only decoder-block vectors are converted: its ``self_attn`` / ``mlp`` outputs are not the
same tensors as this toolkit's ``attn_out`` / ``mlp_out`` in every architecture.

steering-vectors declares ``transformers<5``; its ``apply`` works with transformers 5 when it
is installed with ``pip install --no-deps steering-vectors``. It is imported only when a
conversion runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..directions import DirectionSet
from ..interventions import Op
from ._plan import residual_edits, summed_adds

__all__ = ["from_steering_vector", "to_steering_vector"]

TARGET = "a steering-vectors SteeringVector"
LAYER_TYPE = "decoder_block"


def _package() -> Any:
    try:
        import steering_vectors
    except ImportError as err:
        raise ImportError(
            "this conversion needs the steering-vectors package: "
            "pip install --no-deps steering-vectors (it declares transformers<5 but works with 5)"
        ) from err
    return steering_vectors


def to_steering_vector(
    source: DirectionSet | Op, *, layers: Sequence[int] | None = None, strength: float = 1.0
) -> Any:
    """``source`` as a ``steering_vectors.SteeringVector`` on decoder-block outputs.

    Args:
        source: a `DirectionSet` at ``resid_pre``/``resid_post`` (converted as
            ``Add(alpha=strength)`` at ``layers``), or `Add` ops (a `Compose` of them).
        layers: the model layers to convert (default: all of the set's layers).
        strength: the ``alpha`` baked into the vectors (apply with ``multiplier=1``).

    Returns:
        A ``SteeringVector`` with ``layer_type="decoder_block"`` and float32 vectors; apply it
        with ``with vector.apply(hf_model): ...``.

    Example:
        With steering-vectors installed, on the Hugging Face model of the same checkpoint:

        ```python
        sv = to_steering_vector(directions, layers=[2], strength=2.0)
        sv.layer_type, sorted(sv.layer_activations)  # ('decoder_block', [1])
        with sv.apply(hf_model):
            logits = hf_model(input_ids).logits  # = Add(layers=[2], alpha=2.0) at resid_pre
        ```

        What a SteeringVector cannot express is refused before the package is needed:

        >>> from liref_lens import ProjectOut
        >>> to_steering_vector(ProjectOut(layers=[2], direction=directions))
        Traceback (most recent call last):
        ...
        ValueError: a steering-vectors SteeringVector can only add a fixed vector at every ...
    """
    edits = residual_edits(source, target=TARGET, layers=layers, strength=strength)
    blocks = summed_adds(edits, target=TARGET)
    package = _package()
    return package.SteeringVector(layer_activations=blocks, layer_type=LAYER_TYPE)


def from_steering_vector(
    vector: Any, *, site: str = "resid_post", model_name: str = ""
) -> DirectionSet:
    """A decoder-block ``SteeringVector`` as a `DirectionSet`.

    Block ``N``'s vector becomes layer ``N`` at ``resid_post`` (or ``N + 1`` with
    ``site="resid_pre"``). steering-vectors records no model, so give ``model_name`` for the
    provenance; the set has no fingerprint, so applying it needs ``allow_transfer=True``.

    Example:
        ```python
        from steering_vectors import SteeringVector

        sv = SteeringVector({3: torch.ones(4)}, "decoder_block")
        from_steering_vector(sv, site="resid_pre").layers  # (4,)
        ```
    """
    if site not in ("resid_pre", "resid_post"):
        raise ValueError(f"site must be 'resid_pre' or 'resid_post', not {site!r}")
    if vector.layer_type != LAYER_TYPE:
        raise ValueError(
            f"this SteeringVector steers {vector.layer_type!r} outputs; only 'decoder_block' "
            "vectors are residual-stream directions"
        )
    acts = vector.layer_activations
    if not acts or any(int(n) < 0 for n in acts):
        raise ValueError(
            f"the SteeringVector's layers {sorted(acts)} must be non-empty block indices >= 0"
        )
    shift = 1 if site == "resid_pre" else 0
    order = sorted(int(n) for n in acts)
    rows = torch.stack([torch.as_tensor(acts[n]).detach().cpu().to(torch.float64) for n in order])
    return DirectionSet(
        vectors=rows.reshape(len(order), -1),
        layers=tuple(n + shift for n in order),
        site=site,
        model_name=model_name,
        method="steering_vectors",
        params={"imported_from": {"package": "steering-vectors", "layer_type": LAYER_TYPE}},
    )
