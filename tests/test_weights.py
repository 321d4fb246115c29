from __future__ import annotations

import numpy as np
import pytest
import torch

from liref_lens import LensModel, cache_activations, every
from liref_lens.weights import (
    MATRICES,
    low_rank,
    orthogonalize,
    rank_of,
    search_truncation,
    truncate,
    truncation_rank,
    weight_matrix,
)

PROMPTS = ["w1 w2 w3 w4 w5 w6", "Q: 2 + 3 = ? A: 5", "w9 w9 w10 w3 w1 w7 w8", "w5 w6 + w7"]


def _snapshot(lm: LensModel) -> dict[str, torch.Tensor]:
    snap = {f"param:{n}": p.detach().clone() for n, p in lm.model.named_parameters()}
    snap.update({f"state:{n}": t.detach().clone() for n, t in lm.model.state_dict().items()})
    return snap


def _assert_restored(lm: LensModel, snap: dict[str, torch.Tensor]) -> None:
    now = _snapshot(lm)
    assert now.keys() == snap.keys()
    changed = [n for n in snap if not torch.equal(now[n], snap[n])]
    assert not changed, f"not restored bit-exactly: {changed}"


def _changed(lm: LensModel, snap: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        n[len("param:") :]: p.detach().clone()
        for n, p in ((f"param:{n}", p) for n, p in lm.model.named_parameters())
        if not torch.equal(p, snap[n])
    }


def _as_2d(name: str, t: torch.Tensor) -> torch.Tensor:
    """A changed parameter read as a matrix (legacy per-head stacks flattened over heads)."""
    if t.ndim == 3 and name.split(".")[-1].lstrip("_") in ("W_Q", "W_K", "W_V"):
        return t.permute(1, 0, 2).reshape(t.shape[1], -1)
    return t.reshape(-1, t.shape[-1])


def test_low_rank_matches_torch_svd() -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.randn(12, 7, generator=g)
    u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)  # an independent SVD
    want = ((u[:, :3] * s[:3]) @ vh[:3]).numpy()
    got = low_rank(m, 3)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), want, atol=1e-6)
    assert rank_of(got) == 3 and rank_of(m) == 7
    assert torch.equal(low_rank(m.double(), 7), low_rank(m.double(), 7))
    torch.testing.assert_close(low_rank(m.double(), 7), m.double(), atol=1e-12, rtol=0)


def test_truncation_rank() -> None:
    assert truncation_rank((100, 300), 0.29) == 29  # no float floor surprise
    assert truncation_rank((32, 128), 1.0) == 32
    assert truncation_rank((32, 128), 0.001) == 1
    for rho in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="rho"):
            truncation_rank((4, 4), rho)


def _available(lm: LensModel) -> list[str]:
    out = []
    for matrix in MATRICES:
        try:
            weight_matrix(lm, matrix, 0)
        except ValueError:
            assert matrix == "W_gate" and "llama" not in lm.architecture.lower()
            continue
        out.append(matrix)
    return out


def test_truncate_sets_rank_changes_output_and_restores(lm: LensModel) -> None:
    batch = lm.tokenize(PROMPTS)
    base = lm.forward(batch)
    snap = _snapshot(lm)
    matrices = _available(lm)
    assert {"W_Q", "W_K", "W_V", "W_O", "W_in", "W_out"} <= set(matrices)
    for matrix in matrices:
        full = weight_matrix(lm, matrix, 1)
        k = truncation_rank(full.shape, 0.25)
        with truncate(lm, matrix, 1, 0.25) as edits:
            assert edits == [(matrix, 1, 0.25, k)]
            assert rank_of(weight_matrix(lm, matrix, 1)) == k < rank_of(full)
            changed = _changed(lm, snap)
            out = lm.forward(batch)
        assert changed, f"{matrix}: no parameter changed"
        for name, t in changed.items():
            assert f".{1}." in name, name  # only block 1
            if t.shape[-1] == 3 * lm.d_model and t.ndim == 2:  # GPT-2's fused c_attn (Conv1D)
                i = ("W_Q", "W_K", "W_V").index(matrix)
                before = snap[f"param:{name}"]
                for j, (now, was) in enumerate(
                    zip(t.chunk(3, -1), before.chunk(3, -1), strict=True)
                ):
                    assert (rank_of(now) == k) if j == i else torch.equal(now, was)
            else:
                assert rank_of(_as_2d(name, t)) == k, name
        assert (out - base).abs().max() > 1e-6, f"{matrix}: output did not change"
        _assert_restored(lm, snap)
    assert torch.equal(lm.forward(batch), base)


@pytest.mark.parametrize(("matrix", "site"), [("W_out", "mlp_out"), ("W_O", "attn_out")])
def test_forward_writes_through_a_rank_k_matrix(lm: LensModel, matrix: str, site: str) -> None:
    """Functional check: the block's output over all tokens spans k dims (+ a bias)."""

    def spread() -> torch.Tensor:
        acts = cache_activations(
            lm, PROMPTS, layers=[2], sites=site, position=every(), progress=False
        )
        rows = acts.tensor[:, 0].double()
        return rows[1:] - rows[:1]  # differences cancel the bias

    assert rank_of(spread(), rtol=1e-4) > 8
    with truncate(lm, matrix, 2, 0.25) as edits:
        assert edits[0][3] == 8
        assert rank_of(spread(), rtol=1e-4) == 8


def test_restores_after_an_exception(lm: LensModel) -> None:
    snap = _snapshot(lm)
    with pytest.raises(RuntimeError, match="boom"):
        with truncate(lm, [("W_out", 1, 0.1), ("W_Q", 0, 0.5)]):
            assert _changed(lm, snap)
            raise RuntimeError("boom")
    _assert_restored(lm, snap)


def test_composed_and_nested(lm: LensModel) -> None:
    batch = lm.tokenize(PROMPTS)
    snap = _snapshot(lm)
    with truncate(lm, [("W_out", 1, 0.25), ("W_in", 0, 0.5), ("W_out", 1, 0.125)]) as edits:
        assert [e[3] for e in edits] == [8, 16, 4]
        assert rank_of(weight_matrix(lm, "W_out", 1)) == 4  # applied in order
        assert rank_of(weight_matrix(lm, "W_in", 0)) == 16
        composed = lm.forward(batch)
    _assert_restored(lm, snap)
    with truncate(lm.model, "W_out", -2, 0.25):  # a raw TransformerLens model works too
        inner_snap = _snapshot(lm)
        with truncate(lm, "W_in", 0, 0.5), truncate(lm, "W_out", 1, 0.125):
            torch.testing.assert_close(lm.forward(batch), composed, atol=1e-5, rtol=0)
        _assert_restored(lm, inner_snap)
        assert rank_of(weight_matrix(lm, "W_out", 1)) == 8
    _assert_restored(lm, snap)


def test_errors_leave_the_model_untouched(lm: LensModel) -> None:
    snap = _snapshot(lm)
    cases = [
        (("W_X", 0, 0.5), "unknown matrix"),
        (("W_out", lm.n_layers, 0.5), "out of range"),
        (("W_out", 0, 0.0), "rho"),
        (("W_out", 0, 1.01), "rho"),
    ]
    for edit, message in cases:
        with pytest.raises(ValueError, match=message):
            with truncate(lm, [("W_in", 0, 0.5), edit]):  # the valid first edit is not made
                pass
        _assert_restored(lm, snap)
    with pytest.raises(ValueError, match="layer"):
        with truncate(lm, "W_in"):
            pass


def test_orthogonalize_removes_the_direction_everywhere(lm: LensModel) -> None:
    r = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(1))
    unit = (r / r.norm()).double()
    snap = _snapshot(lm)
    sites = ("resid_pre", "resid_post")
    before = cache_activations(lm, PROMPTS, sites=sites, position=every(), progress=False)
    with orthogonalize(lm, r):
        acts = cache_activations(lm, PROMPTS, sites=sites, position=every(), progress=False)
    for site in sites:
        assert (before[site].double() @ unit).abs().max() > 1e-3
        assert (acts[site].double() @ unit).abs().max() < 1e-5
    _assert_restored(lm, snap)
    with orthogonalize(lm, r, layers=[1], embed=False):
        acts = cache_activations(lm, PROMPTS, sites="attn_out", position=every(), progress=False)
        assert (acts.tensor[:, 1].double() @ unit).abs().max() < 1e-5
        assert (acts.tensor[:, 0].double() @ unit).abs().max() > 1e-3
    _assert_restored(lm, snap)
    with pytest.raises(ValueError, match="direction"):
        with orthogonalize(lm, torch.zeros(lm.d_model)):
            pass


def test_search_truncation_picks_on_validation(lm: LensModel) -> None:
    """The search logic, with a cheap metric of the weights (the forward is tested above)."""

    def evaluate(model: LensModel, split: tuple[float, float]) -> float:
        w_in, w_out = weight_matrix(model, "W_in", 2), weight_matrix(model, "W_out", 2)
        return float(split[0] * w_in.norm() - split[1] * w_out.norm())

    val, test = (1.0, 3.0), (2.0, -1.0)
    snap = _snapshot(lm)
    grid = dict(matrices=("W_in", "W_out"), layers=[1, 2], rhos=(0.5, 0.1))
    df = search_truncation(lm, evaluate, val, test, progress=False, **grid)
    _assert_restored(lm, snap)
    assert list(df.columns) == ["matrix", "layer", "rho", "rank", "validation", "heldout", "best"]
    assert len(df) == 9 and df["matrix"].iloc[0] == "none" and int(df["best"].sum()) == 1
    assert df["validation"].iloc[0] == evaluate(lm, val)
    assert df["heldout"].iloc[0] == evaluate(lm, test)
    assert df["rank"].tolist()[1:3] == [16, 3] and df["layer"].tolist()[1:3] == [1, 1]
    best = df[df["best"]].iloc[0]
    assert best["validation"] == df["validation"].iloc[1:].max()
    assert (best["matrix"], best["layer"], best["rho"]) == ("W_out", 2, 0.1)
    with truncate(lm, best["matrix"], int(best["layer"]), best["rho"]):
        assert best["heldout"] == evaluate(lm, test)
    assert df.loc[~df["best"], "heldout"].iloc[1:].isna().all()
    low = search_truncation(
        lm, evaluate, val, test, higher_is_better=False, heldout_all=True, progress=False, **grid
    )
    assert low[low["best"]]["validation"].iloc[0] == low["validation"].iloc[1:].min()
    assert low["heldout"].notna().all()
