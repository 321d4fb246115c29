"""Fused (SDPA) attention on the bridge: same numbers as eager, eager wherever a hook reads."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import BACKENDS, build_tiny

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
        sdpa_calls.clear()  # (the legacy loader's own check runs Hugging Face with SDPA)
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


# ----- #21: every attention path computes what Hugging Face computes ------------------------
# Config variants the fused path is tested on, each checked on the eager path too (a hook on
# hook_pattern, or sdpa=False, sends a layer there). Large initial weights and random biases
# make a wrong attention scale show in the logits (the bridge's eager GPT-2 attention ignored
# scale_attn_weights=False: 1.24 in the logits on a trained-size model).
VARIANTS = {
    "gpt2-no-scale": ("gpt2", {"scale_attn_weights": False}),
    "gpt2-inverse-layer": ("gpt2", {"scale_attn_by_inverse_layer_idx": True}),
    "gpt2-upcast": ("gpt2", {"reorder_and_upcast_attn": True}),
    "gpt2-all-flags": (
        "gpt2",
        {
            "scale_attn_weights": False,
            "scale_attn_by_inverse_layer_idx": True,
            "reorder_and_upcast_attn": True,
        },
    ),
    "llama-bias": ("llama", {"attention_bias": True}),
    "mistral-sliding": ("mistral", {"sliding_window": 3}),
    "qwen2-sliding": (
        "qwen2",
        {"use_sliding_window": True, "sliding_window": 3, "max_window_layers": 1},
    ),
    "gemma3-sliding-scalar": ("gemma3", {"sliding_window": 3, "query_pre_attn_scalar": 16}),
}
# The legacy HookedTransformer converts GPT-2 and Llama configs only, and its Llama converter
# drops attention biases: `load_model` refuses that conversion instead of computing another
# model.
_LEGACY_ARCHS = ("gpt2", "llama")
_LEGACY_REFUSES = ("llama-bias",)
VARIANT_CASES = [
    pytest.param(name, backend, id=f"{name}-{backend}")
    for backend in BACKENDS
    for name, (arch, _) in VARIANTS.items()
    if backend == "bridge" or arch in _LEGACY_ARCHS
]
LONG = ["w1 w2 w3 w4 w5 w6 w7 w8", "w7", "Q: 2 + 3 = ? A:", "w9 w9 w10 w3 w1"]


def _variant(name: str, directory) -> str:
    from transformers import AutoModelForCausalLM

    arch, config = VARIANTS[name]
    path = build_tiny(arch, directory, initializer_range=0.4, **config)
    hf = AutoModelForCausalLM.from_pretrained(path)
    torch.manual_seed(1)
    with torch.no_grad():
        for pname, param in hf.named_parameters():
            if pname.endswith("bias"):
                param.normal_(0, 0.5)
    hf.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize(("name", "backend"), VARIANT_CASES)
def test_every_attention_path_equals_hugging_face(name, backend, tmp_path, sdpa_calls) -> None:
    """Fused, eager (``sdpa=False``) and one hooked layer: each equals plain Hugging Face eager,
    one prompt at a time, for every config variant (padding included)."""
    from transformers import AutoModelForCausalLM

    path = _variant(name, tmp_path / "m")
    if backend == "hooked_transformer" and name in _LEGACY_REFUSES:
        with pytest.raises(ValueError, match="does not reproduce the model.*backend='bridge'"):
            load_model(path, device="cpu", backend=backend)
        return
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    lm = load_model(path, device="cpu", backend=backend)
    sdpa_calls.clear()  # (the legacy loader's own check runs Hugging Face with SDPA)
    batch = lm.tokenize(LONG)
    real = batch.attention_mask.bool()
    pattern = [("blocks.1.attn.hook_pattern", lambda act, hook: None)]
    with torch.no_grad():
        paths = {"fused": lm.forward(batch)}
        with lm.hooks(pattern):
            paths["one layer hooked"] = lm.forward(batch)
        lm.sdpa = False
        paths["eager"] = lm.forward(batch)
        wants = [hf(torch.tensor([ids])).logits[0] for ids in lm.encode(LONG)]
    spread = max(float(w.abs().max()) for w in wants)
    assert spread > 1.0  # the logits are large enough for a wrong scale to show
    for what, got in paths.items():
        for row, want in enumerate(wants):
            torch.testing.assert_close(
                got[row][real[row]], want, atol=2e-5 * spread, rtol=0, msg=f"{name}: {what}"
            )
    n_fused = len(fusable_layers(lm))
    assert len(sdpa_calls) == n_fused + max(n_fused - 1, 0)  # the hooked layer ran eager


def test_eager_gpt2_attention_was_rescaled_only_where_needed(tmp_path) -> None:
    from liref_lens.attention import align_eager_attention

    plain = load_model(str(build_tiny("gpt2", tmp_path / "a")), device="cpu", backend="bridge")
    assert align_eager_attention(plain) == []
    path = build_tiny("gpt2", tmp_path / "b", scale_attn_weights=False)
    odd = load_model(str(path), device="cpu", backend="bridge")
    assert all("_reconstruct_attention" in b.attn.__dict__ for b in odd.model.blocks)
    assert align_eager_attention(odd) == []  # already done by LensModel: not twice


# ----- #21: a plain torch hook anywhere inside an attention layer is honoured ---------------
SUBMODULES = ("q", "k", "v", "o", "qkv", "_original_component")


@pytest.mark.parametrize("where", SUBMODULES)
@pytest.mark.parametrize("kind", ["forward", "pre"])
def test_a_torch_hook_inside_attention_fires_the_same_on_both_paths(
    where, kind, model_dirs, prompts, sdpa_calls
) -> None:
    """A forward hook (or pre-hook) on any submodule of a GPT-2 attention bridge sees the same
    calls and makes the same logits whether or not the model may fuse: the hooked layer runs
    eager, as with ``sdpa=False``. (Fused, a hook on ``v`` never fired; one on ``qkv`` fired
    only there.)"""
    lm = load_model(str(model_dirs["gpt2"]), device="cpu", backend="bridge")
    module = getattr(lm.model.blocks[1].attn, where)
    batch = lm.tokenize(prompts)
    calls: list[bool] = []

    def forward_hook(mod, args, output):
        calls.append(lm.sdpa)
        if isinstance(output, torch.Tensor):
            return output * 1.5  # a hook that edits: the edit must reach the logits
        return None

    def pre_hook(mod, args):
        calls.append(lm.sdpa)
        return None

    handle = (
        module.register_forward_hook(forward_hook)
        if kind == "forward"
        else module.register_forward_pre_hook(pre_hook)
    )
    try:
        with torch.no_grad():
            fused = lm.forward(batch)
            n_sdpa = len(sdpa_calls)
            lm.sdpa = False
            eager = lm.forward(batch)
    finally:
        handle.remove()
        lm.sdpa = True
    assert calls.count(True) == calls.count(False)  # fired as often on both
    assert n_sdpa == lm.n_layers - 1  # layer 1 ran eager
    real = batch.attention_mask.bool()
    torch.testing.assert_close(fused[real], eager[real], atol=1e-5, rtol=0)


def test_a_global_module_hook_keeps_every_layer_eager(model_dirs, prompts, sdpa_calls) -> None:
    lm = load_model(str(model_dirs["gpt2"]), device="cpu", backend="bridge")
    seen: list[str] = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda mod, args, out: seen.append(type(mod).__name__)
    )
    try:
        with torch.no_grad():
            lm.forward(lm.tokenize(prompts))
    finally:
        handle.remove()
    assert sdpa_calls == [] and seen


def test_cached_generation_agrees_on_both_paths_without_attention_scaling(tmp_path) -> None:
    from liref_lens import generate

    lm = load_model(_variant("gpt2-no-scale", tmp_path / "m"), device="cpu", backend="bridge")
    fused = generate(lm, LONG, 6, stop_at_eos=False)
    lm.sdpa = False
    eager = generate(lm, LONG, 6, stop_at_eos=False)
    assert fused.tokens == eager.tokens
