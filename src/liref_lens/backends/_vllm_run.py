"""Running a `Plan` on a vLLM engine: hooks in every worker for one ``LLM.generate`` call.

`installed` puts the plan's hooks into every worker (``collective_rpc`` by method name: the
methods of `liref_lens.backends._vllm_hooks.WorkerExtension`) and takes them off after the
call, also when it raises. `run_plan` sends the requests as token ids, each tagged with its
plan and index (``SamplingParams.extra_args``), and checks afterwards that every op that must
have edited a prompt token did (else the workers could not find the requests in vLLM's batch).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._vllm_hooks import Plan

__all__ = ["installed", "run_plan"]


@contextmanager
def installed(engine: Any, plan: Plan) -> Iterator[dict[str, Any]]:
    """The plan's hooks in every worker of ``engine`` for the block; removed after it, always.

    Yields the dict the workers' end call fills: ``captured`` reads and ``edited`` counts.
    """
    if not plan.keys_at and not plan.reads:
        yield {"captured": {}, "edited": {}}
        return
    if not engine.eager:
        raise ValueError(
            "per-request ops and reads need enforce_eager=True: CUDA graphs and "
            "torch.compile replay a recorded forward that hooks cannot steer; reload the "
            "engine with load_vllm(..., enforce_eager=True)"
        )
    result: dict[str, Any] = {}
    engine.llm.collective_rpc("liref_lens_begin", args=(pickle.dumps(plan),))
    try:
        yield result
    finally:
        outs = engine.llm.collective_rpc("liref_lens_end", args=(plan.plan_id,))
        result.update(pickle.loads(outs[0]))


def run_plan(
    engine: Any,
    ids: list[list[int]],
    plan: Plan,
    max_new_tokens: int,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int | None = None,
    stop_at_eos: bool = True,
    progress: bool = False,
) -> tuple[list[list[int]], dict[str, Any]]:
    """Generate for every request of ``plan`` (token ids ``ids[i]``); returns the generated
    token ids per request and what the workers reported."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample and temperature <= 0:
        raise ValueError("temperature must be > 0 when sampling")
    eos = engine.tokenizer.eos_token_id
    params = [
        SamplingParams(
            max_tokens=max_new_tokens,
            temperature=temperature if do_sample else 0.0,
            seed=None if seed is None else seed + i,
            ignore_eos=True,  # stop at the tokenizer's EOS only, as liref_lens.generate
            stop_token_ids=[eos] if stop_at_eos and eos is not None else None,
            detokenize=False,
            extra_args={"liref_lens": [plan.plan_id, i]}
            if plan.requests[i].ops or plan.requests[i].read_at is not None
            else None,
        )
        for i in range(len(ids))
    ]
    prompts = [TokensPrompt(prompt_token_ids=row) for row in ids]
    with installed(engine, plan) as result:
        outs = engine.llm.generate(prompts, params, use_tqdm=progress)
    _check_applied(plan, result)
    return [list(o.outputs[0].token_ids) for o in outs], result


def _check_applied(plan: Plan, result: dict[str, Any]) -> None:
    """Raise if an op that must have edited a prompt token edited none (the workers could not
    tell the requests apart: a vLLM whose model runner this backend does not know)."""
    edited = result.get("edited", {})
    missing = {
        (rnd, k)
        for spec in plan.requests
        for rnd, (k, rule) in enumerate(spec.ops)
        if rule.kind != "generated" and (rule.kind != "at" or rule.at)
    } - set(edited)
    if missing:
        names = sorted({type(plan.ops[k]).__name__ for _, k in missing})
        raise RuntimeError(
            f"vLLM ran without applying {', '.join(names)} to any token; the backend could not "
            "find the requests in vLLM's batch (it knows vLLM 0.32's model runner)"
        )
