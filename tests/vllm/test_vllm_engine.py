"""The vLLM backend against liref_lens itself, on SmolLM2-135M and a tiny Llama (float32, greedy).

Steered tokens equal `liref_lens.generate` with the same op (Add, ProjectOut, Scale,
paper_scale; two layers; every position or the last prompt token); activations read through
vLLM equal `cache_activations`; a batch that mixes ops gives each request the tokens it gets
alone; directions fitted on vLLM's activations carry the engine's provenance.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from vllm_helpers import PROMPTS, SMOL_PROMPTS, start

from liref_lens import (
    Add,
    Compose,
    NeuronShift,
    ProjectOut,
    Scale,
    at,
    cache_activations,
    fit_directions,
    generate,
    last,
    load_model,
    mean,
    paper_scale,
)

SITES4 = ("resid_pre", "resid_post", "attn_out", "mlp_out")
# (model, the two layers steered, alphas for add / scale / paper_scale)
CASES = {"smollm2-135m": ((3, 20), 4.0, 8.0, 1.5), "tiny": ((0, 2), 4.0, 8.0, 3.0)}
N_NEW = 6


@pytest.fixture(scope="module", params=list(CASES))
def served(request: pytest.FixtureRequest, tiny_dir):
    """(engine, LensModel, prompts, directions fitted on the engine) for one model."""
    name = str(tiny_dir) if request.param == "tiny" else request.param
    engine = start(name)
    try:
        lm = load_model(name, device="cpu")
        prompts = PROMPTS if request.param == "tiny" else SMOL_PROMPTS
        acts = engine.read(prompts, sites="resid_pre")
        ds = fit_directions(acts.subset([0, 2]), acts.subset([1, 3]), model=engine)
        yield request.param, engine, lm, prompts, ds
    finally:
        engine.close()


def _op(kind: str, layer: int, where, ds, lm, alphas):
    a_add, a_scale, a_paper = alphas
    common = dict(layers=[layer], direction=ds, positions=where, allow_transfer=True)
    if kind == "add":
        return Add(alpha=a_add, **common)
    if kind == "project_out":
        return ProjectOut(sites=["resid_post"], **common)
    if kind == "scale":
        return Scale(alpha=a_scale, sites=["resid_pre", "mlp_out"], **common)
    ps = paper_scale(ds, a_paper, lm, source_layer=layer)
    ops = [dataclasses.replace(o, positions=where, allow_transfer=True) for o in ps.flatten()]
    return Compose(ops=tuple(ops))


def test_same_ids_same_tokens(served) -> None:
    _, engine, lm, prompts, _ = served
    assert engine.encode(prompts) == lm.encode(prompts)
    want = generate(lm, prompts, N_NEW, stop_at_eos=False).tokens
    assert engine.generate(prompts, N_NEW, stop_at_eos=False).tokens == want
    # stopping at EOS: the same tokens, EOS kept, and the same texts
    want = generate(lm, prompts, 3 * N_NEW)
    got = engine.generate(prompts, 3 * N_NEW)
    assert got.tokens == want.tokens and got.texts == want.texts


@pytest.mark.parametrize("where", ["all", "last"])
@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("kind", ["add", "project_out", "scale", "paper_scale"])
def test_steered_tokens_equal_liref_generate(served, kind: str, which: int, where: str) -> None:
    model, engine, lm, prompts, ds = served
    layers, *alphas = CASES[model]
    op = _op(kind, layers[which], "all" if where == "all" else last(), ds, lm, alphas)
    want = generate(lm, prompts, N_NEW, ops=[op], stop_at_eos=False).tokens
    got = engine.generate(prompts, N_NEW, ops=[op], stop_at_eos=False).tokens
    assert got == want
    if where == "all" and kind != "project_out":  # the op is strong enough to matter
        assert want != generate(lm, prompts, N_NEW, stop_at_eos=False).tokens


def test_reads_equal_cache_activations(served) -> None:
    _, engine, lm, prompts, _ = served
    layers = [0, lm.n_layers // 2, -1]
    got = engine.read(prompts, layers=layers, sites=SITES4)
    want = cache_activations(lm, prompts, layers=layers, sites=SITES4, progress=False)
    assert got.layers == want.layers and got.position == want.position == "last()"
    assert torch.equal(got.token_rank, want.token_rank)
    for site in SITES4:
        diff = (got[site] - want[site]).double().norm(dim=-1)
        assert float((diff / want[site].double().norm(dim=-1)).max()) < 1e-4, site
    at1 = engine.read(prompts, layers=[1], sites="resid_post", position=at(1))
    ref = cache_activations(lm, prompts, [1], "resid_post", position=at(1), progress=False)
    assert torch.allclose(at1.tensor, ref.tensor, rtol=1e-4, atol=1e-5)


def test_mixed_batch_gives_each_request_its_own_tokens(served) -> None:
    model, engine, lm, prompts, ds = served
    layers, *alphas = CASES[model]
    ops = [
        (),
        (_op("add", layers[0], "all", ds, lm, alphas),),
        (_op("scale", layers[1], "generated", ds, lm, alphas),),
        (
            _op("project_out", layers[0], last(), ds, lm, alphas),
            _op("add", layers[1], "prompt", ds, lm, alphas),
        ),
        (_op("add", layers[0], "all", ds, lm, alphas),),  # the same prompt as request 0
    ]
    rows = [prompts[0], prompts[1], prompts[2], prompts[3], prompts[0]]
    mixed = engine.generate_each(rows, ops, N_NEW, stop_at_eos=False).tokens
    for i, (prompt, request_ops) in enumerate(zip(rows, ops, strict=True)):
        alone = engine.generate([prompt], N_NEW, ops=request_ops, stop_at_eos=False).tokens[0]
        assert mixed[i] == alone, i
    unsteered = generate(lm, [rows[0]], N_NEW, stop_at_eos=False).tokens[0]
    assert mixed[0] == unsteered and mixed[4] != unsteered


def test_provenance_and_errors(served) -> None:
    model, engine, lm, prompts, ds = served
    assert ds.model_fingerprint == engine.fingerprint != lm.fingerprint
    engine.generate(prompts[:1], 2, ops=[Add(layers=[1], direction=ds, alpha=1.0)])
    with pytest.raises(ValueError, match="allow_transfer"):
        generate(lm, prompts[:1], 2, ops=[Add(layers=[1], direction=ds, alpha=1.0)])
    with pytest.raises(KeyError, match="mlp_post"):
        engine.generate(prompts[:1], 2, ops=[NeuronShift(shifts={1: ([0], [1.0])})])
    with pytest.raises(KeyError, match="fused kernel"):
        engine.read(prompts[:1], sites="pattern")
    with pytest.raises(ValueError, match="one token per prompt"):
        engine.read(prompts[:1], position=mean())
    with pytest.raises(ValueError, match="zero norm"):
        engine.generate(
            prompts[:1], 2, ops=[ProjectOut(layers=[1], direction=torch.zeros(engine.d_model))]
        )
    assert engine.eager
    engine.eager = False  # as an engine started with enforce_eager=False reports itself
    try:
        with pytest.raises(ValueError, match="enforce_eager=True"):
            engine.generate(prompts[:1], 2, ops=[Add(layers=[1], direction=ds, alpha=1.0)])
    finally:
        engine.eager = True
    # the engine still serves after every refused call
    assert (
        engine.generate(prompts[:1], 2, stop_at_eos=False).tokens
        == generate(lm, prompts[:1], 2, stop_at_eos=False).tokens
    )
