"""Transfer: fit on one contrast (A), score another (B), trivial readers included.

`transfer` fits every reader on **all** of A and scores B's items:

- each layer: the difference in means of A (`liref_lens.fit_directions`), B's projections on
  its unit vector;
- ``length``: B's token lengths, oriented by the side that is longer in A;
- ``bag_of_tokens``: a logistic regression fitted on A's token counts, its decision values
  on B's.

Threshold transfer: each reader's cut is chosen on A, as the midpoint of A's two class means
of that reader's score (for a layer: the projections of A's rows), and B's balanced accuracy
is read at that cut (``acc``, next to the AUROC, which needs no cut). A reader whose AUROC
transfers while its accuracy falls to 0.5 ranks B's items right but sits at another offset.
Intervals and paired verdicts resample B's rows (A's fit held fixed).

`transfer_matrix` does this for every ordered pair of contrasts; the diagonal is the
held-out design of each contrast (`liref_lens.designs.heldout`), so no cell is in-sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._oof import _counts, _frame, _midpoint
from ..directions import fit_directions
from ..scores import _auroc, projection
from .contrast import Contrast, DesignResult, _evaluate, heldout

__all__ = ["transfer", "transfer_matrix"]


def _check_pair(a: Contrast, b: Contrast) -> None:
    if a.pos.layers != b.pos.layers or a.pos.sites != b.pos.sites:
        raise ValueError(
            f"{a.name} and {b.name} were read at different layers or sites ({a.pos.layers} "
            f"{a.pos.sites} vs {b.pos.layers} {b.pos.sites}); read both the same way"
        )
    if a.vocab != b.vocab:
        raise ValueError(f"{a.name} and {b.name} come from models with different vocabularies")


def _transfer_scores(a: Contrast, b: Contrast, C: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Layer and baseline scores of B's rows by readers fitted on A (fold -1)."""
    from sklearn.linear_model import LogisticRegression

    _check_pair(a, b)
    ya, yb = a.labels, b.labels
    fold = np.full(len(yb), -1)
    ds = fit_directions(a.pos, a.neg)
    on_a = projection(a.pos, ds).numpy(), projection(a.neg, ds).numpy()
    on_b = np.concatenate([projection(b.pos, ds).numpy(), projection(b.neg, ds).numpy()])
    on_a_all = np.concatenate(on_a)
    lay = pd.concat(
        [
            _frame("layer", layer, yb, fold, on_b[:, i],
                   np.full(len(yb), _midpoint(on_a_all[:, i], ya)))
            for i, layer in enumerate(ds.layers)
        ],
        ignore_index=True,
    )  # fmt: skip
    len_a = np.array([len(x) for x in a.ids], np.float64)
    len_b = np.array([len(x) for x in b.ids], np.float64)
    sign = 1.0 if _auroc(len_a[ya == 1], len_a[ya == 0]) >= 0.5 else -1.0
    clf = LogisticRegression(C=C, max_iter=2000).fit(_counts(a.ids, a.vocab), ya)
    dec_a = clf.decision_function(_counts(a.ids, a.vocab))
    base = pd.concat(
        [
            _frame("feature", "length", yb, fold, sign * len_b,
                   np.full(len(yb), _midpoint(sign * len_a, ya))),
            _frame("feature", "bag_of_tokens", yb, fold,
                   clf.decision_function(_counts(b.ids, b.vocab)),
                   np.full(len(yb), _midpoint(dec_a, ya))),
        ],
        ignore_index=True,
    )  # fmt: skip
    return lay, base


def transfer(
    a: Contrast,
    b: Contrast,
    *,
    C: float = 1.0,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    margin: float = 0.0,
) -> DesignResult:
    """Readers fitted on contrast ``a``, scored on contrast ``b`` (see the module docstring).

    Example:
        >>> a = Contrast.read(lm, "a", prompts[::2], prompts[1::2], layers=[1, 2])
        >>> r = transfer(a, a, n_boot=0)  # in-sample when a is b: use heldout for that
        >>> r.design, r.contrast, r.layers["layer"].tolist()
        ('transfer', 'a -> a', [1, 2])
    """
    lay, base = _transfer_scores(a, b, C)
    kw: dict[str, Any] = dict(n_boot=n_boot, ci=ci, seed=seed, margin=margin)
    return _evaluate("transfer", f"{a.name} -> {b.name}", lay, base, **kw)


def transfer_matrix(
    contrasts: Sequence[Contrast],
    *,
    cv_folds: int = 5,
    C: float = 1.0,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    margin: float = 0.0,
) -> pd.DataFrame:
    """Every contrast's readers scored on every contrast (held out on the diagonal).

    Returns one row per (train, test, reader): ``train, test, reader`` (``"layer"`` or the
    baseline's name), ``layer`` (NaN for baselines), ``auroc, ci_low, ci_high, acc, acc_low,
    acc_high`` and, for layers, the paired verdict against the best baseline of the same
    cell (``baseline_auroc, diff, diff_low, diff_high, beats_baseline``).

    Example:
        >>> a = Contrast.read(lm, "a", prompts[:3] * 2, prompts[3:] * 2, layers=[1])
        >>> b = Contrast.read(lm, "b", prompts[3:] * 2, prompts[:3] * 2, layers=[1])
        >>> m = transfer_matrix([a, b], cv_folds=2, n_boot=0)
        >>> sorted(set(zip(m["train"], m["test"])))
        [('a', 'a'), ('a', 'b'), ('b', 'a'), ('b', 'b')]
    """
    names = [c.name for c in contrasts]
    if len(set(names)) != len(names):
        raise ValueError(f"contrast names must be distinct, got {names}")
    kw: dict[str, Any] = dict(C=C, n_boot=n_boot, ci=ci, seed=seed, margin=margin)
    frames = []
    for a in contrasts:
        for b in contrasts:
            r = heldout(a, cv_folds=cv_folds, **kw) if a is b else transfer(a, b, **kw)
            lay = r.layers.rename(columns={"value": "auroc"}).assign(reader="layer")
            lay = lay.drop(columns=["score", "baseline"])
            base = r.baselines.rename(columns={"feature": "reader"})
            frames.append(
                pd.concat([lay, base], ignore_index=True).assign(train=a.name, test=b.name)
            )
    out = pd.concat(frames, ignore_index=True)
    front = ["train", "test", "reader", "layer", "auroc", "ci_low", "ci_high", "acc", "acc_low",
             "acc_high"]  # fmt: skip
    return out[front + [c for c in out.columns if c not in front]]
