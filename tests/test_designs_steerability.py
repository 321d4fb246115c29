"""Per-item steerability on a small hand-made `Results`, checked item by item."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pandas as pd
import pytest

import liref_lens.designs.steerability as steer_module
from liref_lens.designs import per_item_effects, steerability_summary
from liref_lens.experiment import ExperimentConfig, Results

SUBSETS = ["gsm", "gsm", "nq", "nq"]
BASE_P = [0.4, 0.7, 0.5, 0.2]
BASE_ACC = [0.0, 1.0, 1.0, 0.0]
# (alpha, control) -> p_correct after steering, per prompt
AFTER = {
    (1.0, -1): [0.6, 0.5, 0.4, 0.1],
    (1.0, 0): [0.45, 0.7, 0.6, 0.25],
    (1.0, 1): [0.3, 0.9, 0.5, 0.3],
    (1.0, 2): [0.4, 0.6, 0.45, 0.2],
    (1.0, 3): [0.5, 0.8, 0.55, 0.1],
    (-1.0, -1): [0.3, 0.8, 0.6, 0.3],
    (-1.0, 0): [0.4, 0.7, 0.5, 0.2],
    (-1.0, 1): [0.4, 0.7, 0.5, 0.2],
    (-1.0, 2): [0.4, 0.7, 0.5, 0.2],
    (-1.0, 3): [0.4, 0.7, 0.5, 0.2],
}


def _results() -> Results:
    cfg = ExperimentConfig(layers=(3,), alphas=(-1.0, 1.0), n_random=2, n_boot=50,
                           controls=("random", "shuffled"))  # fmt: skip
    rows = []

    def add(op, layer, alpha, control, p):
        for i, (subset, v) in enumerate(zip(SUBSETS, p, strict=True)):
            acc = float(v > 0.5) if op != "baseline" else BASE_ACC[i]
            flip = float(acc != BASE_ACC[i])
            for metric, value in (("p_correct", v), ("acc", acc), ("flip", flip)):
                rows.append((op, layer, alpha, control, i, subset, metric, value))

    add("baseline", -1, 0.0, -1, BASE_P)
    for (alpha, control), p in AFTER.items():
        add("add", 3, alpha, control, p)
    cols = ["op", "layer", "alpha", "control", "prompt", "subset", "metric", "value"]
    return Results(pd.DataFrame(rows, columns=cols), cfg)


def test_docstring_examples_run(model_dirs, tmp_path) -> None:
    from liref_lens import cache_activations, fit_directions, load_model
    from liref_lens.experiment import EvalSet

    lm = load_model(str(model_dirs["llama"]), device="cpu")
    prompts = ["Q: 2 + 3 = ? A:", "w1 w2 w3", "Q: w5 + w6 = ? A:", "w9 w9 w10"]
    acts = cache_activations(lm, prompts, layers=[1, 2], progress=False)
    ds = fit_directions(acts.subset([0, 2]), acts.subset([1, 3]), model=lm)
    ev = EvalSet("toy", tuple(prompts), (("w1", "w2"),) * 4, (0, 1, 0, 1),
                 ("reasoning", "memory") * 2, ("one", "two"))  # fmt: skip
    ns = {"lm": lm, "ds": ds, "evalset": ev, "tmp": tmp_path}
    assert doctest.testmod(steer_module, extraglobs=ns).failed == 0


def test_per_item_effects_by_hand() -> None:
    e = per_item_effects(_results(), expect={"gsm": 1, "nq": -1})
    assert len(e) == len(AFTER) * 4
    kinds = {-1: "fitted", 0: "random", 1: "random", 2: "shuffled", 3: "shuffled"}
    for (alpha, control), p in AFTER.items():
        g = e[(e.alpha == alpha) & (e.control == control)].set_index("prompt")
        for i in range(4):
            delta = p[i] - BASE_P[i]
            assert g.loc[i, "delta"] == pytest.approx(delta)
            assert g.loc[i, "direction"] == kinds[control]
            intended = (1 if SUBSETS[i] == "gsm" else -1) * np.sign(alpha)
            assert g.loc[i, "wrong_way"] == bool(delta * intended < 0)
            acc = float(p[i] > 0.5)
            assert g.loc[i, "flip"] == float(acc != BASE_ACC[i])
            assert g.loc[i, "flip_to_correct"] == float(BASE_ACC[i] == 0 and acc == 1)
            assert g.loc[i, "flip_to_wrong"] == float(BASE_ACC[i] == 1 and acc == 0)


def test_summary_shares_by_hand() -> None:
    e = per_item_effects(_results(), expect={"gsm": 1, "nq": -1})
    s = steerability_summary(e, n_boot=200).set_index(["alpha", "subset", "direction", "statistic"])
    # fitted, alpha +1, all four items: deltas +0.2, -0.2, -0.1, -0.1
    row = s.loc[(1.0, "all", "fitted", "share_wrong_way")]
    assert row["value"] == pytest.approx(0.25)  # only gsm item 1 went down
    assert row["n_items"] == 4 and row["n_controls"] == 1
    assert s.loc[(1.0, "all", "fitted", "mean_delta"), "value"] == pytest.approx(-0.05)
    assert s.loc[(1.0, "all", "fitted", "median_delta"), "value"] == pytest.approx(-0.1)
    assert s.loc[(1.0, "gsm", "fitted", "share_flip"), "value"] == pytest.approx(1.0)
    lo, hi = s.loc[(1.0, "all", "fitted", "mean_delta"), ["ci_low", "ci_high"]]
    assert lo <= -0.05 <= hi
    # shuffled controls 2 and 3 on gsm: deltas (0, -0.1) and (+0.1, +0.1): share down 1/2, 0
    sh = s.loc[(1.0, "gsm", "shuffled", "share_down")]
    assert sh["value"] == pytest.approx(0.25) and sh["n_controls"] == 2
    assert (sh["control_min"], sh["control_max"]) == (0.0, 0.5)
    assert np.isnan(sh["ci_low"])
    # with no intended sign nothing is "wrong"
    e0 = per_item_effects(_results(), expect=0)
    assert not e0["wrong_way"].any()


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="no metric 'gen_acc'"):
        per_item_effects(_results(), metric="gen_acc")
    with pytest.raises(ValueError, match="expect must be"):
        per_item_effects(_results(), expect=2)


def test_every_cell_and_kind_is_summarised() -> None:
    e = per_item_effects(_results())
    s = steerability_summary(e, n_boot=0)
    combos = set(itertools.product([-1.0, 1.0], ["all", "gsm", "nq"], ["fitted", "random",
                                                                      "shuffled"]))  # fmt: skip
    assert set(zip(s.alpha, s.subset, s.direction, strict=True)) == combos
