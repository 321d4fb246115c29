"""The noisy-recall world: ground truth, training determinism, loading, truncation measurement.

The measurement is checked against an independent computation on the plain Hugging Face
model: NumPy's SVD written into a copy of the weights, and a plain forward pass.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from liref_lens import LensModel, keep_singular_directions, load_model
from liref_lens.testbed import (
    RecallItem,
    RecallWorld,
    TrainConfig,
    measure_truncation,
    recall_scores,
    train_recall,
)
from liref_lens.weights import rank_of, weight_matrix

TINY = TrainConfig(
    n_layer=2, d_model=16, n_head=2, d_mlp=32, steps=150, batch_size=64, lr=3e-3, eval_every=50
)
WORLD = RecallWorld(n_values=8, length=8, p_noise=0.3)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recall") / "tiny-recall"
    train_recall(path, seed=0, world=WORLD, config=TINY, n_eval=64, progress=False)
    return path


@pytest.fixture(scope="module")
def tiny_lm(tiny_ckpt: Path) -> LensModel:
    return load_model(str(tiny_ckpt), device="cpu", backend="bridge")


@pytest.fixture(scope="module")
def test_items() -> list[RecallItem]:
    return WORLD.sample_items(200, torch.Generator().manual_seed(2))


# ----- the world's ground truth ------------------------------------------------------------
def test_items_carry_their_ground_truth() -> None:
    world = RecallWorld()
    items = world.sample_items(2000, torch.Generator().manual_seed(0))
    positions = set()
    for it in items:
        words = it.prompt.split()
        assert len(words) == world.length and len(world.token_ids(it.prompt)) == 13
        assert words.count("trigger") == 2 and words[-1] == "trigger"
        assert words[it.trigger_position - 1] == "trigger"  # token index: BOS is 0
        assert words[it.trigger_position] == f"v{it.target}" and 0 <= it.target < 32
        assert "noise" not in words
        positions.add(it.trigger_position)
    assert positions == set(range(1, world.length - 1))  # every slot 0..length-3 is used
    assert len({it.target for it in items}) == 32


def test_noise_rate_and_labels() -> None:
    world, n = RecallWorld(p_noise=0.3), 20_000
    ids, label, target = world.sample_batch(n, torch.Generator().manual_seed(1))
    noised = label == world.noise_id
    assert torch.equal(label[~noised], target[~noised])
    assert bool((target >= world.value_offset).all()) and bool((ids[:, -1] == 3).all())
    assert abs(float(noised.float().mean()) - 0.3) < 4 * (0.3 * 0.7 / n) ** 0.5
    label = world.sample_batch(2000, torch.Generator().manual_seed(1))[1]
    items = world.sample_items(2000, torch.Generator().manual_seed(1))  # the same draws
    assert [it.noised for it in items] == (label == world.noise_id).tolist()
    assert RecallWorld(p_noise=0.0).sample_batch(500, torch.Generator())[1].ne(4).all()


def test_bad_worlds_and_prompts_are_refused() -> None:
    for kwargs in ({"p_noise": 1.0}, {"p_noise": -0.1}, {"length": 2}, {"n_values": 1}):
        with pytest.raises(ValueError):
            RecallWorld(**kwargs)
    with pytest.raises(ValueError, match="not in the recall vocabulary"):
        RecallWorld().token_ids("v1 trigger v99 trigger")
    with pytest.raises(ValueError, match="logits must be"):
        recall_scores(torch.zeros(2, 5), RecallWorld(), [RecallItem("v0", 0, 1, False)])


# ----- training --------------------------------------------------------------------------
def _weights(seed: int) -> dict[str, torch.Tensor]:
    cfg = TrainConfig(n_layer=2, d_model=16, n_head=2, d_mlp=32, steps=4, eval_every=2)
    rec = train_recall(None, seed, world=WORLD, config=cfg, n_eval=16, progress=False)
    assert [row["step"] for row in rec["log"]] == [2, 4]
    return {k: v.clone() for k, v in rec["model"].state_dict().items()}


def test_training_is_deterministic_and_leaves_the_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b, c = _weights(5), _weights(5), _weights(6)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_loads_and_matches_the_trained_model(
    tiny_ckpt: Path, tiny_lm: LensModel, test_items: list[RecallItem]
) -> None:
    from transformers import AutoModelForCausalLM

    record = json.loads((tiny_ckpt / "training.json").read_text())
    assert record["world"] == {"kind": "recall", "n_values": 8, "length": 8, "p_noise": 0.3}
    assert record["config"]["n_layer"] == 2 and tiny_lm.n_layers == 2
    prompts = [it.prompt for it in test_items[:20]]
    batch = tiny_lm.tokenize(prompts)
    assert batch.input_ids.tolist() == [WORLD.token_ids(p) for p in prompts]
    hf = AutoModelForCausalLM.from_pretrained(tiny_ckpt).eval()
    with torch.no_grad():
        want = hf(torch.tensor([WORLD.token_ids(p) for p in prompts])).logits
        got = tiny_lm.forward(batch)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # 150 steps learn the noise association: p(noise) moved from ~1/13 towards 0.3
    assert 0.15 < record["metrics"]["p_noise"] < 0.45


# ----- the truncation measurement --------------------------------------------------------
def _plain(hf, items: list[RecallItem]) -> tuple[float, float, float]:
    """Accuracy, mean p(target), mean p(noise) from a plain forward pass and argmax count."""
    ids = torch.tensor([WORLD.token_ids(it.prompt) for it in items])
    with torch.no_grad():
        logits = hf(ids).logits[:, -1].double()
    target = torch.tensor([WORLD.value_offset + it.target for it in items])
    probs = logits.softmax(-1)
    hits = sum(int(logits[i].argmax()) == int(target[i]) for i in range(len(items)))
    return (
        hits / len(items),
        float(probs[range(len(items)), target].mean()),
        float(probs[:, WORLD.noise_id].mean()),
    )


def _edited(hf, layer: int, name: str, keep: list[int]):
    """A copy of ``hf`` with GPT-2 Conv1D ``c_fc`` (W_in) or ``c_proj`` (W_out) of the MLP of
    ``layer`` replaced by the sum of its singular directions ``keep`` (NumPy SVD)."""
    out = copy.deepcopy(hf)
    mlp = out.transformer.h[layer].mlp
    conv = mlp.c_fc if name == "W_in" else mlp.c_proj
    w = conv.weight.detach().double().numpy()  # Conv1D stores [in, out], as TransformerLens
    u, s, vh = np.linalg.svd(w, full_matrices=False)
    new = (u[:, keep] * s[keep]) @ vh[keep]
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(new).float())
    return out


def test_measure_truncation_matches_an_independent_computation(
    tiny_ckpt: Path, tiny_lm: LensModel, test_items: list[RecallItem]
) -> None:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_ckpt).eval()
    before = {k: v.clone() for k, v in tiny_lm.model.state_dict().items()}
    df = measure_truncation(
        tiny_lm, WORLD, test_items, rhos=(0.5, 0.125), n_random=1, seed=3, progress=False
    )
    assert all(torch.equal(v, tiny_lm.model.state_dict()[k]) for k, v in before.items())
    assert df.edit.value_counts().to_dict() == {
        "top_k": 4,
        "random_k": 4,
        "top_k_other_layer": 4,
        "rank_0": 2,
        "none": 1,
    }
    assert (df.n == 200).all() and (df.acc_lo <= df.acc).all() and (df.acc <= df.acc_hi).all()

    def check(row, model) -> None:
        acc, p_target, p_noise = _plain(model, test_items)
        assert row.acc == pytest.approx(acc, abs=1e-12)
        assert row.p_target == pytest.approx(p_target, abs=1e-5)
        assert row.p_noise == pytest.approx(p_noise, abs=1e-5)

    none = df[df.edit == "none"].iloc[0]
    check(none, hf)
    assert 0.1 < none.p_noise < 0.5  # the noise association is there to be measured
    rows = df.set_index(["edit", "matrix", "rho", "draw"])
    # W_in of block 2 is [16, 32]: rho 0.5 keeps rank 8, rho 0.125 rank 2
    assert rows.loc[("top_k", "W_in", 0.5, 0), "rank"] == 8
    assert rows.loc[("top_k", "W_out", 0.125, 0), "rank"] == 2
    check(rows.loc[("top_k", "W_in", 0.5, 0)], _edited(hf, 1, "W_in", list(range(8))))
    check(rows.loc[("top_k", "W_out", 0.125, 0)], _edited(hf, 1, "W_out", [0, 1]))
    check(rows.loc[("top_k_other_layer", "W_in", 0.5, 0)], _edited(hf, 0, "W_in", [*range(8)]))
    check(rows.loc[("rank_0", "W_out", 0.0, 0)], _edited(hf, 1, "W_out", []))
    # the first random draw: 8 of the 16 singular directions, from the seeded generator
    keep = sorted(torch.randperm(16, generator=torch.Generator().manual_seed(3))[:8].tolist())
    check(rows.loc[("random_k", "W_in", 0.5, 0)], _edited(hf, 1, "W_in", keep))


def test_keep_singular_directions_and_bad_input(
    tiny_lm: LensModel, test_items: list[RecallItem]
) -> None:
    w = weight_matrix(tiny_lm, "W_in", 1)
    with keep_singular_directions(tiny_lm, "W_in", 1, [1, 4, 7]):
        assert rank_of(weight_matrix(tiny_lm, "W_in", 1)) == 3
    assert torch.equal(weight_matrix(tiny_lm, "W_in", 1), w)
    for bad in ([0, 0], [16], [-1]):
        with pytest.raises(ValueError, match="indices"):
            with keep_singular_directions(tiny_lm, "W_in", 1, bad):
                pass
    with pytest.raises(ValueError, match="control_layer"):
        measure_truncation(tiny_lm, WORLD, test_items, control_layer=1, progress=False)
    with pytest.raises(ValueError, match="no items"):
        measure_truncation(tiny_lm, WORLD, [], progress=False)
    with pytest.raises(ValueError, match="rho"):
        measure_truncation(tiny_lm, WORLD, test_items, rhos=(0.0,), progress=False)
