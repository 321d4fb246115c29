"""Fused attention for the bridge wherever no attention hook is requested.

TransformerLens 4's `TransformerBridge` recomputes every attention layer itself, eagerly, so
that ``hook_attn_scores`` and ``hook_pattern`` can fire: each layer materialises
``[batch, head, pos, pos]`` scores and weights even when nobody reads them, which makes a long
prompt's peak memory grow with pos² (at 4096 tokens a GPT-2-small forward needed 2.0x the
memory of Hugging Face's SDPA one). Inside `fused_attention`, an attention layer whose internal
hook points (scores, pattern, q/k/v, z, rotary, ...) have no hooks runs the wrapped Hugging
Face module's own forward with PyTorch's ``scaled_dot_product_attention`` instead (flash or
memory-efficient kernels, no ``pos x pos`` tensor per head); its ``hook_in`` and ``hook_out``
(``blocks.L.hook_attn_out``) still fire, and the residual-stream hooks are untouched. With a
KV cache the Hugging Face module extends the cache itself, under the argument name its own
layer passes (so a renamed cache argument cannot leave it empty; `LensModel.step` still
checks that it grew). A layer with any hook on its internals, a forward that asks for
attention weights, training mode, TransformerLens' compatibility mode and the
split-QKV/attn-result options take the bridge's eager path, decided per call: hooks added
inside the context are honoured.

Only three bridge classes fuse: GPT-2's joint QKV attention and the rotary attention of
Llama-style models (Llama, Mistral, Qwen2/3, Phi...; the tests compare GPT-2, Llama and Qwen2
with the eager path and with Hugging Face's own eager model), plus joint QKV with rotary.
Where the bridge splits a fused QKV weight, the split must be a view of it, so that a weight
edit through ``q``/``k``/``v`` (`liref_lens.weights`) reaches the fused forward: GPT-2's is;
GPT-NeoX's (Pythia) is a copy, so NeoX layers stay eager. Layers with logit soft-capping
(Gemma 2) or attention sinks (GPT-OSS), which PyTorch's kernel cannot express, stay eager, as
does everything on the legacy ``HookedTransformer``.

The padding mask is the one the bridge's Hugging Face model built (an additive
``[batch, 1, pos, pos]`` mask, shared by all layers), so padded batches give the same numbers
as the eager path up to float rounding (about 1e-7 in float32).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["align_eager_attention", "fused_attention", "fusable_layers"]

# Exact bridge classes (not subclasses: those reimplement attention differently).
_FUSABLE = frozenset(
    {
        "JointQKVAttentionBridge",
        "JointQKVPositionEmbeddingsAttentionBridge",
        "PositionEmbeddingsAttentionBridge",
    }
)
# Bridge config flags that change how attention is wired (per-head inputs or outputs).
_WIRING_FLAGS = ("use_split_qkv_input", "use_attn_in", "use_attn_result", "use_hook_attn_in")


# The submodules of each attention module whose hooks decide the path, found once (walking
# the modules on every forward cost about half a millisecond for a 30-layer model).
_WATCHED: weakref.WeakKeyDictionary[torch.nn.Module, list[torch.nn.Module]] = (
    weakref.WeakKeyDictionary()
)


def _watched(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Every submodule of ``module`` except its own ``hook_in``/``hook_out``.

    Not only the hook points: a plain torch hook on ``q``, ``k``, ``v``, ``o``, ``qkv`` or the
    wrapped Hugging Face module fires on one path and not on the other (the eager path calls
    the split ``q``/``k``/``v``; the fused path calls the Hugging Face module and its fused
    projection), so a layer with any such hook must run eager, as it would with
    ``sdpa=False``.
    """
    if module not in _WATCHED:
        _WATCHED[module] = [
            m for name, m in module.named_modules() if name not in ("", "hook_in", "hook_out")
        ]
    return _WATCHED[module]


def _foreign(fn: Any) -> bool:
    """A hook that transformers installs itself (it records attention outputs only when asked
    to, ``output_attentions``, which takes the eager path anyway)."""
    return str(getattr(fn, "__module__", "")).startswith("transformers.")


def _has_hooks(m: torch.nn.Module) -> bool:
    hooks = (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)
    return any(not _foreign(fn) for table in hooks for fn in table.values())


def _global_hooks() -> bool:
    """Hooks registered for every module (``torch.nn.modules.module.register_module_*``): the
    fused and eager paths call different modules, so such a hook sees different calls."""
    from torch.nn.modules import module as torch_module

    return any(
        getattr(torch_module, name, None)
        for name in (
            "_global_forward_hooks",
            "_global_forward_pre_hooks",
            "_global_backward_hooks",
            "_global_backward_pre_hooks",
        )
    )


def _is_hooked(modules: list[torch.nn.Module]) -> bool:
    return any(_has_hooks(m) for m in modules) or _global_hooks()


def _shares_storage(bridge: torch.nn.Module) -> bool:
    """A joint-QKV bridge's ``q``/``k``/``v`` weights are views of the fused weight."""
    fused = getattr(getattr(bridge, "qkv", None), "original_component", None)
    fused_weight = getattr(fused, "weight", None)
    if not isinstance(fused_weight, torch.Tensor):
        return False
    base = fused_weight.untyped_storage().data_ptr()
    for part in ("q", "k", "v"):
        weight = getattr(
            getattr(getattr(bridge, part, None), "original_component", None), "weight", None
        )
        if not isinstance(weight, torch.Tensor) or weight.untyped_storage().data_ptr() != base:
            return False
    return True


def _fusable(bridge: torch.nn.Module) -> bool:
    """Whether ``bridge``'s wrapped Hugging Face attention can run with SDPA unchanged."""
    name = type(bridge).__name__
    if name not in _FUSABLE:
        return False
    hf_attn = bridge._modules.get("_original_component")
    config = getattr(hf_attn, "config", None)
    if hf_attn is None or config is None or not hasattr(config, "_attn_implementation"):
        return False
    if getattr(hf_attn, "attn_logit_softcapping", None) is not None:
        return False
    if getattr(hf_attn, "sinks", None) is not None:
        return False
    return not name.startswith("JointQKV") or _shares_storage(bridge)


def _root(model: Any) -> Any:
    """The TransformerLens model of a `LensModel` (``bridge.model`` is the HF body)."""
    from .model import LensModel

    return model.model if isinstance(model, LensModel) else model


def _attention_modules(root: Any) -> dict[int, torch.nn.Module]:
    """Layer -> attention module, for the layers whose attention can fuse."""
    if not hasattr(root, "original_model"):  # the legacy HookedTransformer: never fused
        return {}
    attns = {i: block._modules.get("attn") for i, block in enumerate(root.blocks)}
    return {i: a for i, a in attns.items() if a is not None and _fusable(a)}


def _eager_query_factor(bridge: Any) -> float | None:
    """How much the bridge's eager GPT-2 attention must scale its queries to match Hugging Face.

    TransformerLens 4.3's joint-QKV attention always scales scores by ``1/sqrt(d_head)`` (and
    by ``1/(layer + 1)`` where the config asks), while a GPT-2 config with
    ``scale_attn_weights=False`` scales by 1: with a hook on ``hook_pattern`` (or
    ``sdpa=False``) that layer silently computed another model. None where nothing is off.
    """
    from transformer_lens.model_bridge.generalized_components.joint_qkv_attention import (
        JointQKVAttentionBridge,
    )

    if type(bridge) is not JointQKVAttentionBridge:  # subclasses compute scores their own way
        return None
    hf_attn: Any = bridge._modules.get("_original_component")
    if getattr(hf_attn, "scale_attn_weights", True) is not False:
        return None
    return float(hf_attn.head_dim) ** 0.5


def align_eager_attention(model: Any) -> list[int]:
    """Make the bridge's eager attention compute what the Hugging Face model computes.

    Where the eager path is known to differ (GPT-2 with ``scale_attn_weights=False``, see
    `_eager_query_factor`), the layer's query is rescaled before the bridge scores it, so
    ``hook_attn_scores`` and ``hook_pattern`` see Hugging Face's scores and the logits match
    the fused path. `LensModel` calls this once for the model it wraps; calling it again is a
    no-op. Returns the layers it changed.

    Example:
        >>> align_eager_attention(lm)  # a default GPT-2 or Llama config needs nothing
        []
    """
    root = _root(model)
    if not hasattr(root, "original_model"):  # the legacy HookedTransformer
        return []
    fixed = []
    for i, block in enumerate(root.blocks):
        attn = block._modules.get("attn")
        factor = None if attn is None else _eager_query_factor(attn)
        if factor is None or "_reconstruct_attention" in attn.__dict__:
            continue
        reconstruct = attn._reconstruct_attention

        def scaled(q: Any, k: Any, v: Any, *, _f: float = factor, _r: Any = reconstruct, **kw: Any):
            return _r(q * _f, k, v, **kw)

        # object.__setattr__: the bridge's __setattr__ would forward it to the wrapped module
        object.__setattr__(attn, "_reconstruct_attention", scaled)
        fixed.append(i)
    return fixed


def fusable_layers(model: Any) -> list[int]:
    """The layers whose attention `fused_attention` can run fused (when unhooked).

    Args:
        model: a `LensModel` or a TransformerLens model.

    Example:
        >>> fusable_layers(lm)  # the tiny bridge model's three layers
        [0, 1, 2]
    """
    return list(_attention_modules(_root(model)))


def _sdpa_config(config: Any) -> Any:
    """A shallow copy of a Hugging Face config that selects SDPA attention."""
    sdpa = copy.copy(config)
    sdpa._attn_implementation_internal = "sdpa"
    return sdpa


def _fused_forward(bridge: Any, eager: Callable[..., Any], sdpa_config: Any) -> Callable[..., Any]:
    hf_attn: Any = bridge._modules["_original_component"]
    watched = _watched(bridge)
    model_cfg = bridge.config

    def forward(*args: Any, **kwargs: Any) -> Any:
        if (
            bridge.training
            or _is_hooked(watched)
            or kwargs.get("output_attentions")
            or getattr(bridge, "compatibility_mode", False)
            or any(getattr(model_cfg, flag, False) for flag in _WIRING_FLAGS)
        ):
            return eager(*args, **kwargs)
        if "hidden_states" in kwargs:
            hidden = kwargs.pop("hidden_states")
        else:
            hidden, args = args[0], args[1:]
        hidden = bridge.hook_in(hidden)
        if kwargs.get("cache") is not None and kwargs.get("past_key_values") is kwargs["cache"]:
            # The old name, offered to the bridge's own attention by `_kvcache`; the Hugging
            # Face module reads the cache under the name its own layer passed.
            del kwargs["past_key_values"]
        eager_config = hf_attn.config
        hf_attn.config = sdpa_config
        try:
            output = hf_attn(hidden, *args, **kwargs)
        finally:
            hf_attn.config = eager_config
        return bridge.hook_out(output[0]), None

    return forward


@contextmanager
def fused_attention(model: Any, enabled: bool = True) -> Iterator[None]:
    """Run unhooked bridge attention layers with SDPA for the duration of the block.

    The choice is made per layer and per call (see the module docstring), so hooks on
    ``hook_pattern`` or ``hook_attn_scores`` added inside the block still fire (on the eager
    path). On exit, also after an exception, every layer gets its eager forward back. Nested
    uses are no-ops; models without fusable layers are left as they are.

    Args:
        model: a `LensModel` or a TransformerLens model.
        enabled: ``False`` makes the block a no-op (the eager path everywhere).

    Example:
        >>> with fused_attention(lm):
        ...     logits = lm.model(lm.tokenize(["w1 w2 w3"]).input_ids)
    """
    root = _root(model)
    installed = []
    configs: dict[int, Any] = {}  # one SDPA copy per distinct config (layers share one)
    try:
        for attn in _attention_modules(root).values() if enabled else []:
            if "forward" in attn.__dict__:  # already fused by an outer block
                continue
            config = getattr(attn._modules["_original_component"], "config", None)
            if id(config) not in configs:
                configs[id(config)] = _sdpa_config(config)
            fused = _fused_forward(attn, attn.forward, configs[id(config)])
            # object.__setattr__: the bridge's __setattr__ would forward ``forward`` to the
            # wrapped Hugging Face module.
            object.__setattr__(attn, "forward", fused)
            installed.append(attn)
        yield
    finally:
        for attn in installed:
            object.__delattr__(attn, "forward")
