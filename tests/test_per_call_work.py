"""Work that generation does once per call, not once per decode step (#25).

Each test counts how often a piece of set-up ran during a 5-token generation on the bridge
(`LensModel.step`, its hook points): the KV-cache adapter and the fused attention are installed
once, an op's position mask is built once per step and rule (not in each of its hooks), and the
bridge's hook registry (``hook_dict``, rebuilt with aliases on every read) is read once. Before
#25, each ran on every step (or in every hook).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import torch
from tests.conftest import bridge_only

import liref_lens.attention as attention_module
import liref_lens.interventions as interventions_module
import liref_lens.model as model_module
from liref_lens import LensModel, generate, load_model
from liref_lens.interventions import Op, paper_scale

STEPS = 5


def _gen(lm: LensModel, prompts, ops=()) -> list[list[int]]:
    with bridge_only():
        return generate(lm, prompts, STEPS, ops=list(ops), stop_at_eos=False).tokens


def test_the_cache_adapter_and_fused_attention_are_installed_once(
    lm: LensModel, prompts, monkeypatch
) -> None:
    entered = {"adapter": 0, "fused": 0}
    real_adapter = model_module._bridge_cache_adapter
    real_fused = attention_module._fused_forward

    @contextmanager
    def adapter(bridge, *, enabled):
        entered["adapter"] += 1
        with real_adapter(bridge, enabled=enabled):
            yield

    def fused(*args, **kwargs):
        entered["fused"] += 1
        return real_fused(*args, **kwargs)

    monkeypatch.setattr(model_module, "_bridge_cache_adapter", adapter)
    monkeypatch.setattr(attention_module, "_fused_forward", fused)
    before = _gen(lm, prompts)
    if lm.backend == "bridge":
        assert entered == {"adapter": 1, "fused": lm.n_layers}  # (before #25: 5 and 5 x layers)
    else:
        assert entered == {"adapter": 0, "fused": 0}
    monkeypatch.undo()
    assert _gen(lm, prompts) == before


def test_a_position_mask_is_built_once_per_step_and_rule(lm: LensModel, prompts, monkeypatch):
    built: list[str] = []
    real = interventions_module._window_mask

    def counting(rule, act):
        built.append(str(rule))
        return real(rule, act)

    monkeypatch.setattr(interventions_module, "_window_mask", counting)
    d = torch.randn(lm.n_layers, lm.d_model, generator=torch.Generator().manual_seed(0))
    op = paper_scale(d, 0.5, lm, source_layer=1)  # 3 hooks per layer, one rule
    for engine in ("bridge", "direct"):
        built.clear()
        if engine == "bridge":
            _gen(lm, prompts, [op])
        else:
            generate(lm, prompts, STEPS, ops=[op], stop_at_eos=False)
        assert built == ["all"] * STEPS  # (before #25: 3 x layers x steps)


def test_an_op_is_not_computed_where_its_rule_selects_nothing(lm: LensModel, prompts) -> None:
    """``positions="prompt"`` on decode steps: the edit would be multiplied by zero."""
    calls: list[int] = []

    class Counted(Op):
        def edit(self, act, layer, site):
            calls.append(act.shape[1])
            return torch.ones_like(act)

    _gen(lm, prompts, [Counted(layers=[1], positions="prompt")])
    width = lm.tokenize(prompts).input_ids.shape[1]
    assert calls == [width]  # the prefill only (before #25: one call per step)


def test_the_hook_registry_is_read_once(model_dirs, prompts, monkeypatch) -> None:
    lm = load_model(str(model_dirs["llama"]), device="cpu", backend="bridge")
    reads: list[str] = []
    cls = type(lm.model)
    real = cls.hook_dict

    def counting(self):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith("liref_lens"):  # (TransformerLens' own reads vary by release)
            reads.append(caller)
        return real.fget(self)

    monkeypatch.setattr(cls, "hook_dict", property(counting))
    d = torch.randn(lm.n_layers, lm.d_model, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        _gen(lm, prompts, [paper_scale(d, 0.5, lm, source_layer=1)])
    # once, for LensModel's set of names (before #25: 36, once for each of the 9 hook names
    # in op.check and again in attach, in each call)
    assert reads == ["liref_lens.model"]
