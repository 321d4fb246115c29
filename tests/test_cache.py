from __future__ import annotations

import numpy as np
import pytest
import torch

from liref_lens import (
    LensModel,
    RunningStats,
    at,
    cache_activations,
    every,
    last,
    load_model,
    mean,
    stream_activations,
)
from liref_lens.cache import drop_attention_patterns


def _hf_states(hf_model, ids: list[int]) -> torch.Tensor:
    """[layer, pos, d] hidden states entering each block, from a plain HF forward."""
    with torch.no_grad():
        hs = hf_model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    return torch.stack(hs[:-1])[:, 0]


def test_last_matches_hf_one_prompt_at_a_time(lm: LensModel, hf_model, prompts) -> None:
    acts = cache_activations(lm, prompts, progress=False, batch_size=4)
    assert acts.tensor.shape == (len(prompts), lm.n_layers, lm.d_model)
    assert acts.layers == (0, 1, 2) and acts.position == "last()" and acts.site == "resid_pre"
    for i, ids in enumerate(lm.encode(prompts)):
        want = _hf_states(hf_model, ids)[:, -1]
        torch.testing.assert_close(acts.tensor[i], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("position", [last(), mean(), at(-2)], ids=str)
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batch_invariance(lm: LensModel, prompts, position, padding_side) -> None:
    kw = dict(
        layers=[0, 2],
        sites=("resid_pre", "resid_post", "mlp_post"),
        position=position,
        progress=False,
        padding_side=padding_side,
    )
    batched = cache_activations(lm, prompts, batch_size=len(prompts), **kw)
    for i, prompt in enumerate(prompts):
        single = cache_activations(lm, [prompt], batch_size=1, **kw)
        for site in batched.sites:
            torch.testing.assert_close(batched[site][i], single[site][0], atol=1e-5, rtol=0)


def test_mean_and_every_match_hf(lm: LensModel, hf_model, prompts) -> None:
    m = cache_activations(lm, prompts, layers=[1], position=mean(), progress=False)
    e = cache_activations(lm, prompts, layers=[1], position=every(), progress=False)
    ids = lm.encode(prompts)
    assert len(e) == sum(len(x) for x in ids)
    row = 0
    for i, toks in enumerate(ids):
        states = _hf_states(hf_model, toks)[1]
        torch.testing.assert_close(m.tensor[i, 0], states.mean(0), atol=1e-5, rtol=0)
        torch.testing.assert_close(e.tensor[row : row + len(toks), 0], states, atol=1e-5, rtol=0)
        assert e.prompt_index[row : row + len(toks)].tolist() == [i] * len(toks)
        assert e.token_rank[row : row + len(toks)].tolist() == list(range(len(toks)))
        row += len(toks)


def test_forward_stops_after_last_requested_layer(lm: LensModel, prompts) -> None:
    calls = []
    spy = (lm.hook_name(2, "resid_pre"), lambda act, hook: calls.append(1))
    with lm.hooks([spy]):
        cache_activations(lm, prompts, layers=[0, 1], sites="resid_post", progress=False)
    assert calls == []
    with lm.hooks([spy]):
        cache_activations(lm, prompts, layers=[2], progress=False, batch_size=3)
    assert len(calls) == 2  # one per batch
    assert not any(hp.fwd_hooks for hp in lm.model.hook_dict.values())


def test_bad_inputs(lm: LensModel, prompts) -> None:
    with pytest.raises(ValueError, match="prompt list is empty"):
        cache_activations(lm, [], progress=False)
    with pytest.raises(KeyError, match="unknown hook site 'resid_mid'"):
        cache_activations(lm, prompts, sites=("resid_mid",), progress=False)
    with pytest.raises(ValueError, match="layer 7 is out of range"):
        cache_activations(lm, prompts, layers=[0, 7], progress=False)
    with pytest.raises(ValueError, match=r"position at\(-3\) is beyond prompt 1, which has 2"):
        cache_activations(lm, prompts, position=at(-3), progress=False)
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            cache_activations(lm, prompts, batch_size=bad, progress=False)
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            stream_activations(lm, prompts, ["a"] * len(prompts), batch_size=bad, progress=False)
    assert not any(hp.fwd_hooks for hp in lm.model.hook_dict.values())


def test_nan_activations_are_an_error(lm: LensModel, model_dirs, prompts) -> None:
    arch = "llama" if "llama" in lm.architecture.lower() else "gpt2"
    broken = load_model(str(model_dirs[arch]), device="cpu", backend=lm.backend)
    with torch.no_grad():
        next(iter(broken.model.parameters())).fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or inf"):
        cache_activations(broken, prompts, progress=False)


def test_running_stats_match_numpy() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 2, 3, generator=gen)
    labels = ["r" if i % 3 else "m" for i in range(50)]
    rs = RunningStats(("r", "m"), (2, 3), second_moments=True)
    rs.update(x[:20], labels[:20])
    rs.update(x[20:], labels[20:])
    xn = x.double().numpy()
    for cls in ("r", "m"):
        rows = np.array([lab == cls for lab in labels])
        np.testing.assert_allclose(rs.mean(cls).numpy(), xn[rows].mean(0), rtol=1e-12)
        np.testing.assert_allclose(rs.var(cls).numpy(), xn[rows].var(0), rtol=1e-9, atol=1e-12)
        assert rs.count(cls) == rows.sum()
    empty = RunningStats(("r", "m"), (2, 3))
    empty.update(x[:2], ["r", "r"])
    with pytest.raises(ValueError, match="class 'm' is empty"):
        empty.mean("m")
    with pytest.raises(KeyError, match="unknown labels"):
        empty.update(x[:1], ["z"])
    with pytest.raises(ValueError, match="NaN or inf"):
        empty.update(torch.full((1, 2, 3), float("nan")), ["r"])


def test_stream_equals_cached_means(lm: LensModel, prompts) -> None:
    labels = ["reasoning" if "Q:" in p else "memory" for p in prompts]
    stats = stream_activations(lm, prompts, labels, layers=[1, 2], batch_size=2, progress=False)
    acts = cache_activations(lm, prompts, layers=[1, 2], progress=False)
    for cls in ("reasoning", "memory"):
        rows = torch.tensor([lab == cls for lab in labels])
        want = acts.tensor[rows].double().mean(0)
        torch.testing.assert_close(stats.mean(cls), want, atol=1e-6, rtol=0)


def _retained(lm: LensModel) -> list[str]:
    return [n for n, m in lm.model.named_modules() if getattr(m, "_pattern", None) is not None]


def test_attention_patterns_are_dropped_during_and_after_caching(lm: LensModel, prompts) -> None:
    batch = lm.tokenize(prompts)
    with torch.no_grad():  # the bridge's own (eager) forward, not LensModel.forward's SDPA
        lm.model(batch.input_ids, attention_mask=batch.attention_mask)
    if "gpt2" in lm.architecture.lower() and lm.backend == "bridge":
        # The bridge's fused-QKV attention keeps every layer's pattern after a plain forward.
        assert len(_retained(lm)) == lm.n_layers
    seen_during: list[list[str]] = []
    pattern_shapes: list[tuple[int, ...]] = []
    spies = [
        (lm.hook_name(2, "resid_pre"), lambda act, hook: seen_during.append(_retained(lm))),
        ("blocks.0.attn.hook_pattern", lambda act, hook: pattern_shapes.append(act.shape)),
    ]
    with lm.hooks(spies):
        acts = cache_activations(lm, prompts, layers=[2], progress=False)
    assert seen_during == [[]]  # layers 0 and 1 already ran: their patterns are gone
    n, s = len(prompts), batch.input_ids.shape[1]
    assert pattern_shapes == [(n, lm.cfg.n_heads, s, s)]  # pattern hooks still see it
    assert _retained(lm) == []
    reference = cache_activations(lm, prompts, layers=[2], progress=False)
    # Without the pattern hook layer 0 runs fused (SDPA): equal up to float rounding.
    torch.testing.assert_close(acts.tensor, reference.tensor, atol=1e-6, rtol=0)


def test_drop_attention_patterns_cleans_up_after_an_exception(lm: LensModel, prompts) -> None:
    batch = lm.tokenize(prompts)

    def torch_hooks() -> list[tuple[str, int]]:
        return [(n, len(m._forward_hooks)) for n, m in lm.model.named_modules()]

    before = torch_hooks()
    with pytest.raises(RuntimeError, match="boom"), drop_attention_patterns(lm):
        with torch.no_grad():
            lm.forward(batch)
        raise RuntimeError("boom")
    assert _retained(lm) == []
    assert torch_hooks() == before


def test_running_stats_variance_far_from_zero() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3000, 4, generator=gen, dtype=torch.float64) * 0.01 + 1e4
    rs = RunningStats(("a",), (4,), second_moments=True)
    for i in range(0, 3000, 7):  # uneven batches
        rs.update(x[i : i + 7], ["a"] * len(x[i : i + 7]))
    want = x.numpy().var(0)  # numpy float64, two-pass
    np.testing.assert_allclose(rs.var("a").numpy(), want, rtol=1e-9)
    np.testing.assert_allclose(rs.mean("a").numpy(), x.numpy().mean(0), rtol=1e-14)


def test_running_stats_merge_equals_one_accumulator() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(40, 3, generator=gen) + 5
    labels = ["p" if i % 4 else "q" for i in range(40)]
    whole = RunningStats(("p", "q"), (3,), second_moments=True)
    whole.update(x, labels)
    parts = [RunningStats(("p", "q"), (3,), second_moments=True) for _ in range(3)]
    for part, lo, hi in zip(parts, (0, 5, 23), (5, 23, 40), strict=True):
        part.update(x[lo:hi], labels[lo:hi])
    merged = parts[0].merge(parts[1]).merge(parts[2])
    xn = x.double().numpy()
    for cls in ("p", "q"):
        rows = np.array([lab == cls for lab in labels])
        assert merged.count(cls) == whole.count(cls) == rows.sum()
        np.testing.assert_allclose(merged.mean(cls).numpy(), xn[rows].mean(0), rtol=1e-13)
        np.testing.assert_allclose(merged.var(cls).numpy(), xn[rows].var(0), rtol=1e-11)
        torch.testing.assert_close(
            merged.sums[whole.classes.index(cls)], whole.sums[0 if cls == "p" else 1]
        )
    with pytest.raises(ValueError, match="same classes and shape"):
        merged.merge(RunningStats(("p",), (3,)))
    with pytest.raises(ValueError, match="no second moments"):
        merged.merge(RunningStats(("p", "q"), (3,)))
