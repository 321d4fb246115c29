"""The parts of the vLLM backend that need no vLLM: site mapping, checks, plans, fingerprints.

The engine itself (ops inside vLLM's layers, reads, tensor parallelism) is tested against
liref_lens in tests/vllm, which `nox -s vllm` runs in vLLM's own environment.
"""

from __future__ import annotations

import sys

import pytest
import torch

from liref_lens import Add, NeuronShift, ProjectOut, Scale, at, every, last, mean, span
from liref_lens.backends._vllm_hooks import Rule, layout
from liref_lens.backends._vllm_model import ModelFacts, check_layout
from liref_lens.backends._vllm_plan import build_plan, prompt_rule, read_position
from liref_lens.experiment import EvalSet, Experiment, ExperimentConfig


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> ModelFacts:
    from tests.conftest import build_tiny

    path = build_tiny("llama", tmp_path_factory.mktemp("facts") / "tiny", hidden_size=64)
    return ModelFacts(path)


def test_sites_map_to_places_in_the_decoder_layer(facts: ModelFacts) -> None:
    assert facts.n_layers == 3 and facts.d_model == 64 and facts.width("mlp_post") == 48
    assert facts.hook_name(0, "resid_pre").startswith("model.layers[0] input")
    assert facts.hook_name(-1, "mlp_out").startswith("model.layers[2].mlp output")
    with pytest.raises(KeyError, match="fused gate_up_proj"):
        facts.hook_name(1, "mlp_post")
    with pytest.raises(KeyError, match="one fused kernel"):
        facts.hook_name(1, "pattern")
    with pytest.raises(KeyError, match="unknown hook site"):
        facts.hook_name(1, "resid_mid")
    with pytest.raises(ValueError, match="out of range"):
        facts.hook_name(3, "resid_pre")


def test_fingerprint_follows_the_weights_not_their_dtype(tmp_path) -> None:
    from tests.conftest import build_tiny
    from transformers import AutoModelForCausalLM

    a = build_tiny("llama", tmp_path / "a", hidden_size=64)
    b = build_tiny("llama", tmp_path / "b", seed=1, hidden_size=64)
    half = tmp_path / "half"
    AutoModelForCausalLM.from_pretrained(a, dtype=torch.bfloat16).save_pretrained(half)
    ModelFacts(a).tokenizer.save_pretrained(half)
    fa, fb, fh = (ModelFacts(p).fingerprint for p in (a, b, half))
    assert fa == fh != fb and len(fa) == 16


def test_unknown_layer_layout_is_refused_with_what_is_known(tmp_path) -> None:
    from tests.conftest import build_tiny
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(build_tiny("qwen2", tmp_path / "q"))
    info = layout(hf)  # a real model whose layers are not vLLM's
    assert info["n_layers"] == 3 and not info["known"]
    with pytest.raises(TypeError, match="Qwen2DecoderLayer.*knows the layout of.*LlamaDecoder"):
        check_layout(info)
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        check_layout({"known": True, "pipeline_parallel_size": 2})


def test_position_rules_resolve_per_request() -> None:
    assert [Rule("prompt").hits(p, 3) for p in (2, 3)] == [True, False]
    assert [Rule("generated").hits(p, 3) for p in (2, 3)] == [False, True]
    assert prompt_rule(last(), 4, 0) == Rule("at", frozenset({3}))
    assert prompt_rule(at(-2), 4, 0) == Rule("at", frozenset({2}))
    assert prompt_rule(every(), 3, 0) == Rule("at", frozenset({0, 1, 2}))
    cue = span("cue", [(0, 1), (1, 3)], reduce="mean")
    assert prompt_rule(cue, 4, 1) == Rule("at", frozenset({1, 2}))  # prompt 1's own range
    assert read_position(last(), 5, 0) == (4, 4)
    with pytest.raises(ValueError, match="one token per prompt"):
        read_position(mean(), 5, 0)


def test_plan_keeps_each_requests_op_order_and_ships_ops_once(facts: ModelFacts) -> None:
    v = torch.randn(facts.d_model, generator=torch.Generator().manual_seed(0))
    a = Add(layers=[1], direction=v, alpha=2.0)
    s = Scale(layers=[1, -1], direction=v, alpha=-1.0, positions="generated")
    plan = build_plan(facts, 7, [3, 4, 5], [(a, s), (s, a), ()], [0, 1, 2])
    assert plan.ops == [a, s] and plan.plan_id == 7
    assert plan.keys_at == {(1, "resid_pre"): [(0, 0), (0, 1), (1, 0), (1, 1)],
                            (2, "resid_pre"): [(0, 1), (1, 1)]}  # fmt: skip
    assert plan.requests[1].ops == ((1, Rule("generated")), (0, Rule("all")))
    assert plan.requests[2].ops == ()


def test_ops_are_checked_before_they_reach_vllm(facts: ModelFacts) -> None:
    zero = ProjectOut(layers=[1], direction=torch.zeros(facts.d_model))
    with pytest.raises(ValueError, match="zero norm"):
        build_plan(facts, 1, [3], [(zero,)], [0])
    with pytest.raises(KeyError, match="mlp_post"):
        build_plan(facts, 1, [3], [(NeuronShift(shifts={1: ([0], [1.0])}),)], [0])
    wide = Add(layers=[1], direction=torch.ones(facts.d_model + 1))
    with pytest.raises(ValueError, match="width"):
        build_plan(facts, 1, [3], [(wide,)], [0])
    with pytest.raises(ValueError, match="needs norms"):
        build_plan(
            facts, 1, [3], [(Add(layers=[1], direction=torch.ones(64), scale="resid_norm"),)], [0]
        )


def test_load_vllm_without_vllm_says_how_to_install(monkeypatch) -> None:
    from liref_lens.backends.vllm import load_vllm

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match=r"liref-lens\[vllm\]"):
        load_vllm("smollm2-135m")


def test_experiment_engine_needs_generation(lm, evalset: EvalSet) -> None:
    cfg = ExperimentConfig(layers=(1,), n_random=0, n_boot=10)
    with pytest.raises(ValueError, match="engine= only generates"):
        Experiment(lm, torch.zeros(lm.n_layers, lm.d_model), evalset, cfg, engine=object())


def test_a_run_that_edited_nothing_fails(facts: ModelFacts) -> None:
    from liref_lens.backends._vllm_run import _check_applied

    v = torch.ones(facts.d_model)
    add = Add(layers=[1], direction=v, alpha=1.0)
    late = Add(layers=[1], direction=v, alpha=1.0, positions="generated")
    plan = build_plan(facts, 1, [3, 3], [(add,), (late,)], [0, 1])
    with pytest.raises(RuntimeError, match="without applying Add to any token"):
        _check_applied(plan, {"edited": {}})  # the workers found none of the requests
    _check_applied(plan, {"edited": {(0, 0): 3}})  # "generated" may legitimately edit nothing
