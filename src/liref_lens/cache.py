"""Batched, padding-correct reading of activations at chosen layers, sites and positions.

`cache_activations` runs the model over prompts in length-sorted batches and, **inside each
hook**, reduces the activation to the chosen positions, so memory is
O(n_prompts x layers x width) whatever the sequence length (``every()`` keeps one row per
real token). The forward pass stops as soon as the last requested hook has fired: later
blocks and the unembedding are never run. Attention patterns are never stored.

`stream_activations` feeds the same reduced vectors into a `RunningStats` of per-class float64
sums, counts and (optionally) sums of squares, so the class means of millions of prompts need
constant memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from .model import Batch, LensModel
from .positions import Position, Selection, last

__all__ = ["Activations", "RunningStats", "cache_activations", "stream_activations"]


@dataclass(frozen=True)
class Activations:
    """Reduced activations of ``n`` rows at some layers and sites, with their provenance.

    ``data[site]`` has shape ``[n, len(layers), width]``; row ``i`` came from prompt
    ``prompt_index[i]`` (the identity for ``last()``, ``mean()`` and ``at(i)``; for
    ``every()`` one row per real token, ``token_rank`` giving its index among the prompt's
    real tokens).
    """

    data: dict[str, Float[Tensor, "n layer width"]]
    layers: tuple[int, ...]
    position: str
    prompt_index: Int[Tensor, " n"]
    token_rank: Int[Tensor, " n"]
    n_prompts: int
    model_fingerprint: str = ""
    model_name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(self.data)

    @property
    def site(self) -> str:
        """The site, when there is exactly one."""
        if len(self.data) != 1:
            raise ValueError(
                f"these activations hold sites {self.sites}; pick one with .select_site(site)"
            )
        return next(iter(self.data))

    @property
    def tensor(self) -> Float[Tensor, "n layer width"]:
        """The ``[n, layer, width]`` tensor, when there is exactly one site."""
        return self.data[self.site]

    def __getitem__(self, site: str) -> Tensor:
        if site not in self.data:
            raise KeyError(f"no site {site!r} in these activations; they hold {self.sites}")
        return self.data[site]

    def __len__(self) -> int:
        return int(self.prompt_index.shape[0])

    def layer_position(self, layer: int) -> int:
        """Index along the layer axis of model layer ``layer``."""
        if layer not in self.layers:
            raise KeyError(f"layer {layer} was not cached; cached layers are {self.layers}")
        return self.layers.index(layer)

    def at_layer(self, layer: int, site: str | None = None) -> Float[Tensor, "n width"]:
        """Rows at one model layer (of the only site, or of ``site``)."""
        return self[site or self.site][:, self.layer_position(layer)]

    def select_site(self, site: str) -> Activations:
        return _replace(self, data={site: self[site]})

    def subset(self, rows: Sequence[int] | Tensor) -> Activations:
        """The rows ``rows`` (indices or a boolean mask), provenance kept."""
        idx = torch.as_tensor(rows)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        idx = idx.long()
        return _replace(
            self,
            data={s: t[idx] for s, t in self.data.items()},
            prompt_index=self.prompt_index[idx],
            token_rank=self.token_rank[idx],
        )


def _replace(acts: Activations, **changes: Any) -> Activations:
    fields = {k: getattr(acts, k) for k in acts.__dataclass_fields__}
    fields.update(changes)
    return Activations(**fields)


class RunningStats:
    """Streaming per-class float64 sums and counts (and optionally sums of squares).

    Args:
        classes: class names, e.g. ``("reasoning", "memory")``.
        shape: shape of one vector, e.g. ``(n_layers, d_model)``.
        second_moments: also accumulate per-coordinate sums of squares (for variances).

    Example:
        >>> import torch
        >>> rs = RunningStats(("a", "b"), (2,))
        >>> rs.update(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), ["a", "a", "b"])
        >>> rs.mean("a").tolist()
        [2.0, 3.0]
    """

    def __init__(
        self, classes: Sequence[str], shape: Sequence[int], *, second_moments: bool = False
    ) -> None:
        if len(classes) == 0 or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be distinct names, got {list(classes)}")
        self.classes = tuple(classes)
        self.shape = tuple(int(s) for s in shape)
        self.sums = torch.zeros((len(classes), *self.shape), dtype=torch.float64)
        self.counts = torch.zeros(len(classes), dtype=torch.long)
        self.sq_sums = (
            torch.zeros((len(classes), *self.shape), dtype=torch.float64)
            if second_moments
            else None
        )

    def _class_ids(self, labels: Sequence[str] | Tensor, n: int) -> Tensor:
        if isinstance(labels, Tensor):
            ids = labels.long().cpu()
        else:
            unknown = sorted({str(lab) for lab in labels} - set(self.classes))
            if unknown:
                raise KeyError(f"unknown labels {unknown}; classes are {self.classes}")
            ids = torch.tensor([self.classes.index(str(lab)) for lab in labels], dtype=torch.long)
        if ids.shape != (n,):
            raise ValueError(f"got {ids.shape[0]} labels for {n} vectors")
        if n and (ids.min() < 0 or ids.max() >= len(self.classes)):
            raise ValueError(f"label ids must be in 0..{len(self.classes) - 1}")
        return ids

    def update(self, x: Tensor, labels: Sequence[str] | Tensor) -> None:
        """Add vectors ``x`` (``[n, *shape]``) with one class label (name or id) each."""
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"vectors have shape {tuple(x.shape[1:])}, expected {self.shape}")
        x64 = x.detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(x64).all()):
            raise ValueError("vectors contain NaN or inf; check the model's dtype and inputs")
        ids = self._class_ids(labels, x.shape[0])
        self.sums.index_add_(0, ids, x64)
        self.counts += torch.bincount(ids, minlength=len(self.classes))
        if self.sq_sums is not None:
            self.sq_sums.index_add_(0, ids, x64 * x64)

    def merge(self, other: RunningStats) -> RunningStats:
        """Fold another accumulator of the same classes and shape into this one."""
        if other.classes != self.classes or other.shape != self.shape:
            raise ValueError("can only merge RunningStats with the same classes and shape")
        self.sums += other.sums
        self.counts += other.counts
        if self.sq_sums is not None:
            if other.sq_sums is None:
                raise ValueError("the other RunningStats has no second moments")
            self.sq_sums += other.sq_sums
        return self

    def _index(self, cls: str) -> int:
        if cls not in self.classes:
            raise KeyError(f"unknown class {cls!r}; classes are {self.classes}")
        i = self.classes.index(cls)
        if int(self.counts[i]) == 0:
            raise ValueError(f"class {cls!r} is empty: no vectors were added for it")
        return i

    def count(self, cls: str) -> int:
        return int(self.counts[self.classes.index(cls)])

    def mean(self, cls: str) -> Tensor:
        """Float64 mean of one class."""
        i = self._index(cls)
        return self.sums[i] / self.counts[i]

    def var(self, cls: str) -> Tensor:
        """Float64 per-coordinate population variance of one class (needs second moments)."""
        if self.sq_sums is None:
            raise ValueError("variance needs RunningStats(..., second_moments=True)")
        i = self._index(cls)
        m = self.sums[i] / self.counts[i]
        return (self.sq_sums[i] / self.counts[i] - m * m).clamp_min(0)


class _StopForward(Exception):
    """Raised by the last needed hook so the rest of the forward pass is skipped."""


@dataclass(frozen=True)
class _Chunk:
    data: dict[str, Tensor]  # site -> [n_out, layer, width]
    out_prompt: Tensor  # [n_out] index into the caller's prompt list
    token_rank: Tensor  # [n_out]


def _check_sites(lm: LensModel, sites: Sequence[str] | str) -> list[str]:
    if isinstance(sites, str):
        sites = [sites]
    sites = list(sites)
    if not sites:
        raise ValueError("sites is empty; pass at least one site, e.g. ('resid_pre',)")
    if len(set(sites)) != len(sites):
        raise ValueError(f"sites {sites} name the same site twice")
    for layer_site in sites:
        lm.hook_name(0, layer_site)  # raises a KeyError naming the valid sites
    return sites


def _capture(
    lm: LensModel,
    batch: Batch,
    sel: Selection,
    plan: list[tuple[int, int, str]],
    names: dict[tuple[int, str], str],
    dtype: torch.dtype,
    row_ids: list[int],
) -> dict[str, Tensor]:
    """One forward pass that stores each planned (layer, site) reduced to ``sel``."""
    reduce_dtype = torch.promote_types(dtype, torch.float32)
    sites = dict.fromkeys(site for _, _, site in plan)
    n_layers = len({li for li, _, _ in plan})
    out = {
        site: torch.empty((sel.n_out, n_layers, lm.width(site)), dtype=dtype, device=lm.device)
        for site in sites
    }
    fired: set[tuple[int, str]] = set()

    def make_hook(li: int, layer: int, site: str) -> Any:
        def hook(act: Tensor, hook: Any) -> None:
            target = out[site]
            target[:, li] = sel.reduce(act, reduce_dtype).to(target.device, dtype)
            fired.add((layer, site))
            if len(fired) == len(plan):
                raise _StopForward

        return hook

    hooks = [(names[(layer, site)], make_hook(li, layer, site)) for li, layer, site in plan]
    with torch.no_grad(), lm.hooks(hooks):
        try:
            lm.forward(batch, row_ids=row_ids)
        except _StopForward:
            pass
    if len(fired) != len(plan):
        missing = sorted(set(names) - fired)
        raise RuntimeError(f"hooks {missing} never fired during the forward pass")
    return out


def _iter_chunks(
    lm: LensModel,
    prompts: Sequence[str],
    layers: list[int],
    sites: list[str],
    position: Position,
    batch_size: int,
    dtype: torch.dtype,
    progress: bool,
    padding_side: str,
    prepend_bos: bool | None,
    storage_device: torch.device | str,
) -> Iterator[_Chunk]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ids = lm.encode(prompts, prepend_bos=prepend_bos)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # stable: ties keep order
    plan = [(li, layer, site) for li, layer in enumerate(layers) for site in sites]
    names = {(layer, site): lm.hook_name(layer, site) for _, layer, site in plan}
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for chunk in tqdm(batches, desc="caching", disable=not progress, unit="batch"):
        batch = lm.pad([ids[i] for i in chunk], padding_side=padding_side).to(lm.device)
        sel = position.select(batch.attention_mask, row_ids=chunk)
        out = _capture(lm, batch, sel, plan, names, dtype, chunk)
        chunk_t = torch.tensor(chunk, dtype=torch.long)
        yield _Chunk(
            data={site: t.to(storage_device) for site, t in out.items()},
            out_prompt=chunk_t[sel.out_row.cpu()],
            token_rank=sel.token_rank.cpu(),
        )


def cache_activations(
    model: LensModel,
    prompts: Sequence[str],
    layers: int | Sequence[int] | None = None,
    sites: Sequence[str] | str = ("resid_pre",),
    position: Position | None = None,
    batch_size: int = 32,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    *,
    padding_side: str = "left",
    prepend_bos: bool | None = None,
    storage_device: torch.device | str = "cpu",
) -> Activations:
    """Read activations at ``layers`` x ``sites``, reduced to ``position`` inside the hooks.

    Args:
        model: the wrapped model.
        prompts: the prompts; the rows of the result keep their order.
        layers: model layers to read (default: all; negative indices count from the end).
        sites: hook sites, any of ``liref_lens.SITES``.
        position: a selector from `liref_lens.positions` (default ``last()``).
        batch_size: prompts per forward pass (batches are formed from length-sorted prompts).
        dtype: dtype of the stored vectors (reductions run in at least float32).
        progress: show a progress bar.
        padding_side: ``"left"`` (default) or ``"right"``; results do not depend on it.
        prepend_bos: prepend BOS (default: the model's TransformerLens default).
        storage_device: where the result lives (default CPU).

    Returns:
        `Activations` with ``data[site]`` of shape ``[n_rows, len(layers), width]``.

    Example:
        >>> acts = cache_activations(lm, ["w1 w2 w3", "Q: 2 + 3 = ? A:"], layers=[0, 1],
        ...                          progress=False)
        >>> acts.tensor.shape  # [prompts, layers, d_model]
        torch.Size([2, 2, 32])
    """
    position = position if position is not None else last()
    layer_list = model.resolve_layers(layers)
    site_list = _check_sites(model, sites)
    chunks = list(
        _iter_chunks(
            model,
            prompts,
            layer_list,
            site_list,
            position,
            batch_size,
            dtype,
            progress,
            padding_side,
            prepend_bos,
            storage_device,
        )
    )
    # Put rows back in prompt order (for every(): prompt order, then token order).
    out_prompt = torch.cat([c.out_prompt for c in chunks])
    token_rank = torch.cat([c.token_rank for c in chunks])
    order = torch.from_numpy(np.lexsort((token_rank.numpy(), out_prompt.numpy())))
    data = {s: torch.cat([c.data[s] for c in chunks])[order] for s in site_list}
    for site, tensor in data.items():
        bad = ~torch.isfinite(tensor).all(dim=-1)
        if bool(bad.any()):
            row, li = (int(v) for v in bad.nonzero()[0])
            raise ValueError(
                f"activations at site {site!r} contain NaN or inf (first: prompt "
                f"{int(out_prompt[order][row])}, layer {layer_list[li]}); the model overflowed "
                "or its weights are broken: try dtype=torch.float32 when loading"
            )
    return Activations(
        data=data,
        layers=tuple(layer_list),
        position=str(position),
        prompt_index=out_prompt[order],
        token_rank=token_rank[order],
        n_prompts=len(prompts),
        model_fingerprint=model.fingerprint,
        model_name=model.name,
    )


def stream_activations(
    model: LensModel,
    prompts: Sequence[str],
    labels: Sequence[str],
    stats: RunningStats | None = None,
    layers: int | Sequence[int] | None = None,
    site: str = "resid_pre",
    position: Position | None = None,
    batch_size: int = 32,
    progress: bool = True,
    *,
    second_moments: bool = False,
) -> RunningStats:
    """Accumulate per-class float64 statistics of activations without storing them.

    Args:
        labels: one class name per prompt.
        stats: an accumulator to continue (default: a new one over the distinct labels,
            in order of first appearance).

    Example:
        >>> rs = stream_activations(lm, prompts, labels, layers=[2], progress=False)
        >>> (rs.mean("reasoning") - rs.mean("memory")).shape
        torch.Size([1, 32])
    """
    if len(labels) != len(prompts):
        raise ValueError(f"got {len(labels)} labels for {len(prompts)} prompts")
    position = position if position is not None else last()
    layer_list = model.resolve_layers(layers)
    site_list = _check_sites(model, [site])
    if stats is None:
        classes = list(dict.fromkeys(str(lab) for lab in labels))
        stats = RunningStats(
            classes, (len(layer_list), model.width(site)), second_moments=second_moments
        )
    for chunk in _iter_chunks(
        model,
        prompts,
        layer_list,
        site_list,
        position,
        batch_size,
        torch.float64,
        progress,
        "left",
        None,
        "cpu",
    ):
        stats.update(chunk.data[site], [str(labels[int(i)]) for i in chunk.out_prompt])
    return stats
