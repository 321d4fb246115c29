from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_score

import liref_lens.scores as scores_module
from liref_lens import LensModel, cache_activations
from liref_lens.directions import DirectionSet, fit_directions
from liref_lens.scores import (
    auroc,
    cohens_d,
    correlation,
    cosine_matrix,
    cosine_per_layer,
    default_probe,
    projection,
    separation,
)

COLUMNS = ["layer", "score", "value", "ci_low", "ci_high"]


def _data(seed: int = 0, n_pos: int = 60, n_neg: int = 50, d: int = 12, shift: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(n_pos, 3, d, generator=g) + shift
    neg = torch.randn(n_neg, 3, d, generator=g)
    return pos, neg


def test_docstring_examples_run() -> None:
    result = doctest.testmod(scores_module)
    assert result.attempted > 5 and result.failed == 0


@pytest.mark.parametrize("seed", range(4))
def test_auroc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 6, 40).astype(float)  # many ties, within and across classes
    neg = rng.integers(0, 5, 33).astype(float)
    y = np.r_[np.ones(40), np.zeros(33)]
    expected = roc_auc_score(y, np.r_[pos, neg])
    assert auroc(pos, neg) == pytest.approx(expected, abs=1e-12)
    assert auroc(neg, pos) == pytest.approx(1 - expected, abs=1e-12)
    cont = rng.standard_normal(50)
    assert auroc(cont[:20], cont[20:]) == pytest.approx(
        roc_auc_score(np.r_[np.ones(20), np.zeros(30)], cont), abs=1e-12
    )
    with pytest.raises(ValueError, match="NaN or inf"):
        auroc([1.0, float("nan")], [0.0])


def test_separation_scores_match_references() -> None:
    pos, neg = _data()
    ds = fit_directions(pos, neg)
    df = separation(pos, neg, ds, n_boot=50, seed=3, progress=False)
    assert list(df.columns) == COLUMNS and len(df) == 9
    assert sorted(set(df.score)) == ["auroc", "cohens_d", "probe_acc"]
    pp, pn = projection(pos, ds).numpy(), projection(neg, ds).numpy()
    x = torch.cat([pos, neg]).double().numpy()
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    for layer in ds.layers:
        got = df[df.layer == layer].set_index("score")
        assert got.loc["auroc", "value"] == pytest.approx(
            roc_auc_score(y, np.r_[pp[:, layer], pn[:, layer]]), abs=1e-12
        )
        a, b = pp[:, layer], pn[:, layer]
        pooled = np.sqrt(
            ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
        )
        assert got.loc["cohens_d", "value"] == pytest.approx((a.mean() - b.mean()) / pooled)
        cv = StratifiedKFold(5, shuffle=True, random_state=3)
        ref = cross_val_score(default_probe(), x[:, layer], y, cv=cv).mean()
        assert got.loc["probe_acc", "value"] == pytest.approx(ref, abs=1e-12)
        assert (got.ci_low <= got.value + 1e-12).all() and (got.value <= got.ci_high + 1e-12).all()
    # The intervals are percentiles of per-replicate scores, rows resampled within class.
    rng = np.random.default_rng(3)
    idx_p, idx_n = (
        rng.integers(0, len(pos), (50, len(pos))),
        rng.integers(0, len(neg), (50, len(neg))),
    )
    a, b = pp[:, 0], pn[:, 0]
    reps = [roc_auc_score(y, np.r_[a[i], b[j]]) for i, j in zip(idx_p, idx_n, strict=True)]
    got = df[(df.layer == 0) & (df.score == "auroc")]
    np.testing.assert_allclose(
        got[["ci_low", "ci_high"]].values[0], np.quantile(reps, [0.025, 0.975]), atol=1e-12
    )
    again = separation(pos, neg, ds, n_boot=50, seed=3, progress=False)
    assert again.equals(df)  # seeded
    other = separation(pos, neg, ds, scores=["auroc"], n_boot=50, seed=4, progress=False)
    assert other.ci_low.tolist() != df[df.score == "auroc"].ci_low.tolist()


def test_probe_accuracy_with_groups_matches_sklearn_and_prevents_leakage() -> None:
    # 40 groups of 5 near-duplicate rows; the label is a property of the group only, so a
    # probe can only "succeed" by recognising a group it has already seen in training.
    rng = np.random.default_rng(0)
    n_groups, size, d = 40, 5, 64
    identity = 3 * rng.standard_normal((n_groups, d))
    label = np.arange(n_groups) % 2
    gid = np.repeat(np.arange(n_groups), size)
    x = identity[gid] + 0.3 * rng.standard_normal((n_groups * size, d))
    y = label[gid]
    pos = torch.tensor(x[y == 1], dtype=torch.float32)[:, None]
    neg = torch.tensor(x[y == 0], dtype=torch.float32)[:, None]
    groups = np.r_[gid[y == 1], gid[y == 0]]
    ds = DirectionSet(torch.randn(1, d, dtype=torch.float64), layers=(0,))
    kw = dict(scores=["probe_acc"], n_boot=20, progress=False)
    grouped = separation(pos, neg, ds, groups=groups, **kw).value.item()
    mixed = separation(pos, neg, ds, **kw).value.item()
    xs = torch.cat([pos, neg])[:, 0].double().numpy()
    ys = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    ref = cross_val_score(default_probe(), xs, ys, groups=groups, cv=GroupKFold(5)).mean()
    assert grouped == pytest.approx(ref, abs=1e-12)
    assert mixed > 0.9 and abs(grouped - 0.5) < 0.2, (mixed, grouped)


def test_separation_errors() -> None:
    pos, neg = _data(n_pos=4, n_neg=4)
    ds = fit_directions(pos, neg)
    with pytest.raises(ValueError, match="needs >= 5 rows per class.*lower cv_folds"):
        separation(pos, neg, ds, progress=False)
    with pytest.raises(ValueError, match="unknown scores"):
        separation(pos, neg, ds, scores=["auc"], progress=False)
    with pytest.raises(ValueError, match="2 groups cannot fill 3 folds"):
        separation(pos, neg, ds, groups=[0, 1] * 4, cv_folds=3, progress=False)
    bad = pos.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        separation(bad, neg, ds, scores=["auroc"], progress=False)
    with pytest.raises(ValueError, match="width 12 but the directions have d_model 6"):
        projection(pos, DirectionSet(torch.ones(3, 6), layers=(0, 1, 2)))
    with pytest.raises(ValueError, match="layer 0 has zero norm"):
        projection(pos, DirectionSet(torch.zeros(3, 12), layers=(0, 1, 2)))


def test_cohens_d_and_constant_inputs() -> None:
    assert cohens_d([1.0, 1.0], [1.0, 1.0]) != cohens_d([1.0, 1.0], [1.0, 1.0])  # nan
    assert cohens_d([2.0, 2.0], [1.0, 1.0]) == float("inf")
    with pytest.raises(ValueError, match="at least 3 values"):
        cohens_d([1.0], [0.0])


def test_cosines_match_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    a = DirectionSet(torch.randn(3, 8, generator=g), layers=(0, 1, 2))
    b = DirectionSet(torch.randn(3, 8, generator=g), layers=(0, 1, 2))
    na = a.vectors.numpy() / np.linalg.norm(a.vectors.numpy(), axis=1, keepdims=True)
    nb = b.vectors.numpy() / np.linalg.norm(b.vectors.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(cosine_matrix(a, b).numpy(), na @ nb.T, atol=1e-12)
    np.testing.assert_allclose(cosine_matrix(a).numpy(), na @ na.T, atol=1e-12)
    np.testing.assert_allclose(cosine_per_layer(a, b).numpy(), (na * nb).sum(1), atol=1e-12)
    with pytest.raises(ValueError, match="select_layers"):
        cosine_per_layer(a, a.select_layers([2, 1]))
    with pytest.raises(ValueError, match="d_model 8 and 4"):
        cosine_matrix(a, DirectionSet(torch.ones(1, 4), layers=(0,)))
    from dataclasses import replace

    fa, fb = replace(a, model_fingerprint="aaaa"), replace(b, model_fingerprint="bbbb")
    with pytest.raises(ValueError, match="different models.*allow_transfer=True"):
        cosine_per_layer(fa, fb)
    assert cosine_per_layer(fa, fb, allow_transfer=True).shape == (3,)


def test_correlation_matches_scipy() -> None:
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(80, 3, 6, generator=g)
    ds = DirectionSet(torch.randn(3, 6, generator=g), layers=(0, 1, 2))
    proj = projection(acts, ds).numpy()
    label = np.round(proj[:, 1] + np.random.default_rng(0).standard_normal(80), 0)  # ties
    df = correlation(acts, ds, label, n_boot=40, seed=0)
    assert list(df.columns) == COLUMNS and len(df) == 6
    for layer in ds.layers:
        got = df[df.layer == layer].set_index("score")
        ref_p = stats.pearsonr(proj[:, layer], label).statistic
        ref_s = stats.spearmanr(proj[:, layer], label).statistic
        assert got.loc["pearson", "value"] == pytest.approx(ref_p, abs=1e-12)
        assert got.loc["spearman", "value"] == pytest.approx(ref_s, abs=1e-12)
        assert (got.ci_low <= got.value).all() and (got.value <= got.ci_high).all()
    assert df.set_index(["layer", "score"]).loc[(1, "pearson"), "ci_low"] > 0.3
    no_ci = correlation(acts, ds, label, n_boot=0)
    assert no_ci.value.tolist() == df.value.tolist() and no_ci.ci_low.isna().all()
    with pytest.raises(ValueError, match="0 < ci < 1"):
        correlation(acts, ds, label, ci=95)
    with pytest.raises(ValueError, match="got 5 labels for 80 rows"):
        correlation(acts, ds, label[:5])


def test_projection_of_model_activations(lm: LensModel, prompts: list[str]) -> None:
    acts = cache_activations(lm, prompts, layers=[0, 1, 2], progress=False)
    ds = fit_directions(acts.subset([0, 1, 2]), acts.subset([3, 4, 5]), layers=[2, 1], model=lm)
    proj = projection(acts, ds)
    unit = ds.unit().numpy()
    x = acts.tensor.double().numpy()
    np.testing.assert_allclose(proj[:, 0].numpy(), x[:, 2] @ unit[0], atol=1e-10)
    np.testing.assert_allclose(proj[:, 1].numpy(), x[:, 1] @ unit[1], atol=1e-10)
    post = cache_activations(lm, prompts, layers=[1, 2], sites="resid_post", progress=False)
    with pytest.raises(ValueError, match="site 'resid_post' but the directions from 'resid_pre'"):
        projection(post, ds)
    from dataclasses import replace

    foreign = replace(ds, model_fingerprint="0123456789abcdef")
    with pytest.raises(ValueError, match="allow_transfer=True"):
        projection(acts, foreign)
    assert projection(acts, foreign, allow_transfer=True).shape == (6, 2)
    with pytest.raises(ValueError, match=r"need layers \[2\], which were not cached"):
        projection(cache_activations(lm, prompts, layers=[1], progress=False), ds)
