"""What runs inside vLLM's worker processes: the toolkit's sites in vLLM's decoder layers.

This file is the one place that says what a liref_lens site is inside vLLM (0.32, V1 engine).
vLLM's ``LlamaDecoderLayer.forward(positions, hidden_states, residual)`` fuses the residual add
into the next RMSNorm, so the residual stream is never one tensor: a layer returns the pair
``(hidden_states, residual)`` and **the stream after the layer is their sum** (layer 0 receives
the embedding output as ``hidden_states`` with ``residual=None``). The sites:

=============  ==================================================================================
``resid_pre``  the stream entering ``model.layers[L]``: the sum of its two inputs (layer 0: the
               embedding output). An edited stream ``s'`` is passed on as ``(s', 0)``, so the
               layer's fused add gives back ``s'`` exactly.
``resid_post`` the stream leaving ``model.layers[L]``: the sum of its two outputs, passed on as
               ``(s', 0)`` to the next layer (or to the final norm, which adds the same way).
``attn_out``   the output of ``model.layers[L].self_attn`` (after ``o_proj``, all-reduced over
               tensor-parallel ranks), before it joins the stream.
``mlp_out``    the output of ``model.layers[L].mlp`` (after ``down_proj``, all-reduced).
=============  ==================================================================================

Every tensor-parallel rank holds these activations whole (the row-parallel projections reduce
their results), so each rank applies the same edit. ``mlp_post`` (split across ranks, inside
the fused ``gate_up_proj``) and the attention internals (paged attention is one fused kernel)
have no place here.

Per request: vLLM flattens the tokens of all scheduled requests into one batch. The model
runner's ``input_batch.req_ids`` and ``query_start_loc`` say which rows belong to which request,
its ``requests[id]`` holds the request's prompt length and sampling parameters, and each request
of a plan carries ``extra_args={"liref_lens": [plan_id, index]}``. A pre-hook on the decoder
stack resolves, once per forward, which rows each op edits; the site hooks then edit those rows
only, with the op's own ``edit`` (`liref_lens.interventions`). Hooks never raise into vLLM for
input problems: `liref_lens.backends.vllm` checks every op before a plan is sent.
"""

from __future__ import annotations

import pickle
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["SITE_PLACES", "Plan", "RequestPlan", "Rule", "WorkerExtension"]

#: Where each supported site is inside a vLLM decoder layer (see the module docstring).
SITE_PLACES: dict[str, str] = {
    "resid_pre": "model.layers[L] input: hidden_states + residual (layer 0: the embedding)",
    "resid_post": "model.layers[L] output: hidden_states + residual",
    "attn_out": "model.layers[L].self_attn output (after o_proj, reduced over TP ranks)",
    "mlp_out": "model.layers[L].mlp output (after down_proj, reduced over TP ranks)",
}

#: Decoder-layer classes whose forward has the layout above, with what they serve.
KNOWN_LAYERS: dict[str, str] = {
    "vllm.model_executor.models.llama.LlamaDecoderLayer": "Llama-architecture models "
    "(LlamaForCausalLM: Llama 2/3, SmolLM2, TinyLlama, ...)",
}

_KEY = "liref_lens"


@dataclass(frozen=True)
class Rule:
    """Which tokens of one request an op edits, by absolute position in the request.

    ``kind``: ``"all"``, ``"prompt"`` (positions below the prompt length), ``"generated"``
    (the rest) or ``"at"`` (the prompt positions in ``at``, resolved from a selector).

    Example:
        >>> Rule("generated").hits(5, prompt_len=5), Rule("at", (4,)).hits(4, prompt_len=5)
        (True, True)
    """

    kind: str
    at: frozenset[int] = frozenset()

    def hits(self, position: int, prompt_len: int) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "prompt":
            return position < prompt_len
        if self.kind == "generated":
            return position >= prompt_len
        return position in self.at


@dataclass(frozen=True)
class RequestPlan:
    """One request's ops (indices into `Plan.ops`, in application order) and read position."""

    ops: tuple[tuple[int, Rule], ...] = ()
    read_at: int | None = None


@dataclass
class Plan:
    """Everything the workers need for one `generate` or `read` call of the engine.

    ``keys_at[(layer, site)]``: the ``(round, op index)`` pairs to apply there, in order; round
    ``j`` is the ``j``-th op of a request, so a request's ops apply in its own order and the
    ops of one round touch disjoint rows. ``reads``: the ``(layer, site)`` pairs to capture at
    each request's ``read_at`` position.
    """

    plan_id: int
    ops: list[Any]
    requests: list[RequestPlan]
    keys_at: dict[tuple[int, str], list[tuple[int, int]]]
    reads: tuple[tuple[int, str], ...] = ()

    def places(self) -> list[tuple[int, str]]:
        return sorted(set(self.keys_at) | set(self.reads))


def decoder_layers(model: Any) -> Any:
    """The decoder layers of a vLLM causal LM (``model.model.layers``)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if inner is None or layers is None:
        raise TypeError(f"{type(model).__name__} has no model.layers")
    return inner, layers


def layout(model: Any) -> dict[str, Any]:
    """What the backend needs to know of a loaded vLLM model, checked against KNOWN_LAYERS."""
    _, layers = decoder_layers(model)
    kinds = sorted({f"{type(m).__module__}.{type(m).__qualname__}" for m in layers})
    return {
        "n_layers": len(layers),
        "layer_classes": kinds,
        "known": set(kinds) <= set(KNOWN_LAYERS),
    }


@dataclass
class _Hooks:
    """The hooks of one plan on one worker's model; `remove` takes them off."""

    runner: Any
    plan: Plan
    handles: list[Any] = field(default_factory=list)
    rows: dict[tuple[int, int], Tensor] = field(default_factory=dict)
    read_rows: list[tuple[int, int]] = field(default_factory=list)
    captured: dict[int, dict[tuple[int, str], Tensor]] = field(default_factory=dict)
    edited: dict[tuple[int, int], int] = field(default_factory=dict)
    _index: dict[str, int | None] = field(default_factory=dict)

    def install(self) -> None:
        _, layers = decoder_layers(self.runner.get_model())
        try:
            # The decoder stack's own __call__ skips module hooks (vLLM's compile wrapper), so
            # the first layer's pre-hook, registered first, maps this forward's rows.
            self.handles.append(layers[0].register_forward_pre_hook(self._table, with_kwargs=True))
            for layer, site in self.plan.places():
                block = layers[layer]
                if site == "resid_pre":
                    h = block.register_forward_pre_hook(self._pre(layer), with_kwargs=True)
                elif site == "resid_post":
                    h = block.register_forward_hook(self._post(layer))
                else:
                    sub = block.self_attn if site == "attn_out" else block.mlp
                    h = sub.register_forward_hook(self._out(layer, site))
                self.handles.append(h)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        handles, self.handles = self.handles, []
        for h in handles:
            h.remove()

    # ----- which rows of this forward belong to which request and op --------------------
    def _request(self, req_id: str) -> int | None:
        if req_id not in self._index:
            state = self.runner.requests.get(req_id)
            params = getattr(state, "sampling_params", None)
            tag = (getattr(params, "extra_args", None) or {}).get(_KEY)
            ok = tag is not None and int(tag[0]) == self.plan.plan_id
            self._index[req_id] = int(tag[1]) if ok and tag is not None else None
        return self._index[req_id]

    def _table(self, module: Any, args: tuple, kwargs: dict) -> None:
        positions = kwargs["positions"] if "positions" in kwargs else args[0]
        batch = self.runner.input_batch
        n = batch.num_reqs
        starts = self.runner.query_start_loc.cpu[: n + 1].tolist()
        pos = positions.tolist()
        rows: dict[tuple[int, int], list[int]] = defaultdict(list)
        reads: list[tuple[int, int]] = []
        for r, req_id in enumerate(batch.req_ids[:n]):
            index = self._request(req_id)
            if index is None:
                continue
            spec = self.plan.requests[index]
            prompt_len = int(self.runner.requests[req_id].num_prompt_tokens)
            span = range(starts[r], starts[r + 1])
            for rnd, (k, rule) in enumerate(spec.ops):
                rows[(rnd, k)].extend(t for t in span if rule.hits(pos[t], prompt_len))
            if spec.read_at is not None:
                reads.extend((index, t) for t in span if pos[t] == spec.read_at)
        dev = positions.device
        self.rows = {key: torch.tensor(v, device=dev) for key, v in rows.items() if v}
        self.read_rows = reads

    # ----- the sites --------------------------------------------------------------------
    def _site(self, layer: int, site: str, act: Tensor) -> Tensor | None:
        """``act`` with this plan's ops at (layer, site) applied to their rows (None: unchanged);
        captures the reads of this place from the result."""
        out: Tensor | None = None
        for key in self.plan.keys_at.get((layer, site), ()):
            idx = self.rows.get(key)
            if idx is None:
                continue
            cur = act if out is None else out
            delta = self.plan.ops[key[1]].edit(cur.index_select(0, idx), layer, site)
            out = cur.index_add(0, idx, delta.to(cur.dtype))
            self.edited[key] = self.edited.get(key, 0) + int(idx.numel())
        if self.read_rows and (layer, site) in self.plan.reads:
            cur = act if out is None else out
            for index, t in self.read_rows:
                got = cur[t].detach().to("cpu", torch.float32).clone()
                self.captured.setdefault(index, {})[(layer, site)] = got
        return out

    def _pre(self, layer: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict) -> Any:
            positions, hidden, residual = args[0], args[1], args[2]
            stream = hidden if residual is None else hidden + residual
            new = self._site(layer, "resid_pre", stream)
            if new is None:
                return None
            rest = None if residual is None else torch.zeros_like(residual)
            return (positions, new, rest, *args[3:]), kwargs

        return hook

    def _post(self, layer: int) -> Any:
        def hook(module: Any, args: tuple, output: Any) -> Any:
            hidden, residual = output
            new = self._site(layer, "resid_post", hidden + residual)
            return None if new is None else (new, torch.zeros_like(residual))

        return hook

    def _out(self, layer: int, site: str) -> Any:
        def hook(module: Any, args: tuple, output: Tensor) -> Any:
            return self._site(layer, site, output)

        return hook


class WorkerExtension:
    """Methods vLLM adds to its worker class (``worker_extension_cls``); the engine calls them
    by name through ``LLM.collective_rpc``. ``self`` is the vLLM worker."""

    def liref_lens_layout(self) -> dict[str, Any]:
        runner: Any = self.model_runner  # type: ignore[attr-defined]
        info = layout(runner.get_model())
        comp = runner.vllm_config.compilation_config
        modes = (getattr(m, "name", str(m)) for m in (comp.mode, comp.cudagraph_mode))
        info["eager"] = all(m == "NONE" for m in modes)
        info["pipeline_parallel_size"] = int(runner.parallel_config.pipeline_parallel_size)
        return info

    def liref_lens_begin(self, blob: bytes) -> None:
        plan = pickle.loads(blob)
        old = getattr(self, "_liref_lens_hooks", None)
        if old is not None:
            old.remove()
        hooks = _Hooks(self.model_runner, plan)  # type: ignore[attr-defined]
        hooks.install()
        self._liref_lens_hooks: _Hooks | None = hooks

    def liref_lens_end(self, plan_id: int) -> bytes:
        hooks = getattr(self, "_liref_lens_hooks", None)
        self._liref_lens_hooks = None
        if hooks is None:
            return pickle.dumps({"captured": {}, "edited": {}, "plan_id": None})
        hooks.remove()
        return pickle.dumps(
            {"captured": hooks.captured, "edited": hooks.edited, "plan_id": hooks.plan.plan_id}
        )
