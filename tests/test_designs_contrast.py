"""`Contrast`, the held-out design and the design plots, on a tiny model and on synthetic
activations."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from tests._designs_data import contrast

import liref_lens.designs.contrast as contrast_module
import liref_lens.designs.plots as plots_module
import liref_lens.designs.transfers as transfer_module
from liref_lens import LensModel, load_model
from liref_lens.confounds import against_baselines, auroc_table, baseline_oof, layer_oof
from liref_lens.designs import (
    Contrast,
    design_plot,
    design_table,
    heldout,
    match_classes,
    overlap_plot,
    per_item_plot,
    transfer_heatmap,
    transfer_matrix,
)

PROMPTS = ["Q: 2 + 3 = ? A:", "w1 w2 w3", "Q: w5 + w6 = ? A:", "w9 w9 w10"]


@pytest.fixture(scope="module")
def tiny(model_dirs: dict[str, Path]) -> LensModel:
    return load_model(str(model_dirs["llama"]), device="cpu")


def test_docstring_examples_run(tiny: LensModel) -> None:
    for module in (contrast_module, plots_module, transfer_module):
        result = doctest.testmod(module, extraglobs={"lm": tiny, "prompts": PROMPTS})
        assert result.attempted >= 2 and result.failed == 0, module.__name__


def test_heldout_is_the_confound_functions_on_the_models_tokens(tiny: LensModel) -> None:
    pos_p = [f"Q: w{i} + w{i % 7} = ? A:" for i in range(12)]
    neg_p = [f"w{i} w{(i * 3) % 11} w9" for i in range(12)]
    c = Contrast.read(tiny, "toy", pos_p, neg_p, layers=[1, 2])
    assert c.pos_ids == [tuple(x) for x in tiny.encode(pos_p)]
    assert c.meta["token_length"].tolist() == [len(x) for x in tiny.encode(pos_p + neg_p)]
    r = heldout(c, cv_folds=4, seed=3, n_boot=200)
    lay = layer_oof(c.pos, c.neg, cv_folds=4, seed=3, progress=False)
    base = baseline_oof(tiny.encode(pos_p), tiny.encode(neg_p), tiny.cfg.d_vocab, cv_folds=4,
                        seed=3)  # fmt: skip
    want = against_baselines(lay, base, n_boot=200, seed=3)
    pd.testing.assert_frame_equal(r.layers[want.columns], want)
    pd.testing.assert_frame_equal(
        r.baselines[["feature", "auroc", "ci_low", "ci_high"]],
        auroc_table(base, n_boot=200, seed=3),
    )
    # held-out accuracy: each item against its own fold's cut, balanced over the classes
    s = r.scores[r.scores["layer"] == 2].sort_values("row")
    hit = (s["score"] > s["threshold"]) == (s["label"] == 1)
    acc = (hit[s["label"] == 1].mean() + hit[s["label"] == 0].mean()) / 2
    assert r.layers.set_index("layer").loc[2, "acc"] == pytest.approx(acc)


def test_contrast_checks_its_rows() -> None:
    x = np.zeros((6, 1, 4)) + np.arange(6)[:, None, None]
    c = contrast(
        "c", x, np.array([3, 4, 5, 3, 4, 5]), 3, meta=pd.DataFrame({"src": list("abcabc")})
    )
    assert c.meta.columns.tolist() == ["label", "token_length", "src"]
    sub = c.take([0, 2], [1])
    assert sub.n_pos == 2 and sub.n_neg == 1 and sub.meta["src"].tolist() == ["a", "c", "b"]
    assert sub.ids == (c.ids[0], c.ids[2], c.ids[4])
    with pytest.raises(ValueError, match="meta has 2 rows for 6 items"):
        contrast("c", x, np.ones(6, int), 3, meta=pd.DataFrame({"src": ["a", "b"]}))
    with pytest.raises(ValueError, match="5 token-id rows for 6"):
        Contrast("c", c.pos, c.neg, c.ids[:5], 50)


def test_plots_draw_the_tables() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(40, int), np.zeros(40, int)]
    x = rng.normal(0, 1, (80, 2, 6))
    x[:, 1, 0] += 3 * y
    a = contrast("a", x, rng.integers(3, 9, 80), 40)
    b = contrast("b", x[::-1].copy(), rng.integers(3, 9, 80), 40)
    t = design_table([heldout(a, n_boot=100)])
    fig = design_plot(t, "a")
    assert isinstance(fig, go.Figure)
    line = [tr for tr in fig.data if tr.mode == "lines+markers"][0]
    want = ["circle" if v else "circle-open" for v in t.sort_values("layer")["beats_baseline"]]
    assert list(line.marker.symbol) == want
    m = transfer_matrix([a, b], n_boot=0)
    hm = transfer_heatmap(m, layer=1)
    z = np.array(hm.data[0].z)
    cell = m[(m.train == "a") & (m.test == "b") & (m.reader == "layer") & (m.layer == 1)]
    assert z[0, 1] == pytest.approx(cell["auroc"].iloc[0])
    best = m[(m.train == "a") & (m.test == "b") & (m.reader != "layer")]["auroc"].max()
    assert np.array(hm.data[1].z)[0, 1] == pytest.approx(best)
    ov = overlap_plot(match_classes([1, 2, 2, 3], [2, 2, 3, 4], min_items=1, warn_share=0))
    assert list(ov.data[2].y) == [0, 2, 1, 0]
    e = pd.DataFrame({"op": "add", "layer": 1, "alpha": [1.0] * 4, "subset": ["s", "s", "t", "t"],
                      "direction": ["fitted", "random"] * 2, "delta": [0.1, -0.2, 0.3, 0.0],
                      "wrong_way": [False, True, False, False]})  # fmt: skip
    pi = per_item_plot(e)
    assert len(pi.data) == 4 and "wrong way 100%" in pi.data[1].x[0]
    with pytest.raises(ValueError, match="pass alpha"):
        per_item_plot(pd.concat([e, e.assign(alpha=-1.0)]))
