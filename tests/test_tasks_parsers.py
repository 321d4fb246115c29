"""Answer parsers and matchers: explicit statements, fallbacks, and failures (never guesses)."""

from __future__ import annotations

from functools import partial

import pytest

from liref_lens.tasks import (
    Parsed,
    letters_equal,
    matches_any,
    normalize_text,
    numbers_equal,
    parse_choice,
    parse_number,
    parse_text,
)
from liref_lens.tasks.parsers import to_number


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("The answer is 42", 42.0),
        ("The answer is 42.", 42.0),
        ("So 6 + 2 = 8. The final answer is 8", 8.0),
        ("#### 72", 72.0),
        ("step 1 ... \n#### 1,000", 1000.0),
        ("The answer is $1,000.50.", 1000.5),
        ("The answer is -3.", -3.0),
        ("The answer is −3", -3.0),  # unicode minus
        ("The answer is -$4", -4.0),
        ("The answer is 0.25", 0.25),
        ("The answer is .5", 0.5),
        ("the ANSWER IS 7", 7.0),
        ("Answer: 12", 12.0),
        ("The answer is: 12 apples", 12.0),
        ("The answer is **15**", 15.0),
        ("The answer is \\boxed{16}", 16.0),
        ("so we get \\boxed{17}", 17.0),
        ("The answer is 1,234,567", 1234567.0),
        # the first explicit statement wins, even when other numbers follow it
        ("The answer is 5. Then 6 more and 7.", 5.0),
        # '####' outranks 'answer is'
        ("The answer is 3 \n#### 4", 4.0),
    ],
)
def test_parse_number_explicit(text: str, value: float) -> None:
    assert parse_number(text) == Parsed(value, exact=True)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("She has 12 apples and eats 5, so 7 remain", 7.0),
        ("10 - 3 leaves 7", 7.0),  # '- 3' with a space is not a negative number
        ("It costs $2,500", 2500.0),
        ("x = 10-3", -3.0),  # documented: a hyphen touching a digit is a sign
    ],
)
def test_parse_number_fallback_is_flagged(text: str, value: float) -> None:
    assert parse_number(text) == Parsed(value, exact=False)


@pytest.mark.parametrize("text", ["", "   ", "I do not know.", "The answer is unknown", "$,."])
def test_parse_number_failure(text: str) -> None:
    assert parse_number(text) == Parsed(None)
    assert parse_number(text).failed


def test_parse_number_strict_has_no_fallback() -> None:
    assert parse_number("12 apples", fallback=False).failed
    assert parse_number("The answer is 12", fallback=False) == Parsed(12.0)


def test_to_number() -> None:
    assert to_number("1,000") == 1000.0
    assert to_number("$ 3.5") == 3.5
    assert to_number("-0.5") == -0.5


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("The answer is (C).", "C"),
        ("the answer is C", "C"),
        ("The answer is: (J)", "J"),
        ("The answer is **B**", "B"),
        ("the answer is (c)", "C"),
        ("Answer: B", "B"),
        ("Answer: (D) 5 kg", "D"),
        ("Answer: A.", "A"),
        ("Answer: E\nmore text", "E"),
        # 'answer is' outranks 'Answer:' and the first 'answer is' wins
        ("Answer: B\nWait, the answer is (C). Or the answer is (D).", "C"),
        # of several 'Answer: X', the last wins (MMLU-Pro's rule)
        ("Answer: A\nAnswer: B", "B"),
        ("所以答案是D。", "D"),
        ("答案：B", "B"),
        ("答案为 (C)", "C"),
    ],
)
def test_parse_choice(text: str, letter: str) -> None:
    assert parse_choice(text) == Parsed(letter)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I am not sure.",
        "A train leaves at noon.",  # a leading article is not an answer
        "Answer: A train leaves at noon.",
        "The answer is Carbon.",
        "Answer: Let's think step by step.",
        "The answer is (K)",  # not an option letter
    ],
)
def test_parse_choice_failure(text: str) -> None:
    assert parse_choice(text) == Parsed(None)


def test_parse_choice_respects_letters() -> None:
    four = partial(parse_choice, letters="ABCD")
    assert four("The answer is (E)").failed
    assert four("The answer is (D)") == Parsed("D")


def test_parse_text() -> None:
    assert parse_text(" Paris\n") == Parsed("Paris")
    assert parse_text("\n \t").failed


def test_matchers() -> None:
    assert numbers_equal(72.0, 72)
    assert not numbers_equal(72.0, 72.5)
    assert not numbers_equal("72", 72.0)
    assert letters_equal("b", "B")
    assert not letters_equal("B", 1.0)
    assert matches_any("He was a  POLITICIAN", ("politician", "political leader"))
    assert matches_any("The City of\nLight", ("City of Light",))
    assert matches_any("Paris", "paris")
    assert not matches_any("Lyon", ("Paris", "City of Light"))
    assert not matches_any("anything", ("", "   "))  # empty accepted answers never match
    assert not matches_any(3.0, ("3",))
    assert normalize_text("Ｐａｒｉｓ") == "paris"  # NFKC folds full-width letters
