"""Tensor parallelism and experiments through the vLLM backend, on the tiny Llama.

``tensor_parallel_size=2`` (two CPU workers, one core each) gives the same steered tokens and
activations as one worker and as liref_lens itself; an `Experiment` whose generation runs on
vLLM gives the same ``gen_acc``/``parse_fail`` values as one that runs `generate`, and records
the engine in its identity. (Pipeline parallelism is not supported: vLLM 0.32's CPU worker
cannot run it.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from vllm_helpers import PROMPTS, start

from liref_lens import (
    Add,
    EvalSet,
    Experiment,
    ExperimentConfig,
    ProjectOut,
    Scale,
    cache_activations,
    generate,
    last,
    load_model,
    paper_scale,
)
from liref_lens.tasks import load_gsm8k

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_model(str(tiny_dir), device="cpu")


@pytest.fixture(scope="module")
def tp2(tiny_dir):
    old = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "0|1"  # one core per tensor-parallel worker
    try:
        engine = start(str(tiny_dir), tensor_parallel_size=2)
    finally:
        if old is None:
            os.environ.pop("VLLM_CPU_OMP_THREADS_BIND")
        else:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = old
    yield engine
    engine.close()


def test_tensor_parallel_gives_the_same_steered_tokens(tp2, tiny) -> None:
    assert tp2.tensor_parallel_size == 2
    v = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(3)) * 4
    ops = [
        [Add(layers=[1], direction=v, alpha=3.0)],
        [ProjectOut(layers=[2], direction=v, sites=["resid_post"], positions=last())],
        [Scale(layers=[0], direction=v, alpha=-2.0, sites=["attn_out", "mlp_out"])],
        [paper_scale(v, 3.0, tiny, source_layer=1)],
    ]
    got = tp2.sweep(PROMPTS, ops, 6, stop_at_eos=False)
    for op_set, gen in zip(ops, got, strict=True):
        assert gen.tokens == generate(tiny, PROMPTS, 6, ops=op_set, stop_at_eos=False).tokens
    sites = ("resid_pre", "attn_out", "mlp_out", "resid_post")
    acts = tp2.read(PROMPTS, layers=[0, 2], sites=sites)
    ref = cache_activations(tiny, PROMPTS, layers=[0, 2], sites=sites, progress=False)
    for site in sites:
        rel = (acts[site] - ref[site]).norm(dim=-1) / ref[site].norm(dim=-1)
        assert float(rel.max()) < 1e-4, site


def test_experiment_generates_through_the_engine(tp2, tiny, tmp_path) -> None:
    task = load_gsm8k(str(DATA / "gsm8k_test.jsonl")).take(4)
    evalset = EvalSet.from_task(task)
    d = torch.randn(tiny.n_layers, tiny.d_model, generator=torch.Generator().manual_seed(0)) * 4
    cfg = ExperimentConfig(
        layers=(1,), alphas=(3.0,), ops=("add", "paper_scale"), n_random=1, n_boot=20,
        max_new_tokens=5,
    )  # fmt: skip
    ours = Experiment(tiny, d, evalset, cfg).run(tmp_path / "ours", progress=False)
    exp = Experiment(tiny, d, evalset, cfg, engine=tp2)
    theirs = exp.run(tmp_path / "vllm", progress=False)
    assert "generation engine" in exp.identity
    pd.testing.assert_frame_equal(ours.per_prompt, theirs.per_prompt)
    assert {"gen_acc", "parse_fail"} <= set(theirs.table.metric)
    # the engine is part of the identity: a folder written by `generate` is not reused
    with pytest.raises(ValueError, match="generation engine changed"):
        Experiment(tiny, d, evalset, cfg, engine=tp2).run(tmp_path / "ours", progress=False)


def test_experiment_refuses_an_engine_on_another_checkpoint(tp2, tmp_path) -> None:
    from tests.conftest import build_tiny

    other = load_model(str(build_tiny("llama", tmp_path / "other", seed=5, hidden_size=128,
                                      intermediate_size=192)), device="cpu")  # fmt: skip
    task = load_gsm8k(str(DATA / "gsm8k_test.jsonl")).take(2)
    cfg = ExperimentConfig(layers=(1,), n_random=0, n_boot=10, max_new_tokens=2)
    d = torch.ones(other.n_layers, other.d_model)
    with pytest.raises(ValueError, match="not serve the same checkpoint"):
        Experiment(other, d, EvalSet.from_task(task), cfg, engine=tp2)


def test_gpu_benchmark_script_runs_and_agrees(tp2, capsys) -> None:
    """benchmarks/vllm_gpu.py's sweep, in its smoke settings, on this engine: it fails unless
    every vLLM generation equals liref_lens's (float32)."""
    from benchmarks.vllm_gpu import SMOKE, sweep

    sweep(tp2, SMOKE, device="cpu", exact=True)
    out = capsys.readouterr().out
    assert "identical generations: 80 of 80" in out and out.rstrip().endswith("ok")
