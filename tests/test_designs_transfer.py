"""Transfer: a transfer score equals fitting on A with `fit_directions` and scoring B by hand;
the trivial readers are fitted on A too; the matrix's diagonal is the held-out design."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from tests._designs_data import contrast

from liref_lens import fit_directions
from liref_lens.designs import heldout, transfer, transfer_matrix


def _pair(seed: int = 0, n: int = 60, d: int = 10):
    """A and B share a label direction; B sits at another offset along it (so the AUROC
    transfers and a cut chosen on A does not) and its lengths carry no label."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    xa = rng.normal(0, 1, (2 * n, 2, d))
    xa[:, :, 0] += 2.0 * y[:, None]
    xb = rng.normal(0, 1, (2 * n, 2, d))
    xb[:, :, 0] += 2.0 * y[:, None] + 3.0
    la = np.where(y == 1, rng.integers(20, 40, 2 * n), rng.integers(5, 25, 2 * n))
    lb = rng.integers(5, 40, 2 * n)
    return contrast("A", xa, la, n, seed=1), contrast("B", xb, lb, n, seed=2), y


def _balanced(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred[y == 1].mean() + (~pred[y == 0]).mean()) / 2)


def test_transfer_equals_fit_on_a_and_scoring_b_by_hand() -> None:
    a, b, y = _pair()
    r = transfer(a, b, n_boot=300)
    ds = fit_directions(a.pos, a.neg)
    lay = r.layers.set_index("layer")
    for i, layer in enumerate(ds.layers):
        unit = (ds.vectors[i] / ds.vectors[i].norm()).double()
        xa = torch.cat([a.pos.at_layer(layer), a.neg.at_layer(layer)]).double() @ unit
        xb = torch.cat([b.pos.at_layer(layer), b.neg.at_layer(layer)]).double() @ unit
        cut = (xa[:60].mean() + xa[60:].mean()) / 2  # chosen on A
        assert lay.loc[layer, "value"] == pytest.approx(roc_auc_score(y, xb.numpy()), abs=1e-12)
        assert lay.loc[layer, "acc"] == pytest.approx(_balanced((xb > cut).numpy(), y))
        assert lay.loc[layer, "ci_low"] <= lay.loc[layer, "value"] <= lay.loc[layer, "ci_high"]
    assert (lay["value"] > 0.85).all() and (lay["acc"] < 0.65).all()  # ranks, wrong offset


def test_trivial_readers_are_fitted_on_a_and_scored_on_b_by_hand() -> None:
    a, b, y = _pair(1)
    base = transfer(a, b, n_boot=0).baselines.set_index("feature")
    la = np.array([len(t) for t in a.ids], float)
    lb = np.array([len(t) for t in b.ids], float)
    sign = 1.0 if roc_auc_score(y, la) >= 0.5 else -1.0  # oriented on A
    assert base.loc["length", "auroc"] == pytest.approx(roc_auc_score(y, sign * lb))
    cut = (sign * la[y == 1].mean() + sign * la[y == 0].mean()) / 2
    assert base.loc["length", "acc"] == pytest.approx(_balanced(sign * lb > cut, y))

    def dense(ids) -> np.ndarray:
        out = np.zeros((len(ids), a.vocab))
        for i, row in enumerate(ids):
            np.add.at(out[i], list(row), 1.0)
        return out

    clf = LogisticRegression(C=1.0, max_iter=2000).fit(dense(a.ids), y)
    want = roc_auc_score(y, clf.decision_function(dense(b.ids)))
    assert base.loc["bag_of_tokens", "auroc"] == pytest.approx(want, abs=1e-6)
    assert abs(base.loc["length", "auroc"] - 0.5) < 0.15  # B's lengths carry no label


def test_matrix_is_heldout_on_the_diagonal_and_transfer_off_it() -> None:
    a, b, _ = _pair(2, n=30)
    m = transfer_matrix([a, b], cv_folds=3, n_boot=100, seed=1)
    assert set(m["reader"]) == {"layer", "length", "bag_of_tokens"}
    cells = {
        ("A", "A"): heldout(a, cv_folds=3, n_boot=100, seed=1),
        ("A", "B"): transfer(a, b, n_boot=100, seed=1),
        ("B", "A"): transfer(b, a, n_boot=100, seed=1),
    }
    for (tr, te), r in cells.items():
        got = m[(m["train"] == tr) & (m["test"] == te)]
        lay = got[got["reader"] == "layer"].set_index("layer")
        want = r.layers.set_index("layer")
        for col_m, col_r in (
            ("auroc", "value"),
            ("ci_low", "ci_low"),
            ("acc", "acc"),
            ("diff_low", "diff_low"),
            ("beats_baseline", "beats_baseline"),
        ):
            assert lay[col_m].tolist() == want[col_r].tolist()  # fmt: skip
        bag = got[got["reader"] == "bag_of_tokens"]["auroc"].iloc[0]
        assert bag == r.baselines.set_index("feature").loc["bag_of_tokens", "auroc"]
    assert pd.isna(m[m["reader"] != "layer"]["layer"]).all()


def test_bad_input_is_named() -> None:
    a, b, _ = _pair(n=10)
    x = np.zeros((20, 1, 10)) + np.arange(20)[:, None, None]
    other = contrast("C", x, np.ones(20, int) * 3, 10, layers=(5,))
    with pytest.raises(ValueError, match="different layers"):
        transfer(a, other)
    with pytest.raises(ValueError, match="distinct"):
        transfer_matrix([a, a])
