"""The whole real-model protocol at small sizes, shared by the SmolLM2 and Gemma 3 tests."""

from __future__ import annotations

import json
from pathlib import Path

from liref_lens import LensModel
from liref_lens.realdemo import run_real_demo, survival

CONTRASTS = ["gsm8k_vs_nq", "mmlu_pro_categories", "mgsm_de_vs_nq", "testbed_cues"]


def check_protocol(lm: LensModel, out: Path) -> None:
    """Every design, transfer and steering step runs offline on ``lm``, and the answer the
    product gives by default is the honest one: GSM8K vs NQ-open separates perfectly, and so
    does prompt length, so no layer beats the trivial readers there."""
    r = run_real_demo(out, model=lm, n=12, n_eval=6, n_random=1, n_boot=100, progress=False)
    assert list(dict.fromkeys(r.scores["contrast"])) == CONTRASTS
    assert set(r.transfer["train"]) == set(r.transfer["test"]) == set(CONTRASTS)
    assert len(r.scores["layer"].unique()) == lm.n_layers - 1
    held = r.designs[(r.designs["design"] == "heldout") & (r.designs["contrast"] == CONTRASTS[0])]
    assert held["value"].max() >= 0.9  # the datasets separate...
    base = r.baselines[r.baselines["contrast"] == CONTRASTS[0]].set_index("feature")
    assert base.loc["length", "auroc"] >= 0.95  # ...and so does their length
    assert not held["beats_baseline"].any()  # so no layer beats the readers (paired)
    assert (r.scores["value"].between(0, 1) | (r.scores["score"] == "cohens_d")).all()
    table = survival(r.scores, r.designs, r.transfer, CONTRASTS[0])
    assert set(table["contrast"]) == set(CONTRASTS)
    kinds = {"fitted", "random", "shuffled", "covariance"}
    assert set(r.effects["direction"]) == kinds
    record = json.loads((out / "run.json").read_text())
    assert record["fingerprint"] == lm.fingerprint and record["steer_layer"] == r.steer_layer
    assert r.report.stat().st_size > 100_000
