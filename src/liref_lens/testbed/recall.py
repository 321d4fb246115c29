"""Noisy in-context recall: a second offline world, a 2-layer model on it, and MLP truncation.

Every prompt is ``length`` words: random filler values (``v0 .. v{n-1}``), one ``trigger``
followed by the per-sequence **target** value, more fillers, and a final ``trigger``, e.g.
``"v3 v9 trigger v17 v2 v9 v30 trigger"``; the answer is the word after the earlier trigger
(``v17``), found in context (an induction-style rule, done by attention). In training the
label after the final trigger is replaced, with probability ``p_noise``, by a fixed ``noise``
token that never appears in any input: a context-free association the model can only store
in its weights. The noise touches the training labels only, so every test prompt's correct
answer is its target (the *clean* answer).

`train_recall` trains a 2-layer GPT-2-style model on it with the testbed's recipe and helpers
(seeded, deterministic, one CPU thread, under a minute; the checkpoint loads with
`liref_lens.load_model`). `measure_truncation` reports clean accuracy and the mean
probability of the noise token before and after LASER truncation (`liref_lens.truncate`) of
the second block's MLP matrices, next to two controls of the same rank reduction:

- ``random_k``: the same matrix keeps ``k`` of its singular directions drawn at random
  (seeded, uniformly without replacement) instead of the top ``k``;
- ``top_k_other_layer``: the same matrix of the other block (``control_layer``) is truncated
  to the same rank.

Measured numbers are in ``docs/how-to/neurons-and-truncation.md``.

Memory: one forward over the test items per edit (logits of the last position kept); an edit
holds one copy of the edited matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from ..metrics import mean_ci
from ..model import LensModel
from ..weights import keep_singular_directions, truncate, truncation_rank, weight_matrix
from .train import TrainConfig, _train_and_record
from .world import SPECIAL_TOKENS

__all__ = [
    "RECALL_CONFIG",
    "RecallItem",
    "RecallWorld",
    "measure_truncation",
    "recall_scores",
    "train_recall",
]

TRIGGER, NOISE = "trigger", "noise"

#: The recall model's recipe: 2 layers, d_model 64, d_mlp 256, 1,500 steps of batch 128.
RECALL_CONFIG = TrainConfig(
    n_layer=2,
    d_model=64,
    n_head=4,
    d_mlp=256,
    steps=1500,
    batch_size=128,
    lr=2e-3,
    weight_decay=0.1,
    warmup=100,
    min_lr_ratio=0.1,
    eval_every=250,
)


@dataclass(frozen=True)
class RecallItem:
    """One prompt and its ground truth: the target value, where the first trigger sits
    (token index, BOS at 0; the target follows it) and whether its training label is noise."""

    prompt: str
    target: int
    trigger_position: int
    noised: bool


@dataclass(frozen=True)
class RecallWorld:
    """The noisy recall world: ``n_values`` values, prompts of ``length`` words, noise rate.

    Example:
        >>> w = RecallWorld(n_values=8, length=6, p_noise=0.25)
        >>> w.vocab[3:7], w.prompt_length
        (('trigger', 'noise', 'v0', 'v1'), 7)
        >>> it = w.sample_items(1, torch.Generator().manual_seed(0))[0]
        >>> words = it.prompt.split()
        >>> words[it.trigger_position - 1], words[it.trigger_position], words[-1]
        ('trigger', 'v3', 'trigger')
    """

    n_values: int = 32
    length: int = 12
    p_noise: float = 0.3

    def __post_init__(self) -> None:
        if self.n_values < 2:
            raise ValueError(f"n_values must be >= 2, got {self.n_values}")
        if self.length < 3:
            raise ValueError(f"length must be >= 3 (trigger, target, trigger), got {self.length}")
        if not 0.0 <= self.p_noise < 1.0:
            raise ValueError(f"p_noise must be in [0, 1), got {self.p_noise}")

    @property
    def vocab(self) -> tuple[str, ...]:
        """All tokens in id order: specials, ``trigger``, ``noise``, values ``v0 ..``."""
        return (*SPECIAL_TOKENS, TRIGGER, NOISE, *(f"v{i}" for i in range(self.n_values)))

    @property
    def bos_id(self) -> int:
        return SPECIAL_TOKENS.index("<bos>")

    @property
    def trigger_id(self) -> int:
        return len(SPECIAL_TOKENS)

    @property
    def noise_id(self) -> int:
        return len(SPECIAL_TOKENS) + 1

    @property
    def value_offset(self) -> int:
        """Token id of ``v0``; value ``i`` has id ``value_offset + i``."""
        return len(SPECIAL_TOKENS) + 2

    @property
    def prompt_length(self) -> int:
        """Tokens per prompt, BOS included."""
        return 1 + self.length

    def token_ids(self, prompt: str) -> list[int]:
        """Token ids of a prompt as the checkpoint's tokenizer gives them, BOS first."""
        index = {t: i for i, t in enumerate(self.vocab)}
        try:
            return [self.bos_id, *(index[t] for t in prompt.split())]
        except KeyError as err:
            raise ValueError(f"token {err.args[0]!r} is not in the recall vocabulary") from err

    def sample_batch(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"], Int[Tensor, " batch"]]:
        """A training batch: token ids (BOS first), label ids (noise with ``p_noise``), target ids.

        Fillers are uniform values; the first trigger's word index is uniform in
        ``0 .. length - 3``; the target is the (uniform) value after it.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        g, n, n_words = generator, batch_size, self.length
        words = self.value_offset + torch.randint(0, self.n_values, (n, n_words), generator=g)
        where = torch.randint(0, n_words - 2, (n,), generator=g)
        rows = torch.arange(n)
        words[rows, where] = self.trigger_id
        words[:, -1] = self.trigger_id
        target = words[rows, where + 1]
        noised = torch.rand(n, generator=g) < self.p_noise
        label = torch.where(noised, torch.full_like(target, self.noise_id), target)
        bos = torch.full((n, 1), self.bos_id, dtype=torch.long)
        return torch.cat([bos, words], dim=1), label, target

    def sample_items(self, n: int, generator: torch.Generator) -> list[RecallItem]:
        """``n`` items drawn exactly like `sample_batch` rows, with their ground truth."""
        ids, label, target = self.sample_batch(n, generator)
        vocab = self.vocab
        return [
            RecallItem(
                prompt=" ".join(vocab[int(t)] for t in row[1:]),
                target=int(target[i]) - self.value_offset,
                trigger_position=int((row[:-1] == self.trigger_id).nonzero()[0, 0]),
                noised=bool(label[i] == self.noise_id),
            )
            for i, row in enumerate(ids)
        ]


def recall_scores(
    logits: Float[Tensor, "n vocab"], world: RecallWorld, items: Sequence[RecallItem]
) -> tuple[Float[Tensor, " n"], Float[Tensor, " n"], Float[Tensor, " n"]]:
    """Per item: 1.0 where the argmax over the whole vocabulary is the target (else 0.0), and
    the probabilities (softmax over the whole vocabulary, float64) of the target and of the
    noise token.

    Example:
        >>> w = RecallWorld(n_values=2)
        >>> item = RecallItem("v1 trigger v0 trigger", 0, 2, False)
        >>> logits = torch.tensor([[0.0, 0, 0, 0, 1.0, 2.0, 0.0]])  # noise 1, v0 2, v1 0
        >>> [round(float(t[0]), 3) for t in recall_scores(logits, w, [item])]
        [1.0, 0.489, 0.18]
    """
    if logits.ndim != 2 or logits.shape != (len(items), len(world.vocab)):
        raise ValueError(f"logits must be [{len(items)}, {len(world.vocab)}], got {logits.shape}")
    target = torch.tensor([world.value_offset + it.target for it in items], device=logits.device)
    correct = (logits.argmax(-1) == target).to(torch.float64)
    probs = torch.softmax(logits.to(torch.float64), dim=-1)
    p_target = probs.gather(1, target[:, None]).squeeze(1)
    return correct.cpu(), p_target.cpu(), probs[:, world.noise_id].cpu()


@torch.no_grad()
def _hf_metrics(model: Any, world: RecallWorld, items: Sequence[RecallItem]) -> dict[str, float]:
    """Training-log metrics of a Hugging Face model: clean accuracy and noise probability."""
    was_training = model.training
    model.eval()
    ids = torch.tensor([world.token_ids(it.prompt) for it in items])
    correct, p_target, p_noise = recall_scores(model(ids).logits[:, -1], world, items)
    model.train(was_training)
    return {
        "acc_clean": float(correct.mean()),
        "p_target": float(p_target.mean()),
        "p_noise": float(p_noise.mean()),
    }


def train_recall(
    out_dir: str | Path | None,
    seed: int = 0,
    *,
    world: RecallWorld | None = None,
    config: TrainConfig | None = None,
    n_eval: int = 1000,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the 2-layer recall model (cross-entropy on the last label) and write a checkpoint.

    The testbed's trainer (`liref_lens.testbed.train_testbed`) with another world: same
    deterministic context (seeded, forked RNG, deterministic algorithms, ``config.threads``
    threads), same optimizer and schedule, same atomic checkpoint folder with ``training.json``
    and ``training_log.csv``. Metrics (``acc_clean``, ``p_noise``) are on ``n_eval`` items
    drawn with seed ``seed + 1``.

    Args:
        out_dir: checkpoint directory; None keeps the model in the record under ``"model"``.
        seed: seed of the initialization and of the batches.
        world: default `RecallWorld()`; config: default `RECALL_CONFIG`.

    Example:
        >>> cfg = TrainConfig(n_layer=2, d_model=16, n_head=2, d_mlp=32, steps=2, eval_every=0)
        >>> rec = train_recall(None, 0, world=RecallWorld(n_values=4, length=5), config=cfg,
        ...                    n_eval=8, progress=False)
        >>> rec["n_parameters"] < 10_000, 0.0 <= rec["metrics"]["p_noise"] <= 1.0
        (True, True)
    """
    world = world if world is not None else RecallWorld()
    config = config if config is not None else RECALL_CONFIG
    evalset = world.sample_items(n_eval, torch.Generator().manual_seed(seed + 1))
    score = partial(_hf_metrics, world=world, items=evalset)
    return _train_and_record(
        out_dir,
        world,
        config,
        seed,
        progress,
        {"kind": "recall", **asdict(world)},
        score,
        extra={"eval": {"n": n_eval, "seed": seed + 1}},
        desc="train recall",
    )


@torch.no_grad()
def measure_truncation(
    model: LensModel,
    world: RecallWorld,
    items: Sequence[RecallItem],
    *,
    layer: int = 1,
    control_layer: int = 0,
    matrices: Sequence[str] = ("W_in", "W_out"),
    rhos: Sequence[float] = (0.5, 0.25, 0.1, 0.05, 0.01),
    n_random: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Clean accuracy and noise-token probability before and after truncating ``layer``'s MLP.

    Rows (``edit``): ``none`` (the model as is); ``top_k`` (`truncate` of ``matrix`` at
    ``layer`` to rank ``k = truncation_rank(shape, rho)``); ``random_k`` (``n_random`` draws,
    ``draw = 0..``: keep ``k`` singular directions of the same matrix drawn uniformly without
    replacement by ``torch.Generator().manual_seed(seed)``); ``top_k_other_layer`` (`truncate`
    of the same matrix at ``control_layer`` to the same rank); ``rank_0`` (the matrix at
    ``layer`` set to zero, the end point of truncation; ``rho = 0``). Columns ``acc``,
    ``p_target``, ``p_noise`` (means over items of `recall_scores`: the argmax is the target;
    probability of the target; of the noise token), each with ``_lo`` / ``_hi`` 95% bootstrap
    intervals over items (`mean_ci`, seed ``seed``), and ``n``.

    Example:
        >>> from liref_lens import load_model
        >>> w = RecallWorld(n_values=4, length=5)
        >>> cfg = TrainConfig(n_layer=2, d_model=16, n_head=2, d_mlp=32, steps=2, eval_every=0)
        >>> _ = train_recall(tmp / "m", world=w, config=cfg, n_eval=4, progress=False)
        >>> items = w.sample_items(16, torch.Generator().manual_seed(2))
        >>> df = measure_truncation(load_model(str(tmp / "m")), w, items, matrices=["W_out"],
        ...                         rhos=(0.5,), n_random=1, progress=False)
        >>> df[["edit", "rank"]].values.tolist()
        [['none', <NA>], ['top_k', 8], ['random_k', 8], ['top_k_other_layer', 8], ['rank_0', 0]]
    """
    if not items:
        raise ValueError("no items to measure")
    if n_random < 0:
        raise ValueError(f"n_random must be >= 0, got {n_random}")
    layer, control_layer = model.resolve_layer(layer), model.resolve_layer(control_layer)
    if layer == control_layer:
        raise ValueError(f"control_layer must differ from layer ({layer})")
    shapes = {m: weight_matrix(model, m, layer).shape for m in matrices}
    ranks = {(m, r): truncation_rank(shapes[m], r) for m in matrices for r in rhos}
    batch = model.tokenize([it.prompt for it in items])
    rows: list[dict[str, Any]] = []

    def record(edit: str, matrix: str, lay: int | None, rho: float, k: int | None, draw: int):
        scores = recall_scores(model.forward(batch)[:, -1], world, items)
        row: dict[str, Any] = dict(
            edit=edit, matrix=matrix, layer=lay, rho=rho, rank=k, draw=draw, n=len(items)
        )
        for name, values in zip(("acc", "p_target", "p_noise"), scores, strict=True):
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = mean_ci(values, seed=seed)
        rows.append(row)

    record("none", "", None, 1.0, None, 0)
    gen = torch.Generator().manual_seed(seed)
    for (m, rho), k in tqdm(ranks.items(), desc="truncation", disable=not progress):
        with truncate(model, m, layer, rho):
            record("top_k", m, layer, rho, k, 0)
        for d in range(n_random):
            idx = torch.randperm(min(shapes[m]), generator=gen)[:k].sort().values.tolist()
            with keep_singular_directions(model, m, layer, idx):
                record("random_k", m, layer, rho, k, d)
        with truncate(model, m, control_layer, rho) as done:
            record("top_k_other_layer", m, control_layer, rho, done[0][3], 0)
    for m in matrices:
        with keep_singular_directions(model, m, layer, []):
            record("rank_0", m, layer, 0.0, 0, 0)
    return pd.DataFrame(rows).astype({"layer": "Int64", "rank": "Int64"})
