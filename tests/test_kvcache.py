"""The KV cache must grow with every cached step, and cached generation must equal recompute.

transformers 5.24 renamed the cache argument (``past_key_values`` -> ``cache``) and the
TransformerLens 4.3 bridge's attention stopped extending the cache: cached generation returned
fluent, wrong tokens without any error. These tests fail if that ever happens again.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import pytest
import torch

import liref_lens.model as model_module
from liref_lens import generate
from liref_lens._kvcache import (
    KVCacheError,
    KVCacheFallbackWarning,
    cache_length,
    check_cache_grew,
)

PADDED = ["w1 w2 w3 w4 w5 w6", "w7", "w8 w9 + 3 ="]


def test_cache_grows_by_the_new_tokens_at_every_step(lm) -> None:
    batch = lm.tokenize(PADDED)
    width = batch.input_ids.shape[1]
    logits, past = lm.step(batch.input_ids, batch.attention_mask)
    assert cache_length(past) == width
    mask = batch.attention_mask
    for extra in range(1, 4):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
        logits, past = lm.step(nxt, mask, past)
        assert cache_length(past) == width + extra


def test_cached_generation_equals_full_recompute_token_for_token(lm) -> None:
    kw = dict(max_new_tokens=10, stop_at_eos=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to no-cache would hide a broken cache
        cached = generate(lm, PADDED, use_cache=True, **kw)
    full = generate(lm, PADDED, use_cache=False, **kw)
    assert cached.tokens == full.tokens
    # And each row equals the row generated alone (no padding, no batch neighbours).
    for i, prompt in enumerate(PADDED):
        assert generate(lm, [prompt], use_cache=True, **kw).tokens[0] == cached.tokens[i]


@contextmanager
def _no_adapter(monkeypatch, lm):
    """Run as the bridge's own (eager) attention would without the adapter for the renamed
    cache argument. (Fused layers hand the cache to the Hugging Face module, which reads it
    under its own name and needs no adapter: see the last test.)"""

    @contextmanager
    def passthrough(bridge, *, enabled):
        yield

    monkeypatch.setattr(model_module, "_bridge_cache_adapter", passthrough)
    monkeypatch.setattr(lm, "sdpa", False)
    yield


def test_guard_refuses_a_cache_that_did_not_grow(lm, monkeypatch) -> None:
    """Without the adapter, a release that renames the cache argument is caught, never silent."""
    batch = lm.tokenize(PADDED)
    with _no_adapter(monkeypatch, lm):
        if lm.backend == "bridge" and lm._cache_kwarg == "cache":
            with pytest.raises(KVCacheError, match="transformers"):
                lm.step(batch.input_ids, batch.attention_mask)
        else:  # releases before the rename fill the cache without help
            _, past = lm.step(batch.input_ids, batch.attention_mask)
            assert cache_length(past) == batch.input_ids.shape[1]


def test_generate_falls_back_to_recompute_when_the_cache_stays_empty(lm, monkeypatch) -> None:
    kw = dict(max_new_tokens=6, stop_at_eos=False)
    full = generate(lm, PADDED, use_cache=False, **kw)
    with _no_adapter(monkeypatch, lm):
        if lm.backend == "bridge" and lm._cache_kwarg == "cache":
            with pytest.warns(KVCacheFallbackWarning, match="without the KV cache"):
                got = generate(lm, PADDED, use_cache=True, **kw)
        else:
            got = generate(lm, PADDED, use_cache=True, **kw)
    assert got.tokens == full.tokens


def test_check_cache_grew_names_the_versions_and_the_fix() -> None:
    from transformers import DynamicCache

    with pytest.raises(KVCacheError) as err:
        check_cache_grew(DynamicCache(), 7)
    text = str(err.value)
    assert "holds 0 positions" in text and "over 7" in text
    assert "transformers " in text and "transformer-lens " in text
    assert "use_cache=False" in text


def test_fused_layers_fill_the_cache_without_the_adapter(lm, monkeypatch) -> None:
    """Fused attention extends the cache under the name the Hugging Face layer passes."""
    kw = dict(max_new_tokens=6, stop_at_eos=False)
    full = generate(lm, PADDED, use_cache=False, **kw)

    @contextmanager
    def passthrough(bridge, *, enabled):
        yield

    monkeypatch.setattr(model_module, "_bridge_cache_adapter", passthrough)
    batch = lm.tokenize(PADDED)
    _, past = lm.step(batch.input_ids, batch.attention_mask)  # no KVCacheError
    assert cache_length(past) == batch.input_ids.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to recompute
        assert generate(lm, PADDED, use_cache=True, **kw).tokens == full.tokens
