"""Regression tests for the hardening issue (#16): each defect found by review, pinned down.

Resume refuses changed inputs, tensors with grad, attach handles removed in any order,
ambiguous candidates, subset tensors indexed by the wrong layer, artifact file modes, and
clear errors for non-finite strengths, empty batches and bad candidates.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat

import pandas as pd
import pytest
import torch

from liref_lens import LensModel, cache_activations, fit_directions
from liref_lens._io import atomic_write_bytes, atomic_write_text
from liref_lens.directions import DirectionSet, probe_direction, random_like
from liref_lens.experiment import EvalSet, Experiment, ExperimentConfig, Results
from liref_lens.interventions import Add, NeuronShift, Scale, attach, intervene
from liref_lens.metrics import mean_ci
from liref_lens.positions import span


def _no_hooks(lm: LensModel) -> bool:
    return not any(hp.fwd_hooks for hp in lm.model.hook_dict.values())


def _set(lm: LensModel, seed: int = 0, scale: float = 4.0) -> DirectionSet:
    """A hand-built direction set (no data hash, no provenance beyond the model)."""
    g = torch.Generator().manual_seed(seed)
    return DirectionSet(
        torch.randn(2, lm.d_model, generator=g, dtype=torch.float64) * scale,
        layers=(1, 2),
        site="resid_pre",
        model_fingerprint=lm.fingerprint,
        n_layers=lm.n_layers,
    )


def _cfg(**kw) -> ExperimentConfig:
    base = dict(layers=(1, 2), alphas=(3.0,), ops=("add",), n_random=0, n_boot=20)
    return ExperimentConfig(**{**base, **kw})


def _kl(results: Results, layer: int = 1) -> float:
    t = results.table
    row = t[(t.op == "add") & (t.layer == layer) & (t.subset == "all") & (t.metric == "kl")]
    return float(row["value"].iloc[0])


# ----- 1. resume never reuses cells of a different experiment ------------------------------
def test_resume_refuses_a_rescaled_direction_set(lm: LensModel, evalset, tmp_path) -> None:
    ds = _set(lm)
    first = Experiment(lm, ds, evalset, _cfg()).run(tmp_path / "run", progress=False)
    doubled = dataclasses.replace(ds, vectors=ds.vectors * 2)  # same method, same data_hash
    fresh = Experiment(lm, doubled, evalset, _cfg()).run(tmp_path / "fresh", progress=False)
    assert _kl(fresh) != _kl(first)  # the stale numbers differ from the right ones
    with pytest.raises(ValueError, match=r"direction for layer 1 changed .*overwrite=True"):
        Experiment(lm, doubled, evalset, _cfg()).run(tmp_path / "run", progress=False)
    # overwrite=True recomputes every cell and gives the fresh run's numbers
    exp = Experiment(lm, doubled, evalset, _cfg())
    redone = exp.run(tmp_path / "run", progress=False, overwrite=True)
    assert exp.computed == len(_cfg().cells())
    pd.testing.assert_frame_equal(redone.table, fresh.table)
    # and the folder now resumes the new experiment
    again = Experiment(lm, doubled, evalset, _cfg())
    pd.testing.assert_frame_equal(again.run(tmp_path / "run", progress=False).table, fresh.table)
    assert again.computed == 0


def test_resume_refuses_random_like_copies(lm: LensModel, evalset, tmp_path) -> None:
    a, b = random_like(_set(lm), 2, generator=torch.Generator().manual_seed(0))
    Experiment(lm, a, evalset, _cfg(layers=(2,))).run(tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="direction for layer 2 changed"):
        Experiment(lm, b, evalset, _cfg(layers=(2,))).run(tmp_path / "run", progress=False)


def test_resume_refuses_other_span_ranges(lm: LensModel, prompts, tmp_path) -> None:
    evalset = EvalSet("long", tuple(p for p in prompts if len(p.split()) >= 2))
    n = len(evalset.prompts)
    first = span("cue", [(0, 1)] * n)
    other = span("cue", [(0, 2)] * n)  # same name, same str(): only the ranges differ
    assert str(first) == str(other)
    cfg = _cfg(layers=(1,))
    Experiment(lm, _set(lm), evalset, cfg, rule=first).run(tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="positions changed"):
        Experiment(lm, _set(lm), evalset, cfg, rule=other).run(tmp_path / "run", progress=False)


def test_resume_says_what_changed(lm: LensModel, evalset, tmp_path, make_tiny) -> None:
    Experiment(lm, _set(lm), evalset, _cfg()).run(tmp_path / "run", progress=False)
    other_prompts = dataclasses.replace(evalset, prompts=("w5 w6", *evalset.prompts[1:]))
    with pytest.raises(ValueError, match="prompts changed"):
        Experiment(lm, _set(lm), other_prompts, _cfg()).run(tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"config field 'alphas' changed \(\[3.0\] -> \[2.0\]\)"):
        Experiment(lm, _set(lm), evalset, _cfg(alphas=(2.0,))).run(tmp_path / "run", progress=False)
    # a folder written without an identity record (an older version) is not trusted
    (tmp_path / "run" / "inputs.json").unlink()
    with pytest.raises(ValueError, match="records no input identity"):
        Experiment(lm, _set(lm), evalset, _cfg()).run(tmp_path / "run", progress=False)


# ----- 2. tensors with grad (or on an accelerator) -------------------------------------------
def test_direction_tensor_with_grad(lm: LensModel, evalset, tmp_path) -> None:
    d = torch.randn(lm.n_layers, lm.d_model, generator=torch.Generator().manual_seed(0))
    with_grad = (d * 4).requires_grad_()
    plain = Experiment(lm, (d * 4).detach(), evalset, _cfg()).run(tmp_path / "a", progress=False)
    got = Experiment(lm, with_grad, evalset, _cfg()).run(tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(got.table, plain.table)
    x = torch.tensor([0.0, 1.0, 3.0], requires_grad=True)
    assert mean_ci(x, n_boot=10) == mean_ci([0.0, 1.0, 3.0], n_boot=10)
    pos = torch.tensor([[[1.0, 0.0]], [[2.0, 0.5]]], requires_grad=True)
    neg = torch.tensor([[[-1.0, 0.0]], [[-2.0, 0.1]]], requires_grad=True)
    want = probe_direction(C=1.0)(pos.detach(), neg.detach())
    torch.testing.assert_close(probe_direction(C=1.0)(pos, neg), want)


@pytest.mark.cuda
def test_direction_tensor_on_cuda(lm: LensModel, evalset, tmp_path) -> None:
    d = torch.randn(lm.n_layers, lm.d_model, generator=torch.Generator().manual_seed(0)) * 4
    exp = Experiment(lm, d.cuda(), evalset, _cfg())
    assert exp.config.directions == Experiment(lm, d, evalset, _cfg()).config.directions
    assert mean_ci(torch.tensor([1.0, 2.0]).cuda(), n_boot=10)[0] == 1.5


# ----- 3. attach handles come off by identity, in any order ----------------------------------
@pytest.mark.parametrize("first", ["older", "newer"])
def test_attach_handles_removed_in_any_order(lm: LensModel, prompts, first: str) -> None:
    g = torch.Generator().manual_seed(5)
    d1, d2 = (torch.randn(lm.n_layers, lm.d_model, generator=g) * 3 for _ in range(2))
    op1, op2 = Add(layers=[1], direction=d1), Add(layers=[1, 2], direction=d2)
    batch = lm.tokenize(prompts)
    with torch.no_grad():
        only = {}
        for name, op in (("older", op1), ("newer", op2)):
            with intervene(lm, op):
                only[name] = lm.forward(batch)
        h1, h2 = attach(lm, op1), attach(lm, op2)
        try:
            # a context opened and closed meanwhile must not disturb either handle
            cache_activations(lm, prompts, layers=[0], progress=False)
            (h1 if first == "older" else h2).remove()
            left = lm.forward(batch)
        finally:
            h1.remove()
            h2.remove()
        clean = lm.forward(batch)
    kept = "newer" if first == "older" else "older"
    torch.testing.assert_close(left, only[kept], atol=1e-6, rtol=0)
    assert not torch.allclose(left, clean, atol=1e-3)
    assert _no_hooks(lm)


# ----- 4. candidates that cannot be told apart -----------------------------------------------
def test_candidates_with_the_same_first_token_are_refused(lm: LensModel, prompts) -> None:
    ev = EvalSet(
        "e",
        tuple(prompts),
        tuple(("w1 w2", "w1 w3") for _ in prompts),
        tuple(0 for _ in prompts),
    )
    with pytest.raises(ValueError, match=r"prompt 0: candidates 'w1 w2' and 'w1 w3' .*first token"):
        ev.candidate_ids(lm)
    with pytest.raises(ValueError, match="first token"):
        Experiment(lm, _set(lm), ev, _cfg())


# ----- 5. a [k, d] tensor is indexed by model layer ------------------------------------------
def test_subset_tensor_is_refused(lm: LensModel, evalset, prompts) -> None:
    ds = _set(lm)  # layers (1, 2): ds.vectors row 0 is layer 1
    with pytest.raises(ValueError, match=r"2 rows but the model has 3 layers.*DirectionSet"):
        with intervene(lm, Add(layers=[1], direction=ds.vectors)):
            lm.forward(lm.tokenize(prompts))
    assert _no_hooks(lm)
    with pytest.raises(ValueError, match="DirectionSet"):
        Experiment(lm, ds.vectors, evalset, _cfg())
    with pytest.raises(ValueError, match="DirectionSet"):
        Experiment(lm, ds.vectors, evalset, _cfg(ops=("paper_scale",)))


# ----- 6. artifacts honour the umask ---------------------------------------------------------
@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_artifacts_honour_the_umask(lm: LensModel, evalset, tmp_path) -> None:
    def mode(p) -> int:
        return stat.S_IMODE(os.stat(p).st_mode)

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert mode(tmp_path / "a.txt") == 0o644
        _set(lm).save(tmp_path / "d.safetensors")
        assert mode(tmp_path / "d.safetensors") == 0o644
        Experiment(lm, _set(lm), evalset, _cfg(layers=(1,))).run(tmp_path / "r", progress=False)
        files = [p for p in (tmp_path / "r").rglob("*") if p.is_file()]
        assert files and {mode(p) for p in files} == {0o644}
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b.bin", b"x")
        assert mode(tmp_path / "b.bin") == 0o600
        # overwriting an existing file keeps its mode, as open(path, "w") would
        os.chmod(tmp_path / "a.txt", 0o640)
        atomic_write_text(tmp_path / "a.txt", "y")
        assert mode(tmp_path / "a.txt") == 0o640
        assert (tmp_path / "a.txt").read_text() == "y"
    finally:
        os.umask(old)
    assert not list(tmp_path.glob(".*.tmp"))


# ----- 7. clear errors for bad input ---------------------------------------------------------
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_strengths_are_refused(lm: LensModel, bad: float) -> None:
    d = torch.ones(lm.d_model)
    for make in (
        lambda: Add(layers=[1], direction=d, alpha=bad),
        lambda: Scale(layers=[1], direction=d, alpha=bad),
        lambda: Add(layers=[1], direction=d, scale="resid_norm", norms={1: bad}),
        lambda: NeuronShift(shifts={1: ([0], [bad])}),
    ):
        with pytest.raises(ValueError, match="finite"):
            make()
    with pytest.raises(ValueError, match="finite"):
        ExperimentConfig(layers=(1,), alphas=(1.0, bad))


def test_bad_settings_and_candidates_are_refused(lm: LensModel, prompts) -> None:
    for field, value in (("batch_size", 0), ("n_random", -1), ("n_boot", 0)):
        with pytest.raises(ValueError, match=field):
            ExperimentConfig(layers=(1,), **{field: value})
    cands = tuple(("w1", "w2") for _ in prompts)
    with pytest.raises(ValueError, match=r"correct index 2 of prompt 0 .*2 candidates"):
        EvalSet("e", tuple(prompts), cands, (2, *[0] * (len(prompts) - 1)))
    with pytest.raises(ValueError, match=r"correct index -1"):
        EvalSet("e", tuple(prompts), cands, (-1, *[0] * (len(prompts) - 1)))
    empty = (("w1", ""), *cands[1:])
    with pytest.raises(ValueError, match=r"prompt 0 has an empty candidate"):
        EvalSet("e", tuple(prompts), empty, tuple(0 for _ in prompts))
    blank = EvalSet("e", tuple(prompts), (("w1", " "), *cands[1:]), tuple(0 for _ in prompts))
    with pytest.raises(ValueError, match=r"candidate ' ' of prompt 0 has no token"):
        blank.candidate_ids(lm)


def test_fit_directions_with_cuda_like_inputs_keeps_working(lm: LensModel, prompts) -> None:
    """Activations that require grad are fitted (the data hash detaches them)."""
    acts = cache_activations(lm, prompts, layers=[1], progress=False)
    pos = acts.tensor[:3].clone().requires_grad_()
    neg = acts.tensor[3:].clone().requires_grad_()
    ds = fit_directions(pos, neg, probe_direction(C=1.0))
    want = fit_directions(pos.detach(), neg.detach(), probe_direction(C=1.0))
    torch.testing.assert_close(ds.vectors, want.vectors)
    assert ds.data_hash == want.data_hash


# ----- the model's dtype travels with the artifacts (#17) -----------------------------------
def test_directions_record_the_model_dtype(lm: LensModel, prompts, tmp_path) -> None:
    half = len(prompts) // 2
    acts = cache_activations(lm, prompts, layers=[1, 2], progress=False)
    assert acts.meta["model_dtype"] == "float32" == str(lm.dtype).removeprefix("torch.")
    ds = fit_directions(acts.subset(range(half)), acts.subset(range(half, len(prompts))))
    assert ds.model_dtype == "float32" and ds.vectors.dtype == torch.float64
    loaded = DirectionSet.load(ds.save(tmp_path / "d.safetensors"))
    assert loaded.model_dtype == "float32"
    from_tensors = fit_directions(acts.tensor[:half], acts.tensor[half:], layers=[1, 2], model=lm)
    assert from_tensors.model_dtype == "float32"


def test_resume_refuses_the_same_model_in_another_dtype(
    lm: LensModel, evalset, tmp_path, model_dirs
) -> None:
    from liref_lens import load_model

    arch = "gpt2" if "gpt2" in lm.architecture.lower() else "llama"
    bf16 = load_model(str(model_dirs[arch]), device="cpu", dtype=torch.bfloat16, backend=lm.backend)
    assert bf16.fingerprint == lm.fingerprint  # the fingerprint alone cannot tell them apart
    Experiment(lm, _set(lm), evalset, _cfg()).run(tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"the model dtype changed \(torch.float32 -> torch.bf"):
        Experiment(bf16, _set(bf16), evalset, _cfg()).run(tmp_path / "run", progress=False)


def test_resume_refuses_the_other_attention_path(lm: LensModel, evalset, tmp_path) -> None:
    # fused (SDPA) and eager attention agree to rounding in float32, but change greedy tokens
    # in bfloat16: a folder computed on one path must not be completed on the other (#21)
    if lm.attention_path != "sdpa":
        assert lm.backend == "hooked_transformer"  # the legacy model never fuses
        return
    Experiment(lm, _set(lm), evalset, _cfg()).run(tmp_path / "run", progress=False)
    lm.sdpa = False
    try:
        assert lm.attention_path == "eager"
        with pytest.raises(ValueError, match=r"the attention changed \(sdpa -> eager\)"):
            Experiment(lm, _set(lm), evalset, _cfg()).run(tmp_path / "run", progress=False)
        # and a change made after the experiment was built is seen too
        exp = Experiment(lm, _set(lm), evalset, _cfg())
        lm.sdpa = True
        exp.run(tmp_path / "run", progress=False)  # same path as the folder: resumes
    finally:
        lm.sdpa = True
