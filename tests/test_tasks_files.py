"""Bad task files get one line naming the file and the fix: not UTF-8, empty, truncated.

Every loader and every text format is tried: GSM8K and GSM-Symbolic JSON(L), the MGSM release
TSV (no header), NQ-open JSONL, MMLU-Pro JSON, zip and parquet, PopQA CSV, C-Eval CSV, and a
``--labels`` file (`Task.with_labels`). Expected offsets and line numbers are computed from the
bytes written, independently of the reader.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import datasets
import pandas as pd
import pytest

from liref_lens.tasks import (
    TaskFileError,
    load_ceval,
    load_gsm8k,
    load_gsm_symbolic,
    load_mgsm,
    load_mmlu_pro,
    load_nq_open,
    load_popqa,
    read_local,
)

GSM = {"question": "Lia a 6 boîtes de 2 stylos. Combien ?", "answer": "6 * 2 = 12\n#### 12"}
SYMBOLIC = {**GSM, "id": 0, "instance": 0, "original_id": 3}
NQ = {"question": "où est née Édith Piaf", "answer": ["Paris"]}
MMLU = {"question": "Qu'est-ce que 7 × 8 ?", "options": ["54", "56"], "answer": "B"}
POPQA = 'question,possible_answers\nOù est Paris ?,"[""France""]"\n'
CEVAL = "id,question,A,B,C,D,answer\n0,Qu'est-ce que F ?,ma,mc²,mv,Fs,A\n"


def _jsonl(*rows: dict) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _mgsm(path: Path) -> object:
    return load_mgsm(path, language="fr")


def _ceval(path: Path) -> object:
    return load_ceval(path, subjects=["college_physics"])


def _labels(path: Path) -> object:
    return load_gsm8k("builtin").with_labels(path, missing="drop")


# (file name, UTF-8 content, loader)
CASES: list[tuple[str, bytes, Callable[[Path], object]]] = [
    ("gsm8k.jsonl", _jsonl(GSM, GSM), load_gsm8k),
    ("GSM_p2.jsonl", _jsonl(SYMBOLIC, SYMBOLIC), load_gsm_symbolic),
    (
        "GSM_p1.json",
        json.dumps([SYMBOLIC, SYMBOLIC], ensure_ascii=False).encode(),
        load_gsm_symbolic,
    ),
    ("mgsm_fr.tsv", "Combien font 2 et 3 ?\t5\nEt 4 × 2 ?\t8\n".encode(), _mgsm),
    ("nq.jsonl", _jsonl(NQ, NQ), load_nq_open),
    ("mmlu.json", json.dumps([MMLU, MMLU], ensure_ascii=False).encode(), load_mmlu_pro),
    ("popqa.csv", POPQA.encode(), load_popqa),
    ("ceval.csv", CEVAL.encode(), _ceval),
    ("labels.csv", "id,label\n0,mémoire\n1,reasoning\n".encode(), _labels),
]
IDS = [name for name, _, _ in CASES]


def _one_line(err: pytest.ExceptionInfo[BaseException], path: Path | str) -> str:
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    return message


@pytest.mark.parametrize(("name", "content", "load"), CASES, ids=IDS)
def test_utf8_files_load(tmp_path: Path, name: str, content: bytes, load: Callable) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert len(load(path)) >= 1  # type: ignore[arg-type]
    path.write_bytes(b"\xef\xbb\xbf" + content)  # a byte-order mark (Windows exports)
    assert len(load(path)) >= 1  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "content", "load"), CASES, ids=IDS)
def test_latin1_file_names_file_offset_line_and_iconv(
    tmp_path: Path, name: str, content: bytes, load: Callable
) -> None:
    """Fails before: a raw UnicodeDecodeError ('utf-8' codec can't decode byte 0xe9 ...)."""
    path = tmp_path / name
    latin1 = content.decode().encode("cp1252", errors="replace")
    path.write_bytes(latin1)
    first = next(i for i, b in enumerate(latin1) if b >= 0x80)  # the first non-ASCII byte
    with pytest.raises(TaskFileError) as err:
        load(path)
    message = _one_line(err, path)
    line = latin1[:first].count(b"\n") + 1
    assert f"not UTF-8 text (byte 0x{latin1[first]:02x} at offset {first}, line {line})" in message
    fixed = path.with_name(f"{path.stem}.utf8{path.suffix}")
    assert "convert it to UTF-8 from the encoding it was saved in" in message
    assert f"e.g. for Latin-1: iconv -f latin1 -t utf-8 {path} > {fixed}" in message


def test_utf16_file_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes("id,label\n0,memory\n".encode("utf-16"))  # starts with the BOM ff fe
    with pytest.raises(TaskFileError) as err:
        load_gsm8k("builtin").with_labels(path)
    message = _one_line(err, path)
    assert "byte 0xff at offset 0, line 1, a UTF-16 byte-order mark" in message
    assert "iconv -f utf-16 -t utf-8" in message


# ----- empty files -------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "content", "load"), CASES, ids=IDS)
@pytest.mark.parametrize("blank", [b"", b"\n\n  \n"], ids=["0 bytes", "blank lines"])
def test_empty_file_is_an_error(
    tmp_path: Path, name: str, content: bytes, load: Callable, blank: bytes
) -> None:
    """Fails before for JSON(L), headerless TSV and labels: 0 items and no word (CSV: a raw
    pandas EmptyDataError)."""
    path = tmp_path / name
    path.write_bytes(blank)
    with pytest.raises(TaskFileError) as err:
        load(path)
    message = _one_line(err, path)
    assert "is empty" in message and "download or export it again" in message


@pytest.mark.parametrize(
    ("name", "content", "load", "why"),
    [
        ("GSM_symbolic.json", b"[]", load_gsm_symbolic, "no records"),
        ("GSM_symbolic.json", b'{"data": []}', load_gsm_symbolic, "no records"),
        ("popqa.csv", b"question,possible_answers\n", load_popqa, "no records"),
        ("ceval.csv", CEVAL.split("\n")[0].encode() + b"\n", _ceval, "no records"),
        ("labels.csv", b"id,label\n", _labels, "no records"),
    ],
)
def test_file_without_rows_is_an_error(
    tmp_path: Path, name: str, content: bytes, load: Callable, why: str
) -> None:
    """Fails before: 0 items and no word."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TaskFileError) as err:
        load(path)
    assert "holds no rows" in _one_line(err, path) and why in str(err.value)


def test_empty_parquet_zip_and_saved_dataset_are_errors(tmp_path: Path) -> None:
    """Fails before: each loaded as 0 items."""
    empty = pd.DataFrame({"question": pd.Series([], dtype=str), "options": [], "answer": []})
    empty.to_parquet(tmp_path / "mmlu.parquet")
    with pytest.raises(TaskFileError, match="holds no rows") as err:
        load_mmlu_pro(tmp_path / "mmlu.parquet")
    _one_line(err, tmp_path / "mmlu.parquet")
    with zipfile.ZipFile(tmp_path / "mmlu.zip", "w") as archive:
        archive.writestr("questions.json", "[]")
    with pytest.raises(TaskFileError, match="holds no rows") as err:
        load_mmlu_pro(tmp_path / "mmlu.zip")
    _one_line(err, f"{tmp_path / 'mmlu.zip'}!questions.json")
    saved = datasets.Dataset.from_list([{"question": "a?", "possible_answers": '["b"]'}])
    saved.select([]).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(TaskFileError, match="holds no rows"):
        load_popqa(tmp_path / "saved")


def test_empty_selection_is_an_error(tmp_path: Path) -> None:
    """Fails before: a misspelt category or subject gave 0 items and no word."""
    with pytest.raises(ValueError, match=r"no questions in the categories \['maths'\]") as err:
        load_mmlu_pro("builtin", categories=["maths"])
    assert "'math'" in str(err.value) and "\n" not in str(err.value)
    path = tmp_path / "ceval_val.csv"
    path.write_text("subject," + CEVAL.replace("\n0,", "\ncollege_physics,0,"))
    assert len(load_ceval(path, subjects=["college_physics"])) == 1
    with pytest.raises(ValueError, match=r"no questions of the subjects \['physics'\]") as err:
        load_ceval(path, subjects=["physics"])
    assert "'college_physics'" in str(err.value)


# ----- truncated files ---------------------------------------------------------------------------
def test_truncated_jsonl_names_the_last_line(tmp_path: Path) -> None:
    content = _jsonl(SYMBOLIC, SYMBOLIC, SYMBOLIC)
    for cut in (len(content) - 10, len(content) - 40, content.rindex(b'"answer"') + 3):
        path = tmp_path / "GSM_symbolic.jsonl"
        path.write_bytes(content[:cut])
        with pytest.raises(TaskFileError) as err:
            load_gsm_symbolic(path)
        message = _one_line(err, path)
        line = content[:cut].count(b"\n") + 1
        assert f"line {line}: the last record is cut off" in message
        assert "looks truncated" in message


def test_bad_line_that_is_not_the_last_says_fix_or_delete(tmp_path: Path) -> None:
    path = tmp_path / "gsm8k.jsonl"
    path.write_bytes(_jsonl(GSM) + b'{"question": "x", oops}\n' + _jsonl(GSM))
    with pytest.raises(TaskFileError, match="line 2: not valid JSON") as err:
        load_gsm8k(path)
    assert "fix or delete that line" in _one_line(err, path)
    path.write_bytes(b"question,answer\nnot json\n")  # every line fails: the first is named
    with pytest.raises(TaskFileError, match="line 1: not valid JSON"):
        load_gsm8k(path)
    path.write_bytes(b'["a list, not an object"]\n')
    with pytest.raises(TaskFileError, match="line 1: expected a JSON object, found list"):
        load_gsm8k(path)


def test_truncated_json_array_says_truncated_not_line_1(tmp_path: Path) -> None:
    """Fails before: 'line 1: not valid JSON (Expecting value ...)', pointing at the '['."""
    text = json.dumps([SYMBOLIC, SYMBOLIC], indent=1)
    path = tmp_path / "GSM_p1.json"
    path.write_text(text[: len(text) // 2])
    with pytest.raises(TaskFileError) as err:
        load_gsm_symbolic(path)
    message = _one_line(err, path)
    assert "the JSON ends before it is complete" in message and "looks truncated" in message
    path.write_text('[{"question": "a", "answer": "#### 1"},, {}]')  # broken, not truncated
    with pytest.raises(TaskFileError, match="not valid JSON .* at line 1, column 40"):
        load_gsm_symbolic(path)


def test_truncated_csv_and_tsv_rows(tmp_path: Path) -> None:
    """Fails before: the cut row's missing cells became None (C-Eval: 'no answer letter')."""
    path = tmp_path / "ceval.csv"
    path.write_text(CEVAL + "1,Et la vitesse ?,v,")
    with pytest.raises(TaskFileError) as err:
        _ceval(path)
    assert "line 3: the last row has 4 of 7 fields" in _one_line(err, path)
    tsv = tmp_path / "mgsm_fr.tsv"
    tsv.write_text("Combien font 2 et 3 ?\t5\nCombien font")
    with pytest.raises(TaskFileError) as err:
        _mgsm(tsv)
    assert "line 2: the last line has no answer_number" in _one_line(err, tsv)
    quoted = tmp_path / "popqa.csv"
    quoted.write_text(POPQA + 'Où est Rome ?,"[""Ita')  # cut inside a quoted cell
    with pytest.raises(TaskFileError) as err:
        load_popqa(quoted)
    assert "not a valid CSV file" in _one_line(err, quoted)


def test_truncated_parquet_and_zip(tmp_path: Path) -> None:
    """Fails before: raw ArrowInvalid and BadZipFile (not a ValueError: a CLI traceback)."""
    frame = pd.DataFrame([{**MMLU, "options": json.dumps(MMLU["options"])}] * 3)
    frame.to_parquet(tmp_path / "whole.parquet")
    data = (tmp_path / "whole.parquet").read_bytes()
    path = tmp_path / "mmlu.parquet"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TaskFileError) as err:
        load_mmlu_pro(path)
    assert "not a readable parquet file" in _one_line(err, path)
    with zipfile.ZipFile(tmp_path / "whole.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("questions.json", json.dumps([MMLU] * 50))
    data = (tmp_path / "whole.zip").read_bytes()
    path = tmp_path / "mmlu.zip"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TaskFileError) as err:
        load_mmlu_pro(path)
    assert "not a readable zip archive" in _one_line(err, path)


def test_jsonl_lines_split_only_at_newlines(tmp_path: Path) -> None:
    """A record holding U+2028 (legal inside a JSON string) stays one record."""
    path = tmp_path / "nq.jsonl"
    path.write_text(json.dumps({"question": "a\u2028b", "answer": ["x"]}, ensure_ascii=False))
    assert read_local(path) == [{"question": "a\u2028b", "answer": ["x"]}]
