"""Greedy and sampled generation, with or without the KV cache, under interventions.

`generate` runs its own decoding loop. Prompts are left-padded, so every row's next token sits
in the last column; each forward pass publishes a `StepInfo` (mask, window start, prompt width)
that intervention position rules read, so "prompt only" and "generated only" mean the same
thing with and without the cache. Rows stop at ``eos`` when ``stop_at_eos``; finished rows are
padded.

Two engines run the steps, with the same results token for token:

- **direct** (where it can, `liref_lens._hfdirect`): the wrapped Hugging Face model's own
  forward with its own KV cache, the ops as plain torch hooks on its decoder layers, attention
  and MLP modules: Hugging Face's speed. It runs where every op sits on the residual stream
  (``resid_pre``, ``resid_post``, ``attn_out``, ``mlp_out``; any position rule) and nothing
  else is hooked on the model;
- **bridge** (everything else: ``mlp_post`` ops, hooks of your own on the model, the legacy
  ``HookedTransformer``, ``use_cache=False``, ``sdpa=False``): `LensModel.step` (KV cache) or
  `LensModel.forward` (full recompute) on the TransformerLens model, with its hook points.

Memory: the KV cache of the model for ``batch x (prompt + max_new_tokens)`` positions.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import _hfdirect
from ._kvcache import KVCacheError, KVCacheFallbackWarning
from .interventions import InterventionHandle, Op, check_fired, intervene
from .model import Batch, LensModel, length_batches
from .positions import StepInfo, step_info

__all__ = ["Generation", "generate"]


@dataclass(frozen=True)
class Generation:
    """Generated token ids per prompt (prompt excluded) and their decoded texts."""

    tokens: list[list[int]]
    texts: list[str]


def _next_token(
    logits: Tensor, do_sample: bool, temperature: float, generator: torch.Generator | None
) -> Tensor:
    if not do_sample:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if generator is not None and generator.device != probs.device:  # a CPU generator: draw there
        return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def generate(
    model: LensModel,
    prompts: Sequence[str],
    max_new_tokens: int = 16,
    *,
    ops: Sequence[Op] = (),
    do_sample: bool = False,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    stop_at_eos: bool = True,
    prepend_bos: bool | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> Generation:
    """Generate continuations of ``prompts``, steered by ``ops`` if given.

    Args:
        max_new_tokens: tokens to generate per prompt.
        ops: interventions applied to every forward pass (see `liref_lens.interventions`).
        do_sample: sample from ``softmax(logits / temperature)`` (with ``generator``)
            instead of taking the argmax.
        use_cache: reuse keys and values between steps (the results equal a full recompute).
        stop_at_eos: stop a row after it produced the tokenizer's EOS token.

    Example:
        >>> out = generate(lm, ["Q: 2 + 3 = ? A:"], 4, ops=[add_op], stop_at_eos=False)
        >>> len(out.tokens[0])
        4
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample and temperature <= 0:
        raise ValueError("temperature must be > 0 when sampling")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    ids = model.encode(prompts, prepend_bos=prepend_bos)
    model.check_length(max(map(len, ids)) + max_new_tokens, what="prompt plus max_new_tokens")
    eos = model.tokenizer.eos_token_id
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else eos or 0
    out: list[list[int]] = [[] for _ in ids]
    batches = length_batches(ids, batch_size)
    with _engine(model, ops, use_cache) as steps:
        for chunk in tqdm(batches, desc="generating", disable=not progress, unit="batch"):
            tokens = _generate_batch(
                steps,
                model,
                [ids[i] for i in chunk],
                tuple(chunk),
                max_new_tokens,
                do_sample,
                temperature,
                generator,
                use_cache,
                eos if stop_at_eos else None,
                pad,
            )
            for i, row in zip(chunk, tokens, strict=True):
                out[i] = row
    texts = [model.tokenizer.decode(t, skip_special_tokens=True) for t in out]
    return Generation(tokens=out, texts=texts)


class _Steps(Protocol):
    def step(self, new: Tensor, mask: Tensor, past: Any, info: StepInfo) -> tuple[Tensor, Any]:
        """Logits ``[batch, 1, vocab]`` of the last new token, and the grown KV cache."""
        ...

    def full(self, tokens: Tensor, mask: Tensor, info: StepInfo) -> Tensor:
        """Logits ``[batch, 1, vocab]`` of the last token, recomputed without a cache."""
        ...


class _BridgeSteps:
    """Steps through the TransformerLens model and its hook points."""

    def __init__(self, model: LensModel) -> None:
        self.model = model

    def step(self, new: Tensor, mask: Tensor, past: Any, info: StepInfo) -> tuple[Tensor, Any]:
        with step_info(info):
            return self.model.step(new, mask, past, last_only=True)

    def full(self, tokens: Tensor, mask: Tensor, info: StepInfo) -> Tensor:
        return self.model.forward(
            Batch(tokens, mask),
            row_ids=info.row_ids,
            last_only=True,
            prompt_width=info.prompt_width,
        )


@contextmanager
def _engine(model: LensModel, ops: Sequence[Op], use_cache: bool) -> Iterator[_Steps]:
    """The engine for this call (see the module docstring), set up once for all its batches:
    hooks attached, modules swapped or fused attention installed; undone on exit."""
    if _hfdirect.unavailable(model, ops, use_cache) is not None:
        with intervene(model, *ops) if ops else nullcontext(), model.prepared():
            yield _BridgeSteps(model)
        return
    handle = InterventionHandle(model, ops) if ops else None
    edits = handle.edits() if handle is not None else []
    with _hfdirect.direct_steps(model, edits) as steps:
        yield steps
    if handle is not None:
        check_fired(handle)


def _generate_batch(
    steps: _Steps,
    model: LensModel,
    rows: list[list[int]],
    row_ids: tuple[int, ...],
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    generator: torch.Generator | None,
    use_cache: bool,
    eos: int | None,
    pad: int,
) -> list[list[int]]:
    batch = model.pad(rows, padding_side="left").to(model.device)
    prompt_width = int(batch.input_ids.shape[1])
    tokens, mask = batch.input_ids, batch.attention_mask
    done = torch.zeros(len(rows), dtype=torch.bool, device=model.device)
    generated: list[Tensor] = []
    past = None
    with torch.no_grad():
        for step in range(max_new_tokens):
            if use_cache:
                new = tokens if step == 0 else tokens[:, -1:]
                info = StepInfo(mask, tokens.shape[1] - new.shape[1], prompt_width, row_ids)
                try:
                    logits, past = steps.step(new, mask, past, info)
                except KVCacheError as err:
                    if step > 0:  # tokens were already emitted from a cache that grew: not ours
                        raise
                    warnings.warn(
                        f"{err} Falling back to generation without the KV cache (slower, exact).",
                        KVCacheFallbackWarning,
                        stacklevel=4,
                    )
                    use_cache = False
            if not use_cache:
                logits = steps.full(tokens, mask, StepInfo(mask, 0, prompt_width, row_ids))
            nxt = _next_token(logits[:, -1], do_sample, temperature, generator)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            generated.append(nxt)
            if eos is not None:
                done = done | (nxt == eos)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            mask = torch.cat([mask, (~done | (nxt == eos)).long()[:, None]], dim=1)
            if eos is not None and bool(done.all()):  # (a device sync: only when rows can stop)
                break
    gen = torch.stack(generated, dim=1).tolist()
    result = []
    for row in gen:
        if eos is not None and eos in row:
            row = row[: row.index(eos) + 1]
        result.append(row)
    return result
