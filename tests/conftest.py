"""Tiny seeded models built from configs and saved with a local tokenizer (no network).

Two architectures cover the axes that matter for hooks and padding: a GPT-2-style model
(LayerNorm, learned absolute positions) and a Llama-style model (RMSNorm, rotary positions,
grouped-query attention, gated MLP). Each is loaded through ``load_model(path)``, the same path a
hub model takes, once per available TransformerLens backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from liref_lens import LensModel, available_backends, load_model
from liref_lens.experiment import EvalSet

WORDS = [f"w{i}" for i in range(40)] + [str(d) for d in range(10)] + ["+", "=", "?", "Q:", "A:"]
ARCHS = ("gpt2", "llama")
# LIREF_LENS_BACKENDS (comma-separated) restricts the backends tested, e.g. in the legacy session.
BACKENDS = tuple(
    b
    for b in available_backends()
    if b in os.environ.get("LIREF_LENS_BACKENDS", "bridge,hooked_transformer").split(",")
)


def _tokenizer():
    from liref_lens.testbed.train import word_tokenizer

    return word_tokenizer(["<pad>", "<bos>", "<unk>", *WORDS])


def build_tiny(arch: str, directory: Path, seed: int = 0, **config: object) -> Path:
    """Save a randomly initialised tiny model of ``arch`` and its tokenizer to ``directory``.

    ``config``: extra config fields (e.g. ``scale_attn_weights=False``, a larger
    ``initializer_range`` so that attention differences show in the logits), or sizes of the
    non-GPT-2 architectures (``hidden_size``, ``intermediate_size``, ...)."""
    import transformers as T
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tok = _tokenizer()
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tok), bos_token_id=1, eos_token_id=1, pad_token_id=0)
    size = dict(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=64,
    )
    # config fields that are these sizes replace them (e.g. hidden_size=128 for vLLM, whose CPU
    # attention needs a head dimension of at least 32)
    size.update({k: config.pop(k) for k in list(config) if k in size})
    # More architectures, for the fused-attention tests (tests/test_attention.py):
    more = {
        # GPT-NeoX (Pythia): the bridge copies q/k/v out of query_key_value.
        "gpt_neox": lambda: T.GPTNeoXConfig(**size, rotary_pct=0.25, **common),
        # Gemma 2: logit soft-capping, which SDPA cannot express.
        "gemma2": lambda: T.Gemma2Config(**size, num_key_value_heads=2, head_dim=8, **common),
        # Qwen2: rotary, grouped-query attention, q/k/v biases.
        "qwen2": lambda: T.Qwen2Config(**size, num_key_value_heads=2, **common, **config),
        # Mistral: rotary with a sliding attention window.
        "mistral": lambda: T.MistralConfig(**size, num_key_value_heads=2, **common, **config),
        # Gemma 3: sliding and global layers, query_pre_attn_scalar, q/k norms.
        "gemma3": lambda: T.Gemma3TextConfig(
            **size, num_key_value_heads=2, head_dim=8, **common, **config
        ),
    }
    if arch in more:
        model = T.AutoModelForCausalLM.from_config(more[arch]())
    elif arch == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(n_positions=64, n_embd=32, n_layer=3, n_head=4, **common, **config)
        )
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**size, num_key_value_heads=2, **common, **config))
    else:
        raise ValueError(arch)
    model.save_pretrained(directory)  # as saved today: a GPT-2 config without n_ctx
    tok.save_pretrained(directory)
    return directory


@contextmanager
def bridge_only() -> Iterator[None]:
    """`generate` runs on the TransformerLens bridge inside: the direct Hugging Face path
    (`liref_lens._hfdirect`) reports itself unavailable."""
    from liref_lens import _hfdirect

    real = _hfdirect.unavailable
    _hfdirect.unavailable = lambda *args: "test: bridge only"
    try:
        yield
    finally:
        _hfdirect.unavailable = real


@pytest.fixture(scope="session")
def make_tiny():
    """`build_tiny` as a fixture: ``make_tiny(arch, directory, seed)``."""
    return build_tiny


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny(arch, root / f"tiny-{arch}") for arch in ARCHS}


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each TransformerLens backend this run tests (see LIREF_LENS_BACKENDS)."""
    return str(request.param)


_LOADED: dict[tuple[str, str], LensModel] = {}


@pytest.fixture(params=[(a, b) for a in ARCHS for b in BACKENDS], ids=lambda p: f"{p[0]}-{p[1]}")
def lm(request: pytest.FixtureRequest, model_dirs: dict[str, Path]) -> LensModel:
    """A loaded tiny model, shared between tests (tests must not edit its weights)."""
    arch, backend = request.param
    if (arch, backend) not in _LOADED:
        _LOADED[(arch, backend)] = load_model(str(model_dirs[arch]), device="cpu", backend=backend)
    return _LOADED[(arch, backend)]


@pytest.fixture
def hf_model(lm: LensModel, model_dirs: dict[str, Path]):
    """The same checkpoint as ``lm``, loaded by plain Hugging Face (eager attention)."""
    from transformers import AutoModelForCausalLM

    arch = "llama" if "llama" in lm.architecture.lower() else "gpt2"
    return AutoModelForCausalLM.from_pretrained(
        model_dirs[arch], attn_implementation="eager"
    ).eval()


PROMPTS = [
    "w1 w2 w3 w4 w5",
    "w7",
    "Q: 2 + 3 = ? A:",
    "w9 w9 w10",
    "w3 w1",
    "Q: w5 w6 w7 w8 w9 w10 w11 ?",
]


@pytest.fixture
def prompts() -> list[str]:
    return list(PROMPTS)


@pytest.fixture
def evalset(prompts) -> EvalSet:
    """Three candidates per prompt, subsets by mode (the experiment tests' eval set)."""
    return EvalSet(
        name="tiny",
        prompts=tuple(prompts),
        candidates=tuple(("w1", "w2", "w3") for _ in prompts),
        correct=tuple(i % 3 for i in range(len(prompts))),
        subsets=tuple("reasoning" if "Q:" in p else "memory" for p in prompts),
        candidate_names=("one", "two", "three"),
    )
