"""Data-parallel caching over several processes with ``torch.distributed``.

Launch one process per device with ``torchrun`` (or any launcher that initialises
``torch.distributed``: accelerate, SLURM) and call these functions on **every** rank with the
same prompts; each rank loads its own copy of the model (on its own GPU: ``device=f"cuda:{rank}"``
and backend ``nccl``; on CPUs: backend ``gloo``). Without an initialised process group they run
on one process, like their `liref_lens.cache` counterparts.

How the work is split: the prompts are tokenized and length-sorted and cut into batches exactly
as `liref_lens.cache.cache_activations` does on one process; rank ``r`` of ``w`` runs batches
``r, r + w, r + 2w, ...``. Every batch is the same batch a single process would run, so each
cached vector is bit-for-bit the single-process one (same inputs, same padding, same kernels),
and the gathered result is in prompt order on every rank.

Reductions: `stream_activations` summarises each batch in float64 (`RunningStats`) and merges
the per-batch summaries **in batch order**, gathering one summary per rank per round; a fixed
order (not an ``all_reduce`` sum, whose order depends on the number of processes) makes the
means and variances bit-for-bit equal to the single-process `liref_lens.cache.stream_activations`.

Memory: `cache_activations` gathers every rank's rows to every rank (the result's size on
each); `stream_activations` moves one summary per rank and round (``classes x layers x width``
float64). A model too big for one device is not this module's job: load it split over several
GPUs with ``load_model(name, device_map="auto")`` (passed to the TransformerLens bridge) and use
`liref_lens.cache` in one process.

Example:
    ``torchrun --nproc-per-node 2 my_script.py``, where ``my_script.py`` holds::

        import torch.distributed as dist
        from liref_lens import load_model
        from liref_lens import distributed as dp

        dist.init_process_group("gloo")  # "nccl" with one GPU per rank
        lm = load_model("EleutherAI/pythia-410m", device="cpu")
        acts = dp.cache_activations(lm, prompts, layers=[4, 8])  # on every rank
        stats = dp.stream_activations(lm, prompts, labels, layers=[4, 8])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .cache import (
    Activations,
    RunningStats,
    _assemble,
    _check_batch_size,
    _check_sites,
    _iter_chunks,
    _n_batches,
)
from .model import LensModel
from .positions import Position, last

__all__ = ["cache_activations", "gather_stats", "rank_and_world", "stream_activations"]


def rank_and_world(group: Any = None) -> tuple[int, int]:
    """``(rank, world size)`` in ``group``; ``(0, 1)`` when ``torch.distributed`` is not set up.

    Example:
        >>> rank_and_world()  # no process group in a plain Python process
        (0, 1)
    """
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _collective_device(group: Any) -> torch.device:
    """Where tensors for collectives must live: the current GPU under NCCL, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


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
    group: Any = None,
) -> Activations:
    """`liref_lens.cache.cache_activations` split over the ranks of ``group``.

    Call it on every rank with the same arguments; every rank returns the whole result, in
    prompt order, equal to the single-process one bit for bit. Only rank 0 shows a progress bar.

    Args:
        model: this rank's copy of the model.
        prompts: all prompts (the same list on every rank).
        layers: as in `liref_lens.cache.cache_activations`.
        sites: as in `liref_lens.cache.cache_activations`.
        position: as in `liref_lens.cache.cache_activations` (default ``last()``).
        batch_size: prompts per forward pass; batches are dealt to ranks in turn.
        dtype: dtype of the stored vectors.
        progress: show a progress bar on rank 0.
        padding_side: ``"left"`` or ``"right"``.
        prepend_bos: prepend BOS (default: the model's default).
        group: the process group (default: the world).

    Example:
        >>> acts = cache_activations(lm, prompts, layers=[1], progress=False)  # 1 process
        >>> len(acts) == len(prompts) and acts.layers == (1,)
        True
    """
    _check_batch_size(batch_size)
    position = position if position is not None else last()
    layer_list = model.resolve_layers(layers)
    site_list = _check_sites(model, sites)
    rank, world = rank_and_world(group)
    mine = list(
        _iter_chunks(
            model,
            prompts,
            layer_list,
            site_list,
            position,
            batch_size,
            dtype,
            progress and rank == 0,
            padding_side,
            prepend_bos,
            "cpu",
            shard=(rank, world),
        )
    )
    if world == 1:
        return _assemble(model, mine, layer_list, site_list, position, len(prompts))
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, mine, group=group)
    chunks = [chunk for rank_chunks in gathered for chunk in rank_chunks]
    return _assemble(model, chunks, layer_list, site_list, position, len(prompts))


def _flatten(stats: RunningStats) -> Tensor:
    parts = [stats.counts.to(torch.float64), stats.means.reshape(-1)]
    if stats.m2 is not None:
        parts.append(stats.m2.reshape(-1))
    return torch.cat(parts)


def _unflatten(flat: Tensor, like: RunningStats) -> RunningStats:
    out = RunningStats(like.classes, like.shape, second_moments=like.second_moments)
    n_classes, size = len(like.classes), like.means.numel()
    flat = flat.to("cpu")
    out.counts = flat[:n_classes].round().long()
    out.means = flat[n_classes : n_classes + size].reshape(like.means.shape).clone()
    if out.m2 is not None:
        out.m2 = flat[n_classes + size :].reshape(like.means.shape).clone()
    return out


def gather_stats(stats: RunningStats, group: Any = None) -> RunningStats:
    """Every rank's `RunningStats` merged in rank order, returned on every rank.

    Exact in the sense of `RunningStats.merge` (float64, Chan et al.); the result is the same on
    every rank. Use it for accumulators filled by your own loop over a shard of the data.

    Args:
        stats: this rank's accumulator (same classes, shape and moments on every rank).
        group: the process group (default: the world).

    Example:
        >>> rs = RunningStats(("a",), (1,))
        >>> rs.update(torch.tensor([[2.0]]), ["a"])
        >>> gather_stats(rs).mean("a").tolist()  # one process: itself
        [2.0]
    """
    _, world = rank_and_world(group)
    if world == 1:
        return stats
    flat = _flatten(stats).to(_collective_device(group))
    parts = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(parts, flat, group=group)
    merged = RunningStats(stats.classes, stats.shape, second_moments=stats.second_moments)
    for part in parts:
        merged.merge(_unflatten(part, stats))
    return merged


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
    group: Any = None,
) -> RunningStats:
    """`liref_lens.cache.stream_activations` split over the ranks of ``group``.

    Each rank summarises its batches; the summaries are gathered round by round (one batch per
    rank per round) and merged in batch order on every rank, so the result equals the
    single-process one bit for bit.

    Args:
        model: this rank's copy of the model.
        prompts: all prompts (the same list on every rank).
        labels: one class name per prompt.
        stats: an accumulator to continue (the same on every rank; default: a new one over the
            distinct labels in order of first appearance).
        layers: as in `liref_lens.cache.stream_activations`.
        site: as in `liref_lens.cache.stream_activations`.
        position: as in `liref_lens.cache.stream_activations` (default ``last()``).
        batch_size: prompts per forward pass; batches are dealt to ranks in turn.
        progress: show a progress bar on rank 0.
        second_moments: also track variances (for a new accumulator).
        group: the process group (default: the world).

    Example:
        >>> rs = stream_activations(lm, prompts, labels, layers=[2], progress=False)
        >>> rs.count("reasoning") + rs.count("memory") == len(prompts)
        True
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
    rank, world = rank_and_world(group)
    n_batches = _n_batches(len(prompts), batch_size)
    chunks = _iter_chunks(
        model,
        prompts,
        layer_list,
        site_list,
        position,
        batch_size,
        torch.float64,
        progress and rank == 0,
        "left",
        None,
        "cpu",
        shard=(rank, world),
    )
    device = _collective_device(group) if world > 1 else torch.device("cpu")
    for round_ in range(math.ceil(n_batches / world)):
        partial = RunningStats(stats.classes, stats.shape, second_moments=stats.second_moments)
        if round_ * world + rank < n_batches:
            chunk = next(chunks)
            partial.update(chunk.data[site], [str(labels[int(i)]) for i in chunk.out_prompt])
        if world == 1:
            stats.merge(partial)
            continue
        flat = _flatten(partial).to(device)
        parts = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(parts, flat, group=group)
        for part in parts:  # rank order within a round = batch order
            stats.merge(_unflatten(part, stats))
    return stats
