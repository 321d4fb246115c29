from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from liref_lens import diff_in_means, fit_directions, separation
from liref_lens.plotting import (
    cosine_heatmap,
    dose_response,
    layer_scores,
    pca_scatter,
    projection_vs_label,
    sweep_heatmap,
)


@pytest.fixture
def groups():
    g = torch.Generator().manual_seed(0)
    shift = torch.zeros(3, 8)
    shift[:, 0] = torch.tensor([0.0, 1.0, 3.0])  # separation grows with depth
    pos = torch.randn(40, 3, 8, generator=g) + shift
    neg = torch.randn(40, 3, 8, generator=g)
    return pos, neg


def _table() -> pd.DataFrame:
    rows = []
    for layer in (1, 2):
        for alpha in (-2.0, 0.0, 2.0):
            for control in (-1, 0, 1):
                v = alpha * layer / 10 if control < 0 else 0.01 * (control + 1)
                rows.append(("add", layer, alpha, control, "all", "acc", v, v - 0.05, v + 0.05))
    cols = ["op", "layer", "alpha", "control", "subset", "metric", "value", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols)


def test_layer_scores_from_real_separation(groups) -> None:
    pos, neg = groups
    ds = fit_directions(pos, neg, diff_in_means())
    df = separation(pos, neg, ds, n_boot=20, progress=False)
    fig = layer_scores(df)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["AUROC", "probe accuracy (CV)", "Cohen's d"]
    auc = df[df.score == "auroc"].sort_values("layer")["value"].to_numpy()
    np.testing.assert_allclose(lines[0].y, auc)
    assert fig.layout.xaxis3.title.text == "layer"
    assert fig.layout.yaxis.title.text == "AUROC"
    with pytest.raises(ValueError, match="none of the scores"):
        layer_scores(df, ["nope"])


def test_pca_scatter_has_groups_boundary_and_arrow(groups) -> None:
    pos, neg = groups
    fig = pca_scatter(pos[:, 2], neg[:, 2], layer=2)
    names = [t.name for t in fig.data]
    assert names == [
        "reasoning",
        "memory",
        "logistic boundary",
        "mean difference (memory to reasoning)",
    ]
    assert len(fig.data[0].x) == 40 and len(fig.data[1].x) == 40
    # the arrow goes from the memory mean to the reasoning mean in the plane of the first two
    # principal components (independent float64 PCA; a component's sign is arbitrary)
    x = np.concatenate([pos[:, 2].double().numpy(), neg[:, 2].double().numpy()])
    x = x - x.mean(0)
    pcs = np.linalg.svd(x, full_matrices=False)[2][:2]
    z = x @ pcs.T
    want = z[:40].mean(0) - z[40:].mean(0)
    arrow = fig.data[3]
    got = np.array([arrow.x[1] - arrow.x[0], arrow.y[1] - arrow.y[0]])
    np.testing.assert_allclose(np.abs(got), np.abs(want), rtol=1e-4)
    assert list(arrow.marker.symbol) == ["circle", "arrow"]  # the head sits on the reasoning mean
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
    assert fig.layout.xaxis.title.text == "PC 1" and "layer 2" in fig.layout.title.text


def test_projection_vs_label_reports_correlations() -> None:
    x = np.linspace(0, 1, 20)
    fig = projection_vs_label(2 * x + 1, x, layer=3)
    assert "Pearson r = 1.000" in fig.layout.title.text
    assert "Spearman rho = 1.000" in fig.layout.title.text
    assert fig.layout.yaxis.title.text == "projection on the unit direction"


def test_sweep_heatmap_and_dose_response() -> None:
    t = _table()
    heat = sweep_heatmap(t, "acc")
    assert heat.data[0].z.shape == (2, 3)
    assert heat.layout.xaxis.title.text == "alpha" and heat.layout.yaxis.title.text == "layer"
    np.testing.assert_allclose(heat.data[0].z[1], [-0.4, 0.0, 0.4])
    dose = dose_response(t, "acc", layer=2)
    names = [tr.name for tr in dose.data]
    assert names[-1] == "fitted direction"
    assert "random directions (mean of 2; band: min-max)" in names
    np.testing.assert_allclose(dose.data[-1].y, [-0.4, 0.0, 0.4])
    with pytest.raises(ValueError, match="no rows"):
        sweep_heatmap(t, "kl")


def test_cosine_heatmap() -> None:
    fig = cosine_heatmap(torch.tensor([[1.0, 0.5], [0.5, 1.0]]), rows=[3, 4], cols=[3, 4])
    assert list(fig.data[0].y) == ["3", "4"]
    assert fig.data[0].zmin == -1 and fig.data[0].zmax == 1
    assert fig.data[0].texttemplate == "%{z:.2f}"  # every cell prints its cosine


def test_dose_response_draws_the_baseline_at_alpha_zero() -> None:
    t = _table()
    t = t[t["alpha"] != 0.0]
    base = pd.DataFrame(
        {"op": "baseline", "layer": -1, "alpha": 0.0, "control": -1, "subset": "all",
         "metric": "acc", "value": 0.25, "ci_low": 0.2, "ci_high": 0.3}, index=[0]
    )  # fmt: skip
    dose = dose_response(pd.concat([t, base], ignore_index=True), "acc", layer=2)
    fitted = dose.data[-1]
    np.testing.assert_allclose(fitted.x, [-2.0, 0.0, 2.0])
    np.testing.assert_allclose(fitted.y, [-0.4, 0.25, 0.4])
    mean = next(tr for tr in dose.data if str(tr.name).startswith("random directions"))
    assert 0.0 in list(mean.x) and mean.y[list(mean.x).index(0.0)] == 0.25
    # project-out has no alpha = 0: no baseline point is invented for it
    with pytest.raises(ValueError, match="no rows"):
        dose_response(pd.concat([t, base], ignore_index=True), "acc", layer=2, op="project_out")
