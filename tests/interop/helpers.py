"""Helpers of the interop tests: prompts, fresh Hugging Face models, greedy decoding, logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from liref_lens import LensModel, intervene

REASONING = [
    "What is 17 + 25? Let's think step by step.",
    "If a train travels 60 km in 1.5 hours, what is its speed?",
    "Solve for x: 3x + 4 = 19.",
    "A box has 12 apples and 5 are eaten. How many are left?",
]
MEMORY = [
    "What is the capital of France?",
    "Who wrote Romeo and Juliet?",
    "What is the chemical symbol for gold?",
    "In which year did World War II end?",
]
#: prompts the steered models continue (8 greedy rows)
CONTINUE = [
    "The quick brown fox jumps over the lazy dog because",
    "Question: What is 7 times 8?\nAnswer:",
    "Once upon a time, in a small village,",
    "The capital of Italy is",
    "To solve 2x + 3 = 11, first",
    "My favourite food is",
    "Water boils at",
    "The three primary colours are",
]


def load_hf(folder: str) -> torch.nn.Module:
    """A fresh float32 Hugging Face model of ``folder`` (eager attention)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()


def hf_greedy(hf: torch.nn.Module, prompts: Sequence[Sequence[int]], n_new: int) -> list[list[int]]:
    """Greedy continuations, one prompt at a time, the whole sequence recomputed each step."""
    out = []
    with torch.no_grad():
        for ids in prompts:
            seq = list(ids)
            for _ in range(n_new):
                seq.append(int(hf(torch.tensor([seq])).logits[0, -1].argmax()))
            out.append(seq[len(ids) :])
    return out


def hf_logits(hf: torch.nn.Module, prompts: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [hf(torch.tensor([ids])).logits[0] for ids in prompts]


def lens_logits(lm: LensModel, prompts: Sequence[Sequence[int]], *ops) -> list[torch.Tensor]:
    out = []
    with torch.no_grad(), intervene(lm, *ops):
        for ids in prompts:
            out.append(lm.forward(lm.pad([ids]))[0])
    return out


def max_gap(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))
