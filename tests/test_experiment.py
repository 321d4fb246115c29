from __future__ import annotations

import pandas as pd
import pytest
import torch

from liref_lens import LensModel
from liref_lens.experiment import EvalSet, Experiment, ExperimentConfig, Results
from liref_lens.interventions import Add, intervene
from liref_lens.metrics import entropy, kl_divergence, mean_ci


def _config(**kw) -> ExperimentConfig:
    base = dict(
        layers=(1, 2), alphas=(-3.0, 3.0), ops=("add", "project_out"), n_random=2, n_boot=50, seed=7
    )
    return ExperimentConfig(**{**base, **kw})


def _directions(lm: LensModel) -> torch.Tensor:
    return torch.randn(lm.n_layers, lm.d_model, generator=torch.Generator().manual_seed(0)) * 4


def test_cells_match_an_independent_run(lm: LensModel, evalset: EvalSet, tmp_path) -> None:
    d = _directions(lm)
    exp = Experiment(lm, d, evalset, _config())
    res = exp.run(tmp_path / "run", progress=False)
    assert len(exp.config.cells()) == 2 * 2 * 3 + 2 * 1 * 3  # add: 2 alphas; project_out: 1
    pp = res.per_prompt
    cand = evalset.candidate_ids(lm)
    for i, prompt in enumerate(evalset.prompts):  # one prompt at a time, by hand
        with torch.no_grad():
            base = lm.forward(lm.tokenize([prompt]))[:, -1]
            with intervene(lm, Add(layers=[2], direction=d, alpha=3.0)):
                steered = lm.forward(lm.tokenize([prompt]))[:, -1]
        cell = pp[
            (pp.op == "add")
            & (pp.layer == 2)
            & (pp.alpha == 3.0)
            & (pp.control == -1)
            & (pp.prompt == i)
        ].set_index("metric")["value"]
        assert cell["kl"] == pytest.approx(float(kl_divergence(base, steered)), abs=1e-5)
        assert cell["entropy"] == pytest.approx(float(entropy(steered)), abs=1e-5)
        top = int(steered[0, cand[i]].argmax())
        assert cell["acc"] == float(top == evalset.correct[i])
        assert cell[f"choose_{evalset.candidate_names[top]}"] == 1.0
    # the summary is the mean of the per-prompt values, with a bootstrap interval around it
    t = res.table
    row = t[
        (t.op == "add")
        & (t.layer == 2)
        & (t.alpha == 3.0)
        & (t.control == -1)
        & (t.subset == "all")
        & (t.metric == "kl")
    ].iloc[0]
    vals = pp[
        (pp.op == "add")
        & (pp.layer == 2)
        & (pp.alpha == 3.0)
        & (pp.control == -1)
        & (pp.metric == "kl")
    ]["value"]
    assert row.value == pytest.approx(vals.mean()) and row.n == len(vals)
    assert row.ci_low <= row.value <= row.ci_high
    base_kl = t[(t.op == "baseline") & (t.metric == "kl")]["value"]
    assert (base_kl.abs() < 1e-12).all()
    assert set(t.direction) == {"none", "fitted", "random"}


def test_random_controls_are_norm_matched(lm: LensModel, evalset: EvalSet) -> None:
    d = _directions(lm)
    exp = Experiment(lm, d, evalset, _config(n_random=3))
    for layer in (1, 2):
        for c in range(3):
            v = exp.vector(layer, c)
            assert float(v.norm()) == pytest.approx(float(d[layer].norm()), rel=1e-5)
            assert abs(float(torch.nn.functional.cosine_similarity(v, d[layer], dim=0))) < 0.9
    assert not torch.equal(exp.vector(1, 0), exp.vector(1, 1))


def test_interrupted_run_resumes_and_matches(lm: LensModel, evalset: EvalSet, tmp_path) -> None:
    d = _directions(lm)
    full = Experiment(lm, d, evalset, _config()).run(tmp_path / "full", progress=False)
    n_cells = len(_config().cells())

    class Stop(Exception):
        pass

    seen = []

    def stop_after_five(cell) -> None:
        seen.append(cell)
        if len(seen) == 5:
            raise Stop

    with pytest.raises(Stop):
        Experiment(lm, d, evalset, _config()).run(
            tmp_path / "part", progress=False, on_cell=stop_after_five
        )
    again = Experiment(lm, d, evalset, _config())
    resumed = again.run(tmp_path / "part", progress=False)
    assert again.computed == n_cells - 5
    pd.testing.assert_frame_equal(resumed.table, full.table)
    loaded = Results.load(tmp_path / "part")
    pd.testing.assert_frame_equal(loaded.table, full.table)
    with pytest.raises(ValueError, match=r"different experiment: config field 'seed' changed"):
        Experiment(lm, d, evalset, _config(seed=8)).run(tmp_path / "part", progress=False)


def test_bad_configs(evalset: EvalSet) -> None:
    with pytest.raises(ValueError, match="unknown ops"):
        ExperimentConfig(layers=(1,), ops=("rotate",))
    with pytest.raises(ValueError, match="unknown position"):
        ExperimentConfig(layers=(1,), positions="first")
    with pytest.raises(ValueError, match="has no prompts"):
        EvalSet("e", (), (), (), ())
    assert mean_ci([0.0, 1.0], n_boot=200, seed=1) == mean_ci([0.0, 1.0], n_boot=200, seed=1)


def test_generation_accuracy_through_a_task_parser(lm: LensModel, tmp_path) -> None:
    from pathlib import Path

    from liref_lens.generation import generate
    from liref_lens.tasks import load_gsm8k

    task = load_gsm8k(str(Path(__file__).parent / "data" / "gsm8k_test.jsonl")).take(3)
    evalset = EvalSet.from_task(task)
    d = _directions(lm)
    cfg = _config(ops=("add",), alphas=(3.0,), layers=(1,), n_random=0, max_new_tokens=4)
    res = Experiment(lm, d, evalset, cfg).run(tmp_path / "gen", progress=False)
    pp = res.per_prompt
    steered = generate(
        lm, list(evalset.prompts), 4, ops=[Add(layers=[1], direction=d, alpha=3.0)]
    ).texts
    want = task.evaluate(steered)
    cell = pp[(pp.op == "add") & (pp.control == -1)]
    got_acc = cell[cell.metric == "gen_acc"].sort_values("prompt")["value"].tolist()
    got_fail = cell[cell.metric == "parse_fail"].sort_values("prompt")["value"].tolist()
    assert got_acc == [float(c) for c in want.correct]
    assert got_fail == [float(i in want.failures) for i in range(len(task))]
    assert "acc" not in set(pp.metric)  # no candidates: no candidate metrics


def test_resid_norm_unit_and_transfer(lm: LensModel, evalset: EvalSet, tmp_path) -> None:
    from liref_lens import cache_activations, fit_directions

    d = _directions(lm)
    exp = Experiment(lm, d, evalset, _config(add_scale="resid_norm", ops=("add",), n_random=0))
    acts = cache_activations(lm, list(evalset.prompts), layers=[1, 2], progress=False)
    want = acts.tensor.double().norm(dim=-1).mean(0)
    assert exp.resid_norms() == pytest.approx({1: float(want[0]), 2: float(want[1])})
    op = exp.op("add", 2, 3.0, -1)
    assert op.norms == exp.resid_norms() and op.scale == "resid_norm"
    # a set fitted on "another" model needs allow_transfer
    ds = fit_directions(acts.subset([0, 1, 2]), acts.subset([3, 4, 5]), model=lm)
    other = type(ds)(**{**ds.__dict__, "model_fingerprint": "0" * 16})
    with pytest.raises(ValueError, match="allow_transfer"):
        Experiment(lm, other, evalset, _config())
    Experiment(lm, other, evalset, _config(), allow_transfer=True)


def test_summary_counts_each_prompt_once_without_subsets(lm: LensModel, prompts, tmp_path) -> None:
    plain = EvalSet(name="plain", prompts=tuple(prompts))  # every prompt in subset "all"
    cfg = _config(layers=(1,), alphas=(3.0,), ops=("add",), n_random=1)
    res = Experiment(lm, _directions(lm), plain, cfg).run(tmp_path / "plain", progress=False)
    t = res.table
    assert set(t["subset"]) == {"all"}
    assert (t["n"] == len(prompts)).all()
    pp = res.per_prompt
    kl = pp[(pp.op == "add") & (pp.control == -1) & (pp.metric == "kl")]
    assert len(kl) == len(prompts)
    row = t[(t.op == "add") & (t.control == -1) & (t.metric == "kl")].iloc[0]
    assert row["value"] == pytest.approx(kl["value"].mean(), abs=1e-12)


def test_an_alpha_past_the_number_range_names_the_cell_not_float32(lm, evalset, tmp_path) -> None:
    """alpha 1e308 overflows the residual stream: the error names the cell and the alpha, and
    does not tell a float32 model to try float32 (#21)."""
    from liref_lens import DirectionSet

    ds = DirectionSet(torch.ones(1, lm.d_model), layers=(1,))
    cfg = ExperimentConfig(layers=(1,), alphas=(1e308,), n_random=0, n_boot=10)
    with pytest.raises(ValueError) as err:
        Experiment(lm, ds, evalset, cfg, allow_transfer=True).run(tmp_path / "x", progress=False)
    text = str(err.value)
    assert "add at layer 1 with alpha 1e+308 (the fitted direction)" in text
    assert "model dtype float32" in text and "use a smaller |alpha|" in text
    assert "try float32" not in text and "load the model in float32" not in text
