"""The `Task` type: benchmark items, how to prompt them, and how to score a model's answers.

A task is data (a tuple of `Item`) plus three small functions: a prompt builder per style
(``"zero_shot"`` for reading activations, ``"few_shot"`` for evaluation), a parser that reads an
answer out of a generation, and a matcher that compares it with the gold answer. Evaluation
counts the generations it cannot parse and scores them as wrong; it never substitutes a guess.

A task loaded from a file knows where it came from (`Task.provenance`: the path, the file's
SHA-256 and how items were selected, see `liref_lens.tasks.provenance`). A task may have no
answers (a question-only file, read for its activations); scoring it raises `NoAnswersError`.

Items are plain Python objects held in memory; the largest benchmark here (MMLU-Pro test, about
12k questions) takes a few tens of MB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeAlias

from .evaluation import EvalResult
from .labels import MEMORY, REASONING, attach_labels, label_from_value
from .provenance import with_selection
from .sampling import round_robin

__all__ = [
    "MEMORY",
    "REASONING",
    "Answer",
    "Item",
    "NoAnswersError",
    "Parsed",
    "Task",
    "label_from_value",
]

Answer: TypeAlias = str | float | tuple[str, ...]
"""A gold or predicted answer: a number, an option letter, or (PopQA) the accepted strings."""

Style = Literal["zero_shot", "few_shot"]


class NoAnswersError(ValueError):
    """A task without gold answers was asked to parse or score generations."""


@dataclass(frozen=True)
class Item:
    """One benchmark question.

    Attributes:
        question: The question text (for multiple choice, without the options).
        answer: The gold answer: a float, an option letter, or a tuple of accepted strings;
            ``None`` for a question without an answer (read for activations only).
        label: ``"reasoning"``, ``"memory"`` or any label of your own; ``None`` if unlabelled.
        score: A continuous reasoning score (higher means more reasoning), if known.
        group: Items sharing a group are variants of one source question (GSM-Symbolic).
        id: A stable identifier, used to attach labels from a file.
        options: The answer options of a multiple-choice question, in letter order.
        meta: Anything else the benchmark carries (category, solution, popularity, ...).
    """

    question: str
    answer: Answer | None
    label: str | None = None
    score: float | None = None
    group: str | None = None
    id: str | None = None
    options: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Parsed:
    """What a parser read from a generation.

    ``value`` is ``None`` when nothing could be read (a parse failure). ``exact`` is ``False``
    when the value came from a documented fallback rule (e.g. the last number in the text)
    rather than an explicit answer statement.
    """

    value: Answer | None
    exact: bool = True

    @property
    def failed(self) -> bool:
        return self.value is None


def qa_prompt(item: Item) -> str:
    """The zero-shot reading prompt, ``"Q: {question}\\nA: "``."""
    return f"Q: {item.question}\nA: "


@dataclass(frozen=True)
class Task:
    """A benchmark: items, prompt builders, an answer parser and a matcher.

    Attributes:
        name: Short name, e.g. ``"gsm8k"``.
        items: The questions.
        parser: Reads an answer from a generation (after cutting it at ``stop``).
        matcher: ``matcher(prediction, gold) -> bool``.
        zero_shot: Builds the zero-shot prompt of an item.
        few_shot: Builds the few-shot prompt of an item, or ``None`` if the task has no
            exemplars.
        stop: A generation is cut at the first of these strings before parsing.
        provenance: Where the items came from and how they were selected (JSON-ready; keys in
            `liref_lens.tasks.provenance`); empty for a task built by hand.

    Example:
        >>> from liref_lens.tasks import Item, Task, numbers_equal, parse_number
        >>> task = Task("toy", (Item("2+2?", 4.0, label="reasoning"), Item("3+3?", 6.0)),
        ...             parser=parse_number, matcher=numbers_equal, stop=("\\nQ:",))
        >>> task.prompt(task.items[0])
        'Q: 2+2?\\nA: '
        >>> print(task.evaluate(["The answer is 4.\\nQ: 5+5?\\nA: 10", "I do not know."]))
        toy: 1/2 correct (50.0%), 1 parse failures, 0 fallback parses; reasoning 100.0%
    """

    name: str
    items: tuple[Item, ...]
    parser: Callable[[str], Parsed]
    matcher: Callable[[Answer, Answer], bool]
    zero_shot: Callable[[Item], str] = qa_prompt
    few_shot: Callable[[Item], str] | None = None
    stop: tuple[str, ...] = ()
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    _unanswered: tuple[int, ...] = field(init=False, default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))
        object.__setattr__(self, "stop", tuple(self.stop))
        unanswered = tuple(i for i, item in enumerate(self.items) if item.answer is None)
        object.__setattr__(self, "_unanswered", unanswered)

    @property
    def source(self) -> str | None:
        """The file (absolute path) or hub id the items came from, if known."""
        return self.provenance.get("source")

    @property
    def source_sha256(self) -> str | None:
        """The SHA-256 of the source file (of the manifest of several files); ``None`` if not
        a local source."""
        return self.provenance.get("sha256")

    @property
    def has_answers(self) -> bool:
        """Whether every item has a gold answer (needed to parse and score generations)."""
        return not self._unanswered

    def _require_answers(self) -> None:
        if not self._unanswered:
            return
        where = f" ({self.source})" if self.source else ""
        if len(self._unanswered) == len(self.items):
            raise NoAnswersError(
                f"{self.name}{where}: this task has no answers: it can be used to read "
                "activations, not to score generations"
            )
        raise NoAnswersError(
            f"{self.name}{where}: {len(self._unanswered)} of {len(self.items)} items have no "
            f"answer (the first is item {self._unanswered[0]}); keep the others with "
            "task.filter(lambda item: item.answer is not None) to score generations"
        )

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    @property
    def labels(self) -> tuple[str | None, ...]:
        return tuple(item.label for item in self.items)

    @property
    def scores(self) -> tuple[float | None, ...]:
        return tuple(item.score for item in self.items)

    def prompt(self, item: Item, style: Style = "zero_shot") -> str:
        """The prompt of ``item`` in ``style`` (``"zero_shot"`` or ``"few_shot"``)."""
        if style == "zero_shot":
            return self.zero_shot(item)
        if style == "few_shot":
            if self.few_shot is None:
                raise ValueError(
                    f"task {self.name!r} has no few-shot exemplars; load it with an "
                    "exemplar_source (see its loader) or use style='zero_shot'"
                )
            return self.few_shot(item)
        raise ValueError(f"style must be 'zero_shot' or 'few_shot', not {style!r}")

    def prompts(self, style: Style = "zero_shot") -> list[str]:
        """The prompt of every item, in order."""
        return [self.prompt(item, style) for item in self.items]

    def parse_detailed(self, text: str) -> Parsed:
        """Cut ``text`` at the first stop string, then parse it, keeping how it was parsed.

        Raises:
            NoAnswersError: the task has no gold answers (nothing to score a parse against).
        """
        self._require_answers()
        text = text.lstrip()
        cuts = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        return self.parser(text[: min(cuts)] if cuts else text)

    def parse(self, text: str) -> Answer | None:
        """The answer read from a generation, or ``None`` if there is none."""
        return self.parse_detailed(text).value

    def is_correct(self, prediction: Answer | None, item: Item) -> bool:
        """Whether ``prediction`` matches the gold answer of ``item``; ``None`` is wrong."""
        if item.answer is None:
            self._require_answers()
            raise NoAnswersError(f"{self.name}: item {item.id!r} has no answer to compare with")
        return prediction is not None and self.matcher(prediction, item.answer)

    def evaluate(self, generations: Sequence[str], strict: bool = False) -> EvalResult:
        """Score one generation per item (the continuation only, not the prompt).

        Args:
            generations: ``generations[i]`` answers ``items[i]``.
            strict: Count answers found only by a fallback rule as parse failures.

        Raises:
            NoAnswersError: the task (or some of its items) has no gold answers.
        """
        self._require_answers()
        if len(generations) != len(self.items):
            raise ValueError(f"{len(generations)} generations for {len(self.items)} items")
        parsed = [self.parse_detailed(text) for text in generations]
        fallbacks = tuple(i for i, p in enumerate(parsed) if not p.failed and not p.exact)
        if strict:
            parsed = [Parsed(None) if not p.exact else p for p in parsed]
        preds = tuple(p.value for p in parsed)
        return EvalResult(
            task=self.name,
            predictions=preds,
            correct=tuple(
                self.is_correct(p, item) for p, item in zip(preds, self.items, strict=True)
            ),
            failures=tuple(i for i, p in enumerate(parsed) if p.failed),
            fallbacks=fallbacks,
            labels=self.labels,
        )

    def _select(self, items: Sequence[Item], step: Mapping[str, Any]) -> Task:
        return replace(self, items=tuple(items), provenance=with_selection(self.provenance, step))

    def filter(self, keep: Callable[[Item], bool]) -> Task:
        """The task restricted to the items for which ``keep(item)`` is true."""
        return self._select([item for item in self.items if keep(item)], {"filter": "custom"})

    def take(self, n: int) -> Task:
        """The first ``n`` items, in order (all of them if there are fewer)."""
        if n < 0:
            raise ValueError(f"cannot take {n} items; n must be 0 or more")
        return self._select(self.items[:n], {"first": n})

    def sample(self, n: int, seed: int = 0, *, per_group: bool = True) -> Task:
        """``n`` items drawn at random (seeded, without replacement), kept in their order.

        With ``per_group`` (the default), items that share a `Item.group` (the variants of one
        GSM-Symbolic template) are drawn round-robin over the groups, in a seeded random order
        (`liref_lens.tasks.sampling.round_robin`): ``n`` up to the number of groups gives
        ``n`` different groups, never ``n`` variants of one. Items without a group, or
        ``per_group=False``, give a plain random sample. Asking for more items than there are
        gives all of them. Use `take` for the first ``n``.

        Example:
            >>> from liref_lens.tasks import Item, Task, numbers_equal, parse_number
            >>> items = [Item(f"t{t} v{v}", 1.0, group=f"t{t}") for t in range(5) for v in range(9)]
            >>> task = Task("toy", items, parser=parse_number, matcher=numbers_equal)
            >>> sorted(item.group for item in task.sample(5, seed=0))
            ['t0', 't1', 't2', 't3', 't4']
            >>> [item.group for item in task.take(5)]
            ['t0', 't0', 't0', 't0', 't0']
            >>> task.sample(5, seed=0).provenance["selection"]
            [{'sample': 5, 'seed': 0, 'per_group': True}]
        """
        groups = [item.group if per_group else None for item in self.items]
        keep = round_robin(groups, n, seed)
        step = {"sample": n, "seed": seed, "per_group": per_group}
        return self._select([self.items[i] for i in keep], step)

    def by_label(self) -> dict[str, Task]:
        """One task per label (unlabelled items are left out)."""
        labels = sorted({item.label for item in self.items if item.label is not None})
        return {label: self._with_label(label) for label in labels}

    def _with_label(self, label: str) -> Task:
        return self._select([i for i in self.items if i.label == label], {"label": label})

    def split(self, first: str = REASONING, second: str = MEMORY) -> tuple[Task, Task]:
        """The ``(reasoning, memory)`` tasks, or any two labels."""
        return self._with_label(first), self._with_label(second)

    def with_labels(
        self,
        source: Mapping[str, Any] | str | Path,
        *,
        id_field: str = "id",
        label_field: str = "label",
        threshold: float = 0.5,
        key: Literal["id", "question"] = "id",
        missing: Literal["error", "keep", "drop"] = "error",
    ) -> Task:
        """Attach labels from a mapping or from a user's own file.

        A numeric value is a reasoning score (label ``"reasoning"`` if ``> threshold``, else
        ``"memory"``); a string is the label itself.

        Args:
            source: ``{item key: value}``, or a local file in any format `read_local` reads.
            id_field: The column of the file holding the item key.
            label_field: The column holding the label or score.
            threshold: Score above which an item is labelled reasoning.
            key: Match on ``item.id`` or on the question text.
            missing: What to do with items absent from ``source``: raise, keep them with their
                current label, or drop them.

        Example:
            >>> from liref_lens.tasks import Item, Task, numbers_equal, parse_number
            >>> task = Task("toy", (Item("a", 1.0, id="1"), Item("b", 2.0, id="2")),
            ...             parser=parse_number, matcher=numbers_equal)
            >>> task.with_labels({"1": 0.9, "2": "memory"}).labels
            ('reasoning', 'memory')
        """
        return attach_labels(
            self,
            source,
            id_field=id_field,
            label_field=label_field,
            threshold=threshold,
            key=key,
            missing=missing,
        )
