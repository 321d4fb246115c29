"""What an exporter writes: a direction set or ops, reduced to per-layer residual-stream edits.

Every format here applies a fixed edit to one residual-stream vector per layer, at every
position. `residual_edits` turns a `DirectionSet` (with layers and a strength) or `Add` /
`ProjectOut` ops into `Edit` records and refuses, with one line naming the target format, what
such a format cannot express: `Scale` (and so `paper_scale`), `NeuronShift`, position-limited
ops, and sites other than the residual stream. The vectors come from the ops' own math
(`liref_lens.interventions`), so an exported `Add` adds exactly what the hook adds.

liref_lens's own identity used by every format: ``resid_pre`` of layer ``L`` is
``resid_post`` of layer ``L - 1`` (the same tensor between two blocks). `block_output` names
an edit by the block whose output it changes; ``resid_pre`` of layer 0 (the embedding
output) has no such block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..directions import DirectionSet
from ..interventions import Add, Op, ProjectOut, layer_vector

__all__ = ["Edit", "block_output", "residual_edits", "summed_adds"]

RESIDUAL = ("resid_pre", "resid_post")


@dataclass(frozen=True)
class Edit:
    """One edit of the residual stream at ``(layer, site)``, at every position.

    ``action`` is ``"add"`` (``h + vector``) or ``"project_out"`` (``h - (h . r) r`` with
    ``vector`` the unit ``r``). ``vector`` is float32, as every target stores it.
    """

    layer: int
    site: str
    action: str
    vector: Float[Tensor, " d_model"]


def block_output(edit: Edit) -> int:
    """The block whose output ``edit`` changes: ``layer`` for resid_post, ``layer - 1`` for
    resid_pre (-1: the embedding output, before block 0).

    Example:
        >>> block_output(Edit(3, "resid_pre", "add", torch.zeros(2)))
        2
    """
    return edit.layer if edit.site == "resid_post" else edit.layer - 1


def _width(direction: Any) -> int:
    if isinstance(direction, DirectionSet):
        return direction.d_model
    if isinstance(direction, Tensor):
        return int(direction.shape[-1])
    raise TypeError(f"an op's direction must be a DirectionSet or a tensor, not {type(direction)}")


def _as_ops(
    source: DirectionSet | Op, layers: Sequence[int] | None, strength: float, target: str
) -> list[Op]:
    if isinstance(source, DirectionSet):
        if source.site not in RESIDUAL:
            why = f"site {source.site!r}" if source.site else "no site"
            raise ValueError(
                f"this direction set records {why}; {target} takes residual-stream vectors "
                "(resid_pre or resid_post): pass an Add op with sites=... to say where, or "
                "dataclasses.replace(directions, site='resid_pre') if that is where it was fitted"
            )
        chosen = tuple(source.layers) if layers is None else tuple(layers)
        return [Add(layers=chosen, sites=(source.site,), direction=source, alpha=strength)]
    if isinstance(source, Op):
        if layers is not None or strength != 1.0:
            raise ValueError(
                f"an op already says its layers and strength (alpha); pass layers= and "
                f"strength= only with a DirectionSet (exporting to {target})"
            )
        return list(source.flatten())
    raise TypeError(
        f"export a DirectionSet or an op (Add, Compose of Adds) to {target}, not {type(source)}"
    )


def residual_edits(
    source: DirectionSet | Op,
    *,
    target: str,
    layers: Sequence[int] | None = None,
    strength: float = 1.0,
    actions: Sequence[str] = ("add",),
) -> list[Edit]:
    """The edits ``source`` makes, or a ValueError naming what ``target`` cannot express.

    Args:
        source: a `DirectionSet` (exported as ``Add(alpha=strength)`` at its own site) or an
            op: `Add`, `ProjectOut` (where ``actions`` allows it) or a `Compose` of them.
        target: the format's name, for the error messages.
        layers: with a DirectionSet, the model layers to export (default: all of its layers).
        strength: with a DirectionSet, the ``alpha`` of the exported `Add`.
        actions: what the target can do besides adding ("project_out").

    Example:
        >>> ds = DirectionSet(torch.tensor([[1.0, 2.0]]), layers=(4,), site="resid_pre")
        >>> [(e.layer, e.site, e.vector.tolist()) for e in residual_edits(ds, target="x",
        ...                                                                strength=2.0)]
        [(4, 'resid_pre', [2.0, 4.0])]
    """
    out = []
    for op in _as_ops(source, layers, strength, target):
        name = type(op).__name__
        action = {Add: "add", ProjectOut: "project_out"}.get(type(op))
        if action is None or action not in actions:
            can = " or project out a direction" if "project_out" in actions else ""
            raise ValueError(
                f"{target} can only add a fixed vector{can} at every position; {name} cannot "
                "be expressed there (paper_scale is Scale ops): apply it with "
                "liref_lens.intervene, or export an Add"
            )
        if op.positions != "all":
            raise ValueError(
                f"{target} applies its vector at every position of every forward; this "
                f"{name} is limited to positions={op.positions!r}: export it with "
                "positions='all', or apply it with liref_lens.intervene"
            )
        bad = [s for s in op.sites if s not in RESIDUAL]
        if bad:
            raise ValueError(
                f"{target} edits the residual stream between blocks; site {bad[0]!r} is not "
                "exported: use a resid_pre or resid_post direction"
            )
        if not op.layers:
            raise ValueError(f"this {name} has no layers=[...]; say where {target} applies it")
        if any(layer < 0 for layer in op.layers):
            raise ValueError(
                f"{name} has negative layers {list(op.layers)}; {target} is written without a "
                "model to resolve them against: give layer indices from 0"
            )
        width = _width(op.direction)  # type: ignore[attr-defined]
        for layer in op.layers:
            for site in op.sites:
                if action == "add":
                    vec = op.edit(torch.zeros(1, 1, width), layer, site)[0, 0]
                else:
                    raw = layer_vector(op.direction, layer, op.source_layer)  # type: ignore[attr-defined]
                    raw = raw.to(torch.float64)
                    if float(raw.norm()) == 0.0:
                        raise ValueError(
                            f"the direction for layer {layer} has zero norm; {target} cannot "
                            "project it out"
                        )
                    vec = raw / raw.norm()
                out.append(Edit(layer, site, action, vec.detach().to("cpu", torch.float32)))
    return out


def summed_adds(
    edits: Sequence[Edit], *, target: str, first_block: int = 0
) -> dict[int, Float[Tensor, " d_model"]]:
    """The added vector per block output (`block_output`), adds at the same place summed.

    Raises ValueError for a block before ``first_block`` (the target has no slot there).

    Example:
        >>> e = [Edit(2, "resid_pre", "add", torch.ones(2)), Edit(1, "resid_post", "add",
        ...      torch.ones(2))]
        >>> {k: v.tolist() for k, v in summed_adds(e, target="x").items()}
        {1: [2.0, 2.0]}
    """
    out: dict[int, Tensor] = {}
    for edit in edits:
        if edit.action != "add":
            raise ValueError(f"{target} can only add vectors; {edit.action} cannot be exported")
        block = block_output(edit)
        if block < first_block:
            where = (
                "the embedding output (resid_pre of layer 0)"
                if block < 0
                else f"the output of block {block} (resid_post {block}, resid_pre {block + 1})"
            )
            raise ValueError(
                f"{target} has no place for a vector at {where}; export layers whose block "
                f"output is {first_block} or later (resid_post >= {first_block}, resid_pre >= "
                f"{first_block + 1})"
            )
        out[block] = out[block] + edit.vector if block in out else edit.vector.clone()
    return dict(sorted(out.items()))
