"""Collectives with a deadline, and the check that every rank was given the same inputs.

Private helpers of `liref_lens.distributed`. Every collective here is an ``all_gather`` whose
tensor shape does not depend on the inputs being checked. It runs with the process group's own
time limit set to the wait allowed for it (then restored), and is awaited with
``Work.wait(timeout)`` (honoured by gloo and NCCL), so a rank that stalls or dies makes the
others raise, and exit, in bounded time instead of after the group's default timeout (30 min
for gloo).
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .cache import RunningStats
from .model import LensModel
from .positions import Position

# What every rank must agree on, in the order a disagreement is reported. A field that does
# not apply to a call is left 0 on every rank. Implied fields are not reported again: ranks
# with different prompt counts also differ in texts, token ids and labels.
FIELDS = (
    "function called",
    "number of prompts",
    "prompt texts",
    "token ids",
    "labels",
    "layers",
    "sites",
    "position",
    "batch_size",
    "dtype",
    "padding_side",
    "prepend_bos",
    "model weights and config (fingerprint)",
    "model dtype",
    "fused attention (lm.sdpa)",
    "accumulator (stats)",
)
_IMPLIED = {
    "function called": FIELDS[1:],
    "number of prompts": ("prompt texts", "token ids", "labels"),
    "prompt texts": ("token ids",),
}
_SHOWN = ("number of prompts",)  # small integers, shown per rank rather than hashed
CALLS = ("cache_activations", "stream_activations", "gather_stats")


def rank_and_world(group: Any = None) -> tuple[int, int]:
    """``(rank, world size)`` in ``group``; ``(0, 1)`` without an initialised process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def collective_device(group: Any) -> torch.device:
    """Where tensors for collectives must live: the current GPU under NCCL, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@contextmanager
def _op_timeout(group: Any, timeout: datetime.timedelta) -> Iterator[None]:
    """The process group's own time limit set to ``timeout`` for the operations started inside,
    then restored. ``Work.wait(timeout)`` alone is not enough under gloo: it raises in time, but
    the operation stays queued, and the process cannot exit until the absent rank joins it or
    the group's own timeout (30 min) passes. Left as it is where this torch offers no way to
    read the current value (private API, present in torch 2.6 to 2.13)."""
    pg: Any = group if group is not None else dist.group.WORLD
    backends = []
    for device in (torch.device("cpu"), torch.device("cuda")):
        try:
            backend = pg._get_backend(device)
            backends.append((backend, backend.options._timeout))
        except (AttributeError, RuntimeError, ValueError):
            continue
    setter = getattr(dist.distributed_c10d, "_set_pg_timeout", None)
    if not backends or setter is None:
        yield
        return
    setter(timeout, pg)
    try:
        yield
    finally:
        for backend, previous in backends:
            backend._set_default_timeout(previous)


def gather(tensor: Tensor, group: Any, wait_s: float, what: str) -> list[Tensor]:
    """``all_gather`` of same-shaped tensors that raises after ``wait_s`` seconds without all
    ranks, naming ``what`` was being gathered. Returns CPU tensors in rank order."""
    rank, world = rank_and_world(group)
    device = collective_device(group)
    tensor = tensor.to(device)
    parts = [torch.empty_like(tensor) for _ in range(world)]
    limit = datetime.timedelta(seconds=wait_s)
    start = time.monotonic()
    try:
        with _op_timeout(group, limit):
            work = dist.all_gather(parts, tensor, group=group, async_op=True)
            assert work is not None  # async_op=True returns a Work
            work.wait(limit)
    except (RuntimeError, dist.DistError) as err:
        detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise RuntimeError(
            f"rank {rank}: {what} failed after {time.monotonic() - start:.1f} s (limit "
            f"{wait_s:.0f} s): not every rank of the process group took part ({detail}); a rank "
            "stalled, died or is running other code (look for its own error). If the ranks are "
            "only slow, pass a larger timeout="
        ) from err
    return [p.cpu() for p in parts]


def gather_bytes(payload: bytes, group: Any, wait_s: float, what: str) -> list[bytes]:
    """Every rank's ``payload`` in rank order: sizes first (fixed shape), then the bytes
    padded to the largest size; each step waits at most ``wait_s`` seconds."""
    size = torch.tensor([len(payload)], dtype=torch.long)
    sizes = [int(s) for s in gather(size, group, wait_s, what)]
    buf = torch.zeros(max(sizes), dtype=torch.uint8)
    buf[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    parts = gather(buf, group, wait_s, what)
    return [part[:n].numpy().tobytes() for part, n in zip(parts, sizes, strict=True)]


def to_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def from_bytes(payload: bytes) -> Any:
    return torch.load(io.BytesIO(payload), weights_only=True)


def flatten_stats(stats: RunningStats) -> Tensor:
    """Counts, means and (if kept) sums of squared deviations as one float64 vector."""
    parts = [stats.counts.to(torch.float64), stats.means.reshape(-1)]
    if stats.m2 is not None:
        parts.append(stats.m2.reshape(-1))
    return torch.cat(parts)


def unflatten_stats(flat: Tensor, like: RunningStats) -> RunningStats:
    """The inverse of `flatten_stats`, shaped like ``like``."""
    out = RunningStats(like.classes, like.shape, second_moments=like.second_moments)
    n_classes, size = len(like.classes), like.means.numel()
    flat = flat.to("cpu")
    out.counts = flat[:n_classes].round().long()
    out.means = flat[n_classes : n_classes + size].reshape(like.means.shape).clone()
    if out.m2 is not None:
        out.m2 = flat[n_classes + size :].reshape(like.means.shape).clone()
    return out


def _int64(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "little", signed=True)


def digest(value: Any) -> int:
    """A 64-bit hash of a small JSON-able value (its JSON text, keys sorted)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return _int64(hashlib.sha256(text.encode()).digest())


def digest_texts(texts: Sequence[Any]) -> int:
    h = hashlib.sha256()
    for text in texts:
        data = str(text).encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return _int64(h.digest())


def digest_ids(ids: Sequence[Sequence[int]]) -> int:
    h = hashlib.sha256()
    for row in ids:
        h.update(len(row).to_bytes(8, "little"))
        h.update(torch.tensor(row, dtype=torch.long).numpy().tobytes())
    return _int64(h.digest())


def digest_tensors(*tensors: Tensor | None) -> int:
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return _int64(h.digest())


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))


def describe_disagreement(table: Tensor) -> str | None:
    """One line naming each input on which the rows (ranks) of ``table`` differ, or None."""
    parts: list[str] = []
    skip: set[str] = set()
    for j, field in enumerate(FIELDS):
        column = [int(v) for v in table[:, j]]
        if field in skip or len(set(column)) == 1:
            continue
        skip.update(_IMPLIED.get(field, ()))
        if field in _SHOWN:
            parts.append(f"{field}: " + ", ".join(f"{v} on rank {r}" for r, v in enumerate(column)))
            continue
        groups: dict[int, list[int]] = {}
        for r, v in enumerate(column):
            groups.setdefault(v, []).append(r)
        if field == "function called":
            names = {digest(c): c for c in CALLS}
            parts.append(
                "different functions called: "
                + ", ".join(f"{names.get(v, '?')} on {_ranks(g)}" for v, g in groups.items())
            )
            continue
        note = " (the prompt texts agree: different tokenizers?)" if field == "token ids" else ""
        parts.append(f"different {field}{note} on " + " vs ".join(map(_ranks, groups.values())))
    return "; ".join(parts) if parts else None


def position_text(position: Position) -> str:
    text = str(position)
    if " at 0x" in text:  # a default object repr differs between processes
        text = f"{type(position).__module__}.{type(position).__qualname__}"
    return text


def common_inputs(
    model: LensModel,
    prompts: Sequence[str],
    ids: list[list[int]],
    layers: list[int],
    sites: list[str],
    position: Position,
    batch_size: int,
) -> dict[str, int]:
    """The hashed inputs both distributed caching functions take (`FIELDS` names)."""
    return {
        "number of prompts": len(prompts),
        "prompt texts": digest_texts(prompts),
        "token ids": digest_ids(ids),
        "layers": digest(layers),
        "sites": digest(sites),
        "position": digest(position_text(position)),
        "batch_size": digest(batch_size),
        "model weights and config (fingerprint)": digest(model.fingerprint),
        "model dtype": digest(model.dtype_name),
        "fused attention (lm.sdpa)": digest(getattr(model, "sdpa", None)),
    }


def check_same_inputs(call: str, inputs: dict[str, int], group: Any, wait_s: float) -> None:
    """Raise the same ``ValueError`` on every rank unless all ranks hold equal ``inputs``.

    ``inputs`` maps names in `FIELDS` to an int (a count or a `digest`). One fixed-size
    ``all_gather`` (``len(FIELDS)`` int64 per rank) compares them, so ranks that disagree on
    anything, their number of prompts included, find out before any collective whose shape
    depends on the inputs.
    """
    unknown = set(inputs) - set(FIELDS)
    if unknown:
        raise KeyError(f"unknown input fields {sorted(unknown)}")
    row = torch.zeros(len(FIELDS), dtype=torch.long)
    if call not in CALLS:
        raise KeyError(f"unknown call {call!r}")
    row[0] = digest(call)
    for name, value in inputs.items():
        row[FIELDS.index(name)] = value
    table = torch.stack(gather(row, group, wait_s, f"the input check of {call}"))
    problem = describe_disagreement(table)
    if problem is not None:
        raise ValueError(
            f"{call}: the ranks were given different inputs: {problem}. Call it on every rank "
            "with the same arguments and the same model"
        )
