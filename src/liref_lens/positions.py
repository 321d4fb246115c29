"""Position selectors: which token positions of each prompt to read or write.

A selector is resolved per row from the attention mask, so it means the same token whatever
the padding side and whatever the other prompts in the batch: ``last()`` is the last real
token of each prompt, ``at(i)`` counts real tokens from the first (``i >= 0``) or from the
last (``i < 0``), ``mean()`` averages over real tokens, ``every()`` keeps each real token.

Resolution returns a `Selection`: flat (row, column) indices into the padded batch, the output
row each index contributes to, and its weight. One reduction serves every selector, and the
memory it needs is that of the selected vectors only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = [
    "Position",
    "Selection",
    "StepInfo",
    "at",
    "current_step",
    "every",
    "last",
    "mean",
    "parse_position",
    "span",
    "step_info",
]


@dataclass(frozen=True)
class Selection:
    """Resolved positions of one padded batch.

    ``acts[row[k], col[k]] * weight[k]`` is added into output row ``group[k]``; there are
    ``n_out`` output rows, and output row ``j`` belongs to batch row ``out_row[j]``.
    """

    row: Int[Tensor, " k"]
    col: Int[Tensor, " k"]
    group: Int[Tensor, " k"]
    weight: Float[Tensor, " k"]
    out_row: Int[Tensor, " n_out"]
    token_rank: Int[Tensor, " n_out"]

    @property
    def n_out(self) -> int:
        return int(self.out_row.shape[0])

    def reduce(
        self, acts: Float[Tensor, "batch pos d"], dtype: torch.dtype = torch.float32
    ) -> Float[Tensor, "n_out d"]:
        """Gather the selected vectors of ``acts`` and reduce them, computing in ``dtype``."""
        dev = acts.device
        picked = acts[self.row.to(dev), self.col.to(dev)].to(dtype)
        if picked.shape[0] == self.n_out:  # one vector per output row: no sum needed
            # (x * 1.0 is exact, and testing for all-ones weights would sync with the device)
            return picked * self.weight.to(dev, dtype)[:, None]
        out = torch.zeros((self.n_out, acts.shape[-1]), dtype=dtype, device=dev)
        out.index_add_(0, self.group.to(dev), picked * self.weight.to(dev, dtype)[:, None])
        return out

    def mask(self, shape: tuple[int, int]) -> Bool[Tensor, "batch pos"]:
        """Boolean mask of the selected positions in a padded batch of ``shape``."""
        m = torch.zeros(shape, dtype=torch.bool, device=self.row.device)
        m[self.row, self.col] = True
        return m


def _ranks(attention_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    real = attention_mask.bool()
    rank = real.long().cumsum(1) - 1  # index of each real token among its row's real tokens
    lengths = real.sum(1)
    return real, rank, lengths


class Position(Protocol):
    """Anything that resolves a padded batch's attention mask to a `Selection`."""

    def select(
        self, attention_mask: Int[Tensor, "batch pos"], row_ids: list[int] | None = None
    ) -> Selection: ...


@dataclass(frozen=True)
class _Single:
    """One real token per row, by rank among real tokens (negative: from the end)."""

    index: int
    label: str

    def select(self, attention_mask: Tensor, row_ids: list[int] | None = None) -> Selection:
        real, rank, lengths = _ranks(attention_mask)
        target = lengths + self.index if self.index < 0 else torch.full_like(lengths, self.index)
        bad = (target < 0) | (target >= lengths)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            who = row_ids[i] if row_ids is not None else i
            raise ValueError(
                f"position {self.label} is beyond prompt {who}, which has {int(lengths[i])} "
                f"tokens; use an index in -{int(lengths[i])}..{int(lengths[i]) - 1} or shorter "
                "offsets for short prompts"
            )
        hit = real & (rank == target[:, None])
        row, col = hit.nonzero(as_tuple=True)
        n = attention_mask.shape[0]
        ones = torch.ones(n, dtype=torch.float32, device=row.device)
        return Selection(row, col, row, ones, torch.arange(n, device=row.device), target)

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class _Mean:
    def select(self, attention_mask: Tensor, row_ids: list[int] | None = None) -> Selection:
        real, _, lengths = _ranks(attention_mask)
        _check_nonempty(lengths, row_ids)
        row, col = real.nonzero(as_tuple=True)
        weight = 1.0 / lengths[row].to(torch.float32)
        n = attention_mask.shape[0]
        arange = torch.arange(n, device=row.device)
        return Selection(row, col, row, weight, arange, torch.full_like(arange, -1))

    def __str__(self) -> str:
        return "mean()"


@dataclass(frozen=True)
class _Every:
    def select(self, attention_mask: Tensor, row_ids: list[int] | None = None) -> Selection:
        real, rank, lengths = _ranks(attention_mask)
        _check_nonempty(lengths, row_ids)
        row, col = real.nonzero(as_tuple=True)
        k = row.shape[0]
        group = torch.arange(k, device=row.device)
        return Selection(row, col, group, torch.ones(k, device=row.device), row, rank[row, col])

    def __str__(self) -> str:
        return "every()"


def _check_nonempty(lengths: Tensor, row_ids: list[int] | None) -> None:
    if bool((lengths == 0).any()):
        i = int((lengths == 0).nonzero()[0, 0])
        who = row_ids[i] if row_ids is not None else i
        raise ValueError(f"prompt {who} has no real tokens (attention mask all zero)")


def last() -> Position:
    """The last real token of each prompt (the paper's choice).

    Example:
        >>> import torch
        >>> sel = last().select(torch.tensor([[0, 1, 1], [1, 1, 1]]))
        >>> sel.col.tolist()
        [2, 2]
    """
    return _Single(-1, "last()")


def at(index: int) -> Position:
    """The ``index``-th real token of each prompt; negative indices count from the last.

    Example:
        >>> import torch
        >>> at(-2).select(torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]])).col.tolist()
        [2, 0]
    """
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"at() takes an int index, got {index!r}")
    return _Single(index, f"at({index})")


def mean() -> Position:
    """The mean over each prompt's real tokens.

    Example:
        >>> import torch
        >>> mean().select(torch.tensor([[0, 1, 1]])).weight.tolist()
        [0.5, 0.5]
    """
    return _Mean()


def every() -> Position:
    """Every real token of each prompt, one output row per token.

    Example:
        >>> import torch
        >>> every().select(torch.tensor([[0, 1, 1], [1, 1, 1]])).n_out
        5
    """
    return _Every()


@dataclass(frozen=True)
class _Span:
    """A named token span per prompt: offsets from the first real token, end exclusive."""

    name: str
    ranges: tuple[tuple[int, int], ...]
    reduce: str

    def select(self, attention_mask: Tensor, row_ids: list[int] | None = None) -> Selection:
        if row_ids is None:
            raise ValueError(
                f"{self} needs to know which prompts are in the batch; use it through "
                "cache_activations, Experiment, generate or LensModel.forward(batch, row_ids=...)"
            )
        real, rank, lengths = _ranks(attention_mask)
        bounds = []
        for i, rid in enumerate(row_ids):
            if not 0 <= rid < len(self.ranges):
                raise ValueError(f"{self} has ranges for {len(self.ranges)} prompts, not {rid}")
            start, end = self.ranges[rid]
            if not 0 <= start < end <= int(lengths[i]):
                raise ValueError(
                    f"{self}: range ({start}, {end}) does not fit prompt {rid}, which has "
                    f"{int(lengths[i])} tokens"
                )
            bounds.append((start, end))
        dev = attention_mask.device
        lo = torch.tensor([b[0] for b in bounds], device=dev)
        hi = torch.tensor([b[1] for b in bounds], device=dev)
        n = attention_mask.shape[0]
        arange = torch.arange(n, device=dev)
        if self.reduce in ("last", "first"):
            target = hi - 1 if self.reduce == "last" else lo
            row, col = (real & (rank == target[:, None])).nonzero(as_tuple=True)
            ones = torch.ones(n, dtype=torch.float32, device=dev)
            return Selection(row, col, row, ones, arange, target)
        inside = real & (rank >= lo[:, None]) & (rank < hi[:, None])
        row, col = inside.nonzero(as_tuple=True)
        weight = 1.0 / (hi - lo)[row].to(torch.float32)
        return Selection(row, col, row, weight, arange, torch.full_like(arange, -1))

    def __str__(self) -> str:
        return f"span({self.name},{self.reduce})"


def span(name: str, ranges: Sequence[tuple[int, int]], reduce: str = "last") -> Position:
    """A token span that differs per prompt, e.g. the cue words a task marks in its prompts.

    Args:
        name: what the span is (recorded in metadata), e.g. ``"cue"``.
        ranges: per prompt, ``(start, end)`` token offsets counted from the prompt's first
            real token (BOS included), end exclusive; `liref_lens.positional.token_spans`
            converts character spans.
        reduce: ``"last"`` or ``"first"`` token of the span, or ``"mean"`` over it (for
            interventions: ``"mean"`` applies the op to every token of the span).

    Example:
        >>> import torch
        >>> sel = span("cue", [(1, 3), (0, 2)]).select(torch.tensor([[1, 1, 1], [0, 1, 1]]), [0, 1])
        >>> sel.col.tolist()
        [2, 2]
    """
    if reduce not in ("last", "first", "mean"):
        raise ValueError(f"reduce must be 'last', 'first' or 'mean', got {reduce!r}")
    return _Span(name, tuple((int(a), int(b)) for a, b in ranges), reduce)


_AT = re.compile(r"^at\((-?\d+)\)$")


def parse_position(text: str) -> Position:
    """The selector that ``str(selector)`` printed (used when loading saved metadata).

    Example:
        >>> str(parse_position("at(-2)"))
        'at(-2)'
    """
    text = text.strip()
    fixed = {"last()": last, "mean()": mean, "every()": every}
    if text in fixed:
        return fixed[text]()
    match = _AT.match(text)
    if match:
        return at(int(match.group(1)))
    raise ValueError(
        f"unknown position {text!r}; expected last(), mean(), every() or at(i) "
        "(span selectors carry per-prompt ranges and are built with span(...))"
    )


@dataclass(frozen=True)
class StepInfo:
    """Where the tokens of the forward pass now running sit in the whole sequence.

    ``attention_mask`` covers the whole sequence so far (cached past + current input);
    the current input starts at column ``start``; columns ``< prompt_width`` are the (padded)
    prompt, later ones were generated. Set by `LensModel.forward` and by generation, read by
    interventions to resolve their position rules, also across KV-cached decode steps.
    ``row_ids`` says which prompts (indices into the caller's list) the rows are; selectors
    that differ per prompt (`span`) need it.
    """

    attention_mask: Int[Tensor, "batch total"]
    start: int
    prompt_width: int
    row_ids: tuple[int, ...] | None = None


_STEP: ContextVar[StepInfo | None] = ContextVar("liref_lens_step", default=None)


@contextmanager
def step_info(info: StepInfo) -> Iterator[StepInfo]:
    """Make ``info`` the current step for the duration of the block."""
    token = _STEP.set(info)
    try:
        yield info
    finally:
        _STEP.reset(token)


def current_step() -> StepInfo | None:
    """The step set by the innermost `step_info` block, or None outside any."""
    return _STEP.get()
