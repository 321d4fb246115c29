"""Paired verdicts (issue 21 item 6): a layer beats a baseline only when the bootstrap interval
of the AUROC *difference*, both scored on the same resampled rows, lies above 0."""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

import liref_lens.verdicts as verdicts_module
from liref_lens.confounds import against_baselines, oof_auroc
from liref_lens.verdicts import (
    paired_auroc_difference,
    paired_verdicts,
    stratified_resamples,
)


def _oof(key: str, name, scores: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({key: name, "row": np.arange(len(labels)), "label": labels,
                         "fold": 0, "score": scores, "threshold": 0.0})  # fmt: skip


def _labels(n_pos: int, n_neg: int) -> np.ndarray:
    return np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]


def test_docstring_examples_run() -> None:
    assert doctest.testmod(verdicts_module).failed == 0


def test_two_perfect_readers_never_beat_each_other() -> None:
    y = _labels(30, 30)
    layer = _oof("layer", 7, np.r_[np.linspace(2, 3, 30), np.linspace(0, 1, 30)], y)
    base = _oof("feature", "length", np.r_[np.arange(30) + 100.0, np.arange(30)], y)
    out = paired_verdicts(layer, base, n_boot=500)
    assert out["auroc"].tolist() == [1.0, 1.0] and out["baseline_auroc"].tolist() == [1.0, 1.0]
    assert out[["diff", "diff_low", "diff_high"]].to_numpy().tolist() == [[0.0] * 3] * 2
    assert not out["beats"].any()
    table = against_baselines(layer, base, n_boot=500)
    assert not table["beats_baseline"].any() and table["diff"].tolist() == [0.0]


def test_a_perfect_layer_does_not_beat_a_baseline_at_0998_on_the_same_rows() -> None:
    # 20 x 25 pairs, one misordered pair for the baseline: AUROC 1 - 1/500 = 0.998
    y = _labels(20, 25)
    layer_scores = np.r_[np.arange(20) + 100.0, np.arange(25)]
    base_scores = layer_scores.copy()
    base_scores[0] = 23.5  # the first positive now ranks below one negative (24)
    layer, base = _oof("layer", 3, layer_scores, y), _oof("feature", "bag", base_scores, y)
    lay_auroc = oof_auroc(layer_scores[:20], layer_scores[20:], n_boot=500)
    base_auroc = roc_auc_score(y, base_scores)
    assert base_auroc == pytest.approx(0.998) and lay_auroc == (1.0, 1.0, 1.0)
    # the old rule (the layer's lower bound above the baseline's point AUROC) said "beats"
    assert lay_auroc[1] > base_auroc
    table = against_baselines(layer, base, n_boot=2000)
    assert not bool(table["beats_baseline"].iloc[0])
    assert table["diff"].iloc[0] == pytest.approx(0.002) and table["diff_low"].iloc[0] == 0.0


def test_a_clearly_better_layer_on_enough_rows_beats_every_baseline() -> None:
    rng = np.random.default_rng(0)
    y = _labels(120, 120)
    layer = _oof("layer", 5, y + rng.normal(0, 0.3, 240), y)
    noisy = [("length", 1.5), ("bag_of_tokens", 2.0)]
    base = pd.concat([_oof("feature", f, y + rng.normal(0, sd, 240), y) for f, sd in noisy])
    out = paired_verdicts(layer, base, n_boot=1000).set_index("baseline")
    assert out["beats"].all() and (out["diff_low"] > 0.1).all()
    # the best baseline is the better one in every resample: its difference is the smallest
    assert out.loc["best", "diff_low"] <= out.loc[["length", "bag_of_tokens"], "diff_low"].min()
    assert out.loc["best", "baseline_auroc"] == out.loc["length", "baseline_auroc"]


@pytest.mark.parametrize("seed", range(3))
def test_difference_interval_equals_a_float64_recomputation_by_hand(seed: int) -> None:
    rng = np.random.default_rng(seed + 10)
    n_pos, n_neg, n_boot = 17, 23, 300
    y = _labels(n_pos, n_neg)
    a = y * 1.0 + rng.normal(0, 1, 40)
    b = np.round(y * 0.5 + rng.normal(0, 1, 40), 1)  # ties inside and across classes
    got = paired_auroc_difference(a[:n_pos], a[n_pos:], b[:n_pos], b[n_pos:], n_boot=n_boot,
                                  seed=seed)  # fmt: skip
    # by hand: the same indices (positives first, then negatives, from default_rng(seed)),
    # each replicate scored by scikit-learn in float64
    r = np.random.default_rng(seed)
    ip, ineg = r.integers(0, n_pos, (n_boot, n_pos)), r.integers(0, n_neg, (n_boot, n_neg))
    yy = _labels(n_pos, n_neg)
    diffs = []
    for k in range(n_boot):
        rows = np.r_[ip[k], n_pos + ineg[k]]
        diffs.append(roc_auc_score(yy, a[rows]) - roc_auc_score(yy, b[rows]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    assert got[0] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12)
    assert got[1] == pytest.approx(lo, abs=1e-12) and got[2] == pytest.approx(hi, abs=1e-12)
    assert np.array_equal(stratified_resamples(n_pos, n_neg, n_boot, seed)[0], ip)
    # the frame version gives the same numbers
    frame = paired_verdicts(_oof("layer", 1, a, y), _oof("feature", "x", b, y), n_boot=n_boot,
                            seed=seed).iloc[0]  # fmt: skip
    assert (frame["diff"], frame["diff_low"], frame["diff_high"]) == pytest.approx(got, abs=1e-12)

    # and scipy.stats.bootstrap, given the two classes as two samples, draws the same rows
    def diff(i: np.ndarray, j: np.ndarray) -> float:
        rows = np.r_[i, n_pos + j]
        return roc_auc_score(yy, a[rows]) - roc_auc_score(yy, b[rows])

    res = stats.bootstrap(
        (np.arange(n_pos), np.arange(n_neg)), diff, n_resamples=n_boot, vectorized=False,
        method="percentile", rng=np.random.default_rng(seed),
    )  # fmt: skip
    assert res.confidence_interval.low == pytest.approx(got[1], abs=1e-12)
    assert res.confidence_interval.high == pytest.approx(got[2], abs=1e-12)


def test_same_resamples_as_the_readers_own_intervals() -> None:
    rng = np.random.default_rng(3)
    y = _labels(15, 15)
    s = y + rng.normal(0, 1, 30)
    v = paired_verdicts(_oof("layer", 0, s, y), _oof("feature", "zero", np.zeros(30), y),
                        n_boot=400, seed=4)  # fmt: skip
    # against a constant reader (AUROC 0.5 on every resample) the difference interval is
    # the reader's own interval minus 0.5
    _, lo, hi = oof_auroc(s[:15], s[15:], n_boot=400, seed=4)
    assert v["diff_low"].iloc[0] == pytest.approx(lo - 0.5, abs=1e-12)
    assert v["diff_high"].iloc[0] == pytest.approx(hi - 0.5, abs=1e-12)


def test_bad_input_is_named() -> None:
    y = _labels(5, 5)
    lay, base = _oof("layer", 1, np.arange(10.0), y), _oof("feature", "f", np.arange(10.0), y)
    with pytest.raises(ValueError, match="different rows"):
        paired_verdicts(lay, base.assign(label=1 - y))
    with pytest.raises(ValueError, match="not AUROCs"):
        against_baselines(pd.DataFrame({"layer": [1], "value": [0.9]}), base)
    with pytest.raises(ValueError, match="same rows"):
        paired_auroc_difference([1.0, 2.0], [0.0], [1.0], [0.0])
    with pytest.raises(ValueError, match="needs columns"):
        paired_verdicts(lay.drop(columns="score"), base)
