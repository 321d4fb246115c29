"""Every loaded task records its source and the SHA-256 of the files read, checked by hashlib."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import datasets
import pytest

from liref_lens.tasks import (
    load_ceval,
    load_gsm8k,
    load_gsm_symbolic,
    load_mgsm,
    load_mmlu_pro,
    load_popqa,
    load_task,
)
from liref_lens.tasks.builtin import DATA_DIR

DATA = Path(__file__).parent / "data"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(folder: Path) -> str:
    """``sha256sum`` lines of every file under ``folder``, names relative to it, sorted."""
    lines = sorted(
        f"{_sha(p)}  {p.relative_to(folder).as_posix()}\n" for p in folder.rglob("*") if p.is_file()
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@pytest.mark.parametrize(
    ("load", "path"),
    [
        (lambda p: load_gsm8k(p), DATA / "gsm8k_test.jsonl"),
        (lambda p: load_gsm_symbolic(p, config="main"), DATA / "gsm_symbolic_test.json"),
        (lambda p: load_mgsm(p, language="zh"), DATA / "mgsm_zh_test.tsv"),
        (lambda p: load_mmlu_pro(p), DATA / "mmlu_pro_test.parquet"),
        (lambda p: load_popqa(p), DATA / "popqa_test.csv"),
    ],
    ids=["gsm8k", "gsm_symbolic", "mgsm", "mmlu_pro", "popqa"],
)
def test_local_file_records_path_and_sha256(load: Callable[[Path], object], path: Path) -> None:
    """Fails before: a task did not say which file it came from."""
    task = load(path)
    assert task.source == str(path.resolve())  # type: ignore[attr-defined]
    assert task.source_sha256 == _sha(path)  # type: ignore[attr-defined]
    record = task.provenance  # type: ignore[attr-defined]
    assert record["files"] == {str(path.resolve()): _sha(path)}
    assert record["hub"] is False and record["builtin"] is False and record["selection"] == []
    assert json.loads(json.dumps(record)) == record  # ready for a run's JSON record


@pytest.mark.parametrize(
    ("name", "kwargs", "file"),
    [
        ("gsm8k", {}, "gsm8k_test_sample.jsonl"),
        ("nq_open", {}, "nq_open_dev_sample.jsonl"),
        ("mmlu_pro", {}, "mmlu_pro_sample.json"),
        ("mgsm", {"language": "de"}, "mgsm/mgsm_de.tsv"),
    ],
)
def test_builtin_samples_record_the_package_file(name: str, kwargs: dict, file: str) -> None:
    task = load_task(name, source="builtin", **kwargs)
    assert task.source == str((DATA_DIR / file).resolve())
    assert task.source_sha256 == _sha(DATA_DIR / file)
    assert task.provenance["builtin"] is True


def test_folders_and_several_files_hash_their_manifest(tmp_path: Path) -> None:
    folder = DATA / "ceval_college_physics"  # a DatasetDict saved by datasets
    task = load_ceval(folder, subjects=["college_physics"])
    assert task.source == str(folder.resolve()) and task.source_sha256 == _manifest(folder)
    assert task.provenance["exemplars"]["sha256"] == _manifest(folder)
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)
    assert load_ceval(moved, subjects=["college_physics"]).source_sha256 == _manifest(folder)
    # one {config} path read per subject: every file, and the manifest of them all
    (tmp_path / "ceval").mkdir()
    for subject in ("college_physics", "college_chemistry"):
        for split in ("val", "dev"):
            (tmp_path / "ceval" / f"{subject}_{split}.csv").write_text(
                f"id,question,A,B,C,D,answer,explanation\n0,{subject}?,1,2,3,4,A,why\n"
            )
    pattern = str(tmp_path / "ceval" / "{config}_{split}.csv")
    task = load_ceval(pattern, subjects=["college_physics", "college_chemistry"], split="val")
    val = sorted((tmp_path / "ceval").glob("*_val.csv"))
    lines = sorted(f"{_sha(p)}  {p.name}\n" for p in val)
    assert task.source == pattern
    assert task.source_sha256 == hashlib.sha256("".join(lines).encode()).hexdigest()
    assert task.provenance["files"] == {str(p.resolve()): _sha(p) for p in val}
    assert len(task.provenance["exemplars"]["files"]) == 2  # the dev files


def test_hub_source_records_the_id_without_a_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"question": "1+1?", "answer": "#### 2"}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list(rows))
    task = load_gsm8k(n=1)
    assert task.source == "openai/gsm8k" and task.source_sha256 is None
    record = task.provenance
    assert record["hub"] is True and record["config"] == "main" and record["split"] == "test"
    assert record["selection"] == [{"first": 1}]


def test_selection_and_labels_are_recorded(tmp_path: Path) -> None:
    task = load_mmlu_pro(
        DATA / "mmlu_pro_test.parquet", exemplar_source=DATA / "mmlu_pro_validation.csv"
    )
    assert task.provenance["exemplars"]["sha256"] == _sha(DATA / "mmlu_pro_validation.csv")
    reasoning, _ = task.sample(3, seed=2).split()
    assert reasoning.provenance["selection"] == [
        {"sample": 3, "seed": 2, "per_group": True},
        {"label": "reasoning"},
    ]
    assert reasoning.source_sha256 == _sha(DATA / "mmlu_pro_test.parquet")
    only_math = load_mmlu_pro(DATA / "mmlu_pro_test.parquet", categories=["math"], n=1)
    assert only_math.provenance["selection"] == [{"categories": ["math"]}, {"first": 1}]
    labelled = load_gsm8k(DATA / "gsm8k_test.jsonl").with_labels(DATA / "labels.csv")
    labels = labelled.provenance["labels"]
    assert labels["source"] == str((DATA / "labels.csv").resolve())
    assert labels["sha256"] == _sha(DATA / "labels.csv")
    assert labelled.source_sha256 == _sha(DATA / "gsm8k_test.jsonl")  # the questions' file
    assert labelled.take(2).filter(lambda item: True).provenance["selection"] == [
        {"first": 2},
        {"filter": "custom"},
    ]
