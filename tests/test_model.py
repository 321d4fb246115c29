from __future__ import annotations

import pytest
import torch

from liref_lens import SITES, LensModel, load_model


def test_sizes_and_tokenizer(lm: LensModel) -> None:
    assert lm.n_layers == 3
    assert lm.d_model == 32
    assert lm.d_mlp in (48, 128)
    assert lm.device == torch.device("cpu")
    assert lm.tokenizer.pad_token_id == 0
    assert lm.width("mlp_post") == lm.d_mlp and lm.width("resid_pre") == lm.d_model


def test_hook_names(lm: LensModel) -> None:
    assert lm.hook_name(0, "resid_pre") == "blocks.0.hook_resid_pre"
    assert lm.hook_name(-1, "resid_post") == "blocks.2.hook_resid_post"
    for site in SITES:
        assert lm.hook_name(1, site) in lm.model.hook_dict


def test_bad_site_and_layer(lm: LensModel) -> None:
    with pytest.raises(KeyError, match="unknown hook site 'resid'.*resid_pre"):
        lm.hook_name(0, "resid")
    with pytest.raises(ValueError, match="layer 3 is out of range for a 3-layer model"):
        lm.hook_name(3, "resid_pre")
    with pytest.raises(ValueError, match="out of range"):
        lm.resolve_layers([0, -4])
    with pytest.raises(ValueError, match="same layer twice"):
        lm.resolve_layers([1, -2])


def _hf_hidden(hf_model, ids: list[int]):
    with torch.no_grad():
        return hf_model(torch.tensor([ids]), output_hidden_states=True).hidden_states


def test_sites_equal_hf_model(lm: LensModel, hf_model, prompts: list[str]) -> None:
    """Every site equals the matching tensor of a plain HF forward pass (fp32, atol 1e-5)."""
    layers = hf_model.model.layers if hasattr(hf_model, "model") else hf_model.transformer.h
    grabbed: dict[tuple[str, int], torch.Tensor] = {}
    for ids in lm.encode(prompts):
        grabbed.clear()
        handles = []
        for i, block in enumerate(layers):
            attn = block.self_attn if hasattr(block, "self_attn") else block.attn
            down = block.mlp.down_proj if hasattr(block.mlp, "down_proj") else block.mlp.c_proj
            handles += [
                attn.register_forward_hook(
                    lambda m, a, o, i=i: grabbed.__setitem__(("attn_out", i), o[0])
                ),
                block.mlp.register_forward_hook(
                    lambda m, a, o, i=i: grabbed.__setitem__(("mlp_out", i), o)
                ),
                down.register_forward_pre_hook(
                    lambda m, a, i=i: grabbed.__setitem__(("mlp_post", i), a[0])
                ),
            ]
        try:
            hidden = _hf_hidden(hf_model, ids)
        finally:
            for h in handles:
                h.remove()
        names = {lm.hook_name(layer, site): (site, layer) for layer in range(3) for site in SITES}
        _, cache = lm.model.run_with_cache(torch.tensor([ids]), names_filter=list(names))
        for name, (site, layer) in names.items():
            got = cache[name]
            if site == "resid_pre":
                want = hidden[layer]
            elif site == "resid_post":
                if layer == lm.n_layers - 1:  # HF's last hidden state is after the final norm
                    continue
                want = hidden[layer + 1]
            else:
                want = grabbed[(site, layer)]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=f"{site} layer {layer}")


def test_tokenize_pads_left_with_mask(lm: LensModel) -> None:
    batch = lm.tokenize(["w1 w2 w3", "w4"])
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    bos = lm.tokenizer.bos_token_id
    assert batch.input_ids[:, -2:].tolist() == [
        [lm.tokenizer.convert_tokens_to_ids("w2"), lm.tokenizer.convert_tokens_to_ids("w3")],
        [bos, lm.tokenizer.convert_tokens_to_ids("w4")],
    ]
    right = lm.tokenize(["w1 w2 w3", "w4"], padding_side="right", prepend_bos=False)
    assert right.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_tokenize_errors(lm: LensModel) -> None:
    with pytest.raises(ValueError, match="prompt list is empty"):
        lm.tokenize([])
    with pytest.raises(TypeError, match="not one string"):
        lm.tokenize("w1 w2")
    with pytest.raises(ValueError, match="prompt 1 .* is empty"):
        lm.tokenize(["w1", ""], prepend_bos=False)


def test_fingerprint_is_stable_and_specific(lm: LensModel, model_dirs, make_tiny, tmp_path) -> None:
    arch = "llama" if "llama" in lm.architecture.lower() else "gpt2"
    again = load_model(str(model_dirs[arch]), device="cpu", backend=lm.backend)
    assert again.fingerprint == lm.fingerprint
    bf16 = load_model(str(model_dirs[arch]), device="cpu", dtype=torch.bfloat16, backend=lm.backend)
    assert bf16.fingerprint == lm.fingerprint
    other = load_model(
        str(make_tiny(arch, tmp_path / "other", seed=1)), device="cpu", backend=lm.backend
    )
    assert other.fingerprint != lm.fingerprint


def test_wrapping_and_load_errors(lm: LensModel, tmp_path) -> None:
    assert LensModel(lm.model).fingerprint == lm.fingerprint
    with pytest.raises(TypeError, match="TransformerBridge or HookedTransformer"):
        LensModel(torch.nn.Linear(2, 2))
    with pytest.raises(FileNotFoundError, match="no model directory"):
        load_model(str(tmp_path / "missing" / "model"))
    with pytest.raises(ValueError, match="unknown backend"):
        load_model("gpt2", backend="jax")


def test_testbed_checkpoint_equals_hf_model(backend: str) -> None:
    """The shipped testbed model (MLP width n_inner = 2 * d_model, tied embeddings, 38-word
    vocabulary) loads on every backend with the Hugging Face model's residual stream."""
    from transformers import AutoModelForCausalLM

    from liref_lens.testbed import make_testbed, shipped_checkpoint

    path = shipped_checkpoint()
    lm = load_model(str(path), device="cpu", backend=backend)
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    assert (lm.n_layers, lm.d_model, lm.d_mlp) == (3, 128, hf.config.n_inner)
    assert lm.d_mlp != 4 * lm.d_model  # the case the legacy converter used to get wrong
    items = make_testbed(seed=0).fit[:8]
    batch = lm.tokenize([it.prompt for it in items])
    with torch.no_grad():
        want = hf(batch.input_ids, output_hidden_states=True)
    names = [lm.hook_name(layer, "resid_pre") for layer in range(lm.n_layers)]
    logits, cache = lm.model.run_with_cache(batch.input_ids, names_filter=names)
    for layer, name in enumerate(names):
        torch.testing.assert_close(
            cache[name], want.hidden_states[layer], atol=1e-5, rtol=0, msg=name
        )
    torch.testing.assert_close(logits, want.logits, atol=1e-4, rtol=0)


def test_step_last_only_equals_full_step(lm: LensModel) -> None:
    """`step(last_only=True)` returns the last new token's logits of a full step, and the
    cache it returns continues the sequence the same way."""
    batch = lm.tokenize(["w1 w2 w3", "w4"])
    with torch.no_grad():
        full, past_full = lm.step(batch.input_ids, batch.attention_mask)
        last, past_last = lm.step(batch.input_ids, batch.attention_mask, last_only=True)
        assert last.shape == (2, 1, full.shape[-1])
        torch.testing.assert_close(last, full[:, -1:], atol=1e-5, rtol=0)
        nxt = full[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([batch.attention_mask, torch.ones_like(nxt)], dim=1)
        want, _ = lm.step(nxt, mask, past_full)
        got, _ = lm.step(nxt, mask, past_last, last_only=True)
    torch.testing.assert_close(got, want[:, -1:], atol=1e-5, rtol=0)


def test_non_integer_layers_are_refused_not_truncated(lm: LensModel) -> None:
    import numpy as np

    for bad in (1.5, 1.0, "1", True):
        with pytest.raises(TypeError, match="layer must be an integer"):
            lm.resolve_layers([bad])
    assert lm.resolve_layers([np.int64(1), torch.tensor(2)]) == [1, 2]


def test_lone_surrogates_and_non_strings_get_clear_errors(lm: LensModel) -> None:
    with pytest.raises(ValueError, match=r"prompt 1 is not valid Unicode text.*character 2"):
        lm.encode(["w1", "w2\ud800 w3"])
    with pytest.raises(TypeError, match="prompt 0 is a int"):
        lm.encode([3])  # type: ignore[list-item]


def test_prompts_longer_than_the_position_table_are_refused(lm: LensModel) -> None:
    from liref_lens import generate

    limit = lm.max_positions
    long_prompt = " ".join(["w1"] * 70)  # the tiny models have 64 positions
    if limit is None:  # rotary through the bridge: no table to run off; the forward runs
        assert lm.cfg.positional_embedding_type != "standard" and lm.backend == "bridge"
        assert lm.forward(lm.tokenize([long_prompt])).shape[1] == 71
        return
    assert limit == 64
    with pytest.raises(ValueError, match=r"has 71 tokens.*at most 64 positions"):
        lm.tokenize([long_prompt])
    fits = " ".join(["w1"] * 60)  # 61 tokens with BOS: 61 + 8 new tokens do not fit
    with pytest.raises(ValueError, match="prompt plus max_new_tokens has 69 tokens"):
        generate(lm, [fits], max_new_tokens=8)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        generate(lm, ["w1"], batch_size=0)


def test_forward_last_only_equals_the_last_position_and_unembeds_only_it(
    lm: LensModel, prompts
) -> None:
    batch = lm.tokenize(prompts)
    with torch.no_grad():
        full = lm.forward(batch)
        seen: list[tuple[int, ...]] = []
        head = getattr(lm.model, "original_model", None)
        handle = None
        if lm.backend == "bridge":  # what reaches the Hugging Face LM head
            handle = head.lm_head.register_forward_hook(
                lambda _m, inputs, _o: seen.append(tuple(inputs[0].shape))
            )
        try:
            last = lm.forward(batch, last_only=True)
        finally:
            if handle is not None:
                handle.remove()
    assert last.shape == (len(prompts), 1, full.shape[-1])
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-5)
    if lm.backend == "bridge":
        assert seen == [(len(prompts), 1, lm.d_model)]


def test_length_batches_put_the_longest_first_and_keep_ties_in_order() -> None:
    from liref_lens.model import length_batches

    ids = [[1], [1, 2, 3], [1, 2], [4, 5, 6], [7]]
    assert length_batches(ids, 2) == [[1, 3], [2, 0], [4]]
    assert sorted(i for b in length_batches(ids, 3) for i in b) == list(range(5))
