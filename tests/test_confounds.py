from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

import liref_lens.confounds as confounds_module
from liref_lens import LensModel, cache_activations, load_model
from liref_lens.confounds import (
    against_baselines,
    auroc_table,
    bag_of_tokens_auroc,
    baseline_oof,
    confound_baselines,
    layer_cv_auroc,
    layer_oof,
    length_auroc,
    oof_auroc,
)
from liref_lens.verdicts import paired_verdicts


@pytest.fixture(scope="module")
def tiny(model_dirs: dict[str, Path]) -> LensModel:
    return load_model(str(model_dirs["llama"]), device="cpu")


def _random_ids(rng: np.random.Generator, n: int, vocab: int, lo: int, hi: int, bias: int):
    out = []
    for _ in range(n):
        ids = rng.integers(0, vocab, rng.integers(lo, hi)).tolist()
        if rng.random() < 0.5:
            ids.append(bias)  # the class marker, present in about half of the rows
        out.append(ids)
    return out


def test_docstring_examples_run(tiny: LensModel) -> None:
    result = doctest.testmod(confounds_module, extraglobs={"lm": tiny})
    assert result.attempted > 5 and result.failed == 0


@pytest.mark.parametrize("seed", range(3))
def test_length_auroc_matches_sklearn_on_lengths(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pos = [[0] * int(k) for k in rng.integers(3, 12, 30)]  # ties across classes
    neg = [[0] * int(k) for k in rng.integers(1, 9, 25)]
    y = np.r_[np.ones(30), np.zeros(25)]
    lengths = np.r_[[len(x) for x in pos], [len(x) for x in neg]]
    expected = roc_auc_score(y, lengths)
    assert expected > 0.5
    assert length_auroc(pos, neg, n_boot=0)[0] == pytest.approx(expected, abs=1e-12)
    # oriented: swapping the classes gives the same (better-side) AUROC
    assert length_auroc(neg, pos, n_boot=0)[0] == pytest.approx(expected, abs=1e-12)
    value, lo, hi = length_auroc(pos, neg, n_boot=200, seed=seed)
    assert lo <= value <= hi


@pytest.mark.parametrize("seed", range(3))
def test_bag_of_tokens_matches_dense_sklearn_pipeline(seed: int) -> None:
    rng = np.random.default_rng(seed)
    vocab = 30
    pos = _random_ids(rng, 40, vocab, 3, 9, bias=7)
    neg = _random_ids(rng, 35, vocab, 3, 9, bias=11)
    x = np.zeros((75, vocab))
    for i, ids in enumerate([*pos, *neg]):
        for t in ids:
            x[i, t] += 1
    y = np.r_[np.ones(40, int), np.zeros(35, int)]
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    oof = cross_val_predict(
        LogisticRegression(C=0.5, max_iter=2000), x, y, cv=cv, method="decision_function"
    )
    got = bag_of_tokens_auroc(pos, neg, vocab, C=0.5, n_boot=0, seed=seed)[0]
    assert got == pytest.approx(roc_auc_score(y, oof), abs=1e-9)
    assert 0.55 < got < 1.0  # the markers make it informative, not perfect


def test_bag_of_tokens_is_chance_without_a_signal() -> None:
    rng = np.random.default_rng(0)
    ids = [rng.integers(0, 20, 6).tolist() for _ in range(200)]
    value, lo, hi = bag_of_tokens_auroc(ids[:100], ids[100:], 20, n_boot=300)
    assert lo < 0.5 < hi and abs(value - 0.5) < 0.12


def test_confound_baselines_use_the_models_tokens(tiny: LensModel) -> None:
    pos = [f"Q: w{i} + w{i + 1} = ? A:" for i in range(10)]
    neg = [f"w{i} w{i + 2}" for i in range(10)]
    df = confound_baselines(tiny, pos, neg, n_boot=50)
    assert list(df.columns) == ["feature", "auroc", "ci_low", "ci_high"]
    lengths = [len(x) for x in tiny.encode(pos + neg)]
    expected = roc_auc_score(np.r_[np.ones(10), np.zeros(10)], lengths)
    got = df.set_index("feature")["auroc"]
    assert got["length"] == pytest.approx(max(expected, 1 - expected))
    assert got["bag_of_tokens"] == pytest.approx(1.0)  # "Q:" only in pos


def test_layer_cv_auroc_matches_a_numpy_reimplementation(tiny: LensModel) -> None:
    pos_p = [f"Q: w{i} + w{i % 7} = ? A:" for i in range(12)]
    neg_p = [f"w{i} w{(i * 3) % 11} w9" for i in range(12)]
    pos = cache_activations(tiny, pos_p, layers=[1, 2], progress=False)
    neg = cache_activations(tiny, neg_p, layers=[1, 2], progress=False)
    df = layer_cv_auroc(pos, neg, cv_folds=4, seed=2, n_boot=100, progress=False)
    y = np.r_[np.ones(12, int), np.zeros(12, int)]
    for layer in (1, 2):
        x = np.concatenate([pos.at_layer(layer).double().numpy(), neg.at_layer(layer).double()])
        oof = np.zeros(24)
        for tr, te in StratifiedKFold(4, shuffle=True, random_state=2).split(x, y):
            d = x[tr][y[tr] == 1].mean(0) - x[tr][y[tr] == 0].mean(0)
            oof[te] = x[te] @ d
        row = df[df.layer == layer].iloc[0]
        assert row["value"] == pytest.approx(roc_auc_score(y, oof), abs=1e-12)
        assert row["ci_low"] <= row["value"] <= row["ci_high"]


def test_oof_frames_give_the_tables_and_the_paired_verdict(tiny: LensModel) -> None:
    pos_p = [f"Q: w{i} + w{i % 7} = ? A:" for i in range(12)]
    neg_p = [f"w{i} w{(i * 3) % 11} w9" for i in range(12)]
    pos = cache_activations(tiny, pos_p, layers=[1, 2], progress=False)
    neg = cache_activations(tiny, neg_p, layers=[1, 2], progress=False)
    lay = layer_oof(pos, neg, cv_folds=4, seed=2, progress=False)
    base = baseline_oof(tiny.encode(pos_p), tiny.encode(neg_p), tiny.cfg.d_vocab, cv_folds=4,
                        seed=2)  # fmt: skip
    # the frames are the scores behind the old tables, same folds, same resamples
    pd.testing.assert_frame_equal(
        auroc_table(lay, n_boot=80, seed=2),
        layer_cv_auroc(pos, neg, cv_folds=4, seed=2, n_boot=80, progress=False),
    )
    pd.testing.assert_frame_equal(
        auroc_table(base, n_boot=80, seed=2),
        confound_baselines(tiny, pos_p, neg_p, cv_folds=4, seed=2, n_boot=80),
    )
    table = against_baselines(lay, base, n_boot=300, seed=2)
    assert list(table.columns) == [
        "layer", "score", "value", "ci_low", "ci_high", "baseline", "baseline_auroc", "diff",
        "diff_low", "diff_high", "beats_baseline",
    ]  # fmt: skip
    verdicts = paired_verdicts(lay, base, n_boot=300, seed=2)
    best = verdicts[verdicts["baseline"] == "best"].set_index("layer")
    for row in table.itertuples():
        assert row.diff == pytest.approx(row.value - row.baseline_auroc, abs=1e-12)
        assert row.diff_low == best.loc[row.layer, "diff_low"]
        assert row.beats_baseline == (row.diff_low > 0)
    bt = auroc_table(base, n_boot=0).set_index("feature")["auroc"]
    assert set(table["baseline"]) == {bt.idxmax()} and set(table["baseline_auroc"]) == {bt.max()}


def test_oof_thresholds_are_the_training_folds_class_midpoints() -> None:
    rng = np.random.default_rng(5)
    pos = [[1] * int(k) for k in rng.integers(4, 12, 20)]
    neg = [[2] * int(k) for k in rng.integers(1, 8, 20)]
    df = baseline_oof(pos, neg, vocab=3, cv_folds=4, seed=1)
    length = df[df["feature"] == "length"].sort_values("row")
    y = np.r_[np.ones(20, int), np.zeros(20, int)]
    lengths = np.array([len(x) for x in pos + neg], float)
    for k, (tr, te) in enumerate(StratifiedKFold(4, shuffle=True, random_state=1).split(y, y)):
        cut = (lengths[tr][y[tr] == 1].mean() + lengths[tr][y[tr] == 0].mean()) / 2
        assert (length["fold"].to_numpy()[te] == k).all()
        assert np.allclose(length["threshold"].to_numpy()[te], cut)
    assert np.array_equal(length["score"].to_numpy(), lengths)  # longer is positive here


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="rows per class"):
        bag_of_tokens_auroc([[1], [2]], [[3], [4]], 5, cv_folds=5)
    with pytest.raises(ValueError, match="0..4"):
        bag_of_tokens_auroc([[9]] * 5, [[1]] * 5, 5)
    with pytest.raises(ValueError, match="NaN"):
        oof_auroc([1.0, float("nan")], [0.0])
    with pytest.raises(ValueError, match="cv_folds"):
        bag_of_tokens_auroc([[1]] * 5, [[2]] * 5, 5, cv_folds=1)
