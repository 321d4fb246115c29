"""Data-parallel caching over several processes with ``torch.distributed``.

Launch one process per device with ``torchrun`` (or any launcher that initialises
``torch.distributed``: accelerate, SLURM) and call these functions on **every** rank with the
same prompts; each rank loads its own copy of the model (on its own GPU: ``device=f"cuda:{rank}"``
and backend ``nccl``; on CPUs: backend ``gloo``). Without an initialised process group they run
on one process, like their `liref_lens.cache` counterparts.

Same inputs on every rank: before any other collective, one fixed-size ``all_gather`` compares a
hash of each rank's inputs: the number of prompts, the prompt texts and their token ids (as this
rank's tokenizer encodes them), labels, layers, sites, position, batch size, dtype, padding side,
``prepend_bos``, the model's fingerprint and dtype, ``lm.sdpa`` and (for `stream_activations`)
the accumulator. If any differs, **every** rank raises the same ``ValueError`` naming the inputs
that differ and the ranks on each side; nothing is computed.

How the work is split: the prompts are tokenized and length-sorted and cut into batches exactly
as `liref_lens.cache.cache_activations` does on one process. Each batch costs about its padded
tokens (rows x longest row); `balance` deals the batches to the ranks so that the largest
rank's total is small (longest first, each to the least-loaded rank, then single moves and
swaps between the largest and smallest shares). Every batch is still the same batch a single
process would run, and the gathered result is in prompt order on every rank.

What is guaranteed:

- **Bit for bit, at the same kernels and thread count**: every vector of `cache_activations`,
  and the float64 means and sums of squared deviations of `stream_activations`, equal those of
  the single-process `liref_lens.cache` functions run with the same model, dtype and arguments
  in a process with the same kernels and thread count (same CPU type or GPU, same
  ``torch.get_num_threads()``). The batches are the same, and `stream_activations` merges the
  per-batch summaries in batch order (not with an ``all_reduce``, whose order depends on the
  number of processes).
- **Not across kernels**: at another thread count or on another CPU, the model's float32
  arithmetic may take other kernels and differ by float32 rounding (relative 1e-7 to 1e-6 have
  been seen), so vectors cached there differ from these by that much.
- **Float64 reductions**: the streamed means and variances of a class of ``n`` rows equal a
  float64 computation from the same cached vectors ``x`` (e.g. ``x.mean(0)``,
  ``x.var(0, correction=0)``) within ``3 n eps M``, ``eps`` float64's machine epsilon and ``M``
  the largest ``|x|`` for means, ``(2 max|x|)^2`` for variances: summing ``n`` terms in any order
  errs by at most ``(n - 1) eps/2`` times the sum of their magnitudes, and each of at most ``n``
  merges adds a few ``eps/2`` of the largest one. This holds whatever the kernels.

Time limits: a rank waits at most ``timeout`` seconds (default 300) for the others to arrive at
the input check, and at each later gather at most ``timeout + 4 t L_max / L_own``, where ``t``
is the time its own share ``L_own`` (padded tokens) took and ``L_max`` the largest share: the
time the largest share takes at this rank's speed, with room for a peer four times slower (a
rank without work waits ``timeout``). For each gather the process group's own time limit is
set to that wait and restored afterwards, so a rank that stalls, dies or runs other code makes
the others raise a ``RuntimeError`` and exit in that time, instead of waiting for the group's
default timeout (30 min for gloo). Tested with gloo; NCCL is given the same limits
(``Work.wait(timeout)`` and the group's timeout), untested here for want of several GPUs.

Memory: `cache_activations` gathers every rank's rows to every rank (the result's size on
each); `stream_activations` gathers, per window of batches, one summary per batch
(``classes x layers x width`` float64, twice that with second moments; a window gathers at
most 64 MiB of them, or one batch per rank where a single round would be larger). A model too
big for one device is not this module's job: load it split over several GPUs with
``load_model(name, device_map="auto")`` and use `liref_lens.cache` in one process.

Example:
    ``torchrun --nproc-per-node 2 my_script.py``, where ``my_script.py`` holds::

        import torch.distributed as dist
        from liref_lens import load_model
        from liref_lens import distributed as dp

        dist.init_process_group("gloo")  # "nccl" with one GPU per rank
        lm = load_model("EleutherAI/pythia-410m", device="cpu")
        acts = dp.cache_activations(lm, prompts, layers=[4, 8])  # on every rank
        stats = dp.stream_activations(lm, prompts, labels, layers=[4, 8])
        dist.barrier()  # every rank done before gloo is torn down
        dist.destroy_process_group()
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from . import _collectives as col
from ._shards import balance, batch_costs, deadline, window_batches, windows
from .cache import (
    Activations,
    RunningStats,
    _assemble,
    _check_batch_size,
    _check_sites,
    _Chunk,
    _iter_chunks,
)
from .model import LensModel, length_batches
from .positions import Position, last

__all__ = ["balance", "cache_activations", "gather_stats", "rank_and_world", "stream_activations"]


def rank_and_world(group: Any = None) -> tuple[int, int]:
    """``(rank, world size)`` in ``group``; ``(0, 1)`` when ``torch.distributed`` is not set up.

    Example:
        >>> rank_and_world()  # no process group in a plain Python process
        (0, 1)
    """
    return col.rank_and_world(group)


def _check_timeout(timeout: float) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(
            f"timeout must be a positive number of seconds, got {timeout!r}; pass e.g. "
            "timeout=300 (how long a rank waits for the others beyond their share of the work)"
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
    group: Any = None,
    timeout: float = 300.0,
) -> Activations:
    """`liref_lens.cache.cache_activations` split over the ranks of ``group``.

    Call it on every rank with the same arguments; every rank returns the whole result, in
    prompt order, equal to the single-process one bit for bit at equal kernels and threads (see
    the module docstring). Only rank 0 shows a progress bar.

    Args:
        model: this rank's copy of the model.
        prompts: all prompts (the same list on every rank).
        layers: as in `liref_lens.cache.cache_activations`.
        sites: as in `liref_lens.cache.cache_activations`.
        position: as in `liref_lens.cache.cache_activations` (default ``last()``).
        batch_size: prompts per forward pass; batches are dealt to ranks by `balance`.
        dtype: dtype of the stored vectors.
        progress: show a progress bar on rank 0.
        padding_side: ``"left"`` or ``"right"``.
        prepend_bos: prepend BOS (default: the model's default).
        group: the process group (default: the world).
        timeout: seconds to wait for the other ranks, beyond the time their share of the work
            should take (see the module docstring).

    Raises:
        ValueError: on every rank, if the ranks were given different inputs.
        RuntimeError: if another rank does not answer in time.

    Example:
        >>> acts = cache_activations(lm, prompts, layers=[1], progress=False)  # 1 process
        >>> len(acts) == len(prompts) and acts.layers == (1,)
        True
    """
    _check_batch_size(batch_size)
    _check_timeout(timeout)
    position = position if position is not None else last()
    layer_list = model.resolve_layers(layers)
    site_list = _check_sites(model, sites)
    rank, world = rank_and_world(group)
    ids = model.encode(prompts, prepend_bos=prepend_bos)
    batches = length_batches(ids, batch_size)
    args = (model, prompts, layer_list, site_list, position, batch_size, dtype)
    if world == 1:
        chunks = list(_iter_chunks(*args, progress, padding_side, prepend_bos, "cpu", ids=ids))
        return _assemble(model, chunks, layer_list, site_list, position, len(prompts))
    inputs = col.common_inputs(model, prompts, ids, layer_list, site_list, position, batch_size)
    inputs["dtype"] = col.digest(str(dtype))
    inputs["padding_side"] = col.digest(padding_side)
    inputs["prepend_bos"] = col.digest(prepend_bos)
    col.check_same_inputs("cache_activations", inputs, group, timeout)
    start = time.perf_counter()
    costs = batch_costs(batches, ids)
    shares = balance(costs, world)
    mine = [batches[b] for b in shares[rank]]
    show = progress and rank == 0
    chunks = list(
        _iter_chunks(*args, show, padding_side, prepend_bos, "cpu", ids=ids, batches=mine)
    )
    wait = deadline(
        timeout,
        time.perf_counter() - start,
        sum(costs[b] for b in shares[rank]),
        max(sum(costs[b] for b in share) for share in shares),
    )
    packed = [{"data": c.data, "out": c.out_prompt, "rank": c.token_rank} for c in chunks]
    payloads = col.gather_bytes(
        col.to_bytes(packed), group, wait, "the gather of cached activations"
    )
    every_chunk = [
        _Chunk(data=p["data"], out_prompt=p["out"], token_rank=p["rank"])
        for payload in payloads
        for p in col.from_bytes(payload)
    ]
    return _assemble(model, every_chunk, layer_list, site_list, position, len(prompts))


def gather_stats(stats: RunningStats, group: Any = None, *, timeout: float = 300.0) -> RunningStats:
    """Every rank's `RunningStats` merged in rank order, returned on every rank.

    Exact in the sense of `RunningStats.merge` (float64, Chan et al.); the result is the same on
    every rank. Use it for accumulators filled by your own loop over a shard of the data.

    Args:
        stats: this rank's accumulator (same classes, shape and moments on every rank).
        group: the process group (default: the world).
        timeout: seconds to wait for the other ranks.

    Example:
        >>> rs = RunningStats(("a",), (1,))
        >>> rs.update(torch.tensor([[2.0]]), ["a"])
        >>> gather_stats(rs).mean("a").tolist()  # one process: itself
        [2.0]
    """
    _check_timeout(timeout)
    _, world = rank_and_world(group)
    if world == 1:
        return stats
    layout = col.digest([list(stats.classes), list(stats.shape), stats.second_moments])
    col.check_same_inputs("gather_stats", {"accumulator (stats)": layout}, group, timeout)
    parts = col.gather(col.flatten_stats(stats), group, timeout, "the gather of RunningStats")
    merged = RunningStats(stats.classes, stats.shape, second_moments=stats.second_moments)
    for part in parts:
        merged.merge(col.unflatten_stats(part, stats))
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
    timeout: float = 300.0,
) -> RunningStats:
    """`liref_lens.cache.stream_activations` split over the ranks of ``group``.

    The batches are taken in windows of consecutive batches (up to 64 per rank, fewer where
    their summaries would pass 64 MiB); `balance` splits each window over the ranks, each rank
    summarises its batches of the window, and every rank merges all summaries of the window in
    batch order, so the result equals the single-process one bit for bit at equal kernels and
    threads (see the module docstring).

    Args:
        model: this rank's copy of the model.
        prompts: all prompts (the same list on every rank).
        labels: one class name per prompt.
        stats: an accumulator to continue (the same on every rank; default: a new one over the
            distinct labels in order of first appearance).
        layers: as in `liref_lens.cache.stream_activations`.
        site: as in `liref_lens.cache.stream_activations`.
        position: as in `liref_lens.cache.stream_activations` (default ``last()``).
        batch_size: prompts per forward pass.
        progress: show a progress bar on rank 0.
        second_moments: also track variances (for a new accumulator).
        group: the process group (default: the world).
        timeout: seconds to wait for the other ranks, beyond the time their share of the work
            should take (see the module docstring).

    Raises:
        ValueError: on every rank, if the ranks were given different inputs.
        RuntimeError: if another rank does not answer in time.

    Example:
        >>> rs = stream_activations(lm, prompts, labels, layers=[2], progress=False)
        >>> rs.count("reasoning") + rs.count("memory") == len(prompts)
        True
    """
    if len(labels) != len(prompts):
        raise ValueError(f"got {len(labels)} labels for {len(prompts)} prompts")
    _check_batch_size(batch_size)
    _check_timeout(timeout)
    position = position if position is not None else last()
    layer_list = model.resolve_layers(layers)
    site_list = _check_sites(model, [site])
    if stats is None:
        classes = list(dict.fromkeys(str(lab) for lab in labels))
        stats = RunningStats(
            classes, (len(layer_list), model.width(site)), second_moments=second_moments
        )
    rank, world = rank_and_world(group)
    ids = model.encode(prompts)
    batches = length_batches(ids, batch_size)
    args = (model, prompts, layer_list, site_list, position, batch_size, torch.float64)
    if world == 1:
        for chunk in _iter_chunks(*args, progress, "left", None, "cpu", ids=ids):
            stats.update(chunk.data[site], [str(labels[int(i)]) for i in chunk.out_prompt])
        return stats
    inputs = col.common_inputs(model, prompts, ids, layer_list, site_list, position, batch_size)
    inputs["labels"] = col.digest_texts(labels)
    layout = [list(stats.classes), list(stats.shape)]
    inputs["accumulator (stats)"] = col.digest(
        [layout, col.digest_tensors(stats.counts, stats.means, stats.m2)]
    )
    col.check_same_inputs("stream_activations", inputs, group, timeout)
    costs = batch_costs(batches, ids)
    summary_bytes = 8 * col.flatten_stats(stats).numel()
    per_rank = window_batches(summary_bytes, world)
    plan = windows(costs, world, per_rank)
    mine = [batches[b] for shares in plan for b in shares[rank]]
    chunks = _iter_chunks(*args, progress and rank == 0, "left", None, "cpu", ids=ids, batches=mine)
    for shares in plan:
        start = time.perf_counter()
        rows = max(len(share) for share in shares)
        buf = torch.zeros((rows, summary_bytes // 8), dtype=torch.float64)
        for slot in range(len(shares[rank])):
            chunk = next(chunks)
            partial = RunningStats(stats.classes, stats.shape, second_moments=stats.second_moments)
            partial.update(chunk.data[site], [str(labels[int(i)]) for i in chunk.out_prompt])
            buf[slot] = col.flatten_stats(partial)
        loads = [sum(costs[b] for b in share) for share in shares]
        wait = deadline(timeout, time.perf_counter() - start, loads[rank], max(loads))
        first, end = min(min(s) for s in shares if s), max(max(s) for s in shares if s)
        what = f"the gather of the summaries of batches {first}-{end}"
        parts = col.gather(buf, group, wait, what)
        where = {b: (r, slot) for r, share in enumerate(shares) for slot, b in enumerate(share)}
        for b in sorted(where):  # batch order, as one process merges them
            r, slot = where[b]
            stats.merge(col.unflatten_stats(parts[r][slot], stats))
    return stats
