"""Shared by the vLLM tests (a plain module: ``conftest`` names are ambiguous to import)."""

from __future__ import annotations

from typing import Any

PROMPTS = ["w1 w2 w3 w4 w5", "Q: 2 + 3 = ? A:", "w9 w9 w10", "w3 w1"]
SMOL_PROMPTS = [
    "The capital of France is",
    "Q: What is 12 + 7? A:",
    "Water boils at a temperature of",
    "The opposite of hot is",
]


def start(name: str, **kwargs: Any) -> Any:
    """A `VLLMEngine` on ``name`` for the tests (SmolLM2: a 256-token context)."""
    from liref_lens.backends.vllm import load_vllm

    if name == "smollm2-135m":
        kwargs.setdefault("max_model_len", 256)
    return load_vllm(name, **kwargs)
