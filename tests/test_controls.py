"""Steering controls drawn like the fitted direction (issue 22): shuffled-label and
covariance-matched directions in `Experiment`, next to the isotropic random ones."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest
import torch

import liref_lens.controls as controls_module
from liref_lens import LensModel, cache_activations, fit_directions, load_model
from liref_lens.controls import _seed, control_directions
from liref_lens.experiment import EvalSet, Experiment, ExperimentConfig
from liref_lens.interventions import Add, intervene
from liref_lens.metrics import kl_divergence

REASONING = [f"Q: w{i} + w{(i * 3) % 7} = ? A:" for i in range(8)]
MEMORY = [f"w{i} w{(i * 5) % 11} w9" for i in range(8)]


@pytest.fixture(scope="module")
def tiny(model_dirs: dict[str, Path]) -> LensModel:
    return load_model(str(model_dirs["llama"]), device="cpu")


@pytest.fixture(scope="module")
def acts(tiny: LensModel):
    kw = dict(layers=[1, 2], progress=False)
    return cache_activations(tiny, REASONING, **kw), cache_activations(tiny, MEMORY, **kw)


def _evalset() -> EvalSet:
    prompts = (*REASONING[:3], *MEMORY[:3])
    return EvalSet("ctl", prompts, (("w1", "w2"),) * 6, (0, 1, 0, 1, 0, 1),
                   ("reasoning",) * 3 + ("memory",) * 3, ("one", "two"))  # fmt: skip


def test_docstring_examples_run(tiny: LensModel, prompts: list[str]) -> None:
    result = doctest.testmod(controls_module, extraglobs={"lm": tiny, "prompts": prompts})
    assert result.attempted >= 3 and result.failed == 0


def test_shuffled_controls_are_diff_in_means_of_relabelled_rows_by_hand(acts) -> None:
    pos, neg = acts
    got = control_directions("shuffled", pos, neg, [1, 2], n=3, seed=4)
    pooled = torch.cat([pos.tensor, neg.tensor]).double()  # [16, 2 layers, d]
    gen = torch.Generator().manual_seed(_seed(4, "shuffled"))
    for i in range(3):
        perm = torch.randperm(16, generator=gen)
        p, q = pooled[perm[:8]], pooled[perm[8:]]
        for li, layer in enumerate((1, 2)):
            d = p[:, li].mean(0) - q[:, li].mean(0)
            assert torch.allclose(got[layer][i], d / d.norm(), atol=1e-12)


def test_covariance_controls_are_gaussian_in_the_centred_rows_by_hand(acts) -> None:
    pos, neg = acts
    got = control_directions("covariance", pos, neg, [2], n=4, seed=1)
    x = [a.at_layer(2).double() for a in (pos, neg)]
    centred = torch.cat([t - t.mean(0) for t in x])
    gen = torch.Generator().manual_seed(_seed(1, "covariance", 2))
    z = torch.randn(4, 16, generator=gen, dtype=torch.float64)
    g = z @ centred
    assert torch.allclose(got[2], g / g.norm(dim=1, keepdim=True), atol=1e-12)
    # they lie in the span of the centred rows: no component outside what the data varies in.
    # The span from an SVD with an explicit rank cut, not from lstsq: the centred rows are
    # rank-deficient by construction (16 rows, each group's sum is zero: rank 14), and whether
    # LAPACK's default driver (gelsy) sees that depends on the CPU it runs on (CI failed here on
    # another machine's MKL while this one passed).
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    basis = vh[s > s[0] * 1e-9]
    assert basis.shape[0] == 14
    outside = got[2] - (got[2] @ basis.T) @ basis
    assert outside.norm(dim=1).max() < 1e-10
    # the control: a direction not drawn from the rows has most of its length outside (18 of 32)
    other = torch.randn(4, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    other = other / other.norm(dim=1, keepdim=True)
    assert (other - (other @ basis.T) @ basis).norm(dim=1).min() > 0.3
    # and a layer's controls do not depend on the other layers asked for
    assert torch.equal(control_directions("covariance", pos, neg, [1, 2], n=4, seed=1)[2], got[2])


def test_experiment_runs_the_three_kinds_norm_matched(tiny: LensModel, acts, tmp_path) -> None:
    pos, neg = acts
    ds = fit_directions(pos, neg, model=tiny)
    cfg = ExperimentConfig(layers=(2,), alphas=(4.0,), n_random=2, n_boot=20,
                           controls=("random", "shuffled", "covariance"))  # fmt: skip
    exp = Experiment(tiny, ds, _evalset(), cfg, control_activations=(pos, neg))
    res = exp.run(tmp_path / "run", progress=False)
    assert len(exp.config.cells()) == 1 + 3 * 2
    drawn = control_directions("shuffled", pos, neg, [2], n=2, seed=0)[2]
    kinds = ["random"] * 2 + ["shuffled"] * 2 + ["covariance"] * 2
    for c, kind in enumerate(kinds):
        v = exp.vector(2, c)
        assert float(v.norm()) == pytest.approx(float(ds.at(2).norm()), rel=1e-5)
        assert exp.config.control_kind(c) == kind
    assert torch.allclose(exp.vector(2, 2).double(), drawn[0] * ds.at(2).norm(), atol=1e-5)
    # the random kind is the same vector as with random controls alone (old folders resume)
    alone = Experiment(tiny, ds, _evalset(), ExperimentConfig(layers=(2,), n_random=2))
    assert torch.equal(alone.vector(2, 1), exp.vector(2, 1))
    t = res.table
    assert set(t["direction"]) == {"none", "fitted", "random", "shuffled", "covariance"}
    assert set(t[t["direction"] == "shuffled"]["control"]) == {2, 3}
    # a shuffled cell's KL equals the op run by hand with that vector, one prompt at a time
    pp = res.per_prompt
    cell = pp[(pp.control == 3) & (pp.metric == "kl")].set_index("prompt")["value"]
    for i, prompt in enumerate(exp.evalset.prompts):
        with torch.no_grad():
            base = tiny.forward(tiny.tokenize([prompt]))[:, -1]
            with intervene(tiny, Add(layers=[2], direction=exp.vector(2, 3), alpha=4.0)):
                steered = tiny.forward(tiny.tokenize([prompt]))[:, -1]
        assert cell[i] == pytest.approx(float(kl_divergence(base, steered)), abs=1e-5)


def test_resume_refuses_other_controls_and_accepts_old_configs(tiny: LensModel, acts,
                                                               tmp_path) -> None:  # fmt: skip
    pos, neg = acts
    ds = fit_directions(pos, neg, model=tiny)
    folder = tmp_path / "run"
    plain = ExperimentConfig(layers=(2,), n_random=2, n_boot=20)
    Experiment(tiny, ds, _evalset(), plain).run(folder, progress=False)
    both = ExperimentConfig(layers=(2,), n_random=2, n_boot=20, controls=("random", "shuffled"))
    with pytest.raises(ValueError, match="config field 'controls' changed"):
        Experiment(tiny, ds, _evalset(), both, control_activations=(pos, neg)).run(
            folder, progress=False
        )
    # a config.json written before the field existed reads as the default (random only)
    cfg_path = folder / "config.json"
    old = json.loads(cfg_path.read_text())
    del old["controls"]
    cfg_path.write_text(json.dumps(old))
    again = Experiment(tiny, ds, _evalset(), plain)
    again.run(folder, progress=False)
    assert again.computed == 0
    # the same kinds drawn from other activations are another experiment
    other = tmp_path / "other"
    Experiment(tiny, ds, _evalset(), both, control_activations=(pos, neg)).run(
        other, progress=False
    )
    swapped = (pos.subset(list(range(7))), neg)
    with pytest.raises(ValueError, match="shuffled controls for layer 2 changed"):
        Experiment(tiny, ds, _evalset(), both, control_activations=swapped).run(
            other, progress=False
        )


def test_bad_input_is_named(tiny: LensModel, acts) -> None:
    pos, neg = acts
    ds = fit_directions(pos, neg, model=tiny)
    cfg = ExperimentConfig(layers=(2,), n_random=1, controls=("covariance",))
    with pytest.raises(ValueError, match="control_activations=\\(pos, neg\\)"):
        Experiment(tiny, ds, _evalset(), cfg)
    none = ExperimentConfig(layers=(2,), n_random=0, controls=("covariance",))
    assert Experiment(tiny, ds, _evalset(), none).config.cells() == [("add", 2, 1.0, -1)]
    with pytest.raises(ValueError, match="distinct kinds"):
        ExperimentConfig(layers=(2,), controls=("isotropic",))
    with pytest.raises(ValueError, match="lack layers \\[0\\]"):
        control_directions("shuffled", pos, neg, [0], n=1)
    with pytest.raises(ValueError, match="unknown control kind"):
        control_directions("random", pos, neg, [1], n=1)
