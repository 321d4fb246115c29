"""vLLM engines for the backend's tests (run by `nox -s vllm`, in vLLM's own environment).

One engine per model, shared by all tests of a module (each start costs 20-60 s on a CPU):
SmolLM2-135M (the de-quantized ``smollm2-135m`` folder) and a tiny Llama built from a config
(head dimension 32: vLLM's CPU attention has no kernel below that). Each engine's reference is
the same checkpoint loaded by `liref_lens.load_model`, in float32, decoding greedily.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tests.conftest import build_tiny

#: vLLM's CPU backend pins its OpenMP threads; one worker on core 0 by default, a 1 GiB KV cache.
ENV_DEFAULTS = {
    "VLLM_CPU_OMP_THREADS_BIND": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "TOKENIZERS_PARALLELISM": "false",
}


def pytest_configure(config: pytest.Config) -> None:
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # Deprecations inside vLLM and its torch extensions, which we cannot act on.
    for line in (
        "ignore::FutureWarning:vllm.*",
        "ignore::DeprecationWarning:vllm.*",
        "ignore::UserWarning:vllm.*",
        "ignore::DeprecationWarning:ray.*",
        "ignore:.*reduce_op.*:FutureWarning",
        "ignore::ResourceWarning",
        "ignore::pytest.PytestUnraisableExceptionWarning",
        # torch's own deprecations, raised while vLLM imports torch.jit / dynamo / inductor
        "ignore::DeprecationWarning:torch.*",
        "ignore::FutureWarning:torch.*",
        "ignore::UserWarning:torch.*",
    ):
        config.addinivalue_line("filterwarnings", line)
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vllm-tiny")
    return build_tiny("llama", root / "tiny-llama", hidden_size=128, intermediate_size=192)
