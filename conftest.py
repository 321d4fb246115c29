"""Doctest namespace: the docstring examples in src/ run against a tiny model, offline.

Names available in every example: ``lm`` (a tiny Llama-style model through the default
backend), ``prompts`` and ``labels`` (two groups), ``ds`` / ``directions`` (fitted
difference-in-means directions), ``evalset``, ``add_op`` (an `Add` op), ``accuracy``,
``val_items`` / ``test_items`` (for `search_truncation`), ``tiny_dir`` (the tiny model's
folder), and ``tmp`` (a fresh folder).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

# tests/vllm needs vLLM, which lives in its own environment (`nox -s vllm` sets this variable);
# the main suite never collects those tests, and so never imports vLLM.
collect_ignore = [] if os.environ.get("LIREF_LENS_VLLM_TESTS") == "1" else ["tests/vllm"]


def pytest_report_header(config: pytest.Config) -> str | None:
    if collect_ignore:
        return "tests/vllm: not collected (needs vLLM in its own environment; run `nox -s vllm`)"
    return None


@pytest.fixture(scope="session")
def _doctest_objects(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import torch
    from tests.conftest import build_tiny

    from liref_lens import EvalSet, cache_activations, fit_directions, load_model
    from liref_lens.interventions import Add

    path = build_tiny("llama", tmp_path_factory.mktemp("doctest") / "tiny-llama")
    lm = load_model(str(path), device="cpu")
    prompts = ["Q: 2 + 3 = ? A:", "w1 w2 w3", "Q: w5 + w6 = ? A:", "w9 w9 w10"]
    labels = ["reasoning", "memory", "reasoning", "memory"]
    acts = cache_activations(lm, prompts, layers=[1, 2], progress=False)
    ds = fit_directions(acts.subset([0, 2]), acts.subset([1, 3]), model=lm)
    evalset = EvalSet(
        "toy",
        tuple(prompts),
        tuple(("w1", "w2") for _ in prompts),
        (0, 1, 0, 1),
        tuple(labels),
        ("one", "two"),
    )

    def accuracy(model, items) -> float:
        with torch.no_grad():
            logits = model.forward(model.tokenize([p for p, _ in items]))[:, -1]
        want = torch.tensor([model.tokenizer.convert_tokens_to_ids(a) for _, a in items])
        return float((logits.argmax(-1) == want).float().mean())

    return {
        "lm": lm,
        "prompts": prompts,
        "labels": labels,
        "ds": ds,
        "directions": ds,
        "evalset": evalset,
        "add_op": Add(layers=[1], direction=ds, alpha=1.0),
        "accuracy": accuracy,
        "val_items": [("w1 w2", "w3")],
        "test_items": [("w4 w5", "w6")],
        "tiny_dir": path,
    }


@pytest.fixture(autouse=True)
def _doctest_namespace(request: pytest.FixtureRequest, tmp_path) -> None:
    if isinstance(request.node, pytest.DoctestItem):
        ns = request.getfixturevalue("doctest_namespace")
        ns.update(request.getfixturevalue("_doctest_objects"))
        ns["tmp"] = tmp_path


# ----- tests that need what a user's clone may lack (tests/needs.py) -------------------------
_DESELECTED: dict[str, int] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests.needs import missing, needs

    lacking_now = missing()
    keep, drop = [], []
    for item in items:
        lacking = sorted(set(needs(item)) & lacking_now)
        (drop if lacking else keep).append(item)
        for name in lacking:
            _DESELECTED[name] = _DESELECTED.get(name, 0) + 1
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.needs import NEEDS

    for name, n in sorted(_DESELECTED.items()):
        terminalreporter.write_line(
            f"liref_lens: {n} test(s) needing {name!r} deselected: {NEEDS[name][1]()}"
        )
