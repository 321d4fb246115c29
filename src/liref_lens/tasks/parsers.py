"""Answer parsers and matchers. A parser never guesses: no answer means ``Parsed(None)``.

Numbers (`parse_number`), tried in this order, first match wins:

1. ``#### N`` (the GSM8K solution format);
2. ``answer is N`` / ``answer: N`` (covers "The answer is 42" and "The final answer is 42"),
   optionally with ``$``, ``**`` or ``\\boxed{`` before the number;
3. ``\\boxed{N}``;
4. fallback: the last number in the text, flagged ``exact=False`` (`Task.evaluate` counts these
   and, with ``strict=True``, scores them as failures). ``fallback=False`` turns it off.

A number may carry a sign (``-`` or ``−``), a ``$``, thousands commas (``1,000``) and decimals
(``1,000.50``); it is returned as a float. A ``-`` touching the digits is a sign (so the last
number of ``10-3`` is -3), one followed by a space is not. A text without any number is a
parse failure.

Option letters (`parse_choice`), first match wins: ``answer is (C)`` / ``answer is C`` /
``answer is: **C**``; then the last ``Answer: C`` (the letter must end the statement: ``Answer: A
train...`` does not count); then the Chinese ``答案是C`` / ``答案为C`` / ``答案：C``. There is no
fallback: an unmatched text is a failure, never a random letter.

Free text (`parse_text`, PopQA): the stripped text; empty text is a failure. `matches_any` is
the PopQA rule: correct if any accepted answer occurs in the prediction, case-insensitive, with
whitespace collapsed. `exact_match_any` is the NQ-open / SQuAD rule: correct if the prediction
equals an accepted answer after `normalize_answer` (lower case, punctuation and the articles
a/an/the removed, whitespace collapsed).
"""

from __future__ import annotations

import math
import re
import unicodedata

from .base import Answer, Parsed

__all__ = [
    "exact_match_any",
    "letters_equal",
    "matches_any",
    "normalize_answer",
    "normalize_text",
    "numbers_equal",
    "parse_choice",
    "parse_number",
    "parse_text",
    "to_number",
]

NUMBER = r"[-−]?(?:\$\s?)?[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-−]?\.\d+"
_NUMBER = re.compile(NUMBER)
_EXPLICIT = (
    re.compile(rf"####\s*({NUMBER})"),
    re.compile(rf"answer(?:\s+is|\s*:)\s*:?\s*(?:\*\*)?\s*(?:\\boxed\{{)?\s*({NUMBER})", re.I),
    re.compile(rf"\\boxed\{{\s*({NUMBER})"),
)


def to_number(text: str) -> float:
    """A number as written (``"$1,000.50"``, ``"−3"``) as a float.

    Example:
        >>> to_number("$1,000.50"), to_number("−3"), to_number("-$4")
        (1000.5, -3.0, -4.0)
    """
    cleaned = re.sub(r"[\s,$]", "", text).replace("−", "-")
    sign = -1.0 if cleaned.count("-") % 2 else 1.0
    return sign * float(cleaned.replace("-", ""))


def parse_number(text: str, fallback: bool = True) -> Parsed:
    """Read a numeric answer; see the module docstring for the rules.

    Example:
        >>> parse_number("So 5 + 4 = 9. The answer is 9.")
        Parsed(value=9.0, exact=True)
        >>> parse_number("The final answer is $1,000.50")
        Parsed(value=1000.5, exact=True)
        >>> parse_number("#### -3")
        Parsed(value=-3.0, exact=True)
        >>> parse_number("she ends with 12 apples")
        Parsed(value=12.0, exact=False)
        >>> parse_number("no idea")
        Parsed(value=None, exact=True)
    """
    for pattern in _EXPLICIT:
        match = pattern.search(text)
        if match:
            return Parsed(to_number(match.group(1)))
    if fallback:
        numbers = _NUMBER.findall(text)
        if numbers:
            return Parsed(to_number(numbers[-1]), exact=False)
    return Parsed(None)


def _choice_patterns(letters: str) -> tuple[tuple[re.Pattern[str], bool], ...]:
    cls = f"[{re.escape(letters)}]"
    return (  # (pattern, take the last match)
        (re.compile(rf"answer\s+is\s*[:：]?\s*[*(\[（\s]*({cls})(?![A-Za-z0-9])", re.I), False),
        (
            re.compile(rf"answer\s*[:：]\s*[*(\[（\s]*({cls})(?=\s*(?:[).,:;*\]）]|\n|$))", re.I),
            True,
        ),
        (
            re.compile(
                rf"答案\s*(?:是|为|應為|应为|应该是)?\s*[:：]?\s*[*(\[（\s]*({cls})(?![A-Za-z])"
            ),
            False,
        ),
    )


def parse_choice(text: str, letters: str = "ABCDEFGHIJ") -> Parsed:
    """Read an option letter; see the module docstring for the rules.

    Example:
        >>> parse_choice("... so the answer is (C).")
        Parsed(value='C', exact=True)
        >>> parse_choice("Answer: B")
        Parsed(value='B', exact=True)
        >>> parse_choice("所以答案是D。", letters="ABCD")
        Parsed(value='D', exact=True)
        >>> parse_choice("A train leaves at noon.")
        Parsed(value=None, exact=True)
    """
    for pattern, last in _choice_patterns(letters):
        matches = pattern.findall(text)
        if matches:
            return Parsed(str(matches[-1] if last else matches[0]).upper())
    return Parsed(None)


def parse_text(text: str) -> Parsed:
    """The stripped text as the answer; an empty text is a failure.

    Example:
        >>> parse_text("  Paris "), parse_text("   ")
        (Parsed(value='Paris', exact=True), Parsed(value=None, exact=True))
    """
    text = text.strip()
    return Parsed(text or None)


def normalize_text(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed to single spaces.

    Example:
        >>> normalize_text("  New\\n  YORK ")
        'new york'
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def numbers_equal(prediction: Answer, gold: Answer) -> bool:
    """Numeric equality up to ``1e-6`` (absolute) or ``1e-9`` (relative).

    Example:
        >>> numbers_equal(18.0, 18), numbers_equal(0.1 + 0.2, 0.3), numbers_equal(5.0, 6.0)
        (True, True, False)
    """
    if not isinstance(prediction, (int, float)) or not isinstance(gold, (int, float)):
        return False
    return math.isclose(prediction, gold, rel_tol=1e-9, abs_tol=1e-6)


def letters_equal(prediction: Answer, gold: Answer) -> bool:
    """Option letters compared case-insensitively.

    Example:
        >>> letters_equal("c", "C"), letters_equal("A", "B")
        (True, False)
    """
    return (
        isinstance(prediction, str) and isinstance(gold, str) and prediction.upper() == gold.upper()
    )


def matches_any(prediction: Answer, gold: Answer) -> bool:
    """PopQA's rule: some accepted answer occurs in the prediction (normalised substring).

    Example:
        >>> matches_any("It is Paris, of course", ("paris", "City of Light"))
        True
        >>> matches_any("Lyon", ("Paris",))
        False
    """
    if not isinstance(prediction, str):
        return False
    golds = (gold,) if isinstance(gold, str) else gold
    if not isinstance(golds, tuple):
        return False
    text = normalize_text(prediction)
    return any(normalize_text(g) and normalize_text(g) in text for g in golds)


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation on top of `normalize_text`: no punctuation, no articles.

    Punctuation is every Unicode character of category P* (SQuAD's ASCII set, extended).

    Example:
        >>> normalize_answer("The  Beatles!"), normalize_answer("14 December, 1972.")
        ('beatles', '14 december 1972')
    """
    text = normalize_text(text)
    text = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_any(prediction: Answer, gold: Answer) -> bool:
    """NQ-open's rule: the normalised prediction equals some normalised accepted answer.

    Example:
        >>> exact_match_any("the Beatles.", ("Beatles", "John Lennon"))
        True
        >>> exact_match_any("It was the Beatles", ("Beatles",))
        False
    """
    if not isinstance(prediction, str):
        return False
    golds = (gold,) if isinstance(gold, str) else gold
    if not isinstance(golds, tuple):
        return False
    text = normalize_answer(prediction)
    return any(normalize_answer(g) == text for g in golds)
