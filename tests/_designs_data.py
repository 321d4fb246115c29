"""Synthetic contrasts for the design tests: activations built directly, with known signals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from liref_lens import Activations
from liref_lens.designs import Contrast


def acts(x: np.ndarray, layers: tuple[int, ...], fingerprint: str = "synthetic") -> Activations:
    """`Activations` of an ``[n, layer, d]`` array, one row per item (position last())."""
    n = x.shape[0]
    return Activations(
        data={"resid_pre": torch.as_tensor(x, dtype=torch.float32)},
        layers=layers,
        position="last()",
        prompt_index=torch.arange(n),
        token_rank=torch.zeros(n, dtype=torch.long),
        n_prompts=n,
        model_fingerprint=fingerprint,
    )


def ids_of_lengths(lengths: np.ndarray, rng: np.random.Generator, vocab: int) -> list[list[int]]:
    """Random token ids (no class signal in which tokens) of the given lengths."""
    return [rng.integers(0, vocab, int(k)).tolist() for k in lengths]


def contrast(
    name: str,
    x: np.ndarray,
    lengths: np.ndarray,
    n_pos: int,
    *,
    seed: int = 0,
    vocab: int = 50,
    meta: pd.DataFrame | None = None,
    layers: tuple[int, ...] | None = None,
) -> Contrast:
    rng = np.random.default_rng(seed)
    layers = layers if layers is not None else tuple(range(x.shape[1]))
    ids = ids_of_lengths(lengths, rng, vocab)
    return Contrast(name, acts(x[:n_pos], layers), acts(x[n_pos:], layers), tuple(map(tuple, ids)),
                    vocab, meta if meta is not None else pd.DataFrame())  # fmt: skip
