"""steering-vectors (the real package): a converted vector applied with its own ``apply`` equals
this toolkit's `Add`, and a vector it trained, imported, equals its own application.

Checked on the tiny GPT-2 and Llama models and on SmolLM2: logits at every position (float32:
atol 1e-4 on the tiny models, 1e-3 on SmolLM2's logits of up to ~20) and 8 greedy
continuations of 8 tokens; the off-by-one placement (``resid_pre``
L at block L's output) is far off.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from steering_vectors import SteeringVector, train_steering_vector
from tests.interop.helpers import (
    CONTINUE,
    MEMORY,
    REASONING,
    hf_greedy,
    hf_logits,
    lens_logits,
    load_hf,
)
from tests.interop.helpers import max_gap as gap

from liref_lens import Add, generate
from liref_lens.export import from_steering_vector, to_steering_vector


def test_exported_vector_applied_by_steering_vectors_equals_add(setting) -> None:
    lm, folder, ds, layer, alpha, atol = setting
    hf = load_hf(folder)
    prompts = lm.encode(CONTINUE)
    sv = to_steering_vector(ds, layers=[layer], strength=alpha)
    assert isinstance(sv, SteeringVector) and sorted(sv.layer_activations) == [layer - 1]
    op = Add(layers=[layer], direction=ds, alpha=alpha)
    want = lens_logits(lm, prompts, op)
    with sv.apply(hf):
        got = hf_logits(hf, prompts)
        greedy = hf_greedy(hf, prompts, 8)
    assert gap(got, want) < atol
    ours = generate(lm, CONTINUE, 8, ops=[op], stop_at_eos=False).tokens
    assert greedy == ours, "greedy continuations differ"
    base = hf_logits(hf, prompts)
    assert gap(base, want) > 100 * gap(got, want)  # the vector changed the logits
    # off by one: the same vector at block `layer`'s output is a different edit
    wrong = dataclasses.replace(sv, layer_activations={layer: sv.layer_activations[layer - 1]})
    with wrong.apply(hf):
        assert gap(hf_logits(hf, prompts), want) > 100 * gap(got, want)


def test_trained_vector_imported_equals_its_own_application(setting) -> None:
    lm, folder, _, layer, _, atol = setting
    hf = load_hf(folder)
    samples = list(zip(REASONING, MEMORY, strict=True))
    sv = train_steering_vector(
        hf, lm.tokenizer, samples, layers=[layer - 2, layer - 1], read_token_index=-1,
        show_progress=False,
    )  # fmt: skip
    ds = from_steering_vector(sv, site="resid_pre", model_name=lm.name)
    assert ds.layers == (layer - 1, layer) and ds.site == "resid_pre"
    prompts = lm.encode(CONTINUE)
    with sv.apply(hf, multiplier=2.0):
        got = hf_logits(hf, prompts)
    op = Add(layers=list(ds.layers), direction=ds, alpha=2.0, allow_transfer=True)
    assert gap(got, lens_logits(lm, prompts, op)) < atol
    post = from_steering_vector(sv)  # the same edit named as resid_post of the block
    op_post = Add(layers=list(post.layers), sites=["resid_post"], direction=post, alpha=2.0,
                  allow_transfer=True)  # fmt: skip
    assert gap(got, lens_logits(lm, prompts, op_post)) < atol


def test_other_layer_types_are_refused() -> None:
    sv = SteeringVector({1: torch.ones(4)}, "mlp")
    with pytest.raises(ValueError, match="steers 'mlp' outputs"):
        from_steering_vector(sv)
