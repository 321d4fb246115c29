"""repeng (the real package): a converted vector set on repeng's own ``ControlModel`` equals this
toolkit's `Add`, a vector repeng trained, imported, equals its own application, and repeng's
GGUF files and ours carry the same ``direction.N``.

Checked on the tiny GPT-2 and Llama models and on SmolLM2: logits at every position (atol 1e-4
on the tiny models, 1e-3 on SmolLM2's logits of up to ~20) and 8 greedy continuations of 8
tokens; the off-by-one placement is far off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from repeng import ControlModel, ControlVector, DatasetEntry
from tests.interop.helpers import (
    CONTINUE,
    MEMORY,
    REASONING,
    hf_greedy,
    hf_logits,
    lens_logits,
    load_hf,
)
from tests.interop.helpers import max_gap as gap

from liref_lens import Add, generate
from liref_lens.export import from_control_vector, from_repeng, to_control_vector, to_repeng


def _controlled(folder: str, vector: ControlVector, coeff: float = 1.0) -> ControlModel:
    model = ControlModel(load_hf(folder), sorted(vector.directions))
    model.set_control(vector, coeff)
    return model


def test_exported_vector_on_repeng_control_model_equals_add(setting) -> None:
    lm, folder, ds, layer, alpha, atol = setting
    prompts = lm.encode(CONTINUE)
    cv = to_repeng(ds, model_type="llama", layers=[layer], strength=alpha)
    assert sorted(cv.directions) == [layer - 1]
    assert cv.directions[layer - 1].dtype == np.float32
    op = Add(layers=[layer], direction=ds, alpha=alpha)
    want = lens_logits(lm, prompts, op)
    steered = _controlled(folder, cv)
    got = hf_logits(steered, prompts)
    assert gap(got, want) < atol
    ours = generate(lm, CONTINUE, 8, ops=[op], stop_at_eos=False).tokens
    assert hf_greedy(steered, prompts, 8) == ours, "greedy continuations differ"
    steered.reset()
    assert gap(hf_logits(steered, prompts), want) > 100 * gap(got, want)
    wrong = ControlVector("llama", {layer: cv.directions[layer - 1]})  # off by one
    assert gap(hf_logits(_controlled(folder, wrong), prompts), want) > 100 * gap(got, want)


def test_trained_vector_imported_equals_its_own_application(setting) -> None:
    lm, folder, _, layer, _, atol = setting
    hf = load_hf(folder)
    data = [DatasetEntry(p, n) for p, n in zip(REASONING, MEMORY, strict=True)]
    cv = ControlVector.train(hf, lm.tokenizer, data, hidden_layers=[layer - 2, layer - 1])
    ds = from_repeng(cv, site="resid_pre")
    assert ds.layers == (layer - 1, layer) and ds.model_name == hf.config.model_type
    prompts = lm.encode(CONTINUE)
    got = hf_logits(_controlled(folder, cv, 2.0), prompts)
    op = Add(layers=list(ds.layers), direction=ds, alpha=2.0, allow_transfer=True)
    assert gap(got, lens_logits(lm, prompts, op)) < atol


def test_repeng_and_our_gguf_files_agree(smollm2_directions, tmp_path: Path) -> None:
    ds = smollm2_directions
    cv = to_repeng(ds, model_type="llama", layers=[5, 12, 20], strength=2.0)
    cv.export_gguf(str(tmp_path / "repeng.gguf"))  # repeng's own writer
    theirs = from_control_vector(tmp_path / "repeng.gguf", site="resid_pre")
    assert theirs.layers == (5, 12, 20) and theirs.model_name == "llama"
    np.testing.assert_array_equal(
        theirs.vectors.numpy(), (2.0 * ds.vectors[[5, 12, 20]].float()).numpy()
    )
    ours = to_control_vector(ds, tmp_path / "ours.gguf", layers=[5, 12, 20], strength=2.0)
    back = ControlVector.import_gguf(str(ours))  # repeng's own reader
    assert sorted(back.directions) == sorted(cv.directions)
    for block, vec in cv.directions.items():
        np.testing.assert_array_equal(np.asarray(back.directions[block]), vec)
