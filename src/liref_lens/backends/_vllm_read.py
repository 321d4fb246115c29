"""Reading residual activations through vLLM: one token per prompt, at prefill.

Each prompt is sent as a one-token generation whose request asks the workers to copy the
activations at the chosen (layer, site) places when its chosen prompt position runs (the
decision which rows those are is the workers', see `liref_lens.backends._vllm_hooks`). The
copies come back as float32 on the host, batch by batch.

Memory: ``batch_size x layers x sites x d_model`` floats in flight; the result holds
``n_prompts x layers x d_model`` per site.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..cache import Activations
from ..positions import Position, last
from ._vllm_plan import build_plan, read_position
from ._vllm_run import run_plan

__all__ = ["read_activations"]


def read_activations(
    engine: Any,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    layers: int | Sequence[int] | None = None,
    sites: Sequence[str] | str = ("resid_pre",),
    position: Position | None = None,
    *,
    batch_size: int = 256,
    prepend_bos: bool | None = None,
    progress: bool = False,
) -> Activations:
    """`VLLMEngine.read`: activations at ``position`` (default ``last()``) of each prompt.

    Args:
        engine: a `liref_lens.backends.vllm.VLLMEngine`.
        prompts: strings, or token id lists (used as they are).
        layers: layers to read (default all; negative indices count from the end).
        sites: any of ``resid_pre``, ``resid_post``, ``attn_out``, ``mlp_out``.
        position: a selector naming one token per prompt (``last()``, ``at(i)``, a span's
            first or last token).
        batch_size: prompts per vLLM call.

    Returns:
        `Activations` with ``data[site]`` of shape ``[n_prompts, len(layers), d_model]``,
        float32, recording the engine's fingerprint, name, dtype and identity.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    position = position if position is not None else last()
    ids = engine._ids(prompts, prepend_bos)
    if layers is None:
        layer_list = list(range(engine.n_layers))
    else:
        given = [layers] if isinstance(layers, int) else list(layers)
        layer_list = [engine.resolve_layer(x) for x in given]
        if len(set(layer_list)) != len(layer_list) or not layer_list:
            raise ValueError(f"layers {given} must name at least one layer, each once")
    site_list = [sites] if isinstance(sites, str) else list(sites)
    if not site_list or len(set(site_list)) != len(site_list):
        raise ValueError(f"sites {site_list} must name at least one site, each once")
    for site in site_list:
        engine.hook_name(0, site)
    places = [(layer, site) for layer in layer_list for site in site_list]
    where = [read_position(position, len(row), i) for i, row in enumerate(ids)]
    data = {s: torch.empty((len(ids), len(layer_list), engine.d_model)) for s in site_list}
    for lo in range(0, len(ids), batch_size):
        chunk = list(range(lo, min(lo + batch_size, len(ids))))
        plan = build_plan(
            engine,
            next(engine._plan_ids),
            [len(ids[i]) for i in chunk],
            [()] * len(chunk),
            chunk,
            reads=places,
            read_at=[where[i][0] for i in chunk],
        )
        _, result = run_plan(engine, [ids[i] for i in chunk], plan, 1, progress=progress)
        for j, i in enumerate(chunk):
            got = result["captured"].get(j, {})
            for li, layer in enumerate(layer_list):
                for site in site_list:
                    if (layer, site) not in got:
                        raise RuntimeError(
                            f"vLLM never ran token {where[i][0]} of prompt {i} at layer {layer} "
                            f"{site}; the read is incomplete"
                        )
                    data[site][i, li] = got[(layer, site)]
    for site, tensor in data.items():
        bad = ~torch.isfinite(tensor).all(dim=-1)
        if bool(bad.any()):
            row, li = (int(v) for v in bad.nonzero()[0])
            raise ValueError(
                f"activations at site {site!r} contain NaN or inf (first: prompt {row}, layer "
                f"{layer_list[li]}); try dtype='float32' when loading"
            )
    return Activations(
        data=data,
        layers=tuple(layer_list),
        position=str(position),
        prompt_index=torch.arange(len(ids)),
        token_rank=torch.tensor([rank for _, rank in where], dtype=torch.long),
        n_prompts=len(ids),
        model_fingerprint=engine.fingerprint,
        model_name=engine.name,
        meta={"model_dtype": engine.dtype_name, "engine": engine.identity},
    )
