"""Next-token metrics for steering: KL, entropy, answer-candidate choice, bootstrap means.

All functions take logits of one position per prompt (``[n, vocab]``, e.g. the last prompt
token) and return one value per prompt, computed in float64; `mean_ci` aggregates them with a
seeded percentile bootstrap. Memory: one float64 copy of the logits, on their device
(float32 on Apple's MPS, which has no float64).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = [
    "answer_probability",
    "candidate_choice",
    "entropy",
    "kl_divergence",
    "mean_ci",
]


def _log_probs(logits: Tensor) -> Tensor:
    if logits.ndim != 2:
        raise ValueError(f"expected logits of shape [n, vocab], got {tuple(logits.shape)}")
    if not bool(torch.isfinite(logits).all()):
        hint = " (try float32)" if logits.dtype in (torch.float16, torch.bfloat16) else ""
        raise ValueError(
            f"logits contain NaN or inf ({str(logits.dtype).removeprefix('torch.')}): the model "
            f"or an intervention overflowed{hint}"
        )
    # float64 where the device has it (Apple's MPS has no float64).
    wide = torch.float32 if logits.device.type == "mps" else torch.float64
    return torch.log_softmax(logits.to(wide), dim=-1)


def kl_divergence(
    base_logits: Float[Tensor, "n vocab"], steered_logits: Float[Tensor, "n vocab"]
) -> Float[Tensor, " n"]:
    """KL(base || steered) of the next-token distributions, per prompt, in nats.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> float(kl_divergence(x, x))
        0.0
    """
    if base_logits.shape != steered_logits.shape:
        raise ValueError(f"shapes differ: {base_logits.shape} vs {steered_logits.shape}")
    lp, lq = _log_probs(base_logits), _log_probs(steered_logits)
    return (lp.exp() * (lp - lq)).sum(-1)


def entropy(logits: Float[Tensor, "n vocab"]) -> Float[Tensor, " n"]:
    """Entropy of the next-token distribution, per prompt, in nats.

    Example:
        >>> import torch
        >>> round(float(entropy(torch.zeros(1, 4))), 4)  # log(4): uniform over 4 tokens
        1.3863
    """
    lp = _log_probs(logits)
    return -(lp.exp() * lp).sum(-1)


def answer_probability(
    logits: Float[Tensor, "n vocab"],
    candidates: Int[Tensor, "n k"],
    correct: Int[Tensor, " n"],
    *,
    renormalize: bool = True,
) -> Float[Tensor, " n"]:
    """Probability of the correct candidate token, among the candidates if ``renormalize``.

    Example:
        >>> import torch
        >>> p = answer_probability(torch.log(torch.tensor([[0.2, 0.6, 0.2]])),
        ...                        torch.tensor([[0, 1]]), torch.tensor([0]))
        >>> round(float(p), 4)
        0.25
    """
    lp = _log_probs(logits)
    cand = lp.gather(1, candidates.to(lp.device))
    if renormalize:
        cand = torch.log_softmax(cand, dim=-1)
    return cand.gather(1, correct.to(lp.device)[:, None]).squeeze(1).exp()


def candidate_choice(
    logits: Float[Tensor, "n vocab"], candidates: Int[Tensor, "n k"]
) -> Int[Tensor, " n"]:
    """Index of the candidate with the highest logit, per prompt.

    Example:
        >>> import torch
        >>> candidate_choice(torch.tensor([[0.0, 3.0, 1.0]]), torch.tensor([[2, 1]])).tolist()
        [1]
    """
    return logits.gather(1, candidates.to(logits.device)).argmax(-1)


def mean_ci(
    values: Sequence[float] | np.ndarray | Tensor,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval of ``values`` (seeded, so reproducible).

    Example:
        >>> mean_ci([1.0, 1.0, 1.0])
        (1.0, 1.0, 1.0)
    """
    if isinstance(values, Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to average: the subset is empty")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1 - level) / 2
    return float(x.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
