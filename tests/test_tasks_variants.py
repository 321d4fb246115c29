"""GSM-Symbolic variants named from their files, and NQ-open files without answers.

GSM-Symbolic's three variants share one set of columns (the release's README and the rows of
``apple/ml-gsm-symbolic``'s ``generated_data/GSM_p2.jsonl``: ``id``, ``instance``, ``question``,
``answer``, ``original_id``, ``original_question``, ``original_answer``, ``canary``), so these
tests write small files of that shape under the release's and the hub's file names.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import datasets
import pandas as pd
import pytest

from liref_lens.tasks import (
    Item,
    MissingColumnError,
    NoAnswersError,
    load_gsm_symbolic,
    load_nq_open,
    load_task,
)


def _symbolic_rows(templates: int = 3, instances: int = 4) -> list[dict]:
    return [
        {
            "id": t,
            "instance": i,
            "question": f"Template {t}, instance {i}: what is {t} + {i}?",
            "answer": f"{t} + {i} = {t + i}.\n#### {t + i}",
            "original_id": 100 + t,
            "original_question": f"original {t}",
            "original_answer": f"#### {t}",
            "canary": "canary GUID test",
        }
        for t in range(templates)
        for i in range(instances)
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("relative", "name"),
    [
        ("generated_data/GSM_symbolic.jsonl", "gsm_symbolic"),  # the GitHub release
        ("generated_data/GSM_p1.jsonl", "gsm_symbolic_p1"),
        ("generated_data/GSM_p2.jsonl", "gsm_symbolic_p2"),
        ("GSM-Symbolic/main/test.jsonl", "gsm_symbolic"),  # the hub's files
        ("GSM-Symbolic/p2/test.jsonl", "gsm_symbolic_p2"),
        ("exports/gsm_symbolic_p1_test.jsonl", "gsm_symbolic_p1"),  # a p1/p2 word in the name
    ],
)
def test_gsm_symbolic_variant_comes_from_the_file(tmp_path: Path, relative: str, name: str) -> None:
    """Fails before: every file loaded as 'gsm_symbolic' unless config was passed."""
    path = _write_jsonl(tmp_path / relative, _symbolic_rows())
    task = load_gsm_symbolic(path)
    assert task.name == name
    variant = "main" if name == "gsm_symbolic" else name[-2:]
    assert {item.meta["variant"] for item in task} == {variant}
    assert task.provenance["variant"]["config"] == variant
    assert load_task("gsm_symbolic", source=path).name == name
    assert load_gsm_symbolic(path, config=variant).name == name  # agreeing config is fine


def test_gsm_symbolic_parquet_in_the_hub_layout(tmp_path: Path) -> None:
    path = tmp_path / "p1" / "test" / "0000.parquet"  # the hub's parquet export
    path.parent.mkdir(parents=True)
    pd.DataFrame(_symbolic_rows()).to_parquet(path, index=False)
    assert load_gsm_symbolic(path).name == "gsm_symbolic_p1"


def test_gsm_symbolic_config_that_contradicts_the_file_is_an_error(tmp_path: Path) -> None:
    """Fails before: config='p1' on GSM_p2.jsonl silently named the P2 questions P1."""
    path = _write_jsonl(tmp_path / "GSM_p2.jsonl", _symbolic_rows())
    with pytest.raises(ValueError) as info:
        load_gsm_symbolic(path, config="p1")
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "holds GSM-Symbolic p2" in message and "config='p1'" in message
    assert "pass config='p2' or leave config out" in message
    with pytest.raises(ValueError, match="holds GSM-Symbolic p2"):
        load_task("gsm_symbolic_p1", source=path)


def test_gsm_symbolic_file_that_does_not_say_needs_config(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "questions.jsonl", _symbolic_rows())
    with pytest.raises(ValueError) as info:
        load_gsm_symbolic(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "cannot tell which GSM-Symbolic variant" in message
    assert "gsm_symbolic_p2:PATH" in message
    assert load_task("gsm_symbolic_p2", source=path).name == "gsm_symbolic_p2"
    assert load_gsm_symbolic(path, config="main").name == "gsm_symbolic"
    with pytest.raises(ValueError, match="config must be 'main', 'p1' or 'p2'"):
        load_gsm_symbolic(path, config="p3")
    both = _write_jsonl(tmp_path / "gsm_p1_p2.jsonl", _symbolic_rows())
    with pytest.raises(ValueError, match="names several GSM-Symbolic variants"):
        load_gsm_symbolic(both)


def test_gsm_symbolic_keeps_template_id_and_instance(tmp_path: Path) -> None:
    rows = _symbolic_rows(templates=2, instances=3)
    task = load_gsm_symbolic(_write_jsonl(tmp_path / "GSM_p1.jsonl", rows))
    assert [(i.meta["template_id"], i.meta["instance"]) for i in task] == [
        (r["id"], r["instance"]) for r in rows
    ]
    assert [i.group for i in task] == [str(r["original_id"]) for r in rows]
    assert [i.id for i in task] == [f"{r['id']}-{r['instance']}" for r in rows]
    assert [i.answer for i in task] == [float(r["id"] + r["instance"]) for r in rows]
    # without original_id, the template id groups the variants
    bare = [{k: v for k, v in r.items() if k != "original_id"} for r in rows]
    task = load_gsm_symbolic(_write_jsonl(tmp_path / "bare" / "GSM_p1.jsonl", bare))
    assert [i.group for i in task] == [str(r["id"]) for r in rows]


def test_gsm_symbolic_hub_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_hub(source: str, config: str, split: str) -> datasets.Dataset:
        calls.append((source, config, split))
        return datasets.Dataset.from_list(_symbolic_rows(1, 2))

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    assert load_gsm_symbolic().name == "gsm_symbolic"
    assert load_task("gsm_symbolic_p2").name == "gsm_symbolic_p2"
    assert calls == [("apple/GSM-Symbolic", "main", "test"), ("apple/GSM-Symbolic", "p2", "test")]


# ----- NQ-open question-only files ---------------------------------------------------------------
NO_ANSWERS = (
    "this task has no answers: it can be used to read activations, not to score generations"
)


def test_nq_open_question_only_file_loads_for_reading(tmp_path: Path) -> None:
    """Fails before: a file without 'answer' raised MissingColumnError."""
    questions = ["who wrote the declaration of independence", "when did the us enter ww1"]
    path = _write_jsonl(
        tmp_path / "NQ-open.efficientqa.test.1.1.jsonl", [{"question": q} for q in questions]
    )
    task = load_nq_open(path)
    assert [item.question for item in task] == questions
    assert [item.answer for item in task] == [None, None]
    assert not task.has_answers and task.provenance["answers"] is False
    assert set(task.labels) == {"memory"}
    assert task.prompts() == [f"Q: {q}\nA: " for q in questions]
    for score in (
        lambda: task.evaluate(["Jefferson", "1917"]),
        lambda: task.parse("Jefferson"),
        lambda: task.is_correct("Jefferson", task.items[0]),
    ):
        with pytest.raises(NoAnswersError) as info:
            score()
        message = str(info.value)
        assert "\n" not in message and NO_ANSWERS in message and str(path) in message
    assert isinstance(NoAnswersError("x"), ValueError)  # the CLI prints ValueErrors in one line
    # a sample of it is still question-only
    with pytest.raises(NoAnswersError, match="no answers"):
        task.sample(1, seed=0).evaluate(["x"])


def test_nq_open_answers_missing_from_some_rows_is_an_error(tmp_path: Path) -> None:
    rows = [{"question": "a?", "answer": ["x"]}, {"question": "b?"}]
    with pytest.raises(MissingColumnError, match="row 1 has no column 'answer'"):
        load_nq_open(_write_jsonl(tmp_path / "mixed.jsonl", rows))
    # a misnamed answer column is not mistaken for a question-only file
    misnamed = _write_jsonl(tmp_path / "misnamed.jsonl", [{"question": "a?", "answers": ["x"]}])
    with pytest.raises(MissingColumnError, match="no column 'answer'"):
        load_nq_open(misnamed)


def test_a_task_with_some_unanswered_items_says_how_many() -> None:
    task = load_nq_open("builtin", n=3)
    mixed = replace(task, items=(*task.items, Item("no gold?", None)))
    with pytest.raises(
        NoAnswersError, match=r"1 of 4 items have no answer \(the first is item 3\)"
    ):
        mixed.evaluate(["x"] * 4)
    kept = mixed.filter(lambda item: item.answer is not None)
    assert kept.evaluate([f" {item.answer[0]}" for item in kept]).accuracy == 1.0
