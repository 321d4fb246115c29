"""Norm layers of the bridge run by the wrapped Hugging Face module where nobody reads inside.

TransformerLens 4's ``NormalizationBridge`` fires ``hook_scale`` and ``hook_normalized`` on every
forward, so it computes each norm itself: GPT-2's LayerNorm in Python (seven passes over the
activations where ``torch.layer_norm`` makes one), and RMSNorm (Llama, Qwen2, Mistral, Gemma)
in Python too, before running the Hugging Face module anyway for its exact numbers. On a
4,096-token prompt GPT-2-small's 25 LayerNorms took 4.3% of the forward's CPU time through the
bridge, 0.8% in Hugging Face's own forward (cProfile). Inside `fused_norms`, a norm
layer whose internal hook points (and the wrapped module) carry no hook runs the Hugging Face
module's own forward between its ``hook_in`` and ``hook_out``, which still fire; a norm with a
hook on its internals, training mode, TransformerLens' compatibility mode and folded layer
norms take the bridge's path, decided per call (hooks added inside the block are honoured).
RMSNorm layers give the same numbers either way (the bridge returned the Hugging Face
module's output); GPT-2's LayerNorm gives Hugging Face's numbers instead of the bridge's
Python ones (equal to float rounding, about 1e-7).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .attention import _is_hooked, _root, _watched

__all__ = ["fused_norms"]

# Exact bridge classes (subclasses, e.g. the parameter-free LNPre, compute something else).
_FUSABLE = frozenset({"NormalizationBridge", "RMSNormalizationBridge"})
_NORMS: weakref.WeakKeyDictionary[Any, list[torch.nn.Module]] = weakref.WeakKeyDictionary()
_ACTIVE: weakref.WeakSet[Any] = weakref.WeakSet()


def _norm_layers(root: Any) -> list[torch.nn.Module]:
    """The bridge's norm layers that wrap a Hugging Face norm (found once per model)."""
    if root not in _NORMS:
        _NORMS[root] = [
            m
            for m in root.modules()
            if type(m).__name__ in _FUSABLE
            and isinstance(m._modules.get("_original_component"), torch.nn.Module)
            and not isinstance(m._modules["_original_component"], torch.nn.Identity)
        ]
    return _NORMS[root]


def _fused_forward(bridge: Any, own: Callable[..., Any]) -> Callable[..., Any]:
    norm = bridge._modules["_original_component"]
    watched = _watched(bridge)

    def forward(hidden_states: torch.Tensor, **kwargs: Any) -> Any:
        if (
            kwargs
            or bridge.training
            or _is_hooked(watched)
            or getattr(bridge, "compatibility_mode", False)
            or getattr(bridge.config, "layer_norm_folding", False)
        ):
            return own(hidden_states, **kwargs)
        x = bridge.hook_in(hidden_states)
        out = norm(x)
        return bridge.hook_out(out if out.dtype == x.dtype else out.to(x.dtype))

    return forward


@contextmanager
def fused_norms(model: Any, enabled: bool = True) -> Iterator[None]:
    """Run unhooked bridge norm layers with their Hugging Face module inside the block.

    Nested blocks are no-ops; on exit, also after an exception, every norm layer gets the
    bridge's forward back. The legacy ``HookedTransformer`` is left as it is.

    Example:
        >>> with fused_norms(lm):
        ...     logits = lm.model(lm.tokenize(["w1 w2 w3"]).input_ids)
    """
    root = _root(model)
    if not enabled or root in _ACTIVE or not hasattr(root, "original_model"):
        yield
        return
    installed = []
    _ACTIVE.add(root)
    try:
        for norm in _norm_layers(root):
            if "forward" in norm.__dict__:
                continue
            # object.__setattr__: the bridge's __setattr__ would forward it to the wrapped module
            object.__setattr__(norm, "forward", _fused_forward(norm, norm.forward))
            installed.append(norm)
        yield
    finally:
        for norm in installed:
            object.__delattr__(norm, "forward")
        _ACTIVE.discard(root)
