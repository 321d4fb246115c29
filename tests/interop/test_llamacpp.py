"""llama.cpp (llama-cpp-python): where a control vector's ``direction.N`` lands, found by running.

SmolLM2's Q4_1 GGUF runs in llama.cpp; this toolkit runs the same file de-quantized to float32.
Their unsteered next-token distributions differ by the quantisation (llama.cpp's Q4_1 kernels
also quantise activations): that gap is measured first, as the largest per-position
KL(float32 || llama.cpp). Then a file written by `to_control_vector` is set on llama.cpp with
`apply_control_vector` and the steering *shift* (steered minus unsteered log-probabilities, at
every position of the prompt) is compared with this toolkit's `Add`:

- at the site the file was exported from, llama.cpp's steered distribution is as close to ours
  as the unsteered ones are (max KL within twice the gap plus 0.01) and the shifts agree
  (relative error below 0.25 on each position's 100 most probable tokens);
- the off-by-one readings (``direction.N`` at ``resid_pre`` N, or at ``resid_post`` N + 1) and
  an `Add` at the last position only fail both criteria by a wide margin: llama.cpp adds
  ``direction.N`` to block N's output at every position.

Measured on this machine (llama-cpp-python 0.3.36 built with GGML_NATIVE=OFF, one thread):
unsteered max KL 0.043 (11 positions); exported site: max KL 0.026-0.035, relative shift error
0.035-0.15; off by one: max KL 0.62-1.7, relative error 0.37-0.55; last position only: max KL
1.2-3.2, relative error 3.0-8.8.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from llama_cpp import Llama

from liref_lens import Add, DirectionSet, LensModel, intervene, last
from liref_lens.export import apply_control_vector, to_control_vector
from liref_lens.gguf import find_gguf

PROMPT = "The quick brown fox jumps over the lazy dog because"
TOP = 100  # the shifts are compared on each position's most probable tokens


@pytest.fixture(scope="module")
def llm():
    model = Llama(
        model_path=str(find_gguf("smollm2-135m")), logits_all=True, n_ctx=128, n_batch=128,
        n_threads=1, verbose=False,
    )  # fmt: skip
    yield model
    model.close()


def _llama_logp(llm: Llama, ids: list[int]) -> torch.Tensor:
    llm.reset()
    llm.eval(ids)
    logits = torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float64))
    return torch.log_softmax(logits, -1)


def _lens_logp(lm: LensModel, ids: list[int], *ops) -> torch.Tensor:
    with torch.no_grad(), intervene(lm, *ops) if ops else nullcontext():
        logits = lm.forward(lm.pad([ids]))[0].double()
    return torch.log_softmax(logits, -1)


def _max_kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """The largest per-position KL(p || q) of two [pos, vocab] log-probability tensors."""
    return float((p.exp() * (p - q)).sum(-1).max())


def _rel(shift: torch.Tensor, want: torch.Tensor, top: torch.Tensor) -> float:
    """Relative error of a log-probability shift on the tokens ``top`` ([pos, k] indices)."""
    shift, want = shift.gather(1, top), want.gather(1, top)
    return float((shift - want).norm() / want.norm())


@pytest.fixture(scope="module")
def baseline(llm, smollm2):
    ids = smollm2.encode([PROMPT])[0]
    ours, theirs = _lens_logp(smollm2, ids), _llama_logp(llm, ids)
    return ids, ours, theirs, _max_kl(ours, theirs)


def test_unsteered_quantisation_gap(baseline) -> None:
    ids, ours, theirs, gap = baseline
    print(f"unsteered max KL(float32 || llama.cpp Q4_1) over {len(ids)} positions: {gap:.4f}")
    assert gap < 0.1
    assert float((ours.argmax(-1) == theirs.argmax(-1)).float().mean()) >= 0.8


@pytest.mark.parametrize(
    ("layer", "site"), [(11, "resid_pre"), (20, "resid_post"), (29, "resid_post")]
)
def test_control_vector_lands_at_block_output_on_every_position(
    llm, smollm2, smollm2_directions: DirectionSet, baseline, tmp_path: Path, layer: int, site: str
) -> None:
    ids, ours, theirs, gap = baseline
    ds = DirectionSet(
        smollm2_directions.vectors[[min(layer, 29)]], layers=(layer,), site=site,
        model_fingerprint=smollm2_directions.model_fingerprint, n_layers=30,
    )  # fmt: skip
    path = to_control_vector(ds, tmp_path / "v.gguf", strength=1.0)
    apply_control_vector(llm, path)
    try:
        steered = _llama_logp(llm, ids)
    finally:
        apply_control_vector(llm, None)
    shift = steered - theirs
    block = layer - 1 if site == "resid_pre" else layer
    readings = {
        "exported site": Add(layers=[layer], sites=[site], direction=ds),
        "direction.N at resid_pre N": Add(
            layers=[block], direction=ds, source_layer=layer, allow_transfer=True
        ),
        "at every position but only the last": Add(
            layers=[layer], sites=[site], direction=ds, positions=last()
        ),
    }
    if block + 1 < smollm2.n_layers:
        readings["direction.N at resid_post N + 1"] = Add(
            layers=[block + 1], sites=["resid_post"], direction=ds, source_layer=layer,
            allow_transfer=True,
        )  # fmt: skip
    errors = {}
    for name, op in readings.items():
        mine = _lens_logp(smollm2, ids, op)
        top = mine.topk(TOP, dim=-1).indices  # where this reading puts the probability mass
        errors[name] = (_rel(shift, mine - ours, top), _max_kl(mine, steered))
    print(f"layer {layer} {site} (direction.{block}): unsteered KL {gap:.4f}; {errors}")
    rel, kl = errors.pop("exported site")
    assert rel < 0.25 and kl <= 2 * gap + 0.01
    for name, (wrong_rel, wrong_kl) in errors.items():
        assert wrong_rel > 2 * rel and wrong_kl > 2 * gap + 0.01, name


def test_clearing_restores_the_unsteered_model(llm, smollm2_directions, baseline, tmp_path) -> None:
    ids, _, theirs, _ = baseline
    path = to_control_vector(smollm2_directions, tmp_path / "v.gguf", layers=[5, 15], strength=2.0)
    apply_control_vector(llm, path)
    assert not torch.equal(_llama_logp(llm, ids), theirs)
    apply_control_vector(llm, None)
    assert torch.equal(_llama_logp(llm, ids), theirs)


def test_a_vector_of_another_width_is_refused(llm, tmp_path: Path) -> None:
    ds = DirectionSet(torch.ones(1, 8), layers=(3,), site="resid_post")
    with pytest.raises(ValueError, match="width 8, this model's n_embd is 576"):
        apply_control_vector(llm, to_control_vector(ds, tmp_path / "v.gguf"))
