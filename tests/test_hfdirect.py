"""Generation on the unwrapped Hugging Face model equals generation on the bridge.

`generate` takes the direct path (`liref_lens._hfdirect`) wherever every op sits on the residual
stream and nothing else is hooked. These tests run each call twice, once with the direct path
switched off (the bridge, with its hook points), and compare the tokens one by one: on every
architecture the suite builds, with and without left padding, for every position rule, greedy
and seeded sampling, stopping at EOS. Unsteered, the direct path also equals Hugging Face's own
``generate``; where the model carries hooks of the user's, generation takes the bridge and they
fire.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from tests.conftest import ARCHS, BACKENDS, bridge_only, build_tiny

from liref_lens import LensModel, at, generate, last, load_model
from liref_lens._hfdirect import site_hooks, unavailable
from liref_lens.interventions import Add, NeuronShift, Op, ProjectOut, Scale, paper_scale

MORE_ARCHS = ("qwen2", "mistral", "gemma3")
# Architectures x backends: the extra architectures on the bridge only (the legacy
# HookedTransformer converts GPT-2 and Llama configs only).
CASES = [
    pytest.param(arch, backend, id=f"{arch}-{backend}")
    for backend in BACKENDS
    for arch in ARCHS + MORE_ARCHS
    if backend == "bridge" or arch in ARCHS
]
RULES = {"all": "all", "prompt": "prompt", "generated": "generated", "last": last(), "at-1": at(1)}
PADDED = ["w1 w2 w3 w4 w5", "w7 w8", "Q: 2 + 3 = ? A:", "w9 w9 w10"]
UNPADDED = ["w1 w2 w3", "w4 w5 w6", "w7 w7 w8"]
_MODELS: dict[tuple[str, str], LensModel] = {}


@pytest.fixture(scope="module")
def arch_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("direct")
    return {arch: build_tiny(arch, root / arch) for arch in ARCHS + MORE_ARCHS}


def _model(arch: str, backend: str, dirs: dict[str, Path]) -> LensModel:
    if (arch, backend) not in _MODELS:
        _MODELS[(arch, backend)] = load_model(str(dirs[arch]), device="cpu", backend=backend)
    return _MODELS[(arch, backend)]


def _both(lm: LensModel, prompts: list[str], ops: list[Op], seed: int | None = None, **kw):
    """Tokens from the engine `generate` picks, and from the bridge."""
    kw = {"stop_at_eos": False, **kw}
    out = []
    for engine in ("auto", "bridge"):
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        with bridge_only() if engine == "bridge" else nullcontext():
            out.append(
                generate(lm, prompts, 5, ops=ops, do_sample=seed is not None, generator=g, **kw)
            )
    return out[0].tokens, out[1].tokens


def _ops(lm: LensModel, rule) -> list[Op]:
    d = torch.randn(lm.n_layers, lm.d_model, generator=torch.Generator().manual_seed(7)) * 3
    return [
        Add(layers=[0], direction=d, alpha=2.0, positions=rule),
        Scale(layers=[1, 2], sites=("attn_out",), direction=d, alpha=-0.7, positions=rule),
        ProjectOut(layers=[1], sites=("mlp_out",), direction=d, positions=rule)
        + Add(layers=[-1], sites=("resid_post",), direction=d, alpha=1.5, positions=rule),
        paper_scale(d, 0.5, lm, source_layer=1),
    ]


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize(("arch", "backend"), CASES)
def test_direct_equals_the_bridge_token_for_token(arch, backend, rule, arch_dirs) -> None:
    lm = _model(arch, backend, arch_dirs)
    ops = _ops(lm, RULES[rule])
    assert (unavailable(lm, ops, True) is None) == (backend == "bridge")
    steered = {}
    for prompts in (PADDED, UNPADDED):
        direct, bridge = _both(lm, prompts, ops)
        assert direct == bridge, (arch, rule, prompts)
        steered[len(prompts)] = direct
    sampled, sampled_bridge = _both(lm, PADDED, ops, seed=3)
    assert sampled == sampled_bridge
    assert steered[len(PADDED)] != generate(lm, PADDED, 5, stop_at_eos=False).tokens  # it steers


@pytest.mark.parametrize(("arch", "backend"), CASES)
def test_unsteered_direct_equals_hugging_face_generate(arch, backend, arch_dirs) -> None:
    """An independent computation: Hugging Face's own ``generate`` (SDPA), left-padded."""
    from transformers import AutoModelForCausalLM

    lm = _model(arch, backend, arch_dirs)
    hf = AutoModelForCausalLM.from_pretrained(arch_dirs[arch], attn_implementation="sdpa").eval()
    batch = lm.tokenize(PADDED)
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        out = hf.generate(
            batch.input_ids,
            attention_mask=batch.attention_mask,
            do_sample=False,
            max_new_tokens=5,
            pad_token_id=0,
        )
    want = out[:, batch.input_ids.shape[1] :].tolist()
    assert generate(lm, PADDED, 5, stop_at_eos=False).tokens == want


@pytest.mark.parametrize(("arch", "backend"), CASES)
def test_stop_at_eos_is_the_same_on_both(arch, backend, arch_dirs) -> None:
    """EOS set to a token that row 0 emits at its third step: row 0 stops there, on both."""
    lm = _model(arch, backend, arch_dirs)
    ops = _ops(lm, "all")
    first, _ = _both(lm, PADDED, ops)
    tok = lm.tokenizer
    saved = tok.eos_token
    tok.eos_token = tok.convert_ids_to_tokens(first[0][2])
    try:
        direct, bridge = _both(lm, PADDED, ops, stop_at_eos=True)
    finally:
        tok.eos_token = saved
    assert direct == bridge
    assert len(direct[0]) <= 3 < 5 and direct[0][-1] == first[0][2]


def test_sites_are_where_the_bridge_hooks_them(arch_dirs) -> None:
    """Each residual site's activation, as the direct path's hook sees it, equals what the
    bridge's hook point sees (an op that records and changes nothing)."""

    class Record(Op):
        def edit(self, act, layer, site):
            seen.setdefault(site, []).append(act.clone())
            return torch.zeros_like(act)

    for arch in ARCHS + MORE_ARCHS:
        lm = _model(arch, "bridge", arch_dirs)
        sites = ("resid_pre", "attn_out", "mlp_out", "resid_post")
        op = Record(layers=[0, 1, 2], sites=sites)
        runs = []
        for engine in ("auto", "bridge"):
            seen: dict[str, list[torch.Tensor]] = {}
            with bridge_only() if engine == "bridge" else nullcontext():
                generate(lm, PADDED, 2, ops=[op], stop_at_eos=False)
            runs.append(seen)
        for site in sites:
            assert len(runs[0][site]) == len(runs[1][site]) == 6  # 3 layers x 2 steps
            for a, b in zip(runs[0][site], runs[1][site], strict=True):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=f"{arch} {site}")
    gemma = _model("gemma3", "bridge", arch_dirs)
    ((module, on_input),) = site_hooks(gemma, [(1, "attn_out")])
    assert module is gemma.model.blocks[1].ln1_post.original_component and not on_input


def test_hooks_of_the_user_send_generation_to_the_bridge(arch_dirs) -> None:
    lm = _model("llama", "bridge", arch_dirs)
    d = torch.randn(lm.n_layers, lm.d_model, generator=torch.Generator().manual_seed(1))
    ops = [Add(layers=[1], direction=d, alpha=0.1)]
    fired: list[int] = []

    def double(act, hook):
        fired.append(act.shape[1])
        return act * 4

    with lm.hooks([("blocks.0.hook_resid_post", double)]):
        assert str(unavailable(lm, ops, True)).startswith("hooks on ")
        hooked = generate(lm, PADDED, 4, ops=ops, stop_at_eos=False).tokens
    assert len(fired) == 4  # the prefill and three decode steps: the bridge ran
    with lm.hooks([("blocks.0.hook_resid_post", double)]), bridge_only():
        assert hooked == generate(lm, PADDED, 4, ops=ops, stop_at_eos=False).tokens
    assert hooked != generate(lm, PADDED, 4, ops=ops, stop_at_eos=False).tokens
    # a plain torch hook on a Hugging Face module, a global hook, an op off the stream
    mlp = lm.model.blocks[2].mlp.original_component
    handle = mlp.register_forward_hook(lambda m, a, o: None)
    try:
        assert "hooks on blocks.2" in str(unavailable(lm, ops, True))
    finally:
        handle.remove()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, a, o: None)
    try:
        assert unavailable(lm, ops, True) == "a global module hook"
    finally:
        handle.remove()
    shift = NeuronShift(shifts={1: ([0], [1.0])})
    assert "off the residual stream" in str(unavailable(lm, [shift], True))
    assert unavailable(lm, ops, False) == "use_cache=False"
    assert unavailable(lm, ops, True) is None


def test_a_failing_op_leaves_the_bridge_as_it_was(arch_dirs) -> None:
    lm = _model("gpt2", "bridge", arch_dirs)
    before = [(name, id(m)) for name, m in lm.model.named_modules()]
    config = lm.model.original_model.config
    assert config._attn_implementation == "eager"

    class Boom(Op):
        def edit(self, act, layer, site):
            if act.shape[1] == 1:  # a decode step: the modules are swapped by now
                raise KeyError("boom")
            return torch.zeros_like(act)

    with pytest.raises(KeyError, match="boom"):
        generate(lm, PADDED, 3, ops=[Boom(layers=[1])], stop_at_eos=False)
    assert [(name, id(m)) for name, m in lm.model.named_modules()] == before
    assert config._attn_implementation == "eager"
    ours = [
        fn
        for m in lm.model.modules()
        for table in (m._forward_hooks, m._forward_pre_hooks)
        for fn in table.values()
        if str(getattr(fn, "__module__", "")).startswith("liref_lens")
    ]
    assert ours == []
    assert unavailable(lm, [Boom(layers=[1])], True) is None  # nothing else was left either
