"""The Task type: golden prompt strings, evaluation with counted parse failures, labels."""

from __future__ import annotations

import doctest
from pathlib import Path
from types import ModuleType

import pytest

from liref_lens.tasks import (
    MEMORY,
    REASONING,
    Item,
    Task,
    builtin,
    ceval,
    evaluation,
    files,
    gsm8k,
    gsm_symbolic,
    labels,
    load_ceval,
    load_gsm8k,
    load_mmlu_pro,
    load_popqa,
    mgsm,
    mmlu_pro,
    nq_open,
    numbers_equal,
    parse_number,
    parsers,
    popqa,
    prompts,
    provenance,
    sampling,
    sources,
)
from liref_lens.tasks import base as task_base
from liref_lens.tasks import registry as task_registry

DATA = Path(__file__).parent / "data"

MMLU_PRO_MATH_2SHOT = """\
The following are multiple choice questions (with answers) about math. Think step by step \
and then finish your answer with "the answer is (X)" where X is the correct letter choice.

Question:
What is 2 + 2?
Options:
A. 3
B. 4
C. 5
Answer: Let's think step by step. 2 + 2 = 4. The answer is (B).

Question:
What is 3 * 3?
Options:
A. 6
B. 9
Answer: Let's think step by step. 3 * 3 = 9. The answer is (B).

Question:
What is 7 * 8?
Options:
A. 54
B. 56
C. 58
Answer: Let's think step by step."""

MMLU_PRO_HISTORY = """\
The following are multiple choice questions (with answers) about history. Think step by step \
and then finish your answer with "the answer is (X)" where X is the correct letter choice.

Question:
Which city was the capital of the Roman Empire?
Options:
A. Rome
B. Paris
Answer: Let's think step by step. The capital was Rome. The answer is (A).

Question:
Who was the first emperor of Rome?
Options:
A. Julius Caesar
B. Augustus
C. Nero
Answer: Let's think step by step."""

CEVAL_GOLDEN = """\
以下是中国关于大学物理考试的单项选择题，请选出其中的正确答案。

一个物体做自由落体运动，1秒后的速度约为多少？
A. 1 m/s
B. 5 m/s
C. 9.8 m/s
D. 20 m/s
答案：让我们一步一步思考，
1. 自由落体速度 v = gt。
2. v = 9.8 × 1 = 9.8 m/s。
所以答案是C。

光在真空中的速度约为多少？
A. 3×10^8 m/s
B. 3×10^5 m/s
C. 340 m/s
D. 1 m/s
答案：让我们一步一步思考，
1. 光速约为 3×10^8 m/s。
所以答案是A。

牛顿第二定律的表达式是？
A. F = ma
B. E = mc^2
C. p = mv
D. W = Fs
答案：让我们一步一步思考，
"""


@pytest.fixture
def gsm() -> Task:
    return load_gsm8k(DATA / "gsm8k_test.jsonl")


def test_gsm_prompts_are_golden(gsm: Task) -> None:
    golden = (DATA / "gsm8k_8shot_golden.txt").read_text(encoding="utf-8")
    assert gsm.prompt(gsm.items[0], "few_shot") == golden
    assert gsm.prompt(gsm.items[0]) == (
        "Q: Tom has 3 boxes with 4 pens each. How many pens does he have?\nA: "
    )
    assert gsm.prompts("few_shot")[2].endswith(
        "The answer is 8.\n\nQ: The temperature was 5 degrees and fell by 8 degrees. "
        "What is it now?\nA:"
    )


def test_mmlu_pro_few_shot_is_golden() -> None:
    exemplars = DATA / "mmlu_pro_validation.csv"
    two = load_mmlu_pro(DATA / "mmlu_pro_test.parquet", exemplar_source=exemplars, n_shot=2)
    assert two.prompt(two.items[0], "few_shot") == MMLU_PRO_MATH_2SHOT
    task = load_mmlu_pro(DATA / "mmlu_pro_test.parquet", exemplar_source=exemplars)
    assert task.prompt(task.items[1], "few_shot") == MMLU_PRO_HISTORY
    five = task.prompt(task.items[0], "few_shot")  # 5-shot: all 3 math exemplars there are
    assert five.count("Question:\n") == 4 and "What is 5 - 1?" in five
    assert task.prompt(task.items[1]) == (
        "Q: Who was the first emperor of Rome?\nOptions:\nA. Julius Caesar\nB. Augustus\n"
        "C. Nero\nA: "
    )


def test_ceval_few_shot_is_golden() -> None:
    task = load_ceval(str(DATA / "ceval_{config}"), subjects=["college_physics"])
    assert task.prompt(task.items[0], "few_shot") == CEVAL_GOLDEN


def test_evaluate_counts_failures_and_fallbacks(gsm: Task) -> None:
    generations = [
        " Each box has 4 pens. 3 * 4 = 12. The answer is 12.\nQ: Next? A: The answer is 99.",
        " She pays $1,000 in total",  # fallback: last number
        " I cannot tell.",  # parse failure
    ]
    result = gsm.evaluate(generations)
    assert result.predictions == (12.0, 1000.0, None)
    assert result.correct == (True, True, False)
    assert result.failures == (2,) and result.n_failures == 1
    assert result.fallbacks == (1,)
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.per_label == {REASONING: pytest.approx(2 / 3)}
    assert "2/3 correct" in str(result) and "1 parse failures" in str(result)
    strict = gsm.evaluate(generations, strict=True)
    assert strict.correct == (True, False, False) and strict.failures == (1, 2)
    frame = result.to_frame()
    assert list(frame["parse_failed"]) == [False, False, True]
    assert list(frame["fallback"]) == [False, True, False]
    with pytest.raises(ValueError, match="2 generations for 3 items"):
        gsm.evaluate(generations[:2])


def test_failures_are_never_guessed() -> None:
    task = load_mmlu_pro(DATA / "mmlu_pro_test.parquet")
    result = task.evaluate(["I refuse to answer."] * len(task))
    assert result.accuracy == 0.0 and result.n_failures == len(task)
    assert result.predictions == (None,) * len(task)
    assert task.parse("Answer: Let's think step by step. 7 * 8 = 56. The answer is (B).") == "B"
    assert task.parse("The answer is (B).\nQuestion:\nThe answer is (C).") == "B"


def test_popqa_matches_any_answer_on_first_line() -> None:
    task = load_popqa(DATA / "popqa_test.csv")
    result = task.evaluate([" He was a Political Leader.", "\nIn Spain.\nFrance", "   "])
    assert result.correct == (True, False, False)
    assert result.failures == (2,)
    assert result.per_label == {MEMORY: pytest.approx(1 / 3)}


def test_per_label_accuracy_and_split() -> None:
    task = load_mmlu_pro(DATA / "mmlu_pro_test.parquet")  # labels R, M, M, R
    result = task.evaluate(["answer is (B)", "answer is (A)", "answer is (B)", "nothing"])
    assert result.per_label == {MEMORY: 0.5, REASONING: 0.5}
    reasoning, memory = task.split()
    assert [i.id for i in reasoning] == ["101", "104"] and [i.id for i in memory] == ["102", "103"]
    assert sorted(task.by_label()) == [MEMORY, REASONING]
    assert task.take(1).items == task.items[:1]
    assert len(task.sample(3, seed=1)) == 3 and task.sample(3, seed=1) == task.sample(3, seed=1)
    assert len(task.filter(lambda item: item.meta["category"] == "math")) == 2


def test_with_labels_from_file_and_mapping(gsm: Task) -> None:
    labelled = gsm.with_labels(DATA / "labels.csv")
    assert labelled.labels == (REASONING, MEMORY, MEMORY)
    assert labelled.scores == (0.9, None, 0.2)
    assert gsm.with_labels(DATA / "labels.csv", threshold=0.1).labels[2] == REASONING
    with pytest.raises(KeyError, match="no column 'score'"):
        gsm.with_labels(DATA / "labels.csv", label_field="score")
    partial_map = {"0": "memory"}
    with pytest.raises(KeyError, match="missing='drop'"):
        gsm.with_labels(partial_map)
    assert gsm.with_labels(partial_map, missing="drop").labels == (MEMORY,)
    assert gsm.with_labels(partial_map, missing="keep").labels == (MEMORY, REASONING, REASONING)
    by_question = gsm.with_labels({gsm.items[2].question: 0.7}, key="question", missing="drop")
    assert by_question.labels == (REASONING,) and by_question.scores == (0.7,)


def test_task_validation() -> None:
    task = Task("toy", [Item("1+1?", 2.0)], parser=parse_number, matcher=numbers_equal)
    assert isinstance(task.items, tuple)
    with pytest.raises(ValueError, match="style"):
        task.prompt(task.items[0], "two_shot")  # type: ignore[arg-type]
    assert not task.is_correct(None, task.items[0])
    empty = task.take(0).evaluate([])
    assert empty.n == 0 and empty.accuracy != empty.accuracy  # NaN
    with pytest.raises(ValueError, match="bad missing"):
        task.with_labels({}, missing="skip")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        task.with_labels({"1+1?": True}, key="question")


@pytest.mark.parametrize(
    "module",
    [
        task_base,
        evaluation,
        sources,
        files,
        provenance,
        sampling,
        labels,
        gsm_symbolic,
        parsers,
        prompts,
        gsm8k,
        mgsm,
        mmlu_pro,
        popqa,
        nq_open,
        builtin,
        ceval,
        task_registry,
    ],
    ids=lambda m: m.__name__.rsplit(".", 1)[-1],
)
def test_docstring_examples_run(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
