"""Real benchmark files: the samples shipped in the package, and the full files they came from.

The full files live in ``shared/data`` next to the repository (``../shared/data``, or
``$LIREF_LENS_DATA``); CI has a copy there. A user's clone does not: there the tests that need
them are deselected and the run says so (tests/needs.py).
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from tests.needs import data_dir

from liref_lens.tasks import (
    CATEGORY_LABELS,
    MEMORY,
    REASONING,
    MissingColumnError,
    NoAnswersError,
    TaskFileError,
    load_gsm8k,
    load_mgsm,
    load_mmlu_pro,
    load_nq_open,
    load_popqa,
    load_task,
)
from liref_lens.tasks.builtin import BUILTIN_MGSM_LANGUAGES, DATA_DIR

ROOT = Path(__file__).parents[1]
MMLU_ZIP = "mmlu_pro_questions_with_llama3_8b_outputs.zip"


@pytest.fixture(scope="module")
def shared() -> Path:
    """The full files. Tests using this fixture are deselected, with the reason printed, where
    the folder is missing (tests/needs.py); with LIREF_LENS_REQUIRE=data they fail here."""
    folder = data_dir()
    if not (folder / "README.md").is_file():
        pytest.fail(
            f"the full benchmark files are missing: expected them in {folder} (shared/data next "
            "to the repository, or LIREF_LENS_DATA, with gsm8k_test.jsonl, mgsm/, "
            "nq_open_dev.jsonl and the MMLU-Pro zip); copy them there to run these tests"
        )
    return folder


# ----- shipped samples --------------------------------------------------------------------
def test_builtin_samples_load_with_labels() -> None:
    gsm = load_task("gsm8k", source="builtin")
    assert len(gsm) == 250 and set(gsm.labels) == {REASONING}
    nq = load_task("nq_open", source="builtin")
    assert len(nq) == 300 and set(nq.labels) == {MEMORY}
    for language in BUILTIN_MGSM_LANGUAGES:
        mgsm = load_task("mgsm", source="builtin", language=language)
        assert len(mgsm) == 250 and mgsm.name == f"mgsm_{language}"
    mmlu = load_task("mmlu_pro", source="builtin")
    reasoning, memory = mmlu.split()
    assert (len(reasoning), len(memory)) == (150, 150)
    for item in mmlu:
        assert item.label == CATEGORY_LABELS[item.meta["category"]]
        assert 2 <= len(item.options) <= 10 and "N/A" not in item.options


def test_builtin_samples_are_small_and_attributed() -> None:
    files = [p for p in DATA_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 2_000_000
    readme = (DATA_DIR / "README.md").read_text(encoding="utf-8")
    for name in ("CC BY-SA 3.0", "CC BY 4.0", "MIT", "scripts/sample_benchmarks.py"):
        assert name in readme
    assert "CC BY-SA 3.0" in (DATA_DIR / "LICENSES.md").read_text(encoding="utf-8")


def test_mgsm_sample_languages_are_the_same_questions() -> None:
    """MGSM is one set of 250 questions translated: the gold answers agree across languages."""
    answers = {
        lang: [i.answer for i in load_mgsm("builtin", language=lang)]
        for lang in BUILTIN_MGSM_LANGUAGES
    }
    assert all(a == answers["en"] for a in answers.values())
    with pytest.raises(ValueError, match="built-in languages: de, en, fr, zh"):
        load_mgsm("builtin", language="sw")


def test_sampler_rebuilds_the_shipped_files(shared: Path, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sample_benchmarks.py"), "--data", str(shared)]
        + ["--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for path in tmp_path.rglob("*"):
        if path.is_file():
            shipped = DATA_DIR / path.relative_to(tmp_path)
            assert path.read_bytes() == shipped.read_bytes(), shipped


# ----- the full files ---------------------------------------------------------------------
def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_samples_are_rows_of_the_full_files(shared: Path) -> None:
    for full_name, sample_name in (
        ("gsm8k_test.jsonl", "gsm8k_test_sample.jsonl"),
        ("nq_open_dev.jsonl", "nq_open_dev_sample.jsonl"),
    ):
        full = _jsonl(shared / full_name)
        sample = _jsonl(DATA_DIR / sample_name)
        ids = [row["id"] for row in sample]
        assert ids == sorted(set(ids))
        for row in sample:
            original = dict(row)
            assert full[original.pop("id")] == original


def test_gsm8k_full(shared: Path) -> None:
    task = load_gsm8k(shared / "gsm8k_test.jsonl")
    assert len(task) == 1319
    # gold = the number after '####' in the solution, checked independently of the parser
    for item in random.Random(0).sample(task.items, 50):
        tail = item.meta["solution"].rsplit("####", 1)[1].strip().replace(",", "")
        assert item.answer == float(tail)
    assert task.evaluate([i.meta["solution"] for i in task.items]).accuracy == 1.0


def test_mgsm_full_headerless_tsv(shared: Path) -> None:
    pattern = str(shared / "mgsm" / "mgsm_{config}.tsv")
    for language in ("en", "zh", "sw", "ja"):
        task = load_mgsm(pattern, language=language)
        lines = (shared / "mgsm" / f"mgsm_{language}.tsv").read_text(encoding="utf-8")
        rows = [line.split("\t") for line in lines.splitlines() if line]
        assert len(task) == len(rows) == 250
        assert [i.question for i in task] == [r[0] for r in rows]
        assert [i.answer for i in task] == [float(r[1].replace(",", "")) for r in rows]


def test_nq_open_full(shared: Path) -> None:
    task = load_nq_open(shared / "nq_open_dev.jsonl")
    assert len(task) == 3610 and set(task.labels) == {MEMORY}
    # every question is answered correctly by any of its answers, modulo case and articles
    gens = [f" the {item.answer[-1].upper()}.\nQ: next" for item in task]
    assert task.evaluate(gens).accuracy == 1.0
    assert task.evaluate([f"I think {item.answer[0]}" for item in task]).accuracy < 0.05
    loose = load_nq_open(shared / "nq_open_dev.jsonl", match="contains")
    assert loose.evaluate([f"I think {item.answer[0]}" for item in loose]).accuracy == 1.0


def test_mmlu_pro_full_zip(shared: Path) -> None:
    with zipfile.ZipFile(shared / MMLU_ZIP) as archive:
        (name,) = archive.namelist()
        rows = json.loads(archive.read(name))
    task = load_mmlu_pro(shared / MMLU_ZIP, category_labels=CATEGORY_LABELS)
    assert len(task) == len(rows) == 12032
    assert task.few_shot is None  # one file, no validation split
    want = {c: sum(r["category"] == c for r in rows) for c in CATEGORY_LABELS}
    for label in (REASONING, MEMORY):
        got = len(task.split()[0 if label == REASONING else 1])
        assert got == sum(n for c, n in want.items() if CATEGORY_LABELS[c] == label)
    by_id = {str(r["question_id"]): r for r in rows}
    for item in random.Random(0).sample(task.items, 100):
        row = by_id[str(item.id)]
        assert item.answer == "ABCDEFGHIJ"[int(row["answer_index"])] == row["answer"]
    # Llama-3-8B's own predictions, scored by our parser on its generated text
    texts = [str(by_id[str(i.id)]["generated_text"]) for i in task.items]
    result = task.evaluate(texts)
    preds = [str(by_id[str(i.id)]["pred"]) for i in task.items]
    agree = sum(
        p == q for p, q in zip(result.predictions, preds, strict=True) if p is not None
    ) / max(1, len(task) - len(result.failures))
    assert agree > 0.95  # our parser reads the letter the MMLU-Pro scripts read


def test_missing_column_names_file_column_and_columns_found(tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"question": "1+1?", "solution": "#### 2"}) + "\n")
    with pytest.raises(MissingColumnError) as err:
        load_gsm8k(path)
    message = str(err.value)
    assert str(path) in message and "'answer'" in message and "'question', 'solution'" in message
    nq = tmp_path / "nq.jsonl"
    nq.write_text(json.dumps({"question": "who?", "answers": ["x"]}) + "\n")
    with pytest.raises(MissingColumnError, match=r"no column 'answer' \(columns found"):
        load_nq_open(nq)
    with pytest.raises(MissingColumnError, match="'possible_answers'"):
        load_popqa(nq)
    mmlu = tmp_path / "mmlu.json"
    mmlu.write_text(json.dumps([{"question": "q", "options": ["a", "b"], "category": "law"}]))
    with pytest.raises(MissingColumnError, match="'answer' or 'answer_index'"):
        load_mmlu_pro(mmlu)


# ----- provenance, bad copies and question-only files made from the full files ----------------
def test_full_files_record_their_sha256(shared: Path) -> None:
    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    for task, path in (
        (load_gsm8k(shared / "gsm8k_test.jsonl"), shared / "gsm8k_test.jsonl"),
        (load_nq_open(shared / "nq_open_dev.jsonl"), shared / "nq_open_dev.jsonl"),
        (load_mmlu_pro(shared / MMLU_ZIP), shared / MMLU_ZIP),
        (
            load_mgsm(str(shared / "mgsm" / "mgsm_{config}.tsv"), language="sw"),
            shared / "mgsm" / "mgsm_sw.tsv",
        ),
    ):
        assert task.source == str(path.resolve()) and task.source_sha256 == sha(path)
        assert json.loads(json.dumps(task.provenance)) == task.provenance


def test_full_files_in_another_encoding_name_offset_and_line(shared: Path, tmp_path: Path) -> None:
    for name, encoding in (("mgsm_fr.tsv", "cp1252"), ("mgsm_zh.tsv", "gb18030")):
        text = (shared / "mgsm" / name).read_text(encoding="utf-8")
        data = text.encode(encoding)
        path = tmp_path / name
        path.write_bytes(data)
        first = next(i for i, b in enumerate(data) if b >= 0x80)
        with pytest.raises(TaskFileError) as err:
            load_mgsm(path, language=name[5:7])
        message = str(err.value)
        line = data[:first].count(b"\n") + 1
        assert f"(byte 0x{data[first]:02x} at offset {first}, line {line})" in message
        assert f"iconv -f latin1 -t utf-8 {path}" in message and "\n" not in message


def test_full_files_cut_short_name_the_cut_line(shared: Path, tmp_path: Path) -> None:
    data = (shared / "nq_open_dev.jsonl").read_bytes()
    cut = len(data) // 2
    while data[cut - 1 : cut] == b"\n":  # a cut at a line boundary leaves valid, shorter JSONL
        cut += 7
    path = tmp_path / "nq_open_dev.jsonl"
    path.write_bytes(data[:cut])
    with pytest.raises(TaskFileError, match="the last record is cut off") as err:
        load_nq_open(path)
    line = data[:cut].count(b"\n") + 1
    assert f", line {line}: " in str(err.value)
    archive = (shared / MMLU_ZIP).read_bytes()
    (tmp_path / "mmlu.zip").write_bytes(archive[: len(archive) - 1000])
    with pytest.raises(TaskFileError, match="not a readable zip archive"):
        load_mmlu_pro(tmp_path / "mmlu.zip")


def test_question_only_copy_of_nq_open_reads_but_does_not_score(
    shared: Path, tmp_path: Path
) -> None:
    rows = _jsonl(shared / "nq_open_dev.jsonl")
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps({"question": r["question"]}) + "\n" for r in rows))
    task = load_nq_open(path)
    assert len(task) == len(rows) and not task.has_answers
    assert task.prompts()[:2] == [f"Q: {r['question']}\nA: " for r in rows[:2]]
    with pytest.raises(NoAnswersError, match="this task has no answers"):
        task.evaluate([""] * len(task))
    sampled = load_task("nq_open", source=path, sample=50, seed=0)
    assert len(sampled) == 50 and sampled.provenance["selection"][-1]["seed"] == 0
