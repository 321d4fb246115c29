"""Matched sampling: equal histograms per bin, seeded draws, the overlap reported, and a clear
error when the classes do not overlap."""

from __future__ import annotations

import doctest
import warnings

import numpy as np
import pandas as pd
import pytest
from tests._designs_data import contrast

import liref_lens.designs.matching as matching_module
from liref_lens.designs import match_classes, matched


def _lengths(seed: int = 0, n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(10, 41, n), rng.integers(5, 31, n)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(matching_module).failed == 0


def test_exact_matching_gives_equal_histograms_and_keeps_the_smaller_count_per_value() -> None:
    pos, neg = _lengths()
    m = match_classes(pos, neg, min_items=10)
    assert np.array_equal(np.bincount(pos[m.pos], minlength=41),
                          np.bincount(neg[m.neg], minlength=41))  # fmt: skip
    vp, vn = pd.Series(pos).value_counts(), pd.Series(neg).value_counts()
    want = vp.reindex(range(5, 41), fill_value=0).combine(
        vn.reindex(range(5, 41), fill_value=0), min
    )
    assert len(m.pos) == len(m.neg) == want.sum()
    assert m.bins.set_index("bin")["kept"].reindex(range(5, 41), fill_value=0).equals(want)
    assert len(set(m.pos.tolist())) == len(m.pos)  # no item drawn twice


def test_quantile_bins_and_categories_are_matched_exactly_per_bin() -> None:
    pos, neg = _lengths(1)
    m = match_classes(pos, neg, bins=4, min_items=10)
    edges = np.unique(np.quantile(np.r_[pos, neg].astype(float), np.linspace(0, 1, 5)))
    hp = np.histogram(pos[m.pos], edges)[0]
    hn = np.histogram(neg[m.neg], edges)[0]
    assert np.array_equal(hp, hn) and len(m.bins) == 4
    src_p = np.array(["a"] * 30 + ["b"] * 10 + ["c"] * 5)
    src_n = np.array(["a"] * 8 + ["b"] * 25 + ["d"] * 9)
    mc = match_classes(src_p, src_n, on="source", min_items=5, warn_share=0.3)
    kept = pd.Series(src_p[mc.pos]).value_counts().to_dict()
    assert kept == pd.Series(src_n[mc.neg]).value_counts().to_dict() == {"a": 8, "b": 10}


def test_seeded_draws_are_reproducible() -> None:
    pos, neg = _lengths(2)
    kw = dict(warn_share=0.3)
    a, b = match_classes(pos, neg, seed=5, **kw), match_classes(pos, neg, seed=5, **kw)
    assert np.array_equal(a.pos, b.pos) and np.array_equal(a.neg, b.neg)
    c = match_classes(pos, neg, seed=6, **kw)
    assert not (np.array_equal(a.pos, c.pos) and np.array_equal(a.neg, c.neg))
    assert len(a.pos) == len(c.pos)  # the counts do not depend on the seed


def test_overlap_is_reported_before_and_after() -> None:
    pos, neg = _lengths(3)
    m = match_classes(pos, neg, warn_share=0.3)
    o = m.overlap.set_index("stage")
    values = sorted(set(pos) | set(neg))
    fp = pd.Series(pos).value_counts(normalize=True).reindex(values, fill_value=0)
    fn = pd.Series(neg).value_counts(normalize=True).reindex(values, fill_value=0)
    assert o.loc["before", "tv_distance"] == pytest.approx((fp - fn).abs().sum() / 2)
    assert o.loc["after", "tv_distance"] == 0.0 and o.loc["after", "wasserstein"] == 0.0
    assert o.loc["after", "nuisance_auroc"] == 0.5 and o.loc["before", "nuisance_auroc"] > 0.7
    assert o.loc["before", "n_pos"] == 120 and o.loc["after", "n_pos"] == len(m.pos)
    assert o.loc["after", "share_kept"] == pytest.approx(len(m.pos) / 120)


def test_no_overlap_is_an_error_naming_the_survivors_and_little_overlap_warns() -> None:
    with pytest.raises(ValueError, match="keeps 0 items per class.*positive 40-50, negative 5-20"):
        match_classes(np.arange(40, 51), np.arange(5, 21))
    with pytest.raises(ValueError, match="keeps 3 items per class, fewer than min_items=10"):
        match_classes(np.r_[np.arange(40, 70), [7, 8, 9]], np.arange(0, 30))
    with pytest.warns(UserWarning, match="keeps 12 of 40 items per class"):
        match_classes(np.r_[np.arange(100, 128), np.arange(12)], np.arange(0, 40))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        match_classes(np.arange(30), np.arange(30))  # full overlap: no warning
    with pytest.raises(ValueError, match="NaN"):
        match_classes([1.0, float("nan")], [1.0, 2.0])


def test_matched_design_on_a_contrast_has_a_chance_level_length_reader() -> None:
    rng = np.random.default_rng(4)
    pos_len, neg_len = _lengths(4, n=100)
    lengths = np.r_[pos_len, neg_len]
    x = rng.normal(0, 1, (200, 2, 8))
    x[:, 0, 0] += lengths / 3.0  # a layer that reads the length
    c = contrast("len", x, lengths, 100)
    r = matched(c, n_boot=300, warn_share=0.3)
    base = r.baselines.set_index("feature")
    assert base.loc["length", "auroc"] == 0.5
    assert r.n_pos == r.n_neg == len(r.info["kept"]) // 2
    lay0 = r.layers.set_index("layer").loc[0]
    assert lay0["ci_low"] < 0.5 < lay0["ci_high"] and not bool(lay0["beats_baseline"])
    kept = r.info["kept"]
    assert np.array_equal(np.sort(pos_len[kept[kept.label == 1]["item"]]),
                          np.sort(neg_len[kept[kept.label == 0]["item"]]))  # fmt: skip
    assert r.design == "matched on token_length"
    with pytest.raises(ValueError, match="no item column 'source'"):
        matched(c, on="source")
