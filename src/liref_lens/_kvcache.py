"""Keeping the key-value cache honest across transformers and TransformerLens releases.

Generation reuses keys and values between decode steps. If a library release changes how the
cache is handed around, the cache can stay empty without any error, and every decode step then
attends to its own token alone: generation returns fluent, wrong text. This happened with
transformers 5.24, which renamed the cache argument from ``past_key_values`` to ``cache``: its
layers pass ``cache=`` to attention, while the TransformerLens 4.3 bridge, which re-implements
attention, only reads ``past_key_values`` (or ``layer_past``).

Two defences live here:

- `bridge_cache_adapter`: while cached steps run (`LensModel.prepared`, entered once around a
  whole generation), a keyword pre-hook on each bridge attention module also offers the cache
  under the old name, so the bridge extends it. (Layers that run
  fused, `liref_lens.attention`, hand the cache to the Hugging Face module under the name its
  own layer passed, and need no adapter.)
- `check_cache_grew`: after every cached step, the cache must hold exactly as many positions as
  the attention mask. If not, `KVCacheError` names the installed versions and the fix.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = [
    "KVCacheError",
    "KVCacheFallbackWarning",
    "bridge_cache_adapter",
    "cache_length",
    "check_cache_grew",
]


class KVCacheError(RuntimeError):
    """The key-value cache did not grow as a cached forward pass should have made it grow."""


class KVCacheFallbackWarning(UserWarning):
    """Generation found the KV cache not growing at its first step and ran without it."""


def forward_parameters(module: Any) -> frozenset[str]:
    """Names of the parameters of ``module.forward`` (empty when unreadable or absent)."""
    forward = getattr(module, "forward", None)
    if forward is None:
        return frozenset()
    try:
        return frozenset(inspect.signature(forward).parameters)
    except (TypeError, ValueError):  # a forward without a readable signature
        return frozenset()


def _offer_old_name(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    cache = kwargs.get("cache")
    if cache is None or kwargs.get("past_key_values") is not None:
        return None
    if kwargs.get("layer_past") is not None:
        return None
    return args, {**kwargs, "past_key_values": cache}


@contextmanager
def bridge_cache_adapter(bridge: Any, *, enabled: bool) -> Iterator[None]:
    """While inside, bridge attention modules also see ``cache=`` as ``past_key_values=``.

    The hooks are plain ``torch`` keyword pre-hooks on the attention modules of the bridge
    (the ones that extend the cache themselves); they are removed on exit, always.
    """
    if not enabled:
        yield
        return
    try:
        from transformer_lens.model_bridge.generalized_components.attention import (
            AttentionBridge,
        )
    except ImportError:  # another TransformerLens layout: the length check still guards
        yield
        return
    handles = [
        module.register_forward_pre_hook(_offer_old_name, with_kwargs=True)
        for module in bridge.modules()
        if isinstance(module, AttentionBridge)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def cache_length(past: Any) -> int | None:
    """Positions held by a Hugging Face ``Cache`` or a legacy TransformerLens cache.

    None when the cache type is unknown.

    Example:
        >>> from transformers import DynamicCache
        >>> cache_length(DynamicCache())
        0
    """
    get = getattr(past, "get_seq_length", None)
    if callable(get):
        return int(get())
    entries = getattr(past, "entries", None)
    if entries:  # TransformerLensKeyValueCache: [batch, pos, head, d_head] per layer
        return int(entries[0].past_keys.shape[1])
    return None


def _versions() -> str:
    found = []
    for name in ("transformers", "transformer-lens", "torch"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found)


def check_cache_grew(past: Any, expected: int) -> None:
    """Raise `KVCacheError` unless ``past`` holds ``expected`` positions.

    Example:
        >>> from transformers import DynamicCache
        >>> check_cache_grew(DynamicCache(), 5)
        Traceback (most recent call last):
        ...
        liref_lens._kvcache.KVCacheError: the KV cache holds 0 positions after a cached step ...
    """
    got = cache_length(past)
    if got is None and past is not None:
        return  # a cache type we cannot measure: nothing to compare
    if got != expected:
        raise KVCacheError(
            f"the KV cache holds {got} positions after a cached step over {expected}: with "
            f"these library versions ({_versions()}) the cache is not being filled, and cached "
            "generation would silently ignore the prompt. Use generate(..., use_cache=False), "
            "or install the versions liref-lens tests (constraints.txt in the repository; "
            "README, 'Supported versions')."
        )
