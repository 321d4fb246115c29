from __future__ import annotations

import dataclasses
import doctest

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.model_selection import StratifiedKFold, cross_val_score

import liref_lens.neurons as neurons_module
from liref_lens import LensModel, NeuronShift, cache_activations, intervene
from liref_lens.neurons import (
    neuron_correlation,
    neuron_mean_difference,
    neuron_shift,
    neuron_table,
    probe_layers,
    random_neuron_shift,
    top_neurons,
)
from liref_lens.scores import default_probe

PROMPTS = [
    "w1 w2 w3 w4 w5",
    "Q: 2 + 3 = ? A:",
    "w9 w9 w10",
    "w3 w1",
    "Q: w5 w6 w7 w8 w9 w10 w11 ?",
    "Q: 7 + 1 = ? A:",
    "w4 w4 w4 w2",
    "Q: 9 + 9 = ? A:",
]
IS_POS = np.array([0, 1, 0, 0, 1, 1, 0, 1], bool)  # the arithmetic prompts


def test_docstring_examples_run() -> None:
    result = doctest.testmod(neurons_module)
    assert result.attempted > 10 and result.failed == 0


def _groups(seed: int = 0, n_pos: int = 30, n_neg: int = 25, layers: int = 3, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(n_pos, layers, d, generator=g) + torch.linspace(-1, 1, d)
    neg = torch.randn(n_neg, layers, d, generator=g)
    pos[:, :, 3] = 2.0  # a constant neuron across both groups
    neg[:, :, 3] = 2.0
    return pos, neg


def _np_corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson per column, NumPy's corrcoef (nan where a column is constant)."""
    out = np.full(x.shape[1], np.nan)
    for j in range(x.shape[1]):
        if np.ptp(x[:, j]) > 0:
            out[j] = np.corrcoef(x[:, j], y)[0, 1]
    return out


def test_statistics_match_numpy() -> None:
    pos, neg = _groups()
    p, n = pos.double().numpy(), neg.double().numpy()
    want_diff = p.mean(0) - n.mean(0)
    diff = neuron_mean_difference(pos, neg)
    assert diff.dtype == torch.float64 and diff.shape == (3, 16)
    np.testing.assert_allclose(diff.numpy(), want_diff, rtol=0, atol=1e-12)

    x, y = np.concatenate([p, n]), np.r_[np.ones(len(p)), np.zeros(len(n))]
    want_corr = np.stack([_np_corr(x[:, i], y) for i in range(3)])
    table = neuron_table(pos, neg)
    assert list(table.columns) == ["layer", "neuron", "mean_pos", "mean_neg", "mean_diff", "corr"]
    assert len(table) == 3 * 16 and table["layer"].tolist() == sorted([0, 1, 2] * 16)
    np.testing.assert_allclose(table["mean_diff"], want_diff.ravel(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(table["mean_pos"], p.mean(0).ravel(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(table["corr"], want_corr.ravel(), rtol=0, atol=1e-12)
    assert table["corr"].isna().sum() == 3  # the constant neuron, once per layer

    label = np.random.default_rng(1).normal(size=len(x))  # a continuous label
    got = neuron_correlation(torch.cat([pos, neg]), torch.tensor(label))
    want = np.stack([_np_corr(x[:, i], label) for i in range(3)])
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)


def test_table_from_model_activations(lm: LensModel) -> None:
    acts = cache_activations(lm, PROMPTS, layers=[0, 2], sites="mlp_post", progress=False)
    pos, neg = acts.subset(IS_POS), acts.subset(~IS_POS)
    table = neuron_table(pos, neg)
    assert sorted(set(table["layer"])) == [0, 2] and len(table) == 2 * lm.d_mlp
    x = acts.tensor.double().numpy()
    want = x[IS_POS].mean(0) - x[~IS_POS].mean(0)
    np.testing.assert_allclose(table["mean_diff"], want.ravel(), rtol=0, atol=1e-12)
    want_corr = np.stack([_np_corr(x[:, i], IS_POS.astype(float)) for i in range(2)])
    np.testing.assert_allclose(table["corr"], want_corr.ravel(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="layers"):
        neuron_table(pos, dataclasses.replace(neg, layers=(0, 1)))


def test_top_neurons_per_layer_and_global() -> None:
    pos, neg = _groups(seed=2)
    table = neuron_table(pos, neg)
    for by in ("mean_diff", "corr"):
        top = top_neurons(table, 4, by=by)
        assert top.groupby("layer").size().tolist() == [4, 4, 4]
        for layer, rows in top.groupby("layer"):
            values = table[table["layer"] == layer].set_index("neuron")[by].abs().fillna(-1)
            want = values.sort_values(ascending=False, kind="stable").index[:4].tolist()
            assert rows["neuron"].tolist() == want and rows["rank"].tolist() == [1, 2, 3, 4]
        top_all = top_neurons(table, 5, by=by, per_layer=False)
        keys = table[by].abs().fillna(-1).to_numpy()
        assert np.allclose(np.sort(top_all[by].abs())[::-1], np.sort(keys)[::-1][:5])
        assert top_all["rank"].tolist() == [1, 2, 3, 4, 5]
    assert 3 not in top_neurons(table, 15, by="corr")["neuron"].tolist()  # nan ranks last
    from_tensor = top_neurons(neuron_mean_difference(pos, neg), 2, layers=[4, 6, 8])
    assert sorted(set(from_tensor["layer"])) == [4, 6, 8]
    pd.testing.assert_series_equal(
        from_tensor["neuron"], top_neurons(table, 2)["neuron"], check_names=False
    )


def _mlp_post(lm: LensModel, layers: list[int]) -> torch.Tensor:
    acts = cache_activations(lm, PROMPTS, layers=layers, sites="mlp_post", progress=False)
    return acts.tensor.double()


def _f64(column: pd.Series) -> torch.Tensor:
    return torch.tensor(column.tolist(), dtype=torch.float64)


def test_neuron_shift_matches_the_formula(lm: LensModel) -> None:
    acts = cache_activations(lm, PROMPTS, sites="mlp_post", progress=False)
    table = neuron_table(acts.subset(IS_POS), acts.subset(~IS_POS))
    top = top_neurons(table, 3)
    alpha = -1.5
    op = neuron_shift(top, alpha=alpha)
    assert isinstance(op, NeuronShift) and sorted(op.shifts) == list(range(lm.n_layers))
    for layer in (lm.n_layers - 1,):  # a later layer alone (layer 0 below, with the whole op)
        rows = top[top["layer"] == layer]
        single = NeuronShift(shifts={layer: op.shifts[layer]})
        base = _mlp_post(lm, [layer])[:, 0]
        with intervene(lm, single):
            got = _mlp_post(lm, [layer])[:, 0]
        want = base.clone()
        want[:, rows["neuron"].tolist()] += alpha * _f64(rows["mean_diff"])
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    base = _mlp_post(lm, [0])[:, 0]
    with intervene(lm, op, strict=False):  # all layers; caching stops after layer 0
        got = _mlp_post(lm, [0])[:, 0]
    delta = torch.zeros(lm.d_mlp, dtype=torch.float64)
    first = top[top["layer"] == 0]
    delta[first["neuron"].tolist()] = alpha * _f64(first["mean_diff"])
    torch.testing.assert_close(got, base + delta, atol=1e-5, rtol=0)


def test_random_baseline(lm: LensModel) -> None:
    pos, neg = _groups(layers=lm.n_layers, d=lm.d_mlp)
    op = neuron_shift(top_neurons(neuron_table(pos, neg), 5), alpha=2.0)
    ctl = random_neuron_shift(op, lm, generator=torch.Generator().manual_seed(3))
    assert ctl.layers == op.layers
    for layer, (idx, deltas) in op.shifts.items():
        c_idx, c_deltas = ctl.shifts[layer]
        assert len(c_idx) == len(idx) == len(set(c_idx))
        assert not set(c_idx) & set(idx)
        assert sorted(c_deltas) == sorted(deltas)
        assert sorted(abs(d) for d in c_deltas) == sorted(abs(d) for d in deltas)
        assert all(0 <= i < lm.d_mlp for i in c_idx)
    again = random_neuron_shift(op, lm.d_mlp, generator=torch.Generator().manual_seed(3))
    other = random_neuron_shift(op, lm.d_mlp, generator=torch.Generator().manual_seed(4))
    assert again.shifts == ctl.shifts and other.shifts != ctl.shifts
    assert random_neuron_shift(op, lm).shifts == random_neuron_shift(op, lm).shifts
    ctl.check(lm)  # a valid op on the model
    with pytest.raises(ValueError, match="neurons left"):
        random_neuron_shift(op, 6)


def test_probe_layers_matches_sklearn() -> None:
    pos, neg = _groups(seed=5, n_pos=20, n_neg=20, d=6)
    df = probe_layers(pos, neg, cv_folds=4, seed=7, progress=False)
    assert list(df.columns) == ["layer", "probe_acc"] and df["layer"].tolist() == [0, 1, 2]
    y = np.r_[np.ones(20, int), np.zeros(20, int)]
    cv = StratifiedKFold(4, shuffle=True, random_state=7)
    for i in range(3):
        x = torch.cat([pos[:, i], neg[:, i]]).double().numpy()
        want = cross_val_score(default_probe(), x, y, cv=cv).mean()
        assert df["probe_acc"].iloc[i] == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="folds"):
        probe_layers(pos[:3], neg, cv_folds=4, progress=False)


def test_input_errors() -> None:
    pos, neg = _groups()
    with pytest.raises(ValueError, match="layers or width"):
        neuron_mean_difference(pos, neg[:, :2])
    with pytest.raises(ValueError, match="label"):
        neuron_correlation(pos, [1.0] * len(pos))
    with pytest.raises(ValueError, match="label"):
        neuron_correlation(pos, [0.0, 1.0])
    with pytest.raises(KeyError, match="mean_diff"):
        neuron_shift(top_neurons(neuron_correlation(pos, np.arange(30.0)), 2, by="corr"))


def test_random_control_writes_where_the_shift_writes() -> None:
    from liref_lens import last, neuron_shift, random_neuron_shift

    top = pd.DataFrame(dict(layer=[1, 1], neuron=[3, 0], mean_diff=[0.5, -1.0]))
    op = neuron_shift(top, alpha=2.0, positions=last())
    assert op.shifts == {1: ((3, 0), (1.0, -2.0))} and str(op.positions) == "last()"
    ctl = random_neuron_shift(op, 8, generator=torch.Generator().manual_seed(1))
    assert str(ctl.positions) == "last()" and ctl.sites == op.sites and ctl.layers == op.layers
    assert not set(ctl.shifts[1][0]) & {3, 0} and sorted(ctl.shifts[1][1]) == [-2.0, 1.0]
