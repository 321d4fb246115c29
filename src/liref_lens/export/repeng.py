"""repeng: a direction set as a ``ControlVector``, and one back as directions.

repeng (``ControlVector(model_type, directions)``, tested with 0.4.0) keeps one numpy vector
per block index ``N``; ``ControlModel(model, layer_ids).set_control(vector, coeff)`` adds
``coeff * directions[N]`` to the output of decoder block ``N`` at every position (its mask only
skips left padding). That output is this toolkit's ``resid_post`` of layer ``N`` =
``resid_pre`` of layer ``N + 1`` (tests/interop/test_repeng.py applies a converted vector with
repeng's own ``ControlModel`` and compares it with `Add`). repeng's ``export_gguf`` writes the
same indices as llama.cpp's ``direction.N`` (`liref_lens.export.llamacpp`).

repeng 0.4.0 declares ``numpy<2`` and ``transformers<5``. The numpy bound is real: repeng
uses ``np.float_`` (removed in numpy 2) when it is imported, so it needs an environment with
numpy 1.26 (and with it pandas<3 and pyarrow<25, whose newest releases need numpy 2; the
``interop`` nox session pins numpy 1.26.4, pandas 2.3.3, pyarrow 24.0.0); the transformers
bound is not: ``pip install --no-deps repeng`` works with transformers 5. It is imported only
when a conversion runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..directions import DirectionSet
from ..interventions import Op
from ._plan import residual_edits, summed_adds

__all__ = ["from_repeng", "to_repeng"]

TARGET = "a repeng ControlVector"


def _package() -> Any:
    try:
        import repeng
    except ImportError as err:
        raise ImportError(
            "this conversion needs the repeng package: pip install --no-deps repeng "
            "(it declares transformers<5 but works with 5)"
        ) from err
    except AttributeError as err:  # np.float_ in repeng 0.4.0's annotations
        raise ImportError(
            f"repeng does not import with numpy {np.__version__} ({err}); repeng 0.4.0 needs "
            'numpy<2: pip install "numpy<2" "pandas<3" "pyarrow<25" where you use repeng'
        ) from err
    return repeng


def to_repeng(
    source: DirectionSet | Op,
    *,
    model_type: str,
    layers: Sequence[int] | None = None,
    strength: float = 1.0,
) -> Any:
    """``source`` as a ``repeng.ControlVector``.

    Args:
        source: a `DirectionSet` at ``resid_pre``/``resid_post`` (converted as
            ``Add(alpha=strength)`` at ``layers``), or `Add` ops (a `Compose` of them).
        model_type: the Hugging Face ``config.model_type`` repeng records (e.g. "llama").
        layers: the model layers to convert (default: all of the set's layers).
        strength: the ``alpha`` baked into the vectors (apply with ``coeff=1``).

    Returns:
        A ``ControlVector`` with float32 numpy vectors keyed by block index; wrap the Hugging
        Face model in ``ControlModel(model, sorted(vector.directions))`` and call
        ``set_control(vector, 1.0)``.

    Example:
        With repeng installed, on the Hugging Face model of the same checkpoint:

        ```python
        from repeng import ControlModel

        cv = to_repeng(directions, model_type="llama", layers=[2], strength=2.0)
        sorted(cv.directions)  # [1]: the output of block 1 = resid_pre of layer 2
        steered = ControlModel(hf_model, sorted(cv.directions))
        steered.set_control(cv, 1.0)  # = Add(layers=[2], alpha=2.0) at resid_pre
        ```

        What a ControlVector cannot express is refused before the package is needed:

        >>> embedding = DirectionSet(torch.ones(1, 4), layers=(0,), site="resid_pre")
        >>> to_repeng(embedding, model_type="llama")
        Traceback (most recent call last):
        ...
        ValueError: a repeng ControlVector has no place for a vector at the embedding output ...
    """
    edits = residual_edits(source, target=TARGET, layers=layers, strength=strength)
    blocks = summed_adds(edits, target=TARGET)
    package = _package()
    directions = {block: vec.numpy().astype(np.float32) for block, vec in blocks.items()}
    return package.ControlVector(model_type=model_type, directions=directions)


def from_repeng(vector: Any, *, site: str = "resid_post") -> DirectionSet:
    """A ``repeng.ControlVector`` as a `DirectionSet`.

    Block ``N``'s vector becomes layer ``N`` at ``resid_post`` (or ``N + 1`` with
    ``site="resid_pre"``); ``model_type`` becomes the set's ``model_name``. The set has no
    model fingerprint, so applying it needs ``allow_transfer=True``.

    Example:
        ```python
        from repeng import ControlVector

        cv = ControlVector("llama", {5: np.ones(4, np.float32)})
        from_repeng(cv, site="resid_pre").layers  # (6,)
        ```
    """
    if site not in ("resid_pre", "resid_post"):
        raise ValueError(f"site must be 'resid_pre' or 'resid_post', not {site!r}")
    directions = vector.directions
    if not directions or any(int(n) < 0 for n in directions):
        raise ValueError(
            f"the ControlVector's layers {sorted(directions)} must be non-empty block indices "
            ">= 0 (repeng's ControlModel normalises negative ones against the model)"
        )
    order = sorted(int(n) for n in directions)
    rows = torch.stack([torch.from_numpy(np.asarray(directions[n], np.float64)) for n in order])
    shift = 1 if site == "resid_pre" else 0
    return DirectionSet(
        vectors=rows.reshape(len(order), -1),
        layers=tuple(n + shift for n in order),
        site=site,
        model_name=str(vector.model_type),
        method="repeng",
        params={"imported_from": {"package": "repeng"}},
    )
