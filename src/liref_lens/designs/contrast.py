"""A contrast (two classes of items as one model read them) and the held-out design.

A `Contrast` holds what every design needs: the activations of both classes, the token ids
the model read (for the trivial readers) and one row of metadata per item (``label``,
``token_length`` and any user column: source dataset, number of options, template...). Rows
count the positive items first, then the negative ones, everywhere.

`heldout` is the reference design: each layer's difference-in-means direction and the trivial
readers (`liref_lens.confounds`) scored out of fold with the same folds, each layer compared
with the baselines by the paired verdict (`liref_lens.verdicts`). Every design returns a
`DesignResult` of DataFrames; `design_table` stacks several into one tidy table for plots and
reports.

Memory: a contrast holds its activations (``n x layers x d`` floats) and token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from .._oof import _baseline_oof, _folds, _labels, _layer_oof
from ..cache import Activations, cache_activations
from ..confounds import against_baselines, auroc_table
from ..model import LensModel
from ..scores import _check_boot, _interval
from ..verdicts import paired_verdicts, stratified_resamples

__all__ = ["Contrast", "DesignResult", "design_table", "heldout"]


@dataclass(frozen=True, eq=False)
class Contrast:
    """Two classes of items read by one model: activations, token ids, per-item metadata.

    Args:
        name: what the contrast is (``"gsm8k_vs_nq"``).
        pos: activations of the positive (reasoning) items, one row per item.
        neg: activations of the negative (memory) items.
        ids: the token ids the model read, positive items first.
        vocab: the model's vocabulary size (for the bag-of-tokens reader).
        meta: one row per item, positive items first; ``label`` (1 / 0) and
            ``token_length`` are added from the rows and ``ids`` when absent.

    Example:
        >>> c = Contrast.read(lm, "toy", prompts[::2], prompts[1::2], layers=[1, 2])
        >>> c.n_pos, c.n_neg, c.meta.columns.tolist()
        (2, 2, ['label', 'token_length'])
    """

    name: str
    pos: Activations
    neg: Activations
    ids: tuple[tuple[int, ...], ...]
    vocab: int
    meta: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __post_init__(self) -> None:
        n = len(self.pos) + len(self.neg)
        ids = tuple(tuple(int(t) for t in row) for row in self.ids)
        if len(ids) != n:
            raise ValueError(f"{self.name}: {len(ids)} token-id rows for {n} activation rows")
        for acts in (self.pos, self.neg):
            if len(set(acts.prompt_index.tolist())) != len(acts):
                raise ValueError(
                    f"{self.name}: activations must hold one row per item (position last(), "
                    f"mean() or at(i)), got {len(acts)} rows for "
                    f"{len(set(acts.prompt_index.tolist()))} prompts"
                )
        meta = self.meta.reset_index(drop=True).copy() if len(self.meta.columns) else None
        if meta is None:
            meta = pd.DataFrame(index=range(n))
        if len(meta) != n:
            raise ValueError(f"{self.name}: meta has {len(meta)} rows for {n} items")
        label = _labels(len(self.pos), len(self.neg))
        if "label" in meta and not np.array_equal(meta["label"].to_numpy(), label):
            raise ValueError(f"{self.name}: meta['label'] must be 1 for the positive rows, then 0")
        meta["label"] = label
        if "token_length" not in meta:
            meta["token_length"] = [len(row) for row in ids]
        front = ["label", "token_length"]
        meta = meta[front + [c for c in meta.columns if c not in front]]
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "meta", meta)

    @property
    def n_pos(self) -> int:
        return len(self.pos)

    @property
    def n_neg(self) -> int:
        return len(self.neg)

    @property
    def labels(self) -> np.ndarray:
        return self.meta["label"].to_numpy()

    @property
    def pos_ids(self) -> list[tuple[int, ...]]:
        return list(self.ids[: self.n_pos])

    @property
    def neg_ids(self) -> list[tuple[int, ...]]:
        return list(self.ids[self.n_pos :])

    def take(self, pos_rows: Sequence[int], neg_rows: Sequence[int], name: str = "") -> Contrast:
        """The contrast restricted to some positive and some negative items (their indices
        within each class), in that order."""
        p, q = [int(i) for i in pos_rows], [int(i) for i in neg_rows]
        rows = [*p, *(self.n_pos + i for i in q)]
        return replace(
            self, name=name or self.name, pos=self.pos.subset(p), neg=self.neg.subset(q),
            ids=tuple(self.ids[i] for i in rows), meta=self.meta.iloc[rows],
        )  # fmt: skip

    @classmethod
    def read(
        cls,
        lm: LensModel,
        name: str,
        pos_prompts: Sequence[str],
        neg_prompts: Sequence[str],
        *,
        layers: Sequence[int] | None = None,
        site: str = "resid_pre",
        meta: pd.DataFrame | None = None,
        batch_size: int = 16,
        progress: bool = False,
    ) -> Contrast:
        """Cache the last-token activations of both prompt lists and encode them."""
        kw: dict[str, Any] = dict(layers=layers, sites=(site,), batch_size=batch_size)
        pos = cache_activations(lm, list(pos_prompts), progress=progress, **kw)
        neg = cache_activations(lm, list(neg_prompts), progress=progress, **kw)
        ids = lm.encode([*pos_prompts, *neg_prompts])
        m = meta if meta is not None else pd.DataFrame()
        return cls(name, pos, neg, tuple(map(tuple, ids)), int(lm.cfg.d_vocab), m)


@dataclass(frozen=True, eq=False)
class DesignResult:
    """What one design measured on one contrast, as DataFrames.

    ``layers``: per layer ``layer, score, value, ci_low, ci_high`` (AUROC), ``baseline,
    baseline_auroc, diff, diff_low, diff_high, beats_baseline`` (paired verdict against the
    best baseline) and ``acc, acc_low, acc_high`` (balanced accuracy at the reader's
    threshold). ``baselines``: ``feature, auroc, ci_low, ci_high, acc, acc_low, acc_high``.
    ``verdicts``: `liref_lens.verdicts.paired_verdicts` (every layer against every baseline).
    ``scores``: the held-out (or transferred) score of every reader and item, ``layer`` or
    ``feature``, ``row, label, fold, score, threshold``. ``info``: design-specific tables
    (``"overlap"`` and ``"bins"`` for `matched`).
    """

    design: str
    contrast: str
    layers: pd.DataFrame
    baselines: pd.DataFrame
    verdicts: pd.DataFrame
    scores: pd.DataFrame
    n_pos: int
    n_neg: int
    info: dict[str, pd.DataFrame] = field(default_factory=dict)


def _accuracy(oof: pd.DataFrame, key: str, n_boot: int, ci: float, seed: int) -> pd.DataFrame:
    """Balanced accuracy of ``score > threshold`` per reader, with the stratified bootstrap."""
    rows = []
    for name, g in oof.groupby(key, sort=False):
        g = g.sort_values("row")
        hit = (g["score"] > g["threshold"]).to_numpy() == (g["label"] == 1).to_numpy()
        hp, hn = hit[g["label"].to_numpy() == 1], hit[g["label"].to_numpy() == 0]
        value = (hp.mean() + hn.mean()) / 2
        lo = hi = float("nan")
        if n_boot:
            ip, ineg = stratified_resamples(len(hp), len(hn), n_boot, seed)
            lo, hi = _interval((hp[ip].mean(1) + hn[ineg].mean(1)) / 2, ci)
        rows.append((name, float(value), lo, hi))
    return pd.DataFrame(rows, columns=[key, "acc", "acc_low", "acc_high"])


def _evaluate(
    design: str,
    contrast: str,
    lay: pd.DataFrame,
    base: pd.DataFrame,
    *,
    n_boot: int,
    ci: float,
    seed: int,
    margin: float,
    info: dict[str, pd.DataFrame] | None = None,
) -> DesignResult:
    """Score two frames of held-out (or transferred) scores of the same rows."""
    _check_boot(n_boot, ci)
    kw: dict[str, Any] = dict(n_boot=n_boot, ci=ci, seed=seed)
    layers = against_baselines(lay, base, margin=margin, **kw)
    layers = layers.merge(_accuracy(lay, "layer", **kw), on="layer", how="left")
    baselines = auroc_table(base, **kw).merge(_accuracy(base, "feature", **kw), on="feature")
    verdicts = paired_verdicts(lay, base, margin=margin, **kw)
    n_pos = int((lay.drop_duplicates("row")["label"] == 1).sum())
    n_neg = int(lay["row"].nunique()) - n_pos
    scores = pd.concat([lay, base], ignore_index=True)
    return DesignResult(
        design, contrast, layers, baselines, verdicts, scores, n_pos, n_neg, info or {}
    )


def heldout(
    c: Contrast,
    *,
    cv_folds: int = 5,
    C: float = 1.0,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    margin: float = 0.0,
) -> DesignResult:
    """Each layer's held-out AUROC next to the trivial readers, with paired verdicts.

    The layers (difference in means) and the readers (prompt length, bag of tokens with
    regularisation ``C``) are fitted on the training folds and score the held-out fold, with
    the same seeded stratified folds; see `DesignResult` for the tables.

    Example:
        >>> c = Contrast.read(lm, "toy", prompts * 3, ["w1 w2"] * 12, layers=[1])
        >>> r = heldout(c, cv_folds=3, n_boot=50)
        >>> r.layers[["layer", "value", "beats_baseline"]].values.tolist()
        [[1, 1.0, False]]
    """
    folds = _folds(c.labels, cv_folds, seed)
    lay = _layer_oof(c.pos, c.neg, None, folds)
    base = _baseline_oof(c.pos_ids, c.neg_ids, c.vocab, folds, C)
    kw: dict[str, Any] = dict(n_boot=n_boot, ci=ci, seed=seed, margin=margin)
    return _evaluate("heldout", c.name, lay, base, **kw)


def design_table(results: Sequence[DesignResult]) -> pd.DataFrame:
    """One tidy table of several designs: ``design, contrast, n_pos, n_neg`` and the
    ``layers`` columns of each `DesignResult`.

    Example:
        >>> c = Contrast.read(lm, "toy", prompts * 3, ["w1 w2"] * 12, layers=[1])
        >>> design_table([heldout(c, cv_folds=3, n_boot=0)])[["design", "layer"]].values.tolist()
        [['heldout', 1]]
    """
    frames = [
        r.layers.assign(design=r.design, contrast=r.contrast, n_pos=r.n_pos, n_neg=r.n_neg)
        for r in results
    ]
    out = pd.concat(frames, ignore_index=True)
    front = ["design", "contrast", "n_pos", "n_neg"]
    return out[front + [c for c in out.columns if c not in front]]
