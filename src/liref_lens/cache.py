"""Batched, padding-correct reading of activations at chosen layers, sites and positions.

`cache_activations` runs the model over prompts in length-sorted batches and, **inside each
hook**, reduces the activation to the chosen positions, so memory is
O(n_prompts x layers x width) whatever the sequence length (``every()`` keeps one row per
real token). The forward pass stops as soon as the last requested hook has fired: later
blocks and the unembedding are never run.

Memory: TransformerLens 4's bridge keeps each fused-QKV attention layer's pattern
(``attn._pattern``, ``[batch, head, pos, pos]``) on the module until the next forward, so a
forward would hold every layer's pattern at once (peak memory growing with layers x pos^2).
`drop_attention_patterns` frees each layer's pattern as soon as that layer has run;
`cache_activations` runs every forward inside it, so its peak holds at most one layer's
attention. Layers whose attention no hook reads run fused besides (PyTorch's SDPA, see
`liref_lens.attention`): they build no ``[batch, head, pos, pos]`` tensor at all, and keep
no pattern.

`stream_activations` feeds the same reduced vectors into a `RunningStats` of per-class float64
counts, means and (optionally) sums of squared deviations, merged with Chan et al.'s parallel
update, so the class means and variances of millions of prompts need constant memory and stay
accurate far from zero.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from .model import Batch, LensModel, length_batches
from .positions import Position, Selection, last

__all__ = [
    "Activations",
    "RunningStats",
    "cache_activations",
    "drop_attention_patterns",
    "stream_activations",
]

# Attributes where TransformerLens bridge attention modules park per-forward tensors.
_RETAINED_ATTRS = ("_pattern", "_attn_scores")


def _clear_retained(module: torch.nn.Module, *_: Any) -> None:
    for attr in _RETAINED_ATTRS:
        if getattr(module, attr, None) is not None:
            setattr(module, attr, None)


@contextmanager
def drop_attention_patterns(model: LensModel | torch.nn.Module) -> Iterator[None]:
    """Free each attention layer's retained pattern as soon as the layer has run.

    TransformerLens 4's bridge stores the attention pattern of fused-QKV attention layers
    (GPT-2 style) on the module (``_pattern``) and keeps it until the layer runs again, so
    one forward ends holding ``n_layers`` patterns of ``[batch, head, pos, pos]``. Inside this
    context a forward hook on every such module drops it right after the module returns
    (hooks on ``hook_pattern`` still see the pattern); on entry and on exit, also after an
    exception, every retained pattern is dropped and the hooks are removed. Models that keep
    no pattern (the legacy ``HookedTransformer``, the bridge's rotary attention) are left as
    they are.

    Args:
        model: a `LensModel` or any ``torch.nn.Module`` (e.g. ``lm.model``).

    Example:
        >>> with drop_attention_patterns(lm):
        ...     logits = lm.forward(lm.tokenize(["w1 w2 w3"]))
        >>> [m for m in lm.model.modules() if getattr(m, "_pattern", None) is not None]
        []
    """
    root = model.model if isinstance(model, LensModel) else model
    holders = [m for m in root.modules() if any(hasattr(m, a) for a in _RETAINED_ATTRS)]
    handles = []
    try:
        for module in holders:
            _clear_retained(module)
            handles.append(module.register_forward_hook(_clear_retained))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module in holders:
            _clear_retained(module)


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
    """Streaming per-class float64 counts and means (and optionally variances).

    Each `update` summarises its batch per class (count, mean, and with ``second_moments``
    the sum of squared deviations from the batch mean, all in float64) and folds that into
    the running state with Chan et al.'s parallel update; `merge` folds in another
    accumulator the same way. Variances are therefore accurate far from zero (no
    ``E[x^2] - mean^2`` cancellation), and the state after a given sequence of batches does
    not depend on how it was split across accumulators merged in the same order.

    Args:
        classes: class names, e.g. ``("reasoning", "memory")``.
        shape: shape of one vector, e.g. ``(n_layers, d_model)``.
        second_moments: also track sums of squared deviations (for `var`).

    Example:
        >>> import torch
        >>> rs = RunningStats(("a", "b"), (2,), second_moments=True)
        >>> rs.update(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), ["a", "a", "b"])
        >>> rs.mean("a").tolist(), rs.var("a").tolist()
        ([2.0, 3.0], [1.0, 1.0])
    """

    def __init__(
        self, classes: Sequence[str], shape: Sequence[int], *, second_moments: bool = False
    ) -> None:
        if len(classes) == 0 or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be distinct names, got {list(classes)}")
        self.classes = tuple(classes)
        self.shape = tuple(int(s) for s in shape)
        self.counts = torch.zeros(len(classes), dtype=torch.long)
        self.means = torch.zeros((len(classes), *self.shape), dtype=torch.float64)
        self.m2 = torch.zeros_like(self.means) if second_moments else None

    @property
    def second_moments(self) -> bool:
        return self.m2 is not None

    @property
    def sums(self) -> Tensor:
        """Float64 per-class sums (``count x mean``)."""
        return self.means * self.counts.view(-1, *([1] * len(self.shape)))

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
        batch = RunningStats(self.classes, self.shape, second_moments=self.second_moments)
        for c in range(len(self.classes)):
            rows = x64[ids == c]
            if rows.shape[0] == 0:
                continue
            batch.counts[c] = rows.shape[0]
            batch.means[c] = rows.mean(0)
            if batch.m2 is not None:
                batch.m2[c] = ((rows - batch.means[c]) ** 2).sum(0)
        self.merge(batch)

    def merge(self, other: RunningStats) -> RunningStats:
        """Fold another accumulator of the same classes and shape into this one (Chan et al.).

        Example:
            >>> a, b = RunningStats(("x",), (1,)), RunningStats(("x",), (1,))
            >>> a.update(torch.tensor([[1.0]]), ["x"]); b.update(torch.tensor([[3.0]]), ["x"])
            >>> a.merge(b).mean("x").tolist()
            [2.0]
        """
        if other.classes != self.classes or other.shape != self.shape:
            raise ValueError("can only merge RunningStats with the same classes and shape")
        if self.m2 is not None and other.m2 is None:
            raise ValueError("the other RunningStats has no second moments")
        for c in range(len(self.classes)):
            nb = int(other.counts[c])
            if nb == 0:
                continue
            na = int(self.counts[c])
            if na == 0:
                self.means[c] = other.means[c]
                if self.m2 is not None and other.m2 is not None:
                    self.m2[c] = other.m2[c]
            else:
                n = na + nb
                delta = other.means[c] - self.means[c]
                self.means[c] = self.means[c] + delta * (nb / n)
                if self.m2 is not None and other.m2 is not None:
                    self.m2[c] = self.m2[c] + other.m2[c] + delta * delta * (na * nb / n)
            self.counts[c] += nb
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
        return self.means[self._index(cls)].clone()

    def var(self, cls: str) -> Tensor:
        """Float64 per-coordinate population variance of one class (needs second moments)."""
        if self.m2 is None:
            raise ValueError("variance needs RunningStats(..., second_moments=True)")
        i = self._index(cls)
        return self.m2[i] / self.counts[i]


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
    with torch.no_grad(), drop_attention_patterns(lm), lm.hooks(hooks):
        try:
            lm.forward(batch, row_ids=row_ids)
        except _StopForward:
            pass
    if len(fired) != len(plan):
        missing = sorted(set(names) - fired)
        raise RuntimeError(f"hooks {missing} never fired during the forward pass")
    return out


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"batch_size must be a positive int (prompts per forward pass), got {batch_size!r}; "
            "pass e.g. batch_size=32, or 1 to run one prompt at a time"
        )


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
    *,
    ids: list[list[int]] | None = None,
    batches: Sequence[list[int]] | None = None,
) -> Iterator[_Chunk]:
    """Reduced activations batch by batch. ``ids`` are the prompts' token ids when the caller
    has encoded them already; ``batches`` (lists of prompt indices) replace the length-sorted
    batches of ``batch_size`` (`liref_lens.distributed` runs a subset of those on each rank)."""
    _check_batch_size(batch_size)
    ids = lm.encode(prompts, prepend_bos=prepend_bos) if ids is None else ids
    plan = [(li, layer, site) for li, layer in enumerate(layers) for site in sites]
    names = {(layer, site): lm.hook_name(layer, site) for _, layer, site in plan}
    batches = length_batches(ids, batch_size) if batches is None else batches
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


def _assemble(
    model: LensModel,
    chunks: Sequence[_Chunk],
    layer_list: list[int],
    site_list: list[str],
    position: Position,
    n_prompts: int,
) -> Activations:
    """Chunks (in any order) as `Activations` in prompt order, checked for NaN and inf."""
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
        n_prompts=n_prompts,
        model_fingerprint=model.fingerprint,
        model_name=model.name,
        meta={"model_dtype": model.dtype_name},
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
    _check_batch_size(batch_size)
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
    return _assemble(model, chunks, layer_list, site_list, position, len(prompts))


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
    _check_batch_size(batch_size)
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
