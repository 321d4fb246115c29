"""Generation on the wrapped Hugging Face model itself, with plain torch hooks for the ops.

TransformerLens 4's bridge wraps every component of the Hugging Face model in place: inside
``bridge.original_model`` each decoder layer, attention, MLP, norm and linear layer is a bridge
component that holds the Hugging Face module as ``_original_component`` and runs its own Python
around it (hook points, kwargs filtering, re-implemented parts). A steered SmolLM2-135M
``generate`` call made 1.15M Python calls through the bridge against 0.30M here (cProfile), and
on the bridge generation ran at 0.74 to 0.95 of Hugging Face's speed (benchmarks/README.md).
Where a generation needs none of it, `direct_steps` puts the
Hugging Face modules back into their parents' slots for the duration of the call (and the
bridge components back on exit, also after an exception), selects PyTorch's SDPA attention as
the bridge's fused path does (`liref_lens.attention`), and runs the model's own forward with
its own KV cache, with each op as a plain torch hook on the module where its site lives.

Where a site lives is read from the bridge, once (`site_hooks`): a site's hook point is the
``hook_in`` or the ``hook_out`` of a bridge component, and that component wraps one Hugging
Face module, so the site is that module's input or output. For Llama, ``resid_pre`` is the
input of decoder layer ``layer``, ``resid_post`` its output, ``attn_out`` the output of its
``self_attn`` and ``mlp_out`` that of its ``mlp``; for Gemma 3, whose layers normalise each
branch before adding it, ``attn_out`` and ``mlp_out`` are the outputs of
``post_attention_layernorm`` and ``post_feedforward_layernorm``, as the bridge has them. The
hooks call the same `liref_lens.interventions.apply_op` as the bridge's hook points, so the op
math and the position rules are one code path, and the tests compare the two engines token for
token on every architecture they cover.

`unavailable` says when this path must not run, and generation then takes the bridge: hooks
anywhere on the model (on the bridge's hook points, on a bridge component or on a Hugging Face
module: they would fire differently or not at all), a site off the residual stream
(``mlp_post``), attention layers the bridge runs eagerly, TransformerLens' compatibility mode
or processed weights, a ``device_map``, training mode, multimodal models, ``sdpa=False``,
``use_cache=False``, and the legacy ``HookedTransformer``.

While the call runs, the model's modules are rearranged and its config selects SDPA: do not
use the same model from another thread meanwhile (nor was that safe before: the bridge path
also swaps attention forwards in place).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from ._kvcache import check_cache_grew, forward_parameters
from .attention import _WIRING_FLAGS, _global_hooks, fusable_layers
from .model import LensModel
from .positions import StepInfo, step_info

__all__ = ["SITES", "DirectSteps", "direct_steps", "site_hooks", "unavailable"]

Edit = Callable[[Tensor], Tensor]


def _edit_first(output: Any, edit: Edit) -> Any:
    """``output`` with its hidden states (a tensor, or the first item of a tuple) edited."""
    if isinstance(output, Tensor):
        return edit(output)
    return (edit(output[0]), *output[1:])


def _input_hook(edit: Edit) -> Callable[..., Any]:
    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (edit(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}

    return hook


def _output_hook(edit: Edit) -> Callable[..., Any]:
    def hook(module: Any, args: Any, output: Any) -> Any:
        return _edit_first(output, edit)

    return hook


#: The sites this path runs (the residual stream and the two branches that write to it).
SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out")


def _unwrap(module: torch.nn.Module) -> torch.nn.Module | None:
    """The Hugging Face module a bridge component wraps (through nested components)."""
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    inner: torch.nn.Module | None = module
    while isinstance(inner, GeneralizedComponent):
        inner = inner._modules.get("_original_component")
    return inner


def site_hooks(
    model: LensModel, places: Sequence[tuple[int, str]]
) -> list[tuple[torch.nn.Module, bool]]:
    """Where each ``(layer, site)`` lives in the Hugging Face model: ``(module, on_input)``.

    The one rule: the site's TransformerLens hook point (`LensModel.hook_name`) is the
    ``hook_in`` or the ``hook_out`` of a bridge component, and that component wraps one Hugging
    Face module; the site is that module's input (its first argument, or ``hidden_states``)
    or its output (the tensor, or the first item of the tuple it returns). So for Llama
    ``attn_out`` is the output of ``self_attn``, for Gemma 3 the output of
    ``post_attention_layernorm`` (what the layer adds to the residual stream), as the bridge
    has it. Raises `LookupError` where a site is anything else. Call before `direct_steps`
    swaps the modules (the bridge's ``blocks`` read the slots).
    """
    points = model.model.hook_dict
    out = []
    for layer, site in places:
        point = points[model.hook_name(layer, site)]
        owner_name, _, which = str(point.name).rpartition(".")
        if which not in ("hook_in", "hook_out"):
            raise LookupError(f"the hook of {site} is {point.name}, inside a component")
        module = _unwrap(model.model.get_submodule(owner_name))
        if module is None:
            raise LookupError(f"{owner_name} wraps no Hugging Face module")
        out.append((module, which == "hook_in"))
    return out


def hooked_modules(bridge: torch.nn.Module) -> list[str]:
    """Names of the modules of ``bridge`` that carry a hook someone registered."""
    names = []
    for name, m in bridge.named_modules():
        tables = (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)
        if any(not _internal(fn) for table in tables for fn in table.values()):
            names.append(name or "the model")
    return names


def _swaps(bridge: Any) -> list[tuple[torch.nn.Module, str, torch.nn.Module, torch.nn.Module]]:
    """``(parent, name, bridge component, Hugging Face module)`` for every wrapped slot."""
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    found: list[tuple[torch.nn.Module, str, torch.nn.Module, torch.nn.Module]] = []

    def visit(module: torch.nn.Module) -> None:
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            inner = child
            while isinstance(inner, GeneralizedComponent):
                wrapped = inner._modules.get("_original_component")
                if wrapped is None:
                    raise LookupError(f"{type(child).__name__} wraps no Hugging Face module")
                inner = wrapped
            if inner is not child:
                found.append((module, name, child, inner))
            visit(inner)

    visit(bridge.original_model)
    return found


def _internal(fn: Any) -> bool:
    """A hook that transformers or the bridge installs for itself (output capture)."""
    where = str(getattr(fn, "__module__", ""))
    return where.startswith(("transformers.", "transformer_lens.model_bridge."))


def unavailable(model: LensModel, ops: Sequence[Any], use_cache: bool) -> str | None:
    """Why `generate` cannot take the direct path for this call (None: it can)."""
    if model.backend != "bridge":
        return "the legacy HookedTransformer"
    if not use_cache:
        return "use_cache=False"
    if not model.sdpa:
        return "sdpa=False (eager attention asked for)"
    bridge = model.model
    places = sorted(
        {
            (layer, site)
            for op in ops
            for o in op.flatten()
            for layer in o.layers
            for site in o.sites
        }
    )
    off = sorted({site for _, site in places} - set(SITES))
    if off:
        return f"an op at {off} (off the residual stream)"
    if bridge.training:
        return "training mode"
    if any(getattr(bridge.cfg, f"is_{kind}", False) for kind in ("multimodal", "visual_model")):
        return "a multimodal model"
    if not {"input_ids", "attention_mask", "position_ids"} <= forward_parameters(
        bridge.original_model
    ):
        return "a Hugging Face forward without input_ids, attention_mask and position_ids"
    if getattr(bridge, "compatibility_mode", False) or getattr(bridge, "_weights_processed", False):
        return "TransformerLens compatibility mode (processed weights)"
    if getattr(bridge.original_model, "hf_device_map", None):
        return "a device_map"
    if any(getattr(bridge.cfg, flag, False) for flag in _WIRING_FLAGS):
        return "a TransformerLens attention wiring option (split q/k/v input, attn result)"
    if fusable_layers(model) != list(range(model.n_layers)):
        return "attention layers that the bridge runs eagerly"
    if _global_hooks():
        return "a global module hook"
    hooked = hooked_modules(bridge)
    if hooked:
        return f"hooks on {hooked[0]}" + (f" and {len(hooked) - 1} more" if len(hooked) > 1 else "")
    try:
        _swaps(bridge)
        site_hooks(model, [(model.resolve_layer(layer), site) for layer, site in places])
    except LookupError as err:
        return str(err)
    return None


def _config(module: torch.nn.Module) -> Any:
    config = module.__dict__.get("config")
    return config if hasattr(config, "_attn_implementation_internal") else None


class DirectSteps:
    """Decode steps on the unwrapped Hugging Face model (made by `direct_steps`)."""

    def __init__(self, model: LensModel) -> None:
        self.hf = model.model.original_model
        self.cache_kwarg = model._cache_kwarg
        self.keeps_logits = model._keeps_logits

    def _run(
        self, ids: Tensor, mask: Tensor, past: Any, info: StepInfo, cache: bool, last: bool = True
    ) -> Any:
        positions = (mask.cumsum(-1) - 1).clamp_min(0)[:, info.start :]
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self.keeps_logits and last else {}
        if cache:
            kwargs[self.cache_kwarg] = past
        with step_info(info):
            return self.hf(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=cache,
                **kwargs,
            )

    def step(self, new: Tensor, mask: Tensor, past: Any, info: StepInfo) -> tuple[Tensor, Any]:
        """Logits of the last new token ``[batch, 1, vocab]`` and the grown cache."""
        out = self._run(new, mask, past, info, cache=True)
        past = out.past_key_values
        check_cache_grew(past, int(mask.shape[1]))
        return out.logits[:, -1:], past

    def full(self, tokens: Tensor, mask: Tensor, info: StepInfo) -> Tensor:
        """Logits of the last token ``[batch, 1, vocab]``, recomputed without a cache."""
        return self._run(tokens, mask, None, info, cache=False).logits[:, -1:]


@contextmanager
def direct_steps(model: LensModel, edits: Sequence[tuple[int, str, Edit]]) -> Iterator[DirectSteps]:
    """Inside: the Hugging Face modules sit in their slots, SDPA is selected and ``edits``
    (``(layer, site, edit)``, from `InterventionHandle.edits`) hook their sites. On exit,
    also after an exception, the hooks are removed and the bridge is as it was.

    Check `unavailable` first: this runs the model as Hugging Face does, whatever is hooked.
    """
    bridge = model.model
    swaps = _swaps(bridge)
    targets = site_hooks(model, [(layer, site) for layer, site, _ in edits])
    switched = []
    handles = []
    try:
        for parent, name, _, inner in swaps:
            parent._modules[name] = inner
        # every config the Hugging Face modules read (they usually share one): SDPA masks
        # and attention, as in the bridge's fused path
        configs = {id(c): c for m in bridge.original_model.modules() if (c := _config(m))}
        for config in configs.values():
            if config._attn_implementation_internal == "eager":
                config._attn_implementation_internal = "sdpa"
                switched.append(config)
        for (module, on_input), (_, _, edit) in zip(targets, edits, strict=True):
            if on_input:
                handle = module.register_forward_pre_hook(_input_hook(edit), with_kwargs=True)
            else:
                handle = module.register_forward_hook(_output_hook(edit))
            handles.append(handle)
        yield DirectSteps(model)
    finally:
        for handle in handles:
            handle.remove()
        for config in switched:
            config._attn_implementation_internal = "eager"
        for parent, name, child, _ in reversed(swaps):
            parent._modules[name] = child
