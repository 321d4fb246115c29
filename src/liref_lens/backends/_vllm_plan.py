"""Turning per-request ops and reads into the `Plan` the vLLM workers run (no vLLM needed here).

Each request's ops are flattened (`Op.flatten`), checked against the engine (`Op.check`: layers,
sites, widths, provenance) and run once on a zero vector, so every error an op can raise (a
zero-norm direction, ``scale="resid_norm"`` without norms, ...) is raised here, in the caller's
process, never inside vLLM's workers, where it would stop the engine. Position rules become
`Rule` objects per request: ``"all"``, ``"prompt"``, ``"generated"``, or a selector from
`liref_lens.positions`, resolved on the request's prompt exactly as `liref_lens.generate`
resolves it (selectors touch prompt tokens only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..interventions import NeuronShift, Op
from ..positions import Position
from ._vllm_hooks import Plan, RequestPlan, Rule

__all__ = ["build_plan", "prompt_rule", "read_position"]


def prompt_rule(rule: str | Position, prompt_len: int, row: int) -> Rule:
    """The `Rule` of an op's ``positions`` for a request whose prompt has ``prompt_len``
    tokens and which is prompt ``row`` of the caller's list (span selectors need it).

    Example:
        >>> from liref_lens.positions import last
        >>> prompt_rule(last(), 5, 0)
        Rule(kind='at', at=frozenset({4}))
    """
    if isinstance(rule, str):
        if rule not in ("all", "prompt", "generated"):
            raise ValueError(
                f"unknown position rule {rule!r}; use all, prompt, generated or a selector"
            )
        return Rule(rule)
    mask = torch.ones((1, prompt_len), dtype=torch.long)
    return Rule("at", frozenset(int(c) for c in rule.select(mask, [row]).col.tolist()))


def read_position(position: Position, prompt_len: int, row: int) -> tuple[int, int]:
    """``(position, token rank)`` of the one token a selector reads in a prompt.

    Example:
        >>> from liref_lens.positions import at
        >>> read_position(at(-2), 5, 0)
        (3, 3)
    """
    sel = position.select(torch.ones((1, prompt_len), dtype=torch.long), [row])
    if sel.n_out != 1 or sel.col.numel() != 1:
        raise ValueError(
            f"reading through vLLM takes one token per prompt (last(), at(i), a span's first or "
            f"last token), not {position}; use cache_activations on a LensModel for it"
        )
    return int(sel.col[0]), int(sel.token_rank[0])


def check_op(engine: Any, op: Op) -> None:
    """Raise (in this process) whatever ``op`` would raise inside a vLLM worker."""
    if isinstance(op, NeuronShift):
        engine.hook_name(0, "mlp_post")  # raises: the reason mlp_post has no place in vLLM
    op.check(engine)
    probe = torch.zeros((1, engine.d_model))
    for layer in op.layers:
        for site in op.sites:
            op.edit(probe, engine.resolve_layer(layer), site)


def build_plan(
    engine: Any,
    plan_id: int,
    prompt_lens: Sequence[int],
    ops: Sequence[Sequence[Op]],
    rows: Sequence[int],
    reads: Sequence[tuple[int, str]] = (),
    read_at: Sequence[int | None] | None = None,
) -> Plan:
    """The plan for requests ``i`` with prompt length ``prompt_lens[i]``, ops ``ops[i]`` (empty:
    untouched) and prompt index ``rows[i]``; ``reads`` are read at ``read_at[i]``.

    Ops are shipped once per distinct object, so a sweep that reuses one op for many prompts
    sends its vectors once.
    """
    unique: list[Op] = []
    index: dict[int, int] = {}
    checked: set[int] = set()
    requests = []
    keys_at: dict[tuple[int, str], set[tuple[int, int]]] = {}
    for i, (n, req_ops, row) in enumerate(zip(prompt_lens, ops, rows, strict=True)):
        flat = [o for op in req_ops for o in op.flatten()]
        spec = []
        for rnd, op in enumerate(flat):
            if id(op) not in checked:
                check_op(engine, op)
                checked.add(id(op))
                index[id(op)] = len(unique)
                unique.append(op)
            k = index[id(op)]
            spec.append((k, prompt_rule(op.positions, n, row)))
            for layer in op.layers:
                for site in op.sites:
                    keys_at.setdefault((engine.resolve_layer(layer), site), set()).add((rnd, k))
        at = None if read_at is None else read_at[i]
        requests.append(RequestPlan(tuple(spec), at))
    return Plan(
        plan_id=plan_id,
        ops=unique,
        requests=requests,
        keys_at={place: sorted(keys) for place, keys in keys_at.items()},
        reads=tuple(reads),
    )
