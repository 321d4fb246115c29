from __future__ import annotations

import dataclasses

import pytest
import torch

from liref_lens import LensModel, at, cache_activations, last
from liref_lens.generation import generate
from liref_lens.interventions import (
    Add,
    NeuronShift,
    ProjectOut,
    Scale,
    attach,
    intervene,
    paper_scale,
)


def _direction(lm: LensModel, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(lm.n_layers, lm.d_model, generator=gen) * scale


def _resid(lm: LensModel, prompts, layer: int, position=None) -> torch.Tensor:
    return (
        cache_activations(lm, prompts, layers=[layer], position=position or last(), progress=False)
        .tensor[:, 0]
        .double()
    )


def _no_hooks(lm: LensModel) -> bool:
    return not any(hp.fwd_hooks for hp in lm.model.hook_dict.values())


def test_ops_match_their_formulas(lm: LensModel, prompts) -> None:
    d = _direction(lm)
    r = (d[1] / d[1].norm()).double()
    base = _resid(lm, prompts, 1)
    with intervene(lm, Add(layers=[1], direction=d, alpha=0.7)):
        added = _resid(lm, prompts, 1)
    torch.testing.assert_close(added, base + 0.7 * d[1].double(), atol=1e-5, rtol=0)
    with intervene(lm, ProjectOut(layers=[1], direction=d)):
        out = _resid(lm, prompts, 1)
    assert (out @ r).abs().max() < 1e-5
    torch.testing.assert_close(out, base - (base @ r)[:, None] * r, atol=1e-5, rtol=0)
    with intervene(lm, Scale(layers=[1], direction=d, alpha=-0.5)):
        scaled = _resid(lm, prompts, 1)
    torch.testing.assert_close(scaled, base - 0.5 * (base @ r)[:, None] * r, atol=1e-5, rtol=0)
    with intervene(lm, Add(layers=[1], direction=d, alpha=2.0, scale="unit")):
        unit = _resid(lm, prompts, 1)
    torch.testing.assert_close(unit, base + 2.0 * r, atol=1e-5, rtol=0)
    norms = {1: 3.0}
    with intervene(lm, Add(layers=[1], direction=d, alpha=0.5, scale="resid_norm", norms=norms)):
        rn = _resid(lm, prompts, 1)
    torch.testing.assert_close(rn, base + 1.5 * r, atol=1e-5, rtol=0)
    assert _no_hooks(lm)


def test_neuron_shift(lm: LensModel, prompts) -> None:
    base = cache_activations(lm, prompts, layers=[2], sites="mlp_post", progress=False).tensor
    with intervene(lm, NeuronShift(shifts={2: ([0, 5], [1.5, -2.0])})):
        got = cache_activations(lm, prompts, layers=[2], sites="mlp_post", progress=False).tensor
    want = base.clone()
    want[:, 0, 0] += 1.5
    want[:, 0, 5] -= 2.0
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_position_selector_only_touches_its_token(lm: LensModel, prompts) -> None:
    d = _direction(lm)
    long_prompts = [p for p in prompts if len(p.split()) >= 2]
    before = [_resid(lm, long_prompts, 1, pos) for pos in (last(), at(-2))]
    with intervene(lm, Add(layers=[1], direction=d, alpha=1.0, positions=last())):
        after = [_resid(lm, long_prompts, 1, pos) for pos in (last(), at(-2))]
    torch.testing.assert_close(after[0], before[0] + d[1].double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(after[1], before[1], atol=1e-6, rtol=0)


def test_paper_scale_matches_plain_hf_hooks(lm: LensModel, hf_model, prompts) -> None:
    """Independent re-implementation of the paper's hook formula on the raw HF modules."""
    d = _direction(lm, seed=3)
    alpha, src = -0.8, 1
    r = d[src] / d[src].norm()

    def scale(h: torch.Tensor) -> torch.Tensor:
        return h + alpha * (h @ r)[..., None] * r

    layers = hf_model.model.layers if hasattr(hf_model, "model") else hf_model.transformer.h
    handles = []
    for block in layers:
        attn = block.self_attn if hasattr(block, "self_attn") else block.attn

        def pre(mod, args, kwargs):
            if args:
                return (scale(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": scale(kwargs["hidden_states"])}

        handles += [
            block.register_forward_pre_hook(pre, with_kwargs=True),
            attn.register_forward_hook(lambda m, a, o: (scale(o[0]), *o[1:])),
            block.mlp.register_forward_hook(lambda m, a, o: scale(o)),
        ]
    try:
        for ids in lm.encode(prompts):
            with torch.no_grad():
                want = hf_model(torch.tensor([ids])).logits
            with intervene(lm, paper_scale(d, alpha, lm, source_layer=src)):
                got = lm.forward(lm.pad([ids]))
            torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    finally:
        for h in handles:
            h.remove()


OPS = {
    "add": lambda d: Add(layers=[1], direction=d, alpha=4.0),
    "project_out": lambda d: ProjectOut(layers=[0, 1, 2], direction=d),
    "scale": lambda d: Scale(layers=[1, 2], direction=d, alpha=-3.0),
    "neuron": lambda d: NeuronShift(shifts={1: ([0, 1, 2, 3], [5.0, -5.0, 5.0, -5.0])}),
}


@pytest.mark.parametrize("rule", ["prompt", "generated", "all"])
@pytest.mark.parametrize("op_name", list(OPS))
def test_kv_cache_invariance(lm: LensModel, prompts, op_name: str, rule: str) -> None:
    d = _direction(lm, seed=1, scale=3.0)
    op = OPS[op_name](d)
    op = dataclasses.replace(op, positions=rule)
    kw = dict(max_new_tokens=6, stop_at_eos=False)
    cached = generate(lm, prompts, ops=[op], use_cache=True, **kw)
    full = generate(lm, prompts, ops=[op], use_cache=False, **kw)
    assert cached.tokens == full.tokens
    if op_name == "add":  # the test must be able to fail: steering changes the output
        assert cached.tokens != generate(lm, prompts, use_cache=True, **kw).tokens
    assert _no_hooks(lm)


@pytest.mark.parametrize("rule", ["prompt", "generated"])
def test_steered_generation_is_batch_invariant(lm: LensModel, prompts, rule: str) -> None:
    op = Add(layers=[1], direction=_direction(lm, seed=2, scale=3.0), alpha=2.0, positions=rule)
    batched = generate(lm, prompts, 5, ops=[op], stop_at_eos=False, batch_size=len(prompts))
    single = [generate(lm, [p], 5, ops=[op], stop_at_eos=False).tokens[0] for p in prompts]
    assert batched.tokens == single


def test_sampling_is_seeded(lm: LensModel, prompts) -> None:
    def run(seed: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(seed)
        return generate(lm, prompts, 5, do_sample=True, generator=g, stop_at_eos=False).tokens

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_hooks_removed_after_exception(lm: LensModel, prompts) -> None:
    batch = lm.tokenize(prompts)
    with torch.no_grad():
        clean = lm.forward(batch)
    d = _direction(lm)
    d_before = d.clone()
    with pytest.raises(KeyError, match="boom"):
        with intervene(lm, Add(layers=[0, 1], direction=d, alpha=5.0)):
            lm.forward(batch)
            raise KeyError("boom")
    assert _no_hooks(lm)
    with torch.no_grad():
        torch.testing.assert_close(lm.forward(batch), clean, atol=0, rtol=0)
    torch.testing.assert_close(d, d_before, atol=0, rtol=0)


def test_op_that_never_fires_raises(lm: LensModel, prompts) -> None:
    d = _direction(lm)
    with pytest.raises(RuntimeError, match="never fired: Add at layer 2"):
        with intervene(lm, Add(layers=[2], direction=d, alpha=1.0)):
            cache_activations(lm, prompts, layers=[0], progress=False)
    assert _no_hooks(lm)
    handle = attach(lm, Add(layers=[1], direction=d, alpha=1.0))
    try:
        lm.forward(lm.tokenize(prompts))
        assert list(handle.counts.values()) == [1]
    finally:
        handle.remove()
    assert _no_hooks(lm)


def test_bad_ops(lm: LensModel) -> None:
    with pytest.raises(ValueError, match="width 7 but site 'resid_pre'"):
        with intervene(lm, Add(layers=[0], direction=torch.ones(7))):
            pass
    with pytest.raises(ValueError, match="unknown position rule"):
        Add(layers=[0], direction=torch.ones(lm.d_model), positions="middle")
    with pytest.raises(ValueError, match="needs layers"):
        with intervene(lm, Add(direction=torch.ones(lm.d_model))):
            pass
    with pytest.raises(ValueError, match="zero norm"):
        with intervene(lm, ProjectOut(layers=[0], direction=torch.zeros(lm.d_model))):
            lm.forward(lm.tokenize(["w1"]))
    with pytest.raises(ValueError, match="outside 0"):
        with intervene(lm, NeuronShift(shifts={0: ([10_000], [1.0])})):
            pass
    assert _no_hooks(lm)


def test_reused_op_gives_the_same_edit_and_stays_a_value(lm: LensModel, prompts) -> None:
    """Ops cache their float32 vectors on first use; that cache is invisible: a used op edits
    exactly like a fresh one, and neither `repr` nor `replace` carries it over."""
    d = _direction(lm, seed=3)
    op = Scale(layers=[1], direction=d, alpha=-1.0)
    ids = lm.tokenize(prompts)
    with intervene(lm, op):
        first = lm.forward(ids)
    with intervene(lm, op):
        again = lm.forward(ids)
    fresh = Scale(layers=[1], direction=d.clone(), alpha=-1.0)
    with intervene(lm, fresh):
        other = lm.forward(ids)
    assert torch.equal(first, again) and torch.equal(first, other)
    assert "vectors" not in repr(op)
    d2 = _direction(lm, seed=4)
    swapped = dataclasses.replace(op, direction=d2)  # must not reuse op's cached vectors
    with intervene(lm, swapped):
        out = lm.forward(ids)
    with intervene(lm, Scale(layers=[1], direction=d2, alpha=-1.0)):
        assert torch.equal(out, lm.forward(ids))
    assert not torch.allclose(out, first)
