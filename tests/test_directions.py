from __future__ import annotations

import doctest
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import liref_lens.directions as directions_module
from liref_lens import LensModel, RunningStats, cache_activations, load_model
from liref_lens.directions import (
    DirectionSet,
    contrast_mean,
    diff_in_means,
    fit_directions,
    pca_contrast,
    probe_direction,
    random_like,
    reading_vector,
    shuffled_labels,
)
from liref_lens.scores import auroc, projection

ALL_METHODS = [
    diff_in_means(),
    reading_vector(),
    reading_vector(centered=False),
    contrast_mean(),
    pca_contrast(),
    pca_contrast(scale_to_mean_diff=True),
    probe_direction(),
]


def test_docstring_examples_run() -> None:
    result = doctest.testmod(directions_module)
    assert result.attempted > 5 and result.failed == 0


def _split(lm: LensModel, prompts: list[str], layers=None):
    acts = cache_activations(lm, prompts, layers=layers, progress=False)
    half = len(prompts) // 2
    return acts.subset(range(half)), acts.subset(range(half, len(prompts)))


def test_diff_in_means_equals_numpy_float64(lm: LensModel, prompts: list[str]) -> None:
    pos, neg = _split(lm, prompts)
    ds = fit_directions(pos, neg, model=lm)
    p, n = pos.tensor.numpy().astype(np.float64), neg.tensor.numpy().astype(np.float64)
    expected = p.mean(axis=0) - n.mean(axis=0)  # [layer, d]
    assert ds.vectors.dtype == torch.float64 and ds.vectors.shape == (lm.n_layers, lm.d_model)
    np.testing.assert_allclose(ds.vectors.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert ds.layers == (0, 1, 2) and ds.site == "resid_pre" and ds.position == "last()"
    assert ds.model_fingerprint == lm.fingerprint and ds.n_layers == lm.n_layers
    assert ds.counts == (3, 3) and ds.classes == ("reasoning", "memory")
    assert ds.method == "diff_in_means" and len(ds.data_hash) == 64
    # The hash follows the data: other rows, other hash; same rows, same hash.
    assert fit_directions(pos, neg).data_hash == ds.data_hash
    assert fit_directions(neg, pos).data_hash != ds.data_hash
    # Selecting layers picks the matching rows of the full fit.
    sub = fit_directions(pos, neg, layers=[2, 1])
    assert sub.layers == (2, 1)
    assert torch.equal(sub.vectors, ds.vectors[[2, 1]])


def test_from_running_stats_matches_fit() -> None:
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(50, 3, 8, generator=g) + 1, torch.randn(70, 3, 8, generator=g)
    rs = RunningStats(("reasoning", "memory"), (3, 8))
    for chunk in range(0, 120, 25):  # streamed in chunks, classes interleaved
        x, labels = (
            torch.cat([pos, neg])[chunk : chunk + 25],
            (["reasoning"] * 50 + ["memory"] * 70),
        )
        rs.update(x, labels[chunk : chunk + 25])
    streamed = DirectionSet.from_running_stats(rs, "reasoning", "memory", layers=[4, 5, 6])
    direct = fit_directions(pos, neg, layers=[4, 5, 6])
    torch.testing.assert_close(streamed.vectors, direct.vectors, rtol=1e-12, atol=1e-12)
    assert streamed.counts == (50, 70) and streamed.layers == (4, 5, 6)
    empty = RunningStats(("reasoning", "memory"), (8,))
    empty.update(torch.ones(2, 8), ["reasoning", "reasoning"])
    with pytest.raises(ValueError, match="class 'memory' is empty.*stream activations"):
        DirectionSet.from_running_stats(empty, "reasoning", "memory")


def _planted(seed: int, d: int = 256, n: int = 2000, sigma: float = 0.25):
    """Two layers, each with its own unit direction u; class means at +-u/2 (unit separation),
    isotropic noise of sd ``sigma`` per coordinate (d' = 4 along u)."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.nn.functional.normalize(
        torch.randn(2, d, generator=g, dtype=torch.float64), dim=1
    )
    pos = sigma * torch.randn(n, 2, d, generator=g, dtype=torch.float64) + truth / 2
    neg = sigma * torch.randn(n, 2, d, generator=g, dtype=torch.float64) - truth / 2
    return pos.float(), neg.float(), truth


def test_planted_direction_recovery_and_random_control() -> None:
    pos, neg, truth = _planted(seed=0)
    for method in ALL_METHODS:
        ds = fit_directions(pos, neg, method)
        cos = torch.nn.functional.cosine_similarity(ds.vectors, truth, dim=1)
        assert bool((cos >= 0.98).all()), (method.method, method.params, cos.tolist())
    ds = fit_directions(pos, neg)
    proj_p, proj_n = projection(pos, ds), projection(neg, ds)
    assert all(auroc(proj_p[:, i], proj_n[:, i]) > 0.99 for i in range(2))
    controls = random_like(ds, n=32, generator=torch.Generator().manual_seed(1))
    scores = [
        auroc(projection(pos, c)[:, i], projection(neg, c)[:, i]) for c in controls for i in (0, 1)
    ]
    for c in controls:
        torch.testing.assert_close(c.norms(), ds.norms(), rtol=1e-12, atol=0)
        assert c.method == "random" and c.params["control"] == "random"
    assert abs(float(np.mean(scores)) - 0.5) <= 0.05, np.mean(scores)


def test_random_like_is_seeded() -> None:
    ds = DirectionSet(
        torch.randn(3, 16, generator=torch.Generator().manual_seed(0)), layers=(0, 1, 2)
    )
    a = random_like(ds, 2, generator=torch.Generator().manual_seed(7))
    b = random_like(ds, 2, generator=torch.Generator().manual_seed(7))
    c = random_like(ds, 2, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[1].vectors, b[1].vectors) and not torch.equal(a[0].vectors, a[1].vectors)
    assert not torch.equal(a[0].vectors, c[0].vectors)


def test_shuffled_labels_control() -> None:
    pos, neg, truth = _planted(seed=2, d=32, n=200)
    real = fit_directions(pos, neg)
    for method in (diff_in_means(), contrast_mean()):
        ctl = shuffled_labels(pos, neg, method, generator=torch.Generator().manual_seed(0), n=3)
        assert len(ctl) == 3 and ctl[0].params["control"] == "shuffled_labels"
        assert ctl[0].counts == (200, 200) and ctl[0].data_hash != real.data_hash
        assert not torch.equal(ctl[0].vectors, ctl[1].vectors)
        # With the labels shuffled, the planted direction is gone.
        assert float(ctl[0].norms().max()) < 0.5 * float(real.norms().min())
    with pytest.raises(ValueError, match="needs paired rows.*diff_in_means"):
        shuffled_labels(pos, neg[:10], contrast_mean(), generator=torch.Generator().manual_seed(0))


def test_method_definitions() -> None:
    pos = torch.tensor([[[2.0, 0.0]], [[4.0, 2.0]]])
    neg = torch.tensor([[[0.0, 0.0]], [[0.0, 2.0]]])
    assert contrast_mean()(pos, neg).tolist() == [[3.0, 0.0]]
    # centered reading vector: mean(pos) - mean(all) = n_neg / n * diff-in-means
    torch.testing.assert_close(reading_vector()(pos, neg), diff_in_means()(pos, neg) / 2)
    # the PCA sign points toward the positive class even if the data flip it
    pca = pca_contrast()(neg, pos)
    assert float(pca @ diff_in_means()(neg, pos).T) > 0
    g = torch.Generator().manual_seed(0)
    for n, d in ((30, 8), (5, 40)):  # both Gram-matrix branches
        p, q = torch.randn(n, 1, d, generator=g) + 0.3, torch.randn(n, 1, d, generator=g)
        top = torch.linalg.svd((p - q)[:, 0].double()).Vh[0]
        got = pca_contrast()(p, q)[0]
        assert abs(float(got @ top)) == pytest.approx(1.0, abs=1e-10)
        assert float(got @ (p - q)[:, 0].double().mean(0)) > 0
    with pytest.raises(ValueError, match="pca_contrast needs paired rows but got 2 positive and 1"):
        fit_directions(pos, neg[:1], pca_contrast())
    ds = fit_directions(pos, neg, probe_direction(C=0.5))
    assert ds.method == "probe_direction" and ds.params["C"] == 0.5


def test_errors_name_problem_and_fix() -> None:
    x = torch.randn(4, 2, 8)
    with pytest.raises(ValueError, match="class 'memory' is empty.*check the labels"):
        fit_directions(x, x[:0])
    with pytest.raises(ValueError, match="mismatched shapes.*same model, site"):
        fit_directions(x, torch.randn(4, 2, 16))
    bad = x.clone()
    bad[2, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="'reasoning' activations contain NaN or inf.*row 2"):
        fit_directions(bad, x)
    bad[2, 1, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_directions(x, bad)
    with pytest.raises(ValueError, match="layer 0 has zero norm.*drop that layer"):
        DirectionSet(torch.zeros(1, 3), layers=(0,)).unit()


def test_zero_norm_at_layer_zero_of_real_model(lm: LensModel) -> None:
    # Same length, same last token: resid_pre at layer 0 is the same embedding for every prompt.
    pos = cache_activations(lm, ["w1 w2 w3", "w4 w5 w3"], progress=False)
    neg = cache_activations(lm, ["w6 w7 w3", "w8 w9 w3"], progress=False)
    with pytest.raises(
        ValueError, match=r"layer 0 has zero norm.*token embedding.*drop that layer"
    ):
        fit_directions(pos, neg)
    ds = fit_directions(pos, neg, layers=[1, 2])
    assert bool((ds.norms() > 0).all()) and bool(torch.isfinite(ds.unit()).all())


def test_activation_provenance_checks(lm: LensModel, prompts: list[str]) -> None:
    both = cache_activations(lm, prompts, sites=("resid_pre", "resid_post"), progress=False)
    pos, neg = both.subset([0, 1, 2]), both.subset([3, 4, 5])
    with pytest.raises(ValueError, match="select_site"):
        fit_directions(pos, neg)
    post = fit_directions(pos, neg, site="resid_post")
    assert post.site == "resid_post"
    torch.testing.assert_close(
        post.vectors,
        fit_directions(pos.select_site("resid_post"), neg.select_site("resid_post")).vectors,
    )
    with pytest.raises(ValueError, match="differ in site.*same model, layers, site"):
        fit_directions(pos.select_site("resid_pre"), neg.select_site("resid_post"))
    with pytest.raises(TypeError, match="both as tensors"):
        fit_directions(pos.select_site("resid_pre"), neg["resid_pre"])


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    pos, neg, _ = _planted(seed=3, d=16, n=20)
    ds = fit_directions(pos, neg, pca_contrast(True), layers=[5, 7], site="resid_post")
    path = ds.save(tmp_path / "d.safetensors")
    back = DirectionSet.load(path)
    assert torch.equal(back.vectors, ds.vectors) and back.vectors.dtype == torch.float64
    for name in ds.__dataclass_fields__:
        if name != "vectors":
            assert getattr(back, name) == getattr(ds, name), name
    assert [p.name for p in tmp_path.iterdir()] == ["d.safetensors"]  # no temp files left


def _header(raw: bytes) -> tuple[int, dict]:
    (n,) = struct.unpack("<Q", raw[:8])
    return n, json.loads(raw[8 : 8 + n])


def test_damaged_files_raise(tmp_path: Path) -> None:
    ds = DirectionSet(torch.randn(2, 8, dtype=torch.float64), layers=(0, 1), site="resid_pre")
    raw = ds.save(tmp_path / "d.safetensors").read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw[:-9])  # truncated
    with pytest.raises(ValueError, match="not an intact direction-set file.*truncated or edited"):
        DirectionSet.load(bad)
    flipped = bytearray(raw)
    flipped[-3] ^= 0xFF  # one byte of the vectors
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="fail their sha256 checksum"):
        DirectionSet.load(bad)
    n, header = _header(raw)
    body = header["__metadata__"]["liref_lens"]
    assert '"d_model": 8' in body
    edited = raw.replace(b'\\"d_model\\": 8', b'\\"d_model\\": 9')  # same length, JSON-escaped
    assert edited != raw and len(edited) == len(raw)
    bad.write_bytes(edited)
    with pytest.raises(ValueError, match="metadata is missing or fails its checksum"):
        DirectionSet.load(bad)
    with pytest.raises(FileNotFoundError, match="no direction-set file"):
        DirectionSet.load(tmp_path / "missing.safetensors")
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not an intact direction-set file"):
        DirectionSet.load(bad)


def test_load_checks_the_model(
    lm: LensModel, prompts: list[str], make_tiny, tmp_path: Path
) -> None:

    pos, neg = _split(lm, prompts, layers=[1, 2])
    path = fit_directions(pos, neg, model=lm).save(tmp_path / "d.safetensors")
    assert DirectionSet.load(path, lm).layers == (1, 2)
    arch = "llama" if "llama" in lm.architecture.lower() else "gpt2"
    other = load_model(str(make_tiny(arch, tmp_path / "other", seed=1)), device="cpu")
    assert other.fingerprint != lm.fingerprint
    with pytest.raises(
        ValueError, match="fingerprint.*refit on this model, or pass allow_transfer"
    ):
        DirectionSet.load(path, other)
    assert DirectionSet.load(path, other, allow_transfer=True).layers == (1, 2)
    # Width never transfers.
    wide = DirectionSet(torch.ones(1, 2 * lm.d_model), layers=(0,), site="resid_pre")
    with pytest.raises(ValueError, match="width 64 but this model's resid_pre width is 32"):
        wide.check_compatible(lm, allow_transfer=True)
    with pytest.raises(ValueError, match=r"layers \[5\] but the model has 3 layers"):
        DirectionSet(torch.ones(1, lm.d_model), layers=(5,)).check_compatible(
            lm, allow_transfer=True
        )
    with pytest.raises(ValueError, match="no model fingerprint"):
        DirectionSet(torch.ones(1, lm.d_model), layers=(0,)).check_compatible(lm)
