"""Loaders: every benchmark reads its hand-written fixture in tests/data; local formats; hub errors.

No test touches the network: hub loads are made in offline mode or with a mocked
``datasets.load_dataset``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import datasets
import pandas as pd
import pytest

from liref_lens.tasks import (
    CEVAL_HARD,
    MEMORY,
    REASONING,
    HubUnavailableError,
    load_ceval,
    load_gsm8k,
    load_gsm_symbolic,
    load_mgsm,
    load_mmlu_pro,
    load_popqa,
    load_rows,
    load_task,
    read_local,
)
from liref_lens.tasks.sources import has_splits, resolve_local

DATA = Path(__file__).parent / "data"
ROWS = [
    {"question": "1+1?", "answer": "#### 2", "options": ["1", "2"]},
    {"question": "2+2?", "answer": "#### 4", "options": ["4", "5"]},
]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("records.json", json.dumps(ROWS)),
        ("wrapped.json", json.dumps({"data": ROWS})),
        ("columns.json", json.dumps({k: [r[k] for r in ROWS] for k in ROWS[0]})),
        ("lines.json", "\n".join(json.dumps(r) for r in ROWS)),  # datasets' to_json default
        ("rows.jsonl", "\n".join(json.dumps(r) for r in ROWS) + "\n\n"),
        ("rows.ndjson", "\n".join(json.dumps(r) for r in ROWS)),
    ],
)
def test_read_json_variants(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert read_local(path) == ROWS


def test_read_tabular_and_disk_formats(tmp_path: Path) -> None:
    frame = pd.DataFrame(ROWS)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    frame.to_csv(tmp_path / "rows.tsv", sep="\t", index=False)
    frame.to_parquet(tmp_path / "rows.parquet", index=False)
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "single"))
    assert read_local(tmp_path / "rows.parquet") == ROWS
    assert read_local(tmp_path / "single") == ROWS
    for name in ("rows.csv", "rows.tsv"):  # lists come back as their text; as_list decodes them
        rows = read_local(tmp_path / name)
        assert [r["question"] for r in rows] == ["1+1?", "2+2?"]
        assert rows[0]["options"] == "['1', '2']"


def test_csv_keeps_text_that_looks_like_missing(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("question,answer,n\nNA,None,\n")
    assert read_local(tmp_path / "t.csv") == [{"question": "NA", "answer": "None", "n": None}]


def test_local_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_rows(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError):
        load_gsm8k("./nowhere/gsm8k.jsonl")
    (tmp_path / "rows.xml").write_text("<rows/>")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_local(tmp_path / "rows.xml")
    with pytest.raises(ValueError, match="not a datasets save_to_disk folder"):
        read_local(tmp_path)
    with pytest.raises(ValueError, match="has no split 'test'"):
        load_rows(DATA / "ceval_college_physics", split="test")
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        read_local(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="only {config} and {split}"):
        load_rows(str(tmp_path / "{subject}.csv"))


def test_source_resolution(tmp_path: Path) -> None:
    assert resolve_local("openai/gsm8k") is None  # a hub id
    assert resolve_local(DATA / "gsm8k_test.jsonl") == DATA / "gsm8k_test.jsonl"
    assert resolve_local(str(DATA / "ceval_{config}"), config="college_physics") is not None
    assert has_splits("openai/gsm8k")
    assert has_splits(str(tmp_path / "mmlu_{split}.csv"))
    assert has_splits(DATA / "ceval_college_physics")  # a DatasetDict folder
    assert not has_splits(DATA / "mmlu_pro_test.parquet")


def test_load_gsm8k_jsonl() -> None:
    task = load_gsm8k(DATA / "gsm8k_test.jsonl")
    assert task.name == "gsm8k" and len(task) == 3
    assert [item.answer for item in task] == [12.0, 1000.0, -3.0]
    assert {item.label for item in task} == {REASONING}
    assert task.items[1].meta["solution"].endswith("#### 1,000")
    assert len(load_gsm8k(str(DATA / "gsm8k_test.jsonl"), n=2)) == 2


def test_load_gsm_symbolic_json_groups_variants() -> None:
    task = load_gsm_symbolic(DATA / "gsm_symbolic_test.json", config="main")
    assert task.name == "gsm_symbolic"
    assert [item.group for item in task] == ["41", "41", "88"]
    assert [item.id for item in task] == ["7-0", "7-1", "9-0"]
    assert [item.answer for item in task] == [12.0, 15.0, 25.0]
    assert task.items[0].meta["original_answer"].endswith("#### 12")
    # the template id and the instance number are kept as they are in the file
    assert [(i.meta["template_id"], i.meta["instance"]) for i in task] == [(7, 0), (7, 1), (9, 0)]
    # this file's name does not say which variant it holds: config decides
    assert load_gsm_symbolic(DATA / "gsm_symbolic_test.json", config="p1").name.endswith("p1")


def test_load_mgsm_tsv_with_placeholder() -> None:
    task = load_mgsm(str(DATA / "mgsm_{config}_test.tsv"), language="zh")
    assert task.name == "mgsm_zh"
    assert [item.answer for item in task] == [8.0, 20.0]
    assert task.items[0].question.startswith("小明")
    assert task.items[0].meta["solution"] is None  # the empty 'answer' cell
    assert "There are 15 trees" in task.prompt(task.items[0], "few_shot")


def test_load_mmlu_pro_parquet_with_labels_and_csv_exemplars() -> None:
    task = load_mmlu_pro(
        DATA / "mmlu_pro_test.parquet", exemplar_source=DATA / "mmlu_pro_validation.csv"
    )
    assert task.name == "mmlu_pro" and len(task) == 4
    assert [item.id for item in task] == ["101", "102", "103", "104"]
    assert task.items[0].options == ("54", "56", "58")  # the 'N/A' pad is dropped
    assert [item.answer for item in task] == ["B"] * 4
    # memory_reason_score 0.9, 0.1, 0.5, 0.7: reasoning iff > 0.5
    assert task.labels == (REASONING, MEMORY, MEMORY, REASONING)
    assert task.scores == (0.9, 0.1, 0.5, 0.7)
    assert load_mmlu_pro(DATA / "mmlu_pro_test.parquet", threshold=0.4).labels[2] == REASONING
    assert load_mmlu_pro(DATA / "mmlu_pro_test.parquet", score_field=None).labels == (None,) * 4
    only_math = load_mmlu_pro(DATA / "mmlu_pro_test.parquet", categories=["math"], n=1)
    assert [item.id for item in only_math] == ["101"]


def test_mmlu_pro_without_exemplars_has_no_few_shot() -> None:
    task = load_mmlu_pro(DATA / "mmlu_pro_test.parquet")  # a single file has no splits
    assert task.few_shot is None
    assert task.prompt(task.items[0]).startswith("Q: What is 7 * 8?\nOptions:\nA. 54\n")
    with pytest.raises(ValueError, match="no few-shot exemplars"):
        task.prompt(task.items[0], "few_shot")


def test_load_popqa_csv() -> None:
    task = load_popqa(DATA / "popqa_test.csv")
    assert task.name == "popqa" and len(task) == 3
    assert task.items[0].answer == ("politician", "political leader", "political figure")
    assert task.items[0].id == "4222362"
    assert task.items[0].meta["s_pop"] == 142 and task.items[0].meta["prop"] == "occupation"
    assert set(task.labels) == {MEMORY}
    assert task.prompt(task.items[1]) == "Q: In what country is Paris?\nA: "


def test_load_ceval_save_to_disk_folder() -> None:
    task = load_ceval(str(DATA / "ceval_{config}"), subjects=["college_physics"])
    assert task.name == "ceval" and len(task) == 2
    assert [item.answer for item in task] == ["A", "B"]
    assert task.items[0].options == ("F = ma", "E = mc^2", "p = mv", "W = Fs")
    assert task.items[0].id == "college_physics-0"
    assert task.few_shot is not None  # exemplars from the dev split of the same folder
    assert task.parse("所以答案是B。") == "B"
    assert task.parse("答案是E") is None  # not one of A-D
    # a folder without {config}, rows without a subject column: one subject must be named
    assert len(load_ceval(DATA / "ceval_college_physics", subjects=["college_physics"])) == 2
    with pytest.raises(ValueError, match="no 'subject' column"):
        load_ceval(DATA / "ceval_college_physics")


def test_ceval_test_split_without_answers(tmp_path: Path) -> None:
    (tmp_path / "college_physics_test.csv").write_text("id,question,A,B,C,D,answer\n0,q,1,2,3,4,\n")
    with pytest.raises(ValueError, match="use split='val'"):
        load_ceval(
            str(tmp_path / "{config}_{split}.csv"), subjects=["college_physics"], split="test"
        )


def test_ceval_hard_subjects() -> None:
    assert len(CEVAL_HARD) == 8 and "probability_and_statistics" in CEVAL_HARD


def test_load_task_by_name() -> None:
    assert len(load_task("gsm8k", source=DATA / "gsm8k_test.jsonl")) == 3
    with pytest.raises(ValueError, match="unknown task"):
        load_task("gsm9k")


def test_unreachable_hub_says_how_to_use_local_files(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(HubUnavailableError) as info:
        load_gsm8k()
    message = str(info.value)
    assert "'openai/gsm8k'" in message and "config 'main'" in message
    assert "datasets.load_dataset('openai/gsm8k', 'main').save_to_disk(DIR)" in message
    assert "source=DIR" in message
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, OSError)
    assert isinstance(info.value.__cause__, ConnectionError)


def test_offline_hub_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="pass source=DIR"):
        load_popqa("liref-lens-tests/no-such-dataset")
    assert time.perf_counter() - start < 20


def test_other_hub_errors_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    def bad_config(*args: object, **kwargs: object) -> None:
        raise ValueError("BuilderConfig 'xx' not found")

    monkeypatch.setattr(datasets, "load_dataset", bad_config)
    with pytest.raises(ValueError, match="BuilderConfig"):
        load_mgsm(language="xx")
