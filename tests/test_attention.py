"""Fused (SDPA) attention on the bridge: same numbers as eager, eager wherever a hook reads."""

from __future__ import annotations

import pytest
import torch

from liref_lens import LensModel, load_model
from liref_lens.attention import fusable_layers, fused_attention
from liref_lens.weights import truncate


@pytest.fixture
def sdpa_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Query shapes of every ``scaled_dot_product_attention`` call while the test runs."""
    calls: list[tuple[int, ...]] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(query, *args, **kwargs):
        calls.append(tuple(query.shape))
        return real(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


def _installed(lm: LensModel) -> list[int]:
    return [i for i, b in enumerate(lm.model.blocks) if "forward" in b.attn.__dict__]


def test_fused_forward_equals_one_prompt_at_a_time_hf(lm, hf_model, prompts, sdpa_calls) -> None:
    """Padded, fused logits equal plain Hugging Face eager logits of each prompt alone."""
    batch = lm.tokenize(prompts)
    with torch.no_grad():
        got = lm.forward(batch)
    n_fused = len(sdpa_calls)
    real = batch.attention_mask.bool()
    for row, ids in enumerate(lm.encode(prompts)):
        with torch.no_grad():
            want = hf_model(torch.tensor([ids])).logits[0]
        torch.testing.assert_close(got[row][real[row]], want, atol=1e-5, rtol=0)
    if lm.backend == "bridge":
        assert fusable_layers(lm) == list(range(lm.n_layers))
        assert n_fused == lm.n_layers  # every layer ran SDPA: the fused path was taken
    else:  # the legacy HookedTransformer computes attention itself
        assert fusable_layers(lm) == [] and n_fused == 0
    assert _installed(lm) == []  # the eager forwards are back


def test_sdpa_false_is_the_eager_path(lm, prompts, sdpa_calls) -> None:
    batch = lm.tokenize(prompts)
    real = batch.attention_mask.bool()
    lm.sdpa = False
    try:
        with torch.no_grad():
            eager = lm.forward(batch)
    finally:
        lm.sdpa = True
    assert sdpa_calls == []
    with torch.no_grad():
        fused = lm.forward(batch)
    torch.testing.assert_close(fused[real], eager[real], atol=1e-5, rtol=0)


def _patterns(lm: LensModel, batch, layer: int) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    hook = (f"blocks.{layer}.attn.hook_pattern", lambda act, hook: seen.append(act.clone()))
    with torch.no_grad(), lm.hooks([hook]):
        lm.forward(batch)
    return seen


def test_a_pattern_hook_gets_the_eager_path_for_its_layer_only(lm, prompts, sdpa_calls) -> None:
    batch = lm.tokenize(prompts)
    seen = _patterns(lm, batch, layer=1)
    n, s = batch.input_ids.shape
    assert [p.shape for p in seen] == [(n, lm.cfg.n_heads, s, s)]
    assert len(sdpa_calls) == (lm.n_layers - 1 if lm.backend == "bridge" else 0)
    rows = seen[0].sum(-1).transpose(1, 2)[batch.attention_mask.bool()]  # [real tokens, head]
    torch.testing.assert_close(rows, torch.ones_like(rows), atol=1e-5, rtol=0)
    lm.sdpa = False
    try:
        eager = _patterns(lm, batch, layer=1)
    finally:
        lm.sdpa = True
    # The residual stream entering layer 1 is the same either way (up to rounding).
    torch.testing.assert_close(seen[0], eager[0], atol=1e-5, rtol=0)


def test_hooks_added_inside_the_block_are_honoured_and_exit_restores(lm, prompts) -> None:
    if lm.backend != "bridge":
        assert fusable_layers(lm) == []
        return
    batch = lm.tokenize(prompts)
    with pytest.raises(RuntimeError, match="boom"), fused_attention(lm):
        assert _installed(lm) == list(range(lm.n_layers))
        with fused_attention(lm):  # nested: a no-op, the outer block restores
            pass
        assert _installed(lm) == list(range(lm.n_layers))
        seen = _patterns(lm, batch, layer=0)  # hook added after the block was entered
        assert len(seen) == 1
        raise RuntimeError("boom")
    assert _installed(lm) == []


def test_a_weight_edit_reaches_the_fused_forward(lm, prompts) -> None:
    """GPT-2's q/k/v are views of c_attn: truncating W_Q changes the fused logits too."""
    batch = lm.tokenize(prompts)
    real = batch.attention_mask.bool()
    with torch.no_grad():
        before = lm.forward(batch)
        with truncate(lm, "W_Q", layer=0, rho=0.05):
            fused = lm.forward(batch)
            lm.sdpa = False
            try:
                eager = lm.forward(batch)
            finally:
                lm.sdpa = True
    torch.testing.assert_close(fused[real], eager[real], atol=1e-5, rtol=0)
    assert (fused[real] - before[real]).abs().max() > 1e-3


KINDS = [("gpt_neox", False), ("gemma2", False), ("qwen2", True)]


def test_which_architectures_fuse(
    backend, model_dirs, make_tiny, tmp_path, prompts, sdpa_calls
) -> None:
    if backend != "bridge":  # the legacy HookedTransformer: nothing fuses, sdpa changes nothing
        lm = load_model(str(model_dirs["gpt2"]), device="cpu", backend=backend)
        batch = lm.tokenize(prompts)
        with torch.no_grad():
            lm.sdpa = False
            eager = lm.forward(batch)
            lm.sdpa = True
            assert torch.equal(lm.forward(batch), eager)
        assert fusable_layers(lm) == [] and sdpa_calls == []
        return
    for kind, fused in KINDS:
        lm = load_model(str(make_tiny(kind, tmp_path / kind)), device="cpu", backend=backend)
        assert fusable_layers(lm) == (list(range(lm.n_layers)) if fused else []), kind
        batch = lm.tokenize(prompts)
        real = batch.attention_mask.bool()
        sdpa_calls.clear()
        with torch.no_grad():
            got = lm.forward(batch)
            lm.sdpa = False
            eager = lm.forward(batch)
        assert len(sdpa_calls) == (lm.n_layers if fused else 0), kind
        torch.testing.assert_close(got[real], eager[real], atol=1e-5, rtol=0, msg=kind)


@pytest.mark.cuda
def test_fused_equals_eager_on_cuda(model_dirs, prompts) -> None:
    for arch in ("gpt2", "llama"):
        lm = load_model(str(model_dirs[arch]), device="cuda", backend="bridge")
        batch = lm.tokenize(prompts)
        real = batch.attention_mask.bool().cuda()
        with torch.no_grad():
            fused = lm.forward(batch)
            lm.sdpa = False
            eager = lm.forward(batch)
        torch.testing.assert_close(fused[real], eager[real], atol=1e-4, rtol=0)


def test_generation_fuses_with_and_without_the_cache(lm, prompts, sdpa_calls) -> None:
    from liref_lens import generate

    full = generate(lm, prompts, 3, use_cache=False, stop_at_eos=False)
    n_full = len(sdpa_calls)
    cached = generate(lm, prompts, 3, use_cache=True, stop_at_eos=False)
    n_cached = len(sdpa_calls) - n_full
    lm.sdpa = False
    try:
        eager = generate(lm, prompts, 3, use_cache=True, stop_at_eos=False)
    finally:
        lm.sdpa = True
    assert cached.tokens == full.tokens == eager.tokens
    fused = lm.n_layers * 3 if lm.backend == "bridge" else 0  # every layer, every step
    assert (n_full, n_cached, len(sdpa_calls)) == (fused, fused, 2 * fused)


def test_a_stop_inside_a_fused_layer_restores_its_config(lm, prompts) -> None:
    """`cache_activations` stops the forward from inside ``hook_attn_out`` of a fused layer."""
    from liref_lens import cache_activations

    acts = cache_activations(lm, prompts, layers=[0], sites="attn_out", progress=False)
    assert acts.tensor.shape[:2] == (len(prompts), 1)
    assert _installed(lm) == []
    if lm.backend == "bridge":
        shared = lm.model.original_model.config
        assert all(b.attn.original_component.config is shared for b in lm.model.blocks)
