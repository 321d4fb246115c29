"""`liref-lens demo` end to end on the shipped testbed, on a reduced grid (2 alphas, 2 controls).

The switch shares it reports are checked against an independent count: the same `Add` applied
with `intervene` to a plain forward pass, candidates compared by hand.
"""

from __future__ import annotations

import torch

from liref_lens import (
    Add,
    cache_activations,
    diff_in_means,
    fit_directions,
    intervene,
    last,
    load_model,
)
from liref_lens.demo import RANDOM_LIMIT, _borderline_evalset, run_demo
from liref_lens.testbed import make_testbed, shipped_checkpoint


def _share_choosing(lm, evalset, subset: str, want: int, op: Add | None) -> float:
    rows = [i for i, s in enumerate(evalset.subsets) if s == subset]
    prompts = [evalset.prompts[i] for i in rows]
    cand = evalset.candidate_ids(lm)[rows]
    with torch.no_grad():
        if op is None:
            logits = lm.forward(lm.tokenize(prompts))[:, -1]
        else:
            with intervene(lm, op):
                logits = lm.forward(lm.tokenize(prompts))[:, -1]
    picked = logits.gather(1, cand).argmax(-1)
    return float((picked == want).double().mean())


def test_demo_reports_switch_shares_that_an_independent_count_reproduces(tmp_path, capsys) -> None:
    result = run_demo(tmp_path / "demo", n_random=2, alphas=(-1.25, 1.25), progress=False)

    html = result.report.read_text()
    assert result.report.name == "report.html" and "Findings" in html
    assert html.count('class="plotly-graph-div"') >= 8
    printed = capsys.readouterr().out
    assert "Best switch per direction" in printed and str(result.report.resolve()) in printed

    auc = result.scores[result.scores["score"] == "auroc"].set_index("layer")["value"]
    assert list(auc.index) == [1, 2] and auc[2] > auc[1] + 0.05  # separate best at layer 2

    lm = load_model(str(shipped_checkpoint()), device="cpu")
    tb = make_testbed(seed=0)
    evalset = _borderline_evalset(lm, tb)
    # every prompt kept is answered by its mode at baseline: nothing has switched yet
    assert _share_choosing(lm, evalset, "memory-mode", 0, None) == 0.0
    assert _share_choosing(lm, evalset, "reasoning-mode", 1, None) == 0.0

    pos = cache_activations(lm, tb.reasoning_prompts(), layers=[1, 2], progress=False)
    neg = cache_activations(lm, tb.memory_prompts(), layers=[1, 2], progress=False)
    ds = fit_directions(pos, neg, diff_in_means(), model=lm)
    sw = result.switches.set_index(["switch", "op", "layer", "alpha"])
    for direction, subset, want, alpha in (
        ("memorized -> rule", "memory-mode", 0, 1.25),
        ("rule -> memorized", "reasoning-mode", 1, -1.25),
    ):
        op = Add(layers=[1], direction=ds, alpha=alpha, positions=last())
        expected = _share_choosing(lm, evalset, subset, want, op)
        row = sw.loc[(direction, "add", 1, alpha)]
        assert abs(row["fitted"] - expected) < 1e-9
        # the shipped model's mode is mediated at layer 1: well above its random controls
        assert row["fitted"] >= 0.5 and row["random_max"] <= RANDOM_LIMIT

    # the position scan covers the five cue positions at both layers, with random controls
    scan = result.positions
    assert sorted(set(scan["position"])) == ["c1", "c2", "c3", "c4", "c5"]
    assert {"auroc", "effect", "effect_random", "effect_vs_random"} <= set(scan["score"])
