"""Residualisation: a length-only signal vanishes, an orthogonal one survives, and every
fold's nuisance fit uses its training rows only (checked against a by-hand computation)."""

from __future__ import annotations

import doctest
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.model_selection import StratifiedKFold
from tests._designs_data import contrast

import liref_lens.designs.residualize as residualize_module
from liref_lens.designs import heldout, nuisance_matrix, residualized, residualizer


def _world(seed: int = 0, n: int = 150, d: int = 12):
    """Layer 0 encodes the length only (the classes differ in length); layer 1 encodes the
    label along an orthogonal direction, strongly."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    lengths = np.where(y == 1, rng.integers(20, 61, 2 * n), rng.integers(10, 51, 2 * n))
    x = rng.normal(0, 1, (2 * n, 2, d))
    x[:, 0, 0] += (lengths - 35) / 2.0  # length-only
    x[:, 1, 1] += 6.0 * y  # the label, orthogonal to the length direction
    return contrast("world", x, lengths, n, seed=seed, vocab=40), x, lengths, y


def test_docstring_examples_run(model_dirs) -> None:
    from liref_lens import load_model

    lm = load_model(str(model_dirs["llama"]), device="cpu")
    prompts = ["Q: 2 + 3 = ? A:", "w1 w2 w3", "Q: w5 + w6 = ? A:", "w9 w9 w10"]
    result = doctest.testmod(residualize_module, extraglobs={"lm": lm, "prompts": prompts})
    assert result.attempted >= 4 and result.failed == 0


@pytest.mark.parametrize("method", ["lstsq", "leace"])
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_length_signal_vanishes_and_the_orthogonal_one_stays(method: str) -> None:
    c, *_ = _world()
    before = heldout(c, n_boot=500).layers.set_index("layer")
    after = residualized(c, ["token_length"], method=method, n_boot=500)
    lay = after.layers.set_index("layer")
    assert before.loc[0, "value"] > 0.7  # length separates the classes...
    assert lay.loc[0, "ci_low"] < 0.5 < lay.loc[0, "ci_high"]  # ...and is gone
    assert abs(lay.loc[0, "value"] - 0.5) < 0.08
    base = after.baselines.set_index("feature")
    assert base.loc["length", "auroc"] == 0.5  # the length reader reads 0 everywhere
    assert base.loc["bag_of_tokens", "ci_low"] < 0.5 + 0.1
    assert not bool(lay.loc[0, "beats_baseline"])
    assert after.design == f"residualized on token_length ({method})"
    assert before.loc[1, "value"] > 0.99
    if method == "lstsq":  # the label beyond what length predicts stays
        assert lay.loc[1, "value"] > 0.98 and bool(lay.loc[1, "beats_baseline"])
    else:  # LEACE erases every direction that co-varies with length, label included
        lstsq = residualized(c, ["token_length"], n_boot=0).layers.set_index("layer")
        assert lay.loc[1, "value"] < lstsq.loc[1, "value"] - 0.1


@pytest.mark.parametrize("method", ["lstsq", "leace"])
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_a_signal_that_does_not_covary_with_the_nuisance_is_intact(method: str) -> None:
    rng = np.random.default_rng(1)
    n = 150
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    lengths = rng.integers(10, 61, 2 * n)  # the same distribution in both classes
    x = rng.normal(0, 1, (2 * n, 1, 12))
    x[:, 0, 0] += (lengths - 35) / 2.0  # the layer also reads the length, strongly
    x[:, 0, 1] += 1.5 * y
    c = contrast("indep", x, lengths, n)
    clean = x.copy()
    clean[:, 0, 0] -= (lengths - 35) / 2.0  # the same items had the layer not read the length
    oracle = heldout(contrast("clean", clean, lengths, n), n_boot=0).layers["value"].iloc[0]
    before = heldout(c, n_boot=0).layers["value"].iloc[0]
    after = residualized(c, ["token_length"], method=method, n_boot=0).layers["value"].iloc[0]
    assert oracle > 0.8 and abs(after - oracle) < 0.03
    assert before < oracle - 0.1  # the length was noise in the direction; now it is gone


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_fold_wise_leace_equals_the_package_fitted_per_fold_by_hand() -> None:
    from concept_erasure import LeaceEraser

    c, x, lengths, y = _world(seed=4, n=40)
    got = residualized(c, ["token_length"], method="leace", cv_folds=4, seed=1, n_boot=0).scores
    x64 = torch.from_numpy(x.astype(np.float32).astype(np.float64))
    z = torch.from_numpy(lengths.astype(np.float64))[:, None]
    want = np.empty(len(y))
    for tr, te in StratifiedKFold(4, shuffle=True, random_state=1).split(y, y):
        eraser = LeaceEraser.fit(x64[tr, 1], z[tr])
        r_tr, r_te = ((eraser(x64[rows, 1]) - eraser.bias).numpy() for rows in (tr, te))
        want[te] = r_te @ (r_tr[y[tr] == 1].mean(0) - r_tr[y[tr] == 0].mean(0))
    s = got[got["layer"] == 1].sort_values("row")["score"].to_numpy()
    assert np.allclose(s, want, rtol=1e-9, atol=1e-9)


def test_categorical_nuisance_is_one_hot_and_removes_a_source_offset() -> None:
    rng = np.random.default_rng(7)
    n = 80
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    source = np.where(rng.random(2 * n) < np.where(y == 1, 0.8, 0.2), "a", "b")
    x = rng.normal(0, 1, (2 * n, 1, 6))
    x[:, 0, 2] += 3.0 * (source == "a")  # the layer reads the source, not the label
    meta = pd.DataFrame({"source": source})
    c = contrast("src", x, rng.integers(5, 9, 2 * n), n, meta=meta)
    assert nuisance_matrix(c.meta, ["source"]).sum(1).tolist() == [1.0] * (2 * n)
    assert heldout(c, n_boot=0).layers["value"].iloc[0] > 0.75
    after = residualized(c, ["source"], n_boot=400).layers.iloc[0]
    assert after["ci_low"] < 0.5 < after["ci_high"]


def test_a_nuisance_that_separates_the_classes_alone_warns() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (40, 1, 4))
    lengths = np.r_[rng.integers(30, 60, 20), rng.integers(5, 20, 20)]
    c = contrast("apart", x, lengths, 20)
    with pytest.warns(UserWarning, match="token_length alone separates the classes \\(AUROC"):
        residualized(c, ["token_length"], n_boot=0)


def test_leace_without_the_package_names_the_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "concept_erasure", None)
    with pytest.raises(ImportError, match="pip install concept-erasure"):
        residualizer(np.zeros((4, 1)), "leace")
    # the least-squares path needs nothing more
    residualizer(np.zeros((4, 1)), "lstsq")


def test_bad_input_is_named() -> None:
    c, *_ = _world(n=10)
    with pytest.raises(ValueError, match="no item columns \\['source'\\]"):
        residualized(c, ["source"])
    with pytest.raises(ValueError, match="unknown method"):
        residualizer(np.zeros((4, 1)), "pca")
    with pytest.raises(ValueError, match="at least one"):
        nuisance_matrix(c.meta, [])
