"""Interventions at hook points: small immutable ops that edit activations during a forward.

Ops (each at chosen ``layers``, ``sites`` and ``positions``):

- `Add`: ``h + alpha * v``, with ``v`` the raw direction (``scale="raw"``, the direction's
  natural unit: alpha = 1 moves the negative-class mean onto the positive one for a
  difference-in-means), the unit direction (``"unit"``), or the unit direction times the mean
  residual norm at that layer (``"resid_norm"``, give ``norms``);
- `ProjectOut`: ``h - (h . r) r`` with ``r`` the unit direction;
- `Scale`: ``h + alpha * (h . r) r`` (the paper's released operation; `paper_scale` places it
  at the block input, attention output and MLP output of every layer);
- `NeuronShift`: ``h[i] + delta_i`` for chosen ``mlp_post`` neurons.

Ops compose with ``+`` (or `Compose`). `intervene` applies them in a context manager that
removes every hook on exit (also when the body raises), counts how often each hook fired and
raises if one never fired. Hooks return new tensors; they never write into the activations.

Position rules: ``"all"`` (every real token of every forward), ``"prompt"`` (prompt tokens
only), ``"generated"`` (generated tokens only), or a selector from `liref_lens.positions`
(resolved on the prompt; never applied to generated tokens). They are resolved from the
`StepInfo` that `LensModel.forward` and `liref_lens.generate` set, so they hold across
KV-cached decode steps. A forward run outside those (calling the TransformerLens model
directly) is taken as one unpadded prompt.

Every engine runs an op through the same hook body, `apply_op`: the TransformerLens hook
points here (`attach`), and the Hugging Face modules in `liref_lens.generate`'s direct path
(`liref_lens._hfdirect`). A handle builds each position mask once per forward pass and rule,
and shares it between its hooks.

Memory: an op holds its direction vectors, plus a float32 copy (and unit vector) per layer and
device made on first use, so the zero-norm check syncs once per op, not on every forward; a
hook allocates one activation-sized tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor

from .model import LensModel
from .positions import Position, StepInfo, current_step

__all__ = [
    "Add",
    "Compose",
    "InterventionHandle",
    "NeuronShift",
    "Op",
    "ProjectOut",
    "Scale",
    "attach",
    "intervene",
    "paper_scale",
]

PositionRule = str | Position
_RULES = ("all", "prompt", "generated")


def _window_mask(rule: PositionRule, act: Tensor) -> Bool[Tensor, "batch pos"]:
    """Which positions of the current forward's input the rule selects."""
    b, s = act.shape[0], act.shape[1]
    step = current_step()
    if step is None or step.attention_mask.shape[0] != b:
        step = StepInfo(torch.ones((b, s), dtype=torch.long, device=act.device), 0, s)
    full = step.attention_mask.to(act.device)
    real = full[:, step.start : step.start + s].bool()
    cols = torch.arange(step.start, step.start + s, device=act.device)
    if rule == "all":
        return real
    if rule == "prompt":
        return real & (cols < step.prompt_width)[None]
    if rule == "generated":
        return real & (cols >= step.prompt_width)[None]
    if isinstance(rule, str):
        raise ValueError(f"unknown position rule {rule!r}; use {_RULES} or a selector")
    chosen = torch.zeros_like(full, dtype=torch.bool)
    prompt_mask = full[:, : step.prompt_width]
    rows = list(step.row_ids) if step.row_ids is not None else None
    chosen[:, : step.prompt_width] = rule.select(prompt_mask, rows).mask((b, step.prompt_width))
    return chosen[:, step.start : step.start + s] & real


class _Masks:
    """The position masks of the forward pass now running, each built once.

    A mask depends only on the rule, the current `StepInfo` and the activation's batch, width
    and device, so the hooks of one forward (`paper_scale`: three per layer) share it instead
    of rebuilding it in every hook. Where the mask lives on the CPU, it also records whether it
    selects every position or none, so a hook can skip the multiplication or the whole edit
    (on an accelerator that test would wait for the device, so the mask is always applied).
    """

    def __init__(self) -> None:
        self._step: StepInfo | None = None
        self._cache: dict[tuple[Any, ...], tuple[Tensor, str]] = {}

    def get(self, rule: PositionRule, act: Tensor) -> tuple[Tensor, str]:
        """``(mask, extent)``: extent ``"all"``, ``"none"`` or ``"some"`` (also: unknown)."""
        step = current_step()
        if step is not self._step:
            self._step, self._cache = step, {}
        key = (rule if isinstance(rule, str) else id(rule), act.shape[0], act.shape[1], act.device)
        hit = self._cache.get(key)
        if hit is None:
            mask = _window_mask(rule, act)
            extent = "some"
            if mask.device.type == "cpu":
                extent = "all" if bool(mask.all()) else "none" if not bool(mask.any()) else "some"
            hit = self._cache[key] = (mask, extent)
        return hit

    def clear(self) -> None:
        self._step, self._cache = None, {}


def apply_op(op: Op, act: Tensor, layer: int, site: str, masks: _Masks) -> Tensor:
    """``act`` with ``op``'s edit added at the positions its rule selects (a new tensor).

    The one hook body of every engine: the bridge's hook points and the direct Hugging Face
    path (`liref_lens._hfdirect`) both call it, so an op computes the same numbers on both.
    Where the rule selects every position, ``delta * 1`` is skipped (it is exact); where it
    selects none, the activation is returned unchanged.
    """
    mask, extent = masks.get(op.positions, act)
    if extent == "none":
        return act
    delta = op.edit(act, layer, site)
    if extent == "all":
        return act + delta.to(act.dtype)
    return act + (delta * mask[..., None]).to(act.dtype)


def layer_vector(direction: Any, layer: int, source_layer: int | None) -> Tensor:
    """The vector an op uses at ``layer``: from a DirectionSet, a [layer, d] or a [d] tensor."""
    src = layer if source_layer is None else source_layer
    if isinstance(direction, Tensor):
        if direction.ndim == 1:
            return direction
        if direction.ndim == 2:
            if not -direction.shape[0] <= src < direction.shape[0]:
                raise ValueError(
                    f"the direction tensor has {direction.shape[0]} rows, none for layer {src}; "
                    "pass the DirectionSet, or a [n_layers, d] tensor"
                )
            return direction[src]
        raise ValueError(f"a direction tensor must be [d] or [layer, d], got {direction.shape}")
    if src not in direction.layers:
        raise ValueError(
            f"the direction set has no vector for layer {src} (fitted at layers "
            f"{tuple(direction.layers)}); apply it at those layers, or pass source_layer= to "
            "use one fitted layer's vector elsewhere"
        )
    return direction.at(src)


def check_direction_rows(direction: Any, model: LensModel) -> None:
    """Raise unless a 2-D direction tensor has one row per model layer.

    Rows of a ``[k, d]`` tensor are read by model layer, so the rows of a subset (e.g.
    ``ds.vectors`` of a set fitted at layers 1 and 2) would apply the wrong layer's vector.

    Example:
        >>> check_direction_rows(torch.zeros(2, lm.d_model), lm)
        Traceback (most recent call last):
        ...
        ValueError: the direction tensor has 2 rows but the model has 3 layers; ...
    """
    if isinstance(direction, Tensor) and direction.ndim == 2:
        if direction.shape[0] != model.n_layers:
            raise ValueError(
                f"the direction tensor has {direction.shape[0]} rows but the model has "
                f"{model.n_layers} layers; its rows are read by model layer, so pass the "
                "DirectionSet (which knows its layers), or a [n_layers, d] tensor"
            )


def _finite(value: float, what: str) -> None:
    if not math.isfinite(float(value)):
        raise ValueError(f"{what} must be a finite number, got {value}")


@dataclass(frozen=True, kw_only=True)
class Op:
    """Base of all ops: where it applies. Subclasses define `edit`. Arguments are keywords."""

    layers: Sequence[int] = ()
    sites: Sequence[str] = ("resid_pre",)
    positions: PositionRule = "all"

    def __post_init__(self) -> None:
        if isinstance(self.layers, int):
            object.__setattr__(self, "layers", (self.layers,))
        if isinstance(self.sites, str):
            object.__setattr__(self, "sites", (self.sites,))
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        object.__setattr__(self, "sites", tuple(self.sites))
        if isinstance(self.positions, str) and self.positions not in _RULES:
            raise ValueError(
                f"unknown position rule {self.positions!r}; use {_RULES} or a selector"
            )

    def edit(self, act: Tensor, layer: int, site: str) -> Tensor:
        """The change to add to ``act`` ([batch, pos, width]) at ``layer``/``site``."""
        raise NotImplementedError

    def flatten(self) -> tuple[Op, ...]:
        return (self,)

    def __add__(self, other: Op) -> Compose:
        return Compose(ops=(*self.flatten(), *other.flatten()))

    def check(self, model: LensModel) -> None:
        """Raise if this op cannot apply to ``model`` (layers, sites, widths, provenance)."""
        if not self.layers:
            raise ValueError(f"{type(self).__name__} needs layers=[...] to say where to apply")
        for layer in self.layers:
            for site in self.sites:
                model.hook_name(layer, site)


@dataclass(frozen=True, kw_only=True)
class _DirectionOp(Op):
    direction: Any = None
    source_layer: int | None = None
    allow_transfer: bool = False

    def check(self, model: LensModel) -> None:
        super().check(model)
        if self.direction is None:
            raise ValueError(f"{type(self).__name__} needs a direction")
        check_direction_rows(self.direction, model)
        if hasattr(self.direction, "check_compatible"):
            self.direction.check_compatible(model, allow_transfer=self.allow_transfer)
        for layer in self.layers:
            v = layer_vector(self.direction, model.resolve_layer(layer), self.source_layer)
            for site in self.sites:
                if v.shape[-1] != model.width(site):
                    raise ValueError(
                        f"direction has width {v.shape[-1]} but site {site!r} of this model has "
                        f"width {model.width(site)}; fit the direction on this model and site"
                    )
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"direction for layer {layer} contains NaN or inf")

    # (layer, kind, device) -> float32 vector; filled on first use, so a hook checks the norm
    # (a device sync) once per op instead of on every forward
    _vectors: dict[tuple[int, str, Any], Tensor] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def raw(self, layer: int, like: Tensor) -> Tensor:
        """The direction's vector for ``layer`` as float32 on ``like``'s device (cached)."""
        key = (layer, "raw", like.device)
        if key not in self._vectors:
            self._vectors[key] = layer_vector(self.direction, layer, self.source_layer).to(
                like.device, torch.float32
            )
        return self._vectors[key]

    def unit(self, layer: int, like: Tensor) -> Tensor:
        """The unit vector of the direction for ``layer`` on ``like``'s device (cached)."""
        key = (layer, "unit", like.device)
        if key not in self._vectors:
            v = self.raw(layer, like)
            norm = v.norm()
            if float(norm) == 0.0:
                raise ValueError(
                    f"the direction for layer {layer} has zero norm; it has no unit vector "
                    "(drop that layer or refit on data where the classes differ)"
                )
            self._vectors[key] = v / norm
        return self._vectors[key]


@dataclass(frozen=True, kw_only=True)
class Add(_DirectionOp):
    """``h + alpha * v``; ``scale`` says what ``v`` is ("raw", "unit" or "resid_norm")."""

    alpha: float = 1.0
    scale: str = "raw"
    norms: Mapping[int, float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _finite(self.alpha, "alpha")
        for layer, norm in (self.norms or {}).items():
            _finite(norm, f"norms[{layer}]")

    def edit(self, act: Tensor, layer: int, site: str) -> Tensor:
        if self.scale == "raw":
            v = self.raw(layer, act)
        elif self.scale == "unit":
            v = self.unit(layer, act)
        elif self.scale == "resid_norm":
            if self.norms is None or layer not in self.norms:
                raise ValueError(f"scale='resid_norm' needs norms={{layer: mean norm}} for {layer}")
            v = self.unit(layer, act) * float(self.norms[layer])
        else:
            raise ValueError(f"unknown scale {self.scale!r}; use 'raw', 'unit' or 'resid_norm'")
        return (self.alpha * v).expand_as(act)


@dataclass(frozen=True, kw_only=True)
class ProjectOut(_DirectionOp):
    """``h - (h . r) r``: remove the component along the unit direction ``r``."""

    def edit(self, act: Tensor, layer: int, site: str) -> Tensor:
        r = self.unit(layer, act)
        return -(act.float() @ r)[..., None] * r


@dataclass(frozen=True, kw_only=True)
class Scale(_DirectionOp):
    """``h + alpha * (h . r) r`` with ``r`` the unit direction (the paper's operation)."""

    alpha: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _finite(self.alpha, "alpha")

    def edit(self, act: Tensor, layer: int, site: str) -> Tensor:
        r = self.unit(layer, act)
        return self.alpha * (act.float() @ r)[..., None] * r


@dataclass(frozen=True, kw_only=True)
class NeuronShift(Op):
    """``h[i] + delta_i`` at ``mlp_post`` for the neurons ``shifts[layer] = (indices, deltas)``."""

    shifts: Mapping[int, tuple[Sequence[int], Sequence[float]]] = field(default_factory=dict)
    sites: tuple[str, ...] = ("mlp_post",)

    def __post_init__(self) -> None:
        if not self.layers:
            object.__setattr__(self, "layers", tuple(self.shifts))
        super().__post_init__()
        for layer, (_, deltas) in self.shifts.items():
            for delta in deltas:
                _finite(delta, f"the shift of a neuron at layer {layer}")

    def edit(self, act: Tensor, layer: int, site: str) -> Tensor:
        idx, deltas = self.shifts[layer]
        delta = torch.zeros(act.shape[-1], dtype=torch.float32, device=act.device)
        delta[torch.as_tensor(list(idx), device=act.device, dtype=torch.long)] = torch.as_tensor(
            list(deltas), dtype=torch.float32, device=act.device
        )
        return delta.expand_as(act)

    def check(self, model: LensModel) -> None:
        if tuple(self.layers) != tuple(self.shifts):
            raise ValueError("NeuronShift layers must equal the keys of shifts (or be left out)")
        super().check(model)
        for layer, (idx, deltas) in self.shifts.items():
            if len(idx) != len(deltas):
                raise ValueError(f"layer {layer}: {len(idx)} neurons but {len(deltas)} deltas")
            bad = [i for i in idx if not 0 <= int(i) < model.d_mlp]
            if bad:
                raise ValueError(f"neurons {bad} at layer {layer} are outside 0..{model.d_mlp - 1}")


@dataclass(frozen=True, kw_only=True)
class Compose(Op):
    """Several ops applied together, in order."""

    ops: tuple[Op, ...] = ()

    def flatten(self) -> tuple[Op, ...]:
        return tuple(o for op in self.ops for o in op.flatten())


def paper_scale(direction: Any, alpha: float, model: LensModel, source_layer: int) -> Compose:
    """The paper's placement: `Scale` by one layer's direction at every layer's block input,
    attention output and MLP output.

    Example:
        >>> op = paper_scale(directions, 0.5, lm, source_layer=1)
        >>> len(op.flatten())  # Scale at resid_pre, attn_out and mlp_out of every layer
        3
    """
    layers = tuple(range(model.n_layers))
    return Compose(
        ops=tuple(
            Scale(
                layers=layers,
                sites=(site,),
                direction=direction,
                alpha=alpha,
                source_layer=source_layer,
            )
            for site in ("resid_pre", "attn_out", "mlp_out")
        )
    )


class InterventionHandle:
    """Hooks of some ops on a model; `remove()` takes them off. Made by `attach`."""

    def __init__(self, model: LensModel, ops: Sequence[Op]) -> None:
        self.model = model
        self.ops = tuple(o for op in ops for o in op.flatten())
        if not self.ops:
            raise ValueError("no ops given; pass at least one intervention")
        for op in self.ops:
            op.check(model)
        #: how many times each (op index, layer, site) hook fired
        self.counts: dict[tuple[int, int, str], int] = {}
        self._context: Any = None
        self._handles: list[tuple[Any, Any]] = []
        self._masks = _Masks()

    def edits(self) -> list[tuple[int, str, Callable[[Tensor], Tensor]]]:
        """``(layer, site, edit)`` for every hook of these ops, in the order they apply.

        ``edit(act)`` counts the call in `counts` and returns the edited activation
        (`apply_op`). An engine registers these where the sites live: `attach` on the
        TransformerLens hook points, `liref_lens._hfdirect` on the Hugging Face modules.
        """
        out = []
        for i, op in enumerate(self.ops):
            for layer in op.layers:
                for site in op.sites:
                    resolved = layer % self.model.n_layers
                    key = (i, resolved, site)
                    self.counts[key] = 0
                    out.append((resolved, site, self._edit(key, op, resolved, site)))
        return out

    def _edit(self, key: tuple[int, int, str], op: Op, layer: int, site: str) -> Any:
        counts, masks = self.counts, self._masks

        def edit(act: Tensor) -> Tensor:
            counts[key] += 1
            return apply_op(op, act, layer, site, masks)

        return edit

    def attach(self) -> InterventionHandle:
        hooks = [
            (self.model.hook_name(layer, site), _hook_point_fn(edit))
            for layer, site, edit in self.edits()
        ]
        if self.model.backend == "bridge":
            # the bridge's context removes exactly the handles it added, in any order
            self._context = self.model.hooks(hooks)
            self._context.__enter__()
            return self
        # TransformerLens 3.x contexts remove hooks by nesting level, which takes off another
        # handle's hooks when handles are removed out of order: register on the hook points
        # and remove exactly the handles added here.
        self._handles = []
        try:
            for name, fn in hooks:
                point = self.model.model.hook_dict[name]
                known = {id(h) for h in point.fwd_hooks}
                point.add_hook(fn, dir="fwd")
                added = [h for h in point.fwd_hooks if id(h) not in known]
                self._handles.extend((point, h) for h in added)
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Take this handle's hooks off (and only those); calling it again does nothing."""
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)
        handles, self._handles = self._handles, []
        for point, handle in handles:
            handle.hook.remove()
            point.fwd_hooks = [h for h in point.fwd_hooks if h is not handle]
        self._masks.clear()

    def never_fired(self) -> list[tuple[int, int, str]]:
        return [key for key, n in self.counts.items() if n == 0]


def attach(model: LensModel, *ops: Op) -> InterventionHandle:
    """Attach ops and return the handle; call ``handle.remove()`` when done."""
    return InterventionHandle(model, ops).attach()


@contextmanager
def intervene(model: LensModel, *ops: Op, strict: bool = True) -> Iterator[InterventionHandle]:
    """Apply ``ops`` to every forward pass run inside the block.

    Hooks are removed on exit, also when the body raises. With ``strict`` (default), a hook
    that never fired during the block raises (e.g. a layer the forward never reached).

    Example:
        >>> with intervene(lm, Add(layers=[2], direction=ds, alpha=1.0)) as h:
        ...     logits = lm.forward(lm.tokenize(prompts))
        >>> h.counts  # (op, layer, site): times the hook fired
        {(0, 2, 'resid_pre'): 1}
    """
    handle = attach(model, *ops)
    try:
        yield handle
    finally:
        handle.remove()
    if strict:
        check_fired(handle)


def _hook_point_fn(edit: Callable[[Tensor], Tensor]) -> Callable[[Tensor, Any], Tensor]:
    """A TransformerLens hook (``fn(act, hook)``) around an edit."""

    def hook(act: Tensor, hook: Any) -> Tensor:
        return edit(act)

    return hook


def check_fired(handle: InterventionHandle) -> None:
    """Raise if a hook of ``handle`` never fired (the forward never reached its site)."""
    silent = handle.never_fired()
    if silent:
        desc = ", ".join(
            f"{type(handle.ops[i]).__name__} at layer {lay} {s}" for i, lay, s in silent
        )
        raise RuntimeError(
            f"intervention never fired: {desc}; the forward never reached that hook "
            "(stopped early, or no forward ran in the block)"
        )
