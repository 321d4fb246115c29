from __future__ import annotations

import numpy as np
import pytest
import torch

from liref_lens import LensModel, at, cache_activations, last
from liref_lens.experiment import EvalSet
from liref_lens.generation import generate
from liref_lens.interventions import Add, intervene
from liref_lens.plotting import layer_position_heatmap
from liref_lens.positional import fit_by_position, rank_positions, token_spans
from liref_lens.positions import span

PROMPTS = [
    "w1 w2 w3 w4 w5 w6",
    "w7 w8",
    "Q: 2 + 3 = ? A:",
    "w9 w9 w10",
    "w3 w1 w4 w4",
    "Q: w5 w6 w7 w8 w9 w10 w11 ?",
    "w2 w2 w2",
    "w6 w5 w4 w3 w2",
]
LABELS = ["reasoning", "memory"] * 4


@pytest.fixture
def spans(lm: LensModel) -> list[tuple[int, int]]:
    # the second and third words of each prompt (as characters -> tokens)
    chars = []
    for p in PROMPTS:
        words = p.split()
        start = len(words[0]) + 1
        chars.append((start, start + len(" ".join(words[1:3]))))
    return token_spans(lm, PROMPTS, chars)


def test_token_spans(lm: LensModel, spans) -> None:
    bos = 1 if lm.default_prepend_bos else 0
    assert spans == [(1 + bos, min(3, len(p.split())) + bos) for p in PROMPTS]


def _states(hf_model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        hs = hf_model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    return torch.stack(hs[:-1])[:, 0].double().numpy()  # [layer, pos, d]


def test_per_position_fit_equals_aligned_float64(lm: LensModel, hf_model, spans) -> None:
    where = {"last": last(), "last-1": at(-2), "second": at(1), "cue": span("cue", spans, "mean")}
    pdirs = fit_by_position(lm, PROMPTS, LABELS, where, layers=[1, 2])
    ids = lm.encode(PROMPTS)
    pick = {
        "last": lambda st, n, i: st[:, n - 1],
        "last-1": lambda st, n, i: st[:, n - 2],
        "second": lambda st, n, i: st[:, 1],
        "cue": lambda st, n, i: st[:, spans[i][0] : spans[i][1]].mean(1),
    }
    for name, fn in pick.items():
        rows = np.stack([fn(_states(hf_model, x), len(x), i) for i, x in enumerate(ids)])
        lab = np.array(LABELS)
        want = rows[lab == "reasoning"].mean(0) - rows[lab == "memory"].mean(0)  # [layer, d]
        for layer in (1, 2):
            np.testing.assert_allclose(pdirs.at(layer, name).numpy(), want[layer], atol=1e-5)


def test_single_position_equals_restricted_op(lm: LensModel) -> None:
    pdirs = fit_by_position(lm, PROMPTS, LABELS, {"last": last(), "prev": at(-2)}, layers=[1])
    batch = lm.tokenize(PROMPTS)
    with torch.no_grad():
        with intervene(lm, pdirs.ops([1], alpha=2.0, positions=["prev"])):
            got = lm.forward(batch)
        with intervene(
            lm, Add(direction=pdirs.at(1, "prev"), alpha=2.0, layers=[1], positions=at(-2))
        ):
            want = lm.forward(batch)
        clean = lm.forward(batch)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert not torch.allclose(got, clean)


def test_fallback_and_own_vectors(lm: LensModel) -> None:
    pdirs = fit_by_position(lm, PROMPTS, LABELS, {"last": last(), "second": at(1)}, layers=[1])
    kw = dict(layers=[1], progress=False)
    base = {
        p: cache_activations(lm, PROMPTS, position=p, **kw).tensor[:, 0]
        for p in (last(), at(1), at(-2))
    }
    with intervene(lm, pdirs.ops([1], positions=["last"], fallback="second")):
        steered = {
            p: cache_activations(lm, PROMPTS, position=p, **kw).tensor[:, 0]
            for p in (last(), at(1), at(-2))
        }
    torch.testing.assert_close(
        steered[last()], base[last()] + pdirs.at(1, "last").float(), atol=1e-5, rtol=0
    )
    for p in (at(1), at(-2)):  # every other prompt token gets the fallback vector
        torch.testing.assert_close(
            steered[p], base[p] + pdirs.at(1, "second").float(), atol=1e-5, rtol=0
        )


def test_span_ops_survive_the_kv_cache(lm: LensModel, spans) -> None:
    pdirs = fit_by_position(lm, PROMPTS, LABELS, {"cue": span("cue", spans)}, layers=[1])
    op = pdirs.ops([1], alpha=6.0, generated="cue")
    cached = generate(lm, PROMPTS, 5, ops=[op], stop_at_eos=False, batch_size=3)
    full = generate(lm, PROMPTS, 5, ops=[op], stop_at_eos=False, use_cache=False)
    assert cached.tokens == full.tokens
    with pytest.raises(ValueError, match="needs to know which prompts"):
        span("cue", spans).select(torch.ones(2, 4, dtype=torch.long))


def test_rank_positions(lm: LensModel) -> None:
    where = {"last": last(), "prev": at(-2)}
    pdirs = fit_by_position(lm, PROMPTS, LABELS, where, layers=[1, 2])
    evalset = EvalSet(
        "e",
        tuple(PROMPTS),
        tuple(("w1", "w2") for _ in PROMPTS),
        tuple(0 for _ in PROMPTS),
        tuple(LABELS),
    )
    table, best = rank_positions(
        lm, PROMPTS, LABELS, pdirs, evalset=evalset, n_random=2, alpha=3.0, n_boot=20
    )
    assert set(table.score) == {"auroc", "effect", "effect_random", "effect_vs_random"}
    assert len(table[table.score == "auroc"]) == 4
    vs = table[table.score == "effect_vs_random"]
    top = vs.sort_values("value").iloc[-1]
    assert (best["layer"], best["position"]) == (top.layer, top.position)
    e = table.set_index(["layer", "position", "score"])["value"]
    for layer in (1, 2):
        for pos in where:
            assert e[(layer, pos, "effect_vs_random")] == pytest.approx(
                e[(layer, pos, "effect")] - e[(layer, pos, "effect_random")]
            )
    fig = layer_position_heatmap(table)
    assert fig.data[0].z.shape == (2, 2) and fig.layout.xaxis.title.text == "position"
